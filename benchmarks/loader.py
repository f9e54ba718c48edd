"""Benchmark: `neurofm prepare` throughput and the streaming loader vs plain tarfile reads.

1. Prepare the real EEG/MEG/fMRI recordings in ../shared/data into shards (1 worker):
   hours of recording per CPU-hour.
2. Read the same shards, in one run, best of 3:
   - baseline: sequential `tarfile` + `np.load` + `json.loads` of every sample (no shuffle),
   - neurofm: `batched_stream(...)` (shard shuffle, 1000-sample shuffle buffer, decode to
     Segment, pad + mask batches of 32 by modality) through a WebLoader with 0
     (in-process), 1 and 2 workers.
   Prints segments/s, MB/s and the ratio to the baseline (target >= 0.8 at 1 worker).
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import data_dir

from neurofm.datasets import PrepareOptions, batched_stream, load_manifest, write_shards
from neurofm.datasets.streaming import make_loader

warnings.simplefilter("ignore")
PASSES = 20  # the real recordings are short: each measurement reads the shard list 20 times


def plain_read(paths: list[Path]) -> int:
    n = 0
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                data = tar.extractfile(member).read()
                if member.name.endswith(".npy"):
                    np.load(io.BytesIO(data)).astype(np.float32)
                else:
                    json.loads(data)
                    n += 1
    return n


def loader_read(paths: list[Path], workers: int) -> int:
    """Segments through the loader as training uses it: batches of 32 built in the workers."""
    pipeline = batched_stream([str(p) for p in paths], 32, None, shuffle_buffer=1000)
    loader = make_loader(pipeline, workers)
    return sum(len(batch) for batch in loader)


def timed(fn, repeats: int = 3) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - start)
    return best, n


def main() -> None:
    data = data_dir()
    options = PrepareOptions(window_s=1.0, fmri_window_s=10.0, shard_size_mb=4,
                             atlas=str(data / "atlases" / "Schaefer200_space-MNI152NLin6_res-2x2x2.nii.gz"),
                             meeg={"on_missing_positions": "drop"})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "shards"
        start = time.process_time()
        manifest = write_shards([data / "meeg", data / "fmri"], out, options)
        cpu = time.process_time() - start
        hours = manifest["totals"]["hours"]
        print(f"prepare: {manifest['files']['ok']} files ok, {manifest['files']['failed']} failed "
              f"(too short for a 1 s window, or no positions), {manifest['totals']['samples']} segments, "
              f"{hours * 3600:.0f} s of recording in {cpu:.1f} CPU-s = {hours / (cpu / 3600):.0f} "
              "hours per CPU-hour")
        paths = [out / s["name"] for s in manifest["shards"]]
        megabytes = sum(s["bytes"] for s in load_manifest(out)["shards"]) / 2**20 * PASSES
        paths = paths * PASSES
        base_s, base_n = timed(lambda: plain_read(paths))
        print(f"{'reader':28s} {'segments/s':>11s} {'MB/s':>8s} {'ratio':>6s}")
        print(f"{'tarfile + np.load':28s} {base_n / base_s:11.0f} {megabytes / base_s:8.1f} {1.0:6.2f}")
        for workers in (0, 1, 2):
            secs, n = timed(lambda w=workers: loader_read(paths, w))
            assert n == base_n, (n, base_n)
            label = f"neurofm stream, {workers} worker{'s' if workers != 1 else ''}"
            print(f"{label:28s} {n / secs:11.0f} {megabytes / secs:8.1f} {base_s / secs:6.2f}")


if __name__ == "__main__":
    main()
