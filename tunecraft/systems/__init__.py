"""Generation systems and the registry that finds them by name.

A *bundle* is a model directory whose ``config.json`` names the system family under the
key ``"system"``. Default bundles ship inside the package under ``tunecraft/bundles/<name>``
and are found by name (``musicgen-tiny``); any directory can be loaded by path.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, UnknownSystem
from ..pretrained import BUNDLES_DIR
from .base import (  # noqa: F401
    MAX_DURATION_S,
    GenerationSystem,
    UnsupportedOperation,
    check_cfg_scale,
    check_descriptions,
    check_duration,
    check_steps,
)

#: System families: name -> "module:Class". A family becomes available to users once a
#: bundle of it is installed.
SYSTEM_CLASSES: dict[str, str] = {
    "musicgen": "tunecraft.systems.musicgen:MusicGen",
    "noise2music": "tunecraft.systems.noise2music:Noise2Music",
    "melody": "tunecraft.systems.melody:MeLoDy",
    "jen1": "tunecraft.systems.jen1:JEN1",
}

#: Other spellings users type for a family.
SYSTEM_ALIASES = {"jen-1": "jen1", "jen": "jen1", "n2m": "noise2music"}



@dataclass
class SystemInfo:
    """One installed bundle: its name, family, capabilities and location."""

    name: str
    system: str
    capabilities: list[str]
    path: str
    description: str = ""


def _read_bundle_config(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is not a tunecraft model directory (no config.json)")
    try:
        return json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {cfg_path}: {e}") from None


def _family(name: str) -> str:
    name = name.lower()
    return SYSTEM_ALIASES.get(name, name)


def _system_class(family: str):
    try:
        target = SYSTEM_CLASSES[family]
    except KeyError:
        raise UnknownSystem(f"unknown system family '{family}'; known: {', '.join(SYSTEM_CLASSES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def list_systems() -> list[SystemInfo]:
    """Installed bundles (default weights shipped with the package), sorted by name."""
    out = []
    if BUNDLES_DIR.is_dir():
        for d in sorted(BUNDLES_DIR.iterdir()):
            if not (d / "config.json").is_file():
                continue
            cfg = _read_bundle_config(d)
            family = cfg.get("system")
            if family not in SYSTEM_CLASSES:
                continue
            caps = cfg.get("capabilities")  # what this bundle can do (a family's class lists all)
            if not isinstance(caps, list):
                caps = sorted(getattr(_system_class(family), "capabilities", ()))
            out.append(SystemInfo(d.name, family, caps, str(d), cfg.get("description", "")))
    return out


def resolve_system(name_or_path: str) -> tuple[str, Path]:
    """Map a bundle name, a family name or a directory to ``(family, bundle_dir)``."""
    if not name_or_path or not str(name_or_path).strip():
        raise UnknownSystem("empty system name")
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        cfg = _read_bundle_config(p)
        family = cfg.get("system")
        if family not in SYSTEM_CLASSES:
            raise CheckpointError(f"{p}/config.json names no known system (got {family!r})")
        return family, p
    installed = list_systems()
    if not installed:
        raise UnknownSystem(
            f"no generation system is installed yet: tunecraft {_version()} ships the foundation "
            f"(data, audio, text, training); '{name_or_path}' is not available"
        )
    by_name = {s.name: s for s in installed}
    if name_or_path in by_name:
        s = by_name[name_or_path]
        return s.system, Path(s.path)
    family = _family(str(name_or_path))
    candidates = [s for s in installed if s.system == family]
    if candidates:
        # The family's default bundle is the one whose config marks it default, else the first.
        default = [s for s in candidates if _read_bundle_config(Path(s.path)).get("default")]
        s = (default or candidates)[0]
        return s.system, Path(s.path)
    if ("/" in str(name_or_path) or str(name_or_path).startswith(".")) and not p.exists():
        raise UnknownSystem(f"no such model directory: {name_or_path}")
    raise UnknownSystem(
        f"unknown system '{name_or_path}'; installed: {', '.join(sorted(by_name))}"
    )


def load_system(name_or_path: str, device: str | None = None, **kwargs) -> GenerationSystem:
    """Load a generation system by bundle name, family name or directory."""
    family, path = resolve_system(name_or_path)
    cls = _system_class(family)
    return cls.from_pretrained(path, device=device, **kwargs)


def _version() -> str:
    from .. import __version__

    return __version__
