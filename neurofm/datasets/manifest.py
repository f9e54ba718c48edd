"""The shard manifest (``manifest.json``): reading and validating it, and the shards' sha256."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from neurofm.errors import ShardError


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- remote locations

RETRIES = 4          # a remote read is tried 1 + RETRIES times
BACKOFF_S = 0.5      # then waits 0.5, 1, 2, 4 s between tries


def is_remote(location: Any) -> bool:
    """A URL fsspec reads (``http(s)://``, ``s3://``, ``gs://`` ...), not a local path
    (``file://`` counts as local)."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def local(location: str | os.PathLike) -> str | os.PathLike:
    """``file:///a/b`` -> ``/a/b``; anything else unchanged."""
    return location[len("file://"):] if isinstance(location, str) and location.startswith("file://") else location


def join(base: str | os.PathLike, name: str) -> str:
    """``name`` inside the shard location ``base`` (a directory or a URL prefix)."""
    return f"{base.rstrip('/')}/{name}" if is_remote(base) else str(Path(base) / name)


def read_bytes(location: str | os.PathLike, retries: int | None = None, backoff_s: float | None = None) -> bytes:
    """All bytes of a local file or a remote object (through fsspec). A remote read that fails
    (connection reset, HTTP 5xx, a cut response, a timeout) is tried again after 0.5, 1, 2 ...
    s, ``retries`` times; then it is an ``OSError`` naming the URL and the last error. A missing
    object is not retried. Credentials come from the environment (``AWS_*``, ``~/.aws``,
    ``GOOGLE_APPLICATION_CREDENTIALS``), never from a config."""
    if not is_remote(location):
        with open(local(location), "rb") as fh:
            return fh.read()
    import time

    import fsspec

    retries = RETRIES if retries is None else retries
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    for attempt in range(retries + 1):
        try:
            with fsspec.open(location, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, PermissionError):
            raise
        except Exception as err:  # aiohttp, botocore and gcsfs each raise their own types
            if attempt == retries:
                raise OSError(f"{location}: read failed {retries + 1} times, last: "
                              f"{type(err).__name__}: {str(err)[:200]}") from err
            time.sleep(backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``manifest.json`` from a shard directory (or the file itself), local or at a URL
    fsspec reads (``https://host/corpus/``, ``s3://bucket/corpus/``)."""
    if is_remote(path):
        url = path if path.endswith("manifest.json") else join(path, "manifest.json")
        try:
            text = read_bytes(url).decode("utf-8")
        except FileNotFoundError as err:
            raise ShardError("no manifest.json at this URL: run `neurofm prepare` and copy its whole "
                             "output there", url) from err
        except OSError as err:
            raise ShardError(f"cannot read the manifest ({err})", url) from err
        return _checked_manifest(text, url)
    path = Path(local(path))
    path = path / "manifest.json" if path.is_dir() else path
    if not path.exists():
        raise ShardError("no manifest.json: run `neurofm prepare` first", path)
    return _checked_manifest(path.read_text(), path)


def _checked_manifest(text: str, path) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise ShardError(f"manifest is not valid JSON ({err})", path) from err
    entries = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise ShardError("manifest has no list of shards: not written by neurofm prepare", path)
    for k, entry in enumerate(entries):
        absent = [key for key in ("name", "split", "modality")
                  if not isinstance(entry, dict) or key not in entry]
        if absent:
            raise ShardError(f"manifest entry {k} has no {', '.join(absent)}: not written by "
                             "neurofm prepare, or edited", path)
    return manifest
