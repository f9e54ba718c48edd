"""Benchmark: `model.embed(segments)` vs the bare encoder on pre-built tensors, same run.

Segments: the real EEGLAB tutorial recording (30 channels), 4 s windows. neurofm: the
public `embed` (grouping by shape, collation, device transfer, pooling, progress bar).
Bare: `encoder.encode_every_token` on batches collated and moved beforehand. Target overhead <= 20 %.

usage: python benchmarks/embed.py [--model small] [--device cpu|cuda] [--batch 32]
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import asdict

import mne
import torch
from _common import eeglab_tutorial

from neurofm.datasets import collate_segments
from neurofm.embedding import NeuroFM
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.tokenizers import tokenize_raw

warnings.simplefilter("ignore")
mne.set_log_level("ERROR")


def best(fn, device: str, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    raw = eeglab_tutorial()
    segments = list(tokenize_raw(raw, window_s=4.0, stride_s=1.0))
    cfg = asdict(ModelConfig.named(args.model))
    model = NeuroFM(MaskedAutoencoder(ModelConfig(**cfg))).to(args.device)
    batches = [collate_segments(segments[k : k + args.batch]).to(args.device)
               for k in range(0, len(segments), args.batch)]

    def bare():
        with torch.no_grad():
            for batch in batches:
                model.model.encode_every_token(batch)

    ours = best(lambda: model.embed(segments, batch_size=args.batch), args.device)
    base = best(bare, args.device)
    n = len(segments)
    print(f"{args.model} on {args.device}: {n} windows of 30 ch x 4 s, batch {args.batch}")
    print(f"  bare encoder on pre-built tensors  {n / base:8.1f} segments/s")
    print(f"  model.embed(segments)              {n / ours:8.1f} segments/s   overhead {ours / base - 1:+.1%}")


if __name__ == "__main__":
    main()
