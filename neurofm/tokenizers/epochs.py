"""Epochs cleaned one at a time, with the statistics learnt in :meth:`EpochsPreprocessor.fit`.

:func:`~neurofm.tokenizers.eeg_meg.tokenize_events` cleans a continuous recording and then
cuts it. Epochs that arrive already cut (``mne.Epochs``, MOABB's and scikit-learn's arrays)
have no recording around them: joining them end to end and cleaning the join would make an
epoch's features depend on its neighbours. Here every signal step acts on each epoch alone
(MNE's functions, along time), and what needs many epochs is learnt once, in ``fit``:

- the mains frequency, when the options say ``'auto'`` and ``info['line_freq']`` is unset;
- each channel's robust scale (MAD), as :func:`~neurofm.tokenizers.steps.robust_scale` does
  over a recording.

So ``transform(X)[i] == transform(X[i:i+1])`` and the order of the epochs does not matter, as
scikit-learn asks of a transformer (``mne.decoding.Scaler`` and ``FilterEstimator`` work the
same way). Per epoch::

    notch (MNE's spectrum fit: a short epoch cannot hold a 3-s FIR notch) -> resample
    -> low-pass -> high-pass where the epoch is longer than its kernel, else a linear detrend
    (the part of a 0.5-Hz high-pass a 2-s epoch can see), skipped where ``info['highpass']``
    already reaches it -> (average reference) -> model units / the fitted scale
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import mne
import numpy as np
from scipy.signal import detrend

from neurofm.errors import EpochsError, NotFittedError
from neurofm.tokenizers.channels import select_channels
from neurofm.tokenizers.cleaning import detect_line_freq, subsample
from neurofm.tokenizers.contract import tokenizer_defaults
from neurofm.tokenizers.eeg_meg import UNIT_SCALE, UNITS, modality_of
from neurofm.tokenizers.options import MeegOptions
from neurofm.tokenizers.segment import Segment, Segments
from neurofm.tokenizers.steps import channel_scales

_QUIET = {"verbose": "error"}


@dataclass
class EpochsPreprocessor:
    """Clean ``[n_epochs, n_channels, n_times]`` epochs as the options (a checkpoint's input
    contract, :meth:`from_contract`) say, each epoch on its own.

    Attributes learnt in :meth:`fit` (``None`` before): ``ch_names_`` (the channels of the
    fitted ``info``), ``picks_`` (those kept), ``line_freq_`` and ``scale_`` (per kept channel,
    in model units).
    """

    options: MeegOptions = field(default_factory=MeegOptions)
    ch_names_: list[str] | None = None
    picks_: np.ndarray | None = None
    names_: list[str] | None = None
    positions_: np.ndarray | None = None
    orientations_: np.ndarray | None = None
    kinds_: tuple[str, ...] | None = None
    line_freq_: float | None = None
    scale_: np.ndarray | None = None

    @classmethod
    def from_contract(cls, contract: dict | None, **options: Any) -> EpochsPreprocessor:
        """The preprocessor a checkpoint's input contract asks for; ``options`` (any
        :class:`MeegOptions` field) replace the contract's. Rejection and flat-channel dropping
        are off: an estimator returns one row per epoch and the same columns on every call."""
        chosen = {**tokenizer_defaults(contract, "meeg"), **options}
        return cls(MeegOptions.of(chosen, spelled="tokenizer={{'{}': ...}}"))

    # ------------------------------------------------------------------ fit / transform

    def fit(self, data: np.ndarray, info: mne.Info) -> EpochsPreprocessor:
        """Learn the channels, the mains frequency (``'auto'``) and each channel's scale from
        ``data`` (``[n_epochs, n_channels, n_times]``, volts / teslas)."""
        data = self._checked(data, info, fitted=False)
        raw = mne.io.RawArray(np.zeros((len(info["ch_names"]), 1)), info.copy(), **_QUIET)
        o = self.options
        names, positions, orientations, kinds, _, _ = select_channels(raw, o.kinds, o.montage,
                                                                      o.on_missing_positions, "epochs")
        self.ch_names_ = list(info["ch_names"])
        self.picks_ = np.array([self.ch_names_.index(n) for n in names])
        self.names_, self.kinds_ = list(names), tuple(kinds)
        self.positions_ = np.asarray(positions, dtype=np.float32)
        self.orientations_ = np.asarray(orientations, dtype=np.float32)
        line = o.line_freq
        if line == "auto":
            native = info["sfreq"]
            joined = data[:, self.picks_].transpose(1, 0, 2).reshape(len(names), -1)
            line = info["line_freq"] or detect_line_freq(joined, native)
        self.line_freq_ = float(line) if line else None
        clean = self._clean(data, info, self.filters(info, data.shape[-1]))
        self.scale_ = channel_scales(subsample(clean.transpose(1, 0, 2).reshape(len(names), -1)))
        return self

    def transform(self, data: np.ndarray, info: mne.Info, source: str = "epochs") -> Segments:
        """One :class:`Segment` per epoch, in order (none rejected, the fitted channels)."""
        if self.scale_ is None:
            raise NotFittedError("EpochsPreprocessor is not fitted: call fit(data, info) first")
        data = self._checked(data, info, fitted=True)
        plan = self.filters(info, data.shape[-1])
        clean = (self._clean(data, info, plan) / self.scale_[:, None]).astype(np.float32)
        unit = [UNIT_SCALE[k] for k in self.kinds_]
        meta = {
            "modality": modality_of(self.kinds_),
            "sfreq": float(self.options.sfreq), "native_sfreq": float(info["sfreq"]),
            "ch_names": list(self.names_), "unit_scale": unit, "channel_scale": self.scale_.tolist(),
            "units": UNITS, "filter": plan, "source": source, "onset_s": 0.0, "events": [],
        }
        return Segments([Segment(signal=epoch, positions=self.positions_, orientations=self.orientations_,
                                 kinds=self.kinds_, meta={**meta, "epoch": i}) for i, epoch in enumerate(clean)],
                        report={"source": source, "n_windows": len(clean), "rejected": [], "dropped_channels": {},
                                "line_freq": self.line_freq_})

    # ------------------------------------------------------------------ steps

    def filters(self, info: mne.Info, n_times: int) -> dict[str, Any]:
        """What :meth:`transform` does to epochs of ``n_times`` samples with this ``info``: the
        band edges, the mains frequency, and whether the high-pass is a filter, a linear detrend
        (an epoch shorter than the filter's kernel) or already done before epoching."""
        o, native = self.options, float(info["sfreq"])
        h_freq = o.h_freq if o.h_freq is not None else 0.45 * min(o.sfreq, native)
        if native < 2 * h_freq:
            raise EpochsError(f"epochs sampled at {native:g} Hz cannot hold the band top h_freq={h_freq:g} Hz; "
                              f"pass tokenizer={{'h_freq': < {native / 2:g}}}")
        high_pass = "none"
        if o.l_freq is not None and info["highpass"] >= o.l_freq:
            high_pass = "done before epoching"
        elif o.l_freq is not None:
            kernel = len(mne.filter.create_filter(None, float(o.sfreq), o.l_freq, None, **_QUIET))
            high_pass = "filter per epoch" if n_times * o.sfreq / native >= kernel else "linear detrend per epoch"
        return {"l_freq": o.l_freq, "h_freq": float(h_freq), "line_freq": self.line_freq_,
                "average_reference": bool(o.average_reference), "high_pass": high_pass}

    def _clean(self, data: np.ndarray, info: mne.Info, plan: dict[str, Any]) -> np.ndarray:
        """Model units ``[N, C_kept, T_out]`` of each epoch, cleaned alone as ``plan``
        (:meth:`filters`) says (float64)."""
        o, native, sfreq = self.options, float(info["sfreq"]), float(self.options.sfreq)
        x = data[:, self.picks_].astype(np.float64)
        n_out = int(round((x.shape[-1] - 1) * sfreq / native))  # as tokenize_events cuts [0, tmax]
        if n_out < 1:
            raise EpochsError(f"epochs of {x.shape[-1]} samples at {native:g} Hz are shorter than one sample "
                              f"at {sfreq:g} Hz")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MNE's notes on short signals
            line = self.line_freq_
            notches = np.arange(line, plan["h_freq"] + line, line) if line else np.array([])
            notches = notches[notches < native / 2 - 1]
            if len(notches):
                x = mne.filter.notch_filter(x, native, notches, method="spectrum_fit", filter_length="10s",
                                            **_QUIET)
            if not np.isclose(native, sfreq):
                x = mne.filter.resample(x, sfreq, native, axis=-1, npad="auto", **_QUIET)
            if plan["high_pass"] == "linear detrend per epoch":
                x = detrend(x, axis=-1, type="linear")
            high = o.l_freq if plan["high_pass"] == "filter per epoch" else None
            low = plan["h_freq"] if plan["h_freq"] < sfreq / 2 - 1e-6 else None
            if high is not None or low is not None:
                x = mne.filter.filter_data(x, sfreq, high, low, **_QUIET)
        x = x[..., :n_out]
        if o.average_reference:
            eeg = np.array(self.kinds_) == "eeg"
            if eeg.sum() > 1:
                x[:, eeg] -= x[:, eeg].mean(axis=1, keepdims=True)
        return x * np.array([UNIT_SCALE[k] for k in self.kinds_])[:, None]

    def _checked(self, data: np.ndarray, info: mne.Info, fitted: bool) -> np.ndarray:
        data = np.asarray(data)
        n_channels = len(info["ch_names"])
        if data.ndim != 3 or data.shape[1] != n_channels:
            raise EpochsError(f"expected epochs [n_epochs, {n_channels} channels, n_times]; "
                              f"got an array of shape {data.shape}")
        if fitted and list(info["ch_names"]) != self.ch_names_:
            missing = [n for n in self.ch_names_ if n not in info["ch_names"]]
            raise EpochsError(f"these epochs have other channels than the fitted ones "
                              f"({len(info['ch_names'])} vs {len(self.ch_names_)}; missing {missing[:5]})")
        if not np.isfinite(data).all():
            raise EpochsError(f"{int((~np.isfinite(data)).sum())} samples are NaN or inf")
        return data
