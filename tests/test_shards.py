"""`neurofm prepare` and the streaming loader on the real EEG, MEG and fMRI files."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from neurofm.datasets import (
    PrepareOptions,
    batched_stream,
    collate_segments,
    discover,
    load_manifest,
    stream,
    write_shards,
)
from neurofm.datasets.manifest import sha256_of
from neurofm.datasets.streaming import ErrorCounter, crop_to_budget
from neurofm.errors import ShardError
from neurofm.tokenizers import tokenize_bold, tokenize_raw
from tests.helpers.cli import run_cli

MEEG_FILES = ["brainvision/test.vhdr", "bdf/multiple_annotation_chans.bdf",
              "eeglab/test_raw_chanloc.set", "neuromag/sample_audvis_trunc_raw_sss.fif",
              "kit/010409_Motor_task_coregist-export_tiny_1s.con"]


@pytest.fixture(scope="module")
def inputs(data_dir) -> list[str]:
    return [str(data_dir / "meeg" / f) for f in MEEG_FILES] + [
        str(data_dir / "fmri" / "nipy_functional.nii.gz")]


@pytest.fixture(scope="module")
def options(data_dir) -> PrepareOptions:
    return PrepareOptions(window_s=0.5, fmri_window_s=10.0, dtype="float32", shard_size_mb=0.25,
                          atlas=str(data_dir / "atlases" / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz"),
                          split_fractions=(0.5, 0.25, 0.25), seed=3)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, inputs, options) -> Path:
    out = tmp_path_factory.mktemp("shards") / "f32"
    manifest = write_shards(inputs, out, options)
    assert manifest["failures"] == 0
    return out


def _direct(path: str, options: PrepareOptions, dataset: str):
    if path.endswith(".nii.gz"):
        return tokenize_bold(path, atlas=options.atlas, window_s=options.fmri_window_s, dataset=dataset)
    return tokenize_raw(path, window_s=options.window_s, sfreq=options.sfreq, dataset=dataset)


def _all(directory: Path, **kwargs):
    return list(stream(directory, None, shuffle_buffer=0, **kwargs))


def test_streamed_segments_equal_direct_tokenization(prepared, inputs, options):
    streamed = {(s.meta["source"], s.meta["onset_s"]): s for s in _all(prepared)}
    modalities = Counter(s.modality for s in streamed.values())
    assert set(modalities) == {"eeg", "meg", "fmri"}
    n = 0
    for path in inputs:
        for seg in _direct(path, options, Path(path).parent.name):
            got = streamed[(path, seg.meta["onset_s"])]
            np.testing.assert_array_equal(got.signal, seg.signal)  # float32: exact
            np.testing.assert_array_equal(got.positions, seg.positions)
            np.testing.assert_array_equal(got.orientations, seg.orientations)
            assert got.kinds == seg.kinds and got.meta["ch_names" if seg.modality != "fmri"
                                                       else "parcel_labels"] == seg.meta[
                "ch_names" if seg.modality != "fmri" else "parcel_labels"]
            n += 1
    assert n == len(streamed)


def test_float16_shards_within_rounding(tmp_path, data_dir, options):
    path = str(data_dir / "meeg" / "brainvision" / "test.vhdr")
    write_shards([path], tmp_path / "f16", options, dtype="float16")
    direct = {s.meta["onset_s"]: s for s in _direct(path, options, "brainvision")}
    for got in _all(tmp_path / "f16"):
        expected = direct[got.meta["onset_s"]].signal
        np.testing.assert_allclose(got.signal, expected, rtol=2**-11, atol=2**-14)
        assert got.signal.dtype == np.float32


def test_manifest_totals_equal_what_was_written(prepared):
    manifest = load_manifest(prepared)
    segments = _all(prepared)
    assert manifest["totals"]["samples"] == len(segments) == sum(s["n_samples"] for s in manifest["shards"])
    for shard in manifest["shards"]:
        assert sha256_of(prepared / shard["name"]) == shard["sha256"]
        assert (prepared / shard["name"]).stat().st_size == shard["bytes"]
    hours = sum(s.duration_s for s in segments) / 3600
    assert manifest["totals"]["hours"] == pytest.approx(hours)
    by_modality = Counter()
    for s in segments:
        by_modality[s.modality] += s.duration_s / 3600
    assert manifest["totals"]["hours_by_modality"] == pytest.approx(dict(by_modality))
    assert manifest["totals"]["channel_histogram"] == {
        str(k): v for k, v in sorted(Counter(s.n_sensors for s in segments).items())}
    assert manifest["files"] == {"found": 6, "ok": 6, "failed": 0}
    assert not (prepared / ".work").exists()


def test_subjects_never_span_splits_and_shards_are_homogeneous(prepared):
    manifest = load_manifest(prepared)
    splits_of = {}
    for shard in manifest["shards"]:
        segs = list(stream([str(prepared / shard["name"])], None, shuffle_buffer=0))
        assert {s.meta["split"] for s in segs} == {shard["split"]}
        assert {s.modality for s in segs} == {shard["modality"]}
        for s in segs:
            splits_of.setdefault(s.meta["subject"], set()).add(s.meta["split"])
    assert all(len(v) == 1 for v in splits_of.values())
    assert len({next(iter(v)) for v in splits_of.values()}) >= 2  # several splits in use
    train = sum(1 for _ in stream(prepared, "train", shuffle_buffer=0))
    assert train == manifest["splits"]["train"]["samples"] > 0


def test_two_ranks_two_workers_see_every_sample_once(prepared):
    expected = {s.meta["key"] for s in _all(prepared)}
    assert len(load_manifest(prepared)["shards"]) >= 4
    seen = []
    for rank in (0, 1):
        pipeline = stream(prepared, None, rank=rank, world_size=2, shuffle_buffer=20, seed=1)
        loader = torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2,
                                             collate_fn=lambda s: s)
        keys = [s.meta["key"] for s in loader]
        assert keys, f"rank {rank} got no data"
        seen += keys
    assert len(seen) == len(set(seen)) and set(seen) == expected


def test_resampled_stream_never_runs_dry(prepared):
    pipeline = stream(prepared, "train", resampled=True, shuffle_buffer=10)
    n = len(list(zip(range(3 * load_manifest(prepared)["splits"]["train"]["samples"]), pipeline,
                     strict=False)))
    assert n == 3 * load_manifest(prepared)["splits"]["train"]["samples"]


def test_truncated_shard_is_skipped_and_counted(prepared, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    manifest = load_manifest(copy)
    victim = copy / manifest["shards"][0]["name"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2 + 100])
    errors = ErrorCounter()
    segments = list(stream(copy, None, shuffle_buffer=0, errors=errors))
    assert errors.count >= 1
    assert 0 < len(segments) < manifest["totals"]["samples"]
    with pytest.raises(ShardError, match="corrupt or truncated shard"):
        list(stream(copy, None, shuffle_buffer=0, on_error="raise"))


def test_failed_file_is_logged_and_run_continues(tmp_path, data_dir, options):
    bad = tmp_path / "inputs" / "broken_eeg.edf"
    bad.parent.mkdir()
    bad.write_bytes(b"0" * 4000)
    good = data_dir / "meeg" / "brainvision" / "test.vhdr"
    manifest = write_shards([str(bad), str(good)], tmp_path / "out", options)
    assert manifest["files"] == {"found": 2, "ok": 1, "failed": 1}
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert failures[0]["path"] == str(bad) and "cannot read recording" in failures[0]["error"]
    assert manifest["totals"]["samples"] > 0


def test_nihon_kohden_and_unknown_inputs_fail_alone(tmp_path, data_dir, options):
    # a Nihon Kohden .EEG goes to MNE's Nihon Kohden reader (this one is corrupt), a file of
    # an unknown format is reported, and the run goes on with the good recording
    nihon = tmp_path / "inputs" / "DA1000.EEG"
    nihon.parent.mkdir()
    nihon.write_bytes(b"EEG-1100A V01.00" + bytes(range(256)) * 8)
    notes = tmp_path / "inputs" / "notes.xyz"
    notes.write_text("not a recording")
    good = data_dir / "meeg" / "brainvision" / "test.vhdr"
    manifest = write_shards([nihon, notes, good], tmp_path / "out", options)
    assert manifest["files"] == {"found": 3, "ok": 1, "failed": 2}
    failures = {Path(f["path"]).name: f["error"] for f in map(
        json.loads, (tmp_path / "out" / "failures.jsonl").read_text().splitlines())}
    assert "cannot read recording" in failures["DA1000.EEG"] and "unknown extension" not in failures["DA1000.EEG"]
    assert "unknown extension" in failures["notes.xyz"]
    assert manifest["totals"]["samples"] > 0
    # a BrainVision data file is read through its header, never as Nihon Kohden
    assert [Path(s.path).name for s in discover(good.parent)] == ["test.vhdr"]


def test_prepare_option_errors_are_one_line_before_any_work(tmp_path, data_dir):
    result = run_cli("prepare", f"inputs=[{data_dir / 'meeg' / 'brainvision' / 'test.vhdr'}]",
                     f"out={tmp_path / 'a'}", "+meeg.montag=biosemi64")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "unknown option +meeg.montag= (did you mean 'montage'?)" in lines[0] and "meeg.line_freq" in lines[0]
    # two BOLD runs and no atlas: one error, not one per file, and nothing written
    result = run_cli("prepare", f"inputs=[{data_dir / 'fmri'}]", f"out={tmp_path / 'b'}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "2 inputs are 4-D BOLD images, which need an atlas: pass atlas=" in lines[0]
    assert not (tmp_path / "b" / "manifest.json").exists()
    result = run_cli("prepare", f"out={tmp_path / 'c'}")
    assert result.returncode == 2
    assert result.stderr.strip() == ("neurofm: error: neurofm prepare needs inputs: pass inputs=... "
                                     "(see neurofm prepare --help)")


def test_a_refusal_names_the_option_as_each_caller_spells_it(tmp_path, meeg):
    """One refusal raised in the tokenizer (the EEGLAB tutorial's channels are named ``EEG 000``
    ..., so none has a position), named where it is raised: as ``neurofm prepare`` spells the
    options, as Python does, and as a command that states other spellings does."""
    from neurofm.errors import MissingPositionsError
    from neurofm.options import spelled_as
    from neurofm.tokenizers import tokenize_raw

    path = meeg / "eeglab" / "test_raw.set"
    manifest = write_shards([path], tmp_path / "out", PrepareOptions(window_s=2.0))
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text())
    assert manifest["failures"] == 1 and failure["error_type"] == "MissingPositionsError"
    assert "pass +meeg.montage='<a standard montage>' or a DigMontage" in failure["error"]
    assert "or +meeg.on_missing_positions='drop'" in failure["error"]
    with pytest.raises(MissingPositionsError, match=r"32 of 32 channels have no position .* pass "
                                                    r"montage='<a standard montage>' .* or on_missing_positions='drop'"):
        tokenize_raw(path, window_s=2.0)
    with spelled_as({"montage": "+tokenizer.montage"}), pytest.raises(
            MissingPositionsError, match=r"pass \+tokenizer.montage='<a standard montage>' .* on_missing_positions="):
        tokenize_raw(path, window_s=2.0)


def test_too_short_hint_names_the_cli_option(tmp_path, fmri, atlases):
    options = PrepareOptions(atlas=str(atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz"),
                             fmri_window_s=600.0)
    manifest = write_shards([fmri / "nipy_functional.nii.gz"], tmp_path / "out", options)
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text())
    assert manifest["failures"] == 1
    assert "pass a smaller fmri_window_s" in failure["error"]


def test_sigkill_then_rerun_gives_identical_shards(prepared, inputs, options, tmp_path):
    out = tmp_path / "killed"
    script = (f"from neurofm.datasets import write_shards, PrepareOptions\n"
              f"write_shards({inputs!r}, {str(out)!r}, PrepareOptions(**{options.__dict__!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "NEUROFM_PROGRESS": "0"})
    deadline = time.time() + 120
    while time.time() < deadline and not _finished(out):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the run finished before it could be killed"
    assert 1 <= len(_finished(out)) < len(inputs)
    assert not list(out.glob("shard-*.tar"))
    manifest = write_shards(inputs, out, options)
    reference = load_manifest(prepared)
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in reference["shards"]]
    assert (out / "manifest.json").read_bytes() == (prepared / "manifest.json").read_bytes()


def _finished(out: Path) -> list[dict]:
    """Summaries of the files a run has finished, from its journals."""
    from neurofm.datasets.tar_io import read_journals

    return read_journals(out / ".work")[0] if (out / ".work").exists() else []


def test_torn_journal_and_lost_samples_are_tokenized_again(prepared, inputs, options, tmp_path, monkeypatch):
    import neurofm.datasets.tokenize as tokenize_module

    out = tmp_path / "torn"
    broken = tmp_path / "broken_eeg.edf"
    broken.write_bytes(b"0" * 4000)
    assert write_shards([*inputs, str(broken)], out, options)["failures"] == 1  # keeps .work
    [journal] = (out / ".work").glob("*.jsonl")
    lines = journal.read_text().splitlines(keepends=True)
    done = [json.loads(line) for line in lines if '"status": "ok"' in line]
    assert sorted(d["path"] for d in done) == sorted(inputs)
    # samples that never reached the disk (a power cut: the file is there, zeroed)
    lost = done[0]
    data = bytearray((out / ".work" / lost["data"]).read_bytes())
    data[lost["offset"] : lost["offset"] + lost["length"]] = bytes(lost["length"])
    (out / ".work" / lost["data"]).write_bytes(bytes(data))
    # a crash in the middle of the summary line of the third file: it and all after are lost
    cut = next(k for k, line in enumerate(lines) if done[2]["path"] in line and '"status"' in line)
    journal.write_text("".join(lines[:cut]) + lines[cut][:60])
    tokenized = []

    def counting(src, *args, **kwargs):
        tokenized.append(src.path)
        return tokenize_file(src, *args, **kwargs)
    tokenize_file = tokenize_module.tokenize_file
    monkeypatch.setattr(tokenize_module, "tokenize_file", counting)
    manifest = write_shards(inputs, out, options)
    assert sorted(tokenized) == sorted([lost["path"]] + [d["path"] for d in done[2:]])
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in load_manifest(prepared)["shards"]]
    assert not (out / ".work").exists()


def test_float16_overflow_is_refused_naming_the_segment(prepared):
    from neurofm.datasets.codec import encode_segment

    seg = _all(prepared)[0]
    big = type(seg)(seg.signal * 1e6, seg.positions, seg.orientations, seg.kinds, seg.meta)
    assert np.isfinite(load_npy_signal(encode_segment(big, "float32"))).all()
    with pytest.raises(ShardError, match=rf"segment at {seg.meta['onset_s']} s of .* overflows float16 "
                                         r"\(\|x\| > 65504\); use dtype='float32'"):
        encode_segment(big, "float16")
    nan = seg.signal.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ShardError, match="is not finite"):
        encode_segment(type(seg)(nan, seg.positions, seg.orientations, seg.kinds, seg.meta), "float32")


def load_npy_signal(files: dict) -> np.ndarray:
    from neurofm.datasets.codec import load_npy

    return load_npy(files["signal.npy"])


def test_collate_pads_and_masks_mixed_segments(prepared):
    segments = _all(prepared)
    eeg = next(s for s in segments if s.modality == "eeg")
    meg = next(s for s in segments if s.modality == "meg")
    fmri = next(s for s in segments if s.modality == "fmri")
    batch = collate_segments([eeg, meg, fmri])
    c = max(eeg.n_sensors, meg.n_sensors, fmri.n_sensors)
    t = max(eeg.n_times, meg.n_times, fmri.n_times)
    assert batch.signal.shape == (3, c, t) and batch.positions.shape == (3, c, 3)
    assert batch.channel_mask.sum(1).tolist() == [eeg.n_sensors, meg.n_sensors, fmri.n_sensors]
    assert batch.time_mask.sum(1).tolist() == [eeg.n_times, meg.n_times, fmri.n_times]
    assert torch.equal(batch.signal[1, : meg.n_sensors, : meg.n_times], torch.from_numpy(meg.signal))
    assert batch.signal[0, eeg.n_sensors :].abs().sum() == 0 and (batch.kinds[0, eeg.n_sensors :] == -1).all()
    assert batch.modality.tolist() == [0, 1, 3] and batch.sfreq.tolist() == [200.0, 200.0, 0.5]


def test_crop_to_token_budget(prepared):
    meg = next(s for s in _all(prepared) if s.modality == "meg")  # 366 sensors x 0.5 s
    rng = np.random.default_rng(0)
    cropped = crop_to_budget(meg, max_tokens=100, patch_s=0.1, rng=rng)
    assert cropped.n_sensors == 100 and cropped.n_times == 20
    assert set(cropped.meta["ch_names"]) <= set(meg.meta["ch_names"])
    kept = crop_to_budget(meg, max_tokens=366 * 2, patch_s=0.1, rng=rng)
    assert kept.n_sensors == 366 and kept.n_times == 40


def test_batches_are_one_modality_and_mixed_by_weight(prepared):
    batches = list(batched_stream(prepared, 8, None, shuffle_buffer=0))
    assert all(len(set(b.modality.tolist())) == 1 for b in batches)
    assert sum(len(b) for b in batches) == load_manifest(prepared)["totals"]["samples"]
    mixed = batched_stream(prepared, 4, "train", modality_weights={"eeg": 0.5, "meg": 0.5},
                           resampled=True, shuffle_buffer=0)
    kinds = [int(b.modality[0]) for b, _ in zip(mixed, range(200), strict=False)]
    share_meg = kinds.count(1) / len(kinds)
    assert 0.35 < share_meg < 0.65 and set(kinds) == {0, 1}


def test_mixed_resampled_stream_is_reproducible_and_resumable(prepared):
    from neurofm.datasets.streaming import make_loader

    def keys(pipeline, n, workers=0, skip=0):
        loader = make_loader(pipeline, num_workers=workers, skip_batches=skip)
        return [tuple(m["key"] for m in b.meta) for b, _ in zip(loader, range(n), strict=False)]

    def mixed():
        return batched_stream(prepared, 4, "train", modality_weights={"eeg": 0.5, "meg": 0.5},
                              resampled=True, shuffle_buffer=20, seed=3)

    first = keys(mixed(), 30, workers=2)
    assert first == keys(mixed(), 30, workers=2)  # the same seed gives the same batches
    # a resumed run: skip the 11 batches already trained on, then the same continuation
    assert keys(mixed(), 19, workers=2, skip=11) == first[11:]  # odd: the workers' turns rotate
    assert keys(mixed(), 20, workers=2, skip=10) == first[10:]
    assert keys(mixed(), 10, skip=5) == keys(mixed(), 15)[5:]


def test_discover_bids_and_skip_3d(tmp_path, data_dir):
    root = tmp_path / "bids"
    (root / "sub-01" / "eeg").mkdir(parents=True)
    (root / "sub-01" / "func").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "demo", "BIDSVersion": "1.8.0"}))
    shutil.copy(data_dir / "meeg" / "bdf" / "multiple_annotation_chans.bdf",
                root / "sub-01" / "eeg" / "sub-01_task-rest_eeg.bdf")
    shutil.copy(data_dir / "fmri" / "nipy_functional.nii.gz",
                root / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")
    found = discover(root)
    assert [(Path(s.path).name, s.recording_type, s.dataset, s.entities.get("subject")) for s in found] == [
        ("sub-01_task-rest_eeg.bdf", "meeg", "demo", "01"),
        ("sub-01_task-rest_bold.nii.gz", "bold", "demo", "01")]
    plain = discover(data_dir)
    assert not any("atlases" in s.path for s in plain)  # 3-D labels images are not BOLD runs
    assert any(s.path.endswith("nipy_functional.nii.gz") for s in plain)


def test_cli_prepare(tmp_path, data_dir):
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "neurofm.cli", "prepare",
         f"inputs=[{data_dir / 'meeg' / 'brainvision' / 'test.vhdr'}]", f"out={out}", "window_s=2.0"],
        capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr
    assert "wrote 1 shards, 3 samples" in result.stderr
    assert load_manifest(out)["totals"]["samples"] == 3


@pytest.mark.parametrize("array", [np.linspace(-3, 3, 15, dtype=np.float16).reshape(3, 5),
                                   np.zeros((0, 3), np.float32),
                                   np.asfortranarray(np.arange(8.0).reshape(4, 2)),
                                   np.arange(5, dtype=np.int64)])
def test_fast_npy_reader_matches_numpy(array):
    from neurofm.datasets.codec import _npy, load_npy

    data = _npy(array)
    ours, theirs = load_npy(data), np.load(io.BytesIO(data))
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    assert ours.flags.writeable
    with pytest.raises(ValueError, match="not a .npy file"):
        load_npy(b"PK\x03\x04" + data)


def test_verify_names_every_bad_shard(prepared, tmp_path):
    from neurofm.datasets.verify import verify_shards

    assert verify_shards(prepared) == []
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    shards = sorted(copy.glob("shard-*.tar"))
    shards[0].unlink()
    data = bytearray(shards[1].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a sample
    shards[1].write_bytes(bytes(data))
    problems = {p["shard"]: p["problem"] for p in verify_shards(copy)}
    assert problems == {shards[0].name: "missing",
                        shards[1].name: "sha256 differs from the manifest (changed or corrupt)"}
    result = run_cli("verify", f"shards={copy}")
    assert result.returncode == 1
    assert f"{shards[0]}: missing" in result.stderr and "2 of" in result.stderr
    assert run_cli("verify", f"shards={prepared}").returncode == 0


def test_rerun_killed_while_packing_leaves_no_stale_manifest(prepared, inputs, options, tmp_path, monkeypatch):
    import neurofm.datasets.shards as shards_module

    out = tmp_path / "rerun"
    shutil.copytree(prepared, out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the run dies while packing new shards
    monkeypatch.setattr(shards_module, "_pack", killed)
    with pytest.raises(KeyboardInterrupt):
        write_shards(inputs[:1], out, options)
    # the old manifest no longer describes the directory: the loader refuses it
    with pytest.raises(ShardError, match="no manifest.json"):
        load_manifest(out)
    monkeypatch.undo()
    assert write_shards(inputs[:1], out, options)["files"]["ok"] == 1


def test_a_changed_byte_drops_the_shard_loudly(prepared, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    manifest = load_manifest(copy)
    target = copy / manifest["shards"][0]["name"]
    data = bytearray(target.read_bytes())
    data[700] ^= 0x01  # a byte in the second member's tar header
    target.write_bytes(bytes(data))
    errors = ErrorCounter()
    with caplog.at_level("WARNING", logger="neurofm"):
        segments = list(stream(copy, None, shuffle_buffer=0, errors=errors))
    assert errors.count == 1 and "sha256 differs from the manifest" in caplog.text
    assert target.name in caplog.text
    assert len(segments) == manifest["totals"]["samples"] - manifest["shards"][0]["n_samples"]
    with pytest.raises(ShardError, match="sha256 differs"):
        list(stream(copy, None, shuffle_buffer=0, on_error="raise"))


@pytest.mark.parametrize("edit, message", [({"modality": "pet"}, "unknown modality 'pet'"),
                                           ({"sfreq": 0}, "sfreq 0 is not a positive rate")])
def test_bad_sample_metadata_is_corrupt_not_a_crash(prepared, edit, message):
    from neurofm.datasets.codec import decode_sample

    sample = next(iter(wds_samples(prepared)))
    meta = json.loads(sample["meta.json"]) | edit
    with pytest.raises(ShardError, match=message):
        decode_sample(sample | {"meta.json": json.dumps(meta).encode()})


def wds_samples(directory: Path):
    import webdataset as wds

    shard = sorted(directory.glob("shard-*.tar"))[0]
    return wds.DataPipeline(wds.SimpleShardList([str(shard)]), wds.tarfile_to_samples())


def test_a_killed_worker_fails_its_file_only(tmp_path, data_dir, options):
    from neurofm.datasets.discovery import discover
    from neurofm.datasets.pool import run_workers
    from tests.helpers.dying_worker import prepare_or_die

    good = [data_dir / "meeg" / "brainvision" / "test.vhdr", data_dir / "meeg" / "bdf" / "multiple_annotation_chans.bdf"]
    doomed = tmp_path / "doomed.vhdr"
    shutil.copy(good[0], doomed)  # its .eeg/.vmrk are not needed: the worker dies first
    sources = discover([good[0], doomed, good[1]])
    workdir = tmp_path / "work"
    workdir.mkdir()
    summaries: dict = {}
    run_workers(sources, options, workdir, 2, summaries, task=prepare_or_die)
    assert {Path(p).name: s["status"] for p, s in summaries.items()} == {
        "test.vhdr": "ok", "multiple_annotation_chans.bdf": "ok", "doomed.vhdr": "failed"}
    assert "tokenizer process died" in summaries[str(doomed)]["error"]


def test_malformed_inputs_fail_alone(tmp_path, data_dir, atlases):
    root = tmp_path / "inputs"
    root.mkdir()
    for name, sidecar in (("sub-01_task-rest_bold", '{"RepetitionTime": 0}'), ("sub-02_task-rest_bold", "{not json")):
        shutil.copy(data_dir / "fmri" / "nipy_functional.nii.gz", root / f"{name}.nii.gz")
        (root / f"{name}.json").write_text(sidecar)
    (root / "Site_0050001_rois_cc200.1D").write_bytes(bytes(range(256)) * 40)  # random bytes
    shutil.copy(data_dir / "fmri" / "nipy_functional.nii.gz", root / "sub-03_task-rest_bold.nii.gz")
    options = PrepareOptions(fmri_window_s=10.0, atlas=str(atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz"),
                             roi_tr_s=2.0)
    manifest = write_shards(root, tmp_path / "out", options)
    failures = {Path(f["path"]).name: f["error"] for f in map(
        json.loads, (tmp_path / "out" / "failures.jsonl").read_text().splitlines())}
    assert manifest["files"] == {"found": 4, "ok": 1, "failed": 3}
    assert set(failures) == {"sub-01_task-rest_bold.nii.gz", "sub-02_task-rest_bold.nii.gz",
                             "Site_0050001_rois_cc200.1D"}
    assert manifest["totals"]["samples"] > 0
