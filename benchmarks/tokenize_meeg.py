"""Benchmark: `tokenize_raw` against the bare MNE calls it makes, on the real recordings.

For each file, in one run, best of 3:
- bare MNE: read lazily + pick + load + notch (when one is applied) + resample + band-pass,
- neurofm: `tokenize_raw` (the same calls, plus channel checks, geometry, scaling, windows).
Prints overhead (neurofm / bare - 1) and throughput in seconds of recording per CPU-second.
Run single-threaded: `OMP_NUM_THREADS=1 python benchmarks/tokenize_meeg.py`.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import warnings  # noqa: E402

import mne  # noqa: E402
import numpy as np  # noqa: E402
from _common import best_of, data_dir  # noqa: E402

from neurofm.tokenizers import tokenize_raw  # noqa: E402
from neurofm.tokenizers.eeg_meg import read_recording  # noqa: E402

mne.set_log_level("ERROR")
warnings.simplefilter("ignore")
SFREQ = 200.0


def bare_mne(raw_or_path, names, line_freq):
    raw = read_recording(raw_or_path) if not isinstance(raw_or_path, mne.io.BaseRaw) else raw_or_path.copy()
    raw.pick(names).load_data()
    native = raw.info["sfreq"]
    h_freq = 0.45 * min(SFREQ, native)
    if line_freq:
        notches = np.arange(line_freq, min(h_freq + line_freq, native / 2), line_freq)
        notches = notches[notches < native / 2 - 1]
        if len(notches):
            raw.notch_filter(notches, picks="all")
    if native != SFREQ:
        raw.resample(SFREQ, npad="auto")
    raw.filter(0.5, h_freq, picks="all")
    return raw


def long_eeg(data) -> mne.io.RawArray:
    """64-channel, 500 Hz, 10-minute EEG built from the real EEGLAB tutorial recording.

    Its 30 scalp channels (upsampled 128 -> 500 Hz, tiled in time) fill the
    BioSemi-64 layout: real EEG signals, a layout and length the test files lack.
    """
    raw = mne.io.read_raw_eeglab(data / "meeg" / "eeglab" / "test_raw.set", preload=True)
    raw.resample(500.0)
    x = raw.get_data()  # [32, T]
    reps = int(np.ceil(600 * 500 / x.shape[1]))
    x = np.tile(x, (2, reps))[:64, : 600 * 500]
    montage = mne.channels.make_standard_montage("biosemi64")
    info = mne.create_info(montage.ch_names, 500.0, "eeg")
    out = mne.io.RawArray(x, info)
    out.set_montage(montage)
    return out


def main() -> None:
    data = data_dir()
    m = data / "meeg"
    cases = [
        ("EEG 64ch 500Hz 600s (derived)", long_eeg(data), {}),
        ("EEGLAB 32ch 128Hz", m / "eeglab" / "test_raw.set", {"montage": None, "on_missing_positions": "drop"}),
        ("BDF 18ch 125Hz", m / "bdf" / "multiple_annotation_chans.bdf", {}),
        ("BrainVision 26ch 1kHz", m / "brainvision" / "test.vhdr", {"window_s": 2.0}),
        ("EDF 138ch 512Hz", m / "edf" / "test_reduced.edf", {"window_s": 2.0, "on_missing_positions": "drop"}),
        ("Neuromag 366ch 300Hz", m / "neuromag" / "sample_audvis_trunc_raw_sss.fif", {"window_s": 0.5}),
        ("KIT 151ch 2kHz", m / "kit" / "010409_Motor_task_coregist-export_tiny_1s.con", {"window_s": 0.5}),
    ]
    print(f"{'recording':32s} {'dur s':>7s} {'bare MNE s':>10s} {'neurofm s':>10s} "
          f"{'overhead':>9s} {'x real time':>12s}")
    for label, source, options in cases:
        if label.startswith("EEGLAB"):
            raw = mne.io.read_raw_eeglab(source, preload=False)
            raw.set_montage(None)
            # tutorial file without chanlocs: give every channel a position so all 32 are kept
            pos = mne.channels.make_standard_montage("biosemi32").get_positions()["ch_pos"]
            raw.set_montage(mne.channels.make_dig_montage(
                dict(zip(raw.ch_names, pos.values(), strict=True)), coord_frame="head"))
            source, options = raw, {}
        options = {"window_s": 10.0 if "window_s" not in options else options["window_s"],
                   "reject_scaled": None, **options}
        segments = tokenize_raw(source, sfreq=SFREQ, **options)
        names = segments[0].meta["ch_names"]
        line = segments[0].meta["filter"]["line_freq"]
        duration = segments[0].meta.get("onset_s", 0) + len(segments) * options["window_s"]
        bare = best_of(lambda s=source, n=names, lf=line: bare_mne(s, n, lf))[1]
        ours = best_of(lambda s=source, o=options: tokenize_raw(s, sfreq=SFREQ, **o))[1]
        print(f"{label:32s} {duration:7.1f} {bare:10.3f} {ours:10.3f} {ours / bare - 1:+9.1%} "
              f"{duration / ours:12.0f}")


if __name__ == "__main__":
    main()
