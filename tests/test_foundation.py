"""Package, CLI and real-data fixture."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def _run_fixture_probe(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    """pytest on a copy of conftest.py in a tree with no data folder beside it."""
    repo = tmp_path / f"clone-{ci or 'local'}"
    (repo / "tests").mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), repo / "tests" / "conftest.py")
    (repo / "tests" / "test_probe.py").write_text(
        "def test_uses_data(data_dir):\n    assert (data_dir / 'MANIFEST.md').exists()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NEUROFM_TEST_DATA", "CI")}
    env.update(CI=ci, NEUROFM_TEST_DATA=str(tmp_path / "absent"))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=600)


def test_missing_data_fails_under_ci_and_skips_elsewhere(tmp_path, data_dir):
    assert (data_dir / "MANIFEST.md").exists()  # here the fixture finds the real data
    ci = _run_fixture_probe(tmp_path, "true")
    assert ci.returncode == 1 and "CI=true: the real-data tests must run" in ci.stdout, ci.stdout[-2000:]
    local = _run_fixture_probe(tmp_path, "")
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]


def test_loading_a_model_does_not_import_the_loader(tmp_path):
    from neurofm.models.io import save_pretrained
    from neurofm.models.mae import MaskedAutoencoder, ModelConfig

    save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "model")
    code = ("import sys, neurofm; m = neurofm.load(sys.argv[1]); "
            "print(sorted(n for n in sys.modules if n == 'webdataset' or n.startswith('neurofm.datasets')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model")], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_every_command_config_is_a_typed_dataclass():
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from neurofm.configs import schema

    schema.register()
    with initialize_config_module("neurofm.configs", version_base="1.3"):
        pretrain = schema.typed(compose("pretrain"))
        assert isinstance(pretrain, schema.PretrainConfig)
        # the demo recipe changes only what it names; the rest are the dataclass defaults
        assert pretrain.optim.lr == 3e-3 and pretrain.optim.warmup_steps == schema.OptimConfig().warmup_steps
        assert pretrain.model.prior_on and pretrain.model.dim == schema.PretrainConfig().model.dim
        ddp = schema.typed(compose("pretrain", overrides=["trainer=ddp", "data=shards", "data.shards=x"]))
        assert ddp.trainer.strategy == "ddp" and ddp.trainer.gradient_clip_val == 1.0
        # modality mixing weights on the shards group, from the command line (a None default
        # made OmegaConf fail on this merge)
        assert ddp.data.modality_weights == {}
        mixed = schema.typed(compose("pretrain", overrides=[
            "data=shards", "data.shards=x", "+data.modality_weights={eeg: 0.5, fmri: 0.5}"]))
        assert mixed.data.modality_weights == {"eeg": 0.5, "fmri": 0.5}
        for task, cls in schema.TASKS.items():
            cfg = compose("finetune", overrides=[f"task={task}", "ckpt=c", "inputs=[a]"])
            assert isinstance(schema.typed(cfg).task, cls)
        with pytest.raises(ConfigCompositionException, match="dimm"):
            compose("pretrain", overrides=["model.dimm=3"])
        with pytest.raises(NeurofmError, match="task.mode must be one of .* got 'probe'"):
            schema.typed(compose("finetune", overrides=["ckpt=c", "inputs=[a]", "task.mode=probe"]))
    for command in schema.SCHEMAS:
        assert OmegaConf.structured(schema.SCHEMAS[command]) is not None


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


def test_pretrain_refuses_shards_given_to_the_demo_corpus(tmp_path):
    # data.shards without data=shards would otherwise train on the synthetic demo corpus
    result = run_cli("pretrain", f"data.shards={tmp_path}", f"run_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "add data=shards" in result.stderr and str(tmp_path) in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_long_loops_log_a_plain_line_when_there_is_no_terminal(monkeypatch):
    import logging
    import time

    from neurofm.console import logger, progress_over

    monkeypatch.setenv("NEUROFM_PROGRESS", "0")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        items = []
        for item in progress_over(list("abcde"), "fc_tangent: folds", every_s=0.05):
            items.append(item)
            time.sleep(0.03)
    finally:
        logger.removeHandler(handler)
    assert items == list("abcde")
    assert seen[-1].startswith("fc_tangent: folds: 5/5 (")
    assert 2 <= len(seen) <= 4  # every other item at most, and the end
