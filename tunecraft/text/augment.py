"""Caption augmentation as in MusicGen / audiocraft.

MusicGen trains on descriptions that are randomly enriched with the track's metadata
(``augment_music_info_description``: merged with p = 0.25, each field kept or dropped,
the description itself sometimes dropped) and then word-dropped (p = 0.3). This module is
that procedure, pure Python and deterministic for a given random source::

    aug = CaptionAugmenter(seed=0)
    aug("A calm piano ballad.", {"key": "C major", "bpm": 80, "moods": ["calm", "sad"]})
    # e.g. "A calm ballad. bpm: 80. moods: calm, sad"

Differences from audiocraft, on purpose:

* A field is kept with probability ``1 - drop_other_p`` (audiocraft keeps it with
  probability ``drop_other_p``; with its default 0.5 the two agree).
* The description is only dropped when merged metadata can replace it, so augmentation
  never turns a described clip into the empty (unconditional) prompt.
* With ``merge_when_no_description=True`` (default) a clip with no description always
  uses its metadata, instead of becoming an empty prompt 75 % of the time.
* Word dropout never empties a non-empty caption: if every word is drawn for dropping,
  one word chosen uniformly at random survives. Empty captions stay empty (they are the
  classifier-free-guidance null condition).

Draw order (what a seed pins down): one draw for "merge?"; if merging, one draw per
configured field (in ``fields`` order, only for fields with a usable value), one shuffle
of the kept phrases, one draw for "drop the description?"; then one draw per word.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import Config
from ..errors import ConfigError

#: audiocraft's metadata fields for description merging (title and artist are left out so
#: that models do not learn to imitate named artists; add them through ``fields`` if wanted)
DEFAULT_FIELDS: tuple[str, ...] = ("key", "bpm", "genre", "moods", "instrument", "keywords")
#: every sidecar field tunecraft's data layer knows
SIDECAR_FIELDS: tuple[str, ...] = (
    "title", "artist", "key", "bpm", "genre", "moods", "keywords", "instrument", "description",
)


class _NumpyRandom:
    """Adapts ``numpy.random.Generator`` to the subset of ``random.Random`` used here."""

    def __init__(self, gen: np.random.Generator) -> None:
        self._gen = gen

    def random(self) -> float:
        return float(self._gen.random())

    def randrange(self, n: int) -> int:
        return int(self._gen.integers(n))

    def shuffle(self, items: list) -> None:
        order = self._gen.permutation(len(items))
        items[:] = [items[i] for i in order]


RandomSource = random.Random | np.random.Generator | int | None


def as_random(rng: RandomSource, default: random.Random | None = None):
    """``random.Random`` / numpy ``Generator`` / int seed / None -> an object with random, randrange, shuffle."""
    if rng is None:
        return default if default is not None else random.Random()
    if isinstance(rng, (random.Random, _NumpyRandom)):
        return rng
    if isinstance(rng, np.random.Generator):
        return _NumpyRandom(rng)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return random.Random(int(rng))
    raise ConfigError(f"random source must be a random.Random, numpy Generator, int seed or None, got {type(rng).__name__}")


def _check_p(name: str, p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def format_metadata_value(value: Any) -> str | None:
    """Text for one metadata value, or None when it carries nothing.

    Strings are stripped, integral numbers print without decimals (``120.0`` -> ``"120"``),
    lists/tuples are joined with ``", "``; booleans, mappings, NaN and empties give None.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = " ".join(value.split())
        return text or None
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return None
        return str(int(v)) if v.is_integer() else f"{v:g}"
    if isinstance(value, (list, tuple)):
        parts = [format_metadata_value(v) for v in value if not isinstance(v, (list, tuple, dict))]
        parts = [p for p in parts if p]
        return ", ".join(parts) or None
    return None


def metadata_phrases(metadata: Mapping[str, Any] | None, fields: Sequence[str] = DEFAULT_FIELDS) -> list[tuple[str, str]]:
    """``[(field, "field: value"), ...]`` for the fields in ``fields`` that have a usable value."""
    if not metadata:
        return []
    out = []
    for name in fields:
        text = format_metadata_value(metadata.get(name))
        if text:
            out.append((name, f"{name}: {text}"))
    return out


def word_dropout(text: str, p: float, rng: RandomSource = None) -> str:
    """Drop each whitespace-separated word with probability ``p``.

    Never empties a non-empty text (one random word survives if all are drawn); words are
    re-joined with single spaces. ``p = 0`` returns ``text`` unchanged without any draw.
    """
    p = _check_p("word_dropout_p", p)
    if p == 0.0 or not text:
        return text
    r = as_random(rng)
    words = text.split()
    if not words:
        return text
    kept = [w for w in words if r.random() >= p]
    if not kept:
        kept = [words[r.randrange(len(words))]]
    return " ".join(kept)


