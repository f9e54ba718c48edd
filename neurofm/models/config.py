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
    spatial_latents : int | None
        K latent tokens per time patch (BrainOmni-style cross-attention); None: off.
    mask_ratio : float
        Fraction of tokens hidden from the encoder, in (0, 1).
    mask_strategy : str
        ``random | channels | time | mixed``.
    spectral_weight : float
        Weight of the spectral-amplitude loss term.
    interpolation_prior : bool
        Add a gated mean of visible neighbouring sensors to the prediction.
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
    spatial_latents: int | None = None
    mask_ratio: float = 0.75
    mask_strategy: str = "mixed"
    spectral_weight: float = 0.0
    interpolation_prior: bool = False
    attention: str = "sdpa"
    dropout: float = 0.0
    activation_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        check_option("model.mask_strategy", self.mask_strategy, MASK_STRATEGIES)
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.spatial_latents is not None and self.spatial_latents < 1:
            raise ConfigError(f"spatial_latents must be a positive count or null, got {self.spatial_latents}")
        self.patch_s = {str(k): float(v) for k, v in dict(self.patch_s).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """From a checkpoint's or ``config.json``'s dict."""
        return cls(**values)
