"""Datasets: discovery, shards (write), streaming (read, collate), phenotype joins."""

from neurofm.datasets.discovery import Source, discover
from neurofm.datasets.phenotype import join_phenotype, read_phenotype, subject_key
from neurofm.datasets.shards import (
    PrepareOptions,
    decode_sample,
    encode_segment,
    load_manifest,
    write_shards,
)
from neurofm.datasets.stream import Batch, batched_stream, collate_segments, shard_urls, stream

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
    "write_shards",
]
