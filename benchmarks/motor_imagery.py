"""EEG Motor Movement/Imagery (PhysioNet EEGMMI), left vs right fist, with pretraining that never sees the test subject.

For each of the 5 subjects in ``../shared/data/meeg/eegmmidb``, as a user would from the shell:

1. ``neurofm prepare`` every run of the *other* 4 subjects (continuous windows, no labels);
2. ``neurofm pretrain`` ``tiny`` on them, then ``neurofm export``;
3. the evaluation ``neurofm finetune task=decoding`` runs (:func:`neurofm.finetune.evaluate.evaluate`,
   in process, on the windows :func:`neurofm.finetune.tasks.decoding_windows` cuts) with that
   checkpoint on the held-out subject:
   - **within subject**: its own runs, stratified 5-fold over events;
   - **leave one subject out (LOSO)**: all 5 subjects' runs, ``task.protocol=loso``; only the
     fold that tests the held-out subject is kept, so no test subject ever reached pretraining.

Tasks: motor imagery (runs 4, 8, 12) and motor execution (runs 3, 7, 11), events ``T1`` (left)
and ``T2`` (right), windows [0.5, 2.5] s after the cue. Methods on the same splits and windows:
the pretrained encoder with a linear probe on mean-pooled tokens and on per-sensor pooled tokens
(``task.readout=sensors``), the same architecture untrained with the same probes, the same
architecture trained from scratch (``task.mode=scratch``, LOSO; its head reads per-sensor tokens
too, ``--head``), and the classical baselines:
MOABB's CSP + LDA, tangent space + LR and filter-bank tangent space + LR, and ERP samples +
shrinkage LDA (:data:`neurofm.finetune.baselines.DECODING_BASELINES`). ``--modes finetune lora`` adds the trained
pretrained modes (with the same head as scratch).

``--seeds N`` repeats everything seeded (pretraining init and data order, the untrained
encoder, head init, fold shuffles) with seeds 0..N-1. Pooled over the 5 subjects: balanced
accuracy and AUROC per seed with their mean ± sd over seeds, and per subject (seed mean); the
paired difference over subjects of every pretrained method against scratch, against the
untrained encoder with the same readout and against the best classical baseline, with a
bootstrap 95 % CI and a Wilcoxon signed-rank p. Writes ``docs/motor_imagery.json`` and
``docs/motor_imagery.png``. Deterministic for a given seed.

usage: python benchmarks/motor_imagery.py [--seeds 3] [--tasks imagery] [--protocols loso]
       [--readouts sensors] [--modes lora] [--steps 400] [--work DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import cache
from pathlib import Path

import mne
import pandas as pd
import torch
from _common import (
    add_pretrain_arguments,
    best_classical,
    data_dir,
    method_panel,
    neurofm_cli,
    paired_differences,
    paired_panel,
    pretrain_and_export,
    print_seeded,
    seeded_summary,
)
from matplotlib.figure import Figure

from neurofm import load
from neurofm.finetune.baselines import DECODING_BASELINES
from neurofm.finetune.evaluate import evaluate
from neurofm.finetune.tasks import decoding_windows, event_groups
from neurofm.models.config import ModelConfig
from neurofm.models.io import save_pretrained
from neurofm.models.mae import MaskedAutoencoder

SUBJECTS = ("S001", "S002", "S003", "S004", "S005")
RUNS = {"imagery": ("R04", "R08", "R12"), "execution": ("R03", "R07", "R11")}
LABELS = {"pretrained_probe_mean": "pretrained + probe (mean tokens)",
          "pretrained_probe_sensors": "pretrained + probe (per-sensor tokens)",
          "untrained_probe_mean": "untrained + probe (mean tokens)",
          "untrained_probe_sensors": "untrained + probe (per-sensor tokens)",
          "pretrained_finetune": "pretrained + finetune", "pretrained_lora": "pretrained + LoRA (r = 8)",
          "scratch": "same architecture, scratch",
          "csp_lda": "CSP + LDA (MOABB, 8-32 Hz)", "tangent_lr": "tangent space + LR (MOABB, 8-32 Hz)",
          "fb_tangent_lr": "filter-bank tangent space + LR", "erp_lda": "ERP samples + shrinkage LDA"}
BASELINES = tuple(DECODING_BASELINES)


def files(root: Path, subjects, runs) -> str:
    return "[" + ",".join(str(root / s / f"{s}{r}.edf") for s in subjects for r in runs) + "]"


def paths(root: Path, subjects, runs) -> tuple[Path, ...]:
    return tuple(root / s / f"{s}{r}.edf" for s in subjects for r in runs)


@cache
def windows(inputs: tuple[Path, ...]) -> list:
    """T1 / T2 windows [0.5, 2.5] s after each cue, as ``neurofm finetune`` cuts them (once)."""
    return decoding_windows(inputs, ["T1", "T2"], 0.5, 2.5, by_subject=False)  # EEGMMI names carry the subject


def pretrain(root: Path, held_out: str, seed: int, args, work: Path, log: Path) -> Path:
    """A ``tiny`` checkpoint pretrained (with ``seed``) on every run of the other subjects; its
    export folder. The shards do not depend on the seed: one ``prepare`` serves every seed."""
    others = [s for s in SUBJECTS if s != held_out]
    shards, run = work / f"shards_no{held_out}", work / f"pretrain_no{held_out}_seed{seed}"
    if not (shards / "manifest.json").exists():
        neurofm_cli("prepare", f"inputs={files(root, others, sorted(RUNS['imagery'] + RUNS['execution']))}",
                    f"out={shards}", f"window_s={args.window}", "workers=1", log=log)
    return pretrain_and_export(shards, run, args, log, shuffle_buffer=500, seed=seed)


def decode(inputs: tuple[Path, ...], ckpt: Path, options: dict, baseline: bool, run_dir: Path,
           seed: int = 0) -> pd.DataFrame:
    """The decoding evaluation (T1 vs T2) of ``ckpt`` with ``options`` (protocol, mode, readout
    ...); its predictions, also written to ``run_dir``. A run folder that already holds
    predictions (``--work`` of an earlier run) is read, not run again."""
    if (run_dir / "predictions.csv").exists():
        return pd.read_csv(run_dir / "predictions.csv", dtype={"subject": str})
    segments = windows(inputs)
    evaluation = evaluate(load(ckpt), segments, [w.meta["label"] for w in segments], event_groups(segments),
                          baselines=baseline, seed=seed, **options)
    evaluation.write(run_dir)
    return evaluation.predictions


def run_subject(root: Path, held_out: str, seed: int, ckpt: Path, untrained: Path, args, work: Path,
                log: Path) -> list[pd.DataFrame]:
    """Every method's predictions for the test events of ``held_out`` (within subject, and its
    LOSO fold) with ``seed``. Methods that do not depend on the held-out subject's checkpoint
    (baselines, untrained probes, scratch) run LOSO once per seed, with the first held-out
    subject, and keep the folds of every selected subject; the baselines, which have no seed,
    run with seed 0 only."""
    first = held_out == args.subjects[0]
    rows = []
    for task in args.tasks:
        runs = RUNS[task]
        for protocol in args.protocols:
            loso = protocol == "loso"
            inputs = paths(root, SUBJECTS if loso else [held_out], runs)
            extra = {"protocol": "loso"} if loso else {"protocol": "kfold", "folds": 5}
            methods = {f"{enc}_probe_{readout}": (path, {"readout": readout})
                       for enc, path in (("pretrained", ckpt), ("untrained", untrained))
                       for readout in args.readouts}
            if loso or args.within_scratch:
                methods["scratch"] = (untrained, {"mode": "scratch", "epochs": args.epochs, "readout": args.head})
            for mode in args.modes:
                methods[f"pretrained_{mode}"] = (ckpt, {"mode": mode, "epochs": args.epochs, "readout": args.head})
            for i, (method, (path, more)) in enumerate(methods.items()):
                shared = loso and not method.startswith("pretrained")
                if shared and not first:
                    continue
                baseline = i == 0 and seed == 0 and (not loso or first)
                if loso and not shared and not baseline:  # only the fold this checkpoint may test
                    more = {**more, "test_subjects": [held_out]}
                found = decode(inputs, path, {**extra, **more}, baseline,
                               work / f"{task}_{protocol}_{held_out}_{method}_seed{seed}", seed)
                found["method"] = found["method"].where(found["method"].isin(BASELINES), method)
                if loso:  # this checkpoint never saw held_out; the others' folds are not ours to keep
                    independent = found["method"].isin(BASELINES) | shared
                    found = found[found["subject"].isin(args.subjects) & independent
                                  | (found["subject"] == held_out)]
                rows.append(found.assign(task=task, protocol=protocol, seed=seed))
    return rows


def pairs(methods) -> list[tuple[str, str]]:
    """The paired comparisons: every pretrained method against scratch and against the
    untrained encoder with the same readout, and against the best classical baseline."""
    best = best_classical(methods, BASELINES)
    out = []
    for method in (m for m in methods if m.startswith("pretrained")):
        out += [(method, "scratch"), (method, method.replace("pretrained", "untrained")), (method, best)]
    return out


def summarise(rows: pd.DataFrame) -> dict:
    out = {}
    for (task, protocol), part in rows.groupby(["task", "protocol"], sort=False):
        methods = seeded_summary(part, positive="T2", group="subject")
        out.setdefault(task, {})[protocol] = {
            "methods": methods, "paired": paired_differences(methods, pairs(methods), "subject")}
    return out


def plot(result: dict, path: Path) -> None:
    panels = [(t, p) for t in result for p in result[t]]
    fig = Figure(figsize=(13, 4.5 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for (left, right), (task, protocol) in zip(axes, panels, strict=True):
        found = result[task][protocol]
        method_panel(left, found["methods"], LABELS, "per_subject", fontsize=8)
        left.set_title(f"{task}, {'within subject (5-fold)' if protocol == 'within' else 'leave one subject out'}")
        left.set_xlabel("balanced accuracy (seed 0, 95 % CI; dots: subjects, seed mean)")
        paired_panel(right, found["paired"], LABELS, fontsize=8)
        right.set_title("paired over subjects (seed means)")
    fig.suptitle("EEGMMI left vs right fist, 5 subjects; pretraining never saw the test subject")
    fig.savefig(path, dpi=110)


def main() -> None:
    mne.set_log_level("ERROR")  # the classical baselines run in this process: no MNE notices
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pretrain_arguments(parser, steps=400, batch=16, window=4.0, per="held-out subject")
    parser.add_argument("--modes", nargs="*", default=[], choices=["finetune", "lora"])
    parser.add_argument("--within-scratch", action="store_true", help="also train scratch within subject")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the trained modes")
    parser.add_argument("--head", default="sensors", choices=["mean", "sensors"],
                        help="what the heads of the trained modes (scratch, finetune, LoRA) read")
    parser.add_argument("--subjects", nargs="*", default=list(SUBJECTS), help="held-out subjects to run")
    parser.add_argument("--tasks", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--protocols", nargs="*", default=["within", "loso"], choices=["within", "loso"])
    parser.add_argument("--readouts", nargs="*", default=["mean", "sensors"], choices=["mean", "sensors"],
                        help="what the linear probes read")
    parser.add_argument("--work", default=None, help="keep the shards, checkpoints and runs here")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    root = data_dir() / "meeg" / "eegmmidb"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "commands.log"
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            untrained = save_pretrained(MaskedAutoencoder(ModelConfig.named("tiny")), work / f"untrained_seed{seed}")
            for held_out in args.subjects:
                print(f"seed {seed}, held out: {held_out}", flush=True)
                ckpt = pretrain(root, held_out, seed, args, work, log)
                rows += run_subject(root, held_out, seed, ckpt, untrained, args, work, log)
    result = summarise(pd.concat(rows, ignore_index=True))
    minutes = (time.perf_counter() - start) / 60
    (out / "motor_imagery.json").write_text(json.dumps({"settings": vars(args), "minutes": minutes,
                                                        "results": result}, indent=1))
    plot(result, out / "motor_imagery.png")
    print(f"\nEEGMMI left vs right fist, held-out subjects {', '.join(args.subjects)}, "
          f"seeds 0..{args.seeds - 1}, {minutes:.1f} min")
    for task in result:
        for protocol, found in result[task].items():
            print(f"\n## {task}, {protocol}")
            print_seeded(found["methods"], found["paired"], LABELS)
    print(f"\nmetrics: {out / 'motor_imagery.json'}; figure: {out / 'motor_imagery.png'}")


if __name__ == "__main__":
    main()
