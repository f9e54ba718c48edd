"""Sensor-aware EEG/MEG/iEEG tokenizer.

A recording in any format MNE reads becomes :class:`Segment` windows whose
sensors carry their geometry (head-frame position, coil normal, kind), so the
model never depends on channel names or a fixed montage.

Pipeline (one pass over the data, MNE for every signal operation)::

    read lazily -> pick EEG/MEG(/iEEG) -> drop bads, flat, saturated, no-position
    -> load only the kept channels -> notch (configured or detected) -> resample
    -> band-pass -> (average reference) -> physical units (uV, fT, fT/cm)
    -> robust per-channel scale -> windows (reject NaN / BAD / extreme) -> Segments
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mne
import numpy as np
from mne.io.constants import FIFF

from neurofm.errors import MissingPositionsError, RecordingError, RecordingTooShortError
from neurofm.options import check_option
from neurofm.tokenizers.geometry import (
    NON_EEG_NAME,
    channel_geometry,
    choose_montage,
    montage_positions,
)
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.segment import Segment, Segments

logger = logging.getLogger("neurofm.tokenizers")

# Physical unit -> model unit: EEG/iEEG in uV, magnetometers in fT, gradiometers in fT/cm.
UNIT_SCALE = {"eeg": 1e6, "seeg": 1e6, "ecog": 1e6, "mag": 1e15, "grad": 1e13}
MEEG_KINDS = ("eeg", "mag", "grad")
IEEG_KINDS = ("seeg", "ecog")
_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class _Continuous:
    """A cleaned, scaled recording before windowing."""

    data: np.ndarray            # [C, T] float32, scaled
    positions: np.ndarray       # [C, 3] metres, head frame
    orientations: np.ndarray    # [C, 3]
    kinds: tuple[str, ...]
    sfreq: float
    bad_times: np.ndarray       # [T] bool: non-finite input or BAD_ annotation
    first_time: float           # s of the first sample since the file's time origin
    events: tuple[np.ndarray, np.ndarray, np.ndarray]  # onset_s, duration_s, labels
    meta: dict[str, Any]


# --------------------------------------------------------------------------- reading


_TRUNCATED = ("does not match the file size", "truncat", "file is smaller", "incomplete")


def _edf_records(path: Path) -> tuple[int, int] | None:
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
    records = _edf_records(path) if truncated else None
    if records is not None and (records[0] <= 0 or records[1] >= records[0]):
        # a header that under-counts (or says -1: a recorder not stopped) is not truncation
        logger.warning("%s: the header declares %d data records, the file holds %d; reading all %d",
                       path, records[0], records[1], records[1])
        truncated = []
    if records is not None and truncated and not allow_truncated:
        raise RecordingError(
            f"file holds {records[1]} data records but its header declares {records[0]}: truncated? "
            "pass allow_truncated=True to use the samples that are there", path)
    if truncated and not allow_truncated:
        raise RecordingError(
            f"file is shorter than its header says, truncated? ({truncated[0]}); "
            "pass allow_truncated=True to use the samples that are there", path)
    return raw


def _as_raw(
    raw_or_path: mne.io.BaseRaw | str | os.PathLike, allow_truncated: bool = False
) -> tuple[mne.io.BaseRaw, str]:
    if isinstance(raw_or_path, mne.io.BaseRaw):
        source = raw_or_path.filenames[0] if raw_or_path.filenames and raw_or_path.filenames[0] else "<Raw>"
        return raw_or_path.copy(), str(source)
    return read_recording(raw_or_path, allow_truncated=allow_truncated), os.fspath(raw_or_path)


# --------------------------------------------------------------------------- channels


def _kind(ch: dict) -> str | None:
    kind = ch["kind"]
    if kind == FIFF.FIFFV_MEG_CH:
        return "grad" if ch["unit"] == FIFF.FIFF_UNIT_T_M else "mag"
    return {FIFF.FIFFV_EEG_CH: "eeg", FIFF.FIFFV_SEEG_CH: "seeg", FIFF.FIFFV_ECOG_CH: "ecog"}.get(kind)


def _select_channels(
    raw: mne.io.BaseRaw,
    kinds: tuple[str, ...],
    montage: str | mne.channels.DigMontage,
    on_missing_positions: str,
    source: str,
) -> tuple[list[str], np.ndarray, np.ndarray, list[str], dict[str, str], dict[str, int]]:
    """Choose channels and their geometry, before any data is loaded."""
    dropped: dict[str, str] = {}
    other_types: dict[str, int] = {}
    keep: list[int] = []
    chan_kinds: list[str] = []
    bads = set(raw.info["bads"])
    for i, ch in enumerate(raw.info["chs"]):
        kind = _kind(ch)
        name = ch["ch_name"]
        if kind is None or kind not in kinds:
            label = kind or mne.channel_type(raw.info, i)
            other_types[label] = other_types.get(label, 0) + 1
        elif kind == "eeg" and NON_EEG_NAME.match(name):
            dropped[name] = "not EEG by name (EOG/ECG/EMG/trigger/...)"
        elif name in bads:
            dropped[name] = "marked bad in file"
        else:
            keep.append(i)
            chan_kinds.append(kind)
    if not keep:
        raise RecordingError(
            f"no usable channels of kinds {list(kinds)} (found {other_types or 'none'}; "
            f"dropped {len(dropped)}); pass kinds=... to choose others",
            source,
        )
    info = mne.pick_info(raw.info, keep)
    positions, orientations = channel_geometry(info)
    names = [raw.ch_names[i] for i in keep]
    missing = ~np.isfinite(positions).all(axis=1)
    is_ieeg = np.array([k in IEEG_KINDS for k in chan_kinds])
    lookup = missing & ~is_ieeg & (np.array(chan_kinds) == "eeg")
    if lookup.any() and montage is not None:
        found, _ = montage_positions([n for n, m in zip(names, lookup, strict=True) if m], montage)
        positions[lookup] = found
        missing = ~np.isfinite(positions).all(axis=1)
    if missing.any():
        absent = [n for n, m in zip(names, missing, strict=True) if m]
        if on_missing_positions != "drop":
            shown = ", ".join(absent[:8]) + (", ..." if len(absent) > 8 else "")
            raise MissingPositionsError(
                f"{len(absent)} of {len(names)} channels have no position ({shown}) and are not "
                f"in montage {_montage_label(montage, names)}; pass montage='<a standard montage>' or a DigMontage, "
                "rename the channels to standard names, or on_missing_positions='drop'",
                source,
            )
        for name in absent:
            dropped[name] = "no position"
        keep_mask = ~missing
        names = [n for n, k in zip(names, keep_mask, strict=True) if k]
        chan_kinds = [k for k, m in zip(chan_kinds, keep_mask, strict=True) if m]
        positions, orientations = positions[keep_mask], orientations[keep_mask]
        if not names:
            raise MissingPositionsError("no channel has a position; pass a montage", source)
    return names, positions, orientations, chan_kinds, dropped, other_types


def _montage_label(montage, names: list[str]) -> str:
    chosen = choose_montage(names, montage)
    label = chosen if isinstance(chosen, str) else "<DigMontage>"
    return f"{montage!r} ({label})" if montage == "auto" else repr(label)


def _subsample(data: np.ndarray, max_samples: int = 20_000) -> np.ndarray:
    """A strided view with at most ``max_samples`` per channel, for channel statistics."""
    step = max(1, data.shape[1] // max_samples)
    return data[:, ::step]


def _flat_or_saturated(data: np.ndarray, kinds: np.ndarray) -> dict[int, str]:
    """Indices of channels that are flat (no variance), clipped at the ADC rail, or all NaN.

    Statistics come from an evenly strided subsample (at most 20k samples per
    channel): a flat or clipped channel is so throughout.
    """
    view = _subsample(data)
    finite = np.isfinite(view)
    clean = view if finite.all() else np.where(finite, view, 0.0)
    std = clean.std(axis=1)
    flagged: dict[int, str] = {}
    for kind in np.unique(kinds):
        sel = np.flatnonzero(kinds == kind)
        typical = np.median(std[sel])
        for i in sel[std[sel] <= max(typical * 1e-4, np.finfo(np.float64).tiny)]:
            flagged[int(i)] = "flat"
    if clean.shape[1] >= 100:
        top = clean.max(axis=1, keepdims=True)
        bottom = clean.min(axis=1, keepdims=True)
        at_rail = np.maximum((clean == top).mean(axis=1), (clean == bottom).mean(axis=1))
        # a clipped channel has a continuum of values plus a pile-up at the rail; few-level
        # (coarsely quantised) channels pile up everywhere and are not called saturated
        for i in np.flatnonzero(at_rail > 0.05):
            if np.unique(clean[i, :10_000]).size < 16:
                continue
            flagged.setdefault(int(i), f"saturated ({at_rail[i]:.0%} of samples at the rail)")
    if not finite.all():
        for i in np.flatnonzero(~np.isfinite(data).any(axis=1)):
            flagged[int(i)] = "all samples NaN/inf"
    return flagged


# --------------------------------------------------------------------------- filtering


def detect_line_freq(data: np.ndarray, sfreq: float) -> float | None:
    """Mains frequency (50 or 60 Hz) if a clear spectral peak is there, else None.

    Uses the median log-spectrum across channels of the data given; a peak
    counts when its power is at least 5x the median of its 2-5 Hz neighbourhood.
    """
    from scipy.signal import welch

    candidates = [f for f in (50.0, 60.0) if f < sfreq / 2 - 5]
    if not candidates or data.shape[1] < 2 * sfreq:
        return None
    freqs, psd = welch(data, fs=sfreq, nperseg=int(2 * sfreq), axis=-1)
    logp = np.median(np.log(psd + np.finfo(float).tiny), axis=0)
    scores = {}
    for f0 in candidates:
        peak = logp[np.argmin(np.abs(freqs - f0))]
        ring = (np.abs(freqs - f0) >= 2) & (np.abs(freqs - f0) <= 5)
        scores[f0] = peak - np.median(logp[ring])
    best = max(scores, key=scores.get)
    return best if scores[best] > np.log(5.0) else None


def _filter(
    raw: mne.io.BaseRaw,
    sfreq: float,
    l_freq: float | None,
    h_freq: float | None,
    line_freq: float | str | None,
    source: str,
) -> tuple[float | None, float | None]:
    """Notch, resample and band-pass ``raw`` in place; return (line_freq, h_freq) used."""
    native = raw.info["sfreq"]
    if h_freq is None:
        h_freq = 0.45 * min(sfreq, native)
    elif native < 2 * h_freq:
        raise RecordingError(
            f"sampling rate {native:g} Hz is below 2x the requested band top {h_freq:g} Hz; "
            f"lower h_freq to < {native / 2:g} Hz",
            source,
        )
    if line_freq == "auto":
        line_freq = raw.info["line_freq"] or detect_line_freq(raw._data[:, : int(30 * native)], native)
    quiet = {"verbose": "error"}
    if l_freq is not None and l_freq >= h_freq:
        raise RecordingError(f"at {native:g} Hz the band top is {h_freq:g} Hz, not above l_freq="
                             f"{l_freq:g} Hz: is the sampling rate right? Otherwise lower l_freq", source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # filter longer than a short recording: MNE pads
            if line_freq:
                notches = np.arange(line_freq, min(h_freq + line_freq, native / 2), line_freq)
                notches = notches[notches < native / 2 - 1]
                if len(notches):
                    raw.notch_filter(notches, picks="all", **quiet)
            if not np.isclose(native, sfreq):
                raw.resample(sfreq, npad="auto", **quiet)
            raw.filter(l_freq, h_freq, picks="all", **quiet)
    except ValueError as err:  # MNE's filter design refuses bands it cannot build at this rate
        raise RecordingError(f"cannot filter {l_freq}-{h_freq:g} Hz at {native:g} Hz ({err}); "
                             "check the sampling rate, or pass l_freq / h_freq", source) from err
    return (float(line_freq) if line_freq else None), float(h_freq)


# --------------------------------------------------------------------------- events


def _annotation_events(raw: mne.io.BaseRaw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Onsets (s from the first sample), durations (s) and descriptions of all annotations."""
    ann = raw.annotations
    offset = raw.first_time if ann.orig_time is not None else 0.0
    return (
        np.asarray(ann.onset, dtype=np.float64) - offset,
        np.asarray(ann.duration, dtype=np.float64),
        np.asarray(ann.description, dtype=object),
    )


