"""Datasets: discovery, shards (write), streaming (read, collate), phenotype joins."""

from neurofm.batch import Batch, collate_segments
from neurofm.datasets.codec import decode_sample, encode_segment
from neurofm.datasets.discovery import Source, discover
from neurofm.datasets.manifest import load_manifest
from neurofm.datasets.phenotype import join_phenotype, read_phenotype, subject_key
from neurofm.datasets.shards import PrepareOptions, write_shards
from neurofm.datasets.stream import batched_stream, shard_urls, stream

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
