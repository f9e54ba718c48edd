"""The classical methods a researcher would run without neurofm, on the same windows and splits:

- decoding: MOABB's standard motor-imagery pipelines on 8-32 Hz (CSP + LDA; pyriemann's
  ``Covariances("oas")`` + ``TangentSpace`` + logistic regression; the same tangent space over
  MOABB's filter bank of six 4-Hz bands), and shrinkage LDA on the evoked waveform (the ERP
  standard);
- encoding: the ridge temporal response function (``mne.decoding.ReceptiveField``);
- subject level: functional connectivity (correlation, or the tangent space of the
  covariances, nilearn's ``ConnectivityMeasure``) + logistic regression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import mne
import numpy as np
from mne.decoding import CSP, ReceptiveField, Vectorizer
from nilearn.connectome import ConnectivityMeasure, sym_matrix_to_vec
from pyriemann.estimation import Covariances
from pyriemann.tangentspace import TangentSpace as RiemannTangentSpace
from sklearn.covariance import LedoitWolf
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofm.finetune.metrics import pearson_per_output
from neurofm.readouts import shared_sensor_array, shared_sensors  # noqa: F401  (importable from here)
from neurofm.tokenizers.segment import Segment

if TYPE_CHECKING:
    from neurofm.finetune.encoding import EncodingData


MU_BETA = (8.0, 32.0)  # MOABB's LeftRightImagery band
# MOABB's FilterBankLeftRightImagery bands (Hz)
FILTER_BANK = ((8.0, 12.0), (12.0, 16.0), (16.0, 20.0), (20.0, 24.0), (24.0, 28.0), (28.0, 32.0))


def band_pass(x: np.ndarray, sfreq: float, band: tuple[float, float] | None = MU_BETA) -> np.ndarray:
    """``x`` (``[..., T]``) band-passed as MOABB's paradigms do (MNE's IIR: a 4th-order
    Butterworth run forward and backward, zero phase), each window on its own; ``band=None``:
    ``x`` as it is (windows filtered before, see :func:`decoding_baselines`)."""
    if band is None:
        return x
    return mne.filter.filter_data(x, sfreq, band[0], band[1], method="iir", verbose="error")


def csp_lda(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, sfreq: float,
            band: tuple[float, float] | None = MU_BETA) -> np.ndarray:
    """MOABB's CSP + LDA: ``mne.decoding.CSP(n_components=8)`` (log-variance of 8 spatial
    filters) + LDA, on ``band``-passed windows (``None``: already filtered); test
    probabilities. ``x``: ``[N, C, T]`` at ``sfreq``."""
    model = make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis())
    return model.fit(band_pass(x_train, sfreq, band), y_train).predict_proba(band_pass(x_test, sfreq, band))


def tangent_lr(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, sfreq: float,
               band: tuple[float, float] | None = MU_BETA, seed: int = 0) -> np.ndarray:
    """MOABB's Riemannian pipeline: ``pyriemann`` ``Covariances("oas")`` of each ``band``-passed
    window, ``TangentSpace(metric="riemann")`` at the training windows' mean, logistic
    regression; test probabilities."""
    model = make_pipeline(Covariances("oas"), RiemannTangentSpace(metric="riemann"),
                          LogisticRegression(C=1.0, max_iter=5000, random_state=seed))
    return model.fit(band_pass(x_train, sfreq, band), y_train).predict_proba(band_pass(x_test, sfreq, band))


def filter_bank_tangent_lr(x_train: list[np.ndarray] | np.ndarray, y_train: np.ndarray,
                           x_test: list[np.ndarray] | np.ndarray, sfreq: float,
                           bands: tuple[tuple[float, float], ...] | None = FILTER_BANK,
                           seed: int = 0) -> np.ndarray:
    """Filter-bank tangent space: for each band of ``bands`` (MOABB's filter bank, 8-32 Hz in
    4-Hz bands), ``Covariances("oas")`` + ``TangentSpace(metric="riemann")`` fitted on the
    training windows; the bands' vectors side by side, standardised, logistic regression; test
    probabilities. ``bands=None``: ``x_train``/``x_test`` are lists of windows already
    filtered, one array per band."""
    if bands is not None:
        x_train = [band_pass(x_train, sfreq, b) for b in bands]
        x_test = [band_pass(x_test, sfreq, b) for b in bands]
    f_train, f_test = [], []
    for train_band, test_band in zip(x_train, x_test, strict=True):
        space = make_pipeline(Covariances("oas"), RiemannTangentSpace(metric="riemann")).fit(train_band)
        f_train.append(space.transform(train_band))
        f_test.append(space.transform(test_band))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=seed))
    return model.fit(np.hstack(f_train), y_train).predict_proba(np.hstack(f_test))


def erp_lda(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, sfreq: float,
            decimate: int = 10) -> np.ndarray:
    """The waveform (every ``decimate``-th sample of every sensor), standardised, with
    shrinkage LDA (Ledoit-Wolf); test probabilities. ``x``: ``[N, C, T]``."""
    model = make_pipeline(Vectorizer(), StandardScaler(),
                          LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
    return model.fit(x_train[..., ::decimate], y_train).predict_proba(x_test[..., ::decimate])


# name -> (fit, the band(s) its windows are filtered to first; None: the raw windows)
DECODING_BASELINES = {"csp_lda": (csp_lda, MU_BETA), "tangent_lr": (tangent_lr, MU_BETA),
                      "fb_tangent_lr": (filter_bank_tangent_lr, FILTER_BANK), "erp_lda": (erp_lda, None)}


def decoding_baselines(x: np.ndarray, sfreq: float) -> dict[str, Callable]:
    """Each decoding baseline as ``predict(train, y_train, test)`` over the rows of ``x``
    (``[N, C, T]`` windows at ``sfreq``; ``train``/``test`` index arrays), returning test
    probabilities. Filtering a window does not depend on the fold, so each band is applied
    to every window once here, not to the same windows again in every fold."""
    x = x.astype(np.float64)
    filtered: dict = {}

    def windows(band):
        if band not in filtered:
            filtered[band] = band_pass(x, sfreq, band)
        return filtered[band]

    def bind(fit: Callable, band) -> Callable:
        if band is None:
            return lambda train, y_train, test: fit(x[train], y_train, x[test], sfreq)
        if isinstance(band[0], tuple):  # a filter bank: one filtered copy per band
            return lambda train, y_train, test: fit([windows(b)[train] for b in band], y_train,
                                                    [windows(b)[test] for b in band], sfreq, bands=None)
        return lambda train, y_train, test: fit(windows(band)[train], y_train, windows(band)[test], sfreq,
                                                band=None)

    return {name: bind(fit, band) for name, (fit, band) in DECODING_BASELINES.items()}


def covariances(series: Sequence[np.ndarray], standardize: bool) -> np.ndarray:
    """Ledoit-Wolf covariance of each ``[T, C]`` series, ``[S, C, C]``, as nilearn's
    ``ConnectivityMeasure`` estimates them for its tangent space. ``standardize``: z-score
    each series first (correlations, for fMRI) or keep its power (EEG band power). They do
    not depend on the fold: estimate them once per cohort."""
    measure = ConnectivityMeasure(cov_estimator=LedoitWolf(store_precision=False), kind="covariance",
                                  standardize="zscore_sample" if standardize else False)
    return np.asarray(measure.fit_transform(list(series)), dtype=np.float64)


def _map_eigenvalues(fn: Callable, matrices: np.ndarray) -> np.ndarray:
    """``fn`` of a symmetric matrix ``[C, C]`` (or of each of ``[S, C, C]``) through its
    eigenvalues. One ``numpy.linalg.eigh`` call per matrix: measured here on 200 x 200, 12 ms
    each against 46 ms for scipy's default driver (nilearn's) and ~400 ms per matrix for
    numpy's stacked call."""
    if matrices.ndim == 3:
        return np.stack([_map_eigenvalues(fn, m) for m in matrices])
    values, vectors = np.linalg.eigh(matrices)
    return (vectors * fn(values)) @ vectors.T


