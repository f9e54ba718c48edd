"""One checkpoint pretrained on EEG and fMRI together against the single-modality checkpoints,
on both real cohorts: ABIDE autism vs control (fMRI, leave one site out) and EEGMMI motor
imagery left vs right (EEG, leave one subject out).

The data are split in two folds, each a half of the ABIDE sites and a part of the EEGMMI
subjects: fold A = (Caltech, KKI, Leuven_1, Olin; S001, S002), fold B = (Leuven_2, Pitt,
SDSU, Trinity; S003, S004, S005). For each fold, as a user would from the shell,
``neurofm prepare`` its data (no phenotype, no event labels) and ``neurofm pretrain`` three
``tiny`` checkpoints on it:

- **fMRI only**: the fold's ABIDE tables (each site with its TR), 400 steps;
- **EEG only**: every EEGMMI run (imagery and execution) of the fold's subjects, 400 steps;
- **EEG + fMRI**: both, 800 steps with batches drawn half from each modality
  (``data.modality_weights``), so each modality gets the 400 steps of its own checkpoint.

Each checkpoint is then evaluated on the *other* fold, which its pretraining never saw, by
the evaluations of ``neurofm finetune`` (:func:`neurofm.finetune.evaluate.evaluate`, in
process): ``task=disorder task.protocol=logo task.group_by=SITE_ID`` on the other
half's sites (linear probe on the token-connectivity readout), and
``task=decoding task.protocol=loso`` on imagery runs of all 5 subjects, keeping the folds that
test the other fold's subjects (linear probe on per-sensor tokens). The untrained architecture
with the same probes, and the classical baselines (FC + logistic regression; CSP + LDA, a
Riemannian classifier, ERP + shrinkage LDA), run on the same splits. Predictions of the two folds are pooled: 8 test sites and 5
test subjects. Balanced accuracy and AUROC with 95 % bootstrap CIs. The probes and the
baselines are the ones ``abide.py`` and ``motor_imagery.py`` report (all their baselines are kept).

Same recipe as ``abide.py`` (batch 8, 60 s fMRI windows, the package's default masking unless ``--mask``)
and ``motor_imagery.py`` (4 s EEG windows), except that the EEG-only checkpoints here see 2 or 3
subjects (``motor_imagery.py``'s see 4) and use batch 8. Writes ``docs/multimodal.json`` and
``docs/multimodal.png``. Deterministic.

``--seeds N`` repeats pretraining, the untrained encoder and the probes with seeds 0..N-1:
balanced accuracy and AUROC as mean ± sd over seeds, per site / subject (seed mean), and the
paired differences over sites / subjects (joint − each single-modality checkpoint, each −
untrained, each − the best classical baseline) with bootstrap 95 % CIs and Wilcoxon p.

usage: python benchmarks/multimodal.py [--seeds 3] [--steps 400] [--work DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import mne
import pandas as pd
import torch
from _common import (
    ABIDE_TR_S,
    add_pretrain_arguments,
    best_classical,
    data_dir,
    method_panel,
    neurofm_cli,
    paired_differences,
    paired_panel,
    print_seeded,
    seeded_summary,
)
from abide import HALVES, disorder_predictions, site_windows, tables, tr_mapping
from matplotlib.figure import Figure
from motor_imagery import RUNS, SUBJECTS, decode, files, paths

from neurofm.io import write_text_atomic
from neurofm.models.config import ModelConfig
from neurofm.models.io import save_pretrained
from neurofm.models.mae import MaskedAutoencoder

FOLDS = {"A": (HALVES[0], ("S001", "S002")), "B": (HALVES[1], ("S003", "S004", "S005"))}
CORPORA = ("fmri", "eeg", "both")
BASELINES = ("fc_logistic", "fc_tangent", "csp_lda", "riemann_lr", "erp_lda")
LABELS = {"fmri": "pretrained on fMRI only", "eeg": "pretrained on EEG only",
          "both": "pretrained on EEG + fMRI", "untrained": "untrained (random weights)",
          "fc_logistic": "FC (correlation) + logistic regression",
          "fc_tangent": "FC (tangent space) + logistic regression", "csp_lda": "CSP + LDA (8-30 Hz)",
          "riemann_lr": "Riemannian tangent space + LR", "erp_lda": "ERP samples + shrinkage LDA"}


def prepare_fold(root: Path, fold: str, corpus: str, args, work: Path, log: Path) -> Path:
    """``neurofm prepare`` the fold's data of ``corpus`` (no labels of either task)."""
    sites, subjects = FOLDS[fold]
    abide, eegmmi = root / "abide", root / "meeg" / "eegmmidb"
    inputs = []
    if corpus in ("fmri", "both"):
        inputs.append(tables(abide, sites)[1:-1])
    if corpus in ("eeg", "both"):
        inputs.append(files(eegmmi, subjects, sorted(RUNS["imagery"] + RUNS["execution"]))[1:-1])
    shards = work / f"shards_{fold}_{corpus}"
    neurofm_cli("prepare", f"inputs=[{','.join(inputs)}]", f"out={shards}",
                f"roi_coords={abide / 'CC200.nii.gz'}", f"roi_tr_s={tr_mapping(sites)}",
                f"window_s={args.eeg_window}", f"fmri_window_s={args.window}", "workers=1", log=log)
    return shards


