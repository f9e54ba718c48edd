"""Faults as a user's machine produces them: a real full filesystem (a small tmpfs), sidecars and
tables that are not what they claim, weights of the wrong dtype, an unexpected exception."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from neurofm.datasets import PrepareOptions, write_shards
from neurofm.errors import BoldError, CheckpointError, DiskFullError
from neurofm.models.io import load_pretrained, save_pretrained
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from tests.helpers.cli import run_cli

ENV = {**os.environ, "NEUROFM_PROGRESS": "0"}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class SmallDisk:
    """A tmpfs of a few MB mounted at ``path``: a filesystem that really fills up."""

    def __init__(self, path: Path, size_kb: int):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        found = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                               capture_output=True, text=True)
        if found.returncode != 0:
            reason = f"cannot mount a tmpfs ({found.stderr.strip()}): these tests need root"
            if IN_CI:
                pytest.fail(f"{reason}; CI runs as root and must run them", pytrace=False)
            pytest.skip(reason)

    def resize(self, size_kb: int) -> None:
        """Free space, as a user would after deleting files elsewhere."""
        subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(self.path)], check=True)

    def fill(self, leave_kb: int = 0) -> None:
        """Take all but ``leave_kb`` of the free space with a filler file."""
        free = shutil.disk_usage(self.path).free - leave_kb * 1024
        with open(self.path / f"filler-{len(list(self.path.glob('filler-*')))}", "wb") as fh:
            fh.write(b"\0" * max(free, 0))

    def leftovers(self) -> list[str]:
        """Temp files anything left behind (any depth)."""
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if ".tmp" in p.name)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def mount(size_kb: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path / f"disk{len(disks)}", size_kb))
        return disks[-1]

    yield mount
    for disk in disks:
        disk.unmount()


def one_line(result: subprocess.CompletedProcess) -> str:
    """The one line the failure printed (progress lines aside)."""
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not re.match(r"^\[\d\d:\d\d:\d\d\] INFO ", line)]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "HYDRA_FULL_ERROR" not in result.stderr and "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def edf_shards(tmp_path_factory, eegmmidb) -> Path:
    out = tmp_path_factory.mktemp("faults") / "shards"
    write_shards([eegmmidb / "S001" / "S001R04.edf"], out,
                 PrepareOptions(window_s=4.0, split_fractions=(1.0, 0.0, 0.0)))
    return out


# --------------------------------------------------------------------------- a full disk


def test_pretrain_on_a_full_disk_is_one_line_then_resumes(small_disk, edf_shards):
    disk = small_disk(3000)  # room for one tiny checkpoint (2.2 MB with its optimizer), not two
    run = disk.path / "run"
    args = ["data=shards", f"data.shards={edf_shards}", "data.num_workers=0", "data.batch_size=4",
            "model=tiny", "checkpoint.every_n_steps=2", "val_every_n_steps=1000000",
            "optim.warmup_steps=1", f"run_dir={run}"]
    result = run_cli("pretrain", *args, "trainer.max_steps=4", env=ENV)
    line = one_line(result)
    assert result.returncode == 2
    assert "disk full: the checkpoint needs about 2." in line and "MB is free on" in line
    assert str(run / "checkpoints") in line and "intact" in line
    assert disk.leftovers() == []
    # the checkpoint that fitted is whole
    saved = [torch.load(p, weights_only=True)["global_step"] for p in (run / "checkpoints").glob("*.ckpt")]
    assert saved and set(saved) == {2}

    disk.resize(20000)
    resumed = run_cli("pretrain", *args, "trainer.max_steps=4", env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resum" in resumed.stderr.lower()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert disk.leftovers() == []


def test_prepare_on_a_full_disk_is_one_line_then_resumes(small_disk, eegmmidb):
    disk = small_disk(2500)  # three 2-minute 64-channel runs take about 7 MB of samples
    inputs = "[" + ",".join(str(eegmmidb / "S002" / f"S002{r}.edf") for r in ("R04", "R08", "R12")) + "]"
    out = disk.path / "shards"
    args = [f"inputs={inputs}", f"out={out}", "window_s=4.0", "workers=1"]
    result = run_cli("prepare", *args, env=ENV)
    line = one_line(result)
    assert result.returncode == 2
    assert line.startswith(f"neurofm: error: {out}: disk full while tokenizing")
    assert "MB is free" in line and "run the same command again" in line
    assert disk.leftovers() == [] and not list(out.glob("*.tar"))
    assert not (out / "manifest.json").exists()  # never a manifest of a half-written corpus

    disk.resize(30000)
    resumed = run_cli("prepare", *args, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == {"found": 3, "ok": 3, "failed": 0}
    assert disk.leftovers() == [] and not (out / ".work").exists()


def test_export_and_embed_on_a_full_disk_keep_the_earlier_files(small_disk, edf_shards, eegmmidb, tmp_path):
    torch.manual_seed(0)
    model = MaskedAutoencoder(ModelConfig())
    ckpt = save_pretrained(model, tmp_path / "ckpt")
    disk = small_disk(4000)
    export = disk.path / "export"
    save_pretrained(model, export)  # an earlier export, then the disk fills up
    before = (export / "model.safetensors").read_bytes()
    disk.fill(leave_kb=8)
    with pytest.raises(DiskFullError, match=r"model.safetensors: disk full: the export needs about "
                                            r"\d+\.\d MB and 0\.\d MB is free"):
        save_pretrained(MaskedAutoencoder(ModelConfig()), export)
    assert (export / "model.safetensors").read_bytes() == before and disk.leftovers() == []
    load_pretrained(export)

    out = disk.path / "emb.npy"
    disk.fill()
    result = run_cli("embed", f"ckpt={ckpt}", f"input={eegmmidb / 'S001' / 'S001R04.edf'}", f"out={out}",
                     env=ENV)
    line = one_line(result)
    assert result.returncode == 2 and f"{out}: disk full: the embeddings array needs about" in line
    assert not out.exists() and disk.leftovers() == []


# --------------------------------------------------------------------------- malformed inputs


@pytest.fixture
def bold_copy(tmp_path, fmri) -> Path:
    path = tmp_path / "sub-01_task-rest_bold.nii.gz"
    shutil.copy(fmri / "nipy_functional.nii.gz", path)
    return path


def test_a_sidecar_that_is_not_json_names_its_file_and_line(bold_copy, atlases):
    from neurofm.tokenizers import tokenize_bold

    sidecar = bold_copy.with_name("sub-01_task-rest_bold.json")
    sidecar.write_text('{\n  "RepetitionTime": 2.0,\n  TaskName: "rest"\n}\n')
    atlas = atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz"
    with pytest.raises(BoldError, match=rf"^{sidecar}: sidecar is not valid JSON \(Expecting property "
                                        r"name enclosed in double quotes at line 3, column 3\)"):
        tokenize_bold(bold_copy, atlas=atlas, window_s=10.0)
    sidecar.write_bytes(b'{"RepetitionTime": 2.0, "TaskName": "r\xe9st"}')
    with pytest.raises(BoldError, match=r"sidecar is not UTF-8 text \(byte 0xe9 at offset 38\)"):
        tokenize_bold(bold_copy, atlas=atlas, window_s=10.0)


@pytest.mark.parametrize("value", [0, -2.0, "two", None])
def test_a_repetition_time_that_is_not_a_positive_number_names_the_key(bold_copy, atlases, value):
    import json

    from neurofm.tokenizers import tokenize_bold

    sidecar = bold_copy.with_name("sub-01_task-rest_bold.json")
    sidecar.write_text(json.dumps({"RepetitionTime": value}))
    atlas = atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz"
    if value is None:  # null is "not given": the header's 2.0 s is used
        assert tokenize_bold(bold_copy, atlas=atlas, window_s=10.0)[0].meta["tr_s"] == 2.0
        return
    with pytest.raises(BoldError, match=rf"^{sidecar}: RepetitionTime is {value!r}"):
        tokenize_bold(bold_copy, atlas=atlas, window_s=10.0)


def test_embed_with_a_zero_tr_sidecar_is_one_line(bold_copy, atlases, tmp_path):
    bold_copy.with_name("sub-01_task-rest_bold.json").write_text('{"RepetitionTime": 0}')
    torch.manual_seed(0)
    ckpt = save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "ckpt")
    result = run_cli("embed", f"ckpt={ckpt}", f"input={bold_copy}",
                     f"atlas={atlases / 'AAL_space-MNI152NLin6_res-2x2x2.nii.gz'}",
                     f"out={tmp_path / 'emb.npy'}", env=ENV)
    line = one_line(result)
    assert result.returncode == 2
    assert "sub-01_task-rest_bold.json: RepetitionTime is 0; a TR must be a positive number" in line


def test_a_binary_roi_table_is_a_failure_line_naming_it(tmp_path, abide):
    import json

    from neurofm.tokenizers import read_roi_table

    junk = tmp_path / "Pitt_0050003_rois_cc200.1D"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(BoldError, match=rf"^{junk}: not a text table: byte 0x[0-9a-f]{{2}} at offset \d+"):
        read_roi_table(junk)
    good = abide / "rois_cc200" / next(p.name for p in (abide / "rois_cc200").glob("Pitt_*.1D"))
    out = tmp_path / "shards"
    result = run_cli("prepare", f"inputs=[{good},{junk}]", f"out={out}",
                     f"roi_coords={abide / 'CC200.nii.gz'}", "roi_tr_s=1.5", env=ENV)
    assert result.returncode == 1  # one file failed, the other is in the shards
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["path"] for f in failures] == [str(junk)]
    assert failures[0]["error_type"] == "BoldError"
    assert failures[0]["error"].startswith(f"{junk}: not a text table")
    assert json.loads((out / "manifest.json").read_text())["files"]["ok"] == 1


# --------------------------------------------------------------------------- weights and bugs


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_weights_of_a_non_float_dtype_are_refused_by_name(tmp_path, dtype):
    torch.manual_seed(0)
    folder = save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "export")
    state = load_file(str(folder / "model.safetensors"))
    state["encoder.norm.weight"] = state["encoder.norm.weight"].to(dtype)
    save_file(state, str(folder / "model.safetensors"))
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=rf"1 weight tensors have a dtype the model does not use: "
                                              rf"encoder.norm.weight \({name}\)"):
        load_pretrained(folder)


def test_an_unexpected_exception_is_one_line_and_a_log(tmp_path, monkeypatch, capsys):
    from neurofm import cli
    from neurofm.models import io

    def broken(ckpt, out, extra=None):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(io, "export_checkpoint", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("NEUROFM_DEBUG", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    code = cli.main(["export", f"ckpt={tmp_path / 'x'}", f"out={tmp_path / 'y'}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("neurofm: unexpected error in export: ZeroDivisionError: float division "
                               f"by zero (traceback in {tmp_path}/neurofm-export-")
    log = Path(lines[0].split("traceback in ")[1].split(";")[0])
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text


def test_a_partial_state_names_every_missing_and_unexpected_tensor(tmp_path):
    torch.manual_seed(0)
    folder = save_pretrained(MaskedAutoencoder(ModelConfig()), tmp_path / "export")
    state = load_file(str(folder / "model.safetensors"))
    expected = len(state)
    state["extra.weight"] = state.pop("encoder.norm.weight")
    state.pop("encoder.norm.bias")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"2 of {expected} expected tensors missing "
                                              r"\['encoder.norm.weight', 'encoder.norm.bias'\], 1 tensors not in the "
                                              r"model \['extra.weight'\]"):
        load_pretrained(folder)
