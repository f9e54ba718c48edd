"""The encoder is the unit: exports, loading and the named sizes.

An export holds :class:`NeuroFMEncoder` (embeddings + transformer) and its architecture; the
masked-autoencoding head and the recipe stay with pretraining (kept apart under
``pretraining``, shown on the model card); older exports of the whole model still load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import neurofm
from neurofm.errors import ConfigError
from neurofm.models.backbone import ENCODER_PARTS, NeuroFMEncoder, mean_pool
from neurofm.models.config import SIZES, EncoderConfig, ModelConfig, RecipeConfig
from neurofm.models.io import load_pretrained, save_pretrained
from neurofm.models.mae import MaskedAutoencoder

COMMITTED = Path(__file__).parent / "data" / "tiny-export-2026-12"


def test_an_export_holds_the_encoder_its_architecture_and_apart_the_recipe(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(decoder_dim=32, mask_ratio=0.6, mask_strategy="channels", compile=True)
    model = MaskedAutoencoder(config)
    folder = save_pretrained(model, tmp_path / "export", extra={"validation": {"first": 0.1, "last": 0.3, "best": 0.3}})
    weights = load_file(str(folder / "model.safetensors"))
    assert {k.split(".")[0] for k in weights} == set(ENCODER_PARTS) - {"compressor"}
    assert set(weights) == set(NeuroFMEncoder(config.encoder_config()).state_dict())
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architecture"] == "NeuroFMEncoder" and "model" not in saved
    assert set(saved["encoder"]) == {f.name for f in fields(EncoderConfig)}  # no compile, no masking
    assert saved["pretraining"]["mae"]["mask_ratio"] == 0.6 and saved["pretraining"]["mae"]["decoder_dim"] == 32
    card = (folder / "README.md").read_text()
    assert "mask: channels, ratio 0.6" in card and "model.decoder_dim: 32" in card and "0.300 at the last" in card
    loaded = neurofm.load(folder)
    assert type(loaded.model) is NeuroFMEncoder and loaded.config == config.encoder_config()
    for name, tensor in model.encoder_only().state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_the_head_comes_back_from_the_checkpoint_or_starts_random_with_a_warning(tmp_path, caplog):
    torch.manual_seed(0)
    model = MaskedAutoencoder(ModelConfig(decoder_dim=32, decoder_heads=2))
    folder = save_pretrained(model, tmp_path / "export")
    with caplog.at_level(logging.WARNING, logger="neurofm"):
        full = load_pretrained(folder, head=True)
    assert isinstance(full, MaskedAutoencoder) and full.config.decoder_dim == 32  # as it was pretrained
    assert "holds the encoder only" in caplog.text
    torch.testing.assert_close(full.encoder.norm.weight, model.encoder.norm.weight, rtol=0, atol=0)


def test_the_committed_older_export_loads_as_an_encoder_and_resaves_with_its_recipe(eegmmidb, tmp_path):
    """tests/data/tiny-export-2026-12 holds the whole pretraining model (the format before the
    encoder became the unit): it loads as the encoder, embeds real EEG, and saved again it is
    the encoder with the recipe it was pretrained with kept apart."""
    old = neurofm.load(COMMITTED)
    assert type(old.model) is NeuroFMEncoder
    assert old.info["pretraining"]["mae"]["mask_strategy"] == "mixed" and old.info["pretraining"]["max_steps"] == 40
    folder = old.save_pretrained(tmp_path / "again")
    saved = json.loads((folder / "config.json").read_text())
    assert saved["pretraining"]["optim"]["lr"] == 0.003 and saved["input_contract"] == old.contract
    assert not any(k.startswith(("decoder", "head", "mask_token")) for k in load_file(str(folder / "model.safetensors")))
    run = eegmmidb / "S001" / "S001R04.edf"
    np.testing.assert_array_equal(neurofm.load(folder).embed(run).windows, old.embed(run).windows)


def test_the_encoder_of_a_pretraining_model_embeds_as_the_model_did(meeg):
    from neurofm.batch import collate_segments
    from neurofm.tokenizers import tokenize_raw

    eeg_segments = list(tokenize_raw(meeg / "brainvision" / "test.vhdr", window_s=2.0))
    torch.manual_seed(0)
    model = MaskedAutoencoder(ModelConfig(spatial_latents=4)).eval()
    batch = collate_segments(eeg_segments[:3])
    encoder = model.encoder_only()
    with torch.no_grad():
        torch.testing.assert_close(mean_pool(*encoder(batch)), mean_pool(*model.encode_every_token(batch)))
    # a copy: training the encoder leaves the pretraining model as it was
    with torch.no_grad():
        encoder.encoder.norm.weight.add_(1.0)
    assert not torch.equal(encoder.encoder.norm.weight, model.encoder.norm.weight)
    assert not isinstance(model(batch), tuple)  # the pretraining model's forward is its loss


def test_named_sizes_are_the_library_s_and_hydra_reads_them():
    from hydra import compose, initialize_config_module

    from neurofm.configs import schema

    small = ModelConfig.named("small", stem="conv")
    assert (small.dim, small.depth, small.heads, small.decoder_dim, small.stem) == (512, 8, 8, 256, "conv")
    assert EncoderConfig.named("base").dim == 768 and set(SIZES) == {"tiny", "small", "base", "large"}
    # the pretraining model is the encoder's architecture + the head's recipe + runtime switches
    split = ModelConfig.named("small", mask_ratio=0.6, compile=True)
    assert split.encoder_config() == EncoderConfig(dim=512, depth=8, heads=8)
    assert split.recipe_config() == RecipeConfig(decoder_dim=256, decoder_depth=2, decoder_heads=8, mask_ratio=0.6)
    assert ModelConfig.from_encoder(split.encoder_config(), split.recipe_config(), compile=True) == split
    with pytest.raises(ConfigError, match=r"no model size 'huge'; choose one of \['base', 'large', 'small', 'tiny'\]"):
        ModelConfig.named("huge")
    with pytest.raises(ConfigError, match=r"unknown model keys \['width'\]"):
        ModelConfig.named("tiny", width=3)
    schema.register()
    with initialize_config_module("neurofm.configs", version_base="1.3"):
        for size in SIZES:
            composed = schema.typed(compose("pretrain", overrides=[f"model={size}", "data=shards", "data.shards=x"]))
            assert asdict(composed.model) == asdict(ModelConfig.named(size)), size
        # a size leaves the head's defaults alone: another target needs no other change
        fourier = schema.typed(compose("pretrain", overrides=["model=small", "model.target=fourier",
                                                              "data=shards", "data.shards=x"]))
        assert fourier.model.target == "fourier" and not fourier.model.prior_on


def test_an_encoder_config_is_checked():
    with pytest.raises(ConfigError, match=r"model.dim \(60\) must be a multiple of model.heads \(8\)"):
        EncoderConfig(dim=60, heads=8)
    with pytest.raises(ConfigError, match="model.stem"):
        EncoderConfig(stem="wavelet")
