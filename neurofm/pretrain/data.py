"""Lightning DataModule over prepared shards."""

from __future__ import annotations

import lightning.pytorch as pl
import webdataset as wds

from neurofm.datasets.streaming import batched_stream, make_loader


class ShardDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a prepared shard directory (splits from its manifest).

    Training streams are resampled (infinite, per-rank seeded; set
    ``trainer.max_steps``); validation and test read each sample once, split
    across ranks and workers.

    Parameters
    ----------
    shards : path
        Directory written by ``neurofm prepare``.
    batch_size, num_workers : int
    shuffle_buffer : int
        Sample shuffle buffer for training.
    resampled : bool
        Infinite resampled training stream.
    modality_weights : dict | None
        e.g. ``{'eeg': 0.5, 'meg': 0.3, 'fmri': 0.2}``.
    max_tokens : int | None
        Random crop of each segment to this many tokens.
    patch_s : dict | None
        Token length per modality, s.
    seed : int
    skip_batches : int
        Training batches this rank already consumed (a resumed run): the resampled
        stream is replayed past them, so training continues at the same data position.
    """

    def __init__(self, shards, batch_size: int = 32, num_workers: int = 4,
                 shuffle_buffer: int = 1000, resampled: bool = True,
                 modality_weights: dict | None = None, max_tokens: int | None = None,
                 patch_s: dict | None = None, seed: int = 0, skip_batches: int = 0):
        super().__init__()
        self.shards, self.batch_size, self.num_workers = shards, batch_size, num_workers
        self.resampled, self.skip_batches = resampled, skip_batches
        self.options = {"shuffle_buffer": shuffle_buffer, "modality_weights": modality_weights,
                        "max_tokens": max_tokens, "patch_s": patch_s, "seed": seed}

    def _loader(self, split: str, train: bool):
        options = dict(self.options)
        if not train:
            options.update(shuffle_buffer=0, modality_weights=None)
        pipeline = batched_stream(self.shards, self.batch_size, split,
                                  resampled=self.resampled and train, **options)
        skip = self.skip_batches if train and self.resampled else 0
        return make_loader(pipeline, self.num_workers, skip_batches=skip)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self) -> wds.WebLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> wds.WebLoader:
        return self._loader("test", False)
