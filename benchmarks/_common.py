"""Helpers shared by the benchmark scripts: where the real data is, and timing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ABIDE-I repetition time per site, s (the PCP tables do not carry it)
ABIDE_TR_S = {"Caltech": 2.0, "KKI": 2.5, "Leuven_1": 1.66, "Leuven_2": 1.66, "Olin": 1.5, "Pitt": 1.5,
              "SDSU": 2.0, "Trinity": 2.0}
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


# --------------------------------------------------------------- cohort benchmarks (CLI runs)

def neurofm_cli(*args: str, log: Path) -> None:
    """Run ``neurofm <args>`` as a user would, output appended to ``log``; print the command's
    mode/readout/protocol and time; stop with the log's path if it fails."""
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ neurofm {' '.join(args)}\n")
        out.flush()
        result = subprocess.run([sys.executable, "-m", "neurofm.cli", *args], stdout=out, stderr=out)
    shown = " ".join(a for a in args[1:] if a.startswith(("task.mode", "task.readout", "task.protocol")))
    print(f"  neurofm {args[0]} {shown} ({time.perf_counter() - start:.0f} s)", flush=True)
    if result.returncode != 0:
        sys.exit(f"neurofm {args[0]} failed (exit {result.returncode}); see {log}")


def add_pretrain_arguments(parser, *, steps: int, batch: int, window: float, per: str) -> None:
    """The pretraining options both cohort benchmarks take (``per``: what one pretraining is for)."""
    parser.add_argument("--steps", type=int, default=steps, help=f"pretraining steps per {per}")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--window", type=float, default=window, help="pretraining window length, s")
    parser.add_argument("--mask", default="channels", help="random | channels | time | mixed")
    parser.add_argument("--mask-ratio", type=float, default=0.5)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more `neurofm pretrain` overrides, e.g. model.interpolation_prior=true")


def pretrain_and_export(shards: Path, run: Path, args, log: Path, shuffle_buffer: int) -> Path:
    """``neurofm pretrain`` ``tiny`` on ``shards`` with ``args``' options (warmup 5 %, one
    checkpoint and one validation at the end), then ``neurofm export``; the export folder."""
    neurofm_cli("pretrain", "data=shards", f"data.shards={shards}", "model=tiny",
                f"trainer.max_steps={args.steps}", f"data.batch_size={args.batch}", "data.num_workers=1",
                f"data.shuffle_buffer={shuffle_buffer}", f"model.mask_strategy={args.mask}",
                f"model.mask_ratio={args.mask_ratio}", f"optim.lr={args.lr}",
                f"optim.warmup_steps={max(1, args.steps // 20)}", f"checkpoint.every_n_steps={args.steps}",
                f"val_every_n_steps={args.steps}", "val_batches=5", f"run_dir={run}", "resume=null",
                *args.set, log=log)
    neurofm_cli("export", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"out={run / 'export'}", log=log)
    return run / "export"


def binary_metrics(rows, positive: str, group: str) -> tuple[dict, dict]:
    """Metrics of ``predictions.csv`` rows (columns ``label``, ``prob_<class>`` for two classes):
    pooled with 95 % bootstrap CIs, and the point values per ``group`` column value."""
    import numpy as np

    from neurofm.finetune.metrics import classification_metrics

    columns = sorted(c for c in rows.columns if c.startswith("prob_"))

    def score(part, n_boot):
        y = (part["label"].astype(str) == positive).to_numpy().astype(int)
        return classification_metrics(y, part[columns].to_numpy(np.float64), n_boot=n_boot)

    per_group = {key: {"n": len(part), **{k: v["value"] for k, v in score(part, 1).items()}}
                 for key, part in rows.groupby(group)}
    return score(rows, 1000), per_group


def method_panel(ax, methods: dict, labels: dict, groups: str, fontsize: float | None = None) -> None:
    """One panel: pooled balanced accuracy with its CI per method, the ``groups`` (sites,
    subjects) as dots beside it, chance as a dashed line."""
    import numpy as np

    for i, result in enumerate(methods.values()):
        ba = result["pooled"]["balanced_accuracy"]
        ax.errorbar(ba["value"], i, xerr=[[ba["value"] - ba["ci_low"]], [ba["ci_high"] - ba["value"]]],
                    fmt="o", color="k", capsize=3)
        values = [v["balanced_accuracy"] for v in result[groups].values()]
        ax.scatter(values, np.full(len(values), i) + 0.2, s=10, color="tab:blue", alpha=0.6)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(methods)), [labels.get(m, m) for m in methods], fontsize=fontsize)
    ax.invert_yaxis()
