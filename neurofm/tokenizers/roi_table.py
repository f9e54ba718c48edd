"""Precomputed ROI time-series tables (ABIDE/PCP ``.1D``, CSV/TSV) -> parcel Segments.

A table has one column per parcel and one row per TR; the TR is not in the file (a
number, or a per-site mapping, comes with it) and the parcel positions come from the
atlas it was extracted with or an x, y, z table.
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache

import numpy as np
import pandas as pd

from neurofm.errors import AtlasError, BoldError
from neurofm.options import option_name
from neurofm.tokenizers.atlas import parcellate
from neurofm.tokenizers.parcels import PLAUSIBLE_TR_S, clean_series, parcel_segments
from neurofm.tokenizers.segment import Segments

logger = logging.getLogger("neurofm.tokenizers")


def read_roi_table(path: str | os.PathLike) -> tuple[np.ndarray, list[str] | None]:
    """Read a ``T x P`` table of parcel time series (``.1D``, ``.csv``, ``.tsv``, ``.txt``).

    AFNI/ABIDE ``.1D`` files are whitespace-separated with an optional ``#``
    header line of column names. A header is detected when the first row is
    not numeric.

    Returns
    -------
    values : ndarray, shape (n_times, n_parcels)
    columns : list of str | None
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BoldError("ROI table not found", path)
    try:
        with open(path, encoding="utf-8") as fh:
            first, second = fh.readline().strip(), fh.readline().rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise BoldError(f"not a text table: byte {err.object[err.start]:#04x} at offset {err.start} "
                        "is not UTF-8 text (a ROI table holds one row of numbers per volume)",
                        path) from err
    sep = r"\s+" if path.endswith((".1D", ".1d", ".txt")) else ("\t" if path.endswith(".tsv") else ",")
    if sep == r"\s+" and "\t" in second and len(second.split("\t")) == len(second.split()):
        # one tab between values (ABIDE's tables): pandas' plain split takes ~27 % less time than
        # its whitespace rule; a file that mixes separators further down is read again
        try:
            return _parse_table(path, first, "\t")
        except BoldError:
            pass
    return _parse_table(path, first, sep)


def _parse_table(path: str, first: str, sep: str) -> tuple[np.ndarray, list[str] | None]:
    columns = None
    try:
        if first.startswith("#"):
            columns = re.split(r"\s+|,|\t", first.lstrip("#").strip())
            columns = [c.lstrip("#") for c in columns if c]
            table = pd.read_csv(path, sep=sep, header=None, comment="#")
        else:
            tokens = [t for t in re.split(sep, first) if t]
            numeric = all(_is_number(t) for t in tokens)
            table = pd.read_csv(path, sep=sep, header=None if numeric else 0)
            if not numeric:
                columns = [str(c) for c in table.columns]
    except UnicodeDecodeError as err:  # text at the top, binary further down
        raise BoldError(f"not a text table: byte {err.object[err.start]:#04x} at offset {err.start} "
                        "is not UTF-8 text", path) from err
    except (pd.errors.ParserError, ValueError) as err:
        raise BoldError(f"cannot parse ROI table ({err})", path) from err
    try:
        values = table.to_numpy(dtype=np.float64)
    except ValueError as err:
        raise BoldError(f"ROI table has non-numeric values ({err})", path) from err
    if values.ndim != 2 or values.shape[0] < 2:
        raise BoldError(f"ROI table has shape {values.shape}; expected T x P with T >= 2", path)
    if columns is not None and len(columns) != values.shape[1]:
        raise BoldError(f"header names {len(columns)} columns but rows have {values.shape[1]}", path)
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values).all(axis=0))
        raise BoldError(f"NaN/inf in columns {bad[:10].tolist()}", path)
    return values, columns



def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True



def roi_coordinates(coords, n_parcels: int, columns: list[str] | None, where: str):
    """(centroids_mm [P, 3], labels, names) of a table's ``n_parcels`` columns from ``coords``: an
    atlas image (labels in column order), an x, y, z table in mm, or a ``[P, 3]`` array."""
    if isinstance(coords, np.ndarray):
        if coords.shape != (n_parcels, 3):
            raise BoldError(f"coords has shape {coords.shape}; expected ({n_parcels}, 3) in mm", where)
        return coords.astype(np.float64), list(range(1, n_parcels + 1)), columns or [
            f"parcel-{i}" for i in range(1, n_parcels + 1)]
    cpath = os.fspath(coords)
    if cpath.endswith((".nii", ".nii.gz")):
        # every table of a cohort asks the same question of the same atlas: answer it once
        found = _atlas_coordinates(cpath, os.stat(cpath).st_mtime_ns, n_parcels,
                                   None if columns is None else tuple(columns))
        if found is None:
            raise AtlasError(
                f"ROI table {where} has {n_parcels} columns without label names, but the atlas "
                f"has {len(parcellate(cpath).labels)} labels; name the columns by label value", cpath)
        return found
    table = pd.read_csv(cpath, sep=None, engine="python")
    lower = {c.lower(): c for c in table.columns}
    if not {"x", "y", "z"} <= set(lower):
        raise AtlasError(f"coordinate table needs x, y, z columns (mm); found {list(table.columns)}",
                         cpath)
    if len(table) != n_parcels:
        raise AtlasError(f"coordinate table has {len(table)} rows for {n_parcels} ROI columns", cpath)
    xyz = table[[lower["x"], lower["y"], lower["z"]]].to_numpy(dtype=np.float64)
    labels = table[lower["label"]].tolist() if "label" in lower else list(range(1, n_parcels + 1))
    names = table[lower["name"]].astype(str).tolist() if "name" in lower else (
        columns or [f"parcel-{k}" for k in labels])
    return xyz, labels, names



