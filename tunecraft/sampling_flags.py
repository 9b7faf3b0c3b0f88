"""Sampling flags shared by ``tunecraft generate`` and ``tunecraft eval``.

Each flag maps to one keyword of ``GenerationSystem.generate``; only the flags a user typed are
passed on, so every system keeps its bundle's defaults for the rest. A system that has no use for
an option (``--top-k`` on a diffusion system, ``--step-schedule`` on MusicGen) rejects it with a
one-line :class:`~tunecraft.errors.InvalidInput` naming the option, so a typo never silently does
nothing.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, Mapping

__all__ = ["SAMPLING_FLAGS", "add_sampling_arguments", "sampling_kwargs", "sampling_flags"]

#: (flag, keyword of generate(), type, help)
SAMPLING_FLAGS = (
    ("--steps", "steps", int, "sampling steps of a diffusion system (its generator stage for noise2music)"),
    ("--cfg", "cfg_scale", float, "classifier-free guidance scale (system default if unset)"),
    ("--temperature", "temperature", float, "token sampling temperature (musicgen; 0 = greedy)"),
    ("--top-k", "top_k", int, "sample among the k most likely tokens (musicgen; 0 = no limit)"),
    ("--top-p", "top_p", float, "nucleus sampling mass in [0, 1] (musicgen; 0 = off)"),
    ("--fact-guidance", "fact_guidance", float,
     "guide away from the prompt with its stated mode swapped (major <-> minor), at this scale "
     "(musicgen; noise2music: the generator stage; 0 = off)"),
    ("--step-schedule", "step_schedule", str,
     "diffusion step schedule: uniform, front-heavy or back-heavy (noise2music: the generator stage)"),
    ("--eta", "eta", float, "diffusion sampler stochasticity in [0, 1]: 0 = DDIM, 1 = ancestral DDPM"),
    ("--path", "path", str, "noise2music generation path: waveform or spectrogram (bundle default if unset)"),
)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add every flag of :data:`SAMPLING_FLAGS` to ``parser`` (default ``None`` = system default)."""
    for flag, dest, kind, help_text in SAMPLING_FLAGS:
        metavar = {int: "N", float: "X"}.get(kind, "NAME")
        parser.add_argument(flag, dest=dest, type=kind, default=None, metavar=metavar, help=help_text)
    return parser


def sampling_kwargs(args: argparse.Namespace | Mapping[str, Any]) -> Dict[str, Any]:
    """The ``generate()`` keywords the user set: ``{keyword: value}`` without the ``None`` ones."""
    get = args.get if isinstance(args, Mapping) else (lambda k: getattr(args, k, None))
    return {dest: get(dest) for _, dest, _, _ in SAMPLING_FLAGS if get(dest) is not None}


def sampling_flags(kwargs: Mapping[str, Any]) -> list[str]:
    """The command-line flags that reproduce ``kwargs`` (inverse of :func:`sampling_kwargs`)."""
    out: list[str] = []
    for flag, dest, _, _ in SAMPLING_FLAGS:
        if kwargs.get(dest) is not None:
            out += [flag, str(kwargs[dest])]
    return out
