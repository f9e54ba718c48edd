"""ABIDE-I autism vs control, leave-one-site-out, with pretraining that never sees the test sites.

The 8 sites in ``../shared/data/abide`` are split in two halves. For each half, as a user
would from the shell:

1. ``neurofm prepare`` the half's CC200 tables (each site with its TR; no phenotype, so no
   label reaches pretraining);
2. ``neurofm pretrain`` ``tiny`` on them (the package's default masking unless ``--mask``), then ``neurofm export``;
3. the evaluation of ``neurofm finetune task=disorder task.protocol=logo task.group_by=SITE_ID``
   (:func:`neurofm.finetune.evaluate.evaluate`, in process) on the *other*
   half: each of its 4 sites is tested in turn by a model trained on the other 3.

Methods (same splits, same windows): the pretrained encoder with a linear probe on mean-pooled
tokens and on the ``connectivity`` readout (correlation between parcels of their token
sequences), the same architecture untrained (random weights) with the same probes, and the
classical baselines, correlation FC + logistic regression and tangent-space FC (nilearn
``ConnectivityMeasure``) + logistic regression. ``--modes finetune lora scratch`` adds the
trained modes, their heads on the connectivity readout (``--head``; slow on CPU: hours with 2 cores).

``--seeds N`` repeats pretraining, the untrained encoder, the probes and heads with seeds
0..N-1 (the FC baselines have no seed: they run once). Subject-level predictions of both
halves are pooled: balanced accuracy and AUROC per seed with mean ± sd, seed 0's accuracy with
its 95 % bootstrap CI, balanced accuracy per site (seed mean), and the paired difference over
the 8 sites of every pretrained method against the untrained encoder with the same readout,
scratch, the best FC baseline and tangent-space FC (bootstrap 95 % CI, Wilcoxon p). Writes
``docs/abide.json`` and ``docs/abide.png``. Deterministic for a given seed.

usage: python benchmarks/abide.py [--seeds 3] [--steps 400] [--window 60] [--modes ...] [--work DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import cache
from pathlib import Path

import mne
import numpy as np
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
    pretrain_and_export,
    print_seeded,
    seeded_summary,
)
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score

from neurofm import load
from neurofm.datasets import PrepareOptions
from neurofm.finetune.evaluate import evaluate
from neurofm.finetune.tasks import cohort_windows, subject_classes
from neurofm.models.config import ModelConfig
from neurofm.models.io import save_pretrained
from neurofm.models.mae import MaskedAutoencoder

HALVES = (("Caltech", "KKI", "Leuven_1", "Olin"), ("Leuven_2", "Pitt", "SDSU", "Trinity"))
LABELS = {"pretrained_probe_mean": "pretrained + probe (mean tokens)",
          "pretrained_probe_connectivity": "pretrained + probe (token connectivity)",
          "untrained_probe_mean": "untrained + probe (mean tokens)",
          "untrained_probe_connectivity": "untrained + probe (token connectivity)",
          "pretrained_finetune": "pretrained + finetune", "pretrained_lora": "pretrained + LoRA (r = 8)",
          "scratch": "same architecture, scratch",
          "fc_logistic": "FC (correlation) + logistic regression",
          "fc_tangent": "FC (tangent space) + logistic regression"}
BASELINES = ("fc_logistic", "fc_tangent")


def tables(abide: Path, sites: tuple[str, ...]) -> str:
    files = [p for site in sites for p in sorted((abide / "rois_cc200").glob(f"{site}_0*_rois_cc200.1D"))]
    return "[" + ",".join(map(str, files)) + "]"


def tr_mapping(sites: tuple[str, ...]) -> str:
    return "{" + ", ".join(f"{site}: {ABIDE_TR_S[site]}" for site in sites) + "}"


@cache
def site_windows(abide: Path, sites: tuple[str, ...], window: float) -> tuple[list, list[str], np.ndarray]:
    """The test sites' windows as ``neurofm finetune task=disorder`` reads them, each subject's
    DX_GROUP and each window's site."""
    files = [p for site in sites for p in sorted((abide / "rois_cc200").glob(f"{site}_0*_rois_cc200.1D"))]
    options = PrepareOptions(window_s=window, fmri_window_s=window, roi_coords=str(abide / "CC200.nii.gz"),
                             roi_tr_s={site: ABIDE_TR_S[site] for site in sites})
    cohort = cohort_windows(files, options, label="DX_GROUP", group_by="SITE_ID",
                            phenotype=abide / "Phenotypic_V1_0b_preprocessed1.csv")
    return subject_classes(cohort, "DX_GROUP", "SITE_ID")


def disorder_predictions(ckpt: Path, cohort: tuple, options: dict, baseline: bool, run_dir: Path,
                         seed: int) -> pd.DataFrame:
    """Leave one site out over ``cohort`` (:func:`site_windows`) with ``ckpt`` and ``options``
    (mode, readout, epochs); its subject-level predictions, also written to ``run_dir``. A run
    folder that already holds them (``--work`` of an earlier run) is read, not run again."""
    if (run_dir / "predictions.csv").exists():
        return pd.read_csv(run_dir / "predictions.csv", dtype={"subject": str})
    segments, labels, sites = cohort
    evaluation = evaluate(load(ckpt), segments, labels, level="subject", protocol="logo", group_values=sites,
                          baselines=baseline, seed=seed, **options)
    evaluation.write(run_dir)
    return evaluation.predictions


