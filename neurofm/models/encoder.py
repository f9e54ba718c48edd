"""Pre-norm transformer encoder with one attention function and selectable backends.

Backends:
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient
  kernels on GPU), the default;
- ``xformers``: ``xformers.ops.memory_efficient_attention`` (optional extra, GPU only);
- ``math``: explicit softmax(QK^T / sqrt(d)) V, the reference.

An unavailable backend is an error when the model is built, not in the middle of a run.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from neurofm.errors import ConfigError

BACKENDS = ("sdpa", "xformers", "math")


def check_backend(backend: str) -> None:
    """Raise :class:`ConfigError` if ``backend`` cannot run here."""
    if backend not in BACKENDS:
        raise ConfigError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "xformers":
        try:
            import xformers.ops  # noqa: F401
        except ImportError as err:
            raise ConfigError("attention=xformers needs the xformers package: "
                              "pip install 'neurofm[xformers]' (GPU only), or use attention=sdpa") from err
        if not torch.cuda.is_available():
            raise ConfigError("attention=xformers has no CPU kernels; use attention=sdpa on CPU")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
              backend: str = "sdpa") -> torch.Tensor:
    """Multi-head attention. q, k, v: [B, H, L, Dh]; key_mask: [B, L] bool, True = attend."""
    if backend == "sdpa":
        mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, L]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if backend == "math":
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, H, L, L]
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        return scores.softmax(dim=-1) @ v
    import xformers.ops as xops

    bias = None
    if key_mask is not None:
        b, h, n, _ = q.shape
        bias = torch.zeros(b, h, n, k.shape[2], dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          attn_bias=bias)
    return out.transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, backend: str = "sdpa", dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.backend = heads, backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, d = x.shape  # [B, L, D]
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, key_mask, self.backend)  # [B, H, L, Dh]
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))

    def read(self, x: torch.Tensor, k: int, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Every token of ``x`` ``[B, K + L, D]`` attends to the first ``k`` (the context) only,
        with this layer's weights; keys and values are projected for the context alone.
        Cost ``(K + L) * K``, not ``(K + L)^2``. ``key_mask`` ``[B, K]``."""
        b, n, d = x.shape
        h = self.heads
        _, keys, values = self.qkv(x[:, :k]).view(b, k, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q = F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d]).view(b, n, h, d // h).transpose(1, 2)
        out = attention(q, keys, values, key_mask, self.backend)  # [B, H, K + L, Dh]
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))


class Block(nn.Module):
    """x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, backend: str = "sdpa",
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, backend, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask)
        return x + self.mlp(self.norm2(x))

    def read(self, x: torch.Tensor, k: int, key_mask: torch.Tensor | None) -> torch.Tensor:
        """The block with attention to the first ``k`` tokens only (:meth:`SelfAttention.read`)."""
        x = x + self.attn.read(self.norm1(x), k, key_mask)
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    """A stack of pre-norm blocks and a final LayerNorm; ``[B, L, D] -> [B, L, D]``."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 backend: str = "sdpa", dropout: float = 0.0, activation_checkpointing: bool = False):
        super().__init__()
        check_backend(backend)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, backend, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.activation_checkpointing = activation_checkpointing

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if key_mask is not None and not torch.compiler.is_compiling() and bool(key_mask.all()):
            key_mask = None  # nothing padded: attention takes its unmasked (fused) kernels
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, key_mask, use_reentrant=False)
            else:
                x = block(x, key_mask)
        return self.norm(x)

    def read(self, context: torch.Tensor, queries: torch.Tensor, context_mask: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Perceiver-style pass: the context tokens ``[B, K, D]`` attend to each other, each query
        ``[B, L, D]`` attends to the context only (not to other queries), in every block.
        Returns the queries ``[B, L, D]``. Memory and time grow as ``L * K``: linear in the
        number of queries, where :meth:`forward` over ``[context, queries]`` grows as ``(K + L)^2``."""
        if context_mask is not None and not torch.compiler.is_compiling() and bool(context_mask.all()):
            context_mask = None
        k = context.shape[1]
        x = torch.cat([context, queries], dim=1)
        for block in self.blocks:
            x = block.read(x, k, context_mask)
        return self.norm(x[:, k:])
