"""Pseudo-labelling of unlabelled music with the joint embedding (Noise2Music, section 3.5).

Noise2Music annotates unlabelled audio with MuLan: captions are drawn from curated caption
vocabularies (long-form sentences and short tags), and for every clip

1. the clip embedding is the mean of the MuLan embeddings of its non-overlapping 10 s windows
   (:meth:`~tunecraft.joint.JointEmbeddingModel.embed_audio`);
2. every vocabulary entry is embedded once (batched) and the ``K`` entries closest to the clip
   (cosine similarity) are its candidates (``K = 10``);
3. the frequency ``n(c)`` of each caption ``c`` among the candidate lists of *all* clips is
   counted, and ``K'`` of the clip's ``K`` candidates are drawn without replacement with
   probability ``p(c) ∝ 1 / n(c)`` (``K' = 3``): captions that fit many clips ("a pop song")
   are down-weighted, which balances the label distribution and diversifies the captions.

As in the paper (3 LaMDA-LF + 3 Rater-LF + 6 Rater-SF labels per clip) each vocabulary file is
labelled on its own: its own top ``K``, its own frequencies and its own ``K'`` draws
(``k_prime`` may differ per vocabulary). The draw of a clip uses a generator seeded from
``(seed, CRC-32 of the clip's path relative to the input)``, so the labels of a clip do not
depend on the order of the files (only, by design, on the frequencies over the whole set).

Vocabularies (:data:`VOCAB_DIR`): ``long_form.txt`` (sentences) and ``short_tags.txt`` (tags)
ship with tunecraft. They are generated from the procedural composer's metadata space
(:mod:`tunecraft.data.composer`: style families and their genre names, lead instruments, tempo
ranges as tempo words and BPM values, keys and modes, moods and keywords) by
:func:`build_vocabularies`; ``python -m tunecraft.joint.pseudolabel build-vocab`` rewrites them.
A vocabulary file is UTF-8 text with one caption per line; blank lines and lines starting with
``#`` are ignored and duplicates are dropped.

Sidecar policy (:func:`merge_sidecar`). Each labelled clip's JSON sidecar (``<audio>.json``
beside the file, the manifest's ``info_path`` when the input is a manifest, or the mirrored path
under ``sidecar_dir``) is *merged*, never clobbered:

* ``pseudo_labels`` is (re)written: the model, ``k``, ``k_prime``, ``seed`` and, per vocabulary,
  the top-``K`` captions with their cosine scores and the ``K'`` sampled captions;
* ``description`` is set to the first sampled caption (first vocabulary first) only when the
  sidecar has none;
* ``captions`` is set to all sampled captions (vocabulary order) only when the sidecar has none;
* every other field is kept as it was. A sidecar that exists but is not a JSON object is left
  alone and the clip is counted as skipped.

With ``sidecar_dir`` the sidecar beside the audio (if any) is the starting point and the merged
result is written under ``sidecar_dir`` instead, leaving the input folder untouched.

The manifest (audiocraft ``data.jsonl`` format; default ``<input>/pseudolabels.jsonl``) lists
the labelled clips with ``info_path`` pointing at their sidecars. Audio that cannot be read
(corrupt header or data, NaN samples, too short to embed) is skipped and counted.

    tunecraft data pseudolabel AUDIO_DIR --vocab long_form short_tags --k 10 --k-prime 3 -o labels.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import AudioFormatError, InvalidInput, run_main

__all__ = [
    "DEFAULT_VOCABULARIES",
    "VOCAB_DIR",
    "ClipLabels",
    "PseudoLabelResult",
    "PseudoLabeler",
    "Vocabulary",
    "add_pseudolabel_arguments",
    "build_vocabularies",
    "caption_frequencies",
    "cmd_pseudolabel",
    "embed_audio_files",
    "merge_sidecar",
    "pseudolabel",
    "read_vocabulary",
    "sample_inverse_frequency",
]

VOCAB_DIR = Path(__file__).resolve().parent / "vocab"
#: The shipped vocabularies, by name (``--vocab long_form`` works as well as a path).
DEFAULT_VOCABULARIES = ("long_form", "short_tags")


# ---- vocabularies -------------------------------------------------------------------------------


@dataclasses.dataclass
class Vocabulary:
    """A named list of candidate captions (no duplicates, no blanks)."""

    name: str
    entries: List[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.entries)


def _clean_lines(lines: Iterable[str]) -> List[str]:
    out = [" ".join(line.split()) for line in lines]
    return list(dict.fromkeys(x for x in out if x and not x.startswith("#")))


def read_vocabulary(spec: Union[str, os.PathLike]) -> Vocabulary:
    """A vocabulary from a text file path, or a shipped one by name (``long_form``, ``short_tags``)."""
    path = Path(spec).expanduser()
    if not path.is_file():
        shipped = VOCAB_DIR / f"{spec}.txt"
        if "/" not in str(spec) and shipped.is_file():
            path = shipped
        else:
            raise InvalidInput(f"vocabulary file not found: {spec} (shipped vocabularies: "
                               f"{', '.join(DEFAULT_VOCABULARIES)})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read vocabulary {path}: {e}") from None
    entries = _clean_lines(text.splitlines())
    if not entries:
        raise InvalidInput(f"vocabulary {path} holds no caption")
    return Vocabulary(path.stem, entries, str(path))


#: Canonical words of the composer's tempo buckets (:func:`tunecraft.data.composer.tempo_word`).
TEMPO_BUCKET_WORDS: Dict[str, Tuple[str, ...]] = {
    "slow": ("slow", "slow-paced"),
    "moderate": ("mid-tempo", "moderately paced"),
    "upbeat": ("upbeat", "lively"),
    "fast": ("fast", "up-tempo"),
}


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def build_vocabularies() -> Dict[str, List[str]]:
    """The shipped vocabularies, generated from the composer's metadata space.

    ``short_tags``: genre names, lead/accompaniment instrument names, drum kits, tempo words and
    BPM values (60-180 in steps of 10), the 24 keys and both modes, meters and feels, moods and
    keywords. ``long_form``: sentences that combine a style's genre names with the tempo buckets
    its BPM range reaches, the modes it uses, its lead instruments, moods, keys and keywords
    (only combinations the composer can produce).
    """
    from ..data.composer import GM_DRUM_KITS, NOTE_NAMES, STYLES, gm_name, tempo_word

    def buckets(lo: int, hi: int) -> List[str]:
        return list(dict.fromkeys(tempo_word(b) for b in range(lo, hi + 1)))

    tags: List[str] = []
    instruments: List[str] = []
    for st in STYLES.values():
        tags += list(st.genres)
        for prog in st.lead + st.chords + st.bass + st.pad + st.arp:
            instruments.append(gm_name(prog))
    tags += instruments
    tags += [GM_DRUM_KITS[k] for k in sorted(GM_DRUM_KITS)]
    tags += [w for words in TEMPO_BUCKET_WORDS.values() for w in words]
    tags += [f"{b} bpm" for b in range(60, 181, 10)]
    tags += [f"{NOTE_NAMES[t]} {m}" for m in ("major", "minor") for t in range(12)]
    tags += ["major key", "minor key", "3/4", "4/4", "waltz time", "swing", "shuffle", "drums", "no drums"]
    for st in STYLES.values():
        tags += list(st.moods_major) + list(st.moods_minor) + list(st.keywords)

    long: List[str] = []
    for st in STYLES.values():
        genres = list(dict.fromkeys(st.genres))
        main = genres[0]
        modes = [m for m, p in (("major", 1.0 - st.p_minor), ("minor", st.p_minor)) if p > 0]
        tempos = buckets(*st.bpm)
        leads = list(dict.fromkeys(gm_name(p) for p in st.lead))
        # genre x tempo x mode x lead: the core descriptive sentences
        for genre in genres:
            for bucket in tempos:
                word = TEMPO_BUCKET_WORDS[bucket][0]
                for mode in modes:
                    for lead in leads:
                        long.append(f"{_article(word).capitalize()} {word} {genre} piece led by {lead} in a {mode} key.")
        # style x key: what key a piece of this style is in
        for mode in modes:
            for t in range(12):
                long.append(f"{_article(main).capitalize()} {main} track in {NOTE_NAMES[t]} {mode}.")
        # style x tempo in BPM
        lo, hi = st.bpm
        for b in range((lo + 9) // 10 * 10, hi + 1, 10):
            long.append(f"{main.capitalize()} music at around {b} BPM.")
        # style x mood x mode
        for mode, moods in (("major", st.moods_major), ("minor", st.moods_minor)):
            if mode not in modes:
                continue
            for mood in moods:
                long.append(f"{_article(mood).capitalize()} {mood} {main} tune in a {mode} key.")
        # style x keyword
        for kw in st.keywords:
            long.append(f"{main.capitalize()} with {kw}.")
        # lead instrument x tempo (style-free)
        for lead in leads:
            for bucket in tempos:
                long.append(f"{TEMPO_BUCKET_WORDS[bucket][1].capitalize()} music featuring {lead}.")
    return {"long_form": _clean_lines(long), "short_tags": _clean_lines(tags)}


def write_vocabularies(out_dir: Union[str, os.PathLike] = VOCAB_DIR) -> Dict[str, Path]:
    """Write :func:`build_vocabularies` as ``<name>.txt`` files into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, entries in build_vocabularies().items():
        path = out / f"{name}.txt"
        header = (f"# tunecraft pseudo-label vocabulary '{name}' ({len(entries)} captions), generated from the "
                  f"composer's metadata space by\n# python -m tunecraft.joint.pseudolabel build-vocab\n")
        path.write_text(header + "".join(e + "\n" for e in entries), encoding="utf-8")
        written[name] = path
    return written


