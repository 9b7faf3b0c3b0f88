"""MeLoDy's audio VAE-GAN: a KL-regularised autoencoder trained adversarially.

``wav [B, C, T] -> SEANet encoder -> [mu, log sigma^2] -> z = mu + sigma eps -> SEANet decoder``

MeLoDy: 24 kHz, stride 96 (250 Hz latents), 16-d latents; losses MR-STFT 50, feature matching
20, GAN 1, KL 5e-3; HiFi-GAN's multi-period and UnivNet's multi-resolution spectrogram
discriminators. The encoder mirrors the decoder with strided convolutions in place of upsampling.

Latents seen by a diffusion model are *scaled*: ``encode`` returns ``s * mu`` and ``decode``
expects scaled latents, clipping them to ``[-latent_clip, latent_clip]`` before dividing by ``s``
(see :class:`~tunecraft.modules.bottlenecks.KLBottleneck`). ``s`` is fitted on data with
:meth:`VAEGANCodec.fit_latent_scale` and saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..config import Config
from ..errors import ConfigError, InvalidInput
from ..modules.bottlenecks import KLBottleneck, KLBottleneckConfig
from ..modules.discriminators import DiscriminatorConfig
from ..modules.losses import CodecLossConfig
from ..modules.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from .base import CodecOutput, ContinuousCompressionModel, _inference


@dataclass
class VAEGANConfig(Config):
    """MeLoDy's VAE-GAN. Rates are the paper's (24 kHz, hop 96 = ratios [4, 4, 3, 2], 16-d latents);
    the network width (16 filters, 64-channel bottleneck, no LSTM) is a CPU-sized choice, since the
    paper does not give one. The MPD is 4x narrower than HiFi-GAN's (channels 8..256 instead of
    32..1024; ``DiscriminatorConfig.melody()`` has the full size)."""

    sample_rate: int = 24000
    seanet: SEANetConfig = field(default_factory=lambda: SEANetConfig(n_filters=16, ratios=[4, 4, 3, 2], dimension=64,
                                                                      lstm=0))
    bottleneck: KLBottleneckConfig = field(default_factory=lambda: KLBottleneckConfig(latent_dim=16))
    loss: CodecLossConfig = field(default_factory=CodecLossConfig.melody)
    discriminator: DiscriminatorConfig = field(
        default_factory=lambda: DiscriminatorConfig.melody().replace(mpd_channels=[8, 32, 128, 256, 256]))

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {self.sample_rate}")


class VAEGANCodec(ContinuousCompressionModel):
    """Continuous codec: ``encode -> scaled latents [B, 16, F]``, ``decode -> wav [B, C, F * 96]``."""

    config_class = VAEGANConfig

    def __init__(self, config: VAEGANConfig):
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config.seanet)
        self.bottleneck = KLBottleneck(config.seanet.dimension, config.bottleneck)
        self.decoder = SEANetDecoder(config.seanet)

    @property
    def latent_dim(self) -> int:
        return self.config.bottleneck.latent_dim

    @property
    def latent_scale(self) -> float:
        return float(self.bottleneck.latent_scale)

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Training pass: sample ``z`` by reparameterisation, decode, and return the weighted KL as penalty."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise InvalidInput(f"expected audio [B, {self.channels}, T], got shape {tuple(wav.shape)}")
        length = wav.shape[-1]
        b = self.bottleneck(self.encoder(wav))
        out = self.decoder(self.bottleneck.decode_input(b.latents))[..., :length]
        return CodecOutput(wav=out, penalty=b.penalty, latents=b.latents, metrics=b.metrics)

    def latents_from(self, wav: torch.Tensor, sample: bool = False, scaled: bool = True) -> torch.Tensor:
        """The computation of :meth:`encode` on audio already in the model's format, without
        input checks or inference mode (differentiable; used by codecs built on this one)."""
        z = self.bottleneck.encode(self.encoder(wav), sample=sample)
        return self.bottleneck.scale(z) if scaled else z

    def audio_from(self, latents: torch.Tensor, scaled: bool = True) -> torch.Tensor:
        """The computation of :meth:`decode` without input checks or inference mode (differentiable)."""
        z = self.bottleneck.unscale(latents) if scaled else latents
        return self.decoder(self.bottleneck.decode_input(z))

    def encode(self, wav: torch.Tensor, sample_rate: int | None = None, sample: bool = False,
               scaled: bool = True) -> torch.Tensor:
        """Audio -> latents ``[B, D, F]``: the posterior mean (or a sample), times ``latent_scale`` if ``scaled``."""
        x = self.prepare_audio(wav, sample_rate)
        return _inference(lambda: self.latents_from(x, sample=sample, scaled=scaled))

    def decode(self, latents: torch.Tensor, length: int | None = None, scaled: bool = True) -> torch.Tensor:
        """Latents ``[B, D, F]`` (scaled, as from :meth:`encode`) -> audio ``[B, C, F * hop]``."""
        z = self.check_latents(latents)
        return self._trim(_inference(lambda: self.audio_from(z, scaled=scaled)), length)

    def fit_latent_scale(self, batches: Iterable[torch.Tensor] | torch.Tensor, sample_rate: int | None = None) -> float:
        """Set the latent scale to ``1 / std`` of the unscaled posterior means over ``batches`` of audio."""
        if isinstance(batches, torch.Tensor):
            batches = [batches]
        latents = [self.encode(w, sample_rate, scaled=False).flatten() for w in batches]
        if not latents:
            raise InvalidInput("fit_latent_scale needs at least one batch of audio")
        return self.bottleneck.fit_scale(torch.cat(latents))
