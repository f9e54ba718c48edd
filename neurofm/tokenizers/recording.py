"""Reading M/EEG recordings and their events for the tokenizer: any format MNE reads (lazily,
with truncated and corrupt files named), an ``mne.io.Raw`` as it is, and the events of a
recording from its annotations or its stim channel."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import mne
import numpy as np

from neurofm.errors import RecordingError
from neurofm.options import option_name

logger = logging.getLogger("neurofm.tokenizers")


_TRUNCATED = ("does not match the file size", "truncat", "file is smaller", "incomplete")


def edf_records(path: Path) -> tuple[int, int] | None:
    """(data records the EDF/BDF header declares, whole records the file holds), or None."""
    if path.suffix.lower() not in (".edf", ".bdf"):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
            header_bytes, declared = int(head[184:192]), int(head[236:244])
            n_signals = int(head[252:256])
            fh.seek(256 + n_signals * 216)
            samples = [int(fh.read(8)) for _ in range(n_signals)]
    except (OSError, ValueError):
        return None
    record_bytes = sum(samples) * (3 if path.suffix.lower() == ".bdf" else 2)
    if record_bytes <= 0:
        return None
    return declared, (path.stat().st_size - header_bytes) // record_bytes


def read_recording(
    path: str | os.PathLike, preload: bool = False, allow_truncated: bool = False
) -> mne.io.BaseRaw:
    """Read any recording MNE reads, lazily; a clear :class:`RecordingError` otherwise.

    Handles the formats :func:`mne.io.read_raw` dispatches on by extension, EGI
    ``.raw``/``.mff``, and 4D/BTi runs (a ``*pdf*`` file with its ``config``
    and ``hs`` files beside it). A file shorter than its header says is an
    error unless ``allow_truncated=True`` (then what is there is read).
    """
    path = Path(path)
    if not path.exists():
        raise RecordingError("file not found", path)
    if path.is_file() and path.stat().st_size == 0:
        raise RecordingError("file is empty (0 bytes)", path)
    kwargs = {"preload": preload, "verbose": "warning"}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            suffix = path.suffix.lower()
            if suffix in (".raw", ".mff"):
                raw = mne.io.read_raw_egi(path, **kwargs)
            elif "pdf" in path.name and not path.suffix:
                config = path.with_name(path.name.replace("pdf", "config"))
                head_shape = path.with_name(path.name.replace("pdf", "hs"))
                raw = mne.io.read_raw_bti(
                    path, config, head_shape if head_shape.exists() else None, **kwargs
                )
            else:
                raw = mne.io.read_raw(path, **kwargs)
    except Exception as err:  # readers raise many types for corrupt files
        raise RecordingError(f"cannot read recording ({type(err).__name__}: {err})", path) from err
    truncated = [str(w.message) for w in caught if any(t in str(w.message) for t in _TRUNCATED)]
    records = edf_records(path) if truncated else None
    if records is not None and (records[0] <= 0 or records[1] >= records[0]):
        # a header that under-counts (or says -1: a recorder not stopped) is not truncation
        logger.warning("%s: the header declares %d data records, the file holds %d; reading all %d",
                       path, records[0], records[1], records[1])
        truncated = []
    if records is not None and truncated and not allow_truncated:
        raise RecordingError(
            f"file holds {records[1]} data records but its header declares {records[0]}: truncated? "
            f"pass {option_name('allow_truncated')}=True to use the samples that are there", path)
    if truncated and not allow_truncated:
        raise RecordingError(
            f"file is shorter than its header says, truncated? ({truncated[0]}); "
            f"pass {option_name('allow_truncated')}=True to use the samples that are there", path)
    return raw


def as_raw(
    raw_or_path: mne.io.BaseRaw | str | os.PathLike, allow_truncated: bool = False
) -> tuple[mne.io.BaseRaw, str]:
    if isinstance(raw_or_path, mne.io.BaseRaw):
        source = raw_or_path.filenames[0] if raw_or_path.filenames and raw_or_path.filenames[0] else "<Raw>"
        return raw_or_path.copy(), str(source)
    return read_recording(raw_or_path, allow_truncated=allow_truncated), os.fspath(raw_or_path)


def annotation_events(raw: mne.io.BaseRaw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onsets (s from the first sample), durations (s) and descriptions of all annotations."""
    ann = raw.annotations
    offset = raw.first_time if ann.orig_time is not None else 0.0
    return (
        np.asarray(ann.onset, dtype=np.float64) - offset,
        np.asarray(ann.duration, dtype=np.float64),
        np.asarray(ann.description, dtype=object),
    )


def stim_events(raw: mne.io.BaseRaw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    stim = mne.pick_types(raw.info, meg=False, stim=True)
    if len(stim) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=object)
    try:
        events = mne.find_events(raw, shortest_event=1, initial_event=True, verbose="error")
    except (ValueError, RuntimeError):
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=object)
    onset = (events[:, 0] - raw.first_samp) / raw.info["sfreq"]
    return onset, np.zeros(len(onset)), np.array([str(e) for e in events[:, 2]], dtype=object)
