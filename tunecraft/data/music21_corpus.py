"""Render scores from the music21 corpus into a captioned audio dataset.

:func:`render_music21` picks pieces from ``music21.corpus`` (Bach chorales, Mozart,
Haydn and Beethoven string quartets, Handel, Chopin, Joplin, Corelli, Monteverdi and
Palestrina, the Essen folksong collection, Ryan's Mammoth and O'Neill's fiddle
tunes...), converts each score to MIDI with music21, assigns General MIDI programs
per part, renders it with the same SoundFont renderer as the procedural corpus
(:func:`tunecraft.data.render.render`) and writes the same layout as
:func:`tunecraft.data.synth.synthesize_corpus`::

    out_dir/audio/<id>.wav + <id>.json,  data.jsonl,  train/valid/test.jsonl,  corpus.json

Sidecars carry captions built from the score metadata only: composer, title, the
key found by music21's Krumhansl-Schmuckler analysis (``score.analyze('key')``)
over the rendered excerpt, time signature, the tempo used (the score's first
metronome mark when it has a plausible one, otherwise a seeded tempo from a
per-genre range; either way a single tempo, recorded as ``bpm`` in beats of the
time signature's beat unit and ``qpm`` in quarter notes), instrumentation, number
of parts and a genre label per collection ("baroque chorale", "string quartet",
"ragtime", "folk song"...).

Vocal scores (chorales, madrigals, motets) have no instruments; each is given a
seeded ensemble (string quartet, organ, choir, woodwinds, brass or piano) mapped
onto its parts from the top voice down. Monophonic folk tunes get one melody
instrument (fiddle, flute, accordion...).

Speed: parsing is the slow part (0.1 s for a chorale or a single ABC tune, 1-3 s
for a quartet movement, more for the largest scores); with ``duration`` set, only
the measures that fit are converted, analysed and rendered. Multi-tune ABC
collections are read one tune at a time (``corpus.parse(path, number=k)``).
Pieces that fail to parse or convert are skipped and counted.

Splits are by seed, as in the procedural corpus: each piece's seed is a hash of
its corpus path (and tune number) and its split is :func:`split_of` that seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..errors import DependencyError, InvalidInput

__all__ = ["render_music21", "COLLECTIONS", "list_pieces"]


@dataclass(frozen=True)
class _Collection:
    composer: str  # name for captions ("Johann Sebastian Bach", "traditional")
    genre: str
    beat_bpm: tuple[int, int]  # default tempo range when the score has no metronome mark
    per_file: int = 1  # tunes taken from one multi-tune ABC file
    skip: str = ""  # regex of corpus paths to leave out


COLLECTIONS: dict[str, _Collection] = {
    "bach": _Collection("Johann Sebastian Bach", "baroque chorale", (66, 88)),
    "handel": _Collection("George Frideric Handel", "baroque aria", (56, 72)),
    "corelli": _Collection("Arcangelo Corelli", "baroque", (60, 84)),
    "mozart": _Collection("Wolfgang Amadeus Mozart", "classical string quartet", (84, 132)),
    "haydn": _Collection("Joseph Haydn", "classical string quartet", (84, 132)),
    "beethoven": _Collection("Ludwig van Beethoven", "classical string quartet", (76, 126)),
    "schubert": _Collection("Franz Schubert", "romantic lied", (66, 84)),
    "chopin": _Collection("Frédéric Chopin", "romantic piano mazurka", (108, 144)),
    "joplin": _Collection("Scott Joplin", "ragtime", (80, 100)),
    "monteverdi": _Collection("Claudio Monteverdi", "renaissance madrigal", (60, 80), skip=r"\.rntxt$"),
    "palestrina": _Collection("Giovanni Pierluigi da Palestrina", "renaissance polyphony", (56, 76)),
    "essenFolksong": _Collection("traditional", "european folk song", (72, 108), per_file=6),
    "ryansMammoth": _Collection("traditional", "fiddle tune", (90, 120)),
    "oneills1850": _Collection("traditional", "irish folk tune", (88, 116), per_file=4),
}
DEFAULT_COMPOSERS = ("bach", "mozart", "haydn", "beethoven", "handel", "corelli", "chopin", "joplin", "schubert",
                     "monteverdi", "palestrina", "essenFolksong", "ryansMammoth", "oneills1850")

# GM program by a word in the part name (checked in this order)
_NAMED_PROGRAMS = (
    ("contrabass", 43), ("double bass", 43), ("violoncello", 42), ("cello", 42), ("viola", 41), ("violin", 40),
    ("harpsichord", 6), ("organ", 19), ("piano", 0), ("flute", 73), ("oboe", 68), ("clarinet", 71),
    ("bassoon", 70), ("horn", 60), ("trumpet", 56), ("trombone", 57), ("tuba", 58), ("guitar", 24), ("harp", 46),
)
_VOICE_WORDS = ("soprano", "alto", "tenor", "bass", "canto", "quinto", "cantus", "altus", "bassus", "voice",
                "sesto", "vox", "superius", "discantus", "contratenor", "tenore", "basso")
# ensembles for vocal scores, parts from the top voice down (the last program repeats)
_ENSEMBLES = {
    "string quartet": (40, 40, 41, 42, 43),
    "organ": (19,),
    "choir": (52,),
    "woodwind quartet": (73, 68, 71, 70),
    "brass quartet": (56, 56, 60, 57, 58),
    "piano": (0,),
}
_MELODY = {"fiddle": 40, "flute": 73, "accordion": 21, "clarinet": 71, "harmonica": 22, "nylon guitar": 24,
           "recorder": 74, "oboe": 68}
_FOLK = ("european folk song", "fiddle tune", "irish folk tune")


def _music21():
    try:
        import music21
    except ImportError as e:
        raise DependencyError("music21 is required for the music21 corpus: pip install music21") from e
    return music21


def _piece_seed(source: str) -> int:
    h = hashlib.sha256(f"tunecraft-music21/{source}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 11


def _abc_numbers(path: Path) -> list[int]:
    try:
        text = path.read_text(encoding="latin-1")
    except OSError:
        return []
    return [int(x) for x in re.findall(r"^X:\s*(\d+)", text, flags=re.M)]


def list_pieces(composers: Iterable[str] | None = None, seed: int = 0) -> list[tuple[str, str, int | None]]:
    """Candidate pieces as ``(collection, corpus path, tune number or None)``.

    Each collection is shuffled with ``seed``; collections are interleaved
    round-robin so that a ``limit`` gives a varied sample.
    """
    m21 = _music21()
    names = list(composers) if composers is not None else list(DEFAULT_COMPOSERS)
    unknown = [c for c in names if c not in COLLECTIONS]
    if unknown:
        raise InvalidInput(f"unknown music21 collection(s) {', '.join(unknown)}; choose from {', '.join(COLLECTIONS)}")
    queues = []
    for ci, name in enumerate(names):
        coll = COLLECTIONS[name]
        paths = sorted(str(p) for p in m21.corpus.getComposer(name))
        if coll.skip:
            paths = [p for p in paths if not re.search(coll.skip, p)]
        rng = np.random.default_rng([int(seed), ci, 21])
        items: list[tuple[str, str, int | None]] = []
        for p in [paths[i] for i in rng.permutation(len(paths))]:
            rel = _corpus_rel(p)
            if p.endswith(".abc"):
                nums = _abc_numbers(Path(p))
                if len(nums) > 1:
                    pick = rng.permutation(len(nums))[: coll.per_file]
                    items += [(name, rel, nums[int(k)]) for k in sorted(pick)]
                    continue
            items.append((name, rel, None))
        queues.append(items)
    out = []
    for k in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if k < len(q):
                out.append(q[k])
    return out


def _corpus_rel(path: str) -> str:
    p = path.replace(os.sep, "/")
    return p.split("/corpus/", 1)[1] if "/corpus/" in p else p


def _key_name(k) -> tuple[str, str, str]:
    from .composer import NOTE_NAMES

    tonic = NOTE_NAMES[k.tonic.pitchClass]
    mode = "minor" if k.mode == "minor" else "major"
    return f"{tonic} {mode}", tonic, mode


def _programs(score, rng: np.random.Generator) -> tuple[list[int], str]:
    """GM program per part (top to bottom) and an ensemble label."""
    parts = list(score.parts)
    insts = [p.getInstrument(returnDefault=False) for p in parts]
    names = [f"{p.partName or ''} {(i.instrumentName or '') if i is not None else ''}".strip().lower()
             for p, i in zip(parts, insts)]
    if len(parts) == 1 and not any(w in names[0] for w, _ in _NAMED_PROGRAMS):
        label = list(_MELODY)[int(rng.integers(len(_MELODY)))]
        return [_MELODY[label]], label
    programs: list[int | None] = []
    vocal = 0
    for nm, inst in zip(names, insts):
        prog = next((p for w, p in _NAMED_PROGRAMS if w in nm), None)
        if prog is None and any(w in nm for w in _VOICE_WORDS):
            vocal += 1
        elif prog is None and inst is not None and inst.midiProgram is not None \
                and not (inst.midiProgram == 0 and not nm):
            prog = int(inst.midiProgram)
        programs.append(prog)
    if all(p is not None for p in programs) and not vocal:
        if set(programs) == {0}:
            return [0] * len(parts), "piano"
        if set(programs) <= {40, 41, 42, 43, 48}:
            return [int(p) for p in programs], "string quartet" if len(parts) == 4 else "strings"
        return [int(p) for p in programs], "chamber ensemble"
    label = list(_ENSEMBLES)[int(rng.integers(len(_ENSEMBLES)))]
    ens = _ENSEMBLES[label]
    return [ens[min(i, len(ens) - 1)] for i in range(len(parts))], label


def _strip_tempi(score) -> None:
    m21 = _music21()
    for el in list(score.recurse().getElementsByClass((m21.tempo.MetronomeMark, m21.tempo.TempoText,
                                                       m21.tempo.MetricModulation))):
        site = el.activeSite
        if site is not None:
            site.remove(el)


def _strip_repeats(score) -> None:
    """Remove repeat barlines, brackets and D.C./segno marks (when music21 cannot expand them)."""
    m21 = _music21()
    for el in list(score.recurse().getElementsByClass((m21.repeat.RepeatExpression, m21.spanner.RepeatBracket))):
        site = el.activeSite
        if site is not None:
            site.remove(el)
    for m in score.recurse().getElementsByClass(m21.stream.Measure):
        for side in ("leftBarline", "rightBarline"):
            if isinstance(getattr(m, side), m21.bar.Repeat):
                setattr(m, side, m21.bar.Barline("regular"))


def _to_midi_bytes(score) -> bytes:
    m21 = _music21()
    try:
        return m21.midi.translate.music21ObjectToMidiFile(score).writestr()
    except m21.repeat.ExpanderException:
        _strip_repeats(score)  # play it through once, as written
        return m21.midi.translate.music21ObjectToMidiFile(score).writestr()


_REL_TITLE = ((r"^opus(\d+)no(\d+)$", r"Op. \1 No. \2"), (r"^opus(\d+)$", r"Op. \1"), (r"^k(\d+)$", r"K. \1"),
              (r"^movement(\d+)$", r"movement \1"), (r"^bwv(.+)$", r"BWV \1"))


def _title(md, rel: str, genre: str) -> str:
    """The score's title, or one built from its corpus path (``Op. 74 No. 1, movement 2``)."""
    for cand in ((md.title if md is not None else None), (md.movementName if md is not None else None)):
        if cand and not re.search(r"\.(mxl|xml|musicxml|krn|abc|mid)$", str(cand), flags=re.I):
            return " ".join(str(cand).split())
    parts = rel.rsplit(".", 1)[0].split("/")[1:] if rel.count("/") else [Path(rel).stem]
    if len(parts) == 1 and parts[0].startswith("bwv") and "." in rel[len("bach/bwv"):].rsplit(".", 1)[0]:
        parts = [parts[0]]
    words = []
    for part in parts:
        w = part
        for pat, rep in _REL_TITLE:
            w = re.sub(pat, rep, w)
        words.append(w.replace("_", " "))
    title = ", ".join(words)
    if genre == "baroque chorale":
        title = f"Chorale {title}"
    return title


