"""One recording -> segments: :func:`tokenize`, the way every command tokenizes a recording.

The recording type (``'meeg'``: anything ``mne.io.read_raw`` reads; ``'bold'``: a 4-D NIfTI;
``'roi'``: a table of parcel series) is decided once, from the object or the file's name
(:func:`detect_recording_type`), then that type's tokenizer runs with the options given.
``neurofm prepare`` (:func:`neurofm.datasets.tokenize.tokenize_file`, which adds what a
prepare run knows: BIDS entities, per-site TRs, the phenotype), ``embed`` and ``finetune``
all come here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Any

from neurofm.errors import ConfigError
from neurofm.options import check_keywords, keyword_names, option_name
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.options import MeegOptions
from neurofm.tokenizers.segment import Segment

RECORDING_TYPES = ("meeg", "bold", "roi")
# Extensions of files that are one recording each (companion files such as .vmrk/.eeg/.fdt
# are found by their readers).
MEEG_EXTENSIONS = (".fif", ".fif.gz", ".edf", ".bdf", ".gdf", ".vhdr", ".set", ".cnt", ".con",
                   ".sqd", ".raw", ".mff", ".ds", ".mef", ".nwb", ".snirf", ".lay", ".eeg.json")
BOLD_EXTENSIONS = (".nii", ".nii.gz")
ROI_EXTENSIONS = (".1D", ".1d")
SKIP_SUFFIXES = ("-eve.fif", "_events.fif", "-ave.fif", "-cov.fif", "-trans.fif", "-fwd.fif",
                 "-inv.fif", "-epo.fif", "-ica.fif", "-proj.fif", "-annot.fif")


def recording_type_of(path: str) -> str | None:
    """``'meeg'``, ``'bold'``, ``'roi'`` by the file's name, or None (not a recording neurofm reads)."""
    name = os.path.basename(path)
    lower = name.lower()
    if lower.endswith(SKIP_SUFFIXES):
        return None
    if lower.endswith(BOLD_EXTENSIONS):
        return "bold"
    if name.endswith(ROI_EXTENSIONS):
        return "roi"
    if lower.endswith(MEEG_EXTENSIONS):
        return "meeg"
    if lower.endswith(".eeg") and not _brainvision_companion(path):
        return "meeg"  # Nihon Kohden (.EEG + .PNT/.LOG/.21E); BrainVision data is read via its .vhdr
    if "pdf" in name and "." not in name and os.path.exists(
            os.path.join(os.path.dirname(path), name.replace("pdf", "config"))):
        return "meeg"  # 4D/BTi run
    return None


def _brainvision_companion(path: str) -> bool:
    stem = os.path.splitext(path)[0]
    return any(os.path.exists(stem + ext) for ext in (".vhdr", ".VHDR", ".ahdr"))


def detect_recording_type(recording: Any) -> str | None:
    """``'meeg'``, ``'bold'`` or ``'roi'``: an ``mne.io.Raw`` or a nibabel image in memory, or
    a path by its name (:func:`recording_type_of`); None for any other object. A path neurofm
    does not know is handed to MNE's readers, whose error names it. (Types are told by module
    name: neither library is imported here.)"""
    if isinstance(recording, str | os.PathLike):
        return recording_type_of(os.fspath(recording)) or "meeg"
    module = type(recording).__module__
    if module.startswith("nibabel"):
        return "bold"
    if module.startswith("mne") and hasattr(recording, "info") and hasattr(recording, "n_times"):
        return "meeg"
    return None


@cache
def fmri_keywords() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The extra options of ``tokenize_bold`` and of ``tokenize_roi_table``, read from their
    signatures on first use: a process that tokenizes EEG only never imports the fMRI stack."""
    from neurofm.tokenizers.fmri import tokenize_bold
    from neurofm.tokenizers.roi_table import tokenize_roi_table

    return (keyword_names(tokenize_bold, exclude=("img", "atlas", "window_s", "dataset", "entities")),
            keyword_names(tokenize_roi_table, exclude=("table", "coords", "tr_s", "window_s",
                                                       "dataset", "entities")))


def tokenize(recording: Any, *, recording_type: str | None = None, window_s: float = 10.0,
             stride_s: float | None = None, meeg: MeegOptions | None = None, fmri_window_s: float = 120.0,
             fmri: Mapping[str, Any] | None = None, atlas: Any = None, roi_coords: Any = None,
             tr_s: float | None = None, dataset: str | None = None, entities: dict | None = None,
             subject_pattern: str | None = None) -> list[Segment]:
    """Tokenize one recording of any type.

    Parameters
    ----------
    recording : path | mne.io.Raw | nibabel image
        EEG/MEG/iEEG (anything ``mne.io.read_raw`` reads), a 4-D BOLD image or an ROI table.
    recording_type : 'meeg' | 'bold' | 'roi' | None
        Default: :func:`detect_recording_type`.
    window_s, stride_s, meeg : EEG/MEG/iEEG windows (s) and cleaning (:class:`MeegOptions`).
    fmri_window_s, fmri : fMRI windows (s) and the extra keywords of ``tokenize_bold`` /
        ``tokenize_roi_table`` (cleaning: :class:`~neurofm.tokenizers.options.FmriOptions`'s
        names; a table takes the ones ``tokenize_roi_table`` knows).
    atlas : labels image of BOLD inputs; roi_coords : an ROI table's atlas or coordinate table
        (default: ``atlas``); tr_s : an ROI table's TR, s.
    dataset, entities : written into each segment's ``meta`` (default: the parent folder's name
        and the entities in the file name, found with ``subject_pattern``).

    Errors name options as the command being run spells them (:func:`neurofm.options.spelled_as`).
    """
    recording_type = recording_type or detect_recording_type(recording)
    if recording_type not in RECORDING_TYPES:
        raise TypeError(f"cannot tokenize a {type(recording).__name__}: pass a path, an mne Raw or a nibabel image")
    if isinstance(recording, str | os.PathLike):  # a Raw or an image in memory has no name to read
        entities = entities or entities_from_name(os.fspath(recording), subject_pattern)
        dataset = dataset or os.path.basename(os.path.dirname(os.fspath(recording)))
    fmri = dict(fmri or {})
    if recording_type == "meeg":
        # mne and scipy.signal: only processes that read M/EEG import them
        from neurofm.tokenizers.eeg_meg import tokenize_raw

        segments = tokenize_raw(recording, window_s=window_s, stride_s=stride_s, options=meeg or MeegOptions(),
                                dataset=dataset, entities=entities)
    elif recording_type == "bold":
        from neurofm.tokenizers.fmri import tokenize_bold

        if atlas is None:
            raise ConfigError(f"BOLD inputs need an atlas: pass {option_name('atlas')}=<labels image>")
        check_keywords(fmri, fmri_keywords()[0], "{}")
        segments = tokenize_bold(recording, atlas=atlas, window_s=fmri_window_s, dataset=dataset,
                                 entities=entities, **fmri)
    else:
        from neurofm.tokenizers.roi_table import tokenize_roi_table

        coords = roi_coords if roi_coords is not None else atlas
        if coords is None:
            raise ConfigError(f"ROI tables need {option_name('roi_coords')}=<atlas or coordinate table>")
        if tr_s is None:
            raise ConfigError(f"ROI tables do not carry a TR: pass {option_name('tr_s')}=<seconds>")
        segments = tokenize_roi_table(recording, coords=coords, tr_s=tr_s, window_s=fmri_window_s,
                                      dataset=dataset, entities=entities,
                                      **{k: v for k, v in fmri.items() if k in fmri_keywords()[1]})
    return list(segments)
