"""Exponential moving average of model parameters, kept in float32.

Works on plain, DDP-wrapped and FSDP-sharded models: under FSDP each rank keeps the EMA of
its own parameter shards (DTensors), and :meth:`EMA.full_state_dict` gathers them.

Buffers are *copied*, not averaged. A module's buffers are either running statistics that are
already averages (BatchNorm running mean/var, an RVQ codebook ``embed`` with its ``embed_avg``
and ``cluster_size`` EMAs) or bookkeeping (``inited`` flags, counters, whitening matrices).
Averaging them a second time would blur state that must stay self-consistent (a codebook
entry is ``embed_avg / cluster_size``, and dead-code re-seeding replaces entries in one step),
so :meth:`EMA.full_state_dict` holds the averaged parameters plus the live buffers at the time
of the call: a complete state dict that loads into a fresh model with ``strict=True``.

Note for quantised models: the live codebooks were fitted to the *live* encoder's outputs,
not to the averaged encoder's, so an RVQ codec trained with a slow EMA pairs averaged encoder
weights with codebooks that lag slightly behind them. tunecraft's codec recipes therefore train
RVQ codecs with ``ema_decay = 0`` (the codebook EMA is the only average); continuous codecs
(VAE-GAN, masked autoencoder) have no such coupling and may use an EMA.
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
        #: persistent buffers (copied live, never averaged; see the module docstring)
        self.buffer_names: List[str] = []
        self.buffers: List[torch.Tensor] = []
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                self.names.append(name)
                self.params.append(p)
                self.shadow.append(p.detach().clone().float())
        persistent = set(model.state_dict(keep_vars=True))
        for name, b in model.named_buffers():
            if name in persistent:
                self.buffer_names.append(name)
                self.buffers.append(b)

    def effective_decay(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the current parameters after optimiser step ``step`` (0-based)."""
        weight = 1.0 - self.effective_decay(step)
        for e, p in zip(self.shadow, self.params):
            e.lerp_(p.detach().float(), weight)

    def full_state_dict(self) -> Dict[str, torch.Tensor]:
        """Full CPU tensors: the averaged parameters and a copy of the live persistent buffers,
        by name (a collective under FSDP: call on every rank)."""
        out = {}
        for name, e in zip(self.names, self.shadow):
            full = e.full_tensor() if _is_dtensor(e) else e
            out[name] = full.detach().cpu().clone()
        for name, b in zip(self.buffer_names, self.buffers):
            full = b.full_tensor() if _is_dtensor(b) else b
            out[name] = full.detach().cpu().clone()
        return out

    @torch.no_grad()
    def load_full_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load averaged parameters (every one is required). Buffer entries, when present, were
        copied from the live model when the state was saved; the live buffers are restored from
        the model's own checkpoint entry, so they are checked for shape and otherwise ignored
        (older checkpoints hold parameters only)."""
        buffer_shapes = {n: tuple(b.shape) for n, b in zip(self.buffer_names, self.buffers)}
        missing = [n for n in self.names if n not in state]
        unexpected = [n for n in state if n not in set(self.names) and n not in buffer_shapes]
        if missing or unexpected:
            raise CheckpointError(
                f"EMA state does not match the model (missing: {', '.join(missing) or '-'}; "
                f"unexpected: {', '.join(unexpected) or '-'})"
            )
        for name, shape in buffer_shapes.items():
            if name in state and tuple(state[name].shape) != shape:
                raise CheckpointError(f"EMA buffer {name} has shape {tuple(state[name].shape)}, the model expects {shape}")
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
        """Temporarily load the EMA weights into the model (e.g. to render samples); buffers
        stay live, as in :meth:`full_state_dict`."""
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
