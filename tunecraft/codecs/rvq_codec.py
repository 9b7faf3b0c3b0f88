"""EnCodec-style codec (Défossez et al. 2022): SEANet encoder -> residual VQ -> SEANet decoder.

``wav [B, C, T] -> E(wav) = z [B, D, F] -> RVQ -> codes [B, K, F] -> sum_k e^k -> D(.) -> wav_hat``

MusicGen tokenises 32 kHz mono audio with 4 codebooks of 2048 entries at 50 Hz
(:meth:`RVQCodecConfig.musicgen_32khz`). Official EnCodec weights (transformers' ``EncodecModel``
and audiocraft checkpoints) load through :mod:`tunecraft.codecs.convert`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import Config
from ..errors import ConfigError, InvalidInput
from ..modules.discriminators import DiscriminatorConfig
from ..modules.losses import CodecLossConfig
from ..modules.quantization import ResidualVectorQuantizer, RVQConfig
from ..modules.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from .base import CodecOutput, QuantizedCompressionModel, _inference


@dataclass
class RVQCodecConfig(Config):
    """An EnCodec-style codec.

    Defaults are MusicGen's codec (32 kHz mono, ratios [8, 5, 4, 4] = 50 Hz, D=128, 4 x 2048,
    2 LSTM layers) made 4x narrower for CPU training: ``n_filters`` 16 instead of 64.
    ``loss``/``discriminator`` hold the EnCodec paper's training objective.
    """

    sample_rate: int = 32000
    seanet: SEANetConfig = field(default_factory=lambda: SEANetConfig(n_filters=16, ratios=[8, 5, 4, 4], dimension=128))
    quantizer: RVQConfig = field(default_factory=lambda: RVQConfig(dimension=128, n_q=4, bins=2048))
    loss: CodecLossConfig = field(default_factory=CodecLossConfig.encodec)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig.encodec)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.seanet.dimension != self.quantizer.dimension:
            raise ConfigError(f"seanet.dimension ({self.seanet.dimension}) must equal quantizer.dimension "
                              f"({self.quantizer.dimension})")

    @classmethod
    def musicgen_32khz(cls) -> "RVQCodecConfig":
        """The paper's codec: non-causal, 64 filters, 32 kHz, 50 Hz, 4 codebooks x 2048."""
        return cls(sample_rate=32000,
                   seanet=SEANetConfig(n_filters=64, ratios=[8, 5, 4, 4], dimension=128, lstm=2),
                   quantizer=RVQConfig(dimension=128, n_q=4, bins=2048))


class RVQCodec(QuantizedCompressionModel):
    """EnCodec-style discrete codec: ``encode -> codes [B, K, F]``, ``decode -> wav [B, C, F * hop]``."""

    config_class = RVQCodecConfig

    def __init__(self, config: RVQCodecConfig):
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config.seanet)
        self.decoder = SEANetDecoder(config.seanet)
        self.quantizer = ResidualVectorQuantizer(config.quantizer)

    def pre_quantization(self, wav: torch.Tensor) -> torch.Tensor:
        """Audio ``[B, C, T]`` -> the embeddings the quantiser reads ``[B, dimension, F]``."""
        return self.encoder(wav)

    # ---- training --------------------------------------------------------------------------

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Reconstruct ``wav [B, C, T]``; in training the quantiser updates its codebooks and may drop stages."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise InvalidInput(f"expected audio [B, {self.channels}, T], got shape {tuple(wav.shape)}")
        length = wav.shape[-1]
        q = self.quantizer(self.encoder(wav))
        out = self.decoder(q.quantized)[..., :length]
        bw = q.num_codebooks * self.quantizer.bandwidth_per_codebook(self.frame_rate)
        metrics = dict(q.metrics, num_codebooks=float(q.num_codebooks), bandwidth_kbps=bw)
        return CodecOutput(wav=out, penalty=q.penalty, codes=q.codes, metrics=metrics)

    # ---- inference -------------------------------------------------------------------------

    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Audio ``[B, C, T]`` (any rate/channels) -> codes ``[B, num_codebooks, ceil(T' / hop)]`` int64."""
        x = self.prepare_audio(wav, sample_rate)
        return _inference(lambda: self.quantizer.encode(self.encoder(x)))

    def decode_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, F]`` -> quantised embeddings ``[B, D, F]``."""
        codes = self.check_codes(codes)
        return _inference(lambda: self.quantizer.decode(codes))

    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Codes ``[B, K, F]`` (any ``K <= total_codebooks``) -> audio ``[B, C, F * hop]`` (or ``length``)."""
        codes = self.check_codes(codes)
        return self._trim(_inference(lambda: self.decoder(self.quantizer.decode(codes))), length)
