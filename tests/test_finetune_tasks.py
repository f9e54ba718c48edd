"""Encoding (stimulus -> every sensor), subject-level classification and LoRA, on real recordings."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from neurofm.batch import collate_segments
from neurofm.errors import NeurofmError
from neurofm.finetune.baselines import connectivity_features, fc_logistic, ridge_trf
from neurofm.finetune.classifier import add_lora, finetune_classifier
from neurofm.finetune.disorder import aggregate_subjects, subject_labels
from neurofm.finetune.encoding import (
    EncodingModel,
    encoding_data,
    event_features,
    fit_encoding,
    predict_encoding,
)
from neurofm.finetune.metrics import classification_metrics, per_sensor_r
from neurofm.finetune.protocols import subject_kfold, time_splits
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.testing import plant_group_difference
from neurofm.tokenizers import tokenize_raw
from tests.helpers.cli import run_cli


@pytest.fixture(scope="module")
def tutorial(eeglab_tutorial):
    return eeglab_tutorial.copy()


@pytest.fixture(scope="module")
def stimulus(tutorial):
    features, names = event_features(tutorial, ["square", "rt"])
    data = encoding_data(tutorial, features, feature_names=names, lags_s=(0.0, 0.5), window_s=4.0,
                         sfreq=128.0, reject_scaled=None)
    return data


# ----------------------------------------------------------------------------- encoding


def test_event_features_sit_on_the_annotations(tutorial, stimulus):
    features, names = event_features(tutorial, ["square", "rt"])
    assert names == ["square", "rt"] and features.shape == (tutorial.n_times, 2)
    assert features.sum(0).tolist() == [80.0, 74.0]  # the tutorial's 154 events
    data = stimulus
    assert data.before == 64 and data.after == 0  # 0.5 s of lags at 128 Hz
    assert data.stimulus.shape == (len(data.segments), 64 + 512, 2)
    for k, seg in enumerate(data.segments):  # every impulse in a window is one of its events
        onsets = np.flatnonzero(data.stimulus[k, data.before:].any(axis=1)) / data.sfreq
        expected = [e["onset_s"] for e in seg.meta["events"] if e["label"] in names]
        assert np.allclose(onsets, expected, atol=1.0 / data.sfreq)


def test_encoding_data_rejects_bad_features(tutorial):
    features, _ = event_features(tutorial, ["square"])
    with pytest.raises(NeurofmError, match=r"test_raw\.fdt: features have shape \(100, 1\)"):
        encoding_data(tutorial, features[:100], sfreq=128.0)
    features[5, 0] = np.nan
    with pytest.raises(NeurofmError, match="NaN"):
        encoding_data(tutorial, features, sfreq=128.0)
    with pytest.raises(NeurofmError, match=r"event labels \['nope'\]"):
        event_features(tutorial, ["nope"])


def test_time_splits_are_contiguous_and_cover_every_window():
    splits = time_splits(23, "kfold_time", folds=5)
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested) == list(range(23))
    for split in splits:
        assert np.all(np.diff(split.test) == 1) and not set(split.train) & set(split.test)
    (held,) = time_splits(20, "heldout_time", test_fraction=0.2)
    assert held.test.tolist() == [16, 17, 18, 19] and held.train.tolist() == list(range(16))


def test_encoding_head_is_equivariant_to_sensor_order(stimulus):
    torch.manual_seed(0)
    model = EncodingModel(MaskedAutoencoder(ModelConfig()), 2, stimulus.before, patch=128).eval()
    segs = stimulus.segments[:3]
    order = np.random.default_rng(0).permutation(segs[0].n_sensors)
    stim = torch.from_numpy(stimulus.stimulus[:3])
    with torch.no_grad():
        pred = model(collate_segments(segs), stim)
        permuted = model(collate_segments([s.permute(order) for s in segs]), stim)
    assert pred.shape == (3, segs[0].n_sensors, 512)
    torch.testing.assert_close(permuted, pred[:, order], atol=1e-5, rtol=1e-5)


def test_encoding_predicts_held_out_eeg_like_the_ridge_trf(stimulus):
    data, truth = stimulus, stimulus.brain()
    splits = time_splits(len(data.segments), "kfold_time", folds=3)
    backbone = MaskedAutoencoder(ModelConfig())
    ours, ridge = np.zeros_like(truth), np.zeros_like(truth)
    for split in splits:
        model, losses = fit_encoding(backbone, data, split.train, mode="linear_probe", epochs=20, lr=3e-3)
        ours[split.test] = predict_encoding(model, data, split.test)
        ridge[split.test] = ridge_trf(data, split.train, split.test)
        assert np.mean(losses[-5:]) < np.mean(losses[:5])
    r_ours, r_ridge = per_sensor_r(truth, ours), per_sensor_r(truth, ridge)
    assert r_ours.shape == r_ridge.shape == (truth.shape[1],)
    # the tutorial's evoked responses are predictable from the event times on held-out blocks
    assert r_ridge.mean() > 0.1 and r_ours.mean() > 0.1
    assert np.corrcoef(r_ours, r_ridge)[0, 1] > 0.3  # the same sensors respond


def test_encoding_modes_train_only_their_parameters(stimulus):
    backbone = MaskedAutoencoder(ModelConfig())
    train = np.arange(6)
    frozen, _ = fit_encoding(backbone, stimulus, train, mode="linear_probe", epochs=1)
    for name, p in backbone.named_parameters():  # the decoder is untouched in linear_probe
        torch.testing.assert_close(dict(frozen.backbone.named_parameters())[name], p)
    lora, _ = fit_encoding(backbone, stimulus, train, mode="lora", epochs=2, lora_rank=4)
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in names) and "kernels" in names
    assert not any(n.startswith("backbone.decoder.blocks") and "lora_" not in n for n in names)
    tuned, _ = fit_encoding(backbone, stimulus, train, mode="finetune", epochs=1)
    changed = [n for n, p in backbone.named_parameters()
               if not torch.equal(dict(tuned.backbone.named_parameters())[n], p)]
    assert any(n.startswith("decoder.blocks") for n in changed)
    assert not any(n.startswith("encoder.") for n in changed)  # encoding uses the decoder only


def test_cli_finetune_encoding(tutorial, tmp_path):
    from neurofm.models.io import save_pretrained

    tutorial.save(tmp_path / "sub-01_task-tutorial_eeg_raw.fif")
    save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "model")
    run = tmp_path / "run"
    result = run_cli("finetune", "task=encoding", f"ckpt={tmp_path / 'model'}",
                     f"inputs=[{tmp_path / 'sub-01_task-tutorial_eeg_raw.fif'}]", "task.events=[square,rt]",
                     "task.folds=3", "task.epochs=10", "+tokenizer.sfreq=128", "+tokenizer.reject_scaled=null",
                     f"run_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"linear_probe", "ridge_trf"}
    assert metrics["features"] == ["square", "rt"] and len(metrics["sensors"]) == 30
    ridge = np.array(metrics["methods"]["ridge_trf"]["pearson_r"])
    assert ridge.shape == (30,) and ridge.mean() > 0.1
    for method in metrics["methods"]:
        assert (run / f"pearson_r_{method}.png").stat().st_size > 10_000
    assert (run / "results.md").read_text().count("| ridge_trf |") == 1


# ----------------------------------------------------------------------------- subject level


@pytest.fixture(scope="module")
def tutorial_windows(tutorial):
    return list(tokenize_raw(tutorial, window_s=2.0, sfreq=128.0, reject_scaled=None))


def planted_cohort(windows: list, amplitude: float) -> list:
    """16 pseudo-subjects cut from the real tutorial recording (7 windows of 2 s each); odd
    ones get a planted frontal 6 Hz source (the known group difference)."""
    out = []
    for k in range(16):
        chunk = windows[7 * k : 7 * k + 7]
        for seg in chunk:
            seg.meta = dict(seg.meta, subject=f"{k:02d}",
                            phenotype={"diagnosis": "patient" if k % 2 else "control"})
        out += plant_group_difference(chunk, amplitude=amplitude, seed=k) if k % 2 else chunk
    return out


@pytest.fixture(scope="module")
def cohort(tutorial_windows):
    return planted_cohort(tutorial_windows, amplitude=3.0)


def test_planted_difference_is_local_and_at_its_frequency(cohort):
    from scipy.signal import welch

    control = next(s for s in cohort if s.meta["subject"] == "00")
    patient = plant_group_difference([control], amplitude=2.0)[0]
    names = control.meta["ch_names"]
    freqs, before = welch(control.signal, fs=control.sfreq, nperseg=128)
    _, after = welch(patient.signal, fs=control.sfreq, nperseg=128)
    at6 = np.argmin(np.abs(freqs - 6.0))
    gain = after[:, at6] / before[:, at6]
    assert gain[names.index("Fz")] > 10 and gain[names.index("Oz")] < gain[names.index("Fz")] / 20
    assert np.allclose(after[:, np.abs(freqs - 6.0) > 3], before[:, np.abs(freqs - 6.0) > 3], rtol=1e-3)


def test_subject_aggregation_and_labels(cohort):
    segments, labels, classes = subject_labels(cohort, "diagnosis")
    assert classes == ["control", "patient"] and len(segments) == 16 * 7
    assert labels.tolist() == [int(s.meta["subject"]) % 2 for s in segments]
    prob = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    ids, out = aggregate_subjects(prob, np.array(["b", "b", "a", "a"]))
    assert ids.tolist() == ["a", "b"]
    expected_b = np.exp(np.log([0.9, 0.1]) / 2 + np.log([0.6, 0.4]) / 2)
    np.testing.assert_allclose(out[1], expected_b / expected_b.sum())
    with pytest.raises(NeurofmError, match="two or more values of 'age'"):
        subject_labels(cohort, "age")


def test_connectivity_baseline_finds_the_planted_group(cohort):
    subjects = np.array([s.meta["subject"] for s in cohort])
    ids, fc = connectivity_features(cohort, subjects)
    n = cohort[0].n_sensors
    assert fc.shape == (16, n * (n - 1) // 2)
    first = np.concatenate([s.signal for s in cohort if s.meta["subject"] == "00"], axis=1)
    np.testing.assert_allclose(fc[0], np.arctanh(np.corrcoef(first)[np.triu_indices(n, 1)]), rtol=1e-6)
    y = np.array([int(i) % 2 for i in ids])
    y_all, p_all = [], []
    for split in subject_kfold(ids, k=4):
        y_all.append(y[split.test])
        p_all.append(fc_logistic(fc[split.train], y[split.train], fc[split.test]))
    m = classification_metrics(np.concatenate(y_all), np.concatenate(p_all), n_boot=1)
    assert m["balanced_accuracy"]["value"] >= 0.9


def test_finetune_on_subject_labels_learns_its_training_subjects(cohort):
    segments, labels, _ = subject_labels(cohort, "diagnosis")
    subjects = np.array([s.meta["subject"] for s in segments])
    train = np.flatnonzero(np.isin(subjects, [f"{k:02d}" for k in range(12)]))
    prob, losses = finetune_classifier(None, segments, labels, train, train, epochs=10, lr=3e-3)
    per_epoch = np.array(losses).reshape(10, -1).mean(1)
    assert per_epoch[-1] < 0.5 * per_epoch[0]
    ids, subject_prob = aggregate_subjects(prob, subjects[train])
    assert ids.tolist() == [f"{k:02d}" for k in range(12)]
    assert (subject_prob.argmax(1) == np.arange(12) % 2).all()  # window labels follow the phenotype


def test_classifier_modes_train_only_their_parameters(cohort, monkeypatch):
    """The classifier's modes through the one loop, on the real tutorial windows:
    ``linear_probe`` moves the head only, ``lora`` adapters and the head, ``finetune`` the
    encoder; the pretrained network passed in is never trained in place; a misspelt mode is
    one line."""
    from neurofm.errors import ConfigError
    from neurofm.finetune.loops import Mode

    segments, labels, _ = subject_labels(cohort, "diagnosis")
    torch.manual_seed(0)
    backbone = MaskedAutoencoder(ModelConfig(dim=64, depth=2, heads=2, decoder_dim=32, decoder_depth=1))
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    idx = np.arange(16)
    from neurofm.finetune import classifier

    trained: dict = {}

    def watching(model, *args, **kwargs):  # the one loop, watched: which parameters it steps
        optimizer = args[2]
        ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
        trained["names"] = {n.split(".")[0] if n.startswith("head") else n for n, p in model.named_parameters()
                            if id(p) in ids}
        return train_epochs(model, *args, **kwargs)

    from neurofm.finetune.loops import train_epochs
    monkeypatch.setattr(classifier, "train_epochs", watching)
    for mode in Mode:
        probs, losses = finetune_classifier(backbone, segments, labels, idx, idx, mode=mode, epochs=2, lr=3e-3)
        assert probs.shape == (16, 2) and np.allclose(probs.sum(1), 1, atol=1e-5) and len(losses) > 0
        names = trained["names"]
        if mode is Mode.LINEAR_PROBE:
            assert names == {"head"}
        elif mode is Mode.LORA:
            assert "head" in names and all(n == "head" or "lora_" in n for n in names)
            assert any("lora_A" in n for n in names)
        else:
            assert any(n.startswith("backbone.encoder.blocks.0.") for n in names)
    for name, p in backbone.named_parameters():
        torch.testing.assert_close(p, before[name])  # trained copies, never the model passed in
    with pytest.raises(ConfigError, match=r"mode must be one of 'linear_probe', 'finetune', 'lora', "
                                          r"'scratch'; got 'lroa' \(did you mean 'lora'\?\)"):
        finetune_classifier(backbone, segments, labels, idx, idx, mode="lroa")


def test_cli_finetune_disorder_on_a_planted_cohort(tutorial, tmp_path):
    from neurofm.models.io import save_pretrained

    frontal = ["FPz", "F3", "Fz", "F4", "FC1", "FC2"]
    rows = ["participant_id\tdiagnosis"]
    for k in range(12):
        chunk = tutorial.copy().crop(k * 16.0, (k + 1) * 16.0, include_tmax=False)
        if k % 2:
            wave = np.sin(2 * np.pi * 6.0 * chunk.times + k)
            chunk.apply_function(lambda x, wave=wave: x + 2.0 * x.std() * wave, picks=frontal)
        chunk.save(tmp_path / f"sub-{k:02d}_task-rest_eeg.fif")
        rows.append(f"sub-{k:02d}\t{'patient' if k % 2 else 'control'}")
    rows.append("sub-99\tcontrol")  # in the table, not on disk: ignored
    (tmp_path / "participants.tsv").write_text("\n".join(rows) + "\n")
    save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "model")
    run = tmp_path / "run"
    result = run_cli("finetune", "task=disorder", f"ckpt={tmp_path / 'model'}", f"inputs=[{tmp_path}]",
                     "task.window_s=4", "task.folds=4", "+tokenizer.reject_scaled=null", f"run_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_subjects"] == 12 and metrics["n_windows"] == 48
    assert set(metrics["methods"]) == {"linear_probe", "fc_logistic", "fc_tangent"}
    fc = metrics["methods"]["fc_logistic"]
    assert fc["metrics"]["balanced_accuracy"]["value"] >= 0.9
    assert sum(s["n_test"] for s in fc["splits"]) == 12
    tangent = metrics["methods"]["fc_tangent"]
    assert [s["n_test"] for s in tangent["splits"]] == [s["n_test"] for s in fc["splits"]]
    assert (run / "confusion_matrix.png").stat().st_size > 5000


# ----------------------------------------------------------------------------- LoRA


def test_lora_trains_adapters_only_and_lowers_loss(cohort):
    pytest.importorskip("peft")
    segments, labels, _ = subject_labels(cohort, "diagnosis")
    backbone = MaskedAutoencoder(ModelConfig())
    wrapped = add_lora(MaskedAutoencoder(ModelConfig()), "encoder", rank=4)
    adapters = [n for n, _ in wrapped.named_parameters() if "lora_" in n]
    assert len(adapters) == 2 * 4 * backbone.config.depth  # A and B on qkv, proj, mlp.0, mlp.2
    idx = np.arange(len(segments))
    probs, losses = finetune_classifier(backbone, segments, labels, idx[::2], idx[1::2], epochs=6,
                                        lr=3e-3, lora_rank=4)
    assert probs.shape == (len(idx[1::2]), 2)
    per_epoch = np.array(losses).reshape(6, -1).mean(1)
    assert per_epoch[-1] < per_epoch[0]


def test_lora_without_peft_is_a_clear_error(monkeypatch):
    from neurofm.errors import NotAvailableError

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    with pytest.raises(NotAvailableError, match=r"pip install 'neurofm\[lora\]'"):
        add_lora(MaskedAutoencoder(ModelConfig()), "encoder")


def test_per_parcel_r_plot_on_real_bold(fmri, atlases, tmp_path):
    from neurofm.finetune.plots import plot_sensor_r
    from neurofm.tokenizers import tokenize_bold

    seg = tokenize_bold(fmri / "nipy_functional.nii.gz", atlas=atlases / "Schaefer200_space-MNI152NLin6_res-2x2x2.nii.gz",
                        window_s=20.0, tr_s=2.0)[0]
    assert set(seg.kinds) == {"parcel"}
    r = np.linspace(-0.2, 0.4, seg.n_sensors)
    out = plot_sensor_r(seg, r, tmp_path / "r.png", title="parcels")
    assert os.path.getsize(out) > 20_000
