"""The embedding API: ``neurofm.load(path).embed(raw | path | segments)``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurofm.batch import collate_segments
from neurofm.console import make_progress
from neurofm.errors import ConfigError, NeurofmError, TooShortError
from neurofm.models.backbone import NeuroFMEncoder, mean_pool
from neurofm.models.contract import (
    InputContract,
    check_bold_space,
    check_segments,
    default_window,
    tokenizer_defaults,
)
from neurofm.models.io import load_pretrained
from neurofm.models.mae import MaskedAutoencoder
from neurofm.options import check_keywords, check_option
from neurofm.readouts import LEARNED, READOUTS, check_sensor_axis, sensor_readout, shared_sensors
from neurofm.tokenizers.dispatch import detect_recording_type, fmri_keywords, tokenize
from neurofm.tokenizers.options import MeegOptions
from neurofm.tokenizers.segment import Segment

logger = logging.getLogger("neurofm")


@dataclass
class Embeddings:
    """What :meth:`NeuroFM.embed` returns.

    Attributes
    ----------
    windows : ndarray, float32, shape (n_windows, n_features)
        One embedding per window: the mean over the window's tokens (``n_features = dim``),
        or what ``readout`` reads (see :meth:`NeuroFM.embed`).
    pooled : ndarray, float32, shape (n_features,)
        Mean over windows.
    times : ndarray, float64, shape (n_windows,)
        Window onsets in seconds from the start of the recording.
    meta : list of dict
        Per-window metadata (source, subject, modality, labels ...).
    """

    windows: np.ndarray
    pooled: np.ndarray
    times: np.ndarray
    meta: list[dict[str, Any]] = field(default_factory=list)


class NeuroFM:
    """A pretrained model ready to embed recordings. Build with :func:`neurofm.load` or
    :meth:`NeuroFM.from_pretrained` (a folder or a Hugging Face Hub repo id).

    ``model`` is a :class:`~neurofm.models.backbone.NeuroFMEncoder` (a pretraining
    :class:`~neurofm.models.mae.MaskedAutoencoder` is taken as its encoder, a copy). ``info``
    holds what the checkpoint says besides its weights: ``input_contract`` (how the pretraining
    corpus was tokenized, applied by :meth:`embed`), the recipe, validation figures.
    """

    def __init__(self, model: NeuroFMEncoder, source: str = "", info: dict[str, Any] | None = None):
        if isinstance(model, MaskedAutoencoder):
            model = model.encoder_only()
        self.model = model.eval()
        self.source = source
        self.info = dict(info or {})

    @property
    def contract(self) -> InputContract | None:
        """The checkpoint's :class:`~neurofm.models.contract.InputContract` (a ``dict``, typed;
        None for a checkpoint saved without one)."""
        found = self.info.get("input_contract")
        return InputContract(found, self.source or None) if found is not None else None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | None = None,
                        device: str | torch.device = "cpu") -> NeuroFM:
        """Load a local checkpoint (any format :func:`neurofm.load` reads) or a Hugging Face
        Hub repo id (``"org/name"``, downloaded once into the Hub cache through
        ``huggingface_hub``; with ``HF_HUB_OFFLINE=1`` the cache alone serves it)."""
        name = os.fspath(name_or_path)
        looks_local = (not isinstance(name_or_path, str) or name.startswith(("/", ".", "~"))
                       or name.count("/") != 1 or os.sep != "/" and os.sep in name)
        if Path(name).expanduser().exists() or looks_local:  # a path: never sent to the Hub
            return load(Path(name).expanduser(), device=device)
        from neurofm.models.hub import download

        return load(download(name, revision=revision, cache_dir=cache_dir, token=token),
                    device=device)

    def save_pretrained(self, out: str | os.PathLike) -> Path:
        """Write ``config.json`` (with the input contract), ``model.safetensors`` and the model
        card ``README.md`` into ``out``: the folder :meth:`from_pretrained` and the Hub read."""
        from neurofm.models.io import save_pretrained

        keep = {k: v for k, v in self.info.items() if k not in ("neurofm_version", "architecture", "model", "encoder")}
        return save_pretrained(self.model, out, extra=keep)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload neurofm model") -> str:
        """Save as :meth:`save_pretrained` does and upload the folder to the Hub repo
        ``repo_id`` (created if needed); the commit's URL. Credentials as ``huggingface_hub``
        finds them (``HF_TOKEN``, ``huggingface-cli login``) unless ``token`` is given."""
        import tempfile

        from neurofm.models.hub import upload

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            return upload(folder, repo_id, private=private, token=token, commit_message=commit_message)

    @property
    def config(self):
        """The encoder's :class:`~neurofm.models.config.EncoderConfig` (e.g. to train one from scratch)."""
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> NeuroFM:
        self.model.to(device)
        return self

    @torch.no_grad()
    def _batches(self, segments: list[Segment], batch_size: int = 32, description: str = "embedding"):
        """The one embedding loop: the frozen encoder over ``segments`` in batches of one shape
        (no padding, so a window's output does not depend on its batch), with progress.
        Yields ``(indices, batch, tokens [B, L, D], pooled [B, D])`` per batch."""
        self.model.eval()
        with make_progress(transient=True) as progress:
            task = progress.add_task(description, total=len(segments))
            for group in shape_batches(segments, batch_size):
                batch = collate_segments([segments[i] for i in group]).to(self.device)
                tokens, mask = self.model.encode_every_token(batch)
                yield group, batch, tokens, mean_pool(tokens, mask)
                progress.advance(task, len(group))

    def _segments(self, x, atlas, window_s: float | None, options: dict) -> list[Segment]:
        if isinstance(x, Segment):
            return [x]
        if isinstance(x, list | tuple):
            if not all(isinstance(s, Segment) for s in x):
                raise TypeError("a list passed to embed() must hold Segment objects")
            return list(x)
        if isinstance(x, str | os.PathLike) and _is_shard(x):
            from neurofm.datasets.streaming import stream

            segments = list(stream(x, split=None, shuffle_shards=False, shuffle_buffer=0,
                                   rank=0, world_size=1, on_error="raise"))
            if not segments:
                raise NeurofmError("shard holds no samples", x)
            return segments
        recording_type = detect_recording_type(x)
        if recording_type is None:
            raise TypeError(f"cannot embed a {type(x).__name__}: pass an mne Raw, a recording path, "
                            "a 4-D NIfTI (with atlas=), an ROI table (with atlas= and tr_s=) or a list of Segment")
        section = "meeg" if recording_type == "meeg" else "fmri"
        where = x if isinstance(x, str | os.PathLike) else None
        if recording_type == "bold":
            import nibabel as nib

            if atlas is None:
                raise NeurofmError("embedding BOLD needs an atlas: embed(img, atlas=...)", where)
            check_bold_space(self.contract, nib.load(x) if where is not None else x, where)
        if recording_type == "roi" and (atlas is None or "tr_s" not in options):
            raise NeurofmError("embedding an ROI table needs the atlas it was extracted with and its TR: "
                               "embed(table, atlas=..., tr_s=...)", where)
        # the contract's settings where the caller gave none; a wrong name is the caller's
        options = {**tokenizer_defaults(self.contract, section), **options}
        tr_s = options.pop("tr_s", None) if recording_type == "roi" else None
        meeg = MeegOptions.of(options) if recording_type == "meeg" else None
        fmri = None if meeg else check_keywords(options, fmri_keywords()[recording_type == "roi"], "{}")
        patch_s = (self.model.config.patch_s["fmri"] if section == "fmri"
                   else min(self.model.config.patch_s[m] for m in ("eeg", "meg", "ieeg")))
        window = window_s or default_window(self.contract, section, 10.0 if section == "meeg" else 120.0)
        return self._fit_window(lambda w: tokenize(x, recording_type=recording_type, window_s=w, meeg=meeg,
                                                   fmri_window_s=w, fmri=fmri, atlas=atlas, tr_s=tr_s),
                                window, patch_s)

    def _fit_window(self, tokenize_at, window_s: float, patch_s: float) -> list[Segment]:
        """Tokenize; a recording shorter than one window becomes one shorter window, and one
        shorter than one patch (the model's token) is an error."""
        try:
            return list(tokenize_at(window_s))
        except TooShortError as err:
            if err.duration_s < patch_s:
                raise TooShortError(f"lasts {err.duration_s:.3f} s, shorter than one token of this "
                                    f"model ({patch_s:g} s): nothing to embed", err.path,
                                    duration_s=err.duration_s) from err
            logger.warning("%s; embedding it as one %.2f s window", err, err.duration_s)
            return list(tokenize_at(err.duration_s))

    @torch.no_grad()
    def embed(self, x, *, atlas=None, window_s: float | None = None, batch_size: int = 32,
              readout: str = "mean", other_modalities: bool = False, **tokenizer_options: Any) -> Embeddings:
        """Embed a recording, an fMRI run or segments.

        Parameters
        ----------
        x : mne.io.Raw | path | nibabel image | list of Segment
            EEG/MEG/iEEG (any format ``tokenize_raw`` reads), 4-D BOLD (with
            ``atlas``), an ROI table (with ``atlas`` and ``tr_s``), a shard
            (``shard-*.tar``) or shard directory written by ``neurofm prepare`` (its
            segments, in order, all splits), or segments already tokenized. Recordings
            go through :func:`neurofm.tokenizers.dispatch.tokenize`, as in ``neurofm prepare``.
        atlas : image | path | None
            Labels atlas for BOLD; the atlas (or coordinate table) of an ROI table.
        window_s : float | None
            Window length (default: the input contract's, else 10 s for EEG/MEG and 120 s
            for fMRI). A recording shorter than one window is embedded as one shorter
            window, with a warning.
        batch_size : int
            Windows per forward pass.
        readout : 'mean' | 'sensors' | 'connectivity'
            What each window becomes (:mod:`neurofm.readouts`): the mean of its tokens
            (``dim`` features); each sensor's tokens averaged over time, concatenated over the
            sensors every window shares (``sensors * dim``: keeps the spatial axis); or the
            Fisher-z correlation between every pair of shared sensors' token sequences
            (``sensors * (sensors - 1) / 2``: connectivity in the model's feature space).
            Sensors are matched by channel name or parcel label.
        other_modalities : bool
            Embed an input of a modality the checkpoint was not pretrained on (a transfer
            across modalities, asked for; by default refused, naming the contract field).
        **tokenizer_options
            Passed to ``tokenize_raw`` / ``tokenize_bold`` / ``tokenize_roi_table`` (``tr_s``
            for ROI tables); where not given, the input
            contract's rate, filters and fMRI cleaning apply. An input of a modality, rate
            or (fMRI) space the checkpoint was not pretrained on is an
            :class:`~neurofm.errors.InputContractError`.
        """
        segments = self._segments(x, atlas, window_s, tokenizer_options)
        if not segments:
            raise NeurofmError("nothing to embed: every window was rejected (see the tokenizer report)")
        check_segments(self.contract, segments, x if isinstance(x, str | os.PathLike) else None,
                       other_modalities=other_modalities)
        out = self._read(segments, readout, batch_size)
        times = np.array([s.meta.get("onset_s", 0.0) for s in segments], dtype=np.float64)
        return Embeddings(windows=out, pooled=out.mean(axis=0), times=times,
                          meta=[{k: v for k, v in s.meta.items() if not isinstance(v, list)} for s in segments])

    def _read(self, segments: list[Segment], readout: str, batch_size: int) -> np.ndarray:
        """``[N, F]``: each window's tokens read out as ``readout`` says."""
        check_option("readout", readout, READOUTS)
        if readout in LEARNED:
            raise ConfigError(f"readout={readout} has parameters that train with the head: a frozen-feature "
                              "probe cannot read it; train the head (mode linear_probe through "
                              "finetune_classifier, or task.mode=lora/finetune)")
        check_sensor_axis(self.model.config, readout)
        rows = shared_sensors(segments) if readout != "mean" else None
        out = None
        for group, batch, tokens, pooled in self._batches(segments, batch_size, f"embedding ({readout} readout)"):
            if rows is None:
                feats = pooled
            else:
                take = torch.as_tensor(np.stack([rows[i] for i in group]), device=tokens.device)  # [B, C_shared]
                feats = sensor_readout(tokens.double(), batch.signal.shape[1], take, readout)
            if out is None:
                out = np.zeros((len(segments), feats.shape[1]), np.float32)
            out[group] = feats.float().cpu().numpy()
        return out


