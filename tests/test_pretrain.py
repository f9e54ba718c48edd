"""Pretraining end to end: the demo main job, DDP on CPU over real shards, SIGTERM + resume, export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neurofm.datasets import PrepareOptions, collate_segments, stream, write_shards
from neurofm.models.backbone import encoder_state
from neurofm.models.io import load_pretrained, read_checkpoint
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.testing import free_port
from tests.helpers.encode import encode

ENV = {**os.environ, "NEUROFM_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
FAST = ["model=tiny", "trainer.log_every_n_steps=2", "checkpoint.every_n_steps=1000",
        "val_every_n_steps=1000000", "optim.warmup_steps=2"]


def pretrain(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neurofm.cli", "pretrain", *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def real_shards(tmp_path_factory, meeg) -> Path:
    out = tmp_path_factory.mktemp("pretrain") / "shards"
    files = [meeg / "bdf" / "multiple_annotation_chans.bdf", meeg / "brainvision" / "test.vhdr",
             meeg / "eeglab" / "test_raw_chanloc.set"]
    write_shards(files, out, PrepareOptions(window_s=2.0, shard_size_mb=0.1,
                                            split_fractions=(1.0, 0.0, 0.0)))
    return out


@pytest.mark.slow  # a training run in a subprocess
def test_demo_main_job(tmp_path):
    run = tmp_path / "run"
    result = pretrain(f"run_dir={run}", f"data.root={tmp_path / 'demo'}", "trainer.max_steps=12",
                      *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrained to step 12" in result.stderr and "neurofm export ckpt=" in result.stderr
    # a clean console: no Lightning notices, FLOP summaries or epoch counters of an endless run
    for noise in ("Total FLOPs", "Epoch 0/-", "litmodels", "GPU available", "weights_only"):
        assert noise not in result.stderr + result.stdout, noise
    assert (tmp_path / "demo" / "corpus" / "README.txt").read_text().startswith("SYNTHETIC")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 12
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["train/loss"].dropna().size >= 5
    assert (run / "loss_curve.png").stat().st_size > 5000


def test_sigterm_then_resume_continues_at_the_same_step_and_data_position(tmp_path, real_shards):
    run = tmp_path / "run"
    args = ["data=shards", f"data.shards={real_shards}", "data.num_workers=2", "data.batch_size=4",
            "log_sample_keys=true", *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "neurofm.cli", "pretrain", f"run_dir={run}", *args,
                             "trainer.max_steps=100000"], env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "metrics.csv").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM does: the main process and its loader workers
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output[-3000:]
    assert (run / "checkpoints" / "last.ckpt").exists(), output[-3000:]
    stopped = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    step = stopped["global_step"]
    assert step > 0
    result = pretrain(f"run_dir={run}", *args, f"trainer.max_steps={step + 6}", "resume=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == step + 6
    # optimizer and scheduler state came back: AdamW's step count continues
    states = resumed["optimizer_states"][0]["state"]
    assert int(next(iter(states.values()))["step"]) == step + 6
    # the resumed run appended to the metrics: they cover the whole run, once per logged step
    logged = pd.read_csv(run / "metrics.csv")[["step", "train/loss"]].dropna()
    assert logged["step"].min() <= 2 and logged["step"].max() >= step + 4
    assert not logged["step"].duplicated().any()
    # data position: the samples trained on equal those of one uninterrupted run
    reference = tmp_path / "reference"
    result = pretrain(f"run_dir={reference}", *args, f"trainer.max_steps={step + 6}")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = (reference / "keys-rank0.txt").read_text().split()
    seen = (run / "keys-rank0.txt").read_text().split()
    assert len(expected) == 4 * (step + 6)
    assert seen[: 4 * step] == expected[: 4 * step]
    assert seen[-24:] == expected[4 * step :]  # the resumed part (a batch cut by SIGTERM is retrained)


def test_ddp_two_processes_on_cpu_over_real_shards(tmp_path, real_shards):
    run = tmp_path / "ddp"
    result = pretrain(f"run_dir={run}", "data=shards", f"data.shards={real_shards}", "trainer=ddp",
                      "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
                      "trainer.max_steps=4", "data.num_workers=0", "data.batch_size=4",
                      "log_sample_keys=true", "data.resampled=false", *FAST[1:], "model=tiny")
    assert result.returncode == 0, result.stderr[-4000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    keys = [(run / f"keys-rank{r}.txt").read_text().split() for r in (0, 1)]
    # each rank trained on 4 batches of 4 windows, and no window went to both ranks
    assert [len(k) for k in keys] == [16, 16]
    assert not set(keys[0]) & set(keys[1])


def test_ddp_validates_when_the_val_split_has_fewer_shards_than_ranks(tmp_path, meeg):
    from neurofm.datasets.options import split_of

    files = [meeg / "bdf" / "multiple_annotation_chans.bdf", meeg / "brainvision" / "test.vhdr",
             meeg / "eeglab" / "test_raw_chanloc.set"]
    fractions = (0.5, 0.5, 0.0)
    # a seed that puts one of the three recordings (subjects) in val, the others in train
    seed = next(k for k in range(100) if sorted(split_of(f.parent.name, f.name.split(".")[0], fractions, k)
                                                for f in files) == ["train", "train", "val"])
    shards = tmp_path / "shards"
    manifest = write_shards(files, shards, PrepareOptions(window_s=1.0, split_fractions=fractions,
                                                          seed=seed))
    assert [s["split"] for s in manifest["shards"]].count("val") == 1
    run = tmp_path / "ddp_val"
    result = pretrain(f"run_dir={run}", "data=shards", f"data.shards={shards}", "trainer=ddp",
                      "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
                      "trainer.max_steps=4", "data.num_workers=0", "data.batch_size=2",
                      "val_every_n_steps=2", "val_batches=3", *FAST[:3], "optim.warmup_steps=2")
    assert result.returncode == 0, result.stderr[-4000:]
    val = pd.read_csv(run / "metrics.csv")[["step", "val/r2", "val/loss"]].dropna()
    # step 0 (the untrained baseline), then every 2 steps
    assert len(val) == 3 and val["step"].iloc[0] == 0 and np.isfinite(val.to_numpy()).all()


def test_one_val_shard_is_split_across_ranks_by_sample(real_shards):
    one = [str(sorted(real_shards.glob("shard-*.tar"))[0])]
    every = [s.meta["key"] for s in stream(one, None, shuffle_buffer=0)]
    parts = [[s.meta["key"] for s in stream(one, None, shuffle_buffer=0, rank=r, world_size=2)]
             for r in (0, 1)]
    assert len(every) >= 2 and all(parts)
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == sorted(every)


def test_deepspeed_strategy_without_gpu_is_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the DeepSpeed strategy can run here")
    result = pretrain(f"run_dir={tmp_path / 'run'}", "trainer=deepspeed_stage_2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "trainer=deepspeed_stage_2 needs CUDA" in lines[0]
    assert "trainer=cpu or trainer=ddp" in lines[0]


@pytest.mark.slow  # a training run in a subprocess
def test_export_round_trip(tmp_path):
    run = tmp_path / "run"
    result = pretrain(f"run_dir={run}", f"data.root={tmp_path / 'demo'}", "trainer.max_steps=3", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "exported"
    export = subprocess.run([sys.executable, "-m", "neurofm.cli", "export",
                             f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"out={out}"],
                            env=ENV, capture_output=True, text=True, timeout=1200)
    assert export.returncode == 0, export.stderr
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    from_ckpt = load_pretrained(run / "checkpoints" / "last.ckpt")
    from_dir = load_pretrained(out)
    config, state = read_checkpoint(out)
    assert config["dim"] == 64 and set(state) == set(from_ckpt.state_dict())
    segments = [s for _, s in zip(range(4), stream(tmp_path / "demo" / "shards", "train",
                                                   shuffle_buffer=0, modality="eeg"), strict=False)]
    batch = collate_segments(segments)
    a = encode(from_ckpt, batch)[1]
    b = encode(from_dir, batch)[1]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pickled_checkpoint_is_refused(tmp_path):
    from neurofm.errors import CheckpointError

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"model": object()}}, path)
    with pytest.raises(CheckpointError, match="evil.ckpt: cannot read checkpoint safely"):
        load_pretrained(path)


def test_two_nodes_on_loopback_read_disjoint_shards(tmp_path, real_shards):

    port = free_port()
    run = tmp_path / "two_nodes"
    common = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}",
              "-m", "neurofm.cli", "pretrain", f"run_dir={run}", "data=shards",
              f"data.shards={real_shards}", "data.resampled=false", "data.num_workers=0",
              "data.batch_size=2", "data.shuffle_buffer=0", "trainer=ddp", "trainer.accelerator=cpu",
              "trainer.devices=1", "trainer.num_nodes=2", "trainer.precision=32-true",
              "trainer.max_steps=3", "log_sample_keys=true", *FAST]
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", f"--node_rank={r}", *common],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    keys = [set((run / f"keys-rank{r}.txt").read_text().split()) for r in (0, 1)]
    assert all(len(k) == 6 for k in keys)  # 3 steps x 2 segments on each node
    assert not keys[0] & keys[1]
    shard_of = {}
    for shard in sorted(real_shards.glob("shard-*.tar")):
        for seg in stream([str(shard)], None, shuffle_buffer=0):
            shard_of[seg.meta["key"]] = shard.name
    assert not {shard_of[k] for k in keys[0]} & {shard_of[k] for k in keys[1]}
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_cpu_then_consolidate_to_safetensors(tmp_path, real_shards, stage):
    pytest.importorskip("deepspeed")

    from neurofm.models.io import export_checkpoint

    port = free_port()
    out = tmp_path / f"zero{stage}"
    helper = Path(__file__).parent / "helpers" / "deepspeed_zero.py"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             f"--master_port={port}", str(helper), str(stage), str(real_shards), str(out)],
                            env={**ENV, "DS_ACCELERATOR": "cpu"}, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    losses = [float(x) for x in result.stdout.split("losses")[1].split()]
    assert len(losses) == 4 and all(np.isfinite(losses))
    exported = export_checkpoint(out, tmp_path / "exported")
    model = load_pretrained(exported)
    torch.manual_seed(0)  # the helper's seed: the same initial weights
    init = encoder_state(MaskedAutoencoder(ModelConfig()).state_dict())  # an export: the encoder
    assert set(model.state_dict()) == set(init)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    # training moved the weights away from the initialisation
    assert any(not torch.equal(init[k], v) for k, v in model.state_dict().items())


def test_deepspeed_consolidation_never_runs_pickled_code(tmp_path, real_shards):
    pytest.importorskip("deepspeed")
    import shutil

    from neurofm.errors import CheckpointError

    port = free_port()
    out = tmp_path / "zero2"
    helper = Path(__file__).parent / "helpers" / "deepspeed_zero.py"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                             f"--master_port={port}", str(helper), "2", str(real_shards), str(out)],
                            env={**ENV, "DS_ACCELERATOR": "cpu"}, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil"
    shutil.copytree(out, evil)
    optim = next((evil / "step4").glob("*optim_states.pt"))
    state = torch.load(optim, weights_only=False)
    state["payload"] = Payload()
    torch.save(state, optim)
    with pytest.raises(CheckpointError, match=r"holds a pickled object \(posix.system\), which neurofm does not unpickle"):
        load_pretrained(evil)
    cli = subprocess.run([sys.executable, "-m", "neurofm.cli", "export", f"ckpt={evil}", f"out={tmp_path / 'x'}"],
                         env=ENV, capture_output=True, text=True, timeout=1200)
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert not marker.exists()
    assert load_pretrained(out) is not None  # the untouched checkpoint still consolidates
    # torch itself was never patched: only DeepSpeed's reader saw a weights-only load
    from deepspeed.utils import zero_to_fp32

    assert torch.load is torch.serialization.load and zero_to_fp32.torch is torch


def test_library_calls_leave_the_process_as_they_found_it(real_shards):
    """Pretraining in a notebook: the warning filters and Lightning's log levels are restored,
    and only the loader workers the run started are ended; a process the user started before
    (a daemon, as DataLoader workers are) keeps running."""
    import logging
    import multiprocessing
    import warnings

    from neurofm.models.config import ModelConfig
    from neurofm.pretrain.in_memory import pretrain_on_batches
    from neurofm.pretrain.train import _end_loader_workers

    filters, level = list(warnings.filters), logging.getLogger("lightning.pytorch").level
    segments = list(stream(real_shards, "train", shuffle_buffer=0))
    pretrain_on_batches(ModelConfig.named("tiny"), iter([collate_segments(segments[:4])] * 2), 2)
    assert warnings.filters == filters and logging.getLogger("lightning.pytorch").level == level
    users = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,), daemon=True)
    users.start()
    before = {child.pid for child in multiprocessing.active_children()}
    workers = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,), daemon=True)
    workers.start()
    try:
        _end_loader_workers(before)
        workers.join(timeout=10)
        assert not workers.is_alive() and users.is_alive()
    finally:
        users.kill()
        users.join(timeout=10)


def test_torn_last_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, real_shards, caplog):
    from neurofm.pretrain.resume import resume_path

    run = tmp_path / "run"
    result = pretrain(f"run_dir={run}", "data=shards", f"data.shards={real_shards}", "data.num_workers=0",
                      "data.batch_size=4", "trainer.max_steps=4", "model=tiny", "checkpoint.every_n_steps=2",
                      "val_every_n_steps=1000000", "optim.warmup_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step-2.ckpt", "step-4.ckpt"]
    (folder / "last.ckpt").write_bytes(b"")  # a kill while it was written
    (folder / "step-4.ckpt").write_bytes((folder / "step-4.ckpt").read_bytes()[:1000])  # a full disk
    with caplog.at_level("WARNING", logger="neurofm"):
        path, step = resume_path("auto", run)
    assert Path(path).name == "step-2.ckpt" and step == 2
    assert "last.ckpt is unreadable" in caplog.text
    resumed = pretrain(f"run_dir={run}", "data=shards", f"data.shards={real_shards}", "data.num_workers=0",
                       "data.batch_size=4", "trainer.max_steps=5", "model=tiny", "checkpoint.every_n_steps=2",
                       "val_every_n_steps=1000000", "optim.warmup_steps=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 5
    assert not list(folder.glob(".*tmp*"))  # checkpoints are written as temp file + rename


def test_missing_train_shards_stop_at_once(tmp_path, real_shards):
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(real_shards, copy)
    for shard in copy.glob("shard-*.tar"):
        shard.unlink()
    result = pretrain(f"run_dir={tmp_path / 'run'}", "data=shards", f"data.shards={copy}", "model=tiny",
                      timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "none of the" in lines[0] and "train shards in the manifest is on disk" in lines[0]


def test_non_finite_samples_and_weights_are_refused(tmp_path, real_shards):
    from neurofm.datasets.codec import decode_sample, encode_segment
    from neurofm.errors import CheckpointError, ShardError
    from neurofm.models.io import save_pretrained

    seg = next(iter(stream(real_shards, None, shuffle_buffer=0)))
    files = encode_segment(seg, "float32")
    sample = {"__key__": "k", "__url__": "shard-x.tar", **files}
    assert decode_sample(sample).n_sensors == seg.n_sensors
    with pytest.raises(ShardError, match="shard-x.tar: sample 'k' has 1 non-finite values"):
        decode_sample(sample | {"signal.npy": _npy_with_inf(files["signal.npy"])})  # a flipped bit
    model = MaskedAutoencoder(ModelConfig())
    with torch.no_grad():
        model.encoder.norm.weight[0] = float("nan")
    save_pretrained(model, tmp_path / "nan")
    with pytest.raises(CheckpointError, match="weight tensors hold NaN/inf"):
        load_pretrained(tmp_path / "nan")


def _npy_with_inf(data: bytes) -> bytes:
    from neurofm.datasets.codec import _npy, load_npy

    array = load_npy(data)
    array[0, 3] = np.inf
    return _npy(array)


def test_resuming_with_another_model_is_one_line(tmp_path, real_shards):
    run = tmp_path / "run"
    args = ["data=shards", f"data.shards={real_shards}", "data.num_workers=0", "data.batch_size=4",
            "val_every_n_steps=1000000", "optim.warmup_steps=2"]
    assert pretrain(f"run_dir={run}", *args, "trainer.max_steps=2").returncode == 0
    result = pretrain(f"run_dir={run}", *args, "trainer.max_steps=4", "model=small")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "was trained with another model (" in lines[0] and "model.dim=64 not 512" in lines[0]


def test_weight_decay_falls_on_matrices_only():
    from neurofm.pretrain.module import make_optimizer

    model = MaskedAutoencoder(ModelConfig(interpolation_prior=True))
    decay, no_decay = make_optimizer(model, lr=1e-3, weight_decay=0.05).param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    named = dict(model.named_parameters())
    decayed = {n for n, p in named.items() if any(p is q for q in decay["params"])}
    # both sensor-kind tables (encoder and decoder side) are matrices and are decayed alike
    assert {"sensor_embed.kind.weight", "decoder_sensor.kind.weight"} <= decayed
    assert decayed == {n for n, p in named.items() if p.ndim >= 2}
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)


def test_pretraining_on_in_memory_batches_is_the_recipe_in_a_plain_loop(real_shards):
    """``pretrain_on_batches`` (``neurofm pretrain``'s module in a Lightning Trainer) gives,
    step for step, the losses of a plain loop over the module's own optimizer, schedule and
    gradient clipping from the same seed: the same recipe, and the same masks."""
    from neurofm.models.config import ModelConfig
    from neurofm.pretrain.config import OptimConfig, TrainerConfig
    from neurofm.pretrain.in_memory import pretrain_on_batches
    from neurofm.pretrain.module import PretrainModule

    segments = list(stream(real_shards, "train", shuffle_buffer=0))

    def batches():
        rng = np.random.default_rng(0)
        while True:
            yield collate_segments([segments[i] for i in rng.choice(len(segments), 4, replace=False)])

    config, optim, steps = ModelConfig.named("tiny"), OptimConfig(lr=3e-3, warmup_steps=2), 6
    torch.manual_seed(0)
    seen = []
    trained = pretrain_on_batches(config, batches(), steps, optim, model=MaskedAutoencoder(config),
                                  on_step=lambda step, loss, model: seen.append((step, loss)))
    torch.manual_seed(0)
    model = MaskedAutoencoder(config)
    module = PretrainModule(config, optim, max_steps=steps)  # (its own model draws from the RNG too)
    module.model = model
    optimizer, schedule = module.optimizer_and_schedule()
    source, expected = batches(), []
    for step in range(1, steps + 1):
        loss = module.model(next(source))["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), TrainerConfig().gradient_clip_val)
        optimizer.step()
        schedule.step()
        expected.append((step, float(loss)))
    assert seen == expected
    # the weights after the last update: equal up to float rounding (7e-7 on one thread, where
    # Adam divides near-zero gradients summed in another order); the step losses above are the
    # exact check of the recipe
    for a, b in zip(trained.parameters(), module.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # numpy batches (what batched_stream yields for loader workers) train the same
    from neurofm.batch import Batch

    def as_numpy(source):
        for batch in source:
            yield Batch(**{k: v.numpy() if torch.is_tensor(v) else v for k, v in vars(batch).items()})

    torch.manual_seed(0)
    again = []
    pretrain_on_batches(config, as_numpy(batches()), 2, optim, model=MaskedAutoencoder(config),
                        on_step=lambda step, loss, model: again.append((step, loss)))
    # the first loss comes before any update: the same masks and weights, the same number
    assert again[0] == expected[0] and [step for step, _ in again] == [1, 2]
    assert np.isfinite(again[1][1])
