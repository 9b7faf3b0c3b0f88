"""tunecraft: text-to-music generation (MusicGen, Noise2Music, MeLoDy, JEN-1) in one PyTorch library."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: F401
    AudioFormatError,
    CheckpointError,
    ConfigError,
    DependencyError,
    InvalidInput,
    InvalidPrompt,
    TunecraftError,
    UnknownRecipe,
    UnknownSystem,
)


def load_system(name_or_path: str, **kwargs):
    """Load a generation system by bundle name (e.g. ``musicgen-tiny``) or directory."""
    from .systems import load_system as _load

    return _load(name_or_path, **kwargs)


def list_systems():
    """Return the installed systems and what each one can do."""
    from .systems import list_systems as _list

    return _list()
