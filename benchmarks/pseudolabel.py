"""How often pseudo-labels of held-out clips recover their true style / tempo bucket / key / mode.

The clips of a corpus split (default: the test split of data/synth) are pseudo-labelled with the
joint model and the shipped vocabularies exactly as ``tunecraft data pseudolabel`` does (top K by
cosine per vocabulary, K' sampled with p ∝ 1/frequency over the split; nothing is written). Each
caption is then read back into attributes with a parser that knows the vocabulary's words:

* style: genre phrases of the composer's style families ("bossa nova" -> latin, longest first);
* tempo bucket: the tempo words (slow / mid-tempo / upbeat / fast and their synonyms) and
  "N bpm" values mapped with the composer's thresholds (slow < 76 <= moderate < 108 <= upbeat
  < 140 <= fast); instrument names such as "slow strings" are removed first;
* key: "<tonic> major|minor"; mode: the key's mode or "major key" / "minor key".

Rates per attribute (fractions of clips):

* ``sampled``: the true value is mentioned by one of the clip's K' sampled labels (all vocabularies);
* ``top_k``: ... by one of its K candidates;
* ``first``: among clips whose candidates mention the attribute at all, the highest-ranked
  mention is correct (precision of the best-ranked label for that attribute);
* ``chance``: ``sampled`` with every clip's labels swapped for those of another clip of the
  split (a random derangement, mean of 50 draws): what label frequencies alone give.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pseudolabel.py --source data/synth --split test \\
        --json runs/pseudolabel/recovery.json --plot runs/pseudolabel/recovery.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunecraft.data import load_info  # noqa: E402
from tunecraft.data.composer import STYLES, gm_name, tempo_word  # noqa: E402
from tunecraft.data.manifest import read_manifest, resolve_split  # noqa: E402
from tunecraft.joint.pseudolabel import TEMPO_BUCKET_WORDS, pseudolabel  # noqa: E402

ATTRIBUTES = ("style", "tempo", "key", "mode")
_GENRES = sorted({(g.lower(), s.name) for s in STYLES.values() for g in s.genres}, key=lambda x: -len(x[0]))
_INSTRUMENTS = sorted({gm_name(p) for s in STYLES.values() for p in s.lead + s.chords + s.bass + s.pad + s.arp},
                      key=len, reverse=True)
_TEMPO_WORDS = sorted(((w, b) for b, ws in TEMPO_BUCKET_WORDS.items() for w in ws), key=lambda x: -len(x[0]))
_KEY_RE = re.compile(r"\b([A-G](?:b|#)?) (major|minor)\b")
_BPM_RE = re.compile(r"\b(\d{2,3}) ?bpm\b", re.IGNORECASE)


def caption_attributes(text: str) -> Dict[str, Set[str]]:
    """The attribute values a caption mentions: ``{"style", "tempo", "key", "mode"} -> set``."""
    out: Dict[str, Set[str]] = {a: set() for a in ATTRIBUTES}
    low = f" {text.lower()} "
    rest = low
    for genre, style in _GENRES:
        pat = re.compile(rf"(?<![\w-]){re.escape(genre)}(?![\w-])")
        if pat.search(rest):
            out["style"].add(style)
            rest = pat.sub(" ", rest)
    no_instr = low
    for name in _INSTRUMENTS:
        no_instr = no_instr.replace(name, " ")
    for word, bucket in _TEMPO_WORDS:
        pat = re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])")
        if pat.search(no_instr):
            out["tempo"].add(bucket)
            no_instr = pat.sub(" ", no_instr)
    for m in _BPM_RE.finditer(text):
        out["tempo"].add(tempo_word(float(m.group(1))))
    for m in _KEY_RE.finditer(text):
        out["key"].add(f"{m.group(1)} {m.group(2)}")
        out["mode"].add(m.group(2))
    for mode in ("major", "minor"):
        if f"{mode} key" in low:
            out["mode"].add(mode)
    return out


def truth(info: dict) -> Dict[str, str]:
    return {"style": info["style"], "tempo": tempo_word(float(info["bpm"])), "key": info["key"],
            "mode": info["key"].split()[-1]}


def mentioned(captions: List[str]) -> Dict[str, Set[str]]:
    out: Dict[str, Set[str]] = {a: set() for a in ATTRIBUTES}
    for c in captions:
        for a, vals in caption_attributes(c).items():
            out[a] |= vals
    return out


def first_mention(ranked: List[str], attribute: str) -> Optional[Set[str]]:
    for c in ranked:
        vals = caption_attributes(c)[attribute]
        if vals:
            return vals
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="data/synth")
    p.add_argument("--split", default="test")
    p.add_argument("--model", default="joint-tiny")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--k-prime", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--plot", default="", help="write a bar chart (PNG) here")
    args = p.parse_args()
    t0 = time.time()
    manifest = resolve_split(args.source, args.split)
    if manifest is None:
        print(f"error: {args.source} has no {args.split}.jsonl", file=sys.stderr)
        return 2
    result = pseudolabel(manifest, model=args.model, k=args.k, k_prime=args.k_prime, seed=args.seed, write=False)
    infos = {}
    for meta in read_manifest(manifest):
        key = Path(meta.path).relative_to(Path(manifest).parent.resolve()).as_posix() \
            if Path(meta.path).is_absolute() else meta.path
        infos[key] = load_info(meta)
    labels = result.labels
    truths = [truth(infos[lab.key]) for lab in labels]
    sampled = [mentioned(lab.captions) for lab in labels]
    topk = [mentioned([c for v in lab.top_k.values() for c, _ in v]) for lab in labels]
    ranked = [[c for c, _ in sorted(((c, s) for v in lab.top_k.values() for c, s in v), key=lambda x: -x[1])]
              for lab in labels]
    n = len(labels)
    rng = np.random.default_rng(0)
    rates: Dict[str, Dict[str, float]] = {}
    for a in ATTRIBUTES:
        hit_s = [t[a] in m[a] for t, m in zip(truths, sampled)]
        hit_k = [t[a] in m[a] for t, m in zip(truths, topk)]
        firsts = [(t[a], first_mention(r, a)) for t, r in zip(truths, ranked)]
        firsts = [(t, f) for t, f in firsts if f is not None]
        chance = []
        for _ in range(50):
            perm = rng.permutation(n)
            while n > 1 and (perm == np.arange(n)).any():
                perm = rng.permutation(n)
            chance.append(np.mean([truths[i][a] in sampled[j][a] for i, j in enumerate(perm)]))
        rates[a] = {"sampled": float(np.mean(hit_s)), "top_k": float(np.mean(hit_k)),
                    "first": float(np.mean([t in f for t, f in firsts])) if firsts else 0.0,
                    "first_coverage": len(firsts) / n, "chance": float(np.mean(chance)),
                    "sampled_mentions": float(np.mean([bool(m[a]) for m in sampled]))}
    out = {"source": str(manifest), "clips": n, "skipped": len(result.skipped), "model": args.model,
           "k": args.k, "k_prime": args.k_prime, "seed": args.seed, "rates": rates,
           "example": {"clip": labels[0].key, "truth": truths[0], "sampled": labels[0].sampled},
           "seconds": round(time.time() - t0, 1)}
    print(f"{n} clips of {manifest} (K={args.k}, K'={args.k_prime} per vocabulary, {args.model})")
    print("attribute   sampled K'   top-K   first mention (coverage)   chance (shuffled)")
    for a in ATTRIBUTES:
        r = rates[a]
        print(f"{a:<10}  {r['sampled']:10.3f}  {r['top_k']:6.3f}  {r['first']:8.3f} ({r['first_coverage']:.2f})"
              f"          {r['chance']:8.3f}")
    print(f"{out['seconds']} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        kinds = [("sampled", f"K'={args.k_prime} sampled"), ("top_k", f"top K={args.k}"),
                 ("first", "best-ranked mention"), ("chance", "chance (shuffled clips)")]
        x = np.arange(len(ATTRIBUTES))
        w = 0.2
        for j, (k, label) in enumerate(kinds):
            vals = [rates[a][k] for a in ATTRIBUTES]
            bars = ax.bar(x + (j - 1.5) * w, vals, w, label=label, color=("#1f77b4", "#2ca02c", "#ff7f0e", "#999999")[j])
            for b, v in zip(bars, vals):
                ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=6)
        ax.set_xticks(x)
        ax.set_xticklabels(["style", "tempo bucket", "key", "mode"])
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("fraction of held-out clips")
        ax.set_title(f"Pseudo-label recovery of true tags ({n} {args.split} clips, {args.model})", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
