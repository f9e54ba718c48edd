"""``neurofm prepare`` across nodes: ``part=I/N`` takes a fixed 1/N of the inputs, and one
merge writes the manifest the loader reads.

A file's part is a hash of its path, so it does not depend on the order files are found in,
on how many other files there are, or on which node asks; re-running a part redoes the same
files. Each part writes its shards, ``manifest.json`` and ``failures.jsonl`` under
``out/part-IIII-of-NNNN/``; the merge checks that every part finished with the same options
and writes ``out/manifest.json`` naming each shard by its path under ``out``. The
train/val/test split is a hash of each subject (:func:`~neurofm.datasets.options.split_of`),
so it is the same on one node or many.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from neurofm.datasets.manifest import load_manifest
from neurofm.errors import ConfigError, ShardError
from neurofm.io import write_text_atomic

PART_DIR = re.compile(r"^part-(\d{4})-of-(\d{4})$")


def parse_part(part: str | None, environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """``"I/N"`` (0-based ``I``) as ``(I, N)``; unset: the SLURM array task, if this is one
    (``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``), else
    ``None`` (one run does every file)."""
    environ = os.environ if environ is None else environ
    if part is None:
        if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
            return None
        index = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        count = int(environ["SLURM_ARRAY_TASK_COUNT"])
        where = "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
    else:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(part))
        if match is None:
            raise ConfigError(f"part={part!r}: write it as I/N, e.g. part=0/8 (I counts from 0)")
        index, count = int(match.group(1)), int(match.group(2))
        where = f"part={part}"
    if not 0 <= index < count or count > 9999:
        raise ConfigError(f"{where}: part {index} of {count} does not exist (I from 0 to N-1, N <= 9999)")
    return index, count


def part_of(path: str, count: int) -> int:
    """The part (of ``count``) a file belongs to: a hash of its absolute path."""
    digest = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()
    return int(digest[:15], 16) % count


def part_dir(out: str | os.PathLike, index: int, count: int) -> Path:
    return Path(out) / f"part-{index:04d}-of-{count:04d}"


def finished_parts(out: str | os.PathLike) -> tuple[int | None, dict[int, Path], list[int]]:
    """(N, {I: folder} of the parts that finished, the parts not finished) under ``out``."""
    out = Path(out)
    found: dict[int, Path] = {}
    counts = set()
    for folder in sorted(out.glob("part-*-of-*")) if out.is_dir() else []:
        match = PART_DIR.match(folder.name)
        if match is None:
            continue
        counts.add(int(match.group(2)))
        if (folder / "manifest.json").is_file():
            found[int(match.group(1))] = folder
    if len(counts) > 1:
        raise ShardError(f"parts of different runs are mixed (N = {sorted(counts)}): remove the "
                         "folders of the old run", out)
    count = counts.pop() if counts else None
    missing = [i for i in range(count)] if count else []
    return count, found, [i for i in missing if i not in found]


def merge_parts(out: str | os.PathLike) -> dict[str, Any]:
    """Check every ``part-I-of-N`` under ``out`` and write ``out/manifest.json`` (and
    ``failures.jsonl``) over all of them; the merged manifest.

    Raises
    ------
    ShardError
        No parts, unfinished or missing parts (named), or parts written with other options.
    """
    out = Path(out)
    count, found, missing = finished_parts(out)
    if count is None:
        raise ShardError("no part-I-of-N folders: run `neurofm prepare ... part=I/N` first", out)
    if missing:
        listed = ", ".join(f"{i}/{count}" for i in missing)
        raise ShardError(f"{len(missing)} of {count} parts have not finished (no manifest.json): "
                         f"{listed}; run `neurofm prepare ... part=I/N` for each, then merge again", out)
    manifests = {i: load_manifest(found[i]) for i in sorted(found)}
    options = {json.dumps(m["options"], sort_keys=True) for m in manifests.values()}
    if len(options) > 1:
        raise ShardError("the parts were prepared with different options: re-run them with the same "
                         "command line (only part= may differ)", out)
    merged: dict[str, Any] = {
        "format": manifests[0]["format"], "neurofm_version": manifests[0]["neurofm_version"],
        "options": manifests[0]["options"], "parts": count,
        "shards": [{**s, "name": f"{found[i].name}/{s['name']}"} for i, m in manifests.items()
                   for s in m["shards"]],
        "totals": _sum_totals([m["totals"] for m in manifests.values()]),
        "splits": _sum_splits([m["splits"] for m in manifests.values()]),
        "files": {k: sum(m["files"][k] for m in manifests.values()) for k in ("found", "ok", "failed")},
        "failures": sum(m["failures"] for m in manifests.values()),
    }
    failures = "".join((found[i] / "failures.jsonl").read_text() for i in sorted(found)
                       if (found[i] / "failures.jsonl").is_file())
    write_text_atomic(out / "failures.jsonl", failures)
    write_text_atomic(out / "manifest.json", json.dumps(merged, indent=1, sort_keys=True) + "\n")
    return merged


def _add(into: dict[str, float], part: dict[str, float]) -> dict[str, float]:
    for key, value in part.items():
        into[key] = into.get(key, 0) + value
    return into


def _sum_totals(parts: list[dict]) -> dict[str, Any]:
    totals: dict[str, Any] = {"samples": sum(p["samples"] for p in parts),
                              "hours": sum(p["hours"] for p in parts)}
    for key in ("hours_by_modality", "hours_by_dataset", "hours_by_subject", "channel_histogram"):
        summed: dict[str, float] = {}
        for p in parts:
            _add(summed, p[key])
        totals[key] = dict(sorted(summed.items(), key=lambda kv: int(kv[0]))) if key == "channel_histogram" \
            else summed
    return totals


def _sum_splits(parts: list[dict]) -> dict[str, Any]:
    return {split: {"samples": sum(p[split]["samples"] for p in parts),
                    "subjects": sorted({s for p in parts for s in p[split]["subjects"]})}
            for split in parts[0]}
