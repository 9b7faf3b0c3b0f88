"""How much a MusicGen LM reads its text: held-out cross-entropy with the real caption, with the
null condition (what CFG subtracts), with another clip's caption, and with the clip's own caption
with "major" and "minor" swapped.

    python benchmarks/musicgen_text_gain.py runs/musicgen-tiny            # newest checkpoint of a run
    python benchmarks/musicgen_text_gain.py runs/musicgen-tiny/checkpoints/step-00002000.pt --clips 64

The valid split of the run's own recipe (its token cache) is scored in eval mode, the same crops for
all three conditions. ``shuffled - real`` (nats per token) is the information the LM takes from the
prompt: 0 means it ignores the text; ``null - real`` is the gap classifier-free guidance amplifies.
Per-codebook figures are printed too (the first codebook carries most of the musical content).
``mode_gain`` = CE(caption with the mode swapped) - CE(real caption), over the clips whose caption
names a mode: what the LM takes from the word "major"/"minor" alone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunecraft.errors import TunecraftError  # noqa: E402


_MODE = re.compile(r"\b(major|minor|Major|Minor|MAJOR|MINOR)\b")
_SWAP = {"major": "minor", "minor": "major", "Major": "Minor", "Minor": "Major", "MAJOR": "MINOR", "MINOR": "MAJOR"}


def swap_mode(text: str) -> str:
    """``text`` with every "major" and "minor" exchanged (case kept)."""
    return _MODE.sub(lambda m: _SWAP[m.group(0)], text)


def text_gain(checkpoint: str, clips: int = 32, batch: int = 8, seed: int = 0, split: str | None = None) -> dict:
    """The cross-entropies and gains of the module docstring on ``clips`` clips of ``split``
    (default: the recipe's validation split)."""
    from tunecraft.text.states import null_condition
    from tunecraft.train.export import load_run_checkpoint

    path, state, recipe = load_run_checkpoint(checkpoint)
    if recipe.task_name != "musicgen-lm":
        raise TunecraftError(f"{path} is a {recipe.task_name} run, not musicgen-lm")
    task = recipe.task
    model = task.build_model()
    model.load_state_dict(state["model"])
    model.eval()
    if split is None:
        ds = task.build_valid_dataset()
    else:
        cache = task.tokens(split)
        ds = None if cache is None else task._dataset(cache, random=False, limit=clips)
    if ds is None or len(ds) == 0:
        raise TunecraftError(f"no {split or 'validation'} clips in the run's data source")
    torch.manual_seed(seed)
    n = min(clips, len(ds))
    sums = {"real": None, "null": None, "shuffled": None}
    mode_sums = {"real": None, "swapped": None}
    count = mode_count = 0
    clips_all = [ds[i] for i in range(n)]
    with torch.no_grad():
        for start in range(0, n, batch):
            items = clips_all[start:start + batch]
            b = task.collate(items)
            texts = list(b["text"])
            real = model.text(texts)
            # another clip's caption: the next one in the whole set (never the clip's own)
            others = [clips_all[(start + i + 1) % n]["text"] for i in range(len(texts))]
            conds = {"real": real, "null": null_condition(real, 1.0, None), "shuffled": model.text(others)}
            for name, cond in conds.items():
                out = model.lm.compute_loss(b["codes"], cond, None, frame_mask=b["mask"])
                ce = out.ce_per_codebook.double() * len(items)
                sums[name] = ce if sums[name] is None else sums[name] + ce
            count += len(items)
            named = [i for i, t in enumerate(texts) if swap_mode(t) != t]
            if named:
                sub = task.collate([items[i] for i in named])
                for name, caps in (("real", [texts[i] for i in named]), ("swapped", [swap_mode(texts[i]) for i in named])):
                    out = model.lm.compute_loss(sub["codes"], model.text(caps), None, frame_mask=sub["mask"])
                    ce = out.ce_per_codebook.double() * len(named)
                    mode_sums[name] = ce if mode_sums[name] is None else mode_sums[name] + ce
                mode_count += len(named)
    ce = {k: (v / count).tolist() for k, v in sums.items()}
    mean = {k: sum(v) / len(v) for k, v in ce.items()}
    mode_gain = None
    if mode_count:
        m = {k: float(v.mean()) / mode_count for k, v in mode_sums.items()}
        mode_gain = m["swapped"] - m["real"]
    return {"mode_clips": mode_count, "mode_gain": mode_gain, "checkpoint": str(path), "step": int(state["step"]), "split": split or task.data.valid_split, "clips": count, "ce_per_codebook": ce,
            "ce": mean, "text_gain": mean["shuffled"] - mean["real"], "cfg_gap": mean["null"] - mean["real"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a musicgen-lm run directory or step-*.pt checkpoint")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--split", default=None, help="score this split instead of the recipe's validation clips")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        r = text_gain(args.checkpoint, clips=args.clips, split=args.split)
    except TunecraftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{r['checkpoint']} (step {r['step']}, {r['clips']} {r['split']} clips), cross-entropy in nats per token:")
    for name in ("real", "null", "shuffled"):
        per = " ".join(f"{v:.3f}" for v in r["ce_per_codebook"][name])
        print(f"  {name:9s} {r['ce'][name]:.4f}   per codebook: {per}")
    print(f"text gain (shuffled - real): {r['text_gain']:.4f} nats/token; CFG gap (null - real): {r['cfg_gap']:.4f}")
    if r["mode_gain"] is not None:
        print(f"mode gain (mode swapped - real, {r['mode_clips']} clips naming a mode): {r['mode_gain']:.4f} nats/token")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
