"""Pretraining on batches from a Python iterator: ``neurofm pretrain``'s module and loop
(:class:`PretrainModule` in a Lightning ``Trainer``: its model, AdamW, warmup + cosine
schedule and gradient clipping) without shards, checkpoints or logs. For studies that
pretrain many small models in one process (the benchmarks' scaling curves and ablations)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from neurofm.batch import Batch
from neurofm.models.config import ModelConfig
from neurofm.models.mae import MaskedAutoencoder
from neurofm.pretrain.config import OptimConfig, TrainerConfig
from neurofm.pretrain.module import PretrainModule
from neurofm.pretrain.train import quiet_lightning


class _Steps(Callback):
    """Hands each finished step to ``on_step``; at the first step, restores the global torch
    RNG to its state when training was asked for (Lightning's DataLoader draws one number as
    it starts, which would move every mask), so a seed gives the same run as in a plain loop."""

    def __init__(self, on_step: Callable[[int, float, MaskedAutoencoder], None] | None):
        self.on_step, self.rng = on_step, torch.get_rng_state()

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            torch.set_rng_state(self.rng)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if self.on_step is not None:
            self.on_step(trainer.global_step, float(outputs["loss"]), module.model)
            module.model.train()


class _Endless(torch.utils.data.IterableDataset):
    """The caller's batches, as torch tensors (``batched_stream`` yields numpy ones, which
    loader workers send cheaply; ``collate_segments`` torch ones)."""

    def __init__(self, batches: Iterator[Batch]):
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return (b.to_torch() for b in self.batches)


def pretrain_on_batches(config: ModelConfig, batches: Iterator[Batch], steps: int, optim: OptimConfig | None = None,
                        on_step: Callable[[int, float, MaskedAutoencoder], None] | None = None,
                        model: MaskedAutoencoder | None = None) -> MaskedAutoencoder:
    """Pretrain for ``steps`` steps on ``batches`` (an endless iterator of :class:`Batch`) and
    return the model.

    Parameters
    ----------
    config : ModelConfig
        The architecture and masking recipe.
    batches : iterator of Batch
        Read in this process, one per step.
    steps : int
        Optimizer steps (the schedule's length).
    optim : OptimConfig | None
        Learning rate, warmup, weight decay (default: ``neurofm pretrain``'s).
    on_step : callable | None
        ``on_step(step, loss, model)`` after each step (1-based); the model is put back in
        train mode afterwards, so it may be probed.
    model : MaskedAutoencoder | None
        Train this one instead of a new one of ``config`` (e.g. one built under a seed).
    """
    module = PretrainModule(config, optim or OptimConfig(), max_steps=steps)
    if model is not None:
        module.model = model
    module.train()  # a model just probed (eval mode) trains in train mode, as in neurofm pretrain
    with quiet_lightning():
        trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, gradient_clip_val=TrainerConfig().gradient_clip_val,
                             callbacks=[_Steps(on_step)])
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(_Endless(batches), batch_size=None))
    return module.model
