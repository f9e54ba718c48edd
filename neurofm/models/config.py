"""The model's configuration: the one place where each architecture default is written.

Plain data with no torch import, so that Hydra (``configs/model/*.yaml`` hold only what
differs from these defaults), the checkpoint writer and readers share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from neurofm.errors import ConfigError
from neurofm.options import check_option

MASK_STRATEGIES = ("random", "channels", "time", "mixed")
TARGETS = ("signal", "fourier", "latent")
TARGET_NORMS = ("none", "patch")
STEMS = ("linear", "conv", "spectral")


@dataclass
class ModelConfig:
    """Architecture and masking. The defaults are the ``tiny`` model (tests, the demo).

    Attributes
    ----------
    dim, depth, heads, mlp_ratio : encoder width, blocks, attention heads, MLP expansion
    decoder_dim, decoder_depth, decoder_heads : the light MAE decoder
    patch_s : dict
        Token length per modality, s (a patch is a reshape inside the model: shards do
        not depend on it).
    patch_len : int
        Samples per patch after resampling (1 s at 200 Hz).
    stem : str
        What turns a patch into a token: ``linear`` (a projection of the samples), ``conv``
        (learned temporal filters, rectified and averaged: a filter bank) or ``spectral``
        (log power in 16 log-spaced bands and the mean, projected).
    spatial_latents : int | None
        K latent tokens per time patch (BrainOmni-style cross-attention); None: off.
    mask_ratio : float
        Fraction of tokens hidden from the encoder, in (0, 1).
    mask_strategy : str
        ``random | channels | time | mixed``.
    target : str
        What a masked token's head predicts: ``signal`` (the patch's samples), ``fourier``
        (LaBraM's targets: the patch's Fourier amplitude, z-scored within the patch, and
        phase / pi) or ``latent`` (data2vec / Brain-JEPA style: the token's representation
        by a teacher, an exponential moving average of the encoder that sees every token,
        layer-normalised).
    ema_decay : float
        The teacher's moving-average decay per step (``target=latent``).
    target_norm : str
        ``none`` or ``patch``: each target patch minus its mean, over its standard deviation
        (the MAE paper's normalised-pixel loss), for ``target=signal``.
    spectral_weight : float
        Weight of the spectral-amplitude loss term.
    interpolation_prior : bool | None
        Add a gated mean of visible neighbouring sensors to the prediction. None (default):
        on wherever it applies (``target=signal`` with ``target_norm=none``).
    attention : str
        ``sdpa | xformers | math`` (checked where the encoder is built).
    dropout : float
    activation_checkpointing, compile : bool
    """

    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4
    patch_s: dict[str, float] = field(
        default_factory=lambda: {"eeg": 1.0, "meg": 1.0, "ieeg": 1.0, "fmri": 6.0})
    patch_len: int = 200
    stem: str = "linear"
    spatial_latents: int | None = None
    # three quarters hidden, each sample by one of random tokens / whole sensors / whole patches,
    # with the interpolation prior below: the recipe under which the masked-token R² rises on
    # EEG (the demo) and on fMRI parcels (ABIDE); time masking alone leaves fMRI at R² 0.00
    mask_ratio: float = 0.75
    mask_strategy: str = "mixed"
    target: str = "signal"
    ema_decay: float = 0.99
    target_norm: str = "none"
    spectral_weight: float = 0.0
    interpolation_prior: bool | None = None
    attention: str = "sdpa"
    dropout: float = 0.0
    activation_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.interpolation_prior is None:
            self.interpolation_prior = self.target == "signal" and self.target_norm == "none"
        check_option("model.mask_strategy", self.mask_strategy, MASK_STRATEGIES)
        check_option("model.target", self.target, TARGETS)
        check_option("model.target_norm", self.target_norm, TARGET_NORMS)
        check_option("model.stem", self.stem, STEMS)
        if self.target != "signal" and (self.target_norm != "none" or self.spectral_weight
                                        or self.interpolation_prior):
            raise ConfigError(f"model.target={self.target} does not predict the signal: "
                              "target_norm, spectral_weight and interpolation_prior act on the "
                              "signal and need model.target=signal")
        if self.target == "latent" and self.spatial_latents is not None:
            raise ConfigError("model.target=latent predicts each token's representation, which "
                              "spatial latents pool away: use model.spatial_latents=null")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.target_norm != "none" and self.interpolation_prior:
            raise ConfigError("model.interpolation_prior adds neighbours' signal to the prediction "
                              "and needs model.target_norm=none")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.spatial_latents is not None and self.spatial_latents < 1:
            raise ConfigError(f"spatial_latents must be a positive count or null, got {self.spatial_latents}")
        self.patch_s = {str(k): float(v) for k, v in dict(self.patch_s).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """From a checkpoint's or ``config.json``'s dict."""
        return cls(**values)
