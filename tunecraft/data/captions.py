"""Text captions derived from a clip's metadata only.

The procedural composer and the music21 renderer write a metadata dict per clip
(key, bpm, meter, genre, moods, instruments, drums, feel, energy, sections...).
This module turns it into the kinds of text a text-to-music model is trained on:

* ``"long"``: one or two sentences in varied wording, e.g. *"An upbeat pop track in
  G major at 120 BPM featuring electric piano, bass and drums."*, *"Mellow jazz
  combo piece with a swing feel: tenor sax over upright bass..."*. About twenty
  templates and synonym lists, so the same metadata reads differently under
  different random draws.
* ``"short"``: a terse phrase (*"calm ambient with music box, 64 bpm"*).
* ``"tags"``: a comma-separated tag list (*"pop, upbeat, happy, 120 bpm, G major,
  piano, bass, drums"*), shuffled.
* ``"partial"``: a long or short description with some attributes left out (the
  key, the tempo, the instruments...), so that a model learns to generate from
  incomplete prompts.

Nothing here invents an attribute that is not in the metadata: wording varies,
facts do not. Everything is deterministic given the ``rng`` (a
:class:`numpy.random.Generator` or an int seed).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InvalidInput

__all__ = ["describe", "make_captions", "CAPTION_STYLES"]

CAPTION_STYLES = ("long", "short", "tags", "partial")

_TEMPO_WORDS = {
    "slow": ("slow", "unhurried", "slow-paced", "leisurely"),
    "moderate": ("mid-tempo", "moderately paced", "steady", "medium-tempo"),
    "upbeat": ("upbeat", "lively", "brisk", "bouncy"),
    "fast": ("fast", "up-tempo", "high-tempo", "rapid"),
}
_PIECE_WORDS = ("track", "piece", "tune", "instrumental", "composition", "cut", "number")
_FEATURING = ("featuring", "with", "built on", "driven by", "performed on", "arranged for")
_ENERGY_PHRASES = {
    "low": ("with low energy", "gentle and restrained", "soft and understated", "quiet and intimate"),
    "medium": ("with moderate energy", "balanced and steady", "at a comfortable intensity"),
    "high": ("with high energy", "full of energy", "loud and punchy", "intense and driving"),
}
_DYNAMICS_PHRASES = {
    "crescendo": ("it builds steadily from start to finish", "gradually growing louder",
                  "with a long crescendo"),
    "arch": ("it swells in the middle and settles at the end", "rising to a peak and falling back"),
    "terraced": ("with clear contrasts between quieter and louder sections",
                 "moving between soft and loud sections"),
    "steady": ("at an even dynamic level", "with steady dynamics"),
}
_FEEL_PHRASES = {
    "swing": ("with a swing feel", "swinging", "with swung eighth notes"),
    "shuffle": ("with a shuffle rhythm", "in a shuffle groove", "with a lazy shuffle"),
    "swung 16ths": ("with swung sixteenths", "with a loose, swung groove"),
}
_SECTION_NAMES = {"intro": "an intro", "verse": "a verse", "chorus": "a chorus", "bridge": "a bridge",
                  "outro": "an outro"}


def _rng(rng) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise InvalidInput(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _a(word: str) -> str:
    w = word.strip().lower()
    vowel = (w[:1] in "aeiou" and not w.startswith(("eu", "uni", "use", "one", "ukulele"))) \
        or w.startswith(("hour", "8", "11", "18"))
    return ("an " if vowel else "a ") + word


def _join(items: Sequence[str], conj: str = "and") -> str:
    items = [i for i in items if i]
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _tempo_word(bpm: float) -> str:
    if bpm < 76:
        return "slow"
    if bpm < 108:
        return "moderate"
    if bpm < 140:
        return "upbeat"
    return "fast"


class _Facts:
    """The describable attributes of a metadata dict, normalised."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict):
            raise InvalidInput(f"metadata must be a dict, got {type(meta).__name__}")
        self.genre = str(meta.get("genre") or meta.get("style") or "").strip()
        moods = meta.get("moods") or meta.get("mood") or []
        self.moods = [moods] if isinstance(moods, str) else [str(m) for m in moods]
        bpm = meta.get("bpm")
        self.bpm = int(round(float(bpm))) if isinstance(bpm, (int, float)) and bpm > 0 else None
        self.key = str(meta.get("key") or "").strip() or None
        self.meter = str(meta.get("meter") or meta.get("time_signature") or "").strip() or None
        instruments = meta.get("instruments") or []
        if isinstance(instruments, str):
            instruments = [i.strip() for i in instruments.split(",") if i.strip()]
        self.instruments = [str(i) for i in instruments]
        lead = meta.get("instrument")
        self.lead = str(lead) if lead else (self.instruments[0] if self.instruments else None)
        drums = meta.get("drums")
        self.drums = bool(drums) if drums is not None else ("drums" in self.instruments)
        self.melodic = [i for i in self.instruments if i != "drums"]
        self.others = [i for i in self.melodic if i != self.lead]
        self.feel = meta.get("feel") if meta.get("feel") in _FEEL_PHRASES else None
        self.energy = meta.get("energy_level") if meta.get("energy_level") in _ENERGY_PHRASES else None
        self.dynamics = meta.get("dynamics") if meta.get("dynamics") in _DYNAMICS_PHRASES else None
        self.sections = [s.get("name") for s in meta.get("sections") or [] if isinstance(s, dict)]
        self.composer = meta.get("composer") or None
        self.title = meta.get("title") if self.composer else None  # invented titles are not described
        self.ensemble = meta.get("ensemble") or None
        kws = meta.get("keywords") or []
        kws = [kws] if isinstance(kws, str) else [str(k) for k in kws]
        # keywords that read as noun phrases ("walking bass"), not bare adjectives or tempo words
        self.keywords = [k for k in kws if k != "instrumental" and not k.endswith("tempo") and " " in k
                         and not k.startswith("no ")]
        if not (self.genre or self.instruments or self.moods):
            raise InvalidInput("metadata has no genre, moods or instruments to describe")

    # ---- small phrase builders -------------------------------------------------------
    def tempo_phrase(self, rng) -> str:
        if self.bpm is None:
            return ""
        return _pick(rng, (f"at {self.bpm} BPM", f"at {self.bpm} bpm", f"at {self.bpm} beats per minute",
                           f"around {self.bpm} BPM", f"at a tempo of {self.bpm} BPM"))

    def tempo_adj(self, rng) -> str:
        return _pick(rng, _TEMPO_WORDS[_tempo_word(self.bpm)]) if self.bpm else ""

    def key_phrase(self, rng) -> str:
        if not self.key:
            return ""
        return _pick(rng, (f"in {self.key}", f"in the key of {self.key}", f"in {self.key}"))

    def meter_phrase(self, rng) -> str:
        if not self.meter:
            return ""
        if self.meter == "3/4":
            return _pick(rng, ("in 3/4", "in waltz time", "in three-four time", "in triple meter"))
        if self.meter == "4/4":
            return _pick(rng, ("in 4/4", "in common time", "in four-four time"))
        return f"in {self.meter}"

    def mood_words(self, rng, k: int | None = None) -> list[str]:
        genre_words = set(self.genre.lower().replace("-", " ").split())
        moods = [m for m in self.moods if m.lower() not in genre_words]  # no "heavy heavy metal"
        if not moods:
            return []
        k = len(moods) if k is None else min(k, len(moods))
        idx = sorted(rng.permutation(len(moods))[:k])
        return [moods[i] for i in idx]

    def instrument_list(self, rng, with_drums: bool = True) -> str:
        items = list(self.melodic)
        if with_drums and self.drums:
            items.append(_pick(rng, ("drums", "a drum kit", "drums", "percussion")))
        return _join(items)

    def backing(self, rng) -> str:
        items = list(self.others)
        if self.drums:
            items.append(_pick(rng, ("drums", "a drum kit", "drums")))
        return _join(items)

    def genre_word(self) -> str:
        return self.genre or "instrumental"


