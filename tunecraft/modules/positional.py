"""Positional encodings for transformers: sinusoidal (added to the input) and rotary (RoPE).

Sinusoidal, as in MusicGen / audiocraft / transformers' MusicGen: for position ``p`` and
``i < D/2``, ``w_i = max_period ** (-i / (D/2 - 1))`` and the embedding is
``[cos(p * w_0), ..., cos(p * w_{D/2-1}), sin(p * w_0), ..., sin(p * w_{D/2-1})]``.

Rotary (Su et al., RoFormer): consecutive channel pairs ``(x_{2i}, x_{2i+1})`` of queries and
keys are rotated by the angle ``p * theta_i`` with ``theta_i = max_period ** (-2i / d_head)``,
so that ``<q_m, k_n>`` depends only on ``m - n`` (audiocraft's channel layout).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InvalidInput

__all__ = ["sinusoidal_embedding", "SinusoidalTable", "RotaryEmbedding"]


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embeddings ``[..., dim]`` for integer or float ``positions [...]`` (cos first, then sin)."""
    if dim < 2 or dim % 2:
        raise InvalidInput(f"sinusoidal embeddings need an even dimension >= 2, got {dim}")
    half = dim // 2
    scale = math.log(max_period) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.int64, device=positions.device).float() * -scale)
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(dtype)


class SinusoidalTable(nn.Module):
    """A cache of sinusoidal embeddings for positions ``0 .. n-1`` that grows on demand (not saved)."""

    def __init__(self, dim: int, max_period: float = 10000.0, initial: int = 0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise InvalidInput(f"sinusoidal embeddings need an even dimension >= 2, got {dim}")
        self.dim = dim
        self.max_period = float(max_period)
        self.register_buffer("table", sinusoidal_embedding(torch.arange(initial), dim, max_period), persistent=False)

    def forward(self, start: int, length: int, dtype: torch.dtype) -> torch.Tensor:
        """Embeddings ``[length, dim]`` of positions ``start .. start + length - 1``."""
        end = start + length
        if end > self.table.shape[0]:
            size = max(end, 2 * self.table.shape[0], 256)
            with torch.inference_mode(False):  # a normal tensor, usable by training after a generation
                self.table = sinusoidal_embedding(
                    torch.arange(size, device=self.table.device), self.dim, self.max_period
                )
        out = self.table[start:end]
        return out if out.dtype == dtype else out.to(dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding applied to queries and keys ``[B, H, T, d_head]``."""

    def __init__(self, head_dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if head_dim < 2 or head_dim % 2:
            raise InvalidInput(f"rotary embeddings need an even head dimension, got {head_dim}")
        self.head_dim = head_dim
        self.max_period = float(max_period)
        inv = 1.0 / (self.max_period ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        self._cos = torch.empty(0)
        self._sin = torch.empty(0)

    def _tables(self, end: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos.shape[0] < end or self._cos.device != device:
            size = max(end, 2 * self._cos.shape[0], 256)
            with torch.inference_mode(False):  # a normal tensor, usable by training after a generation
                angles = torch.arange(size, device=device, dtype=torch.float32).unsqueeze(1) * self.inv_freq.to(device)
                self._cos, self._sin = torch.cos(angles), torch.sin(angles)
        return self._cos, self._sin

    def rotate(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate ``x [B, H, T, d_head]`` whose time index ``i`` is position ``start + i``."""
        T = x.shape[-2]
        cos, sin = self._tables(start + T, x.device)
        cos = cos[start:start + T].to(x.dtype)
        sin = sin[start:start + T].to(x.dtype)
        pairs = x.unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rotate(q, start), self.rotate(k, start)
