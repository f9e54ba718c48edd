"""Where a pretraining run resumes: ``resume=auto`` finds the newest intact checkpoint of a run
folder, and a checkpoint trained with another model config is refused before Lightning loads it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from neurofm.errors import CheckpointError, ConfigError
from neurofm.models.config import prior_on

logger = logging.getLogger("neurofm.pretrain")

LAST = "last.ckpt"


def resume_path(resume: str | None, run_dir: Path, model: dict[str, Any] | None = None
                 ) -> tuple[str | None, int]:
    """(checkpoint to resume from, its step). ``auto``: ``last.ckpt``, or, when that is torn
    (a kill while it was written, a full disk), the newest intact ``step-*.ckpt``."""
    if resume in (None, "", "none", "null"):
        return None, 0
    if resume != "auto":
        if not Path(resume).exists():
            raise CheckpointError("checkpoint to resume from not found", resume)
        return str(resume), checkpoint_step(resume, model)
    folder = run_dir / "checkpoints"
    candidates = [folder / LAST, *sorted(folder.glob("step-*.ckpt"), key=_step_number, reverse=True)]
    candidates = [c for c in candidates if c.exists()]
    for path in candidates:
        try:
            step = checkpoint_step(str(path), model)
        except CheckpointError as err:
            logger.warning("%s; trying an older checkpoint", err)
            continue
        if path.name != LAST and (folder / LAST).exists():
            logger.warning("resuming from %s (step %d): %s is unreadable", path, step, folder / LAST)
        return str(path), step
    if candidates:
        raise CheckpointError(f"no intact checkpoint among {len(candidates)} in this folder; pass "
                              "resume=null to start over", folder)
    return None, 0


def _step_number(path: Path) -> int:
    digits = "".join(ch for ch in path.stem.split("-")[-1] if ch.isdigit())
    return int(digits) if digits else -1


def checkpoint_step(path: str, model: dict[str, Any] | None = None) -> int:
    """The step a Lightning checkpoint was saved at; with ``model``, also an error when the
    checkpoint was trained with another model config (resuming ``tiny`` as ``small``)."""
    if Path(path).is_dir():  # DeepSpeed: Lightning restores the step itself
        return 0
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        step = int(ckpt["global_step"])
        saved = dict(ckpt.get("hyper_parameters", {}).get("model", {}))
    except Exception as err:
        first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint ({first})", path) from err
    if model is not None and saved:
        saved["interpolation_prior"], model = prior_on(saved), {**model, "interpolation_prior": prior_on(model)}
        differ = sorted(k for k in SHAPE_KEYS if k in saved and saved[k] != model.get(k))
        if differ:
            raise ConfigError(f"{path} was trained with another model ("
                              + ", ".join(f"model.{k}={saved[k]} not {model.get(k)}" for k in differ)
                              + "): pass the same model=..., or a new run_dir (or resume=null)")
    return step


# model config keys that change the shapes of the weights
SHAPE_KEYS = ("dim", "depth", "heads", "mlp_ratio", "decoder_dim", "decoder_depth", "decoder_heads",
              "patch_len", "stem", "spatial_latents", "interpolation_prior", "target")
