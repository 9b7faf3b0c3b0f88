"""The key a prompt states as time-aligned signals, the tonal companion of :mod:`.beat`.

Signals that are zero for a prompt that states no key (``"<tonic> major|minor"``):

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
* :func:`chord_features` - the same reference for the root, third and fifth of the chord sounding
  at each position, from a timed chord plan (a corpus sidecar's ``chords`` in training,
  :func:`tunecraft.data.composer.harmony_plan` in the stated key at generation): the harmony
  over time, whose thirds carry the mode as the music does (i, iv and v in minor).
* :func:`chord_mel_features` - the chord plan for a spectrogram generator, whose 100 frames/s hold
  no pitch reference: at every frame the log-mel of a steady rendering of the sounding chord
  (root, third and fifth with their harmonics over four octaves), standardised over the mel bins,
  in the generator's own mel coordinates.

Not in the Noise2Music paper (text only); used by its generators when ``key_profile`` /
``tonic_octaves`` / ``triad_octaves`` / ``chord_octaves`` / ``chord_mel`` are set, and dropped with
the text like the beat clock.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Optional, Sequence

import torch

from ..errors import InvalidInput

__all__ = ["KK_MAJOR", "KK_MINOR", "THIRDS", "key_profile", "tonic_frequency", "tonic_features", "triad_features", "chord_triad",
           "parse_chord_plan", "chord_features", "chord_mel_template", "chord_mel_features"]

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


_CHORD_NAME = re.compile(r"^([A-G])([#b]?)(.*)$")
_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
#: semitones from the root to the third and the fifth, by chord-name suffix (the names
#: :meth:`tunecraft.data.composer.Chord.name` writes; extensions leave the triad as it is)
CHORD_TRIADS = {
    "": (4, 7), "m": (3, 7), "7": (4, 7), "m7": (3, 7), "maj7": (4, 7), "m(maj7)": (3, 7), "9": (4, 7),
    "m9": (3, 7), "6": (4, 7), "m6": (3, 7), "add9": (4, 7), "m(add9)": (3, 7), "dim": (3, 6), "dim7": (3, 6),
    "m7b5": (3, 6), "aug": (4, 8), "sus4": (5, 7), "sus2": (2, 7),
}


def chord_triad(name: str) -> tuple[int, int, int]:
    """Pitch classes ``(root, third, fifth)`` of a chord name (``"Am7"`` -> ``(9, 0, 4)``,
    ``"Bm7b5"`` -> ``(11, 2, 5)``, ``"F#"`` -> ``(6, 10, 1)``; a sus chord's "third" is its 2nd or
    4th); :class:`InvalidInput` for a name it does not know."""
    m = _CHORD_NAME.match(name.strip()) if isinstance(name, str) else None
    if m is None or m.group(3) not in CHORD_TRIADS:
        raise InvalidInput(f"unknown chord name {name!r} (expected e.g. 'C', 'Am7', 'F#dim', 'Bbmaj7')")
    root = (_PITCH[m.group(1)] + {"#": 1, "b": -1, "": 0}[m.group(2)]) % 12
    third, fifth = CHORD_TRIADS[m.group(3)]
    return root, (root + third) % 12, (root + fifth) % 12


def parse_chord_plan(plan: Sequence[Sequence]) -> list[tuple[float, tuple[int, int, int]]]:
    """A timed chord plan ``[[start_seconds, name], ...]`` (any order) as ``(start, chord_triad(name))``
    pairs by start time; :class:`InvalidInput` unless every entry is a finite time and a known name."""
    try:
        pairs = [(float(start), name) for start, name in plan]
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"a chord plan is [[start_seconds, name], ...], got {plan!r:.80}") from e
    if not all(math.isfinite(start) for start, _ in pairs):
        raise InvalidInput(f"a chord plan's start times must be finite, got {plan!r:.80}")
    return sorted((start, chord_triad(name)) for start, name in pairs)


def _sounding(plan: Sequence[Sequence], t: torch.Tensor) -> tuple[list[tuple[int, int, int]], torch.Tensor]:
    """``(triads, which)``: the :func:`chord_triad` of each chord of a timed ``plan`` (``[[start_seconds,
    name], ...]``, any order) by start time, and the index of the one sounding at each time of ``t``
    (seconds; the first chord also covers the time before it)."""
    timed = parse_chord_plan(plan)
    times = torch.tensor([start for start, _ in timed], dtype=torch.float64)
    return [tr for _, tr in timed], (torch.searchsorted(times, t, right=True) - 1).clamp(min=0)


def chord_features(plans: Sequence[Optional[Sequence[Sequence]]], octaves: Sequence[int], positions_per_second: float,
                   length: int, start: Sequence[float] | None = None) -> torch.Tensor:
    """``[B, 6 len(octaves), length]`` float32: :func:`tonic_features` of the root, then the third,
    then the fifth of the chord sounding at each position (``[sin..., cos...]`` per tone, each tone
    in octave ``o`` at or above the root in octave ``o``) for outputs that start ``start[b]`` seconds
    into their piece (default 0). ``plans[b]`` is a timed chord plan ``[[start_seconds, name], ...]``
    (:func:`chord_triad` names, any order; the first chord also covers the time before it), or
    ``None`` for a row of zeros. Phases are computed in float64 from the piece's start, so a tone
    held across chords keeps its phase."""
    starts = [0.0] * len(plans) if start is None else [float(s) for s in start]
    if len(starts) != len(plans):
        raise InvalidInput(f"chord_features: {len(plans)} plans but {len(starts)} start times")
    rate = float(positions_per_second)
    n = torch.arange(int(length), dtype=torch.float64)
    octs = torch.tensor([int(o) for o in octaves], dtype=torch.float64).view(1, -1, 1)  # [1, O, 1]
    out = torch.zeros(len(plans), 6 * len(octaves), int(length), dtype=torch.float64)
    for b, plan in enumerate(plans):
        if not plan:
            continue
        t = starts[b] + n / rate
        triads, which = _sounding(plan, t)
        pcs = torch.tensor(triads, dtype=torch.float64)[which].T.contiguous()  # [3, length]: root, third, fifth
        # each tone at or above its chord's root: a third / fifth below the root moves up an octave
        pcs[1:] = torch.where(pcs[1:] < pcs[:1], pcs[1:] + 12, pcs[1:])
        freqs = 440.0 * torch.pow(2.0, (pcs.unsqueeze(1) - 9.0) / 12.0 + (octs - 4.0))  # [3, O, length]
        angle = 2.0 * math.pi * torch.remainder(freqs * t, 1.0)
        out[b] = torch.cat([torch.cat([torch.sin(a), torch.cos(a)], dim=0) for a in angle], dim=0)
    return out.float()


#: octaves of the tones :func:`chord_mel_template` renders: the root from the bass register up,
#: the third and the fifth from the accompaniment's (C2 = 65 Hz ... the fifth above B5)
_TEMPLATE_ROOT_OCTAVES = (2, 3, 4, 5)
_TEMPLATE_UPPER_OCTAVES = (3, 4, 5)
_TEMPLATE_HARMONICS = 8


@functools.lru_cache(maxsize=64)
def _rendered_log_mel(triad: tuple[int, int, int], settings: tuple) -> torch.Tensor:
    """``[n_mels]`` float64 time-averaged log-mel of 0.5 s of the steady chord ``triad`` (see
    :func:`chord_mel_template`); ``settings``: :func:`tunecraft.audio.log_mel`'s keyword items."""
    from ..audio import log_mel

    mel = dict(settings)
    sample_rate, n_mels = int(mel["sample_rate"]), int(mel["n_mels"])
    root, third, fifth = (int(p) % 12 for p in triad)
    pitches = [(root, o) for o in _TEMPLATE_ROOT_OCTAVES]
    for pc in (third, fifth):
        pc = pc + 12 if pc < root else pc
        pitches += [(pc, o) for o in _TEMPLATE_UPPER_OCTAVES]
    n = sample_rate // 2
    t = torch.arange(n, dtype=torch.float64) / float(sample_rate)
    wav = torch.zeros(n, dtype=torch.float64)
    for pc, octave in pitches:
        f0 = tonic_frequency(pc, octave)
        for h in range(1, _TEMPLATE_HARMONICS + 1):
            if h * f0 < sample_rate / 2:
                wav += torch.sin(2.0 * math.pi * h * f0 * t) / h
    wav = 0.1 * wav / wav.pow(2).mean().sqrt()
    frames = log_mel(wav.float()[None, None], **mel).reshape(n_mels, -1).double()
    edge = max(1, (int(mel["win_length"]) // int(mel["hop_length"])) // 2 + 1)  # frames that see the padding
    return frames[:, edge:-edge].mean(dim=1) if frames.shape[1] > 2 * edge else frames.mean(dim=1)


@functools.lru_cache(maxsize=512)
def chord_mel_template(triad: tuple[int, int, int], sample_rate: int = 16000, n_fft: int = 1024,
                       hop_length: int = 160, win_length: int = 640, n_mels: int = 80, f_min: float = 0.0,
                       f_max: float | None = None, min_db: float = -100.0, max_db: float = 20.0) -> torch.Tensor:
    """``[n_mels]`` float32: what sets a chord's log-mel apart. The time-averaged log-mel
    (:func:`tunecraft.audio.log_mel` with these settings) of 0.5 s of the steady chord - the
    ``(root, third, fifth)`` pitch classes, the root in octaves 2-5 and the others in 3-5 (each at
    or above the root of its octave), each tone with 8 harmonics at amplitude 1/h, at RMS 0.1 -
    minus the mean of the same for the 24 major and minor triads (the spectral envelope every
    rendering shares), standardised to mean 0 and standard deviation 1 over the bins. Cached."""
    settings = tuple(sorted(dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                                 n_mels=n_mels, f_min=f_min, f_max=f_max, min_db=min_db, max_db=max_db).items()))
    common = torch.stack([_rendered_log_mel((r, (r + third) % 12, (r + 7) % 12), settings)
                          for r in range(12) for third in (3, 4)]).mean(dim=0)
    prof = _rendered_log_mel(tuple(int(p) % 12 for p in triad), settings) - common
    std = prof.std(unbiased=False)
    return ((prof - prof.mean()) / (std if std > 0 else 1.0)).float()


def chord_mel_features(plans: Sequence[Optional[Sequence[Sequence]]], frames_per_second: float, length: int,
                       start: Sequence[float] | None = None, **mel) -> torch.Tensor:
    """``[B, n_mels, length]`` float32: at each frame the :func:`chord_mel_template` (``mel``: its
    log-mel settings) of the chord ``plans[b]`` has sounding then (plans as :func:`chord_features`,
    for outputs that start ``start[b]`` seconds into their piece); zero for a ``None`` plan."""
    n_mels = int(mel.get("n_mels", 80))
    starts = [0.0] * len(plans) if start is None else [float(s) for s in start]
    if len(starts) != len(plans):
        raise InvalidInput(f"chord_mel_features: {len(plans)} plans but {len(starts)} start times")
    out = torch.zeros(len(plans), n_mels, int(length), dtype=torch.float32)
    t_rel = torch.arange(int(length), dtype=torch.float64) / float(frames_per_second)
    for b, plan in enumerate(plans):
        if not plan:
            continue
        triads, which = _sounding(plan, starts[b] + t_rel)
        out[b] = torch.stack([chord_mel_template(tr, **mel) for tr in triads])[which].T  # [n_mels, length]
    return out
