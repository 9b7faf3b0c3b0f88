"""The training loop shared by every tunecraft model.

One code path serves a plain ``python`` process and ``torchrun --nproc_per_node N``
(DDP or FSDP, gloo on CPU, nccl on CUDA). The loop owns optimisers, schedules, mixed
precision, gradient accumulation and clipping, EMA, checkpoints, resume, validation,
audio samples, logging and the final export; a :class:`~tunecraft.train.task.TrainTask`
supplies the model, the data and the loss.

Resume is exact: data order depends on ``(seed, epoch)``, item augmentation on
``(seed, epoch, index)``, training randomness on ``(seed, rank, step)``, and a checkpoint
stores the position in the epoch, so an interrupted run resumed to the end finishes with
bit-for-bit the weights of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import random
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, TunecraftError
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import BatchStream, ResumableBatchSampler, check_dataset, derive_seed, make_loader, move_to_device, seed_all
from .distributed import DistEnv, gradient_sync, local_tensor, setup_distributed, unwrap, wrap_model
from .ema import EMA
from .optim import build_optimizers
from .recipe import Recipe, load_recipe
from .tracking import NullLogger, RunLogger

#: ``[train]`` keys that may change between an interrupted run and its resumption
#: without a warning.
RESUMABLE_TRAIN_KEYS = frozenset({
    "steps", "max_steps_this_run", "out_dir", "log_every", "sample_every", "valid_every", "valid_batches",
    "ckpt_every", "keep_checkpoints", "num_workers", "compile", "debug_dump_rank_weights", "device",
    "strategy", "init_from", "init_grown",
})


@dataclasses.dataclass
class TrainResult:
    """What one invocation of :func:`run_recipe` / :meth:`Trainer.fit` did."""

    out_dir: Path
    step: int  # optimiser steps completed in total
    total_steps: int
    finished: bool  # reached train.steps (and exported the model)
    checkpoint: Optional[Path]  # the newest checkpoint on disk
    export_dir: Optional[Path]  # the exported model directory, when finished
    resumed_from: Optional[Path]
    metrics: Dict[str, float]  # the last logged training metrics
    elapsed_s: float


#: optimiser settings a resume takes from the configuration, not from the checkpoint
_GROUP_SETTINGS = ("initial_lr", "betas", "eps", "weight_decay")


def resolve_precision(precision: str, device: torch.device) -> Tuple[Optional[torch.dtype], bool]:
    """``(autocast dtype or None, use GradScaler)`` for a precision setting on a device."""
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.precision is bf16 but this GPU does not support bfloat16; use fp16")
        return torch.bfloat16, False
    return torch.float16, True


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX): there bf16 autocast
    trains faster than fp32; elsewhere it is emulated and slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def preserve_rng(device: torch.device) -> Iterator[None]:
    """Run a block (samples, validation, export) without disturbing any global RNG."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for a block, then restore every sub-module's own training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class _Window:
    """Metrics accumulated between two log points (as device tensors: no per-step sync)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: Dict[str, Union[float, torch.Tensor]] = {}
        self.counts: Dict[str, int] = {}
        self.steps = 0
        self.t0 = time.perf_counter()

    def add(self, name: str, value: Union[float, int, torch.Tensor]) -> None:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise TunecraftError(f"logged value {name!r} must be a scalar, got shape {tuple(value.shape)}")
            value = value.detach().float().reshape(())
        elif not isinstance(value, (int, float)):
            raise TunecraftError(f"logged value {name!r} must be a number or a 0-dim tensor, got {type(value).__name__}")
        self.sums[name] = self.sums.get(name, 0.0) + value
        self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> Dict[str, float]:
        return {k: float(v) / self.counts[k] for k, v in self.sums.items()}


def config_changes(prefix: str, old: Any, new: Any) -> List[str]:
    """``["task.codec.loss.mrstft: 0.0 -> 1.0", ...]``: the changed leaves of two nested config
    dicts (a changed nested table is named by its changed keys, not printed whole)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: List[str] = []
        for key in sorted(set(old) | set(new)):
            out += config_changes(f"{prefix}.{key}", old.get(key), new.get(key))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


