"""Reconstruction and adversarial losses for neural audio codecs.

Reconstruction (``x`` reference, ``x_hat`` reconstruction, both ``[B, C, T]``):

* time L1 (EnCodec ``l_t``): ``mean |x - x_hat|``;
* multi-scale mel (EnCodec ``l_f``): for window sizes ``2^i``, ``i = 5..11``, hop ``2^i / 4``, 64 mel
  bands: ``mean |S_i(x) - S_i(x_hat)| + alpha_i mean (S_i(x) - S_i(x_hat))^2``, averaged over scales;
* multi-resolution STFT (Parallel WaveGAN, used by MeLoDy) at (n_fft, hop, win) = (1024, 120, 600),
  (2048, 240, 1200), (512, 50, 240), averaged over resolutions::

      L_sc  = || |X| - |X_hat| ||_F / || |X| ||_F            (spectral convergence)
      L_mag = mean | log |X| - log |X_hat| |                 (log magnitude)

Adversarial, over the ``K`` sub-discriminators' patch logits ``D_k``:

* hinge (EnCodec): ``L_D = 1/K sum_k mean relu(1 - D_k(x)) + mean relu(1 + D_k(x_hat))``,
  ``L_G = 1/K sum_k mean relu(1 - D_k(x_hat))``;
* least squares (HiFi-GAN, UnivNet): ``L_D = 1/K sum_k mean (1 - D_k(x))^2 + mean D_k(x_hat)^2``,
  ``L_G = 1/K sum_k mean (1 - D_k(x_hat))^2``;
* feature matching over the ``L`` feature maps: ``1/(KL) sum_{k,l} mean |D^l_k(x) - D^l_k(x_hat)|``,
  divided by ``mean |D^l_k(x)|`` in EnCodec's relative form.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..config import Config
from ..errors import ConfigError, InvalidInput
from .discriminators import DiscriminatorOutput


def _flatten_channels(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        return x.reshape(-1, x.shape[-1])
    if x.dim() == 2:
        return x
    raise InvalidInput(f"expected audio [B, C, T], got shape {tuple(x.shape)}")


def _check_pair(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    if x.shape != x_hat.shape:
        raise InvalidInput(f"reference and reconstruction shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")


def stft_magnitude(x: torch.Tensor, n_fft: int, hop_length: int, win_length: int, window: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` -> magnitude ``[N, n_fft/2+1, frames]`` (centred, reflect padding), floored at 1e-7 in power."""
    spec = torch.stft(x, n_fft, hop_length, win_length, window, center=True, pad_mode="reflect", return_complex=True)
    return torch.sqrt(torch.clamp(spec.real.pow(2) + spec.imag.pow(2), min=1e-7))


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude loss averaged over STFT resolutions.

    ``forward(x_hat, x)`` returns ``(sc, mag)``; the total is their sum.
    """

    def __init__(self, fft_sizes=(1024, 2048, 512), hop_sizes=(120, 240, 50), win_lengths=(600, 1200, 240)):
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ConfigError("mrstft: fft_sizes, hop_sizes and win_lengths must have the same length")
        self.resolutions = [(int(n), int(h), int(w)) for n, h, w in zip(fft_sizes, hop_sizes, win_lengths)]
        for i, (_, _, w) in enumerate(self.resolutions):
            self.register_buffer(f"window_{i}", torch.hann_window(w), persistent=False)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_pair(x, x_hat)
        xh, xr = _flatten_channels(x_hat), _flatten_channels(x)
        sc = xr.new_zeros(())
        mag = xr.new_zeros(())
        for i, (n_fft, hop, win) in enumerate(self.resolutions):
            window = getattr(self, f"window_{i}")
            s_hat = stft_magnitude(xh, n_fft, hop, win, window)
            s = stft_magnitude(xr, n_fft, hop, win, window)
            sc = sc + torch.linalg.norm(s - s_hat) / torch.linalg.norm(s).clamp_min(1e-7)
            mag = mag + F.l1_loss(torch.log(s_hat), torch.log(s))
        n = len(self.resolutions)
        return sc / n, mag / n


class MultiScaleMelLoss(nn.Module):
    """EnCodec's frequency loss: L1 + alpha * L2 between mel spectrograms at windows ``2^i``.

    Magnitude mel spectrograms (:class:`tunecraft.audio.MelSpectrogram`, power 1, hop ``2^i / 4``),
    compared in ``log10(max(S, floor))`` when ``log`` (audiocraft's practice) or linearly (the paper).
    """

    def __init__(self, sample_rate: int, scales=(5, 6, 7, 8, 9, 10, 11), n_mels: int = 64, alpha: float = 1.0,
                 log: bool = True, floor: float = 1e-5):
        super().__init__()
        from ..audio import MelSpectrogram

        self.alpha = alpha
        self.log = log
        self.floor = floor
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small windows leave some of the 64 mel bands empty; expected
            self.mels = nn.ModuleList([
                MelSpectrogram(sample_rate, n_fft=2 ** i, hop_length=2 ** i // 4, n_mels=n_mels, power=1.0,
                               pad_mode="reflect")
                for i in scales
            ])

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        _check_pair(x, x_hat)
        xh, xr = _flatten_channels(x_hat), _flatten_channels(x)
        loss = xr.new_zeros(())
        for mel in self.mels:
            s_hat, s = mel(xh), mel(xr)
            if self.log:
                s_hat, s = torch.log10(s_hat.clamp_min(self.floor)), torch.log10(s.clamp_min(self.floor))
            loss = loss + F.l1_loss(s_hat, s) + self.alpha * F.mse_loss(s_hat, s)
        return loss / len(self.mels)


def feature_matching_loss(fmaps_real: list[list[torch.Tensor]], fmaps_fake: list[list[torch.Tensor]],
                          relative: bool = True) -> torch.Tensor:
    """Mean L1 distance between discriminator feature maps of real (detached) and generated audio."""
    if len(fmaps_real) != len(fmaps_fake) or not fmaps_real:
        raise InvalidInput("feature matching needs the same non-zero number of discriminators for real and fake")
    total, n = None, 0
    for real_k, fake_k in zip(fmaps_real, fmaps_fake):
        for real, fake in zip(real_k, fake_k):
            real = real.detach()
            term = F.l1_loss(fake, real)
            if relative:
                term = term / real.abs().mean().clamp_min(1e-8)
            total = term if total is None else total + term
            n += 1
    return total / n


def hinge_discriminator_loss(logits_real: list[torch.Tensor], logits_fake: list[torch.Tensor]) -> torch.Tensor:
    """``1/K sum_k mean relu(1 - D_k(x)) + mean relu(1 + D_k(x_hat))`` (always >= 0)."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(logits_real, logits_fake)]
    return torch.stack(terms).mean()


def hinge_generator_loss(logits_fake: list[torch.Tensor]) -> torch.Tensor:
    """``1/K sum_k mean relu(1 - D_k(x_hat))``."""
    return torch.stack([F.relu(1 - f).mean() for f in logits_fake]).mean()


def lsgan_discriminator_loss(logits_real: list[torch.Tensor], logits_fake: list[torch.Tensor]) -> torch.Tensor:
    """``1/K sum_k mean (1 - D_k(x))^2 + mean D_k(x_hat)^2`` (always >= 0)."""
    terms = [(1 - r).pow(2).mean() + f.pow(2).mean() for r, f in zip(logits_real, logits_fake)]
    return torch.stack(terms).mean()


def lsgan_generator_loss(logits_fake: list[torch.Tensor]) -> torch.Tensor:
    """``1/K sum_k mean (1 - D_k(x_hat))^2``."""
    return torch.stack([(1 - f).pow(2).mean() for f in logits_fake]).mean()


ADVERSARIAL_LOSSES = {
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
    "lsgan": (lsgan_discriminator_loss, lsgan_generator_loss),
}


@dataclass
class CodecLossConfig(Config):
    """Loss weights of a codec's generator objective (0 disables a term).

    The bottleneck's own penalty (RVQ commitment, KL) is added with the weight configured on the
    bottleneck. Presets: :meth:`encodec` (the paper's ``lambda_t = 0.1, lambda_f = 1,
    lambda_g = 3, lambda_feat = 3``, hinge loss, relative feature matching) and :meth:`melody`
    (MR-STFT 50, feature matching 20, GAN 1, least squares).
    """

    l1: float = 0.1
    mel: float = 1.0
    mrstft: float = 0.0
    adv: float = 3.0
    feat: float = 3.0
    adversarial: str = "hinge"
    feat_relative: bool = True
    mel_scales: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9, 10, 11])
    mel_n_mels: int = 64
    mel_alpha: float = 1.0
    mel_log: bool = True
    mrstft_fft_sizes: list[int] = field(default_factory=lambda: [1024, 2048, 512])
    mrstft_hop_sizes: list[int] = field(default_factory=lambda: [120, 240, 50])
    mrstft_win_lengths: list[int] = field(default_factory=lambda: [600, 1200, 240])

    def __post_init__(self) -> None:
        if self.adversarial not in ADVERSARIAL_LOSSES:
            raise ConfigError(f"adversarial loss must be one of {sorted(ADVERSARIAL_LOSSES)}, got {self.adversarial!r}")
        for name in ("l1", "mel", "mrstft", "adv", "feat"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss weight {name} must be >= 0")

    @classmethod
    def encodec(cls) -> "CodecLossConfig":
        return cls(l1=0.1, mel=1.0, mrstft=0.0, adv=3.0, feat=3.0, adversarial="hinge", feat_relative=True)

    @classmethod
    def melody(cls) -> "CodecLossConfig":
        return cls(l1=0.0, mel=0.0, mrstft=50.0, adv=1.0, feat=20.0, adversarial="lsgan", feat_relative=False)

    @property
    def uses_discriminator(self) -> bool:
        return self.adv > 0 or self.feat > 0


class CodecLoss(nn.Module):
    """The generator and discriminator objectives of a codec, from a :class:`CodecLossConfig`."""

    def __init__(self, config: CodecLossConfig, sample_rate: int):
        super().__init__()
        self.config = config
        self.mel = MultiScaleMelLoss(sample_rate, tuple(config.mel_scales), config.mel_n_mels, config.mel_alpha,
                                     config.mel_log) if config.mel > 0 else None
        self.mrstft = MultiResolutionSTFTLoss(config.mrstft_fft_sizes, config.mrstft_hop_sizes,
                                              config.mrstft_win_lengths) if config.mrstft > 0 else None
        self._d_loss, self._g_loss = ADVERSARIAL_LOSSES[config.adversarial]

    def generator_loss(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor | None,
        disc_fake: DiscriminatorOutput | None = None,
        disc_real: DiscriminatorOutput | None = None,
        penalty: torch.Tensor | None = None,
        adversarial: bool = True,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted generator loss and its unweighted terms.

        ``disc_fake = D(x_hat)`` (with gradient to the generator) and ``disc_real = D(x)`` are needed
        when ``adv`` or ``feat`` are non-zero; ``penalty`` is the bottleneck's weighted penalty.
        ``adversarial=False`` leaves out the adversarial and feature-matching terms (warm-up).
        """
        c = self.config
        if x_hat is None:  # the codec rendered nothing: only the penalty can be asked for
            if c.l1 > 0 or c.mel > 0 or c.mrstft > 0 or (adversarial and (c.adv > 0 or c.feat > 0)):
                raise InvalidInput("the reconstruction loss terms need the reconstructed audio")
        else:
            _check_pair(x, x_hat)
        total = x.new_zeros(())
        metrics: dict[str, float] = {}
        if c.l1 > 0:
            l1 = F.l1_loss(x_hat, x)
            total = total + c.l1 * l1
            metrics["l1"] = float(l1.detach())
        if self.mel is not None:
            mel = self.mel(x_hat, x)
            total = total + c.mel * mel
            metrics["mel"] = float(mel.detach())
        if self.mrstft is not None:
            sc, mag = self.mrstft(x_hat, x)
            total = total + c.mrstft * (sc + mag)
            metrics["stft_sc"] = float(sc.detach())
            metrics["stft_mag"] = float(mag.detach())
        if adversarial and c.adv > 0:
            if disc_fake is None:
                raise InvalidInput("the adversarial loss needs the discriminator outputs on the reconstruction")
            adv = self._g_loss([logits for logits, _ in disc_fake])
            total = total + c.adv * adv
            metrics["adv_g"] = float(adv.detach())
        if adversarial and c.feat > 0:
            if disc_fake is None or disc_real is None:
                raise InvalidInput("feature matching needs discriminator outputs on both real and reconstructed audio")
            feat = feature_matching_loss([f for _, f in disc_real], [f for _, f in disc_fake], c.feat_relative)
            total = total + c.feat * feat
            metrics["feat"] = float(feat.detach())
        if penalty is not None:
            total = total + penalty
            metrics["penalty"] = float(penalty.detach())
        metrics["generator"] = float(total.detach())
        return total, metrics

    def discriminator_loss(self, disc_real: DiscriminatorOutput, disc_fake: DiscriminatorOutput) -> tuple[torch.Tensor, dict[str, float]]:
        """Discriminator loss on ``D(x)`` and ``D(sg(x_hat))``."""
        loss = self._d_loss([logits for logits, _ in disc_real], [logits for logits, _ in disc_fake])
        return loss, {"discriminator": float(loss.detach())}
