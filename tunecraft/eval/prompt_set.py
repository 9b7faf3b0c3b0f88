"""Evaluation prompt sets, and the shipped benchmark set with composer-rendered references.

A prompt set is a ``.jsonl`` file, one object per prompt::

    {"id": "000123_jazz", "prompt": "A smoky jazz tune led by tenor sax ... (142 bpm, Eb minor).",
     "duration": 10.0, "bpm": 142, "key": "Eb minor", "tonic": "Eb", "mode": "minor",
     "style": "jazz", "instrument": "tenor sax",
     "composer": {"seed": 8116..., "duration": 10.0, "styles": null, "sample_rate": 32000,
                  "channels": 2, "soundfont": null, "corpus_seed": 1, "index": 123}}

Only ``prompt`` is required (``description`` or ``text`` are read as well, and a ``.txt`` file
holds one prompt per line). The attribute fields are the targets of the accuracy metrics;
``composer`` holds what :func:`tunecraft.data.synth.synthesize_clip` used for the clip, so the
reference audio is re-rendered bit for bit by :func:`render_reference` (compose the clip seed with
the same style restriction, render with the same SoundFont, rate, channels and duration) and no
audio has to ship.

The shipped set (:data:`BENCHMARK_PROMPTS`, ``tunecraft/eval/prompts/benchmark.jsonl``) holds 24
held-out clips (test split of the corpus ``tunecraft data synth --n 2000 --duration 10 --seed 1``),
two per style family, captioned with their long-form description. It was written by::

    python -m tunecraft.eval.prompt_set build --source data/synth --split test --per-style 2 \\
        -o tunecraft/eval/prompts/benchmark.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ..errors import InvalidInput, InvalidPrompt, run_main
from ..prompt_file import iter_prompt_records

__all__ = ["BENCHMARK_PROMPTS", "PromptItem", "build_prompt_set", "read_prompt_set", "render_reference"]

BENCHMARK_PROMPTS = Path(__file__).resolve().parent / "prompts" / "benchmark.jsonl"
_TARGET_FIELDS = ("bpm", "key", "tonic", "mode", "style", "instrument")


@dataclasses.dataclass
class PromptItem:
    """One prompt of a set: its text, optional targets and optional composer parameters."""

    id: str
    prompt: str
    duration: Optional[float] = None
    bpm: Optional[float] = None
    key: Optional[str] = None
    tonic: Optional[str] = None
    mode: Optional[str] = None
    style: Optional[str] = None
    instrument: Optional[str] = None
    composer: Optional[Dict[str, Any]] = None

    @property
    def targets(self) -> Dict[str, Any]:
        """The attribute targets this prompt asks for (missing ones left out)."""
        return {f: getattr(self, f) for f in _TARGET_FIELDS if getattr(self, f) not in (None, "")}

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _item(obj: Dict[str, Any], where: str, n: int) -> PromptItem:
    prompt = obj.get("prompt", obj.get("description", obj.get("text")))
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidPrompt(f"{where}: empty prompt")
    item_id = str(obj.get("id") or f"{n:04d}")
    kw: Dict[str, Any] = {}
    if obj.get("duration") is not None:
        try:
            kw["duration"] = float(obj["duration"])
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}: duration must be a number, got {obj['duration']!r}") from None
        if not kw["duration"] > 0:
            raise InvalidInput(f"{where}: duration must be > 0")
    bpm = obj.get("bpm", obj.get("tempo"))
    if bpm is not None:
        try:
            kw["bpm"] = float(bpm)
        except (TypeError, ValueError):
            raise InvalidInput(f"{where}: bpm must be a number, got {bpm!r}") from None
        if not kw["bpm"] > 0:
            raise InvalidInput(f"{where}: bpm must be > 0")
    for f in ("key", "tonic", "mode", "style", "instrument"):
        if obj.get(f) is not None:
            kw[f] = str(obj[f]).strip()
    if kw.get("key"):
        from .attributes import _parse_key

        _parse_key(kw["key"])  # fails with a clear message on a bad key
        kw.setdefault("mode", kw["key"].split()[-1].lower() if len(kw["key"].split()) > 1 else None)
    if kw.get("mode") and kw["mode"].lower() not in ("major", "minor"):
        raise InvalidInput(f"{where}: mode must be 'major' or 'minor', got {kw['mode']!r}")
    comp = obj.get("composer")
    if comp is not None:
        if not isinstance(comp, dict) or not isinstance(comp.get("seed"), int) or comp["seed"] < 0:
            raise InvalidInput(f"{where}: 'composer' must be an object with a non-negative integer 'seed'")
        kw["composer"] = dict(comp)
    return PromptItem(id=item_id, prompt=prompt.strip(), **kw)


def read_prompt_set(path: Union[str, Path, None] = None) -> List[PromptItem]:
    """Read a prompt set (``.jsonl`` objects or ``.txt`` lines); ``None`` reads the shipped benchmark."""
    p = Path(path).expanduser() if path is not None else BENCHMARK_PROMPTS
    items: List[PromptItem] = []
    for where, obj in iter_prompt_records(p, p):
        items.append(_item(obj, where, len(items)))
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"prompts file {p} repeats an id")
    return items


def render_reference(item: PromptItem) -> Tuple[torch.Tensor, int]:
    """Re-render a prompt's reference clip from its composer parameters: ``(wav [C, T], sr)``."""
    if not item.composer:
        raise InvalidInput(f"prompt {item.id} has no composer parameters to render a reference from")
    from ..data.composer import ComposerConfig, compose
    from ..data.render import render

    c = item.composer
    duration = float(c.get("duration") or item.duration or 10.0)
    sr = int(c.get("sample_rate", 32000))
    comp = compose(int(c["seed"]), duration, config=ComposerConfig(styles=c.get("styles")))
    audio = render(comp, sample_rate=sr, soundfont=c.get("soundfont"), duration=duration,
                   channels=int(c.get("channels", 2)))
    # the corpus stores 16-bit PCM: quantise the same way so the reference equals the corpus file
    wav = torch.from_numpy(audio).double().mul(32767.0).round().clamp(-32768, 32767).div(32768.0).float()
    return wav, sr


