"""Benchmark the procedural corpus: synthesis speed and audible tempo/key agreement.

Synthesizes ``--n`` clips with :func:`tunecraft.data.synth.synthesize_corpus`,
reports the wall time and the x-real-time rate, then estimates tempo and key from
the written audio with :mod:`tunecraft.eval.attributes` (librosa-based, no shared
code with the composer) and reports how often they agree with the sidecars:

* tempo: within 6% of the sidecar BPM (strict), and allowing metrical-level
  errors (1/2x, 2x, 1/3x, 3x);
* key: exact tonic and mode, and relaxed (relative, parallel, or a fifth away).

Usage::

    python benchmarks/corpus.py --n 200 --duration 10 --seed 1 [--workers N] [--out DIR] [--eval-n N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunecraft.data.synth import synthesize_corpus  # noqa: E402
from tunecraft.eval.attributes import estimate_key, estimate_tempo, key_match, tempo_match  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="clips to synthesize")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per clip")
    ap.add_argument("--seed", type=int, default=1, help="corpus seed")
    ap.add_argument("--workers", type=int, default=1, help="synthesis processes")
    ap.add_argument("--sample-rate", type=int, default=32000)
    ap.add_argument("--soundfont", default=None, help=".sf2 file (default: pretty_midi's TimGM6mb.sf2)")
    ap.add_argument("--out", default=None, help="corpus folder (default: a temporary folder)")
    ap.add_argument("--eval-n", type=int, default=None, help="clips to analyse (default: all)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "corpus"
        summary = synthesize_corpus(out, n=args.n, duration=args.duration, seed=args.seed,
                                    sample_rate=args.sample_rate, soundfont=args.soundfont, workers=args.workers)
        print(f"synthesized {summary['clips']} clips x {args.duration:g} s = {summary['seconds']:.0f} s of audio "
              f"in {summary['wall_time']:.1f} s wall ({summary['realtime_factor']:.0f}x real time, "
              f"{args.workers} worker(s)); splits {summary['splits']}")

        lines = [json.loads(x) for x in (out / "data.jsonl").read_text().splitlines()]
        lines = lines[: args.eval_n] if args.eval_n else lines
        per_style: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(5, dtype=int))
        t0 = time.perf_counter()
        for entry in lines:
            side = json.loads((out / entry["info_path"]).read_text())
            wav, sr = sf.read(str(out / entry["path"]), dtype="float32", always_2d=True)
            bpm = estimate_tempo(wav.T, sr)
            tonic, mode, _ = estimate_key(wav.T, sr)
            row = per_style[side["style"]]
            row += [1, tempo_match(bpm, side["bpm"]), tempo_match(bpm, side["bpm"], allow_octave=True),
                    key_match((tonic, mode), side["key"]), key_match((tonic, mode), side["key"], mode="relaxed")]
        analysis = time.perf_counter() - t0

    total = sum(per_style.values())
    n = int(total[0])
    print(f"\nanalysed {n} clips in {analysis:.1f} s (librosa onset autocorrelation tempo, "
          f"CLP-chroma Krumhansl-Kessler key)")
    print(f"{'style':12s} {'clips':>5s} {'tempo':>7s} {'tempo±oct':>9s} {'key':>7s} {'key~':>7s}")
    for style in sorted(per_style):
        r = per_style[style]
        print(f"{style:12s} {r[0]:5d} {r[1] / r[0]:7.0%} {r[2] / r[0]:9.0%} {r[3] / r[0]:7.0%} {r[4] / r[0]:7.0%}")
    rates = {"tempo_strict": total[1] / n, "tempo_octave": total[2] / n, "key_exact": total[3] / n,
             "key_relaxed": total[4] / n}
    print(f"{'all':12s} {n:5d} {rates['tempo_strict']:7.1%} {rates['tempo_octave']:9.1%} "
          f"{rates['key_exact']:7.1%} {rates['key_relaxed']:7.1%}")
    print("tempo: within 6% of the sidecar BPM (tempo±oct also accepts 1/2x, 2x, 1/3x, 3x); "
          "key: exact tonic+mode (key~ also accepts relative, parallel and fifth-related keys)")
    if args.json:
        Path(args.json).write_text(json.dumps({"synthesis": summary, "analysed": n,
                                               **{k: round(float(v), 4) for k, v in rates.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
