"""Text conditioning for generators: frozen encoder + learned projection + CFG dropout.

MusicGen feeds T5 states through a learned output projection into cross-attention and
drops the text with p = 0.3 for classifier-free guidance; Noise2Music drops it 10 % of the
time; JEN-1 20 %. :class:`TextConditioner` is that block. Its ``state_dict`` holds only the
projection: the frozen encoder is referenced, not owned, so model checkpoints stay small,
and :attr:`TextConditioner.config` records the encoder spec so that
:meth:`TextConditioner.from_config` re-creates the same block when a model is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError, InvalidInput
from .attributes import AttributeEmbedder, check_attributes
from .encoders import DEFAULT_CACHE_SIZE, TextEncoder, get_text_encoder
from .states import TextStates, null_condition


@dataclass
class TextConditionerConfig(Config):
    """Serialisable description of a :class:`TextConditioner`.

    ``encoder`` is a :func:`~tunecraft.text.get_text_encoder` spec (``"minilm"``,
    ``"t5:/dir"``, ...); ``cfg_dropout_p`` is the probability that a training example's
    text is replaced by the null condition; ``attributes`` (a subset of ``bpm``, ``tonic``,
    ``mode``; empty by default) adds one token per fact the prompt states
    (:class:`~tunecraft.text.attributes.AttributeEmbedder`).
    """

    model_dim: int
    encoder: str = "minilm"
    max_length: int | None = None
    cache_size: int = DEFAULT_CACHE_SIZE
    cfg_dropout_p: float = 0.0
    bias: bool = True
    attributes: list = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.model_dim, bool) or not isinstance(self.model_dim, int) or self.model_dim < 1:
            raise ConfigError(f"text conditioner model_dim must be a positive integer, got {self.model_dim!r}")
        if not 0.0 <= float(self.cfg_dropout_p) <= 1.0:
            raise ConfigError(f"cfg_dropout_p must be in [0, 1], got {self.cfg_dropout_p}")
        self.attributes = check_attributes(self.attributes)


class _SharedEncoder:
    """Holds the encoder outside the module tree; deep copies (e.g. EMA) share it."""

    __slots__ = ("encoder",)

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder

    def __deepcopy__(self, memo) -> "_SharedEncoder":
        return self


class TextConditioner(nn.Module):
    """Prompts -> projected text states ``[B, L, model_dim]`` with mask ``[B, L]``.

    Args:
        model_dim: width of the generator's cross-attention.
        encoder: a :class:`TextEncoder` or a spec for :func:`get_text_encoder`.
        cfg_dropout_p: in training mode, each prompt is replaced by ``""`` (the null
            condition) with this probability.
        bias: whether the projection has a bias.
        max_length, cache_size: passed to :func:`get_text_encoder` when ``encoder`` is a spec.
        attributes: facts read from each prompt and appended as tokens after its text states
            (:class:`~tunecraft.text.attributes.AttributeEmbedder`; none by default).
        device: where a spec-created encoder runs (the projection is moved with ``.to()``).

    Output rows are zero at padded positions, and null rows (empty prompt or dropped)
    are all zero with an all-False mask, whatever the projection's bias.
    """

    def __init__(
        self,
        model_dim: int,
        encoder: TextEncoder | str = "minilm",
        *,
        cfg_dropout_p: float = 0.0,
        bias: bool = True,
        max_length: int | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        attributes: Sequence[str] = (),
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, TextEncoder):
            encoder = get_text_encoder(encoder, device=device, max_length=max_length, cache_size=cache_size)
        self._shared = _SharedEncoder(encoder)
        self._config = TextConditionerConfig(
            model_dim=model_dim, encoder=encoder.name, max_length=encoder.max_length,
            cache_size=encoder.cache_size, cfg_dropout_p=float(cfg_dropout_p), bias=bias,
            attributes=list(attributes),
        )
        self.cfg_dropout_p = float(cfg_dropout_p)
        self.proj = nn.Linear(encoder.dim, model_dim, bias=bias)
        self.attributes = AttributeEmbedder(model_dim, self._config.attributes) if self._config.attributes else None

    @classmethod
    def from_config(cls, config: TextConditionerConfig | dict, device: torch.device | str | None = None) -> "TextConditioner":
        if isinstance(config, dict):
            config = TextConditionerConfig.from_dict(config)
        return cls(
            config.model_dim, config.encoder, cfg_dropout_p=config.cfg_dropout_p, bias=config.bias,
            max_length=config.max_length, cache_size=config.cache_size, attributes=config.attributes,
            device=device,
        )

    @property
    def config(self) -> TextConditionerConfig:
        return self._config.replace(cfg_dropout_p=self.cfg_dropout_p)

    @property
    def encoder(self) -> TextEncoder:
        """The frozen encoder (not a submodule: absent from ``state_dict`` and ``parameters``)."""
        return self._shared.encoder

    @property
    def encoder_dim(self) -> int:
        return self.proj.in_features

    @property
    def model_dim(self) -> int:
        return self.proj.out_features

    @staticmethod
    def null_condition(states: TextStates, p: float, generator: torch.Generator | None = None, *, return_dropped: bool = False):
        """CFG dropout on already computed states; see :func:`tunecraft.text.null_condition`."""
        return null_condition(states, p, generator, return_dropped=return_dropped)

    def drop_texts(self, texts: Sequence[str | None], p: float, generator: torch.Generator | None = None) -> list[str]:
        """Replace each prompt by ``""`` with probability ``p`` (draws: ``torch.rand(B, generator)``).

        Dropping before encoding gives exactly what :meth:`null_condition` gives after it,
        without spending encoder time on dropped prompts.
        """
        if not 0.0 <= float(p) <= 1.0:
            raise InvalidInput(f"dropout probability must be in [0, 1], got {p}")
        texts = list(texts)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        dropped = (torch.rand(len(texts), generator=generator, device=gen_device) < float(p)).tolist()
        return ["" if d else ("" if t is None else t) for t, d in zip(texts, dropped)]

    def forward(self, texts: Sequence[str | None], *, generator: torch.Generator | None = None) -> TextStates:
        """Encode and project; applies CFG dropout only in training mode."""
        if self.training and self.cfg_dropout_p > 0:
            texts = self.drop_texts(texts, self.cfg_dropout_p, generator)
        weight = self.proj.weight
        encoded = self.encoder.encode(texts, device=weight.device)
        states = self.project(encoded)
        if self.attributes is None:
            return states
        extra = self.attributes(texts, device=states.states.device, dtype=states.states.dtype)
        return TextStates(torch.cat([states.states, extra.states], dim=1), torch.cat([states.mask, extra.mask], dim=1))

    def project(self, encoded: TextStates) -> TextStates:
        """Apply the learned projection to encoder states; padding and null rows stay zero."""
        if encoded.dim != self.encoder_dim:
            raise InvalidInput(f"text states have width {encoded.dim}, the projection expects {self.encoder_dim}")
        weight = self.proj.weight
        encoded = encoded.to(weight.device)
        return encoded.with_states(self.proj(encoded.states.to(weight.dtype)))

    def extra_repr(self) -> str:
        extra = f", attributes={self._config.attributes}" if self._config.attributes else ""
        return f"encoder={self.encoder.name!r}, cfg_dropout_p={self.cfg_dropout_p}{extra}"
