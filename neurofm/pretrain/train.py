"""Pretraining: a :class:`PretrainConfig` -> data, model, Lightning Trainer -> checkpoints and metrics
(``neurofm pretrain`` is :func:`pretrain`).

The strategy (``trainer=ddp``, ``deepspeed_stage_2`` ...) is only a config switch; multi-node
comes from the environment Lightning reads (SLURM, torchrun). Checkpoints are written every
``checkpoint.every_n_steps`` and on SIGTERM (SLURM preemption; SIGUSR1 triggers Lightning's
SLURM requeue); ``resume=auto`` continues from ``<run_dir>/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import time
import warnings
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from neurofm.console import say
from neurofm.datasets.manifest import is_remote, load_manifest, local
from neurofm.datasets.options import PrepareOptions
from neurofm.datasets.shards import write_shards
from neurofm.errors import CheckpointError, ConfigError, ShardError
from neurofm.io import atomic_write
from neurofm.models.contract import input_contract
from neurofm.pretrain.config import PretrainConfig, TrainerConfig
from neurofm.pretrain.data import ShardDataModule
from neurofm.pretrain.demo import build_demo_corpus
from neurofm.pretrain.module import PretrainModule
from neurofm.pretrain.reporting import ResumableCSVLogger, StepProgress, Throughput, plot_loss_curve
from neurofm.pretrain.resume import LAST, resume_path
from neurofm.pretrain.run_folder import validation_r2

logger = logging.getLogger("neurofm.pretrain")


class CheckpointOnSigterm(Callback):
    """Stop at a step every rank agrees on when the run is sent SIGTERM (e.g. SLURM
    preemption), so that ``last.ckpt`` is written by all ranks together.

    Lightning's own SIGTERM handler runs a collective inside the signal handler, and each rank
    then stops at whatever step it was in when its signal came: on several ranks a save can
    wait forever on a rank that already left. Here the handler only notes the signal; after
    every training step the ranks take the maximum of their notes (one all-reduce of one
    number, every step, on every rank) and, when any was signalled, all stop after that same
    step. :func:`pretrain` then saves the checkpoint on every rank and returns 143.

    SLURM signals the whole process group, so the loader workers may die first and the main
    process sees a dead DataLoader before the next step: a SIGTERM seen by this handler counts
    as the reason for any exception that follows (then each rank saves on its own).
    """

    def __init__(self, path: Path):
        self.path = path
        self.received = False  # this process was sent SIGTERM
        self.stopping = False  # the ranks agreed to stop after the current step

    def watch(self, launcher=None) -> None:
        """Note SIGTERM in this process (and forward it once to the processes ``launcher``
        started, as Lightning's handler does). :meth:`on_train_start` calls it again, since
        Lightning registers its own handler when fit begins."""

        def note(signum, frame) -> None:
            if not self.received and launcher is not None:
                launcher.kill(signum)
            self.received = True
        signal.signal(signal.SIGTERM, note)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.watch(trainer.strategy.launcher)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        signalled = torch.tensor([1.0 if self.received else 0.0])
        if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
            signalled = signalled.to(trainer.strategy.root_device)
            torch.distributed.all_reduce(signalled, op=torch.distributed.ReduceOp.MAX)
        if signalled.item() > 0:
            self.stopping = True
            trainer.should_stop = True
            trainer.limit_val_batches = 0  # no validation on the way out: the grace time is short

    def on_exception(self, trainer: pl.Trainer, module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) or self.received:
            self.received = True
            trainer.save_checkpoint(self.path)
            logger.warning("SIGTERM at step %d: checkpoint saved to %s", trainer.global_step, self.path)


class SampleKeyLog(Callback):
    """Append the sample keys each rank trains on to ``<dir>/keys-rank<r>.txt`` (for checks)."""

    def __init__(self, directory: Path):
        self.directory = directory

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        with open(self.directory / f"keys-rank{trainer.global_rank}.txt", "a") as fh:
            fh.writelines(f"{m.get('key')}\n" for m in batch.meta)


# how the demo corpus is prepared: 4 s EEG and 60 s fMRI windows, two thirds of the
# (synthetic) subjects for training and a third for validation
DEMO_PREPARE = PrepareOptions(window_s=4.0, fmri_window_s=60.0, roi_tr_s=2.0, shard_size_mb=8,
                              split_fractions=(0.66, 0.34, 0.0))


def prepare_demo(root: Path, seed: int) -> Path:
    """Build the synthetic demo corpus and its shards (once)."""

    shards = root / "shards"
    if (shards / "manifest.json").exists():
        return shards
    corpus = build_demo_corpus(root / "corpus", seed=seed)
    options = replace(DEMO_PREPARE, roi_coords=str(corpus / "fmri" / "power264_coords.csv"), seed=seed)
    write_shards([corpus / "eeg", corpus / "fmri"], shards, options)
    return shards


def _trainer_kwargs(trainer: TrainerConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`lightning.pytorch.Trainer` (a ``_target_`` strategy built)."""

    kwargs = {f.name: getattr(trainer, f.name) for f in fields(trainer) if f.name != "extra"}
    kwargs.update(trainer.extra)
    if isinstance(kwargs.get("strategy"), dict):
        kwargs["strategy"] = instantiate(kwargs["strategy"])
    return kwargs


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their target as a temp file, fsynced, then renamed: a kill
    or a full disk leaves the previous file whole, never a torn one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        # what it will take: the size of the checkpoints already written beside it
        sizes = [p.stat().st_size for p in path.parent.glob("*.ckpt")] if path.parent.is_dir() else []
        try:
            with atomic_write(path, "checkpoint", expected_bytes=max(sizes, default=None)) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as err:  # not a full disk: permissions, a vanished folder, I/O errors
            raise CheckpointError(f"could not write the checkpoint ({err.strerror or err}); the earlier "
                                  "checkpoints are intact: fix this and resume", path) from err


def _check_shards(shards, manifest: dict) -> None:
    """Shards the manifest names but the disk lacks: an error when a whole split is gone
    (training would wait forever), a warning otherwise. Remote shards are checked as they are
    read (a missing one is a counted read failure)."""
    if is_remote(shards):
        return
    root = Path(local(shards))
    for split in ("train", "val"):
        named = [s["name"] for s in manifest["shards"] if s["split"] == split]
        missing = [n for n in named if not (root / n).is_file()]
        if named and len(missing) == len(named):
            raise ShardError(f"none of the {len(named)} {split} shards in the manifest is on disk "
                             f"({missing[0]} ...): copy them back or run neurofm prepare again", root)
        if missing:
            logger.warning("%d of %d %s shards are missing (%s ...); training on the rest",
                           len(missing), len(named), split, missing[0])


def _check_strategy(trainer: TrainerConfig, chosen: str) -> None:
    strategy = trainer.strategy
    target = strategy.get("_target_", "") if isinstance(strategy, dict) else str(strategy)
    if "deepspeed" in target.lower() and not torch.cuda.is_available():
        raise ConfigError(f"trainer={chosen} needs CUDA GPUs (Lightning's DeepSpeed strategy runs "
                          "only on GPU) and none is visible; on CPU use trainer=cpu or trainer=ddp")


LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")
LIGHTNING_NOTICES = (".*isinstance.treespec, LeafSpec.*", ".*exists and is not empty.*",
                     ".*does not have many workers.*", ".*Total length of `.*` across ranks is zero.*",
                     ".*val_dataloader.*")


@contextlib.contextmanager
def quiet_lightning():
    """Within this block, Lightning's start-up notices (GPU/TPU available, tips, FLOP
    summaries, expected warnings) are not shown; the loggers' levels and the warning filters
    are as before after it."""
    level = logging.DEBUG if logger.getEffectiveLevel() <= logging.DEBUG else logging.WARNING
    before = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    with warnings.catch_warnings():
        for message in LIGHTNING_NOTICES:
            warnings.filterwarnings("ignore", message=message)
        try:
            for name in LIGHTNING_LOGGERS:
                logging.getLogger(name).setLevel(level)
            yield
        finally:
            for name, old in before.items():
                logging.getLogger(name).setLevel(old)


def pretrain(conf: PretrainConfig, model_name: str = "", trainer_name: str = "?") -> int:
    """Pretrain as ``conf`` says; ``model_name`` and ``trainer_name`` are the config groups
    chosen on the command line (for the log and the strategy checks). Returns 0 when trained to
    ``trainer.max_steps``, 143 when stopped by SIGTERM (a checkpoint of that step written)."""
    with quiet_lightning():
        return _pretrain(conf, model_name, trainer_name)


def _pretrain(conf: PretrainConfig, model_name: str, trainer_name: str) -> int:
    _check_strategy(conf.trainer, trainer_name)
    if conf.model.target == "latent" and "stage_3" in str(conf.trainer.strategy):
        raise ConfigError("model.target=latent moves a teacher copy of the weights after each step, which "
                          "ZeRO-3 partitions away: use trainer=deepspeed_stage_2 or trainer=ddp")
    trainer_cfg = _trainer_kwargs(conf.trainer)
    run_dir = Path(conf.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(conf.seed, workers=True, verbose=False)
    data = conf.data
    if data.source == "shards" and not data.shards:
        raise ConfigError("data.source=shards needs data.shards=<directory written by neurofm prepare>")
    if data.source == "demo" and data.shards:
        raise ConfigError(f"data.shards={data.shards} is set, but the data group is the offline demo "
                          "corpus (data=demo, the default), which would train on synthetic data and "
                          "its recipe: add data=shards to train on these shards")
    shards = prepare_demo(Path(data.root), conf.seed) if data.source == "demo" else data.shards
    manifest = load_manifest(shards)
    splits = {s["split"] for s in manifest["shards"]}

    _check_shards(shards, manifest)
    resume, start_step = resume_path(conf.resume, run_dir, asdict(conf.model))
    # the same seeded stream, past the batches already trained on: the exact data position
    consumed = start_step * conf.trainer.accumulate_grad_batches
    resampled = data.resampled
    if start_step >= conf.trainer.max_steps > 0:
        consumed = 0  # nothing left to train: no stream to replay
        logger.info("%s is already at step %d = trainer.max_steps; raise trainer.max_steps to train "
                    "further, or pass a new run_dir", resume, start_step)
    elif consumed and resampled:
        logger.info("resuming at step %d: replaying the stream past the %d batches per rank already "
                    "trained on", start_step, consumed)
    elif consumed:
        logger.warning("resuming a finite (data.resampled=false) stream: the epoch starts again")
    datamodule = ShardDataModule(
        shards, batch_size=data.batch_size, num_workers=data.num_workers,
        shuffle_buffer=data.shuffle_buffer, resampled=resampled,
        modality_weights=data.modality_weights, max_tokens=data.max_tokens,
        patch_s=conf.model.patch_s, seed=conf.seed, skip_batches=consumed)
    max_steps = conf.trainer.max_steps
    module = PretrainModule(conf.model, conf.optim, max_steps=max_steps,
                            input_contract=input_contract(manifest, conf.model.patch_s))
    if conf.model.compile:
        module.model = torch.compile(module.model)

    checkpoints = run_dir / "checkpoints"
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=checkpoints, filename="step-{step}", every_n_train_steps=conf.checkpoint.every_n_steps,
                        save_last=True, save_top_k=-1, auto_insert_metric_name=False),
        on_sigterm := CheckpointOnSigterm(checkpoints / LAST),
        LearningRateMonitor(logging_interval="step"),
        StepProgress(max_steps),
        Throughput(conf.trainer.log_every_n_steps),
    ]
    if conf.log_sample_keys:
        callbacks.append(SampleKeyLog(run_dir))
    loggers = [ResumableCSVLogger(run_dir, resume_step=start_step if resume else None,
                                  flush_logs_every_n_steps=conf.trainer.log_every_n_steps),
               TensorBoardLogger(run_dir, name="tensorboard", version="")]
    has_val = "val" in splits
    trainer = pl.Trainer(
        **trainer_cfg, default_root_dir=run_dir, callbacks=callbacks, logger=loggers,
        limit_val_batches=conf.val_batches if has_val else 0,
        val_check_interval=conf.val_every_n_steps if has_val else None,
        check_val_every_n_epoch=None, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
        plugins=None if "deepspeed" in str(conf.trainer.strategy).lower() else [AtomicCheckpointIO()],
    )
    if trainer.is_global_zero:
        n_params = sum(p.numel() for p in module.model.parameters())
        logger.info("model %s: %.3f M parameters; %s; %d steps%s -> %s", model_name,
                    n_params / 1e6, f"{manifest.get('totals', {}).get('samples', '?')} windows in {shards}", max_steps,
                    f" (resuming at {start_step})" if resume else "", run_dir)
    start = time.perf_counter()
    children = {child.pid for child in multiprocessing.active_children()}  # before any loader's workers
    if has_val and not resume and "deepspeed" not in type(trainer.strategy).__name__.lower():
        # the untrained model's validation at step 0: where the learning curve starts
        trainer.validate(module, datamodule=datamodule, verbose=False)
    on_sigterm.watch()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume,
                    weights_only=None if resume is not None and Path(resume).is_dir() else True)
    except (Exception, SIGTERMException) as err:  # SIGTERMException is a SystemExit
        if not (isinstance(err, SIGTERMException) or on_sigterm.received):
            raise
        logger.warning("stopped by SIGTERM at step %d; resume with resume=auto run_dir=%s",
                       trainer.global_step, run_dir)
        return 143
    finally:
        _end_loader_workers(children)
    trainer.save_checkpoint(checkpoints / LAST)  # the final state, whatever the save interval
    if on_sigterm.stopping:
        logger.warning("SIGTERM: every rank stopped after step %d, checkpoint saved to %s; resume with "
                       "resume=auto run_dir=%s", trainer.global_step, checkpoints / LAST, run_dir)
        return 143
    if trainer.is_global_zero:
        _summary(trainer, run_dir, checkpoints / LAST, time.perf_counter() - start)
    return 0


