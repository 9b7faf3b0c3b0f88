"""Text <-> audio retrieval with the joint embedding on held-out clips.

For each clip of a split, its audio embedding (whole clip, 10 s window mean) and the text
embedding of each of its sidecar captions are computed. For caption slot ``k`` (0 = the long
description, 1 = tag list, ... as written by ``tunecraft data synth``) we rank all N clips for
every caption (text -> audio) and all N captions of slot k for every clip (audio -> text), and
report recall@1 / recall@10: the fraction of queries whose match is in the top 1 / 10.
Chance is k / N. Also reported: the mean cosine of matching pairs vs of all pairs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/joint_retrieval.py \
        --model tunecraft/bundles/joint-tiny --source data/synth --split test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunecraft.audio.io import load_audio  # noqa: E402
from tunecraft.codecs.tasks import resolve_split  # noqa: E402
from tunecraft.data import AudioDataset, load_info  # noqa: E402
from tunecraft.joint import JointEmbeddingModel  # noqa: E402
from tunecraft.joint.task import captions_of  # noqa: E402


def recall_at(sims: torch.Tensor, k: int) -> float:
    """``sims [Q, N]`` with the match of query i at column i: fraction with the match in the top k."""
    k = min(k, sims.shape[1])
    top = sims.topk(k, dim=1).indices
    return float((top == torch.arange(sims.shape[0])[:, None]).any(1).float().mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="joint-tiny", help="model directory or bundle name")
    p.add_argument("--source", default="data/synth")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="use the first N clips (0: all)")
    p.add_argument("--json", default="", help="also write the results to this file")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    t0 = time.time()
    model = JointEmbeddingModel.from_pretrained(args.model)
    manifest = resolve_split(args.source, args.split) or args.source
    metas = AudioDataset(manifest, return_info=False, check_headers=True).metas
    if args.limit:
        metas = metas[: args.limit]
    wavs, caps = [], []
    for m in metas:
        c = captions_of(load_info(m))
        if not c:
            continue
        wav, _ = load_audio(m.path, sample_rate=model.sample_rate, channels=1)
        wavs.append(wav)
        caps.append(c)
    n = len(wavs)
    audio = torch.cat([model.embed_audio(w[None], model.sample_rate) for w in wavs])
    slots = min(len(c) for c in caps)
    results = {"model": str(args.model), "split": args.split, "clips": n,
               "chance_r1": 1.0 / n, "chance_r10": min(10, n) / n, "slots": []}
    for k in range(slots):
        text = model.embed_text([c[k] for c in caps])
        sims = text @ audio.T  # [N texts, N clips]
        off = sims[~torch.eye(n, dtype=torch.bool)]
        results["slots"].append({
            "slot": k, "example": caps[0][k][:80],
            "t2a_r1": recall_at(sims, 1), "t2a_r10": recall_at(sims, 10),
            "a2t_r1": recall_at(sims.T, 1), "a2t_r10": recall_at(sims.T, 10),
            "cos_match": float(sims.diag().mean()), "cos_other": float(off.mean()),
        })
    keys = ("t2a_r1", "t2a_r10", "a2t_r1", "a2t_r10")
    results["mean"] = {key: sum(s[key] for s in results["slots"]) / slots for key in keys}
    results["seconds"] = round(time.time() - t0, 1)
    print(f"{n} {args.split} clips; chance R@1 {results['chance_r1']:.3f}, R@10 {results['chance_r10']:.3f}")
    print("slot  t2a R@1  t2a R@10  a2t R@1  a2t R@10  cos(match)  cos(other)  caption example")
    for s in results["slots"]:
        print(f"{s['slot']:>4}  {s['t2a_r1']:7.3f}  {s['t2a_r10']:8.3f}  {s['a2t_r1']:7.3f}  {s['a2t_r10']:8.3f}  "
              f"{s['cos_match']:10.3f}  {s['cos_other']:10.3f}  {s['example']}")
    m = results["mean"]
    print(f"mean  {m['t2a_r1']:7.3f}  {m['t2a_r10']:8.3f}  {m['a2t_r1']:7.3f}  {m['a2t_r10']:8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
