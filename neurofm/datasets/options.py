"""What ``neurofm prepare`` does with each file: :class:`PrepareOptions`, the tokenizer
options a run passes on, and the subject-level split of every sample."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from neurofm.datasets.phenotype import subject_key
from neurofm.errors import ConfigError
from neurofm.options import check_keywords
from neurofm.tokenizers.dispatch import fmri_keywords
from neurofm.tokenizers.naming import check_subject_pattern
from neurofm.tokenizers.options import MEEG_OPTION_NAMES, MeegOptions
from neurofm.tokenizers.segment import MODALITIES

# tokenizer options a prepare run sets itself are not extra options
MEEG_OPTIONS = tuple(name for name in MEEG_OPTION_NAMES if name != "sfreq")  # sfreq: top level


def __getattr__(name: str):  # FMRI_OPTIONS and ROI_OPTIONS, for the modules that import them
    if name in ("FMRI_OPTIONS", "ROI_OPTIONS"):
        return fmri_keywords()[name == "ROI_OPTIONS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SPLITS = ("train", "val", "test")


@dataclass
class PrepareOptions:
    """What ``neurofm prepare`` does with each file (plain data; Hydra fills it).

    Attributes
    ----------
    modality : str | None
        Keep only segments of this modality (``eeg``, ``meg``, ``ieeg``, ``fmri``).
    window_s : float
        EEG/MEG/iEEG window length, s.
    fmri_window_s : float
        fMRI window length, s.
    stride_s : float | None
        EEG/MEG/iEEG window step, s; default: the window (no overlap). fMRI windows
        take ``fmri={'stride_s': ...}``.
    sfreq : float
        Target rate of EEG/MEG/iEEG, Hz.
    atlas : str | None
        Labels atlas for BOLD inputs.
    roi_tr_s : float | dict | None
        TR of ROI tables (they do not carry one), s: one number, or a mapping from site
        (the ``site`` entity, e.g. ABIDE's ``Pitt``) or file-name glob to TR.
    roi_coords : str | None
        Atlas image or coordinate table for ROI tables (default: ``atlas``).
    phenotype : str | None
        participants.tsv / phenotype CSV joined into ``meta['phenotype']``.
    subject_pattern : str | None
        Regular expression that finds the subject ID in a file name (a
        ``(?P<subject>...)`` group or one group), for files that are neither BIDS nor a
        layout neurofm knows (see :func:`neurofm.tokenizers.naming.entities_from_name`).
    meeg, fmri : dict
        Extra keyword arguments for ``tokenize_raw`` / ``tokenize_bold`` (ROI tables
        take the ones :func:`tokenize_roi_table` knows: ``stride_s``, ``resample_tr_s``,
        ``detrend``, ``standardize``, ``empty_parcels``).
    dtype : 'float16' | 'float32'
        Storage type of ``signal.npy``.
    shard_size_mb : float
        Target shard size.
    split_fractions : tuple of float
        Train/val/test fractions of *subjects*.
    seed : int
        Seeds the subject split.
    """

    modality: str | None = None
    window_s: float = 10.0
    fmri_window_s: float = 120.0
    stride_s: float | None = None
    sfreq: float = 200.0
    atlas: str | None = None
    roi_tr_s: Any = None
    roi_coords: str | None = None
    phenotype: str | None = None
    subject_pattern: str | None = None
    meeg: dict[str, Any] = field(default_factory=dict)
    fmri: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float16"
    shard_size_mb: float = 256.0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    def meeg_options(self) -> MeegOptions:
        """How EEG/MEG/iEEG recordings are cleaned: ``sfreq`` and ``meeg`` over the defaults."""
        return MeegOptions.of({"sfreq": self.sfreq, **self.meeg}, "+meeg.{}=")

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "float32"):
            raise ConfigError(f"dtype must be 'float16' or 'float32', got {self.dtype!r}")
        if self.modality is not None and self.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {MODALITIES} or null, got {self.modality!r}")
        fractions = tuple(float(f) for f in self.split_fractions)
        if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
            raise ConfigError(f"split_fractions must be 3 non-negative numbers summing to 1, got {fractions}")
        self.split_fractions = fractions
        self.meeg = check_keywords(self.meeg or {}, MEEG_OPTIONS, "+meeg.{}=")
        self.meeg_options()  # bad values fail here, before any file is read
        self.fmri = check_keywords(self.fmri or {}, fmri_keywords()[0], "+fmri.{}=")
        check_subject_pattern(self.subject_pattern)
        if isinstance(self.roi_tr_s, dict):
            self.roi_tr_s = {str(k): float(v) for k, v in self.roi_tr_s.items()}


def roi_tr_for(path: str, entities: dict, roi_tr_s: float | dict | None) -> float:
    """The TR of one ROI table: ``roi_tr_s`` itself, or its entry for the file's site or name."""

    if roi_tr_s is None:
        raise ConfigError("ROI tables do not carry a TR: pass roi_tr_s=<seconds> or a mapping "
                          "roi_tr_s='{SITE: seconds, ...}'", path)
    if not isinstance(roi_tr_s, dict):
        return float(roi_tr_s)
    site = str(entities.get("site", "")).lower()
    for key, value in roi_tr_s.items():
        if key.lower() == site or fnmatch.fnmatch(os.path.basename(path), key):
            return value
    raise ConfigError(f"roi_tr_s has no TR for site {entities.get('site')!r} (keys: "
                      f"{sorted(roi_tr_s)}); add it, e.g. +roi_tr_s.{entities.get('site', 'SITE')}=2.0",
                      path)


# --------------------------------------------------------------------------- samples


def split_of(dataset: str | None, subject: str | None, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> str:
    """Deterministic subject-level split: every window of a subject lands in the same split."""

    digest = hashlib.sha256(f"{seed}:{dataset}:{subject_key(subject)}".encode()).hexdigest()
    u = int(digest[:12], 16) / 16**12
    return SPLITS[0] if u < fractions[0] else SPLITS[1] if u < fractions[0] + fractions[1] else SPLITS[2]


