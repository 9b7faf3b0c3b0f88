"""Text states: the token-level output of a text encoder.

A :class:`TextStates` holds ``states [B, L, D]`` and ``mask [B, L]`` (``True`` = real token).
Padded positions always hold zeros. A row whose mask is all ``False`` is the *null
condition*: it is what the empty prompt ``""`` (or ``None``) encodes to, and what
classifier-free-guidance dropout produces. Consumers that attend over text must handle
such rows (e.g. zero the cross-attention output for them, as Noise2Music does) instead
of feeding an all ``-inf`` row to a softmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import InvalidInput


@dataclass(frozen=True)
class TextStates:
    """Token states ``[B, L, D]`` (floating point) with a boolean mask ``[B, L]``."""

    states: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        s, m = self.states, self.mask
        if not isinstance(s, torch.Tensor) or not isinstance(m, torch.Tensor):
            raise InvalidInput("TextStates needs tensors for states and mask")
        if s.dim() != 3:
            raise InvalidInput(f"TextStates.states must be [B, L, D], got shape {tuple(s.shape)}")
        if not s.is_floating_point():
            raise InvalidInput(f"TextStates.states must be floating point, got {s.dtype}")
        if m.dtype != torch.bool:
            raise InvalidInput(f"TextStates.mask must be bool, got {m.dtype}")
        if tuple(m.shape) != tuple(s.shape[:2]):
            raise InvalidInput(
                f"TextStates.mask shape {tuple(m.shape)} does not match states [B, L] = {tuple(s.shape[:2])}"
            )
        if m.device != s.device:
            raise InvalidInput(f"TextStates states on {s.device} but mask on {m.device}")

    # ------------------------------------------------------------------ shape helpers
    @property
    def batch_size(self) -> int:
        return self.states.shape[0]

    @property
    def length(self) -> int:
        return self.states.shape[1]

    @property
    def dim(self) -> int:
        return self.states.shape[2]

    @property
    def device(self) -> torch.device:
        return self.states.device

    @property
    def dtype(self) -> torch.dtype:
        return self.states.dtype

    @property
    def lengths(self) -> torch.Tensor:
        """Number of real tokens per row, ``[B]`` int64."""
        return self.mask.sum(dim=1)

    @property
    def is_null(self) -> torch.Tensor:
        """``[B]`` bool: rows that carry no text (all-False mask)."""
        return ~self.mask.any(dim=1)

    def __len__(self) -> int:
        return self.batch_size

    def __getitem__(self, index) -> "TextStates":
        """Select rows; an integer index keeps the batch dimension (``B = 1``)."""
        if isinstance(index, int):
            if not -self.batch_size <= index < self.batch_size:
                raise IndexError(f"row {index} out of range for a batch of {self.batch_size}")
            index = slice(index % self.batch_size, index % self.batch_size + 1)
        return TextStates(self.states[index], self.mask[index])

    # ------------------------------------------------------------------ conversions
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "TextStates":
        """Move to ``device`` and/or cast the states to ``dtype`` (the mask stays bool)."""
        states = self.states.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else self.states
        mask = self.mask.to(device=device) if device is not None else self.mask
        if states is self.states and mask is self.mask:
            return self
        return TextStates(states, mask)

    def pooled(self) -> torch.Tensor:
        """Masked mean over real tokens, ``[B, D]``; null rows pool to zeros."""
        m = self.mask.unsqueeze(-1).to(self.states.dtype)
        total = (self.states * m).sum(dim=1)
        count = m.sum(dim=1).clamp_min(1.0)
        return total / count

    def pad_to(self, length: int) -> "TextStates":
        """Right-pad with zero states / False mask up to ``length`` tokens."""
        if length < self.length:
            raise InvalidInput(f"cannot pad {self.length} text tokens down to {length}")
        if length == self.length:
            return self
        extra = length - self.length
        states = torch.nn.functional.pad(self.states, (0, 0, 0, extra))
        mask = torch.nn.functional.pad(self.mask, (0, extra), value=False)
        return TextStates(states, mask)

    def null_like(self) -> "TextStates":
        """The null condition with the same shape: zero states, all-False mask."""
        return TextStates(torch.zeros_like(self.states), torch.zeros_like(self.mask))

    def with_states(self, states: torch.Tensor) -> "TextStates":
        """Same mask, new states ``[B, L, D']`` (e.g. after a projection); padding is re-zeroed."""
        if tuple(states.shape[:2]) != tuple(self.mask.shape):
            raise InvalidInput(
                f"new states {tuple(states.shape)} do not match the mask [B, L] = {tuple(self.mask.shape)}"
            )
        return TextStates(states * self.mask.unsqueeze(-1).to(states.dtype), self.mask)

    @staticmethod
    def cat(items: Sequence["TextStates"]) -> "TextStates":
        """Concatenate along the batch, right-padding every item to the longest ``L``."""
        items = list(items)
        if not items:
            raise InvalidInput("TextStates.cat needs at least one item")
        dims = {t.dim for t in items}
        if len(dims) != 1:
            raise InvalidInput(f"cannot concatenate text states of different widths {sorted(dims)}")
        length = max(t.length for t in items)
        padded = [t.pad_to(length) for t in items]
        return TextStates(torch.cat([t.states for t in padded]), torch.cat([t.mask for t in padded]))


def null_condition(
    states: TextStates, p: float, generator: torch.Generator | None = None, *, return_dropped: bool = False
):
    """Classifier-free-guidance dropout: replace each row by the null condition with probability ``p``.

    A dropped row gets zero states and an all-False mask, exactly what the empty prompt
    encodes to (MusicGen: ``p = 0.3``; Noise2Music: 10 % text dropout; JEN-1: 0.2).
    The draws are ``torch.rand(B, generator=generator)``, so a seeded generator gives the
    same rows every time. Returns the new states, and with ``return_dropped=True`` also
    the ``[B]`` bool tensor of dropped rows.
    """
    if not 0.0 <= float(p) <= 1.0:
        raise InvalidInput(f"dropout probability must be in [0, 1], got {p}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    dropped = torch.rand(states.batch_size, generator=generator, device=gen_device) < float(p)
    dropped = dropped.to(states.device)
    keep = ~dropped
    out = TextStates(
        states.states * keep.view(-1, 1, 1).to(states.states.dtype), states.mask & keep.view(-1, 1)
    )
    return (out, dropped) if return_dropped else out
