"""EEG/MEG/iEEG channel selection and geometry: which channels a recording keeps, and where
each sensor is (head-frame position, coil normal, kind), from the file or a montage."""

from __future__ import annotations

import mne
import numpy as np
from mne.io.constants import FIFF

from neurofm.errors import MissingPositionsError, RecordingError
from neurofm.options import option_name
from neurofm.tokenizers.geometry import (
    NON_EEG_NAME,
    channel_geometry,
    choose_montage,
    montage_positions,
)
from neurofm.tokenizers.options import IEEG_KINDS


def sensor_kind(ch: dict) -> str | None:
    kind = ch["kind"]
    if kind == FIFF.FIFFV_MEG_CH:
        return "grad" if ch["unit"] == FIFF.FIFF_UNIT_T_M else "mag"
    return {FIFF.FIFFV_EEG_CH: "eeg", FIFF.FIFFV_SEEG_CH: "seeg", FIFF.FIFFV_ECOG_CH: "ecog"}.get(kind)



def select_channels(
    raw: mne.io.BaseRaw,
    kinds: tuple[str, ...],
    montage: str | mne.channels.DigMontage,
    on_missing_positions: str,
    source: str,
) -> tuple[list[str], np.ndarray, np.ndarray, list[str], dict[str, str], dict[str, int]]:
    """Choose channels and their geometry, before any data is loaded."""
    dropped: dict[str, str] = {}
    other_types: dict[str, int] = {}
    keep: list[int] = []
    chan_kinds: list[str] = []
    bads = set(raw.info["bads"])
    for i, ch in enumerate(raw.info["chs"]):
        kind = sensor_kind(ch)
        name = ch["ch_name"]
        if kind is None or kind not in kinds:
            label = kind or mne.channel_type(raw.info, i)
            other_types[label] = other_types.get(label, 0) + 1
        elif kind == "eeg" and NON_EEG_NAME.match(name):
            dropped[name] = "not EEG by name (EOG/ECG/EMG/trigger/...)"
        elif name in bads:
            dropped[name] = "marked bad in file"
        else:
            keep.append(i)
            chan_kinds.append(kind)
    if not keep:
        raise RecordingError(
            f"no usable channels of kinds {list(kinds)} (found {other_types or 'none'}; "
            f"dropped {len(dropped)}); pass {option_name('kinds')}=... to choose others",
            source,
        )
    info = mne.pick_info(raw.info, keep)
    positions, orientations = channel_geometry(info)
    names = [raw.ch_names[i] for i in keep]
    missing = ~np.isfinite(positions).all(axis=1)
    is_ieeg = np.array([k in IEEG_KINDS for k in chan_kinds])
    lookup = missing & ~is_ieeg & (np.array(chan_kinds) == "eeg")
    if lookup.any() and montage is not None:
        found, _ = montage_positions([n for n, m in zip(names, lookup, strict=True) if m], montage)
        positions[lookup] = found
        missing = ~np.isfinite(positions).all(axis=1)
    if missing.any():
        absent = [n for n, m in zip(names, missing, strict=True) if m]
        if on_missing_positions != "drop":
            shown = ", ".join(absent[:8]) + (", ..." if len(absent) > 8 else "")
            raise MissingPositionsError(
                f"{len(absent)} of {len(names)} channels have no position ({shown}) and are not "
                f"in montage {_montage_label(montage, names)}; pass {option_name('montage')}='<a standard "
                f"montage>' or a DigMontage, rename the channels to standard names, or "
                f"{option_name('on_missing_positions')}='drop'",
                source,
            )
        for name in absent:
            dropped[name] = "no position"
        keep_mask = ~missing
        names = [n for n, k in zip(names, keep_mask, strict=True) if k]
        chan_kinds = [k for k, m in zip(chan_kinds, keep_mask, strict=True) if m]
        positions, orientations = positions[keep_mask], orientations[keep_mask]
        if not names:
            raise MissingPositionsError(f"no channel has a position; pass {option_name('montage')}=...", source)
    return names, positions, orientations, chan_kinds, dropped, other_types



def _montage_label(montage, names: list[str]) -> str:
    chosen = choose_montage(names, montage)
    label = chosen if isinstance(chosen, str) else "<DigMontage>"
    return f"{montage!r} ({label})" if montage == "auto" else repr(label)
