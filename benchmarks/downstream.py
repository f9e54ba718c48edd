"""Downstream tasks on real recordings, each against its classical baseline, same splits and seeds.

The `tiny` checkpoint is pretrained here on CPU on the real EEGLAB + BDF recordings (no
labels, no stimulus information used), then:

- **decoding** (within subject): the EEGLAB tutorial recording (32 ch, 128 Hz),
  event-locked windows [0, 1] s after `square` stimuli (80) vs `rt` responses (74);
  stratified 5-fold over events and 10-shot (5 draws). Baselines: the ones `neurofm finetune`
  runs (`neurofm.finetune.baselines`): CSP + LDA and Riemann + LR on 8-30 Hz, and the evoked
  waveform with shrinkage LDA.
- **encoding**: the same recording; the event times (impulse trains, lags 0-0.5 s) ->
  every EEG channel, 4 s windows, 5 contiguous time blocks held out in turn; Pearson r per
  channel on held-out time. Baseline: ridge TRF (`mne.decoding.ReceptiveField`).
- **disorder** (subject level): no labelled cohort is at hand, so 20 pseudo-subjects are
  cut from the real recording (12 s each, 2 s windows) and half get a planted frontal 6 Hz
  source of known amplitude; 5-fold by subject, subject-level metrics. Baseline:
  functional connectivity + logistic regression.

Each task reports pretrained + linear probe, pretrained + finetune, pretrained + LoRA, the
same architecture from scratch, and the baseline.

usage: python benchmarks/downstream.py [--tasks decoding encoding disorder]
                                       [--pretrain-steps 3000] [--ckpt DIR] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import mne
import numpy as np
import torch
from _common import data_dir, eeglab_tutorial, pretrain_steps

from neurofm.datasets import PrepareOptions, batched_stream, write_shards
from neurofm.embedding import as_neurofm
from neurofm.finetune.baselines import (
    connectivity_features,
    decoding_baselines,
    fc_logistic,
    ridge_trf,
)
from neurofm.finetune.classifier import finetune_classifier, linear_probe
from neurofm.finetune.disorder import aggregate_subjects, subject_labels
from neurofm.finetune.encoding import encoding_data, event_features, fit_encoding, predict_encoding
from neurofm.finetune.metrics import classification_metrics, per_sensor_r
from neurofm.finetune.plots import plot_sensor_r
from neurofm.finetune.protocols import event_kfold, few_shot, subject_kfold, time_splits
from neurofm.models.config import ModelConfig
from neurofm.models.io import load_pretrained, save_pretrained
from neurofm.models.mae import MaskedAutoencoder
from neurofm.testing import plant_group_difference
from neurofm.tokenizers import tokenize_events, tokenize_raw

warnings.simplefilter("ignore")
mne.set_log_level("ERROR")


def pretrain(raw_path: Path, bdf: Path, steps: int, tmp: Path) -> MaskedAutoencoder:
    write_shards([raw_path, bdf], tmp / "shards",
                 PrepareOptions(window_s=4.0, stride_s=1.0, split_fractions=(1.0, 0.0, 0.0)))
    torch.manual_seed(0)
    config = ModelConfig.named("tiny", mask_strategy="channels", mask_ratio=0.5)
    batches = iter(batched_stream(tmp / "shards", 16, "train", resampled=True, shuffle_buffer=500))
    return pretrain_steps(config, batches, steps, lr=3e-3, warmup_steps=steps // 20).eval()


def _classification_table(protocols: dict, methods: dict, labels, subject_level=None) -> dict:
    """Run every method on every protocol's splits; print and return pooled metrics."""
    results = {}
    print(f"{'protocol':9s} {'method':28s} {'bal. acc':>16s} {'AUROC':>16s} {'kappa':>7s} {'F1 w':>6s}")
    for pname, splits in protocols.items():
        for mname, fn in methods.items():
            y_all, p_all, per_split = [], [], []
            for split in splits:
                y, prob = fn(split) if subject_level else (labels[split.test], fn(split))
                y_all.append(y)
                p_all.append(prob)
                per_split.append(classification_metrics(y, prob, n_boot=1)["balanced_accuracy"]["value"])
            m = classification_metrics(np.concatenate(y_all), np.concatenate(p_all), n_boot=1000)
            results[f"{pname} | {mname}"] = {**m, "balanced_accuracy_per_split": per_split}
            ba, auc = m["balanced_accuracy"], m["auroc"]
            print(f"{pname:9s} {mname:28s} {ba['value']:.3f} [{ba['ci_low']:.2f},{ba['ci_high']:.2f}] "
                  f"{auc['value']:.3f} [{auc['ci_low']:.2f},{auc['ci_high']:.2f}] "
                  f"{m['cohen_kappa']['value']:7.3f} {m['f1_weighted']['value']:6.3f}", flush=True)
    return results


