"""Token embeddings: patch values, sensor geometry, time in seconds, modality.

No table is indexed by channel name or parcel number: a sensor is known by where it is
(Fourier features of its position), how it points (coil normal) and what it measures
(kind), so any montage, device or atlas maps into the same space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neurofm.batch import KIND_IDS


def patchify(signal: torch.Tensor, time_mask: torch.Tensor, patch: int, patch_len: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``[B, C, T]`` into ``[B, C, N, patch_len]`` patches of ``patch`` samples each.

    Patches are resampled (linear) to ``patch_len`` samples when the recording rate
    gives another length, so one embedding serves every rate. Returns the patches
    and ``patch_mask`` ``[B, N]`` (True where the whole patch is real data).
    """
    b, c, t = signal.shape
    n = t // patch
    x = signal[:, :, : n * patch].reshape(b, c, n, patch)  # [B, C, N, P]
    if patch != patch_len:
        x = F.interpolate(x.reshape(b * c * n, 1, patch), size=patch_len, mode="linear",
                          align_corners=True).reshape(b, c, n, patch_len)
    patch_mask = time_mask[:, : n * patch].reshape(b, n, patch).all(dim=-1)  # [B, N]
    return x, patch_mask


def fourier_features(x: torch.Tensor, n_freqs: int, min_wavelength: float, max_wavelength: float
                     ) -> torch.Tensor:
    """``[..., F] -> [..., F * 2 * n_freqs]``: sin/cos at log-spaced wavelengths."""
    wavelengths = torch.exp(torch.linspace(math.log(max_wavelength), math.log(min_wavelength), n_freqs,
                                           device=x.device, dtype=x.dtype))
    angles = 2 * math.pi * x[..., None] / wavelengths  # [..., F, n_freqs]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class SensorEmbedding(nn.Module):
    """Geometry of each sensor -> ``[B, C, D]``: MLP over Fourier features of the position
    (metres; wavelengths 2 cm to 0.5 m: smooth, so near sensors start with near
    embeddings), the orientation, and a learned kind vector."""

    def __init__(self, dim: int, n_freqs: int = 8):
        super().__init__()
        self.n_freqs = n_freqs
        self.mlp = nn.Sequential(nn.Linear(3 * 2 * n_freqs + 3, dim), nn.GELU(), nn.Linear(dim, dim))
        self.kind = nn.Embedding(len(KIND_IDS), dim)

    def forward(self, positions: torch.Tensor, orientations: torch.Tensor, kinds: torch.Tensor
                ) -> torch.Tensor:
        features = torch.cat([fourier_features(positions, self.n_freqs, 0.02, 0.5), orientations], dim=-1)
        return self.mlp(features) + self.kind(kinds.clamp(min=0))


class TimeEmbedding(nn.Module):
    """Patch centre time in seconds -> ``[..., D]`` (sinusoids, periods 0.1 s to 1 h)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.register_buffer("inv_period", torch.exp(-torch.linspace(math.log(0.1), math.log(3600.0), half)),
                             persistent=False)
        self.proj = nn.Linear(2 * half, dim)

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * seconds[..., None] * self.inv_period
        return self.proj(torch.cat([angles.sin(), angles.cos()], dim=-1))
