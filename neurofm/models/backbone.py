"""The encoder: the unit that ``export``, ``from_pretrained``, ``push_to_hub`` and ``embed`` use.

:class:`NeuroFMEncoder` holds the token embeddings (patch stem, sensor geometry, time in
seconds, modality), the optional spatial compressor and the transformer. It turns a
:class:`~neurofm.batch.Batch` into one vector per token. The masked-autoencoding head
(decoder, loss, teacher) is :class:`~neurofm.models.mae.MaskedAutoencoder`, which extends it
for pretraining; its state dict holds the encoder's under the same names, so any pretraining
checkpoint gives an encoder (:func:`encoder_state`).

Shapes: B batch, C sensors, N patches per sensor, L = C * N tokens, K visible tokens,
P samples per patch, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from neurofm.batch import MODALITY_IDS, Batch, patch_samples
from neurofm.models.config import EncoderConfig
from neurofm.models.embeddings import SensorEmbedding, TimeEmbedding, patch_stem, patchify
from neurofm.models.encoder import Encoder, attention

# the encoder's modules: every state-dict name of a NeuroFMEncoder starts with one of these
ENCODER_PARTS = ("patch_embed", "sensor_embed", "time_embed", "modality_embed", "compressor", "encoder")


@dataclass
class Tokens:
    """A batch as tokens."""

    patches: torch.Tensor      # [B, L, P] target values
    embedded: torch.Tensor     # [B, L, D] patch + sensor + time + modality
    valid: torch.Tensor        # [B, L] bool: real sensor and real patch
    shape: tuple[int, int]     # (C, N)
    patch_valid: torch.Tensor  # [B, N] bool: real patch
    time: torch.Tensor         # [B, N, D] time embedding of each patch
    seconds: torch.Tensor      # [B, N] patch centres, s from the window start
    query: torch.Tensor | None = None  # [B, L, Dd] the MAE decoder's query (pretraining only)


class SpatialCompressor(nn.Module):
    """The sensor tokens of each time patch -> ``latents`` tokens, by cross-attention from
    learned queries (BrainOmni-style). A learned null key keeps an all-masked patch defined."""

    def __init__(self, dim: int, heads: int, latents: int, backend: str = "sdpa"):
        super().__init__()
        self.heads, self.backend = heads, backend
        self.queries = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.null = nn.Parameter(torch.zeros(1, dim))
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, n, d = x.shape  # x [B, C, N, D], mask [B, C, N] -> [B, N, K, D]
        h, k = self.heads, self.queries.shape[0]
        keys = torch.cat([self.null.expand(b * n, 1, d),
                          self.norm(x.permute(0, 2, 1, 3).reshape(b * n, c, d))], dim=1)
        key_mask = torch.cat([mask.new_ones(b * n, 1), mask.permute(0, 2, 1).reshape(b * n, c)], dim=1)
        q = self.q(self.queries).view(1, k, h, d // h).transpose(1, 2).expand(b * n, -1, -1, -1)
        kv = self.kv(keys).view(b * n, c + 1, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = attention(q, kv[0], kv[1], key_mask, self.backend)  # [B*N, H, K, Dh]
        out = self.queries + self.proj(out.transpose(1, 2).reshape(b * n, k, d))
        out = out + self.mlp(self.norm_mlp(out))
        return out.view(b, n, k, d)


class NeuroFMEncoder(nn.Module):
    """Geometry-aware tokens and a transformer: ``encoder(batch)`` is every token's vector.

    Parameters
    ----------
    config : EncoderConfig
        The architecture (a pretraining :class:`~neurofm.models.config.ModelConfig` also
        serves: it holds the same fields).
    attention : 'sdpa' | 'xformers' | 'math'
        The attention backend (runtime: not saved with the weights).
    activation_checkpointing : bool
        Recompute each block's activations in the backward pass (runtime).
    init : bool
        Initialise the weights (:func:`init_weights`); a subclass that adds modules passes
        False and initialises everything once, in registration order.
    """

    def __init__(self, config: EncoderConfig, attention: str = "sdpa", activation_checkpointing: bool = False,
                 init: bool = True):
        super().__init__()
        self.config = cfg = config
        # one patch projection for every modality (signals are all unit-scaled; the modality
        # embedding tells them apart), so DDP finds no unused parameters
        self.patch_embed = patch_stem(cfg.stem, cfg.patch_len, cfg.dim)
        self.sensor_embed = SensorEmbedding(cfg.dim)
        self.time_embed = TimeEmbedding(cfg.dim)
        self.modality_embed = nn.Embedding(len(MODALITY_IDS), cfg.dim)
        self.compressor = (SpatialCompressor(cfg.dim, cfg.heads, cfg.spatial_latents, attention)
                           if cfg.spatial_latents else None)
        self.encoder = Encoder(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio, attention, cfg.dropout,
                               activation_checkpointing)
        if init:
            self.apply(init_weights)

    def tokenize(self, batch: Batch) -> Tokens:
        """Patch a batch and embed every token."""
        sfreq, modality = batch.sfreq, batch.modality
        if not (torch.all(sfreq == sfreq[0]) and torch.all(modality == modality[0])):
            raise ValueError("a batch must hold one modality at one sampling rate "
                             "(batched_stream buckets batches this way)")
        name = next(k for k, v in MODALITY_IDS.items() if v == int(modality[0]))
        patch = patch_samples(self.config.patch_s[name], sfreq[0])
        if batch.signal.shape[-1] < patch:
            raise ValueError(f"segments of {batch.signal.shape[-1]} samples are shorter than one "
                             f"patch ({patch} samples = {self.config.patch_s[name]} s)")
        patches, patch_mask = patchify(batch.signal, batch.time_mask, patch, self.config.patch_len)
        b, c, n, _ = patches.shape
        # patch centres in seconds from the window start: any rate or TR on one time axis
        seconds = (torch.arange(n, device=patches.device) + 0.5) * patch / sfreq[:, None]  # [B, N]
        sensor = self.sensor_embed(batch.positions, batch.orientations, batch.kinds)  # [B, C, D]
        time = self.time_embed(seconds)  # [B, N, D]
        embedded = (self.patch_embed(patches) + sensor[:, :, None] + time[:, None]
                    + self.modality_embed(modality)[:, None, None])  # [B, C, N, D]
        valid = batch.channel_mask[:, :, None] & patch_mask[:, None, :]  # [B, C, N]
        return Tokens(patches.reshape(b, c * n, -1), embedded.reshape(b, c * n, -1), valid.reshape(b, c * n),
                      (c, n), patch_mask, time, seconds)

    def encode(self, tokens: Tokens, visible_idx: torch.Tensor, visible_mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the visible tokens (``visible_idx`` ``[B, K]``, real where ``visible_mask``).

        Returns ``(out, mask)``: ``[B, K, D]`` encoded visible tokens and their mask; or,
        with spatial compression, ``[B, N * latents, D]`` latents (all visible sensors of
        a patch summarised by cross-attention, so 306 and 19 sensors cost the same) and
        their mask.
        """
        if self.compressor is not None:
            c, n = tokens.shape
            b, _, d = tokens.embedded.shape
            visible = torch.zeros_like(tokens.valid).scatter(1, visible_idx, visible_mask)
            latents = self.compressor(tokens.embedded.view(b, c, n, d), visible.view(b, c, n))
            latents = latents + tokens.time[:, :, None]  # [B, N, K, D]
            mask = tokens.patch_valid[:, :, None].expand(-1, -1, latents.shape[2]).reshape(b, -1)
            return self.encoder(latents.reshape(b, -1, d), mask), mask
        x = torch.gather(tokens.embedded, 1, visible_idx[..., None].expand(-1, -1, tokens.embedded.shape[-1]))
        return self.encoder(x, visible_mask), visible_mask

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`encode_every_token` (a pretraining model's ``forward`` is its loss instead)."""
        return self.encode_every_token(batch)

    def encode_every_token(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token encoded, nothing masked: ``[B, L, D]`` in place (with spatial
        compression: every latent, ``[B, N * latents, D]``), and which are real ``[B, L]``.
        :func:`mean_pool` of the two is the window's embedding."""
        tokens = self.tokenize(batch)
        if self.compressor is None:
            return self.encoder(tokens.embedded, tokens.valid), tokens.valid
        every = torch.arange(tokens.valid.shape[1], device=tokens.valid.device).expand_as(tokens.valid)
        return self.encode(tokens, every, tokens.valid)


def mean_pool(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens: ``[B, L, D]``, ``[B, L]`` -> ``[B, D]``."""
    weights = mask[..., None].to(out.dtype)
    return (out * weights).sum(1) / weights.sum(1).clamp(min=1)


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's part of a pretraining model's state dict (names unchanged)."""
    return {k: v for k, v in state.items() if k.split(".")[0] in ENCODER_PARTS}


def init_weights(module: nn.Module) -> None:
    """Truncated-normal linear and embedding weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=0.02)
