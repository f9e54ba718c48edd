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


class ConvStem(nn.Module):
    """A patch ``[..., P]`` -> ``[..., D]`` through learned temporal filters (a filter bank, as
    EEGNet's first layer and LaBraM's temporal convolution): ``filters`` convolutions of
    ``kernel`` samples, GELU (a rectifier: the filtered oscillation's envelope), averaged over
    ``bins`` stretches of the patch, then a linear map to the model width."""

    def __init__(self, patch_len: int, dim: int, filters: int = 16, kernel: int = 25, bins: int = 8):
        super().__init__()
        self.conv = nn.Conv1d(1, filters, kernel, padding=kernel // 2)
        self.norm = nn.GroupNorm(4, filters)
        self.pool = nn.AdaptiveAvgPool1d(bins)
        self.proj = nn.Linear(filters * bins, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        lead, p = patches.shape[:-1], patches.shape[-1]
        x = F.gelu(self.norm(self.conv(patches.reshape(-1, 1, p))))  # [M, filters, P]
        return self.proj(self.pool(x).flatten(1)).reshape(*lead, -1)


class SpectralStem(nn.Module):
    """A patch ``[..., P]`` -> ``[..., D]`` from its log power in ``bands`` log-spaced bands
    (1 to P/2 cycles per patch: 1-100 Hz for EEG's 1-s patches of 200 samples) and its mean,
    by a linear map. Band power is what CSP and the filter-bank baselines read; phase is
    dropped."""

    def __init__(self, patch_len: int, dim: int, bands: int = 16):
        super().__init__()
        edges = torch.logspace(0.0, math.log10(patch_len / 2), bands + 1)
        bins = torch.arange(patch_len // 2 + 1, dtype=torch.float32)
        member = (bins[:, None] >= edges[None, :-1]) & (bins[:, None] < edges[None, 1:])
        member[-1, -1] = True  # the Nyquist bin closes the last band
        # a band narrower than one bin takes the nearest bin
        for k in torch.nonzero(~member.any(0)).flatten().tolist():
            member[torch.argmin((bins - edges[k]).abs()), k] = True
        self.register_buffer("average", member.float() / member.float().sum(0), persistent=False)
        self.proj = nn.Linear(bands + 1, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        p = patches.shape[-1]
        spectrum = torch.fft.rfft(patches.float(), dim=-1)
        power = spectrum.real.square() + spectrum.imag.square()
        band_power = (power / p) @ self.average                           # [..., bands]
        features = torch.cat([torch.log(band_power + 1e-4), patches.float().mean(-1, keepdim=True)], -1)
        return self.proj(features.to(patches.dtype))


def patch_stem(name: str, patch_len: int, dim: int) -> nn.Module:
    """The module that turns each patch of ``patch_len`` samples into a token of width ``dim``:
    ``linear`` (a projection), ``conv`` (:class:`ConvStem`) or ``spectral`` (:class:`SpectralStem`)."""
    if name == "linear":
        return nn.Linear(patch_len, dim)
    if name == "conv":
        return ConvStem(patch_len, dim)
    if name == "spectral":
        return SpectralStem(patch_len, dim)
    raise ValueError(f"unknown stem {name!r}: linear, conv or spectral")