# ---- the labelling maths ------------------------------------------------------------------------


def caption_frequencies(candidates: np.ndarray, vocab_size: int) -> np.ndarray:
    """``n(c)``: how many clips have caption ``c`` among their candidates (``candidates [N, K]``)."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.ndim != 2:
        raise InvalidInput(f"candidates must be [N, K], got shape {candidates.shape}")
    return np.bincount(candidates.reshape(-1), minlength=int(vocab_size))


def sample_inverse_frequency(candidates: Sequence[int], counts: np.ndarray, k_prime: int,
                             rng: np.random.Generator) -> List[int]:
    """Draw ``k_prime`` of ``candidates`` without replacement, ``p(c) ∝ 1 / counts[c]``.

    Each draw renormalises over the remaining candidates (numpy's ``choice(replace=False, p=...)``).
    The draws are returned in the order they were made.
    """
    cand = np.asarray(candidates, dtype=np.int64)
    if not 1 <= k_prime <= cand.size:
        raise InvalidInput(f"k_prime must be between 1 and the number of candidates ({cand.size}), got {k_prime}")
    n = np.asarray(counts, dtype=np.float64)[cand]
    if (n <= 0).any():
        raise InvalidInput("every candidate must occur at least once in the counts")
    p = (1.0 / n) / (1.0 / n).sum()
    picks = rng.choice(cand.size, size=int(k_prime), replace=False, p=p)
    return [int(cand[i]) for i in picks]


def clip_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one clip's draws: seeded from ``(seed, crc32(key))``."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


@dataclasses.dataclass
class ClipLabels:
    """Pseudo-labels of one clip: per vocabulary, ``top_k`` as ``[(caption, cosine)]`` (best
    first) and the ``sampled`` captions."""

    key: str
    top_k: Dict[str, List[Tuple[str, float]]]
    sampled: Dict[str, List[str]]

    @property
    def captions(self) -> List[str]:
        """All sampled captions, vocabulary by vocabulary."""
        return [c for caps in self.sampled.values() for c in caps]


class PseudoLabeler:
    """Top-``K`` retrieval and inverse-frequency sampling over vocabularies (module docstring).

    Args:
        model: a :class:`~tunecraft.joint.JointEmbeddingModel`.
        vocabularies: :class:`Vocabulary` objects (each labelled on its own).
        k: candidates per clip and vocabulary (``K``).
        k_prime: sampled captions per clip, one int for all vocabularies or one per vocabulary.
        seed: seed of the draws.
        text_batch_size: vocabulary entries embedded per text-encoder call.
    """

    def __init__(self, model, vocabularies: Sequence[Vocabulary], k: int = 10,
                 k_prime: Union[int, Sequence[int]] = 3, seed: int = 0, text_batch_size: int = 256):
        if not vocabularies:
            raise InvalidInput("pseudo-labelling needs at least one vocabulary")
        names = [v.name for v in vocabularies]
        if len(set(names)) != len(names):
            raise InvalidInput(f"vocabulary names must differ, got {names}")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        kp = [k_prime] * len(vocabularies) if isinstance(k_prime, (int, np.integer)) else list(k_prime)
        if len(kp) != len(vocabularies):
            raise InvalidInput(f"k_prime needs one value or one per vocabulary ({len(vocabularies)}), got {kp}")
        for v, n in zip(vocabularies, kp):
            if isinstance(n, bool) or int(n) != n or not 1 <= n <= k:
                raise InvalidInput(f"k_prime must be between 1 and k ({k}), got {n!r}")
            if len(v) < k:
                raise InvalidInput(f"vocabulary '{v.name}' has {len(v)} captions, fewer than k={k}")
        if seed is None or isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
        self.model = model
        self.vocabularies = list(vocabularies)
        self.k = int(k)
        self.k_prime = [int(n) for n in kp]
        self.seed = int(seed)
        self.text_batch_size = int(text_batch_size)
        self._text: Optional[List[torch.Tensor]] = None

    @torch.no_grad()
    def vocabulary_embeddings(self) -> List[torch.Tensor]:
        """Unit-norm text embeddings ``[V, d]`` of each vocabulary (computed once, batched)."""
        if self._text is None:
            out = []
            for v in self.vocabularies:
                rows = [self.model.embed_text(v.entries[i:i + self.text_batch_size]).float().cpu()
                        for i in range(0, len(v), self.text_batch_size)]
                out.append(torch.cat(rows))
            self._text = out
        return self._text

    @torch.no_grad()
    def top_k(self, audio: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per vocabulary ``(scores [N, K], indices [N, K])`` of unit-norm clip embeddings ``audio [N, d]``."""
        if audio.dim() != 2:
            raise InvalidInput(f"clip embeddings must be [N, d], got {tuple(audio.shape)}")
        out = []
        for text in self.vocabulary_embeddings():
            sims = audio.float().cpu() @ text.T
            scores, idx = sims.topk(self.k, dim=1)
            out.append((scores, idx))
        return out

    def label(self, audio: torch.Tensor, keys: Sequence[str]) -> List[ClipLabels]:
        """Pseudo-labels of the clips with embeddings ``audio [N, d]``; ``keys[i]`` names clip ``i``
        (its relative path) and seeds its draws. Frequencies are counted over these ``N`` clips."""
        if audio.shape[0] != len(keys):
            raise InvalidInput(f"{audio.shape[0]} embeddings but {len(keys)} keys")
        if len(keys) == 0:
            raise InvalidInput("no clip to label")
        results = [ClipLabels(str(key), {}, {}) for key in keys]
        for vocab, kp, (scores, idx) in zip(self.vocabularies, self.k_prime, self.top_k(audio)):
            counts = caption_frequencies(idx.numpy(), len(vocab))
            for row, res in enumerate(results):
                cand = idx[row].tolist()
                res.top_k[vocab.name] = [(vocab.entries[c], round(float(s), 6)) for c, s in zip(cand, scores[row])]
                # one generator per clip and vocabulary: independent of file order
                rng = clip_rng(self.seed, f"{vocab.name}/{res.key}")
                res.sampled[vocab.name] = [vocab.entries[c] for c in sample_inverse_frequency(cand, counts, kp, rng)]
        return results


# ---- audio ---------------------------------------------------------------------------------------


@torch.no_grad()
def embed_audio_files(model, paths: Sequence[Union[str, os.PathLike]], batch_size: int = 16,
                      progress: bool = False) -> Tuple[torch.Tensor, List[int], List[Tuple[str, str]]]:
    """Clip embeddings (10 s window mean) of audio files.

    Files are loaded mono at the model's rate; runs of equal-length files are embedded together
    (``batch_size`` at a time). Returns ``(embeddings [M, d], kept, skipped)`` where ``kept`` are
    the indices into ``paths`` of the ``M`` embedded files and ``skipped`` lists
    ``(path, reason)`` for files that could not be read or embedded.
    """
    from ..audio.io import load_audio

    sr = model.sample_rate
    min_len = model.config.audio.n_fft // 2 + 1
    rows: List[torch.Tensor] = []
    kept: List[int] = []
    skipped: List[Tuple[str, str]] = []
    pending: List[Tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if pending:
            rows.append(model.embed_audio(torch.stack([w for _, w in pending]), sr, batch_size=batch_size).cpu())
            kept.extend(i for i, _ in pending)
            pending.clear()

    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), desc="embedding", unit="clip", file=sys.stderr)
        except ImportError:
            bar = None
    try:
        for i, path in enumerate(paths):
            if bar is not None:
                bar.update(1)
            try:
                wav, _ = load_audio(path, sample_rate=sr, channels=1)
            except (AudioFormatError, InvalidInput) as e:
                skipped.append((str(path), str(e)))
                continue
            if not torch.isfinite(wav).all():
                skipped.append((str(path), "holds NaN or infinite samples"))
                continue
            if wav.shape[-1] < min_len:
                skipped.append((str(path), f"too short to embed ({wav.shape[-1]} samples at {sr} Hz)"))
                continue
            if pending and (wav.shape[-1] != pending[0][1].shape[-1] or len(pending) >= batch_size):
                flush()
            pending.append((i, wav.float()))
        flush()
    finally:
        if bar is not None:
            bar.close()
    emb = torch.cat(rows) if rows else torch.zeros(0, model.embed_dim)
    return emb, kept, skipped


