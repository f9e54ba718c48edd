"""Which shards a stream reads, and how each one is opened: the manifest's selection
(split, modality) of a local directory or a URL fsspec reads, and each shard read whole into
memory with its sha256 checked before any of its samples is parsed (one pass, retried reads,
a corrupt or unreadable shard dropped whole and counted)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from neurofm.datasets.manifest import is_remote, join, load_manifest, local, read_bytes
from neurofm.errors import ShardError

logger = logging.getLogger("neurofm.datasets")


def manifest_root(shards) -> str | None:
    """The shard location whose manifest selects the shards, or None (a pattern or a list)."""
    if isinstance(shards, list | tuple):
        return None
    shards = local(shards)
    if is_remote(shards):
        if shards.endswith("manifest.json"):
            return shards[: -len("manifest.json")].rstrip("/")
        return None if "{" in shards or shards.endswith(".tar") else shards.rstrip("/")
    path = Path(shards)
    if path.is_dir():
        return str(path)
    return str(path.parent) if path.name == "manifest.json" else None


def shard_urls(shards: str | os.PathLike | list, split: str | None = "train",
               modality: str | None = None) -> list[str]:
    """Shard locations from a prepared directory or URL prefix (selected by split/modality via
    its manifest), a brace pattern (``shards/shard-{000000..000099}.tar``, local or a URL) or
    a list."""
    if isinstance(shards, list | tuple):
        return [os.fspath(local(s)) for s in shards]
    root = manifest_root(shards)
    if root is not None:
        manifest = load_manifest(root)
        chosen = [join(root, s["name"]) for s in manifest["shards"]
                  if (split is None or s["split"] == split)
                  and (modality is None or s["modality"] == modality)]
        if not chosen:
            raise ShardError(f"no shards for split={split!r} modality={modality!r} in the manifest",
                             join(root, "manifest.json"))
        return chosen
    import braceexpand

    urls = list(braceexpand.braceexpand(os.fspath(local(shards))))
    if not urls:
        raise ShardError(f"pattern {shards!r} names no shard")
    return urls


def manifest_checksums(shards) -> dict[str, str]:
    """``{shard location: sha256}`` from a prepared directory's manifest (nothing for patterns)."""
    root = manifest_root(shards)
    if root is None:
        return {}
    return {join(root, s["name"]): s["sha256"] for s in load_manifest(root)["shards"] if s.get("sha256")}


def opened_shards(checksums: dict[str, str], handler: Callable) -> Callable:
    """A pipeline stage that opens each shard, hashing it in the same pass.

    A shard with a checksum (a prepared directory or URL) is read whole into memory, hashed,
    and only then parsed: a shard whose sha256 differs from the manifest (a flipped bit, a torn
    copy, a truncated download) is dropped whole with a warning and counted, so none of its
    samples reaches a batch. The cost is one shard in memory per loader worker (the manifest's
    ``shard_size_mb``, 256 MB by default) and no read twice. A shard that cannot be read
    (remote reads are retried with back-off first) is counted the same way.
    """
    verified: set[str] = set()

    def opened(src: Iterable[dict]) -> Iterator[dict]:
        for item in src:
            url = item["url"]
            expected = checksums.get(url)
            try:
                if expected is None and not is_remote(url):
                    yield {**item, "stream": open(url, "rb")}  # noqa: SIM115 (closed by the tar reader)
                    continue
                data = read_bytes(url)
            except OSError as err:
                handler(ShardError(f"cannot read shard ({err.strerror or err})", url))
                continue
            if expected is not None and url not in verified:
                if hashlib.sha256(data).hexdigest() != expected:
                    handler(ShardError("sha256 differs from the manifest: the shard changed or is "
                                       "corrupt (neurofm verify lists every such shard)", url))
                    continue
                verified.add(url)
            yield {**item, "stream": io.BytesIO(data)}
    return opened


def tar_samples(handler: Callable) -> Callable:
    """Open shards -> files -> samples, as ``wds.tarfile_to_samples`` after its opener."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def samples(src: Iterable[dict]) -> Iterator[dict]:
        return group_by_keys(tar_file_expander(src, handler=handler), handler=handler)
    return samples
