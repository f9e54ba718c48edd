"""Helpers shared by the benchmark scripts: where the real data is, and timing."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("NEUROFM_TEST_DATA")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (candidate / "MANIFEST.md").exists():
            return candidate
    sys.exit("benchmark needs the real data: set NEUROFM_TEST_DATA or put it in ../shared/data")


def best_of(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process) over ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)
