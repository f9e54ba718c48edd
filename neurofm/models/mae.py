"""Masked autoencoder over geometry-aware tokens: the encoder and its pretraining head.

:class:`MaskedAutoencoder` extends :class:`~neurofm.models.backbone.NeuroFMEncoder` (the
unit exports hold) with the masking, the light decoder, the loss and (``target=latent``) the
teacher. A token is one patch (``patch_s`` seconds) of one sensor. The encoder sees the visible
tokens only; a light decoder gets the encoded visible tokens back in place plus, at every
masked place, a query made of that token's sensor geometry and time; it predicts the
masked patches; optionally (``interpolation_prior``) it adds, through a learned per-token
gate, a Gaussian-weighted mean of the visible patches of nearby sensors at the same time:
the interpolation spherical splines give EEG, which the network corrects. Loss: MSE on the
masked patches of the (robust-scaled) signal (``target=signal``; ``target_norm=patch``: each
patch standardised, as MAE's normalised pixels) or on their Fourier amplitude and phase
(``target=fourier``, LaBraM's targets), plus an optional spectral-amplitude term; or on each
masked token's representation by a teacher encoder that sees every token, a moving average of
the student (``target=latent``: data2vec, Brain-JEPA and EEGPT predict latents).

Shapes: B batch, C sensors, N patches per sensor, L = C * N tokens, K visible tokens,
P samples per patch, D model width.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from neurofm.batch import MODALITY_IDS, Batch
from neurofm.models.backbone import NeuroFMEncoder, Tokens, encoder_state, init_weights
from neurofm.models.config import ModelConfig
from neurofm.models.embeddings import SensorEmbedding, TimeEmbedding
from neurofm.models.encoder import Encoder

# the modules of the light decoder (the rest is tokenizer + encoder)
DECODER_PARTS = ("decoder_in", "decoder", "decoder_sensor", "decoder_time", "decoder_modality",
                 "mask_token", "head", "interp_gate", "interp_log_width")


def mask_tokens(valid: torch.Tensor, shape: tuple[int, int], ratio: float, strategy: str,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose visible tokens.

    Returns ``visible_idx`` ``[B, K]`` (token indices, padded with any index) and
    ``visible_mask`` ``[B, K]`` (True for real visible tokens). Per sample,
    ``floor((1 - ratio) * n_valid)`` (at least 1) valid tokens stay visible;
    ``channels`` hides whole sensors, ``time`` whole patches, ``mixed`` picks one of
    the three per sample.
    """
    b, length = valid.shape
    c, n = shape
    device = valid.device
    noise_tokens = torch.rand(b, c, n, device=device, generator=generator)
    noise_channels = torch.rand(b, c, 1, device=device, generator=generator).expand(b, c, n)
    noise_time = torch.rand(b, 1, n, device=device, generator=generator).expand(b, c, n)
    choice = {"random": 0, "channels": 1, "time": 2}
    if strategy == "mixed":
        pick = torch.randint(0, 3, (b, 1, 1), device=device, generator=generator)
    else:
        pick = torch.full((b, 1, 1), choice[strategy], device=device)
    # ties inside a whole-channel/whole-patch group are broken by the token noise
    noise = torch.where(pick == 0, noise_tokens,
                        torch.where(pick == 1, noise_channels, noise_time)) + 1e-3 * noise_tokens
    noise = noise.reshape(b, length).masked_fill(~valid, float("inf"))
    order = noise.argsort(dim=1)
    n_keep = ((1.0 - ratio) * valid.sum(dim=1)).floor().clamp(min=1).long()  # [B]
    k = int(n_keep.max())
    visible_idx = order[:, :k]
    visible_mask = torch.arange(k, device=device)[None, :] < n_keep[:, None]
    return visible_idx, visible_mask


