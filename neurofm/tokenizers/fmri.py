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
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
import pandas as pd

from neurofm.errors import AtlasError, BoldError, BoldTooShortError, NeurofmError
from neurofm.tokenizers.naming import entities_from_name
from neurofm.tokenizers.segment import Segment, Segments

logger = logging.getLogger("neurofm.tokenizers")

PLAUSIBLE_TR_S = (0.05, 20.0)
# fMRIPrep columns regressed out by default: 6 motion parameters, their derivatives, WM, CSF.
DEFAULT_CONFOUNDS = (
    "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
    "trans_x_derivative1", "trans_y_derivative1", "trans_z_derivative1",
    "rot_x_derivative1", "rot_y_derivative1", "rot_z_derivative1",
    "white_matter", "csf",
)
HEMISPHERE_MARGIN_MM = 2.0


# --------------------------------------------------------------------------- atlas


@dataclass(frozen=True)
class Parcellation:
    """Labels and geometry of an atlas, computed in its own grid.

    Attributes
    ----------
    img : nibabel image
        The integer labels image (after any hemisphere split).
    labels : ndarray of int, shape (n_parcels,)
        Label values, ascending, background (0) excluded.
    names : list of str
        One name per label (from a sidecar JSON/TSV, else ``'parcel-<label>'``).
    centroids_mm : ndarray, shape (n_parcels, 3)
        Centre of mass of each parcel's voxels in world (MNI) coordinates, mm.
    volumes_mm3 : ndarray, shape (n_parcels,)
    bilateral : list of int
        Labels with substantial volume on both sides of x = 0.
    off_centre : list of int
        Labels whose centroid falls outside the parcel itself.
    source : str
    """

    img: nib.Nifti1Image
    labels: np.ndarray
    names: list[str]
    centroids_mm: np.ndarray
    volumes_mm3: np.ndarray
    bilateral: list[int]
    off_centre: list[int]
    source: str


def _label_names(path: str | None, labels: np.ndarray) -> dict[int, str]:
    """Names from a sidecar: neuroparc JSON (``rois``), BIDS ``dseg.tsv`` or a ``index name`` LUT."""
    if path is None:
        return {}
    stem = re.sub(r"\.nii(\.gz)?$", "", path)
    for candidate in (stem + ".json", stem + ".tsv", stem + ".txt", stem + "_lut.txt"):
        if not os.path.exists(candidate):
            continue
        if candidate.endswith(".json"):
            with open(candidate) as fh:
                rois = json.load(fh).get("rois", {})
            return {int(k): str(v["label"]) for k, v in rois.items()
                    if str(k).lstrip("-").isdigit() and v.get("label") not in (None, "", "null")}
        table = pd.read_csv(candidate, sep=None, engine="python", header=None, comment="#")
        first = table.iloc[:, 0]
        numeric = pd.to_numeric(first, errors="coerce")
        table = table[numeric.notna()]
        return {int(i): str(n) for i, n in zip(numeric.dropna(), table.iloc[:, 1], strict=True)}
    return {}


def _load_image(img, error: type[NeurofmError]) -> tuple[nib.Nifti1Image, str | None]:
    """An image given as itself or as a path (then read lazily), with a clear error."""
    if not isinstance(img, str | os.PathLike):
        return img, None
    path = os.fspath(img)
    if not os.path.exists(path):
        raise error("file not found", path)
    try:
        return nib.load(path), path
    except Exception as err:  # nibabel raises several types for corrupt files
        raise error(f"cannot read image ({err})", path) from err


def _load_atlas(atlas: nib.Nifti1Image | str | os.PathLike) -> tuple[nib.Nifti1Image, np.ndarray, str | None]:
    atlas, path = _load_image(atlas, AtlasError)
    data = np.asanyarray(atlas.dataobj)
    where = path or "<atlas image>"
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise AtlasError(
            f"atlas has shape {data.shape}; a 3-D integer labels image is needed "
            "(for a probabilistic atlas, use its max-probability labels version)", where)
    if not np.issubdtype(data.dtype, np.integer):
        finite = np.isfinite(data)
        if not finite.all() or not np.array_equal(data, np.round(data)):
            raise AtlasError(
                "atlas is not an integer labels image (non-integer or NaN values); "
                "pass a labels atlas, not a probabilistic or continuous map", where)
    return atlas, data.astype(np.int64), path


