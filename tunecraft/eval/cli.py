"""Command-line glue of ``tunecraft eval`` (the main CLI registers it with a few lines)::

    tunecraft eval --system NAME [--prompts FILE] [--reference DIR] [--limit N] [--seed N]
                   [--steps N] [--cfg X] [--temperature X] [--top-k N] [--top-p X]
                   [--step-schedule NAME] [--eta X] [--path NAME] [--duration S] [--melody] [--out DIR]

See :mod:`tunecraft.eval.runner` for what is generated, scored and written.
"""

from __future__ import annotations

import argparse
import re
import sys

from ..sampling_flags import add_sampling_arguments, sampling_kwargs

__all__ = ["add_eval_arguments", "cmd_eval"]


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``eval`` arguments to ``parser`` (a sub-command parser)."""
    parser.add_argument("--system", default="musicgen",
                        help="bundle name, system family or model directory (default: musicgen)")
    parser.add_argument("--prompts", metavar="FILE", default=None,
                        help="prompt set (.jsonl with targets and composer parameters, or .txt); default: the "
                             "shipped 24-prompt benchmark of held-out corpus clips")
    parser.add_argument("--reference", metavar="DIR", default=None,
                        help="folder of reference audio (files named <prompt id>.wav pair with that prompt, else in "
                             "sorted order); default: re-render each prompt's reference with the composer")
    parser.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    parser.add_argument("--seed", type=int, default=0, help="prompt i is generated with seed + i (default 0)")
    add_sampling_arguments(parser)
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per generation (default: the prompt's duration, else 10)")
    parser.add_argument("--melody", action="store_true",
                        help="condition on each reference's chromagram (systems with the melody capability)")
    parser.add_argument("--fad-embedder", default="joint",
                        help="FAD embedding: joint (default), joint:/dir, clap:/local/clap/dir")
    parser.add_argument("--classifier", default="tag-classifier", help="tag classifier for KL and style/instrument accuracy")
    parser.add_argument("--joint", default="joint-tiny", help="joint model for text-audio similarity (and FAD)")
    parser.add_argument("--no-images", dest="images", action="store_false", help="no spectrogram/chroma images in report.html")
    parser.add_argument("--device", default=None, help="torch device of the system")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default: eval-<system>)")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``tunecraft eval`` for parsed arguments; errors propagate as TunecraftError."""
    from .runner import EvalSettings, run_evaluation

    out = args.out or "eval-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", str(args.system)).strip("._") or "system")
    quiet = bool(getattr(args, "quiet", False))
    settings = EvalSettings(system=args.system, out=out, prompts=args.prompts, reference=args.reference,
                            limit=args.limit, seed=args.seed, options=sampling_kwargs(args),
                            duration=args.duration, fad_embedder=args.fad_embedder, classifier=args.classifier,
                            joint=args.joint, melody=args.melody, images=args.images, device=args.device,
                            progress=not quiet and sys.stderr.isatty())
    report = run_evaluation(settings)
    if not quiet:
        m = report["metrics"]
        shown = ", ".join(f"{k} {m[k]:.3f}" for k in ("fad", "kld", "text_audio", "chroma", "tempo_acc", "key_acc",
                                                      "mode_acc", "tempo_steady") if m.get(k) is not None)
        print(f"{report['prompts']['count']} prompts in {report['timings']['total_s']:.1f} s: {shown}")
        chance = report.get("chance_accuracy") or {}
        if chance:
            print("chance level (each clip against the other prompts' targets): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in chance.items()))
        p_values = report.get("p_values") or {}
        if p_values:
            print("p-value of each accuracy (permutation test, 10,000 draws): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in p_values.items()))
        print(f"wrote {out}/report.json and {out}/report.html")
    return 0
