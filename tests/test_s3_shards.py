"""Shards in S3: a real S3 API on 127.0.0.1 (moto's server, an emulator of the S3 REST API,
started by the test), read through fsspec/s3fs with credentials and the endpoint taken from
the environment as a user's would be (AWS_* variables), never from the config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from neurofm.datasets import PrepareOptions, stream, write_shards  # noqa: E402
from neurofm.datasets import manifest as manifest_module  # noqa: E402
from neurofm.datasets.streaming import ErrorCounter  # noqa: E402
from neurofm.testing import free_port  # noqa: E402
from tests.helpers.cli import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def bucket(tmp_path_factory, meeg):
    """Shards of 3 real EEG recordings written locally, uploaded to s3://corpus-bucket/corpus/."""
    import boto3

    root = tmp_path_factory.mktemp("s3") / "corpus"
    files = [meeg / "bdf" / "multiple_annotation_chans.bdf", meeg / "brainvision" / "test.vhdr",
             meeg / "eeglab" / "test_raw_chanloc.set"]
    write_shards(files, root, PrepareOptions(window_s=2.0, shard_size_mb=0.1, split_fractions=(1.0, 0.0, 0.0)))
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="corpus-bucket")
    for path in sorted(root.iterdir()):
        if path.is_file():
            client.upload_file(str(path), "corpus-bucket", f"corpus/{path.name}")
    yield root, "s3://corpus-bucket/corpus/", client, env
    patch.undo()
    server.stop()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(manifest_module, "BACKOFF_S", 0.01)


def keys(pipeline) -> list[str]:
    return [s.meta["key"] for s in pipeline]


def test_s3_stream_equals_the_local_directory(bucket):
    local, url, _, _ = bucket
    here = list(stream(local, "train", shuffle_buffer=0, shuffle_shards=False))
    there = list(stream(url, "train", shuffle_buffer=0, shuffle_shards=False))
    assert len(here) > 10 and keys(there) == keys(here)
    for a, b in zip(here, there, strict=True):
        np.testing.assert_array_equal(a.signal, b.signal)
        np.testing.assert_array_equal(a.positions, b.positions)


def test_a_corrupt_object_in_s3_yields_none_of_its_samples(bucket):
    local, url, client, _ = bucket
    name = sorted(p.name for p in Path(local).glob("shard-*.tar"))[0]
    body = bytearray((Path(local) / name).read_bytes())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket="corpus-bucket", Key=f"corpus/{name}", Body=bytes(body))
    try:
        errors = ErrorCounter()
        got = keys(stream(url, "train", shuffle_buffer=0, shuffle_shards=False, errors=errors))
    finally:
        client.upload_file(str(Path(local) / name), "corpus-bucket", f"corpus/{name}")
    lost = keys(stream([str(Path(local) / name)], None, shuffle_buffer=0, verify=False))
    assert errors.count == 1 and lost and not set(got) & set(lost)
    assert sorted(got + lost) == sorted(keys(stream(local, "train", shuffle_buffer=0)))


def test_a_missing_object_is_a_counted_failure_and_a_missing_manifest_an_error(bucket):
    local, url, client, _ = bucket
    name = sorted(p.name for p in Path(local).glob("shard-*.tar"))[1]
    client.delete_object(Bucket="corpus-bucket", Key=f"corpus/{name}")
    try:
        errors = ErrorCounter()
        got = keys(stream(url, "train", shuffle_buffer=0, shuffle_shards=False, errors=errors))
    finally:
        client.upload_file(str(Path(local) / name), "corpus-bucket", f"corpus/{name}")
    assert errors.count == 1 and len(got) < len(keys(stream(local, "train", shuffle_buffer=0)))
    with pytest.raises(Exception, match="no manifest.json at this URL"):
        keys(stream("s3://corpus-bucket/elsewhere/", "train", shuffle_buffer=0))


def test_pretraining_from_s3_gives_the_local_loss_sequence(bucket, tmp_path):
    import pandas as pd

    local, url, _, _ = bucket
    common = ["data=shards", "model=tiny", "trainer.max_steps=10", "trainer.log_every_n_steps=1",
              "data.batch_size=2", "data.num_workers=0", "optim.warmup_steps=2",
              "checkpoint.every_n_steps=1000", "val_every_n_steps=1000000", "seed=3"]
    losses = []
    for name, shards in (("local", local), ("s3", url)):
        result = run_cli("pretrain", f"data.shards={shards}", f"run_dir={tmp_path / name}", *common)  # AWS_* inherited
        assert result.returncode == 0, result.stderr[-3000:]
        losses.append(pd.read_csv(tmp_path / name / "metrics.csv")["train/loss"].dropna().to_numpy())
    assert len(losses[0]) == 10
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)


def test_verify_and_embed_read_shards_from_s3(bucket, tmp_path):
    import torch

    from neurofm.datasets.verify import verify_shards
    from neurofm.embedding import NeuroFM
    from neurofm.models.mae import MaskedAutoencoder, ModelConfig

    local, url, client, _ = bucket
    assert verify_shards(url) == [] and verify_shards(local) == []
    name = sorted(p.name for p in Path(local).glob("shard-*.tar"))[0]
    body = bytearray((Path(local) / name).read_bytes())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket="corpus-bucket", Key=f"corpus/{name}", Body=bytes(body))
    try:
        assert verify_shards(url, decode=False) == [
            {"shard": name, "problem": "sha256 differs from the manifest (changed or corrupt)"}]
    finally:
        client.upload_file(str(Path(local) / name), "corpus-bucket", f"corpus/{name}")
    result = run_cli("verify", f"shards={url}")
    assert result.returncode == 0, result.stderr[-2000:]
    torch.manual_seed(0)
    model = NeuroFM(MaskedAutoencoder(ModelConfig()))
    there, here = model.embed(url), model.embed(local)
    assert there.windows.shape == here.windows.shape and len(here.windows) > 10
    np.testing.assert_allclose(there.windows, here.windows, rtol=1e-5, atol=1e-6)