def parcellate(
    atlas: nib.Nifti1Image | str | os.PathLike,
    split_hemispheres: bool = False,
    names: dict[int, str] | list[str] | None = None,
) -> Parcellation:
    """Read a labels atlas and compute parcel centroids (MNI mm) and volumes.

    Parameters
    ----------
    atlas : image | path-like
        3-D integer labels NIfTI; 0 is background.
    split_hemispheres : bool
        Split labels that span both hemispheres (x < 0 and x > 0) into a left
        part (original label) and a right part (label + 10^k above the largest label).
    names : dict | list | None
        Parcel names; default read from a sidecar JSON/TSV next to the atlas.

    Returns
    -------
    Parcellation
    """
    key = os.fspath(atlas) if isinstance(atlas, str | os.PathLike) else None
    if key is not None:
        stamp = os.stat(key).st_mtime_ns
        return _parcellate_cached(key, stamp, split_hemispheres, _freeze(names))
    return _parcellate(atlas, split_hemispheres, names)


def _freeze(names):
    if names is None:
        return None
    return tuple(names.items()) if isinstance(names, dict) else tuple(names)


@lru_cache(maxsize=8)
def _parcellate_cached(path: str, stamp: int, split: bool, names) -> Parcellation:
    return _parcellate(path, split, dict(names) if names and isinstance(names[0], tuple) else names)


def _parcellate(atlas, split_hemispheres, names) -> Parcellation:
    img, data, path = _load_atlas(atlas)
    where = path or "<atlas image>"
    affine = img.affine
    flat = data.ravel()
    vox = np.flatnonzero(flat > 0)
    if len(vox) == 0:
        raise AtlasError("atlas has no labelled voxels (all background)", where)
    ijk = np.stack(np.unravel_index(vox, data.shape), axis=1).astype(np.float64)  # [V, 3]
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]  # [V, 3] mm
    lab = flat[vox]
    offset = _split_offset(np.unique(lab))
    if split_hemispheres:
        lab, data = _split(lab, xyz, data, vox, offset)
        img = nib.Nifti1Image(data.astype(np.int32), affine, img.header)
    labels, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, weights=xyz[:, d]) for d in range(3)], axis=1)
    centroids = sums / counts[:, None]
    volumes = counts * abs(np.linalg.det(affine[:3, :3]))
    left = np.bincount(inverse, weights=xyz[:, 0] < -HEMISPHERE_MARGIN_MM) / counts
    right = np.bincount(inverse, weights=xyz[:, 0] > HEMISPHERE_MARGIN_MM) / counts
    bilateral = labels[(left > 0.2) & (right > 0.2)].tolist()
    centre_vox = np.round(
        (centroids - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T).astype(int)
    inside = np.all((centre_vox >= 0) & (centre_vox < np.array(data.shape)), axis=1)
    at_centre = np.zeros(len(labels), dtype=np.int64)
    at_centre[inside] = data[tuple(centre_vox[inside].T)]
    off_centre = labels[at_centre != labels].tolist()

    if isinstance(names, list | tuple):
        if len(names) != len(labels):
            raise AtlasError(f"{len(names)} names given for {len(labels)} labels", where)
        table = dict(zip(labels.tolist(), names, strict=True))
    elif names:
        table = dict(names)
    else:
        table = _label_names(path, labels)
        if split_hemispheres:
            table = table | {k + offset: f"{v} (right)" for k, v in table.items()}
    return Parcellation(
        img=img,
        labels=labels,
        names=[table.get(int(k), f"parcel-{k}") for k in labels],
        centroids_mm=centroids,
        volumes_mm3=volumes,
        bilateral=bilateral,
        off_centre=off_centre,
        source=where,
    )


def _split_offset(labels: np.ndarray) -> int:
    return 10 ** int(np.ceil(np.log10(labels.max() + 1)))


def _split(lab, xyz, data, vox, offset):
    """Right-hemisphere voxels of bilateral labels get label + offset."""
    labels, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    left = np.bincount(inverse, weights=xyz[:, 0] < -HEMISPHERE_MARGIN_MM) / counts
    right = np.bincount(inverse, weights=xyz[:, 0] > HEMISPHERE_MARGIN_MM) / counts
    both = np.isin(lab, labels[(left > 0.2) & (right > 0.2)])
    move = both & (xyz[:, 0] > 0)
    lab = lab.copy()
    lab[move] += offset
    data = data.copy()
    data.ravel()[vox] = lab
    return lab, data


def _warn_geometry(parc: Parcellation) -> None:
    if parc.bilateral:
        warnings.warn(
            f"{parc.source}: {len(parc.bilateral)} labels span both hemispheres "
            f"({_names(parc, parc.bilateral)}); their tokens sit near the midline. "
            "Pass split_hemispheres=True to split them into left and right parcels.",
            stacklevel=3,
        )
    odd = sorted(set(parc.off_centre) - set(parc.bilateral))
    if odd:
        warnings.warn(
            f"{parc.source}: the centroid of {len(odd)} labels falls outside the parcel "
            f"({_names(parc, odd)}); their tokens are placed at that centroid.",
            stacklevel=3,
        )


def _names(parc: Parcellation, labels: list[int], limit: int = 6) -> str:
    lookup = dict(zip(parc.labels.tolist(), parc.names, strict=True))
    shown = [f"{k}:{lookup[k]}" for k in labels[:limit]]
    return ", ".join(shown) + (", ..." if len(labels) > limit else "")


# --------------------------------------------------------------------------- BOLD


def _sidecar(path: str | None) -> dict:
    if path is None:
        return {}
    side = re.sub(r"\.nii(\.gz)?$", "", path) + ".json"
    if not os.path.exists(side):
        return {}
    with open(side) as fh:
        return json.load(fh)


def repetition_time(img: nib.Nifti1Image, path: str | None, tr_s: float | None = None) -> float:
    """TR in seconds: ``tr_s`` if given, else the BIDS sidecar, else the header (with its units).

    A header TR outside 0.05-20 s (e.g. 2000 with unit 'sec', really ms) is
    refused unless ``tr_s`` or a sidecar gives the TR.
    """
    where = path or "<BOLD image>"
    side = _sidecar(path).get("RepetitionTime")
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
            "sidecar JSON with RepetitionTime; pass tr_s=<seconds>", where)
    return header


