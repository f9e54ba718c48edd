"""neurofm.braindecode.NeuroFMModel on real EEGMMI windows: a braindecode model that
EEGClassifier trains, sensors placed from chs_info, clear errors."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import torch

braindecode = pytest.importorskip("braindecode")

from braindecode import EEGClassifier  # noqa: E402
from braindecode.datasets import BaseConcatDataset, RawDataset  # noqa: E402
from braindecode.preprocessing import Preprocessor, create_windows_from_events, preprocess  # noqa: E402

from neurofm.braindecode import NeuroFMModel, sensor_positions  # noqa: E402
from neurofm.errors import ConfigError  # noqa: E402

EXPORT = Path(__file__).parent / "data" / "tiny-export-2026-12"


@pytest.fixture(scope="module")
def windows(eegmmidb):
    parts = []
    for subject in ("S001", "S002"):
        raw = mne.io.read_raw_edf(eegmmidb / subject / f"{subject}R04.edf", preload=True, verbose="error")
        mne.datasets.eegbci.standardize(raw)
        raw.set_montage("standard_1005", verbose="error")
        parts.append(RawDataset(raw, description={"subject": subject}))
    dataset = BaseConcatDataset(parts)
    preprocess(dataset, [Preprocessor("resample", sfreq=200.0)], n_jobs=1)
    return create_windows_from_events(dataset, trial_start_offset_samples=100, trial_stop_offset_samples=0,
                                      window_size_samples=400, window_stride_samples=400, on_last_window="drop",
                                      mapping={"T1": 0, "T2": 1}, preload=True)


def test_model_reads_real_windows_and_trains_only_what_its_mode_says(windows):
    chs = windows.datasets[0].raw.info["chs"]
    x = torch.as_tensor(np.stack([windows[i][0] for i in range(6)]), dtype=torch.float32)
    model = NeuroFMModel(n_outputs=2, n_chans=64, chs_info=chs, n_times=400, sfreq=200.0, checkpoint=EXPORT,
                         mode="lora", readout="spatial")
    out = model(x)
    assert out.shape == (6, 2) and torch.isfinite(out).all()
    # positions are the montage's, in metres, head frame
    assert model.positions.shape == (64, 3) and 0.05 < model.positions.norm(dim=1).median() < 0.15
    out.sum().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained and all("lora_" in n or ".head." in n or ".pool." in n for n in trained)
    # one scale per window: the window in other units gives the same scores
    model.eval()
    np.testing.assert_allclose(model(x * 1e3).detach(), model(x).detach(), rtol=1e-4, atol=1e-5)
    # the channels' relative power is kept: doubling one channel changes the scores
    louder = x.clone()
    louder[:, 10] *= 2
    assert not torch.allclose(model(louder), model(x))
    scratch = NeuroFMModel(n_outputs=2, n_chans=64, chs_info=chs, n_times=400, sfreq=200.0, readout="mean")
    assert scratch.mode.value == "scratch" and scratch(x).shape == (6, 2)


def test_eeg_classifier_trains_it_on_braindecode_windows(windows):
    torch.manual_seed(0)
    clf = EEGClassifier(NeuroFMModel, module__checkpoint=str(EXPORT), module__mode="lora", module__readout="spatial",
                        module__sfreq=200.0, module__chs_info=windows.datasets[0].raw.info["chs"],
                        optimizer=torch.optim.AdamW, lr=1e-3, batch_size=16, max_epochs=3, train_split=None,
                        classes=[0, 1], verbose=0)
    clf.fit(windows, y=None)
    losses = [h["train_loss"] for h in clf.history]
    assert len(losses) == 3 and np.isfinite(losses).all()
    probs = clf.predict_proba(windows)
    assert probs.shape == (len(windows), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_bad_inputs_are_named(windows):
    chs = windows.datasets[0].raw.info["chs"]
    with pytest.raises(ConfigError, match="resample first"):
        NeuroFMModel(n_outputs=2, n_chans=64, chs_info=chs, n_times=320, sfreq=160.0, checkpoint=EXPORT)
    with pytest.raises(ConfigError, match="module__chs_info"):
        NeuroFMModel(n_outputs=2, n_chans=64, n_times=400, sfreq=200.0, checkpoint=EXPORT)
    info = mne.create_info(["Cz", "C3", "xyz"], 200.0, "eeg")
    with pytest.raises(ConfigError, match="no position and no standard name \\(xyz\\)"):
        sensor_positions(info["chs"])
    meg = mne.create_info(["MEG 0111"], 200.0, "mag")
    with pytest.raises(ConfigError, match="reads EEG channels"):
        sensor_positions(meg["chs"])
    # channels without positions but with standard names are placed from the 10-05 montage
    named = sensor_positions(mne.create_info(["Cz", "C3", "C4"], 200.0, "eeg")["chs"])
    assert np.isfinite(named).all() and named[1, 0] < 0 < named[2, 0]  # C3 left, C4 right