def decoding(model: MaskedAutoencoder, raw, args) -> dict:
    segments = list(tokenize_events(raw, event_id=["square", "rt"], tmin=0.0, tmax=1.0, reject_scaled=None))
    labels = np.array([0 if s.meta["label"] == "square" else 1 for s in segments])
    groups = np.array([round(s.meta["event_onset_s"], 3) for s in segments])
    embeddings = as_neurofm(model).embed(segments, batch_size=64).windows
    # the baselines `neurofm finetune` runs (neurofm.finetune.baselines), on the same windows
    windows = np.stack([s.signal for s in segments]).astype(np.float64)  # [N, C, T]
    baselines = decoding_baselines(windows, segments[0].sfreq)
    protocols = {"5-fold": event_kfold(labels, groups, k=5, seed=0),
                 "10-shot": few_shot(labels, groups, shots=10, repeats=5, seed=0)}
    tune = dict(epochs=args.epochs, lr=1e-3)
    methods = {
        "pretrained + linear probe": lambda s: linear_probe(embeddings[s.train], labels[s.train], embeddings[s.test]),
        "pretrained + finetune": lambda s: finetune_classifier(model, segments, labels, s.train, s.test, **tune)[0],
        "pretrained + LoRA (r=8)": lambda s: finetune_classifier(model, segments, labels, s.train, s.test,
                                                                 mode="lora", lora_rank=8, epochs=args.epochs, lr=3e-3)[0],
        "same architecture, scratch": lambda s: finetune_classifier(None, segments, labels, s.train, s.test,
                                                                    config=model.config, **tune)[0],
        **{name: (lambda s, fit=fit: fit(s.train, labels[s.train], s.test)) for name, fit in (
            ("CSP + LDA (8-30 Hz)", baselines["csp_lda"]), ("Riemann + LR (8-30 Hz)", baselines["riemann_lr"]),
            ("ERP samples + shrinkage LDA", baselines["erp_lda"]))},
    }
    print(f"\n## decoding: {len(segments)} events ({np.bincount(labels).tolist()} square/rt), 30 ch, 1 s")
    return _classification_table(protocols, methods, labels)


def encoding(model: MaskedAutoencoder, raw, args, out: Path) -> dict:
    features, names = event_features(raw, ["square", "rt"])
    data = encoding_data(raw, features, feature_names=names, lags_s=(0.0, 0.5), window_s=4.0,
                         sfreq=128.0, reject_scaled=None)
    splits = time_splits(len(data.segments), "kfold_time", folds=5)
    truth = data.brain()
    fit = dict(epochs=args.encoding_epochs, lr=1e-2)
    methods = {
        "pretrained + linear probe": lambda s: fit_encoding(model, data, s.train, mode="linear_probe", **fit)[0],
        "pretrained + finetune": lambda s: fit_encoding(model, data, s.train, mode="finetune", **fit)[0],
        "pretrained + LoRA (r=8)": lambda s: fit_encoding(model, data, s.train, mode="lora", **fit)[0],
        "same architecture, scratch": lambda s: fit_encoding(model, data, s.train, mode="scratch", **fit)[0],
        "ridge TRF (ReceptiveField)": None,
    }
    print(f"\n## encoding: {names} -> {truth.shape[1]} channels, {len(data.segments)} windows of 4 s, "
          "5 held-out time blocks")
    print(f"{'method':28s} {'mean r':>7s} {'median r':>8s} {'max r':>6s} {'r>0.1':>6s} {'time':>6s}")
    results, maps = {}, {}
    for name, fn in methods.items():
        start = time.perf_counter()
        pred = np.zeros_like(truth)
        for split in splits:
            pred[split.test] = (ridge_trf(data, split.train, split.test) if fn is None
                                else predict_encoding(fn(split), data, split.test))
        r = per_sensor_r(truth, pred)
        maps[name] = r
        results[name] = {"pearson_r": dict(zip(data.segments[0].meta["ch_names"], r.round(4).tolist(), strict=True)),
                         "mean_r": float(r.mean()), "median_r": float(np.median(r)), "max_r": float(r.max()),
                         "seconds": time.perf_counter() - start}
        print(f"{name:28s} {r.mean():7.3f} {np.median(r):8.3f} {r.max():6.3f} {int((r > 0.1).sum()):3d}/{len(r)}"
              f" {time.perf_counter() - start:5.0f}s", flush=True)
    plot_sensor_r(data.segments[0], maps["pretrained + linear probe"], out / "encoding_r_pretrained_probe.png",
                  title="pretrained + linear probe")
    plot_sensor_r(data.segments[0], maps["ridge TRF (ReceptiveField)"], out / "encoding_r_ridge_trf.png",
                  title="ridge TRF")
    return results


