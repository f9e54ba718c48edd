"""Benchmark: the classical baselines' fold loops, as `neurofm finetune` runs them, against
the per-fold way (every fold re-filters and re-estimates the same windows), same folds.

- ABIDE (321 CC200 tables, 8 sites, leave one site out): tangent-space FC. Per fold:
  nilearn's ``ConnectivityMeasure(kind="tangent")`` fitted on the training subjects (Ledoit-
  Wolf covariances of every subject again, the geometric mean by scipy's eigh). neurofm:
  covariances once per cohort (``covariances``), then per fold the geometric mean with
  numpy's eigh (``TangentSpace``). Features are checked equal (max |difference| printed).
- EEGMMI (5 subjects, imagery left vs right, 2 s windows, leave one subject out): CSP + LDA,
  Riemann + LR and ERP + sLDA. Per fold: each baseline band-passes the fold's windows;
  neurofm: ``decoding_baselines`` filters every window once. Probabilities checked equal.

One BLAS thread; best of ``--repeats``; ratio = per-fold seconds / neurofm seconds.

usage: python benchmarks/baselines.py [--repeats 1] [--out docs/baselines.json]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks._common import data_dir  # noqa: E402
from neurofm.finetune.baselines import (  # noqa: E402
    DECODING_BASELINES,
    TangentSpace,
    covariances,
    decoding_baselines,
    shared_sensor_array,
)
from neurofm.finetune.protocols import leave_one_group_out  # noqa: E402
from neurofm.io import write_text_atomic  # noqa: E402
from neurofm.tokenizers import tokenize_events  # noqa: E402


def best(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def abide_series(abide: Path) -> tuple[list[np.ndarray], np.ndarray]:
    phenotype = pd.read_csv(abide / "Phenotypic_V1_0b_preprocessed1.csv")
    site_of = dict(zip(phenotype["FILE_ID"], phenotype["SITE_ID"], strict=True))
    series, sites = [], []
    for path in sorted((abide / "rois_cc200").glob("*_rois_cc200.1D")):
        series.append(np.loadtxt(path, comments="#"))
        sites.append(site_of[path.name.removesuffix("_rois_cc200.1D")])
    return series, np.array(sites)


def tangent_per_fold(series, folds):
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import LedoitWolf

    out = []
    for split in folds:
        measure = ConnectivityMeasure(cov_estimator=LedoitWolf(store_precision=False), kind="tangent",
                                      vectorize=True, standardize="zscore_sample")
        train = measure.fit_transform([series[i] for i in split.train])
        out.append((train, measure.transform([series[i] for i in split.test])))
    return out


def tangent_neurofm(series, folds):
    space = TangentSpace(covariances(series, standardize=True))
    return [space.features(split.train, split.test) for split in folds]


def eegmmi_windows(eegmmi: Path):
    segments = []
    for subject in sorted(p.name for p in eegmmi.glob("S0*")):
        for run in ("R04", "R08", "R12"):
            segments += tokenize_events(eegmmi / subject / f"{subject}{run}.edf", event_id=["T1", "T2"],
                                        tmin=0.5, tmax=2.5)
    x = shared_sensor_array(segments)
    y = np.array([s.meta["label"] == "T2" for s in segments], dtype=int)
    subjects = np.array([s.meta["subject"] for s in segments])
    return x, y, subjects, segments[0].sfreq


def decoding_per_fold(x, y, sfreq, folds):
    return {name: [fit(x[s.train], y[s.train], x[s.test], sfreq, band=band) if band else
                   fit(x[s.train], y[s.train], x[s.test], sfreq) for s in folds]
            for name, (fit, band) in DECODING_BASELINES.items()}


def decoding_neurofm(x, y, sfreq, folds):
    baselines = decoding_baselines(x, sfreq)
    return {name: [predict(s.train, y[s.train], s.test) for s in folds] for name, predict in baselines.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/baselines.json"))
    parser.add_argument("--cohorts", nargs="+", default=["abide", "eegmmi"], choices=["abide", "eegmmi"],
                        help="which to run (others already in --out are kept)")
    args = parser.parse_args()
    data = data_dir()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}

    if "abide" in args.cohorts:
        abide(data, args, results)
    if "eegmmi" in args.cohorts:
        eegmmi(data, args, results)
    write_text_atomic(args.out, json.dumps(results, indent=2))
    print(f"metrics: {args.out}")


def abide(data: Path, args, results: dict) -> None:
    series, sites = abide_series(data / "abide")
    folds = leave_one_group_out(sites, np.arange(len(series)))
    old_s, old = best(lambda: tangent_per_fold(series, folds), args.repeats)
    new_s, new = best(lambda: tangent_neurofm(series, folds), args.repeats)
    diff = max(float(np.abs(a - b).max()) for fo, fn in zip(old, new, strict=True) for a, b in zip(fo, fn, strict=True))
    results["abide_tangent"] = {"subjects": len(series), "folds": len(folds), "per_fold_s": old_s,
                                "neurofm_s": new_s, "ratio": old_s / new_s, "max_abs_diff": diff}
    print(f"ABIDE tangent FC, {len(series)} subjects, {len(folds)} folds: per fold {old_s:.1f} s, "
          f"neurofm {new_s:.1f} s, {old_s / new_s:.2f}x faster; max |Δ feature| {diff:.1e}", flush=True)



def eegmmi(data: Path, args, results: dict) -> None:
    x, y, subjects, sfreq = eegmmi_windows(data / "meeg" / "eegmmidb")
    folds = leave_one_group_out(subjects, np.arange(len(y)))  # units: windows
    old_s, old = best(lambda: decoding_per_fold(x, y, sfreq, folds), args.repeats)
    new_s, new = best(lambda: decoding_neurofm(x, y, sfreq, folds), args.repeats)
    diff = max(float(np.abs(a - b).max()) for name in old for a, b in zip(old[name], new[name], strict=True))
    results["eegmmi_decoding"] = {"windows": len(y), "folds": len(folds), "per_fold_s": old_s,
                                  "neurofm_s": new_s, "ratio": old_s / new_s, "max_abs_diff": diff}
    print(f"EEGMMI decoding baselines, {len(y)} windows, {len(folds)} folds: per fold {old_s:.1f} s, "
          f"neurofm {new_s:.1f} s, {old_s / new_s:.2f}x faster; max |Δ probability| {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
