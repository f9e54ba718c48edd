"""Figures of finetune results: confusion matrices and Pearson r per sensor/parcel.

Each builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, no backend
switch), so the functions are safe in notebooks, GUIs and worker processes alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import mne
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from neurofm.io import atomic_write
from neurofm.tokenizers.segment import Segment


def plot_sensor_r(segment: Segment, r: np.ndarray, out: str | os.PathLike, title: str = "") -> str:
    """Pearson r per sensor as a picture: a scalp topomap for EEG, glass-brain markers for
    fMRI parcels, sensor positions seen from above otherwise. Returns the PNG path."""
    out = os.fspath(out)
    kinds = set(segment.kinds)
    label = f"{title} (median r {np.median(r):.3f})".strip()
    if kinds == {"parcel"}:
        from nilearn import plotting

        display = plotting.plot_markers(r, segment.positions * 1000.0, node_cmap="RdBu_r",
                                        node_vmin=-np.abs(r).max(), node_vmax=np.abs(r).max(),
                                        title=label, display_mode="lzr")
        with atomic_write(out, "figure") as tmp:
            display.savefig(tmp, dpi=120)
        display.close()
        return out
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot()
    limit = float(np.abs(r).max()) or 1.0
    if kinds == {"eeg"}:

        names = segment.meta.get("ch_names") or [f"s{k}" for k in range(segment.n_sensors)]
        info = mne.create_info(list(names), segment.sfreq, "eeg")
        info.set_montage(mne.channels.make_dig_montage(
            ch_pos=dict(zip(names, segment.positions.astype(float), strict=True)), coord_frame="head"))
        image, _ = mne.viz.plot_topomap(r, info, axes=ax, show=False, cmap="RdBu_r", vlim=(-limit, limit))
    else:
        image = ax.scatter(segment.positions[:, 0], segment.positions[:, 1], c=r, cmap="RdBu_r",
                           vmin=-limit, vmax=limit, s=40)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
    fig.colorbar(image, ax=ax, label="Pearson r", shrink=0.8)
    ax.set_title(label, fontsize=9)
    fig.tight_layout()
    with atomic_write(out, "figure") as tmp:
        fig.savefig(tmp, dpi=120)
    return out


def plot_confusion(y: np.ndarray, pred: np.ndarray, classes: list[str], out: Path) -> Path:
    """Row-normalised confusion matrix (true class per row) as a PNG at ``out``."""

    matrix = confusion_matrix(y, pred, labels=range(len(classes)), normalize="true")
    fig = Figure(figsize=(3.2 + 0.3 * len(classes), 3 + 0.3 * len(classes)))
    ax = fig.add_subplot()
    ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    with atomic_write(out, "figure") as tmp:
        fig.savefig(tmp, dpi=120)
    return out
