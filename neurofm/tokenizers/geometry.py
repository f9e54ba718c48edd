"""Sensor geometry: positions and orientations of channels in the MNE head frame.

The model never sees channel names; it sees where each sensor is (metres, head
frame) and what it measures (kind, and for MEG coils the unit normal). This
module reads that geometry from ``info["chs"][i]["loc"]`` and, for EEG channels
without digitised positions, looks them up by name in a standard montage.
"""

from __future__ import annotations

import re
from functools import lru_cache

import mne
import numpy as np

# Old 10-20 names and their 10-10 equivalents (the standard montages use the latter).
ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8", "TP9'": "TP9", "TP10'": "TP10"}

# Name patterns that mark a channel typed EEG as something else (EOG, ECG, EMG, triggers ...).
NON_EEG_NAME = re.compile(
    r"^(?:EEG[\s_-]?)?(?:[HV]?EOG|ECG|EKG|EMG|RESP|TRIG(?:GER)?|STATUS|STI|PHOTIC|SPO2|ACC|ERGO|"
    r"PULSE|BURSTS|IBI|SUPPR|GSR|EDA|LOC|ROC|CHIN)",
    re.IGNORECASE,
)

_EGI_NAME = re.compile(r"^E(\d+)$", re.IGNORECASE)
_HYDROCEL_NETS = (32, 64, 65, 128, 129, 256, 257)


def normalise_name(name: str) -> str:
    """Canonical key for matching a channel name to a montage (case, prefixes, references)."""
    key = name.strip().rstrip(".")  # PhysioNet/BCI2000 pad names with dots: 'Fc5.', 'Cz..'
    key = re.sub(r"^(EEG|EEG:)\s*", "", key, flags=re.IGNORECASE)
    key = re.sub(r"[-_ ](REF|LE|AR|AVG|A1|A2|M1|M2|CZ)$", "", key, flags=re.IGNORECASE)
    key = key.strip().upper()
    return ALIASES.get(key, key)


def _hydrocel_for(names: list[str]) -> str | None:
    numbers = [int(m.group(1)) for n in names if (m := _EGI_NAME.match(n.strip()))]
    if len(numbers) < max(1, len(names) // 2):
        return None
    top = max(numbers)
    net = next((n for n in _HYDROCEL_NETS if n >= top), None)
    if net is None:
        return None
    return {64: "GSN-HydroCel-64_1.0", 65: "GSN-HydroCel-65_1.0"}.get(net, f"GSN-HydroCel-{net}")


def default_montage() -> str:
    """The standard 10-05 montage (named ``colin27_1005`` from MNE 1.13, ``standard_1005`` before)."""
    return "colin27_1005" if "colin27_1005" in mne.channels.get_builtin_montages() else "standard_1005"


def choose_montage(names: list[str], montage: str | mne.channels.DigMontage) -> str | mne.channels.DigMontage:
    """Resolve ``montage='auto'``: EGI ``E<n>`` names use the HydroCel net, others the 10-05 montage.

    Ambiguous letter-number schemes (BioSemi ``A1``...) are never guessed: pass
    ``montage='biosemi128'`` (or your digitisation) explicitly.
    """
    if not isinstance(montage, str) or montage != "auto":
        return montage
    return _hydrocel_for(names) or default_montage()


@lru_cache(maxsize=16)
def _montage_table(name: str) -> tuple[dict[str, int], np.ndarray]:
    """Head-frame positions of a built-in montage, keyed by normalised name."""
    montage = mne.channels.make_standard_montage(name)
    info = mne.create_info(montage.ch_names, 1000.0, "eeg")
    info.set_montage(montage)  # fiducials -> head frame, as for digitised data
    positions = np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)
    index = {normalise_name(n): i for i, n in enumerate(montage.ch_names)}
    return index, positions


def montage_positions(
    names: list[str], montage: str | mne.channels.DigMontage
) -> tuple[np.ndarray, list[str]]:
    """Look up head-frame positions of EEG channels by name.

    Parameters
    ----------
    names : list of str
        Channel names, matched case-insensitively after removing ``EEG``
        prefixes, reference suffixes and trailing dots (PhysioNet's ``Fc5.``), with
        10-20 aliases (T3→T7, ...).
    montage : str | DigMontage
        A built-in montage name, ``'auto'``, or a :class:`mne.channels.DigMontage`.

    Returns
    -------
    positions : ndarray, shape (n_channels, 3)
        Positions in metres, head frame; NaN where not found.
    missing : list of str
        The names that were not found.
    """
    montage = choose_montage(names, montage)
    if isinstance(montage, str):
        index, table = _montage_table(montage)
    else:
        info = mne.create_info(montage.ch_names, 1000.0, "eeg")
        info.set_montage(montage)
        table = np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)
        index = {normalise_name(n): i for i, n in enumerate(montage.ch_names)}
    positions = np.full((len(names), 3), np.nan)
    missing = []
    for i, name in enumerate(names):
        j = index.get(normalise_name(name))
        if j is None:
            missing.append(name)
        else:
            positions[i] = table[j]
    return positions, missing


def has_position(loc: np.ndarray) -> np.ndarray:
    """Whether each row of ``loc[:, :3]`` is a real position (finite and not all zero)."""
    pos = loc[:, :3]
    return np.isfinite(pos).all(axis=1) & (np.abs(pos).sum(axis=1) > 0)


def channel_geometry(info: mne.Info) -> tuple[np.ndarray, np.ndarray]:
    """Positions and orientations of every channel in ``info``, in the head frame.

    MEG locations are in the device frame and are moved to the head frame with
    ``info['dev_head_t']``; the orientation of an MEG coil is its normal
    (``loc[9:12]``). EEG/iEEG orientations are zero.

    Returns
    -------
    positions : ndarray, shape (n_channels, 3)
        Metres, head frame; NaN where the file has no position.
    orientations : ndarray, shape (n_channels, 3)
        Unit normals for MEG channels, zeros otherwise.
    """
    loc = np.array([ch["loc"] for ch in info["chs"]], dtype=np.float64)  # [C, 12]
    is_meg = np.array([ch["kind"] == mne.io.constants.FIFF.FIFFV_MEG_CH for ch in info["chs"]])
    positions = np.where(has_position(loc)[:, None], loc[:, :3], np.nan)
    orientations = np.zeros((len(loc), 3))
    if is_meg.any():
        trans = info["dev_head_t"]
        rot, shift = (np.eye(3), np.zeros(3)) if trans is None else (trans["trans"][:3, :3], trans["trans"][:3, 3])
        positions[is_meg] = loc[is_meg, :3] @ rot.T + shift
        normals = loc[is_meg, 9:12] @ rot.T
        norm = np.linalg.norm(normals, axis=1, keepdims=True)
        orientations[is_meg] = normals / np.where(norm > 0, norm, 1.0)
    return positions, orientations