class Trainer:
    """Trains ``recipe.task`` with ``recipe.train`` settings in ``recipe.train.out_dir``."""

    def __init__(self, recipe: Recipe, quiet: bool = False):
        self.recipe = recipe
        self.task = recipe.task
        self.cfg: TrainConfig = recipe.train
        self.quiet = quiet
        self.out_dir = Path(self.cfg.out_dir or Path("runs") / recipe.name)
        self.ckpt_dir = self.out_dir / "checkpoints"

    # ---- messages ---------------------------------------------------------------------
    def _warn(self, text: str) -> None:
        if self.env.is_main:
            if isinstance(self.logger, RunLogger) and not self.quiet:
                self.logger.message(f"warning: {text}")
            else:
                print(f"warning: {text}", file=sys.stderr, flush=True)

    def _info(self, text: str) -> None:
        if self.env.is_main and not self.quiet:
            if isinstance(self.logger, RunLogger):
                self.logger.message(text)
            else:
                print(text, file=sys.stderr, flush=True)

    # ---- entry point --------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train until ``train.steps`` (or ``max_steps_this_run`` more steps), checkpointing
        on the way; export the model when the last step is reached."""
        self.logger: NullLogger = NullLogger()
        self._stream: Optional[BatchStream] = None
        self.env: DistEnv = setup_distributed(self.cfg)
        try:
            return self._fit(resume)
        finally:
            if self._stream is not None:
                self._stream.close()
            self.logger.close()
            self.env.shutdown()

    def _fit(self, resume: bool) -> TrainResult:
        cfg, env, task = self.cfg, self.env, self.task
        t_start = time.perf_counter()
        self.amp_dtype, use_scaler = resolve_precision(cfg.precision, env.device)
        if self.amp_dtype is torch.bfloat16 and env.device.type == "cpu" and not cpu_has_fast_bf16():
            self._warn("train.precision is bf16 but this CPU has no native bfloat16 arithmetic, so "
                       "autocast will be slower than fp32; set train.precision=fp32")

        # -- which checkpoint (rank 0 decides, everyone follows) --
        decision: Tuple[str, Optional[str]] = ("fresh", None)
        if env.is_main:
            ckpt.remove_stale_temp_files(self.ckpt_dir)
            existing = ckpt.list_checkpoints(self.ckpt_dir)
            if resume:
                found = ckpt.find_latest_valid(self.ckpt_dir, self._warn)
                if found is not None:
                    decision = ("resume", str(found[0]))
                elif existing:
                    decision = ("error", f"no usable checkpoint in {self.ckpt_dir}: all {len(existing)} are corrupt")
                else:
                    self._info(f"no checkpoint in {self.ckpt_dir}; starting from scratch")
            elif existing:
                decision = ("error", f"{self.out_dir} already holds checkpoints; pass --resume to continue "
                                     "that run or choose another --out")
        decision = env.broadcast_object(decision)
        if decision[0] == "error":
            raise CheckpointError(decision[1])
        resume_path = Path(decision[1]) if decision[0] == "resume" else None

        # -- model, wrapper, optimisers, EMA --
        seed_all(derive_seed(cfg.seed, "init"))
        model = task.build_model()
        if not isinstance(model, nn.Module):
            raise TunecraftError(f"{type(task).__name__}.build_model() must return an nn.Module")
        if resume_path is None and cfg.init_from:
            self._init_from(model, cfg.init_from, cfg.init_grown)
        model.to(env.device)
        find_unused = task.ddp_find_unused_parameters
        if env.strategy == "ddp" and not find_unused:
            find_unused = len(task.configure_optimizers(model, cfg)) > 1
        units = task.fsdp_units(model) if env.strategy == "fsdp" else []
        self.model = wrap_model(model, env, units, find_unused)
        self.raw = unwrap(self.model)
        if cfg.compile:
            self.model.compile()
        self.optimizers, self.schedulers, self.phase_params = build_optimizers(
            task.configure_optimizers(self.raw, cfg), cfg)
        self.ema = EMA(self.raw, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=use_scaler)

        # -- data --
        train_ds = task.build_train_dataset()
        check_dataset(train_ds, "training")
        if resume_path is None:
            task.prepare_model(self.raw, train_ds)
        sampler = ResumableBatchSampler(len(train_ds), cfg.batch_size, env.rank, env.world_size, cfg.seed)
        loader = make_loader(train_ds, sampler, cfg.seed, cfg.num_workers, task.collate,
                             pin_memory=env.device.type == "cuda")
        self._valid_loader = self._make_valid_loader()

        # -- resume --
        step, epoch, batch_in_epoch = 0, 0, 0
        if resume_path is not None:
            step, epoch, batch_in_epoch = self._load(resume_path, len(sampler))
        if step > cfg.steps:
            raise ConfigError(f"the checkpoint is at step {step}, beyond train.steps={cfg.steps}")

        if env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write(self.out_dir / "train_config.json",
                              lambda f: f.write((json.dumps(self.recipe.to_dict(), indent=2) + "\n").encode("utf-8")))
            self.logger = RunLogger(self.out_dir, step, cfg.steps, self.quiet)
            if resume_path is not None:
                self._info(f"resumed from {resume_path} at step {step}")
        self._stream = BatchStream(loader, epoch, batch_in_epoch)

        stop_at = cfg.steps if cfg.max_steps_this_run == 0 else min(cfg.steps, step + cfg.max_steps_this_run)
        last_ckpt = resume_path
        metrics: Dict[str, float] = {}
        self.model.train()
        window = _Window()
        while step < stop_at:
            self._train_step(step, window)
            step += 1
            if self.ema is not None:
                self.ema.update(step - 1)
            if (cfg.log_every and step % cfg.log_every == 0) or step == stop_at:
                metrics = self._log_window(step, window)
                window.reset()
            if self._valid_loader is not None and cfg.valid_every and (step % cfg.valid_every == 0 or step == cfg.steps):
                self._validate(step)
            if cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps):
                self._samples(step)
            if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == stop_at:
                last_ckpt = self._save(step)
            self.logger.progress(step, {"loss": metrics["loss"]} if "loss" in metrics else None)

        finished = step >= cfg.steps
        export_dir = None
        if finished:
            export_dir = self._export()
        if cfg.debug_dump_rank_weights:
            self._dump_rank_weights()
        env.barrier()
        return TrainResult(
            out_dir=self.out_dir, step=step, total_steps=cfg.steps, finished=finished, checkpoint=last_ckpt,
            export_dir=export_dir, resumed_from=resume_path, metrics=metrics,
            elapsed_s=time.perf_counter() - t_start,
        )

    # ---- one optimiser step -------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.amp_dtype)

    def _train_step(self, step: int, window: _Window) -> None:
        cfg, env, task = self.cfg, self.env, self.task
        # training randomness (noise levels, dropout, masks) depends on (seed, rank, step) only
        seed_all(derive_seed(cfg.seed, "step", env.rank, step), cuda=env.device.type == "cuda")
        micro = [move_to_device(next(self._stream), env.device) for _ in range(cfg.grad_accum)]  # type: ignore[arg-type]
        multi = len(self.optimizers) > 1
        for phase, opt in self.optimizers.items():
            for o in self.optimizers.values():
                o.zero_grad(set_to_none=True)
            for i, batch in enumerate(micro):
                with gradient_sync(self.model, env, enabled=i == len(micro) - 1):
                    with self._autocast():
                        out = task.training_step(self.model, batch, step, phase)
                    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)):
                        raise TunecraftError(f"{type(task).__name__}.training_step() must return (loss, logs)")
                    loss, logs = out
                    if loss.numel() != 1:
                        raise TunecraftError(f"training loss must be a scalar, got shape {tuple(loss.shape)}")
                    self.scaler.scale(loss.reshape(()) / cfg.grad_accum).backward()
                window.add(f"loss/{phase}" if multi else "loss", loss)
                for k, v in logs.items():
                    window.add(k, v)
            self.scaler.unscale_(opt)
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = local_tensor(torch.nn.utils.clip_grad_norm_(self.phase_params[phase], max_norm))
            window.add(f"grad_norm/{phase}" if multi else "grad_norm", grad_norm)
            window.add(f"lr/{phase}" if multi else "lr", float(opt.param_groups[0]["lr"]))
            self.scaler.step(opt)
        if self.scaler.is_enabled():
            window.add("grad_scale", float(self.scaler.get_scale()))
            self.scaler.update()
        with warnings.catch_warnings():
            # a GradScaler-skipped optimiser step (inf/nan grads) still advances the schedule
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            for sched in self.schedulers.values():
                sched.step()
        window.steps += 1

    def _log_window(self, step: int, window: _Window) -> Dict[str, float]:
        cfg, env = self.cfg, self.env
        local = window.means()
        elapsed = max(time.perf_counter() - window.t0, 1e-9)
        gathered = env.gather_objects(local)
        metrics: Dict[str, float] = {}
        for key in sorted(set().union(*gathered)):
            values = [g[key] for g in gathered if key in g]
            metrics[key] = sum(values) / len(values)
        metrics["steps_per_s"] = window.steps / elapsed
        metrics["samples_per_s"] = window.steps * cfg.batch_size * cfg.grad_accum * env.world_size / elapsed
        metrics["epoch"] = float(self._stream.epoch)  # type: ignore[union-attr]
        self.logger.log_metrics(step, "train", metrics)
        for key, value in metrics.items():
            if key.startswith("loss") and not math.isfinite(value):
                raise TunecraftError(
                    f"training diverged at step {step}: {key} is {value} (lower train.lr, add warm-up or set train.grad_clip)"
                )
        return metrics

    # ---- validation and samples ---------------------------------------------------------
    def _make_valid_loader(self) -> Optional[torch.utils.data.DataLoader]:
        cfg, env = self.cfg, self.env
        if not cfg.valid_every:
            return None
        dataset = self.task.build_valid_dataset()
        if dataset is None:
            return None
        n = check_dataset(dataset, "validation")
        batch_size = min(cfg.batch_size, n // env.world_size)
        if batch_size < 1:
            self._warn(f"validation disabled: {n} validation items cannot be split over {env.world_size} processes")
            return None
        sampler = ResumableBatchSampler(n, batch_size, env.rank, env.world_size, cfg.seed, shuffle=False)
        return make_loader(dataset, sampler, cfg.seed, 0, self.task.collate, pin_memory=False)

    def _eval_model(self) -> nn.Module:
        # FSDP's forward is a collective: every rank runs it on the sharded module
        return self.model if self.env.strategy == "fsdp" else self.raw

    @torch.no_grad()
    def _validate(self, step: int) -> None:
        env = self.env
        window = _Window()
        model = self._eval_model()
        with preserve_rng(env.device), eval_mode(model):
            seed_all(derive_seed(self.cfg.seed, "valid", env.rank), cuda=env.device.type == "cuda")
            for batch in itertools.islice(self._valid_loader, self.cfg.valid_batches):  # type: ignore[arg-type]
                with self._autocast():
                    logs = self.task.validation_step(model, move_to_device(batch, env.device), step)
                for k, v in logs.items():
                    window.add(k, v)
        gathered = env.gather_objects(window.means())
        metrics = {}
        for key in sorted(set().union(*gathered)):
            values = [g[key] for g in gathered if key in g]
            metrics[key] = sum(values) / len(values)
        self.logger.log_metrics(step, "valid", metrics)

    @torch.no_grad()
    def _samples(self, step: int) -> None:
        env = self.env
        if not (env.is_main or env.strategy == "fsdp"):
            return
        model = self._eval_model()
        swap = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with preserve_rng(env.device), eval_mode(model), swap:
            seed_all(derive_seed(self.cfg.seed, "sample", step), cuda=env.device.type == "cuda")
            with self._autocast():
                samples = self.task.sample(model, step)
        for name, value in samples.items():
            if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.Tensor)):
                raise TunecraftError(f"{type(self.task).__name__}.sample() must map names to (audio [C, T], sample_rate)")
        self.logger.log_audio(step, samples)

    # ---- checkpoints ------------------------------------------------------------------------
    def _full_model_state(self, everywhere: bool = False) -> Dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
        return get_model_state_dict(self.model, options=options)

    def _save(self, step: int) -> Path:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        env, cfg = self.env, self.cfg
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = self._full_model_state()
        optim_states = {name: get_optimizer_state_dict(self.model, opt, options=options)
                        for name, opt in self.optimizers.items()}
        ema_state = self.ema.full_state_dict() if self.ema is not None else None
        rng_states = env.gather_objects(ckpt.capture_rng_state())
        path = ckpt.checkpoint_path(self.ckpt_dir, step)
        if env.is_main:
            epoch, batch_in_epoch = self._stream.position()  # type: ignore[union-attr]
            state = {
                "format": ckpt.FORMAT, "version": ckpt.VERSION, "task": self.recipe.task_name,
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "world_size": env.world_size, "strategy": env.strategy,
                "model": model_state, "ema": ema_state, "optimizers": optim_states,
                "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "rng": rng_states, "config": self.recipe.to_dict(),
            }
            ckpt.save_checkpoint(state, path)
            ckpt.prune_checkpoints(self.ckpt_dir, cfg.keep_checkpoints)
        env.barrier()
        return path

    def _check_config(self, saved: Mapping[str, Any]) -> None:
        current = self.recipe.to_dict()
        changed: List[str] = []
        for section in ("task", "data", "train"):
            old, new = saved.get(section, {}), current.get(section, {})
            for key in sorted(set(old) | set(new)):
                if section == "train" and key in RESUMABLE_TRAIN_KEYS:
                    continue
                changed += config_changes(f"{section}.{key}", old.get(key), new.get(key))
        if changed:
            self._warn("resuming with settings that differ from the checkpoint's: " + "; ".join(changed))

    def _init_from(self, model: nn.Module, source: str, init_grown: str = "zero") -> None:
        """Copy the tensors of ``source``'s model (a checkpoint, a run directory, or an exported
        model directory with ``model.safetensors``) whose names and shapes match ``model``'s;
        report what was copied and what was not."""
        from .export import checkpoint_weights, load_run_state

        from ..pretrained import WEIGHTS_NAME, read_weights

        exported = Path(source).expanduser()
        if (exported / WEIGHTS_NAME).is_file():
            try:
                weights = read_weights(exported)
            except CheckpointError as e:
                raise CheckpointError(f"train.init_from: {e}") from None
            path, state = exported / WEIGHTS_NAME, {"task": "exported model"}
        else:
            path, state = load_run_state(source)  # the source's own task is not rebuilt: only its tensors count
            weights = checkpoint_weights(state)
        own = model.state_dict()
        matched = {k: v for k, v in weights.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        # a convolution given more input channels (aligned conditioning appended after the old
        # ones): the old channels keep their weights and the new ones start at zero, so the warm
        # start computes what the source did until training teaches it the new inputs, or keep
        # the fresh model's random values ("fresh": zero weights may never be taken up)
        grown = {k: v for k, v in weights.items() if k in own and k not in matched and _grown_inputs(own[k], v)}
        for k, v in grown.items():
            w = own[k].clone() if init_grown == "fresh" else torch.zeros_like(own[k])
            w[:, :v.shape[1]] = v.to(w.dtype)
            matched[k] = w
        if not matched:
            raise CheckpointError(f"train.init_from: no tensor of {path} matches this model by name and shape")
        model.load_state_dict(matched, strict=False)
        reshaped = sorted(k for k in weights if k in own and k not in matched)
        fresh = len(own) - len(matched)
        task = state.get("task")
        report = f"initialised {len(matched)} of {len(own)} tensors from {path} (task {task!r})"
        if grown:
            report += f"; {len(grown)} with new {init_grown} input channels ({', '.join(sorted(grown))})"
        if fresh:  # a partial warm start is worth a warning even in quiet runs
            self._warn(f"{report}; {fresh} keep their fresh values" + (
                f", {len(reshaped)} of them differ in shape (e.g. {reshaped[0]})" if reshaped else ""))
        else:
            self._info(report)

    def _load(self, path: Path, batches_per_epoch: int) -> Tuple[int, int, int]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, set_model_state_dict, set_optimizer_state_dict,
        )

        env, cfg = self.env, self.cfg
        state = ckpt.load_checkpoint(path)
        if state.get("task") != self.recipe.task_name:
            raise CheckpointError(f"checkpoint {path} was written by task {state.get('task')!r}, not {self.recipe.task_name!r}")
        if env.is_main:
            self._check_config(state["config"])
        options = StateDictOptions(full_state_dict=True, strict=True)
        try:
            set_model_state_dict(self.model, state["model"], options=options)
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint {path} does not match the model: {first}") from None
        missing = sorted(set(self.optimizers) - set(state["optimizers"]))
        if missing:
            raise CheckpointError(f"checkpoint {path} has no state for optimiser(s) {', '.join(missing)}")
        # the configured hyperparameters win over the checkpoint's (a resume may lower train.lr)
        fresh = {name: [{k: g[k] for k in _GROUP_SETTINGS if k in g} for g in opt.param_groups]
                 for name, opt in self.optimizers.items()}
        try:
            for name, opt in self.optimizers.items():
                set_optimizer_state_dict(self.model, opt, state["optimizers"][name], options=options)
            for name, sched in self.schedulers.items():
                sched.load_state_dict(state["schedulers"][name])
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint {path}: optimiser state does not match: {first}") from None
        for name, opt in self.optimizers.items():
            sched = self.schedulers[name]
            for group, settings in zip(opt.param_groups, fresh[name]):
                group.update(settings)
            sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
            for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base * factor(sched.last_epoch)
            sched._last_lr = [g["lr"] for g in opt.param_groups]
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state["ema"] is None:
                self._warn("the checkpoint has no EMA weights; starting the EMA from the current weights")
                self.ema.load_full_state_dict({n: state["model"][n] for n in self.ema.names})
            else:
                self.ema.load_full_state_dict(state["ema"])
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
        old_world, old_bs = int(state["world_size"]), int(state["config"]["train"]["batch_size"])
        if (old_world, old_bs) == (env.world_size, cfg.batch_size):
            ckpt.restore_rng_state(state["rng"][env.rank])
        else:
            # another layout: keep the epoch and the number of items already consumed in it
            consumed = batch_in_epoch * old_bs * old_world
            batch_in_epoch = min(consumed // (cfg.batch_size * env.world_size), batches_per_epoch)
            self._warn(f"the checkpoint ran {old_world} process(es) x batch {old_bs}, this run {env.world_size} x "
                       f"{cfg.batch_size}: the data order after step {step} will differ from an uninterrupted run")
        return step, epoch, batch_in_epoch

    # ---- export -------------------------------------------------------------------------
    def _export(self) -> Optional[Path]:
        state = self._full_model_state()
        if self.ema is not None:
            state.update(self.ema.full_state_dict())  # export the EMA weights
        export_dir = self.out_dir / "model"
        if self.env.is_main:
            with preserve_rng(torch.device("cpu")):
                fresh = self.task.build_model()
            try:
                fresh.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"cannot load the trained weights into a fresh model: {str(e).splitlines()[0]}") from None
            fresh.eval()
            tmp = self.out_dir / ".model.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            self.task.export(fresh, tmp)
            if export_dir.exists():
                shutil.rmtree(export_dir)
            tmp.rename(export_dir)
            self._info(f"exported the {'EMA ' if self.ema is not None else ''}model to {export_dir}")
        self.env.barrier()
        return export_dir

    def _dump_rank_weights(self) -> None:
        """Every rank writes the weights it holds (a test hook: DDP ranks must agree)."""
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self._full_model_state(everywhere=True).items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v.contiguous() for k, v in self.ema.full_state_dict().items()})
        path = self.out_dir / "debug" / f"rank{self.env.rank}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path))


def run_recipe(
    name_or_path: Union[str, Path],
    out_dir: Optional[Union[str, Path]] = None,
    resume: bool = False,
    overrides: Iterable[str] = (),
    quiet: bool = False,
) -> TrainResult:
    """Load a recipe (by name or path), apply ``--set`` overrides and train it.

    This is what ``tunecraft train RECIPE [--out DIR] [--resume] [--set k=v ...]`` runs, in
    every process of a torchrun job or in a single plain process.
    """
    recipe = load_recipe(str(name_or_path), overrides)
    if out_dir is not None:
        recipe.train = recipe.train.replace(out_dir=str(out_dir))
    return Trainer(recipe, quiet=quiet).fit(resume=resume)


def _grown_inputs(own: torch.Tensor, source: torch.Tensor) -> bool:
    """Whether ``own`` is the convolution or linear weight ``source`` with more input channels
    (dimension 1) and every other dimension equal."""
    return (own.dim() == source.dim() >= 2 and own.shape[0] == source.shape[0]
            and own.shape[1] > source.shape[1] and tuple(own.shape[2:]) == tuple(source.shape[2:]))