def pretrain(shards: Path, corpus: str, args, run: Path, log: Path, seed: int = 0) -> Path:
    """``neurofm pretrain`` ``tiny`` (``abide.py``'s recipe; the joint corpus twice the steps,
    half the batches from each modality) with ``seed``, then ``neurofm export``; the export folder."""
    steps = args.steps * (2 if corpus == "both" else 1)
    mixing = ["+data.modality_weights={eeg: 0.5, fmri: 0.5}"] if corpus == "both" else []
    neurofm_cli("pretrain", f"seed={seed}", "data=shards", f"data.shards={shards}", "model=tiny",
                f"trainer.max_steps={steps}", f"data.batch_size={args.batch}", "data.num_workers=1",
                "data.shuffle_buffer=200", *mixing, f"model.mask_strategy={args.mask}",
                f"model.mask_ratio={args.mask_ratio}", f"optim.lr={args.lr}",
                f"optim.warmup_steps={max(1, steps // 20)}", f"checkpoint.every_n_steps={steps}",
                f"val_every_n_steps={steps}", "val_batches=5", f"run_dir={run}", "resume=null", *args.set,
                log=log)
    neurofm_cli("export", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"out={run / 'export'}", log=log)
    return run / "export"


def abide_predictions(root: Path, test_sites, ckpt: Path, baseline: bool, run_dir: Path, window: float,
                      seed: int = 0) -> pd.DataFrame:
    rows = disorder_predictions(ckpt, site_windows(root / "abide", test_sites, window), {"readout": "connectivity"},
                                baseline, run_dir, seed)
    return rows.assign(site=rows["split"].str.removeprefix("logo-"))


def eeg_predictions(root: Path, test_subjects, ckpt: Path, baseline: bool, run_dir: Path,
                    seed: int = 0) -> pd.DataFrame:
    eegmmi = root / "meeg" / "eegmmidb"
    rows = decode(paths(eegmmi, SUBJECTS, RUNS["imagery"]), ckpt, {"protocol": "loso", "readout": "sensors"},
                  baseline, run_dir, seed)
    return rows[rows["subject"].isin(test_subjects)]  # the folds whose subject pretraining never saw


