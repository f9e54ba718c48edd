"""MOABB: neurofm's ``Embedder`` in MOABB's own cross-subject evaluation, beside MOABB's
CSP + LDA and tangent-space pipelines, on left vs right hand imagery of PhysioNet EEGMMI.

MOABB's ``PhysionetMI`` dataset reads the 5 subjects of ``../shared/data/meeg/eegmmidb``
through MNE's cache layout (``MNE-eegbci-data/files/eegmmidb/1.0.0/S00k/``, links to the
files, no download). ``LeftRightImagery`` (MOABB's defaults: 8-32 Hz band-pass, its
epoching) feeds ``CrossSubjectEvaluation`` (leave one subject out). Pipelines:

- ``Embedder(checkpoint, readout="sensors") + LogisticRegression``: the encoder frozen;
- the same with an untrained encoder of the same architecture (``--untrained``);
- MOABB's ``CSP(8) + LDA`` and ``Covariances(oas) + TangentSpace + LogisticRegression``
  (pyriemann), as MOABB's examples write them.

The checkpoint: ``--ckpt`` (e.g. ``motor_imagery.py``'s export; note it must not have seen
the test subjects to be a fair test, which a single checkpoint pretrained on all 5 cannot
guarantee: by default a tiny encoder is pretrained here on EEGMMI *execution* runs only, so
no imagery epoch of any subject reaches pretraining). Writes ``<out>/moabb_eegmmi.json``.

usage: python benchmarks/moabb_eegmmi.py [--ckpt DIR] [--steps 400] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from _common import data_dir, neurofm_cli

from neurofm.io import write_text_atomic

SUBJECTS = (1, 2, 3, 4, 5)
EXECUTION = ("R03", "R07", "R11")


def mne_layout(eegmmi: Path, root: Path) -> Path:
    """Links to the EDF files where MNE's ``eegbci`` (and MOABB) look for them."""
    for subject in SUBJECTS:
        folder = root / "MNE-eegbci-data" / "files" / "eegmmidb" / "1.0.0" / f"S{subject:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for edf in (eegmmi / f"S{subject:03d}").glob("*.edf"):
            if not (folder / edf.name).exists():
                (folder / edf.name).symlink_to(edf.resolve())
    return root


def pretrain_on_execution(eegmmi: Path, work: Path, steps: int, log: Path) -> Path:
    export = work / "export"
    if (export / "model.safetensors").exists():
        return export
    inputs = [str(eegmmi / f"S{s:03d}" / f"S{s:03d}{r}.edf") for s in SUBJECTS for r in EXECUTION]
    neurofm_cli("prepare", f"inputs=[{','.join(inputs)}]", f"out={work / 'shards'}", "window_s=4.0",
                "split_fractions=[1.0,0.0,0.0]", log=log)
    neurofm_cli("pretrain", "data=shards", f"data.shards={work / 'shards'}", "model=tiny",
                f"trainer.max_steps={steps}", "data.batch_size=16", "data.num_workers=1",
                "model.mask_strategy=channels", "optim.lr=3e-3", f"optim.warmup_steps={max(1, steps // 20)}",
                f"checkpoint.every_n_steps={steps}", f"run_dir={work / 'run'}", "resume=null", log=log)
    neurofm_cli("export", f"ckpt={work / 'run' / 'checkpoints' / 'last.ckpt'}", f"out={export}", log=log)
    return export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    eegmmi = data_dir() / "meeg" / "eegmmidb"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ["MNE_DATASETS_EEGBCI_PATH"] = str(mne_layout(eegmmi, work / "mne_data"))
        ckpt = Path(args.ckpt) if args.ckpt else pretrain_on_execution(eegmmi, work, args.steps, work / "commands.log")

        import mne
        import torch
        from mne.decoding import CSP
        from moabb.datasets import PhysionetMI
        from moabb.evaluations import CrossSubjectEvaluation
        from moabb.paradigms import LeftRightImagery
        from pyriemann.estimation import Covariances
        from pyriemann.tangentspace import TangentSpace
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from neurofm.embedding import NeuroFM
        from neurofm.models.mae import MaskedAutoencoder
        from neurofm.sklearn import Embedder

        mne.set_log_level("ERROR")
        warnings.simplefilter("ignore")
        dataset = PhysionetMI(imagined=True, executed=False)
        dataset.subject_list = list(SUBJECTS)
        dataset.feet_runs = []  # the shared copy holds the hand runs (4, 8, 12) only; left vs right needs no more
        paradigm = LeftRightImagery()
        epochs, _, _ = paradigm.get_data(dataset, subjects=[SUBJECTS[0]], return_epochs=True)
        info = epochs.info
        torch.manual_seed(0)
        untrained = NeuroFM(MaskedAutoencoder(NeuroFM.from_pretrained(ckpt).config))
        probe = {"max_iter": 5000, "C": 1.0}
        pipelines = {
            "neurofm Embedder (sensors) + LR": make_pipeline(
                Embedder(str(ckpt), readout="sensors", info=info), StandardScaler(), LogisticRegression(**probe)),
            "untrained encoder (sensors) + LR": make_pipeline(
                Embedder(untrained, readout="sensors", info=info), StandardScaler(), LogisticRegression(**probe)),
            "CSP + LDA": make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis()),
            "tangent space + LR": make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"),
                                                LogisticRegression(**probe)),
        }
        evaluation = CrossSubjectEvaluation(paradigm=paradigm, datasets=[dataset], overwrite=True,
                                            hdf5_path=str(work / "moabb_results"), n_jobs=1)
        results = evaluation.process(pipelines)
    table = results.groupby("pipeline")["score"].agg(["mean", "std", "count"])
    per_subject = results.pivot_table(index="pipeline", columns="subject", values="score")
    print(f"MOABB CrossSubjectEvaluation, PhysionetMI left vs right imagery, subjects {list(SUBJECTS)} "
          f"(score: MOABB's ROC AUC), {(time.perf_counter() - start) / 60:.1f} min")
    print(table.round(3).to_string())
    print(per_subject.round(3).to_string())
    out = {"dataset": "PhysionetMI (5 subjects)", "paradigm": "LeftRightImagery", "evaluation": "CrossSubjectEvaluation",
           "metric": "roc_auc", "checkpoint": str(ckpt) if args.ckpt else f"tiny, {args.steps} steps on execution runs",
           "minutes": (time.perf_counter() - start) / 60,
           "pipelines": {p: {"mean": float(r["mean"]), "sd": float(r["std"]), "n": int(r["count"]),
                             "per_subject": {str(k): float(v) for k, v in per_subject.loc[p].items()}}
                         for p, r in table.iterrows()},
           "time_s": {p: float(v) for p, v in results.groupby("pipeline")["time"].sum().items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "moabb_eegmmi.json", json.dumps(out, indent=2))
    print(f"metrics: {args.out / 'moabb_eegmmi.json'}")


if __name__ == "__main__":
    main()
