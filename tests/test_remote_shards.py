"""Shards over HTTP from a real server on 127.0.0.1 (Python's http.server with a handler that
fails or cuts responses on demand): manifest selection, checksums while streaming, retries,
counted failures, and the same training as from the local directory."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurofm.datasets import PrepareOptions, stream, write_shards
from neurofm.datasets import manifest as manifest_module
from neurofm.datasets.streaming import ErrorCounter
from neurofm.testing import free_port
from tests.helpers.cli import run_cli


class FaultyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; ``faults[name]`` is a list of what the next requests of that file
    get: ``"500"`` (an HTTP 500) or ``"cut"`` (the headers of the whole file, half the body)."""

    faults: dict[str, list[str]] = {}
    requests: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.rsplit("/", 1)[-1]
        FaultyHandler.requests[name] = FaultyHandler.requests.get(name, 0) + 1
        plan = FaultyHandler.faults.get(name)
        fault = plan.pop(0) if plan else None
        if fault == "500":
            self.send_error(500, "injected failure")
            return
        if fault == "cut":
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory, meeg):
    root = tmp_path_factory.mktemp("served")
    files = [meeg / "bdf" / "multiple_annotation_chans.bdf", meeg / "brainvision" / "test.vhdr",
             meeg / "eeglab" / "test_raw_chanloc.set"]
    write_shards(files, root / "corpus", PrepareOptions(window_s=2.0, shard_size_mb=0.1,
                                                        split_fractions=(1.0, 0.0, 0.0)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(FaultyHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root / "corpus", f"http://127.0.0.1:{server.server_address[1]}/corpus/"
    server.shutdown()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(manifest_module, "BACKOFF_S", 0.01)
    FaultyHandler.faults.clear()
    FaultyHandler.requests.clear()


def keys(pipeline) -> list[str]:
    return [s.meta["key"] for s in pipeline]


def test_http_stream_equals_the_local_directory(served):
    local, url = served
    here = list(stream(local, "train", shuffle_buffer=0, shuffle_shards=False))
    there = list(stream(url, "train", shuffle_buffer=0, shuffle_shards=False))
    assert len(here) > 10 and [s.meta["key"] for s in there] == [s.meta["key"] for s in here]
    for a, b in zip(here, there, strict=True):
        np.testing.assert_array_equal(a.signal, b.signal)
    with pytest.raises(Exception, match="no shards for split='val'"):
        keys(stream(url, "val", shuffle_buffer=0))


def test_failed_and_cut_responses_are_retried(served):
    local, url = served
    shard = sorted(p.name for p in local.glob("shard-*.tar"))[0]
    FaultyHandler.faults[shard] = ["500", "cut"]
    errors = ErrorCounter()
    got = keys(stream(url, "train", shuffle_buffer=0, shuffle_shards=False, errors=errors))
    assert got == keys(stream(local, "train", shuffle_buffer=0, shuffle_shards=False))
    assert FaultyHandler.requests[shard] == 3 and errors.count == 0


def test_a_shard_that_keeps_failing_is_a_counted_failure(served, caplog):
    local, url = served
    names = sorted(p.name for p in local.glob("shard-*.tar"))
    FaultyHandler.faults[names[1]] = ["500"] * 10
    errors = ErrorCounter()
    got = keys(stream(url, "train", shuffle_buffer=0, shuffle_shards=False, errors=errors))
    lost = keys(stream([str(local / names[1])], None, shuffle_buffer=0, verify=False))
    assert errors.count == 1 and FaultyHandler.requests[names[1]] == 1 + manifest_module.RETRIES
    assert sorted(got + lost) == sorted(keys(stream(local, "train", shuffle_buffer=0)))
    assert "read failed 5 times" in caplog.text and names[1] in caplog.text


def test_a_corrupt_shard_yields_none_of_its_samples(served, tmp_path):
    local, url = served
    names = sorted(p.name for p in local.glob("shard-*.tar"))
    target = local / names[0]
    original = target.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    try:
        target.write_bytes(bytes(flipped))
        errors = ErrorCounter()
        got = keys(stream(url, "train", shuffle_buffer=0, shuffle_shards=False, errors=errors))
    finally:
        target.write_bytes(original)
    lost = keys(stream([str(target)], None, shuffle_buffer=0, verify=False))
    assert errors.count == 1 and not set(got) & set(lost)
    assert sorted(got + lost) == sorted(keys(stream(local, "train", shuffle_buffer=0)))


def test_training_from_http_gives_the_local_loss_sequence(served, tmp_path):
    local, url = served
    common = ["data=shards", "model=tiny", "trainer.max_steps=20", "trainer.log_every_n_steps=1",
              "data.batch_size=2", "data.num_workers=0", "optim.warmup_steps=2",
              "checkpoint.every_n_steps=1000", "val_every_n_steps=1000000", "seed=3"]
    losses = []
    for name, shards in (("local", local), ("http", url)):
        result = run_cli("pretrain", f"data.shards={shards}", f"run_dir={tmp_path / name}", *common)
        assert result.returncode == 0, result.stderr[-3000:]
        table = pd.read_csv(tmp_path / name / "metrics.csv")
        losses.append(table["train/loss"].dropna().to_numpy())
    assert len(losses[0]) == 20
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)


def _two_nodes(run, url: str, max_steps: int, *more: str) -> list:
    """Two torchrun "nodes" on 127.0.0.1 (gloo, two processes each: 4 ranks) pretraining
    ``tiny`` from ``url``; each node in its own session, so a signal can reach a whole node."""
    import os
    import subprocess
    import sys

    common = ["--nnodes=2", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
              "-m", "neurofm.cli", "pretrain", f"run_dir={run}", "data=shards", f"data.shards={url}",
              "data.num_workers=0", "data.batch_size=2", "trainer=ddp", "trainer.accelerator=cpu",
              "trainer.devices=2", "trainer.num_nodes=2", "trainer.precision=32-true",
              f"trainer.max_steps={max_steps}", "log_sample_keys=true", "model=tiny", "trainer.log_every_n_steps=1",
              "checkpoint.every_n_steps=100000", "val_every_n_steps=1000000", *more]
    env = {**os.environ, "NEUROFM_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--node_rank={r}", *common],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True) for r in (0, 1)]