# ---- sidecars and manifests ----------------------------------------------------------------------


def merge_sidecar(existing: Optional[Mapping[str, Any]], labels: ClipLabels, record: Mapping[str, Any]) -> Dict[str, Any]:
    """The sidecar after labelling (see the sidecar policy in the module docstring)."""
    out = dict(existing or {})
    out["pseudo_labels"] = {
        **record,
        "vocabularies": {
            name: {"top_k": [{"caption": c, "score": s} for c, s in labels.top_k[name]],
                   "sampled": list(labels.sampled[name])}
            for name in labels.sampled
        },
    }
    caps = labels.captions
    desc = out.get("description")
    if caps and not (isinstance(desc, str) and desc.strip()):
        out["description"] = caps[0]
    have = out.get("captions")
    if caps and not (isinstance(have, list) and any(isinstance(c, str) and c.strip() for c in have)):
        out["captions"] = list(caps)
    return out


def _read_sidecar(path: Path) -> Optional[Dict[str, Any]]:
    """The JSON object in ``path``; ``None`` when the file does not exist. Raises InvalidInput if
    it exists but is not a readable JSON object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"existing sidecar {path} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"existing sidecar {path} does not hold a JSON object")
    return data


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclasses.dataclass
class PseudoLabelResult:
    """What :func:`pseudolabel` did: labels per clip, skipped files and reasons, output paths."""

    labels: List[ClipLabels]
    skipped: List[Tuple[str, str]]
    manifest: Optional[Path]
    sidecars: List[Path]
    total: int

    def __str__(self) -> str:
        s = f"pseudo-labelled {len(self.labels)} of {self.total} clip(s)"
        if self.skipped:
            s += f"; skipped {len(self.skipped)} unreadable or unlabelable file(s)"
        if self.manifest is not None:
            s += f"; manifest {self.manifest}"
        return s


def _inputs(source: Path) -> Tuple[Path, List[Any], List[Tuple[str, str]]]:
    """``(root, metas, skipped)`` of a folder (scanned) or a manifest file."""
    from ..data.manifest import read_manifest, scan_audio_folder

    if source.is_dir():
        metas, skipped = scan_audio_folder(source)
        return source, metas, [(s.path, s.reason) for s in skipped]
    if source.is_file() and source.name.endswith((".jsonl", ".jsonl.gz")):
        return source.parent, read_manifest(source), []
    raise InvalidInput(f"not an audio folder or a .jsonl manifest: {source}")


def pseudolabel(source: Union[str, os.PathLike], vocabularies: Sequence[Union[str, os.PathLike, Vocabulary]] = DEFAULT_VOCABULARIES,
                model: Any = "joint-tiny", k: int = 10, k_prime: Union[int, Sequence[int]] = 3, seed: int = 0,
                manifest: Optional[Union[str, os.PathLike]] = None, sidecar_dir: Optional[Union[str, os.PathLike]] = None,
                write: bool = True, batch_size: int = 16, progress: bool = False) -> PseudoLabelResult:
    """Pseudo-label every clip of ``source`` (a folder of audio or a manifest) and write sidecars
    and a manifest (see the module docstring). ``write=False`` only computes the labels.

    ``model`` is a :class:`~tunecraft.joint.JointEmbeddingModel`, a model directory or a bundle name.
    """
    from ..data.manifest import AudioMeta, sidecar_path, write_manifest
    from .model import JointEmbeddingModel

    src = Path(source).expanduser()
    if not src.exists():
        raise InvalidInput(f"no such audio folder or manifest: {source}")
    vocabs = [v if isinstance(v, Vocabulary) else read_vocabulary(v) for v in vocabularies]
    joint_name = model if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", "in-memory model")
    labeler = PseudoLabeler(None, vocabs, k=k, k_prime=k_prime, seed=seed)  # validates k, k' before loading
    if not isinstance(model, JointEmbeddingModel):
        model = JointEmbeddingModel.from_pretrained(model)
    labeler.model = model
    root, metas, skipped = _inputs(src)
    total = len(metas) + len(skipped)
    if not metas:
        raise InvalidInput(f"no readable audio in {source}" + (f" ({len(skipped)} unreadable file(s))" if skipped else ""))
    emb, kept, bad = embed_audio_files(model, [m.path for m in metas], batch_size=batch_size, progress=progress)
    skipped += bad
    if not kept:
        raise InvalidInput(f"none of the {total} audio file(s) in {source} could be read")
    metas = [metas[i] for i in kept]
    keys = [_relative_key(m.path, root) for m in metas]
    labels = labeler.label(emb, keys)
    record = {"model": str(joint_name), "k": labeler.k, "k_prime": dict(zip((v.name for v in vocabs), labeler.k_prime)),
              "seed": labeler.seed, "clips": len(labels)}
    written: List[Path] = []
    out_metas: List[AudioMeta] = []
    if write:
        side_root = Path(sidecar_dir).expanduser().resolve() if sidecar_dir is not None else None
        final: List[ClipLabels] = []
        for meta, key, lab in zip(metas, keys, labels):
            here = Path(meta.info_path) if meta.info_path and ".zip:" not in meta.info_path else sidecar_path(meta.path)
            here = here.resolve()
            target = (side_root / Path(key).with_suffix(".json")) if side_root is not None else here
            try:
                existing = _read_sidecar(here)
            except InvalidInput as e:
                skipped.append((meta.path, str(e)))
                continue
            _write_json_atomic(target, merge_sidecar(existing, lab, record))
            written.append(target)
            final.append(lab)
            out_metas.append(AudioMeta(path=meta.path, duration=meta.duration, sample_rate=meta.sample_rate,
                                       amplitude=meta.amplitude, weight=meta.weight, info_path=str(target)))
        labels = final
        if not out_metas:
            raise InvalidInput(f"no sidecar of {source} could be written (existing sidecars are not JSON objects)")
        out = Path(manifest).expanduser() if manifest is not None else (
            (side_root if side_root is not None else root) / "pseudolabels.jsonl")
        out.parent.mkdir(parents=True, exist_ok=True)
        manifest_path = write_manifest(out, out_metas)
    else:
        manifest_path = None
    if skipped:
        shown = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        warnings.warn(f"pseudolabel: skipped {len(skipped)} file(s): {shown}" +
                      (f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""), stacklevel=2)
    return PseudoLabelResult(labels, skipped, manifest_path, written, total)


def _relative_key(path: str, root: Path) -> str:
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).as_posix()


# ---- command line --------------------------------------------------------------------------------


def _k_prime_arg(text: str) -> Union[int, List[int]]:
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise InvalidInput(f"--k-prime takes an integer or a comma-separated list of integers, got {text!r}") from None
    if not values:
        raise InvalidInput("--k-prime is empty")
    return values[0] if len(values) == 1 else values


def add_pseudolabel_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``tunecraft data pseudolabel``."""
    parser.add_argument("audio_dir", metavar="AUDIO_DIR", help="folder of audio (searched recursively) or a .jsonl manifest")
    parser.add_argument("--vocab", nargs="+", metavar="FILE", default=list(DEFAULT_VOCABULARIES),
                        help="caption vocabularies: text files, one caption per line, or the shipped names "
                             "'long_form' and 'short_tags' (default: both shipped ones)")
    parser.add_argument("--model", default="joint-tiny", help="joint embedding model directory or bundle (default joint-tiny)")
    parser.add_argument("--k", type=int, default=10, help="candidates per clip and vocabulary (default 10)")
    parser.add_argument("--k-prime", default="3", metavar="N[,N...]",
                        help="captions sampled per clip from each vocabulary, one value or one per --vocab (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the inverse-frequency draws (default 0)")
    parser.add_argument("-o", "--output", metavar="MANIFEST", default=None,
                        help="manifest to write (default: pseudolabels.jsonl in the sidecar root)")
    parser.add_argument("--sidecar-dir", metavar="DIR", default=None,
                        help="write the merged sidecars under DIR (mirroring the input layout) instead of beside the audio")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def cmd_pseudolabel(args: argparse.Namespace) -> int:
    """Run ``tunecraft data pseudolabel`` for parsed arguments (errors raise TunecraftError)."""
    quiet = bool(getattr(args, "quiet", False))
    result = pseudolabel(args.audio_dir, args.vocab, model=args.model, k=args.k, k_prime=_k_prime_arg(args.k_prime),
                         seed=args.seed, manifest=args.output, sidecar_dir=args.sidecar_dir,
                         progress=not quiet and sys.stderr.isatty())
    if not quiet:
        print(str(result))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tunecraft.joint.pseudolabel build-vocab [--out DIR]``: regenerate the shipped vocabularies."""
    parser = argparse.ArgumentParser(prog="python -m tunecraft.joint.pseudolabel")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-vocab", help="write the vocabularies generated from the composer's metadata space")
    b.add_argument("--out", default=str(VOCAB_DIR))
    args = parser.parse_args(argv)

    def build_vocab() -> None:
        for name, path in write_vocabularies(args.out).items():
            print(f"{name}: {path}")

    return run_main(build_vocab)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
