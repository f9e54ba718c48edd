"""The input contract: what a checkpoint expects of the recordings it embeds.

Pretraining records, from the shard manifest it read, how its corpus was tokenized: per
modality the sampling rate, filters, units and scaling, the window, the geometry frame and
(fMRI) the parcel coordinate space and TR handling. ``neurofm export`` stores it in
``config.json`` under ``input_contract``; ``neurofm.load(...).embed`` and ``neurofm
finetune`` tokenize with its settings by default and refuse, in one line naming the field,
an input the checkpoint cannot serve.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, fields
from typing import Any

from neurofm.errors import InputContractError
from neurofm.tokenizers.contract import FMRI_KEYS, MEEG_KEYS, tokenizer_defaults  # noqa: F401
from neurofm.tokenizers.options import FmriOptions, MeegOptions

CONTRACT_VERSION = 1
MEEG = ("eeg", "meg", "ieeg")
UNITS = {"eeg": "uV", "seeg": "uV", "ecog": "uV", "mag": "fT", "grad": "fT/cm"}
TEMPLATE_SPACES = ("MNI", "Talairach")


class InputContract(dict):
    """A checkpoint's input contract, typed: the ``dict`` ``config.json`` holds (indexing, JSON
    and equality as before) with its parts as attributes and the rules that read it as methods.

    Built from a saved contract, checked: a contract of a newer version than this neurofm
    reads, or one without its modalities, is an :class:`~neurofm.errors.InputContractError`.
    """

    def __init__(self, values: dict[str, Any], source: str | os.PathLike | None = None):
        super().__init__(values)
        version = self.get("version", CONTRACT_VERSION)
        if not isinstance(version, int) or version > CONTRACT_VERSION:
            raise InputContractError(f"input_contract.version {version!r} is newer than this neurofm reads "
                                     f"({CONTRACT_VERSION}): upgrade neurofm", source)
        if not isinstance(self.get("modalities"), list):
            raise InputContractError("input_contract.modalities is missing: not a neurofm input contract", source)

    @property
    def modalities(self) -> list[str]:
        """The modalities the checkpoint was pretrained on."""
        return list(self["modalities"])

    @property
    def meeg(self) -> dict[str, Any] | None:
        """How EEG/MEG/iEEG was tokenized (rate, filters, window, units, scaling), or None."""
        return self.get("meeg")

    @property
    def fmri(self) -> dict[str, Any] | None:
        """How fMRI was tokenized (cleaning, TR handling, window, space, atlas), or None."""
        return self.get("fmri")

    @property
    def corpus(self) -> dict[str, Any]:
        """The pretraining corpus: hours (per modality), windows, subjects, datasets."""
        return dict(self.get("corpus") or {})

    def tokenizer_defaults(self, section: str) -> dict[str, Any]:
        """:func:`tokenizer_defaults` of this contract for ``section`` ('meeg' or 'fmri')."""
        return tokenizer_defaults(self, section)

    def window(self, section: str, fallback: float) -> float:
        """:func:`default_window` of this contract."""
        return default_window(self, section, fallback)

    def check(self, segments, source: str | os.PathLike | None = None, *, other_modalities: bool = False,
              hint: str = "") -> None:
        """:func:`check_segments` against this contract."""
        check_segments(self, segments, source, other_modalities=other_modalities, hint=hint)


def input_contract(manifest: dict[str, Any], patch_s: dict[str, float]) -> dict[str, Any]:
    """The contract of a model pretrained on the shards of ``manifest`` with ``patch_s``."""
    options = manifest.get("options", {})
    totals = manifest.get("totals", {})
    modalities = sorted(totals.get("hours_by_modality", {}))
    contract: dict[str, Any] = {
        "version": CONTRACT_VERSION, "modalities": modalities,
        "patch_s": {m: patch_s[m] for m in modalities if m in patch_s},
        "corpus": {"hours": totals.get("hours"), "hours_by_modality": totals.get("hours_by_modality", {}),
                   "windows": totals.get("samples"), "subjects": len(totals.get("hours_by_subject", {})),
                   "datasets": sorted(totals.get("hours_by_dataset", {}))},
    }
    if any(m in MEEG for m in modalities):
        defaults = {f.name: f.default for f in fields(MeegOptions)}
        chosen = {**defaults, **dict(options.get("meeg") or {}), "sfreq": float(options.get("sfreq", 200.0))}
        contract["meeg"] = {
            **{k: chosen[k] for k in MEEG_KEYS},
            "window_s": options.get("window_s"),
            "units": UNITS,
            "scaling": "per channel: (x - median) / (1.4826 * MAD), in the units above",
            "geometry": "sensor positions in metres, MNE head frame",
        }
    if "fmri" in modalities:
        chosen = asdict(FmriOptions.of({k: v for k, v in dict(options.get("fmri") or {}).items() if k in FMRI_KEYS}))
        atlas = options.get("atlas") or options.get("roi_coords")
        contract["fmri"] = {
            **chosen,
            "window_s": options.get("fmri_window_s"),
            "tr": "native TR of each run" if chosen["resample_tr_s"] is None else f"resampled to {chosen['resample_tr_s']} s",
            "scaling": "per parcel: linear detrend, then z-score over the run" if chosen["standardize"]
                       else "per parcel: as read",
            "coordinate_space": "MNI",
            "geometry": "parcel centroids in metres, MNI space",
            "atlas": os.path.basename(str(atlas)) if atlas else None,
        }
    return contract


def default_window(contract: dict | None, modality: str, fallback: float) -> float:
    """The contract's window for ``modality`` ('meeg' or 'fmri'), else ``fallback``."""
    window = (contract or {}).get(modality, {}).get("window_s")
    return float(window) if window else fallback