def _finish(procs, timeout: float = 600) -> list[str]:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    return outputs


def test_two_nodes_of_two_processes_stream_disjoint_shards_from_http(served, tmp_path):
    """2 torchrun "nodes" x 2 processes on 127.0.0.1 pretraining from the HTTP server, one
    non-resampled pass: each rank reads its own shards, no sample twice, one checkpoint."""
    import torch

    local, url = served
    run = tmp_path / "two_nodes"
    _finish(_two_nodes(run, url, 3, "data.resampled=false", "data.shuffle_buffer=0"))
    keys_of = [(run / f"keys-rank{r}.txt").read_text().split() for r in range(4)]
    assert [len(k) for k in keys_of] == [6] * 4 and all(len(set(k)) == 6 for k in keys_of)
    shard_of = {s.meta["key"]: shard.name for shard in sorted(local.glob("shard-*.tar"))
                for s in stream([str(shard)], None, shuffle_buffer=0)}
    shards_of = [{shard_of[k] for k in keys} for keys in keys_of]
    assert all(not shards_of[a] & shards_of[b] for a in range(4) for b in range(a + 1, 4))
    assert {n for n in FaultyHandler.requests if n.startswith("shard-")}  # served over HTTP
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_two_nodes_stopped_by_sigterm_resume_at_the_same_step_and_data_position(served, tmp_path):
    """SIGTERM to every process of both nodes (as SLURM preemption does) while 4 ranks stream
    from HTTP: all ranks agree on the step to stop after and write one ``last.ckpt``; resumed,
    every rank trains on exactly the samples of an uninterrupted run, and the steps continue."""
    import os
    import signal
    import time

    import torch

    _, url = served
    run = tmp_path / "run"
    procs = _two_nodes(run, url, 100000)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "keys-rank3.txt").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists(), outputs[0][-3000:] + outputs[1][-3000:]
    step = torch.load(last, weights_only=True)["global_step"]
    assert step > 0
    extra = 3
    _finish(_two_nodes(run, url, step + extra, "resume=auto"))
    _finish(_two_nodes(tmp_path / "reference", url, step + extra))
    assert torch.load(last, weights_only=True)["global_step"] == step + extra
    for r in range(4):
        seen = (run / f"keys-rank{r}.txt").read_text().split()
        expected = (tmp_path / "reference" / f"keys-rank{r}.txt").read_text().split()
        assert len(expected) == 2 * (step + extra)
        assert seen == expected, f"rank {r}: the resumed run trained on other samples"


def test_an_epoch_from_http_reads_every_sample_once_across_four_ranks(served):
    """4 ranks (as 2 nodes x 2 processes would be), 2 loader workers each, one non-resampled
    epoch from the HTTP server: every sample of the split exactly once across all of them."""
    from neurofm.datasets import batched_stream
    from neurofm.datasets.streaming import make_loader

    local, url = served
    expected = keys(stream(local, "train", shuffle_buffer=0))
    seen = []
    for rank in range(4):
        pipeline = batched_stream(url, 2, "train", resampled=False, shuffle_buffer=10, rank=rank, world_size=4)
        loader = make_loader(pipeline, num_workers=2)
        per_rank = [m["key"] for batch in loader for m in batch.meta]
        assert per_rank, f"rank {rank} read nothing"
        seen += per_rank
    assert len(seen) == len(expected) and sorted(seen) == sorted(expected)
    assert {n for n in FaultyHandler.requests if n.startswith("shard-")}  # served over HTTP
