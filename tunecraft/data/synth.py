"""Synthesize a captioned music corpus with the procedural composer.

:func:`synthesize_corpus` composes ``n`` clips (:mod:`tunecraft.data.composer`),
renders them through a SoundFont (:mod:`tunecraft.data.render`), captions them
from their metadata (:mod:`tunecraft.data.captions`) and writes an
audiocraft-compatible dataset::

    out_dir/
      audio/<id>.wav          audio (or .flac), PCM 16-bit, ``channels`` x ``sample_rate``
      audio/<id>.json         sidecar: title, artist, key, bpm, genre, moods, keywords,
                              description, instrument + the full composer metadata,
                              captions (list), split, seed, corpus_seed, index
      data.jsonl              manifest of every clip
      train.jsonl             manifests of each split (same line format, same relative
      valid.jsonl             paths, so each works on its own; a split with no clips
      test.jsonl              gets an empty file)
      corpus.json             the arguments and counts (no timings: deterministic)

Manifest lines follow audiocraft's ``AudioMeta``: ``{"path", "duration",
"sample_rate", "amplitude", "weight", "info_path"}`` with paths relative to the
manifest's folder; ``amplitude`` is the clip's peak, ``weight`` is null (uniform
sampling) and ``info_path`` points at the sidecar.

Seeds and held-out splits
-------------------------
Clip ``index`` of a corpus with seed ``seed`` gets the clip seed
:func:`clip_seed` ``(seed, index)`` (53 bits of SHA-256), and the composition is a
pure function of that clip seed. The split of a clip is :func:`split_of` its clip
seed: SHA-256 of the seed mapped to [0, 1) and cut at the cumulative split
fractions (default train 0.9 / valid 0.05 / test 0.05). A clip therefore lands in
the same split whatever the corpus size, and corpora built with a different
``n`` agree on every clip they share: evaluation never sees a training clip.

Determinism: the same arguments give byte-identical audio, sidecars and
manifests (``workers`` does not change the output). Rendering runs at several
hundred times real time on one core, so ``n=200, duration=10`` takes seconds;
``workers>1`` spreads clips over a process pool.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..config import Config
from ..errors import DependencyError, InvalidInput

__all__ = [
    "DEFAULT_SPLITS",
    "SynthConfig",
    "clip_seed",
    "split_of",
    "synthesize_corpus",
    "synthesize_clip",
    "write_audio",
    "write_manifests",
    "manifest_entry",
]

DEFAULT_SPLITS: dict[str, float] = {"train": 0.9, "valid": 0.05, "test": 0.05}
_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}


@dataclass
class SynthConfig(Config):
    """Arguments of :func:`synthesize_corpus` (what ``corpus.json`` records)."""

    n: int = 200
    duration: float = 10.0
    seed: int = 0
    sample_rate: int = 32000
    channels: int = 2
    soundfont: str | None = None
    styles: list[str] | None = None
    fmt: str = "wav"
    splits: dict = field(default_factory=lambda: dict(DEFAULT_SPLITS))
    n_captions: int = 6
    write_midi: bool = False


def clip_seed(corpus_seed: int, index: int) -> int:
    """The seed of clip ``index`` in the corpus with seed ``corpus_seed`` (0 <= s < 2**53)."""
    h = hashlib.sha256(f"tunecraft-corpus/{int(corpus_seed)}/{int(index)}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 11


def _check_splits(splits: Mapping[str, float] | None) -> dict[str, float]:
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    if not splits:
        raise InvalidInput("splits must name at least one split")
    for name, frac in splits.items():
        if not isinstance(name, str) or not name or "/" in name or name == "data":
            raise InvalidInput(f"invalid split name {name!r}")
        if not isinstance(frac, (int, float)) or frac < 0:
            raise InvalidInput(f"split fraction for {name!r} must be >= 0, got {frac!r}")
    total = float(sum(splits.values()))
    if abs(total - 1.0) > 1e-6:
        raise InvalidInput(f"split fractions must sum to 1, got {total:g}")
    return {k: float(v) for k, v in splits.items()}


def split_of(seed: int, splits: Mapping[str, float] | None = None) -> str:
    """The split of the clip with seed ``seed``: a pure function of the seed (and fractions)."""
    splits = _check_splits(splits)
    h = hashlib.sha256(f"tunecraft-split/{int(seed)}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    acc = 0.0
    names = list(splits)
    for name in names:
        acc += splits[name]
        if u < acc:
            return name
    return [n for n in names if splits[n] > 0][-1]


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, fmt: str = "wav") -> Path:
    """Write ``[C, T]`` float audio as 16-bit PCM WAV/FLAC with soundfile."""
    try:
        import soundfile as sf
    except ImportError as e:
        raise DependencyError("soundfile is required to write audio: pip install soundfile") from e
    if fmt not in _FORMATS:
        raise InvalidInput(f"unknown audio format {fmt!r}; choose from {', '.join(_FORMATS)}")
    path = Path(path)
    container, subtype = _FORMATS[fmt]
    # quantise here (round to nearest) so that WAV and FLAC hold identical samples;
    # libsndfile would scale floats differently per container
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), np.ascontiguousarray(pcm.T), int(sample_rate), subtype=subtype, format=container)
    return path


def manifest_entry(audio_rel: str, duration: float, sample_rate: int, amplitude: float | None,
                   info_rel: str | None) -> dict:
    """One audiocraft ``AudioMeta`` line."""
    return {"path": audio_rel, "duration": round(float(duration), 6), "sample_rate": int(sample_rate),
            "amplitude": None if amplitude is None else round(float(amplitude), 6), "weight": None,
            "info_path": info_rel}


def write_manifests(out_dir: Path, entries: list[tuple[str, dict]], split_names: Iterable[str]) -> dict[str, int]:
    """Write ``data.jsonl`` and ``<split>.jsonl``; return clip counts per split."""
    counts = {name: 0 for name in split_names}
    lines = {name: [] for name in counts}
    all_lines = []
    for split, entry in entries:
        line = json.dumps(entry, ensure_ascii=False)
        all_lines.append(line)
        lines.setdefault(split, []).append(line)
        counts[split] = counts.get(split, 0) + 1
    (out_dir / "data.jsonl").write_text("".join(x + "\n" for x in all_lines), encoding="utf-8")
    for name, ls in lines.items():
        (out_dir / f"{name}.jsonl").write_text("".join(x + "\n" for x in ls), encoding="utf-8")
    return counts


def _sidecar(meta: dict, captions: list[str], extra: dict) -> dict:
    """Sidecar dict: the audiocraft fields first, then the full metadata."""
    head = {
        "title": meta.get("title"),
        "artist": meta.get("artist"),
        "key": meta.get("key"),
        "bpm": meta.get("bpm"),
        "genre": meta.get("genre"),
        "moods": meta.get("moods"),
        "keywords": meta.get("keywords"),
        "description": captions[0] if captions else None,
        "instrument": meta.get("instrument"),
    }
    out = dict(head)
    for k, v in meta.items():
        if k not in out:
            out[k] = v
    out["captions"] = captions
    out.update(extra)
    return out


def synthesize_clip(index: int, cfg: SynthConfig, out_dir: str | os.PathLike) -> tuple[str, dict, float]:
    """Compose, render and write clip ``index``; return (split, manifest entry, seconds)."""
    from .captions import make_captions
    from .composer import ComposerConfig, compose
    from .render import render

    out = Path(out_dir)
    seed = clip_seed(cfg.seed, index)
    split = split_of(seed, cfg.splits)
    comp = compose(seed, cfg.duration, config=ComposerConfig(styles=cfg.styles))
    audio = render(comp, sample_rate=cfg.sample_rate, soundfont=cfg.soundfont, duration=cfg.duration,
                   channels=cfg.channels)
    meta = comp.metadata
    clip_id = f"{index:06d}_{meta['style']}"
    audio_rel = f"audio/{clip_id}.{cfg.fmt}"
    info_rel = f"audio/{clip_id}.json"
    write_audio(out / audio_rel, audio, cfg.sample_rate, cfg.fmt)
    if cfg.write_midi:
        comp.write_midi(out / "midi" / f"{clip_id}.mid")
    captions = make_captions(meta, np.random.default_rng([seed, 7]), n=cfg.n_captions)
    sidecar = _sidecar(meta, captions, {"split": split, "corpus_seed": int(cfg.seed), "index": int(index),
                                        "id": clip_id, "sample_rate": int(cfg.sample_rate),
                                        "channels": int(cfg.channels)})
    (out / info_rel).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    n = audio.shape[-1]
    amplitude = float(np.abs(audio).max()) if n else 0.0
    return split, manifest_entry(audio_rel, n / cfg.sample_rate, cfg.sample_rate, amplitude, info_rel), \
        n / cfg.sample_rate


def _worker(args: tuple[int, dict, str]) -> tuple[int, str, dict, float]:
    index, cfg_dict, out_dir = args
    split, entry, secs = synthesize_clip(index, SynthConfig.from_dict(cfg_dict), out_dir)
    return index, split, entry, secs


def _progress(total: int, quiet: bool, desc: str):
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="clip", file=sys.stderr)


def synthesize_corpus(
    out_dir: str | os.PathLike,
    n: int = 200,
    duration: float = 10.0,
    seed: int = 0,
    sample_rate: int = 32000,
    channels: int = 2,
    soundfont: str | os.PathLike | None = None,
    styles: Iterable[str] | None = None,
    workers: int = 1,
    fmt: str = "wav",
    splits: Mapping[str, float] | None = None,
    *,
    n_captions: int = 6,
    write_midi: bool = False,
    quiet: bool = False,
) -> dict:
    """Write a procedural corpus of ``n`` clips of ``duration`` seconds to ``out_dir``.

    Args:
        out_dir: output folder (created; existing clips with the same ids are overwritten).
        n: number of clips.
        duration: seconds per clip.
        seed: corpus seed; clip ``i`` uses ``clip_seed(seed, i)``.
        sample_rate, channels: audio format (channels 1 or 2).
        soundfont: ``.sf2`` path; default pretty_midi's TimGM6mb.sf2.
        styles: restrict to these composer styles (default: all).
        workers: processes; 1 renders in this process.
        fmt: ``"wav"`` or ``"flac"`` (16-bit PCM).
        splits: split name -> fraction (default train 0.9 / valid 0.05 / test 0.05).
        n_captions: captions per clip in the sidecar (the first is the description).
        write_midi: also write ``midi/<id>.mid``.
        quiet: no progress bar (there is none anyway when stderr is not a TTY).

    Returns:
        summary dict: ``clips``, ``seconds`` (of audio), ``wall_time``,
        ``realtime_factor``, ``splits`` (counts), ``out_dir``, ``manifest``.
    """
    from .composer import STYLES
    from .render import load_soundfont

    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InvalidInput(f"n must be a positive integer, got {n!r}")
    if not isinstance(duration, (int, float)) or not 1.0 <= float(duration) <= 600.0:
        raise InvalidInput(f"duration must be between 1 and 600 seconds, got {duration!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    if channels not in (1, 2):
        raise InvalidInput(f"channels must be 1 or 2, got {channels!r}")
    if not isinstance(sample_rate, (int, np.integer)) or not 8000 <= int(sample_rate) <= 96000:
        raise InvalidInput(f"sample_rate must be an integer between 8000 and 96000, got {sample_rate!r}")
    if fmt not in _FORMATS:
        raise InvalidInput(f"unknown audio format {fmt!r}; choose from {', '.join(_FORMATS)}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InvalidInput(f"workers must be a positive integer, got {workers!r}")
    style_list = list(styles) if styles is not None else None
    if style_list is not None:
        if not style_list:
            raise InvalidInput("styles is empty")
        unknown = [s for s in style_list if s not in STYLES]
        if unknown:
            raise InvalidInput(f"unknown style(s) {', '.join(unknown)}; choose from {', '.join(STYLES)}")
    split_fracs = _check_splits(splits)
    sf_path = str(Path(soundfont).expanduser().resolve()) if soundfont is not None else None
    load_soundfont(sf_path)  # fail early with a clear error; also warms this process's cache

    cfg = SynthConfig(n=int(n), duration=float(duration), seed=int(seed), sample_rate=int(sample_rate),
                      channels=int(channels), soundfont=sf_path, styles=style_list, fmt=fmt, splits=split_fracs,
                      n_captions=int(n_captions), write_midi=bool(write_midi))
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    if write_midi:
        (out / "midi").mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    results: dict[int, tuple[str, dict, float]] = {}
    bar = _progress(cfg.n, quiet, "synthesizing")
    try:
        if workers == 1:
            for i in range(cfg.n):
                results[i] = synthesize_clip(i, cfg, out)
                if bar is not None:
                    bar.update(1)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # safe with threads (torch) in the parent
            jobs = [(i, cfg.to_dict(), str(out)) for i in range(cfg.n)]
            with ProcessPoolExecutor(max_workers=int(workers), mp_context=ctx) as pool:
                for i, split, entry, secs in pool.map(_worker, jobs, chunksize=max(1, cfg.n // (8 * workers))):
                    results[i] = (split, entry, secs)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0

    entries = [(results[i][0], results[i][1]) for i in range(cfg.n)]
    counts = write_manifests(out, entries, split_fracs)
    seconds = float(sum(r[2] for r in results.values()))
    record = {"generator": "tunecraft.data.synth", "config": cfg.to_dict(), "clips": cfg.n,
              "seconds": round(seconds, 3), "splits": counts}
    if sf_path is None:
        record["config"]["soundfont"] = "TimGM6mb.sf2 (pretty_midi)"
    (out / "corpus.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return {
        "clips": cfg.n,
        "seconds": round(seconds, 3),
        "wall_time": round(wall, 3),
        "realtime_factor": round(seconds / wall, 1) if wall > 0 else float("inf"),
        "splits": counts,
        "out_dir": str(out),
        "manifest": str(out / "data.jsonl"),
    }