def _load_bold(img) -> tuple[nib.Nifti1Image, str | None]:
    img, path = _load_image(img, BoldError)
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


def resample_series(signals: np.ndarray, tr_s: float, new_tr_s: float) -> np.ndarray:
    """Resample ``[T, P]`` series from ``tr_s`` to ``new_tr_s`` seconds.

    Cubic-spline interpolation onto the new grid (same start, up to the last
    original sample); when downsampling, a zero-phase 5th-order Butterworth
    low-pass at 0.9x the new Nyquist frequency first prevents aliasing.
    """
    from scipy.interpolate import CubicSpline
    from scipy.signal import butter, sosfiltfilt

    n = signals.shape[0]
    if new_tr_s > tr_s and n > 18:
        sos = butter(5, 0.9 * (0.5 / new_tr_s), fs=1.0 / tr_s, output="sos")
        signals = sosfiltfilt(sos, signals, axis=0)
    times = np.arange(n) * tr_s
    new_times = np.arange(0.0, times[-1] + 1e-9, new_tr_s)
    return CubicSpline(times, signals, axis=0)(new_times)


def _windows(
    series: np.ndarray, tr_s: float, window_s: float, stride_s: float | None, meta: dict,
    positions: np.ndarray, where: str,
) -> Segments:
    """Cut ``[T, P]`` series into segments of ``window_s`` seconds."""
    length = int(round(window_s / tr_s))
    step = max(1, int(round((stride_s or window_s) / tr_s)))
    n_times = series.shape[0]
    if length < 1:
        raise BoldError(f"window_s={window_s:g} s is shorter than one TR ({tr_s:g} s)", where)
    if n_times < length:
        raise BoldTooShortError(
            f"{n_times} timepoints x {tr_s:g} s = {n_times * tr_s:g} s, fewer than one window "
            f"({window_s:g} s); pass a smaller window_s", where, duration_s=n_times * tr_s)
    starts = np.arange(0, n_times - length + 1, step)
    signal = np.ascontiguousarray(series.T, dtype=np.float32)  # [P, T]
    n = signal.shape[0]
    orientations = np.zeros((n, 3), np.float32)
    kinds = ("parcel",) * n
    segments = Segments(report={"source": where, "n_windows": int(len(starts)), "rejected": [],
                                "dropped_parcels": meta.get("dropped_parcels", {})})
    for start in starts:
        segments.append(Segment(
            signal=signal[:, start : start + length].copy(),
            positions=positions,
            orientations=orientations,
            kinds=kinds,
            meta=dict(meta, onset_s=float(start * tr_s), events=[]),
        ))
    return segments


