"""scikit-learn interop: a neurofm encoder as a transformer in any pipeline.

``Embedder`` takes ``mne.Epochs`` (or an ``[n_epochs, n_channels, n_times]`` array in volts
plus the ``mne.Info`` that names and places its channels) and returns one feature vector per
epoch from the frozen encoder. It clones, pickles (the model is loaded again from its path)
and works inside ``Pipeline``, ``cross_val_score``, ``GridSearchCV`` and MOABB's evaluations::

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from neurofm.sklearn import Embedder

    pipe = make_pipeline(Embedder("runs/eeg/export", readout="sensors", info=epochs.info),
                         LogisticRegression(max_iter=1000))
    cross_val_score(pipe, epochs.get_data(), y, cv=5)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from neurofm.errors import ConfigError, EpochsError
from neurofm.readouts import FROZEN


class Embedder(TransformerMixin, BaseEstimator):
    """Frozen-encoder features of epochs (scikit-learn transformer).

    Parameters
    ----------
    model : str | path | NeuroFM
        A checkpoint (export folder, ``.ckpt``, DeepSpeed dir, Hub repo id) or a loaded model.
    readout : 'mean' | 'sensors' | 'connectivity'
        What each epoch becomes: the mean token (``dim`` features), each sensor's mean
        token (``sensors * dim``), or token connectivity between sensors (see
        :meth:`neurofm.embedding.NeuroFM.embed`).
    info : mne.Info | None
        Channel names, types and positions of array input (not needed for ``mne.Epochs``).
    batch_size : int
        Epochs per forward pass.
    device : str
        Where the encoder runs.
    tokenizer : dict | None
        :class:`~neurofm.tokenizers.options.MeegOptions` fields (``l_freq``, ``montage`` ...);
        the checkpoint's input contract fills the rest.

    ``fit`` learns what cleaning needs from many epochs (each channel's robust scale, the
    mains frequency when the contract says ``'auto'``:
    :class:`~neurofm.tokenizers.epochs.EpochsPreprocessor`); :meth:`transform` then cleans
    each epoch on its own, so an epoch's features do not depend on the epochs beside it:
    ``transform(X)[i] == transform(X[i:i+1])`` and any order of the epochs gives the same
    rows, inside ``cross_val_score`` and MOABB's evaluations too (the test folds are scaled
    by the training folds' statistics, as ``mne.decoding.Scaler`` does). No epoch is rejected
    and no channel dropped, so features line up across calls.

    Input is 3-D (scikit-learn's ``three_d_array`` input tag): ``check_estimator``'s
    data checks, written for 2-D arrays, do not apply; its API checks pass, and the data
    checks that matter (fit returns self and is idempotent, parameters untouched, float32 and
    float64 in, float64 out, pickle round trip, NaN, inf, empty, complex and wrongly shaped
    input refused with a ``ValueError``) are tested on real EEG epochs.
    """

    def __init__(self, model: Any, readout: str = "mean", info: Any = None, batch_size: int = 32,
                 device: str = "cpu", tokenizer: dict | None = None):
        self.model = model
        self.readout = readout
        self.info = info
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = tokenizer

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags

    def fit(self, X, y=None) -> Embedder:
        """Load the model (once) and learn the cleaning's statistics from ``X``."""
        from neurofm.tokenizers.epochs import EpochsPreprocessor

        if self.readout not in FROZEN:
            raise ConfigError(f"readout must be one of {FROZEN} (frozen features), got {self.readout!r}")
        data, info = self._epochs(X)
        self._load()
        self.preprocessor_ = EpochsPreprocessor.from_contract(self.model_.contract, **(self.tokenizer or {}))
        self.preprocessor_.fit(data, info)
        return self

    def transform(self, X) -> np.ndarray:
        """Features ``[n_epochs, n_features]`` of ``X`` (``mne.Epochs`` or an array with ``info``)."""
        check_is_fitted(self, "preprocessor_")
        self._load()
        segments = self.segments(X)
        return self.model_.embed(segments, readout=self.readout, batch_size=self.batch_size).windows.astype(np.float64)

    def _load(self) -> None:
        from neurofm.embedding import NeuroFM

        if not hasattr(self, "model_"):
            self.model_ = self.model if isinstance(self.model, NeuroFM) else NeuroFM.from_pretrained(
                os.fspath(self.model), device=self.device)

    def _epochs(self, X) -> tuple[np.ndarray, Any]:
        """``X`` as a checked ``[n_epochs, n_channels, n_times]`` float array and its Info."""
        import mne

        if isinstance(X, mne.BaseEpochs):
            data, info = X.get_data(copy=False), X.info
        else:
            info = self.info
            if info is None:
                raise ConfigError("array input needs the channels' mne.Info: Embedder(..., info=epochs.info)")
            if hasattr(X, "toarray") or hasattr(X, "todense"):
                raise EpochsError("sparse input: pass epochs as a dense [n_epochs, n_channels, n_times] array")
            data = np.asarray(X)
            if np.iscomplexobj(data):
                raise EpochsError("complex input: pass real-valued epochs in volts")
            try:
                data = data.astype(np.float64, copy=False)
            except (TypeError, ValueError) as err:
                raise EpochsError(f"epochs must be numbers; got an array of {data.dtype}") from err
        n_channels = len(info["ch_names"])
        if data.ndim != 3 or data.shape[1] != n_channels:
            raise EpochsError(f"expected epochs [n_epochs, {n_channels} channels, n_times]; "
                              f"got an array of shape {data.shape}")
        if data.shape[0] == 0:
            raise EpochsError("no epochs: X holds 0 epochs")
        if not np.isfinite(data).all():
            raise EpochsError(f"{int((~np.isfinite(data)).sum())} samples are NaN or inf")
        return data, info

    def segments(self, X) -> list:
        """The epochs as neurofm segments (one each, in order), cleaned as fitted."""
        from neurofm.models.contract import check_segments

        check_is_fitted(self, "preprocessor_")
        data, info = self._epochs(X)
        segments = self.preprocessor_.transform(data, info)
        check_segments(self.model_.contract, segments)
        return segments

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(self.model, str | os.PathLike):
            state.pop("model_", None)  # loaded again from the path on first use
        return state
