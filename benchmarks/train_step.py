"""Benchmark: tokens/s of the neurofm MAE training step vs a plain PyTorch MAE step.

In one run, same device and dtype, on the same real EEG tokens (the EEGLAB tutorial
recording, 30 channels x 4 patches per window):
- neurofm: a full MAE step of a model config (patch + sensor-geometry + time + modality
  embeddings, mixed masking, encoder on the visible tokens with padding masks, decoder on all
  tokens, loss on the masked ones, backward, AdamW step);
- fair reference: the MAE step written the plain way (the MAE reference / nanoGPT style):
  a linear patch embedding plus a learned position table, random masking at the same ratio,
  pre-norm blocks of the same width/depth/heads/MLP with `F.scaled_dot_product_attention`
  on the same visible-token count, the same decoder width/depth/heads over all tokens, MSE on
  the masked tokens, AdamW. Everything neurofm adds has to fit in the difference;
- for orientation only: `torch.nn.TransformerEncoder` of the encoder's size on *all* tokens
  (no masking), the comparison earlier versions printed. It measures the mask ratio, not the
  implementation.
Tokens/s counts every token of the batch (visible and masked) for all three.

Then the loader on shards of the same recording: its segments/s alone (1 and 2 workers)
divided by the training step's segments/s (target >= 3: the loader is not the bottleneck),
and the step fed by the 2-worker loader against the same step on a batch held in memory
(ratio 1.00: the loader costs training nothing).

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
import torch.nn.functional as F
from _common import eeglab_tutorial
from torch import nn

from neurofm.datasets import PrepareOptions, batched_stream, collate_segments, write_shards
from neurofm.datasets.streaming import make_loader
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.tokenizers import tokenize_raw

warnings.simplefilter("ignore")
mne.set_log_level("ERROR")


class PlainBlock(nn.Module):
    """Pre-norm transformer block, nanoGPT style, attention through F.scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class PlainMAE(nn.Module):
    """The MAE step written the plain way: position table, random masking, encoder on the
    visible tokens, decoder on all of them, MSE on the masked ones."""

    def __init__(self, cfg: ModelConfig, length: int):
        super().__init__()
        self.ratio = cfg.mask_ratio
        self.embed = nn.Linear(cfg.patch_len, cfg.dim)
        self.pos = nn.Parameter(torch.randn(1, length, cfg.dim) * 0.02)
        self.encoder = nn.ModuleList(PlainBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.decoder_in = nn.Linear(cfg.dim, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(cfg.decoder_dim))
        self.decoder_pos = nn.Parameter(torch.randn(1, length, cfg.decoder_dim) * 0.02)
        self.decoder = nn.ModuleList(PlainBlock(cfg.decoder_dim, cfg.decoder_heads, cfg.mlp_ratio)
                                     for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(cfg.decoder_dim)
        self.head = nn.Linear(cfg.decoder_dim, cfg.patch_len)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, length, _ = patches.shape
        keep = int(length * (1 - self.ratio))
        order = torch.rand(b, length, device=patches.device).argsort(dim=1)
        visible = order[:, :keep]  # [B, K]
        x = (self.embed(patches) + self.pos).gather(1, visible[..., None].expand(-1, -1, self.pos.shape[-1]))
        for block in self.encoder:
            x = block(x)
        x = self.decoder_in(self.norm(x))
        width = x.shape[-1]
        full = self.mask_token.expand(b, length, width).scatter(1, visible[..., None].expand(-1, -1, width), x)
        full = full + self.decoder_pos
        for block in self.decoder:
            full = block(full)
        pred = self.head(self.decoder_norm(full))
        hidden = torch.ones(b, length, device=patches.device).scatter(1, visible, 0.0)
        return (((pred - patches) ** 2).mean(-1) * hidden).sum() / hidden.sum()


class Reference(nn.Module):
    """nn.TransformerEncoder with patch projections in and out, on every token (no masking)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Linear(cfg.patch_len, cfg.dim)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, int(cfg.dim * cfg.mlp_ratio), dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.dim, cfg.patch_len)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(self.head(self.encoder(self.embed(patches))), patches)


def training_step(model: nn.Module, loss_fn, device: str, dtype: torch.dtype):
    """A closure running one step: ``loss_fn()`` under autocast, backward, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def interleaved(steps: dict, n: int, device: str) -> dict[str, float]:
    """Seconds per step of each closure: interleaved rounds, best of 3, so drift in machine
    load hits all of them alike."""
    results = {name: float("inf") for name in steps}
    for _ in range(3):
        for name, step in steps.items():
            results[name] = min(results[name], timed_steps(step, n, device))
    return results


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
    cfg = ModelConfig.named(args.model)
    n_tokens = batch.signal.shape[0] * batch.signal.shape[1] * (batch.signal.shape[2] // 200)

    torch.manual_seed(0)
    ours = MaskedAutoencoder(cfg).to(device)
    patches = batch.signal.reshape(batch.signal.shape[0], -1, 200)  # [B, C * N, P], same tokens
    plain = PlainMAE(cfg, patches.shape[1]).to(device)
    ref = Reference(cfg).to(device)
    steps = {name: training_step(model, loss_fn, device, dtype)
             for name, model, loss_fn in (("neurofm MAE step", ours, lambda: ours(batch)["loss"]),
                                          ("plain PyTorch MAE step", plain, lambda: plain(patches)),
                                          ("nn.TransformerEncoder", ref, lambda: ref(patches)))}
    results = interleaved(steps, args.steps, device)
    print(f"{args.model} ({sum(p.numel() for p in ours.parameters()) / 1e6:.1f} M params), batch "
          f"{args.batch} x {batch.signal.shape[1]} ch x {batch.signal.shape[2] // 200} patches = "
          f"{n_tokens} tokens, {device}, {args.dtype}")
    base = results["plain PyTorch MAE step"]
    for name, secs in results.items():
        note = "  (all tokens, no masking: not like for like)" if name == "nn.TransformerEncoder" else ""
        print(f"  {name:24s} {secs * 1000:8.1f} ms/step  {n_tokens / secs:10.0f} tokens/s  "
              f"ratio {base / secs:5.2f}{note}")
    print(f"neurofm vs the plain MAE step: {base / results['neurofm MAE step']:.2f}x (target >= 0.95)")
    loader_under_training(raw, args, ours, batch, results["neurofm MAE step"])


def loader_under_training(raw, args, model, batch, step_s: float) -> None:
    """The loader alone (segments/s, 1 and 2 workers) against what the step consumes, then
    the step fed by the 2-worker loader against the same step on a batch held in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        raw.save(Path(tmp) / "eeglab_raw.fif")
        write_shards([Path(tmp) / "eeglab_raw.fif"], Path(tmp) / "shards",
                     PrepareOptions(window_s=4.0, stride_s=0.5, shard_size_mb=1, split_fractions=(1.0, 0.0, 0.0)))

        def loader(workers: int):
            return iter(make_loader(batched_stream(Path(tmp) / "shards", args.batch, "train", resampled=True,
                                                   shuffle_buffer=200), num_workers=workers))

        train_segments_s = args.batch / step_s
        for workers in (1, 2):
            it = loader(workers)
            next(it)
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 3.0:
                n += len(next(it))
            rate = n / (time.perf_counter() - start)
            print(f"loader alone ({workers} worker{'s' * (workers > 1)}) {rate:.0f} segments/s vs training "
                  f"{train_segments_s:.1f} segments/s: headroom {rate / train_segments_s:.0f}x (target >= 3)")
        # `it` is the 2-worker loader of the last round
        dtype = getattr(torch, args.dtype)
        times = interleaved({"in memory": training_step(model, lambda: model(batch)["loss"], args.device, dtype),
                             "from the loader (2 workers)": training_step(
                                 model, lambda: model(next(it).to(args.device))["loss"], args.device, dtype)},
                            args.steps, args.device)
        base = times["in memory"]
        for name, secs in times.items():
            print(f"  training step, batch {name:28s} {secs * 1000:7.1f} ms  ratio {base / secs:.2f}")


if __name__ == "__main__":
    main()