def shape_batches(segments: list[Segment], batch_size: int) -> list[list[int]]:
    """Indices of ``segments`` in batches of one shape (modality, sensors, samples, rate), at
    most ``batch_size`` each: no padding, so a window's output does not depend on its batch."""
    order = sorted(range(len(segments)), key=lambda i: (segments[i].modality, segments[i].sfreq,
                                                        segments[i].n_sensors, segments[i].n_times, i))
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch_size and _same_shape(segments[groups[-1][0]], segments[i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _is_shard(x: str | os.PathLike) -> bool:
    """A shard or a shard directory: local, or a URL fsspec reads (recordings are read from
    local files only, so any URL is taken for shards)."""
    from neurofm.datasets.manifest import is_remote

    if is_remote(x):
        return True
    path = Path(x)
    return path.suffix == ".tar" or (path.is_dir() and (path / "manifest.json").exists())


def _same_shape(a: Segment, b: Segment) -> bool:
    return (a.modality, a.n_sensors, a.n_times, a.sfreq) == (b.modality, b.n_sensors, b.n_times, b.sfreq)


def as_neurofm(model: NeuroFM | NeuroFMEncoder) -> NeuroFM:
    """``model`` ready to :meth:`~NeuroFM.embed`: what :func:`load` returns (unchanged: its
    input contract applies), or an encoder (a pretraining model: its encoder), wrapped."""
    if isinstance(model, NeuroFM):
        return model
    if isinstance(model, NeuroFMEncoder):
        return NeuroFM(model)
    raise TypeError(f"expected what neurofm.load() returns or a NeuroFMEncoder, got {type(model).__name__}")


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> NeuroFM:
    """Load a checkpoint's encoder for embedding: an exported directory (``config.json`` +
    ``model.safetensors``), a Lightning ``.ckpt`` or a DeepSpeed checkpoint directory (whose
    pretraining head is left aside). Never unpickles arbitrary objects."""
    info: dict[str, Any] = {}
    model = load_pretrained(path, map_location="cpu", info=info)
    loaded = NeuroFM(model, source=os.fspath(path), info=info)
    _ = loaded.contract  # checked now: a contract this neurofm cannot read is refused at load
    return loaded.to(device)
