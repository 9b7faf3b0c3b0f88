"""JEN-1's noise-robust masked autoencoder with whitened continuous latents.

``wav [B, C, T] -> SEANet encoder -> z [B, D, F]``; in training 5% of the latent frames are
replaced by a mask embedding before the SEANet decoder, so the decoder learns to reconstruct
from corrupted latents (robust to a diffusion model's errors). JEN-1: 48 kHz stereo, hop 320,
128-d latents, time + frequency reconstruction losses and a patch-based adversarial loss.

Latents for diffusion are *whitened*: per-channel zero mean, then SVD whitening so their
covariance is the identity. The statistics are accumulated over a dataset
(:meth:`MaskedAutoencoder.update_whitening`, then :meth:`finalize_whitening`, or
:meth:`fit_whitening` in one call) and saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch

from ..config import Config
from ..errors import ConfigError, InvalidInput
from ..modules.bottlenecks import MaskedBottleneck, MaskedBottleneckConfig, Whitener
from ..modules.discriminators import DiscriminatorConfig
from ..modules.losses import CodecLossConfig
from ..modules.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from .base import CodecOutput, ContinuousCompressionModel, _inference


@dataclass
class MaskedAEConfig(Config):
    """JEN-1's autoencoder. Rates are the paper's (48 kHz stereo, hop 320 = ratios [8, 5, 4, 2],
    128-d latents, 5% masking); the width (16 filters, no LSTM) is a CPU-sized choice. The paper
    gives no loss weights; EnCodec's objective (MS-STFT discriminator, patch-based) is the default."""

    sample_rate: int = 48000
    seanet: SEANetConfig = field(default_factory=lambda: SEANetConfig(channels=2, n_filters=16, ratios=[8, 5, 4, 2],
                                                                      dimension=128, lstm=0))
    bottleneck: MaskedBottleneckConfig = field(default_factory=lambda: MaskedBottleneckConfig(latent_dim=128))
    whitening_eps: float = 1e-5
    whitening_rank_tol: float = 1e-6
    loss: CodecLossConfig = field(default_factory=CodecLossConfig.encodec)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig.encodec)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.whitening_eps < 0 or self.whitening_rank_tol < 0:
            raise ConfigError("whitening_eps and whitening_rank_tol must be >= 0")


class MaskedAutoencoder(ContinuousCompressionModel):
    """Continuous codec with frame masking in training and whitened latents at inference."""

    config_class = MaskedAEConfig

    def __init__(self, config: MaskedAEConfig):
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config.seanet)
        self.bottleneck = MaskedBottleneck(config.seanet.dimension, config.bottleneck)
        self.decoder = SEANetDecoder(config.seanet)
        self.whitener = Whitener(config.bottleneck.latent_dim, config.whitening_eps, config.whitening_rank_tol)

    @property
    def latent_dim(self) -> int:
        return self.config.bottleneck.latent_dim

    @property
    def is_whitened(self) -> bool:
        """Whether whitening statistics have been fitted (then encode/decode whiten by default)."""
        return self.whitener.is_fitted

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Training pass: encode, mask ``mask_rate`` of the frames (training only), decode."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise InvalidInput(f"expected audio [B, {self.channels}, T], got shape {tuple(wav.shape)}")
        length = wav.shape[-1]
        latents = self.bottleneck.encode(self.encoder(wav))
        corrupted, mask = self.bottleneck.corrupt(latents)
        out = self.decoder(self.bottleneck.decode_input(corrupted))[..., :length]
        metrics = {"mask_fraction": float(mask.float().mean()) if mask is not None else 0.0}
        return CodecOutput(wav=out, penalty=latents.new_zeros(()), latents=latents, mask=mask, metrics=metrics)

    def _whiten_flag(self, whiten: bool | None) -> bool:
        if whiten is None:
            return self.is_whitened
        if whiten and not self.is_whitened:
            raise InvalidInput("whitening statistics are not fitted; call fit_whitening (or update_whitening "
                               "and finalize_whitening) first")
        return bool(whiten)

    def encode(self, wav: torch.Tensor, sample_rate: int | None = None, whiten: bool | None = None) -> torch.Tensor:
        """Audio -> latents ``[B, D, F]``, whitened when the whitening is fitted (or ``whiten=True``)."""
        x = self.prepare_audio(wav, sample_rate)
        do_whiten = self._whiten_flag(whiten)

        def run() -> torch.Tensor:
            z = self.bottleneck.encode(self.encoder(x))
            return self.whitener.whiten(z) if do_whiten else z

        return _inference(run)

    def decode(self, latents: torch.Tensor, length: int | None = None, whitened: bool | None = None) -> torch.Tensor:
        """Latents ``[B, D, F]`` (whitened if the model is) -> audio ``[B, C, F * hop]``."""
        z = self.check_latents(latents)
        do_unwhiten = self._whiten_flag(whitened)

        def run() -> torch.Tensor:
            zz = self.whitener.unwhiten(z) if do_unwhiten else z
            return self.decoder(self.bottleneck.decode_input(zz))

        return self._trim(_inference(run), length)

    def update_whitening(self, wav: torch.Tensor, sample_rate: int | None = None) -> None:
        """Accumulate whitening statistics from one batch of audio ``[B, C, T]``."""
        self.whitener.update(self.encode(wav, sample_rate, whiten=False))

    def finalize_whitening(self) -> None:
        """Compute the whitening transform from the accumulated statistics (sums over ranks if distributed)."""
        self.whitener.finalize()

    def fit_whitening(self, batches: Iterable[torch.Tensor] | torch.Tensor, sample_rate: int | None = None) -> None:
        """Reset, accumulate over ``batches`` of audio, and finalise the whitening."""
        if isinstance(batches, torch.Tensor):
            batches = [batches]
        self.whitener.reset()
        for wav in batches:
            self.update_whitening(wav, sample_rate)
        self.finalize_whitening()
