"""Samplers for Gaussian diffusion: ancestral DDPM / DDIM with a stochasticity knob, and MeLoDy's angle sampler.

:class:`DiffusionSampler` is a small diffusers-style scheduler: ``set_timesteps(n, schedule=...)``
fixes ``n + 1`` decreasing times (see :mod:`~tunecraft.diffusion.step_schedules`), ``step(model_output,
t, x, generator)`` moves ``x_t`` to the next time ``s < t``, and ``sample(model_fn, shape, steps)`` runs the
whole loop. It works with any :class:`~tunecraft.diffusion.schedules.NoiseSchedule` and any model
parameterisation (``eps``, ``v``, ``x0``), which it converts to ``x0_hat`` / ``eps_hat`` first.

Update rules, from ``t`` to ``s`` with ``alpha_{t|s} = alpha_t / alpha_s``:

* ``ddpm`` / ``ddim`` (Song et al. 2021, Eq. 12), with stochasticity ``eta`` in [0, 1]::

      sigma_eta^2 = eta^2 (sigma_s^2 / sigma_t^2) (1 - alpha_{t|s}^2)
      x_s = alpha_s x0_hat + sqrt(sigma_s^2 - sigma_eta^2) eps_hat + sigma_eta z,   z ~ N(0, I)

  ``eta = 1`` is DDPM's ancestral step (posterior variance ``beta_tilde``), ``eta = 0`` is the
  deterministic DDIM step; in between it interpolates (Noise2Music's "stochasticity parameter").
  ``kind="ddpm"`` defaults to ``eta = 1``, ``kind="ddim"`` to ``eta = 0``.
* ``angle`` (MeLoDy Eq. 12): with ``delta = atan2(sigma, alpha)`` and ``omega = delta_t - delta_s``::

      z_{delta - omega} = cos(omega) z_delta - sin(omega) v_hat,   v_hat = alpha_t eps_hat - sigma_t x0_hat

  which is exactly the ``eta = 0`` step written in angles; it defaults to MeLoDy's linear angle
  step schedule (Eq. 4).

The final step to ``s = 0`` returns ``x0_hat``. ``clip_x0`` clamps ``x0_hat`` to ``[-c, c]``;
``dynamic_threshold = p`` is Imagen's dynamic thresholding (per example, ``s = max(quantile_p |x0_hat|, c)``,
``x0_hat <- clamp(x0_hat, -s, s) c / s`` with ``c = clip_x0`` or 1); after either, ``eps_hat`` is
recomputed from the clipped ``x0_hat`` so the update stays consistent.

Times may be per example ``[B]`` or per frame ``[B, T]`` (MeLoDy's multi-chunk angle vector): all
updates are elementwise. ``sample(..., known=z, known_mask=m)`` keeps frames where ``m [B, T]`` is
True fixed to ``z`` at time 0 while the others are generated (MeLoDy continuation, Sec. 3.4).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..config import Config
from ..errors import ConfigError, InvalidInput
from .objectives import PARAMETERIZATIONS, convert_prediction
from .schedules import NoiseSchedule, as_time, expand_like, get_noise_schedule
from .step_schedules import STEP_SCHEDULES, StepSchedule, get_step_schedule

__all__ = [
    "SAMPLERS",
    "DiffusionSampler",
    "SamplerConfig",
    "StepOutput",
    "threshold_x0",
]

SAMPLERS = ("ddpm", "ddim", "angle")

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``callback(step_index, num_steps, t, x, pred_x0)`` after each step
StepCallback = Callable[[int, int, float, torch.Tensor, torch.Tensor], None]


@dataclass
class SamplerConfig(Config):
    """Serialisable sampler settings.

    ``kind``: ``ddpm``, ``ddim`` or ``angle``; ``steps``: number of denoising steps;
    ``step_schedule``: a name from :data:`~tunecraft.diffusion.step_schedules.STEP_SCHEDULES` or ``None``
    for the kind's default (``angle-linear`` for ``angle``, else ``uniform``); ``eta``: stochasticity
    (``None``: 1 for ``ddpm``, 0 otherwise); ``clip_x0`` / ``dynamic_threshold``: see the module docs.
    """

    kind: str = "ddim"
    steps: int = 50
    step_schedule: str | None = None
    eta: float | None = None
    clip_x0: float | None = None
    dynamic_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.kind!r} (choose from {', '.join(SAMPLERS)})")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"sampler steps must be a positive integer, got {self.steps!r}")
        if self.step_schedule is not None and self.step_schedule not in STEP_SCHEDULES:
            raise ConfigError(f"unknown step schedule {self.step_schedule!r} (choose from {', '.join(STEP_SCHEDULES)})")
        _validate_options(self.kind, self.eta, self.clip_x0, self.dynamic_threshold, ConfigError)

    @classmethod
    def noise2music_waveform(cls, eta: float = 0.0) -> "SamplerConfig":
        """Noise2Music waveform models: front-heavy step schedule, 1000 steps (Table 3). The stochasticity
        ``eta`` is tuned per model in the paper; 0 (deterministic) is our default."""
        return cls(kind="ddpm" if eta > 0 else "ddim", steps=1000, step_schedule="front-heavy", eta=eta)

    @classmethod
    def noise2music_spectrogram(cls, eta: float = 0.0) -> "SamplerConfig":
        """Noise2Music spectrogram generator: back-heavy step schedule, 1000 steps (Table 3); ``eta`` as above."""
        return cls(kind="ddpm" if eta > 0 else "ddim", steps=1000, step_schedule="back-heavy", eta=eta)

    @classmethod
    def melody(cls, steps: int = 20) -> "SamplerConfig":
        """MeLoDy: angle sampler with the linear angle schedule, 5-20 steps."""
        return cls(kind="angle", steps=steps, step_schedule="angle-linear")

    @classmethod
    def jen1(cls) -> "SamplerConfig":
        """JEN-1: DDIM, 200 steps."""
        return cls(kind="ddim", steps=200, step_schedule="uniform", eta=0.0)


def _validate_options(kind, eta, clip_x0, dynamic_threshold, err=InvalidInput) -> None:
    if eta is not None and not 0.0 <= float(eta) <= 1.0:
        raise err(f"eta (stochasticity) must be in [0, 1], got {eta}")
    if kind == "angle" and eta not in (None, 0, 0.0):
        raise err("the angle sampler is deterministic; use kind='ddpm' or 'ddim' for eta > 0")
    if clip_x0 is not None and not float(clip_x0) > 0:
        raise err(f"clip_x0 must be positive, got {clip_x0}")
    if dynamic_threshold is not None and not 0.0 < float(dynamic_threshold) <= 1.0:
        raise err(f"dynamic_threshold is a percentile in (0, 1], got {dynamic_threshold}")


def threshold_x0(x0: torch.Tensor, clip: float | None = None, percentile: float | None = None) -> torch.Tensor:
    """Static clipping to ``[-clip, clip]`` or, with ``percentile``, Imagen's dynamic thresholding.

    Dynamic: per example ``s = max(quantile_p(|x0|), c)`` with ``c = clip or 1``, then
    ``clamp(x0, -s, s) * c / s`` - saturated values are pushed inwards instead of clipped.
    """
    if percentile is None:
        return x0 if clip is None else x0.clamp(-clip, clip)
    c = 1.0 if clip is None else float(clip)
    b = x0.shape[0]
    flat = x0.detach().abs().reshape(b, -1).float()
    k = max(1, min(flat.shape[1], int(round(float(percentile) * flat.shape[1]))))
    s = flat.kthvalue(k, dim=1).values.clamp_min(c).to(x0.dtype)
    s = s.view(b, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) * (c / s)


@dataclass
class StepOutput:
    """Result of one sampler step: the sample at the next time and the ``x0`` estimate used."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor


