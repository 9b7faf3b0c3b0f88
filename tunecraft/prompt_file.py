"""Reading prompt files: ``.txt`` (one prompt per line, ``#`` comments) or ``.jsonl`` objects.

Shared by ``tunecraft generate --prompts`` (:func:`tunecraft.cli.read_prompt_file`) and the
evaluation prompt sets (:func:`tunecraft.eval.prompt_set.read_prompt_set`). Light on purpose
(no torch): the command line imports it before loading any model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, Tuple, Union

from .errors import InvalidInput, InvalidPrompt
from .jsonl import iter_json_lines

__all__ = ["iter_prompt_records"]


def iter_prompt_records(path: Path, shown: Union[str, Path]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """``(where, record)`` for each prompt of the file ``path``, read lazily, one line at a time.

    A ``.jsonl``/``.json`` line holds an object with ``prompt`` (or ``description`` / ``text``)
    or a bare string; its record is the object with ``prompt`` set to that text. A ``.txt`` line
    gives ``{"prompt": line}`` (stripped; blank lines and ``#`` comments skipped). ``where`` is
    ``"<shown>:<line>"``, and every error message names the file as ``shown``. A missing or
    unreadable file, bad JSON, a non-object line or an empty prompt raise
    :class:`~tunecraft.errors.InvalidInput` / :class:`~tunecraft.errors.InvalidPrompt`, as does a
    file without any prompt (once the records are exhausted).
    """
    if not path.is_file():
        raise InvalidInput(f"prompts file not found: {shown}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read prompts file {shown}: {e}") from None
    count = 0
    if path.suffix.lower() in (".jsonl", ".json"):
        for n, obj in iter_json_lines(text.splitlines(), shown):
            if isinstance(obj, str):
                obj = {"prompt": obj}
            if not isinstance(obj, dict):
                raise InvalidInput(f"{shown}:{n}: expected an object with a 'prompt' field")
            prompt = obj.get("prompt", obj.get("description", obj.get("text")))
            if not isinstance(prompt, str) or not prompt.strip():
                raise InvalidPrompt(f"{shown}:{n}: empty prompt")
            count += 1
            yield f"{shown}:{n}", {**obj, "prompt": prompt}
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                count += 1
                yield f"{shown}:{n}", {"prompt": line}
    if not count:
        raise InvalidPrompt(f"prompts file {shown} holds no prompt")