def geometric_mean(covs: np.ndarray, max_iter: int = 30, tol: float = 1e-7) -> np.ndarray:
    """Riemannian (affine-invariant) mean of SPD matrices ``[S, C, C]``: nilearn's gradient
    descent (Fletcher et al. 2007, algorithm 3; same start, step rule and stopping
    tolerance) with numpy's eigendecompositions. Starting from another fold's mean instead
    of the arithmetic mean was tried and is slower: the step-halving rule then often runs
    all ``max_iter`` steps."""
    gmean = covs.mean(0)
    norm_old, step = np.inf, 1.0
    for _ in range(max_iter):
        values, vectors = np.linalg.eigh(gmean)
        inv_sqrt = (vectors / np.sqrt(values)) @ vectors.T
        sqrt = (vectors * np.sqrt(values)) @ vectors.T
        log_mean = _map_eigenvalues(np.log, inv_sqrt @ covs @ inv_sqrt).mean(0)
        if np.isnan(log_mean).any():
            raise FloatingPointError("NaN in the logarithm of a whitened covariance: not positive definite")
        norm = np.linalg.norm(log_mean)
        gmean = sqrt @ _map_eigenvalues(np.exp, step * log_mean) @ sqrt
        if norm < norm_old:
            norm_old = norm
        elif norm > norm_old:
            step, norm = step / 2.0, norm_old
        if norm / gmean.size < tol:
            break
    return gmean


