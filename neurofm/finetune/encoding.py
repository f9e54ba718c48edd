"""Encoding: stimulus features -> brain signal per sensor or parcel, through the pretrained decoder.

A low-rank temporal response function: ``K`` response components are the stimulus
convolved with learned kernels over the lags (linear, fitted per subject). Each sensor
mixes them with its own weights, read out of the pretrained decoder: the decoder's
queries, one per sensor and patch made of the sensor's geometry and the patch's time
(exactly the queries of masked tokens in pretraining), attend to one stimulus token per
patch (MIRAGE-style). No sensor-name table anywhere, so a new montage or atlas works as is,
and sensors near each other get similar weights before any training.

The classical reference is a ridge TRF (:class:`mne.decoding.ReceptiveField`) on the same
lags and the same held-out windows.

Shapes: B windows, C sensors, T samples per window, F stimulus features, K components,
N patches of P samples, X = before + T + after samples of stimulus with lag context.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from scipy.signal import resample_poly
from torch import nn

from neurofm.batch import collate_segments, patch_samples
from neurofm.embedding import NeuroFM
from neurofm.errors import ConfigError, NeurofmError
from neurofm.finetune.classifier import add_lora
from neurofm.finetune.loops import Mode, train_epochs
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.tokenizers import read_recording, tokenize_raw
from neurofm.tokenizers.segment import Segment

logger = logging.getLogger("neurofm")


def event_features(raw, event_id: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Impulse trains from a recording's annotations: ``[n_times, F]`` at the recording's rate.

    Column ``f`` is 1 at the sample of each onset of label ``event_id[f]`` (default:
    every label present, sorted), 0 elsewhere: the design of a classical event TRF.
    """
    onsets = raw.annotations.onset - (raw.first_time if raw.annotations.orig_time is not None else 0.0)
    labels = np.asarray(raw.annotations.description)
    names = sorted(set(labels)) if event_id is None else list(event_id)
    absent = [n for n in names if n not in set(labels)]
    if absent:
        raise NeurofmError(f"event labels {absent} not in the recording's annotations "
                           f"(it has {sorted(set(labels))[:10]})", raw.filenames[0] if raw.filenames else None)
    out = np.zeros((raw.n_times, len(names)), np.float32)
    for f, name in enumerate(names):
        idx = np.round(onsets[labels == name] * raw.info["sfreq"]).astype(int)
        out[idx[(idx >= 0) & (idx < raw.n_times)], f] = 1.0
    return out, names


@dataclass
class EncodingData:
    """Brain windows and the stimulus that drives them.

    Attributes
    ----------
    segments : list of Segment
        Consecutive, non-overlapping brain windows of ``T`` samples (time order).
    stimulus : ndarray, float32, shape (n_windows, before + T + after, F)
        The features of each window with ``before`` samples of lag context before it
        and ``after`` after it (zero outside the recording).
    before, after : int
        Context in samples: ``ceil(lags_s[1] * sfreq)`` and ``ceil(-lags_s[0] * sfreq)``.
    feature_names : list of str
    lags_s : (float, float)
        The brain at time t may depend on the stimulus in ``[t - lags_s[1], t - lags_s[0]]``.
    """

    segments: list[Segment]
    stimulus: np.ndarray
    before: int
    after: int
    feature_names: list[str]
    lags_s: tuple[float, float]

    @property
    def sfreq(self) -> float:
        return self.segments[0].sfreq

    def brain(self, index: np.ndarray | None = None) -> np.ndarray:
        """Scaled brain signal ``[n, C, T]`` of the windows in ``index`` (default all)."""
        index = np.arange(len(self.segments)) if index is None else index
        return np.stack([self.segments[i].signal for i in index])


