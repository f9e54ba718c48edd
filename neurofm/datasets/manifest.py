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



def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``manifest.json`` from a shard directory (or the file itself)."""
    path = Path(path)
    path = path / "manifest.json" if path.is_dir() else path
    if not path.exists():
        raise ShardError("no manifest.json: run `neurofm prepare` first", path)
    try:
        manifest = json.loads(path.read_text())
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