def _first_qpm(score) -> float | None:
    m21 = _music21()
    for mm in score.flatten().getElementsByClass(m21.tempo.MetronomeMark):
        if mm.number is None or getattr(mm, "numberImplicit", False):
            continue
        try:
            q = float(mm.getQuarterBPM())
        except Exception:  # malformed referent
            continue
        if 40 <= q <= 220:
            return q
    return None


def _moods(mode: str, bpm: float, genre: str) -> list[str]:
    """Mood words derived from mode and tempo only (stated as such in the docs)."""
    if mode == "major":
        moods = ["bright", "lively"] if bpm >= 100 else (["warm", "graceful"] if bpm >= 76 else ["serene", "stately"])
    else:
        moods = ["dramatic", "restless"] if bpm >= 100 else (["melancholic", "wistful"] if bpm >= 76
                                                              else ["solemn", "somber"])
    if genre in _FOLK and mode == "major":
        moods.append("cheerful")
    return moods


def _keywords(genre: str, ensemble: str, n_parts: int) -> list[str]:
    kw = ["acoustic instruments", "no drums"]
    if genre == "baroque chorale":
        kw += ["four-part harmony", "hymn"]
    if genre in _FOLK:
        kw += ["traditional melody", "solo melody" if n_parts == 1 else "folk"]
    if "quartet" in ensemble or genre.endswith("quartet"):
        kw.append("chamber music")
    if genre.startswith("renaissance"):
        kw.append("polyphony")
    return kw


