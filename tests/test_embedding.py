"""neurofm.load(...).embed(...) on real recordings, across the three checkpoint formats."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import mne
import numpy as np
import pytest
import torch

import neurofm
from neurofm.errors import NeurofmError
from neurofm.models.io import export_checkpoint, save_pretrained
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.tokenizers import tokenize_raw
from tests.helpers.cli import run_cli


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = MaskedAutoencoder(ModelConfig())
    save_pretrained(model, root / "exported")
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": asdict(model.config)}, "global_step": 0},
               root / "lightning.ckpt")
    return {"exported": root / "exported", "lightning": root / "lightning.ckpt"}


def test_embed_recording_shapes_times_and_determinism(checkpoints, meeg):
    model = neurofm.load(checkpoints["exported"])
    path = meeg / "brainvision" / "test.vhdr"
    out = model.embed(path, window_s=2.0)
    assert out.windows.shape == (3, 64) and out.windows.dtype == np.float32
    np.testing.assert_array_equal(out.times, [0.0, 2.0, 4.0])
    np.testing.assert_allclose(out.pooled, out.windows.mean(axis=0))
    again = model.embed(mne.io.read_raw_brainvision(path), window_s=2.0, batch_size=1)
    np.testing.assert_allclose(again.windows, out.windows, atol=1e-6)
    segments = tokenize_raw(path, window_s=2.0)
    np.testing.assert_allclose(model.embed(list(segments)).windows, out.windows, atol=1e-6)
    assert out.meta[0]["source"].endswith("test.vhdr") and out.meta[0]["modality"] == "eeg"


def test_three_checkpoint_formats_embed_identically(checkpoints, meeg, tmp_path):
    path = meeg / "bdf" / "multiple_annotation_chans.bdf"
    a = neurofm.load(checkpoints["exported"]).embed(path)
    b = neurofm.load(checkpoints["lightning"]).embed(path)
    np.testing.assert_array_equal(a.windows, b.windows)
    pytest.importorskip("deepspeed")
    helper = Path(__file__).parent / "helpers" / "deepspeed_zero.py"
    shards = tmp_path / "shards"
    from neurofm.datasets import PrepareOptions, write_shards

    write_shards([path], shards, PrepareOptions(window_s=2.0, shard_size_mb=0.05,
                                                split_fractions=(1.0, 0.0, 0.0)))
    from neurofm.testing import free_port

    port = free_port()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             f"--master_port={port}", str(helper), "2", str(shards), str(tmp_path / "ds")],
                            env={**os.environ, "DS_ACCELERATOR": "cpu"}, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = export_checkpoint(tmp_path / "ds", tmp_path / "ds_exported")
    c = neurofm.load(tmp_path / "ds").embed(path)
    d = neurofm.load(exported).embed(path)
    np.testing.assert_array_equal(c.windows, d.windows)
    assert not np.allclose(c.windows, a.windows)  # trained weights, not the initial ones


def test_short_recording_becomes_one_shorter_window(checkpoints, meeg, caplog):
    model = neurofm.load(checkpoints["exported"])
    with caplog.at_level(logging.WARNING, logger="neurofm"):
        out = model.embed(meeg / "kit" / "010409_Motor_task_coregist-export_tiny_1s.con")
    assert out.windows.shape == (1, 64)
    assert "embedding it as one 1.00 s window" in caplog.text


def test_embed_bold_needs_an_atlas(checkpoints, fmri, atlases):
    model = neurofm.load(checkpoints["lightning"])
    bold = fmri / "nipy_functional.nii.gz"
    with pytest.raises(NeurofmError, match="needs an atlas"):
        model.embed(bold)
    out = model.embed(bold, atlas=atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz", window_s=12.0)
    assert out.windows.shape == (3, 64) and np.isfinite(out.windows).all()
    np.testing.assert_array_equal(out.times, [0.0, 12.0, 24.0])


def test_cli_embed_writes_npy(checkpoints, meeg, tmp_path):
    out = tmp_path / "emb.npy"
    result = run_cli("embed", f"ckpt={checkpoints['exported']}", f"input={meeg / 'brainvision' / 'test.vhdr'}",
                     f"out={out}", "window_s=2.0")
    assert result.returncode == 0, result.stderr
    assert np.load(out).shape == (3, 64)
    np.testing.assert_array_equal(np.load(tmp_path / "emb_times.npy"), [0.0, 2.0, 4.0])


def test_cli_embed_writes_parquet(checkpoints, meeg, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    out = tmp_path / "emb.parquet"
    result = run_cli("embed", f"ckpt={checkpoints['exported']}", f"input={meeg / 'brainvision' / 'test.vhdr'}",
                     f"out={out}", "window_s=2.0")
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(out)
    assert table.shape == (3, 65) and table["onset_s"].tolist() == [0.0, 2.0, 4.0]
    expected = neurofm.load(checkpoints["exported"]).embed(meeg / "brainvision" / "test.vhdr", window_s=2.0)
    np.testing.assert_allclose(table.drop(columns="onset_s").to_numpy(), expected.windows, rtol=1e-6)


def test_cli_embed_takes_tokenizer_options(checkpoints, meeg, tmp_path):
    edf = meeg / "edf" / "test_reduced.edf"
    out = tmp_path / "emb.npy"
    refused = run_cli("embed", f"ckpt={checkpoints['exported']}", f"input={edf}", f"out={out}")
    assert refused.returncode == 2 and "have no position" in refused.stderr
    result = run_cli("embed", f"ckpt={checkpoints['exported']}", f"input={edf}", f"out={out}",
                     "window_s=2.0", "+tokenizer.on_missing_positions=drop", "+tokenizer.montage=standard_1005")
    assert result.returncode == 0, result.stderr
    expected = neurofm.load(checkpoints["exported"]).embed(edf, window_s=2.0, on_missing_positions="drop")
    np.testing.assert_allclose(np.load(out), expected.windows, rtol=1e-6)
    typo = run_cli("embed", f"ckpt={checkpoints['exported']}", f"input={edf}", f"out={out}", "+tokenizer.montag=x")
    lines = [line for line in typo.stderr.splitlines() if line.strip()]
    assert typo.returncode == 2 and len(lines) == 1
    assert "unknown option +tokenizer.montag= (did you mean 'montage'?)" in lines[0]


def test_cli_embed_refuses_a_bad_out_before_any_work(tmp_path):
    result = run_cli("embed", f"ckpt={tmp_path / 'missing'}", "input=x.edf", f"out={tmp_path / 'emb.csv'}",
                     env={**os.environ, "NEUROFM_LOG_LEVEL": "debug"})  # any case of the level
    assert result.returncode == 2
    assert result.stderr.strip() == f"neurofm: error: {tmp_path / 'emb.csv'}: out must end in .npy or .parquet"


def test_embed_a_shard(checkpoints, meeg, tmp_path):
    from neurofm.datasets import PrepareOptions, stream, write_shards

    path = meeg / "brainvision" / "test.vhdr"
    write_shards([path], tmp_path / "shards", PrepareOptions(window_s=2.0, split_fractions=(1.0, 0.0, 0.0)))
    shard = next((tmp_path / "shards").glob("shard-*.tar"))
    out = tmp_path / "emb.npy"
    result = run_cli("embed", f"ckpt={checkpoints['exported']}", f"input={shard}", f"out={out}")
    assert result.returncode == 0, result.stderr
    segments = list(stream([str(shard)], None, shuffle_buffer=0))
    expected = neurofm.load(checkpoints["exported"]).embed(segments)
    assert np.load(out).shape == (3, 64)
    np.testing.assert_allclose(np.load(out), expected.windows, rtol=1e-6)
    from_dir = neurofm.load(checkpoints["exported"]).embed(tmp_path / "shards")
    np.testing.assert_allclose(from_dir.windows, expected.windows, rtol=1e-6)


def test_exported_weights_take_the_umask(checkpoints):
    umask = os.umask(0)
    os.umask(umask)
    mode = (checkpoints["exported"] / "model.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask


def test_broken_exports_are_one_line_errors(checkpoints, tmp_path):
    import json
    import shutil

    def broken(name: str, edit) -> Path:
        target = tmp_path / name
        shutil.copytree(checkpoints["exported"], target)
        edit(target)
        return target

    def config_edit(**changes):
        def edit(target: Path) -> None:
            config = json.loads((target / "config.json").read_text())
            config["encoder"].update(changes)
            (target / "config.json").write_text(json.dumps(config))
        return edit

    cases = {
        "unknown": (config_edit(frobnicate=1), r"unknown model config keys \['frobnicate'\]"),
        "huge": (config_edit(depth=1_000_000, dim=4096), "implies about .* parameters"),
        "shape": (config_edit(dim=32), "weights do not fit the model config"),
        "header": (lambda t: (t / "model.safetensors").write_bytes(b"\xff" * 64),
                   "model.safetensors cannot be read"),
    }
    for name, (edit, message) in cases.items():
        path = broken(name, edit)
        with pytest.raises(NeurofmError, match=message):
            neurofm.load(path)
        result = run_cli("export", f"ckpt={path}", f"out={tmp_path / (name + '_out')}")
        assert result.returncode == 2 and "Traceback" not in result.stderr, (name, result.stderr[-2000:])
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, name


def test_manifest_of_the_wrong_shape(tmp_path):
    from neurofm.datasets import load_manifest
    from neurofm.errors import ShardError

    (tmp_path / "manifest.json").write_text('{"shards": 5}')
    with pytest.raises(ShardError, match="manifest has no list of shards"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"shards": [{"name": "shard-000000.tar", "modality": "eeg"}]}')
    with pytest.raises(ShardError, match="manifest entry 0 has no split"):
        load_manifest(tmp_path)


def test_recordings_too_short_or_too_slow_are_one_line_errors(checkpoints, meeg):
    raw = mne.io.read_raw_brainvision(meeg / "brainvision" / "test.vhdr", preload=True)
    model = neurofm.load(checkpoints["exported"])
    short = raw.copy().crop(tmax=0.5)  # half a token
    with pytest.raises(NeurofmError, match=r"lasts 0.501 s, shorter than one token of this model \(1 s\)"):
        model.embed(short)
    one = raw.copy().crop(tmax=0.0)  # one sample: too short, not "flat"
    with pytest.raises(NeurofmError, match="recording has 1 sample"):
        neurofm.tokenizers.tokenize_raw(one, window_s=0.001)
    slow = mne.io.RawArray(raw.get_data()[:, :200], mne.create_info(raw.ch_names, 1.0, raw.get_channel_types()),
                           verbose="error")
    slow.set_montage(raw.get_montage())
    with pytest.raises(NeurofmError, match="at 1 Hz the band top is 0.45 Hz, not above l_freq=0.5 Hz"):
        model.embed(slow)
