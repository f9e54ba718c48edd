"""Pictures of what the model sees: sensor geometry coloured by kind."""

from __future__ import annotations

import os

import numpy as np

from neurofm.tokenizers.segment import Segment

COLORS = {"eeg": "tab:blue", "mag": "tab:red", "grad": "tab:orange", "seeg": "tab:green",
          "ecog": "tab:purple", "parcel": "tab:gray"}


def plot_sensors(seg: Segment, ax=None, show_normals: bool = True, title: str | None = None,
                 fname: str | os.PathLike | None = None):
    """3-D scatter of a segment's sensors (head frame or MNI, mm), coloured by kind.

    Parameters
    ----------
    seg : Segment
        Any segment (EEG, MEG, iEEG or fMRI parcels).
    ax : matplotlib 3-D Axes | None
        Where to draw; a new figure when None.
    show_normals : bool
        Draw MEG coil normals as short arrows.
    title : str | None
        Defaults to the modality, sensor count and source file name.
    fname : path-like | None
        Save the figure there (PNG, 150 dpi).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    import matplotlib

    if ax is None and fname is not None and matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        fig = plt.figure(figsize=(6, 5))
        ax = fig.add_subplot(projection="3d")
    else:
        fig = ax.figure
    pos_mm = seg.positions.astype(np.float64) * 1e3  # [C, 3]
    kinds = np.asarray(seg.kinds)
    for kind in dict.fromkeys(seg.kinds):
        sel = kinds == kind
        ax.scatter(*pos_mm[sel].T, s=14, color=COLORS.get(kind, "k"), label=f"{kind} ({sel.sum()})",
                   depthshade=False)
        if show_normals and kind in ("mag", "grad"):
            ax.quiver(*pos_mm[sel].T, *(seg.orientations[sel].T * 15), color=COLORS[kind],
                      linewidth=0.5, arrow_length_ratio=0.2)
    span = (pos_mm.max(axis=0) - pos_mm.min(axis=0)).max() / 2 or 1.0
    mid = (pos_mm.max(axis=0) + pos_mm.min(axis=0)) / 2
    for setter, m in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), mid, strict=True):
        setter(m - span, m + span)
    ax.set_xlabel("x (mm, right)")
    ax.set_ylabel("y (mm, anterior)")
    ax.set_zlabel("z (mm, up)")
    source = os.path.basename(str(seg.meta.get("source", "")))
    ax.set_title(title or f"{seg.meta.get('modality', '')}: {seg.n_sensors} sensors  {source}",
                 fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    if fname is not None:
        fig.savefig(fname, dpi=150, bbox_inches="tight")
    return fig