def check_segments(contract: dict | None, segments, source: str | os.PathLike | None = None, *,
                   other_modalities: bool = False, hint: str = "") -> None:
    """Refuse segments the contract's checkpoint was not trained for: another modality (unless
    ``other_modalities``: a transfer across modalities, asked for), or EEG/MEG at another
    sampling rate. One line naming the contract field, and ``hint`` after a refused modality."""
    if not contract:
        return
    served = contract.get("modalities", [])
    for seg in segments:
        where = seg.meta.get("source") or source
        if seg.modality not in served and not other_modalities:
            raise InputContractError(
                f"this checkpoint was pretrained on {', '.join(served) or 'nothing'} "
                f"(input_contract.modalities); this input is {seg.modality}{hint}", where)
        expected = contract.get("meeg", {}).get("sfreq")
        if seg.modality in MEEG and expected and abs(float(seg.sfreq) - float(expected)) > 1e-6:
            raise InputContractError(
                f"input_contract.meeg.sfreq is {float(expected):g} Hz, this input was tokenized at "
                f"{float(seg.sfreq):g} Hz: leave the tokenizer's sfreq unset (the contract's is used) "
                f"or set it to {float(expected):g}", where)


def check_bold_space(contract: dict | None, img, path: str | os.PathLike | None) -> None:
    """Refuse a BOLD image in scanner space (NIfTI sform/qform code 1, no ``space-`` entity in
    its name) for a checkpoint whose parcels were in a template space."""
    if not contract or "fmri" not in contract:
        return
    name = os.path.basename(os.fspath(path)) if path is not None else ""
    space = re.search(r"_space-([A-Za-z0-9]+)", name)
    expected = contract["fmri"].get("coordinate_space", "MNI")
    if space:
        if not space.group(1).startswith(TEMPLATE_SPACES):
            raise InputContractError(
                f"input_contract.fmri.coordinate_space is {expected}; this image is in space "
                f"{space.group(1)!r} (its name): use the run normalised to {expected}", path)
        return
    header = img.header
    codes = {int(header["sform_code"]), int(header["qform_code"])} - {0}
    if codes == {1}:
        raise InputContractError(
            f"input_contract.fmri.coordinate_space is {expected}; this image is in scanner space "
            "(NIfTI sform/qform code 1): normalise it first (e.g. fMRIPrep --output-spaces "
            "MNI152NLin6Asym)", path)
