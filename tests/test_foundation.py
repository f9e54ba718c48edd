"""Package, CLI and real-data fixture."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import mne
import nibabel as nib
import pytest

import neurofm
from neurofm import cli
from neurofm.errors import NeurofmError, RecordingError
from tests.helpers.cli import run_cli


def test_version_in_one_place():
    from importlib.metadata import version

    assert neurofm.__version__ == version("neurofm")


def test_subpackages_do_not_shadow_hugging_face():
    import neurofm.datasets
    import neurofm.tokenizers

    assert neurofm.tokenizers.__name__ == "neurofm.tokenizers"
    package = Path(neurofm.__file__).resolve().parent
    for name in ("tokenizers", "datasets"):
        spec = importlib.util.find_spec(name)
        # either Hugging Face's package, or absent: never ours (a clone in a folder named
        # "neurofm" puts "neurofm" in the path of every package of its .venv)
        assert spec is None or package not in Path(spec.origin or "/").resolve().parents


def test_top_level_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command in out


def test_unknown_command_is_exit_2(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_subcommand_help_lists_config_groups():
    result = run_cli("pretrain", "--help")
    assert result.returncode == 0, result.stderr
    for group in ("model:", "trainer:", "data:"):
        assert group in result.stdout
    assert "deepspeed_stage_2" in result.stdout


def test_overrides_and_cfg_job():
    result = run_cli("pretrain", "model=small", "trainer.max_steps=7", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "dim: 512" in result.stdout and "max_steps: 7" in result.stdout


def test_user_config_dir(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("dim: 48\ndepth: 1\nheads: 2\n")
    result = run_cli("pretrain", "--config-dir", str(tmp_path), "model=mine", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "dim: 48" in result.stdout


def test_config_error_is_one_line_exit_2():
    result = run_cli("finetune", "task=encoding", "task.mode=adapter", "ckpt=x", "inputs=[y]")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "task.mode must be one of" in lines[0] and "'adapter'" in lines[0]
    assert "Traceback" not in result.stderr


def test_user_error_is_one_line_naming_the_file(tmp_path):
    missing = tmp_path / "nope.ckpt"
    result = run_cli("export", f"ckpt={missing}", f"out={tmp_path / 'out'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"neurofm: error: {missing}: checkpoint not found"
    debug = run_cli("export", f"ckpt={missing}", f"out={tmp_path / 'out'}",
                    env={**os.environ, "NEUROFM_DEBUG": "1"})
    assert "Traceback" in debug.stderr


def test_errors_name_the_file():
    err = RecordingError("recording has no samples", "/data/sub-01_eeg.edf")
    assert str(err) == "/data/sub-01_eeg.edf: recording has no samples"
    assert isinstance(err, NeurofmError) and err.path == "/data/sub-01_eeg.edf"


def test_real_data_fixture_reads_eeg_and_nifti(meeg, fmri):
    raw = mne.io.read_raw_brainvision(meeg / "brainvision" / "test.vhdr", preload=True)
    assert raw.info["sfreq"] == 1000.0 and len(raw.ch_names) == 32
    img = nib.load(fmri / "nipy_functional.nii.gz")
    assert img.shape == (17, 21, 3, 20)


@pytest.mark.parametrize("command", ["prepare", "finetune", "embed", "export"])
def test_every_subcommand_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"neurofm {command}" in result.stdout
    groups = ("model:", "trainer:", "data:", "task:")
    if command == "finetune":
        assert "task:" in result.stdout
    else:  # only what the command takes
        assert not any(g in result.stdout for g in groups), result.stdout


def test_log_level_in_any_case():
    ok = run_cli("export", "ckpt=missing.ckpt", "out=x", env={**os.environ, "NEUROFM_LOG_LEVEL": "debug"})
    assert ok.returncode == 2 and ok.stderr.strip() == "neurofm: error: missing.ckpt: checkpoint not found"
    bad = run_cli("export", "ckpt=missing.ckpt", "out=x", env={**os.environ, "NEUROFM_LOG_LEVEL": "loud"})
    assert bad.returncode == 2 and "NEUROFM_LOG_LEVEL='loud' is not a log level" in bad.stderr
