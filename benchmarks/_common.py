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


# The EEGLAB tutorial recording's channel labels: its .set in the shared data was saved
# without chanlocs, so it reads as "EEG 000..." and needs these to get positions.
EEGLAB_TUTORIAL_CHANNELS = (
    "FPz EOG1 F3 Fz F4 EOG2 FC5 FC1 FC2 FC6 T7 C3 C4 Cz T8 CP5 CP1 CP2 CP6 "
    "P7 P3 Pz P4 P8 PO7 PO3 POz PO4 PO8 O1 Oz O2"
).split()


def eeglab_tutorial():
    """The real EEGLAB tutorial recording (preloaded), channels renamed to its labels."""
    import mne

    raw = mne.io.read_raw_eeglab(data_dir() / "meeg" / "eeglab" / "test_raw.set", preload=True,
                                 verbose="error")
    raw.rename_channels(dict(zip(raw.ch_names, EEGLAB_TUTORIAL_CHANNELS, strict=True)))
    return raw
