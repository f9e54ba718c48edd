"""MOABB check: the package's classical baselines against MOABB's own evaluation, on left vs
right hand imagery of PhysioNet EEGMMI (the 10 subjects of ``../shared/data/meeg/eegmmidb``).

MOABB's ``PhysionetMI`` reads the files through MNE's cache layout
(``MNE-eegbci-data/files/eegmmidb/1.0.0/S00k/``, links to the files, no download).
``LeftRightImagery`` (8-32 Hz) and ``FilterBankLeftRightImagery`` (six 4-Hz bands) feed MOABB's
``CrossSubjectEvaluation`` (leave one subject out, ROC AUC) with the standard pipelines as
MOABB's examples write them:

- ``CSP(n_components=8) + LDA``;
- ``Covariances("oas") + TangentSpace(metric="riemann") + LogisticRegression``;
- ``FilterBank(Covariances("oas") + TangentSpace) + StandardScaler + LogisticRegression``.

Then the package's functions (:func:`neurofm.finetune.baselines.csp_lda`, ``tangent_lr``,
``filter_bank_tangent_lr``) score the same epochs (MOABB's ``get_data``, already filtered:
``band=None``) on the same leave-one-subject-out folds, and the per-subject AUCs are compared:
the check passes when every pipeline's mean differs by less than 0.01.

``--ckpt DIR`` adds neurofm's ``Embedder`` (frozen encoder, per-sensor readout) + LR in MOABB's
evaluation, and checks on MOABB's own epochs that the Embedder fitted on the other subjects
gives each held-out subject's epochs the same features alone, together and in any order
(``embedder_invariance``: the largest difference relative to the features' scale). No checkpoint is pretrained here: one checkpoint pretrained on these subjects would
see every test subject (a transductive run); give a checkpoint that never saw them.

usage: python benchmarks/moabb_eegmmi.py [--subjects 10] [--ckpt DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import data_dir

from neurofm.io import write_text_atomic


def mne_layout(eegmmi: Path, root: Path, subjects: list[int]) -> Path:
    """Links to the EDF files where MNE's ``eegbci`` (and MOABB) look for them."""
    for subject in subjects:
        folder = root / "MNE-eegbci-data" / "files" / "eegmmidb" / "1.0.0" / f"S{subject:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for edf in (eegmmi / f"S{subject:03d}").glob("*.edf"):
            if not (folder / edf.name).exists():
                (folder / edf.name).symlink_to(edf.resolve())
    return root


