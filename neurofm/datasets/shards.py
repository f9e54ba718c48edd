"""Write WebDataset shards: many recordings -> ``shard-*.tar`` + ``manifest.json``.

One sample is one :class:`~neurofm.tokenizers.Segment`::

    <key>.signal.npy        float16 (default) or float32 [C, T]
    <key>.positions.npy     float32 [C, 3]
    <key>.orientations.npy  float32 [C, 3]
    <key>.meta.json         meta + kinds

How a run goes (``write_shards`` / ``neurofm prepare``):

1. ``discover`` the inputs (BIDS roots, directories, globs), sorted by path.
2. Tokenize each file in a worker process, appending its samples to that process's journal
   under ``out/.work/`` (``<id>.samples`` + ``<id>.jsonl``: a line when a file starts, its
   summary once its samples are written, with their place and sha256). The journals are the
   record of work done: a re-run after a crash or Ctrl-C skips files whose samples are there
   and match their checksum.
3. Pack the samples, in path order, into shards that each hold one split and one modality
   (so the loader can select splits and mix modalities by weight): bytes copied from the
   journals, hashed on the way, written as temp file + fsync + rename, with fixed tar
   metadata: same inputs and seed give byte-identical shards.
4. Write ``manifest.json``: per-shard counts and sha256, totals, splits, tokenizer config.

The options are :class:`~neurofm.datasets.options.PrepareOptions`; tokenizing one file is
:mod:`neurofm.datasets.tokenize`, the process pool :mod:`neurofm.datasets.pool`, the tar
members and journals :mod:`neurofm.datasets.tar_io`; this module runs them and packs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from neurofm._version import __version__
from neurofm.datasets.discovery import Source, discover
from neurofm.datasets.options import SPLITS, PrepareOptions
from neurofm.datasets.parts import part_dir, part_of
from neurofm.datasets.pool import run_workers
from neurofm.datasets.tar_io import AtomicTar, journal_bytes, read_journals, write_json_atomic
from neurofm.datasets.tokenize import check_needs
from neurofm.errors import DiskFullError, NeurofmError
from neurofm.io import free_bytes, is_disk_full, write_text_atomic
from neurofm.tokenizers.segment import MODALITIES

logger = logging.getLogger("neurofm.datasets")


# --------------------------------------------------------------------------- the run


def _intact(workdir: Path, summary: dict) -> bool:
    """Whether the samples an ``ok`` summary names are in its journal, with its checksum."""
    path = workdir / summary["data"]
    end = summary["offset"] + summary["length"]
    if not path.exists() or path.stat().st_size < end:
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(summary["offset"])
        remaining = summary["length"]
        while remaining:
            block = fh.read(min(remaining, 1 << 20))
            if not block:
                return False
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest() == summary["sha256"]


def _resumable(workdir: Path, sources: list[Source]) -> dict[str, dict]:
    """The summaries of files an earlier run finished whose samples are intact, by path."""
    wanted = {s.path for s in sources}
    done: dict[str, dict] = {}
    for summary in read_journals(workdir)[0]:
        path = summary["path"]
        if path in wanted and path not in done and summary["status"] == "ok" and _intact(workdir, summary):
            done[path] = summary  # failed files are retried on a re-run
    return done


def _pack(out: Path, workdir: Path, summaries: list[dict], shard_bytes: int) -> list[dict]:
    """Copy samples from the journals (files in path order) into shards of one split and
    modality each, hashing each shard as it is written."""
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for summary in summaries:
        for sample in summary["samples"]:
            groups.setdefault((sample["split"], sample["modality"]), []).append((summary["data"], sample))
    shards: list[dict] = []
    readers: dict[str, Any] = {}
    writer: AtomicTar | None = None
    try:
        for split in SPLITS:
            for modality in MODALITIES:
                writer: AtomicTar | None = None
                for data, sample in groups.get((split, modality), []):
                    if writer is not None and writer.n_samples and writer.size + sample["length"] > shard_bytes:
                        shards.append(_finish(writer, split, modality))
                        writer = None
                    if writer is None:
                        writer = AtomicTar(out / f"shard-{len(shards):06d}.tar")
                    if data not in readers:
                        readers[data] = open(workdir / data, "rb")
                    readers[data].seek(sample["offset"])
                    writer.write(readers[data].read(sample["length"]))
                if writer is not None:
                    shards.append(_finish(writer, split, modality))
                    writer = None
    except BaseException as err:
        if writer is not None:
            writer.abort(err)
        raise
    finally:
        for reader in readers.values():
            reader.close()
    return shards


def _finish(writer: AtomicTar, split: str, modality: str) -> dict:
    sha256 = writer.close()
    return {"name": writer.path.name, "split": split, "modality": modality,
            "n_samples": writer.n_samples, "bytes": writer.size, "sha256": sha256}


def _totals(summaries: list[dict]) -> dict[str, Any]:
    hours: dict[str, dict[str, float]] = {"modality": {}, "dataset": {}, "subject": {}}
    channels: dict[str, int] = {}
    splits: dict[str, dict[str, Any]] = {s: {"samples": 0, "subjects": set()} for s in SPLITS}
    n = 0
    for summary in summaries:
        for s in summary["samples"]:
            n += 1
            h = s["duration_s"] / 3600.0
            for key, value in (("modality", s["modality"]), ("dataset", s["dataset"]),
                               ("subject", f"{s['dataset']}/{s['subject']}")):
                hours[key][value] = hours[key].get(value, 0.0) + h
            channels[str(s["n_sensors"])] = channels.get(str(s["n_sensors"]), 0) + 1
            splits[s["split"]]["samples"] += 1
            splits[s["split"]]["subjects"].add(f"{s['dataset']}/{s['subject']}")
    return {
        "totals": {
            "samples": n,
            "hours": sum(hours["modality"].values()),
            "hours_by_modality": hours["modality"],
            "hours_by_dataset": hours["dataset"],
            "hours_by_subject": hours["subject"],
            "channel_histogram": dict(sorted(channels.items(), key=lambda kv: int(kv[0]))),
        },
        "splits": {k: {"samples": v["samples"], "subjects": sorted(v["subjects"])}
                   for k, v in splits.items()},
    }


def write_shards(
    inputs: str | os.PathLike | list,
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    workers: int = 1,
    part: tuple[int, int] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Tokenize many recordings into WebDataset shards and a manifest.

    Parameters
    ----------
    inputs : path | glob | list
        BIDS roots, directories, glob patterns or files (see :func:`discover`).
    out : path-like
        Output directory (created): ``shard-000000.tar ...``, ``manifest.json``,
        ``failures.jsonl``.
    options : PrepareOptions | None
        Tokenizer and shard options; keyword ``overrides`` set its fields.
    workers : int
        Processes tokenizing files in parallel.
    part : (I, N) | None
        Tokenize only part ``I`` of ``N`` of the inputs (a hash of each path, see
        :mod:`neurofm.datasets.parts`) into ``out/part-IIII-of-NNNN/``; one
        :func:`~neurofm.datasets.parts.merge_parts` over ``out`` then writes the manifest.

    Returns
    -------
    manifest : dict
        As written to ``manifest.json``; ``manifest['failures']`` counts failed files.
    """
    options = options or PrepareOptions()
    if overrides:
        options = PrepareOptions(**{**asdict(options), **overrides})
    out = Path(out) if part is None else part_dir(out, *part)
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / ".work"
    fingerprint = json.dumps(asdict(options), sort_keys=True)
    stamp = workdir / "options.json"
    if workdir.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(workdir)  # parts of a run with other options cannot be reused
    workdir.mkdir(exist_ok=True)
    write_text_atomic(stamp, fingerprint)
    recording_types = ("bold", "roi") if options.modality == "fmri" else (
        ("meeg",) if options.modality else ("meeg", "bold", "roi"))
    sources = discover(inputs, recording_types=recording_types, keep_unknown=True)
    if not sources:
        raise NeurofmError(f"no recordings found in {inputs}")
    check_needs(sources, options)
    if part is not None:  # a part may hold no file at all: it still writes its (empty) manifest
        sources = [s for s in sources if part_of(s.path, part[1]) == part[0]]
        logger.info("part %d of %d: %d files", part[0], part[1], len(sources))
    summaries = _resumable(workdir, sources)
    todo = [src for src in sources if src.path not in summaries]
    if summaries:
        logger.info("resuming: %d of %d files already tokenized", len(summaries), len(sources))
    try:
        run_workers(todo, options, workdir, workers, summaries)
    except OSError as err:
        if not is_disk_full(err, workdir):
            raise
        raise _prepare_disk_full(out, workdir, summaries, len(sources)) from err

    ordered = [summaries[s.path] for s in sources]
    ok = [s for s in ordered if s["status"] == "ok"]
    failed = [s for s in ordered if s["status"] != "ok"]
    # an old manifest must not describe new shards if this run dies while packing: without
    # one the directory is refused until a run completes (old or new, never mixed)
    (out / "manifest.json").unlink(missing_ok=True)
    try:
        shards = _pack(out, workdir, ok, int(options.shard_size_mb * 2**20))
    except DiskFullError as err:
        raise DiskFullError(f"disk full while packing shards: they need about "
                            f"{sum(s['length'] for s in ok if 'length' in s) / 2**20:.1f} MB beside the "
                            f"{journal_bytes(workdir) / 2**20:.1f} MB of tokenized samples in .work/, and "
                            f"{free_bytes(out) / 2**20:.1f} MB is free; the tokenized files are kept: free "
                            "space and run the same command again (it packs without re-tokenizing)",
                            out, needed_bytes=err.needed_bytes, free_bytes=free_bytes(out)) from err
    manifest = {
        "format": "neurofm-shards/1",
        "neurofm_version": __version__,
        "options": asdict(options),
        "shards": shards,
        **_totals(ok),
        "files": {"found": len(sources), "ok": len(ok), "failed": len(failed)},
        "failures": len(failed),
    }
    write_json_atomic(out / "failures.jsonl", None, lines=[
        {k: s[k] for k in ("path", "error_type", "error")} for s in failed])
    write_json_atomic(out / "manifest.json", manifest)
    # shards of an earlier, larger pack that the new manifest no longer names (same-named
    # ones were replaced atomically), removed only once the new manifest is in place
    current = {s["name"] for s in shards}
    for old in out.glob("shard-*.tar"):
        if old.name not in current:
            old.unlink()
    if not failed:  # keep the parts while failed files may still be retried
        shutil.rmtree(workdir)
    return manifest


def _prepare_disk_full(out: Path, workdir: Path, summaries: dict, n_files: int) -> DiskFullError:
    """The error for a disk that filled while tokenizing: the space still needed, estimated
    from the bytes per file so far (tokenized samples, then the shards packed from them)."""
    done = [s for s in summaries.values() if s["status"] == "ok"]
    per_file = sum(s["length"] for s in done) / len(done) if done else 0.0
    journal = journal_bytes(workdir)
    needed = int(max(per_file * n_files * 2 - journal, 0))
    free = free_bytes(out)
    estimate = (f"about {needed / 2**20:.1f} MB more" if done else "more than is free")
    return DiskFullError(
        f"disk full while tokenizing ({len(done)} of {n_files} files done): the run needs {estimate} "
        f"(tokenized samples, then shards as large), and {free / 2**20:.1f} MB is free; the "
        "files tokenized so far are kept in .work/: free space and run the same command again "
        "to continue from them", out, needed_bytes=needed, free_bytes=free)


