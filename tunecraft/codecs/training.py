"""A codec, its discriminator and its objective as one module for the training loop.

:class:`CodecGAN` is what a codec ``TrainTask`` builds: one ``nn.Module`` (so DDP/FSDP can wrap
it) whose ``forward(wav, phase)`` returns ``(loss, logs)`` for the two optimiser phases of
adversarial training, run in this order every step:

* ``"discriminator"``: ``L_D(D(x), D(sg(G(x))))`` (hinge or least squares); the codec runs
  without gradient and without touching its codebooks;
* ``"generator"``: the weighted reconstruction terms, ``L_G(D(G(x)))``, feature matching and
  the bottleneck penalty (commitment or KL); codebooks update here (k-means init, EMA, dead codes).

Weights, losses and discriminators come from the codec config's ``loss`` and ``discriminator``
sections (paper values by default).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..errors import InvalidInput
from ..modules.losses import CodecLoss
from .base import CompressionModel

PHASES = ("discriminator", "generator")


class CodecGAN(nn.Module):
    """``forward(wav [B, C, T], phase) -> (loss, logs)`` for codec training (see module docstring)."""

    def __init__(self, codec: CompressionModel):
        super().__init__()
        self.codec = codec
        cfg = codec.config
        self.objective = CodecLoss(cfg.loss, codec.sample_rate)
        self.discriminator: nn.Module | None = (
            cfg.discriminator.build(codec.channels) if cfg.loss.uses_discriminator else None
        )

    @property
    def phases(self) -> tuple[str, ...]:
        """Optimiser phases in the order they run each step."""
        return PHASES if self.discriminator is not None else ("generator",)

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return self.codec.parameters()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return self.discriminator.parameters() if self.discriminator is not None else iter(())

    def _frozen(self) -> contextlib.AbstractContextManager:
        quantizer = getattr(self.codec, "quantizer", None)
        if quantizer is not None and hasattr(quantizer, "frozen_codebooks"):
            return quantizer.frozen_codebooks()
        return contextlib.nullcontext()

    def forward(self, wav: torch.Tensor, phase: str = "generator", adversarial: bool = True):
        """One phase of a training step on ``wav [B, C, T]``.

        ``adversarial=False`` drops the adversarial and feature-matching terms from the generator
        loss (a warm-up); the discriminator phase still trains the discriminator.
        """
        if phase not in self.phases:
            raise InvalidInput(f"phase must be one of {', '.join(self.phases)}, got {phase!r}")
        if phase == "discriminator":
            with torch.no_grad(), self._frozen():
                fake = self.codec(wav).wav
            loss, logs = self.objective.discriminator_loss(self.discriminator(wav), self.discriminator(fake))
            return loss, logs
        out = self.codec(wav)
        disc_fake = disc_real = None
        if adversarial and self.discriminator is not None:
            disc_fake = self.discriminator(out.wav)
            with torch.no_grad():
                disc_real = self.discriminator(wav)
        loss, logs = self.objective.generator_loss(wav, out.wav, disc_fake, disc_real, out.penalty,
                                                   adversarial=adversarial and self.discriminator is not None)
        logs.update({k: float(v) for k, v in out.metrics.items()})
        return loss, logs