def _render_piece(item: tuple[str, str, int | None], out: Path, duration: float | None, sample_rate: int,
                  soundfont: str | None, channels: int, fmt: str, splits, n_captions: int, seed: int):
    import pretty_midi

    from .captions import make_captions
    from .composer import gm_name
    from .render import render
    from .synth import manifest_entry, split_of, write_audio

    m21 = _music21()
    name, rel, number = item
    coll = COLLECTIONS[name]
    source = rel if number is None else f"{rel}#{number}"
    pseed = _piece_seed(source)
    rng = np.random.default_rng([pseed, int(seed)])
    parsed = m21.corpus.parse(rel, number=number) if number is not None else m21.corpus.parse(rel)
    if isinstance(parsed, m21.stream.Opus):
        parsed = parsed.scores[0]
    score = parsed
    if not score.parts:
        score = m21.stream.Score([score]) if score.hasPartLikeStreams() is False else score
    md = score.metadata
    ts = score.flatten().getElementsByClass(m21.meter.TimeSignature).first()
    if ts is None or ts.barDuration.quarterLength <= 0:
        ts = m21.meter.TimeSignature("4/4")
    beat_ql = float(ts.beatDuration.quarterLength) or 1.0
    qpm = _first_qpm(score)
    if qpm is None:
        bpm = float(rng.integers(coll.beat_bpm[0], coll.beat_bpm[1] + 1))
        qpm = bpm * beat_ql
    bpm = qpm / beat_ql
    if duration is not None:  # keep only the measures that fit (plus one), to save conversion/analysis time
        bar_s = ts.barDuration.quarterLength * 60.0 / qpm
        last = int(math.ceil(duration / bar_s)) + 1
        excerpt = score.measures(0, last)
        if excerpt is not None and excerpt.parts and excerpt.highestTime > 0:
            score = excerpt
    _strip_tempi(score)
    score.parts[0].insert(0, m21.tempo.MetronomeMark(number=qpm, referent=m21.duration.Duration(1.0)))
    key = score.analyze("key")
    key_str, tonic, mode = _key_name(key)
    programs, ensemble = _programs(score, rng)
    data = _to_midi_bytes(score)
    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    melodic = [i for i in pm.instruments if not i.is_drum and i.notes]
    if not melodic:
        raise InvalidInput("no notes")
    for i, inst in enumerate(pm.instruments):
        inst.program = programs[min(i, len(programs) - 1)]
        inst.is_drum = False
    end = pm.get_end_time()
    length = min(float(duration), end + 1.0) if duration is not None else end + 1.0
    audio = render(pm, sample_rate=sample_rate, soundfont=soundfont, duration=length, channels=channels)

    instruments = list(dict.fromkeys(gm_name(p) for p in programs))
    genre = coll.genre
    if name == "bach" and len(programs) != 4:
        genre = "baroque"
    if genre.endswith(" string quartet") and ensemble != "string quartet":
        genre = genre[: -len(" string quartet")]  # a sonata or a trio, not a quartet
    title = _title(md, rel, genre)
    meta = {
        "title": str(title),
        "artist": coll.composer,
        "composer": coll.composer,
        "key": key_str,
        "tonic": tonic,
        "mode": mode,
        "key_confidence": round(float(getattr(key, "correlationCoefficient", 0.0) or 0.0), 4),
        "bpm": int(round(bpm)),
        "qpm": round(float(qpm), 3),
        "meter": ts.ratioString,
        "genre": genre,
        "moods": _moods(mode, bpm, genre),
        "instrument": instruments[0],
        "instruments": instruments,
        "ensemble": ensemble,
        "n_parts": len(programs),
        "drums": False,
        "keywords": _keywords(genre, ensemble, len(programs)),
        "duration": round(audio.shape[-1] / sample_rate, 6),
        "source": f"music21:{source}",
        "seed": pseed,
    }
    captions = make_captions(meta, np.random.default_rng([pseed, 7]), n=n_captions)
    split = split_of(pseed, splits)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", rel.rsplit(".", 1)[0]).strip("_")
    clip_id = f"{stem}_{number}" if number is not None else stem
    audio_rel, info_rel = f"audio/{clip_id}.{fmt}", f"audio/{clip_id}.json"
    write_audio(out / audio_rel, audio, sample_rate, fmt)
    sidecar = {"title": meta["title"], "artist": meta["artist"], "key": key_str, "bpm": meta["bpm"],
               "genre": genre, "moods": meta["moods"], "keywords": meta["keywords"], "description": captions[0],
               "instrument": meta["instrument"]}
    sidecar.update({k: v for k, v in meta.items() if k not in sidecar})
    sidecar.update({"captions": captions, "split": split, "id": clip_id, "sample_rate": sample_rate,
                    "channels": channels})
    (out / info_rel).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    amp = float(np.abs(audio).max()) if audio.size else 0.0
    return split, manifest_entry(audio_rel, audio.shape[-1] / sample_rate, sample_rate, amp, info_rel), \
        audio.shape[-1] / sample_rate


