"""The one public surface every generation system implements.

A system is wiring over the shared layers (codecs, text encoders, LMs, diffusion). Each
declares what it can do in ``capabilities``; the CLI and the web studio read those and never
special-case a system.

Capabilities:
    ``text``          text-to-music (``generate``)
    ``continuation``  continue an audio prompt (``continue_audio``)
    ``inpainting``    regenerate a time span of a recording (``inpaint``)
    ``melody``        condition on the chromagram of a reference recording (``generate_with_chroma``)
    ``stereo``        produces two-channel audio
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch

from ..errors import InvalidInput, InvalidPrompt, TunecraftError

#: Longest duration accepted without ``force=True`` (seconds).
MAX_DURATION_S = 600.0

KNOWN_CAPABILITIES = frozenset({"text", "continuation", "inpainting", "melody", "stereo"})


class UnsupportedOperation(TunecraftError):
    """The system does not have the capability that an operation needs."""


@dataclass
class GenerationParams:
    """Validated generation arguments shared by every system."""

    duration: float = 10.0
    seed: int | None = None
    cfg_scale: float | None = None
    steps: int | None = None
    progress: bool = False
    extra: dict = field(default_factory=dict)


def check_descriptions(descriptions: Sequence[str] | str) -> list[str]:
    """Return the prompts as a list, raising :class:`InvalidPrompt` for empty ones."""
    if isinstance(descriptions, str):
        descriptions = [descriptions]
    descriptions = list(descriptions)
    if not descriptions:
        raise InvalidPrompt("no prompt given")
    for i, d in enumerate(descriptions):
        if not isinstance(d, str):
            raise InvalidPrompt(f"prompt {i} is not a string: {d!r}")
        if not d.strip():
            raise InvalidPrompt("empty prompt" if len(descriptions) == 1 else f"prompt {i} is empty")
    return descriptions


def check_duration(duration: float, force: bool = False) -> float:
    """Validate a requested duration in seconds (> 0, at most 10 minutes unless forced)."""
    try:
        duration = float(duration)
    except (TypeError, ValueError):
        raise InvalidInput(f"duration must be a number of seconds, got {duration!r}") from None
    if not duration > 0 or duration != duration or duration == float("inf"):
        raise InvalidInput(f"duration must be a positive number of seconds, got {duration:g}")
    if duration > MAX_DURATION_S and not force:
        raise InvalidInput(
            f"duration {duration:g} s is over {MAX_DURATION_S:g} s; pass force=True (CLI: --force) to allow it"
        )
    return duration


def check_cfg_scale(cfg_scale: float | None) -> float | None:
    """Validate a classifier-free guidance scale (``None`` means the system default)."""
    if cfg_scale is None:
        return None
    cfg_scale = float(cfg_scale)
    if not cfg_scale >= 0 or cfg_scale == float("inf"):
        raise InvalidInput(f"cfg_scale must be >= 0, got {cfg_scale:g}")
    return cfg_scale


def check_steps(steps: int | None) -> int | None:
    """Validate a number of sampling steps (``None`` means the system default)."""
    if steps is None:
        return None
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise InvalidInput(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


class GenerationSystem(abc.ABC):
    """Base class of MusicGen, Noise2Music, MeLoDy and JEN-1 pipelines.

    Subclasses set ``system_name`` and ``capabilities`` and implement :meth:`generate` plus
    whichever optional operations their capabilities name. Audio comes back as
    ``(wav [B, C, T] float32 in [-1, 1], sample_rate)``.
    """

    system_name: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset({"text"})
    sample_rate: int
    channels: int = 1

    @abc.abstractmethod
    def generate(
        self,
        descriptions: Sequence[str] | str,
        duration: float = 10.0,
        seed: int | None = None,
        cfg_scale: float | None = None,
        steps: int | None = None,
        progress: bool = False,
        force: bool = False,
        **kwargs,
    ) -> tuple[torch.Tensor, int]:
        """Text to music: ``wav [B, C, T]`` and its sample rate."""

    def _unsupported(self, capability: str, operation: str) -> UnsupportedOperation:
        return UnsupportedOperation(
            f"system '{self.system_name}' does not support {operation} "
            f"(capabilities: {', '.join(sorted(self.capabilities))})"
        )

    def continue_audio(self, prompt_wav: torch.Tensor, sample_rate: int, duration: float, descriptions=None, **kwargs):
        """Continue ``prompt_wav [B, C, T]`` to a total of ``duration`` seconds."""
        raise self._unsupported("continuation", "continuation")

    def inpaint(self, wav: torch.Tensor, sample_rate: int, start: float, end: float, descriptions=None, **kwargs):
        """Regenerate the span ``[start, end)`` seconds of ``wav [B, C, T]``."""
        raise self._unsupported("inpainting", "inpainting")

    def generate_with_chroma(self, descriptions, melody_wav: torch.Tensor, melody_sample_rate: int, **kwargs):
        """Text plus the chromagram of a reference recording (MusicGen melody)."""
        raise self._unsupported("melody", "melody conditioning")
