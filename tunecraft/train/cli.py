"""Command-line glue: ``tunecraft train RECIPE [--out DIR] [--resume] [--set k=v ...]``.

The main CLI plugs this in with::

    p = sub.add_parser("train", help="train a model from a recipe")
    add_train_arguments(p); p.set_defaults(func=main_from_args)
"""

from __future__ import annotations

import argparse
import os
import sys


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` arguments to ``parser`` (a sub-command parser)."""
    parser.add_argument("recipe", nargs="?", help="recipe name (see --list) or path to a .toml recipe")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="run directory (default: train.out_dir, else runs/<recipe name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest valid checkpoint in the run directory")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value with TOML syntax, e.g. --set train.steps=100 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or info messages")
    parser.add_argument("--list", dest="list_recipes", action="store_true", help="list the shipped recipes and exit")
    return parser


def main_from_args(args: argparse.Namespace) -> int:
    """Run ``train`` for parsed arguments; returns the exit code. Errors propagate as
    :class:`~tunecraft.errors.TunecraftError` for the CLI to report."""
    from ..errors import ConfigError
    from .recipe import list_recipes
    from .trainer import run_recipe

    if getattr(args, "list_recipes", False):
        for name in list_recipes():
            print(name)
        return 0
    if not args.recipe:
        raise ConfigError("train needs a recipe name or path (see --list)")
    result = run_recipe(args.recipe, out_dir=args.out, resume=args.resume, overrides=args.overrides,
                        quiet=args.quiet)
    if not args.quiet and os.environ.get("RANK", "0") == "0":
        state = "finished" if result.finished else "stopped"
        where = f"; model in {result.export_dir}" if result.export_dir else f"; resume with --resume --out {result.out_dir}"
        print(f"{state} at step {result.step}/{result.total_steps}{where}", file=sys.stderr)
    return 0

