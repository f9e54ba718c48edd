"""What a pretraining run shows and keeps: a step progress bar (or periodic log lines),
metrics that survive a resume, and the loss curve."""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from matplotlib.figure import Figure

from neurofm.console import make_progress, progress_enabled
from neurofm.io import atomic_write

logger = logging.getLogger("neurofm.pretrain")


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it keeps an existing ``metrics.csv``: rows of
    steps before ``resume_step`` stay, later ones (replayed after the resume) are dropped."""

    def __init__(self, log_dir: str, resume_step: int | None):
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self.resume_step is None or not path.is_file():
            _ExperimentWriter._check_log_dir_exists(self)  # a fresh run starts a fresh file
            return
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") and float(r["step"]) < self.resume_step]
        with atomic_write(path, "metrics table") as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys


class ResumableCSVLogger(CSVLogger):
    """``metrics.csv`` in ``save_dir`` that a resumed run (``resume_step``) appends to."""

    def __init__(self, save_dir: str | os.PathLike, resume_step: int | None = None, **kwargs):
        super().__init__(save_dir, name="", version="", **kwargs)
        self._resume_step = resume_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir or ".", exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self._resume_step)
        return self._experiment


def _value(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


class StepProgress(Callback):
    """Progress over ``max_steps`` with the smoothed training loss and the last validation
    R²: a rich bar on a terminal, else a log line at every tenth of the run."""

    def __init__(self, max_steps: int, smoothing: float = 0.95):
        self.max_steps, self.smoothing = max_steps, smoothing
        self.loss: float | None = None
        self.r2: float | None = None
        self.progress = None
        self.task = None
        self.every = max(1, max_steps // 10)

    def _text(self) -> str:
        loss = "" if self.loss is None else f"loss {self.loss:.3f}"
        r2 = "" if self.r2 is None else f"  val R² {self.r2:.3f}"
        return f"pretraining  {loss}{r2}"

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.start = time.perf_counter()
        if progress_enabled():
            self.progress = make_progress()
            self.progress.start()
            self.task = self.progress.add_task(self._text(), total=self.max_steps,
                                               completed=trainer.global_step)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            value = float(loss)
            if math.isfinite(value):
                s = self.smoothing if self.loss is not None else 0.0
                self.loss = s * (self.loss or 0.0) + (1 - s) * value
        step = trainer.global_step
        if self.progress is not None:
            self.progress.update(self.task, completed=step, description=self._text())
        elif step % self.every == 0 or step == self.max_steps:
            logger.info("step %d/%d  %s  (%.0f s)", step, self.max_steps,
                        self._text().removeprefix("pretraining  "), time.perf_counter() - self.start)

    def on_validation_end(self, trainer, module) -> None:
        r2 = _value(trainer.callback_metrics, "val/r2")
        if r2 is not None:
            self.r2 = r2

    def on_train_end(self, trainer, module) -> None:
        self._close()

    def on_exception(self, trainer, module, exception) -> None:
        self._close()

    def _close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class Throughput(Callback):
    """Speed and memory in ``metrics.csv``, every ``every`` steps: ``perf/step_s`` (wall
    seconds per optimizer step since the last row), ``perf/tokens_per_s`` (real tokens, all
    ranks: each rank's count times the world size) and, on CUDA, ``perf/peak_mem_gb`` (this
    rank's peak allocated memory). The token count accumulates on the device, so the only
    synchronisation is one per row."""

    def __init__(self, every: int):
        self.every = max(1, every)
        self.last: float | None = None
        self.last_step = 0
        self.tokens = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        counted = getattr(module, "tokens_seen", None)
        step = trainer.global_step
        if counted is None or step % self.every or step == self.last_step:
            return
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        now = time.perf_counter()
        tokens = float(counted)
        if self.last is not None:  # the first row only starts the clock (warm-up, compilation)
            seconds = now - self.last
            steps = step - self.last_step
            values = {"perf/step_s": seconds / steps,
                      "perf/tokens_per_s": (tokens - self.tokens) * trainer.world_size / seconds}
            if module.device.type == "cuda":
                values["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated(module.device) / 1e9
            module.log_dict(values, rank_zero_only=True)
        self.last, self.last_step, self.tokens = now, step, tokens


def plot_loss_curve(metrics_csv: Path, out: Path, smoothing_steps: int = 50) -> Path | None:
    """Training loss (raw, faint, and smoothed) and validation loss against step, with the
    validation R² of masked reconstruction on a second axis, from ``metrics.csv``."""

    if not metrics_csv.exists():
        return None
    df = pd.read_csv(metrics_csv)
    if "step" not in df or "train/loss" not in df:
        return None
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    train = df[["step", "train/loss"]].dropna().groupby("step").mean().reset_index()
    ax.plot(train["step"], train["train/loss"], color="C0", alpha=0.25, lw=0.8, label="train loss")
    window = max(1, min(smoothing_steps, len(train) // 5))
    smooth = train["train/loss"].rolling(window, min_periods=1, center=True).mean()
    ax.plot(train["step"], smooth, color="C0", lw=2, label=f"train loss (mean of {window} logs)")
    if "val/loss" in df:
        val = df[["step", "val/loss"]].dropna()
        ax.plot(val["step"], val["val/loss"], "o-", color="C1", ms=4, label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("masked reconstruction MSE (scaled units)")
    handles, labels = ax.get_legend_handles_labels()
    if "val/r2" in df:
        r2 = df[["step", "val/r2"]].dropna()
        twin = ax.twinx()
        twin.plot(r2["step"], r2["val/r2"], "s--", color="C2", ms=4, label="val R² (right)")
        twin.axhline(0.0, color="C2", lw=0.6, alpha=0.5)  # R² = 0: predicting the mean
        twin.set_ylim(min(0.0, float(r2["val/r2"].min())) - 0.05, max(1.0, float(r2["val/r2"].max())))
        twin.set_ylabel("val R² of masked tokens", color="C2")
        h, lab = twin.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    ax.set_title("neurofm pretrain: masked reconstruction", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels), frameon=False)
    with atomic_write(out, "figure") as tmp:
        fig.savefig(tmp, dpi=120)
    return out
