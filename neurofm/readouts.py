"""Readouts: what a probe or a trained head reads from the encoder's tokens.

- ``mean``: every real token averaged, ``[B, D]``;
- ``sensors``: each sensor's tokens averaged over time, concatenated, ``[B, C * D]``;
- ``connectivity``: Fisher-z correlation of every pair of sensors' token sequences;
- ``spatial`` (learned): ``filters`` spatial filters mix the sensors' tokens and ``bands``
  learned projections of the width, then the log of the mean square over time: the log-variance
  of spatially filtered, band-like channels that CSP and EEGNet classify, ``[B, filters * bands]``;
- ``attention`` (learned): a learned query attends over every real token, ``[B, D]``.

Sensor alignment (:func:`shared_sensors`): windows from recordings with different channel sets
are read over the sensors they share, matched by name (what ``sensors``, ``connectivity`` and
``spatial`` and the classical baselines need).

The first three have no parameters (a linear probe can read them from frozen features); the
learned two are modules trained with the head (:data:`LEARNED`). Tokens are sensor-major:
``[B, C * N, D]`` for C sensors of N patches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from neurofm.errors import ConfigError, NeurofmError
from neurofm.tokenizers.segment import Segment

READOUTS = ("mean", "sensors", "connectivity", "spatial", "attention")
LEARNED = ("spatial", "attention")        # readouts with parameters, trained with the head
FROZEN = ("mean", "sensors", "connectivity")  # readouts a probe reads from frozen features
SENSOR_AXIS = ("sensors", "connectivity", "spatial")  # readouts that keep the sensor axis


def check_sensor_axis(config, readout: str) -> None:
    """Refuse a readout that keeps the sensor axis on a model (``config``: its ModelConfig)
    whose ``spatial_latents`` compress the sensors away."""
    if readout in SENSOR_AXIS and config.spatial_latents is not None:
        raise ConfigError(f"readout={readout} keeps the sensor axis, which spatial_latents="
                          f"{config.spatial_latents} compresses away; use readout=mean")


def shared_sensors(segments: Sequence[Segment]) -> list[np.ndarray]:
    """Per segment, the row indices of the sensors every segment has (matched by channel name
    or parcel label, in the first segment's order): one layout for classical methods."""
    names = [tuple(s.meta.get("ch_names") or s.meta.get("parcel_labels") or range(s.n_sensors))
             for s in segments]
    shared = set(names[0]).intersection(*names[1:])
    common = [n for n in names[0] if n in shared]
    if len(common) < 2:
        raise NeurofmError(f"the recordings share {len(common)} sensors; classical baselines need "
                           "two or more (pass task.baseline=false)")
    rows = []
    for seg_names in names:
        where = {n: i for i, n in enumerate(seg_names)}
        rows.append(np.array([where[n] for n in common]))
    return rows


def shared_sensor_array(segments: Sequence[Segment]) -> np.ndarray:
    """``[N, C, T]`` float64 over the sensors every segment has (see :func:`shared_sensors`)."""
    lengths = {s.n_times for s in segments}
    if len(lengths) > 1:
        raise NeurofmError(f"windows of different lengths {sorted(lengths)}: resample to one rate")
    return np.stack([seg.signal[rows] for seg, rows in zip(segments, shared_sensors(segments), strict=True)]
                    ).astype(np.float64)


def shared_tokens(tokens: torch.Tensor, n_sensors: int, take: torch.Tensor) -> torch.Tensor:
    """Tokens ``[B, C * N, D]`` of ``n_sensors`` sensors -> ``[B, C_shared, N, D]``, the sensors
    ``take`` ``[B, C_shared]`` of each window in that order (one layout across montages)."""
    b = tokens.shape[0]
    tokens = tokens.reshape(b, n_sensors, -1, tokens.shape[-1])            # [B, C, N, D]
    return tokens[torch.arange(b, device=tokens.device)[:, None], take]   # [B, C_shared, N, D]


def sensor_readout(tokens: torch.Tensor, n_sensors: int, take: torch.Tensor, readout: str) -> torch.Tensor:
    """The parameter-free readouts that keep the sensor axis, from encoder tokens
    ``[B, C * N, D]`` of ``n_sensors`` sensors, keeping the sensors ``take`` ``[B, C_shared]``:

    - ``sensors``: each sensor's tokens averaged over time, concatenated, ``[B, C_shared * D]``;
    - ``connectivity``: Fisher-z correlation of every pair of sensors' token sequences,
      centred over time, ``[B, C_shared * (C_shared - 1) / 2]``.

    Differentiable: the linear probe and the trained heads share it.
    """
    tokens = shared_tokens(tokens, n_sensors, take)
    if readout == "sensors":
        return tokens.mean(2).flatten(1)
    if readout != "connectivity":
        raise ConfigError(f"sensor_readout: readout must be sensors or connectivity, got {readout!r}")
    iu = torch.triu_indices(take.shape[1], take.shape[1], offset=1, device=tokens.device)
    centred = (tokens - tokens.mean(2, keepdim=True)).flatten(2)          # [B, C_shared, N * D]
    centred = centred / centred.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    corr = (centred @ centred.transpose(1, 2)).clamp(-0.999999, 0.999999)
    return torch.atanh(corr[:, iu[0], iu[1]])


class SpatialLogPower(nn.Module):
    """Learned spatial filters + log-variance over per-sensor tokens (the CSP / EEGNet idea on
    the encoder's tokens): ``[B, C * N, D]`` -> ``[B, filters * bands]``.

    The sensors' tokens ``[B, C_shared, N, D]`` are mixed by ``filters`` spatial filters
    (``[filters, C_shared]``) and their width by ``bands`` projections (``[bands, D]``); each
    (filter, band) channel's log mean square over the N patches is a feature."""

    def __init__(self, n_shared: int, dim: int, filters: int = 8, bands: int = 8):
        super().__init__()
        self.spatial = nn.Parameter(torch.randn(filters, n_shared) / n_shared ** 0.5)
        self.bands = nn.Linear(dim, bands, bias=False)
        self.width = filters * bands

    def forward(self, tokens: torch.Tensor, n_sensors: int, take: torch.Tensor) -> torch.Tensor:
        x = shared_tokens(tokens, n_sensors, take)                        # [B, C, N, D]
        x = torch.einsum("fc,bcnd->bfnd", self.spatial, x)                # [B, filters, N, D]
        power = self.bands(x).square().mean(2)                            # [B, filters, bands]
        return torch.log(power + 1e-6).flatten(1)


class AttentionPool(nn.Module):
    """A learned query attending over every real token: ``[B, L, D]`` (``valid`` ``[B, L]``)
    -> ``[B, D]``, a weighted mean whose weights the head learns (which sensors, which times)."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.key = nn.Linear(dim, dim)
        self.width = dim

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        scores = (self.key(tokens) @ self.query) / tokens.shape[-1] ** 0.5   # [B, L]
        weights = scores.masked_fill(~valid, float("-inf")).softmax(-1)
        return (weights[..., None] * tokens).sum(1)
