"""1D convolutional building blocks for diffusion U-Nets, on channels-first ``[B, C, T]`` features.

* :class:`ResBlock1d` - GroupNorm -> SiLU -> Conv -> GroupNorm -> FiLM(embedding) -> SiLU -> Dropout -> Conv,
  plus a (1x1 when the width changes) shortcut (Ho et al. 2020; scale-shift norm of Nichol & Dhariwal 2021).
* :class:`Downsample1d` / :class:`Upsample1d` - exact factor-``s`` resampling by a strided convolution, a
  transposed convolution, or nearest-neighbour repetition followed by a convolution.
* :class:`SelfAttention1d` - multi-head self-attention over time with an optional key mask.
* :class:`CrossAttention1d` - attention from the features to a context sequence (text states) with
  a ``[B, L]`` key mask; rows whose context is empty, or that are listed in ``drop [B]``, get a zero
  attention output (Noise2Music's CFG text dropout) instead of a softmax over nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InvalidInput
from .film import FiLM

__all__ = ["CrossAttention1d", "Downsample1d", "ResBlock1d", "SelfAttention1d", "Upsample1d", "group_norm"]


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """``GroupNorm(groups, channels)``, raising :class:`ConfigError` when ``groups`` does not divide ``channels``."""
    if groups < 1 or channels % groups:
        raise ConfigError(f"norm_groups={groups} must divide the channel count {channels}")
    return nn.GroupNorm(groups, channels, eps=1e-5)


def _sampling_kernel(stride: int) -> tuple[int, int]:
    # kernel k = s + 2p with p = s // 2 gives exactly T / s (conv) or T * s (transposed conv) frames
    pad = stride // 2
    return stride + 2 * pad, pad


class ResBlock1d(nn.Module):
    """Residual conv block conditioned on an embedding through FiLM.

    ``x [B, C_in, T]``, ``emb [B, E]`` (per example) or ``[B, T, E]`` (per frame) -> ``[B, C_out, T]``.
    The last convolution is zero-initialised, so a new block is the identity on its shortcut.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int | None,
        *,
        kernel_size: int = 7,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd number, got {kernel_size}")
        pad = kernel_size // 2
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=pad)
        self.norm2 = group_norm(out_channels, norm_groups)
        self.film = FiLM(emb_dim, out_channels) if emb_dim else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=pad)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None:
            if emb is None:
                raise InvalidInput("this ResBlock1d is conditioned and needs an embedding")
            h = self.film(h, emb)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample1d(nn.Module):
    """Strided convolution ``[B, C_in, T] -> [B, C_out, T / s]`` (``T`` must be a multiple of ``s``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if stride < 1:
            raise ConfigError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        k, p = _sampling_kernel(stride)
        self.conv = nn.Conv1d(in_channels, out_channels, k, stride=stride, padding=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.stride:
            raise InvalidInput(f"Downsample1d: length {x.shape[-1]} is not a multiple of the stride {self.stride}")
        return self.conv(x)


UPSAMPLE_MODES = ("transposed", "nearest", "linear")


class Upsample1d(nn.Module):
    """``[B, C_in, T] -> [B, C_out, T * s]`` by a transposed convolution (``mode="transposed"``), or
    nearest-neighbour repetition (``mode="nearest"``, no checkerboard) or linear interpolation
    (``mode="linear"``: its sinc-squared response also damps the images of the low-rate signal
    near multiples of the low rate, which repetition leaves at a few percent) then a
    ``kernel_size`` convolution. ``nearest`` and ``linear`` have the same weights."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, mode: str = "transposed", kernel_size: int = 3):
        super().__init__()
        if stride < 1:
            raise ConfigError(f"stride must be >= 1, got {stride}")
        if mode not in UPSAMPLE_MODES:
            raise ConfigError(f"upsampling mode must be one of {', '.join(UPSAMPLE_MODES)}, got {mode!r}")
        self.stride = stride
        self.mode = mode
        if mode == "transposed":
            k, p = _sampling_kernel(stride)
            self.conv = nn.ConvTranspose1d(in_channels, out_channels, k, stride=stride, padding=p)
        else:
            if kernel_size % 2 == 0:
                raise ConfigError(f"kernel_size must be odd, got {kernel_size}")
            self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest" and self.stride > 1:
            x = x.repeat_interleave(self.stride, dim=-1)
        elif self.mode == "linear" and self.stride > 1:
            x = F.interpolate(x, scale_factor=self.stride, mode="linear", align_corners=False)
        return self.conv(x)


def _heads(channels: int, num_heads: int) -> int:
    if num_heads < 1 or channels % num_heads:
        raise ConfigError(f"num_heads={num_heads} must divide the channel count {channels}")
    return num_heads


class SelfAttention1d(nn.Module):
    """Pre-norm multi-head self-attention over time with a residual connection.

    ``x [B, C, T]``; ``key_mask`` (bool, ``[T]`` or ``[B, T]``, True = may be attended) hides
    padding frames. The output projection is zero-initialised.
    """

    def __init__(self, channels: int, num_heads: int = 8, *, norm_groups: int = 32):
        super().__init__()
        self.num_heads = _heads(channels, num_heads)
        self.norm = group_norm(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t = x.shape
        h = self.num_heads
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, h, c // h, t).transpose(-1, -2).unbind(1)  # [B, H, T, d]
        attn_mask = None
        if key_mask is not None:
            attn_mask = key_mask.to(x.device).bool()
            attn_mask = attn_mask.view(1, 1, 1, t) if attn_mask.dim() == 1 else attn_mask.view(b, 1, 1, t)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, t))


class CrossAttention1d(nn.Module):
    """Pre-norm multi-head cross-attention from ``x [B, C, T]`` to ``context [B, L, D]``.

    ``context_mask [B, L]`` (True = real token). Rows with no real token, and rows where
    ``drop [B]`` is True, contribute a zero attention output, so the block reduces to the identity
    for them (the null text condition). The output projection is zero-initialised.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int = 8, *, norm_groups: int = 32):
        super().__init__()
        self.num_heads = _heads(channels, num_heads)
        self.context_dim = context_dim
        self.norm = group_norm(channels, norm_groups)
        self.context_norm = nn.LayerNorm(context_dim)
        self.q = nn.Conv1d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, c, t = x.shape
        if context.dim() != 3 or context.shape[0] != b or context.shape[-1] != self.context_dim:
            raise InvalidInput(f"cross-attention context must be [B={b}, L, {self.context_dim}], got {tuple(context.shape)}")
        if context_mask.shape != context.shape[:2]:
            raise InvalidInput(f"context mask {tuple(context_mask.shape)} does not match context {tuple(context.shape[:2])}")
        off = ~context_mask.any(dim=1)
        if drop is not None:
            off = off | drop.to(off.device).bool()
        if off.device.type != "meta" and bool(off.all()):
            return x  # nothing to attend to in the whole batch
        h, L = self.num_heads, context.shape[1]
        # null / dropped rows attend everywhere (a finite softmax) and are zeroed below
        key_mask = context_mask | off[:, None]
        q = self.q(self.norm(x)).reshape(b, h, c // h, t).transpose(-1, -2)  # [B, H, T, d]
        kv = self.kv(self.context_norm(context.to(x.dtype)))  # [B, L, 2C]
        k, v = kv.reshape(b, L, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, L, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask.view(b, 1, 1, L))
        out = self.proj(out.transpose(-1, -2).reshape(b, c, t))
        return x + out * (~off).to(out.dtype).view(b, 1, 1)