def _stim_events(raw: mne.io.BaseRaw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    stim = mne.pick_types(raw.info, meg=False, stim=True)
    if len(stim) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=object)
    try:
        events = mne.find_events(raw, shortest_event=1, initial_event=True, verbose="error")
    except (ValueError, RuntimeError):
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=object)
    onset = (events[:, 0] - raw.first_samp) / raw.info["sfreq"]
    return onset, np.zeros(len(onset)), np.array([str(e) for e in events[:, 2]], dtype=object)


def _is_bad(labels: np.ndarray) -> np.ndarray:
    return np.array([str(d).upper().startswith(("BAD", "EDGE")) for d in labels], dtype=bool)


# --------------------------------------------------------------------------- core


def _continuous(
    raw_or_path,
    *,
    sfreq: float,
    l_freq: float | None,
    h_freq: float | None,
    line_freq: float | str | None,
    kinds: tuple[str, ...],
    montage: str | mne.channels.DigMontage,
    on_missing_positions: str,
    average_reference: bool,
    drop_flat: bool,
    tmin_s: float | None,
    tmax_s: float | None,
    min_duration_s: float,
    events_from: str,
    dataset: str | None,
    entities: dict[str, str] | None,
    allow_truncated: bool = False,
) -> _Continuous:
    check_option("on_missing_positions", on_missing_positions, ("raise", "drop"))
    check_option("events_from", events_from, ("auto", "annotations", "stim"))
    raw, source = _as_raw(raw_or_path, allow_truncated)
    if tmin_s is not None or tmax_s is not None:
        tmax = None if tmax_s is None else min(tmax_s, raw.times[-1])
        raw.crop(tmin=tmin_s or 0.0, tmax=tmax)
    native = raw.info["sfreq"]
    duration = raw.n_times / native
    if raw.n_times == 0:
        raise RecordingError("recording has no samples", source)
    if raw.n_times < 2:  # not "every channel is flat": there is nothing to look at
        raise RecordingTooShortError(f"recording has {raw.n_times} sample", source, duration_s=duration)
    if duration < min_duration_s:
        raise RecordingTooShortError(
            f"recording lasts {duration:.3f} s, shorter than one window ({min_duration_s:g} s); "
            "pass a smaller window_s",
            source, duration_s=duration,
        )

    ann_onset, ann_dur, ann_desc = _annotation_events(raw)
    if events_from == "stim" or (events_from == "auto" and not (~_is_bad(ann_desc)).any()):
        stim_onset, stim_dur, stim_desc = _stim_events(raw)
        bad = _is_bad(ann_desc)
        ann_onset = np.concatenate([ann_onset[bad], stim_onset])
        ann_dur = np.concatenate([ann_dur[bad], stim_dur])
        ann_desc = np.concatenate([ann_desc[bad], stim_desc])

    names, positions, orientations, chan_kinds, dropped, other_types = _select_channels(
        raw, kinds, montage, on_missing_positions, source
    )
    raw.pick(names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw.load_data(verbose="error")
    except Exception as err:
        raise RecordingError(f"cannot load samples, file truncated or corrupt? ({err})", source) from err

    data = raw._data  # [C, T] float64, volts / tesla, modified in place below
    kind_arr = np.array(chan_kinds)
    if drop_flat:
        flagged = _flat_or_saturated(data, kind_arr)
        if flagged:
            drop = sorted(flagged)
            for i in drop:
                dropped[names[i]] = flagged[i]
            keep = np.setdiff1d(np.arange(len(names)), drop)
            if len(keep) == 0:
                raise RecordingError(
                    f"no usable channels: all {len(names)} are flat, saturated or NaN", source
                )
            raw.pick([names[i] for i in keep])
            data = raw._data
            names = [names[i] for i in keep]
            kind_arr, positions, orientations = kind_arr[keep], positions[keep], orientations[keep]

    nonfinite = ~np.isfinite(data).all(axis=0)  # [T_native]
    if nonfinite.all():
        raise RecordingError("every sample is NaN or inf", source)
    if nonfinite.any():
        data[:, nonfinite] = 0.0  # keep NaN from spreading through the filters; windows rejected below
    used_line, used_h = _filter(raw, sfreq, l_freq, h_freq, line_freq, source)
    data = raw._data
    eeg = kind_arr == "eeg"
    if average_reference and eeg.sum() > 1:
        data[eeg] -= data[eeg].mean(axis=0, keepdims=True)

    unit = np.array([UNIT_SCALE[k] for k in kind_arr])  # [C]
    bad_times = np.zeros(data.shape[1], dtype=bool)  # [T] at the new rate
    if nonfinite.any():
        bad_s = np.flatnonzero(nonfinite) / native
        bad_times[np.clip(np.round(bad_s * sfreq).astype(int), 0, data.shape[1] - 1)] = True
    bad = _is_bad(ann_desc)
    for onset, dur in zip(ann_onset[bad], ann_dur[bad], strict=True):
        lo, hi = int(np.floor(onset * sfreq)), int(np.ceil((onset + dur) * sfreq))
        bad_times[max(lo, 0) : max(hi, lo + 1)] = True

    # robust scale (MAD as SD) in model units, from clean samples (a strided subsample)
    good = data[:, ~bad_times] if bad_times.any() and (~bad_times).any() else data
    good = _subsample(good, 50_000) * unit[:, None]
    center = np.median(good, axis=1, keepdims=True)
    scale = _MAD_TO_SD * np.median(np.abs(good - center), axis=1)  # [C]
    fallback = good.std(axis=1)
    scale = np.where(scale > 0, scale, np.where(fallback > 0, fallback, 1.0))
    scaled = np.multiply(data, (unit / scale)[:, None], dtype=np.float32)  # [C, T]

    meta = {
        "modality": "meg" if np.isin(kind_arr, ("mag", "grad")).any()
        else ("eeg" if eeg.any() else "ieeg"),
        "sfreq": float(sfreq),
        "native_sfreq": float(native),
        "ch_names": list(names),
        "coil_types": [int(raw.info["chs"][i]["coil_type"]) for i in range(len(names))],
        "unit_scale": unit.tolist(),
        "channel_scale": scale.tolist(),
        "units": {"eeg": "uV", "seeg": "uV", "ecog": "uV", "mag": "fT", "grad": "fT/cm"},
        "filter": {"l_freq": l_freq, "h_freq": used_h, "line_freq": used_line,
                   "average_reference": bool(average_reference)},
        "dropped_channels": dropped,
        "other_channel_types": other_types,
        "source": source,
        "dataset": dataset,
        **(entities if entities is not None else entities_from_name(source)),
    }
    good_events = ~bad
    return _Continuous(
        data=scaled,
        positions=positions.astype(np.float32),
        orientations=orientations.astype(np.float32),
        kinds=tuple(kind_arr.tolist()),
        sfreq=float(sfreq),
        bad_times=bad_times,
        first_time=float(raw.first_time),
        events=(ann_onset[good_events], ann_dur[good_events], ann_desc[good_events]),
        meta=meta,
    )


def _window_reject(
    cont: _Continuous, starts: np.ndarray, length: int, reject_scaled: float | None
) -> np.ndarray:
    """Reason per window ('' = keep): NaN/BAD samples or extreme scaled amplitude."""
    from numpy.lib.stride_tricks import sliding_window_view

    reasons = np.full(len(starts), "", dtype=object)
    if len(starts) == 0:
        return reasons
    bad = sliding_window_view(cont.bad_times, length)[starts].any(axis=1)
    reasons[bad] = "NaN/inf samples or BAD annotation"
    if reject_scaled is not None:
        peak = np.abs(cont.data).max(axis=0)  # [T]
        extreme = sliding_window_view(peak, length)[starts].max(axis=1) > reject_scaled
        reasons[extreme & ~bad] = f"amplitude above {reject_scaled:g} robust SDs"
    return reasons


def _segments(
    cont: _Continuous, starts: np.ndarray, length: int, reject_scaled: float | None,
    extra_meta: list[dict[str, Any]] | None = None,
) -> Segments:
    reasons = _window_reject(cont, starts, length, reject_scaled)
    onsets, durations, descs = cont.events
    order = np.argsort(onsets, kind="stable")
    onsets, durations, descs = onsets[order], durations[order], descs[order]
    start_s = starts / cont.sfreq
    first = np.searchsorted(onsets, start_s, side="left")
    last = np.searchsorted(onsets, start_s + length / cont.sfreq, side="left")
    segments = Segments(report={
        "source": cont.meta["source"],
        "n_windows": int(len(starts)),
        "rejected": [
            {"onset_s": float(s), "reason": r} for s, r in zip(start_s, reasons, strict=True) if r
        ],
        "dropped_channels": cont.meta["dropped_channels"],
        "line_freq": cont.meta["filter"]["line_freq"],
    })
    for k, (start, reason) in enumerate(zip(starts, reasons, strict=True)):
        if reason:
            continue
        sl = slice(first[k], last[k])
        events = [
            {"onset_s": float(o - start_s[k]), "duration_s": float(d), "label": str(lab)}
            for o, d, lab in zip(onsets[sl], durations[sl], descs[sl], strict=True)
        ]
        meta = dict(cont.meta, onset_s=float(start_s[k]), events=events)
        if extra_meta is not None:
            meta.update(extra_meta[k])
        segments.append(Segment(
            signal=cont.data[:, start : start + length].copy(),
            positions=cont.positions,
            orientations=cont.orientations,
            kinds=cont.kinds,
            meta=meta,
        ))
    if segments.report["rejected"]:
        logger.info("%s: rejected %d of %d windows", cont.meta["source"],
                    len(segments.report["rejected"]), len(starts))
    return segments


def tokenize_raw(
    raw: mne.io.BaseRaw | str | os.PathLike,
    window_s: float = 10.0,
    stride_s: float | None = None,
    sfreq: float = 200.0,
    *,
    l_freq: float | None = 0.5,
    h_freq: float | None = None,
    line_freq: float | str | None = "auto",
    kinds: tuple[str, ...] = MEEG_KINDS,
    montage: str | mne.channels.DigMontage = "auto",
    on_missing_positions: str = "raise",
    average_reference: bool = False,
    drop_flat: bool = True,
    reject_scaled: float | None = 50.0,
    tmin_s: float | None = None,
    tmax_s: float | None = None,
    events_from: str = "auto",
    dataset: str | None = None,
    entities: dict[str, str] | None = None,
    allow_truncated: bool = False,
) -> Segments:
    """Cut an EEG/MEG/iEEG recording into geometry-carrying windows.

    Parameters
    ----------
    raw : mne.io.BaseRaw | path-like
        A Raw (not modified) or any file :func:`read_recording` reads. Files are
        read lazily; only the kept channels (and ``tmin_s``..``tmax_s``) load.
    window_s, stride_s : float
        Window length and step in seconds (``stride_s=None``: no overlap).
    sfreq : float
        Target sampling rate in Hz.
    l_freq, h_freq : float | None
        Band-pass edges in Hz; ``h_freq=None`` is ``0.45 * min(sfreq, native rate)``.
        An explicit ``h_freq`` above the native Nyquist frequency is an error.
    line_freq : float | 'auto' | None
        Mains frequency to notch (with harmonics below ``h_freq``); ``'auto'``
        takes ``info['line_freq']`` or detects a 50/60 Hz peak; None: no notch.
    kinds : tuple of str
        Sensor kinds to keep, among ``'eeg', 'mag', 'grad', 'seeg', 'ecog'``.
    montage : str | DigMontage
        Where EEG channels without positions are looked up by name (``'auto'``:
        HydroCel nets for EGI ``E<n>`` names, else ``'standard_1005'``).
    on_missing_positions : 'raise' | 'drop'
        What to do with channels that still have no position.
    average_reference : bool
        Re-reference EEG channels to their average.
    drop_flat : bool
        Drop flat, saturated and all-NaN channels (recorded in ``meta``).
    reject_scaled : float | None
        Reject windows whose scaled amplitude exceeds this many robust SDs.
    tmin_s, tmax_s : float | None
        Crop the recording before loading (seconds).
    events_from : 'auto' | 'annotations' | 'stim'
        Where window events come from; ``'auto'`` uses annotations, or the stim
        channel when there are none.
    dataset : str | None
        Dataset name stored in ``meta``.
    entities : dict | None
        Subject/session/task/run; default parsed from a BIDS file name.
    allow_truncated : bool
        Read a file shorter than its header says instead of raising.

    Returns
    -------
    segments : Segments
        ``list[Segment]`` with ``.report``: rejected windows and dropped
        channels with reasons. Signals are float32 ``[C, window_s * sfreq]``.
    """
    stride_s = window_s if stride_s is None else stride_s
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"window_s and stride_s must be positive, got {window_s}, {stride_s}")
    cont = _continuous(
        raw, sfreq=sfreq, l_freq=l_freq, h_freq=h_freq, line_freq=line_freq, kinds=tuple(kinds),
        montage=montage, on_missing_positions=on_missing_positions,
        average_reference=average_reference, drop_flat=drop_flat, tmin_s=tmin_s, tmax_s=tmax_s,
        min_duration_s=window_s, events_from=events_from, dataset=dataset, entities=entities,
        allow_truncated=allow_truncated,
    )
    length = int(round(window_s * sfreq))
    step = int(round(stride_s * sfreq))
    n_times = cont.data.shape[1]
    if n_times < length:  # resampling rounded a recording of exactly one window down
        raise RecordingTooShortError(
            f"recording has {n_times} samples at {sfreq:g} Hz, fewer than one window ({length})",
            cont.meta["source"], duration_s=n_times / sfreq,
        )
    starts = np.arange(0, n_times - length + 1, step)
    return _segments(cont, starts, length, reject_scaled)


