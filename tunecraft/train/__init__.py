"""tunecraft.train: one training loop for every tunecraft model.

Public API (imported lazily, so ``from tunecraft.train import add_train_arguments`` stays
cheap for the CLI)::

    from tunecraft.train import run_recipe, load_recipe, TrainTask, register_task, TrainConfig

    result = run_recipe("toy-audio-ae", out_dir="runs/toy", overrides=["train.steps=50"])

See :mod:`tunecraft.train.task` for writing a task, :mod:`tunecraft.train.recipe` for the
recipe format and :mod:`tunecraft.train.trainer` for the loop.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "add_train_arguments": "cli", "main_from_args": "cli",
    "TrainConfig": "config",
    "Recipe": "recipe", "apply_overrides": "recipe", "find_recipe": "recipe", "list_recipes": "recipe",
    "load_recipe": "recipe", "parse_override": "recipe", "recipe_from_dict": "recipe",
    "BUILTIN_TASKS": "task", "ClipDataConfig": "task", "EmptyConfig": "task", "OptimizerSpec": "task",
    "SplitDataConfig": "task", "TrainTask": "task",
    "build_task": "task", "default_param_groups": "task", "get_task_class": "task", "list_tasks": "task",
    "register_task": "task", "register_task_path": "task",
    "Trainer": "trainer", "TrainResult": "trainer", "run_recipe": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tunecraft.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