# ---- long templates ------------------------------------------------------------------
# Each template takes (facts, rng) and returns a sentence, or "" when it lacks the facts it needs.
def _t_track(f: _Facts, r) -> str:
    mood = f.mood_words(r, 1)
    adj = (mood[0] + " ") if mood else (f.tempo_adj(r) + " " if f.bpm else "")
    parts = [f"{_a(adj + f.genre_word())} {_pick(r, _PIECE_WORDS)}", f.key_phrase(r), f.tempo_phrase(r)]
    inst = f.instrument_list(r)
    s = " ".join(p for p in parts if p)
    if inst:
        s += f" {_pick(r, _FEATURING)} {inst}"
    return _cap(s) + "."


def _t_mood_pair(f: _Facts, r) -> str:
    moods = f.mood_words(r, 2)
    if not moods:
        return ""
    head = _cap(_join(moods)) + f" {f.genre_word()} {_pick(r, _PIECE_WORDS)}"
    bits = []
    if f.feel:
        bits.append(_pick(r, _FEEL_PHRASES[f.feel]))
    if f.lead and f.others:
        bits.append(f"{f.lead} over {f.backing(r)}")
    elif f.lead:
        bits.append(f"played on {f.lead}" + (" with drums" if f.drums else ""))
    tail = ", ".join(x for x in (f.meter_phrase(r), f"{f.bpm} bpm" if f.bpm else "", f.key or "") if x)
    s = head + (", " + ", ".join(bits) if bits else "")
    return s + (f"; {tail}." if tail else ".")


