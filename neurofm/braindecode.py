"""braindecode interop: a neurofm encoder and a head as a braindecode model.

:class:`NeuroFMModel` is a braindecode model (``EEGModuleMixin``: ``n_chans``, ``n_outputs``,
``chs_info``, ``n_times``, ``sfreq``), so braindecode's ``EEGClassifier`` trains it on windows
from ``create_windows_from_events`` like any of its networks. It reads each sensor's position
from ``chs_info`` (``raw.info['chs']``; channels without one are looked up by name in the
standard 10-05 montage), so it serves any montage::

    from braindecode import EEGClassifier
    from braindecode.preprocessing import Preprocessor, create_windows_from_events, preprocess
    from neurofm.braindecode import NeuroFMModel

    preprocess(dataset, [Preprocessor("pick_types", eeg=True), Preprocessor("resample", sfreq=200),
                         Preprocessor("filter", l_freq=0.5, h_freq=None)])
    windows = create_windows_from_events(dataset, trial_start_offset_samples=100, ...)
    clf = EEGClassifier(NeuroFMModel, module__checkpoint="runs/eeg/export", module__mode="lora",
                        module__readout="spatial", module__sfreq=200,
                        module__chs_info=windows.datasets[0].raw.info["chs"], ...)
    clf.fit(windows, y=None)

Windows come in volts at the checkpoint's sampling rate (resample in braindecode's
preprocessing: the model refuses another rate); each window is scaled to microvolts and divided
by the median of its channels' standard deviations, one number per window, so the channels'
relative power, which motor decoding reads, is kept. ``pip install 'neurofm[braindecode]'``.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from neurofm.batch import KIND_IDS, MODALITY_IDS, Batch
from neurofm.errors import ConfigError
from neurofm.extras import require
from neurofm.finetune.classifier import Classifier, prepare_mode
from neurofm.finetune.loops import Mode, network_for
from neurofm.models.mae import ModelConfig
from neurofm.readouts import SENSOR_AXIS

_models = require("braindecode.models.base", "neurofm.braindecode")
EEGModuleMixin = _models.EEGModuleMixin
UV = 1e6


def sensor_positions(chs_info: list[dict]) -> np.ndarray:
    """``[C, 3]`` head-frame positions (metres) of EEG channels from ``info['chs']``; a channel
    without a position is looked up by name in the standard 10-05 montage."""
    from mne.io.constants import FIFF

    from neurofm.tokenizers.geometry import default_montage, has_position, montage_positions

    kinds = {ch["kind"] for ch in chs_info}
    if kinds - {FIFF.FIFFV_EEG_CH}:
        raise ConfigError("NeuroFMModel reads EEG channels (chs_info of kind EEG); pick them first: "
                          "Preprocessor('pick_types', eeg=True)")
    loc = np.array([np.asarray(ch["loc"], dtype=np.float64)[:3] for ch in chs_info])
    found = has_position(np.pad(loc, ((0, 0), (0, 9))))
    if not found.all():
        names = [ch["ch_name"] for ch, ok in zip(chs_info, found, strict=True) if not ok]
        loc[~found], _ = montage_positions(names, default_montage())
        lost = [n for n, p in zip(names, loc[~found], strict=True) if not np.isfinite(p).all()]
        if lost:
            raise ConfigError(f"{len(lost)} channels have no position and no standard name ({', '.join(lost[:8])}): "
                              "set a montage on the recordings before windowing (raw.set_montage)")
    return loc.astype(np.float32)


class NeuroFMModel(EEGModuleMixin, nn.Module):
    """A neurofm encoder and a classification head, as a braindecode model.

    Parameters
    ----------
    n_outputs, n_chans, chs_info, n_times, input_window_seconds, sfreq
        braindecode's model signals (``EEGClassifier`` fills all but the rate from the
        windows); ``chs_info`` is required: it places the sensors. Without ``sfreq`` (or
        ``input_window_seconds``) the checkpoint's rate is assumed: pass ``module__sfreq`` to
        have the windows' rate checked against it.
    checkpoint : str | path | None
        An export folder, checkpoint or Hub repo id (``None``: ``mode='scratch'`` on a new
        ``tiny`` encoder).
    mode : 'lora' | 'finetune' | 'linear_probe' | 'scratch'
        What trains: rank-``lora_rank`` adapters and the head; everything; the head alone;
        a new encoder of the checkpoint's architecture, from random weights.
    readout : 'spatial' | 'sensors' | 'connectivity' | 'mean' | 'attention'
        What the head reads (:mod:`neurofm.readouts`).
    lora_rank : int
        Rank of the adapters (``mode='lora'``).
    """

    def __init__(self, n_outputs=None, n_chans=None, chs_info=None, n_times=None, input_window_seconds=None,
                 sfreq=None, checkpoint: str | os.PathLike | None = None, mode: str = "lora",
                 readout: str = "spatial", lora_rank: int = 8):
        if chs_info is None:
            raise ConfigError("NeuroFMModel places each sensor from chs_info, which EEGClassifier does not infer "
                              "from windows: pass module__chs_info=windows.datasets[0].raw.info['chs']")
        backbone, contract = None, None
        if checkpoint is not None:
            from neurofm.embedding import NeuroFM

            loaded = NeuroFM.from_pretrained(os.fspath(checkpoint))
            backbone, contract = loaded.model, loaded.contract
        expected = (contract or {}).get("meeg", {}).get("sfreq")
        if sfreq is None and input_window_seconds is None and expected:
            sfreq = float(expected)  # EEGClassifier does not pass the rate: the contract's is assumed
        super().__init__(n_outputs=n_outputs, n_chans=n_chans, chs_info=chs_info, n_times=n_times,
                         input_window_seconds=input_window_seconds, sfreq=sfreq)
        del n_outputs, n_chans, chs_info, n_times, input_window_seconds, sfreq
        self.mode = Mode.of(mode if checkpoint is not None else "scratch")
        if expected and abs(float(expected) - float(self.sfreq)) > 1e-6:
            raise ConfigError(f"the checkpoint's input contract is {float(expected):g} Hz and these windows are "
                              f"{float(self.sfreq):g} Hz: resample first, Preprocessor('resample', sfreq={float(expected):g})")
        network = network_for(self.mode, backbone, None if backbone is not None else ModelConfig())
        self.classifier = Classifier(network, self.n_outputs, readout,
                                     self.n_chans if readout in SENSOR_AXIS else None)
        prepare_mode(self.classifier, self.mode, lora_rank)
        self.register_buffer("positions", torch.as_tensor(sensor_positions(self.chs_info)))
        self.register_buffer("take", torch.arange(self.n_chans))

    def batch(self, x: torch.Tensor) -> Batch:
        """Windows ``[B, C, T]`` in volts -> the model's :class:`Batch`, scaled as the module says."""
        b, c, t = x.shape
        uv = x.float() * UV
        scale = uv.std(dim=-1).median(dim=-1).values.clamp_min(1e-6)  # [B]: one number per window
        device = x.device
        return Batch(signal=uv / scale[:, None, None], positions=self.positions.expand(b, c, 3),
                     orientations=torch.zeros(b, c, 3, device=device),
                     kinds=torch.full((b, c), KIND_IDS["eeg"], device=device),
                     channel_mask=torch.ones(b, c, dtype=torch.bool, device=device),
                     time_mask=torch.ones(b, t, dtype=torch.bool, device=device),
                     sfreq=torch.full((b,), float(self.sfreq), device=device),
                     modality=torch.full((b,), MODALITY_IDS["eeg"], device=device), meta=[{}] * b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``[B, n_outputs]`` of windows ``[B, n_chans, n_times]`` (volts)."""
        take = self.take.expand(x.shape[0], -1) if self.classifier.readout in SENSOR_AXIS else None
        return self.classifier(self.batch(x), take)