def build_prompt_set(source: Union[str, Path], split: str = "test", per_style: int = 2,
                     caption: int = 0) -> List[Dict[str, Any]]:
    """Prompt-set lines from a corpus written by ``tunecraft data synth``: the first ``per_style``
    clips (by index) of ``split`` for every style, captioned with sidecar caption ``caption``."""
    from ..data import AudioDataset, load_info
    from ..data.manifest import resolve_split

    manifest = resolve_split(source, split)
    if manifest is None:
        raise InvalidInput(f"{source} has no non-empty {split}.jsonl (is it a `tunecraft data synth` corpus?)")
    corpus_file = Path(source) / "corpus.json"
    try:
        corpus = json.loads(corpus_file.read_text())["config"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise InvalidInput(f"cannot read {corpus_file}: {e}") from None
    soundfont = corpus.get("soundfont")
    if soundfont and "pretty_midi" in str(soundfont):
        soundfont = None  # the default SoundFont: found on the user's machine, not by our path
    taken: Dict[str, int] = {}
    lines = []
    for meta in AudioDataset(manifest, return_info=False).metas:
        info = load_info(meta)
        style = info.get("style")
        caps = info.get("captions") or [info.get("description")]
        if not style or taken.get(style, 0) >= per_style or len(caps) <= caption or not caps[caption]:
            continue
        taken[style] = taken.get(style, 0) + 1
        lines.append({
            "id": info.get("id") or Path(meta.path).stem, "prompt": caps[caption],
            "duration": float(info.get("duration") or meta.duration), "bpm": info.get("bpm"),
            "key": info.get("key"), "tonic": info.get("tonic"), "mode": info.get("mode"), "style": style,
            "instrument": info.get("instrument"),
            "composer": {"seed": int(info["seed"]), "duration": float(corpus["duration"]),
                         "styles": corpus.get("styles"), "sample_rate": int(corpus["sample_rate"]),
                         "channels": int(corpus["channels"]), "soundfont": soundfont,
                         "corpus_seed": int(info.get("corpus_seed", corpus["seed"])), "index": int(info["index"])},
        })
    lines.sort(key=lambda x: (x["style"], x["composer"]["index"]))
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tunecraft.eval.prompt_set build ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tunecraft.eval.prompt_set")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write a prompt set from a synthesized corpus")
    b.add_argument("--source", default="data/synth")
    b.add_argument("--split", default="test")
    b.add_argument("--per-style", type=int, default=2)
    b.add_argument("--caption", type=int, default=0, help="which sidecar caption (0: the long description)")
    b.add_argument("-o", "--output", default=str(BENCHMARK_PROMPTS))
    args = parser.parse_args(argv)

    def build() -> None:
        lines = build_prompt_set(args.source, args.split, args.per_style, args.caption)
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
        print(f"wrote {len(lines)} prompts to {out}")

    return run_main(build)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