def _clean(series, tr_s, confounds, detrend, standardize, low_pass, high_pass):
    from nilearn.signal import clean

    if not (detrend or standardize or confounds is not None or low_pass or high_pass):
        return series
    return clean(
        series, detrend=detrend, standardize="zscore_sample" if standardize else False,
        confounds=confounds, low_pass=low_pass, high_pass=high_pass, t_r=tr_s,
        filter="butterworth" if (low_pass or high_pass) else False,
    )


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
    from nilearn.image import resample_to_img
    from nilearn.image.resampling import BoundingBoxError

    if empty_parcels not in ("drop", "keep", "raise"):
        raise ValueError(f"empty_parcels must be 'drop', 'keep' or 'raise', got {empty_parcels!r}")
    img, path = _load_bold(img)
    where = path or "<BOLD image>"
    tr = repetition_time(img, path, tr_s)
    parc = parcellate(atlas, split_hemispheres=split_hemispheres, names=labels)
    _warn_geometry(parc)
    if check_space:
        _check_same_space(img, path, parc, where)

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
            f"BOLD spans {_extent(img)} mm, atlas {_extent(parc.img)} mm", parc.source)
    outside = counts == 0
    if outside.any() and empty_parcels == "raise":
        raise BoldError(f"{outside.sum()} of {len(counts)} parcels have no voxel in the field of "
                        f"view ({_names(parc, parc.labels[outside].tolist())}); pass "
                        "empty_parcels='drop' or 'keep'", where)

    present = parc.labels[~outside]
    raw_series = parcel_means(img, grid_labels, present)  # [T, P_present]
    nan_cols = ~np.isfinite(raw_series).all(axis=0)
    if nan_cols.any():
        raise BoldError(f"NaN/inf voxels in {nan_cols.sum()} parcels "
                        f"({_names(parc, present[nan_cols].tolist())}); mask or fix the image", where)
    n_times = raw_series.shape[0]

    # parcels whose voxels are all zero (outside a brain mask, or cut by the slab) carry no
    # data: they are empty, like parcels outside the field of view
    zero = np.zeros(len(counts), dtype=bool)
    zero[np.flatnonzero(~outside)[~raw_series.any(axis=0)]] = True
    if zero.any() and empty_parcels == "raise":
        raise BoldError(
            f"{zero.sum()} parcels have all-zero voxels inside the field of view "
            f"({_names(parc, parc.labels[zero].tolist())}); a masked image, or atlas and BOLD "
            "misaligned? Pass empty_parcels='drop' to drop them", where)
    if zero.all():
        raise BoldError("every parcel is all-zero in this image: is it empty, or in another "
                        "space than the atlas?", where)
    raw_series = raw_series[:, ~zero[~outside]]
    outside_fov, outside = outside, outside | zero

    series = _clean(raw_series, tr, _confounds(confounds, confound_columns, n_times, where),
                    detrend, standardize, low_pass, high_pass)
    keep = ~outside if empty_parcels == "drop" else np.ones(len(counts), dtype=bool)
    if empty_parcels == "keep" and outside.any():
        full = np.zeros((n_times, len(counts)))
        full[:, ~outside] = series
        series = full
    native_tr = tr
    if resample_tr_s is not None and not np.isclose(resample_tr_s, tr):
        series = resample_series(series, tr, resample_tr_s)
        tr = float(resample_tr_s)
    if outside.any():
        logger.info("%s: %d of %d parcels of %s are outside the field of view (%s)", where,
                    outside.sum(), len(counts), os.path.basename(parc.source), empty_parcels)

    meta = {
        "modality": "fmri",
        "sfreq": 1.0 / tr,
        "tr_s": tr,
        "native_tr_s": native_tr,
        "n_volumes": n_times,
        "atlas": parc.source,
        "parcel_labels": parc.labels[keep].tolist(),
        "parcel_names": [n for n, k in zip(parc.names, keep, strict=True) if k],
        "parcel_volumes_mm3": parc.volumes_mm3[keep].tolist(),
        "parcel_voxels_in_fov": counts[keep].tolist(),
        "unit_scale": [1.0] * int(keep.sum()),
        "channel_scale": [1.0] * int(keep.sum()),
        "units": {"parcel": "z-score" if standardize else "BOLD a.u."},
        "dropped_parcels": {
            "outside_fov": parc.labels[outside_fov].tolist(),
            "all_zero": parc.labels[zero].tolist(),
        } if empty_parcels == "drop" else {},
        "clean": {"detrend": detrend, "standardize": standardize, "low_pass": low_pass,
                  "high_pass": high_pass, "confounds": confounds is not None},
        "source": where,
        "dataset": dataset,
        **(entities if entities is not None else entities_from_name(where)),
    }
    if empty_parcels == "keep":
        meta["parcel_valid"] = (~outside).tolist()
    positions = (parc.centroids_mm[keep] / 1000.0).astype(np.float32)
    return _windows(series, tr, window_s, stride_s, meta, positions, where)