def render_music21(
    out_dir: str | os.PathLike,
    limit: int | None = None,
    seed: int = 0,
    duration: float | None = None,
    composers: Iterable[str] | None = None,
    sample_rate: int = 32000,
    soundfont: str | os.PathLike | None = None,
    *,
    channels: int = 2,
    fmt: str = "wav",
    splits: Mapping[str, float] | None = None,
    n_captions: int = 6,
    quiet: bool = False,
) -> dict:
    """Render music21 corpus pieces to ``out_dir`` (same layout as the procedural corpus).

    Args:
        out_dir: output folder.
        limit: number of pieces to render (None: every candidate; thousands, slow).
        seed: shuffles the candidates and draws ensembles/tempi.
        duration: crop each piece to this many seconds (None: whole pieces).
        composers: collections from :data:`COLLECTIONS` (default: a varied set).
        sample_rate, channels, fmt, soundfont: as for the procedural corpus.
        splits: split fractions (default train/valid/test 0.9/0.05/0.05), by piece seed.
        n_captions: captions per piece.
        quiet: no progress bar.

    Returns:
        summary dict: ``clips``, ``skipped``, ``failures`` (first few ``source: error``),
        ``seconds``, ``wall_time``, ``splits``, ``out_dir``, ``manifest``.
    """
    from .render import load_soundfont
    from .synth import _check_splits, _progress, write_manifests

    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise InvalidInput(f"limit must be a positive integer or None, got {limit!r}")
    if duration is not None and not (isinstance(duration, (int, float)) and 1.0 <= duration <= 3600):
        raise InvalidInput(f"duration must be between 1 and 3600 seconds, got {duration!r}")
    if channels not in (1, 2):
        raise InvalidInput(f"channels must be 1 or 2, got {channels!r}")
    if fmt not in ("wav", "flac"):
        raise InvalidInput(f"unknown audio format {fmt!r}; choose from wav, flac")
    split_fracs = _check_splits(splits)
    sf_path = str(Path(soundfont).expanduser().resolve()) if soundfont is not None else None
    load_soundfont(sf_path)
    candidates = list_pieces(composers, seed)
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    target = len(candidates) if limit is None else min(int(limit), len(candidates))
    entries: list[tuple[str, dict]] = []
    failures: list[str] = []
    seconds = 0.0
    bar = _progress(target, quiet, "music21")
    import warnings

    try:
        for item in candidates:
            if len(entries) >= target:
                break
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    split, entry, secs = _render_piece(item, out, duration, int(sample_rate), sf_path, channels, fmt,
                                                       split_fracs, n_captions, seed)
            except (DependencyError, KeyboardInterrupt):
                raise
            except Exception as e:  # a score music21 cannot parse/convert: skip it, count it
                failures.append(f"{item[1]}{'#' + str(item[2]) if item[2] is not None else ''}: "
                                f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
                continue
            entries.append((split, entry))
            seconds += secs
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    counts = write_manifests(out, entries, split_fracs)
    record = {"generator": "tunecraft.data.music21_corpus",
              "config": {"limit": limit, "seed": seed, "duration": duration,
                         "composers": list(composers) if composers is not None else list(DEFAULT_COMPOSERS),
                         "sample_rate": int(sample_rate), "channels": channels, "fmt": fmt,
                         "soundfont": sf_path or "TimGM6mb.sf2 (pretty_midi)", "splits": split_fracs},
              "clips": len(entries), "skipped": len(failures), "seconds": round(seconds, 3), "splits": counts}
    (out / "corpus.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not quiet and failures and sys.stderr.isatty():
        print(f"music21: skipped {len(failures)} piece(s) that failed to parse", file=sys.stderr)
    return {"clips": len(entries), "skipped": len(failures), "failures": failures[:10],
            "seconds": round(seconds, 3), "wall_time": round(wall, 3), "splits": counts, "out_dir": str(out),
            "manifest": str(out / "data.jsonl")}