def disorder(model: MaskedAutoencoder, raw, args, out: Path) -> dict:
    windows = list(tokenize_raw(raw, window_s=2.0, sfreq=128.0, reject_scaled=None))
    group = np.random.default_rng(0).permutation(np.repeat([0, 1], 10))  # 20 pseudo-subjects
    results = {}
    for amplitude in args.amplitudes:
        results.update(_disorder_at(model, windows, group, amplitude, args))
    _plot_disorder(results, args.amplitudes, out / "disorder_planted.png")
    return results


def _disorder_at(model: MaskedAutoencoder, windows: list, group: np.ndarray, amplitude: float, args,
                 per: int = 6) -> dict:
    cohort = []
    for k, patient in enumerate(group):
        chunk = windows[per * k : per * (k + 1)]
        for seg in chunk:
            seg.meta = dict(seg.meta, subject=f"{k:02d}", phenotype={"diagnosis": "patient" if patient else "control"})
        cohort += plant_group_difference(chunk, amplitude, seed=k) if patient else chunk
    segments, labels, _ = subject_labels(cohort, "diagnosis")
    subjects = np.array([s.meta["subject"] for s in segments])
    ids = np.unique(subjects)
    y_subject = np.array([labels[subjects == i][0] for i in ids])
    embeddings = as_neurofm(model).embed(segments, batch_size=64).windows
    fc = connectivity_features(segments, subjects)[1]
    tune = dict(epochs=args.epochs, lr=1e-3)

    def subject_level(fn):
        def run(split):
            test_ids, prob = aggregate_subjects(fn(split), subjects[split.test])
            return y_subject[np.isin(ids, test_ids)], prob
        return run

    def fc_run(split):
        train, test = np.isin(ids, subjects[split.train]), np.isin(ids, subjects[split.test])
        return y_subject[test], fc_logistic(fc[train], y_subject[train], fc[test])

    methods = {
        "pretrained + linear probe": subject_level(
            lambda s: linear_probe(embeddings[s.train], labels[s.train], embeddings[s.test])),
        "pretrained + finetune": subject_level(
            lambda s: finetune_classifier(model, segments, labels, s.train, s.test, **tune)[0]),
        "pretrained + LoRA (r=8)": subject_level(
            lambda s: finetune_classifier(model, segments, labels, s.train, s.test, mode="lora", lora_rank=8,
                                          epochs=args.epochs, lr=3e-3)[0]),
        "same architecture, scratch": subject_level(
            lambda s: finetune_classifier(None, segments, labels, s.train, s.test, config=model.config,
                                          **tune)[0]),
        "FC + logistic regression": fc_run,
    }
    print(f"\n## disorder: {len(group)} pseudo-subjects x {per} windows of 2 s, planted frontal 6 Hz "
          f"source at {amplitude:g} robust SD, 5-fold by subject (subject-level metrics)")
    return _classification_table({f"amp {amplitude:g}": subject_kfold(subjects, k=5)}, methods, labels,
                                 subject_level=True)


def _plot_disorder(results: dict, amplitudes: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    methods = sorted({k.split(" | ")[1] for k in results})
    for method in methods:
        values = [results[f"amp {a:g} | {method}"]["balanced_accuracy"]["value"] for a in amplitudes]
        ax.plot(amplitudes, values, marker="o", label=method)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("planted 6 Hz amplitude (robust SD)")
    ax.set_ylabel("subject-level balanced accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=["decoding", "encoding", "disorder"],
                        choices=["decoding", "encoding", "disorder"])
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    parser.add_argument("--ckpt", help="reuse an exported checkpoint instead of pretraining")
    parser.add_argument("--save-ckpt", default="runs/downstream_pretrained")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--encoding-epochs", type=int, default=60)
    parser.add_argument("--amplitudes", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    data = data_dir() / "meeg"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = eeglab_tutorial()
    if args.ckpt:
        model = load_pretrained(args.ckpt, head=True).eval()  # the encoding task reads the decoder
    else:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            raw.save(tmp / "eeglab_raw.fif")
            start = time.perf_counter()
            model = pretrain(tmp / "eeglab_raw.fif", data / "bdf" / "multiple_annotation_chans.bdf",
                             args.pretrain_steps, tmp)
            print(f"pretrained tiny for {args.pretrain_steps} steps in {time.perf_counter() - start:.0f} s")
        save_pretrained(model, args.save_ckpt)
        print("checkpoint:", args.save_ckpt, "(reuse with --ckpt)")
    for task in args.tasks:
        torch.manual_seed(0)
        result = {"decoding": lambda: decoding(model, raw, args),
                  "encoding": lambda: encoding(model, raw, args, out),
                  "disorder": lambda: disorder(model, raw, args, out)}[task]()
        (out / f"downstream_{task}.json").write_text(json.dumps(result, indent=1))
        print("metrics:", out / f"downstream_{task}.json")


if __name__ == "__main__":
    main()
