"""Parcel-wise fMRI tokenizer: any atlas, any TR, 4-D BOLD images and ROI tables.

A parcel is a sensor: its token carries the parcel's centroid (MNI, metres),
not its index in one atlas, so a checkpoint works with any parcellation.

Pipeline::

    BOLD (4-D NIfTI) + labels atlas -> atlas resampled to the BOLD grid (nearest)
    -> mean per parcel (nilearn's NiftiLabelsMasker) -> drop / keep parcels outside
    the field of view -> detrend, confounds, band-pass, z-score (nilearn.signal.clean)
    -> optional resampling to a common TR -> windows in seconds -> Segments
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from neurofm.errors import AtlasError, BoldError
from neurofm.options import option_name
from neurofm.tokenizers.atlas import (
    check_same_space,
    image_extent,
    load_image,
    parcel_names,
    parcellate,
    warn_geometry,
)
from neurofm.tokenizers.parcels import (  # noqa: F401  (importable from here too)
    PLAUSIBLE_TR_S,
    clean_series,
    parcel_segments,
    resample_series,
    series_windows,
)
from neurofm.tokenizers.segment import Segments

logger = logging.getLogger("neurofm.tokenizers")

# fMRIPrep columns regressed out by default: 6 motion parameters, their derivatives, WM, CSF.
DEFAULT_CONFOUNDS = (
    "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
    "trans_x_derivative1", "trans_y_derivative1", "trans_z_derivative1",
    "rot_x_derivative1", "rot_y_derivative1", "rot_z_derivative1",
    "white_matter", "csf",
)


# --------------------------------------------------------------------------- atlas


# --------------------------------------------------------------------------- BOLD


def _sidecar_path(path: str | None) -> str | None:
    return None if path is None else re.sub(r"\.nii(\.gz)?$", "", path) + ".json"


def _sidecar(path: str | None) -> dict:
    """The BIDS sidecar JSON of a BOLD image (``{}`` when there is none)."""
    side = _sidecar_path(path)
    if side is None or not os.path.exists(side):
        return {}
    try:
        with open(side, encoding="utf-8") as fh:
            found = json.load(fh)
    except json.JSONDecodeError as err:
        raise BoldError(f"sidecar is not valid JSON ({err.msg} at line {err.lineno}, column "
                        f"{err.colno}); fix it or remove it (then pass {option_name('tr_s')}=<seconds>)", side) from err
    except UnicodeDecodeError as err:
        raise BoldError(f"sidecar is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                        f"{err.start}); fix it or remove it (then pass {option_name('tr_s')}=<seconds>)", side) from err
    if not isinstance(found, dict):
        raise BoldError(f"sidecar holds a JSON {type(found).__name__}, not an object of BIDS keys",
                        side)
    return found


def check_tr(value: Any, key: str, where: str, error: type[Exception] = BoldError) -> float:
    """``value`` as a TR in seconds, or ``error`` naming ``key`` of ``where``: it must be a
    finite positive number (a TR of 0 would make every time in the run 0)."""
    try:
        tr = float(value)
    except (TypeError, ValueError):
        raise error(f"{key} is {value!r}, not a number of seconds", where) from None
    if not np.isfinite(tr) or tr <= 0:
        raise error(f"{key} is {value!r}; a TR must be a positive number of seconds", where)
    return tr


def repetition_time(img: nib.Nifti1Image, path: str | None, tr_s: float | None = None) -> float:
    """TR in seconds: ``tr_s`` if given, else the BIDS sidecar, else the header (with its units).

    A header TR outside 0.05-20 s (e.g. 2000 with unit 'sec', really ms) is
    refused unless ``tr_s`` or a sidecar gives the TR.
    """
    where = path or "<BOLD image>"
    side = _sidecar(path).get("RepetitionTime")
    if side is not None:
        side = check_tr(side, "RepetitionTime", _sidecar_path(path))
    if tr_s is not None:
        tr_s = check_tr(tr_s, "tr_s", where)
    zooms = img.header.get_zooms()
    header = float(zooms[3]) if len(zooms) > 3 else 0.0
    unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
    header *= {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    plausible = PLAUSIBLE_TR_S[0] <= header <= PLAUSIBLE_TR_S[1]
    if tr_s is not None:
        if side is not None and not np.isclose(float(side), tr_s, rtol=1e-3):
            warnings.warn(f"{where}: tr_s={tr_s} s overrides the sidecar RepetitionTime {side} s",
                          stacklevel=3)
        return float(tr_s)
    if side is not None:
        if header and not np.isclose(float(side), header, rtol=1e-3):
            warnings.warn(f"{where}: sidecar RepetitionTime {side} s disagrees with the header "
                          f"({zooms[3]:g} {unit}); using the sidecar", stacklevel=3)
        return float(side)
    if not plausible:
        hint = f" (in ms that would be {header / 1000:g} s)" if header > PLAUSIBLE_TR_S[1] else ""
        raise BoldError(
            f"header TR is {zooms[3]:g} {unit}, implausible for fMRI{hint}, and there is no "
            f"sidecar JSON with RepetitionTime; pass {option_name('tr_s')}=<seconds>", where)
    return header


def _load_bold(img) -> tuple[nib.Nifti1Image, str | None]:
    img, path = load_image(img, BoldError)
    if len(img.shape) != 4:
        raise BoldError(f"image has shape {img.shape}; BOLD must be 4-D (x, y, z, time)",
                        path or "<BOLD image>")
    return img, path


def _confounds(confounds, columns, n_times: int, where: str) -> np.ndarray | None:
    if confounds is None:
        return None
    name = "confounds"
    if isinstance(confounds, str | os.PathLike):
        name = os.fspath(confounds)
        if not os.path.exists(name):
            raise BoldError("confounds file not found", name)
        confounds = pd.read_csv(name, sep="\t")
    if isinstance(confounds, pd.DataFrame):
        cols = list(columns) if columns is not None else [c for c in DEFAULT_CONFOUNDS if c in confounds]
        absent = [c for c in cols if c not in confounds]
        if absent or not cols:
            raise BoldError(f"confound columns {absent or list(DEFAULT_CONFOUNDS)} not in the table; "
                            f"choose confound_columns from {list(confounds.columns)[:12]} ...", name)
        confounds = confounds[cols]
        confounds = confounds.fillna(confounds.mean())  # first-row NaN of derivatives
        values = confounds.to_numpy(dtype=np.float64)
    else:
        values = np.asarray(confounds, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] != n_times:
        raise BoldError(f"confounds have {values.shape[0]} rows but {where} has {n_times} volumes",
                        name)
    if not np.isfinite(values).all():
        raise BoldError("confounds contain NaN/inf after filling", name)
    return values


def tokenize_bold(
    img: nib.Nifti1Image | str | os.PathLike,
    atlas: nib.Nifti1Image | str | os.PathLike,
    tr_s: float | None = None,
    window_s: float = 120.0,
    confounds: str | os.PathLike | pd.DataFrame | np.ndarray | None = None,
    resample_tr_s: float | None = None,
    *,
    stride_s: float | None = None,
    confound_columns: list[str] | None = None,
    detrend: bool = True,
    standardize: bool = True,
    low_pass: float | None = None,
    high_pass: float | None = None,
    empty_parcels: str = "drop",
    split_hemispheres: bool = False,
    labels: dict[int, str] | list[str] | None = None,
    check_space: bool = True,
    dataset: str | None = None,
    entities: dict[str, str] | None = None,
) -> Segments:
    """Parcel time series of a 4-D BOLD image, cut into windows of ``window_s`` seconds.

    Parameters
    ----------
    img : image | path-like
        4-D BOLD. The TR comes from ``tr_s``, the BIDS sidecar JSON, or the header.
    atlas : image | path-like
        3-D integer labels atlas in the same world space (any grid; resampled
        to the BOLD grid with nearest-neighbour).
    tr_s : float | None
        Repetition time in seconds; overrides sidecar and header.
    window_s, stride_s : float
        Window length and step in seconds.
    confounds : path | DataFrame | ndarray | None
        fMRIPrep-style TSV (default columns: motion, derivatives, WM, CSF) or a
        ``[T, K]`` array, regressed out.
    resample_tr_s : float | None
        Resample every series to this TR (see :func:`resample_series`).
    detrend, standardize : bool
        Linear detrend; z-score each parcel (over the whole run).
    low_pass, high_pass : float | None
        Butterworth band-pass edges in Hz.
    empty_parcels : 'drop' | 'keep' | 'raise'
        Parcels with no voxel in the BOLD field of view, or whose voxels are all
        zero (outside the brain mask): dropped (reported in
        ``meta['dropped_parcels']``), kept as zero series with
        ``meta['parcel_valid']`` False, or an error. NaN voxels are always an error.
    split_hemispheres : bool
        Split labels that span both hemispheres (see :func:`parcellate`).
    labels : dict | list | None
        Parcel names; default from a sidecar next to the atlas.
    check_space : bool
        Refuse a BOLD image whose header says it is in scanner space (NIfTI
        sform/qform code 1, and no ``space-`` entity in its name) with an atlas whose
        header says it is in a template space (code 3 Talairach or 4 MNI): parcels
        would be read from the wrong voxels. ``False`` trusts the user.

    Returns
    -------
    segments : Segments
        ``signal`` float32 ``[P, round(window_s / TR)]``; ``positions`` parcel
        centroids in metres (MNI); ``meta['tr_s']``, ``parcel_labels``,
        ``parcel_names``, ``parcel_volumes_mm3``, ``dropped_parcels``.
    """
    from nilearn.image import resample_to_img  # (see clean_series)
    from nilearn.image.resampling import BoundingBoxError

    if empty_parcels not in ("drop", "keep", "raise"):
        raise ValueError(f"empty_parcels must be 'drop', 'keep' or 'raise', got {empty_parcels!r}")
    img, path = _load_bold(img)
    where = path or "<BOLD image>"
    tr = repetition_time(img, path, tr_s)
    parc = parcellate(atlas, split_hemispheres=split_hemispheres, names=labels)
    warn_geometry(parc)
    if check_space:
        check_same_space(img, path, parc, where)

    ref = nib.Nifti1Image(np.zeros(img.shape[:3], np.int8), img.affine)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grid = resample_to_img(parc.img, ref, interpolation="nearest", force_resample=True,
                                   copy_header=True)
        grid_labels = np.asarray(grid.dataobj).astype(np.int64)
    except BoundingBoxError:
        grid_labels = np.zeros(img.shape[:3], np.int64)
    counts = np.bincount(grid_labels.ravel(), minlength=int(parc.labels.max()) + 1)[parc.labels]
    if counts.sum() == 0:
        raise AtlasError(
            f"atlas does not overlap {where} at all: are both in the same (MNI) space? "
            f"BOLD spans {image_extent(img)} mm, atlas {image_extent(parc.img)} mm", parc.source)
    outside = counts == 0
    if outside.any() and empty_parcels == "raise":
        raise BoldError(f"{outside.sum()} of {len(counts)} parcels have no voxel in the field of "
                        f"view ({parcel_names(parc, parc.labels[outside].tolist())}); pass "
                        f"{option_name('empty_parcels')}='drop' or 'keep'", where)

    present = parc.labels[~outside]
    raw_series = parcel_means(img, grid_labels, present)  # [T, P_present]
    nan_cols = ~np.isfinite(raw_series).all(axis=0)
    if nan_cols.any():
        raise BoldError(f"NaN/inf voxels in {nan_cols.sum()} parcels "
                        f"({parcel_names(parc, present[nan_cols].tolist())}); mask or fix the image", where)
    n_times = raw_series.shape[0]

    # parcels whose voxels are all zero (outside a brain mask, or cut by the slab) carry no
    # data: they are empty, like parcels outside the field of view
    zero = np.zeros(len(counts), dtype=bool)
    zero[np.flatnonzero(~outside)[~raw_series.any(axis=0)]] = True
    if zero.any() and empty_parcels == "raise":
        raise BoldError(
            f"{zero.sum()} parcels have all-zero voxels inside the field of view "
            f"({parcel_names(parc, parc.labels[zero].tolist())}); a masked image, or atlas and BOLD "
            "misaligned? Pass empty_parcels='drop' to drop them", where)
    if zero.all():
        raise BoldError("every parcel is all-zero in this image: is it empty, or in another "
                        "space than the atlas?", where)
    raw_series = raw_series[:, ~zero[~outside]]
    outside_fov, outside = outside, outside | zero

    series = clean_series(raw_series, tr, _confounds(confounds, confound_columns, n_times, where),
                    detrend, standardize, low_pass, high_pass)
    keep = ~outside if empty_parcels == "drop" else np.ones(len(counts), dtype=bool)
    if empty_parcels == "keep" and outside.any():
        full = np.zeros((n_times, len(counts)))
        full[:, ~outside] = series
        series = full
    if outside.any():
        logger.info("%s: %d of %d parcels of %s are outside the field of view (%s)", where,
                    outside.sum(), len(counts), os.path.basename(parc.source), empty_parcels)
    return parcel_segments(
        series, tr, resample_tr_s=resample_tr_s, window_s=window_s, stride_s=stride_s,
        positions_mm=parc.centroids_mm[keep], where=where, n_volumes=n_times, standardize=standardize,
        dataset=dataset, entities=entities, parcel_valid=~outside if empty_parcels == "keep" else None,
        atlas=parc.source, parcel_labels=parc.labels[keep].tolist(),
        parcel_names=[n for n, k in zip(parc.names, keep, strict=True) if k],
        parcel_volumes_mm3=parc.volumes_mm3[keep].tolist(), parcel_voxels_in_fov=counts[keep].tolist(),
        units={"parcel": "z-score" if standardize else "BOLD a.u."},
        dropped_parcels={"outside_fov": parc.labels[outside_fov].tolist(),
                         "all_zero": parc.labels[zero].tolist()} if empty_parcels == "drop" else {},
        clean={"detrend": detrend, "standardize": standardize, "low_pass": low_pass,
               "high_pass": high_pass, "confounds": confounds is not None})


def parcel_means(img: nib.Nifti1Image, labels: np.ndarray, parcels: np.ndarray) -> np.ndarray:
    """Mean BOLD time series within each parcel: ``[T, P]`` (float64).

    One sparse averaging matrix ``[P, V]`` times the voxel data ``[V, T]``: the
    same numbers as nilearn's ``NiftiLabelsMasker(strategy='mean')`` on an atlas
    already in the image grid, in one pass over the data. A NaN voxel makes its
    parcel's series NaN (and only its parcel's).

    Parameters
    ----------
    img : 4-D image
    labels : ndarray of int, shape img.shape[:3]
        Atlas labels in the image grid.
    parcels : ndarray of int
        Labels to extract, ascending; each must have at least one voxel.
    """

    data = np.asanyarray(img.dataobj)  # [X, Y, Z, T], scaled, no float64 copy of the volume
    order = "F" if data.flags.f_contiguous else "C"
    voxels = data.reshape(-1, data.shape[3], order=order)  # [V, T], a view
    flat = labels.reshape(-1, order=order)
    sel = np.flatnonzero(np.isin(flat, parcels))  # labelled voxels only
    rows = np.searchsorted(parcels, flat[sel])
    counts = np.bincount(rows, minlength=len(parcels))
    average = csr_matrix((1.0 / counts[rows], (rows, np.arange(len(sel)))),
                         shape=(len(parcels), len(sel)))  # [P, V_sel]
    return np.asarray(average @ voxels[sel].astype(np.float64)).T  # [T, P]


# --------------------------------------------------------------------------- ROI tables


