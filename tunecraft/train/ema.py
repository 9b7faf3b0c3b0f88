"""Exponential moving average of model parameters, kept in float32.

Works on plain, DDP-wrapped and FSDP-sharded models: under FSDP each rank keeps the EMA of
its own parameter shards (DTensors), and :meth:`EMA.full_state_dict` gathers them.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Mapping

import torch
from torch import nn

from ..errors import CheckpointError


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


class EMA:
    """``ema = d * ema + (1 - d) * param`` after every optimiser step, with the warm-up
    ``d = min(decay, (1 + step) / (10 + step))`` so early averages are not dominated by the
    random initialisation."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.names: List[str] = []
        self.params: List[torch.Tensor] = []
        self.shadow: List[torch.Tensor] = []
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                self.names.append(name)
                self.params.append(p)
                self.shadow.append(p.detach().clone().float())

    def effective_decay(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the current parameters after optimiser step ``step`` (0-based)."""
        weight = 1.0 - self.effective_decay(step)
        for e, p in zip(self.shadow, self.params):
            e.lerp_(p.detach().float(), weight)

    def full_state_dict(self) -> Dict[str, torch.Tensor]:
        """Full CPU tensors by parameter name (a collective under FSDP: call on every rank)."""
        out = {}
        for name, e in zip(self.names, self.shadow):
            full = e.full_tensor() if _is_dtensor(e) else e
            out[name] = full.detach().cpu().clone()
        return out

    @torch.no_grad()
    def load_full_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        unexpected = [n for n in state if n not in set(self.names)]
        if missing or unexpected:
            raise CheckpointError(
                f"EMA state does not match the model (missing: {', '.join(missing) or '-'}; "
                f"unexpected: {', '.join(unexpected) or '-'})"
            )
        for name, e in zip(self.names, self.shadow):
            full = state[name]
            if tuple(full.shape) != tuple(e.shape):
                raise CheckpointError(f"EMA tensor {name} has shape {tuple(full.shape)}, the model expects {tuple(e.shape)}")
            if _is_dtensor(e):
                from torch.distributed.tensor import distribute_tensor

                local = distribute_tensor(full.to(e.device_mesh.device_type), e.device_mesh, e.placements,
                                          src_data_rank=None)
                e.copy_(local)
            else:
                e.copy_(full)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Temporarily load the EMA weights into the model (e.g. to render samples)."""
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.params]
            for p, e in zip(self.params, self.shadow):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)