def _t_this(f: _Facts, r) -> str:
    if not f.lead:
        return ""
    adj = f.tempo_adj(r)
    s = f"This {adj + ' ' if adj else ''}{f.genre_word()} {_pick(r, ('instrumental', 'piece', 'track'))}"
    s += f" {f.key_phrase(r)}" if f.key else ""
    back = f.backing(r)
    s += f" sets {f.lead} against {back}." if back else f" is played on {f.lead} alone."
    moods = f.mood_words(r, 2)
    if moods:
        s += " " + _pick(r, ("It feels", "The mood is", "It sounds", "Overall it is")) + f" {_join(moods)}."
    return s


def _t_meter_first(f: _Facts, r) -> str:
    if not f.meter or not f.instruments:
        return ""
    plural = len(f.melodic) + int(f.drums) > 1
    s = f"{_cap(f.genre_word())} {f.meter_phrase(r)}: {f.instrument_list(r)} {'play' if plural else 'plays'}"
    s += f" {_a(f.tempo_adj(r) + ' groove')}" if f.bpm else " together"
    s += f" at {f.bpm} beats per minute" if f.bpm else ""
    s += f" {f.key_phrase(r)}" if f.key else ""
    if f.energy:
        s += ", " + _pick(r, _ENERGY_PHRASES[f.energy])
    return s + "."


def _t_fields(f: _Facts, r) -> str:
    bits = [f"Instrumental {f.genre_word()}"]
    moods = f.mood_words(r, 2)
    if moods:
        bits[0] += f" with {_a(_join(moods))} mood"
    fields = []
    if f.key:
        fields.append(f"Key: {f.key}")
    if f.bpm:
        fields.append(f"Tempo: {f.bpm} BPM")
    if f.meter:
        fields.append(f"Meter: {f.meter}")
    if f.instruments:
        fields.append(f"Instruments: {f.instrument_list(r)}")
    return ". ".join(bits + fields) + "."


def _t_energy(f: _Facts, r) -> str:
    if not f.energy or not f.lead:
        return ""
    s = f"{_cap(_a(f.energy + '-energy ' + f.genre_word()))} {_pick(r, ('tune', 'track', 'piece'))} led by {f.lead}"
    back = f.backing(r)
    if back:
        s += f", backed by {back}"
    tp = f.tempo_adj(r)
    if f.bpm:
        s += f", {tp} ({f.bpm} bpm)"
    if f.key:
        s += f" {f.key_phrase(r)}"
    return s + "."


