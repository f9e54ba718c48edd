"""Helpers shared by the benchmark scripts: where the real data is, and timing."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.helpers: what tests and benchmarks share
    sys.path.append(str(ROOT))


def data_dir() -> Path:
    env = os.environ.get("NEUROFM_TEST_DATA")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (candidate / "MANIFEST.md").exists():
            return candidate
    sys.exit("benchmark needs the real data: set NEUROFM_TEST_DATA or put it in ../shared/data")


def best_of(fn: Callable[[], object], repeats: int = 3) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process) over ``repeats`` runs."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def eeglab_tutorial():
    """The real EEGLAB tutorial recording (preloaded), channels renamed to its labels."""
    from tests.helpers.data import read_eeglab_tutorial

    return read_eeglab_tutorial(data_dir() / "meeg")


def pretrain_steps(config, batches, steps: int, lr: float, on_step: Callable | None = None,
                   model=None, warmup_steps: int | None = None):
    """``neurofm pretrain``'s recipe in a plain loop: :class:`PretrainModule`'s model, optimizer
    (AdamW decaying matrices only) and warmup + cosine schedule, gradient norm clipped at 1.0
    (``trainer.gradient_clip_val``). ``model``: train this one instead of a new one of
    ``config``. ``warmup_steps``: the schedule's warmup (default: ``OptimConfig``'s).
    ``on_step(step, loss, model)`` after each step. Returns the model."""
    import torch

    from neurofm.configs.schema import OptimConfig, TrainerConfig
    from neurofm.pretrain.module import PretrainModule

    optim = OptimConfig(lr=lr) if warmup_steps is None else OptimConfig(lr=lr, warmup_steps=warmup_steps)
    module = PretrainModule(config, optim, max_steps=steps)
    if model is not None:
        module.model = model
    optimizer, schedule = module.optimizer_and_schedule()
    clip = TrainerConfig().gradient_clip_val
    model = module.model.train()
    for step in range(1, steps + 1):
        batch = next(batches)
        batch = batch.to_torch() if hasattr(batch, "to_torch") else batch
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, float(loss), model)
    return model
