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

Inference fast path (tests/test_codec_inference.py checks it against the original computation):

* without autograd, SEANet can run in the *NWC layout*: ``[B, C, 1, T]`` tensors in
  channels-last memory (physically ``[B, T, C]``), on which oneDNN's 1D convolutions with few
  channels are about twice as fast as on ``[B, C, T]`` (:func:`to_nwc`, :func:`from_nwc`);
  the modules below accept both layouts. oneDNN picks other kernels for it, so results differ
  from the ``[B, C, T]`` path by float rounding (~1e-6 relative);
* in the NWC layout, constant ("zero") padding is done by the convolution itself (``padding=``)
  rather than by an ``F.pad`` copy of the whole signal; only when the right side needs more
  zeros than the left are the last frames computed from a short padded tail (:func:`padded_conv`).
  The ``[B, C, T]`` path keeps ``F.pad`` + convolution: bit for bit the original computation;
* without autograd, weight-normed weights are computed once per parameter update and cached
  (:func:`inference_weight`).
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


def to_nwc(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` -> the inference layout ``[B, C, 1, T]`` in channels-last memory (``[B, T, C]``)."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def from_nwc(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_nwc`: a contiguous ``[B, C, T]``."""
    return x.squeeze(2).contiguous()


def is_nwc(x: torch.Tensor) -> bool:
    """Whether ``x`` is in the inference layout of :func:`to_nwc` (a 4D ``[B, C, 1, T]``)."""
    return x.dim() == 4


def _param_key(module: nn.Module) -> tuple | None:
    """Identity of ``module``'s current parameter values (storage, version, dtype), or None when
    the parameters carry no version counter (inference tensors)."""
    try:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in module.parameters())
    except RuntimeError:
        return None


def inference_weight(conv: nn.Module, nwc: bool) -> torch.Tensor:
    """``conv.weight`` for the no-grad path, computed once per parameter update.

    Weight norm recomputes ``g v / ||v||`` on every access; here the result (unsqueezed to
    ``[O, I, 1, k]`` channels-last for the NWC layout) is cached on the module under a key of the
    parameters' storage and version counters, so an optimiser step, ``load_state_dict`` or
    ``.to()`` invalidates it. Only call it with autograd off: the cached tensor has no graph.
    """
    key = _param_key(conv)
    cache = conv.__dict__.get("_tunecraft_inference_weight")
    if key is not None and cache is not None and cache[0] == key and cache[1] == nwc:
        return cache[2]
    weight = conv.weight.detach()
    if nwc:
        weight = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    if key is not None:
        conv.__dict__["_tunecraft_inference_weight"] = (key, nwc, weight)
    return weight


def padded_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, dilation: int,
                groups: int, left: int, right: int) -> torch.Tensor:
    """``conv1d(F.pad(x, (left, right)), ...)`` without copying ``x`` into a padded buffer.

    ``x`` is ``[B, C, T]`` (weight ``[O, I, k]``) or the NWC layout ``[B, C, 1, T]`` (weight
    ``[O, I, 1, k]``). The convolution pads ``left`` zeros on both sides itself; surplus frames
    that only the extra zeros on the right made possible are cut off, and when ``right > left``
    the frames that need more zeros on the right are computed from a short zero-padded tail of
    ``x``. Every output frame sees exactly the samples it sees after ``F.pad``.
    """
    nwc = x.dim() == 4
    length = x.shape[-1]
    kernel = (weight.shape[-1] - 1) * dilation + 1
    n_frames = (length + left + right - kernel) // stride + 1

    def conv(inp: torch.Tensor, pad: int) -> torch.Tensor:
        if nwc:
            return F.conv2d(inp, weight, bias, (1, stride), (0, pad), (1, dilation), groups)
        return F.conv1d(inp, weight, bias, stride, pad, dilation, groups)

    if n_frames < 1:
        raise ValueError(f"input of length {length} is too short for kernel {kernel} with padding {(left, right)}")
    n_main = (length + 2 * left - kernel) // stride + 1 if length + 2 * left >= kernel else 0
    if right <= left or n_main >= n_frames:
        y = conv(x, left)
        return y[..., :n_frames] if y.shape[-1] > n_frames else y
    if n_main < 1:  # a signal shorter than the kernel: pad it (it is tiny)
        return conv(F.pad(x, (0, right - left)), left)[..., :n_frames]
    main = conv(x, left)[..., :n_main]
    # frames n_main .. n_frames - 1 read samples [a, b) of x, zero outside [0, T)
    a = n_main * stride - left
    b = (n_frames - 1) * stride - left + kernel
    tail = x[..., max(a, 0): min(b, length)]
    tail = F.pad(tail, (max(0, -a), max(0, b - length)))
    if nwc:
        tail = tail.contiguous(memory_format=torch.channels_last)
    return torch.cat([main, conv(tail, 0)], dim=-1)


def unpad1d(x: torch.Tensor, paddings: tuple[int, int]) -> torch.Tensor:
    """Remove ``paddings = (left, right)`` samples from the last axis."""
    padding_left, padding_right = paddings
    if padding_left < 0 or padding_right < 0 or padding_left + padding_right > x.shape[-1]:
        raise ValueError(f"cannot remove padding {paddings} from length {x.shape[-1]}")
    return x[..., padding_left : x.shape[-1] - padding_right]


class _NormConv(nn.Module):
    """A convolution followed by its normalisation: ``layer`` (weight-normalised per ``norm``) is
    kept under the attribute ``name`` (``conv`` or ``convtr``: the parameter names of audiocraft's
    checkpoints), the normalisation under ``.norm``."""

    def __init__(self, name: str, layer: nn.Module, causal: bool, norm: str, norm_kwargs: dict | None):
        super().__init__()
        layer = apply_parametrization_norm(layer, norm)
        setattr(self, name, layer)
        self.norm = get_norm_module(layer, causal, norm, **(norm_kwargs or {}))
        self.norm_type = norm


class NormConv1d(_NormConv):
    """``nn.Conv1d`` followed by its normalisation; parameters live under ``.conv`` and ``.norm``."""

    def __init__(self, *args: Any, causal: bool = False, norm: str = "none", norm_kwargs: dict | None = None, **kwargs: Any):
        super().__init__("conv", nn.Conv1d(*args, **kwargs), causal, norm, norm_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NormConv2d(_NormConv):
    """``nn.Conv2d`` followed by its normalisation (used by the spectrogram discriminators)."""

    def __init__(self, *args: Any, norm: str = "none", norm_kwargs: dict | None = None, **kwargs: Any):
        super().__init__("conv", nn.Conv2d(*args, **kwargs), False, norm, norm_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class NormConvTranspose1d(_NormConv):
    """``nn.ConvTranspose1d`` followed by its normalisation; parameters under ``.convtr``/``.norm``."""

    def __init__(self, *args: Any, causal: bool = False, norm: str = "none", norm_kwargs: dict | None = None, **kwargs: Any):
        super().__init__("convtr", nn.ConvTranspose1d(*args, **kwargs), causal, norm, norm_kwargs)

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
        # spectral norm advances its power iteration on every weight access in training mode
        self._cache_weight = norm != "spectral_norm"

    def paddings(self, length: int) -> tuple[int, int]:
        """``(left, right)`` zeros (or reflected samples) around a length-``length`` input."""
        conv = self.conv.conv
        kernel_size = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
        stride = conv.stride[0]
        padding_total = kernel_size - stride
        extra = extra_padding_for_conv1d(length, kernel_size, stride, padding_total)
        if self.causal:
            return padding_total, extra
        padding_right = padding_total // 2
        return padding_total - padding_right, padding_right + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T] -> [B, C_out, ceil(T / stride)]``; the NWC layout ``[B, C, 1, T]`` (no
        autograd only) is accepted and returned as well."""
        conv = self.conv.conv
        nwc = is_nwc(x)
        if nwc and torch.is_grad_enabled():
            raise RuntimeError("the NWC layout is an inference path; use [B, C, T] with autograd")
        if torch.is_grad_enabled() or not self._cache_weight:
            weight = conv.weight
            if nwc:
                weight = weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        else:
            weight = inference_weight(conv, nwc)
        left, right = self.paddings(x.shape[-1])
        stride, dilation, groups = conv.stride[0], conv.dilation[0], conv.groups
        if not nwc:  # [B, C, T]: exactly the original computation (the bit-exact encoder path)
            y = F.conv1d(pad1d(x, (left, right), mode=self.pad_mode), weight, conv.bias, stride, 0, dilation, groups)
        elif self.pad_mode == "constant":
            y = padded_conv(x, weight, conv.bias, stride, dilation, groups, left, right)
        else:
            # reflect/replicate/circular pads are defined on [B, C, T]
            x = to_nwc(pad1d(x.squeeze(2), (left, right), mode=self.pad_mode))
            y = padded_conv(x, weight, conv.bias, stride, dilation, groups, 0, 0)
        return self.conv.norm(y)


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
        """``[B, C_in, T] -> [B, C_out, T * stride]``; also in the NWC layout without autograd."""
        convtr = self.convtr.convtr
        padding_total = convtr.kernel_size[0] - convtr.stride[0]
        if is_nwc(x):
            if torch.is_grad_enabled():
                raise RuntimeError("the NWC layout is an inference path; use [B, C, T] with autograd")
            weight = inference_weight(convtr, nwc=True)
            y = F.conv_transpose2d(x, weight, convtr.bias, (1, convtr.stride[0]), 0, 0, convtr.groups,
                                   (1, convtr.dilation[0]))
            y = self.convtr.norm(y)
        else:
            y = self.convtr(x)
        if self.causal:
            padding_right = math.ceil(padding_total * self.trim_right_ratio)
        else:
            padding_right = padding_total // 2
        return unpad1d(y, (padding_total - padding_right, padding_right))
