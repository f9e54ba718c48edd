"""Find recordings: BIDS roots (via mne-bids), plain directories, glob patterns."""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from neurofm.errors import NeurofmError
from neurofm.tokenizers.dispatch import recording_type_of

logger = logging.getLogger("neurofm.datasets")

UNKNOWN_FORMAT = ("not a recording neurofm can read (unknown extension; neurofm reads what "
                  "mne.io.read_raw reads, 4-D NIfTI and .1D/.csv/.tsv ROI tables)")


@dataclass(frozen=True)
class Source:
    """One input file and what is known about it before reading.

    Attributes
    ----------
    path : str
    recording_type : 'meeg' | 'bold' | 'roi'
        Reader family: MNE recording, 4-D NIfTI, or ROI table.
    dataset : str
        Dataset name (BIDS ``Name``, else the input directory name).
    entities : dict
        BIDS entities (subject, session, task, run) when known.
    """

    path: str
    recording_type: str
    dataset: str
    entities: dict = field(default_factory=dict, hash=False, compare=False)


def _is_4d(path: str) -> bool:
    import nibabel as nib

    try:
        shape = nib.load(path).shape  # header only
    except Exception:
        return True  # let the tokenizer report the unreadable file
    return len(shape) == 4 and shape[3] > 1


def _bids_sources(root: Path) -> list[Source]:
    from mne_bids import find_matching_paths, get_entities_from_fname

    with open(root / "dataset_description.json") as fh:
        dataset = json.load(fh).get("Name") or root.name
    found: list[Source] = []
    for datatype in ("eeg", "meg", "ieeg"):
        for bp in find_matching_paths(root, datatypes=datatype, suffixes=datatype,
                                      ignore_json=True, ignore_nosub=True):
            path = str(bp.fpath)
            if recording_type_of(path) == "meeg" and not path.endswith((".eeg", ".vmrk", ".fdt")):
                found.append(Source(path, "meeg", dataset, _entities(get_entities_from_fname(bp.basename))))
    for bp in find_matching_paths(root, datatypes="func", suffixes="bold",
                                  extensions=[".nii", ".nii.gz"], ignore_nosub=True):
        found.append(Source(str(bp.fpath), "bold", dataset,
                            _entities(get_entities_from_fname(bp.basename))))
    return found


def _entities(ents: dict) -> dict:
    return {k: v for k, v in ents.items() if v is not None and k in ("subject", "session", "task", "run")}


def discover(inputs: str | os.PathLike | list, recording_types: tuple[str, ...] = ("meeg", "bold", "roi"),
             keep_unknown: bool = False) -> list[Source]:
    """All recordings under ``inputs``, sorted by path (so runs are deterministic).

    Parameters
    ----------
    inputs : path | glob | list of them
        BIDS roots (a ``dataset_description.json`` at the top: EEG, MEG, iEEG and
        ``func/*_bold.nii[.gz]`` found with mne-bids), plain directories (searched
        recursively by extension), glob patterns (``**`` allowed) or single files.
    recording_types : tuple of str
        Reader families to keep: ``'meeg'``, ``'bold'``, ``'roi'``.
    keep_unknown : bool
        A file named explicitly whose format is unknown is returned with recording_type
        ``'unknown'`` (so a prepare run can report it and go on) instead of raising.

    Returns
    -------
    list of Source
    """
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    sources: dict[str, Source] = {}
    for item in items:
        item = os.fspath(item)
        if any(ch in item for ch in "*?["):
            paths = sorted(glob.glob(item, recursive=True))
            if not paths:
                raise NeurofmError(f"glob pattern {item!r} matches no file")
            # the deepest folder of the pattern without a wildcard: 'abide/rois/Caltech_*' -> 'rois'
            fixed = re.split(r"[*?\[]", item)[0]
            dataset = Path(os.path.dirname(fixed) or ".").resolve().name or "glob"
            for path in paths:
                recording_type = recording_type_of(path)
                if recording_type:
                    sources.setdefault(path, Source(path, recording_type, dataset))
            continue
        root = Path(item)
        if not root.exists():
            raise NeurofmError("input not found", item)
        if root.is_file() or root.suffix == ".ds" or root.suffix == ".mff":
            recording_type = recording_type_of(str(root))
            if recording_type is None and not keep_unknown:
                raise NeurofmError(UNKNOWN_FORMAT, item)
            sources.setdefault(str(root), Source(str(root), recording_type or "unknown", root.parent.name))
        elif (root / "dataset_description.json").exists():
            for src in _bids_sources(root):
                sources.setdefault(src.path, src)
        else:
            for path in sorted(glob.glob(str(root / "**" / "*"), recursive=True)):
                recording_type = recording_type_of(path)
                if recording_type == "bold" and not _is_4d(path):
                    continue  # atlases, masks and anatomicals live beside BOLD runs
                if recording_type and not any(part.endswith((".ds", ".mff")) for part in Path(path).parent.parts):
                    sources.setdefault(path, Source(path, recording_type, root.name))
    selected = [s for s in sources.values() if s.recording_type in recording_types or s.recording_type == "unknown"]
    return sorted(selected, key=lambda s: s.path)
