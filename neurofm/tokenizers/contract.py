"""What a checkpoint's input contract asks of the tokenizers.

The contract itself (:mod:`neurofm.models.contract`) is written at export from the shard
manifest; the tokenizers read only the options it sets, through :func:`tokenizer_defaults`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from neurofm.tokenizers.options import FMRI_OPTION_NAMES, FmriOptions, MeegOptions

# what a contract records of each: every fMRI cleaning option, the M/EEG ones that shape the signal
MEEG_KEYS = ("sfreq", "l_freq", "h_freq", "line_freq", "average_reference")
FMRI_KEYS = FMRI_OPTION_NAMES
FMRI_DEFAULTS = {f.name: f.default for f in fields(FmriOptions)}


def tokenizer_defaults(contract: dict | None, modality: str) -> dict[str, Any]:
    """The tokenizer options the contract sets for ``modality`` ('meeg' or 'fmri') where the
    pretraining corpus was tokenized other than by the tokenizers' defaults, to use where the
    caller gave none."""
    if not contract or modality not in contract:
        return {}
    if modality == "meeg":
        defaults = {f.name: f.default for f in fields(MeegOptions)}
        keys = MEEG_KEYS
    else:
        defaults, keys = FMRI_DEFAULTS, FMRI_KEYS
    section = contract[modality]
    return {k: section[k] for k in keys if k in section and section[k] != defaults[k]}
