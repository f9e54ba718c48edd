"""The :class:`Segment`: one window of one recording, with the geometry of its sensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("eeg", "mag", "grad", "seeg", "ecog", "parcel")
MODALITIES = ("eeg", "meg", "ieeg", "fmri")
# meta entries that hold one value per sensor (they follow the sensors in permute()).
PER_SENSOR_META = (
    "ch_names", "coil_types", "unit_scale", "channel_scale",
    "parcel_labels", "parcel_names", "parcel_volumes_mm3",
)


@dataclass
class Segment:
    """One window of one recording.

    Attributes
    ----------
    signal : ndarray, float32, shape (n_sensors, n_times)
        Scaled signal: ``physical * unit_scale / channel_scale`` per sensor
        (see :meth:`to_physical`). For fMRI, z-scored parcel time series.
    positions : ndarray, float32, shape (n_sensors, 3)
        Sensor positions in metres: MNE head frame for EEG/MEG/iEEG, MNI for
        fMRI parcels (centroids).
    orientations : ndarray, float32, shape (n_sensors, 3)
        Unit normal of MEG coils; zeros for EEG, iEEG and parcels.
    kinds : tuple of str
        Per sensor: ``'eeg' | 'mag' | 'grad' | 'seeg' | 'ecog' | 'parcel'``.
    meta : dict
        JSON-serialisable metadata: ``modality``, ``sfreq`` (Hz), ``ch_names``,
        ``unit_scale`` and ``channel_scale`` (per sensor), ``onset_s``,
        ``events``, BIDS entities, ``source`` ...
    """

    signal: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    kinds: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.signal.shape[0]
        if self.signal.ndim != 2:
            raise ValueError(f"signal must be [C, T], got shape {self.signal.shape}")
        if self.positions.shape != (n, 3) or self.orientations.shape != (n, 3):
            raise ValueError(
                f"positions {self.positions.shape} and orientations {self.orientations.shape} "
                f"must be ({n}, 3) for a signal with {n} sensors"
            )
        if len(self.kinds) != n:
            raise ValueError(f"{len(self.kinds)} kinds for {n} sensors")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown sensor kinds {sorted(unknown)}; expected {KINDS}")
        self.kinds = tuple(self.kinds)

    @property
    def n_sensors(self) -> int:
        return self.signal.shape[0]

    @property
    def n_times(self) -> int:
        return self.signal.shape[1]

    @property
    def sfreq(self) -> float:
        """Sampling rate in Hz (1 / TR for fMRI)."""
        return float(self.meta["sfreq"])

    @property
    def duration_s(self) -> float:
        return self.n_times / self.sfreq

    @property
    def modality(self) -> str:
        return self.meta["modality"]

    def to_physical(self) -> np.ndarray:
        """Invert the scaling: the signal in SI units (V, T, T/m), float64 ``[C, T]``."""
        unit = np.asarray(self.meta["unit_scale"], dtype=np.float64)[:, None]
        scale = np.asarray(self.meta["channel_scale"], dtype=np.float64)[:, None]
        return self.signal.astype(np.float64) * scale / unit

    def permute(self, order: np.ndarray | list[int]) -> Segment:
        """The same segment with sensors in ``order`` (per-sensor meta lists follow)."""
        order = np.asarray(order)
        meta = dict(self.meta)
        for key in PER_SENSOR_META:
            if key in meta:
                meta[key] = [meta[key][i] for i in order]
        return Segment(
            signal=self.signal[order],
            positions=self.positions[order],
            orientations=self.orientations[order],
            kinds=tuple(self.kinds[i] for i in order),
            meta=meta,
        )


class Segments(list):
    """A ``list[Segment]`` with a ``report`` of what tokenization dropped or rejected, and why."""

    def __init__(self, segments=(), report: dict[str, Any] | None = None):
        super().__init__(segments)
        self.report: dict[str, Any] = report or {}
