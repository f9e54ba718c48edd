"""Atlases for the parcel-wise fMRI tokenizer: labels, names, centroids (MNI mm), volumes,
bilateral labels and their split, and the check that a BOLD image and an atlas share a space.

A parcel is a sensor: its token carries the parcel's centroid, not its index in one
atlas, so a checkpoint works with any parcellation.
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

from neurofm.errors import AtlasError, NeurofmError
from neurofm.options import option_name

logger = logging.getLogger("neurofm.tokenizers")


HEMISPHERE_MARGIN_MM = 2.0



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



def load_image(img, error: type[NeurofmError]) -> tuple[nib.Nifti1Image, str | None]:
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
    atlas, path = load_image(atlas, AtlasError)
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
    bilateral = labels[_bilateral(inverse, counts, xyz)].tolist()
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



def _bilateral(inverse: np.ndarray, counts: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Per label (``np.unique``'s ``inverse``/``counts`` of the voxels at ``xyz`` mm): does
    more than a fifth of it lie on each side of the midline (beyond a 2 mm margin)?"""
    left = np.bincount(inverse, weights=xyz[:, 0] < -HEMISPHERE_MARGIN_MM) / counts
    right = np.bincount(inverse, weights=xyz[:, 0] > HEMISPHERE_MARGIN_MM) / counts
    return (left > 0.2) & (right > 0.2)



def _split_offset(labels: np.ndarray) -> int:
    return 10 ** int(np.ceil(np.log10(labels.max() + 1)))



def _split(lab, xyz, data, vox, offset):
    """Right-hemisphere voxels of bilateral labels get label + offset."""
    labels, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    both = np.isin(lab, labels[_bilateral(inverse, counts, xyz)])
    move = both & (xyz[:, 0] > 0)
    lab = lab.copy()
    lab[move] += offset
    data = data.copy()
    data.ravel()[vox] = lab
    return lab, data



def warn_geometry(parc: Parcellation) -> None:
    if parc.bilateral:
        warnings.warn(
            f"{parc.source}: {len(parc.bilateral)} labels span both hemispheres "
            f"({parcel_names(parc, parc.bilateral)}); their tokens sit near the midline. "
            f"Pass {option_name('split_hemispheres')}=True to split them into left and right parcels.",
            stacklevel=3,
        )
    odd = sorted(set(parc.off_centre) - set(parc.bilateral))
    if odd:
        warnings.warn(
            f"{parc.source}: the centroid of {len(odd)} labels falls outside the parcel "
            f"({parcel_names(parc, odd)}); their tokens are placed at that centroid.",
            stacklevel=3,
        )



def parcel_names(parc: Parcellation, labels: list[int], limit: int = 6) -> str:
    lookup = dict(zip(parc.labels.tolist(), parc.names, strict=True))
    shown = [f"{k}:{lookup[k]}" for k in labels[:limit]]
    return ", ".join(shown) + (", ..." if len(labels) > limit else "")



SPACE_CODES = {0: "unknown", 1: "scanner", 2: "aligned", 3: "Talairach", 4: "MNI"}



def _space_code(img: nib.Nifti1Image) -> int:
    header = img.header
    code = int(header.get_sform(coded=True)[1] or 0) if hasattr(header, "get_sform") else 0
    if code == 0 and hasattr(header, "get_qform"):
        code = int(header.get_qform(coded=True)[1] or 0)
    return code



def check_same_space(img, path: str | None, parc: Parcellation, where: str) -> None:
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
            f"header is wrong, pass {option_name('check_space')}=False", where)



def image_extent(img) -> str:
    shape = np.array(img.shape[:3])
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)], dtype=float)
    world = corners @ img.affine[:3, :3].T + img.affine[:3, 3]
    lo, hi = world.min(axis=0), world.max(axis=0)
    return "x[{:.0f},{:.0f}] y[{:.0f},{:.0f}] z[{:.0f},{:.0f}]".format(*np.ravel(np.stack([lo, hi], 1)))



def parcel_table(parc: Parcellation) -> pd.DataFrame:
    """One row per parcel: label, name, centroid (mm), volume (mm^3), flags."""
    return pd.DataFrame({
        "label": parc.labels, "name": parc.names,
        "x_mm": parc.centroids_mm[:, 0], "y_mm": parc.centroids_mm[:, 1], "z_mm": parc.centroids_mm[:, 2],
        "volume_mm3": parc.volumes_mm3,
        "bilateral": np.isin(parc.labels, parc.bilateral),
        "centroid_outside": np.isin(parc.labels, parc.off_centre),
    })
