"""Helpers for checking neurofm on real recordings (its own tests and benchmarks use them;
so can a user's): the EEGLAB tutorial recording with its published channel labels, and a
known group difference planted into real segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neurofm.tokenizers.segment import Segment

# The EEGLAB tutorial recording's channel labels: its .set in MNE's testing data was saved
# without chanlocs, so it reads as "EEG 000..." and needs these to get positions.
EEGLAB_TUTORIAL_CHANNELS = (
    "FPz EOG1 F3 Fz F4 EOG2 FC5 FC1 FC2 FC6 T7 C3 C4 Cz T8 CP5 CP1 CP2 CP6 "
    "P7 P3 Pz P4 P8 PO7 PO3 POz PO4 PO8 O1 Oz O2"
).split()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a local test server or a process group)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_eeglab_tutorial(meeg: str | Path, preload: bool = True):
    """The real EEGLAB tutorial recording (32 ch, 128 Hz, events ``square`` and ``rt``) under
    ``<meeg>/eeglab/test_raw.set``, its channels renamed to their published labels."""
    import mne

    raw = mne.io.read_raw_eeglab(Path(meeg) / "eeglab" / "test_raw.set", preload=preload, verbose="error")
    raw.rename_channels(dict(zip(raw.ch_names, EEGLAB_TUTORIAL_CHANNELS, strict=True)))
    return raw


def plant_group_difference(segments: Sequence[Segment], amplitude: float, freq_hz: float = 6.0,
                           centre_m: Sequence[float] = (0.0, 0.09, 0.10), width_m: float = 0.06,
                           seed: int = 0) -> list[Segment]:
    """Copies of ``segments`` with a known effect planted: an oscillation at ``freq_hz``
    from one source near ``centre_m`` (head frame, m; default near Fz), seen by each
    sensor with a Gaussian falloff of ``width_m``, at ``amplitude`` (scaled units, i.e.
    robust SDs) times a per-window gain in [0.5, 1.5] and a random phase.

    For checking a subject-level pipeline on real recordings when no labelled cohort is at
    hand: the planted group must be told apart, the other must not change.
    """
    rng = np.random.default_rng(seed)
    out = []
    for seg in segments:
        distance = np.linalg.norm(seg.positions - np.asarray(centre_m, dtype=np.float32), axis=1)
        pattern = np.exp(-0.5 * (distance / width_m) ** 2)  # [C]
        t = np.arange(seg.n_times) / seg.sfreq
        wave = np.sin(2 * np.pi * freq_hz * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.5)
        out.append(Segment(signal=(seg.signal + amplitude * pattern[:, None] * wave[None, :]).astype(np.float32),
                           positions=seg.positions, orientations=seg.orientations, kinds=seg.kinds,
                           meta=dict(seg.meta)))
    return out
