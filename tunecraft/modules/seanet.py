"""SEANet encoder and decoder (Tagliasacchi et al. 2020), as used by EnCodec / SoundStream.

Encoder (``ratios`` given in decoder order, used reversed)::

    wav [B, C, T] -> conv(k=kernel_size) -> n_filters
      for r in reversed(ratios):  [ResBlock x n_residual_layers] -> act -> conv(k=2r, stride=r), channels x2
      -> LSTM (with skip) -> act -> conv(k=last_kernel_size) -> z [B, dimension, ceil(T / hop)]

Decoder (mirror)::

    z -> conv(k=kernel_size) -> LSTM -> for r in ratios: act -> convtr(k=2r, stride=r) -> ResBlocks
      -> act -> conv(k=last_kernel_size) -> [final activation] -> wav [B, C, frames * hop]

Without autograd on CPU, both run in the NWC layout of :mod:`tunecraft.modules.conv` with
activations and the residual sum computed in place (same values as the plain path).

Residual unit: ``y = shortcut(x) + conv1(act(conv_k,dilation(act(x))))`` with hidden width
``dim // compress`` and dilation ``dilation_base ** j`` for the ``j``-th unit; the shortcut is the
identity ("true skip") or a 1x1 convolution.

Module order and names match audiocraft's ``SEANetEncoder.model`` / ``SEANetDecoder.model``
(``model.N.conv.conv.*``, ``model.N.block.M.conv.conv.*``, ``model.N.shortcut.conv.conv.*``,
``model.N.lstm.*``, ``model.N.convtr.convtr.*``); transformers' ``EncodecModel`` uses the same
order under ``layers.N``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError
from torch.nn import functional as F

from .conv import CONV_NORMS, PAD_MODES, StreamableConv1d, StreamableConvTranspose1d, from_nwc, is_nwc, to_nwc

ACTIVATIONS = frozenset({"ELU", "LeakyReLU", "ReLU", "SiLU", "GELU", "Tanh", "PReLU", "Mish", "Softsign"})


@dataclass
class SEANetConfig(Config):
    """Shape of a SEANet encoder/decoder pair.

    Defaults follow audiocraft's EnCodec (``config/model/encodec/default.yaml``): 32 filters,
    ratios [8, 5, 4, 2] (hop 320), one residual unit per scale, 2 LSTM layers, weight norm,
    constant ("zero") padding, non-causal.
    """

    channels: int = 1
    dimension: int = 128
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])
    activation: str = "ELU"
    activation_params: dict = field(default_factory=lambda: {"alpha": 1.0})
    final_activation: str | None = None
    final_activation_params: dict = field(default_factory=dict)
    norm: str = "weight_norm"
    norm_params: dict = field(default_factory=dict)
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    causal: bool = False
    pad_mode: str = "constant"
    true_skip: bool = True
    compress: int = 2
    lstm: int = 2
    disable_norm_outer_blocks: int = 0
    trim_right_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ConfigError(f"seanet.channels must be >= 1, got {self.channels}")
        if self.dimension < 1 or self.n_filters < 1:
            raise ConfigError("seanet.dimension and seanet.n_filters must be >= 1")
        if not self.ratios or any(int(r) < 1 for r in self.ratios):
            raise ConfigError(f"seanet.ratios must be a non-empty list of positive integers, got {self.ratios}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"seanet.activation {self.activation!r} is not one of {', '.join(sorted(ACTIVATIONS))}")
        if self.final_activation is not None and self.final_activation not in ACTIVATIONS:
            raise ConfigError(f"seanet.final_activation {self.final_activation!r} is not one of {', '.join(sorted(ACTIVATIONS))}")
        if self.norm not in CONV_NORMS:
            raise ConfigError(f"seanet.norm {self.norm!r} is not one of {', '.join(sorted(CONV_NORMS))}")
        if self.pad_mode not in PAD_MODES:
            raise ConfigError(f"seanet.pad_mode {self.pad_mode!r} is not one of {', '.join(sorted(PAD_MODES))}")
        if self.causal and self.norm == "time_group_norm":
            raise ConfigError("seanet: time_group_norm cannot be causal")
        if self.compress < 1 or self.n_filters // self.compress < 1:
            raise ConfigError(f"seanet.compress {self.compress} leaves no hidden channels")
        if not 0 <= self.disable_norm_outer_blocks <= len(self.ratios) + 2:
            raise ConfigError(f"seanet.disable_norm_outer_blocks must be in [0, {len(self.ratios) + 2}]")
        if self.lstm < 0 or self.n_residual_layers < 0:
            raise ConfigError("seanet.lstm and seanet.n_residual_layers must be >= 0")

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.ratios))


def _activation(name: str, params: dict) -> nn.Module:
    return getattr(nn, name)(**params)


_INPLACE_ACTIVATIONS = (nn.ELU, nn.LeakyReLU, nn.ReLU, nn.SiLU, nn.Mish)


def activation_inplace(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` computed in place in ``x`` where the activation has an in-place kernel (the
    same kernel, so the same values); other activations return a new tensor."""
    if isinstance(act, nn.ELU):
        return F.elu(x, act.alpha, inplace=True)
    if isinstance(act, nn.LeakyReLU):
        return F.leaky_relu(x, act.negative_slope, inplace=True)
    if isinstance(act, nn.ReLU):
        return F.relu(x, inplace=True)
    if isinstance(act, nn.SiLU):
        return F.silu(x, inplace=True)
    if isinstance(act, nn.Mish):
        return F.mish(x, inplace=True)
    return act(x)


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def run_inference(modules: nn.Sequential, x: torch.Tensor, owned: bool = False) -> torch.Tensor:
    """``modules(x)`` without autograd, applying activations in place to tensors that no one else
    holds (outputs of earlier modules; ``x`` itself only when ``owned``)."""
    for module in modules:
        if owned and isinstance(module, _INPLACE_ACTIVATIONS):
            x = activation_inplace(module, x)
            continue
        y = module(x)
        owned = not _shares_memory(y, x)
        x = y
    return x


