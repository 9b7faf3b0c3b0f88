"""Noise2Music inference ablations, as the paper's Figures 2 and 3 do, with the project evaluation.

    python benchmarks/noise2music_quality.py --system noise2music --path waveform --limit 12 --duration 5 \\
        --out runs/n2m-quality-waveform

Two sweeps over one loaded system, each point a full ``tunecraft eval`` run
(:func:`tunecraft.eval.runner.run_evaluation`: the same prompts, seeds and re-rendered references):

* **guidance x step schedule** (paper Figure 2): CFG scale of the generator stage in ``--cfgs``
  (paper: 1, 2, 5, 10, 15) under the ``back-heavy``, ``uniform`` and ``front-heavy`` step
  schedules, at the bundle's default step counts. Plot: FAD (x, lower is better) against the
  joint-model text-audio similarity (y, our MuLan-score stand-in), one curve per schedule.
* **steps x inference time** (paper Figure 3): every stage's default step count multiplied by each
  factor of ``--step-factors``; plot FAD and text-audio similarity against the measured
  generation time per clip.

Every point also records tempo/key/mode/style accuracy, KL and chroma similarity. Results go to
``OUT/results.json`` and ``OUT/guidance_schedule.png`` / ``OUT/steps_time.png``; each point's
eval report stays in ``OUT/<point>/``. One thread is enough on a shared 2-core machine
(``--threads``). The sweeps are long: 15 + N points of ``--limit`` clips each; pick ``--limit``
and ``--duration`` to fit, and ``--skip-guidance`` / ``--skip-steps`` to run one sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunecraft.errors import TunecraftError  # noqa: E402
from tunecraft.eval.runner import EvalSettings, run_evaluation  # noqa: E402
from tunecraft.systems import load_system  # noqa: E402
from tunecraft.systems.noise2music import PATHS, Noise2Music  # noqa: E402

SCHEDULES = ("back-heavy", "uniform", "front-heavy")
KEEP = ("fad", "kld", "text_audio", "chroma", "tempo_acc", "key_acc", "mode_acc", "style_acc", "instrument_acc")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def run_point(system, args, name: str, options: dict) -> dict:
    """One evaluation run; returns the kept metrics, the options and seconds per generated clip."""
    settings = EvalSettings(system=args.system, out=str(Path(args.out) / name), prompts=args.prompts,
                            limit=args.limit, seed=args.seed, duration=args.duration, options=options,
                            images=False, progress=False)
    t0 = time.perf_counter()
    report = run_evaluation(settings, system=system)
    n = max(1, report["prompts"]["count"])
    row = {"name": name, "options": options, "seconds_per_clip": report["timings"]["generate_s"] / n,
           "wall_s": time.perf_counter() - t0}
    row.update({k: report["metrics"].get(k) for k in KEEP})
    shown = ", ".join(f"{k} {row[k]:.3f}" for k in ("fad", "text_audio", "tempo_acc", "key_acc", "mode_acc")
                      if row[k] is not None)
    print(f"{name:28s} {row['seconds_per_clip']:6.1f} s/clip  {shown}", flush=True)
    return row


def plot(results: dict, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is in the [eval] extra; the JSON is written regardless
        print("matplotlib is not installed: no plots (results.json has every figure)")
        return []
    written = []
    title = f"{results['system']} ({results['path']} path, {results['prompts']} prompts x {results['duration']:g} s)"
    if results.get("guidance"):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for schedule in SCHEDULES:
            rows = [r for r in results["guidance"] if r["options"]["step_schedule"] == schedule]
            rows = [r for r in rows if r["fad"] is not None and r["text_audio"] is not None]
            if not rows:
                continue
            ax.plot([r["fad"] for r in rows], [r["text_audio"] for r in rows], "o-", label=schedule[0].upper())
            for r in rows:
                ax.annotate(f"{r['options']['cfg_scale']:g}", (r["fad"], r["text_audio"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("FAD (joint embedding), lower is better")
        ax.set_ylabel("text-audio similarity (joint model)")
        ax.set_title("CFG scale x step schedule\n" + title, fontsize=9)
        ax.legend(title="schedule")
        fig.tight_layout()
        p = out / "guidance_schedule.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    if results.get("steps"):
        rows = sorted(results["steps"], key=lambda r: r["seconds_per_clip"])
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        for ax, key, label in ((axes[0], "fad", "FAD (lower is better)"),
                               (axes[1], "text_audio", "text-audio similarity")):
            pts = [(r["seconds_per_clip"], r[key], r["factor"]) for r in rows if r[key] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
            for x, y, f in pts:
                ax.annotate(f"x{f:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel("generation time per clip (s)")
            ax.set_ylabel(label)
        fig.suptitle("steps (x default) vs inference time\n" + title, fontsize=9)
        fig.tight_layout()
        p = out / "steps_time.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--system", default="noise2music", help="Noise2Music bundle name or directory")
    ap.add_argument("--path", default=None, help="waveform or spectrogram (default: the bundle's)")
    ap.add_argument("--prompts", default=None, help="prompt set (default: the shipped benchmark)")
    ap.add_argument("--limit", type=int, default=12, help="prompts per point (default 12)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per clip (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cfgs", default="1,2,5,10,15", help="generator CFG scales (paper: 1,2,5,10,15)")
    ap.add_argument("--step-factors", default="0.25,0.5,1,2", help="multiples of every stage's default steps")
    ap.add_argument("--skip-guidance", action="store_true")
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/n2m-quality")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        system = load_system(args.system)
        if not isinstance(system, Noise2Music):
            raise TunecraftError(f"{args.system} is a {system.system_name} system, not noise2music")
        path = system._check_path(args.path)
        cfgs, factors = _floats(args.cfgs), _floats(args.step_factors)
        if not cfgs or not factors or min(cfgs) < 0 or min(factors) <= 0:
            raise TunecraftError("--cfgs must be numbers >= 0 and --step-factors numbers > 0")
    except TunecraftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    defaults = system.stage_options(path)
    results = {"system": args.system, "path": path, "prompts": args.limit, "duration": args.duration,
               "seed": args.seed, "threads": args.threads, "defaults": defaults, "guidance": [], "steps": []}
    generator = PATHS[path][0]
    if not args.skip_guidance:
        for schedule in SCHEDULES:
            for cfg in cfgs:
                opts = {"path": path, "cfg_scale": cfg, "step_schedule": schedule}
                results["guidance"].append(run_point(system, args, f"{schedule}-cfg{cfg:g}", opts))
    if not args.skip_steps:
        for f in factors:
            steps = {name: max(1, round(defaults[name]["steps"] * f)) for name in PATHS[path]}
            row = run_point(system, args, f"steps-x{f:g}", {"path": path, "steps": steps})
            row["factor"] = f
            results["steps"].append(row)
    results["generator_stage"] = generator
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for p in plot(results, out):
        print(f"wrote {p}")
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