def tangent_vectors(covs: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Covariances ``[S, C, C]`` in the tangent space at ``mean`` (``logm`` of the whitened
    matrix), vectorised as nilearn does (lower triangle, diagonal divided by sqrt 2)."""
    whitening = _map_eigenvalues(lambda v: 1.0 / np.sqrt(v), mean)
    return sym_matrix_to_vec(_map_eigenvalues(np.log, whitening @ covs @ whitening))


class TangentSpace:
    """The tangent space at the training subjects' geometric mean, fold after fold, over
    covariances estimated once (:func:`covariances`). ``features(train, test)`` -> (train
    vectors, test vectors) for index arrays."""

    def __init__(self, covs: np.ndarray):
        self.covs = covs

    def features(self, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = geometric_mean(self.covs[train])
        return tangent_vectors(self.covs[train], mean), tangent_vectors(self.covs[test], mean)


def tangent_space(train: Sequence[np.ndarray], test: Sequence[np.ndarray], standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Ledoit-Wolf covariances (``[T, C]`` series each) mapped to the tangent space at the
    training set's geometric mean (as nilearn's ``ConnectivityMeasure(kind="tangent")``),
    fitted on ``train`` only; vectorised. ``standardize``: z-score each series first."""
    covs = covariances(list(train) + list(test), standardize)
    return TangentSpace(covs).features(np.arange(len(train)), np.arange(len(train), len(covs)))



def ridge_trf(data: EncodingData, train: np.ndarray, test: np.ndarray,
              alphas: tuple[float, ...] = tuple(10.0 ** np.arange(-1, 7)), n_jobs: int = 1) -> np.ndarray:
    """Ridge TRF (:class:`mne.decoding.ReceptiveField`) on the same lags; predicted ``[n_test, C, T]``.

    Windows are epochs with the stimulus context, so each window's prediction uses the
    stimulus before it as the neural model does. The ridge penalty is chosen on the last
    fifth of the training windows (by mean Pearson r), then refit on all of them.
    """


    tmin, tmax = data.lags_s
    x = data.stimulus.transpose(1, 0, 2).astype(np.float64)  # [X, n, F]
    brain = data.brain().astype(np.float64)  # [n, C, T]
    y = np.zeros((x.shape[0], len(data.segments), brain.shape[1]))  # [X, n, C]; context rows stay 0
    y[data.before : data.before + brain.shape[2]] = brain.transpose(2, 0, 1)
    window = slice(data.before, data.before + brain.shape[2])

    def fit(alpha: float, idx: np.ndarray) -> ReceptiveField:
        rf = ReceptiveField(tmin, tmax, data.sfreq, estimator=alpha, fit_intercept=True, n_jobs=n_jobs)
        return rf.fit(x[:, idx], y[:, idx])

    def score(rf: ReceptiveField, idx: np.ndarray) -> float:
        pred = rf.predict(x[:, idx])[window]  # [T, n, C]
        return float(np.mean(pearson_per_output(y[window][:, idx].reshape(-1, y.shape[2]),
                                                pred.reshape(-1, y.shape[2]))))


    n_val = max(1, len(train) // 5)
    inner, val = train[:-n_val], train[-n_val:]
    with mne.utils.use_log_level("error"):
        best = max(alphas, key=lambda a: score(fit(a, inner), val))
        pred = fit(best, train).predict(x[:, test])[window]  # [T, n_test, C]
    return pred.transpose(1, 2, 0)


def subject_series(segments: Sequence[Segment], subjects: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per subject (sorted IDs), its windows concatenated in time over the sensors every
    segment shares: ``[T, C]`` each, the layout nilearn's connectome tools take."""
    rows = shared_sensors(segments)
    ids, inverse = np.unique(np.asarray(subjects).astype(str), return_inverse=True)
    parts: list[list[np.ndarray]] = [[] for _ in ids]
    for seg, seg_rows, k in zip(segments, rows, inverse, strict=True):
        parts[k].append(seg.signal[seg_rows])
    return ids, [np.concatenate(p, axis=1).T.astype(np.float64) for p in parts]


def connectivity_features(segments: Sequence[Segment], subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Functional connectivity per subject (``subjects``: one ID per segment): Fisher-z Pearson correlation between every pair
    of sensors over all of the subject's windows, upper triangle ``[S, C(C-1)/2]``.

    Every subject must have the same sensors (names) in the same order; sensors are
    matched by ``meta['ch_names']`` (or parcel labels) and reduced to those all share.
    """
    ids, series = subject_series(segments, subjects)
    return ids, correlation_features(series)


def correlation_features(series: Sequence[np.ndarray]) -> np.ndarray:
    """Fisher-z Pearson correlation between every pair of sensors of each ``[T, C]`` series,
    upper triangle ``[S, C(C-1)/2]`` (:func:`subject_series` gives the series)."""
    iu = np.triu_indices(series[0].shape[1], k=1)
    corr = np.stack([np.corrcoef(x.T)[iu] for x in series])
    return np.arctanh(np.clip(corr, -0.999999, 0.999999))


def fc_logistic(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Standardised, L2-regularised logistic regression on connectivity features; test probabilities."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, random_state=seed))
    return model.fit(x_train, y_train).predict_proba(x_test)
