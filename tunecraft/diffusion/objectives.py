"""Diffusion model parameterisations, conversions between them, and training losses.

With ``x_t = alpha_t x_0 + sigma_t eps`` (VP, ``alpha^2 + sigma^2 = 1``) a network may predict

* ``eps`` - the noise (DDPM; Noise2Music's 1D U-Nets),
* ``v``   - the velocity ``v = alpha_t eps - sigma_t x_0`` (Salimans & Ho 2022). With
  ``alpha = cos(delta)``, ``sigma = sin(delta)`` this is MeLoDy's
  ``v = dz/d(delta) = cos(delta) eps - sin(delta) z_0`` (Eq. 5),
* ``x0``  - the clean sample.

Any one determines the others given ``x_t`` (:func:`convert_prediction`)::

    from eps:  x0 = (x_t - sigma eps) / alpha            v  = (eps - sigma x_t) / alpha
    from v:    x0 = alpha x_t - sigma v                  eps = sigma x_t + alpha v
    from x0:   eps = (x_t - alpha x0) / sigma            v  = (alpha x_t - x0) / sigma

:class:`DiffusionObjective` is the training loss
``E_{x0, eps, t} [ w_t || f_theta(x_t, c, t) - target ||^2 ]`` (Noise2Music Eq. 1, MeLoDy Eq. 6) with
``w_t = 1`` (the "simple" loss of DDPM) or ``w_t = sigma_t`` ("sigma-weighted": more weight at the
noisy back end of the schedule, which Noise2Music found crucial for its spectrogram generator).
It accepts per-frame times ``t [B, T]``, which is MeLoDy's multi-chunk loss (Eq. 7-9) when built with
:func:`sample_multichunk_t`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import Config
from ..errors import ConfigError, InvalidInput
from .schedules import NoiseSchedule, as_time, expand_like, get_noise_schedule

__all__ = [
    "PARAMETERIZATIONS",
    "WEIGHTINGS",
    "DiffusionObjective",
    "DiffusionObjectiveConfig",
    "chunk_time_vector",
    "convert_prediction",
    "loss_weight",
    "pred_eps",
    "pred_v",
    "pred_x0",
    "sample_multichunk_t",
    "training_target",
]

PARAMETERIZATIONS = ("eps", "v", "x0")
WEIGHTINGS = ("simple", "sigma")

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_param(p: str) -> str:
    if p not in PARAMETERIZATIONS:
        raise InvalidInput(f"unknown parameterisation {p!r} (choose from {', '.join(PARAMETERIZATIONS)})")
    return p


# ---------------------------------------------------------------------------------------- conversions
def convert_prediction(
    output: torch.Tensor,
    x_t: torch.Tensor,
    alpha: torch.Tensor | float,
    sigma: torch.Tensor | float,
    source: str,
    target: str,
) -> torch.Tensor:
    """Convert a ``source`` prediction (``eps``/``v``/``x0``) of ``x_t [B, ..., T]`` into ``target``.

    ``alpha``/``sigma`` are scalars, ``[B]``, ``[B, T]`` or full-shape tensors (see
    :func:`~tunecraft.diffusion.schedules.expand_like`). Formulas in the module docstring; converting
    from ``eps`` divides by ``alpha`` and from ``x0`` by ``sigma``, so those are undefined at ``alpha = 0``
    (pure noise) and ``sigma = 0`` (clean) respectively. ``v`` is defined everywhere.
    """
    _check_param(source)
    _check_param(target)
    if output.shape != x_t.shape:
        raise InvalidInput(f"model output {tuple(output.shape)} does not match x_t {tuple(x_t.shape)}")
    if source == target:
        return output
    a = expand_like(alpha, x_t)
    s = expand_like(sigma, x_t)
    if source == "eps":
        return (x_t - s * output) / a if target == "x0" else (output - s * x_t) / a
    if source == "v":
        return a * x_t - s * output if target == "x0" else s * x_t + a * output
    # source == "x0"
    return (x_t - a * output) / s if target == "eps" else (a * x_t - output) / s


def _schedule_convert(model_output, x_t, t, schedule, parameterization, target):
    a, s = get_noise_schedule(schedule).alpha_sigma(as_time(t, device=x_t.device))
    return convert_prediction(model_output, x_t, a, s, parameterization, target)


def pred_x0(
    model_output: torch.Tensor, x_t: torch.Tensor, t, schedule: NoiseSchedule, parameterization: str = "eps"
) -> torch.Tensor:
    """``x0`` implied by a model output of the given parameterisation at time ``t`` (``[]``, ``[B]`` or ``[B, T]``)."""
    return _schedule_convert(model_output, x_t, t, schedule, parameterization, "x0")


def pred_eps(
    model_output: torch.Tensor, x_t: torch.Tensor, t, schedule: NoiseSchedule, parameterization: str = "eps"
) -> torch.Tensor:
    """``eps`` implied by a model output of the given parameterisation at time ``t``."""
    return _schedule_convert(model_output, x_t, t, schedule, parameterization, "eps")


def pred_v(
    model_output: torch.Tensor, x_t: torch.Tensor, t, schedule: NoiseSchedule, parameterization: str = "eps"
) -> torch.Tensor:
    """``v = alpha eps - sigma x0`` implied by a model output of the given parameterisation at time ``t``."""
    return _schedule_convert(model_output, x_t, t, schedule, parameterization, "v")


def training_target(x0: torch.Tensor, noise: torch.Tensor, alpha, sigma, parameterization: str) -> torch.Tensor:
    """Regression target for a parameterisation: ``eps``, ``v = alpha eps - sigma x0``, or ``x0``."""
    _check_param(parameterization)
    if parameterization == "eps":
        return noise
    if parameterization == "x0":
        return x0
    return expand_like(alpha, x0) * noise - expand_like(sigma, x0) * x0


def loss_weight(weighting: str, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-time loss weight ``w_t``: ``simple`` -> 1, ``sigma`` -> ``sigma_t`` (Noise2Music's sigma-weighted loss)."""
    if weighting == "simple":
        return torch.ones_like(sigma)
    if weighting == "sigma":
        return sigma
    raise InvalidInput(f"unknown loss weighting {weighting!r} (choose from {', '.join(WEIGHTINGS)})")


