"""A planted group difference (tests and benchmarks; not part of neurofm)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurofm.tokenizers.segment import Segment


def plant_group_difference(segments: Sequence[Segment], amplitude: float, freq_hz: float = 6.0,
                           centre_m: Sequence[float] = (0.0, 0.09, 0.10), width_m: float = 0.06,
                           seed: int = 0) -> list[Segment]:
    """Copies of ``segments`` with a known effect planted: an oscillation at ``freq_hz``
    from one source near ``centre_m`` (head frame, m; default near Fz), seen by each
    sensor with a Gaussian falloff of ``width_m``, at ``amplitude`` (scaled units, i.e.
    robust SDs) times a per-window gain in [0.5, 1.5] and a random phase.

    Used to test the subject-level path on real recordings when no labelled cohort is at
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