def run_half(abide: Path, train_sites, test_sites, seed: int, args, work: Path,
             log: Path) -> dict[str, pd.DataFrame]:
    name = "+".join(train_sites)
    print(f"seed {seed}: pretrain on {name}; leave-one-site-out on {'+'.join(test_sites)}", flush=True)
    shards, run = work / f"shards_{name}", work / f"pretrain_{name}_seed{seed}"
    done = (run / "export" / "model.safetensors").exists()  # --work DIR of an earlier run: reuse it
    if not done:
        pretrain_half(abide, train_sites, seed, args, shards, run, log)
    torch.manual_seed(seed)
    untrained = save_pretrained(MaskedAutoencoder(ModelConfig.named("tiny")), work / f"untrained_seed{seed}")
    cohort = site_windows(abide, test_sites, args.window)
    runs = {"pretrained_probe_mean": (run / "export", {"readout": "mean"}),
            "pretrained_probe_connectivity": (run / "export", {"readout": "connectivity"}),
            "untrained_probe_mean": (untrained, {"readout": "mean"}),
            "untrained_probe_connectivity": (untrained, {"readout": "connectivity"})}
    for mode in args.modes:
        ckpt = untrained if mode == "scratch" else run / "export"
        runs[mode if mode == "scratch" else f"pretrained_{mode}"] = (
            ckpt, {"mode": mode, "epochs": args.epochs, "readout": args.head})
    out = {}
    for method, (ckpt, options) in runs.items():
        run_dir = work / f"finetune_{name}_{method}_seed{seed}"
        # the FC baselines (no seed) once: same splits for every method
        baseline = method == "pretrained_probe_mean" and seed == 0
        if not done:
            (run_dir / "predictions.csv").unlink(missing_ok=True)
        predictions = disorder_predictions(ckpt, cohort, options, baseline, run_dir, seed)
        for inner, rows in predictions.groupby("method"):
            key = method if inner not in BASELINES else inner
            out[key] = rows.assign(seed=seed, method=key)
    return out


def pretrain_half(abide: Path, train_sites, seed: int, args, shards: Path, run: Path, log: Path) -> None:
    """``neurofm prepare`` (no phenotype: no label reaches pretraining; once for every seed),
    ``pretrain`` with ``seed``, ``export``."""
    if not (shards / "manifest.json").exists():
        neurofm_cli("prepare", f"inputs={tables(abide, train_sites)}", f"out={shards}",
                    f"roi_coords={abide / 'CC200.nii.gz'}", f"roi_tr_s={tr_mapping(train_sites)}",
                    f"fmri_window_s={args.window}", "workers=1", log=log)
    pretrain_and_export(shards, run, args, log, shuffle_buffer=200, seed=seed)


def pretraining_r2(run: Path) -> dict[str, float]:
    """Masked-token validation R² of a pretraining run, before the first step and at the end."""
    metrics = pd.read_csv(run / "metrics.csv").dropna(subset=["val/r2"])
    return {"start": float(metrics["val/r2"].iloc[0]), "end": float(metrics["val/r2"].iloc[-1])}


def masked_parcel_references(abide: Path, sites, widths_mm=(10, 15, 20, 30), seed: int = 0) -> dict:
    """What masking half the parcels leaves to learn, per table of ``sites``: R² of filling
    each masked parcel's (z-scored) series from the visible ones by the mean of all of them
    (the global signal) and by a Gaussian kernel over the distance between centroids (the
    interpolation prior's form), each with its best gain; the mean over tables."""
    from neurofm.tokenizers import read_roi_table
    from neurofm.tokenizers.roi_table import roi_coordinates

    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {"global mean": [], **{f"Gaussian {w} mm": [] for w in widths_mm}}
    for path in (p for site in sites for p in sorted((abide / "rois_cc200").glob(f"{site}_0*_rois_cc200.1D"))):
        values, columns = read_roi_table(path)
        centroids = np.asarray(roi_coordinates(abide / "CC200.nii.gz", values.shape[1], columns, str(path))[0])
        real = values.any(axis=0)
        z = (values[:, real] - values[:, real].mean(0)) / values[:, real].std(0)
        xyz = centroids[real]
        masked = rng.random(z.shape[1]) < 0.5
        seen, hidden = z[:, ~masked], z[:, masked]
        d2 = ((xyz[masked][:, None] - xyz[~masked][None]) ** 2).sum(-1)  # mm²
        fills = {"global mean": np.repeat(seen.mean(1, keepdims=True), masked.sum(), axis=1)}
        for w in widths_mm:
            kernel = np.exp(-d2 / (2 * w**2))
            fills[f"Gaussian {w} mm"] = seen @ (kernel / kernel.sum(1, keepdims=True)).T
        for name, fill in fills.items():
            gain = (hidden * fill).sum() / max((fill**2).sum(), 1e-12)
            scores[name].append(1 - ((hidden - gain * fill) ** 2).sum() / (hidden**2).sum())
    return {name: float(np.mean(v)) for name, v in scores.items()}


