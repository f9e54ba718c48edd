"""Finetuning: protocols never leak, metrics are right, finetuning learns on real events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurofm.finetune.classifier import (
    Classifier,
    finetune_classifier,
    layerwise_param_groups,
    linear_probe,
)
from neurofm.finetune.metrics import classification_metrics, paired_difference, pearson_per_output
from neurofm.finetune.protocols import event_kfold, few_shot, leave_one_subject_out, subject_kfold
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.tokenizers import tokenize_events, tokenize_raw
from tests.helpers.cli import run_cli


@pytest.fixture(scope="module")
def events(eeglab_tutorial):
    raw = eeglab_tutorial
    segments = list(tokenize_events(raw, event_id=["square", "rt"], tmin=0.0, tmax=1.0, reject_scaled=None))
    labels = np.array([0 if s.meta["label"] == "square" else 1 for s in segments])
    return segments, labels


def test_event_folds_never_share_an_event(events):
    segments, labels = events
    groups = np.array([round(s.meta["event_onset_s"], 3) for s in segments])
    splits = event_kfold(labels, groups, k=5)
    assert len(splits) == 5
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested) == list(range(len(segments)))  # every window tested exactly once
    for split in splits:
        assert not set(groups[split.train]) & set(groups[split.test])
        assert set(labels[split.test]) == {0, 1}
    shots = few_shot(labels, groups, shots=5, repeats=3)
    for split in shots:
        assert np.bincount(labels[split.train]).tolist() == [5, 5]
        assert len(split.test) == len(segments) - 10


def test_subject_folds_never_share_a_subject(meeg):
    segments = []
    for path in ("brainvision/test.vhdr", "bdf/multiple_annotation_chans.bdf", "eeglab/test_raw_chanloc.set"):
        segments += list(tokenize_raw(meeg / path, window_s=1.0, reject_scaled=None))
    subjects = np.array([s.meta["subject"] for s in segments])
    for splits in (subject_kfold(subjects, k=3), leave_one_subject_out(subjects)):
        assert len(splits) == 3
        for split in splits:
            assert not set(subjects[split.train]) & set(subjects[split.test])


def test_metrics_on_known_predictions():
    y = np.array([0, 0, 1, 1, 1, 0])
    perfect = np.eye(2)[y] * 0.8 + 0.1
    m = classification_metrics(y, perfect, n_boot=200)
    assert m["balanced_accuracy"]["value"] == 1.0 and m["cohen_kappa"]["value"] == 1.0
    assert m["auroc"]["value"] == 1.0 and m["f1_weighted"]["value"] == 1.0
    wrong = classification_metrics(y, perfect[:, ::-1], n_boot=200)
    assert wrong["balanced_accuracy"]["value"] == 0.0 and wrong["cohen_kappa"]["value"] == -1.0
    assert wrong["balanced_accuracy"]["ci_low"] <= 0.0 <= wrong["balanced_accuracy"]["ci_high"]
    x = np.arange(10.0)
    r = pearson_per_output(np.stack([x, x], 1), np.stack([2 * x + 1, -x], 1))
    np.testing.assert_allclose(r, [1.0, -1.0])


def test_paired_difference_over_units():
    a, b = np.array([0.62, 0.71, 0.55, 0.80, 0.66]), np.array([0.50, 0.52, 0.57, 0.61, 0.58])
    d = paired_difference(a, b)
    assert d["mean"] == pytest.approx(0.112) and d["n"] == 5 and d["wins"] == 4
    assert d["ci_low"] < d["mean"] < d["ci_high"]
    # the bootstrap CI of a mean of 5 differences lies within their range
    assert -0.02 <= d["ci_low"] and d["ci_high"] <= 0.19
    assert d["wilcoxon_p"] == pytest.approx(0.125)  # one negative, the smallest: W = 1, p = 2 * 2/32
    assert np.isnan(paired_difference(a, a)["wilcoxon_p"]) and paired_difference(a, a)["mean"] == 0
    with pytest.raises(ValueError, match="two 1-D arrays of one shape"):
        paired_difference(a, b[:4])
    with pytest.raises(ValueError, match="NaN or inf"):
        paired_difference(a, np.array([0.5, np.nan, 0.5, 0.5, 0.5]))


def test_finetune_lowers_training_loss_on_real_events(events):
    segments, labels = events
    idx = np.arange(len(segments))
    probs, losses = finetune_classifier(None, segments, labels, idx[:100], idx[100:],
                                        config=ModelConfig(), epochs=8, lr=3e-3)
    assert probs.shape == (len(segments) - 100, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    per_epoch = np.array(losses).reshape(8, -1).mean(1)
    assert per_epoch[-1] < 0.8 * per_epoch[0]


def test_layerwise_decay_and_linear_probe(events):
    model = Classifier(MaskedAutoencoder(ModelConfig()), 2)
    groups = layerwise_param_groups(model, lr=1.0, decay=0.5)
    rates = sorted(g["lr"] for g in groups)
    assert rates == [0.125, 0.25, 0.5, 1.0]  # embeddings, block 0, block 1 + norm, head
    x = np.random.default_rng(0).normal(size=(40, 8))
    y = (x[:, 0] > 0).astype(int)
    probs = linear_probe(x[:30], y[:30], x[30:])
    assert probs.shape == (10, 2) and (probs.argmax(1) == y[30:]).mean() >= 0.8


def test_cli_finetune_decoding_writes_metrics_and_plot(eeglab_tutorial, tmp_path):
    import json

    from neurofm.models.io import save_pretrained

    raw = eeglab_tutorial
    raw.save(tmp_path / "sub-01_task-tutorial_eeg_raw.fif")
    save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "model")
    run = tmp_path / "run"
    result = run_cli("finetune", f"ckpt={tmp_path / 'model'}", f"inputs=[{tmp_path / 'sub-01_task-tutorial_eeg_raw.fif'}]",
                     "task.event_id=[square,rt]", "task.tmin_s=0.0", "task.tmax_s=1.0", "task.folds=3",
                     "+tokenizer.reject_scaled=null", f"run_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classes"] == ["rt", "square"] and metrics["n_windows"] == 154
    assert len(metrics["splits"]) == 3 and sum(s["n_test"] for s in metrics["splits"]) == 154
    # the classical baselines ran on the same splits; stimulus vs response differ in their
    # evoked waveform, which the ERP decoder finds
    assert set(metrics["methods"]) == {"linear_probe", "csp_lda", "tangent_lr", "fb_tangent_lr", "erp_lda"}
    assert metrics["methods"]["erp_lda"]["metrics"]["balanced_accuracy"]["value"] > 0.8
    assert [s["n_test"] for s in metrics["methods"]["erp_lda"]["splits"]] == [
        s["n_test"] for s in metrics["splits"]]
    assert (run / "confusion_matrix.png").stat().st_size > 5000
    assert (run / "results.md").read_text().count("| fold") == 15
    # one row per test event and method, each event tested once per method, probabilities summing to 1
    predictions = pd.read_csv(run / "predictions.csv")
    assert len(predictions) == 5 * 154
    assert (predictions.groupby("method")["onset_s"].nunique() == 154).all()
    assert np.allclose(predictions[["prob_rt", "prob_square"]].sum(1), 1)
    erp = predictions[predictions["method"] == "erp_lda"]
    recomputed = (erp[["prob_rt", "prob_square"]].to_numpy().argmax(1) == (erp["label"] == "square")).mean()
    assert recomputed > 0.8
