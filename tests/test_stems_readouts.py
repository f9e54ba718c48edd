"""Patch stems, learned readouts, the one training rule and the MOABB-equal baselines, on real
EEG (EEGMMI imagery) and against pyriemann / MNE references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neurofm.datasets import collate_segments
from neurofm.embedding import as_neurofm
from neurofm.errors import ConfigError
from neurofm.finetune.baselines import (
    FILTER_BANK,
    MU_BETA,
    band_pass,
    csp_lda,
    decoding_baselines,
    filter_bank_tangent_lr,
    shared_sensor_array,
    tangent_lr,
)
from neurofm.finetune.classifier import Classifier, finetune_classifier
from neurofm.finetune.loops import TrainingRule, train_epochs, warmup_cosine
from neurofm.models.config import ModelConfig
from neurofm.models.embeddings import ConvStem, SpectralStem
from neurofm.models.mae import MaskedAutoencoder
from neurofm.readouts import AttentionPool, SpatialLogPower, shared_tokens
from neurofm.tokenizers import tokenize_events
from tests.helpers.encode import encode


@pytest.fixture(scope="module")
def imagery(eegmmidb):
    """Imagery windows ([0.5, 2.5] s after T1/T2) of S001-S004, labels and subjects."""
    segments, labels, subjects = [], [], []
    for s in ("S001", "S002", "S003", "S004"):
        for run in ("R04", "R08"):
            found = tokenize_events(eegmmidb / s / f"{s}{run}.edf", event_id=["T1", "T2"], tmin=0.5, tmax=2.5)
            segments += found
            labels += [w.meta["label"] == "T2" for w in found]
            subjects += [s] * len(found)
    return segments, np.array(labels, dtype=int), np.array(subjects)


# ----------------------------------------------------------------------------- stems

@pytest.mark.parametrize("stem", ["linear", "conv", "spectral"])
def test_each_stem_trains_on_real_eeg_and_survives_export(stem, imagery, tmp_path):
    from neurofm.embedding import NeuroFM
    from neurofm.models.io import save_pretrained

    segments = imagery[0][:8]
    torch.manual_seed(0)
    model = MaskedAutoencoder(ModelConfig.named("tiny", stem=stem))
    batch = collate_segments(segments)
    out = model(batch)
    assert out["pred"].shape == (8, 64 * 2, 200) and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.patch_embed.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)  # the stem learns
    save_pretrained(model, tmp_path / "export")
    loaded = NeuroFM.from_pretrained(tmp_path / "export")
    assert loaded.config.stem == stem
    model.eval()
    a = encode(model, batch)[1]
    b = encode(loaded.model, batch)[1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_spectral_stem_reads_band_power():
    stem = SpectralStem(200, 64)
    t = torch.arange(200) / 200.0
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (3.0, 10.0, 40.0)])  # [3, 200]
    spectrum = torch.fft.rfft(tones, dim=-1)
    band_power = (spectrum.abs() ** 2 / 200) @ stem.average  # what the stem projects (before the log)
    edges = torch.logspace(0.0, np.log10(100), 17)
    for row, f in zip(band_power, (3.0, 10.0, 40.0), strict=True):
        band = int(row.argmax())
        assert edges[band] <= f < edges[band + 1]  # each tone's power lands in its own band
    # every bin from 1 to Nyquist is read by some band (the narrow low bands share their nearest bin)
    member = (stem.average > 0).sum(1)
    assert (member[1:] >= 1).all()
    assert stem(tones).shape == (3, 64)


def test_conv_stem_is_a_filter_bank_of_each_patch():
    stem = ConvStem(200, 64)
    x = torch.randn(2, 5, 3, 200)
    out = stem(x)
    assert out.shape == (2, 5, 3, 64)
    # patches are independent: changing one leaves the others' tokens as they were
    y = x.clone()
    y[0, 0, 0] = torch.randn(200)
    changed = (stem(y) - out).abs().sum(-1) > 0
    assert changed[0, 0, 0] and changed.sum() == 1


def test_an_unknown_stem_is_a_config_error():
    with pytest.raises(ConfigError, match="model.stem"):
        ModelConfig.named("tiny", stem="wavelet")


# ----------------------------------------------------------------------------- readouts

def test_spatial_readout_is_log_power_of_spatially_filtered_tokens():
    torch.manual_seed(0)
    pool = SpatialLogPower(n_shared=4, dim=8, filters=3, bands=2)
    tokens = torch.randn(2, 6 * 5, 8)  # 6 sensors x 5 patches, sensor-major
    take = torch.tensor([[0, 2, 4, 5], [5, 4, 2, 0]])
    got = pool(tokens, 6, take)
    x = tokens.reshape(2, 6, 5, 8)
    for b in range(2):
        mixed = torch.einsum("fc,cnd->fnd", pool.spatial, x[b, take[b]])
        expected = torch.log(pool.bands(mixed).square().mean(1) + 1e-6).flatten()
        torch.testing.assert_close(got[b], expected)
    # the layout follows take: the second window is the first's sensors in reverse order
    assert torch.equal(shared_tokens(tokens, 6, take)[1], x[1, [5, 4, 2, 0]])


def test_attention_pool_ignores_padding():
    torch.manual_seed(0)
    pool = AttentionPool(8)
    nn.init.normal_(pool.query)
    tokens = torch.randn(1, 6, 8)
    valid = torch.tensor([[True, True, True, True, False, False]])
    padded = tokens.clone()
    padded[0, 4:] = 1e3  # whatever sits in padding
    torch.testing.assert_close(pool(tokens, valid), pool(padded, valid))
    torch.testing.assert_close(pool(tokens[:, :4], valid[:, :4]), pool(tokens, valid))


@pytest.mark.parametrize("readout", ["spatial", "attention"])
def test_learned_readouts_train_with_the_head_on_real_eeg(readout, imagery):
    segments, labels, _ = imagery
    model = MaskedAutoencoder(ModelConfig.named("tiny"))
    head = Classifier(model, 2, readout, n_shared=64)
    batch = collate_segments(segments[:6])
    take = torch.arange(64).expand(6, 64)
    logits = head(batch, take)
    assert logits.shape == (6, 2) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.as_tensor(labels[:6])).backward()
    # the attention query starts at zero (a plain mean over tokens): its keys learn once it moves
    learns = [head.pool.query] if readout == "attention" else list(head.pool.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learns)
    with pytest.raises(ConfigError, match="frozen-feature probe"):
        as_neurofm(model).embed(segments[:2], readout=readout)


# ----------------------------------------------------------------------------- the rule

def test_train_epochs_stops_early_and_keeps_the_best_epoch():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    errors = iter([3.0, 2.0, 2.5, 2.6, 2.7, 1.0])
    snapshots = []

    def validation_error():
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(errors)

    curve = []
    train_epochs(model, lambda idx: nn.functional.cross_entropy(model(x[idx]), y[idx]),
                 lambda rng: [rng.permutation(16)[:8], rng.permutation(16)[8:]], optimizer, epochs=6, seed=0,
                 validation_error=validation_error, patience=2, curve=curve)
    assert [e["val_loss"] for e in curve] == [3.0, 2.0, 2.5, 2.6]  # two epochs without a better one: stop
    assert [e["steps"] for e in curve] == [2, 4, 6, 8]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[1][k])  # the weights of epoch 2


def test_warmup_then_cosine():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, warmup_steps=4, total_steps=12)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    np.testing.assert_allclose(rates[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(rates[4:], 0.5 * (1 + np.cos(np.pi * np.arange(8) / 8)))


def test_finetune_under_the_rule_keeps_the_best_validation_epoch(imagery):
    segments, labels, subjects = imagery
    train = np.flatnonzero(np.isin(subjects, ["S001", "S002"]))
    val = np.flatnonzero(subjects == "S003")
    rule = TrainingRule(max_epochs=4, patience=2, warmup_epochs=1)
    curve = []
    probs, losses = finetune_classifier(None, segments, labels, train, val, mode="scratch",
                                        config=ModelConfig.named("tiny"), readout="sensors", seed=0,
                                        validation=val, rule=rule, curve=curve)
    assert 2 <= len(curve) <= 4 and len(losses) == curve[-1]["steps"]
    # the model returned is the one of the best validation epoch: its loss on the validation
    # windows is the curve's minimum
    cross_entropy = -np.mean(np.log(probs[np.arange(len(val)), labels[val]]))
    assert cross_entropy == pytest.approx(min(e["val_loss"] for e in curve), rel=1e-4)
    with pytest.raises(ConfigError, match="validation split"):
        finetune_classifier(None, segments, labels, train, val, mode="scratch", rule=rule)
    with pytest.raises(ConfigError, match="must not be training windows"):
        finetune_classifier(None, segments, labels, train, val, mode="scratch", validation=train[:3], rule=rule)


# ----------------------------------------------------------------------------- baselines

def test_baselines_equal_pyriemann_and_mne_references_on_real_eeg(imagery):
    from mne.decoding import CSP
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    segments, y, subjects = imagery
    # the first 16 channels (FC5 .. CP3, over the motor cortex): enough for the motor rhythms,
    # small enough for a fast test
    x, sfreq = shared_sensor_array(segments)[:, :16], segments[0].sfreq
    train, test = np.flatnonzero(subjects != "S004"), np.flatnonzero(subjects == "S004")
    filtered = band_pass(x, sfreq, MU_BETA)
    # MOABB's pipelines, as its examples write them, on windows filtered as its paradigms do
    reference = {
        "tangent_lr": make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"),
                                    LogisticRegression(C=1.0, max_iter=5000, random_state=0)),
        "csp_lda": make_pipeline(CSP(n_components=8), LinearDiscriminantAnalysis()),
    }
    ours = {"tangent_lr": tangent_lr(x[train], y[train], x[test], sfreq),
            "csp_lda": csp_lda(x[train], y[train], x[test], sfreq)}
    for name, pipeline in reference.items():
        want = pipeline.fit(filtered[train], y[train]).predict_proba(filtered[test])
        np.testing.assert_allclose(ours[name], want, rtol=1e-6, atol=1e-8)
    # the filter bank: each band's tangent space fitted on the training windows, side by side
    bands = [band_pass(x, sfreq, b) for b in FILTER_BANK]
    spaces = [make_pipeline(Covariances("oas"), TangentSpace(metric="riemann")).fit(b[train]) for b in bands]
    features = [np.hstack([s.transform(b[idx]) for s, b in zip(spaces, bands, strict=True)]) for idx in (train, test)]
    want = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=0)).fit(
        features[0], y[train]).predict_proba(features[1])
    np.testing.assert_allclose(filter_bank_tangent_lr(x[train], y[train], x[test], sfreq), want, rtol=1e-6, atol=1e-8)
    # decoding_baselines filters each band once for every fold: the same probabilities
    bound = decoding_baselines(x, sfreq)
    np.testing.assert_allclose(bound["tangent_lr"](train, y[train], test), ours["tangent_lr"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(bound["fb_tangent_lr"](train, y[train], test), want, rtol=1e-6, atol=1e-8)


def test_exports_with_a_scalar_interpolation_width_still_load(tmp_path):
    """Exports of the whole pretraining model (before exports held the encoder alone), written
    when the interpolation prior's kernel width was a 0-d tensor (one element now, which
    DeepSpeed's ZeRO can flatten), load with their value as a pretraining model, and as the
    encoder with the head left aside."""
    import json
    from dataclasses import asdict

    from safetensors.torch import save_file

    from neurofm.models.backbone import NeuroFMEncoder
    from neurofm.models.io import load_pretrained

    torch.manual_seed(0)
    model = MaskedAutoencoder(ModelConfig.named("tiny"))
    with torch.no_grad():
        model.interp_log_width.fill_(-2.5)
    old = tmp_path / "old"
    old.mkdir()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["interp_log_width"] = state["interp_log_width"].reshape(())  # as older exports hold it
    save_file(state, str(old / "model.safetensors"))
    (old / "config.json").write_text(json.dumps({"architecture": "MaskedAutoencoder", "model": asdict(model.config)}))
    loaded = load_pretrained(old, head=True)
    assert loaded.interp_log_width.shape == (1,) and loaded.interp_log_width.item() == -2.5
    encoder = load_pretrained(old)
    assert type(encoder) is NeuroFMEncoder
    torch.testing.assert_close(encoder.state_dict()["encoder.norm.weight"], model.state_dict()["encoder.norm.weight"])
