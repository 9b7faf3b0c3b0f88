"""tunecraft's exception types.

Every error a user can cause derives from :class:`TunecraftError`. The CLI catches
``TunecraftError`` and prints ``error: <message>`` on one line with exit code 2; the
``python -m`` entry points of the modules do the same through :func:`run_main`.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional


class TunecraftError(Exception):
    """Base class of every error tunecraft raises on purpose."""


class InvalidInput(TunecraftError, ValueError):
    """An argument or input value is outside what is accepted."""


class InvalidPrompt(InvalidInput):
    """A text prompt is empty or malformed."""


class AudioFormatError(TunecraftError):
    """An audio file is missing, unreadable, corrupt or of an unsupported format."""


class CheckpointError(TunecraftError):
    """A model directory or training checkpoint is missing, corrupt or incompatible."""


class UnknownSystem(TunecraftError, KeyError):
    """No system of that name is installed."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else "unknown system"


class UnknownRecipe(TunecraftError):
    """No training recipe of that name or path exists."""


class ConfigError(TunecraftError):
    """A configuration file or value is invalid."""


class DependencyError(TunecraftError):
    """An optional dependency (package, soundfont, local model) is not available."""


def run_main(body: Callable[[], Optional[int]]) -> int:
    """Run a ``main()``'s work and return its exit code: ``body()``'s (``None`` counts as 0), or,
    when it raises a :class:`TunecraftError`, 2 after printing ``error: <message>`` to stderr."""
    try:
        return int(body() or 0)
    except TunecraftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
