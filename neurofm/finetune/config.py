"""What a finetuning run is: how the checkpoint is used (mode, readout), the task (decoding,
disorder, encoding) with its protocol, and the run around them. Plain dataclasses (Hydra's
``neurofm finetune`` composes them in :mod:`neurofm.configs.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from neurofm.errors import ConfigError
from neurofm.options import check_option
from neurofm.readouts import READOUTS

MODES = ("linear_probe", "finetune", "lora", "scratch")


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
                                  # | spatial | attention (neurofm.readouts; the last two learned)
    cross_modal: bool = False     # take a modality the checkpoint was not pretrained on (transfer across modalities)

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

    ckpt: str                      # exported dir, Lightning .ckpt or DeepSpeed dir
    inputs: Any                    # recordings (decoding), one recording (encoding), cohort (disorder)
    task: Any                      # DecodingTask | EncodingTask | DisorderTask (task=<name>)
    tokenizer: dict[str, Any] = field(default_factory=dict)   # +tokenizer.<MeegOptions field>=...
    seed: int = 0
    run_dir: str = "runs/finetune"


def finetune_spelling() -> dict[str, str]:
    """How ``neurofm finetune`` spells the tokenizer options: its errors name them so."""
    from neurofm.datasets.options import FMRI_OPTIONS, MEEG_OPTIONS

    return {**{k: f"+tokenizer.{k}" for k in ("sfreq", *MEEG_OPTIONS, *FMRI_OPTIONS)},
            "window_s": "task.window_s", "tr_s": "task.roi_tr_s", "atlas": "task.atlas",
            "roi_coords": "task.roi_coords"}
