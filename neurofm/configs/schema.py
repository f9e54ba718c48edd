"""Every default of every command, once: typed dataclasses registered as Hydra structured configs.

Each command's YAML (``prepare.yaml``, ``pretrain.yaml`` ...) starts its defaults list with its
schema below, so a key Hydra does not know, or a value of the wrong type, is refused before
anything runs; the group YAMLs (``model/small.yaml``, ``trainer/ddp.yaml``, ``data/demo.yaml``)
hold only what differs from these defaults. Commands receive these objects, typed
(:func:`typed`), never a dict.

=============  ==========================================================
command        config
=============  ==========================================================
``prepare``    :class:`PrepareConfig` (:class:`~neurofm.datasets.shards.PrepareOptions`;
               EEG/MEG cleaning: :class:`~neurofm.tokenizers.options.MeegOptions`)
``pretrain``   :class:`PretrainConfig` (``model``: :class:`~neurofm.models.config.ModelConfig`,
               ``data``: :class:`DataConfig`, ``trainer``: :class:`TrainerConfig`,
               ``optim``: :class:`OptimConfig`)
``finetune``   :class:`FinetuneConfig`; ``task``: :class:`DecodingTask`,
               :class:`EncodingTask` or :class:`DisorderTask`
``embed``      :class:`EmbedConfig`
``export``     :class:`ExportConfig`
``verify``     :class:`VerifyConfig`
=============  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from omegaconf import MISSING, OmegaConf

from neurofm.datasets.shards import PrepareOptions
from neurofm.errors import ConfigError
from neurofm.models.config import ModelConfig
from neurofm.options import check_option

MODES = ("linear_probe", "finetune", "lora", "scratch")
READOUTS = ("mean", "sensors", "connectivity")   # linear-probe features, neurofm.finetune.tasks.window_features


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


# --------------------------------------------------------------------------- pretrain


@dataclass
class OptimConfig:
    """AdamW (decay on matrices only) with linear warmup, then cosine to ``min_lr_ratio * lr``."""

    lr: float = 1.0e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    min_lr_ratio: float = 0.01


@dataclass
class DataConfig:
    """Where pretraining windows come from: ``kind=shards`` (a ``neurofm prepare`` directory)
    or ``kind=demo`` (the offline synthetic corpus, built under ``root`` on first use)."""

    kind: str = "shards"
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
        check_option("data.kind", self.kind, ("shards", "demo"))


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
    """``neurofm pretrain``."""

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


# --------------------------------------------------------------------------- finetune


@dataclass
class FinetuneMode:
    """How the checkpoint is used: ``linear_probe`` (frozen, logistic regression on pooled
    embeddings), ``finetune`` (all weights, layer-wise LR decay), ``lora`` (low-rank adapters;
    the ``lora`` extra) or ``scratch`` (the same architecture, random weights)."""

    mode: str = "linear_probe"
    epochs: int = 15
    lr: float = 1.0e-3
    layer_decay: float = 0.75     # finetune: LR of block i = lr * layer_decay^(depth - i)
    lora_rank: int = 8
    baseline: bool = True         # also run the task's classical baselines on the same splits
    readout: str = "mean"         # what the probe or the trained head reads: mean | sensors | connectivity

    def __post_init__(self) -> None:
        check_option("task.mode", self.mode, MODES)
        check_option("task.readout", self.readout, READOUTS)


@dataclass
class DecodingTask(FinetuneMode):
    """Event-level decoding from event-locked windows; baselines CSP + LDA and ERP shrinkage LDA."""

    name: str = "decoding"
    event_id: list[str] | None = None   # labels to keep (annotation descriptions / stim codes)
    tmin_s: float = -0.2
    tmax_s: float = 0.8
    protocol: str = "kfold"             # kfold (by event) | kfold_subject | loso | few_shot
    folds: int = 5
    shots: int = 10                     # few_shot: training events per class
    repeats: int = 5                    # few_shot: draws
    subject_pattern: str | None = None  # regex finding the subject in a file name
    test_subjects: list[str] | None = None  # loso: run only the folds testing these; null: all

    def __post_init__(self) -> None:
        super().__post_init__()
        check_option("task.protocol", self.protocol, ("kfold", "kfold_subject", "loso", "few_shot"))
        if self.test_subjects is not None and self.protocol != "loso":
            raise ConfigError(f"task.test_subjects picks leave-one-subject-out folds; it needs "
                              f"task.protocol=loso, not {self.protocol}")


@dataclass
class DisorderTask(FinetuneMode):
    """Subject-level classes (e.g. diagnosis) from a phenotype table; baseline FC + logistic
    regression."""

    name: str = "disorder"
    label: str = "diagnosis"            # phenotype column holding each subject's class
    phenotype: str | None = None        # participants.tsv / CSV; null: <BIDS root>/participants.tsv
    window_s: float = 10.0
    atlas: str | None = None            # labels atlas for BOLD inputs
    roi_coords: str | None = None       # ROI tables: their atlas, or an x,y,z table
    roi_tr_s: Any = None                # ROI tables: TR in s, or per site {Pitt: 1.5, KKI: 2.5}
    subject_pattern: str | None = None
    protocol: str = "kfold_subject"     # kfold_subject (stratified) | loso | logo
    group_by: str | None = None         # logo: phenotype column (SITE_ID) or file entity (site)
    folds: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_option("task.protocol", self.protocol, ("kfold_subject", "loso", "logo"))


@dataclass
class EncodingTask(FinetuneMode):
    """Stimulus features -> every sensor/parcel (one recording); baseline the ridge TRF."""

    name: str = "encoding"
    features: str | None = None         # .npy/.csv/.tsv [n_times, F]; null: annotation impulse trains
    events: list[str] | None = None     # annotation labels used when features is null; null: all
    features_sfreq: float | None = None  # rate of the features; null: the recording's
    lags_s: list[float] = field(default_factory=lambda: [0.0, 0.5])
    window_s: float = 4.0               # a whole number of patches (model.patch_s)
    protocol: str = "kfold_time"        # kfold_time (contiguous blocks) | heldout_time
    folds: int = 5
    test_fraction: float = 0.2
    components: int = 4                 # rank of the TRF: response components mixed per sensor
    epochs: int = 60
    lr: float = 1.0e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        check_option("task.protocol", self.protocol, ("kfold_time", "heldout_time"))


@dataclass
class FinetuneConfig:
    """``neurofm finetune``."""

    ckpt: str = MISSING            # exported dir, Lightning .ckpt or DeepSpeed dir
    inputs: Any = MISSING          # recordings (decoding), one recording (encoding), cohort (disorder)
    task: Any = MISSING            # DecodingTask | EncodingTask | DisorderTask (task=<name>)
    tokenizer: dict[str, Any] = field(default_factory=dict)   # +tokenizer.<MeegOptions field>=...
    seed: int = 0
    run_dir: str = "runs/finetune"


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


def typed(cfg: Any) -> Any:
    """A composed Hydra config -> its dataclass, with every ``__post_init__`` check run."""
    return OmegaConf.to_object(cfg)


def model_config(size: str = "tiny", **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of ``configs/model/<size>.yaml`` (its differences from the
    defaults applied), with ``overrides``."""
    path = resources.files("neurofm.configs") / "model" / f"{size}.yaml"
    if not path.is_file():
        sizes = sorted(p.name.removesuffix(".yaml") for p in path.parent.iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"no model size {size!r}; choose one of {sizes}")
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.create(path.read_text()),
                             overrides)
    return OmegaConf.to_object(merged)
