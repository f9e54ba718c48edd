"""What a checkpoint's input contract asks of the tokenizers.

The contract itself (:mod:`neurofm.models.contract`) is written at export from the shard
manifest; the tokenizers read only the options it sets, through :func:`tokenizer_defaults`.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from neurofm.tokenizers.options import MeegOptions

MEEG_KEYS = ("sfreq", "l_freq", "h_freq", "line_freq", "average_reference")
FMRI_KEYS = ("resample_tr_s", "detrend", "standardize", "low_pass", "high_pass")
FMRI_DEFAULTS = {"resample_tr_s": None, "detrend": True, "standardize": True, "low_pass": None,
                 "high_pass": None}


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
