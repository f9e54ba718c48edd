"""neurofm.sklearn.Embedder on real EEGMMI imagery epochs: Pipeline, cross_val_score,
clone, pickle, array + Info input, and bad input."""

from __future__ import annotations

import pickle

import mne
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurofm.errors import ConfigError, NeurofmError
from neurofm.models.io import save_pretrained
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.sklearn import Embedder


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    return save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path_factory.mktemp("sk") / "export")


@pytest.fixture(scope="module")
def epochs(eegmmidb) -> tuple[mne.Epochs, np.ndarray, np.ndarray]:
    """Left vs right fist imagery of S001 and S002 (runs 4, 8, 12), [0.5, 2.5] s after the cue."""
    parts, groups = [], []
    for subject in ("S001", "S002"):
        raws = [mne.io.read_raw_edf(eegmmidb / subject / f"{subject}{r}.edf", preload=True, verbose="error")
                for r in ("R04", "R08", "R12")]
        raw = mne.concatenate_raws(raws, verbose="error")
        mne.datasets.eegbci.standardize(raw)
        raw.set_montage("standard_1005")
        events, ids = mne.events_from_annotations(raw, event_id={"T1": 1, "T2": 2}, verbose="error")
        ep = mne.Epochs(raw, events, ids, tmin=0.5, tmax=2.5, baseline=None, preload=True, verbose="error")
        parts.append(ep)
        groups += [subject] * len(ep)
    all_epochs = mne.concatenate_epochs(parts, verbose="error")
    return all_epochs, all_epochs.events[:, 2] - 1, np.array(groups)


def test_embedder_features_of_real_epochs(export, epochs):
    ep, y, _ = epochs
    emb = Embedder(str(export), readout="sensors")
    features = emb.fit_transform(ep[:20])
    assert features.shape == (20, 64 * 64) and features.dtype == np.float64 and np.isfinite(features).all()
    # the same epochs as an array with their Info: the same features
    from_array = Embedder(str(export), readout="sensors", info=ep.info).fit_transform(ep[:20].get_data())
    np.testing.assert_allclose(from_array, features, rtol=1e-5, atol=1e-6)
    # a clone is unfitted and gives the same features; a pickled one loads the model again
    np.testing.assert_allclose(clone(emb).fit_transform(ep[:20]), features, rtol=1e-5, atol=1e-6)
    again = pickle.loads(pickle.dumps(emb))
    assert not hasattr(again, "model_")
    np.testing.assert_allclose(again.transform(ep[:20]), features, rtol=1e-5, atol=1e-6)
    mean = Embedder(str(export)).fit_transform(ep[:20])
    assert mean.shape == (20, 64) and not np.allclose(mean[0], mean[1])


def test_embedder_in_a_pipeline_with_cross_val_score(export, epochs):
    ep, y, groups = epochs
    pipe = make_pipeline(Embedder(str(export), readout="sensors", info=ep.info), StandardScaler(),
                         LogisticRegression(max_iter=2000))
    scores = cross_val_score(pipe, ep.get_data(), y, groups=groups, cv=GroupKFold(2), scoring="roc_auc")
    assert scores.shape == (2,) and np.all((scores > 0.2) & (scores < 0.9))


def test_embedder_names_bad_input(export, epochs):
    ep, _, _ = epochs
    with pytest.raises(ConfigError, match="array input needs the channels' mne.Info"):
        Embedder(str(export)).fit_transform(ep[:4].get_data())
    with pytest.raises(NeurofmError, match=r"expected epochs \[n_epochs, 64 channels, n_times\]; got an array of shape \(4, 63, 321\)"):
        Embedder(str(export), info=ep.info).fit_transform(ep[:4].get_data()[:, 1:])
    data = ep[:4].get_data()
    data[0, 3, 10] = np.nan
    with pytest.raises(NeurofmError, match="1 samples are NaN or inf"):
        Embedder(str(export), info=ep.info).fit_transform(data)
    with pytest.raises(ConfigError, match="readout must be one of"):
        Embedder(str(export), readout="tokens").fit(ep)
