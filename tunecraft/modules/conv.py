"""1D/2D convolution blocks with normalisation and causal or centred ("same") padding.

The layout mirrors audiocraft's ``StreamableConv1d`` so that EnCodec checkpoints map onto it
one to one::

    StreamableConv1d.conv          NormConv1d
    StreamableConv1d.conv.conv     nn.Conv1d (optionally weight-normed)
    StreamableConv1d.conv.norm     nn.GroupNorm(1, C) for "time_group_norm", else Identity

    StreamableConvTranspose1d.convtr         NormConvTranspose1d
    StreamableConvTranspose1d.convtr.convtr  nn.ConvTranspose1d

Padding (EnCodec, Défossez et al. 2022). For a kernel ``k`` (dilated: ``(k - 1) d + 1``) and
stride ``s`` the fixed padding is ``k - s``: all on the left when causal, split
``(k - s) - (k - s) // 2`` left / ``(k - s) // 2`` right otherwise. An *extra* right padding
makes the last window complete, so that a length-``T`` signal always gives
``ceil(T / s)`` frames and the transposed convolution can rebuild at least ``T`` samples::

    n_frames = ceil((T - k + (k - s)) / s + 1)
    extra    = (n_frames - 1) s + k - (k - s) - T
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

CONV_NORMS = frozenset({"none", "weight_norm", "spectral_norm", "time_group_norm"})
PAD_MODES = frozenset({"constant", "reflect", "replicate", "circular"})


def apply_parametrization_norm(module: nn.Module, norm: str = "none") -> nn.Module:
    """Wrap ``module`` with weight or spectral normalisation (``torch.nn.utils.parametrizations``).

    Weight norm keeps ``parametrizations.weight.original0`` (the gain ``g``) and ``original1``
    (the direction ``v``) as parameters; the effective weight is ``g * v / ||v||``.
    """
    if norm not in CONV_NORMS:
        raise ConfigError(f"unknown conv normalisation {norm!r}; expected one of {', '.join(sorted(CONV_NORMS))}")
    if norm == "weight_norm":
        return nn.utils.parametrizations.weight_norm(module)
    if norm == "spectral_norm":
        return nn.utils.parametrizations.spectral_norm(module)
    return module


def get_norm_module(module: nn.Module, causal: bool = False, norm: str = "none", **norm_kwargs: Any) -> nn.Module:
    """The normalisation applied after the convolution: ``GroupNorm(1, C)`` for "time_group_norm"."""
    if norm not in CONV_NORMS:
        raise ConfigError(f"unknown conv normalisation {norm!r}; expected one of {', '.join(sorted(CONV_NORMS))}")
    if norm == "time_group_norm":
        if causal:
            raise ConfigError("time_group_norm normalises over the whole time axis and cannot be causal")
        return nn.GroupNorm(1, module.out_channels, **norm_kwargs)
    return nn.Identity()


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int = 0) -> int:
    """Right padding so that the last convolution window is complete (see module docstring)."""
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str = "constant", value: float = 0.0) -> torch.Tensor:
    """``F.pad`` on the last axis that also allows reflect padding of inputs shorter than the pad.

    For ``mode="reflect"`` on a signal of length ``<= max(paddings)``, zeros are first appended
    so the reflection is defined, and removed again afterwards (as EnCodec does).
    """
    length = x.shape[-1]
    padding_left, padding_right = paddings
    if padding_left < 0 or padding_right < 0:
        raise ValueError(f"negative padding {paddings}")
    if mode == "reflect":
        max_pad = max(padding_left, padding_right)
        extra_pad = 0
        if length <= max_pad:
            extra_pad = max_pad - length + 1
            x = F.pad(x, (0, extra_pad))
        padded = F.pad(x, paddings, mode)
        return padded[..., : padded.shape[-1] - extra_pad]
    if mode == "constant":
        return F.pad(x, paddings, mode, value)
    return F.pad(x, paddings, mode)


def unpad1d(x: torch.Tensor, paddings: tuple[int, int]) -> torch.Tensor:
    """Remove ``paddings = (left, right)`` samples from the last axis."""
    padding_left, padding_right = paddings
    if padding_left < 0 or padding_right < 0 or padding_left + padding_right > x.shape[-1]:
        raise ValueError(f"cannot remove padding {paddings} from length {x.shape[-1]}")
    return x[..., padding_left : x.shape[-1] - padding_right]


class NormConv1d(nn.Module):
    """``nn.Conv1d`` followed by its normalisation; parameters live under ``.conv`` and ``.norm``."""

    def __init__(self, *args: Any, causal: bool = False, norm: str = "none", norm_kwargs: dict | None = None, **kwargs: Any):
        super().__init__()
        self.conv = apply_parametrization_norm(nn.Conv1d(*args, **kwargs), norm)
        self.norm = get_norm_module(self.conv, causal, norm, **(norm_kwargs or {}))
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NormConv2d(nn.Module):
    """``nn.Conv2d`` followed by its normalisation (used by the spectrogram discriminators)."""

    def __init__(self, *args: Any, norm: str = "none", norm_kwargs: dict | None = None, **kwargs: Any):
        super().__init__()
        self.conv = apply_parametrization_norm(nn.Conv2d(*args, **kwargs), norm)
        self.norm = get_norm_module(self.conv, False, norm, **(norm_kwargs or {}))
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NormConvTranspose1d(nn.Module):
    """``nn.ConvTranspose1d`` followed by its normalisation; parameters under ``.convtr``/``.norm``."""

    def __init__(self, *args: Any, causal: bool = False, norm: str = "none", norm_kwargs: dict | None = None, **kwargs: Any):
        super().__init__()
        self.convtr = apply_parametrization_norm(nn.ConvTranspose1d(*args, **kwargs), norm)
        self.norm = get_norm_module(self.convtr, causal, norm, **(norm_kwargs or {}))
        self.norm_type = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.convtr(x))


class StreamableConv1d(nn.Module):
    """Conv1d with causal or centred padding plus EnCodec's extra right padding.

    ``x [B, C_in, T] -> [B, C_out, ceil(T / stride)]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        causal: bool = False,
        norm: str = "none",
        norm_kwargs: dict | None = None,
        pad_mode: str = "reflect",
    ):
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ConfigError(f"unknown pad mode {pad_mode!r}; expected one of {', '.join(sorted(PAD_MODES))}")
        if stride > 1 and dilation > 1:
            warnings.warn(
                f"StreamableConv1d with stride {stride} and dilation {dilation} skips input samples", stacklevel=2
            )
        self.conv = NormConv1d(
            in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups, bias=bias,
            causal=causal, norm=norm, norm_kwargs=norm_kwargs,
        )
        self.causal = causal
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv.conv
        kernel_size = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
        stride = conv.stride[0]
        padding_total = kernel_size - stride
        extra = extra_padding_for_conv1d(x.shape[-1], kernel_size, stride, padding_total)
        if self.causal:
            x = pad1d(x, (padding_total, extra), mode=self.pad_mode)
        else:
            padding_right = padding_total // 2
            padding_left = padding_total - padding_right
            x = pad1d(x, (padding_left, padding_right + extra), mode=self.pad_mode)
        return self.conv(x)


