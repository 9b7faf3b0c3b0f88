"""Process-group setup and model wrapping for one code path under torchrun or plain python.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and
``MASTER_ADDR``/``MASTER_PORT``; we initialise the default process group from them
(``gloo`` on CPU, ``nccl`` on CUDA). A plain ``python`` run is a single process and needs
no process group, except for FSDP, which then gets an in-memory world of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Iterator, List

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig


@dataclasses.dataclass
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    strategy: str = "single"  # resolved: single | ddp | fsdp
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.distributed:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, indexed by rank, on every rank."""
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed and self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor /= self.world_size
        return tensor

    def shutdown(self) -> None:
        if self.owns_process_group and self.distributed:
            dist.destroy_process_group()
            self.owns_process_group = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup_distributed(cfg: TrainConfig) -> DistEnv:
    """Read the torchrun environment, pick device and strategy, init the process group."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"invalid distributed environment: RANK={rank} WORLD_SIZE={world_size}")

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but CUDA is not available")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    strategy = cfg.strategy
    if strategy == "auto":
        strategy = "ddp" if world_size > 1 else "single"
    if strategy == "single" and world_size > 1:
        raise ConfigError(f"train.strategy is 'single' but WORLD_SIZE={world_size}; use 'ddp' or 'fsdp'")
    if strategy == "ddp" and world_size == 1:
        strategy = "single"

    env = DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device, strategy=strategy)
    needs_group = world_size > 1 or strategy == "fsdp"
    if needs_group and not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed support")
    if needs_group and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if launched:
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                                    **({"device_id": device} if device.type == "cuda" else {}))
        else:  # a single plain-python process that still wants a process group (FSDP)
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
        env.owns_process_group = True
    return env


def unwrap(model: nn.Module) -> nn.Module:
    """The user module inside a DDP wrapper (FSDP2 shards modules in place)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def wrap_model(model: nn.Module, env: DistEnv, units: List[nn.Module], find_unused_parameters: bool) -> nn.Module:
    """Wrap ``model`` (already on ``env.device``) for the resolved strategy."""
    if env.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("DDP needs at least one trainable parameter")
        kwargs = {"device_ids": [env.device.index]} if env.device.type == "cuda" else {}
        return DistributedDataParallel(model, find_unused_parameters=find_unused_parameters, **kwargs)
    if env.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in units:
            fully_shard(unit)
        fully_shard(model)
        return model
    return model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, env: DistEnv, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce for micro-batches before the last one of a step."""
    if enabled or env.strategy == "single":
        yield
        return
    if env.strategy == "ddp":
        with model.no_sync():
            yield
        return
    model.set_requires_gradient_sync(False)  # FSDP2
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (FSDP2 results such as the grad norm) or a tensor."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t
