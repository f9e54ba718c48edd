"""What a pretraining run is: the optimizer, the data, the Lightning trainer, checkpoints,
and the run around them. Plain dataclasses (Hydra's ``neurofm pretrain`` composes them in
:mod:`neurofm.configs.schema`; Python callers build them directly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from neurofm.models.config import ModelConfig
from neurofm.options import check_option


@dataclass
class OptimConfig:
    """AdamW (decay on matrices only) with linear warmup, then cosine to ``min_lr_ratio * lr``."""

    lr: float = 1.0e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    min_lr_ratio: float = 0.01


@dataclass
class DataConfig:
    """Where pretraining windows come from: ``source=shards`` (a ``neurofm prepare`` directory)
    or ``source=demo`` (the offline synthetic corpus, built under ``root`` on first use)."""

    source: str = "shards"
    shards: str | None = None
    root: str = "runs/demo"
    batch_size: int = 32
    num_workers: int = 4
    shuffle_buffer: int = 2000
    resampled: bool = True           # infinite per-rank streams; false: each sample once per epoch
    max_tokens: int | None = 4096    # random crop of each window to this many tokens
    # e.g. {eeg: 0.5, meg: 0.3, fmri: 0.2}; empty: one stream over all shards (an empty dict,
    # not None, so that data.modality_weights={...} on the command line merges into it)
    modality_weights: dict[str, float] | None = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_option("data.source", self.source, ("shards", "demo"))


@dataclass
class TrainerConfig:
    """Arguments of :class:`lightning.pytorch.Trainer` (the defaults: one CPU process).

    ``strategy`` is a Lightning name (``auto``, ``ddp``) or a ``_target_`` mapping
    (DeepSpeed); ``extra`` passes any other Trainer argument (``+trainer.extra.x=...``).
    """

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: str = "32-true"
    max_steps: int = 600
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointConfig:
    every_n_steps: int = 100


@dataclass
class PretrainConfig:
    """``neurofm pretrain``: the model, data, trainer, optimizer and checkpoint options and the run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 0
    run_dir: str = "runs/pretrain"
    resume: str | None = "auto"   # auto: <run_dir>/checkpoints/last.ckpt if present; null; or a path
    val_every_n_steps: int = 100
    val_batches: int = 20
    log_sample_keys: bool = False  # write the sample keys each rank trains on (multi-node checks)
