"""Bytes on disk for ``neurofm prepare``: samples as tar members, shards written atomically,
and the append-only journals that record the work done (so a re-run resumes)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neurofm.datasets.codec import FIELDS, json_default
from neurofm.io import atomic_write, write_text_atomic

logger = logging.getLogger("neurofm.datasets")


def tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = "neurofm"
    return info


def sample_bytes(key: str, files: dict[str, bytes]) -> bytes:
    """One sample as the tar members ``tarfile`` would write: header, data, NUL padding."""
    chunks = []
    for suffix in FIELDS:
        data = files[suffix]
        chunks += [tarinfo(f"{key}.{suffix}", len(data)).tobuf(tarfile.USTAR_FORMAT, "utf-8",
                                                                 "surrogateescape"),
                   data, bytes(-len(data) % tarfile.BLOCKSIZE)]
    return b"".join(chunks)


class AtomicTar:
    """A tar written through :func:`~neurofm.io.atomic_write`: renamed onto ``path`` when
    closed cleanly, removed by :meth:`abort`.

    Samples go in as ready-made member bytes (:func:`sample_bytes`, or a copy of them from
    a journal), hashed as they are written; ``close`` ends the archive as ``tarfile`` does
    (two zero blocks, padded to a whole record), fsyncs and renames.
    """

    def __init__(self, path: Path):
        self.path = path
        self._write_context = atomic_write(path, "shard")
        self.tmp = self._write_context.__enter__()
        self.file = open(self.tmp, "wb")
        self.digest = hashlib.sha256()
        self.size = self.n_samples = 0

    def write(self, sample: bytes) -> None:
        self._write(sample)
        self.n_samples += 1

    def _write(self, data: bytes) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)

    def close(self) -> str:
        """Finish, fsync, rename into place; return the sha256 of the file."""
        self._write(bytes(2 * tarfile.BLOCKSIZE))
        self._write(bytes(-self.size % tarfile.RECORDSIZE))
        self.file.close()
        self._write_context.__exit__(None, None, None)  # fsync + rename
        return self.digest.hexdigest()

    def abort(self, err: BaseException) -> None:
        """Remove the temp file after ``err``; raises a ``DiskFullError`` if the disk filled."""
        with contextlib.suppress(OSError):  # closing flushes, and a full disk refuses that too
            self.file.close()
        self._write_context.__exit__(type(err), err, err.__traceback__)


class Journal:
    """What one process tokenized in a run, in two append-only files under ``out/.work/``:
    ``<id>.samples`` (each file's samples as tar members, back to back) and ``<id>.jsonl``
    (a line when a file starts, and its summary, with where its samples lie and their sha256,
    once they are written). Appending costs no new file per input (creating a file is most
    of the per-file cost of small inputs such as ROI tables). Nothing is fsync'ed: a re-run
    trusts a summary only if its bytes are there with that checksum, and skips a line a crash
    tore."""

    def __init__(self, workdir: Path):
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.samples_path = workdir / f"{name}.samples"
        self.samples = open(self.samples_path, "ab")
        self.lines = open(workdir / f"{name}.jsonl", "a")
        self.size = self.samples.tell()

    def started(self, path: str) -> None:
        self._line({"started": path})

    def append(self, sample: bytes) -> int:
        """Append one sample's members; return their offset in the samples file."""
        offset = self.size
        self.samples.write(sample)
        self.size += len(sample)
        return offset

    def done(self, summary: dict) -> None:
        self.samples.flush()  # the samples reach the file before the line naming them
        self._line(summary)

    def _line(self, entry: dict) -> None:
        self.lines.write(json.dumps(entry, sort_keys=True) + "\n")
        self.lines.flush()

    def close(self) -> None:
        try:
            self.samples.close()
        finally:  # a full disk refuses the flush: close the other file all the same
            self.lines.close()


_JOURNALS: dict[tuple[int, str], Journal] = {}


def open_journal(workdir: str | Path) -> Journal:
    """This process's journal in ``workdir`` (opened on first use)."""
    key = (os.getpid(), str(workdir))
    if key not in _JOURNALS:
        _JOURNALS[key] = Journal(Path(workdir))
    return _JOURNALS[key]


def close_journal(workdir: str | Path) -> None:
    journal = _JOURNALS.pop((os.getpid(), str(workdir)), None)
    if journal is not None:
        journal.close()


def read_journals(workdir: Path, names: set[str] | None = None) -> tuple[list[dict], set[str]]:
    """(summaries, paths of files started) in the journals of ``workdir`` (or those named)."""
    summaries, started = [], set()
    for path in sorted(workdir.glob("*.jsonl")):
        if names is not None and path.name not in names:
            continue
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the last line of a journal a crash cut short
            if not isinstance(entry, dict):
                continue  # a cut that left a number or a string
            if "started" in entry:
                started.add(entry["started"])
            elif "path" in entry:
                summaries.append(entry)
    return summaries, started


def read_tar_samples(path: Path | bytes) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of a shard (key, files), in order: a file, or the shard's bytes."""
    with (tarfile.open(fileobj=io.BytesIO(path), mode="r") if isinstance(path, bytes)
          else tarfile.open(path, "r")) as tar:
        current, files = None, {}
        for member in tar:
            key, _, suffix = member.name.partition(".")
            if key != current and files:
                yield current, files
                files = {}
            current = key
            files[suffix] = tar.extractfile(member).read()
        if files:
            yield current, files


def write_json_atomic(path: Path, obj: Any, lines: list | None = None) -> None:
    if lines is not None:
        write_text_atomic(path, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    else:
        write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=json_default) + "\n")


def journal_bytes(workdir: Path) -> int:
    return sum(p.stat().st_size for p in workdir.glob("*.samples"))


