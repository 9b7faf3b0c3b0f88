"""Musical attributes stated in a prompt, as extra conditioning tokens.

audiocraft conditions MusicGen on more than the description: each attribute of a clip
(``genre``, ``key``, ``bpm``, ...) may get a conditioner of its own (a lookup table for a
categorical value), and Stable Audio embeds numbers (``seconds_total``) with a number
conditioner. :class:`AttributeEmbedder` is that idea for the facts a prompt states in plain
words: the tempo (``"96 bpm"``), the tonic and the mode (``"E minor"``). They are read from
the prompt text itself by :func:`parse_facts`, so a user writes a prompt as before; the tokens
are appended to the projected text states and reach the generator through the same
cross-attention, and a prompt that does not state a fact simply has no token for it.

Why: a small LM trained on a small corpus learns the tonic word from MiniLM's states but not
the bpm number or the mode word (README, MusicGen section); a tempo given as a smooth function
of log-bpm and the mode and tonic as table entries are much easier to read. Not in the MusicGen
paper (text only); off unless a model's ``text.attributes`` names them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from .counterfactual import _BPM, _KEY, _MODE, _pitch
from .states import TextStates

__all__ = ["ATTRIBUTES", "MusicFacts", "parse_facts", "check_attributes", "AttributeEmbedder"]

#: the attributes a prompt can state, in token order
ATTRIBUTES: Tuple[str, ...] = ("bpm", "tonic", "mode")
_BPM_RANGE = (20.0, 400.0)
_BPM_CENTER = 120.0
_FOURIER = 6  # frequencies of the log-tempo features: pi * 2**k, k = -2..3 (periods 8 down to 0.25 octave)


def check_attributes(attributes, what: str = "text attributes") -> list:
    """``attributes`` as a list in token order (``bpm``, ``tonic``, ``mode``); a
    :class:`~tunecraft.errors.ConfigError` unless they are distinct names of :data:`ATTRIBUTES`."""
    if isinstance(attributes, str) or not isinstance(attributes, (list, tuple)) \
            or any(a not in ATTRIBUTES for a in attributes) or len(set(attributes)) != len(attributes):
        raise ConfigError(f"{what} must be distinct names among {', '.join(ATTRIBUTES)}, got {attributes!r}")
    return [a for a in ATTRIBUTES if a in attributes]


@dataclass(frozen=True)
class MusicFacts:
    """What a prompt states: ``bpm`` (float), ``tonic`` (pitch class 0-11, C = 0), ``mode``
    (``"major"`` / ``"minor"``); ``None`` for what it does not state."""

    bpm: Optional[float] = None
    tonic: Optional[int] = None
    mode: Optional[str] = None


def parse_facts(text: Optional[str]) -> MusicFacts:
    """The tempo, tonic and mode a prompt states, by the same rules as
    :func:`tunecraft.text.counterfactual.counterfactual`: ``"<number> bpm"`` (2-3 digits), a key
    as ``"<A-G>[#|b] major|minor"`` (capital letter: "a minor" is not A), and the mode from the key
    or from a lone "major"/"minor". The first mention wins; a tempo outside 20-400 bpm is ignored."""
    if not text:
        return MusicFacts()
    bpm = tonic = mode = None
    m = _BPM.search(text)
    if m is not None:
        value = float(m.group(1))
        if _BPM_RANGE[0] <= value <= _BPM_RANGE[1]:
            bpm = value
    k = _KEY.search(text)
    if k is not None:
        tonic = _pitch(k.group(1), k.group(2))
        mode = k.group(4).lower()
    else:
        w = _MODE.search(text)
        if w is not None:
            mode = w.group(1).lower()
    return MusicFacts(bpm=bpm, tonic=tonic, mode=mode)


def _tempo_features(bpm: torch.Tensor) -> torch.Tensor:
    """``[N] -> [N, 1 + 2 * _FOURIER]``: u = log2(bpm / 120) and sin/cos of u at octave-spaced
    frequencies, so that nearby tempi get nearby features and 6 % apart is resolvable."""
    u = torch.log2(bpm / _BPM_CENTER).unsqueeze(-1)
    freqs = math.pi * (2.0 ** (torch.arange(_FOURIER, dtype=bpm.dtype, device=bpm.device) - 2))
    return torch.cat([u, torch.sin(u * freqs), torch.cos(u * freqs)], dim=-1)


class AttributeEmbedder(nn.Module):
    """Prompts -> one token per stated attribute ``[B, len(attributes), dim]`` + mask.

    ``bpm``: a linear map of :func:`_tempo_features`; ``tonic``: a 12-entry table; ``mode``: a
    2-entry table. Initialised at ``init_std`` (about the scale of the projected text states)."""

    def __init__(self, dim: int, attributes: Sequence[str] = ATTRIBUTES, init_std: float = 0.3) -> None:
        super().__init__()
        attributes = check_attributes(list(attributes))
        if not attributes:
            raise ConfigError("an AttributeEmbedder needs at least one attribute")
        self.attributes = tuple(attributes)
        self.dim = int(dim)
        if "bpm" in self.attributes:
            self.bpm = nn.Linear(1 + 2 * _FOURIER, dim)
            nn.init.normal_(self.bpm.weight, std=init_std / math.sqrt(1 + 2 * _FOURIER) * 2)
            nn.init.zeros_(self.bpm.bias)
        if "tonic" in self.attributes:
            self.tonic = nn.Embedding(12, dim)
            nn.init.normal_(self.tonic.weight, std=init_std)
        if "mode" in self.attributes:
            self.mode = nn.Embedding(2, dim)
            nn.init.normal_(self.mode.weight, std=init_std)

    def forward(self, texts: Sequence[Optional[str]], device: torch.device | None = None,
                dtype: torch.dtype | None = None) -> TextStates:
        facts = [parse_facts(t) for t in texts]
        ref = next(self.parameters())
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        # every row gets a token (computed from a neutral stand-in where the prompt is silent: 120
        # bpm, C, major), then the mask zeroes the silent ones: all parameters stay in the graph,
        # as DDP needs in every step
        tokens, masks = [], []
        for name in self.attributes:
            values = [getattr(f, name) for f in facts]
            present = torch.tensor([v is not None for v in values], dtype=torch.bool, device=device)
            if name == "bpm":
                bpm = torch.tensor([_BPM_CENTER if v is None else v for v in values], device=device,
                                   dtype=torch.float32)
                tok = self.bpm(_tempo_features(bpm).to(self.bpm.weight.dtype))
            elif name == "tonic":
                tok = self.tonic(torch.tensor([v or 0 for v in values], device=device, dtype=torch.long))
            else:
                tok = self.mode(torch.tensor([int(v == "minor") for v in values], device=device, dtype=torch.long))
            tokens.append(torch.where(present.unsqueeze(-1), tok.to(dtype), torch.zeros((), dtype=dtype, device=device)))
            masks.append(present)
        return TextStates(torch.stack(tokens, dim=1), torch.stack(masks, dim=1))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, attributes={list(self.attributes)}"
