"""Benchmark: tokens/s of the neurofm MAE training step vs a plain PyTorch transformer.

In one run, same device and dtype, on real EEG tokens (the EEGLAB tutorial recording,
30 channels x 4 patches per window):
- neurofm: a full MAE step (embeddings, masking, encoder on the visible tokens, decoder on
  all tokens, loss, backward, AdamW step) of a model config,
- reference: `torch.nn.TransformerEncoder` (pre-norm, same width/depth/heads/MLP ratio) on
  the same number of tokens, with a linear patch projection in and out and an MSE loss.
Tokens/s counts every token of the batch (visible and masked) for both.

Also: the loader's segments/s (1 worker) on shards of the same recording, divided by the
training step's segments/s (target >= 3: the loader is not the bottleneck).

usage: python benchmarks/train_step.py [--model small] [--batch 8] [--steps 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import mne
import torch
from _common import eeglab_tutorial
from torch import nn

from neurofm.configs.schema import model_config
from neurofm.datasets import PrepareOptions, batched_stream, collate_segments, write_shards
from neurofm.datasets.stream import make_loader
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.tokenizers import tokenize_raw

warnings.simplefilter("ignore")
mne.set_log_level("ERROR")


class Reference(nn.Module):
    """nn.TransformerEncoder with patch projections in and out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Linear(cfg.patch_len, cfg.dim)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, int(cfg.dim * cfg.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.dim, cfg.patch_len)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(self.head(self.encoder(self.embed(patches))), patches)


def timed_steps(step, steps: int, device: str) -> float:
    step()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    device, dtype = args.device, getattr(torch, args.dtype)
    raw = eeglab_tutorial()
    segments = list(tokenize_raw(raw, window_s=4.0))[: args.batch]
    batch = collate_segments(segments).to(device)
    cfg = model_config(args.model)
    n_tokens = batch.signal.shape[0] * batch.signal.shape[1] * (batch.signal.shape[2] // 200)

    torch.manual_seed(0)
    ours = MaskedAutoencoder(cfg).to(device)
    ref = Reference(cfg).to(device)
    patches = batch.signal.reshape(batch.signal.shape[0], -1, 200)  # [B, C * N, P], same tokens
    results = {}
    for name, model, loss_fn in (("neurofm MAE step", ours, lambda: ours(batch)["loss"]),
                                 ("nn.TransformerEncoder", ref, lambda: ref(patches))):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(loss_fn=loss_fn, opt=opt):
            with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
                loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        results[name] = timed_steps(step, args.steps, device)
    print(f"{args.model} ({sum(p.numel() for p in ours.parameters()) / 1e6:.1f} M params), batch "
          f"{args.batch} x {batch.signal.shape[1]} ch x {batch.signal.shape[2] // 200} patches = "
          f"{n_tokens} tokens, {device}, {args.dtype}")
    base = results["nn.TransformerEncoder"]
    for name, secs in results.items():
        print(f"  {name:24s} {secs * 1000:8.1f} ms/step  {n_tokens / secs:10.0f} tokens/s  "
              f"ratio {base / secs:5.2f}")
    train_segments_s = args.batch / results["neurofm MAE step"]

    with tempfile.TemporaryDirectory() as tmp:
        raw.save(Path(tmp) / "eeglab_raw.fif")
        write_shards([Path(tmp) / "eeglab_raw.fif"], Path(tmp) / "shards",
                     PrepareOptions(window_s=4.0, stride_s=0.5, shard_size_mb=1, split_fractions=(1.0, 0.0, 0.0)))
        loader = make_loader(batched_stream(Path(tmp) / "shards", args.batch, "train", resampled=True,
                                            shuffle_buffer=200), num_workers=1)
        it = iter(loader)
        next(it)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 3.0:
            n += len(next(it))
        loader_segments_s = n / (time.perf_counter() - start)
    print(f"loader (1 worker) {loader_segments_s:.0f} segments/s vs training {train_segments_s:.1f} "
          f"segments/s: ratio {loader_segments_s / train_segments_s:.0f}")


if __name__ == "__main__":
    main()
