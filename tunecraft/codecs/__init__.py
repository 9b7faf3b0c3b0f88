"""Audio codecs behind one interface (:class:`CompressionModel`).

* :class:`RVQCodec` - EnCodec-style residual-VQ codec (MusicGen's tokenizer); official EnCodec
  weights convert with :func:`from_transformers` / :func:`from_audiocraft`.
* :class:`VAEGANCodec` - MeLoDy's KL-regularised audio VAE-GAN (continuous, scaled latents).
* :class:`LatentRVQCodec` - residual-VQ tokens (50 Hz, 4 x 2048) over a frozen VAE-GAN's latents.
* :class:`MaskedAutoencoder` - JEN-1's noise-robust masked autoencoder with whitened latents.

``load_codec(name_or_path)`` loads any of them from a model directory or bundle name;
:class:`CodecGAN` bundles a codec with its discriminator and objective for training.
"""

from __future__ import annotations

from .base import (
    CodecOutput,
    CompressionModel,
    ContinuousCompressionModel,
    DiscreteCompressionModel,
    QuantizedCompressionModel,
    registered_codecs,
)
from .convert import convert_encodec, from_audiocraft, from_transformers
from .latent_rvq import LatentRVQCodec, LatentRVQConfig
from .masked_ae import MaskedAEConfig, MaskedAutoencoder
from .rvq_codec import RVQCodec, RVQCodecConfig
from .training import CodecGAN
from .vae_gan import VAEGANCodec, VAEGANConfig


def load_codec(name_or_path, device=None) -> CompressionModel:
    """Load a codec of any registered class from a directory or a bundle name."""
    return CompressionModel.from_pretrained(name_or_path, device=device)


__all__ = [
    "CodecGAN",
    "CodecOutput",
    "CompressionModel",
    "ContinuousCompressionModel",
    "DiscreteCompressionModel",
    "QuantizedCompressionModel",
    "LatentRVQCodec",
    "LatentRVQConfig",
    "MaskedAEConfig",
    "MaskedAutoencoder",
    "RVQCodec",
    "RVQCodecConfig",
    "VAEGANCodec",
    "VAEGANConfig",
    "convert_encodec",
    "from_audiocraft",
    "from_transformers",
    "load_codec",
    "registered_codecs",
]
