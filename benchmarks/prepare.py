"""Benchmark: `neurofm prepare` at corpus scale against the bare library calls, same files.

Real cohorts in ../shared/data, in one run, 1 and 2 worker processes each:
- EEGMMI: the 30 EDF+ runs (5 subjects, 64 channels, 160 Hz, about 125 s each).
  bare: `mne.io.read_raw_edf(preload=True)` + resample to 200 Hz + band-pass 0.5-72 Hz
  per file, and `raw.notch_filter(60)` first on the 12 runs of S004 and S005, whose
  spectra show a 60 Hz peak (the filtering `prepare` does; which runs have mains noise
  is found before timing and given to the bare calls, so they do not pay for finding it);
  neurofm: `write_shards` (the same filtering, plus mains detection, channel checks, 10-05
  geometry, scaling, 10 s windows, float16 encoding, shards with checksums, the manifest).
- ABIDE: the 321 CC200 tables (200 parcels, 78-316 TRs; each site with its TR).
  bare: `pandas.read_csv(sep=r"\\s+", comment="#")` per table;
  neurofm: `write_shards` (read, checks, parcel geometry from the atlas, detrend + z-score,
  120 s windows, shards, manifest).
Throughput: hours of recording (EEG) or tables (ABIDE) per second of wall time, and per
CPU-hour (this process and its workers). The ratio is bare seconds / neurofm seconds
(target >= 0.8). Worker processes start the same way for both (spawn). One BLAS/OpenMP
thread per process; best of `--repeats`.

usage: python benchmarks/prepare.py [--repeats 2] [--workers 1 2]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import ABIDE_TR_S, ROOT, data_dir  # noqa: E402

warnings.simplefilter("ignore")
SFREQ, WINDOW_S = 200.0, 10.0


def bare_edf(path_and_line: tuple[str, float | None]) -> float:
    """The MNE calls of `prepare` on one EDF file; returns its duration in seconds."""
    import mne

    path, line_freq = path_and_line
    mne.set_log_level("ERROR")
    raw = mne.io.read_raw_edf(path, preload=True)
    raw.pick("eeg")
    if line_freq:
        raw.notch_filter([line_freq], picks="all")
    raw.resample(SFREQ, npad="auto")
    raw.filter(0.5, 0.45 * 160.0, picks="all")
    return raw.times[-1]


def mains(path: str) -> float | None:
    """The mains frequency `prepare` finds in the first 30 s of an EDF file (or None)."""
    import mne

    from neurofm.tokenizers.cleaning import detect_line_freq

    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    raw.pick("eeg")
    return detect_line_freq(raw.get_data()[:, : int(30 * raw.info["sfreq"])], raw.info["sfreq"])


def bare_table(path: str) -> int:
    import pandas as pd

    return pd.read_csv(path, sep=r"\s+", comment="#", header=None).to_numpy().shape[0]


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best (wall s, CPU s of this process and its finished children) over ``repeats``."""
    best_wall, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeats):
        cpu, wall = cpu_seconds(), time.perf_counter()
        out = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, cpu_seconds() - cpu)
    return best_wall, best_cpu, out


def run_bare(fn, paths: list[str], workers: int) -> list:
    if workers <= 1:
        return [fn(p) for p in paths]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, paths, chunksize=max(1, len(paths) // (4 * workers))))


def run_prepare(paths: list[str], options, workers: int, tmp: Path) -> dict:
    from neurofm.datasets import write_shards

    out = tmp / "shards"
    shutil.rmtree(out, ignore_errors=True)
    manifest = write_shards(paths, out, options, workers=workers)
    if manifest["failures"]:
        raise SystemExit(f"prepare failed on {manifest['failures']} files: see {out / 'failures.jsonl'}")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(ROOT / "docs" / "prepare.json"))
    args = parser.parse_args()

    from neurofm.datasets import PrepareOptions

    data = data_dir()
    edfs = sorted(str(p) for p in (data / "meeg" / "eegmmidb").glob("S*/S*R*.edf"))
    tables = sorted(str(p) for p in (data / "abide" / "rois_cc200").glob("*.1D"))
    sites = sorted({Path(t).name.rsplit("_", 3)[0] for t in tables})
    eeg_options = PrepareOptions(window_s=WINDOW_S, shard_size_mb=64)
    roi_options = PrepareOptions(modality="fmri", roi_coords=str(data / "abide" / "CC200.nii.gz"),
                                 roi_tr_s={site: ABIDE_TR_S[site] for site in sites}, shard_size_mb=64)
    edf_lines = [(path, mains(path)) for path in edfs]
    results: dict = {"machine": f"{os.cpu_count()} CPUs", "cases": [],
                     "edf_runs_with_mains": [Path(p).name for p, line in edf_lines if line]}
    print(f"{'files':34s} {'workers':>7s} {'bare s':>8s} {'neurofm s':>10s} {'ratio':>6s}  throughput")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, paths, bare_fn, options in (("EEGMMI: 30 EDF runs, 64 ch, 160 Hz", edfs, bare_edf, eeg_options),
                                               ("ABIDE: 321 CC200 tables", tables, bare_table, roi_options)):
            bare_args = edf_lines if paths is edfs else paths
            for workers in args.workers:
                bare_wall, bare_cpu, sizes = timed(lambda f=bare_fn, w=workers, a=bare_args: run_bare(f, a, w),
                                                   args.repeats)
                ours_wall, ours_cpu, manifest = timed(
                    lambda p=paths, o=options, w=workers: run_prepare(p, o, w, tmp), args.repeats)
                case = {"files": name, "n_files": len(paths), "workers": workers, "bare_wall_s": bare_wall,
                        "neurofm_wall_s": ours_wall, "bare_cpu_s": bare_cpu, "neurofm_cpu_s": ours_cpu,
                        "ratio": bare_wall / ours_wall, "segments": manifest["totals"]["samples"]}
                if paths is edfs:
                    hours = sum(sizes) / 3600
                    case |= {"hours": hours, "bare_h_per_cpu_h": hours / (bare_cpu / 3600),
                             "neurofm_h_per_cpu_h": hours / (ours_cpu / 3600)}
                    rate = (f"{case['neurofm_h_per_cpu_h']:,.0f} h per CPU-hour "
                            f"(bare {case['bare_h_per_cpu_h']:,.0f}), {hours / ours_wall * 3600:,.0f} h per hour")
                else:
                    case |= {"tables_per_s": len(paths) / ours_wall, "bare_tables_per_s": len(paths) / bare_wall,
                             "tables_per_cpu_s": len(paths) / ours_cpu}
                    rate = (f"{case['tables_per_s']:.0f} tables/s ({case['tables_per_cpu_s']:.0f} per CPU-s; "
                            f"bare {case['bare_tables_per_s']:.0f}/s)")
                results["cases"].append(case)
                print(f"{name:34s} {workers:7d} {bare_wall:8.2f} {ours_wall:10.2f} {case['ratio']:6.2f}  {rate}",
                      flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
