"""The real labelled cohorts as a user reaches for them: ABIDE CC200 tables, EEGMMI EDF+ runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import neurofm
from neurofm.batch import collate_segments
from neurofm.datasets import PrepareOptions, read_phenotype, stream, write_shards
from neurofm.datasets.options import roi_tr_for
from neurofm.embedding import as_neurofm
from neurofm.errors import BoldError, ConfigError
from neurofm.finetune.baselines import shared_sensor_array, tangent_lr, tangent_space
from neurofm.finetune.classifier import (
    Classifier,
    finetune_classifier,
)
from neurofm.finetune.protocols import leave_one_group_out, subject_kfold
from neurofm.models.io import save_pretrained
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.tokenizers import tokenize_events, tokenize_roi_table
from neurofm.tokenizers.naming import entities_from_name
from tests.helpers.cli import run_cli
from tests.helpers.encode import encode

# Caltech tables with and without all-zero columns (parcels outside the participant's mask)
CALTECH = ["Caltech_0051456", "Caltech_0051457", "Caltech_0051461", "Caltech_0051462",
           "Caltech_0051466", "Caltech_0051467", "Caltech_0051470", "Caltech_0051479",
           "Caltech_0051486", "Caltech_0051487", "Caltech_0051489", "Caltech_0051490"]


def table(abide, name: str):
    return abide / "rois_cc200" / f"{name}_rois_cc200.1D"


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    torch.manual_seed(0)
    return save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path_factory.mktemp("tiny") / "export")


def test_subject_and_site_come_from_pcp_and_physionet_names():
    assert entities_from_name("/a/Leuven_1_0050682_rois_cc200.1D") == {"site": "Leuven_1", "subject": "0050682"}
    assert entities_from_name("Caltech_0051456_rois_cc200.1D")["subject"] == "0051456"
    assert entities_from_name("S003R04.edf") == {"subject": "S003", "run": "04"}
    assert entities_from_name("sub-07_task-rest_eeg.edf")["subject"] == "07"
    assert entities_from_name("lab_p12_day3.edf", r"_p(?P<subject>\d+)_") == {"subject": "12"}
    assert entities_from_name("recording.edf") == {"subject": "recording"}
    assert entities_from_name("recording.edf", stem_fallback=False) == {}
    assert entities_from_name("S003R04.edf", stem_fallback=False) == {"subject": "S003", "run": "04"}
    with pytest.raises(ConfigError, match="does not match"):
        entities_from_name("x.edf", r"_p(\d+)_")
    with pytest.raises(ConfigError, match="needs a"):
        entities_from_name("x.edf", r"(a)(b)")


def test_all_zero_roi_columns_are_dropped_and_reported(abide):
    path = table(abide, "Caltech_0051490")
    values = np.loadtxt(path, comments="#")
    zero = np.flatnonzero(~values.any(axis=0))
    assert len(zero) >= 1  # the real file has a parcel outside the participant's mask
    segments = tokenize_roi_table(path, coords=abide / "CC200.nii.gz", tr_s=2.0, window_s=60.0)
    seg = segments[0]
    dropped = seg.meta["dropped_parcels"]["all_zero"]
    assert len(dropped) == len(zero) and seg.n_sensors == 200 - len(zero)
    assert not set(dropped) & set(seg.meta["parcel_labels"])
    assert np.isfinite(seg.signal).all() and np.abs(seg.signal).std(axis=1).min() > 0.1
    assert seg.meta["subject"] == "0051490" and seg.meta["site"] == "Caltech"
    kept = tokenize_roi_table(path, coords=abide / "CC200.nii.gz", tr_s=2.0, window_s=60.0,
                              empty_parcels="keep")[0]
    assert kept.n_sensors == 200 and sum(kept.meta["parcel_valid"]) == 200 - len(zero)
    with pytest.raises(BoldError, match="all zero"):
        tokenize_roi_table(path, coords=abide / "CC200.nii.gz", tr_s=2.0, empty_parcels="raise")


def test_prepare_abide_tables_with_phenotype_and_per_site_tr(abide, tmp_path, caplog):
    inputs = [table(abide, n) for n in CALTECH[:6]] + sorted((abide / "rois_cc200").glob("Pitt_*"))[:3]
    options = PrepareOptions(fmri_window_s=60.0, roi_coords=str(abide / "CC200.nii.gz"),
                             roi_tr_s={"Caltech": 2.0, "Pitt": 1.5},
                             phenotype=str(abide / "Phenotypic_V1_0b_preprocessed1.csv"))
    with caplog.at_level("WARNING", logger="neurofm"):
        manifest = write_shards(inputs, tmp_path / "shards", options)
    assert manifest["files"] == {"found": 9, "ok": 9, "failed": 0}
    assert "no phenotype row" not in caplog.text
    phenotype = read_phenotype(abide / "Phenotypic_V1_0b_preprocessed1.csv", label_columns=["DX_GROUP"])
    seen = {}
    for seg in stream(tmp_path / "shards", split=None, shuffle_buffer=0):
        seen[seg.meta["subject"]] = (seg.meta["site"], seg.meta["tr_s"], seg.meta["phenotype"]["DX_GROUP"])
        assert seg.meta["phenotype"]["DX_GROUP"] == phenotype[str(int(seg.meta["subject"]))]["DX_GROUP"]
    assert len(seen) == 9
    assert {site: tr for site, tr, _ in seen.values()} == {"Caltech": 2.0, "Pitt": 1.5}


def test_roi_tr_mapping_names_a_missing_site(abide):
    path = str(table(abide, "Caltech_0051456"))
    assert roi_tr_for(path, {"site": "Caltech"}, {"caltech": 2.0}) == 2.0
    assert roi_tr_for(path, {"site": "Caltech"}, {"Caltech_*": 2.5}) == 2.5
    with pytest.raises(ConfigError, match=r"Caltech_0051456_rois_cc200.1D: roi_tr_s has no TR for site 'Caltech'"):
        roi_tr_for(path, {"site": "Caltech"}, {"Pitt": 1.5})


def test_subject_folds_are_stratified_by_label(abide):
    rows = read_phenotype(abide / "Phenotypic_V1_0b_preprocessed1.csv", label_columns=["DX_GROUP"])
    subjects = np.array([entities_from_name(p.name)["subject"]
                         for p in sorted((abide / "rois_cc200").glob("KKI_*"))])
    labels = np.array([rows[str(int(s))]["DX_GROUP"] for s in subjects])
    assert 0.2 < (labels == 1).mean() < 0.5  # KKI is imbalanced: unstratified folds can lose a class
    for split in subject_kfold(subjects, k=2, labels=labels):
        assert set(labels[split.train]) == {1, 2} and set(labels[split.test]) == {1, 2}
        assert not set(subjects[split.train]) & set(subjects[split.test])


def test_cli_finetune_disorder_on_roi_tables(abide, tiny_export, tmp_path):
    run = tmp_path / "run"
    inputs = "[" + ",".join(str(table(abide, n)) for n in CALTECH) + "]"
    result = run_cli("finetune", "task=disorder", f"ckpt={tiny_export}", f"inputs={inputs}",
                     f"task.roi_coords={abide / 'CC200.nii.gz'}", "task.roi_tr_s=2.0",
                     f"task.phenotype={abide / 'Phenotypic_V1_0b_preprocessed1.csv'}",
                     "task.label=DX_GROUP", "task.window_s=60", "task.folds=2", f"run_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_subjects"] == 12 and metrics["classes"] == ["1", "2"]
    assert set(metrics["methods"]) == {"linear_probe", "fc_logistic", "fc_tangent"}
    for method in metrics["methods"].values():
        assert sum(s["n_test"] for s in method["splits"]) == 12
    # one row per subject and method, labels from the phenotype table, probabilities summing to 1
    predictions = pd.read_csv(run / "predictions.csv", dtype={"subject": str})
    assert len(predictions) == 36 and set(predictions["method"]) == set(metrics["methods"])
    rows = read_phenotype(abide / "Phenotypic_V1_0b_preprocessed1.csv", label_columns=["DX_GROUP"])
    assert all(str(rows[str(int(s))]["DX_GROUP"]) == str(label)
               for s, label in zip(predictions["subject"], predictions["label"], strict=True))
    assert np.allclose(predictions["prob_1"] + predictions["prob_2"], 1.0)


def test_python_api_takes_what_load_returns(eegmmidb, tiny_export):
    model = neurofm.load(tiny_export)
    segments = list(tokenize_events(eegmmidb / "S001" / "S001R04.edf", event_id=["T1", "T2"],
                                    tmin=0.0, tmax=2.0))
    labels = np.array([s.meta["label"] == "T2" for s in segments], dtype=int)
    assert len(segments) == 15 and set(labels) == {0, 1}
    emb = as_neurofm(model).embed(segments, batch_size=64).windows
    assert emb.shape == (15, 64)
    train, test = np.arange(10), np.arange(10, 15)
    probs, losses = finetune_classifier(model, segments, labels, train, test, epochs=2)
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1) and len(losses) == 2
    scratch, _ = finetune_classifier(None, segments, labels, train, test, config=model.config, epochs=1)
    assert scratch.shape == (5, 2)
    # PhysioNet's channel names ('Fc5.', 'Cz..') found their 10-05 positions
    assert segments[0].n_sensors == 64 and np.abs(segments[0].positions).sum(1).min() > 0


def test_trained_heads_read_the_sensor_axis(eegmmidb, tiny_export):
    """finetune / LoRA / scratch heads take the probe's readouts: per-sensor tokens (64 EEGMMI
    channels x 64 dims) or their connectivity, with gradients reaching the encoder."""
    model = neurofm.load(tiny_export)
    segments = list(tokenize_events(eegmmidb / "S002" / "S002R04.edf", event_id=["T1", "T2"],
                                    tmin=0.0, tmax=2.0))
    labels = np.array([s.meta["label"] == "T2" for s in segments], dtype=int)
    idx = np.arange(len(segments))
    probs, losses = finetune_classifier(model, segments, labels, idx, idx, epochs=8, lr=3e-3,
                                        readout="sensors")
    assert probs.shape == (len(idx), 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2])
    head = Classifier(model.model, 2, "connectivity", n_shared=64)
    assert head.head[1].in_features == 64 * 63 // 2
    batch = collate_segments(segments[:3])
    take = torch.arange(64).expand(3, 64)
    head(batch, take).sum().backward()
    assert model.model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="spatial_latents=4 compresses away"):
        Classifier(MaskedAutoencoder(ModelConfig(spatial_latents=4)), 2, "sensors", n_shared=64)


def test_cli_finetune_disorder_leave_one_site_out(abide, tiny_export, tmp_path):
    rows = read_phenotype(abide / "Phenotypic_V1_0b_preprocessed1.csv", label_columns=["DX_GROUP"])
    chosen = []
    for site in ("Caltech", "Pitt"):  # 3 + 2 per site, both diagnoses
        files = sorted((abide / "rois_cc200").glob(f"{site}_*"))
        by_class = {c: [f for f in files if rows[str(int(f.name.split("_")[1]))]["DX_GROUP"] == c]
                    for c in (1, 2)}
        chosen += by_class[1][:3] + by_class[2][:2]
    inputs = "[" + ",".join(map(str, chosen)) + "]"
    run = tmp_path / "run"
    result = run_cli("finetune", "task=disorder", f"ckpt={tiny_export}", f"inputs={inputs}",
                     f"task.roi_coords={abide / 'CC200.nii.gz'}", "task.roi_tr_s={Caltech: 2.0, Pitt: 1.5}",
                     f"task.phenotype={abide / 'Phenotypic_V1_0b_preprocessed1.csv'}", "task.label=DX_GROUP",
                     "task.window_s=60", "task.protocol=logo", "task.group_by=SITE_ID", f"run_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    splits = metrics["methods"]["fc_logistic"]["splits"]
    assert [(s["split"], s["n_train"], s["n_test"]) for s in splits] == [
        ("logo-CALTECH", 5, 5), ("logo-PITT", 5, 5)]
    missing = run_cli("finetune", "task=disorder", f"ckpt={tiny_export}", f"inputs={inputs}",
                      f"task.roi_coords={abide / 'CC200.nii.gz'}", "task.roi_tr_s=2.0",
                      f"task.phenotype={abide / 'Phenotypic_V1_0b_preprocessed1.csv'}", "task.label=DX_GROUP",
                      "task.window_s=60", "task.protocol=logo", "task.group_by=SCANNER", f"run_dir={run}")
    assert missing.returncode == 2 and "task.group_by=SCANNER" in missing.stderr


def test_leave_one_group_out_never_splits_a_subject():
    splits = leave_one_group_out(list("aaabbcc"), ["1", "1", "6", "2", "3", "4", "5"])
    assert [s.name for s in splits] == ["logo-a", "logo-b", "logo-c"]
    with pytest.raises(ValueError, match="subject '1' is in groups 'a' and 'b'"):
        leave_one_group_out(["a", "b"], ["1", "1"])
    with pytest.raises(ValueError, match=r"groups \{'c': '4'\} hold one subject each"):
        leave_one_group_out(["a", "a", "b", "b", "c"], ["1", "5", "2", "3", "4"])


def test_readouts_keep_the_parcel_axis_over_the_parcels_every_table_shares(abide, tiny_export):
    model = neurofm.load(tiny_export)
    segments = []
    for name in CALTECH[:4]:  # 0051461 and 0051462 have all-zero parcels, dropped per table
        segments += tokenize_roi_table(table(abide, name), coords=abide / "CC200.nii.gz", tr_s=2.0, window_s=60.0)
    labels = [tuple(s.meta["parcel_labels"]) for s in segments]
    shared = [p for p in labels[0] if all(p in other for other in labels)]
    assert len({len(x) for x in labels}) > 1 and 150 < len(shared) < 200
    sensors = as_neurofm(model).embed(segments, readout="sensors").windows
    connectivity = as_neurofm(model).embed(segments, readout="connectivity").windows
    assert sensors.shape == (len(segments), len(shared) * 64)
    assert connectivity.shape == (len(segments), len(shared) * (len(shared) - 1) // 2)
    assert np.isfinite(connectivity).all() and np.abs(connectivity).max() < 8
    # against the encoder's tokens of the last window, computed by hand
    seg = segments[-1]
    with torch.no_grad():
        tokens = encode(model.model, collate_segments([seg]))[0][0].double()
    tokens = tokens.reshape(seg.n_sensors, -1, 64)
    rows = [seg.meta["parcel_labels"].index(p) for p in shared]
    np.testing.assert_allclose(sensors[-1], tokens[rows].mean(1).flatten().numpy(), rtol=1e-4, atol=1e-5)
    flat = (tokens[rows] - tokens[rows].mean(1, keepdim=True)).flatten(1).numpy()
    expected = np.arctanh(np.corrcoef(flat - flat.mean(1, keepdims=True))[np.triu_indices(len(rows), 1)])
    np.testing.assert_allclose(connectivity[-1], expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ConfigError, match="readout must be one of"):
        as_neurofm(model).embed(segments, readout="mena")


def test_tangent_space_fc_is_fitted_on_training_subjects_only(abide):
    series = [np.loadtxt(table(abide, name), comments="#")[:, :40] for name in CALTECH[:6]]
    train, test = tangent_space(series[:4], series[4:], standardize=True)
    assert train.shape == (4, 40 * 41 // 2) and test.shape == (2, 40 * 41 // 2)
    # tangent vectors are centred on the training subjects' geometric mean
    assert np.abs(train.mean(0)).mean() < np.abs(test.mean(0)).mean()
    again = tangent_space(series[:4], series[5:], standardize=True)[1]
    np.testing.assert_allclose(again[0], test[1], rtol=1e-6, atol=1e-8)


def test_tangent_space_matches_nilearn_on_real_tables(abide):
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import LedoitWolf

    series = [np.loadtxt(table(abide, name), comments="#")[:, :60] for name in CALTECH[:8]]
    ours = tangent_space(series[:6], series[6:], standardize=True)
    measure = ConnectivityMeasure(cov_estimator=LedoitWolf(store_precision=False), kind="tangent",
                                  vectorize=True, standardize="zscore_sample")
    expected = measure.fit(series[:6]).transform(series[:6]), measure.transform(series[6:])
    for got, want in zip(ours, expected, strict=True):
        assert got.shape == want.shape == (len(want), 60 * 61 // 2)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


def test_riemannian_baseline_decodes_imagined_fist_movements(eegmmidb):
    segments = []
    for run in ("R04", "R08", "R12"):  # motor imagery, left vs right fist
        segments += tokenize_events(eegmmidb / "S002" / f"S002{run}.edf", event_id=["T1", "T2"], tmin=0.5, tmax=2.5)
    x = shared_sensor_array(segments)
    y = np.array([s.meta["label"] == "T2" for s in segments], dtype=int)
    correct = 0
    for split in subject_kfold(np.arange(len(y)), k=5, labels=y):
        prob = tangent_lr(x[split.train], y[split.train], x[split.test], segments[0].sfreq)
        assert prob.shape == (len(split.test), 2) and np.allclose(prob.sum(1), 1)
        correct += int((prob.argmax(1) == y[split.test]).sum())
    assert correct / len(y) > 0.7  # chance is 0.5; S002 is this cohort's clearest imager (~0.84)


def test_decoding_by_subject_names_files_whose_subject_is_unknown(eegmmidb, tiny_export, tmp_path):
    files = [tmp_path / "run_a.edf", tmp_path / "run_b.edf"]
    for f, run in zip(files, ("R04", "R08"), strict=True):
        f.symlink_to(eegmmidb / "S001" / f"S001{run}.edf")
    result = run_cli("finetune", f"ckpt={tiny_export}", f"inputs=[{files[0]},{files[1]}]",
                     "task.event_id=[T1,T2]", "task.tmin_s=0", "task.tmax_s=2", "task.protocol=loso",
                     f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "run_a.edf" in result.stderr and "task.subject_pattern" in result.stderr


def test_finetuning_mixes_sites_with_different_trs(abide, tiny_export):
    # ABIDE sites differ in TR, so their windows differ in sampling rate: batches hold one rate
    model = neurofm.load(tiny_export)
    segments = []
    for name, tr in (("Caltech_0051456", 2.0), ("Caltech_0051457", 2.0), ("Pitt_0050003", 1.5),
                     ("Pitt_0050004", 1.5)):
        segments += tokenize_roi_table(table(abide, name), coords=abide / "CC200.nii.gz", tr_s=tr, window_s=60.0)
    assert len({s.sfreq for s in segments}) == 2
    labels = np.array([s.meta["subject"].startswith("00500") for s in segments], dtype=int)
    test = np.array([0, len(segments) - 1])  # one window of each rate
    train = np.setdiff1d(np.arange(len(segments)), test)
    probs, losses = finetune_classifier(model, segments, labels, train, test, epochs=1, batch_size=4)
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1) and len(losses) >= 2
    # each test window gets its own prediction, whatever the order it is asked in
    again, _ = finetune_classifier(model, segments, labels, train, test[::-1], epochs=1, batch_size=4)
    np.testing.assert_allclose(again, probs[::-1], atol=1e-5)


def test_loso_runs_only_the_folds_of_the_test_subjects_asked_for(eegmmidb, tiny_export, tmp_path):
    import pandas as pd

    inputs = "[" + ",".join(str(eegmmidb / s / f"{s}R04.edf") for s in ("S001", "S002", "S003")) + "]"
    common = [f"ckpt={tiny_export}", f"inputs={inputs}", "task.event_id=[T1,T2]", "task.tmin_s=0.5",
              "task.tmax_s=2.5", "task.protocol=loso", "task.baseline=false", "task.readout=sensors"]
    result = run_cli("finetune", *common, "task.test_subjects=[S002]", f"run_dir={tmp_path / 'one'}")
    assert result.returncode == 0, result.stderr[-2000:]
    one = pd.read_csv(tmp_path / "one" / "predictions.csv", dtype={"subject": str})
    assert set(one["split"]) == {"loso-S002"} and set(one["subject"]) == {"S002"} and len(one) == 15
    # the same fold as in the full run: the probe is trained on the same windows
    assert run_cli("finetune", *common, f"run_dir={tmp_path / 'all'}").returncode == 0
    full = pd.read_csv(tmp_path / "all" / "predictions.csv", dtype={"subject": str})
    assert set(full["split"]) == {"loso-S001", "loso-S002", "loso-S003"}
    np.testing.assert_allclose(full[full["subject"] == "S002"]["prob_T2"].to_numpy(),
                               one["prob_T2"].to_numpy(), atol=1e-6)
    wrong = run_cli("finetune", *common, "task.test_subjects=[S009]", f"run_dir={tmp_path / 'x'}")
    assert wrong.returncode == 2 and "task.test_subjects names ['S009']" in wrong.stderr


def test_baselines_filter_once_and_predict_as_when_filtered_per_fold(eegmmidb):
    from neurofm.finetune.baselines import DECODING_BASELINES, decoding_baselines
    from neurofm.finetune.protocols import leave_one_subject_out

    segments = []
    for s in ("S001", "S002"):
        segments += list(tokenize_events(eegmmidb / s / f"{s}R04.edf", event_id=["T1", "T2"], tmin=0.5,
                                         tmax=2.5, entities={"subject": s}))
    x = shared_sensor_array(segments)
    y = np.array([s.meta["label"] == "T2" for s in segments], dtype=int)
    once = decoding_baselines(x, segments[0].sfreq)
    for split in leave_one_subject_out([s.meta["subject"] for s in segments]):
        for name, (fit, _) in DECODING_BASELINES.items():
            per_fold = fit(x[split.train], y[split.train], x[split.test], segments[0].sfreq)
            np.testing.assert_allclose(once[name](split.train, y[split.train], split.test), per_fold,
                                       atol=1e-9, err_msg=name)