def tokenize_events(
    raw: mne.io.BaseRaw | str | os.PathLike,
    event_id: dict[str, int] | list[str] | None = None,
    tmin: float = -0.2,
    tmax: float = 0.8,
    *,
    events: np.ndarray | None = None,
    sfreq: float = 200.0,
    reject_scaled: float | None = 50.0,
    **options: Any,
) -> Segments:
    """Event-locked windows (what decoding tasks use).

    Parameters
    ----------
    raw : mne.io.BaseRaw | path-like
        The recording.
    event_id : dict | list of str | None
        Which events to keep, by label (annotation description or stim code);
        a dict maps labels to codes as in MNE. None keeps every event.
    tmin, tmax : float
        Window around each event onset in seconds.
    events : ndarray, shape (n_events, 3) | None
        MNE events array (sample, 0, code) to use instead of annotations/stim.
    sfreq, reject_scaled, **options
        As in :func:`tokenize_raw`.

    Returns
    -------
    segments : Segments
        One segment per kept event; ``meta['label']`` is the event label and
        ``meta['event_onset_s']`` its onset in the recording.
    """
    if tmax <= tmin:
        raise ValueError(f"tmax ({tmax}) must be after tmin ({tmin})")
    if events is not None:
        options["events_from"] = "annotations"
    # the same options and defaults as tokenize_raw, read from its signature
    defaults = {name: p.default for name, p in inspect.signature(tokenize_raw).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "reject_scaled"}
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"tokenize_events got unknown options {sorted(unknown)}; "
                        f"it takes those of tokenize_raw: {sorted(defaults)}")
    cont = _continuous(raw, sfreq=sfreq, min_duration_s=tmax - tmin, **{**defaults, **options})
    if events is not None:
        events = np.asarray(events)
        onsets = events[:, 0] / cont.meta["native_sfreq"] - cont.first_time
        descs = np.array([str(c) for c in events[:, 2]], dtype=object)
    else:
        onsets, _, descs = cont.events
    if event_id is not None:
        codes = event_id if isinstance(event_id, dict) else {str(k): k for k in event_id}
        by_label = {str(k): str(k) for k in codes} | {str(v): str(k) for k, v in codes.items()}
        keep = np.array([d in by_label for d in descs], dtype=bool)
        onsets = onsets[keep]
        descs = np.array([by_label[d] for d in descs[keep]], dtype=object)
    length = int(round((tmax - tmin) * sfreq))
    starts = np.round((onsets + tmin) * sfreq).astype(int)
    inside = (starts >= 0) & (starts + length <= cont.data.shape[1])
    if not inside.any():
        raise RecordingError(
            f"none of {len(onsets)} events has a full window [{tmin}, {tmax}] s inside the "
            "recording; check event_id and tmin/tmax",
            cont.meta["source"],
        )
    extra = [{"label": str(d), "event_onset_s": float(o)}
             for d, o in zip(descs[inside], onsets[inside], strict=True)]
    segments = _segments(cont, starts[inside], length, reject_scaled, extra_meta=extra)
    segments.report["events_outside"] = int((~inside).sum())
    return segments
