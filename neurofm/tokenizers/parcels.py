"""Parcel time series -> Segments, shared by 4-D BOLD (:mod:`neurofm.tokenizers.fmri`) and ROI
tables (:mod:`neurofm.tokenizers.roi_table`): cleaning, resampling to a common TR, the
metadata every parcel segment carries, and windows in seconds.

numpy only at import: scipy and nilearn are imported by the steps that need them, so a
prepare worker that reads ROI tables starts fast.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurofm.errors import BoldError, BoldTooShortError
from neurofm.options import option_name
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.segment import Segment, Segments

PLAUSIBLE_TR_S = (0.05, 20.0)


def clean_series(series, tr_s, confounds, detrend, standardize, low_pass, high_pass):
    """``nilearn.signal.clean`` of ``[T, P]`` series. Linear detrend and z-score alone (the
    default for ROI tables) take the same arithmetic in numpy: importing nilearn.signal costs
    each prepare worker about a second, more than tokenizing a hundred tables."""
    if confounds is None and not (low_pass or high_pass):
        series = np.array(series, dtype=np.float64)
        n = series.shape[0]
        if n < 2 or not (detrend or standardize):
            return series
        series -= series.mean(axis=0)
        if detrend:  # least-squares line through each column (its mean is already gone)
            ramp = np.arange(n) - (n - 1) / 2
            series -= np.outer(ramp, ramp @ series / (ramp @ ramp))
        if standardize:
            std = series.std(axis=0, ddof=1)
            std[std < np.finfo(np.float64).eps] = 1.0
            series /= std
        return series

    from nilearn.signal import clean  # nilearn costs ~1 s to import: only fMRI work pays it

    return clean(
        series, detrend=detrend, standardize="zscore_sample" if standardize else False,
        confounds=confounds, low_pass=low_pass, high_pass=high_pass, t_r=tr_s,
        filter="butterworth" if (low_pass or high_pass) else False,
    )


def resample_series(signals: np.ndarray, tr_s: float, new_tr_s: float) -> np.ndarray:
    """Resample ``[T, P]`` series from ``tr_s`` to ``new_tr_s`` seconds.

    Cubic-spline interpolation onto the new grid (same start, up to the last
    original sample); when downsampling, a zero-phase 5th-order Butterworth
    low-pass at 0.9x the new Nyquist frequency first prevents aliasing.
    """

    from scipy.interpolate import CubicSpline  # scipy.signal/interpolate cost ~1 s to import:
    from scipy.signal import butter, sosfiltfilt  # only resampling runs pay for them

    n = signals.shape[0]
    if new_tr_s > tr_s and n > 18:
        sos = butter(5, 0.9 * (0.5 / new_tr_s), fs=1.0 / tr_s, output="sos")
        signals = sosfiltfilt(sos, signals, axis=0)
    times = np.arange(n) * tr_s
    new_times = np.arange(0.0, times[-1] + 1e-9, new_tr_s)
    return CubicSpline(times, signals, axis=0)(new_times)


def series_windows(
    series: np.ndarray, tr_s: float, window_s: float, stride_s: float | None, meta: dict,
    positions: np.ndarray, where: str,
) -> Segments:
    """Cut ``[T, P]`` series into segments of ``window_s`` seconds."""
    length = int(round(window_s / tr_s))
    step = max(1, int(round((stride_s or window_s) / tr_s)))
    n_times = series.shape[0]
    if length < 1:
        raise BoldError(f"window_s={window_s:g} s is shorter than one TR ({tr_s:g} s)", where)
    if n_times < length:
        raise BoldTooShortError(
            f"{n_times} timepoints x {tr_s:g} s = {n_times * tr_s:g} s, fewer than one window "
            f"({window_s:g} s); pass a smaller {option_name('window_s')}", where, duration_s=n_times * tr_s)
    starts = np.arange(0, n_times - length + 1, step)
    signal = np.ascontiguousarray(series.T, dtype=np.float32)  # [P, T]
    n = signal.shape[0]
    orientations = np.zeros((n, 3), np.float32)
    kinds = ("parcel",) * n
    segments = Segments(report={"source": where, "n_windows": int(len(starts)), "rejected": [],
                                "dropped_parcels": meta.get("dropped_parcels", {})})
    for start in starts:
        segments.append(Segment(
            signal=signal[:, start : start + length].copy(),
            positions=positions,
            orientations=orientations,
            kinds=kinds,
            meta=dict(meta, onset_s=float(start * tr_s), events=[]),
        ))
    return segments


def parcel_segments(
    series: np.ndarray, tr_s: float, *, resample_tr_s: float | None, window_s: float,
    stride_s: float | None, positions_mm: np.ndarray, where: str, n_volumes: int, standardize: bool,
    dataset: str | None, entities: dict | None, parcel_valid: np.ndarray | None, **meta: Any,
) -> Segments:
    """The tail both parcel tokenizers share: cleaned ``[T, P]`` ``series`` at ``tr_s``,
    resampled to ``resample_tr_s`` (when given and different), with the metadata of every
    parcel segment (rate, TR, units, source, dataset and entities, and ``meta``: atlas, labels,
    names, what was dropped), cut into windows. ``parcel_valid``: the parcels kept as zero
    series (``empty_parcels='keep'``), recorded in ``meta['parcel_valid']``."""
    native_tr = float(tr_s)
    if resample_tr_s is not None and not np.isclose(resample_tr_s, tr_s):
        series = resample_series(series, tr_s, resample_tr_s)
        tr_s = float(resample_tr_s)
    n = series.shape[1]
    meta = {
        "modality": "fmri",
        "sfreq": 1.0 / tr_s,
        "tr_s": tr_s,
        "native_tr_s": native_tr,
        "n_volumes": int(n_volumes),
        **meta,
        "unit_scale": [1.0] * n,
        "channel_scale": [1.0] * n,
        "source": where,
        "dataset": dataset,
        **(entities if entities is not None else entities_from_name(where)),
    }
    meta.setdefault("units", {"parcel": "z-score" if standardize else "a.u."})
    if parcel_valid is not None:
        meta["parcel_valid"] = np.asarray(parcel_valid).tolist()
    positions = (np.asarray(positions_mm, dtype=np.float64) / 1000.0).astype(np.float32)
    return series_windows(series, tr_s, window_s, stride_s, meta, positions, where)
