"""Every default of every command, once: typed dataclasses registered as Hydra structured configs.

Each layer owns its options beside its code (``ModelConfig`` in :mod:`neurofm.models.config`,
``MeegOptions`` in :mod:`neurofm.tokenizers.options`, ``PrepareOptions`` in
:mod:`neurofm.datasets.options`, the pretraining and finetuning runs in
:mod:`neurofm.pretrain.config` and :mod:`neurofm.finetune.config`); this module only composes
them into the commands' configs and registers those with Hydra. Nothing in the library imports
it: the commands (:mod:`neurofm.commands`) do.

Each command's YAML (``prepare.yaml``, ``pretrain.yaml`` ...) starts its defaults list with its
schema below, so a key Hydra does not know, or a value of the wrong type, is refused before
anything runs; the group YAMLs (``trainer/ddp.yaml``, ``data/demo.yaml``) hold only what differs from
these defaults; the model sizes (``model=small``) are :data:`~neurofm.models.config.SIZES`,
registered in the ConfigStore. Commands receive these objects, typed
(:func:`typed`), never a dict.

=============  ==========================================================
command        config
=============  ==========================================================
``prepare``    :class:`PrepareConfig` (:class:`~neurofm.datasets.options.PrepareOptions`;
               EEG/MEG cleaning: :class:`~neurofm.tokenizers.options.MeegOptions`)
``pretrain``   :class:`~neurofm.pretrain.config.PretrainConfig` (``model``: :class:`~neurofm.models.config.ModelConfig`,
               ``data``: :class:`~neurofm.pretrain.config.DataConfig`, ``trainer``:
               :class:`~neurofm.pretrain.config.TrainerConfig`, ``optim``:
               :class:`~neurofm.pretrain.config.OptimConfig`)
``finetune``   :class:`~neurofm.finetune.config.FinetuneConfig`; ``task``: a
               :class:`~neurofm.finetune.config.DecodingTask`, ``EncodingTask`` or ``DisorderTask``
``embed``      :class:`EmbedConfig`
``export``     :class:`ExportConfig`
``verify``     :class:`VerifyConfig`
=============  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, OmegaConf

from neurofm.datasets.options import PrepareOptions
from neurofm.finetune.config import (  # noqa: F401  (composed here; importable from here)
    MODES,
    READOUTS,
    DecodingTask,
    DisorderTask,
    EncodingTask,
    FinetuneConfig,
    FinetuneMode,
)
from neurofm.models.config import SIZES
from neurofm.pretrain.config import (  # noqa: F401
    CheckpointConfig,
    DataConfig,
    OptimConfig,
    PretrainConfig,
    TrainerConfig,
)

# --------------------------------------------------------------------------- prepare


@dataclass
class PrepareConfig(PrepareOptions):
    """``neurofm prepare``: the files, where the shards go, and :class:`PrepareOptions`."""

    inputs: Any = MISSING   # BIDS roots, directories, glob patterns or files (a list or one)
    out: str = MISSING      # output directory: shard-*.tar, manifest.json, failures.jsonl
    workers: int = 1        # parallel tokenizer processes
    part: str | None = None  # I/N: this node's 1/N of the inputs (unset: SLURM array task, else all)
    merge: bool = False     # `neurofm prepare merge out=DIR`: check the parts, write the manifest


PrepareConfig.__doc__ += "\n\n    ``inputs`` (files, globs, BIDS roots), ``out`` (directory), ``workers``; and\n" + (
    PrepareOptions.__doc__.split("\n", 1)[1])


# --------------------------------------------------------------------------- embed, export, verify


@dataclass
class EmbedConfig:
    """``neurofm embed``. Tokenizer options go in ``tokenizer`` (``+tokenizer.montage=...``)."""

    ckpt: str = MISSING
    input: str = MISSING           # a recording, a 4-D NIfTI (with atlas=), a shard or shard dir
    atlas: str | None = None
    out: str = "embeddings.npy"    # .npy (+ <name>_times.npy) or .parquet (needs pyarrow)
    window_s: float | None = None  # default: 10 s EEG/MEG, 120 s fMRI
    batch_size: int = 32
    device: str = "auto"
    tokenizer: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportConfig:
    """``neurofm export``."""

    ckpt: str = MISSING            # Lightning .ckpt or DeepSpeed sharded checkpoint dir
    out: str = MISSING             # output directory: config.json + model.safetensors


@dataclass
class VerifyConfig:
    """``neurofm verify``."""

    shards: str = MISSING          # a directory written by neurofm prepare
    decode: bool = True            # also read every sample (files present, finite signal, counts)


SCHEMAS: dict[str, type] = {"prepare": PrepareConfig, "pretrain": PretrainConfig,
                            "finetune": FinetuneConfig, "embed": EmbedConfig,
                            "export": ExportConfig, "verify": VerifyConfig}
TASKS: dict[str, type] = {"decoding": DecodingTask, "encoding": EncodingTask, "disorder": DisorderTask}


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (``<command>_schema``; ``task/<name>``)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for command, schema in SCHEMAS.items():
        store.store(name=f"{command}_schema", node=schema)
    for name, task in TASKS.items():
        store.store(group="task", name=name, node=task)
    for size in SIZES:  # model=tiny|small|base|large: the sizes the library registers
        store.store(group="model", name=size, node=dict(SIZES[size]))  # the differences only


def typed(cfg: Any) -> Any:
    """A composed Hydra config -> its dataclass, with every ``__post_init__`` check run."""
    return OmegaConf.to_object(cfg)