def _end_loader_workers(before: set[int]) -> None:
    """Loader workers ignore SIGTERM (see ``make_loader``); once training is over the ones this
    run started (daemonic children not alive in ``before``: DataLoader workers) are ended here,
    so the interpreter's exit does not wait on them. No process alive before the run is
    touched."""
    for child in multiprocessing.active_children():
        if child.pid not in before and child.daemon:
            child.kill()
            child.join(timeout=5)


def _summary(trainer: pl.Trainer, run_dir: Path, last: Path, seconds: float) -> None:
    curve = plot_loss_curve(run_dir / "metrics.csv", run_dir / "loss_curve.png")
    r2 = validation_r2(run_dir / "metrics.csv")
    lines = [f"pretrained to step {trainer.global_step} in {seconds:.0f} s"
             + (f"; validation R² of masked tokens {r2['first']:.3f} -> {r2['last']:.3f} (best {r2['best']:.3f})"
                if r2 else ""),
             f"  checkpoint:  {last}",
             f"  metrics:     {run_dir / 'metrics.csv'} (TensorBoard: {run_dir / 'tensorboard'})"]
    if curve:
        lines.append(f"  loss curve:  {curve}")
    export = run_dir / "export"
    lines += ["next:",
              f"  neurofm export ckpt={last} out={export}",
              f"  neurofm embed ckpt={export} input=<recording> out=embeddings.npy",
              f"  neurofm finetune task=decoding ckpt={export} inputs=[<recordings>]"]
    say("\n".join(lines))