def package_scores(paradigm, dataset, subjects: list[int], predict) -> dict[int, float]:
    """Per held-out subject, the ROC AUC of ``predict(x_train, y_train, x_test)`` trained on the
    other subjects' epochs (MOABB's data, labels encoded as MOABB's evaluation does)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import LabelEncoder

    x, labels, meta = paradigm.get_data(dataset, subjects=subjects)
    y = LabelEncoder().fit_transform(labels)
    owner = meta["subject"].to_numpy()
    out = {}
    for subject in subjects:
        train, test = owner != subject, owner == subject
        out[subject] = float(roc_auc_score(y[test], predict(x[train], y[train], x[test])[:, 1]))
    return out


def embedder_invariance(embedder, paradigm, dataset, subjects: list[int]) -> dict:
    """Fit ``embedder`` on the epochs of every subject but the first (MOABB's ``get_data``) and
    compare the first subject's features computed together, one epoch at a time and shuffled."""
    from sklearn.base import clone

    x, _, meta = paradigm.get_data(dataset, subjects=subjects)
    held = meta["subject"].to_numpy() == subjects[0]
    fitted = clone(embedder).fit(x[~held])
    test = x[held]
    together = fitted.transform(test)
    scale = float(np.abs(together).max())
    alone = np.stack([fitted.transform(test[i : i + 1])[0] for i in range(len(test))])
    order = np.random.default_rng(0).permutation(len(test))
    shuffled = fitted.transform(test[order])
    return {"subject": subjects[0], "epochs": int(len(test)), "feature_scale": scale,
            "alone_vs_together": float(np.abs(alone - together).max() / scale),
            "shuffled_vs_together": float(np.abs(shuffled - together[order]).max() / scale)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--ckpt", default=None, help="an export that never saw these subjects")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    subjects = list(range(1, args.subjects + 1))
    eegmmi = data_dir() / "meeg" / "eegmmidb"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ["MNE_DATASETS_EEGBCI_PATH"] = str(mne_layout(eegmmi, work / "mne_data", subjects))

        import mne
        from mne.decoding import CSP
        from moabb.datasets import PhysionetMI
        from moabb.evaluations import CrossSubjectEvaluation
        from moabb.paradigms import FilterBankLeftRightImagery, LeftRightImagery
        from moabb.pipelines.utils import FilterBank
        from pyriemann.estimation import Covariances
        from pyriemann.tangentspace import TangentSpace
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from neurofm.finetune.baselines import csp_lda, filter_bank_tangent_lr, tangent_lr

        mne.set_log_level("ERROR")
        warnings.filterwarnings("ignore")
        import moabb

        if hasattr(moabb, "set_download_provider"):  # MOABB >= 1.7 prefers its NEMAR mirror
            moabb.set_download_provider("upstream")  # the files are in MNE's layout already
        dataset = PhysionetMI(imagined=True, executed=False)
        dataset.subject_list = subjects
        dataset.feet_runs = []  # the shared copy holds the hand runs (4, 8, 12) only; left vs right needs no more
        lr = {"C": 1.0, "max_iter": 5000, "random_state": 0}
        single = {
            "csp_lda": make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis()),
            "tangent_lr": make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"), LogisticRegression(**lr)),
        }
        bank = {"fb_tangent_lr": make_pipeline(FilterBank(make_pipeline(Covariances("oas"),
                                                                         TangentSpace(metric="riemann"))),
                                               StandardScaler(), LogisticRegression(**lr))}
        paradigms = {"single": LeftRightImagery(), "bank": FilterBankLeftRightImagery()}
        if args.ckpt:
            from neurofm.sklearn import Embedder

            epochs, _, _ = paradigms["single"].get_data(dataset, subjects=[subjects[0]], return_epochs=True)
            single["neurofm_embedder"] = make_pipeline(Embedder(str(args.ckpt), readout="sensors", info=epochs.info),
                                                       StandardScaler(), LogisticRegression(**lr))
        results = []
        for key, pipelines in (("single", single), ("bank", bank)):
            evaluation = CrossSubjectEvaluation(paradigm=paradigms[key], datasets=[dataset], overwrite=True,
                                                hdf5_path=str(work / f"moabb_{key}"), n_jobs=1)
            results.append(evaluation.process(pipelines))
        import pandas as pd

        results = pd.concat(results, ignore_index=True)
        invariance = (embedder_invariance(single["neurofm_embedder"][0], paradigms["single"], dataset, subjects)
                      if args.ckpt else None)
        ours = {
            "csp_lda": package_scores(paradigms["single"], dataset, subjects,
                                      lambda a, y, b: csp_lda(a, y, b, 160.0, band=None)),
            "tangent_lr": package_scores(paradigms["single"], dataset, subjects,
                                         lambda a, y, b: tangent_lr(a, y, b, 160.0, band=None)),
            "fb_tangent_lr": package_scores(
                paradigms["bank"], dataset, subjects,
                lambda a, y, b: filter_bank_tangent_lr(list(np.moveaxis(a, -1, 0)), y, list(np.moveaxis(b, -1, 0)),
                                                       160.0, bands=None)),
        }
    per_subject = results.pivot_table(index="pipeline", columns="subject", values="score")
    out = {"dataset": f"PhysionetMI ({len(subjects)} subjects)", "paradigm": "LeftRightImagery / FilterBankLeftRightImagery",
           "evaluation": "CrossSubjectEvaluation (leave one subject out)", "metric": "roc_auc",
           "minutes": (time.perf_counter() - start) / 60, "pipelines": {}, "check": {}}
    for pipeline in per_subject.index:
        moabb_scores = {int(k): float(v) for k, v in per_subject.loc[pipeline].items()}
        entry = {"moabb_mean": float(np.mean(list(moabb_scores.values()))), "moabb_per_subject": moabb_scores}
        if pipeline in ours:
            entry["neurofm_mean"] = float(np.mean(list(ours[pipeline].values())))
            entry["neurofm_per_subject"] = ours[pipeline]
            entry["difference"] = entry["neurofm_mean"] - entry["moabb_mean"]
            entry["max_subject_difference"] = float(max(abs(ours[pipeline][s] - moabb_scores[s]) for s in subjects))
            out["check"][pipeline] = abs(entry["difference"]) < 0.01
        out["pipelines"][pipeline] = entry
    if invariance is not None:
        out["embedder"] = {"checkpoint": str(args.ckpt), "readout": "sensors", "classifier": "StandardScaler + LR"}
        out["embedder_invariance"] = invariance
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "moabb_eegmmi.json", json.dumps(out, indent=2))
    print(f"MOABB CrossSubjectEvaluation, PhysionetMI left vs right imagery, {len(subjects)} subjects, "
          f"ROC AUC, {out['minutes']:.1f} min")
    print(f"{'pipeline':22s} {'MOABB':>7s} {'neurofm':>8s} {'diff':>7s} {'max |diff| subject':>19s}")
    for pipeline, e in out["pipelines"].items():
        if "neurofm_mean" in e:
            print(f"{pipeline:22s} {e['moabb_mean']:7.3f} {e['neurofm_mean']:8.3f} {e['difference']:+7.4f} "
                  f"{e['max_subject_difference']:19.4f}")
        else:
            print(f"{pipeline:22s} {e['moabb_mean']:7.3f}")
    print("check (|difference| < 0.01):", out["check"])
    if invariance is not None:
        print(f"Embedder on subject {invariance['subject']}'s {invariance['epochs']} epochs, fitted on the others: "
              f"alone vs together {invariance['alone_vs_together']:.1e}, shuffled vs together "
              f"{invariance['shuffled_vs_together']:.1e} of the features' scale")
    print(f"metrics: {args.out / 'moabb_eegmmi.json'}")


if __name__ == "__main__":
    main()