def _t_structure(f: _Facts, r) -> str:
    secs = [s for s in f.sections if s in _SECTION_NAMES]
    if len(secs) < 2:
        return ""
    uniq = []
    for s in secs:
        if not uniq or uniq[-1] != s:
            uniq.append(s)
    head = f"{_cap(_a(f.genre_word()))} {_pick(r, _PIECE_WORDS)}"
    if f.key or f.bpm:
        head += " " + " ".join(x for x in (f.key_phrase(r), f.tempo_phrase(r)) if x)
    flow = _join([_SECTION_NAMES[s] for s in uniq], "then")
    s = f"{head}. It moves through {flow}"
    if f.dynamics:
        s += ", " + _pick(r, _DYNAMICS_PHRASES[f.dynamics])
    if f.instruments:
        s += f", with {f.instrument_list(r)}"
    return s + "."


def _t_drumless(f: _Facts, r) -> str:
    if f.drums or not f.melodic:
        return ""
    moods = f.mood_words(r, 1)
    s = f"{_cap(_a((moods[0] + ' ') if moods else '') + f.genre_word())} {_pick(r, _PIECE_WORDS)}"
    s += f" for {f.instrument_list(r, False)}, " + _pick(r, ("without drums", "with no percussion", "no drums"))
    extra = " ".join(x for x in (f.key_phrase(r), f.tempo_phrase(r)) if x)
    return s + (f", {extra}." if extra else ".")


def _t_composer(f: _Facts, r) -> str:
    if not f.composer:
        return ""
    who = f.composer
    what = f.genre_word()
    if who == "traditional":
        s = f"A traditional {what}" if not f.title else f"{f.title}, a traditional {what}"
    else:
        s = f"{_cap(_a(what))} by {who}" if not f.title else f"{f.title} by {who}, {_a(what)}"
    if f.ensemble and f.ensemble not in what:
        s += f" for {f.ensemble}"
    elif f.melodic:
        s += f" played on {f.instrument_list(r, False)}"
    extra = " ".join(x for x in (f.key_phrase(r), f.meter_phrase(r), f.tempo_phrase(r)) if x)
    return s + (f", {extra}." if extra else ".")


def _t_feel(f: _Facts, r) -> str:
    if not f.feel or not f.lead:
        return ""
    moods = f.mood_words(r, 1)
    s = f"{_cap((moods[0] + ' ') if moods else '')}{f.genre_word()} {_pick(r, _FEEL_PHRASES[f.feel])}"
    s = _cap(s)
    s += f": {f.lead} takes the melody"
    back = f.backing(r)
    if back:
        s += f" while {back} keep time" if len(f.others) + f.drums > 1 else f" while {back} keeps time"
    return s + (f", {f.bpm} BPM" if f.bpm else "") + (f", {f.key}" if f.key else "") + "."


def _t_keyword(f: _Facts, r) -> str:
    if not f.keywords:
        return ""
    kw = [f.keywords[i] for i in sorted(r.permutation(len(f.keywords))[: min(2, len(f.keywords))])]
    s = f"{_cap(f.genre_word())} {_pick(r, _PIECE_WORDS)} with {_join(kw)}"
    if f.lead:
        s += f"; {f.lead} " + _pick(r, ("carries the melody", "plays the lead", "leads"))
    extra = ", ".join(x for x in (f"{f.bpm} bpm" if f.bpm else "", f.key or "") if x)
    return s + (f" ({extra})." if extra else ".")


_LONG: tuple[Callable[[_Facts, Any], str], ...] = (
    _t_track, _t_mood_pair, _t_this, _t_meter_first, _t_fields, _t_energy, _t_structure, _t_drumless,
    _t_composer, _t_feel, _t_keyword,
)


def _long(f: _Facts, rng: np.random.Generator) -> str:
    order = rng.permutation(len(_LONG))
    for i in order:
        s = _LONG[int(i)](f, rng)
        if s:
            return " ".join(s.split())
    return _t_track(f, rng)


