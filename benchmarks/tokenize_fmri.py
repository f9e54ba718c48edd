"""Benchmark: `tokenize_bold` against nilearn's `NiftiLabelsMasker.fit_transform`, and ROI tables.

For each image/atlas pair, in one run, best of 3 (CPU seconds, one thread):
- nilearn: `NiftiLabelsMasker(atlas).fit_transform(img)` (resamples the atlas, mean per parcel),
- neurofm: `tokenize_bold(img, atlas)` (resample, parcel means, empty-parcel report,
  detrend + z-score, centroids, windows).
Then ROI-table throughput: ABIDE-style `.1D` tables (Schaefer-200, 196 TRs) -> segments, subjects/s.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from _common import best_of, data_dir  # noqa: E402
from nilearn.maskers import NiftiLabelsMasker  # noqa: E402

from neurofm.tokenizers import parcellate, tokenize_bold, tokenize_roi_table  # noqa: E402

warnings.simplefilter("ignore")


def whole_brain(atlas_path: Path, n_volumes: int) -> nib.Nifti1Image:
    """A whole-brain 4-D image on the atlas grid (2 mm MNI): the real slab's voxel
    time courses tiled over the brain, so the data is real BOLD signal in every voxel."""
    atlas = nib.load(atlas_path)
    slab = np.asarray(nib.load(atlas_path.parents[1] / "fmri" / "nipy_functional.nii.gz").dataobj,
                      dtype=np.float32)
    courses = slab.reshape(-1, slab.shape[3])  # [V_slab, 20]
    courses = np.concatenate([courses] * int(np.ceil(n_volumes / courses.shape[1])), axis=1)[:, :n_volumes]
    shape = atlas.shape
    idx = np.arange(np.prod(shape)) % courses.shape[0]
    data = courses[idx].reshape(*shape, n_volumes)
    img = nib.Nifti1Image(data, atlas.affine)
    img.header["pixdim"][4] = 2.0
    return img


def main() -> None:
    data = data_dir()
    atlases = data / "atlases"
    schaefer = atlases / "Schaefer200_space-MNI152NLin6_res-2x2x2.nii.gz"
    aal = atlases / "AAL_space-MNI152NLin6_res-2x2x2.nii.gz"
    cases = [
        ("nipy slab 20 vols x AAL", data / "fmri" / "nipy_functional.nii.gz", aal, {"window_s": 20.0}),
        ("example4d 2 vols x AAL", data / "fmri" / "nibabel_example4d.nii.gz", aal,
         {"window_s": 4.0, "tr_s": 2.0, "check_space": False}),  # scanner space: a timing case only
        ("whole brain 200 vols x Schaefer200", whole_brain(schaefer, 200), schaefer, {"window_s": 120.0}),
    ]
    print(f"{'image x atlas':36s} {'nilearn s':>10s} {'neurofm s':>10s} {'overhead':>9s}")
    for label, img, atlas, options in cases:
        img = nib.load(img) if isinstance(img, Path) else img
        parcellate(atlas)  # atlas geometry is cached per file, as in a prepare run over many files
        nilearn = best_of(lambda i=img, a=atlas: NiftiLabelsMasker(str(a)).fit_transform(i))[1]
        ours = best_of(lambda i=img, a=atlas, o=options: tokenize_bold(i, atlas=a, **o))[1]
        print(f"{label:36s} {nilearn:10.3f} {ours:10.3f} {ours / nilearn - 1:+9.1%}")

    rng = np.random.default_rng(0)
    labels = parcellate(schaefer).labels
    with tempfile.TemporaryDirectory() as tmp:
        tables = []
        source = tokenize_bold(cases[2][1], atlas=schaefer, window_s=120.0, standardize=False)
        series = np.concatenate([s.signal for s in source], axis=1).T  # [T, 200] real-signal series
        for k in range(50):
            path = Path(tmp) / f"Site_{50000 + k:07d}_rois_schaefer200.1D"
            np.savetxt(path, series + rng.normal(0, 1, series.shape), fmt="%.6f",
                       header="\t".join(f"#{v}" for v in labels), comments="", delimiter="\t")
            tables.append(path)
        start = time.process_time()
        n = sum(len(tokenize_roi_table(p, coords=schaefer, tr_s=2.0, window_s=120.0)) for p in tables)
        cpu = time.process_time() - start
    print(f"ROI tables (.1D, 200 parcels x {series.shape[0]} TRs): {len(tables) / cpu:.1f} subjects/s, "
          f"{n / cpu:.1f} segments/s (CPU)")


if __name__ == "__main__":
    main()
