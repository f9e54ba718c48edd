"""``neurofm export ckpt=... out=...``: any checkpoint -> config.json + model.safetensors + card."""

from __future__ import annotations

from neurofm.configs.schema import ExportConfig, typed
from neurofm.console import logger
from neurofm.models.io import CONFIG, WEIGHTS, export_checkpoint
from neurofm.pretrain.run_folder import validation_of


def run_export(cfg) -> int:
    conf: ExportConfig = typed(cfg)
    out = export_checkpoint(conf.ckpt, conf.out, extra=validation_of(conf.ckpt))
    logger.info("exported %s -> %s (%s, %s)", conf.ckpt, out, CONFIG, WEIGHTS)
    return 0
