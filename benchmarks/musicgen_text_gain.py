"""How much a MusicGen LM reads its text: held-out cross-entropy with the real caption, with the
null condition (what CFG subtracts), with another clip's caption, and with the clip's own caption
with one fact changed (mode, tempo, tonic).

    python benchmarks/musicgen_text_gain.py runs/musicgen-tiny            # newest checkpoint of a run
    python benchmarks/musicgen_text_gain.py runs/musicgen-tiny/checkpoints/step-00002000.pt --clips 64

The valid split of the run's own recipe (its token cache) is scored in eval mode, the same crops for
all three conditions. ``shuffled - real`` (nats per token) is the information the LM takes from the
prompt: 0 means it ignores the text; ``null - real`` is the gap classifier-free guidance amplifies.
Per-codebook figures are printed too (the first codebook carries most of the musical content).
``fact_gain[edit]`` = CE(counterfactual caption) - CE(real caption) over the clips whose caption
states that fact (:mod:`tunecraft.text.counterfactual`: "major" <-> "minor"; the bpm scaled by
0.65-0.8 or 1.25-1.55; another tonic): what the LM takes from that fact alone. ``--frames N``
scores only the first N frames of each clip (where the audio context has not yet revealed the
facts; the caption-contrast term of ``task.contrast`` works there).

An LM with a beat clock (``task.lm.beat_rates``) gets, for every caption, the clock of the tempo
that caption states (none for the null condition); ``beat_gain`` = CE(real caption, clock moved
half a beat) - CE(real caption) over the clips whose caption states a tempo: how much the LM
places its codes on the beat grid.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunecraft.errors import TunecraftError  # noqa: E402


def text_gain(checkpoint: str, clips: int = 32, batch: int = 8, seed: int = 0, split: str | None = None,
              frames: int | None = None) -> dict:
    """The cross-entropies and gains of the module docstring on ``clips`` clips of ``split``
    (default: the recipe's validation split), on their first ``frames`` frames (default: all)."""
    from tunecraft.text.counterfactual import EDITS, counterfactual
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
    fact_sums = {e: 0.0 for e in EDITS}
    fact_counts = {e: 0 for e in EDITS}
    count = 0
    beat_sum, beat_count = 0.0, 0
    clips_all = [ds[i] for i in range(n)]
    if frames is not None:
        if frames < 1:
            raise TunecraftError(f"frames must be >= 1, got {frames}")
        clips_all = [dict(it, codes=it["codes"][:, :frames], mask=it["mask"][:frames]) for it in clips_all]
    rng = random.Random(seed)
    with torch.no_grad():
        for start in range(0, n, batch):
            items = clips_all[start:start + batch]
            b = task.collate(items)
            texts = list(b["text"])
            real = model.text(texts)
            # another clip's caption: the next one in the whole set (never the clip's own)
            others = [clips_all[(start + i + 1) % n]["text"] for i in range(len(texts))]
            conds = {"real": real, "null": null_condition(real, 1.0, None), "shuffled": model.text(others)}
            offsets = b.get("offset")
            clocks = {"real": model.beat_clock(texts, offsets), "null": None,
                      "shuffled": model.beat_clock(others, offsets)}
            for name, cond in conds.items():
                out = model.lm.compute_loss(b["codes"], cond, None, frame_mask=b["mask"], beat=clocks[name])
                ce = out.ce_per_codebook.double() * len(items)
                sums[name] = ce if sums[name] is None else sums[name] + ce
            count += len(items)
            real_ce = model.lm.sequence_cross_entropy(b["codes"], real, None, frame_mask=b["mask"], beat=clocks["real"])
            if clocks["real"] is not None:
                ticking = clocks["real"][:, 0] > 0
                if bool(ticking.any()):
                    moved = clocks["real"].clone()
                    moved[:, 1] = (moved[:, 1] + 0.5) % 1.0
                    ce = model.lm.sequence_cross_entropy(b["codes"], real, None, frame_mask=b["mask"], beat=moved)
                    beat_sum += float((ce - real_ce)[ticking].double().sum())
                    beat_count += int(ticking.sum())
            for edit in EDITS:
                edited = [counterfactual(t, edit, rng) for t in texts]
                rows = [i for i, t in enumerate(edited) if t is not None]
                if rows:
                    texts_e = [edited[i] for i in rows]
                    ce = model.lm.sequence_cross_entropy(b["codes"][rows], model.text(texts_e), None,
                                                         frame_mask=b["mask"][rows],
                                                         beat=model.beat_clock(texts_e, None if offsets is None
                                                                               else offsets[rows]))
                    fact_sums[edit] += float((ce - real_ce[rows]).double().sum())
                    fact_counts[edit] += len(rows)
    ce = {k: (v / count).tolist() for k, v in sums.items()}
    mean = {k: sum(v) / len(v) for k, v in ce.items()}
    fact_gain = {e: (fact_sums[e] / fact_counts[e] if fact_counts[e] else None) for e in EDITS}
    return {"checkpoint": str(path), "step": int(state["step"]), "split": split or task.data.valid_split, "clips": count,
            "frames": frames, "ce_per_codebook": ce, "ce": mean, "text_gain": mean["shuffled"] - mean["real"],
            "cfg_gap": mean["null"] - mean["real"], "fact_gain": fact_gain, "fact_clips": fact_counts,
            "beat_gain": beat_sum / beat_count if beat_count else None, "beat_clips": beat_count}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a musicgen-lm run directory or step-*.pt checkpoint")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--split", default=None, help="score this split instead of the recipe's validation clips")
    ap.add_argument("--frames", type=int, default=None, help="score only the first N frames of each clip")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        r = text_gain(args.checkpoint, clips=args.clips, split=args.split, frames=args.frames)
    except TunecraftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    span = "" if r["frames"] is None else f", first {r['frames']} frames"
    print(f"{r['checkpoint']} (step {r['step']}, {r['clips']} {r['split']} clips{span}), cross-entropy in nats per token:")
    for name in ("real", "null", "shuffled"):
        per = " ".join(f"{v:.3f}" for v in r["ce_per_codebook"][name])
        print(f"  {name:9s} {r['ce'][name]:.4f}   per codebook: {per}")
    print(f"text gain (shuffled - real): {r['text_gain']:.4f} nats/token; CFG gap (null - real): {r['cfg_gap']:.4f}")
    for edit, gain in r["fact_gain"].items():
        if gain is not None:
            print(f"{edit} gain ({edit} changed - real, {r['fact_clips'][edit]} clips stating it): {gain:.4f} nats/token")
    if r["beat_gain"] is not None:
        print(f"beat gain (clock moved half a beat - real, {r['beat_clips']} clips stating a tempo): "
              f"{r['beat_gain']:.4f} nats/token")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
