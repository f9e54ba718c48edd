"""The pretraining LightningModule: a MaskedAutoencoder, AdamW, warmup + cosine."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import torch

from neurofm.batch import Batch
from neurofm.errors import TrainingError
from neurofm.models.mae import MaskedAutoencoder, ModelConfig
from neurofm.pretrain.config import OptimConfig


class PretrainModule(pl.LightningModule):
    """Masked-autoencoding pretraining. The strategy (DDP, DeepSpeed) is the Trainer's business.

    Parameters
    ----------
    model : ModelConfig | dict
        The architecture (a dict: :class:`ModelConfig` fields, as checkpoints store it).
    optim : OptimConfig | dict | None
        AdamW and the warmup + cosine schedule (:func:`make_optimizer`, :func:`warmup_cosine`);
        default ``OptimConfig()``.
    max_steps : int
        The step the cosine schedule ends at.
    input_contract : dict | None
        What the pretraining corpus looked like (:func:`neurofm.models.contract.input_contract`);
        stored in the checkpoint and carried to the export.
    """

    def __init__(self, model: ModelConfig | dict[str, Any], optim: OptimConfig | dict[str, Any] | None = None,
                 max_steps: int = 1000, input_contract: dict[str, Any] | None = None):
        super().__init__()
        model = model if isinstance(model, ModelConfig) else ModelConfig(**model)
        optim = optim if isinstance(optim, OptimConfig) else OptimConfig(**(optim or {}))
        # plain dicts in the checkpoint: readable with torch.load(weights_only=True)
        self.save_hyperparameters({"model": asdict(model), "optim": asdict(optim), "max_steps": max_steps,
                                   "input_contract": input_contract})
        self.optim, self.max_steps = optim, max_steps
        self.tokens_seen: torch.Tensor | None = None
        self.model = MaskedAutoencoder(model)
        # constant buffers (sinusoid periods): DDP need not broadcast them before every forward,
        # which would also tie validation to equal batch counts on every rank
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            self, [name for name, _ in self.named_buffers()])

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.model(batch)
        if not torch.isfinite(out["loss"]):  # stop before a NaN reaches the weights
            keys = [m.get("key") for m in batch.meta][:4]
            raise TrainingError(f"non-finite loss ({float(out['loss'])}) at step {self.global_step} "
                                f"on samples {keys}; lower optim.lr, check those samples "
                                "(neurofm verify <shards>), and resume from the last checkpoint")
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=len(batch), sync_dist=False)
        # real tokens trained on (hidden + visible), summed on the device: read by Throughput
        real = (out["hidden"].sum() + out["visible_mask"].sum()).detach()
        self.tokens_seen = real if self.tokens_seen is None else self.tokens_seen + real
        return out["loss"]

    def on_before_zero_grad(self, optimizer) -> None:
        # once per optimizer step: move the target=latent teacher towards the student
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile wraps the model
        if model.teacher is not None:
            model.teacher.update(model, model.config.ema_decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingError(f"refusing to save a checkpoint with non-finite weights ({bad[:3]})")

    def on_validation_epoch_start(self) -> None:
        # [sum of batch losses x windows, windows, SSE, SST] over this rank's validation batches
        self._val_sums = torch.zeros(4, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        g = torch.Generator(device=batch.signal.device).manual_seed(batch_idx)  # same masks each time
        out = self.model(batch, generator=g)
        hidden = out["hidden"][..., None]
        sse = (((out["pred"] - out["target"]) ** 2) * hidden).sum()
        sst = ((out["target"] ** 2) * hidden).sum()  # baseline: predict zero (the scaled mean)
        self._val_sums += torch.stack([out["loss"].detach() * len(batch), torch.tensor(
            float(len(batch)), device=self.device), sse.detach(), sst.detach()]).double()

    def on_validation_epoch_end(self) -> None:
        # one all-reduce of fixed size on every rank, whatever number of batches each had
        # (a rank may have none when the val split has fewer shards than ranks)
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        if sums[1] > 0:
            self.log("val/loss", (sums[0] / sums[1]).float(), sync_dist=False, rank_zero_only=False)
            self.log("val/r2", (1 - sums[2] / sums[3].clamp(min=1e-12)).float(), sync_dist=False)

    def configure_optimizers(self):
        optimizer, scheduler = self.optimizer_and_schedule()
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_and_schedule(self) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
        """The recipe's optimizer and per-step LR schedule (also for loops outside Lightning)."""
        o = self.optim
        optimizer = make_optimizer(self.model, o.lr, o.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, functools.partial(warmup_cosine, warmup_steps=o.warmup_steps,
                                         max_steps=self.max_steps, min_lr_ratio=o.min_lr_ratio))
        return optimizer, scheduler


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.95) decaying matrices only: a tensor with >= 2 dims (linear
    weights, embedding tables) is decayed; vectors (biases, norm gains, gates) are not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup over ``warmup_steps``, then cosine to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
