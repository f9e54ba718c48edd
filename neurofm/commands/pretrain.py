"""``neurofm pretrain``: masked-autoencoding pretraining (Lightning; DDP / DeepSpeed)."""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig

from neurofm.configs.schema import typed
from neurofm.pretrain.config import PretrainConfig
from neurofm.pretrain.train import pretrain


def run_pretrain(cfg) -> int:
    """0 when trained to ``trainer.max_steps``; 143 when stopped by SIGTERM (checkpoint written)."""
    conf: PretrainConfig = typed(cfg)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return pretrain(conf, model_name=choices.get("model", ""), trainer_name=choices.get("trainer", "?"))
