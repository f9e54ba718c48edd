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

from neurofm.errors import ConfigError, NeurofmError

READOUTS = ("mean", "sensors", "connectivity")
EPOCH = "neurofm_epoch"


class Embedder(TransformerMixin, BaseEstimator):
    """Frozen-encoder features of epochs (scikit-learn transformer; stateless: ``fit`` only
    loads the model).

    Parameters
    ----------
    model : str | path | NeuroFM
        A checkpoint (export folder, ``.ckpt``, DeepSpeed dir, Hub repo id) or a loaded model.
    readout : 'mean' | 'sensors' | 'connectivity'
        What each epoch becomes: the mean token (``dim`` features), each sensor's mean
        token (``sensors * dim``), or token connectivity between sensors (see
        :func:`neurofm.finetune.tasks.window_features`).
    info : mne.Info | None
        Channel names, types and positions of array input (not needed for ``mne.Epochs``).
    batch_size : int
        Epochs per forward pass.
    device : str
        Where the encoder runs.
    tokenizer : dict | None
        :class:`~neurofm.tokenizers.options.MeegOptions` fields (``l_freq``, ``montage`` ...);
        the checkpoint's input contract fills the rest.

    Each call to :meth:`transform` cleans its epochs as one recording (epochs joined end to
    end, filtered, scaled per channel by the robust scale over all of them); no epoch is
    rejected and no channel dropped, so features line up across calls.
    """

    def __init__(self, model: Any, readout: str = "mean", info: Any = None, batch_size: int = 32,
                 device: str = "cpu", tokenizer: dict | None = None):
        self.model = model
        self.readout = readout
        self.info = info
        self.batch_size = batch_size
        self.device = device
        self.tokenizer = tokenizer

    def fit(self, X, y=None) -> Embedder:
        """Load the model (once); nothing is learnt."""
        from neurofm.embedding import NeuroFM

        if self.readout not in READOUTS:
            raise ConfigError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        self.model_ = self.model if isinstance(self.model, NeuroFM) else NeuroFM.from_pretrained(
            os.fspath(self.model), device=self.device)
        return self

    def transform(self, X) -> np.ndarray:
        """Features ``[n_epochs, n_features]`` of ``X`` (``mne.Epochs`` or an array with ``info``)."""
        from neurofm.finetune.tasks import window_features

        if not hasattr(self, "model_"):
            self.fit(X)
        segments = self.segments(X)
        return window_features(self.model_, segments, self.readout, batch_size=self.batch_size).astype(np.float64)

    def segments(self, X) -> list:
        """The epochs as neurofm segments (one each, in order)."""
        import mne

        from neurofm.models.contract import check_segments, tokenizer_defaults
        from neurofm.tokenizers import tokenize_events

        if isinstance(X, mne.BaseEpochs):
            data, info = X.get_data(copy=False), X.info
        else:
            data, info = np.asarray(X, dtype=np.float64), self.info
            if info is None:
                raise ConfigError("array input needs the channels' mne.Info: Embedder(..., info=epochs.info)")
        if data.ndim != 3 or data.shape[1] != len(info["ch_names"]):
            raise NeurofmError(f"expected epochs [n_epochs, {len(info['ch_names'])} channels, n_times]; "
                               f"got an array of shape {data.shape}")
        if not np.isfinite(data).all():
            raise NeurofmError(f"{int((~np.isfinite(data)).sum())} samples are NaN or inf")
        n, c, t = data.shape
        raw = mne.io.RawArray(data.transpose(1, 0, 2).reshape(c, n * t), info.copy(), verbose="error")
        sfreq = info["sfreq"]
        raw.set_annotations(mne.Annotations(np.arange(n) * t / sfreq, 0.0, EPOCH))
        options = {**tokenizer_defaults(self.model_.contract, "meeg"), **(self.tokenizer or {}),
                   "reject_scaled": None, "drop_flat": False}
        segments = list(tokenize_events(raw, event_id=[EPOCH], tmin=0.0, tmax=(t - 1) / sfreq, **options))
        if len(segments) != n:
            raise NeurofmError(f"{n} epochs in, {len(segments)} windows out: epochs too short for the model?")
        check_segments(self.model_.contract, segments)
        return segments

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if isinstance(self.model, str | os.PathLike):
            state.pop("model_", None)  # loaded again from the path on first use
        return state
