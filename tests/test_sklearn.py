"""neurofm.sklearn.Embedder on real EEGMMI imagery epochs: Pipeline, cross_val_score,
clone, pickle, array + Info input, and bad input."""

from __future__ import annotations

import pickle

import mne
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_score, cross_validate
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


def test_embedder_features_do_not_depend_on_the_other_epochs(export, epochs):
    """Each epoch is cleaned alone with the statistics learnt in fit: a test epoch's features
    are the same alone, among the others, in any order, in every fold of cross_validate."""
    ep, y, groups = epochs
    x = ep.get_data()
    pipe = make_pipeline(Embedder(str(export), readout="sensors", info=ep.info), StandardScaler(),
                         LogisticRegression(max_iter=2000))
    result = cross_validate(pipe, x, y, groups=groups, cv=GroupKFold(2), return_estimator=True,
                            return_indices=True)
    for fitted, test in zip(result["estimator"], result["indices"]["test"], strict=True):
        emb = fitted[0]
        together = emb.transform(x[test])
        scale = np.abs(together).max()
        for i in (0, len(test) // 2, len(test) - 1):
            alone = emb.transform(x[test[i : i + 1]])[0]
            np.testing.assert_allclose(alone, together[i], rtol=0, atol=1e-5 * scale)
        order = np.random.default_rng(0).permutation(len(test))
        np.testing.assert_allclose(emb.transform(x[test[order]]), together[order], rtol=0, atol=1e-5 * scale)
        # the test fold is scaled by the training fold's statistics, not its own
        train = np.setdiff1d(np.arange(len(x)), test)
        refit = clone(emb).fit(x[test])
        assert not np.allclose(refit.preprocessor_.scale_, emb.preprocessor_.scale_)
        assert emb.preprocessor_.ch_names_ == ep.ch_names and len(train) + len(test) == len(x)
    segment = emb.segments(x[:1])[0]
    assert segment.signal.shape == (64, 400) and segment.sfreq == 200.0
    assert segment.meta["filter"]["high_pass"] == "linear detrend per epoch"  # 2 s < the 0.5-Hz kernel


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
    fitted = Embedder(str(export), info=ep.info).fit(ep[:4].get_data())
    other = mne.create_info(ep.ch_names[::-1], ep.info["sfreq"], "eeg")
    with pytest.raises(NeurofmError, match="other channels than the fitted ones"):
        fitted.set_params(info=other).transform(ep[:4].get_data())


def test_embedder_passes_scikit_learns_checks_that_apply(export, epochs):
    """scikit-learn's API checks, by name (its data checks assume 2-D X and are skipped for a
    ``three_d_array`` transformer), then the data checks that matter, on real EEG epochs."""
    from sklearn.utils import estimator_checks as checks
    from sklearn.utils import get_tags

    emb = Embedder(str(export), readout="mean", info=epochs[0].info)
    tags = get_tags(emb)
    assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array and tags.requires_fit
    for check in ("check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
                  "check_estimator_repr", "check_no_attributes_set_in_init", "check_get_params_invariance",
                  "check_set_params", "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order"):
        getattr(checks, check)("Embedder", clone(emb))
    data = epochs[0][:12].get_data()
    params = emb.get_params()
    with pytest.raises(NotFittedError):
        clone(emb).transform(data)
    assert emb.fit(data) is emb and emb.get_params() == params  # fit returns self, params untouched
    first = emb.transform(data)
    np.testing.assert_array_equal(emb.fit(data).transform(data), first)  # idempotent, deterministic
    as_float32 = emb.transform(data.astype(np.float32))
    assert as_float32.dtype == np.float64 and first.dtype == np.float64
    np.testing.assert_allclose(as_float32, first, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(emb)).transform(data), first)
    bad = {"NaN": np.where(np.arange(data.size).reshape(data.shape) == 5, np.nan, data),
           "inf": np.where(np.arange(data.size).reshape(data.shape) == 5, np.inf, data),
           "no epochs": data[:0], "complex": data.astype(complex), "shape": data[:, :, 0],
           "strings": np.full(data.shape, "a")}
    messages = {"NaN": "1 samples are NaN or inf", "inf": "1 samples are NaN or inf", "no epochs": "0 epochs",
                "complex": "complex input", "shape": "expected epochs", "strings": "must be numbers"}
    for name, x in bad.items():
        with pytest.raises(ValueError, match=messages[name]):
            clone(emb).fit(x)
