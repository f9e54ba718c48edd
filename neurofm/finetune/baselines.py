"""Classical decoders a researcher would run without neurofm, on the same windows and splits:
CSP + LDA (band power, the motor-imagery standard) and shrinkage LDA on the evoked waveform
(the ERP standard)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mne.decoding import CSP, Vectorizer
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofm.errors import NeurofmError
from neurofm.tokenizers.segment import Segment


def shared_sensors(segments: Sequence[Segment]) -> list[np.ndarray]:
    """Per segment, the row indices of the sensors every segment has (matched by channel name
    or parcel label, in the first segment's order): one layout for classical methods."""
    names = [tuple(s.meta.get("ch_names") or s.meta.get("parcel_labels") or range(s.n_sensors))
             for s in segments]
    shared = set(names[0]).intersection(*names[1:])
    common = [n for n in names[0] if n in shared]
    if len(common) < 2:
        raise NeurofmError(f"the recordings share {len(common)} sensors; classical baselines need "
                           "two or more (pass task.baseline=false)")
    rows = []
    for seg_names in names:
        where = {n: i for i, n in enumerate(seg_names)}
        rows.append(np.array([where[n] for n in common]))
    return rows


def shared_sensor_array(segments: Sequence[Segment]) -> np.ndarray:
    """``[N, C, T]`` float64 over the sensors every segment has (see :func:`shared_sensors`)."""
    lengths = {s.n_times for s in segments}
    if len(lengths) > 1:
        raise NeurofmError(f"windows of different lengths {sorted(lengths)}: resample to one rate")
    return np.stack([seg.signal[rows] for seg, rows in zip(segments, shared_sensors(segments), strict=True)]
                    ).astype(np.float64)


def csp_lda(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
            n_components: int = 4) -> np.ndarray:
    """CSP (``mne.decoding.CSP``, log-variance of ``n_components`` filters) + LDA; test
    probabilities. ``x``: ``[N, C, T]``, band-passed as the task needs (e.g. 8-30 Hz)."""
    model = make_pipeline(CSP(n_components=n_components, reg="ledoit_wolf"), LinearDiscriminantAnalysis())
    return model.fit(x_train, y_train).predict_proba(x_test)


def erp_lda(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, decimate: int = 10) -> np.ndarray:
    """The waveform (every ``decimate``-th sample of every sensor), standardised, with
    shrinkage LDA (Ledoit-Wolf); test probabilities. ``x``: ``[N, C, T]``."""
    model = make_pipeline(Vectorizer(), StandardScaler(),
                          LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
    return model.fit(x_train[..., ::decimate], y_train).predict_proba(x_test[..., ::decimate])


DECODING_BASELINES = {"csp_lda": csp_lda, "erp_lda": erp_lda}
