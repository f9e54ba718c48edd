"""Encode one batch without gradients: every token and the window's embedding."""

from __future__ import annotations

import torch

from neurofm.models.backbone import mean_pool


@torch.no_grad()
def encode(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [B, L, D], pooled [B, D])`` of an encoder or a pretraining model."""
    tokens, mask = model.encode_every_token(batch)
    return tokens, mean_pool(tokens, mask)
