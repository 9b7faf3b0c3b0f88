"""The beat clock: a tempo stated in a prompt as a time-aligned signal.

A clock ``[B, 2]`` holds, per row, ``(beats per position, beat position of position 0)``; a row
with 0 beats per position has no clock. Its features at positions ``n`` are
``[sin, cos](2 pi r phi_n)`` for each rate ``r`` of ``cycles`` (cycles per beat) with
``phi_n = phase_0 + n * beats_per_position``. Used by the MusicGen LM (one position per codec
frame, projected and added to the input embeddings) and by the Noise2Music generators (one
position per output sample or spectrogram frame, stacked with ``x_t`` as aligned conditioning).
Not in either paper: a time-aligned rhythm control in the manner of JASCO's or Music ControlNet's,
with the grid drawn from the requested tempo (it starts on a beat at time 0, where the corpus's
pieces start).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import InvalidInput

__all__ = ["beat_clock", "beat_after", "beat_features"]


def beat_clock(bpm: Sequence[float | None], positions_per_second: float,
               start: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """``[B, 2]`` float64 clocks for tempi ``bpm`` (``None`` or 0: no clock) at
    ``positions_per_second``, whose beat grid starts ``start[b]`` positions before position 0 (a crop
    that begins ``start`` positions into its clip)."""
    starts = [0.0] * len(bpm) if start is None else [float(s) for s in start]
    if len(starts) != len(bpm):
        raise InvalidInput(f"beat_clock: {len(bpm)} tempi but {len(starts)} start positions")
    per_position = []
    for b in bpm:
        b = 0.0 if b is None else float(b)
        if not math.isfinite(b) or b < 0:
            raise InvalidInput(f"a tempo must be a positive number of beats per minute, got {b}")
        per_position.append(b / (60.0 * float(positions_per_second)))
    clock = torch.tensor(per_position, dtype=torch.float64).view(-1, 1)
    return beat_after(torch.cat([clock, torch.zeros_like(clock)], dim=1),
                      torch.tensor(starts, dtype=torch.float64))


def beat_after(beat: torch.Tensor, positions: float | torch.Tensor) -> torch.Tensor:
    """The clocks ``beat [B, 2]`` ``positions`` (a number or ``[B]``) positions later."""
    out = beat.clone()
    out[:, 1] = (beat[:, 1] + positions * beat[:, 0]) % 1.0
    return out


def beat_features(beat: torch.Tensor, positions: torch.Tensor, cycles: torch.Tensor) -> torch.Tensor:
    """``[B, n, 2R]`` float32 features of the clocks ``beat [B, 2]`` at ``positions [n]`` for the
    rates ``cycles [R]``, computed in ``beat``'s dtype (float64 for long sample-rate sequences);
    zero for rows without a clock."""
    phase = beat[:, 1:2] + positions.to(device=beat.device, dtype=beat.dtype).view(1, -1) * beat[:, 0:1]  # [B, n] beats
    angle = (2 * math.pi) * phase.unsqueeze(-1) * cycles.to(device=beat.device, dtype=beat.dtype).view(1, 1, -1)
    feats = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()
    return feats * (beat[:, 0] > 0).view(-1, 1, 1).float()
