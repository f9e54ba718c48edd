"""Regenerate the README figures from the real data: `python docs/make_figures.py`."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mne  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _common import data_dir  # noqa: E402

from neurofm.tokenizers import plot_sensors, tokenize_bold, tokenize_raw  # noqa: E402

mne.set_log_level("ERROR")
warnings.simplefilter("ignore")
HERE = Path(__file__).resolve().parent


def main() -> None:
    data = data_dir()
    m = data / "meeg"
    panels = [
        tokenize_raw(m / "neuromag" / "sample_audvis_trunc_raw_sss.fif", window_s=0.5)[0],
        tokenize_raw(m / "kit" / "010409_Motor_task_coregist-export_tiny_1s.con", window_s=0.5)[0],
        tokenize_raw(m / "egi" / "test_egi.raw", window_s=0.25, reject_scaled=None)[0],
        tokenize_bold(data / "fmri" / "nipy_functional.nii.gz",
                      atlas=data / "atlases" / "Schaefer200_space-MNI152NLin6_res-2x2x2.nii.gz",
                      window_s=4.0, detrend=False, standardize=False)[0],
    ]
    fig = plt.figure(figsize=(16, 4.2))
    for k, seg in enumerate(panels):
        plot_sensors(seg, ax=fig.add_subplot(1, 4, k + 1, projection="3d"))
    fig.tight_layout()
    fig.savefig(HERE / "sensors.png", dpi=90)
    print("wrote", HERE / "sensors.png")


if __name__ == "__main__":
    main()