def encoding_data(
    raw,
    features: np.ndarray,
    *,
    feature_names: list[str] | None = None,
    features_sfreq: float | None = None,
    lags_s: tuple[float, float] = (0.0, 0.5),
    window_s: float = 4.0,
    **tokenizer_options,
) -> EncodingData:
    """Cut a recording into windows and align stimulus features to them.

    Parameters
    ----------
    raw : mne.io.Raw | path
        The recording (any format ``tokenize_raw`` reads).
    features : ndarray, shape (n_times, F)
        Stimulus features aligned to the recording: row ``i`` is time ``raw.times[i]``
        (at ``features_sfreq``, default the recording's rate). See :func:`event_features`.
    lags_s : (float, float)
        Lag range in seconds (``tmin, tmax`` of a TRF); positive lags: the brain follows
        the stimulus.
    window_s : float
        Window length; windows are consecutive (stride = window).
    **tokenizer_options
        Passed to ``tokenize_raw`` (``sfreq``, ``montage``, ``l_freq`` ...).
    """

    if "tmin_s" in tokenizer_options or "tmax_s" in tokenizer_options:
        raise ConfigError("crop the recording and its features together instead of passing tmin_s/tmax_s")
    if lags_s[0] > lags_s[1]:
        raise ConfigError(f"lags_s must be (min, max), got {lags_s}")
    if isinstance(raw, str | os.PathLike):
        raw = read_recording(raw)
    source = raw.filenames[0] if raw.filenames and raw.filenames[0] else None
    features = np.asarray(features, dtype=np.float64)
    if features.ndim == 1:
        features = features[:, None]
    rate = float(features_sfreq or raw.info["sfreq"])
    expected = int(round(raw.n_times * rate / raw.info["sfreq"]))
    if features.ndim != 2 or abs(features.shape[0] - expected) > 1:
        raise NeurofmError(f"features have shape {features.shape}; expected ({expected}, n_features): one row "
                           f"per sample of the recording at {rate:g} Hz", source)
    if not np.isfinite(features).all():
        raise NeurofmError("features contain NaN or inf", source)
    names = list(feature_names) if feature_names is not None else [f"f{k}" for k in range(features.shape[1])]
    if len(names) != features.shape[1]:
        raise NeurofmError(f"{len(names)} feature names for {features.shape[1]} features", source)
    segments = list(tokenize_raw(raw, window_s=window_s, stride_s=window_s, **tokenizer_options))
    sfreq = segments[0].sfreq
    if not np.isclose(rate, sfreq):  # to the tokenizer's rate, anti-aliased
        ratio = Fraction(sfreq / rate).limit_denominator(1000)

        features = resample_poly(features, ratio.numerator, ratio.denominator, axis=0)
    before = int(np.ceil(max(lags_s[1], 0.0) * sfreq - 1e-9))
    after = int(np.ceil(max(-lags_s[0], 0.0) * sfreq - 1e-9))
    length = segments[0].n_times
    padded = np.pad(features, ((before, length + after), (0, 0)))
    starts = np.array([int(round(s.meta["onset_s"] * sfreq)) for s in segments])
    index = starts[:, None] + np.arange(before + length + after)[None, :]  # into the padded array
    return EncodingData(segments, padded[index].astype(np.float32), before, after, names,
                        (float(lags_s[0]), float(lags_s[1])))


class EncodingModel(nn.Module):
    """Stimulus -> brain: a low-rank TRF whose spatial patterns come from the pretrained decoder.

    ``K`` temporal response components ``z = conv(stimulus, kernels)`` (fitted per
    subject: linear and shift-invariant, the TRF's lags) drive every sensor through a spatial pattern
    read out of the pretrained decoder: its geometry + time queries (one per sensor and
    patch, as for masked tokens in pretraining) attend to one stimulus token per patch,
    and a linear readout gives each sensor's ``K`` weights at that patch.
    ``y[c, t] = sum_k A[c, patch(t), k] z[k, t] + b[c]``.
    """

    def __init__(self, backbone: MaskedAutoencoder, n_features: int, context: int, patch: int,
                 components: int = 4):
        super().__init__()
        self.backbone = backbone
        self.patch, self.context, self.components = patch, context, components
        width = backbone.config.decoder_dim
        lags = context + 1
        self.kernels = nn.Parameter(torch.randn(components, n_features, lags)
                                    * (n_features * lags) ** -0.5)  # [K, F, lags]
        self.stimulus_token = nn.Linear(components * patch, width)
        self.readout = nn.Linear(width, components + 1)  # K spatial weights + an offset per sensor
        nn.init.normal_(self.readout.weight, std=width ** -0.5)
        nn.init.zeros_(self.readout.bias)

    def components_of(self, stimulus: torch.Tensor) -> torch.Tensor:
        """``[B, X, F]`` stimulus with context -> ``[B, K, T]`` response components."""
        lagged = stimulus.unfold(1, self.context + 1, 1)  # [B, T, F, lags]; last lag = newest sample
        return torch.einsum("btfl,kfl->bkt", lagged, self.kernels)

    def forward(self, batch, stimulus: torch.Tensor) -> torch.Tensor:
        """``stimulus`` ``[B, X, F]`` -> predicted signal ``[B, C, N*P]``."""
        m = self.backbone
        tokens = m.tokenize(batch)
        c, n = tokens.shape
        b = stimulus.shape[0]
        z = self.components_of(stimulus)[:, :, : n * self.patch]  # [B, K, N*P]
        x = self.stimulus_token(z.view(b, -1, n, self.patch).transpose(1, 2).flatten(2))  # [B, N, Dd]
        seconds = (torch.arange(n, device=x.device) + 0.5) * self.patch / batch.sfreq[:, None]  # [B, N]
        decoded = m.decode(x + m.decoder_place(seconds, batch.modality), tokens.patch_valid, tokens)
        weights = self.readout(decoded).view(b, c, n, 1, -1)  # [B, C, N, 1, K+1]
        z = z.view(b, -1, n, self.patch).permute(0, 2, 3, 1)  # [B, N, P, K]
        y = (weights[..., :-1] * z[:, None]).sum(-1) + weights[..., -1]  # [B, C, N, P]
        return y.reshape(b, c, n * self.patch)


