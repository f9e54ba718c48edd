""":class:`MeegOptions`: how an EEG/MEG/iEEG recording is cleaned, the one place of their
defaults; :class:`FmriOptions`: the same for the cleaning of an fMRI run's parcel series.

``tokenize_raw``, ``tokenize_events``, ``neurofm prepare`` (``+meeg.<name>=``), ``neurofm
finetune`` and ``neurofm embed`` (``+tokenizer.<name>=``) all take these fields and nothing
else; a misspelt name is one line listing the valid ones. An input contract records both
(:mod:`neurofm.tokenizers.contract`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from neurofm.errors import ConfigError
from neurofm.options import check_keywords, check_option

MEEG_KINDS = ("eeg", "mag", "grad")
IEEG_KINDS = ("seeg", "ecog")
SENSOR_KINDS = MEEG_KINDS + IEEG_KINDS


@dataclass(frozen=True)
class MeegOptions:
    """Cleaning of one EEG/MEG/iEEG recording (windowing is the caller's: ``window_s``).

    Attributes
    ----------
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
    allow_truncated : bool
        Read a file shorter than its header says instead of raising.
    """

    sfreq: float = 200.0
    l_freq: float | None = 0.5
    h_freq: float | None = None
    line_freq: float | str | None = "auto"
    kinds: tuple[str, ...] = MEEG_KINDS
    montage: Any = "auto"
    on_missing_positions: str = "raise"
    average_reference: bool = False
    drop_flat: bool = True
    reject_scaled: float | None = 50.0
    tmin_s: float | None = None
    tmax_s: float | None = None
    events_from: str = "auto"
    allow_truncated: bool = False

    def __post_init__(self) -> None:
        check_option("on_missing_positions", self.on_missing_positions, ("raise", "drop"))
        check_option("events_from", self.events_from, ("auto", "annotations", "stim"))
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        for kind in kinds:
            check_option("kinds", kind, SENSOR_KINDS)
        object.__setattr__(self, "kinds", kinds)
        if self.sfreq is None or float(self.sfreq) <= 0:
            raise ConfigError(f"sfreq must be a positive rate in Hz, got {self.sfreq!r}")
        if isinstance(self.line_freq, str) and self.line_freq != "auto":
            raise ConfigError(f"line_freq must be a frequency in Hz, 'auto' or null, got {self.line_freq!r}")

    @classmethod
    def of(cls, options: Mapping[str, Any] | None = None, spelled: str = "{}",
           base: MeegOptions | None = None) -> MeegOptions:
        """``base`` (default: the defaults) with ``options`` replaced; an unknown name is a
        :class:`ConfigError` naming it as the user spelled it (``spelled``: ``'+meeg.{}='``)."""
        options = check_keywords(dict(options or {}), MEEG_OPTION_NAMES, spelled)
        return replace(base or cls(), **options)


MEEG_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(MeegOptions))


@dataclass(frozen=True)
class FmriOptions:
    """Cleaning of one fMRI run's parcel series (``tokenize_bold``, ``tokenize_roi_table``;
    ``low_pass`` and ``high_pass`` are BOLD's: ROI tables come filtered or not as released).

    Attributes
    ----------
    resample_tr_s : float | None
        Resample every run to this TR, s; None: each run's native TR (the time embedding
        reads seconds, so mixed TRs share one model).
    detrend, standardize : bool
        Remove each parcel's linear trend; z-score it over the run.
    low_pass, high_pass : float | None
        Butterworth edges in Hz (nilearn's ``signal.clean``); None: no filter.
    """

    resample_tr_s: float | None = None
    detrend: bool = True
    standardize: bool = True
    low_pass: float | None = None
    high_pass: float | None = None

    def __post_init__(self) -> None:
        for name in ("resample_tr_s", "low_pass", "high_pass"):
            value = getattr(self, name)
            if value is not None and float(value) <= 0:
                raise ConfigError(f"{name} must be positive or null, got {value!r}")

    @classmethod
    def of(cls, options: Mapping[str, Any] | None = None, spelled: str = "{}") -> FmriOptions:
        """The defaults with ``options`` replaced (unknown names: a :class:`ConfigError`)."""
        return cls(**check_keywords(dict(options or {}), FMRI_OPTION_NAMES, spelled))


FMRI_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(FmriOptions))
