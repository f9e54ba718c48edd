"""Sensor-aware EEG/MEG/iEEG tokenizer.

A recording in any format MNE reads becomes :class:`Segment` windows whose
sensors carry their geometry (head-frame position, coil normal, kind), so the
model never depends on channel names or a fixed montage.

Pipeline (one pass over the data, MNE for every signal operation; each cleaning step is a
named function of :mod:`neurofm.tokenizers.steps`)::

    read lazily -> pick EEG/MEG(/iEEG) -> drop bads, flat, saturated, no-position
    -> load only the kept channels -> notch (configured or detected) -> resample
    -> band-pass -> (average reference) -> physical units (uV, fT, fT/cm)
    -> robust per-channel scale -> windows (reject NaN / BAD / extreme) -> Segments
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import mne
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from neurofm.errors import RecordingError, RecordingTooShortError
from neurofm.tokenizers.cleaning import (
    filter_raw,
    is_bad_label,
)
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.options import MeegOptions
from neurofm.tokenizers.recording import (  # noqa: F401  (read_recording: importable from here)
    annotation_events,
    as_raw,
    read_recording,
    stim_events,
)
from neurofm.tokenizers.segment import Segment, Segments
from neurofm.tokenizers.steps import (
    average_reference,
    bad_times_of,
    crop_and_check_length,
    drop_flat,
    events_of,
    pick_and_load,
    robust_scale,
    zero_nonfinite,
)

logger = logging.getLogger("neurofm.tokenizers")

# Physical unit -> model unit: EEG/iEEG in uV, magnetometers in fT, gradiometers in fT/cm.
UNIT_SCALE = {"eeg": 1e6, "seeg": 1e6, "ecog": 1e6, "mag": 1e15, "grad": 1e13}
UNITS = {"eeg": "uV", "seeg": "uV", "ecog": "uV", "mag": "fT", "grad": "fT/cm"}


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


def modality_of(kinds) -> str:
    """'meg' if any sensor is a magnetometer or gradiometer, else 'eeg' if any is EEG, else 'ieeg'."""
    kinds = np.asarray(kinds)
    return "meg" if np.isin(kinds, ("mag", "grad")).any() else ("eeg" if (kinds == "eeg").any() else "ieeg")


# --------------------------------------------------------------------------- core


def _continuous(
    raw_or_path,
    options: MeegOptions,
    *,
    min_duration_s: float,
    dataset: str | None,
    entities: dict[str, str] | None,
    events_from: str | None = None,
) -> _Continuous:
    """The cleaning steps, in order, each one named function (MNE for every signal operation;
    the recording's samples change only through MNE's own methods)."""
    o = options
    raw, source = as_raw(raw_or_path, o.allow_truncated)
    native = crop_and_check_length(raw, o.tmin_s, o.tmax_s, min_duration_s, source)
    events = events_of(raw, events_from or o.events_from)
    channels = pick_and_load(raw, o, source)
    if o.drop_flat:
        channels = drop_flat(raw, channels, source)
    nonfinite = zero_nonfinite(raw, source)
    used_line, used_h = filter_raw(raw, float(o.sfreq), o.l_freq, o.h_freq, o.line_freq, source)
    if o.average_reference:
        average_reference(raw, channels.kinds)
    bad_times = bad_times_of(nonfinite, native, float(o.sfreq), len(raw.times), events)
    unit = np.array([UNIT_SCALE[k] for k in channels.kinds])  # [C]
    scaled, scale = robust_scale(raw, unit, bad_times)
    kinds = np.array(channels.kinds)
    meta = {
        "modality": modality_of(kinds),
        "sfreq": float(o.sfreq),
        "native_sfreq": float(native),
        "ch_names": list(channels.names),
        "coil_types": [int(raw.info["chs"][i]["coil_type"]) for i in range(len(channels.names))],
        "unit_scale": unit.tolist(),
        "channel_scale": scale.tolist(),
        "units": UNITS,
        "filter": {"l_freq": o.l_freq, "h_freq": used_h, "line_freq": used_line,
                   "average_reference": bool(o.average_reference)},
        "dropped_channels": channels.dropped,
        "other_channel_types": channels.other_types,
        "source": source,
        "dataset": dataset,
        **(entities if entities is not None else entities_from_name(source)),
    }
    good = ~is_bad_label(events[2])
    return _Continuous(
        data=scaled,
        positions=channels.positions.astype(np.float32),
        orientations=channels.orientations.astype(np.float32),
        kinds=channels.kinds,
        sfreq=float(o.sfreq),
        bad_times=bad_times,
        first_time=float(raw.first_time),
        events=(events[0][good], events[1][good], events[2][good]),
        meta=meta,
    )


def _window_reject(
    cont: _Continuous, starts: np.ndarray, length: int, reject_scaled: float | None
) -> np.ndarray:
    """Reason per window ('' = keep): NaN/BAD samples or extreme scaled amplitude."""

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
    *,
    options: MeegOptions | None = None,
    dataset: str | None = None,
    entities: dict[str, str] | None = None,
    **overrides: Any,
) -> Segments:
    """Cut an EEG/MEG/iEEG recording into geometry-carrying windows.

    Parameters
    ----------
    raw : mne.io.BaseRaw | path-like
        A Raw (not modified) or any file :func:`read_recording` reads. Files are
        read lazily; only the kept channels (and ``tmin_s``..``tmax_s``) load.
    window_s, stride_s : float
        Window length and step in seconds (``stride_s=None``: no overlap).
    options : MeegOptions | None
        Cleaning (rate, filters, channel kinds, montage, rejection ...); default
        ``MeegOptions()``.
    **overrides
        Any :class:`~neurofm.tokenizers.options.MeegOptions` field, replacing
        ``options``'s (``sfreq=128``, ``montage='biosemi64'`` ...).
    dataset : str | None
        Dataset name stored in ``meta``.
    entities : dict | None
        Subject/session/task/run; default parsed from a BIDS file name.

    Returns
    -------
    segments : Segments
        ``list[Segment]`` with ``.report``: rejected windows and dropped
        channels with reasons. Signals are float32 ``[C, window_s * sfreq]``.
    """
    stride_s = window_s if stride_s is None else stride_s
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"window_s and stride_s must be positive, got {window_s}, {stride_s}")
    options = MeegOptions.of(overrides, base=options)
    cont = _continuous(raw, options, min_duration_s=window_s, dataset=dataset, entities=entities)
    sfreq = options.sfreq
    length = int(round(window_s * sfreq))
    step = int(round(stride_s * sfreq))
    n_times = cont.data.shape[1]
    if n_times < length:  # resampling rounded a recording of exactly one window down
        raise RecordingTooShortError(
            f"recording has {n_times} samples at {sfreq:g} Hz, fewer than one window ({length})",
            cont.meta["source"], duration_s=n_times / sfreq,
        )
    starts = np.arange(0, n_times - length + 1, step)
    return _segments(cont, starts, length, options.reject_scaled)


def tokenize_events(
    raw: mne.io.BaseRaw | str | os.PathLike,
    event_id: dict[str, int] | list[str] | None = None,
    tmin: float = -0.2,
    tmax: float = 0.8,
    *,
    events: np.ndarray | None = None,
    options: MeegOptions | None = None,
    dataset: str | None = None,
    entities: dict[str, str] | None = None,
    **overrides: Any,
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
    options, dataset, entities, **overrides
        As in :func:`tokenize_raw`.

    Returns
    -------
    segments : Segments
        One segment per kept event; ``meta['label']`` is the event label and
        ``meta['event_onset_s']`` its onset in the recording.
    """
    if tmax <= tmin:
        raise ValueError(f"tmax ({tmax}) must be after tmin ({tmin})")
    options = MeegOptions.of(overrides, base=options)
    sfreq, reject_scaled = options.sfreq, options.reject_scaled
    cont = _continuous(raw, options, min_duration_s=tmax - tmin, dataset=dataset, entities=entities,
                       events_from="annotations" if events is not None else None)
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
