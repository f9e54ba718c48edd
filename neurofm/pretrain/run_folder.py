"""What a pretraining run folder holds, read without Lightning: ``<run_dir>/metrics.csv`` beside
``<run_dir>/checkpoints/*.ckpt``."""

from __future__ import annotations

import os
from pathlib import Path


def validation_r2(metrics_csv: str | os.PathLike) -> dict[str, float] | None:
    """Masked-token R² of a run's validations (first, last, best), from its ``metrics.csv``."""
    import pandas as pd

    metrics_csv = Path(metrics_csv)
    if not metrics_csv.exists():
        return None
    try:
        r2 = pd.read_csv(metrics_csv)["val/r2"].dropna()
    except (KeyError, ValueError, OSError):
        return None
    if r2.empty:
        return None
    return {"first": float(r2.iloc[0]), "last": float(r2.iloc[-1]), "best": float(r2.max())}


def validation_of(ckpt: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{"validation": ...}`` for a checkpoint file inside a run folder
    (``<run_dir>/checkpoints/last.ckpt``), else ``{}``."""
    path = Path(ckpt)
    found = validation_r2(path.resolve().parent.parent / "metrics.csv") if path.is_file() else None
    return {"validation": found} if found is not None else {}