SPACE_CODES = {0: "unknown", 1: "scanner", 2: "aligned", 3: "Talairach", 4: "MNI"}


def _space_code(img: nib.Nifti1Image) -> int:
    header = img.header
    code = int(header.get_sform(coded=True)[1] or 0) if hasattr(header, "get_sform") else 0
    if code == 0 and hasattr(header, "get_qform"):
        code = int(header.get_qform(coded=True)[1] or 0)
    return code


def _check_same_space(img, path: str | None, parc: Parcellation, where: str) -> None:
    """Scanner-space BOLD with a template-space atlas: an error, not 85 wrong parcels."""
    if path is not None and re.search(r"_space-[A-Za-z0-9]+", os.path.basename(path)):
        return  # BIDS derivatives name their space; trust the name
    bold_code = _space_code(img)
    atlas_code = _space_code(parc.img)
    if bold_code == 1 and atlas_code in (3, 4):
        raise AtlasError(
            f"the image is in scanner space (NIfTI sform/qform code 1) but the atlas {parc.source} "
            f"is in {SPACE_CODES[atlas_code]} space (code {atlas_code}): normalise the BOLD to the "
            "atlas' template first (e.g. fMRIPrep --output-spaces MNI152NLin6Asym), or, if the "
            "header is wrong, pass check_space=False (+fmri.check_space=false)", where)


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
    from scipy.sparse import csr_matrix

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


