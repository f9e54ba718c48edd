"""Real-data learning: pretrain on two EEG devices, test reconstruction on two others.

Train: EEGLAB tutorial recording (32 ch, 128 Hz, positions from its published channel
labels) + BioSemi BDF (18 ch, 125 Hz). Held out: BrainVision (26 ch, 1 kHz) and EDF
(138 ch, 512 Hz; the channels whose names are 10-05 positions). All from ../shared/data,
through `neurofm prepare` shards. Reports masked-reconstruction R^2 on the held-out
devices against the trivial baseline (predict zero, the scaled mean: R^2 = 0), before and
after training, against Gaussian-kernel interpolation from the visible sensors (4 cm, the
classical fill-in for a missing channel), and writes the loss curve.

usage: python benchmarks/pretrain_real.py [--model tiny|small] [--steps 5000] [--mask channels]
                                         [--interpolation-prior] [--out docs]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib
import mne
import numpy as np
import torch
from _common import data_dir, eeglab_tutorial, pretrain_steps

from neurofm.datasets import PrepareOptions, batched_stream, collate_segments, stream, write_shards
from neurofm.models.config import ModelConfig
from neurofm.models.mae import MaskedAutoencoder, spatial_interpolation

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

warnings.simplefilter("ignore")
mne.set_log_level("ERROR")


def held_out_r2(model: MaskedAutoencoder, segments, seed: int = 0, interpolation_only: bool = False) -> float:
    """Masked-token R^2 (1 - SSE / SS around zero) over fixed masks.

    ``interpolation_only``: score the plain Gaussian-kernel interpolation (4 cm) from the
    visible sensors of the same masks instead of the model (the classical baseline).
    """
    model.eval()
    sse = sst = 0.0
    with torch.no_grad():
        for k in range(0, len(segments), 8):
            batch = collate_segments(segments[k : k + 8])
            out = model(batch, generator=torch.Generator().manual_seed(seed + k))
            pred = out["pred"]
            if interpolation_only:
                b, c = batch.channel_mask.shape
                visible = torch.zeros_like(out["hidden"]).scatter(1, out["visible_idx"], out["visible_mask"])
                pred = spatial_interpolation(out["target"].view(b, c, -1, pred.shape[-1]), batch.positions,
                                             batch.kinds, visible.view(b, c, -1), torch.tensor(0.04))
                pred = pred.reshape(out["target"].shape)
            hidden = out["hidden"][..., None]
            sse += float((((pred - out["target"]) ** 2) * hidden).sum())
            sst += float(((out["target"] ** 2) * hidden).sum())
    model.train()
    return 1 - sse / sst


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default="docs")
    parser.add_argument("--mask", default="channels", help="random | channels | time | mixed")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--warmup", type=float, default=0.05,
                        help="warmup steps as a fraction of --steps (optim.warmup_steps)")
    parser.add_argument("--interpolation-prior", action="store_true",
                        help="add the gated neighbour-interpolation prior to the prediction")
    args = parser.parse_args()
    data = data_dir() / "meeg"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = eeglab_tutorial()
        raw.save(tmp / "eeglab_tutorial_raw.fif")
        options = PrepareOptions(window_s=4.0, stride_s=1.0, shard_size_mb=16, split_fractions=(1.0, 0.0, 0.0),
                                 meeg={"on_missing_positions": "drop"})
        start = time.perf_counter()
        train = write_shards([tmp / "eeglab_tutorial_raw.fif", data / "bdf" / "multiple_annotation_chans.bdf"],
                             tmp / "train", options)
        test_opts = PrepareOptions(window_s=2.0, shard_size_mb=16, split_fractions=(1.0, 0.0, 0.0),
                                   meeg={"on_missing_positions": "drop"})
        write_shards([data / "brainvision" / "test.vhdr", data / "edf" / "test_reduced.edf"], tmp / "test", test_opts)
        held = {name: [s for s in stream(tmp / "test", None, shuffle_buffer=0) if name in s.meta["source"]]
                for name in ("test.vhdr", "test_reduced.edf")}
        print(f"train: {train['totals']['samples']} windows, {train['totals']['hours'] * 3600:.0f} s of "
              f"4 s windows (stride 1 s) from EEGLAB + BDF; held out: "
              f"{ {k: len(v) for k, v in held.items()} } windows; prepared in {time.perf_counter() - start:.1f} s")

        config = ModelConfig.named(args.model, mask_strategy=args.mask, mask_ratio=0.5,
                              interpolation_prior=args.interpolation_prior)
        model = MaskedAutoencoder(config)
        lr = args.lr or (3e-3 if args.model == "tiny" else 1e-3)
        batches = iter(batched_stream(tmp / "train", args.batch, "train", resampled=True, shuffle_buffer=500))
        before = {k: held_out_r2(model, v) for k, v in held.items()}
        interpolation = {k: held_out_r2(model, v, interpolation_only=True) for k, v in held.items()}
        curve, evals = [], []
        every = max(1, args.steps // 10)

        def on_step(step: int, loss: float, model: MaskedAutoencoder) -> None:
            curve.append(loss)
            if step % every == 0:
                r2 = {k: held_out_r2(model, v) for k, v in held.items()}
                evals.append((step, r2))
                print(f"step {step:5d}  train loss {np.mean(curve[-50:]):.3f}  held-out R2 "
                      + "  ".join(f"{k} {v:.3f}" for k, v in r2.items()), flush=True)

        start = time.perf_counter()
        pretrain_steps(config, batches, args.steps, lr, on_step, model=model,   # neurofm pretrain's recipe
                       warmup_steps=max(1, round(args.warmup * args.steps)))
        minutes = (time.perf_counter() - start) / 60
    after = evals[-1][1]
    print(f"\n{args.model}: {args.steps} steps in {minutes:.1f} min on CPU")
    print(f"{'held-out device':22s} {'baseline (zero)':>16s} {'interpolation':>14s} {'untrained':>10s} "
          f"{'pretrained':>11s}")
    for k in held:
        print(f"{k:22s} {0.0:16.3f} {interpolation[k]:14.3f} {before[k]:10.3f} {after[k]:11.3f}")
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(np.convolve(curve, np.ones(25) / 25, mode="valid"))
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("train masked MSE (25-step mean)")
    for k in held:
        ax[1].plot([s for s, _ in evals], [r[k] for _, r in evals], "o-", label=k)
    ax[1].axhline(0.0, color="k", lw=0.8, ls="--", label="baseline (predict zero)")
    for k in held:
        ax[1].axhline(interpolation[k], lw=0.8, ls=":", color="grey")
    ax[1].plot([], [], lw=0.8, ls=":", color="grey", label="Gaussian interpolation (4 cm)")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("held-out masked R$^2$")
    ax[1].legend(fontsize=7)
    fig.suptitle(f"neurofm {args.model}: train EEGLAB + BDF, test BrainVision + EDF (real recordings)", fontsize=9)
    fig.tight_layout()
    name = f"pretrain_real_{args.model}{'_interp' if args.interpolation_prior else ''}.png"
    fig.savefig(out_dir / name, dpi=110)
    print("curve:", out_dir / name)


if __name__ == "__main__":
    main()
