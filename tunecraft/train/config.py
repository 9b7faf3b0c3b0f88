"""The ``[train]`` section of a recipe: one typed config for every training run."""

from __future__ import annotations

import dataclasses
from typing import Tuple

from ..config import Config
from ..errors import ConfigError

SCHEDULES = ("cosine", "constant", "linear")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STRATEGIES = ("auto", "single", "ddp", "fsdp")
DEVICES = ("auto", "cpu", "cuda")
INIT_GROWN = ("zero", "fresh")


@dataclasses.dataclass
class TrainConfig(Config):
    """Optimisation, distribution, logging and checkpointing settings of one run.

    A *step* is one optimiser update. Each step consumes ``grad_accum`` micro-batches of
    ``batch_size`` items on every process, so the global batch is
    ``batch_size * grad_accum * world_size`` items.
    """

    steps: int = 1000
    batch_size: int = 8  # per process, per micro-batch
    grad_accum: int = 1
    # AdamW
    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    # learning-rate schedule: linear warm-up, then cosine/linear decay to lr * min_lr_ratio (or constant)
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping (the norm is still logged)
    ema_decay: float = 0.0  # 0 disables; effective decay is min(ema_decay, (1 + step) / (10 + step))
    precision: str = "auto"  # auto: bf16 on CUDA if supported, else fp16 on CUDA, fp32 on CPU
    strategy: str = "auto"  # auto: ddp when WORLD_SIZE > 1, else single
    device: str = "auto"  # auto: cuda:LOCAL_RANK if CUDA is available, else cpu
    # logging, samples, validation, checkpoints (all in steps; 0 disables the periodic action)
    log_every: int = 10
    sample_every: int = 0
    valid_every: int = 0
    valid_batches: int = 4
    ckpt_every: int = 500
    keep_checkpoints: int = 3  # keep the newest K checkpoints; 0 keeps all
    num_workers: int = 0
    seed: int = 0
    out_dir: str = ""  # empty: runs/<recipe name>
    max_steps_this_run: int = 0  # stop (with a checkpoint) after this many steps in this invocation; 0: no limit
    compile: bool = False
    # warm start of a fresh run: a training checkpoint, run directory or exported model directory
    # (model.safetensors) whose model tensors of the same name and shape are copied in (EMA weights
    # when it kept them; a weight with more input channels keeps the source's and starts the rest as
    # init_grown says); ignored when resuming
    init_from: str = ""
    # the extra input channels of a grown weight: "zero" (the warm start computes what the source
    # did) or "fresh" (the new model's own random initialisation, as in a run from scratch)
    init_grown: str = "zero"
    debug_dump_rank_weights: bool = False  # every rank writes its final weights to out_dir/debug/

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        positive = ("steps", "batch_size", "grad_accum", "valid_batches")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        non_negative = (
            "warmup_steps", "log_every", "sample_every", "valid_every", "ckpt_every",
            "keep_checkpoints", "num_workers", "max_steps_this_run", "grad_clip", "weight_decay", "seed",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not self.eps > 0:
            raise ConfigError(f"eps must be > 0, got {self.eps}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        for name, choices in (
            ("schedule", SCHEDULES), ("precision", PRECISIONS), ("strategy", STRATEGIES), ("device", DEVICES),
            ("init_grown", INIT_GROWN),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}"
                )