def _extent(img) -> str:
    shape = np.array(img.shape[:3])
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)], dtype=float)
    world = corners @ img.affine[:3, :3].T + img.affine[:3, 3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    return "x[{:.0f},{:.0f}] y[{:.0f},{:.0f}] z[{:.0f},{:.0f}]".format(*np.ravel(np.stack([lo, hi], 1)))


# --------------------------------------------------------------------------- ROI tables


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
    with open(path) as fh:
        first = fh.readline().strip()
    sep = r"\s+" if path.endswith((".1D", ".1d", ".txt")) else ("\t" if path.endswith(".tsv") else ",")
    columns = None
    try:
        if first.startswith("#"):
            columns = re.split(r"\s+|,|\t", first.lstrip("#").strip())
            columns = [c.lstrip("#") for c in columns if c]
            table = pd.read_csv(path, sep=sep, header=None, comment="#", engine="python")
        else:
            tokens = [t for t in re.split(sep if sep != r"\s+" else r"\s+", first) if t]
            numeric = all(_is_number(t) for t in tokens)
            table = pd.read_csv(path, sep=sep, header=None if numeric else 0, engine="python")
            if not numeric:
                columns = [str(c) for c in table.columns]
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


def _coordinates(coords, n_parcels: int, columns: list[str] | None, where: str):
    """(centroids_mm [P, 3], labels, names) for a table's columns."""
    if isinstance(coords, np.ndarray):
        if coords.shape != (n_parcels, 3):
            raise BoldError(f"coords has shape {coords.shape}; expected ({n_parcels}, 3) in mm", where)
        return coords.astype(np.float64), list(range(1, n_parcels + 1)), columns or [
            f"parcel-{i}" for i in range(1, n_parcels + 1)]
    cpath = os.fspath(coords)
    if cpath.endswith((".nii", ".nii.gz")):
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
        else:
            if n_parcels != len(parc.labels):
                raise AtlasError(
                    f"ROI table {where} has {n_parcels} columns without label names, but the atlas "
                    f"has {len(parc.labels)} labels; name the columns by label value", cpath)
            idx = list(range(len(parc.labels)))
        return parc.centroids_mm[idx], parc.labels[idx].tolist(), [parc.names[j] for j in idx]
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
    centroids, labels, names = _coordinates(coords, values.shape[1], columns, where)
    labels = [int(k) if isinstance(k, int | np.integer) else k for k in labels]
    zero = ~values.any(axis=0)  # outside this participant's brain mask: no data
    zero_labels = [labels[j] for j in np.flatnonzero(zero)]
    if zero.all():
        raise BoldError("every ROI column is all zero: an empty table", where)
    if zero.any() and empty_parcels == "raise":
        raise BoldError(f"{zero.sum()} ROI columns are all zero (labels {zero_labels[:10]}); pass "
                        "empty_parcels='drop' or 'keep'", where)
    series = np.zeros_like(values)
    series[:, ~zero] = _clean(values[:, ~zero], tr_s, None, detrend, standardize, None, None)
    keep = ~zero if empty_parcels == "drop" else np.ones(len(labels), dtype=bool)
    if zero.any():
        logger.debug("%s: %d of %d ROI columns are all zero (%s)", where, zero.sum(), len(labels),
                    empty_parcels)
    series, centroids = series[:, keep], centroids[keep]
    labels, names = [k for k, m in zip(labels, keep, strict=True) if m], [
        n for n, m in zip(names, keep, strict=True) if m]
    tr = tr_s
    if resample_tr_s is not None and not np.isclose(resample_tr_s, tr_s):
        series = resample_series(series, tr_s, resample_tr_s)
        tr = float(resample_tr_s)
    n = len(labels)
    meta = {
        "modality": "fmri",
        "sfreq": 1.0 / tr,
        "tr_s": tr,
        "native_tr_s": float(tr_s),
        "n_volumes": int(values.shape[0]),
        "atlas": os.fspath(coords) if isinstance(coords, str | os.PathLike) else "<coords>",
        "parcel_labels": labels,
        "parcel_names": list(names),
        "unit_scale": [1.0] * n,
        "channel_scale": [1.0] * n,
        "units": {"parcel": "z-score" if standardize else "a.u."},
        "dropped_parcels": {"all_zero": zero_labels} if empty_parcels == "drop" else {},
        "source": where,
        "dataset": dataset,
        **(entities if entities is not None else entities_from_name(where)),
    }
    if empty_parcels == "keep":
        meta["parcel_valid"] = (~zero).tolist()
    return _windows(series, tr, window_s, stride_s, meta, (centroids / 1000.0).astype(np.float32), where)


def parcel_table(parc: Parcellation) -> pd.DataFrame:
    """One row per parcel: label, name, centroid (mm), volume (mm^3), flags."""
    return pd.DataFrame({
        "label": parc.labels, "name": parc.names,
        "x_mm": parc.centroids_mm[:, 0], "y_mm": parc.centroids_mm[:, 1], "z_mm": parc.centroids_mm[:, 2],
        "volume_mm3": parc.volumes_mm3,
        "bilateral": np.isin(parc.labels, parc.bilateral),
        "centroid_outside": np.isin(parc.labels, parc.off_centre),
    })
