"""Downstream decoding on a real recording, against a classical baseline, same splits and seeds.

Task: the EEGLAB tutorial recording (32 ch, 128 Hz): event-locked windows [0, 1] s after
`square` stimuli (80) vs `rt` responses (74), within subject. Protocols: stratified 5-fold
over events, and 10-shot (10 events per class for training, 5 draws). Methods:
- pretrained + linear probe (frozen encoder, logistic regression),
- pretrained + finetune (encoder + head, layer-wise LR decay),
- the same architecture from scratch,
- CSP + LDA (`mne.decoding.CSP`, 4 components, then LDA), the classical baseline named for
  this task, and an ERP baseline (the waveform at 20 Hz, shrinkage LDA), since these
  classes differ in their evoked waveform rather than in band power.
The checkpoint is pretrained here, on CPU, on the real EEGLAB + BDF recordings (the
decoding labels are never used in pretraining).

usage: python benchmarks/downstream.py [--pretrain-steps 3000] [--out docs]
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
from _common import data_dir, eeglab_tutorial
from mne.decoding import CSP, Vectorizer
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofm.datasets import PrepareOptions, batched_stream, write_shards
from neurofm.finetune.metrics import classification_metrics
from neurofm.finetune.protocols import event_kfold, few_shot
from neurofm.finetune.tasks import finetune_classifier, linear_probe, window_embeddings
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.tokenizers import tokenize_events

warnings.simplefilter("ignore")
mne.set_log_level("ERROR")


def pretrain(raw_path: Path, bdf: Path, steps: int, tmp: Path) -> MaskedAutoencoder:
    write_shards([raw_path, bdf], tmp / "shards",
                 PrepareOptions(window_s=4.0, stride_s=1.0, split_fractions=(1.0, 0.0, 0.0)))
    torch.manual_seed(0)
    model = MaskedAutoencoder(ModelConfig(mask_strategy="channels", mask_ratio=0.5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.05)
    batches = iter(batched_stream(tmp / "shards", 16, "train", resampled=True, shuffle_buffer=500))
    for _ in range(steps):
        loss = model(next(batches).to_torch())["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    data = data_dir() / "meeg"
    raw = eeglab_tutorial()
    segments = list(tokenize_events(raw, event_id=["square", "rt"], tmin=0.0, tmax=1.0, reject_scaled=None))
    labels = np.array([0 if s.meta["label"] == "square" else 1 for s in segments])
    groups = np.array([round(s.meta["event_onset_s"], 3) for s in segments])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw.save(tmp / "eeglab_raw.fif")
        start = time.perf_counter()
        model = pretrain(tmp / "eeglab_raw.fif", data / "bdf" / "multiple_annotation_chans.bdf",
                         args.pretrain_steps, tmp)
        print(f"pretrained tiny for {args.pretrain_steps} steps in {time.perf_counter() - start:.0f} s")
    embeddings = window_embeddings(model, segments)
    x_csp = np.stack([s.signal for s in segments]).astype(np.float64)  # [N, C, T]
    x_erp = x_csp[:, :, ::10]  # the waveform at 20 Hz: 30 ch x 20 samples

    protocols = {"5-fold": event_kfold(labels, groups, k=5, seed=0),
                 "10-shot": few_shot(labels, groups, shots=10, repeats=5, seed=0)}
    methods = {
        "pretrained + linear probe": lambda s: linear_probe(embeddings[s.train], labels[s.train], embeddings[s.test]),
        "pretrained + finetune": lambda s: finetune_classifier(model, segments, labels, s.train, s.test,
                                                               epochs=args.epochs, lr=1e-3)[0],
        "same architecture, scratch": lambda s: finetune_classifier(None, segments, labels, s.train, s.test,
                                                                    config=model.config, epochs=args.epochs,
                                                                    lr=1e-3)[0],
        "CSP + LDA": lambda s: make_pipeline(CSP(n_components=4), LinearDiscriminantAnalysis())
        .fit(x_csp[s.train], labels[s.train]).predict_proba(x_csp[s.test]),
        "ERP samples + shrinkage LDA": lambda s: make_pipeline(
            Vectorizer(), StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
        .fit(x_erp[s.train], labels[s.train]).predict_proba(x_erp[s.test]),
    }
    results = {}
    print(f"\nEEGLAB tutorial: {len(segments)} events ({np.bincount(labels).tolist()} square/rt), 30 ch, 1 s")
    print(f"{'protocol':9s} {'method':28s} {'bal. acc':>16s} {'AUROC':>16s} {'kappa':>7s} {'F1 w':>6s}")
    for pname, splits in protocols.items():
        for mname, fn in methods.items():
            y_all, p_all = [], []
            per_fold = []
            for split in splits:
                prob = fn(split)
                y_all.append(labels[split.test])
                p_all.append(prob)
                per_fold.append(classification_metrics(labels[split.test], prob, n_boot=1)["balanced_accuracy"]["value"])
            m = classification_metrics(np.concatenate(y_all), np.concatenate(p_all), n_boot=1000)
            results[f"{pname} | {mname}"] = {**m, "balanced_accuracy_per_split": per_fold}
            ba, auc = m["balanced_accuracy"], m["auroc"]
            print(f"{pname:9s} {mname:28s} {ba['value']:.3f} [{ba['ci_low']:.2f},{ba['ci_high']:.2f}] "
                  f"{auc['value']:.3f} [{auc['ci_low']:.2f},{auc['ci_high']:.2f}] "
                  f"{m['cohen_kappa']['value']:7.3f} {m['f1_weighted']['value']:6.3f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "downstream_decoding.json").write_text(json.dumps(results, indent=1))
    print("metrics:", out / "downstream_decoding.json")


if __name__ == "__main__":
    main()
