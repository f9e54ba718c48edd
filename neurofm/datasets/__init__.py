"""Datasets: discovery, shards (write), streaming (read, collate), phenotype joins."""

from importlib import import_module
from typing import TYPE_CHECKING

from neurofm.datasets.codec import decode_sample, encode_segment
from neurofm.datasets.discovery import Source, discover
from neurofm.datasets.manifest import load_manifest
from neurofm.datasets.options import PrepareOptions
from neurofm.datasets.phenotype import join_phenotype, read_phenotype, subject_key
from neurofm.datasets.shards import write_shards
from neurofm.datasets.tokenize import tokenize_file

if TYPE_CHECKING:
    from neurofm.batch import Batch, collate_segments
    from neurofm.datasets.streaming import batched_stream, shard_urls, stream

# the reading side needs torch; writing shards (and every prepare worker) does not, so it is
# imported on first use: a worker process starts seconds sooner
_LAZY = {"Batch": "neurofm.batch", "collate_segments": "neurofm.batch", "batched_stream": "neurofm.datasets.streaming",
         "shard_urls": "neurofm.datasets.streaming", "stream": "neurofm.datasets.streaming"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Batch",
    "PrepareOptions",
    "Source",
    "batched_stream",
    "collate_segments",
    "decode_sample",
    "discover",
    "encode_segment",
    "join_phenotype",
    "load_manifest",
    "read_phenotype",
    "shard_urls",
    "stream",
    "subject_key",
    "tokenize_file",
    "write_shards",
]