def head_network(mode: Mode, backbone, config: ModelConfig | None) -> MaskedAutoencoder:
    """The pretraining model an encoding head starts from: a copy of ``backbone`` (a
    :class:`MaskedAutoencoder`, e.g. ``load_pretrained(ckpt, head=True)``; an encoder alone gets
    a decoder of random weights, with a warning), or for ``scratch`` a new one of ``config``."""
    if isinstance(backbone, NeuroFM):
        backbone = backbone.model
    if mode is Mode.SCRATCH or backbone is None:
        config = config or (backbone.config if backbone is not None else ModelConfig())
        return MaskedAutoencoder(config if isinstance(config, ModelConfig) else ModelConfig.from_encoder(config))
    if isinstance(backbone, MaskedAutoencoder):
        return copy.deepcopy(backbone)
    logger.warning("the encoding head reads spatial patterns from the pretraining decoder, which this "
                   "encoder lacks: its decoder starts from random weights (pass the .ckpt to use the "
                   "pretrained one)")
    model = MaskedAutoencoder(ModelConfig.from_encoder(backbone.config))
    model.load_state_dict({**model.state_dict(), **backbone.state_dict()})
    return model


def _trainable(model: EncodingModel, mode: Mode) -> list[nn.Parameter]:
    own = [model.kernels, *model.stimulus_token.parameters(), *model.readout.parameters()]
    if mode is Mode.LINEAR_PROBE:  # frozen decoder; the kernels and the readout are linear maps
        return own
    if mode is Mode.LORA:  # adapters on the frozen decoder
        return own + [p for name, p in model.named_parameters() if "lora_" in name]
    return own + model.backbone.decoder_parameters()


def fit_encoding(
    backbone,
    data: EncodingData,
    train: np.ndarray,
    *,
    mode: str = "finetune",
    config: ModelConfig | None = None,
    components: int = 4,
    epochs: int = 60,
    lr: float = 1e-2,
    weight_decay: float = 0.01,
    batch_size: int = 8,
    lora_rank: int = 8,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[EncodingModel, list[float]]:
    """Train an encoding model on the windows ``train``; return it and the training losses.

    ``mode``: ``linear_probe`` (decoder frozen; the TRF kernels, the stimulus tokens and
    the spatial readout train), ``finetune`` (the decoder trains too), ``lora`` (low-rank
    adapters on the frozen decoder, via peft), ``scratch`` (same architecture, random
    weights; ``config``). ``components``: rank ``K`` of the TRF.

    Early stopping: the last ``val_fraction`` of the training windows (in time) are held
    out, and the weights of the epoch with the lowest validation error are kept (the ridge
    baseline chooses its penalty on the same windows). ``val_fraction=0``: train on all
    windows for ``epochs``.
    """

    mode = Mode.of(mode)
    torch.manual_seed(seed)
    backbone = head_network(mode, backbone, config)
    seg = data.segments[0]
    patch = patch_samples(backbone.config.patch_s[seg.modality], seg.sfreq)
    if seg.n_times % patch:
        raise ConfigError(f"windows of {seg.duration_s:g} s are not a whole number of "
                          f"{backbone.config.patch_s[seg.modality]:g} s patches")
    model = EncodingModel(backbone, data.stimulus.shape[2], data.before + data.after, patch, components)
    if mode is Mode.LORA:
        add_lora(model.backbone, "decoder", lora_rank)
    params = _trainable(model, mode)
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    stimulus = torch.from_numpy(data.stimulus)
    train = np.sort(np.asarray(train))
    n_val = int(round(val_fraction * len(train))) if len(train) > 4 else 0
    fit, val = (train[:-n_val], train[-n_val:]) if n_val else (train, train[:0])

    def batches(rng: np.random.Generator) -> list[np.ndarray]:
        order = rng.permutation(fit)
        return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]

    losses = train_epochs(model, lambda idx: _mse(model, data, stimulus, idx), batches, optimizer,
                          epochs=epochs, seed=seed,
                          validation_error=(lambda: float(_mse(model, data, stimulus, val))) if len(val) else None)
    return model, losses


def _mse(model: EncodingModel, data: EncodingData, stimulus: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
    batch = collate_segments([data.segments[i] for i in idx])
    pred = model(batch, stimulus[idx])  # [B, C, T']
    t = pred.shape[2]
    valid = batch.channel_mask[:, :, None] & batch.time_mask[:, None, :t]
    return (((pred - batch.signal[:, :, :t]) ** 2) * valid).sum() / valid.sum()


@torch.no_grad()
def predict_encoding(model: EncodingModel, data: EncodingData, index: np.ndarray,
                     batch_size: int = 32) -> np.ndarray:
    """Predicted brain signal ``[n, C, N*P]`` for the windows ``index``."""
    model.eval()
    stimulus = torch.from_numpy(data.stimulus)
    out = []
    for k in range(0, len(index), batch_size):
        idx = index[k : k + batch_size]
        batch = collate_segments([data.segments[i] for i in idx])
        out.append(model(batch, stimulus[idx]).numpy())
    return np.concatenate(out)