# ---------------------------------------------------------------------------------------- multi-chunk
def chunk_time_vector(chunk_t: torch.Tensor, length: int) -> torch.Tensor:
    """Per-frame times from per-chunk times (MeLoDy Eq. 10).

    ``chunk_t [B, M]`` -> ``[B, length]`` where frames ``L_{m-1} <= l < L_m`` with
    ``L_m = floor(m L / M)`` get ``chunk_t[:, m-1]``.
    """
    if chunk_t.dim() != 2:
        raise InvalidInput(f"chunk times must be [B, M], got shape {tuple(chunk_t.shape)}")
    m = chunk_t.shape[1]
    if m < 1 or length < m:
        raise InvalidInput(f"cannot split {length} frames into {m} chunks")
    frame = torch.arange(length, device=chunk_t.device)
    # frame l belongs to chunk m (0-based) when L_m <= l < L_{m+1}, with L_m = floor(m L / M)
    bounds = torch.tensor([(k * length) // m for k in range(1, m + 1)], device=chunk_t.device)
    idx = torch.bucketize(frame, bounds, right=True)
    return chunk_t[:, idx]


def sample_multichunk_t(
    schedule: NoiseSchedule,
    batch_size: int,
    length: int,
    num_chunks: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    t_min: float = 0.0,
    t_max: float = 1.0,
) -> torch.Tensor:
    """MeLoDy multi-chunk training times: ``M`` independent ``t_m ~ U[t_min, t_max]`` per example
    (``delta_m = pi t_m / 2 ~ U[0, pi/2]`` for the angle schedule), spread over frames with
    :func:`chunk_time_vector`. Returns ``[B, length]``."""
    chunk_t = schedule.sample_t((batch_size, num_chunks), generator=generator, device=device, t_min=t_min, t_max=t_max)
    return chunk_time_vector(chunk_t, length)


# ---------------------------------------------------------------------------------------- objective
@dataclass
class DiffusionObjectiveConfig(Config):
    """Training loss settings.

    ``parameterization``: what the network predicts (``eps``, ``v``, ``x0``).
    ``weighting``: ``simple`` (``w_t = 1``) or ``sigma`` (``w_t = sigma_t``).
    ``t_min``/``t_max``: range of the uniform training-time distribution.
    """

    parameterization: str = "eps"
    weighting: str = "simple"
    t_min: float = 0.0
    t_max: float = 1.0

    def __post_init__(self) -> None:
        if self.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(
                f"unknown parameterization {self.parameterization!r} (choose from {', '.join(PARAMETERIZATIONS)})"
            )
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"unknown weighting {self.weighting!r} (choose from {', '.join(WEIGHTINGS)})")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ConfigError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")


class DiffusionObjective:
    """The denoising loss ``E [ w_t || f(x_t, t) - target ||^2 ]`` for a schedule and a parameterisation.

    ``model_fn(x_t, t)`` is any callable returning a prediction of ``x_t``'s shape; condition
    arguments are closed over by the caller (``lambda x, t: unet(x, t, text=...)``).
    """

    def __init__(self, schedule: NoiseSchedule | str, config: DiffusionObjectiveConfig | None = None, **overrides):
        self.schedule = get_noise_schedule(schedule)
        config = config or DiffusionObjectiveConfig()
        self.config = config.replace(**overrides) if overrides else config

    @property
    def parameterization(self) -> str:
        return self.config.parameterization

    def sample_t(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        length: int | None = None,
        num_chunks: int | None = None,
    ) -> torch.Tensor:
        """Training times: ``[B]``, or with ``length`` and ``num_chunks`` MeLoDy's per-frame ``[B, length]``."""
        c = self.config
        if num_chunks is None:
            return self.schedule.sample_t(batch_size, generator=generator, device=device, t_min=c.t_min, t_max=c.t_max)
        if length is None:
            raise InvalidInput("multi-chunk times need the sequence length")
        return sample_multichunk_t(
            self.schedule, batch_size, length, num_chunks, generator=generator, device=device, t_min=c.t_min, t_max=c.t_max
        )

    def noisy_input(self, x0: torch.Tensor, t, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, target, weight)`` for clean data ``x0``, time ``t`` and noise ``eps``.

        ``weight`` has ``t``'s shape (``[]``, ``[B]`` or ``[B, T]``)."""
        t = as_time(t, device=x0.device)
        a, s = self.schedule.alpha_sigma(t)
        x_t = expand_like(a, x0) * x0 + expand_like(s, x0) * noise
        target = training_target(x0, noise, a, s, self.config.parameterization)
        return x_t, target, loss_weight(self.config.weighting, a, s)

    def loss(
        self,
        model_fn: ModelFn,
        x0: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
        reduction: str = "mean",
        return_pred_x0: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Monte-Carlo estimate of the weighted denoising loss on a batch ``x0 [B, ..., T]``.

        ``t`` (``[B]`` or per-frame ``[B, T]``) and ``noise`` are drawn with ``generator`` when not given.
        ``mask`` (broadcastable to ``x0``, e.g. ``[B, 1, T]``) selects the elements that count.
        ``reduction="mean"`` gives a scalar, ``"none"`` the per-example ``[B]`` losses (each a masked mean).
        With ``return_pred_x0`` the result is ``(loss, pred_x0)``: the clean signal the model's
        output implies (for auxiliary losses on it, differentiable).
        """
        if x0.dim() < 1 or x0.shape[0] == 0:
            raise InvalidInput(f"x0 must be a non-empty batch [B, ...], got shape {tuple(x0.shape)}")
        if reduction not in ("mean", "none"):
            raise InvalidInput(f"reduction must be 'mean' or 'none', got {reduction!r}")
        b = x0.shape[0]
        if t is None:
            t = self.sample_t(b, generator=generator, device=x0.device)
        if noise is None:
            gen_device = generator.device if generator is not None else x0.device
            noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
        x_t, target, weight = self.noisy_input(x0, t, noise)
        out = model_fn(x_t, as_time(t, device=x0.device))
        if out.shape != target.shape:
            raise InvalidInput(f"model output {tuple(out.shape)} does not match the target {tuple(target.shape)}")
        err = (out.float() - target.float()).pow(2) * expand_like(weight, x0).float()
        if mask is None:
            per_example = err.reshape(b, -1).mean(dim=1)
        else:
            m = torch.broadcast_to(mask.to(device=err.device, dtype=err.dtype), err.shape)
            per_example = (err * m).reshape(b, -1).sum(1) / m.reshape(b, -1).sum(1).clamp_min(1.0)
        result = per_example.mean() if reduction == "mean" else per_example
        if not return_pred_x0:
            return result
        a, s = self.schedule.alpha_sigma(as_time(t, device=x0.device))
        return result, convert_prediction(out, x_t, a, s, self.config.parameterization, "x0")
