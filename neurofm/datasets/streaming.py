"""Stream shards to many GPUs on many nodes: shuffle, split, decode, crop, collate.

``stream(...)`` is a WebDataset pipeline of :class:`Segment`; ``collate_segments``
pads segments of different channel counts and durations into a batch with masks;
``neurofm.pretrain.data.ShardDataModule`` is the Lightning wrapper.

Splitting: shards are shuffled with the same seed on every rank, then split by
node (``RANK``/``WORLD_SIZE`` or ``torch.distributed``) and by DataLoader worker, so
in a non-resampled epoch each sample is read exactly once across all ranks and
workers. For long pretraining use ``resampled=True``: every rank and worker draws
shards with replacement from its own seeded stream and never runs dry.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np
import torch

from neurofm.batch import Batch, collate_segments, patch_samples
from neurofm.datasets.codec import decode_sample
from neurofm.datasets.shard_reading import (  # noqa: F401  (shard_urls: importable from here)
    manifest_checksums,
    manifest_root,
    opened_shards,
    shard_urls,
    tar_samples,
)
from neurofm.errors import ShardError
from neurofm.extras import require
from neurofm.tokenizers.segment import Segment

wds = require("webdataset", "reading shards")

logger = logging.getLogger("neurofm.datasets")


# --------------------------------------------------------------------------- errors


class ErrorCounter:
    """A WebDataset handler that skips a corrupt/truncated shard with a warning and counts it.

    With ``on_error='raise'`` the first error propagates instead.
    """

    def __init__(self, on_error: str = "skip"):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.count = 0

    def __call__(self, exn: Exception) -> bool:
        if self.on_error == "raise":
            raise ShardError(f"corrupt or truncated shard data ({exn})") from exn
        self.count += 1
        # the first few in full, then every power of two: a dead shard store must not
        # print hundreds of lines a second
        if self.count <= 5 or self.count & (self.count - 1) == 0:
            logger.warning("skipping corrupt shard data (%s: %s); %d skipped so far",
                           type(exn).__name__, exn, self.count)
        return True


# --------------------------------------------------------------------------- the pipeline


def _node(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        rank, world_size, _, _ = wds.utils.pytorch_worker_info()  # RANK/WORLD_SIZE or torch.distributed
    return rank, world_size


def _split_by_node(n_shards: int, rank: int | None, world_size: int | None) -> Callable:
    """Shards ``rank::world_size`` to each rank, or all of them when there are fewer shards
    than ranks (then :func:`_split_samples_by_node` splits their samples instead)."""
    def split(src: Iterable) -> Iterator:
        r, w = _node(rank, world_size)
        yield from (islice(src, r, None, w) if n_shards >= w else src)
    return split


def _split_samples_by_node(n_shards: int, rank: int | None, world_size: int | None) -> Callable:
    # a small split (one val shard, eight ranks) still reaches every rank, each sample once
    def split(src: Iterable) -> Iterator:
        r, w = _node(rank, world_size)
        yield from (src if n_shards >= w else islice(src, r, None, w))
    return split


def _rank_seed(seed: int, rank: int | None) -> Callable[[], int]:
    def worker_seed() -> int:
        r, _, worker, _ = wds.utils.pytorch_worker_info()
        return seed * 1_000_003 + (r if rank is None else rank) * 1000 + worker
    return worker_seed


def stream(
    shards: str | os.PathLike | list,
    split: str | None = "train",
    *,
    modality: str | None = None,
    shuffle_shards: bool = True,
    shuffle_buffer: int = 1000,
    resampled: bool = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    on_error: str = "skip",
    errors: ErrorCounter | None = None,
    verify: bool = True,
) -> wds.DataPipeline:
    """A WebDataset pipeline yielding :class:`Segment` (float32 signals).

    Parameters
    ----------
    shards : path | URL | pattern | list
        A prepared directory (uses its manifest), the same at a URL fsspec reads
        (``https://host/corpus/``, ``s3://bucket/corpus/``, ``gs://...``; the ``remote``
        extra), a brace pattern, or shard paths.
    split, modality : str | None
        Select shards by the manifest's split/modality (directories only).
    shuffle_shards : bool
        Shuffle shard order (same permutation on every rank; seeded by seed + epoch).
    shuffle_buffer : int
        Sample shuffle buffer (0: off).
    resampled : bool
        Draw shards with replacement forever (per rank/worker seeded streams).
    seed, epoch : int
        Seed the shuffles; bump ``epoch`` for a new order.
    rank, world_size : int | None
        Override the node split (default: ``RANK``/``WORLD_SIZE`` or ``torch.distributed``).
    on_error : 'skip' | 'raise'
        A corrupt or truncated shard is skipped with a warning and counted, or raised.
    errors : ErrorCounter | None
        Pass one to read the skip count afterwards (``errors.count``).
    verify : bool
        For a prepared directory, check each shard's sha256 against the manifest while it is
        read (one pass: the shard is buffered in memory, hashed, then parsed) the first time
        this process (or loader worker) reads it; a shard that differs is corrupt: dropped
        whole before any of its samples is yielded, with a warning, and counted.
    """
    urls = shard_urls(shards, split, modality)
    handler = errors or ErrorCounter(on_error)
    checksums = manifest_checksums(shards) if verify else {}
    stages: list = []
    if resampled:
        stages.append(wds.ResampledShards(urls, seed=seed, worker_seed=_rank_seed(seed, rank),
                                          deterministic=True))
    else:
        stages.append(wds.SimpleShardList(urls))
        if shuffle_shards:
            stages.append(wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed,
                                         epoch=epoch - 1))  # it counts up before each pass
        stages += [_split_by_node(len(urls), rank, world_size), wds.split_by_worker]
    stages += [opened_shards(checksums, handler), tar_samples(handler)]
    if not resampled:
        stages.append(_split_samples_by_node(len(urls), rank, world_size))
    if shuffle_buffer > 0:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100),
                                  rng=random.Random(seed + epoch)))
    stages.append(wds.map(decode_sample, handler=handler))
    return wds.DataPipeline(*stages)


# --------------------------------------------------------------------------- batches


def crop_to_budget(seg: Segment, max_tokens: int, patch_s: float, rng: np.random.Generator) -> Segment:
    """Random time crop (whole patches) so that sensors x patches <= ``max_tokens``.

    A segment whose sensors alone exceed the budget keeps one patch of a random
    subset of ``max_tokens`` sensors.
    """
    patch = patch_samples(patch_s, seg.sfreq)
    n_patches = seg.n_times // patch
    if seg.n_sensors * n_patches <= max_tokens:
        return seg
    keep = max(1, max_tokens // seg.n_sensors)
    if seg.n_sensors > max_tokens:
        chosen = np.sort(rng.choice(seg.n_sensors, max_tokens, replace=False))
        seg = seg.permute(chosen)
    start = int(rng.integers(0, n_patches - keep + 1)) * patch
    meta = dict(seg.meta, onset_s=seg.meta.get("onset_s", 0.0) + start / seg.sfreq)
    return Segment(seg.signal[:, start : start + keep * patch], seg.positions, seg.orientations,
                   seg.kinds, meta)


def batched_stream(
    shards: str | os.PathLike | list,
    batch_size: int,
    split: str | None = "train",
    *,
    modality_weights: dict[str, float] | None = None,
    max_tokens: int | None = None,
    patch_s: dict[str, float] | None = None,
    bucket: str = "shape",
    seed: int = 0,
    **stream_options: Any,
) -> wds.DataPipeline | SeededMix:
    """Batches of one modality each, mixed across modalities by weight.

    Batches carry numpy arrays (cheap to send from loader workers); iterate
    through :func:`make_loader`, or call ``batch.to_torch()``.

    Parameters
    ----------
    batch_size : int
        Segments per batch.
    modality_weights : dict | None
        e.g. ``{'eeg': 0.5, 'meg': 0.3, 'fmri': 0.2}``: each batch's modality is
        drawn with these probabilities (needs a prepared directory; use with
        ``resampled=True``). None: one stream over all selected shards.
    max_tokens, patch_s : int, dict
        Random crop of each segment to at most ``max_tokens`` tokens, a token
        being ``patch_s[modality]`` seconds of one sensor.
    bucket : 'shape' | 'modality'
        Each batch holds segments of one shape (no padding; sensor counts differ
        between datasets) or of one modality (padded to the largest, with masks).
    **stream_options
        Passed to :func:`stream`.
    """
    patch_s = patch_s or {"eeg": 1.0, "meg": 1.0, "ieeg": 1.0, "fmri": 6.0}

    def one(modality: str | None, salt: int) -> wds.DataPipeline:
        pipeline = stream(shards, split, modality=modality, seed=seed + salt, **stream_options)
        if max_tokens is not None:
            rng = np.random.default_rng(seed + salt)
            pipeline.append(wds.map(lambda s: crop_to_budget(s, max_tokens, patch_s[s.modality], rng)))
        pipeline.append(_grouped(batch_size, bucket))
        return pipeline

    if not modality_weights:
        return one(None, 0)
    names = sorted(modality_weights)
    streams = [one(m, k + 1) for k, m in enumerate(names)]
    return SeededMix(streams, [modality_weights[m] for m in names], seed)


class SeededMix(torch.utils.data.IterableDataset):
    """Draw each next batch from one of ``sources`` with probabilities ``probs``.

    Unlike ``wds.RandomMix`` (the global ``random`` module), the draws are seeded per rank
    and worker, so a mixed stream is reproducible and a resumed run can replay it.
    """

    def __init__(self, sources: list, probs: list[float], seed: int = 0):
        super().__init__()
        total = float(sum(probs))
        if total <= 0 or any(p < 0 for p in probs):
            raise ValueError(f"modality weights must be non-negative with a positive sum, got {probs}")
        self.sources, self.cumulative, self.seed = sources, np.cumsum(probs) / total, seed

    def __iter__(self) -> Iterator:
        rng = random.Random(_rank_seed(self.seed, None)())  # per rank and worker
        iterators = [iter(s) for s in self.sources]
        while True:
            pick = int(np.searchsorted(self.cumulative, rng.random(), side="right"))
            try:
                yield next(iterators[min(pick, len(iterators) - 1)])
            except StopIteration:
                return


def _bucket_key(seg: Segment, bucket: str) -> tuple:
    if bucket == "shape":
        return seg.modality, seg.n_sensors, seg.n_times
    return (seg.modality,)


def _grouped(batch_size: int, bucket: str) -> Callable:
    """Batches whose segments share a modality (``bucket='modality'``) or a shape ('shape')."""
    if bucket not in ("modality", "shape"):
        raise ValueError(f"bucket must be 'modality' or 'shape', got {bucket!r}")

    def group(src: Iterable[Segment]) -> Iterator[Batch]:
        buffers: dict[tuple, list[Segment]] = {}
        for seg in src:
            key = _bucket_key(seg, bucket)
            buf = buffers.setdefault(key, [])
            buf.append(seg)
            if len(buf) == batch_size:
                yield collate_segments(buf, as_numpy=True)
                buffers[key] = []
        for buf in buffers.values():
            if buf:
                yield collate_segments(buf, as_numpy=True)
    return group


class SkipConsumed(torch.utils.data.IterableDataset):
    """``source`` without the first ``n_batches`` batches a loader would deliver: a resumed
    run continues its stream exactly where the checkpoint left it.

    A DataLoader takes batch ``j`` from worker ``j % num_workers``, so worker ``w`` drops
    ``len(range(w, n_batches, num_workers))`` of its own batches. Skipped batches are
    still read (the shuffle buffers and bucket state must match), at loader speed.
    """

    def __init__(self, source: Iterable, n_batches: int):
        super().__init__()
        self.source, self.n_batches = source, n_batches

    def __iter__(self) -> Iterator:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        yield from islice(iter(self.source), len(range(worker, self.n_batches, workers)), None)


def _worker_ignores_sigterm(worker_id: int) -> None:
    # SLURM signals the whole process group: the main process checkpoints, then ends its
    # workers; a worker must not die first and leave the main process a dead loader
    # (workers still exit on the loader's shutdown, and when their parent is gone)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(pipeline, num_workers: int = 0, skip_batches: int = 0, **kwargs: Any):
    """A DataLoader over a :func:`batched_stream`: workers decode and collate, the main
    process turns each batch into tensors.

    ``skip_batches``: continue the stream after its first ``skip_batches`` batches, in the
    order one uninterrupted loader would have delivered them (each worker skips its own
    share, see :class:`SkipConsumed`, and the workers' turns are rotated to match).
    """
    if skip_batches:
        pipeline = SkipConsumed(pipeline, skip_batches)
    if num_workers > 0:
        kwargs.setdefault("worker_init_fn", _worker_ignores_sigterm)
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=num_workers,
                           persistent_workers=num_workers > 0, collate_fn=_identity, **kwargs)
    loader = loader.map(Batch.to_torch)
    turn = skip_batches % num_workers if num_workers > 1 else 0
    return _RotatedTurns(loader, num_workers, turn) if turn else loader


class _RotatedTurns:
    """A loader whose workers take turns starting at worker ``turn`` instead of 0: the
    uninterrupted loader delivered batch ``n`` from worker ``n % num_workers``."""

    def __init__(self, loader, num_workers: int, turn: int):
        self.loader, self.num_workers, self.turn = loader, num_workers, turn

    def __iter__(self) -> Iterator:
        batches = iter(self.loader)
        while True:
            chunk = list(islice(batches, self.num_workers))  # one batch from each worker, 0..W-1
            yield from chunk[self.turn :] + chunk[: self.turn]
            if len(chunk) < self.num_workers:
                return


def _identity(batch: Batch) -> Batch:
    return batch
