"""neurofm.finetune.evaluate: the in-process evaluation behind `neurofm finetune`, on real
EEGMMI windows (window level) and ABIDE tables (subject level, leave one site out)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from neurofm.datasets import PrepareOptions
from neurofm.errors import ConfigError, NeurofmError
from neurofm.finetune.config import DecodingTask, FinetuneConfig
from neurofm.finetune.evaluate import evaluate
from neurofm.finetune.tasks import (
    cohort_windows,
    decoding_windows,
    event_groups,
    finetune,
    subject_classes,
)
from neurofm.models.io import save_pretrained
from neurofm.models.mae import MaskedAutoencoder, ModelConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MaskedAutoencoder(ModelConfig())


@pytest.fixture(scope="module")
def eeg(eegmmidb):
    runs = [eegmmidb / s / f"{s}R04.edf" for s in ("S001", "S002")]
    return decoding_windows(runs, ["T1", "T2"], 0.5, 2.5)


def test_window_level_loso_with_the_baselines_on_real_eeg(model, eeg, tmp_path):
    result = evaluate(model, eeg, [w.meta["label"] for w in eeg], event_groups(eeg), protocol="loso",
                      readout="sensors")
    assert result.classes == ["T1", "T2"] and result.level == "window" and result.n_subjects == 2
    assert set(result.methods) == {"linear_probe", "csp_lda", "tangent_lr", "fb_tangent_lr", "erp_lda"}
    table = result.predictions
    for method, rows in table.groupby("method"):  # every window tested once per method
        assert len(rows) == len(eeg) and not rows.duplicated(["source", "onset_s"]).any()
        assert np.allclose(rows[["prob_T1", "prob_T2"]].sum(axis=1), 1.0, atol=1e-5)
        score = balanced_accuracy_score(rows["label"], np.where(rows["prob_T2"] > rows["prob_T1"], "T2", "T1"))
        assert result.methods[method]["metrics"]["balanced_accuracy"]["value"] == pytest.approx(score)
    assert sorted(table["split"].unique()) == ["loso-S001", "loso-S002"]
    assert (table.groupby("split")["subject"].nunique() == 1).all()  # one subject tested per fold
    json.dumps(result.summary())
    result.write(tmp_path)
    written = pd.read_csv(tmp_path / "predictions.csv", dtype={"subject": str})
    assert len(written) == len(table) and (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert "### linear_probe" in (tmp_path / "results.md").read_text()
    # one fold only, as the benchmarks ask for
    one = evaluate(model, eeg, [w.meta["label"] for w in eeg], protocol="loso", test_subjects=["S002"],
                   baselines=False)
    assert set(one.predictions["subject"]) == {"S002"}
    with pytest.raises(ConfigError, match="not among the subjects"):
        evaluate(model, eeg, [w.meta["label"] for w in eeg], protocol="loso", test_subjects=["S099"])
    with pytest.raises(NeurofmError, match="two or more classes"):
        evaluate(model, eeg, ["T1"] * len(eeg))


def test_subject_level_leave_one_site_out_on_abide(model, abide):
    # each site's first 4 and last 4 tables: autism (DX_GROUP 1) first, controls (2) last
    tables = [p for site in ("Caltech", "Pitt") for found in [sorted((abide / "rois_cc200").glob(f"{site}_0*"))]
              for p in found[:4] + found[-4:]]
    options = PrepareOptions(window_s=60.0, fmri_window_s=60.0, roi_coords=str(abide / "CC200.nii.gz"),
                             roi_tr_s={"Caltech": 2.0, "Pitt": 1.5})
    cohort = cohort_windows(tables, options, label="DX_GROUP", group_by="SITE_ID",
                            phenotype=abide / "Phenotypic_V1_0b_preprocessed1.csv")
    segments, labels, sites = subject_classes(cohort, "DX_GROUP", "SITE_ID")
    assert len(labels) == len(segments) and set(sites) == {"CALTECH", "PITT"}
    result = evaluate(model, segments, labels, level="subject", protocol="logo", group_values=sites,
                      readout="connectivity")
    assert set(result.methods) == {"linear_probe", "fc_logistic", "fc_tangent"}
    for _, rows in result.predictions.groupby("method"):  # one row per subject
        assert len(rows) == result.n_subjects == 16 and rows["subject"].is_unique
    assert set(result.predictions["split"]) == {"logo-CALTECH", "logo-PITT"}


def test_finetune_leaves_the_callers_config_alone(eegmmidb, tmp_path):
    export = save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "export")
    conf = FinetuneConfig(ckpt=str(export), inputs=[str(eegmmidb / s / f"{s}R04.edf") for s in ("S001", "S002")],
                          task=DecodingTask(event_id=["T1", "T2"], tmin_s=0.5, tmax_s=2.5, protocol="loso",
                                            baseline=False),
                          tokenizer={"l_freq": 1.0}, run_dir=str(tmp_path / "run"))
    result = finetune(conf)
    assert conf.tokenizer == {"l_freq": 1.0}
    assert set(result["methods"]) == {"linear_probe"} and (tmp_path / "run" / "metrics.json").exists()
