"""Run inside a fresh venv with `pip install neurofm` (no extras): the core install embeds an
EEGMMI run and an ABIDE table with the committed export, the scikit-learn Embedder works, the
training stack is absent, and `neurofm pretrain` names the extra to install.

usage: python core_install_check.py EXPORT DATA_DIR
"""

import importlib
import subprocess
import sys
from pathlib import Path

export, data = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("lightning", "deepspeed", "webdataset", "tensorboard"):
    try:
        importlib.import_module(name)
    except ImportError:
        continue
    raise SystemExit(f"core install check: {name} is importable in the core install")

import mne  # noqa: E402
import numpy as np  # noqa: E402

import neurofm  # noqa: E402
from neurofm.sklearn import Embedder  # noqa: E402

model = neurofm.load(export)
run = data / "meeg" / "eegmmidb" / "S001" / "S001R04.edf"
eeg = model.embed(run)
assert eeg.windows.ndim == 2 and eeg.windows.shape[1] == model.config.dim, eeg.windows.shape
assert np.isfinite(eeg.windows).all()
table = sorted((data / "abide" / "rois_cc200").glob("*_rois_cc200.1D"))[0]
fmri = model.embed(table, atlas=data / "abide" / "CC200.nii.gz", tr_s=2.0)  # Caltech: TR 2 s
assert fmri.windows.shape[1] == model.config.dim and np.isfinite(fmri.windows).all()

raw = mne.io.read_raw_edf(run, preload=True, verbose="error")
mne.datasets.eegbci.standardize(raw)
raw.set_montage("standard_1005", verbose="error")
events, ids = mne.events_from_annotations(raw, event_id={"T1": 1, "T2": 2}, verbose="error")
epochs = mne.Epochs(raw, events, ids, tmin=0.5, tmax=2.5, baseline=None, preload=True, verbose="error")
features = Embedder(export, readout="sensors").fit_transform(epochs)
assert features.shape == (len(epochs), 64 * model.config.dim), features.shape

cli = subprocess.run([sys.executable, "-m", "neurofm.cli", "pretrain", "trainer.max_steps=1"],
                     capture_output=True, text=True, timeout=600)
assert cli.returncode == 2 and "pip install 'neurofm[train]'" in cli.stderr, cli.stderr[-2000:]
print(f"core install: embedded {run.name} -> {eeg.windows.shape}, {table.name} -> {fmri.windows.shape}, "
      f"Embedder -> {features.shape}; lightning/deepspeed/webdataset absent; "
      f"`neurofm pretrain` says: {cli.stderr.strip().splitlines()[-1]}")
