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

logger = logging.getLogger("neurofm.datasets")

# Extensions of files that are one recording each (companion files such as .vmrk/.eeg/.fdt
# are found by their readers).
MEEG_EXTENSIONS = (".fif", ".fif.gz", ".edf", ".bdf", ".gdf", ".vhdr", ".set", ".cnt", ".con",
                   ".sqd", ".raw", ".mff", ".ds", ".mef", ".nwb", ".snirf", ".lay", ".eeg.json")
BOLD_EXTENSIONS = (".nii", ".nii.gz")
ROI_EXTENSIONS = (".1D", ".1d")
UNKNOWN_FORMAT = ("not a recording neurofm can read (unknown extension; neurofm reads what "
                  "mne.io.read_raw reads, 4-D NIfTI and .1D/.csv/.tsv ROI tables)")
SKIP_SUFFIXES = ("-eve.fif", "_events.fif", "-ave.fif", "-cov.fif", "-trans.fif", "-fwd.fif",
                 "-inv.fif", "-epo.fif", "-ica.fif", "-proj.fif", "-annot.fif")


@dataclass(frozen=True)
class Source:
    """One input file and what is known about it before reading.

    Attributes
    ----------
    path : str
    kind : 'meeg' | 'bold' | 'roi'
        Reader family: MNE recording, 4-D NIfTI, or ROI table.
    dataset : str
        Dataset name (BIDS ``Name``, else the input directory name).
    entities : dict
        BIDS entities (subject, session, task, run) when known.
    """

    path: str
    kind: str
    dataset: str
    entities: dict = field(default_factory=dict, hash=False, compare=False)


def kind_of(path: str) -> str | None:
    """``'meeg'``, ``'bold'``, ``'roi'`` by the file's name, or None (not a recording neurofm reads)."""
    name = os.path.basename(path)
    lower = name.lower()
    if lower.endswith(SKIP_SUFFIXES):
        return None
    if lower.endswith(BOLD_EXTENSIONS):
        return "bold"
    if name.endswith(ROI_EXTENSIONS):
        return "roi"
    if lower.endswith(MEEG_EXTENSIONS):
        return "meeg"
    if lower.endswith(".eeg") and not _brainvision_companion(path):
        return "meeg"  # Nihon Kohden (.EEG + .PNT/.LOG/.21E); BrainVision data is read via its .vhdr
    if "pdf" in name and "." not in name and os.path.exists(
            os.path.join(os.path.dirname(path), name.replace("pdf", "config"))):
        return "meeg"  # 4D/BTi run
    return None


def _brainvision_companion(path: str) -> bool:
    stem = os.path.splitext(path)[0]
    return any(os.path.exists(stem + ext) for ext in (".vhdr", ".VHDR", ".ahdr"))


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
            if kind_of(path) == "meeg" and not path.endswith((".eeg", ".vmrk", ".fdt")):
                found.append(Source(path, "meeg", dataset, _entities(get_entities_from_fname(bp.basename))))
    for bp in find_matching_paths(root, datatypes="func", suffixes="bold",
                                  extensions=[".nii", ".nii.gz"], ignore_nosub=True):
        found.append(Source(str(bp.fpath), "bold", dataset,
                            _entities(get_entities_from_fname(bp.basename))))
    return found


def _entities(ents: dict) -> dict:
    return {k: v for k, v in ents.items() if v is not None and k in ("subject", "session", "task", "run")}


def discover(inputs: str | os.PathLike | list, kinds: tuple[str, ...] = ("meeg", "bold", "roi"),
             keep_unknown: bool = False) -> list[Source]:
    """All recordings under ``inputs``, sorted by path (so runs are deterministic).

    Parameters
    ----------
    inputs : path | glob | list of them
        BIDS roots (a ``dataset_description.json`` at the top: EEG, MEG, iEEG and
        ``func/*_bold.nii[.gz]`` found with mne-bids), plain directories (searched
        recursively by extension), glob patterns (``**`` allowed) or single files.
    kinds : tuple of str
        Reader families to keep: ``'meeg'``, ``'bold'``, ``'roi'``.
    keep_unknown : bool
        A file named explicitly whose format is unknown is returned with kind
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
                kind = kind_of(path)
                if kind:
                    sources.setdefault(path, Source(path, kind, dataset))
            continue
        root = Path(item)
        if not root.exists():
            raise NeurofmError("input not found", item)
        if root.is_file() or root.suffix == ".ds" or root.suffix == ".mff":
            kind = kind_of(str(root))
            if kind is None and not keep_unknown:
                raise NeurofmError(UNKNOWN_FORMAT, item)
            sources.setdefault(str(root), Source(str(root), kind or "unknown", root.parent.name))
        elif (root / "dataset_description.json").exists():
            for src in _bids_sources(root):
                sources.setdefault(src.path, src)
        else:
            for path in sorted(glob.glob(str(root / "**" / "*"), recursive=True)):
                kind = kind_of(path)
                if kind == "bold" and not _is_4d(path):
                    continue  # atlases, masks and anatomicals live beside BOLD runs
                if kind and not any(part.endswith((".ds", ".mff")) for part in Path(path).parent.parts):
                    sources.setdefault(path, Source(path, kind, root.name))
    selected = [s for s in sources.values() if s.kind in kinds or s.kind == "unknown"]
    return sorted(selected, key=lambda s: s.path)
