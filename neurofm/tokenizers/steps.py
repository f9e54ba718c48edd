"""The cleaning steps of one EEG/MEG/iEEG recording, each a named function, in the order
:func:`neurofm.tokenizers.eeg_meg.tokenize_raw` runs them::

    crop_and_check_length -> events_of -> pick_and_load -> drop_flat -> zero_nonfinite
    -> filter_raw (notch, resample, band-pass) -> average_reference -> bad_times_of
    -> robust_scale

MNE does every signal operation; the recording's samples change only through MNE's own
methods (``pick``, ``crop``, ``apply_function``, ``set_eeg_reference``, the filters).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import mne
import numpy as np

from neurofm.errors import RecordingError, RecordingTooShortError
from neurofm.options import option_name
from neurofm.tokenizers.channels import select_channels
from neurofm.tokenizers.cleaning import flat_or_saturated, is_bad_label, row_median, subsample
from neurofm.tokenizers.options import MeegOptions
from neurofm.tokenizers.recording import annotation_events, stim_events

_MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class Channels:
    """The channels kept so far, in the recording's order, and why the others went."""

    names: list[str]
    positions: np.ndarray       # [C, 3]
    orientations: np.ndarray    # [C, 3]
    kinds: tuple[str, ...]
    dropped: dict[str, str]
    other_types: Any

    def keep(self, index: np.ndarray) -> Channels:
        return Channels([self.names[i] for i in index], self.positions[index], self.orientations[index],
                         tuple(self.kinds[i] for i in index), self.dropped, self.other_types)


def crop_and_check_length(raw: mne.io.BaseRaw, tmin_s: float | None, tmax_s: float | None,
                           min_duration_s: float, source: str) -> float:
    """Crop to ``[tmin_s, tmax_s]``; refuse a recording shorter than one window. Returns the
    native rate."""
    if tmin_s is not None or tmax_s is not None:
        raw.crop(tmin=tmin_s or 0.0, tmax=None if tmax_s is None else min(tmax_s, raw.times[-1]))
    native = raw.info["sfreq"]
    duration = raw.n_times / native
    if raw.n_times == 0:
        raise RecordingError("recording has no samples", source)
    if raw.n_times < 2:  # not "every channel is flat": there is nothing to look at
        raise RecordingTooShortError(f"recording has {raw.n_times} sample", source, duration_s=duration)
    if duration < min_duration_s:
        raise RecordingTooShortError(
            f"recording lasts {duration:.3f} s, shorter than one window ({min_duration_s:g} s); "
            f"pass a smaller {option_name('window_s')}",
            source, duration_s=duration,
        )
    return native


def events_of(raw: mne.io.BaseRaw, events_from: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onset s, duration s, label) of the annotations, or of the stim channel when asked or
    when the annotations hold only BAD_ spans (which are kept either way)."""
    onset, duration, label = annotation_events(raw)
    bad = is_bad_label(label)
    if events_from == "stim" or (events_from == "auto" and not (~bad).any()):
        stim_onset, stim_duration, stim_label = stim_events(raw)
        return (np.concatenate([onset[bad], stim_onset]), np.concatenate([duration[bad], stim_duration]),
                np.concatenate([label[bad], stim_label]))
    return onset, duration, label


def pick_and_load(raw: mne.io.BaseRaw, o: MeegOptions, source: str) -> Channels:
    """Keep the sensors of ``o.kinds`` that have (or get, from ``o.montage``) a position, then
    read only their samples."""
    names, positions, orientations, kinds, dropped, other_types = select_channels(
        raw, o.kinds, o.montage, o.on_missing_positions, source)
    raw.pick(names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw.load_data(verbose="error")
    except Exception as err:
        raise RecordingError(f"cannot load samples, file truncated or corrupt? ({err})", source) from err
    return Channels(list(names), positions, orientations, tuple(kinds), dropped, other_types)


def drop_flat(raw: mne.io.BaseRaw, channels: Channels, source: str) -> Channels:
    """Drop flat, saturated and all-NaN channels, each with its reason in ``dropped``."""
    flagged = flat_or_saturated(samples_of(raw), np.array(channels.kinds))
    if not flagged:
        return channels
    for i in sorted(flagged):
        channels.dropped[channels.names[i]] = flagged[i]
    keep = np.setdiff1d(np.arange(len(channels.names)), sorted(flagged))
    if len(keep) == 0:
        raise RecordingError(f"no usable channels: all {len(channels.names)} are flat, saturated or NaN", source)
    raw.pick([channels.names[i] for i in keep])
    return channels.keep(keep)


def zero_nonfinite(raw: mne.io.BaseRaw, source: str) -> np.ndarray:
    """Set NaN/inf samples to 0 so they do not spread through the filters (the windows that
    held them are rejected later); returns the ``[T]`` mask of those instants."""
    nonfinite = ~np.isfinite(samples_of(raw)).all(axis=0)
    if nonfinite.all():
        raise RecordingError("every sample is NaN or inf", source)
    if nonfinite.any():
        raw.apply_function(lambda x: np.where(nonfinite, 0.0, x), picks="all", channel_wise=False)
    return nonfinite


def average_reference(raw: mne.io.BaseRaw, kinds: tuple[str, ...]) -> None:
    """Re-reference the EEG channels to their average (MNE's ``set_eeg_reference``)."""
    if sum(k == "eeg" for k in kinds) > 1:
        raw.set_eeg_reference("average", projection=False, verbose="error")


def bad_times_of(nonfinite: np.ndarray, native: float, sfreq: float, n_times: int,
               events: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """``[T]`` at the new rate: instants that were NaN/inf, or inside a BAD_ annotation."""
    bad_times = np.zeros(n_times, dtype=bool)
    if nonfinite.any():
        bad_s = np.flatnonzero(nonfinite) / native
        bad_times[np.clip(np.round(bad_s * sfreq).astype(int), 0, n_times - 1)] = True
    onset, duration, label = events
    bad = is_bad_label(label)
    for start, length in zip(onset[bad], duration[bad], strict=True):
        lo, hi = int(np.floor(start * sfreq)), int(np.ceil((start + length) * sfreq))
        bad_times[max(lo, 0) : max(hi, lo + 1)] = True
    return bad_times


def robust_scale(raw: mne.io.BaseRaw, unit: np.ndarray, bad_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model units (uV, fT, fT/cm) divided per channel by a robust SD (MAD) of its clean
    samples (a strided subsample: a scale, not a statistic; 5k samples are ample). Returns
    the ``[C, T]`` float32 array and the ``[C]`` scales."""
    data = samples_of(raw)
    good = data[:, ~bad_times] if bad_times.any() and (~bad_times).any() else data
    scale = channel_scales(subsample(good) * unit[:, None])
    return np.multiply(data, (unit / scale)[:, None], dtype=np.float32), scale


def channel_scales(samples: np.ndarray) -> np.ndarray:
    """``[C]`` robust SD (1.4826 MAD) of each row of ``samples`` ``[C, T]``; the SD where the MAD
    is 0, and 1 where both are."""
    scale = _MAD_TO_SD * row_median(np.abs(samples - row_median(samples)[:, None]))
    fallback = samples.std(axis=1)
    return np.where(scale > 0, scale, np.where(fallback > 0, fallback, 1.0))


def samples_of(raw: mne.io.BaseRaw) -> np.ndarray:
    """The loaded ``[C, T]`` samples, read only (``get_data`` would copy a whole recording)."""
    data = raw._data.view()
    data.flags.writeable = False
    return data
