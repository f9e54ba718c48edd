"""EEG Motor Movement/Imagery (PhysioNet EEGMMI), left vs right fist, with pretraining that never sees the test subject.

For each of the 5 subjects in ``../shared/data/meeg/eegmmidb``, as a user would from the shell:

1. ``neurofm prepare`` every run of the *other* 4 subjects (continuous windows, no labels);
2. ``neurofm pretrain`` ``tiny`` on them, then ``neurofm export``;
3. ``neurofm finetune task=decoding`` with that checkpoint on the held-out subject:
   - **within subject**: its own runs, stratified 5-fold over events;
   - **leave one subject out (LOSO)**: all 5 subjects' runs, ``task.protocol=loso``; only the
     fold that tests the held-out subject is kept, so no test subject ever reached pretraining.

Tasks: motor imagery (runs 4, 8, 12) and motor execution (runs 3, 7, 11), events ``T1`` (left)
and ``T2`` (right), windows [0.5, 2.5] s after the cue. Methods on the same splits and windows:
the pretrained encoder with a linear probe on mean-pooled tokens and on per-sensor pooled tokens
(``task.readout=sensors``), the same architecture untrained with the same probes, the same
architecture trained from scratch (``task.mode=scratch``, LOSO; its head reads per-sensor tokens
too, ``--head``), and the classical baselines:
CSP + LDA (8-30 Hz), a Riemannian tangent-space classifier (8-30 Hz covariances, logistic
regression) and ERP samples + shrinkage LDA. ``--modes finetune lora`` adds the trained
pretrained modes (with the same head as scratch).

Pooled over the 5 subjects: balanced accuracy and AUROC with 95 % bootstrap CIs, and per
subject. Writes ``docs/motor_imagery.json`` and ``docs/motor_imagery.png``. Deterministic.

usage: python benchmarks/motor_imagery.py [--steps 400] [--modes ...] [--work DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _common import (
    add_pretrain_arguments,
    binary_metrics,
    data_dir,
    method_panel,
    neurofm_cli,
    pretrain_and_export,
)
from matplotlib.figure import Figure

from neurofm.configs.schema import model_config
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
          "csp_lda": "CSP + LDA (8-30 Hz)", "riemann_lr": "Riemannian tangent space + LR (8-30 Hz)",
          "erp_lda": "ERP samples + shrinkage LDA"}
BASELINES = ("csp_lda", "riemann_lr", "erp_lda")


def files(root: Path, subjects, runs) -> str:
    return "[" + ",".join(str(root / s / f"{s}{r}.edf") for s in subjects for r in runs) + "]"


def pretrain(root: Path, held_out: str, args, work: Path, log: Path) -> Path:
    """A ``tiny`` checkpoint pretrained on every run of the other subjects; its export folder."""
    others = [s for s in SUBJECTS if s != held_out]
    shards, run = work / f"shards_no{held_out}", work / f"pretrain_no{held_out}"
    neurofm_cli("prepare", f"inputs={files(root, others, sorted(RUNS['imagery'] + RUNS['execution']))}",
                f"out={shards}", f"window_s={args.window}", "workers=1", log=log)
    return pretrain_and_export(shards, run, args, log, shuffle_buffer=500)


def decode(inputs: str, ckpt: Path, extra: list[str], baseline: bool, run_dir: Path, log: Path) -> pd.DataFrame:
    neurofm_cli("finetune", "task=decoding", f"ckpt={ckpt}", f"inputs={inputs}", "task.event_id=[T1,T2]",
                "task.tmin_s=0.5", "task.tmax_s=2.5", *extra, f"task.baseline={str(baseline).lower()}",
                f"run_dir={run_dir}", log=log)
    return pd.read_csv(run_dir / "predictions.csv", dtype={"subject": str})


def run_subject(root: Path, held_out: str, ckpt: Path, untrained: Path, args, work: Path,
                log: Path) -> list[pd.DataFrame]:
    """Every method's predictions for the test events of ``held_out`` (within subject, and its
    LOSO fold). Methods that do not depend on the held-out subject's checkpoint (baselines,
    untrained probes, scratch) run LOSO once, with the first held-out subject, and keep the
    folds of every selected subject."""
    first = held_out == args.subjects[0]
    rows = []
    for task, runs in RUNS.items():
        for protocol, inputs in (("within", files(root, [held_out], runs)), ("loso", files(root, SUBJECTS, runs))):
            loso = protocol == "loso"
            extra = ["task.protocol=loso"] if loso else ["task.protocol=kfold", "task.folds=5"]
            methods = {f"{enc}_probe_{readout}": (path, [f"task.readout={readout}"])
                       for enc, path in (("pretrained", ckpt), ("untrained", untrained))
                       for readout in ("mean", "sensors")}
            if loso or args.within_scratch:
                methods["scratch"] = (untrained, ["task.mode=scratch", f"task.epochs={args.epochs}",
                                                  f"task.readout={args.head}"])
            for mode in args.modes:
                methods[f"pretrained_{mode}"] = (ckpt, [f"task.mode={mode}", f"task.epochs={args.epochs}",
                                                        f"task.readout={args.head}"])
            for method, (path, more) in methods.items():
                shared = loso and not method.startswith("pretrained")
                if shared and not first:
                    continue
                baseline = method == "pretrained_probe_mean" and (not loso or first)
                found = decode(inputs, path, extra + more, baseline,
                               work / f"{task}_{protocol}_{held_out}_{method}", log)
                found["method"] = found["method"].where(found["method"].isin(BASELINES), method)
                if loso:  # this checkpoint never saw held_out; the others' folds are not ours to keep
                    independent = found["method"].isin(BASELINES) | shared
                    found = found[found["subject"].isin(args.subjects) & independent
                                  | (found["subject"] == held_out)]
                rows.append(found.assign(task=task, protocol=protocol))
    return rows


def summarise(rows: pd.DataFrame) -> dict:
    out = {}
    for (task, protocol, method), part in rows.groupby(["task", "protocol", "method"], sort=False):
        pooled, per_subject = binary_metrics(part, positive="T2", group="subject")
        out.setdefault(task, {}).setdefault(protocol, {})[method] = {
            "pooled": pooled, "per_subject": per_subject, "n_events": len(part)}
    return out


def plot(result: dict, path: Path) -> None:
    panels = [(t, p) for t in result for p in result[t]]
    fig = Figure(figsize=(6 * len(panels) / 2, 9), layout="constrained")
    axes = fig.subplots(2, len(panels) // 2, sharex=True, squeeze=False).ravel()
    for ax, (task, protocol) in zip(axes, panels, strict=True):
        method_panel(ax, result[task][protocol], LABELS, "per_subject", fontsize=8)
        ax.set_title(f"{task}, {'within subject (5-fold)' if protocol == 'within' else 'leave one subject out'}")
        ax.set_xlabel("balanced accuracy (pooled, 95 % CI; dots: subjects)")
    fig.suptitle("EEGMMI left vs right fist, 5 subjects; pretraining never saw the test subject")
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pretrain_arguments(parser, steps=400, batch=16, window=4.0, per="held-out subject")
    parser.add_argument("--modes", nargs="*", default=[], choices=["finetune", "lora"])
    parser.add_argument("--within-scratch", action="store_true", help="also train scratch within subject")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the trained modes")
    parser.add_argument("--head", default="sensors", choices=["mean", "sensors"],
                        help="what the heads of the trained modes (scratch, finetune, LoRA) read")
    parser.add_argument("--subjects", nargs="*", default=list(SUBJECTS), help="held-out subjects to run")
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
        torch.manual_seed(0)
        untrained = save_pretrained(MaskedAutoencoder(model_config("tiny")), work / "untrained")
        for held_out in args.subjects:
            print(f"held out: {held_out}", flush=True)
            ckpt = pretrain(root, held_out, args, work, log)
            rows += run_subject(root, held_out, ckpt, untrained, args, work, log)
    result = summarise(pd.concat(rows, ignore_index=True))
    minutes = (time.perf_counter() - start) / 60
    (out / "motor_imagery.json").write_text(json.dumps({"settings": vars(args), "minutes": minutes,
                                                        "results": result}, indent=1))
    plot(result, out / "motor_imagery.png")
    print(f"\nEEGMMI left vs right fist, held-out subjects {', '.join(args.subjects)}, {minutes:.1f} min")
    for task in result:
        for protocol, methods in result[task].items():
            subjects = sorted(next(iter(methods.values()))["per_subject"])
            print(f"\n## {task}, {protocol}")
            print(f"{'method':42s} {'bal. acc.':>20s} {'AUROC':>20s} " + " ".join(f"{s:>6s}" for s in subjects))
            for method, r in methods.items():
                cells = [f"{r['pooled'][k]['value']:.3f} [{r['pooled'][k]['ci_low']:.2f}, {r['pooled'][k]['ci_high']:.2f}]"
                         for k in ("balanced_accuracy", "auroc")]
                per = " ".join(f"{r['per_subject'].get(s, {}).get('balanced_accuracy', float('nan')):6.3f}"
                               for s in subjects)
                print(f"{LABELS.get(method, method):42s} " + " ".join(f"{c:>20s}" for c in cells) + " " + per)
    print(f"\nmetrics: {out / 'motor_imagery.json'}; figure: {out / 'motor_imagery.png'}")


if __name__ == "__main__":
    main()