class StreamableConvTranspose1d(nn.Module):
    """ConvTranspose1d that trims its fixed padding: ``[B, C_in, T] -> [B, C_out, T * stride]``.

    Causal: ``ceil((k - s) * trim_right_ratio)`` samples are trimmed on the right, the rest on
    the left. Non-causal: the trim is split like the forward convolution's padding. The extra
    padding of the encoder is removed by the caller, which knows the original length.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        causal: bool = False,
        norm: str = "none",
        trim_right_ratio: float = 1.0,
        norm_kwargs: dict | None = None,
    ):
        super().__init__()
        if not causal and trim_right_ratio != 1.0:
            raise ConfigError("trim_right_ratio != 1.0 only makes sense for causal convolutions")
        if not 0.0 <= trim_right_ratio <= 1.0:
            raise ConfigError(f"trim_right_ratio must be in [0, 1], got {trim_right_ratio}")
        self.convtr = NormConvTranspose1d(
            in_channels, out_channels, kernel_size, stride, causal=causal, norm=norm, norm_kwargs=norm_kwargs
        )
        self.causal = causal
        self.trim_right_ratio = trim_right_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        convtr = self.convtr.convtr
        padding_total = convtr.kernel_size[0] - convtr.stride[0]
        y = self.convtr(x)
        if self.causal:
            padding_right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            padding_right = padding_total // 2
        return unpad1d(y, (padding_total - padding_right, padding_right))