def summarise(frames: list[dict[str, pd.DataFrame]]) -> dict:
    """Every method over both halves and every seed: :func:`seeded_summary` per site, seed 0's
    pooled accuracy with its CI beside it, and the paired differences over sites."""
    rows = pd.concat([r for f in frames for r in f.values()], ignore_index=True)
    rows["site"] = rows["split"].str.removeprefix("logo-")
    methods = seeded_summary(rows, positive="2", group="site")
    for method, found in methods.items():
        first = rows[(rows["method"] == method) & (rows["seed"] == min(found["seeds"]))]
        y = (first["label"].astype(str) == "2").to_numpy().astype(int)
        predicted = first[["prob_1", "prob_2"]].to_numpy().argmax(1)
        boot = np.random.default_rng(0).integers(0, len(y), size=(1000, len(y)))
        acc = [accuracy_score(y[b], predicted[b]) for b in boot]
        found["pooled"]["accuracy"] = {"value": float(accuracy_score(y, predicted)),
                                       "ci_low": float(np.percentile(acc, 2.5)),
                                       "ci_high": float(np.percentile(acc, 97.5))}
        found["n_subjects"] = found.pop("n_events")
    best = best_classical(methods, BASELINES)
    pairs = [(m, other) for m in methods if m.startswith("pretrained")
             for other in (m.replace("pretrained", "untrained"), "scratch", best, "fc_tangent")]
    return {"methods": methods, "paired": paired_differences(methods, list(dict.fromkeys(pairs)), "site")}


def plot(result: dict, path: Path) -> None:
    fig = Figure(figsize=(14, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    method_panel(left, result["methods"], LABELS, "per_site", fontsize=8)
    left.set_xlabel("balanced accuracy (seed 0, 8 held-out sites, 95 % CI; dots: sites, seed mean)")
    paired_panel(right, result["paired"], LABELS, fontsize=8)
    right.set_title("paired over sites (seed means)", fontsize=10)
    fig.suptitle("ABIDE-I autism vs control, leave one site out (pretraining on the other half of the sites)",
                 fontsize=10)
    fig.savefig(path, dpi=120)


def main() -> None:
    mne.set_log_level("ERROR")  # the classical baselines run in this process: no MNE notices
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pretrain_arguments(parser, steps=400, batch=8, window=60.0, per="half")
    parser.add_argument("--modes", nargs="*", default=[], choices=["finetune", "lora", "scratch"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the trained modes")
    parser.add_argument("--head", default="connectivity", choices=["mean", "sensors", "connectivity"],
                        help="what the heads of the trained modes read")
    parser.add_argument("--work", default=None, help="keep the shards, checkpoints and runs here; "
                        "a rerun with the same --work reuses what is already there")
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    abide = data_dir() / "abide"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        log = work / "commands.log"
        frames = [run_half(abide, train, test, seed, args, work, log)
                  for seed in range(args.seeds) for train, test in (HALVES, HALVES[::-1])]
        pretraining = {"+".join(h): {"val_r2": {seed: pretraining_r2(work / f"pretrain_{'+'.join(h)}_seed{seed}")
                                                for seed in range(args.seeds)},
                                     "masked_parcel_r2_references": masked_parcel_references(abide, h)}
                       for h in HALVES}
    result = summarise(frames)
    minutes = (time.perf_counter() - start) / 60
    (out / "abide.json").write_text(json.dumps({"settings": vars(args), "minutes": minutes,
                                                "pretraining": pretraining, **result}, indent=1))
    plot(result, out / "abide.png")
    methods = result["methods"]
    print(f"\nABIDE-I, {methods['fc_logistic']['n_subjects']} subjects, leave-one-site-out over 8 sites, "
          f"seeds 0..{args.seeds - 1}, {minutes:.1f} min")
    print_seeded(methods, result["paired"], LABELS)
    sites = sorted(next(iter(methods.values()))["per_site"])
    print("\nbalanced accuracy per held-out site (mean over seeds)")
    print(f"{'method':42s} " + " ".join(f"{s:>9s}" for s in sites))
    for method, r in methods.items():
        print(f"{LABELS.get(method, method):42s} "
              + " ".join(f"{r['per_site'][s]['balanced_accuracy']:9.3f}" for s in sites))
    print("\npretraining (masked-parcel R² on validation windows) and what fills a masked parcel")
    for half, found in pretraining.items():
        refs = ", ".join(f"{k} {v:.3f}" for k, v in found["masked_parcel_r2_references"].items())
        r2 = ", ".join(f"seed {k}: {v['start']:.3f} -> {v['end']:.3f}" for k, v in found["val_r2"].items())
        print(f"{half}: val R² {r2}; {refs}")
    print(f"metrics: {out / 'abide.json'}; figure: {out / 'abide.png'}")


if __name__ == "__main__":
    main()
