"""Tokenizers: recordings -> :class:`Segment` windows whose sensors carry their geometry.

- :func:`tokenize_raw`, :func:`tokenize_events`: EEG/MEG/iEEG (any format MNE reads).
- :func:`tokenize_bold`, :func:`tokenize_roi_table`: fMRI, parcel-wise, any atlas and TR.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from neurofm.tokenizers.options import MeegOptions
from neurofm.tokenizers.segment import Segment, Segments

if TYPE_CHECKING:
    from neurofm.tokenizers.atlas import parcel_table, parcellate
    from neurofm.tokenizers.eeg_meg import read_recording, tokenize_events, tokenize_raw
    from neurofm.tokenizers.fmri import repetition_time, resample_series, tokenize_bold
    from neurofm.tokenizers.plotting import plot_sensors
    from neurofm.tokenizers.roi_table import read_roi_table, tokenize_roi_table

# each modality's stack (MNE + scipy.signal; nibabel + pandas + nilearn) is imported on first
# use: a prepare worker that reads only EEG starts without the fMRI one, and vice versa
_LAZY = {"parcel_table": "atlas", "parcellate": "atlas", "read_recording": "eeg_meg",
         "tokenize_events": "eeg_meg", "tokenize_raw": "eeg_meg", "repetition_time": "fmri",
         "resample_series": "fmri", "tokenize_bold": "fmri", "plot_sensors": "plotting",
         "read_roi_table": "roi_table", "tokenize_roi_table": "roi_table"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"neurofm.tokenizers.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MeegOptions",
    "Segment",
    "Segments",
    "parcel_table",
    "parcellate",
    "plot_sensors",
    "read_recording",
    "read_roi_table",
    "repetition_time",
    "resample_series",
    "tokenize_bold",
    "tokenize_events",
    "tokenize_raw",
    "tokenize_roi_table",
]
