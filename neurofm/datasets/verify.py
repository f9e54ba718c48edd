"""``neurofm verify``: check every shard of a prepared directory against its manifest."""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

from neurofm.console import make_progress
from neurofm.datasets.codec import decode_sample
from neurofm.datasets.manifest import is_remote, join, load_manifest, local, read_bytes, sha256_of
from neurofm.datasets.tar_io import read_tar_samples
from neurofm.errors import NeurofmError

logger = logging.getLogger("neurofm.datasets")


def _read_samples(path: Path | str, data: bytes | None = None) -> int:
    """Decode every sample of one shard (all four files, finite signal); its sample count.
    ``data``: the shard's bytes, already read (a remote shard)."""
    count = 0
    for key, files in read_tar_samples(path if data is None else data):
        decode_sample({"__key__": key, "__url__": str(path), **files})
        count += 1
    return count


def _check(location: Path | str, entry: dict, decode: bool) -> str | None:
    """What is wrong with one shard, or None: present, the manifest's size and sha256, and
    (``decode``) every sample readable, in the manifest's number. A remote shard is read once
    (with retries) and checked from memory; a local one is read from disk."""
    if isinstance(location, Path):
        if not location.is_file():
            return "missing"
        size, digest, data = location.stat().st_size, (lambda: sha256_of(location)), None
    else:
        try:
            data = read_bytes(location)
        except FileNotFoundError:
            return "missing"
        except OSError as err:
            return f"unreadable ({err})"
        size, digest = len(data), (lambda: hashlib.sha256(data).hexdigest())
    if entry.get("bytes") is not None and size != entry["bytes"]:
        return f"{size} bytes, the manifest says {entry['bytes']}"
    if entry.get("sha256") and digest() != entry["sha256"]:
        return "sha256 differs from the manifest (changed or corrupt)"
    if decode:
        try:
            n = _read_samples(location, data)
        except (NeurofmError, OSError, ValueError, KeyError, tarfile.TarError) as err:
            return f"unreadable ({err})"
        if entry.get("n_samples") is not None and n != entry["n_samples"]:
            return f"{n} samples, the manifest says {entry['n_samples']}"
    return None


def verify_shards(shards: str | os.PathLike, decode: bool = True) -> list[dict[str, Any]]:
    """Check each shard the manifest names: present, same size and sha256, and (``decode``)
    every sample readable and finite, in the number the manifest says. ``shards``: a
    directory or a URL fsspec reads (``https://``, ``s3://``, ``gs://``); a remote shard is
    read once (with retries) and checked from memory.

    Returns
    -------
    problems : list of dict
        ``{"shard": name, "problem": text}``, empty when everything matches.
    """

    remote = is_remote(shards)
    root = shards if remote else Path(local(shards))
    manifest = load_manifest(root)
    entries = manifest["shards"]  # load_manifest checked its shape
    problems = []
    with make_progress() as progress:
        task = progress.add_task("verifying shards", total=len(entries))
        for entry in entries:
            location = join(root, entry["name"]) if remote else root / entry["name"]
            problem = _check(location, entry, decode)
            if problem:
                problems.append({"shard": entry["name"], "problem": problem})
            progress.advance(task)
    return problems