def target_len(config: ModelConfig) -> int:
    """Values the head predicts per token."""
    if config.target == "latent":
        return config.dim
    return config.patch_len if config.target == "signal" else 2 * (config.patch_len // 2 + 1)


def targets(patches: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """What the head learns to predict from patches ``[..., P]``: the samples (optionally each
    patch standardised), or the Fourier amplitude (z-scored within the patch) and phase / pi
    side by side. Padding patches (all zero) stay zero."""
    eps = 1e-6
    if config.target == "fourier":
        # half precision has no FFT of any length: compute it in float32
        spectrum = torch.fft.rfft(patches.float() if patches.element_size() < 4 else patches, dim=-1)
        amp = spectrum.abs()
        amp = (amp - amp.mean(-1, keepdim=True)) / (amp.std(-1, keepdim=True) + eps)
        return torch.cat([amp, spectrum.angle() / math.pi], dim=-1).to(patches.dtype)
    if config.target_norm == "patch":
        mean = patches.mean(-1, keepdim=True)
        return (patches - mean) / (patches.var(-1, keepdim=True) + eps).sqrt()
    return patches


def spatial_interpolation(patches: torch.Tensor, positions: torch.Tensor, kinds: torch.Tensor,
                          visible: torch.Tensor, width_m: torch.Tensor) -> torch.Tensor:
    """Each token's patch as a Gaussian-weighted mean of the visible patches of the same
    time from sensors of the same kind: ``[B, C, N, P]`` (zero where none is visible).

    ``patches`` ``[B, C, N, P]``, ``positions`` ``[B, C, 3]`` m, ``kinds`` ``[B, C]``,
    ``visible`` ``[B, C, N]``, ``width_m`` the kernel width. Memory: ``B * C^2 * N``.
    """
    d2 = torch.cdist(positions, positions).square()  # [B, C, C]
    allowed = (kinds[:, :, None] == kinds[:, None, :])[..., None] & visible[:, None, :, :]  # [B, C, C', N]
    logits = (-d2 / (2 * width_m ** 2))[..., None].masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(logits, dim=2).nan_to_num(0.0)  # a row with nothing visible -> 0
    return torch.einsum("bcdn,bdnp->bcnp", weights, patches)


class MaskedAutoencoder(NeuroFMEncoder):
    """The pretraining model: :class:`NeuroFMEncoder` plus masking, the light MAE decoder, the
    loss and the teacher. ``config``: the encoder's architecture, the head and the recipe."""

    def __init__(self, config: ModelConfig):
        super().__init__(config, config.attention, config.activation_checkpointing, init=False)
        self.config = cfg = config
        self.decoder_in = nn.Linear(cfg.dim, cfg.decoder_dim)
        self.decoder_sensor = SensorEmbedding(cfg.decoder_dim)
        self.decoder_time = TimeEmbedding(cfg.decoder_dim)
        self.decoder_modality = nn.Embedding(len(MODALITY_IDS), cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(cfg.decoder_dim))
        self.decoder = Encoder(cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.mlp_ratio,
                               cfg.attention, cfg.dropout)
        self.head = nn.Linear(cfg.decoder_dim, target_len(cfg))
        if cfg.prior_on:  # prediction = head + gate * interpolation from visible neighbours
            self.interp_gate = nn.Linear(cfg.decoder_dim, 1)
            # kernel width, m; one element, not a 0-d tensor, which DeepSpeed's ZeRO cannot flatten
            self.interp_log_width = nn.Parameter(torch.tensor([math.log(0.04)]))
        self.apply(init_weights)  # once, encoder and head in registration order
        # target=latent: the teacher, a moving average of the student's embeddings and encoder
        self.teacher = Teacher(self) if cfg.target == "latent" else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before the kernel width became one element held it as a 0-d tensor
        key = prefix + "interp_log_width"
        if key in state_dict and state_dict[key].dim() == 0:
            state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ tokens

    def tokenize(self, batch: Batch) -> Tokens:
        """Patch a batch, embed every token, and give each the decoder's query (its sensor,
        time and modality)."""
        tokens = super().tokenize(batch)
        query = (self.decoder_sensor(batch.positions, batch.orientations, batch.kinds)[:, :, None]
                 + self.decoder_time(tokens.seconds)[:, None]
                 + self.decoder_modality(batch.modality)[:, None, None])  # [B, C, N, Dd]
        tokens.query = query.reshape(tokens.embedded.shape[0], tokens.valid.shape[1], -1)
        return tokens

    # ------------------------------------------------------------------ passes

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Mask, encode, decode; return ``loss`` and the pieces for metrics."""
        cfg = self.config
        tokens = self.tokenize(batch)
        visible_idx, visible_mask = mask_tokens(tokens.valid, tokens.shape, cfg.mask_ratio,
                                                cfg.mask_strategy, generator)
        visible = torch.zeros_like(tokens.valid).scatter(1, visible_idx, visible_mask)  # [B, L]
        hidden = tokens.valid & ~visible  # the tokens to reconstruct
        b, length, width = tokens.query.shape
        latent, latent_mask = self.encode(tokens, visible_idx, visible_mask)
        if self.compressor is None:  # latent [B, K, D], K = visible count
            # encoded visible tokens back in place, the mask token everywhere else
            src = torch.where(latent_mask[..., None], self.decoder_in(latent), self.mask_token)
            full = self.mask_token.expand(b, length, width).scatter(
                1, visible_idx[..., None].expand(-1, -1, width), src)  # [B, L, Dd]
            decoded = self.decoder(full + tokens.query, tokens.valid)  # [B, L, Dd]
        else:  # latent [B, N * latents, D]
            decoded = self.decode(self.decoder_in(latent), latent_mask, tokens)
        pred = self.head(decoded)  # [B, L, P]
        if cfg.prior_on:
            c, n = tokens.shape
            interp = spatial_interpolation(tokens.patches.view(b, c, n, -1), batch.positions, batch.kinds,
                                           visible.view(b, c, n), self.interp_log_width.exp())
            pred = pred + torch.sigmoid(self.interp_gate(decoded)) * interp.reshape(b, length, -1)
        target = self.teacher(batch, tokens) if self.teacher is not None else targets(tokens.patches, cfg)
        err = ((pred - target) ** 2).mean(dim=-1)  # [B, L]
        loss = (err * hidden).sum() / hidden.sum().clamp(min=1)
        if cfg.spectral_weight > 0:
            amp = lambda x: torch.fft.rfft(x, dim=-1).abs()  # noqa: E731
            spec = ((amp(pred) - amp(tokens.patches)) ** 2).mean(dim=-1)
            loss = loss + cfg.spectral_weight * (spec * hidden).sum() / hidden.sum().clamp(min=1)
        return {"loss": loss, "pred": pred, "target": target, "hidden": hidden,
                "visible_idx": visible_idx, "visible_mask": visible_mask}

    def decode(self, context: torch.Tensor, context_mask: torch.Tensor, tokens: Tokens) -> torch.Tensor:
        """The light decoder over ``context`` ``[B, K, Dd]`` (``context_mask`` ``[B, K]``, True =
        real) followed by a query at every token place (the mask token + that token's sensor,
        time and modality): the decoded queries ``[B, L, Dd]``. Pretraining's context is the
        compressed latents; the encoding head's is the stimulus (:meth:`decoder_place`).

        With ``spatial_latents`` the queries read the context only (:meth:`Encoder.read`), so
        the step grows linearly with the sensor count; without, context and queries attend to
        each other."""
        b, length, width = tokens.query.shape
        queries = self.mask_token.expand(b, length, width) + tokens.query
        if self.compressor is not None:
            return self.decoder.read(context, queries, context_mask)
        x = torch.cat([context, queries], dim=1)
        return self.decoder(x, torch.cat([context_mask, tokens.valid], dim=1))[:, -length:]

    def decoder_place(self, seconds: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """Where a decoder context token sits: time ``seconds`` ``[B, N]`` and ``modality``
        ``[B]`` -> ``[B, N, Dd]`` (add it to context tokens given to :meth:`decode`)."""
        return self.decoder_time(seconds) + self.decoder_modality(modality)[:, None]

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The decoder's own parameters (what an encoding head finetunes)."""
        return [p for name, p in self.named_parameters() if name.split(".")[0] in DECODER_PARTS]

    def encoder_only(self) -> NeuroFMEncoder:
        """A :class:`NeuroFMEncoder` with this model's encoder weights (a copy): what an export
        holds. Built as this model was (the same runtime switches), in the same mode, without
        drawing from the global random generator (a copy changes no later draw)."""
        with torch.random.fork_rng(devices=[]):
            encoder = NeuroFMEncoder(self.config.encoder_config(), self.config.attention,
                                     self.config.activation_checkpointing, init=False)
        encoder.load_state_dict(encoder_state(self.state_dict()))
        return encoder.to(next(self.parameters()).device).train(self.training)


class Teacher(nn.Module):
    """The targets of ``target=latent``: a copy of the student's token embeddings and encoder,
    never trained by gradients, moved towards the student after each optimizer step
    (:meth:`update`, an exponential moving average with ``ema_decay``). It encodes every
    token (nothing masked); a target is the token's output, layer-normalised."""

    PARTS = ("patch_embed", "sensor_embed", "time_embed", "modality_embed", "encoder")

    def __init__(self, student: MaskedAutoencoder):
        super().__init__()
        for name in self.PARTS:
            setattr(self, name, copy.deepcopy(getattr(student, name)))
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, batch: Batch, tokens: Tokens) -> torch.Tensor:
        b, (c, n) = tokens.patches.shape[0], tokens.shape
        sensor = self.sensor_embed(batch.positions, batch.orientations, batch.kinds)  # [B, C, D]
        embedded = (self.patch_embed(tokens.patches.view(b, c, n, -1)) + sensor[:, :, None]
                    + self.time_embed(tokens.seconds)[:, None] + self.modality_embed(batch.modality)[:, None, None])
        out = self.encoder(embedded.reshape(b, c * n, -1), tokens.valid)  # [B, L, D]
        return nn.functional.layer_norm(out, out.shape[-1:])

    @torch.no_grad()
    def update(self, student: MaskedAutoencoder, decay: float) -> None:
        """teacher <- decay * teacher + (1 - decay) * student, part by part."""
        for name in self.PARTS:
            mine, theirs = getattr(self, name).parameters(), getattr(student, name).parameters()
            for t, s in zip(mine, theirs, strict=True):
                t.lerp_(s.detach(), 1.0 - decay)