def _short(f: _Facts, rng: np.random.Generator) -> str:
    moods = f.mood_words(rng, 1)
    form = int(rng.integers(4))
    head = f"{(moods[0] + ' ') if moods else ''}{f.genre_word()}"
    if form == 0 and f.lead:
        s = f"{head} with {f.lead}" + (f", {f.bpm} bpm" if f.bpm else "")
    elif form == 1:
        s = f"{head}" + (f" in {f.key}" if f.key else "") + (f", {f.bpm} bpm" if f.bpm else "")
    elif form == 2 and f.instruments:
        s = f"{f.tempo_adj(rng) + ' ' if f.bpm else ''}{f.genre_word()}, {f.instrument_list(rng)}"
    else:
        s = f"{head}" + (f" {f.meter_phrase(rng)}" if f.meter else "") + (f" on {f.lead}" if f.lead else "")
    return " ".join(s.split())


def _tags(f: _Facts, rng: np.random.Generator) -> str:
    tags = []
    if f.genre:
        tags.append(f.genre)
    tags += f.mood_words(rng)
    if f.bpm:
        tags += [f"{f.bpm} bpm", _tempo_word(f.bpm)]
    if f.key:
        tags.append(f.key)
    if f.meter:
        tags.append(f.meter)
    tags += f.melodic
    if f.drums:
        tags.append("drums")
    else:
        tags.append("no drums")
    if f.feel:
        tags.append(f.feel)
    if f.composer:
        tags.append(str(f.composer))
    tags = list(dict.fromkeys(t for t in tags if t))
    head, rest = tags[:1], tags[1:]
    rest = [rest[i] for i in rng.permutation(len(rest))]
    return ", ".join(head + rest)


def _partial(meta: dict, rng: np.random.Generator) -> str:
    """A description with some attributes removed from the metadata first."""
    droppable = [k for k in ("key", "bpm", "meter", "moods", "instruments", "feel", "energy_level", "dynamics",
                             "sections", "keywords") if meta.get(k)]
    n_drop = int(rng.integers(1, max(2, len(droppable)))) if droppable else 0
    drop = {droppable[i] for i in rng.permutation(len(droppable))[:n_drop]}
    reduced = {k: v for k, v in meta.items() if k not in drop}
    if "instruments" in drop:
        reduced.pop("instrument", None)
        reduced["drums"] = None
    if not (reduced.get("genre") or reduced.get("style") or reduced.get("instruments") or reduced.get("moods")):
        reduced["genre"] = meta.get("genre") or meta.get("style")
    f = _Facts(reduced)
    text = _long(f, rng) if rng.random() < 0.6 else _short(f, rng)
    if len(text.split()) < 3:  # too terse to be useful: use a full sentence of what is left
        text = _long(f, rng)
    return text


def describe(meta: dict, style: str = "long", rng=None) -> str:
    """One caption of ``style`` (``"long"``, ``"short"``, ``"tags"`` or ``"partial"``)."""
    if style not in CAPTION_STYLES:
        raise InvalidInput(f"unknown caption style {style!r}; choose from {', '.join(CAPTION_STYLES)}")
    r = _rng(rng)
    if style == "partial":
        return _partial(meta, r)
    f = _Facts(meta)
    return {"long": _long, "short": _short, "tags": _tags}[style](f, r)


def make_captions(meta: dict, rng=None, n: int = 6) -> list[str]:
    """``n`` distinct captions of mixed styles for one clip.

    The first is always a long description (what the sidecar stores as
    ``description``); the rest cycle through tags, short, long and partial forms.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInput(f"n must be a positive integer, got {n!r}")
    r = _rng(rng)
    plan = ["long", "tags", "short", "partial", "long", "partial"]
    out: list[str] = []
    attempts = 0
    while len(out) < n and attempts < 8 * n:
        style = plan[len(out) % len(plan)] if len(out) < len(plan) else _pick(r, CAPTION_STYLES)
        c = describe(meta, style, r)
        attempts += 1
        if c not in out:
            out.append(c)
    return out