def run_fold(root: Path, fold: str, untrained: Path, args, work: Path, log: Path, seed: int) -> dict[str, list]:
    """Predictions on the *other* fold's sites and subjects, per task (rows of every method,
    with a ``seed`` column). The classical baselines run with seed 0 only (they have none)."""
    other = "B" if fold == "A" else "A"
    test_sites, test_subjects = FOLDS[other]
    print(f"seed {seed}: pretrain on fold {fold}; test on {'+'.join(test_sites)} and {'+'.join(test_subjects)}",
          flush=True)
    checkpoints = {}
    for corpus in CORPORA:
        run = work / f"pretrain_{fold}_{corpus}_seed{seed}"
        if not (run / "export" / "model.safetensors").exists():  # --work of an earlier run: reuse
            shards = work / f"shards_{fold}_{corpus}"
            if not (shards / "manifest.json").exists():
                prepare_fold(root, fold, corpus, args, work, log)
            pretrain(shards, corpus, args, run, log, seed)
        checkpoints[corpus] = run / "export"
    checkpoints["untrained"] = untrained
    out: dict[str, list] = {"abide": [], "eegmmi": []}
    for method, ckpt in checkpoints.items():
        baseline = method == "fmri" and seed == 0  # the classical baselines once: the same splits for all
        name = f"{fold}_{method}_seed{seed}"
        rows = {"abide": abide_predictions(root, test_sites, ckpt, baseline, work / f"abide_{name}",
                                           args.window, seed),
                "eegmmi": eeg_predictions(root, test_subjects, ckpt, baseline, work / f"eegmmi_{name}", seed)}
        for task, found in rows.items():
            found = found.copy()
            found["method"] = found["method"].where(found["method"].isin(BASELINES), method)
            out[task].append(found.assign(seed=seed))
    return out


def pairs(methods) -> list[tuple[str, str]]:
    """The joint checkpoint against each single-modality one; every checkpoint against the
    untrained encoder and against the task's best classical baseline."""
    best = best_classical(methods, [b for b in BASELINES if b in methods])
    return [("both", "fmri"), ("both", "eeg"), *((m, "untrained") for m in CORPORA), *((m, best) for m in CORPORA)]


def summarise(frames: list[dict[str, list]]) -> dict:
    result: dict = {}
    for task, positive, group in (("abide", "2", "site"), ("eegmmi", "T2", "subject")):
        rows = pd.concat([part for f in frames for part in f[task]], ignore_index=True)
        methods = seeded_summary(rows, positive=positive, group=group)
        result[task] = {"methods": methods, "paired": paired_differences(methods, pairs(methods), group)}
    return result


def plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(13, 8), layout="constrained")
    for (left, right), (task, group, title) in zip(fig.subplots(2, 2), (
            ("abide", "per_site", "ABIDE autism vs control, leave one site out (8 sites)"),
            ("eegmmi", "per_subject", "EEGMMI imagery left vs right, leave one subject out (5)")), strict=True):
        method_panel(left, result[task]["methods"], LABELS, group, fontsize=8)
        left.set_title(title, fontsize=10)
        left.set_xlabel("balanced accuracy (seed 0, 95 % CI; dots: sites / subjects, seed mean)")
        paired_panel(right, result[task]["paired"], LABELS, fontsize=8)
        right.set_title("paired over " + ("sites" if task == "abide" else "subjects") + " (seed means)", fontsize=10)
    fig.suptitle("One checkpoint for EEG and fMRI vs one per modality; pretraining never saw the test data",
                 fontsize=10)
    fig.savefig(path, dpi=110)


def main() -> None:
    mne.set_log_level("ERROR")  # the classical baselines run in this process: no MNE notices
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pretrain_arguments(parser, steps=400, batch=8, window=60.0, per="modality")
    parser.add_argument("--eeg-window", type=float, default=4.0, help="EEG pretraining window, s")
    parser.add_argument("--work", default=None, help="keep the shards, checkpoints and runs here; "
                        "a rerun with the same --work reuses what is already there")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    assert set(ABIDE_TR_S) == {s for f in FOLDS.values() for s in f[0]}
    root = data_dir()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "commands.log"
        frames = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            untrained = save_pretrained(MaskedAutoencoder(ModelConfig.named("tiny")), work / f"untrained_seed{seed}")
            frames += [run_fold(root, fold, untrained, args, work, log, seed) for fold in FOLDS]
    result = summarise(frames)
    minutes = (time.perf_counter() - start) / 60
    write_text_atomic(out / "multimodal.json", json.dumps({"settings": vars(args), "minutes": minutes,
                                                           "results": result}, indent=1, default=float))
    plot(result, out / "multimodal.png")
    print(f"\nEEG + fMRI vs single-modality checkpoints, {args.seeds} seeds, {minutes:.1f} min")
    for task, found in result.items():
        print(f"\n## {task}")
        print_seeded(found["methods"], found["paired"], LABELS)
    print(f"\nmetrics: {out / 'multimodal.json'}; figure: {out / 'multimodal.png'}")


if __name__ == "__main__":
    main()
