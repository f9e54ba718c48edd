"""`neurofm prepare part=I/N` on several processes + merge gives what one run gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from neurofm.datasets import stream
from neurofm.datasets.parts import parse_part, part_of
from neurofm.errors import ConfigError
from tests.helpers.cli import run_cli

ENV = {**os.environ, "NEUROFM_PROGRESS": "0"}


def _tables(abide, n=18):
    files = sorted((abide / "rois_cc200").glob("Pitt_*.1D"))[: n // 2] + sorted(
        (abide / "rois_cc200").glob("KKI_*.1D"))[: n // 2]
    return "[" + ",".join(map(str, files)) + "]"


def _samples(root):
    """(key, split, subject, onset) of every sample the loader reads from ``root``, sorted."""
    out = []
    for split in ("train", "val", "test"):
        for seg in stream(root, split, shuffle_buffer=0):
            out.append((seg.meta["subject"], seg.meta["onset_s"], split, seg.signal.shape))
    return sorted(out)


def test_three_parts_and_a_merge_equal_one_run(abide, tmp_path):
    common = [f"inputs={_tables(abide)}", f"roi_coords={abide / 'CC200.nii.gz'}",
              "roi_tr_s={Pitt: 1.5, KKI: 2.5}", "fmri_window_s=60", "split_fractions=[0.6,0.2,0.2]"]
    single = run_cli("prepare", *common, f"out={tmp_path / 'one'}", env=ENV)
    assert single.returncode == 0, single.stderr[-2000:]
    out = tmp_path / "parts"
    runs = [subprocess.Popen([sys.executable, "-m", "neurofm.cli", "prepare", *common, f"out={out}",
                              f"part={i}/3"], env=ENV, stderr=subprocess.PIPE, text=True) for i in range(3)]
    for proc in runs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    # the last part to finish wrote the manifest; an explicit merge writes the same one
    first = json.loads((out / "manifest.json").read_text())
    merged = run_cli("prepare", "merge", f"out={out}", env=ENV)
    assert merged.returncode == 0, merged.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == first and manifest["parts"] == 3
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["files"] == one["files"] == {"found": 18, "ok": 18, "failed": 0}
    assert manifest["splits"] == one["splits"]  # the subject split is a hash: the same anywhere
    assert manifest["totals"]["samples"] == one["totals"]["samples"]
    assert manifest["totals"]["hours_by_subject"] == pytest.approx(one["totals"]["hours_by_subject"])
    assert all(s["name"].startswith("part-000") for s in manifest["shards"])
    assert _samples(out) == _samples(tmp_path / "one")
    verify = run_cli("verify", f"shards={out}", env=ENV)
    assert verify.returncode == 0, verify.stderr[-2000:]


def test_a_missing_part_is_one_line_naming_it(abide, tmp_path):
    out = tmp_path / "parts"
    result = run_cli("prepare", f"inputs={_tables(abide, 6)}", f"roi_coords={abide / 'CC200.nii.gz'}",
                     "roi_tr_s={Pitt: 1.5, KKI: 2.5}", "fmri_window_s=60", f"out={out}", "part=1/3", env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 of 3 parts still to finish" in result.stderr and not (out / "manifest.json").exists()
    merged = run_cli("prepare", "merge", f"out={out}", env=ENV)
    lines = [line for line in merged.stderr.splitlines() if line.strip()]
    assert merged.returncode == 2 and len(lines) == 1, merged.stderr
    assert lines[0] == (f"neurofm: error: {out}: 2 of 3 parts have not finished (no manifest.json): "
                        "0/3, 2/3; run `neurofm prepare ... part=I/N` for each, then merge again")


def test_parts_from_the_command_line_or_a_slurm_array():
    assert parse_part("2/8", {}) == (2, 8) and parse_part(None, {}) is None
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert parse_part(None, slurm) == (4, 8)
    assert parse_part("0/2", slurm) == (0, 2)  # an explicit part wins
    with pytest.raises(ConfigError, match=r"part='3-of-8': write it as I/N"):
        parse_part("3-of-8", {})
    with pytest.raises(ConfigError, match="part 8 of 8 does not exist"):
        parse_part("8/8", {})
    # a file's part depends on its path only, not on the other files or their order
    paths = [f"/data/sub-{i:02d}_eeg.edf" for i in range(200)]
    parts = [part_of(p, 4) for p in paths]
    assert [part_of(p, 4) for p in reversed(paths)] == parts[::-1]
    assert {parts.count(k) for k in range(4)} <= set(range(30, 71))  # about a quarter each