class DiffusionSampler:
    """Diffusers-style scheduler for a noise schedule and a model parameterisation.

    Args:
        schedule: a :class:`NoiseSchedule` or a name (``"cosine"``, ``"angle"``, ``"jen1"``, ...).
        parameterization: what the model predicts: ``eps``, ``v`` or ``x0``.
        kind: ``ddpm``, ``ddim`` or ``angle``.
        eta: stochasticity in [0, 1] (default 1 for ``ddpm``, 0 otherwise).
        clip_x0, dynamic_threshold: ``x0_hat`` clipping (see :func:`threshold_x0`).
        step_schedule: default step schedule for :meth:`set_timesteps` (default ``angle-linear`` for
            ``kind="angle"``, else ``uniform``).
    """

    def __init__(
        self,
        schedule: NoiseSchedule | str,
        parameterization: str = "eps",
        kind: str = "ddim",
        *,
        eta: float | None = None,
        clip_x0: float | None = None,
        dynamic_threshold: float | None = None,
        step_schedule: "str | StepSchedule | Sequence[tuple[float, float, int]] | None" = None,
    ):
        if parameterization not in PARAMETERIZATIONS:
            raise InvalidInput(f"unknown parameterisation {parameterization!r} (choose from {', '.join(PARAMETERIZATIONS)})")
        if kind not in SAMPLERS:
            raise InvalidInput(f"unknown sampler {kind!r} (choose from {', '.join(SAMPLERS)})")
        _validate_options(kind, eta, clip_x0, dynamic_threshold)
        self.schedule = get_noise_schedule(schedule)
        self.parameterization = parameterization
        self.kind = kind
        self.eta = float(eta) if eta is not None else (1.0 if kind == "ddpm" else 0.0)
        self.clip_x0 = None if clip_x0 is None else float(clip_x0)
        self.dynamic_threshold = None if dynamic_threshold is None else float(dynamic_threshold)
        default = step_schedule if step_schedule is not None else ("angle-linear" if kind == "angle" else "uniform")
        self.step_schedule: StepSchedule = get_step_schedule(default)
        self.times: torch.Tensor | None = None

    @classmethod
    def from_config(cls, schedule: NoiseSchedule | str, parameterization: str, config: SamplerConfig) -> "DiffusionSampler":
        sampler = cls(
            schedule,
            parameterization,
            config.kind,
            eta=config.eta,
            clip_x0=config.clip_x0,
            dynamic_threshold=config.dynamic_threshold,
            step_schedule=config.step_schedule,
        )
        sampler.set_timesteps(config.steps)
        return sampler

    # ------------------------------------------------------------------ timesteps
    def set_timesteps(
        self,
        num_steps: int | None = None,
        schedule: "str | StepSchedule | Sequence[tuple[float, float, int]] | None" = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Fix the ``n + 1`` decreasing times ``1 = t_0 > ... > t_n = 0``; returns ``timesteps = t_0..t_{n-1}``.

        ``schedule`` overrides the sampler's default step schedule (a name, a
        :class:`StepSchedule`, or a list of ``(t_start, t_end, n_steps)`` intervals, in which case
        ``num_steps`` may be omitted). For a :class:`DiscreteDDPMSchedule` the times are snapped to
        its grid ``i / N`` and duplicates merged, so a schedule finer than the grid runs fewer steps.
        """
        step_schedule = self.step_schedule if schedule is None else get_step_schedule(schedule)
        times = step_schedule.times(num_steps, self.schedule)
        if self.schedule.discrete:
            times = torch.unique_consecutive(self.schedule.snap(times).to(torch.float64))
        if times.numel() < 2 or float(times[0]) != 1.0 or float(times[-1]) != 0.0:
            raise InvalidInput("a step schedule must run from t = 1 to t = 0")
        if not bool((times[1:] < times[:-1]).all()):
            raise InvalidInput("step-schedule times must strictly decrease")
        if self.parameterization == "eps" and float(self.schedule.alpha(times[:1].float())) == 0.0:
            raise InvalidInput(
                f"eps-prediction is undefined where alpha_t = 0 (t = 1 of the {self.schedule.name} schedule); "
                "use v-prediction or a schedule with alpha_1 > 0"
            )
        self.times = times.to(device) if device is not None else times
        return self.timesteps

    @property
    def timesteps(self) -> torch.Tensor:
        """The times at which the model is evaluated, ``[n]`` (float64), decreasing from 1."""
        if self.times is None:
            raise InvalidInput("call set_timesteps() before sampling")
        return self.times[:-1]

    @property
    def num_steps(self) -> int:
        return 0 if self.times is None else self.times.numel() - 1

    def previous_time(self, t: float | torch.Tensor) -> float:
        """The time after ``t`` in the current schedule (``t`` must be one of :attr:`timesteps`)."""
        if self.times is None:
            raise InvalidInput("call set_timesteps() before step()")
        tv = float(t)
        idx = torch.nonzero((self.times - tv).abs() < 1e-6).flatten()
        if idx.numel() == 0 or int(idx[0]) == self.times.numel() - 1:
            raise InvalidInput(f"time {tv} is not one of the scheduled timesteps; pass t_prev explicitly")
        return float(self.times[int(idx[0]) + 1])

    # ------------------------------------------------------------------ one step
    def predict(self, model_output: torch.Tensor, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0_hat, eps_hat)`` from a model output at time ``t``, after clipping / thresholding."""
        t = as_time(t, device=x.device)
        a, s = self.schedule.alpha_sigma(t)
        x0 = convert_prediction(model_output, x, a, s, self.parameterization, "x0")
        if self.clip_x0 is None and self.dynamic_threshold is None:
            return x0, convert_prediction(model_output, x, a, s, self.parameterization, "eps")
        x0 = threshold_x0(x0, self.clip_x0, self.dynamic_threshold)
        return x0, (x - expand_like(a, x) * x0) / expand_like(s, x)

    def step(
        self,
        model_output: torch.Tensor,
        t: float | torch.Tensor,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        t_prev: float | torch.Tensor | None = None,
    ) -> StepOutput:
        """Move ``x`` at time ``t`` to ``t_prev < t`` (default: the next scheduled time).

        ``t``/``t_prev`` are floats, ``[B]`` or per-frame ``[B, T]`` tensors (for per-frame times
        ``t_prev`` must be given). Frames with ``t_prev = 0`` receive ``x0_hat``.
        """
        if t_prev is None:
            if isinstance(t, torch.Tensor) and t.numel() > 1:
                tv = t.flatten()
                if not bool((tv == tv[0]).all()):
                    raise InvalidInput("per-frame or per-example times need an explicit t_prev")
                t_prev = self.previous_time(tv[0])
            else:
                t_prev = self.previous_time(t)
        t = as_time(t, device=x.device)
        s = as_time(t_prev, device=x.device)
        if s.device.type != "meta" and bool((s > t + 1e-9).any()):
            raise InvalidInput("t_prev must not be later than t: samplers move towards t = 0")
        x0, eps = self.predict(model_output, t, x)
        a_t, s_t = self.schedule.alpha_sigma(t)
        a_s, s_s = self.schedule.alpha_sigma(s)
        if self.kind == "angle":
            omega = expand_like(self.schedule.angle(t) - self.schedule.angle(s), x)
            v = expand_like(a_t, x) * eps - expand_like(s_t, x) * x0
            prev = torch.cos(omega) * x - torch.sin(omega) * v
        else:
            a_t, s_t, a_s, s_s = (expand_like(c, x) for c in (a_t, s_t, a_s, s_s))
            ratio2 = (a_t / a_s.clamp_min(torch.finfo(x.dtype).tiny)) ** 2
            post_var = (1.0 - ratio2).clamp_min(0.0) * s_s**2 / (s_t**2).clamp_min(torch.finfo(x.dtype).tiny)
            noise_var = (self.eta**2) * post_var
            prev = a_s * x0 + (s_s**2 - noise_var).clamp_min(0.0).sqrt() * eps
            if self.eta > 0.0:
                gen_device = generator.device if generator is not None else x.device
                z = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
                prev = prev + noise_var.sqrt() * z
        prev = torch.where(expand_like(s, x) == 0, x0, prev)
        return StepOutput(prev_sample=prev, pred_x0=x0)

    # ------------------------------------------------------------------ full loop
    def sample(
        self,
        model_fn: ModelFn,
        shape: Sequence[int],
        steps: int | None = None,
        *,
        step_schedule: "str | StepSchedule | Sequence[tuple[float, float, int]] | None" = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        known: torch.Tensor | None = None,
        known_mask: torch.Tensor | None = None,
        callback: StepCallback | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Generate ``[B, ..., T]`` samples by running ``model_fn(x, t)`` from ``t = 1`` down to 0.

        Args:
            model_fn: ``(x [B, ...], t [B] or [B, T]) -> prediction`` in the sampler's parameterisation
                (wrap a model with :func:`~tunecraft.diffusion.guidance.guided_model_fn` for CFG).
            shape: sample shape ``[B, ..., T]``.
            steps, step_schedule: passed to :meth:`set_timesteps` (kept from the last call when omitted).
            generator: seeds the initial noise and every stochastic step; the same seed gives
                bit-identical samples on the same machine and versions.
            noise: initial ``x_1`` instead of drawing it (must have ``shape``).
            known, known_mask: data ``[B, ..., T]`` and a bool ``[B, T]`` mask of frames held at
                ``known`` (time 0) while the rest is generated; the model then sees per-frame times.
            callback: ``callback(k, n, t_k, x, pred_x0)`` after each step.
            progress: show a tqdm bar when stderr is a terminal.
        """
        shape = tuple(int(d) for d in shape)
        if len(shape) < 1 or any(d < 1 for d in shape):
            raise InvalidInput(f"sample shape must be positive [B, ..., T], got {shape}")
        if steps is not None or step_schedule is not None or self.times is None:
            self.set_timesteps(steps, step_schedule)
        if device is None:
            device = noise.device if noise is not None else (known.device if known is not None else torch.device("cpu"))
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise InvalidInput(f"initial noise {tuple(noise.shape)} does not match the sample shape {shape}")
            x = noise.to(device=device, dtype=dtype)
        else:
            gen_device = generator.device if generator is not None else torch.device(device)
            x = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)
        mask_e = None
        if known is not None or known_mask is not None:
            if known is None or known_mask is None:
                raise InvalidInput("known and known_mask must be given together")
            if tuple(known.shape) != shape:
                raise InvalidInput(f"known data {tuple(known.shape)} does not match the sample shape {shape}")
            if known_mask.dtype != torch.bool or tuple(known_mask.shape) != (shape[0], shape[-1]) or len(shape) < 2:
                raise InvalidInput(
                    f"known_mask must be bool [B, T] = {(shape[0], shape[-1])}, "
                    f"got {known_mask.dtype} {tuple(known_mask.shape)}"
                )
            known = known.to(device=device, dtype=dtype)
            known_mask = known_mask.to(device)
            mask_e = expand_like(known_mask, x).bool()
            x = torch.where(mask_e, known, x)
        times = self.times.tolist()
        model_time_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        n = len(times) - 1
        b = shape[0]
        bar = _progress_bar(n, progress)
        try:
            for k in range(n):
                t, s = times[k], times[k + 1]
                # the update uses float64 times; the model sees them in float32 (float64 for float64 samples)
                tb = torch.full((b,), t, device=device, dtype=torch.float64)
                sb = torch.full((b,), s, device=device, dtype=torch.float64)
                if known_mask is not None:
                    zero = torch.zeros((), device=device, dtype=torch.float64)
                    tb = torch.where(known_mask, zero, tb[:, None])
                    sb = torch.where(known_mask, zero, sb[:, None])
                out = model_fn(x, tb.to(model_time_dtype))
                res = self.step(out, tb, x, generator, t_prev=sb)
                x = res.prev_sample
                if mask_e is not None:
                    x = torch.where(mask_e, known, x)
                if callback is not None:
                    callback(k, n, t, x, res.pred_x0)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return x

    def __repr__(self) -> str:
        return (
            f"DiffusionSampler(kind={self.kind!r}, schedule={self.schedule!r}, parameterization={self.parameterization!r}, "
            f"eta={self.eta}, steps={self.num_steps}, step_schedule={self.step_schedule!r})"
        )


def _progress_bar(total: int, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="diffusion", unit="step", leave=False)