def use_inference_path(x: torch.Tensor) -> bool:
    """The NWC / in-place path runs when autograd is off, on CPU (where it was measured)."""
    return not torch.is_grad_enabled() and x.device.type == "cpu"


class SEANetResnetBlock(nn.Module):
    """Residual unit ``[B, dim, T] -> [B, dim, T]``: ``shortcut(x) + block(x)``.

    ``block`` is ``[act, conv(k_0, d_0), act, conv(k_1, d_1), ...]`` (indices 1, 3, ... are convs).
    """

    def __init__(
        self,
        dim: int,
        kernel_sizes: list[int],
        dilations: list[int],
        activation: str = "ELU",
        activation_params: dict | None = None,
        norm: str = "none",
        norm_params: dict | None = None,
        causal: bool = False,
        pad_mode: str = "reflect",
        compress: int = 2,
        true_skip: bool = True,
    ):
        super().__init__()
        if len(kernel_sizes) != len(dilations):
            raise ConfigError("SEANetResnetBlock needs one dilation per kernel size")
        activation_params = activation_params or {}
        hidden = dim // compress
        block: list[nn.Module] = []
        for i, (kernel_size, dilation) in enumerate(zip(kernel_sizes, dilations)):
            in_chs = dim if i == 0 else hidden
            out_chs = dim if i == len(kernel_sizes) - 1 else hidden
            block += [
                _activation(activation, activation_params),
                StreamableConv1d(in_chs, out_chs, kernel_size=kernel_size, dilation=dilation, norm=norm,
                                 norm_kwargs=norm_params, causal=causal, pad_mode=pad_mode),
            ]
        self.block = nn.Sequential(*block)
        self.shortcut: nn.Module
        if true_skip:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = StreamableConv1d(dim, dim, kernel_size=1, norm=norm, norm_kwargs=norm_params,
                                             causal=causal, pad_mode=pad_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.shortcut(x) + self.block(x)
        y = run_inference(self.block, x)  # x is read again by the shortcut: not overwritten
        if _shares_memory(y, x):
            return self.shortcut(x) + y
        return y.add_(self.shortcut(x))  # = shortcut(x) + block(x), into block's fresh output


class StreamableLSTM(nn.Module):
    """Unidirectional LSTM over time with a skip connection: ``[B, C, T] -> [B, C, T]``, ``y = LSTM(x) + x``."""

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True):
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T] -> [B, C, T]``; also the NWC layout ``[B, C, 1, T]`` without autograd."""
        if is_nwc(x):
            seq = x.squeeze(2).permute(2, 0, 1)  # [T, B, C]: a contiguous view when B == 1
            y, _ = self.lstm(seq)
            if self.skip:
                y.add_(seq)
            return y.permute(1, 2, 0).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        x = x.permute(2, 0, 1)  # [T, B, C]
        y, _ = self.lstm(x)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)


class SEANetEncoder(nn.Module):
    """Waveform ``[B, channels, T]`` to embeddings ``[B, dimension, ceil(T / hop_length)]``.

    ``inference_layout`` (no-autograd CPU path): ``"ncw"`` (default) keeps the ``[B, C, T]``
    layout and the original ``F.pad`` + convolution calls, with activations and residual sums in
    place: bit-identical latents, hence codes, to the plain path; ``"nwc"`` is about 1.4x faster
    but rounds differently (latents differ by ~1e-5 relative, which flips a near-tie code about
    once in 10^5 frames, as a change of batch size or thread count of the plain path also does).
    """

    #: "ncw" or "nwc", see the class docstring.
    inference_layout = "ncw"

    def __init__(self, config: SEANetConfig):
        super().__init__()
        c = config
        self.config = c
        self.channels = c.channels
        self.dimension = c.dimension
        self.ratios = list(reversed(c.ratios))
        self.hop_length = c.hop_length
        n_blocks = len(self.ratios) + 2
        off = c.disable_norm_outer_blocks
        mult = 1
        model: list[nn.Module] = [
            StreamableConv1d(c.channels, mult * c.n_filters, c.kernel_size, norm="none" if off >= 1 else c.norm,
                             norm_kwargs=c.norm_params, causal=c.causal, pad_mode=c.pad_mode)
        ]
        for i, ratio in enumerate(self.ratios):
            block_norm = "none" if off >= i + 2 else c.norm
            for j in range(c.n_residual_layers):
                model.append(SEANetResnetBlock(
                    mult * c.n_filters, kernel_sizes=[c.residual_kernel_size, 1], dilations=[c.dilation_base ** j, 1],
                    activation=c.activation, activation_params=c.activation_params, norm=block_norm,
                    norm_params=c.norm_params, causal=c.causal, pad_mode=c.pad_mode, compress=c.compress,
                    true_skip=c.true_skip,
                ))
            model += [
                _activation(c.activation, c.activation_params),
                StreamableConv1d(mult * c.n_filters, mult * c.n_filters * 2, kernel_size=ratio * 2, stride=ratio,
                                 norm=block_norm, norm_kwargs=c.norm_params, causal=c.causal, pad_mode=c.pad_mode),
            ]
            mult *= 2
        if c.lstm:
            model.append(StreamableLSTM(mult * c.n_filters, num_layers=c.lstm))
        model += [
            _activation(c.activation, c.activation_params),
            StreamableConv1d(mult * c.n_filters, c.dimension, c.last_kernel_size,
                             norm="none" if off == n_blocks else c.norm, norm_kwargs=c.norm_params,
                             causal=c.causal, pad_mode=c.pad_mode),
        ]
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_inference_path(x):
            if self.inference_layout == "nwc":
                return from_nwc(run_inference(self.model, to_nwc(x)))
            return run_inference(self.model, x)
        return self.model(x)


class SEANetDecoder(nn.Module):
    """Embeddings ``[B, dimension, F]`` to waveform ``[B, channels, F * hop_length]``.

    Without autograd on CPU it runs in the NWC layout (``inference_layout = "nwc"``): the
    decoder's output feeds no code, and it is within ~1e-6 of the ``[B, C, T]`` computation.
    """

    #: "nwc" (default) or "ncw", see :class:`SEANetEncoder`.
    inference_layout = "nwc"

    def __init__(self, config: SEANetConfig):
        super().__init__()
        c = config
        self.config = c
        self.channels = c.channels
        self.dimension = c.dimension
        self.ratios = list(c.ratios)
        self.hop_length = c.hop_length
        n_blocks = len(self.ratios) + 2
        off = c.disable_norm_outer_blocks
        mult = int(2 ** len(self.ratios))
        model: list[nn.Module] = [
            StreamableConv1d(c.dimension, mult * c.n_filters, c.kernel_size,
                             norm="none" if off == n_blocks else c.norm, norm_kwargs=c.norm_params,
                             causal=c.causal, pad_mode=c.pad_mode)
        ]
        if c.lstm:
            model.append(StreamableLSTM(mult * c.n_filters, num_layers=c.lstm))
        for i, ratio in enumerate(self.ratios):
            block_norm = "none" if off >= n_blocks - (i + 1) else c.norm
            model += [
                _activation(c.activation, c.activation_params),
                StreamableConvTranspose1d(mult * c.n_filters, mult * c.n_filters // 2, kernel_size=ratio * 2,
                                          stride=ratio, norm=block_norm, norm_kwargs=c.norm_params, causal=c.causal,
                                          trim_right_ratio=c.trim_right_ratio),
            ]
            for j in range(c.n_residual_layers):
                model.append(SEANetResnetBlock(
                    mult * c.n_filters // 2, kernel_sizes=[c.residual_kernel_size, 1],
                    dilations=[c.dilation_base ** j, 1], activation=c.activation,
                    activation_params=c.activation_params, norm=block_norm, norm_params=c.norm_params,
                    causal=c.causal, pad_mode=c.pad_mode, compress=c.compress, true_skip=c.true_skip,
                ))
            mult //= 2
        model += [
            _activation(c.activation, c.activation_params),
            StreamableConv1d(c.n_filters, c.channels, c.last_kernel_size, norm="none" if off >= 1 else c.norm,
                             norm_kwargs=c.norm_params, causal=c.causal, pad_mode=c.pad_mode),
        ]
        if c.final_activation is not None:
            model.append(_activation(c.final_activation, c.final_activation_params))
        self.model = nn.Sequential(*model)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if use_inference_path(z):
            if self.inference_layout == "nwc":
                return from_nwc(run_inference(self.model, to_nwc(z)))
            return run_inference(self.model, z)
        return self.model(z)
