"""The ``tunecraft`` command line.

    tunecraft generate "PROMPT" [--system NAME] [--duration S] [--seed N] [--cfg X] [--steps N] -o FILE.wav
    tunecraft generate --prompts prompts.txt|prompts.jsonl -o OUTDIR
    tunecraft systems [--json]
    tunecraft data synth --n 200 --duration 10 --seed 1 --out DIR
    tunecraft data music21 --out DIR [--limit N]
    tunecraft data manifest DIR [-o data.jsonl]
    tunecraft data pseudolabel AUDIO_DIR [--vocab FILE ...] [--k 10] [--k-prime 3] [-o MANIFEST]
    tunecraft eval --system NAME [--prompts FILE] [--reference DIR] [--limit N] [--out DIR]
    tunecraft train RECIPE [--out DIR] [--resume] [--set key=value ...]
    tunecraft export RUN_DIR|CHECKPOINT OUT_DIR [--no-ema]
    tunecraft assemble noise2music OUT_DIR --stage NAME=DIR ... [--default-path waveform]

Errors a user can cause (a missing file, a bad value, an unknown system) print one line on
stderr and exit with code 2. Set ``TUNECRAFT_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from . import __version__
from .errors import InvalidInput, TunecraftError
from .sampling_flags import add_sampling_arguments, sampling_kwargs

EXIT_USAGE = 2
AUDIO_OUTPUT_EXTS = (".wav", ".flac")


class CLIError(TunecraftError):
    """A command-line usage error (bad flag, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line, through our error path."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _is_tty() -> bool:
    return sys.stderr.isatty()


def _progress_enabled(args) -> bool:
    return not getattr(args, "quiet", False) and _is_tty()


# --------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------


def _slug(text: str, n: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text.strip()).strip("_").lower()
    return s[:n] or "clip"


def read_prompt_file(path: str) -> list[dict]:
    """Read batch prompts: ``.txt`` (one per line, ``#`` comments) or ``.jsonl`` objects.

    A JSONL line holds ``prompt`` (or ``description`` / ``text``) and optionally ``output``,
    ``duration`` and ``seed``.
    """
    from .prompt_file import iter_prompt_records

    return [record for _, record in iter_prompt_records(Path(path), path)]


def _check_output_path(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in AUDIO_OUTPUT_EXTS:
        raise InvalidInput(f"output must end in {' or '.join(AUDIO_OUTPUT_EXTS)}: {path}")
    return out


def _cmd_generate(args) -> int:
    from .systems import check_cfg_scale, check_descriptions, check_duration, check_steps, load_system

    # Validate everything the user typed before loading any model.
    if args.prompt is not None and args.prompts is not None:
        raise CLIError("give either a PROMPT or --prompts FILE, not both")
    if args.prompts is not None:
        items = read_prompt_file(args.prompts)
    elif args.prompt is not None:
        check_descriptions([args.prompt])
        items = [{"prompt": args.prompt}]
    else:
        raise CLIError("a PROMPT (or --prompts FILE) is required")
    duration = check_duration(args.duration, force=args.force)
    for it in items:
        if "duration" in it:
            it["duration"] = check_duration(it["duration"], force=args.force)
    check_cfg_scale(args.cfg_scale)
    check_steps(args.steps)
    melody = None
    if args.melody is not None:
        from .audio import load_audio

        melody = load_audio(args.melody)
    batch = len(items) > 1 or args.prompts is not None
    if batch:
        outdir = Path(args.output or "outputs")
        if outdir.suffix.lower() in AUDIO_OUTPUT_EXTS:
            raise InvalidInput("with --prompts, -o names a directory, not a file")
        targets = []
        for i, it in enumerate(items):
            name = it.get("output") or f"{i:04d}_{_slug(it['prompt'])}.{args.format}"
            targets.append(_check_output_path(str(outdir / name)))
    else:
        targets = [_check_output_path(args.output or f"{_slug(items[0]['prompt'])}.{args.format}")]

    system = load_system(args.system, device=args.device)
    from .audio import save_audio

    kwargs = sampling_kwargs(args)
    if args.keep_stages is not None:
        kwargs["keep_stages"] = args.keep_stages
    for i, (it, target) in enumerate(zip(items, targets)):
        seed = it.get("seed", None if args.seed is None else args.seed + i)
        dur = it.get("duration", duration)
        if melody is not None:
            wav, sr = system.generate_with_chroma(
                [it["prompt"]], melody[0], melody[1], duration=dur, seed=seed,
                progress=_progress_enabled(args), force=args.force, **kwargs,
            )
        else:
            wav, sr = system.generate(
                [it["prompt"]], duration=dur, seed=seed, progress=_progress_enabled(args), force=args.force, **kwargs
            )
        save_audio(target, wav[0], sr)
        if not args.quiet:
            print(f"{target}  ({wav.shape[-1] / sr:.1f} s, {sr} Hz)")
    return 0


# --------------------------------------------------------------------------------------
# systems
# --------------------------------------------------------------------------------------


def _cmd_systems(args) -> int:
    from .systems import SYSTEM_CLASSES, list_systems

    installed = list_systems()
    if args.json:
        print(json.dumps([s.__dict__ for s in installed], indent=2))
        return 0
    if not installed:
        print(
            f"No generation system is installed (tunecraft {__version__}). "
            f"System families: {', '.join(SYSTEM_CLASSES)}; their default bundles land in later releases."
        )
        return 0
    width = max(len(s.name) for s in installed)
    for s in installed:
        print(f"{s.name:<{width}}  {s.system:<12} {', '.join(s.capabilities)}")
    return 0


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def _check_soundfont(path: str | None) -> None:
    if path is not None and not Path(path).is_file():
        raise InvalidInput(f"soundfont not found: {path}")


def _positive_int(name: str, value: int) -> int:
    if value < 1:
        raise InvalidInput(f"{name} must be >= 1, got {value}")
    return value


def _cmd_data_synth(args) -> int:
    if args.list_styles:
        from .data.composer import list_styles

        print("\n".join(list_styles()))
        return 0
    if not args.out:
        raise CLIError("--out DIR is required")
    _positive_int("--n", args.n)
    check = float(args.duration)
    if not check > 0 or check > 600:
        raise InvalidInput(f"--duration must be in (0, 600] seconds, got {args.duration:g}")
    _positive_int("--workers", args.workers)
    _check_soundfont(args.soundfont)
    from .data.composer import list_styles
    from .data.synth import synthesize_corpus

    styles = None
    if args.styles:
        styles = [x.strip() for x in args.styles.split(",") if x.strip()]
        unknown = sorted(set(styles) - set(list_styles()))
        if unknown:
            raise InvalidInput(f"unknown style(s) {', '.join(unknown)}; known: {', '.join(list_styles())}")
    summary = synthesize_corpus(
        args.out,
        n=args.n,
        duration=args.duration,
        seed=args.seed,
        sample_rate=args.sample_rate,
        soundfont=args.soundfont,
        workers=args.workers,
        fmt=args.format,
        styles=styles,
        quiet=args.quiet or not _is_tty(),
    )
    if not args.quiet:
        print(_summary_line(summary, args.out))
    return 0


def _summary_line(summary, out) -> str:
    if isinstance(summary, dict):
        parts = [f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
                 if isinstance(v, (int, float, str))]
        return f"wrote {out}: " + ", ".join(parts)
    return f"wrote {out}: {summary}"


def _cmd_data_music21(args) -> int:
    if args.limit is not None:
        _positive_int("--limit", args.limit)
    if args.duration is not None and not 0 < args.duration <= 3600:
        raise InvalidInput(f"--duration must be in (0, 3600] seconds, got {args.duration:g}")
    _check_soundfont(args.soundfont)
    from .data.music21_corpus import render_music21

    summary = render_music21(
        args.out,
        limit=args.limit,
        seed=args.seed,
        duration=args.duration,
        sample_rate=args.sample_rate,
        soundfont=args.soundfont,
        quiet=args.quiet or not _is_tty(),
    )
    if not args.quiet:
        print(_summary_line(summary, args.out))
    return 0


def _cmd_data_manifest(args) -> int:
    from .data.manifest import build_manifest

    folder = Path(args.folder)
    if not folder.is_dir():
        raise InvalidInput(f"not a directory: {args.folder}")
    out = Path(args.output) if args.output else folder / "data.jsonl"
    result = build_manifest(folder, out=out)
    if not args.quiet:
        print(f"wrote {out}: {result}")
    return 0


# --------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tunecraft", description="Text-to-music generation: MusicGen, Noise2Music, MeLoDy, JEN-1.")
    parser.add_argument("--version", action="version", version=f"tunecraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    g = sub.add_parser("generate", help="text to music")
    g.add_argument("prompt", nargs="?", help="text description of the music")
    g.add_argument("--prompts", metavar="FILE", help="batch prompts: .txt (one per line) or .jsonl")
    g.add_argument("--system", default="musicgen", help="bundle name, system family or model directory (default: musicgen)")
    g.add_argument("--duration", type=float, default=10.0, help="seconds of audio (default 10)")
    g.add_argument("--seed", type=int, default=None, help="random seed (bit-identical output for the same seed)")
    g.add_argument("--melody", metavar="FILE", help="reference recording whose chromagram conditions the melody")
    add_sampling_arguments(g)
    g.add_argument("--keep-stages", metavar="DIR", default=None, help="save every cascade stage's output in DIR (noise2music)")
    g.add_argument("-o", "--output", help="output .wav/.flac (a directory with --prompts)")
    g.add_argument("--format", choices=("wav", "flac"), default="wav", help="format for generated file names")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--force", action="store_true", help="allow durations over 10 minutes")
    g.add_argument("-q", "--quiet", action="store_true")
    g.set_defaults(func=_cmd_generate)

    from .eval.cli import add_eval_arguments, cmd_eval

    ev = sub.add_parser("eval", help="generate a prompt set with a system and score it (report.json + report.html)")
    add_eval_arguments(ev)
    ev.set_defaults(func=cmd_eval)

    s = sub.add_parser("systems", help="list installed systems and what each can do")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_systems)

    d = sub.add_parser("data", help="make and index training data")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=_Parser)
    ds = dsub.add_parser("synth", help="render the procedural music corpus")
    ds.add_argument("--n", type=int, default=200, help="number of clips")
    ds.add_argument("--duration", type=float, default=10.0, help="seconds per clip")
    ds.add_argument("--seed", type=int, default=0, help="corpus seed (clip seeds and splits derive from it)")
    ds.add_argument("--out", help="output directory (required)")
    ds.add_argument("--soundfont", default=None, help=".sf2 file (default: pretty_midi's TimGM6mb)")
    ds.add_argument("--sample-rate", type=int, default=32000)
    ds.add_argument("--workers", type=int, default=1, help="render processes")
    ds.add_argument("--format", choices=("wav", "flac"), default="wav")
    ds.add_argument("--styles", default=None, help="comma-separated style families (default: all; see --list-styles)")
    ds.add_argument("--list-styles", action="store_true", help="print the style families and exit")
    ds.add_argument("-q", "--quiet", action="store_true")
    ds.set_defaults(func=_cmd_data_synth)

    dm = dsub.add_parser("music21", help="render pieces of the music21 corpus")
    dm.add_argument("--out", required=True)
    dm.add_argument("--limit", type=int, default=None, help="number of pieces")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--duration", type=float, default=30.0, help="crop each piece to at most this many seconds (default 30)")
    dm.add_argument("--soundfont", default=None)
    dm.add_argument("--sample-rate", type=int, default=32000)
    dm.add_argument("-q", "--quiet", action="store_true")
    dm.set_defaults(func=_cmd_data_music21)

    dman = dsub.add_parser("manifest", help="index a folder of audio into an audiocraft-style data.jsonl")
    dman.add_argument("folder")
    dman.add_argument("-o", "--output", default=None)
    dman.add_argument("-q", "--quiet", action="store_true")
    dman.set_defaults(func=_cmd_data_manifest)

    from .joint.pseudolabel import add_pseudolabel_arguments, cmd_pseudolabel

    dpl = dsub.add_parser("pseudolabel", help="caption unlabelled audio with the joint embedding (Noise2Music)")
    add_pseudolabel_arguments(dpl)
    dpl.set_defaults(func=cmd_pseudolabel)
    d.set_defaults(func=lambda a: _missing_subcommand(d))

    from .systems.musicgen_convert import add_convert_arguments, cmd_convert_musicgen

    _command_group(sub, "convert", "convert official checkpoints into tunecraft bundles", "WHAT", {
        "musicgen": ("transformers or audiocraft MusicGen -> MusicGen bundle", add_convert_arguments,
                     cmd_convert_musicgen)})

    from .codecs.cli import add_codec_arguments

    add_codec_arguments(sub.add_parser("codec", help="encode audio to codes, decode codes to audio, or reconstruct"))

    from .train import add_train_arguments, main_from_args

    t = sub.add_parser("train", help="train a model from a recipe")
    add_train_arguments(t)
    t.set_defaults(func=main_from_args)

    from .noise2music.assemble import add_assemble_arguments, cmd_assemble

    _command_group(sub, "assemble", "build a system bundle from trained stages", "SYSTEM", {
        "noise2music": ("Noise2Music bundle from the n2m-* stages (model or run dirs)", add_assemble_arguments,
                        cmd_assemble)})

    from .train.export import add_export_arguments, cmd_export

    ex = sub.add_parser("export", help="write a model directory from a training run's newest checkpoint")
    add_export_arguments(ex)
    ex.set_defaults(func=cmd_export)
    return parser


def _command_group(sub, name: str, help_text: str, metavar: str, commands: dict) -> argparse.ArgumentParser:
    """``tunecraft NAME WHAT ...``: a command whose sub-commands are ``{what: (help, add_arguments, func)}``."""
    group = sub.add_parser(name, help=help_text)
    inner = group.add_subparsers(dest=f"{name}_command", metavar=metavar, parser_class=_Parser)
    for what, (what_help, add_arguments, func) in commands.items():
        parser = inner.add_parser(what, help=what_help)
        add_arguments(parser)
        parser.set_defaults(func=func)
    group.set_defaults(func=lambda a: _missing_subcommand(group))
    return group


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    raise CLIError(f"a subcommand is required (see '{parser.prog} --help')")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    debug = os.environ.get("TUNECRAFT_DEBUG", "") not in ("", "0")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except TunecraftError as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        # The environment refused something the user asked for (unwritable output, full disk).
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
