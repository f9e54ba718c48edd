"""One recording -> segments (:func:`tokenize_file`, for every command), and for ``neurofm
prepare`` (in a worker process) their split and their samples appended to the worker's journal."""

from __future__ import annotations

import hashlib
import os
import traceback
from typing import Any

from neurofm.datasets.codec import encode_segment
from neurofm.datasets.discovery import UNKNOWN_FORMAT, Source, kind_of
from neurofm.datasets.options import (
    MEEG_OPTIONS,
    PrepareOptions,
    fmri_options,
    roi_tr_for,
    split_of,
)
from neurofm.datasets.phenotype import join_phenotype, read_phenotype
from neurofm.datasets.tar_io import open_journal, sample_bytes
from neurofm.errors import ConfigError, NeurofmError
from neurofm.io import is_disk_full
from neurofm.options import option_name, spelled_as
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.segment import Segment


def _sample_key(src: Source) -> str:
    """The key prefix of a file's samples: stable across runs, unique per path."""
    return hashlib.sha1(src.path.encode()).hexdigest()[:16]


def prepare_spelling(kind: str) -> dict[str, str]:
    """How ``neurofm prepare`` spells each tokenizer option of a file of this kind."""
    if kind == "meeg":
        return {k: f"+meeg.{k}" for k in MEEG_OPTIONS}
    extra = {k: f"+fmri.{k}" for k in fmri_options()[0]}
    return {**extra, "window_s": "fmri_window_s",
            "tr_s": "roi_tr_s" if kind == "roi" else "+fmri.tr_s"}


def detect_kind(recording: Any) -> str | None:
    """``'meeg'``, ``'bold'`` or ``'roi'``: an ``mne.io.Raw`` or a nibabel image in memory, or
    a path by its name (what :func:`neurofm.datasets.discovery.discover` decides for a file);
    None for any other object. A path neurofm does not know is handed to MNE's readers, whose
    error names it. (Types are told by module name: neither library is imported here.)"""
    if isinstance(recording, Source):
        return recording.kind
    if isinstance(recording, str | os.PathLike):
        return kind_of(os.fspath(recording)) or "meeg"
    module = type(recording).__module__
    if module.startswith("nibabel"):
        return "bold"
    if module.startswith("mne") and hasattr(recording, "info") and hasattr(recording, "n_times"):
        return "meeg"
    return None


def tokenize_file(recording: Any, options: PrepareOptions, phenotype: dict | None = None) -> list[Segment]:
    """The one way a recording becomes segments (``neurofm prepare``, ``neurofm embed`` and
    ``neurofm finetune`` all come here): the kind detected once (:func:`detect_kind`), then
    the tokenizer of that kind with ``options``.

    Parameters
    ----------
    recording : path | Source | mne.io.Raw | nibabel image
        EEG/MEG/iEEG (anything ``mne.io.read_raw`` reads), a 4-D BOLD image or an ROI table.
    options : PrepareOptions
        Windows (``window_s``, ``fmri_window_s``, ``stride_s``), cleaning (``sfreq``,
        ``meeg``, ``fmri``), the atlas of BOLD and the coordinates and TR of ROI tables.
    phenotype : dict | None
        Participants' rows joined into each segment's ``meta['phenotype']``.

    Errors name options as the command being run spells them (:func:`neurofm.options.spelled_as`).
    """
    src = recording if isinstance(recording, Source) else None
    kind = detect_kind(recording)
    if kind is None:
        raise TypeError(f"cannot tokenize a {type(recording).__name__}: pass a path, an mne Raw or a nibabel image")
    where = src.path if src is not None else recording
    path_like = isinstance(where, str | os.PathLike)
    # a Raw or an image in memory: the tokenizer reads what it can from its file name
    entities = (src.entities if src is not None else None) or (
        entities_from_name(os.fspath(where), options.subject_pattern) if path_like else None)
    dataset = src.dataset if src is not None else (os.path.basename(os.path.dirname(os.fspath(where)))
                                                    if path_like else None)
    if kind == "meeg":
        # mne and scipy.signal: only workers that read M/EEG import them
        from neurofm.tokenizers.eeg_meg import tokenize_raw

        segments = tokenize_raw(where, window_s=options.window_s, stride_s=options.stride_s,
                                options=options.meeg_options(), dataset=dataset, entities=entities)
    elif kind == "bold":
        from neurofm.tokenizers.fmri import tokenize_bold

        if options.atlas is None:
            raise ConfigError(f"BOLD inputs need an atlas: pass {option_name('atlas')}=<labels image>")
        segments = tokenize_bold(where, atlas=options.atlas, window_s=options.fmri_window_s,
                                 dataset=dataset, entities=entities, **options.fmri)
    else:
        from neurofm.tokenizers.roi_table import tokenize_roi_table

        coords = options.roi_coords or options.atlas
        if coords is None:
            raise ConfigError(f"ROI tables need {option_name('roi_coords')}=<atlas or coordinate table>")
        roi_options = {k: v for k, v in options.fmri.items() if k in fmri_options()[1]}
        segments = tokenize_roi_table(where, coords=coords,
                                      tr_s=roi_tr_for(os.fspath(where), entities or {}, options.roi_tr_s),
                                      window_s=options.fmri_window_s, dataset=dataset,
                                      entities=entities, **roi_options)
    if options.modality is not None:
        segments = [s for s in segments if s.modality == options.modality]
    if phenotype is not None:
        join_phenotype(segments, phenotype)
    return list(segments)


