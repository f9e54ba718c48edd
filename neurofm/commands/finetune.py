"""``neurofm finetune``: decoding, encoding or subject-level classification under a protocol."""

from __future__ import annotations

from neurofm.configs.schema import typed
from neurofm.finetune.config import FinetuneConfig
from neurofm.finetune.tasks import finetune


def run_finetune(cfg) -> int:
    conf: FinetuneConfig = typed(cfg)
    finetune(conf)
    return 0
