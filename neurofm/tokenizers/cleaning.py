"""EEG/MEG/iEEG cleaning steps: flat/saturated channels, mains-frequency detection, the
notch + resample + band-pass filter chain (MNE's), and BAD_ annotation labels."""

from __future__ import annotations

import warnings

import mne
import numpy as np
from scipy.signal import oaconvolve, welch

from neurofm.errors import RecordingError
from neurofm.options import option_name

ONE_PASS_MIN_S = 60.0  # recordings at least this long are notched and band-passed in one pass


def subsample(data: np.ndarray, max_samples: int = 5_000) -> np.ndarray:
    """A strided view with about ``max_samples`` per channel (at most twice as many), for
    channel statistics."""
    step = max(1, data.shape[1] // max_samples)
    return data[:, ::step]


def row_median(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=1)`` for finite ``x``, from one single-point partition (numpy's
    median partitions around two points for an even length, 4x slower)."""
    k = x.shape[1] // 2
    part = np.partition(x, k, axis=1)
    upper = part[:, k]
    return upper if x.shape[1] % 2 else (part[:, :k].max(axis=1) + upper) / 2


def flat_or_saturated(data: np.ndarray, kinds: np.ndarray) -> dict[int, str]:
    """Indices of channels that are flat (no variance), clipped at the ADC rail, or all NaN.

    Statistics come from an evenly strided subsample (about 5k samples per channel): a
    flat or clipped channel is so throughout.
    """
    view = subsample(data)
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
            if np.unique(clean[i]).size < 16:
                continue
            flagged.setdefault(int(i), f"saturated ({at_rail[i]:.0%} of samples at the rail)")
    if not finite.all():
        for i in np.flatnonzero(~np.isfinite(data).any(axis=1)):
            flagged[int(i)] = "all samples NaN/inf"
    return flagged



def detect_line_freq(data: np.ndarray, sfreq: float) -> float | None:
    """Mains frequency (50 or 60 Hz) if a clear spectral peak is there, else None.

    Uses the median log-spectrum across channels of the data given; a peak
    counts when its power is at least 5x the median of its 2-5 Hz neighbourhood.
    """

    candidates = [f for f in (50.0, 60.0) if f < sfreq / 2 - 5]
    if not candidates or data.shape[1] < 2 * sfreq:
        return None
    # no detrending: a DC offset does not leak to 50/60 Hz through the Hann window (and
    # scipy's constant detrend costs as much as the spectra)
    freqs, psd = welch(data, fs=sfreq, nperseg=int(2 * sfreq), axis=-1, detrend=False)
    logp = np.median(np.log(psd + np.finfo(float).tiny), axis=0)
    scores = {}
    for f0 in candidates:
        peak = logp[np.argmin(np.abs(freqs - f0))]
        ring = (np.abs(freqs - f0) >= 2) & (np.abs(freqs - f0) <= 5)
        scores[f0] = peak - np.median(logp[ring])
    best = max(scores, key=scores.get)
    return best if scores[best] > np.log(5.0) else None



def filter_raw(
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
        line_freq = raw.info["line_freq"] or detect_line_freq(raw.get_data(stop=int(30 * native)), native)
    quiet = {"verbose": "error"}
    if l_freq is not None and l_freq >= h_freq:
        raise RecordingError(f"at {native:g} Hz the band top is {h_freq:g} Hz, not above l_freq="
                             f"{l_freq:g} Hz: is the sampling rate right? Otherwise lower l_freq", source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # filter longer than a short recording: MNE pads
            # one pass (notch folded into the band-pass, after resampling) where the recording
            # is long against the kernels (13 s); short ones take MNE's three calls
            one_pass = raw.n_times / native >= ONE_PASS_MIN_S
            nyquist = (min(native, sfreq) if one_pass else native) / 2  # where the notch runs
            notches = np.arange(line_freq, min(h_freq + line_freq, nyquist), line_freq) if line_freq else []
            notches = np.asarray([f for f in notches if f < nyquist - 1])
            if len(notches) and not one_pass:
                raw.notch_filter(notches, picks="all", **quiet)
            if not np.isclose(native, sfreq):
                raw.resample(sfreq, npad="auto", **quiet)
            if len(notches) and one_pass:
                notch_and_band_pass(raw, notches, l_freq, h_freq)
            else:
                raw.filter(l_freq, h_freq, picks="all", **quiet)
    except ValueError as err:  # MNE's filter design refuses bands it cannot build at this rate
        raise RecordingError(f"cannot filter {l_freq}-{h_freq:g} Hz at {native:g} Hz ({err}); "
                             f"check the sampling rate, or pass {option_name('l_freq')} / {option_name('h_freq')}", source) from err
    return (float(line_freq) if line_freq else None), float(h_freq)



def notch_and_band_pass(raw: mne.io.BaseRaw, notches: np.ndarray, l_freq: float | None, h_freq: float) -> None:
    """MNE's notch filter at ``notches`` and its band-pass ``l_freq``-``h_freq`` (the FIR
    kernels ``raw.notch_filter`` and ``raw.filter`` design, zero phase), applied to ``raw``
    in place as one kernel in one pass: half the cost of two filtering passes, the same
    samples away from the edges (the edges are padded as MNE does: odd reflection of the
    signal, limited to its length, then zeros)."""
    sfreq = raw.info["sfreq"]
    quiet = {"verbose": "error"}
    band = mne.filter.create_filter(None, sfreq, l_freq, h_freq, **quiet)
    # raw.notch_filter's defaults: width freq / 200, transition bands 0.5 Hz either side
    widths = notches / 200.0
    stop = mne.filter.create_filter(None, sfreq, notches + widths / 2 + 0.5, notches - widths / 2 - 0.5,
                                    l_trans_bandwidth=0.5, h_trans_bandwidth=0.5, **quiet)
    kernel = np.convolve(band, stop)  # symmetric, odd length: zero phase with mode="same"

    def one_pass(data: np.ndarray) -> np.ndarray:  # [C, T]
        n, pad = data.shape[1], len(kernel)
        reflect = min(pad, n - 1)
        padded = np.pad(data, ((0, 0), (reflect, reflect)), mode="reflect", reflect_type="odd")
        padded = np.pad(padded, ((0, 0), (pad - reflect, pad - reflect)))
        return oaconvolve(padded, kernel[None], mode="same", axes=-1)[:, pad : pad + n]

    raw.apply_function(one_pass, picks="all", channel_wise=False)


def is_bad_label(labels: np.ndarray) -> np.ndarray:
    return np.array([str(d).upper().startswith(("BAD", "EDGE")) for d in labels], dtype=bool)