def prepare_one(src: Source, options: PrepareOptions, workdir: str) -> dict[str, Any]:
    """Tokenize ``src`` into this process's journal in ``workdir``; return the summary."""

    journal = open_journal(workdir)
    journal.started(src.path)  # tells a broken pool which files were running
    key = _sample_key(src)
    try:
        if src.kind == "unknown":
            raise NeurofmError(UNKNOWN_FORMAT, src.path)
        phenotype = read_phenotype(options.phenotype) if options.phenotype else None
        with spelled_as(prepare_spelling(src.kind)):
            segments = tokenize_file(src, options, phenotype)
        samples, digest, start = [], hashlib.sha256(), journal.size
        for k, seg in enumerate(segments):
            split = split_of(seg.meta.get("dataset"), seg.meta.get("subject"),
                             options.split_fractions, options.seed)
            seg.meta["split"] = split
            sample = sample_bytes(f"{key}-{k:06d}", encode_segment(seg, options.dtype))
            digest.update(sample)
            samples.append({"offset": journal.append(sample), "length": len(sample), "split": split,
                            "modality": seg.modality, "n_sensors": seg.n_sensors,
                            "duration_s": seg.duration_s, "subject": str(seg.meta.get("subject")),
                            "dataset": str(seg.meta.get("dataset"))})
        summary = {"path": src.path, "status": "ok", "samples": samples,
                   "data": journal.samples_path.name, "offset": start, "length": journal.size - start,
                   "sha256": digest.hexdigest()}
    except Exception as err:  # one bad input is that input's failure, never the run's
        if is_disk_full(err, journal.samples_path):
            raise  # not the file's fault: the run stops, and a re-run resumes here
        summary = {"path": src.path, "status": "failed", "error_type": type(err).__name__,
                   "error": str(err), "samples": []}
        if os.environ.get("NEUROFM_DEBUG"):
            summary["traceback"] = traceback.format_exc()
    journal.done(summary)
    return summary


def check_needs(sources: list[Source], options: PrepareOptions) -> None:
    """Options every file of a kind needs: one error before any work, not one per file."""
    found = {s.kind for s in sources}
    if "bold" in found and options.atlas is None:
        n = sum(s.kind == "bold" for s in sources)
        raise ConfigError(f"{n} inputs are 4-D BOLD images, which need an atlas: pass "
                          "atlas=<labels image> (or modality=eeg|meg|ieeg to skip them)")
    if "roi" in found and (options.roi_coords or options.atlas) is None:
        raise ConfigError("ROI tables need the atlas they were extracted with (or an x,y,z table): "
                          "pass roi_coords=<path>")
    if "roi" in found and options.roi_tr_s is None:
        raise ConfigError("ROI tables do not carry a TR: pass roi_tr_s=<seconds>, or one per site "
                          "as roi_tr_s='{SITE: seconds, ...}'")


