"""Counterfactual captions: a caption with one musical fact changed.

``counterfactual("A sad waltz in A minor at 90 BPM.", "mode")`` -> ``"A sad waltz in A major at
90 BPM."``. Three edits, each a plain text rewrite of the facts the project's captions state:

* ``"mode"``: every "major" <-> "minor" exchanged (case kept);
* ``"tempo"``: every "<number> bpm" (or "beats per minute") scaled by one factor drawn from [0.65, 0.8] or [1.25, 1.55]
  (so the new tempo is never within the 6 % the evaluation counts as a hit), kept in 30-300;
* ``"tonic"``: every "<letter>[#/b] major|minor" moved to one other tonic drawn uniformly.

A caption that does not state the fact has no counterfactual of that kind (``None``).

Two users: the ``musicgen-lm`` caption-contrast loss (:class:`tunecraft.lm.task.CaptionContrastConfig`),
which asks the LM to find the real caption more likely than its counterfactual, and
``benchmarks/musicgen_text_gain.py``, which measures how much the LM reads each fact
(cross-entropy with the counterfactual minus cross-entropy with the real caption).
"""

from __future__ import annotations

import random
import re
from typing import List, Optional, Sequence, Tuple

from ..errors import InvalidInput

__all__ = ["EDITS", "GUIDANCE_NEGATIVES", "counterfactual", "guidance_negatives", "pick_counterfactual"]

#: the kinds of edit, in the order :func:`pick_counterfactual` lists them
EDITS: Tuple[str, ...] = ("mode", "tempo", "tonic")

_MODE = re.compile(r"\b(major|minor)\b", re.IGNORECASE)
_BPM = re.compile(r"\b(\d{2,3}(?:\.\d+)?)(\s*)(bpm|beats per minute)\b", re.IGNORECASE)
_KEY = re.compile(r"\b([A-G])([#b]?)(\s+)((?i:major|minor))\b")  # capital letter: "a minor" is not A
#: what a caption must contain for each edit to apply
_STATED = {"mode": _MODE, "tempo": _BPM, "tonic": _KEY}
_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_TEMPO_FACTORS = ((0.65, 0.8), (1.25, 1.55))
#: the changed facts that fact guidance pushes away from: (edit, tempo factor or None). Only the
#: mode: it has one opposite, so "away from the other mode" is "towards this one". A tempo has two
#: (slower and faster), and pushing away from both cancels to first order (s_f (2 l - l_slow -
#: l_fast) is the curvature, not a direction): with both in, tempo accuracy fell to 0 of 36
#: validation prompts (README, MusicGen, session 8).
GUIDANCE_NEGATIVES: Tuple[Tuple[str, Optional[float]], ...] = (("mode", None),)


def _swap_case(word: str, new: str) -> str:
    if word.isupper():
        return new.upper()
    if word[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _pitch(letter: str, accidental: str) -> int:
    return (_PITCH[letter.upper()] + {"#": 1, "b": -1}.get(accidental, 0)) % 12


def _scale_tempo(text: str, factor: float) -> Optional[str]:
    """Every "<number> bpm" of ``text`` times ``factor`` (kept in 30-300), or None if none changed."""

    def scale(m: re.Match) -> str:
        bpm = min(300.0, max(30.0, float(m.group(1)) * factor))
        return f"{int(round(bpm))}{m.group(2)}{m.group(3)}"

    new = _BPM.sub(scale, text)
    return new if new != text else None


def counterfactual(text: str, edit: str, rng: Optional[random.Random] = None) -> Optional[str]:
    """``text`` with the fact ``edit`` (one of :data:`EDITS`) changed, or ``None`` when the caption
    does not state it. ``rng`` (a :class:`random.Random`) draws the new tempo or tonic."""
    if edit not in EDITS:
        raise InvalidInput(f"unknown caption edit {edit!r}; choose from {', '.join(EDITS)}")
    rng = rng if rng is not None else random.Random()
    if edit == "mode":
        if not _MODE.search(text):
            return None
        return _MODE.sub(lambda m: _swap_case(m.group(1), "minor" if m.group(1).lower() == "major" else "major"), text)
    if edit == "tempo":
        if not _BPM.search(text):
            return None
        lo, hi = _TEMPO_FACTORS[rng.randrange(2)]
        return _scale_tempo(text, rng.uniform(lo, hi))
    if not _KEY.search(text):
        return None
    shift = rng.randrange(1, 12)

    def move(m: re.Match) -> str:
        tonic = _TONICS[(_pitch(m.group(1), m.group(2)) + shift) % 12]
        return f"{tonic}{m.group(3)}{m.group(4)}"

    return _KEY.sub(move, text)


def pick_counterfactual(text: str, edits: Sequence[str], rng: Optional[random.Random] = None) -> Optional[Tuple[str, str]]:
    """``(edit, counterfactual)`` for one of ``edits`` drawn uniformly among those the caption
    states, or ``None`` when it states none of them (or the drawn tempo edit is clipped away:
    a caption at 300 bpm asked to go faster)."""
    rng = rng if rng is not None else random.Random()
    options = [e for e in edits if _STATED[e].search(text)]
    if not options:
        return None
    edit = options[rng.randrange(len(options))]
    new = counterfactual(text, edit, rng)
    return None if new is None else (edit, new)


def guidance_negatives(texts: Sequence[str],
                       changes: Sequence[Tuple[str, Optional[float]]] = GUIDANCE_NEGATIVES) -> List[List[str]]:
    """The negative prompts of fact guidance (:class:`tunecraft.lm.sampling.SamplingParams`) for a
    batch: one list per change of ``changes`` (default :data:`GUIDANCE_NEGATIVES`: the mode
    swapped; ``("tempo", factor)`` scales the bpm) that some prompt allows, each with one entry
    per prompt; a prompt that does not state the fact gets itself there (its term is then zero)."""
    texts = list(texts)
    out = []
    for edit, factor in changes:
        if edit == "tempo":
            changed = [_scale_tempo(t, factor) for t in texts]
        else:
            changed = [counterfactual(t, edit) for t in texts]
        if any(c is not None for c in changed):
            out.append([t if c is None else c for t, c in zip(texts, changed)])
    return out
