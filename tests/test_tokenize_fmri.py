"""Parcel-wise fMRI tokenizer on the real atlases, BOLD files and confounds table."""

from __future__ import annotations

import json
import shutil
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.image import resample_to_img
from nilearn.signal import clean
from scipy import ndimage

from neurofm.datasets import join_phenotype, read_phenotype, subject_key
from neurofm.errors import AtlasError, BoldError
from neurofm.tokenizers import (
    parcellate,
    read_roi_table,
    resample_series,
    tokenize_bold,
    tokenize_roi_table,
)

ATLASES = {
    "schaefer200": "Schaefer200_space-MNI152NLin6_res-2x2x2.nii.gz",
    "schaefer400": "Schaefer400_space-MNI152NLin6_res-2x2x2.nii.gz",
    "aal": "AAL_space-MNI152NLin6_res-2x2x2.nii.gz",
    "harvard_oxford": "HarvardOxfordcort-maxprob-thr25_space-MNI152NLin6_res-2x2x2.nii.gz",
}
N_PARCELS = {"schaefer200": 200, "schaefer400": 400, "aal": 116, "harvard_oxford": 48}


@pytest.fixture(scope="module")
def aal(atlases):
    return atlases / ATLASES["aal"]


@pytest.fixture(scope="module")
def planted(aal):
    """A 4-D image in the AAL grid whose parcels carry known, different signals.

    30 volumes (the length of the real fMRIPrep confounds table); parcel k's
    voxels all hold ``1000 + 10 k + a_k sin(2 pi f_k t)``.
    """
    atlas = nib.load(aal)
    labels = np.asarray(atlas.dataobj).astype(int)
    ids = np.unique(labels[labels > 0])
    t = np.arange(30) * 2.0
    rng = np.random.default_rng(0)
    amp, freq = rng.uniform(1, 5, len(ids)), rng.uniform(0.01, 0.2, len(ids))
    series = 1000 + 10 * ids[None, :] + amp * np.sin(2 * np.pi * freq * t[:, None])  # [T, P]
    lookup = np.zeros((labels.max() + 1, len(t)), np.float32)
    lookup[ids] = series.T
    data = lookup[labels]  # [X, Y, Z, T], background 0
    img = nib.Nifti1Image(data, atlas.affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    return img, ids, series


@pytest.mark.parametrize("name", list(ATLASES))
def test_real_atlas_centroids_match_independent_centre_of_mass(atlases, name):
    path = atlases / ATLASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parc = parcellate(path)
    img = nib.load(path)
    data = np.asarray(img.dataobj).astype(int)
    ids = np.unique(data[data > 0])
    assert len(parc.labels) == N_PARCELS[name] and np.array_equal(parc.labels, ids)
    com = np.array(ndimage.center_of_mass(np.ones_like(data), data, ids))  # voxel indices
    expected = nib.affines.apply_affine(img.affine, com)
    assert np.abs(parc.centroids_mm - expected).max() < 0.5
    lo, hi = np.array([-91, -127, -73]), np.array([91, 91, 109])  # MNI brain bounding box, mm
    assert ((parc.centroids_mm > lo) & (parc.centroids_mm < hi)).all()
    volumes = np.bincount(data.ravel())[ids] * 8.0
    np.testing.assert_allclose(parc.volumes_mm3, volumes)


def test_bilateral_labels_warn_and_split(atlases):
    path = atlases / ATLASES["harvard_oxford"]
    with pytest.warns(UserWarning, match=r"labels span both hemispheres \(1:Frontal_Pole"):
        tokenize_bold(_slab_like(atlases), atlas=path, window_s=10.0, tr_s=2.0)
    split = parcellate(path, split_hemispheres=True)
    assert len(split.labels) > 90 and not split.bilateral
    right = split.labels > 100
    left = np.isin(split.labels, split.labels[right] - 100)  # the other half of each split label
    assert right.sum() == left.sum() > 40
    assert (split.centroids_mm[right, 0] > 0).all() and (split.centroids_mm[left, 0] < 0).all()
    assert split.names[list(split.labels).index(101)] == "Frontal_Pole (right)"


def _slab_like(atlases):
    """The real nipy slab is in the MNI field; used as a BOLD for atlas-only tests."""
    return atlases.parent / "fmri" / "nipy_functional.nii.gz"


def test_same_bold_two_atlases(fmri, atlases):
    bold = fmri / "nipy_functional.nii.gz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = tokenize_bold(bold, atlas=atlases / ATLASES["aal"], window_s=10.0)
        b = tokenize_bold(bold, atlas=atlases / ATLASES["schaefer200"], window_s=10.0)
    assert [s.meta["onset_s"] for s in a] == [s.meta["onset_s"] for s in b] == [0, 10, 20, 30]
    assert all(s.n_times == 5 for s in a + b) and a[0].meta["tr_s"] == 2.0
    assert a[0].positions.shape != b[0].positions.shape or not np.allclose(a[0].positions, b[0].positions)
    assert a[0].kinds == ("parcel",) * a[0].n_sensors and not a[0].orientations.any()


def test_cropped_slab_reports_parcels_outside_field_of_view(fmri, aal):
    bold = nib.load(fmri / "nipy_functional.nii.gz")
    grid = resample_to_img(nib.load(aal), nib.Nifti1Image(np.zeros(bold.shape[:3]), bold.affine),
                           interpolation="nearest", force_resample=True, copy_header=True)
    present = set(np.unique(np.asarray(grid.dataobj).astype(int))) - {0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dropped = tokenize_bold(bold, atlas=aal, window_s=10.0)
        kept = tokenize_bold(bold, atlas=aal, window_s=10.0, empty_parcels="keep")
    meta = dropped[0].meta
    assert set(meta["parcel_labels"]) == present
    assert len(meta["dropped_parcels"]["outside_fov"]) == 116 - len(present)
    assert kept[0].n_sensors == 116
    valid = np.array(kept[0].meta["parcel_valid"])
    assert valid.sum() == len(present) and not kept[0].signal[~valid].any()
    # z-scored per parcel over the run
    full = np.concatenate([s.signal for s in dropped], axis=1)
    np.testing.assert_allclose(full.std(axis=1, ddof=1), 1.0, atol=0.2)
    with pytest.raises(BoldError, match=r"nipy_functional.nii.gz: \d+ of 116 parcels have no voxel"):
        tokenize_bold(fmri / "nipy_functional.nii.gz", atlas=aal, window_s=10.0, empty_parcels="raise")


def test_implausible_header_tr_is_flagged(fmri, aal, tmp_path):
    path = fmri / "nibabel_example4d.nii.gz"
    with pytest.raises(BoldError, match=r"header TR is 2000 sec, implausible .* 2 s\).*tr_s="):
        tokenize_bold(path, atlas=aal, window_s=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segments = tokenize_bold(path, atlas=aal, window_s=4.0, tr_s=2.0, detrend=False,
                                 standardize=False, check_space=False)  # a scanner-space EPI
    assert segments[0].meta["tr_s"] == 2.0 and segments[0].signal.shape[1] == 2
    assert segments[0].meta["dropped_parcels"]["all_zero"]  # EPI slab masked to zero outside
    # a sidecar gives the TR
    copy = tmp_path / "sub-01_task-rest_bold.nii.gz"
    shutil.copy(path, copy)
    (tmp_path / "sub-01_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 2.0}))
    with pytest.warns(UserWarning, match="sidecar RepetitionTime 2.0 s disagrees with the header"):
        segments = tokenize_bold(copy, atlas=aal, window_s=4.0, detrend=False, standardize=False,
                                 check_space=False)
    assert segments[0].meta["tr_s"] == 2.0
    assert (segments[0].meta["subject"], segments[0].meta["task"]) == ("01", "rest")


def test_planted_signals_are_extracted_exactly(planted, aal):
    img, ids, series = planted
    segments = tokenize_bold(img, atlas=aal, window_s=60.0, detrend=False, standardize=False)
    assert len(segments) == 1 and segments[0].meta["parcel_labels"] == ids.tolist()
    np.testing.assert_allclose(segments[0].signal.T, series, rtol=1e-6)
    z = tokenize_bold(img, atlas=aal, window_s=20.0)
    joined = np.concatenate([s.signal for s in z], axis=1).T
    np.testing.assert_allclose(joined.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(joined.std(axis=0, ddof=1), 1, atol=1e-4)


def test_real_confounds_are_regressed_out(planted, aal, fmri):
    img, ids, series = planted
    table = fmri / "fmriprep_desc-confounds_regressors.tsv"
    segments = tokenize_bold(img, atlas=aal, window_s=60.0, confounds=table, standardize=False)
    cleaned = segments[0].signal.T.astype(np.float64)  # [T, P]
    confounds = pd.read_csv(table, sep="\t")[["trans_x", "rot_z", "csf", "white_matter"]].to_numpy()
    confounds = confounds - confounds.mean(axis=0)
    # residuals are orthogonal to every regressed confound column
    assert np.abs(confounds.T @ cleaned).max() / (np.linalg.norm(confounds) * np.linalg.norm(cleaned)) < 1e-4
    assert segments[0].meta["clean"]["confounds"]
    with pytest.raises(BoldError, match="confounds have 30 rows but .*nipy_functional.nii.gz has 20 volumes"):
        tokenize_bold(fmri / "nipy_functional.nii.gz", atlas=aal, window_s=10.0, confounds=table)
    with pytest.raises(BoldError, match=r"confound columns \['nope'\] not in the table"):
        tokenize_bold(img, atlas=aal, window_s=60.0, confounds=table, confound_columns=["nope"])


def test_resampled_tr_gives_equal_duration_windows(planted, aal):
    img, ids, _ = planted
    native = tokenize_bold(img, atlas=aal, window_s=20.0)
    fast = tokenize_bold(img, atlas=aal, window_s=20.0, resample_tr_s=0.72)
    assert fast[0].meta["tr_s"] == 0.72 and fast[0].meta["native_tr_s"] == 2.0
    assert native[0].duration_s == 20.0 and abs(fast[0].duration_s - 20.0) < 0.72
    assert [s.meta["onset_s"] for s in native] == [0.0, 20.0, 40.0]


def test_resample_series_matches_analytic_signal():
    t = np.arange(200) * 2.0
    x = np.sin(2 * np.pi * 0.02 * t)[:, None]
    y = resample_series(x, 2.0, 0.72)
    new_t = np.arange(len(y)) * 0.72
    assert new_t[-1] <= t[-1]
    np.testing.assert_allclose(y[:, 0], np.sin(2 * np.pi * 0.02 * new_t), atol=2e-3)
    down = resample_series(np.sin(2 * np.pi * 0.02 * np.arange(500) * 0.72)[:, None], 0.72, 2.0)
    mid = slice(10, -10)
    np.testing.assert_allclose(down[mid, 0], np.sin(2 * np.pi * 0.02 * np.arange(len(down)) * 2.0)[mid],
                               atol=0.02)


# --------------------------------------------------------------------------- ROI tables


def test_roi_tables_1d_and_csv_match_bold_path(planted, aal, tmp_path):
    img, ids, series = planted
    from_bold = tokenize_bold(img, atlas=aal, window_s=60.0)
    one_d = tmp_path / "Caltech_0051456_rois_aal.1D"
    header = "\t".join(f"#{k}" for k in ids)
    np.savetxt(one_d, series, delimiter="\t", header=header, comments="")
    csv = tmp_path / "sub-0051456_rois.csv"
    np.savetxt(csv, series, delimiter=",")
    for table in (one_d, csv):
        segments = tokenize_roi_table(table, coords=aal, tr_s=2.0, window_s=60.0)
        # the image holds float32 voxels around 1000-2000: agreement to float32 precision
        np.testing.assert_allclose(segments[0].signal, from_bold[0].signal, atol=1e-3)
        np.testing.assert_array_equal(segments[0].positions, from_bold[0].positions)
        assert segments[0].meta["parcel_labels"] == ids.tolist()
    values, columns = read_roi_table(one_d)
    assert values.shape == (30, 116) and columns[:2] == ["1", "2"]


@pytest.mark.parametrize("detrend, standardize", [(True, True), (False, True), (True, False)])
def test_detrend_and_zscore_are_nilearns(data_dir, detrend, standardize):
    """Without confounds or filters, clean_series does nilearn.signal.clean's arithmetic
    in numpy (so prepare workers need not import it): same numbers on a real ABIDE table,
    a constant column included."""
    from neurofm.tokenizers.fmri import clean_series

    table = sorted((data_dir / "abide" / "rois_cc200").glob("*.1D"))[3]
    values, _ = read_roi_table(table)
    values[:, 5] = 7.0
    ours = clean_series(values, 2.0, None, detrend, standardize, None, None)
    theirs = clean(values, detrend=detrend, standardize="zscore_sample" if standardize else False,
                   t_r=2.0, filter=False)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)
    assert not np.allclose(ours, values)  # something was done


def test_roi_table_separators_read_the_same_values(data_dir, tmp_path):
    """ABIDE's tab-separated tables take pandas' plain tab split; a table that switches to
    spaces further down is read again with the whitespace rule, not refused or cut."""
    table = sorted((data_dir / "abide" / "rois_cc200").glob("*.1D"))[0]
    expected = pd.read_csv(table, sep=r"\s+", comment="#", header=None).to_numpy(np.float64)
    values, columns = read_roi_table(table)
    np.testing.assert_array_equal(values, expected)
    assert columns == [str(k) for k in range(1, 201)]
    lines = table.read_text().splitlines()
    lines[-1] = lines[-1].replace("\t", "  ")
    mixed = tmp_path / table.name
    mixed.write_text("\n".join(lines) + "\n")
    values, _ = read_roi_table(mixed)
    np.testing.assert_array_equal(values, expected)


def test_roi_table_with_coordinate_table_and_unknown_labels(planted, aal, tmp_path):
    _, ids, series = planted
    parc = parcellate(aal)
    coords = tmp_path / "coords.tsv"
    pd.DataFrame({"label": ids, "x": parc.centroids_mm[:, 0], "y": parc.centroids_mm[:, 1],
                  "z": parc.centroids_mm[:, 2]}).to_csv(coords, sep="\t", index=False)
    table = tmp_path / "rois.tsv"
    pd.DataFrame(series, columns=[str(k) for k in ids]).to_csv(table, sep="\t", index=False)
    segments = tokenize_roi_table(table, coords=coords, tr_s=2.0, window_s=30.0)
    np.testing.assert_allclose(segments[0].positions * 1000, parc.centroids_mm, atol=1e-3)
    bad = tmp_path / "bad.1D"
    np.savetxt(bad, series[:, :3], header="#1 #2 #999", comments="")
    with pytest.raises(AtlasError, match=r"AAL.*columns name labels \[999\] that are not in the atlas"):
        tokenize_roi_table(bad, coords=aal, tr_s=2.0, window_s=30.0)


def test_phenotype_join_is_robust_to_zero_padding(planted, aal, tmp_path):
    _, ids, series = planted
    pheno = tmp_path / "Phenotypic_V1_0b.csv"
    pheno.write_text("SUB_ID,DX_GROUP,AGE_AT_SCAN,SEX\n51456,1,24.5,1\n51457,2,-9999,2\n")
    table = tmp_path / "rois.1D"
    np.savetxt(table, series, header=" ".join(f"#{k}" for k in ids), comments="")
    segments = tokenize_roi_table(table, coords=aal, tr_s=2.0, window_s=60.0,
                                  entities={"subject": "0051456"})
    rows = read_phenotype(pheno, label_columns=["DX_GROUP", "AGE_AT_SCAN"])
    assert rows["51457"] == {"DX_GROUP": 2, "AGE_AT_SCAN": None}
    join_phenotype(segments, rows)
    assert segments[0].meta["phenotype"] == {"DX_GROUP": 1, "AGE_AT_SCAN": 24.5}
    assert subject_key("sub-0051456") == subject_key(51456.0) == "51456"
    participants = tmp_path / "participants.tsv"
    participants.write_text("participant_id\tdiagnosis\tage\nsub-01\tADHD\t10\nsub-02\tTD\t11\n")
    assert read_phenotype(participants)["1"] == {"diagnosis": "ADHD", "age": 10}


# --------------------------------------------------------------------------- bad input


def test_3d_image_is_not_bold(atlases):
    with pytest.raises(BoldError, match=r"AAL.*has shape \(91, 109, 91\); BOLD must be 4-D"):
        tokenize_bold(atlases / ATLASES["aal"], atlas=atlases / ATLASES["aal"])


def test_atlas_in_another_space(fmri, aal, tmp_path):
    atlas = nib.load(aal)
    affine = atlas.affine.copy()
    affine[:3, 3] += 1000.0  # shifted a metre away: no overlap
    moved = tmp_path / "moved_atlas.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(atlas.dataobj), affine), moved)
    with pytest.raises(AtlasError, match="moved_atlas.nii.gz: atlas does not overlap .* same .MNI. space"):
        tokenize_bold(fmri / "nipy_functional.nii.gz", atlas=moved, window_s=10.0)


def test_scanner_space_bold_with_an_mni_atlas_is_refused(fmri, aal):
    bold = fmri / "nibabel_example4d.nii.gz"  # real EPI, sform/qform code 1 (scanner)
    with pytest.raises(AtlasError, match=r"nibabel_example4d.nii.gz: the image is in scanner space .* MNI space"):
        tokenize_bold(bold, atlas=aal, tr_s=2.0, window_s=2.0)
    assert len(tokenize_bold(bold, atlas=aal, tr_s=2.0, window_s=2.0, check_space=False)) == 2


def test_non_integer_and_probabilistic_atlas(aal, tmp_path):
    atlas = nib.load(aal)
    frac = tmp_path / "frac.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(atlas.dataobj) * 0.5 + 0.25, atlas.affine), frac)
    with pytest.raises(AtlasError, match="frac.nii.gz: atlas is not an integer labels image"):
        parcellate(frac)
    prob = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), atlas.affine), prob)
    with pytest.raises(AtlasError, match=r"prob.nii.gz: atlas has shape \(4, 4, 4, 3\)"):
        parcellate(prob)


def test_nan_voxels_and_too_short(planted, aal, fmri):
    img, ids, _ = planted
    data = np.asarray(img.dataobj).copy()
    labels = np.asarray(nib.load(aal).dataobj).astype(int)
    data[labels == ids[3], 5] = np.nan
    with pytest.raises(BoldError, match=r"NaN/inf voxels in 1 parcels \(4:"):
        tokenize_bold(nib.Nifti1Image(data, img.affine), atlas=aal, tr_s=2.0, window_s=20.0)
    with pytest.raises(BoldError, match=r"nipy_functional.nii.gz: 20 timepoints x 2 s = 40 s, fewer than one window"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenize_bold(fmri / "nipy_functional.nii.gz", atlas=aal, window_s=120.0)


def test_parcel_means_equal_nilearn_masker(fmri, aal):
    from nilearn.maskers import NiftiLabelsMasker

    from neurofm.tokenizers.fmri import parcel_means

    bold = nib.load(fmri / "nipy_functional.nii.gz")
    grid = resample_to_img(nib.load(aal), nib.Nifti1Image(np.zeros(bold.shape[:3]), bold.affine),
                           interpolation="nearest", force_resample=True, copy_header=True)
    labels = np.asarray(grid.dataobj).astype(int)
    ids = np.unique(labels[labels > 0])
    ours = parcel_means(bold, labels, ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = NiftiLabelsMasker(grid, resampling_target=None).fit_transform(bold)
    assert ours.shape == theirs.shape == (20, len(ids))
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
