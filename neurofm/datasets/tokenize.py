"""One file as ``neurofm prepare`` tokenizes it (:func:`tokenize_file`, over
:func:`neurofm.tokenizers.dispatch.tokenize`) and, in a worker process, its windows' split and
samples appended to the worker's journal."""

from __future__ import annotations

import hashlib
import os
import traceback
from typing import Any

from neurofm.datasets.codec import encode_segment
from neurofm.datasets.discovery import UNKNOWN_FORMAT, Source
from neurofm.datasets.options import (
    MEEG_OPTIONS,
    PrepareOptions,
    roi_tr_for,
    split_of,
)
from neurofm.datasets.phenotype import join_phenotype, read_phenotype
from neurofm.datasets.tar_io import open_journal, sample_bytes
from neurofm.errors import ConfigError, NeurofmError
from neurofm.io import is_disk_full
from neurofm.options import spelled_as
from neurofm.tokenizers.dispatch import detect_recording_type, fmri_keywords, tokenize
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.segment import Segment


def _sample_key(src: Source) -> str:
    """The key prefix of a file's samples: stable across runs, unique per path."""
    return hashlib.sha1(src.path.encode()).hexdigest()[:16]


def prepare_spelling(recording_type: str) -> dict[str, str]:
    """How ``neurofm prepare`` spells each tokenizer option of a file of this recording type."""
    if recording_type == "meeg":
        return {k: f"+meeg.{k}" for k in MEEG_OPTIONS}
    extra = {k: f"+fmri.{k}" for k in fmri_keywords()[0]}
    return {**extra, "window_s": "fmri_window_s",
            "tr_s": "roi_tr_s" if recording_type == "roi" else "+fmri.tr_s"}


def tokenize_file(recording: Any, options: PrepareOptions, phenotype: dict | None = None) -> list[Segment]:
    """A recording as ``neurofm prepare`` tokenizes it: :func:`neurofm.tokenizers.dispatch.tokenize`
    with a run's :class:`PrepareOptions`, what discovery knows of the file (a :class:`Source`:
    its recording type, dataset and BIDS entities), an ROI table's TR from ``roi_tr_s`` (per
    site or name), the ``modality`` filter and the ``phenotype`` rows joined into each
    segment's ``meta['phenotype']``.

    ``recording``: a path, a :class:`Source`, an ``mne.io.Raw`` or a nibabel image. Errors name
    options as the command being run spells them (:func:`neurofm.options.spelled_as`).
    """
    src = recording if isinstance(recording, Source) else None
    where = src.path if src is not None else recording
    recording_type = src.recording_type if src is not None else detect_recording_type(recording)
    entities = src.entities if src is not None else None
    if recording_type == "roi" and isinstance(where, str | os.PathLike):
        found = entities or entities_from_name(os.fspath(where), options.subject_pattern) or {}
        tr_s = roi_tr_for(os.fspath(where), found, options.roi_tr_s)
    else:
        tr_s = None
    segments = tokenize(where, recording_type=recording_type, window_s=options.window_s,
                        stride_s=options.stride_s, meeg=options.meeg_options(),
                        fmri_window_s=options.fmri_window_s, fmri=options.fmri, atlas=options.atlas,
                        roi_coords=options.roi_coords, tr_s=tr_s,
                        dataset=src.dataset if src is not None else None, entities=entities,
                        subject_pattern=options.subject_pattern)
    if options.modality is not None:
        segments = [s for s in segments if s.modality == options.modality]
    if phenotype is not None:
        join_phenotype(segments, phenotype)
    return segments


def prepare_one(src: Source, options: PrepareOptions, workdir: str) -> dict[str, Any]:
    """Tokenize ``src`` into this process's journal in ``workdir``; return the summary."""

    journal = open_journal(workdir)
    journal.started(src.path)  # tells a broken pool which files were running
    key = _sample_key(src)
    try:
        if src.recording_type == "unknown":
            raise NeurofmError(UNKNOWN_FORMAT, src.path)
        phenotype = read_phenotype(options.phenotype) if options.phenotype else None
        with spelled_as(prepare_spelling(src.recording_type)):
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
    """Options every file of a recording type needs: one error before any work, not one per file."""
    found = {s.recording_type for s in sources}
    if "bold" in found and options.atlas is None:
        n = sum(s.recording_type == "bold" for s in sources)
        raise ConfigError(f"{n} inputs are 4-D BOLD images, which need an atlas: pass "
                          "atlas=<labels image> (or modality=eeg|meg|ieeg to skip them)")
    if "roi" in found and (options.roi_coords or options.atlas) is None:
        raise ConfigError("ROI tables need the atlas they were extracted with (or an x,y,z table): "
                          "pass roi_coords=<path>")
    if "roi" in found and options.roi_tr_s is None:
        raise ConfigError("ROI tables do not carry a TR: pass roi_tr_s=<seconds>, or one per site "
                          "as roi_tr_s='{SITE: seconds, ...}'")


