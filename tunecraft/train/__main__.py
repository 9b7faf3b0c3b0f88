"""``python -m tunecraft.train RECIPE [--out DIR] [--resume] [--set k=v ...]`` (also under torchrun)."""

from __future__ import annotations

import argparse
import sys

from ..errors import run_main
from .cli import add_train_arguments, main_from_args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunecraft.train", description="Train a tunecraft model from a recipe.")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_main(lambda: main_from_args(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
