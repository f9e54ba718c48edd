"""The model's configuration: the one place where each architecture default is written.

Two units, plain data with no torch import:

- :class:`EncoderConfig`, the architecture of :class:`~neurofm.models.backbone.NeuroFMEncoder`
  (what an export's ``config.json`` holds beside the input contract);
- :class:`ModelConfig`, pretraining's ``model`` group: the encoder's fields, the MAE head
  (decoder sizes) and the recipe (masking, target), plus runtime switches (attention backend,
  activation checkpointing, ``torch.compile``) that are never saved with weights.

The named sizes (:data:`SIZES`) are registered here, in the library; Hydra's ``model=<size>``
reads them from its ConfigStore (``neurofm.configs.schema.register``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from neurofm.errors import ConfigError
from neurofm.options import check_option

MASK_STRATEGIES = ("random", "channels", "time", "mixed")
TARGETS = ("signal", "fourier", "latent")
TARGET_NORMS = ("none", "patch")
STEMS = ("linear", "conv", "spectral")

# the fields of ModelConfig that are neither the encoder's nor the recipe's: never saved with weights
RUNTIME_FIELDS = ("attention", "activation_checkpointing", "compile")

# the named sizes: what differs from ModelConfig's defaults (the ``tiny`` model)
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {},  # 0.205 M parameters: tests and the offline demo
    "small": {"dim": 512, "depth": 8, "heads": 8, "decoder_dim": 256, "decoder_depth": 2, "decoder_heads": 8},
    "base": {"dim": 768, "depth": 12, "heads": 12, "decoder_dim": 384, "decoder_depth": 4, "decoder_heads": 8},
    "large": {"dim": 1024, "depth": 24, "heads": 16, "decoder_dim": 512, "decoder_depth": 4, "decoder_heads": 8},
}


def _default_patch_s() -> dict[str, float]:
    return {"eeg": 1.0, "meg": 1.0, "ieeg": 1.0, "fmri": 6.0}


@dataclass
class EncoderConfig:
    """The architecture of :class:`~neurofm.models.backbone.NeuroFMEncoder`: the token
    embeddings and the transformer. Defaults: the ``tiny`` encoder.

    Attributes
    ----------
    dim, depth, heads, mlp_ratio : encoder width, blocks, attention heads, MLP expansion
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
    dropout : float
    """

    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    patch_s: dict[str, float] = field(default_factory=_default_patch_s)
    patch_len: int = 200
    stem: str = "linear"
    spatial_latents: int | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_option("model.stem", self.stem, STEMS)
        if self.spatial_latents is not None and self.spatial_latents < 1:
            raise ConfigError(f"spatial_latents must be a positive count or null, got {self.spatial_latents}")
        if self.dim % self.heads:
            raise ConfigError(f"model.dim ({self.dim}) must be a multiple of model.heads ({self.heads})")
        self.patch_s = {str(k): float(v) for k, v in dict(self.patch_s).items()}

    @classmethod
    def named(cls, size: str, **overrides: Any) -> EncoderConfig:
        """The encoder of the named size ``size`` (:data:`SIZES`), with ``overrides``."""
        return ModelConfig.named(size, **overrides).encoder_config()

    def encoder_config(self) -> EncoderConfig:
        """The encoder's architecture alone (of a :class:`ModelConfig`: without the head, the
        recipe and the runtime): what an export saves."""
        return EncoderConfig(**{f.name: getattr(self, f.name) for f in fields(EncoderConfig)})


@dataclass
class RecipeConfig:
    """The masked-autoencoding head and its recipe: pretraining only (an export's model card and
    ``config.json``'s ``pretraining`` state it; the encoder does not depend on it).

    Attributes
    ----------
    decoder_dim, decoder_depth, decoder_heads : the light MAE decoder
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
    """

    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4
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

    def __post_init__(self) -> None:
        check_option("model.mask_strategy", self.mask_strategy, MASK_STRATEGIES)
        check_option("model.target", self.target, TARGETS)
        check_option("model.target_norm", self.target_norm, TARGET_NORMS)
        if self.target != "signal" and (self.target_norm != "none" or self.spectral_weight
                                        or self.interpolation_prior):  # asked for, not the default
            raise ConfigError(f"model.target={self.target} does not predict the signal: "
                              "target_norm, spectral_weight and interpolation_prior act on the "
                              "signal and need model.target=signal")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.target_norm != "none" and self.interpolation_prior:  # asked for
            raise ConfigError("model.interpolation_prior adds neighbours' signal to the prediction "
                              "and needs model.target_norm=none")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")

    @property
    def prior_on(self) -> bool:
        """Whether the decoder adds the interpolation prior: ``interpolation_prior``, or where
        that is None (the default) wherever it applies (``target=signal``, ``target_norm=none``)."""
        return prior_on(asdict(self))

    def recipe_config(self) -> RecipeConfig:
        """The head and recipe alone (of a :class:`ModelConfig`: without the encoder and the runtime)."""
        return RecipeConfig(**{f.name: getattr(self, f.name) for f in fields(RecipeConfig)})


@dataclass
class ModelConfig(RecipeConfig, EncoderConfig):  # fields: the encoder's, then the recipe's
    """Pretraining's model, the ``model`` group of ``neurofm pretrain`` (flat keys:
    ``model.dim``, ``model.mask_ratio``): an :class:`EncoderConfig` (the architecture, what an
    export holds), a :class:`RecipeConfig` (the MAE head and its recipe) and runtime switches
    that are never saved with weights. The defaults are the ``tiny`` model (tests, the demo);
    :meth:`named` gives the other sizes; :meth:`encoder_config` and :meth:`recipe_config` split it.

    Attributes
    ----------
    dim, depth, heads, mlp_ratio, patch_s, patch_len, stem, spatial_latents, dropout
        The encoder's architecture: see :class:`EncoderConfig`.
    decoder_dim, decoder_depth, decoder_heads, mask_ratio, mask_strategy, target, ema_decay, target_norm, spectral_weight, interpolation_prior
        The head and its recipe: see :class:`RecipeConfig`.
    attention : str
        ``sdpa | xformers | math`` (checked where the encoder is built).
    activation_checkpointing, compile : bool
    """

    attention: str = "sdpa"
    activation_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        EncoderConfig.__post_init__(self)
        RecipeConfig.__post_init__(self)
        if self.target == "latent" and self.spatial_latents is not None:
            raise ConfigError("model.target=latent predicts each token's representation, which "
                              "spatial latents pool away: use model.spatial_latents=null")

    @classmethod
    def named(cls, size: str, **overrides: Any) -> ModelConfig:
        """The model of the named size ``size`` (``tiny``, ``small``, ``base``, ``large``:
        :data:`SIZES`), with ``overrides`` (any field)."""
        if size not in SIZES:
            raise ConfigError(f"no model size {size!r}; choose one of {sorted(SIZES)}")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown model keys {unknown}; see neurofm.models.config.ModelConfig")
        return cls(**{**SIZES[size], **overrides})

    def recipe(self) -> dict[str, Any]:
        """The head and the recipe as plain data (:meth:`recipe_config`): what the card states."""
        return asdict(self.recipe_config())

    @classmethod
    def from_encoder(cls, encoder: EncoderConfig, recipe: RecipeConfig | None = None, **runtime: Any) -> ModelConfig:
        """A pretraining model of ``encoder`` and ``recipe`` (default: the default head and recipe)."""
        return cls(**asdict(encoder.encoder_config()), **asdict((recipe or RecipeConfig()).recipe_config()), **runtime)


def prior_on(values: dict[str, Any]) -> bool:
    """:attr:`ModelConfig.prior_on` of a saved model config's dict (a checkpoint's)."""
    if values.get("interpolation_prior") is not None:
        return bool(values["interpolation_prior"])
    return values.get("target", "signal") == "signal" and values.get("target_norm", "none") == "none"
