"""The peers on neurofm's EEGMMI protocol: braindecode's deep baselines and foundation-model
architectures, trained from scratch on the same windows, splits, budget and rule.

EEGMMI imagery (runs 4, 8, 12 of the 5 subjects in ``../shared/data/meeg/eegmmidb``), left vs
right fist (``T1``/``T2``), windows [0.5, 2.5] s after the cue as ``neurofm finetune
task=decoding`` cuts them (``tokenize_events``: 64 channels resampled to 200 Hz, each channel
robustly scaled), leave one subject out. Every model trains with neurofm's finetuning budget
and rule: ``task.epochs`` (15) epochs of batches of 32 with AdamW (lr 1e-3, weight decay
0.05), the weights of the last epoch (``neurofm finetune`` does not early-stop), in the same
loop (:func:`neurofm.finetune.loops.train_epochs`).

Models (braindecode's implementations, from random weights: no weights can be downloaded
here): EEGNet, ShallowFBCSPNet, and LaBraM, CBraMod and BIOT (built for 200 Hz) on the
windows as they are; EEGPT at its 256 Hz (resampled with MNE); each cut to whole patches.
``--size matched`` (default) builds the four transformers at neurofm ``tiny``'s depth and
heads (2, 4) and, for EEGPT and BIOT, its width (64; LaBraM and CBraMod keep their 200);
``published`` at braindecode's defaults (3-25 M parameters; 6-40 min a fold on 2 CPU cores). Beside them, in the same process and loop, neurofm's own ``tiny`` trained
from scratch (``finetune_classifier(mode="scratch", readout="sensors")``, what
``task.mode=scratch`` runs).

``--seeds N``: model init and batch order per seed. Results: each model's parameter count,
training seconds per fold (median over folds) and in all, balanced accuracy pooled over
subjects (mean ± sd over seeds), per subject (seed means); beside them neurofm's pretrained
modes and the classical baselines from ``--reference`` (``motor_imagery.py``'s run of the
default recipe: the same windows and folds), and the paired difference over subjects of
neurofm's best pretrained mode against every peer, bootstrap 95 % CI and Wilcoxon p. Writes
``<out>/<name>.json`` and ``<out>/<name>.png`` (``--name``, default ``peers_eegmmi``).
``--work`` keeps every fold's predictions and seconds, so a run can be split into several
(``--models``) and summarised together.

braindecode imports torchaudio when it loads; where no torchaudio is built for the installed
torch, ``benchmarks/peers_env.sh`` installs braindecode beside it without torchaudio's
compiled library (none of these six models uses torchaudio).

usage: python benchmarks/peers_eegmmi.py [--seeds 3] [--models EEGNet ShallowFBCSPNet ...]
       [--size matched|published] [--epochs 15] [--work DIR] [--reference FILE] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import torch
from _common import (
    data_dir,
    method_panel,
    paired_differences,
    paired_panel,
    print_seeded,
    seeded_summary,
)
from matplotlib.figure import Figure
from pretrain_scaling import SUBJECTS, labelled_windows
from torch import nn
from tqdm.auto import tqdm

from neurofm.finetune.classifier import Classifier, finetune_classifier
from neurofm.finetune.loops import train_epochs
from neurofm.io import write_text_atomic
from neurofm.models.config import ModelConfig
from neurofm.models.mae import MaskedAutoencoder

# model -> (braindecode class name, sampling rate it was built for (None: the data's), patch samples)
PEERS = {"EEGNet": ("EEGNet", None, 1), "ShallowFBCSPNet": ("ShallowFBCSPNet", None, 1),
         "LaBraM": ("Labram", 200.0, 200), "CBraMod": ("CBraMod", 200.0, 200),
         "EEGPT": ("EEGPT", 256.0, 64), "BIOT": ("BIOT", 200.0, 1)}
# --size matched: the transformers at neurofm tiny's depth and heads (2, 4) and width (64); braindecode's
# LaBraM and CBraMod keep a width of 200 whatever is asked (their token is a 200-sample patch). The
# small convolutional nets are always at their published size.
MATCHED = {"LaBraM": {"embed_dim": 64, "num_layers": 2, "num_heads": 4},
           "CBraMod": {"emb_dim": 64, "dim_feedforward": 256, "n_layer": 2, "nhead": 4},
           "EEGPT": {"embed_dim": 64, "depth": 2, "num_heads": 4},
           "BIOT": {"embed_dim": 64, "num_heads": 4, "num_layers": 2}}
NEUROFM = "neurofm_scratch"
LABELS = {NEUROFM: "neurofm tiny, scratch", "scratch": "neurofm tiny, scratch (motor_imagery.py)",
          "pretrained_probe_sensors": "neurofm pretrained + probe", "pretrained_lora": "neurofm pretrained + LoRA",
          "pretrained_finetune": "neurofm pretrained + finetune", "erp_lda": "ERP + shrinkage LDA",
          "csp_lda": "CSP + LDA", "riemann_lr": "Riemann + LR", **{m: f"{m} (braindecode)" for m in PEERS}}
REFERENCE = ("pretrained_probe_sensors", "pretrained_lora", "pretrained_finetune", "scratch",
             "erp_lda", "csp_lda", "riemann_lr")


def braindecode_models():
    try:
        import braindecode.models as models
    except ImportError as err:
        raise SystemExit(f"braindecode does not import here ({err}); see benchmarks/peers_env.sh") from err
    return models


def inputs_for(x: np.ndarray, sfreq: float, rate: float | None, patch: int) -> np.ndarray:
    """``x`` [N, C, T] at ``rate`` (MNE's polyphase resampling; None: as it is), cut to whole
    patches."""
    if rate is not None and rate != sfreq:
        x = mne.filter.resample(x.astype(np.float64), up=rate / sfreq, npad="auto", verbose=False)
    return np.ascontiguousarray(x[..., : x.shape[-1] // patch * patch], dtype=np.float32)


def train_peer(name: str, x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, sfreq: float,
               ch_names: list[str], seed: int, epochs: int, size: str, batch: int = 32) -> tuple[np.ndarray, int]:
    """Train braindecode's ``name`` (``size``: ``published`` or ``matched``, :data:`MATCHED`)
    from seed ``seed`` on ``train``; test probabilities and its parameter count. The channel
    names (10-10, without EDF's padding dots) reach the models that embed channels by name
    (LaBraM, EEGPT)."""
    torch.manual_seed(seed)
    model = getattr(braindecode_models(), PEERS[name][0])(
        n_chans=x.shape[1], n_outputs=2, n_times=x.shape[2], sfreq=sfreq,
        chs_info=[{"ch_name": n} for n in ch_names], **(MATCHED.get(name, {}) if size == "matched" else {}))
    forward = (lambda xb: model(xb, ch_names=ch_names)) if name == "LaBraM" else model
    xt, yt = torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    train_epochs(model, lambda idx: nn.functional.cross_entropy(forward(xt[idx]), yt[idx]),
                 lambda rng: np.array_split(p := rng.permutation(train), max(1, -(-len(p) // batch))),
                 optimizer, epochs=epochs, seed=seed)
    with torch.no_grad():
        probs = torch.cat([forward(xt[i]).softmax(-1) for i in np.array_split(test, max(1, -(-len(test) // 64)))])
    return probs.numpy(), sum(p.numel() for p in model.parameters())


def run_fold(model: str, seed: int, held_out: str, args, segments: list, y: np.ndarray, subject: np.ndarray,
             sfreq: float, ch_names: list[str], raw_x: np.ndarray, inputs: dict) -> dict:
    """One model trained from seed ``seed`` on every subject but ``held_out``: its test
    probabilities, training seconds, parameter count and input shape."""
    train, test = np.flatnonzero(subject != held_out), np.flatnonzero(subject == held_out)
    t0 = time.perf_counter()
    if model == NEUROFM:
        config = ModelConfig.named("tiny")
        probs, _ = finetune_classifier(None, segments, y, train, test, mode="scratch", config=config,
                                       epochs=args.epochs, readout="sensors", seed=seed)
        net = Classifier(MaskedAutoencoder(config), 2, "sensors", raw_x.shape[1])
        n_params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("backbone.decoder"))
        shape = raw_x.shape[1:]
    else:
        _, rate, patch = PEERS[model]
        if model not in inputs:
            inputs[model] = inputs_for(raw_x, sfreq, rate, patch)
        probs, n_params = train_peer(model, inputs[model], y, train, test, rate or sfreq, ch_names, seed,
                                     args.epochs, args.size)
        shape = inputs[model].shape[1:]
    seconds = time.perf_counter() - t0
    tqdm.write(f"{model} seed {seed} held out {held_out}: {seconds:.0f} s")
    return {"probs": np.asarray(probs).tolist(), "seconds": seconds, "parameters": int(n_params),
            "input": list(shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=[*PEERS, NEUROFM], choices=[*PEERS, NEUROFM])
    parser.add_argument("--epochs", type=int, default=15, help="epochs per fold (neurofm's task.epochs)")
    parser.add_argument("--subjects", nargs="+", default=list(SUBJECTS), help="held-out subjects")
    parser.add_argument("--size", default="matched", choices=["matched", "published"],
                        help="the transformers at neurofm tiny's width and depth, or at braindecode's defaults")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep each fold's predictions here; folds already there are read, not trained")
    parser.add_argument("--reference", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs" / "motor_imagery_default_recipe.json",
                        help="motor_imagery.py's result to compare against (leave one subject out, imagery)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--name", default="peers_eegmmi", help="stem of the JSON and figure written to --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
    if args.size == "matched":
        LABELS.update({m: f"{m}, 2 blocks (braindecode)" for m in MATCHED})
    start = time.perf_counter()
    labelled = labelled_windows(data_dir() / "meeg" / "eegmmidb")
    segments = [w for s in SUBJECTS for w in labelled[s][0]]
    y = np.concatenate([labelled[s][1] for s in SUBJECTS])
    subject = np.concatenate([[s] * len(labelled[s][1]) for s in SUBJECTS])
    sfreq = float(segments[0].meta["sfreq"])
    raw_x = np.stack([w.signal for w in segments])
    ch_names = [n.strip(".").upper() for n in segments[0].meta["ch_names"]]
    print(f"{len(segments)} windows {raw_x.shape[1:]} at {sfreq:g} Hz, {len(SUBJECTS)} subjects", flush=True)
    rows, info = [], {}
    jobs = [(m, seed, s) for m in args.models for seed in range(args.seeds) for s in args.subjects]
    inputs = {}
    for model, seed, held_out in tqdm(jobs, desc="folds", unit="fold"):
        saved = args.work / f"{model}_{args.size}_seed{seed}_{held_out}.json" if args.work else None
        if saved is not None and saved.exists():
            fold = json.loads(saved.read_text())
        else:
            fold = run_fold(model, seed, held_out, args, segments, y, subject, sfreq, ch_names, raw_x, inputs)
            if saved is not None:
                write_text_atomic(saved, json.dumps(fold))
        entry = info.setdefault(model, {"seconds_per_fold": []})
        entry["seconds_per_fold"].append(fold["seconds"])
        entry["parameters"], entry["input"] = fold["parameters"], fold["input"]
        test = np.flatnonzero(subject == held_out)
        probs = np.asarray(fold["probs"])
        rows.append(pd.DataFrame({"method": model, "seed": seed, "subject": held_out,
                                  "label": np.where(y[test] == 1, "T2", "T1"),
                                  "prob_T1": probs[:, 0], "prob_T2": probs[:, 1]}))
    methods = seeded_summary(pd.concat(rows, ignore_index=True), positive="T2", group="subject")
    for model, entry in info.items():
        methods[model]["size"] = args.size if model in MATCHED else "published"
        methods[model]["parameters"] = entry["parameters"]
        methods[model]["input"] = entry["input"]
        methods[model]["train_seconds_per_fold"] = float(np.median(entry["seconds_per_fold"]))  # robust to a loaded moment
        methods[model]["train_minutes_total"] = float(np.sum(entry["seconds_per_fold"]) / 60)
    reference = json.loads(args.reference.read_text())["results"]["imagery"]["loso"]["methods"]
    methods.update({m: reference[m] for m in REFERENCE if m in reference})
    pretrained = [m for m in REFERENCE if m.startswith("pretrained") and m in methods]
    best = max(pretrained, key=lambda m: methods[m]["over_seeds"]["balanced_accuracy"]["mean"])
    peers = [m for m in args.models if m != NEUROFM]
    differences = paired_differences(methods, [(best, m) for m in [*peers, NEUROFM, "erp_lda"]], "subject")
    minutes = (time.perf_counter() - start) / 60
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "minutes": minutes, "training_minutes": sum(e["train_minutes_total"] for e in
                                                          (methods[m] for m in info)), "best_pretrained": best, "methods": methods, "paired": differences}
    write_text_atomic(args.out / f"{args.name}.json", json.dumps(result, indent=1, default=float))
    plot(result, args.out / f"{args.name}.png")
    print(f"\nEEGMMI imagery, leave one subject out, seeds 0..{args.seeds - 1}, {minutes:.1f} min")
    print_seeded(methods, differences, LABELS)
    print(f"\n{'model':40s} {'parameters':>11s} {'s per fold':>11s} {'min in all':>11s}")
    for model in info:
        m = methods[model]
        print(f"{LABELS[model]:40s} {m['parameters']:>11,d} {m['train_seconds_per_fold']:>11.1f} "
              f"{m['train_minutes_total']:>11.1f}")
    print(f"\nmetrics: {args.out / args.name}.json; figure: {args.out / args.name}.png")


def plot(result: dict, path: Path) -> None:
    methods = dict(sorted(result["methods"].items(), key=lambda kv: -kv[1]["over_seeds"]["balanced_accuracy"]["mean"]))
    fig = Figure(figsize=(13, 0.4 * len(methods) + 1.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    fig.suptitle("Trained from scratch unless said; neurofm pretrained without the test subject", fontsize=10)
    method_panel(left, methods, LABELS, "per_subject", fontsize=8)
    left.set_xlabel("balanced accuracy (seed 0, 95 % CI; dots: subjects, seed mean)")
    left.set_title("EEGMMI imagery, leave one subject out")
    paired_panel(right, result["paired"], LABELS, fontsize=8)
    right.set_title("paired over subjects (seed means)")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
