"""Residual-VQ tokens over a frozen continuous codec's latents (``vae-gan-rvq``).

``wav -> frozen VAE-GAN encoder -> z [B, 16, 250 Hz] -> SEANet (stride 5) -> h [B, 128, 50 Hz]
-> RVQ -> codes [B, K, 50 Hz] -> sum_k e^k -> SEANet decoder -> z_hat -> frozen VAE-GAN decoder``

Why it exists: MusicGen needs 50 Hz discrete tokens whose decoding keeps pitch. The EnCodec-style
:class:`~tunecraft.codecs.RVQCodec` gets there with adversarial training (EnCodec, 300k GPU
steps); trained reconstruction-only on a CPU it learns a spectral-envelope vocoder that loses the
harmonics (``benchmarks/codec.py``: chroma cosine 0.66, key kept 6% of clips). The VAE-GAN keeps
pitch (chroma 0.93, key kept 81%) because its 250 Hz latent is an easy target, and its decoder
tolerates latent noise (chroma cosine 0.93 with noise at 0 dB SNR on the scaled latents). So this
codec learns only the 50 Hz quantisation of that latent - a small problem a CPU trains in
minutes - and reuses the VAE-GAN to make and render waveforms. It is a ``DiscreteCompressionModel``
like EnCodec (same frame rate, codebook size and count as MusicGen's codec), at 24 kHz (the
VAE-GAN's rate) instead of 32 kHz.

Objective: ``latent_weight * MSE(z_hat, z)`` on the scaled latents + RVQ commitment, plus any
waveform terms of ``loss`` (e.g. ``mrstft``) through the frozen VAE-GAN decoder.

The base codec's config and weights are stored inside this codec's model directory (``base.*``),
so a bundle is self-contained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from ..config import Config
from ..errors import ConfigError, InvalidInput
from ..modules.discriminators import DiscriminatorConfig
from ..modules.losses import CodecLossConfig
from ..modules.quantization import ResidualVectorQuantizer, RVQConfig
from ..modules.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from .base import CodecOutput, QuantizedCompressionModel, _inference
from .vae_gan import VAEGANCodec, VAEGANConfig


def _no_audio_loss() -> CodecLossConfig:
    return CodecLossConfig(l1=0.0, mel=0.0, mrstft=0.0, adv=0.0, feat=0.0)


@dataclass
class LatentRVQConfig(Config):
    """RVQ over a frozen VAE-GAN's scaled latents.

    ``base``: the VAE-GAN's config (filled from the base model by the training task, saved with
    the codec). ``seanet``: the latent encoder/decoder; its ``channels`` must equal the base's
    latent size and its ``ratios`` give the extra stride (``[5]``: 250 Hz -> 50 Hz).
    ``quantizer``: MusicGen's 4 x 2048. ``latent_weight``: weight of the latent MSE.
    ``loss``: waveform terms through the frozen base decoder (all off by default).
    """

    sample_rate: int = 24000
    base: VAEGANConfig | None = None
    seanet: SEANetConfig = field(default_factory=lambda: SEANetConfig(
        channels=16, n_filters=64, ratios=[5], dimension=128, lstm=2))
    quantizer: RVQConfig = field(default_factory=lambda: RVQConfig(
        dimension=128, n_q=4, bins=2048, threshold_ema_dead_code=0.01))
    latent_weight: float = 1.0
    loss: CodecLossConfig = field(default_factory=_no_audio_loss)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        if self.seanet.dimension != self.quantizer.dimension:
            raise ConfigError(f"seanet.dimension ({self.seanet.dimension}) must equal quantizer.dimension "
                              f"({self.quantizer.dimension})")
        if self.latent_weight < 0:
            raise ConfigError(f"latent_weight must be >= 0, got {self.latent_weight}")
        if self.loss.uses_discriminator:
            raise ConfigError("the latent RVQ codec trains without a discriminator: set loss.adv = loss.feat = 0")
        if self.base is not None:
            if self.base.sample_rate != self.sample_rate:
                raise ConfigError(f"sample_rate {self.sample_rate} differs from the base codec's "
                                  f"{self.base.sample_rate}")
            if self.seanet.channels != self.base.bottleneck.latent_dim:
                raise ConfigError(f"seanet.channels ({self.seanet.channels}) must equal the base codec's latent "
                                  f"size ({self.base.bottleneck.latent_dim})")

    def audio_format(self) -> tuple[int, int]:
        """``(channels, hop_length)`` of the audio this codec reads and writes."""
        if self.base is None:
            raise ConfigError("the latent RVQ codec needs its base codec's config (base)")
        return self.base.seanet.channels, self.base.seanet.hop_length * self.seanet.hop_length


class LatentRVQCodec(QuantizedCompressionModel):
    """Discrete codec over a frozen VAE-GAN: ``encode -> codes [B, K, F]``, ``decode -> wav``."""

    config_class = LatentRVQConfig

    def __init__(self, config: LatentRVQConfig):
        super().__init__()
        if config.base is None:
            raise ConfigError("the latent RVQ codec needs its base codec's config (base)")
        self.config = config
        self.base = VAEGANCodec(config.base)
        self.base.requires_grad_(False)
        self.encoder = SEANetEncoder(config.seanet)
        self.decoder = SEANetDecoder(config.seanet)
        self.quantizer = ResidualVectorQuantizer(config.quantizer)

    def train(self, mode: bool = True) -> "LatentRVQCodec":
        super().train(mode)
        self.base.eval()  # frozen: never in training mode
        return self

    # ---- the pieces ------------------------------------------------------------------------

    def base_latents(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio ``[B, C, T]`` -> the frozen base's scaled posterior means ``[B, D, ceil(T / 96)]``."""
        with torch.no_grad():
            return self.base.latents_from(wav)

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled base latents -> audio through the frozen base decoder (differentiable)."""
        return self.base.audio_from(latents)

    def pre_quantization(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio -> the embeddings the quantiser reads ``[B, dimension, F]``."""
        return self.encoder(self.base_latents(wav))

    def _latents_from(self, quantized: torch.Tensor, frames: int | None = None) -> torch.Tensor:
        z = self.decoder(quantized)
        return z if frames is None else z[..., :frames]

    # ---- training --------------------------------------------------------------------------

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Reconstruct ``wav [B, C, T]``; the penalty holds the latent MSE and the commitment loss."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise InvalidInput(f"expected audio [B, {self.channels}, T], got shape {tuple(wav.shape)}")
        length = wav.shape[-1]
        z = self.base_latents(wav)
        q = self.quantizer(self.encoder(z))
        z_hat = self._latents_from(q.quantized, z.shape[-1])
        latent_mse = F.mse_loss(z_hat, z)
        c = self.config.loss
        # rendered only when a waveform term needs it (the frozen decoder costs more than the rest)
        out = self.render(z_hat)[..., :length] if c.l1 > 0 or c.mel > 0 or c.mrstft > 0 else None
        bw = q.num_codebooks * self.quantizer.bandwidth_per_codebook(self.frame_rate)
        metrics = dict(q.metrics, latent_mse=float(latent_mse.detach()), num_codebooks=float(q.num_codebooks),
                       bandwidth_kbps=bw)
        penalty = q.penalty + self.config.latent_weight * latent_mse
        return CodecOutput(wav=out, penalty=penalty, codes=q.codes, latents=z_hat, metrics=metrics)

    # ---- inference -------------------------------------------------------------------------

    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Audio ``[B, C, T]`` (any rate/channels) -> codes ``[B, num_codebooks, ceil(T' / hop)]`` int64."""
        x = self.prepare_audio(wav, sample_rate)
        return _inference(lambda: self.quantizer.encode(self.pre_quantization(x)))

    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Codes ``[B, K, F]`` (any ``K <= total_codebooks``) -> audio ``[B, C, F * hop]`` (or ``length``)."""
        codes = self.check_codes(codes)
        return self._trim(_inference(lambda: self.render(self._latents_from(self.quantizer.decode(codes)))), length)


__all__ = ["LatentRVQCodec", "LatentRVQConfig"]
