"""The training mode (one enum) and the one training loop of every finetune head: the
classifier of ``task=decoding|disorder`` and the encoding model of ``task=encoding``."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from enum import Enum

import numpy as np
import torch
from torch import nn

from neurofm.models.mae import MaskedAutoencoder, ModelConfig
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


def network_for(mode: Mode, backbone: MaskedAutoencoder | None, config: ModelConfig | None) -> MaskedAutoencoder:
    """The network a mode starts from: a copy of the pretrained ``backbone`` (never trained in
    place), or for ``scratch`` (or no backbone) a new one of ``config`` (default: the
    backbone's architecture)."""
    if mode is Mode.SCRATCH or backbone is None:
        return MaskedAutoencoder(config or (backbone.config if backbone is not None else ModelConfig()))
    return copy.deepcopy(backbone)


def train_epochs(
    model: nn.Module,
    loss_of: Callable[[np.ndarray], torch.Tensor],
    batches: Callable[[np.random.Generator], Iterable[np.ndarray]],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    seed: int,
    validation_error: Callable[[], float] | None = None,
) -> list[float]:
    """The loop: each epoch, each batch of window indices that ``batches(rng)`` gives: loss,
    backward, step. With ``validation_error``, it is measured after every epoch and the
    weights of the best epoch are kept (early stopping by selection). Returns the training
    losses; ``model`` ends in eval mode."""
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    best: tuple[float, dict | None] = (float("inf"), None)
    for _ in range(epochs):
        model.train()
        for idx in batches(rng):
            loss = loss_of(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        if validation_error is not None:
            model.eval()
            with torch.no_grad():
                error = validation_error()
            if error < best[0]:
                best = (error, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    return losses
