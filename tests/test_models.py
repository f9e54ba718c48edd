"""The masked autoencoder on real tokenized recordings: backends, equivariance, masking, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofm.datasets import collate_segments
from neurofm.errors import ConfigError
from neurofm.models.encoder import check_backend
from neurofm.models.mae import MaskedAutoencoder, ModelConfig, mask_tokens
from neurofm.tokenizers import Segment, tokenize_raw
from tests.helpers.encode import encode


def tiny(**overrides) -> ModelConfig:
    return ModelConfig.named("tiny", **overrides)


@pytest.fixture(scope="module")
def eeg_segments(meeg) -> list[Segment]:
    return list(tokenize_raw(meeg / "brainvision" / "test.vhdr", window_s=2.0))


@pytest.fixture(scope="module")
def meg_segments(meeg) -> list[Segment]:
    return list(tokenize_raw(meeg / "neuromag" / "sample_audvis_trunc_raw_sss.fif", window_s=1.0))


def test_model_sizes_compose_from_the_yaml_and_the_dataclass():
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from neurofm.configs.schema import register

    register()
    counts = {}
    with initialize_config_module("neurofm.configs", version_base="1.3"):
        for size in ("tiny", "small"):
            cfg = compose("pretrain", overrides=[f"model={size}"])
            config = OmegaConf.to_object(cfg.model)
            assert isinstance(config, ModelConfig)
            counts[size] = sum(p.numel() for p in MaskedAutoencoder(config).parameters())
    # tiny: the dataclass defaults (the README says 0.205 M); small: about 25 M
    assert 150_000 < counts["tiny"] < 300_000
    assert 20e6 < counts["small"] < 32e6


def test_sdpa_and_math_backends_agree(eeg_segments, meg_segments):
    torch.manual_seed(0)
    sdpa = MaskedAutoencoder(tiny(attention="sdpa")).eval()
    math = MaskedAutoencoder(tiny(attention="math")).eval()
    math.load_state_dict(sdpa.state_dict())
    for segments in (eeg_segments, meg_segments):
        batch = collate_segments(segments)
        a, pooled_a = encode(sdpa, batch)
        b, pooled_b = encode(math, batch)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pooled_a, pooled_b, atol=1e-5, rtol=1e-5)


def test_unavailable_backend_fails_at_build_time():
    with pytest.raises(ConfigError, match="attention backend must be one of"):
        check_backend("flash3")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="xformers"):
            MaskedAutoencoder(tiny(attention="xformers"))


def test_encoder_is_equivariant_to_channel_order(meg_segments):
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny()).eval()
    seg = meg_segments[0]
    order = np.random.default_rng(0).permutation(seg.n_sensors)
    out, pooled = encode(model, collate_segments([seg]))
    out_p, pooled_p = encode(model, collate_segments([seg.permute(order)]))
    c, n = seg.n_sensors, seg.n_times // 200
    expected = out.reshape(1, c, n, -1)[:, order].reshape(1, c * n, -1)
    torch.testing.assert_close(out_p, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled_p, pooled, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_tokens(eeg_segments, meg_segments):
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny()).eval()
    alone_out, alone_pooled = encode(model, collate_segments(eeg_segments[:1]))
    # pad the EEG segment to the MEG channel count by batching it with a 366-sensor segment
    meg = meg_segments[0]
    eeg = eeg_segments[0]
    eeg_cut = Segment(eeg.signal[:, :200], eeg.positions, eeg.orientations, eeg.kinds,
                      dict(eeg.meta))
    batch = collate_segments([eeg_cut, Segment(meg.signal[:, :200], meg.positions, meg.orientations,
                                               meg.kinds, dict(meg.meta, modality="eeg"))])
    padded_out, padded_pooled = encode(model, batch)
    cut_out, cut_pooled = encode(model, collate_segments([eeg_cut]))
    c = eeg.n_sensors
    torch.testing.assert_close(padded_out[0, :c], cut_out[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_pooled[0], cut_pooled[0], atol=1e-5, rtol=1e-5)
    assert alone_out.shape[1] == c * 2 and torch.isfinite(alone_pooled).all()


@pytest.mark.parametrize("strategy", ["random", "channels", "time", "mixed"])
def test_masking_invariants(strategy):
    g = torch.Generator().manual_seed(0)
    c, n = 10, 6
    valid = torch.ones(3, c, n, dtype=torch.bool)
    valid[1, 7:] = False   # a sample with 3 padded sensors
    valid[2, :, 4:] = False  # a sample with 2 padded patches
    valid = valid.reshape(3, c * n)
    idx, mask = mask_tokens(valid, (c, n), 0.75, strategy, g)
    for i in range(3):
        chosen = idx[i][mask[i]]
        assert len(chosen) == int(0.25 * valid[i].sum()) and len(set(chosen.tolist())) == len(chosen)
        assert valid[i, chosen].all()
        grid = torch.zeros(c * n, dtype=torch.bool)
        grid[chosen] = True
        grid = grid.reshape(c, n)
        if strategy == "channels":  # whole sensors, except at most one cut by the count
            partial = ((grid.sum(1) > 0) & (grid.sum(1) < valid[i].reshape(c, n).sum(1))).sum()
            assert partial <= 1
        if strategy == "time":
            partial = ((grid.sum(0) > 0) & (grid.sum(0) < valid[i].reshape(c, n).sum(0))).sum()
            assert partial <= 1


def test_training_steps_lower_the_loss_on_real_eeg(eeg_segments):
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny(mask_strategy="random"))
    batch = collate_segments(eeg_segments)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        out = model(batch, generator=g)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    hidden = out["hidden"]
    assert hidden.sum() == batch.channel_mask.sum() * 2 - (out["visible_mask"].sum())


def test_mixed_modalities_in_one_batch_are_refused(eeg_segments, fmri, atlases):
    from neurofm.tokenizers import tokenize_bold

    bold = tokenize_bold(fmri / "nipy_functional.nii.gz",
                         atlas=atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz", window_s=12.0)
    model = MaskedAutoencoder(tiny())
    with pytest.raises(ValueError, match="one modality at one sampling rate"):
        model(collate_segments([eeg_segments[0], bold[0]]))
    out = model(collate_segments(list(bold)))  # fMRI: 6 s patches of 3 TRs, resampled to 200
    assert torch.isfinite(out["loss"]) and out["pred"].shape[-1] == 200


def test_spatial_compression_costs_the_same_for_any_sensor_count(eeg_segments, meg_segments):
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny(spatial_latents=8)).eval()
    eeg = collate_segments([Segment(s.signal[:, :200], s.positions, s.orientations, s.kinds, s.meta)
                            for s in eeg_segments[:2]])
    meg = collate_segments(meg_segments[:1])
    out_eeg, _ = encode(model, eeg)
    out_meg, pooled_meg = encode(model, meg)
    assert out_eeg.shape[1] == out_meg.shape[1] == 8  # 1 patch x 8 latents, 26 or 366 sensors
    # invariant to the order of sensors (cross-attention over a set)
    order = np.random.default_rng(1).permutation(meg_segments[0].n_sensors)
    _, pooled_perm = encode(model, collate_segments([meg_segments[0].permute(order)]))
    torch.testing.assert_close(pooled_perm, pooled_meg, atol=1e-5, rtol=1e-5)
    model.train()
    loss = model(collate_segments(eeg_segments))["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.compressor.queries.grad.abs().sum() > 0


def test_compressed_decoder_queries_read_the_latents_only(meg_segments):
    """With spatial_latents the decoder's queries attend to the latents, not to each other:
    a sensor's reconstruction does not depend on which other sensors are decoded (so a step
    costs latents x sensors, not sensors^2), and padding latents are ignored."""
    torch.manual_seed(0)
    model = MaskedAutoencoder(tiny(spatial_latents=8)).eval()
    tokens = model.tokenize(collate_segments(meg_segments[:1]))  # 366 sensors x 1 patch
    b, length, width = tokens.query.shape
    context = torch.randn(b, 8, width)
    mask = torch.ones(b, 8, dtype=torch.bool)
    with torch.no_grad():
        every = model.decode(context, mask, tokens)
        queries = model.mask_token + tokens.query
        some = model.decoder.read(context, queries[:, :40], mask)
        padded = model.decoder.read(torch.cat([context, torch.randn(b, 3, width)], dim=1), queries,
                                    torch.cat([mask, torch.zeros(b, 3, dtype=torch.bool)], dim=1))
    assert every.shape == (b, length, width) and torch.isfinite(every).all()
    torch.testing.assert_close(some, every[:, :40], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded, every, atol=1e-5, rtol=1e-5)
    assert every.std(dim=1).mean() > 1e-3  # queries differ by their geometry


def test_interpolation_prior_on_real_eeg(eeg_segments):
    from neurofm.models.mae import spatial_interpolation

    batch = collate_segments(eeg_segments[:2])
    b, c, t = batch.signal.shape
    patches = batch.signal[:, :, :200].reshape(b, c, 1, 200)
    visible = torch.ones(b, c, 1, dtype=torch.bool)
    visible[:, 0] = False  # channel 0 is masked
    uniform = patches[:, :1].expand(b, c, 1, 200)
    same = spatial_interpolation(uniform, batch.positions, batch.kinds, visible, torch.tensor(0.04))
    # every channel carrying the same waveform: the masked one is filled in exactly
    torch.testing.assert_close(same[:, 0], patches[:, 0], atol=1e-5, rtol=1e-5)
    interp = spatial_interpolation(patches, batch.positions, batch.kinds, visible, torch.tensor(0.04))
    d = torch.linalg.norm(batch.positions[0, 1:] - batch.positions[0, :1], dim=1)
    w = torch.softmax(-d ** 2 / (2 * 0.04 ** 2), dim=0)
    torch.testing.assert_close(interp[0, 0, 0], (w[:, None] * patches[0, 1:, 0]).sum(0), atol=1e-5, rtol=1e-4)
    # nothing visible at that time: no fill-in; other kinds never contribute
    assert interp.new_zeros(()).eq(spatial_interpolation(
        patches, batch.positions, batch.kinds, torch.zeros_like(visible), torch.tensor(0.04))).all()
    other_kind = batch.kinds.clone()
    other_kind[:, 1:] = 1
    assert (spatial_interpolation(patches, batch.positions, other_kind, visible, torch.tensor(0.04))[:, 0] == 0).all()
    # in the model: the prior's gate and kernel width learn with the rest
    model = MaskedAutoencoder(tiny(interpolation_prior=True, mask_strategy="channels", mask_ratio=0.5))
    out = model(batch, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.interp_gate.weight.grad.abs().sum() > 0
    assert model.interp_log_width.grad is not None and model.interp_log_width.grad != 0


def test_fourier_and_normalised_patch_targets_on_real_eeg(eeg_segments):
    """LaBraM's targets (Fourier amplitude z-scored within the patch, phase / pi) and MAE's
    normalised patches, computed on a real BrainVision recording, against numpy."""
    from neurofm.models.mae import target_len, targets

    batch = collate_segments(eeg_segments[:2])
    patch = batch.signal[0, 3, :200].double()
    fourier = targets(patch[None], tiny(target="fourier"))[0].numpy()
    spectrum = np.fft.rfft(patch.numpy())
    amp = np.abs(spectrum)
    np.testing.assert_allclose(fourier[:101], (amp - amp.mean()) / (amp.std(ddof=1) + 1e-6), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fourier[101:], np.angle(spectrum) / np.pi, atol=1e-8)
    normed = targets(patch[None], tiny(target_norm="patch"))[0].numpy()
    x = patch.numpy()
    np.testing.assert_allclose(normed, (x - x.mean()) / np.sqrt(x.var(ddof=1) + 1e-6), rtol=1e-6)
    assert target_len(tiny(target="fourier")) == 202 and target_len(tiny()) == 200
    for overrides in ({"target": "fourier"}, {"target_norm": "patch"}):
        torch.manual_seed(0)
        model = MaskedAutoencoder(tiny(**overrides))
        out = model(batch, generator=torch.Generator().manual_seed(0))
        out["loss"].backward()
        assert out["pred"].shape == out["target"].shape and torch.isfinite(out["loss"])
        assert model.head.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="model.target=fourier"):
        tiny(target="fourier", interpolation_prior=True)
    with pytest.raises(ConfigError, match="model.target"):
        tiny(target="phase")


def test_latent_target_teacher_on_real_eeg(eeg_segments, tmp_path):
    """``target=latent``: the teacher (a moving average of the student's embeddings and
    encoder) encodes every token of a real recording; the head predicts its layer-normalised
    outputs; gradients never reach the teacher; each optimizer step of ``neurofm pretrain``'s
    module moves the teacher by (1 - ema_decay) of the gap; an export holds the student's encoder."""
    from neurofm.models.io import load_pretrained, save_pretrained
    from neurofm.models.mae import target_len
    from neurofm.pretrain.config import OptimConfig
    from neurofm.pretrain.in_memory import pretrain_on_batches

    config = tiny(target="latent", ema_decay=0.9)
    assert target_len(config) == config.dim
    batch = collate_segments(eeg_segments[:4])
    torch.manual_seed(0)
    model = MaskedAutoencoder(config)
    out = model(batch, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert out["pred"].shape == out["target"].shape == (*out["hidden"].shape, config.dim)
    real = out["target"][model.tokenize(batch).valid]
    torch.testing.assert_close(real.mean(-1), torch.zeros(len(real)), atol=1e-5, rtol=0)  # layer-normalised
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.patch_embed.weight.grad.abs().sum() > 0  # the student learns
    student_before = {n: p.detach().clone() for n, p in model.encoder.named_parameters()}
    teacher_before = {n: p.detach().clone() for n, p in model.teacher.encoder.named_parameters()}
    for name in student_before:  # the teacher starts as the student
        torch.testing.assert_close(teacher_before[name], student_before[name])

    def endless():
        while True:
            yield batch

    steps = []
    pretrain_on_batches(config, endless(), 2, OptimConfig(lr=1e-2, warmup_steps=1), model=model,
                        on_step=lambda step, loss, m: steps.append(
                            {n: p.detach().clone() for n, p in m.encoder.named_parameters()}))
    # the teacher moved once (before the second step, after the first update) by 10 % of the gap
    name = next(n for n in student_before if n.endswith("weight"))
    expected = teacher_before[name] + 0.1 * (steps[0][name] - teacher_before[name])
    torch.testing.assert_close(dict(model.teacher.encoder.named_parameters())[name], expected)
    assert not torch.equal(expected, teacher_before[name])
    folder = save_pretrained(model, tmp_path / "export")
    loaded = load_pretrained(folder)  # the student's encoder: the teacher stays with pretraining
    assert not hasattr(loaded, "teacher")
    torch.testing.assert_close(dict(loaded.encoder.named_parameters())[name], dict(model.encoder.named_parameters())[name])
    with pytest.raises(ConfigError, match="model.target=latent predicts each token's representation"):
        tiny(target="latent", spatial_latents=4)
    with pytest.raises(ConfigError, match="need model.target=signal"):
        tiny(target="latent", spectral_weight=1.0)
