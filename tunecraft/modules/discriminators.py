"""GAN discriminators for neural audio codecs.

* :class:`MultiScaleSTFTDiscriminator` (EnCodec's MS-STFTD): 2D convs over the complex STFT
  (real and imaginary parts as channels) at 5 window sizes.
* :class:`MultiPeriodDiscriminator` (HiFi-GAN's MPD): the waveform folded into ``[T/p, p]`` for
  periods 2, 3, 5, 7, 11, then 2D convs with kernels ``(5, 1)``.
* :class:`MultiResolutionSpectrogramDiscriminator` (UnivNet's MRD): 2D convs over magnitude
  spectrograms at 3 resolutions.

Every sub-discriminator maps audio ``[B, C, T]`` to ``(logits, feature_maps)``; a multi
discriminator returns the list of those pairs. The logits are a patch map (one score per
time/frequency patch), used by the hinge or least-squares losses in :mod:`.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config
from ..errors import ConfigError, InvalidInput
from .conv import NormConv2d

DiscriminatorOutput = list[tuple[torch.Tensor, list[torch.Tensor]]]

DISCRIMINATOR_KINDS = ("msstftd", "mpd", "mrd")


def _pad_2d(kernel_size: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel_size[0] - 1) * dilation[0] // 2, (kernel_size[1] - 1) * dilation[1] // 2)


def _check_audio(x: torch.Tensor, channels: int) -> None:
    if x.dim() != 3 or x.shape[1] != channels:
        raise InvalidInput(f"discriminator expects audio [B, {channels}, T], got shape {tuple(x.shape)}")


class DiscriminatorSTFT(nn.Module):
    """One MS-STFTD scale: complex STFT ``[B, 2C, T', F]`` -> conv stack -> logits ``[B, 1, T', F']``.

    The STFT uses a Hann window, no centring, and is divided by ``sqrt(sum(window^2))``.
    Convolutions: ``(3, 9)`` kernels, stride 2 along frequency, dilations 1, 2, 4 along time,
    LeakyReLU(0.2), weight norm.
    """

    def __init__(
        self,
        filters: int = 32,
        in_channels: int = 1,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
        max_filters: int = 1024,
        filters_scale: int = 1,
        kernel_size: tuple[int, int] = (3, 9),
        dilations: tuple[int, ...] = (1, 2, 4),
        stride: tuple[int, int] = (1, 2),
        norm: str = "weight_norm",
        negative_slope: float = 0.2,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        self.negative_slope = negative_slope
        self.convs = nn.ModuleList()
        self.convs.append(NormConv2d(2 * in_channels, filters, kernel_size, padding=_pad_2d(kernel_size), norm=norm))
        in_chs = min(filters_scale * filters, max_filters)
        for i, dilation in enumerate(dilations):
            out_chs = min(filters_scale ** (i + 1) * filters, max_filters)
            self.convs.append(NormConv2d(in_chs, out_chs, kernel_size, stride=stride, dilation=(dilation, 1),
                                         padding=_pad_2d(kernel_size, (dilation, 1)), norm=norm))
            in_chs = out_chs
        out_chs = min(filters_scale ** (len(dilations) + 1) * filters, max_filters)
        k = (kernel_size[0], kernel_size[0])
        self.convs.append(NormConv2d(in_chs, out_chs, k, padding=_pad_2d(k), norm=norm))
        self.conv_post = NormConv2d(out_chs, 1, k, padding=_pad_2d(k), norm=norm)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> real/imag channels ``[B, 2C, frames, freq]``."""
        b, c, t = x.shape
        if t < self.n_fft:
            x = F.pad(x, (0, self.n_fft - t))
        spec = torch.stft(x.reshape(b * c, -1), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=False, return_complex=True)
        spec = spec / self.window.pow(2).sum().sqrt()
        spec = spec.view(b, c, *spec.shape[-2:])
        z = torch.cat([spec.real, spec.imag], dim=1)  # [B, 2C, F, T']
        return z.transpose(2, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.spectrogram(x)
        fmap = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            fmap.append(z)
        return self.conv_post(z), fmap


class MultiScaleSTFTDiscriminator(nn.Module):
    """EnCodec's MS-STFTD: :class:`DiscriminatorSTFT` at windows 2048, 1024, 512, 256, 128."""

    def __init__(
        self,
        in_channels: int = 1,
        filters: int = 32,
        n_ffts: tuple[int, ...] = (1024, 2048, 512, 256, 128),
        hop_lengths: tuple[int, ...] = (256, 512, 128, 64, 32),
        win_lengths: tuple[int, ...] = (1024, 2048, 512, 256, 128),
    ):
        super().__init__()
        if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ConfigError("msstftd: n_ffts, hop_lengths and win_lengths must have the same length")
        self.in_channels = in_channels
        self.discriminators = nn.ModuleList([
            DiscriminatorSTFT(filters, in_channels, n, h, w) for n, h, w in zip(n_ffts, hop_lengths, win_lengths)
        ])

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        _check_audio(x, self.in_channels)
        return [d(x) for d in self.discriminators]


class DiscriminatorP(nn.Module):
    """HiFi-GAN period discriminator: ``[B, C, T]`` -> fold to ``[B, C, T/p, p]`` -> logits ``[B, 1, T'', p]``."""

    def __init__(self, period: int, in_channels: int = 1, channels: tuple[int, ...] = (32, 128, 512, 1024, 1024),
                 kernel_size: int = 5, stride: int = 3, norm: str = "weight_norm", negative_slope: float = 0.1):
        super().__init__()
        self.period = period
        self.negative_slope = negative_slope
        pad = _pad_2d((kernel_size, 1))
        convs = []
        in_chs = in_channels
        for i, out_chs in enumerate(channels):
            s = stride if i < len(channels) - 1 else 1
            convs.append(NormConv2d(in_chs, out_chs, (kernel_size, 1), stride=(s, 1), padding=pad, norm=norm))
            in_chs = out_chs
        self.convs = nn.ModuleList(convs)
        self.conv_post = NormConv2d(in_chs, 1, (3, 1), padding=(1, 0), norm=norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), mode="reflect" if t > n_pad else "constant")
            t = t + n_pad
        z = x.reshape(b, c, t // self.period, self.period)
        fmap = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            fmap.append(z)
        z = self.conv_post(z)
        fmap.append(z)
        return z, fmap


class MultiPeriodDiscriminator(nn.Module):
    """HiFi-GAN's MPD over periods 2, 3, 5, 7, 11."""

    def __init__(self, in_channels: int = 1, periods: tuple[int, ...] = (2, 3, 5, 7, 11),
                 channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)):
        super().__init__()
        self.in_channels = in_channels
        self.discriminators = nn.ModuleList([DiscriminatorP(p, in_channels, tuple(channels)) for p in periods])

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        _check_audio(x, self.in_channels)
        return [d(x) for d in self.discriminators]


class DiscriminatorR(nn.Module):
    """UnivNet resolution discriminator over the magnitude STFT ``[B, C, F, frames]``.

    The signal is reflect-padded by ``(n_fft - hop) / 2`` on both sides, transformed without
    centring; convs ``(3, 9)`` with stride 2 along time, LeakyReLU(0.2), weight norm.
    """

    def __init__(self, resolution: tuple[int, int, int], in_channels: int = 1, channels: int = 32,
                 norm: str = "weight_norm", negative_slope: float = 0.2):
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = (int(v) for v in resolution)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.negative_slope = negative_slope
        self.convs = nn.ModuleList([
            NormConv2d(in_channels, channels, (3, 9), padding=(1, 4), norm=norm),
            NormConv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4), norm=norm),
            NormConv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4), norm=norm),
            NormConv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4), norm=norm),
            NormConv2d(channels, channels, (3, 3), padding=(1, 1), norm=norm),
        ])
        self.conv_post = NormConv2d(channels, 1, (3, 3), padding=(1, 1), norm=norm)

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        pad = (self.n_fft - self.hop_length) // 2
        x = F.pad(x, (pad, pad), mode="reflect" if t > pad else "constant")
        if x.shape[-1] < self.n_fft:
            x = F.pad(x, (0, self.n_fft - x.shape[-1]))
        spec = torch.stft(x.reshape(b * c, -1), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=False, return_complex=True)
        return spec.abs().view(b, c, *spec.shape[-2:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        z = self.spectrogram(x)
        fmap = []
        for conv in self.convs:
            z = F.leaky_relu(conv(z), self.negative_slope)
            fmap.append(z)
        z = self.conv_post(z)
        fmap.append(z)
        return z, fmap


class MultiResolutionSpectrogramDiscriminator(nn.Module):
    """UnivNet's MRD at (n_fft, hop, win) = (1024, 120, 600), (2048, 240, 1200), (512, 50, 240)."""

    def __init__(self, in_channels: int = 1,
                 resolutions: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240)),
                 channels: int = 32):
        super().__init__()
        self.in_channels = in_channels
        self.discriminators = nn.ModuleList([DiscriminatorR(tuple(r), in_channels, channels) for r in resolutions])

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        _check_audio(x, self.in_channels)
        return [d(x) for d in self.discriminators]


