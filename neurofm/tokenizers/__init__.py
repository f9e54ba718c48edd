"""Tokenizers: recordings -> :class:`Segment` windows whose sensors carry their geometry.

- :func:`tokenize_raw`, :func:`tokenize_events`: EEG/MEG/iEEG (any format MNE reads).
- :func:`tokenize_bold`, :func:`tokenize_roi_table`: fMRI, parcel-wise, any atlas and TR.
"""

from neurofm.tokenizers.atlas import parcel_table, parcellate
from neurofm.tokenizers.eeg_meg import read_recording, tokenize_events, tokenize_raw
from neurofm.tokenizers.fmri import repetition_time, resample_series, tokenize_bold
from neurofm.tokenizers.options import MeegOptions
from neurofm.tokenizers.plotting import plot_sensors
from neurofm.tokenizers.roi_table import read_roi_table, tokenize_roi_table
from neurofm.tokenizers.segment import Segment, Segments

__all__ = [
    "MeegOptions",
    "Segment",
    "Segments",
    "parcel_table",
    "parcellate",
    "plot_sensors",
    "read_roi_table",
    "repetition_time",
    "resample_series",
    "tokenize_bold",
    "tokenize_roi_table",
    "read_recording",
    "tokenize_events",
    "tokenize_raw",
]
