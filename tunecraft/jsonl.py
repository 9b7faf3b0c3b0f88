"""Reading JSON Lines (audiocraft manifests, prompt files) with errors that name the line."""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Tuple

from .errors import InvalidInput

__all__ = ["iter_json_lines"]


def iter_json_lines(lines: Iterable[str], where: object) -> Iterator[Tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-blank line; a line that is not valid JSON
    raises :class:`~tunecraft.errors.InvalidInput` ``"<where>:<line>: invalid JSON (<why> at
    column <c>)"``."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{where}:{n}: invalid JSON ({e.msg} at column {e.colno})") from None
