"""``tunecraft export``: a model directory from a training checkpoint.

    tunecraft export runs/musicgen-tiny tunecraft/bundles/musicgen-tiny      # newest valid checkpoint
    tunecraft export runs/codec-rvq/checkpoints/step-00003500.pt out/codec   # a given one

The task named in the checkpoint's saved recipe rebuilds its model, loads the weights (the EMA
ones when the run kept an EMA, unless ``--no-ema``) and writes what its
:meth:`~tunecraft.train.task.TrainTask.export` writes (the same as the end of a finished run's
``RUN/model``), plus ``training.json`` (task, step, total steps, EMA, checkpoint). So an unfinished
run can ship its current weights and go on later with ``tunecraft train ... --resume``. The output
directory is replaced atomically: it is written next to its final place, then renamed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Tuple, Union

from ..errors import CheckpointError, InvalidInput

__all__ = ["add_export_arguments", "checkpoint_weights", "cmd_export", "export_checkpoint", "load_run_checkpoint",
           "load_run_state"]


def load_run_state(checkpoint: Union[str, Path]) -> Tuple[Path, Dict[str, Any]]:
    """``(checkpoint file, state)`` of a ``step-*.pt`` file or of a run directory's newest valid
    checkpoint."""
    from . import checkpoint as ckpt

    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise InvalidInput(f"no such run directory or checkpoint: {path}")
    if not path.is_dir():
        return path, ckpt.load_checkpoint(path)
    found = ckpt.find_latest_valid(path / "checkpoints" if (path / "checkpoints").is_dir() else path,
                                   lambda msg: warnings.warn(msg, stacklevel=2))
    if found is None:
        raise CheckpointError(f"no usable checkpoint in {path}")
    return found


def load_run_checkpoint(checkpoint: Union[str, Path]) -> Tuple[Path, Dict[str, Any], Any]:
    """:func:`load_run_state` plus the recipe saved in the checkpoint (its task rebuilds the model)."""
    from .recipe import recipe_from_dict

    path, state = load_run_state(checkpoint)
    raw = state["config"]
    recipe = recipe_from_dict({k: raw[k] for k in ("task", "data", "train") if k in raw}, name=str(path))
    return path, state, recipe


def checkpoint_weights(state: Dict[str, Any], use_ema: bool = True) -> Dict[str, Any]:
    """The model tensors of a checkpoint state, with the EMA ones in place of the live ones when
    the run kept an EMA and ``use_ema``."""
    weights = dict(state["model"])
    if use_ema and state.get("ema"):
        weights.update(state["ema"])
    return weights


def export_checkpoint(checkpoint: Union[str, Path], out_dir: Union[str, Path], use_ema: bool = True) -> Path:
    """Export the model of a training checkpoint (a ``step-*.pt`` file, or a run directory: its
    newest valid checkpoint) with its task's :meth:`~TrainTask.export` into ``out_dir``
    (replaced if it exists). The EMA weights are used when the run kept an EMA and ``use_ema``."""
    path, state, recipe = load_run_checkpoint(checkpoint)
    model = recipe.task.build_model()
    try:
        model.load_state_dict(checkpoint_weights(state, use_ema), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not match its task's model: {str(e).splitlines()[0]}") from None
    model.eval()
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"the export target {out} is a file; give a directory")
    tmp = out.parent / f".{out.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    recipe.task.export(model, tmp)
    (tmp / "training.json").write_text(json.dumps({
        "task": recipe.task_name, "step": int(state["step"]), "total_steps": int(recipe.train.steps),
        "ema": bool(use_ema and state.get("ema")), "checkpoint": path.name,
    }, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("checkpoint", help="a run directory (its newest valid checkpoint) or a step-*.pt file")
    parser.add_argument("out", help="model directory to write (replaced), e.g. tunecraft/bundles/musicgen-tiny")
    parser.add_argument("--no-ema", action="store_true", help="export the live weights even if the run kept an EMA")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def cmd_export(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.checkpoint, args.out, use_ema=not args.no_ema)
    if not args.quiet:
        step = json.loads((out / "training.json").read_text())["step"]
        print(f"exported {args.checkpoint} (step {step}) to {out}")
    return 0
