"""AdamW optimisers and warm-up + cosine/linear/constant learning-rate schedules."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Tuple

import torch

from ..errors import ConfigError
from .config import TrainConfig
from .task import OptimizerSpec


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate for optimiser step ``step`` (0-based).

    Linear warm-up from ``1 / warmup_steps`` to 1 over ``warmup_steps`` steps, then
    ``constant`` (1), ``linear`` or ``cosine`` decay from 1 to ``min_lr_ratio`` at the
    last step.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    if schedule == "linear":
        shape = 1.0 - progress
    elif schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ConfigError(f"unknown learning-rate schedule {schedule!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def make_lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return lr_factor(step, cfg.steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)

    return factor


def _spec_params(spec: OptimizerSpec) -> List[Any]:
    groups = list(spec.params)
    if not groups:
        raise ConfigError(f"optimiser {spec.name!r} has no parameters")
    return groups


def build_optimizers(
    specs: List[OptimizerSpec], cfg: TrainConfig
) -> Tuple[Dict[str, torch.optim.Optimizer], Dict[str, torch.optim.lr_scheduler.LRScheduler], Dict[str, List[torch.nn.Parameter]]]:
    """One AdamW and one LambdaLR per spec, plus each optimiser's parameter list."""
    if not specs:
        raise ConfigError("configure_optimizers() returned no optimisers")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"optimiser names must be unique, got {names}")
    optimizers: Dict[str, torch.optim.Optimizer] = {}
    schedulers: Dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
    params: Dict[str, List[torch.nn.Parameter]] = {}
    seen: Dict[int, str] = {}
    for spec in specs:
        groups = _spec_params(spec)
        opt = torch.optim.AdamW(
            groups,
            lr=spec.lr if spec.lr is not None else cfg.lr,
            betas=tuple(spec.betas) if spec.betas is not None else tuple(cfg.betas),
            eps=spec.eps if spec.eps is not None else cfg.eps,
            weight_decay=spec.weight_decay if spec.weight_decay is not None else cfg.weight_decay,
        )
        plist = [p for g in opt.param_groups for p in g["params"]]
        for p in plist:
            if id(p) in seen:
                raise ConfigError(f"a parameter is in both optimisers {seen[id(p)]!r} and {spec.name!r}")
            seen[id(p)] = spec.name
        optimizers[spec.name] = opt
        schedulers[spec.name] = torch.optim.lr_scheduler.LambdaLR(opt, make_lr_lambda(cfg))
        params[spec.name] = plist
    return optimizers, schedulers, params
