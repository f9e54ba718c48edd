"""The pretraining LightningModule: a MaskedAutoencoder, AdamW, warmup + cosine."""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from neurofm.datasets.stream import Batch
from neurofm.models.mae import MaskedAutoencoder, ModelConfig


class PretrainModule(pl.LightningModule):
    """Masked-autoencoding pretraining. The strategy (DDP, DeepSpeed) is the Trainer's business.

    Parameters
    ----------
    model : dict
        :class:`ModelConfig` fields.
    lr : float
        Peak learning rate.
    weight_decay : float
        AdamW weight decay (not on norms, biases, embeddings' kinds).
    warmup_steps : int
        Linear warmup, then cosine decay to ``min_lr_ratio * lr`` at ``max_steps``.
    max_steps : int
    min_lr_ratio : float
    """

    def __init__(self, model: dict[str, Any], lr: float = 1e-3, weight_decay: float = 0.05,
                 warmup_steps: int = 100, max_steps: int = 1000, min_lr_ratio: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.model = MaskedAutoencoder(ModelConfig(**model))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.model(batch)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=len(batch), sync_dist=False)
        return out["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        g = torch.Generator(device=batch.signal.device).manual_seed(batch_idx)  # same masks each time
        out = self.model(batch, generator=g)
        hidden = out["hidden"][..., None]
        sse = (((out["pred"] - out["target"]) ** 2) * hidden).sum()
        sst = ((out["target"] ** 2) * hidden).sum()  # baseline: predict zero (the scaled mean)
        self.log("val/loss", out["loss"], batch_size=len(batch), sync_dist=True)
        self.log("val/r2", 1 - sse / sst.clamp(min=1e-12), batch_size=len(batch), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            (no_decay if param.ndim < 2 or "embed" in name and "kind" in name else decay).append(param)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=hp.lr, betas=(0.9, 0.95))

        def schedule(step: int) -> float:
            if step < hp.warmup_steps:
                return (step + 1) / hp.warmup_steps
            progress = min(1.0, (step - hp.warmup_steps) / max(1, hp.max_steps - hp.warmup_steps))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