@lru_cache(maxsize=64)
def _atlas_coordinates(cpath: str, stamp: int, n_parcels: int,
                       columns: tuple[str, ...] | None) -> tuple[np.ndarray, list, list] | None:
    """``roi_coordinates`` for an atlas image (cached; ``stamp`` is its mtime): read-only
    centroids, labels and names, or None if unnamed columns do not match its labels."""
    parc = parcellate(cpath)
    lookup = {int(k): j for j, k in enumerate(parc.labels)}
    if columns is not None and all(re.fullmatch(r"-?\d+(\.0)?", c) for c in columns):
        wanted = [int(float(c)) for c in columns]
        unknown = [k for k in wanted if k not in lookup]
        if unknown:
            raise AtlasError(f"ROI table columns name labels {unknown[:10]} that are not in "
                             f"the atlas (labels {parc.labels.min()}..{parc.labels.max()})", cpath)
        idx = [lookup[k] for k in wanted]
    elif columns is not None and set(columns) <= set(parc.names):
        by_name = {n: j for j, n in enumerate(parc.names)}
        idx = [by_name[c] for c in columns]
    elif n_parcels != len(parc.labels):
        return None
    else:
        idx = list(range(len(parc.labels)))
    centroids = parc.centroids_mm[idx]
    centroids.setflags(write=False)
    return centroids, parc.labels[idx].tolist(), [parc.names[j] for j in idx]


def tokenize_roi_table(
    table: str | os.PathLike | np.ndarray | pd.DataFrame,
    coords: str | os.PathLike | np.ndarray,
    tr_s: float,
    window_s: float = 120.0,
    *,
    stride_s: float | None = None,
    resample_tr_s: float | None = None,
    detrend: bool = True,
    standardize: bool = True,
    empty_parcels: str = "drop",
    dataset: str | None = None,
    entities: dict[str, str] | None = None,
) -> Segments:
    """Tokenize precomputed parcel time series (ABIDE / ADHD-200 style releases).

    Parameters
    ----------
    table : path | ndarray | DataFrame
        ``T x P`` series: ``.1D`` (AFNI, ``#`` header of label values), CSV or TSV.
    coords : path | ndarray
        The atlas image the table came from (columns matched by label value or
        name, else in label order), a CSV/TSV with ``x, y, z`` columns in mm
        (and optional ``label``, ``name``), or an array ``[P, 3]`` in mm.
    tr_s : float
        Repetition time in seconds (tables do not carry it).
    window_s, stride_s, resample_tr_s, detrend, standardize
        As in :func:`tokenize_bold`.
    empty_parcels : 'drop' | 'keep' | 'raise'
        All-zero columns (parcels outside that participant's brain mask, common in
        ABIDE): dropped and listed in ``meta['dropped_parcels']['all_zero']``, kept as
        zero series with ``meta['parcel_valid']`` False, or an error.
    """
    if empty_parcels not in ("drop", "keep", "raise"):
        raise ValueError(f"empty_parcels must be 'drop', 'keep' or 'raise', got {empty_parcels!r}")
    where = os.fspath(table) if isinstance(table, str | os.PathLike) else "<ROI table>"
    if isinstance(table, str | os.PathLike):
        values, columns = read_roi_table(table)
    elif isinstance(table, pd.DataFrame):
        values, columns = table.to_numpy(dtype=np.float64), [str(c) for c in table.columns]
    else:
        values, columns = np.asarray(table, dtype=np.float64), None
    if tr_s is None or not PLAUSIBLE_TR_S[0] <= tr_s <= PLAUSIBLE_TR_S[1]:
        raise BoldError(f"tr_s={tr_s} is not a plausible TR in seconds", where)
    centroids, labels, names = roi_coordinates(coords, values.shape[1], columns, where)
    labels = [int(k) if isinstance(k, int | np.integer) else k for k in labels]
    zero = ~values.any(axis=0)  # outside this participant's brain mask: no data
    zero_labels = [labels[j] for j in np.flatnonzero(zero)]
    if zero.all():
        raise BoldError("every ROI column is all zero: an empty table", where)
    if zero.any() and empty_parcels == "raise":
        raise BoldError(f"{zero.sum()} ROI columns are all zero (labels {zero_labels[:10]}); pass "
                        f"{option_name('empty_parcels')}='drop' or 'keep'", where)
    series = np.zeros_like(values)
    series[:, ~zero] = clean_series(values[:, ~zero], tr_s, None, detrend, standardize, None, None)
    keep = ~zero if empty_parcels == "drop" else np.ones(len(labels), dtype=bool)
    if zero.any():
        logger.debug("%s: %d of %d ROI columns are all zero (%s)", where, zero.sum(), len(labels),
                    empty_parcels)
    return parcel_segments(
        series[:, keep], tr_s, resample_tr_s=resample_tr_s, window_s=window_s, stride_s=stride_s,
        positions_mm=centroids[keep], where=where, n_volumes=values.shape[0], standardize=standardize,
        dataset=dataset, entities=entities, parcel_valid=~zero if empty_parcels == "keep" else None,
        atlas=os.fspath(coords) if isinstance(coords, str | os.PathLike) else "<coords>",
        parcel_labels=[k for k, m in zip(labels, keep, strict=True) if m],
        parcel_names=[n for n, m in zip(names, keep, strict=True) if m],
        dropped_parcels={"all_zero": zero_labels} if empty_parcels == "drop" else {})
