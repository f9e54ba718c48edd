"""The data <-> model contract: :class:`Batch`, collation, sensor-kind and modality ids.

This module sits below both :mod:`neurofm.datasets` (which fills batches) and
:mod:`neurofm.models` (which reads them); neither imports the other, and loading a
model does not import the shard loader. The ids come from :data:`~neurofm.tokenizers.segment.KINDS`
and :data:`~neurofm.tokenizers.segment.MODALITIES`, so a new sensor kind or modality is added
in one place. :func:`patch_samples` is the one rule turning a patch length in seconds into
samples, used by the model, the loader's crop and the encoding head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neurofm.tokenizers.segment import KINDS, MODALITIES, Segment

KIND_IDS: dict[str, int] = {kind: i for i, kind in enumerate(KINDS)}
MODALITY_IDS: dict[str, int] = {modality: i for i, modality in enumerate(MODALITIES)}


def patch_samples(patch_s: float, sfreq: float) -> int:
    """Samples in one patch of ``patch_s`` seconds at ``sfreq`` Hz (at least one)."""
    return max(1, int(round(float(patch_s) * float(sfreq))))


@dataclass
class Batch:
    """Segments padded to a common size.

    Attributes
    ----------
    signal : Tensor, float32 [B, C, T]
    positions, orientations : Tensor, float32 [B, C, 3]
    kinds : Tensor, int64 [B, C] (``KIND_IDS``; -1 on padding)
    channel_mask : Tensor, bool [B, C] (True = real sensor)
    time_mask : Tensor, bool [B, T] (True = real sample)
    sfreq : Tensor, float32 [B] (Hz)
    modality : Tensor, int64 [B] (``MODALITY_IDS``)
    meta : list of dict
    """

    signal: torch.Tensor
    positions: torch.Tensor
    orientations: torch.Tensor
    kinds: torch.Tensor
    channel_mask: torch.Tensor
    time_mask: torch.Tensor
    sfreq: torch.Tensor
    modality: torch.Tensor
    meta: list[dict[str, Any]]

    def to(self, device: torch.device | str) -> Batch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return Batch(**moved)

    def to_torch(self) -> Batch:
        """Numpy fields -> tensors (zero-copy). Loader workers send numpy batches: one
        pickled message costs a fraction of passing eight shared-memory tensors."""
        return Batch(**{k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
                        for k, v in vars(self).items()})

    def __len__(self) -> int:
        return self.signal.shape[0]




# meta a batch carries (per-sensor lists stay behind: they cost more to pass between
# processes than the signal itself)
BATCH_META = ("key", "source", "dataset", "subject", "session", "task", "run", "split",
              "modality", "onset_s", "label", "event_onset_s", "phenotype", "tr_s")


def collate_segments(segments: list[Segment], meta_keys: tuple[str, ...] | None = BATCH_META,
                     as_numpy: bool = False) -> Batch:
    """Pad segments (any channel count, duration, modality) into a :class:`Batch` with masks.

    ``meta_keys`` chooses which meta entries travel with the batch (None: all);
    ``as_numpy`` keeps the fields as numpy arrays (see :meth:`Batch.to_torch`).
    """
    if not segments:
        raise ValueError("cannot collate an empty list of segments")
    b = len(segments)
    c = max(s.n_sensors for s in segments)
    t = max(s.n_times for s in segments)
    signal = np.zeros((b, c, t), np.float32)
    positions = np.zeros((b, c, 3), np.float32)
    orientations = np.zeros((b, c, 3), np.float32)
    kinds = np.full((b, c), -1, np.int64)
    channel_mask = np.zeros((b, c), bool)
    time_mask = np.zeros((b, t), bool)
    for i, s in enumerate(segments):
        signal[i, : s.n_sensors, : s.n_times] = s.signal
        positions[i, : s.n_sensors] = s.positions
        orientations[i, : s.n_sensors] = s.orientations
        kinds[i, : s.n_sensors] = [KIND_IDS[k] for k in s.kinds]
        channel_mask[i, : s.n_sensors] = True
        time_mask[i, : s.n_times] = True
    batch = Batch(
        signal=signal,
        positions=positions,
        orientations=orientations,
        kinds=kinds,
        channel_mask=channel_mask,
        time_mask=time_mask,
        sfreq=np.array([s.sfreq for s in segments], dtype=np.float32),
        modality=np.array([MODALITY_IDS[s.modality] for s in segments], dtype=np.int64),
        meta=[s.meta if meta_keys is None else {k: s.meta[k] for k in meta_keys if k in s.meta}
              for s in segments],
    )
    return batch if as_numpy else batch.to_torch()
