"""The training mode (one enum) and the one training loop of every finetune head: the
classifier of ``task=decoding|disorder`` and the encoding model of ``task=encoding``."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from torch import nn

from neurofm.errors import ConfigError
from neurofm.models.backbone import NeuroFMEncoder
from neurofm.models.config import EncoderConfig, ModelConfig
from neurofm.models.mae import MaskedAutoencoder
from neurofm.options import check_option


class Mode(str, Enum):
    """What trains (see the finetuning guide's table)."""

    LINEAR_PROBE = "linear_probe"  # the head only: the pretrained network is frozen
    FINETUNE = "finetune"          # everything
    LORA = "lora"                  # low-rank adapters on the frozen network, and the head
    SCRATCH = "scratch"            # everything, from random weights of the same architecture

    @classmethod
    def of(cls, mode: str | Mode) -> Mode:
        """``mode`` as a :class:`Mode`; anything else is a one-line ``ConfigError``."""
        return cls(check_option("mode", getattr(mode, "value", mode), [m.value for m in cls]))


def network_for(mode: Mode, backbone: NeuroFMEncoder | None,
                config: ModelConfig | EncoderConfig | None) -> NeuroFMEncoder:
    """The encoder a mode starts from: a copy of the pretrained ``backbone`` (never trained in
    place; a pretraining model gives its encoder), or for ``scratch`` (or no backbone) a new one
    of ``config`` (default: the backbone's architecture), initialised as a pretraining run
    initialises it, so that one seed gives the weights that run started from."""
    if mode is Mode.SCRATCH or backbone is None:
        config = config or (backbone.config if backbone is not None else ModelConfig())
        if not isinstance(config, ModelConfig):  # an encoder's architecture: the default head
            config = ModelConfig.from_encoder(config)
        return MaskedAutoencoder(config).encoder_only()
    if isinstance(backbone, MaskedAutoencoder):
        return backbone.encoder_only()
    return copy.deepcopy(backbone)


@dataclass(frozen=True)
class TrainingRule:
    """One rule for every learned model of a comparison (neurofm's modes and any peer network):
    AdamW at ``lr`` with ``weight_decay``, batches of ``batch_size``, a linear warmup over the
    first ``warmup_epochs`` then a cosine decay to 0 at ``max_epochs``, and early stopping on a
    validation split of training subjects: the weights of the epoch with the lowest validation
    loss are kept, and training stops after ``patience`` epochs without a better one."""

    max_epochs: int = 100
    patience: int = 15
    lr: float = 1.0e-3
    weight_decay: float = 0.05
    batch_size: int = 32
    warmup_epochs: int = 5

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ConfigError(f"a training rule needs max_epochs, patience and batch_size >= 1, got {self}")
        if self.lr <= 0:
            raise ConfigError(f"a training rule needs lr > 0, got {self.lr}")


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Each group's learning rate times a linear warmup over ``warmup_steps``, then a cosine
    decay to 0 at ``total_steps`` (stepped once per optimizer step)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epochs(
    model: nn.Module,
    loss_of: Callable[[np.ndarray], torch.Tensor],
    batches: Callable[[np.random.Generator], Iterable[np.ndarray]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    seed: int,
    validation_error: Callable[[], float] | None = None,
    patience: int | None = None,
    warmup_epochs: int | None = None,
    curve: list[dict] | None = None,
) -> list[float]:
    """The loop: each epoch, each batch of window indices that ``batches(rng)`` gives: loss,
    backward, step. With ``validation_error``, it is measured after every epoch and the
    weights of the best epoch are kept (early stopping by selection); with ``patience`` too,
    training stops after that many epochs without a better one. ``warmup_epochs`` (not None):
    the learning rate warms up over those epochs, then decays on a cosine to 0 at ``epochs``
    (:func:`warmup_cosine`). ``curve``: one dict per epoch is appended (``epoch``,
    ``train_loss``, ``val_loss``, ``steps``). Returns the training losses; ``model`` ends in
    eval mode."""
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    best: tuple[float, dict | None] = (float("inf"), None)
    since_best, schedule = 0, None
    for epoch in range(epochs):
        model.train()
        epoch_batches = list(batches(rng))
        if warmup_epochs is not None and schedule is None:
            per_epoch = len(epoch_batches)
            schedule = warmup_cosine(optimizer, warmup_epochs * per_epoch, epochs * per_epoch)
        start = len(losses)
        for idx in epoch_batches:
            loss = loss_of(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            losses.append(loss.item())
        error = None
        if validation_error is not None:
            model.eval()
            with torch.no_grad():
                error = float(validation_error())
            if error < best[0]:
                best, since_best = (error, {k: v.detach().clone() for k, v in model.state_dict().items()}), 0
            else:
                since_best += 1
        if curve is not None:
            curve.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses[start:])) if losses[start:] else None,
                          "val_loss": error, "steps": len(losses)})
        if patience is not None and since_best >= patience:
            break
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    return losses