class MultiDiscriminator(nn.Module):
    """Several multi-discriminators side by side; ``forward`` concatenates their outputs."""

    def __init__(self, discriminators: list[nn.Module]):
        super().__init__()
        if not discriminators:
            raise ConfigError("at least one discriminator is needed")
        self.discriminators = nn.ModuleList(discriminators)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        out: DiscriminatorOutput = []
        for d in self.discriminators:
            out.extend(d(x))
        return out


@dataclass
class DiscriminatorConfig(Config):
    """Which discriminators a codec trains against, and their sizes (paper values by default)."""

    kinds: list[str] = field(default_factory=lambda: ["msstftd"])
    msstftd_filters: int = 32
    msstftd_n_ffts: list[int] = field(default_factory=lambda: [1024, 2048, 512, 256, 128])
    msstftd_hop_lengths: list[int] = field(default_factory=lambda: [256, 512, 128, 64, 32])
    msstftd_win_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 512, 256, 128])
    mpd_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mpd_channels: list[int] = field(default_factory=lambda: [32, 128, 512, 1024, 1024])
    mrd_resolutions: list[list[int]] = field(default_factory=lambda: [[1024, 120, 600], [2048, 240, 1200], [512, 50, 240]])
    mrd_channels: int = 32

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in DISCRIMINATOR_KINDS]
        if unknown or not self.kinds:
            raise ConfigError(f"discriminator kinds must be a non-empty subset of {DISCRIMINATOR_KINDS}, got {self.kinds}")
        if any(len(r) != 3 for r in self.mrd_resolutions):
            raise ConfigError("each mrd resolution is [n_fft, hop_length, win_length]")

    @classmethod
    def encodec(cls) -> "DiscriminatorConfig":
        """EnCodec: MS-STFTD only."""
        return cls(kinds=["msstftd"])

    @classmethod
    def melody(cls) -> "DiscriminatorConfig":
        """MeLoDy's VAE-GAN: HiFi-GAN MPD plus UnivNet MRD."""
        return cls(kinds=["mpd", "mrd"])

    def build(self, in_channels: int = 1) -> MultiDiscriminator:
        parts: list[nn.Module] = []
        for kind in self.kinds:
            if kind == "msstftd":
                parts.append(MultiScaleSTFTDiscriminator(in_channels, self.msstftd_filters, tuple(self.msstftd_n_ffts),
                                                         tuple(self.msstftd_hop_lengths), tuple(self.msstftd_win_lengths)))
            elif kind == "mpd":
                parts.append(MultiPeriodDiscriminator(in_channels, tuple(self.mpd_periods), tuple(self.mpd_channels)))
            else:
                parts.append(MultiResolutionSpectrogramDiscriminator(
                    in_channels, tuple(tuple(r) for r in self.mrd_resolutions), self.mrd_channels))
        return MultiDiscriminator(parts)
