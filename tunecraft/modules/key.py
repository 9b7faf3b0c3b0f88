"""The key a prompt states as time-aligned signals, the tonal companion of :mod:`.beat`.

Two signals, both zero for a prompt that states no key (``"<tonic> major|minor"``):

* :func:`key_profile` - the key's Krumhansl-Kessler pitch-class profile (probe-tone ratings of
  each pitch class in a major or minor key, Krumhansl & Kessler 1982), rotated to the tonic and
  standardised to mean 0 and standard deviation 1: 12 numbers, constant over time. A spectrogram
  generator maps them onto its mel bins with one linear layer (a pitch class sits at the same bins
  in every key), so the stated key reaches every output position directly instead of through
  cross-attention alone.
* :func:`tonic_features` - ``[sin, cos](2 pi f t)`` of the tonic's frequency in each of a few
  octaves (A4 = 440 Hz, equal temperament): a pitch reference for a waveform generator, in the
  manner of the beat clock's tempo reference. It needs a position rate above twice the highest
  frequency (:func:`tonic_frequency`), so it suits waveforms, not 100 frames/s spectrograms.
* :func:`triad_features` - the same reference for the key's third (a major third above the tonic
  in a major key, a minor third in a minor one) and its fifth: the tonic triad, which tells a
  major key from its parallel minor (the third) and from its relative minor (the fifth, C-E-G
  against A-C-E), the two confusions the tonic alone leaves open.

Not in the Noise2Music paper (text only); used by its generators when ``key_profile`` /
``tonic_octaves`` / ``triad_octaves`` are set, and dropped with the text like the beat clock.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..errors import InvalidInput

__all__ = ["KK_MAJOR", "KK_MINOR", "THIRDS", "key_profile", "tonic_frequency", "tonic_features", "triad_features"]

#: Krumhansl-Kessler probe-tone profiles, pitch classes from the tonic upwards
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


#: semitones from the tonic to the third of its triad, by mode (the fifth is 7 in both)
THIRDS = {"major": 4, "minor": 3}


def _standard(profile: Sequence[float]) -> torch.Tensor:
    p = torch.tensor(profile, dtype=torch.float64)
    return (p - p.mean()) / p.std(unbiased=False)


#: the standardised profiles by mode
_TABLES = {"major": _standard(KK_MAJOR), "minor": _standard(KK_MINOR)}


def _check_key(tonic, mode) -> int:
    """``tonic`` as an int, or :class:`InvalidInput` unless it is 0-11 and ``mode`` a known mode."""
    if mode not in _TABLES or isinstance(tonic, bool) or int(tonic) != tonic or not 0 <= tonic < 12:
        raise InvalidInput(f"a key is a tonic 0-11 and 'major' or 'minor', got {tonic!r} {mode!r}")
    return int(tonic)


def key_profile(tonics: Sequence[Optional[int]], modes: Sequence[Optional[str]]) -> torch.Tensor:
    """``[B, 12]`` float32 profiles (pitch class 0 = C) of the keys ``tonics[b]`` (0-11)
    ``modes[b]`` (``"major"`` / ``"minor"``); a row of zeros where either is ``None``."""
    if len(tonics) != len(modes):
        raise InvalidInput(f"key_profile: {len(tonics)} tonics but {len(modes)} modes")
    out = torch.zeros(len(tonics), 12, dtype=torch.float64)
    for b, (tonic, mode) in enumerate(zip(tonics, modes)):
        if tonic is None or mode is None:
            continue
        out[b] = torch.roll(_TABLES[mode], _check_key(tonic, mode))  # out[pc] = table[(pc - tonic) % 12]
    return out.float()


def tonic_frequency(tonic: int, octave: int) -> float:
    """Equal-tempered frequency in Hz of pitch class ``tonic`` (C = 0) in scientific-pitch
    ``octave`` (A4 = 440 Hz, C4 = 261.6 Hz)."""
    return 440.0 * 2.0 ** ((int(tonic) - 9) / 12.0 + (int(octave) - 4))


def tonic_features(tonics: Sequence[Optional[int]], octaves: Sequence[int], positions_per_second: float,
                   length: int, start: Sequence[float] | None = None) -> torch.Tensor:
    """``[B, 2 len(octaves), length]`` float32 ``[sin..., cos...]`` of each tonic's frequency in
    each octave at ``positions_per_second``, for outputs that start ``start[b]`` seconds into their
    piece (default 0); zero for rows without a tonic. Phases are computed in float64."""
    starts = [0.0] * len(tonics) if start is None else [float(s) for s in start]
    if len(starts) != len(tonics):
        raise InvalidInput(f"tonic_features: {len(tonics)} tonics but {len(starts)} start times")
    rate = float(positions_per_second)
    n = torch.arange(int(length), dtype=torch.float64)
    out = torch.zeros(len(tonics), 2 * len(octaves), int(length), dtype=torch.float64)
    for b, tonic in enumerate(tonics):
        if tonic is None:
            continue
        freqs = torch.tensor([tonic_frequency(tonic, o) for o in octaves], dtype=torch.float64)
        cycles = freqs.view(-1, 1) * (starts[b] + n.view(1, -1) / rate)  # [O, length]
        angle = 2.0 * math.pi * torch.remainder(cycles, 1.0)
        out[b] = torch.cat([torch.sin(angle), torch.cos(angle)], dim=0)
    return out.float()


def triad_features(tonics: Sequence[Optional[int]], modes: Sequence[Optional[str]], octaves: Sequence[int],
                   positions_per_second: float, length: int, start: Sequence[float] | None = None) -> torch.Tensor:
    """``[B, 4 len(octaves), length]``: :func:`tonic_features` of each key's third (``THIRDS[mode]``
    semitones above the tonic) then of its fifth (7 semitones above), the tonic in octave ``o``
    giving the pitches above it (C major in octave 4: E4 and G4; B major: D#5 and F#5); zero for
    rows without a tonic or a mode."""
    if len(tonics) != len(modes):
        raise InvalidInput(f"triad_features: {len(tonics)} tonics but {len(modes)} modes")
    thirds, fifths = [], []
    for tonic, mode in zip(tonics, modes):
        if tonic is None or mode is None:
            thirds.append(None)
            fifths.append(None)
            continue
        tonic = _check_key(tonic, mode)
        thirds.append(tonic + THIRDS[mode])
        fifths.append(tonic + 7)
    return torch.cat([tonic_features(thirds, octaves, positions_per_second, length, start),
                      tonic_features(fifths, octaves, positions_per_second, length, start)], dim=1)
