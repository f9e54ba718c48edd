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
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import tarfile
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from neurofm._version import __version__
from neurofm.console import make_progress, setup_logging
from neurofm.datasets.codec import FIELDS, encode_segment, json_default
from neurofm.datasets.discovery import UNKNOWN_FORMAT, Source, discover
from neurofm.datasets.parts import part_dir, part_of
from neurofm.datasets.phenotype import join_phenotype, read_phenotype, subject_key
from neurofm.errors import ConfigError, DiskFullError, NeurofmError
from neurofm.io import atomic_write, free_bytes, is_disk_full, write_text_atomic
from neurofm.options import check_keywords, keyword_names, respell
from neurofm.tokenizers.naming import check_subject_pattern, entities_from_name
from neurofm.tokenizers.options import MEEG_OPTION_NAMES, MeegOptions
from neurofm.tokenizers.segment import MODALITIES, Segment

logger = logging.getLogger("neurofm.datasets")

# tokenizer options a prepare run sets itself are not extra options
MEEG_OPTIONS = tuple(name for name in MEEG_OPTION_NAMES if name != "sfreq")  # sfreq: top level


@cache
def _fmri_options() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The extra options of ``tokenize_bold`` and of ``tokenize_roi_table``, read from their
    signatures on first use: a worker that tokenizes EEG only never imports the fMRI stack."""
    from neurofm.tokenizers.fmri import tokenize_bold
    from neurofm.tokenizers.roi_table import tokenize_roi_table

    return (keyword_names(tokenize_bold, exclude=("img", "atlas", "window_s", "dataset", "entities")),
            keyword_names(tokenize_roi_table, exclude=("table", "coords", "tr_s", "window_s",
                                                       "dataset", "entities")))


def __getattr__(name: str):  # FMRI_OPTIONS and ROI_OPTIONS, for the modules that import them
    if name in ("FMRI_OPTIONS", "ROI_OPTIONS"):
        return _fmri_options()[name == "ROI_OPTIONS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SPLITS = ("train", "val", "test")


@dataclass
class PrepareOptions:
    """What ``neurofm prepare`` does with each file (plain data; Hydra fills it).

    Attributes
    ----------
    modality : str | None
        Keep only segments of this modality (``eeg``, ``meg``, ``ieeg``, ``fmri``).
    window_s : float
        EEG/MEG/iEEG window length, s.
    fmri_window_s : float
        fMRI window length, s.
    stride_s : float | None
        EEG/MEG/iEEG window step, s; default: the window (no overlap). fMRI windows
        take ``fmri={'stride_s': ...}``.
    sfreq : float
        Target rate of EEG/MEG/iEEG, Hz.
    atlas : str | None
        Labels atlas for BOLD inputs.
    roi_tr_s : float | dict | None
        TR of ROI tables (they do not carry one), s: one number, or a mapping from site
        (the ``site`` entity, e.g. ABIDE's ``Pitt``) or file-name glob to TR.
    roi_coords : str | None
        Atlas image or coordinate table for ROI tables (default: ``atlas``).
    phenotype : str | None
        participants.tsv / phenotype CSV joined into ``meta['phenotype']``.
    subject_pattern : str | None
        Regular expression that finds the subject ID in a file name (a
        ``(?P<subject>...)`` group or one group), for files that are neither BIDS nor a
        layout neurofm knows (see :func:`neurofm.tokenizers.naming.entities_from_name`).
    meeg, fmri : dict
        Extra keyword arguments for ``tokenize_raw`` / ``tokenize_bold`` (ROI tables
        take the ones :func:`tokenize_roi_table` knows: ``stride_s``, ``resample_tr_s``,
        ``detrend``, ``standardize``, ``empty_parcels``).
    dtype : 'float16' | 'float32'
        Storage type of ``signal.npy``.
    shard_size_mb : float
        Target shard size.
    split_fractions : tuple of float
        Train/val/test fractions of *subjects*.
    seed : int
        Seeds the subject split.
    """

    modality: str | None = None
    window_s: float = 10.0
    fmri_window_s: float = 120.0
    stride_s: float | None = None
    sfreq: float = 200.0
    atlas: str | None = None
    roi_tr_s: Any = None
    roi_coords: str | None = None
    phenotype: str | None = None
    subject_pattern: str | None = None
    meeg: dict[str, Any] = field(default_factory=dict)
    fmri: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float16"
    shard_size_mb: float = 256.0
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    def meeg_options(self) -> MeegOptions:
        """How EEG/MEG/iEEG recordings are cleaned: ``sfreq`` and ``meeg`` over the defaults."""
        return MeegOptions.of({"sfreq": self.sfreq, **self.meeg}, "+meeg.{}=")

    def __post_init__(self) -> None:
        if self.dtype not in ("float16", "float32"):
            raise ConfigError(f"dtype must be 'float16' or 'float32', got {self.dtype!r}")
        if self.modality is not None and self.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {MODALITIES} or null, got {self.modality!r}")
        fractions = tuple(float(f) for f in self.split_fractions)
        if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
            raise ConfigError(f"split_fractions must be 3 non-negative numbers summing to 1, got {fractions}")
        self.split_fractions = fractions
        self.meeg = check_keywords(self.meeg or {}, MEEG_OPTIONS, "+meeg.{}=")
        self.meeg_options()  # bad values fail here, before any file is read
        self.fmri = check_keywords(self.fmri or {}, _fmri_options()[0], "+fmri.{}=")
        check_subject_pattern(self.subject_pattern)
        if isinstance(self.roi_tr_s, dict):
            self.roi_tr_s = {str(k): float(v) for k, v in self.roi_tr_s.items()}


def roi_tr_for(path: str, entities: dict, roi_tr_s: float | dict | None) -> float:
    """The TR of one ROI table: ``roi_tr_s`` itself, or its entry for the file's site or name."""

    if roi_tr_s is None:
        raise ConfigError("ROI tables do not carry a TR: pass roi_tr_s=<seconds> or a mapping "
                          "roi_tr_s='{SITE: seconds, ...}'", path)
    if not isinstance(roi_tr_s, dict):
        return float(roi_tr_s)
    site = str(entities.get("site", "")).lower()
    for key, value in roi_tr_s.items():
        if key.lower() == site or fnmatch.fnmatch(os.path.basename(path), key):
            return value
    raise ConfigError(f"roi_tr_s has no TR for site {entities.get('site')!r} (keys: "
                      f"{sorted(roi_tr_s)}); add it, e.g. +roi_tr_s.{entities.get('site', 'SITE')}=2.0",
                      path)


# --------------------------------------------------------------------------- samples


def split_of(dataset: str | None, subject: str | None, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> str:
    """Deterministic subject-level split: every window of a subject lands in the same split."""

    digest = hashlib.sha256(f"{seed}:{dataset}:{subject_key(subject)}".encode()).hexdigest()
    u = int(digest[:12], 16) / 16**12
    return SPLITS[0] if u < fractions[0] else SPLITS[1] if u < fractions[0] + fractions[1] else SPLITS[2]


# --------------------------------------------------------------------------- tar I/O


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = "neurofm"
    return info


def _sample_bytes(key: str, files: dict[str, bytes]) -> bytes:
    """One sample as the tar members ``tarfile`` would write: header, data, NUL padding."""
    chunks = []
    for suffix in FIELDS:
        data = files[suffix]
        chunks += [_tarinfo(f"{key}.{suffix}", len(data)).tobuf(tarfile.USTAR_FORMAT, "utf-8",
                                                                 "surrogateescape"),
                   data, bytes(-len(data) % tarfile.BLOCKSIZE)]
    return b"".join(chunks)


class _AtomicTar:
    """A tar written through :func:`~neurofm.io.atomic_write`: renamed onto ``path`` when
    closed cleanly, removed by :meth:`abort`.

    Samples go in as ready-made member bytes (:func:`_sample_bytes`, or a copy of them from
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


class _Journal:
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


_JOURNALS: dict[tuple[int, str], _Journal] = {}


def _journal(workdir: str | Path) -> _Journal:
    """This process's journal in ``workdir`` (opened on first use)."""
    key = (os.getpid(), str(workdir))
    if key not in _JOURNALS:
        _JOURNALS[key] = _Journal(Path(workdir))
    return _JOURNALS[key]


def _close_journal(workdir: str | Path) -> None:
    journal = _JOURNALS.pop((os.getpid(), str(workdir)), None)
    if journal is not None:
        journal.close()


def _read_journals(workdir: Path, names: set[str] | None = None) -> tuple[list[dict], set[str]]:
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


# --------------------------------------------------------------------------- tokenize one file


def _sample_key(src: Source) -> str:
    """The key prefix of a file's samples: stable across runs, unique per path."""
    return hashlib.sha1(src.path.encode()).hexdigest()[:16]


def prepare_spelling(kind: str) -> dict[str, str]:
    """How ``neurofm prepare`` spells each tokenizer option of a file of this kind."""
    if kind == "meeg":
        return {k: f"+meeg.{k}" for k in MEEG_OPTIONS}
    extra = {k: f"+fmri.{k}" for k in _fmri_options()[0]}
    return {**extra, "window_s": "fmri_window_s",
            "tr_s": "roi_tr_s" if kind == "roi" else "+fmri.tr_s"}


def tokenize_source(src: Source, options: PrepareOptions, phenotype: dict | None = None,
                    spelling: dict[str, str] | None = None) -> list[Segment]:
    """Tokenize one discovered file with the options of a prepare run.

    Errors name options as ``spelling`` says (default: as ``neurofm prepare`` spells them).
    """
    try:
        return _tokenize_source(src, options, phenotype)
    except NeurofmError as err:
        respell(err, prepare_spelling(src.kind) if spelling is None else spelling)
        raise


def _tokenize_source(src: Source, options: PrepareOptions, phenotype: dict | None) -> list[Segment]:

    entities = src.entities or entities_from_name(src.path, options.subject_pattern)
    if src.kind == "meeg":
        # mne and scipy.signal: only workers that read M/EEG import them
        from neurofm.tokenizers.eeg_meg import tokenize_raw

        segments = tokenize_raw(src.path, window_s=options.window_s, stride_s=options.stride_s,
                                options=options.meeg_options(), dataset=src.dataset, entities=entities)
    elif src.kind == "bold":
        from neurofm.tokenizers.fmri import tokenize_bold

        if options.atlas is None:
            raise ConfigError("BOLD inputs need an atlas: pass atlas=<labels image>")
        segments = tokenize_bold(src.path, atlas=options.atlas, window_s=options.fmri_window_s,
                                 dataset=src.dataset, entities=entities,
                                 **options.fmri)
    else:
        from neurofm.tokenizers.roi_table import tokenize_roi_table

        coords = options.roi_coords or options.atlas
        if coords is None:
            raise ConfigError("ROI tables need roi_coords=<atlas or coordinate table>")
        roi_options = {k: v for k, v in options.fmri.items() if k in _fmri_options()[1]}
        segments = tokenize_roi_table(src.path, coords=coords,
                                      tr_s=roi_tr_for(src.path, entities, options.roi_tr_s),
                                      window_s=options.fmri_window_s, dataset=src.dataset,
                                      entities=entities, **roi_options)
    if options.modality is not None:
        segments = [s for s in segments if s.modality == options.modality]
    if phenotype is not None:
        join_phenotype(segments, phenotype)
    return list(segments)


def _prepare_one(src: Source, options: PrepareOptions, workdir: str) -> dict[str, Any]:
    """Tokenize ``src`` into this process's journal in ``workdir``; return the summary."""

    journal = _journal(workdir)
    journal.started(src.path)  # tells a broken pool which files were running
    key = _sample_key(src)
    try:
        if src.kind == "unknown":
            raise NeurofmError(UNKNOWN_FORMAT, src.path)
        phenotype = read_phenotype(options.phenotype) if options.phenotype else None
        segments = tokenize_source(src, options, phenotype)
        samples, digest, start = [], hashlib.sha256(), journal.size
        for k, seg in enumerate(segments):
            split = split_of(seg.meta.get("dataset"), seg.meta.get("subject"),
                             options.split_fractions, options.seed)
            seg.meta["split"] = split
            sample = _sample_bytes(f"{key}-{k:06d}", encode_segment(seg, options.dtype))
            digest.update(sample)
            samples.append({"offset": journal.append(sample), "length": len(sample), "split": split,
                            "modality": seg.modality, "n_sensors": seg.n_sensors,
                            "duration_s": seg.duration_s, "subject": str(seg.meta.get("subject")),
                            "dataset": str(seg.meta.get("dataset"))})
        summary = {"path": src.path, "status": "ok", "samples": samples,
                   "data": journal.samples_path.name, "offset": start, "length": journal.size - start,
                   "sha256": digest.hexdigest()}
    except Exception as err:  # one bad input is that input's failure, never the run's
        if is_disk_full(err, journal.samples_path):
            raise  # not the file's fault: the run stops, and a re-run resumes here
        summary = {"path": src.path, "status": "failed", "error_type": type(err).__name__,
                   "error": str(err), "samples": []}
        if os.environ.get("NEUROFM_DEBUG"):
            summary["traceback"] = traceback.format_exc()
    journal.done(summary)
    return summary


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
    for summary in _read_journals(workdir)[0]:
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
    writer: _AtomicTar | None = None
    try:
        for split in SPLITS:
            for modality in MODALITIES:
                writer: _AtomicTar | None = None
                for data, sample in groups.get((split, modality), []):
                    if writer is not None and writer.n_samples and writer.size + sample["length"] > shard_bytes:
                        shards.append(_finish(writer, split, modality))
                        writer = None
                    if writer is None:
                        writer = _AtomicTar(out / f"shard-{len(shards):06d}.tar")
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


def _finish(writer: _AtomicTar, split: str, modality: str) -> dict:
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
    kinds = ("bold", "roi") if options.modality == "fmri" else (
        ("meeg",) if options.modality else ("meeg", "bold", "roi"))
    sources = discover(inputs, kinds=kinds, keep_unknown=True)
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
        _run_workers(todo, options, workdir, workers, summaries)
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
                            f"{_journal_bytes(workdir) / 2**20:.1f} MB of tokenized samples in .work/, and "
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
    _write_json_atomic(out / "failures.jsonl", None, lines=[
        {k: s[k] for k in ("path", "error_type", "error")} for s in failed])
    _write_json_atomic(out / "manifest.json", manifest)
    # shards of an earlier, larger pack that the new manifest no longer names (same-named
    # ones were replaced atomically), removed only once the new manifest is in place
    current = {s["name"] for s in shards}
    for old in out.glob("shard-*.tar"):
        if old.name not in current:
            old.unlink()
    if not failed:  # keep the parts while failed files may still be retried
        shutil.rmtree(workdir)
    return manifest


def check_needs(sources: list[Source], options: PrepareOptions) -> None:
    """Options every file of a kind needs: one error before any work, not one per file."""
    found = {s.kind for s in sources}
    if "bold" in found and options.atlas is None:
        n = sum(s.kind == "bold" for s in sources)
        raise ConfigError(f"{n} inputs are 4-D BOLD images, which need an atlas: pass "
                          "atlas=<labels image> (or modality=eeg|meg|ieeg to skip them)")
    if "roi" in found and (options.roi_coords or options.atlas) is None:
        raise ConfigError("ROI tables need the atlas they were extracted with (or an x,y,z table): "
                          "pass roi_coords=<path>")
    if "roi" in found and options.roi_tr_s is None:
        raise ConfigError("ROI tables do not carry a TR: pass roi_tr_s=<seconds>, or one per site "
                          "as roi_tr_s='{SITE: seconds, ...}'")


def _write_json_atomic(path: Path, obj: Any, lines: list | None = None) -> None:
    if lines is not None:
        write_text_atomic(path, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    else:
        write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True, default=json_default) + "\n")


def _journal_bytes(workdir: Path) -> int:
    return sum(p.stat().st_size for p in workdir.glob("*.samples"))


def _prepare_disk_full(out: Path, workdir: Path, summaries: dict, n_files: int) -> DiskFullError:
    """The error for a disk that filled while tokenizing: the space still needed, estimated
    from the bytes per file so far (tokenized samples, then the shards packed from them)."""
    done = [s for s in summaries.values() if s["status"] == "ok"]
    per_file = sum(s["length"] for s in done) / len(done) if done else 0.0
    journal = _journal_bytes(workdir)
    needed = int(max(per_file * n_files * 2 - journal, 0))
    free = free_bytes(out)
    estimate = (f"about {needed / 2**20:.1f} MB more" if done else "more than is free")
    return DiskFullError(
        f"disk full while tokenizing ({len(done)} of {n_files} files done): the run needs {estimate} "
        f"(tokenized samples, then shards as large), and {free / 2**20:.1f} MB is free; the "
        "files tokenized so far are kept in .work/: free space and run the same command again "
        "to continue from them", out, needed_bytes=needed, free_bytes=free)


def _run_workers(todo: list[Source], options: PrepareOptions, workdir: Path, workers: int,
                 summaries: dict[str, dict], task: Callable = None) -> None:
    """Tokenize ``todo`` in ``workers`` processes. A worker that dies (the OOM killer, a
    crash in a reader) breaks the pool: the files that were running are then retried one at
    a time, and one that kills its worker again is that file's failure; the others go on."""
    task = task or _prepare_one
    if not todo:
        return
    with make_progress() as progress:
        bar = progress.add_task("tokenizing", total=len(todo))

        def record(summary: dict) -> None:
            summaries[summary["path"]] = summary
            if summary["status"] != "ok":
                logger.warning("%s: failed (%s)", summary["path"], summary["error"])
            progress.advance(bar)

        if workers <= 1:
            try:
                for src in todo:
                    record(task(src, options, str(workdir)))
            finally:
                _close_journal(workdir)
            return
        queue = list(todo)
        while queue:
            unfinished, started = _pool_run(queue, options, workdir, workers, record, task)
            running = [s for s in unfinished if s.path in started]
            for src in running:  # alone, so a second death names its file
                if _pool_run([src], options, workdir, 1, record, task)[0]:
                    record({"path": src.path, "status": "failed", "error_type": "WorkerDied",
                            "samples": [], "error": "the tokenizer process died while reading this "
                                                    "file (killed, e.g. out of memory, or a crash in its reader)"})
            queue = [s for s in unfinished if s not in running]


def _pool_run(todo: list[Source], options: PrepareOptions, workdir: Path, workers: int,
              record: Callable, task: Callable) -> tuple[list[Source], set[str]]:
    """Run ``todo`` in a fresh process pool; if the pool broke, the sources left unfinished
    and the paths its workers had started."""
    before = {p.name for p in workdir.glob("*.jsonl")}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=setup_logging, initargs=("WARNING",)) as pool:
        futures = {pool.submit(task, src, options, str(workdir)): src for src in todo}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    if not isinstance(future.exception(), BrokenProcessPool):
                        record(future.result())
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    unfinished = [futures[f] for f in futures
                                  if f in pending or isinstance(f.exception(), BrokenProcessPool)]
                    # the journals this pool's processes opened (a fresh pool, fresh processes)
                    fresh = {p.name for p in workdir.glob("*.jsonl")} - before
                    return unfinished, _read_journals(workdir, fresh)[1]
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return [], set()