def join_description(description: str, metadata_text: str) -> str:
    """``"Calm piano." + "bpm: 80"`` -> ``"Calm piano. bpm: 80"`` (audiocraft's format)."""
    description = description.strip()
    if not metadata_text:
        return description
    if not description:
        return metadata_text
    return f"{description.rstrip('.').rstrip()}. {metadata_text}"


@dataclass
class CaptionAugmentConfig(Config):
    """Probabilities of :class:`CaptionAugmenter` (MusicGen's defaults)."""

    merge_text_p: float = 0.25
    drop_desc_p: float = 0.5
    drop_other_p: float = 0.5
    word_dropout_p: float = 0.3
    fields: list[str] = field(default_factory=lambda: list(DEFAULT_FIELDS))
    merge_when_no_description: bool = True

    def __post_init__(self) -> None:
        for name in ("merge_text_p", "drop_desc_p", "drop_other_p", "word_dropout_p"):
            setattr(self, name, _check_p(name, getattr(self, name)))
        unknown = [f for f in self.fields if f not in SIDECAR_FIELDS or f == "description"]
        if unknown:
            raise ConfigError(
                f"unknown caption metadata field(s) {', '.join(map(repr, unknown))}; "
                f"use {', '.join(f for f in SIDECAR_FIELDS if f != 'description')}"
            )


class CaptionAugmenter:
    """Metadata merge, description dropout and word dropout (MusicGen section 4.1).

    Args:
        merge_text_p: probability of appending ``"field: value"`` phrases to the description.
        drop_desc_p: when merging, probability of dropping the description itself.
        drop_other_p: when merging, probability of dropping each metadata field.
        word_dropout_p: probability of dropping each word of the final caption.
        fields: the metadata fields that may be merged.
        merge_when_no_description: always merge when there is no description.
        seed: seed of the augmenter's own ``random.Random``, used when a call passes no ``rng``.
    """

    def __init__(
        self,
        merge_text_p: float = 0.25,
        drop_desc_p: float = 0.5,
        drop_other_p: float = 0.5,
        word_dropout_p: float = 0.3,
        *,
        fields: Sequence[str] = DEFAULT_FIELDS,
        merge_when_no_description: bool = True,
        seed: int | None = None,
    ) -> None:
        self.config = CaptionAugmentConfig(
            merge_text_p=merge_text_p, drop_desc_p=drop_desc_p, drop_other_p=drop_other_p,
            word_dropout_p=word_dropout_p, fields=list(fields), merge_when_no_description=merge_when_no_description,
        )
        self._rng = random.Random(seed)

    @classmethod
    def from_config(cls, config: CaptionAugmentConfig | dict, seed: int | None = None) -> "CaptionAugmenter":
        if isinstance(config, dict):
            config = CaptionAugmentConfig.from_dict(config)
        return cls(
            config.merge_text_p, config.drop_desc_p, config.drop_other_p, config.word_dropout_p,
            fields=config.fields, merge_when_no_description=config.merge_when_no_description, seed=seed,
        )

    def merge(self, description: str | None, metadata: Mapping[str, Any] | None = None, rng: RandomSource = None) -> str:
        """The metadata-merge / description-dropout step alone (no word dropout)."""
        cfg = self.config
        r = as_random(rng, self._rng)
        if description is None and metadata:
            description = metadata.get("description") if isinstance(metadata.get("description"), str) else None
        description = " ".join((description or "").split())
        phrases = metadata_phrases(metadata, cfg.fields)
        merge = r.random() < cfg.merge_text_p
        if not description and cfg.merge_when_no_description and phrases:
            merge = True
        if not merge:
            return description
        kept = [text for _, text in phrases if r.random() >= cfg.drop_other_p]
        r.shuffle(kept)
        metadata_text = ". ".join(kept)
        if metadata_text and r.random() < cfg.drop_desc_p:
            description = ""
        return join_description(description, metadata_text)

    def __call__(self, description: str | None, metadata: Mapping[str, Any] | None = None, rng: RandomSource = None) -> str:
        """Augmented caption for one clip.

        Args:
            description: the clip's description; ``None`` falls back to ``metadata["description"]``.
            metadata: sidecar fields (``key``, ``bpm``, ``genre``, ``moods``, ``instrument``,
                ``keywords``, ...); lists are joined with commas.
            rng: random source for this call (``random.Random``, numpy ``Generator`` or int
                seed); default: the augmenter's own seeded generator.

        Returns:
            The caption; ``""`` only when there was neither description nor usable metadata.
        """
        r = as_random(rng, self._rng)
        text = self.merge(description, metadata, r)
        return word_dropout(text, self.config.word_dropout_p, r)
