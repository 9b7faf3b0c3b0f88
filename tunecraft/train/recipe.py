"""Training recipes: TOML files with ``[task]``, ``[data]`` and ``[train]`` sections.

::

    [task]
    name = "toy-audio-ae"     # a registered task (or "package.module:Class")
    hidden = 16               # the task's own config fields

    [data]                    # the task's data config fields
    num_clips = 256

    [train]                   # TrainConfig fields
    steps = 300
    lr = 2e-3

Recipes shipped with tunecraft live in ``tunecraft/recipes/NAME.toml`` and are found by
name; any other recipe is given by path. Dotted overrides (``train.steps=10``,
``task.hidden=32``) take TOML value syntax; a value that is not valid TOML is a string.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from ..errors import ConfigError, UnknownRecipe
from .config import TrainConfig
from .task import TrainTask, build_task

SECTIONS = ("task", "data", "train")
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def list_recipes() -> List[str]:
    """Names of the recipes shipped with tunecraft."""
    if not RECIPES_DIR.is_dir():
        return []
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def find_recipe(name_or_path: str) -> Path:
    """Resolve a recipe name (``toy-audio-ae``) or a path to a TOML file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    looks_like_path = candidate.suffix == ".toml" or "/" in name_or_path or "\\" in name_or_path
    if not looks_like_path:
        shipped = RECIPES_DIR / f"{name_or_path}.toml"
        if shipped.is_file():
            return shipped
    available = ", ".join(list_recipes()) or "none"
    if looks_like_path:
        raise UnknownRecipe(f"recipe file {name_or_path} does not exist (shipped recipes: {available})")
    raise UnknownRecipe(f"unknown recipe {name_or_path!r}; available recipes: {available}")


def parse_override(text: str) -> tuple[List[str], Any]:
    """``"train.steps=10"`` -> ``(["train", "steps"], 10)``; values use TOML syntax
    (``1e-3``, ``true``, ``[1, 2]``, ``"text"``), anything else is a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like SECTION.KEY=VALUE")
    path = key.split(".")
    if len(path) < 2 or any(not part.strip() for part in path):
        raise ConfigError(f"override key {key!r} must look like SECTION.KEY (e.g. train.steps)")
    path = [part.strip() for part in path]
    if path[0] not in SECTIONS:
        raise ConfigError(f"override {key!r}: unknown section {path[0]!r} (expected {', '.join(SECTIONS)})")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if raw == "":
            raise ConfigError(f"override {key!r} has no value") from None
        value = raw
    return path, value


def apply_overrides(raw: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """A copy of the raw recipe dict with dotted overrides applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out.setdefault(path[0], {})
        for part in path[1:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a table")
            node = child
        node[path[-1]] = value
    return out


@dataclasses.dataclass
class Recipe:
    """A parsed, type-checked recipe."""

    name: str
    source: Optional[Path]
    task_name: str
    task: TrainTask
    train: TrainConfig

    def to_dict(self) -> Dict[str, Any]:
        """The resolved recipe as plain JSON/TOML types (stored in every checkpoint)."""
        return {
            "task": {"name": self.task_name, **self.task.config.to_dict()},
            "data": self.task.data.to_dict(),
            "train": self.train.to_dict(),
        }


def recipe_from_dict(raw: Dict[str, Any], name: str, source: Optional[Path] = None) -> Recipe:
    """Type-check a raw recipe dict and build its task."""
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {name}: expected a table at the top level")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"recipe {name}: unknown section(s) {', '.join(unknown)} (expected {', '.join(SECTIONS)})")
    for section in SECTIONS:
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"recipe {name}: [{section}] must be a table")
    task_params = dict(raw.get("task", {}))
    task_name = task_params.pop("name", None)
    if not isinstance(task_name, str) or not task_name:
        raise ConfigError(f"recipe {name}: [task] needs a name, e.g. name = \"toy-audio-ae\"")
    try:
        train = TrainConfig.from_dict(raw.get("train", {}))
    except ConfigError as e:
        raise ConfigError(f"recipe {name}: [train] {e}") from None
    try:
        task = build_task(task_name, task_params, raw.get("data", {}))
    except ConfigError as e:
        raise ConfigError(f"recipe {name}: {e}") from None
    return Recipe(name=name, source=source, task_name=task_name, task=task, train=train)


def load_recipe(name_or_path: str, overrides: Iterable[str] = ()) -> Recipe:
    """Find, parse, override and type-check a recipe.

    Raises :class:`~tunecraft.errors.UnknownRecipe` when no such recipe exists and
    :class:`~tunecraft.errors.ConfigError` for TOML syntax errors, unknown sections or
    keys, and values of the wrong type.
    """
    path = find_recipe(str(name_or_path))
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {path}: invalid TOML ({e})") from None
    except OSError as e:
        raise UnknownRecipe(f"cannot read recipe {path}: {e.strerror}") from None
    raw = apply_overrides(raw, overrides)
    return recipe_from_dict(raw, name=path.stem, source=path)
