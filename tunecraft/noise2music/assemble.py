"""``tunecraft assemble noise2music``: one Noise2Music bundle from trained stages.

    tunecraft assemble noise2music tunecraft/bundles/noise2music-tiny --runs runs/
    tunecraft assemble noise2music OUT --stage waveform_generator=runs/n2m-wave-generator \\
        --stage waveform_cascader=my/cascader_dir --stage sr_cascader=runs/n2m-sr-cascader \\
        --sampling waveform_cascader.steps=10 --default-path waveform --description "..."

A stage is a model directory (``config.json`` + weights, e.g. a run's ``model/`` or an export)
or a training run directory, whose newest valid checkpoint is exported on the fly
(:func:`tunecraft.train.export.export_checkpoint`). ``--runs DIR`` picks up every
``DIR/<recipe>/`` of the ``n2m-*`` recipes (``n2m-wave-generator`` -> ``waveform_generator``, ...)
that has a model or a checkpoint; ``--stage`` entries override it. The bundle needs the
super-resolution cascader and every stage of at least one path (the system says which are
missing). ``--sampling STAGE.KEY=VALUE`` sets the bundle's default steps, cfg_scale,
step_schedule or eta of a stage.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict

from ..errors import InvalidInput

__all__ = ["RECIPE_STAGES", "add_assemble_arguments", "assemble_bundle", "cmd_assemble"]

#: training recipe (task) name -> stage name
RECIPE_STAGES = {
    "n2m-wave-generator": "waveform_generator",
    "n2m-wave-cascader": "waveform_cascader",
    "n2m-spec-generator": "spectrogram_generator",
    "n2m-vocoder": "spectrogram_vocoder",
    "n2m-sr-cascader": "sr_cascader",
}


def _is_run(path: Path) -> bool:
    return (path / "checkpoints").is_dir() and not (path / "config.json").is_file()


def _stage_source(path: Path) -> Path | None:
    """The model directory or run directory to take a stage from, or ``None``."""
    return path if (path / "config.json").is_file() or _is_run(path) else None


def _parse_sampling(entries) -> Dict[str, Dict[str, Any]]:
    table: Dict[str, Dict[str, Any]] = {}
    for entry in entries or ():
        key, sep, raw = entry.partition("=")
        stage, dot, field = key.partition(".")
        if not sep or not dot or not stage or not field:
            raise InvalidInput(f"--sampling takes STAGE.KEY=VALUE (e.g. waveform_cascader.steps=10), got {entry!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        table.setdefault(stage, {})[field] = value
    return table


def assemble_bundle(out: str | Path, stages: Dict[str, str | Path], *, default_path: str | None = None,
                    sampling: Dict[str, Dict[str, Any]] | None = None, description: str = "",
                    use_ema: bool = True) -> Path:
    """Write a Noise2Music bundle to ``out`` from ``{stage_name: model dir or run dir}``."""
    from ..systems.noise2music import Noise2Music
    from ..train.export import export_checkpoint

    if not stages:
        raise InvalidInput("no stages given: use --stage NAME=DIR or --runs DIR")
    with tempfile.TemporaryDirectory(prefix="n2m-assemble-") as tmp:
        dirs: Dict[str, Path] = {}
        for name, src in stages.items():
            path = Path(src).expanduser()
            if not path.exists():
                raise InvalidInput(f"stage {name}: {path} does not exist")
            if _is_run(path):
                path = export_checkpoint(path, Path(tmp) / name, use_ema=use_ema)
            elif not (path / "config.json").is_file():
                raise InvalidInput(f"stage {name}: {path} is neither a model directory (config.json) nor a "
                                   f"training run (checkpoints/)")
            dirs[name] = path
        return Noise2Music.assemble(out, dirs, default_path=default_path, sampling=sampling, description=description)


def add_assemble_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("out", help="bundle directory to write")
    parser.add_argument("--stage", action="append", default=[], metavar="NAME=DIR",
                        help=f"a stage ({', '.join(RECIPE_STAGES.values())}) from a model or run directory")
    parser.add_argument("--runs", metavar="DIR", default=None,
                        help=f"take every stage found as DIR/<recipe> ({', '.join(RECIPE_STAGES)})")
    parser.add_argument("--sampling", action="append", default=[], metavar="STAGE.KEY=VALUE",
                        help="bundle default sampling setting of a stage (steps, cfg_scale, step_schedule, eta)")
    parser.add_argument("--default-path", default=None, help="waveform or spectrogram (default: waveform if present)")
    parser.add_argument("--description", default="", help="one line shown by `tunecraft systems`")
    parser.add_argument("--no-ema", action="store_true", help="export the live weights of runs that kept an EMA")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def cmd_assemble(args: argparse.Namespace) -> int:
    from .models import STAGES_BY_NAME

    stages: Dict[str, Path] = {}
    if args.runs is not None:
        runs = Path(args.runs).expanduser()
        if not runs.is_dir():
            raise InvalidInput(f"--runs must be a directory, got {runs}")
        for recipe, stage in RECIPE_STAGES.items():
            src = _stage_source(runs / recipe)
            if src is not None:
                stages[stage] = src
    for entry in args.stage:
        name, sep, path = entry.partition("=")
        if not sep or not path:
            raise InvalidInput(f"--stage takes NAME=DIR, got {entry!r}")
        if name not in STAGES_BY_NAME:
            raise InvalidInput(f"unknown stage {name!r} (stages: {', '.join(STAGES_BY_NAME)})")
        stages[name] = Path(path)
    out = assemble_bundle(args.out, stages, default_path=args.default_path, sampling=_parse_sampling(args.sampling),
                          description=args.description, use_ema=not args.no_ema)
    if not args.quiet:
        print(f"wrote {out} ({', '.join(sorted(stages))})")
    return 0
