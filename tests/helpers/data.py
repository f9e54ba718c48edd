"""The one reader of the EEGLAB tutorial recording, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import mne

# The EEGLAB tutorial recording's channel labels: its .set in the shared data was saved
# without chanlocs, so it reads as "EEG 000..." and needs these to get positions.
EEGLAB_TUTORIAL_CHANNELS = (
    "FPz EOG1 F3 Fz F4 EOG2 FC5 FC1 FC2 FC6 T7 C3 C4 Cz T8 CP5 CP1 CP2 CP6 "
    "P7 P3 Pz P4 P8 PO7 PO3 POz PO4 PO8 O1 Oz O2"
).split()


def read_eeglab_tutorial(meeg: Path, preload: bool = True) -> mne.io.BaseRaw:
    """The real EEGLAB tutorial recording (32 ch, 128 Hz, events ``square`` and ``rt``) under
    ``<meeg>/eeglab/``, its channels renamed to their published labels."""
    raw = mne.io.read_raw_eeglab(Path(meeg) / "eeglab" / "test_raw.set", preload=preload, verbose="error")
    raw.rename_channels(dict(zip(raw.ch_names, EEGLAB_TUTORIAL_CHANNELS, strict=True)))
    return raw
