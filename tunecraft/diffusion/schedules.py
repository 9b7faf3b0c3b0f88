"""Noise schedules of continuous-time Gaussian diffusion, ``t`` in ``[0, 1]``.

Every schedule here is *variance preserving*: the forward process is

    q(x_t | x_0) = N(x_t; alpha_t x_0, sigma_t^2 I),    alpha_t^2 + sigma_t^2 = 1,

so it is fully described by its log signal-to-noise ratio ``lambda(t) = log(alpha_t^2 / sigma_t^2)``,
which decreases monotonically from ``t = 0`` (clean) to ``t = 1`` (noise), with
``alpha_t^2 = sigmoid(lambda)`` and ``sigma_t^2 = sigmoid(-lambda)`` (Kingma et al., VDM, 2021).

Equivalently, every VP schedule is an *angle* schedule (MeLoDy, Eq. 2):
``delta(t) = atan2(sigma_t, alpha_t)`` in ``[0, pi/2]`` and ``x_t = cos(delta) x_0 + sin(delta) eps``.
That is what lets the MeLoDy angle sampler run on any schedule here.

Schedules:

* :class:`CosineSchedule` - Imagen / VDM "clipped cosine" in log-SNR form:
  ``lambda(t) = -2 log tan(a t + b)`` with ``lambda(0) = logsnr_max``, ``lambda(1) = logsnr_min``
  (Nichol & Dhariwal's ``alpha_bar = cos^2(pi t / 2)`` without the end-point blow-up).
* :class:`LinearSchedule` - continuous-time limit of DDPM's linear ``beta`` (Song et al., 2021, VP-SDE):
  ``alpha_t^2 = exp(-(b0 t + (b1 - b0) t^2 / 2))`` with ``b = N beta``.
* :class:`DiscreteDDPMSchedule` - DDPM's ``N`` discrete steps (JEN-1: ``N = 1000``, linear ``beta``
  from 0.0015 to 0.0195), embedded in continuous time at ``t_i = i / N`` (``alpha_bar(0) = 1``),
  with ``log alpha_bar`` linearly interpolated between grid points.
* :class:`AngleSchedule` - MeLoDy: ``alpha_t = cos(pi t / 2)``, ``sigma_t = sin(pi t / 2)``, so
  ``delta = pi t / 2``.

All functions take ``t`` as a python float or a tensor of any shape (``[]``, ``[B]``, or per frame
``[B, T]``) and return tensors of that shape; :func:`expand_like` broadcasts such coefficients
against data ``x [B, ..., T]``. Schedule maths runs in float64 and is cast back to ``t``'s
floating dtype (float32 for python floats or integer tensors).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch

from ..config import Config
from ..errors import ConfigError, InvalidInput

__all__ = [
    "AngleSchedule",
    "CosineSchedule",
    "DiscreteDDPMSchedule",
    "LinearSchedule",
    "NoiseSchedule",
    "NoiseScheduleConfig",
    "as_time",
    "expand_like",
    "get_noise_schedule",
]

HALF_PI = math.pi / 2


# ---------------------------------------------------------------------------------------- helpers
def as_time(t, *, device: torch.device | str | None = None) -> torch.Tensor:
    """``t`` (float, sequence or tensor) as a floating tensor; integers become float32."""
    if isinstance(t, torch.Tensor):
        out = t if t.is_floating_point() else t.to(torch.float32)
        return out if device is None else out.to(device)
    try:
        return torch.as_tensor(t, dtype=torch.float32, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidInput(f"diffusion time must be a number or a tensor, got {type(t).__name__}") from None


def _check_range(t: torch.Tensor, lo: float = 0.0, hi: float = 1.0, what: str = "diffusion time t") -> None:
    if t.numel() == 0:
        return
    if t.device.type == "meta":
        return
    tmin, tmax = float(t.min()), float(t.max())
    if math.isnan(tmin) or math.isnan(tmax) or tmin < lo - 1e-6 or tmax > hi + 1e-6:
        raise InvalidInput(f"{what} must lie in [{lo}, {hi}], got values in [{tmin:.6g}, {tmax:.6g}]")


def expand_like(coef: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-example or per-frame coefficient against data ``x [B, ..., T]``.

    * ``[]`` (scalar): returned as is;
    * ``[B]``: one value per example, viewed as ``[B, 1, ..., 1]``;
    * ``[B, T]`` with ``T = x.shape[-1]``: one value per frame (MeLoDy's per-frame angle
      vector, Eq. 10), viewed as ``[B, 1, ..., 1, T]`` so it is shared by all channels;
    * ``x.shape``, or any shape of ``x``'s rank that broadcasts to it (``[B, 1, T]``): elementwise.

    The result has ``x``'s dtype and device.
    """
    if not isinstance(coef, torch.Tensor):
        return torch.as_tensor(coef, dtype=x.dtype, device=x.device)
    c = coef.to(dtype=x.dtype, device=x.device)
    if c.dim() == 0 or tuple(c.shape) == tuple(x.shape):
        return c
    if c.dim() == x.dim() and c.dim() > 2 and all(ci in (1, xi) for ci, xi in zip(c.shape, x.shape)):
        return c
    b = x.shape[0] if x.dim() else None
    if c.dim() == 1:
        if x.dim() < 1 or c.shape[0] != b:
            raise InvalidInput(f"per-example coefficient of shape {tuple(c.shape)} does not match data {tuple(x.shape)}")
        return c.view(b, *([1] * (x.dim() - 1)))
    if c.dim() == 2:
        if x.dim() < 2 or c.shape[0] != b or c.shape[1] != x.shape[-1]:
            raise InvalidInput(
                f"per-frame coefficient of shape {tuple(c.shape)} needs data [B, ..., T] with "
                f"B={c.shape[0]}, T={c.shape[1]}; got {tuple(x.shape)}"
            )
        return c.view(b, *([1] * (x.dim() - 2)), c.shape[1])
    raise InvalidInput(f"time/coefficient shape {tuple(c.shape)} must be [], [B], [B, T] or the data shape {tuple(x.shape)}")


def _out_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float32


# ---------------------------------------------------------------------------------------- base
class NoiseSchedule(abc.ABC):
    """A variance-preserving noise schedule on ``t`` in ``[0, 1]``.

    Subclasses implement :meth:`_log_snr64` / :meth:`_t_from_log_snr64` (float64 tensors);
    the base class derives ``alpha``, ``sigma``, the angle ``delta`` and the forward process
    ``x_t = alpha_t x_0 + sigma_t eps``.
    """

    #: registry name (``cosine``, ``linear``, ``ddpm``, ``angle``)
    name: str = ""
    #: True for schedules trained on a finite grid of times (DDPM)
    discrete: bool = False

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _log_snr64(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda(t)`` for float64 ``t`` in [0, 1]."""

    @abc.abstractmethod
    def _t_from_log_snr64(self, log_snr: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_log_snr64`, clamped to [0, 1]."""

    def _alpha_sigma64(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam = self._log_snr64(t)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()

    @abc.abstractmethod
    def to_config(self) -> "NoiseScheduleConfig":
        """The :class:`NoiseScheduleConfig` that rebuilds this schedule."""

    # ------------------------------------------------------------------ public API
    def log_snr(self, t) -> torch.Tensor:
        """``lambda(t) = log(alpha_t^2 / sigma_t^2)``, same shape as ``t`` (``+inf`` where ``sigma_t = 0``)."""
        t = as_time(t)
        _check_range(t)
        return self._log_snr64(t.to(torch.float64)).to(_out_dtype(t))

    def t_from_log_snr(self, log_snr) -> torch.Tensor:
        """The time at which the schedule reaches ``log_snr`` (clamped to ``[0, 1]``)."""
        lam = as_time(log_snr)
        return self._t_from_log_snr64(lam.to(torch.float64)).clamp(0.0, 1.0).to(_out_dtype(lam))

    def alpha_sigma(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)``, each the shape of ``t``; ``alpha^2 + sigma^2 = 1``."""
        t = as_time(t)
        _check_range(t)
        a, s = self._alpha_sigma64(t.to(torch.float64))
        dt = _out_dtype(t)
        return a.to(dt), s.to(dt)

    def alpha(self, t) -> torch.Tensor:
        """Signal scale ``alpha_t``."""
        return self.alpha_sigma(t)[0]

    def sigma(self, t) -> torch.Tensor:
        """Noise scale ``sigma_t``."""
        return self.alpha_sigma(t)[1]

    def angle(self, t) -> torch.Tensor:
        """MeLoDy's angle ``delta(t) = atan2(sigma_t, alpha_t)`` in ``[0, pi/2]`` (Eq. 2)."""
        t = as_time(t)
        _check_range(t)
        a, s = self._alpha_sigma64(t.to(torch.float64))
        return torch.atan2(s, a).to(_out_dtype(t))

    def t_from_angle(self, delta) -> torch.Tensor:
        """Inverse of :meth:`angle`: ``lambda = -2 log tan(delta)``, then :meth:`t_from_log_snr`."""
        d = as_time(delta)
        _check_range(d, 0.0, HALF_PI, "angle delta")
        d64 = d.to(torch.float64).clamp(0.0, HALF_PI)
        lam = -2.0 * torch.log(torch.tan(d64))
        lam = torch.where(d64 >= HALF_PI, torch.full_like(lam, -math.inf), lam)
        return self._t_from_log_snr64(lam).clamp(0.0, 1.0).to(_out_dtype(d))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """Forward process ``x_t = alpha_t x_0 + sigma_t eps`` for ``t`` of shape ``[]``, ``[B]`` or ``[B, T]``."""
        if x0.shape != noise.shape:
            raise InvalidInput(f"x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have the same shape")
        a, s = self.alpha_sigma(as_time(t, device=x0.device))
        return expand_like(a, x0) * x0 + expand_like(s, x0) * noise

    def sample_t(
        self,
        shape: int | tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        t_min: float = 0.0,
        t_max: float = 1.0,
    ) -> torch.Tensor:
        """Training times ``t ~ U[t_min, t_max]`` of ``shape`` (float32). Discrete schedules snap to their grid."""
        if not 0.0 <= t_min < t_max <= 1.0:
            raise InvalidInput(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(shape, generator=generator, device=gen_device)
        t = t_min + (t_max - t_min) * u
        return t.to(device) if device is not None else t

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_config().to_dict().items() if k != "kind" and v is not None)
        return f"{type(self).__name__}({fields})"


# ---------------------------------------------------------------------------------------- cosine
class CosineSchedule(NoiseSchedule):
    """Clipped cosine schedule in log-SNR form (Nichol & Dhariwal 2021; VDM / Imagen).

    ``lambda(t) = -2 log tan(a t + b)`` with ``b = atan(exp(-logsnr_max / 2))`` and
    ``a = atan(exp(-logsnr_min / 2)) - b``, so ``lambda(0) = logsnr_max`` and ``lambda(1) = logsnr_min``.
    Without clipping (``logsnr_max -> inf``, ``logsnr_min -> -inf``) this is exactly
    ``alpha_t = cos(pi t / 2)``, the :class:`AngleSchedule`.
    """

    name = "cosine"

    def __init__(self, logsnr_min: float = -20.0, logsnr_max: float = 20.0):
        if not (math.isfinite(logsnr_min) and math.isfinite(logsnr_max)) or not logsnr_min < logsnr_max:
            raise ConfigError(f"cosine schedule needs finite logsnr_min < logsnr_max, got {logsnr_min}, {logsnr_max}")
        self.logsnr_min = float(logsnr_min)
        self.logsnr_max = float(logsnr_max)
        self._b = math.atan(math.exp(-0.5 * self.logsnr_max))
        self._a = math.atan(math.exp(-0.5 * self.logsnr_min)) - self._b

    def _log_snr64(self, t):
        return -2.0 * torch.log(torch.tan(self._a * t + self._b))

    def _t_from_log_snr64(self, log_snr):
        return (torch.atan(torch.exp(-0.5 * log_snr)) - self._b) / self._a

    def to_config(self) -> "NoiseScheduleConfig":
        return NoiseScheduleConfig(kind="cosine", logsnr_min=self.logsnr_min, logsnr_max=self.logsnr_max)


# ---------------------------------------------------------------------------------------- linear
class LinearSchedule(NoiseSchedule):
    """Continuous-time linear-beta VP schedule (the ``N -> inf`` limit of DDPM's linear betas).

    ``beta(t) = beta_min + t (beta_max - beta_min)`` and
    ``alpha_t^2 = exp(-int_0^t beta) = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2))``.
    DDPM's ``beta_i`` from ``beta_start`` to ``beta_end`` over ``N`` steps corresponds to
    ``beta_min = N beta_start``, ``beta_max = N beta_end`` (:meth:`from_ddpm`; the DDPM defaults
    1e-4 .. 0.02 give 0.1 .. 20, Song et al. 2021).
    """

    name = "linear"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not (0.0 <= beta_min and beta_min <= beta_max and beta_max > 0):
            raise ConfigError(f"linear schedule needs 0 <= beta_min <= beta_max, beta_max > 0; got {beta_min}, {beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    @classmethod
    def from_ddpm(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000) -> "LinearSchedule":
        """The continuous schedule matching DDPM's linear ``beta_start .. beta_end`` over ``num_steps``."""
        return cls(beta_min=beta_start * num_steps, beta_max=beta_end * num_steps)

    def _integral(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def _alpha_sigma64(self, t):
        i = self._integral(t)
        return torch.exp(-0.5 * i), (-torch.expm1(-i)).clamp_min(0.0).sqrt()

    def _log_snr64(self, t):
        return -torch.log(torch.expm1(self._integral(t)))

    def _t_from_log_snr64(self, log_snr):
        # integral I = log(1 + exp(-lambda)) = softplus(-lambda); solve (d/2) t^2 + b0 t - I = 0
        i = torch.nn.functional.softplus(-log_snr)
        d = self.beta_max - self.beta_min
        if d == 0.0:
            return i / self.beta_min
        return (-self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * d * i)) / d

    def to_config(self) -> "NoiseScheduleConfig":
        return NoiseScheduleConfig(kind="linear", beta_min=self.beta_min, beta_max=self.beta_max)


# ---------------------------------------------------------------------------------------- discrete DDPM
class DiscreteDDPMSchedule(NoiseSchedule):
    """DDPM's discrete schedule (Ho et al. 2020) embedded in continuous time.

    ``beta_1..beta_N`` linear from ``beta_start`` to ``beta_end`` (``beta_schedule="linear"``) or
    linear in ``sqrt(beta)`` (``"scaled_linear"``, Stable Diffusion); ``alpha_bar_i = prod_{j<=i} (1 - beta_j)``.
    Step ``i`` (1-based) sits at ``t_i = i / N`` with ``alpha_t^2 = alpha_bar_i`` and ``t_0 = 0`` is clean;
    between grid points ``log alpha_bar`` is linearly interpolated so the continuous samplers and
    conversions apply unchanged. Training times are drawn on the grid (:meth:`sample_t`) and
    step schedules are snapped to it (:meth:`snap`). JEN-1: ``N = 1000``, linear 0.0015 .. 0.0195.
    """

    name = "ddpm"
    discrete = True

    def __init__(
        self,
        num_train_steps: int = 1000,
        beta_start: float = 0.0015,
        beta_end: float = 0.0195,
        beta_schedule: str = "linear",
    ):
        if isinstance(num_train_steps, bool) or not isinstance(num_train_steps, int) or num_train_steps < 1:
            raise ConfigError(f"num_train_steps must be a positive integer, got {num_train_steps!r}")
        if not (0.0 < beta_start <= beta_end < 1.0):
            raise ConfigError(f"DDPM betas need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        if beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_steps, dtype=torch.float64) ** 2
        else:
            raise ConfigError(f"unknown beta_schedule {beta_schedule!r} (use 'linear' or 'scaled_linear')")
        self.num_train_steps = num_train_steps
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.beta_schedule = beta_schedule
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        # -log alpha_bar on the grid t_i = i / N, i = 0..N (increasing)
        self._neg_log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), -torch.log(self.alphas_cumprod)])

    def _neg_log_abar_at(self, t):
        n = self.num_train_steps
        grid = self._neg_log_abar.to(t.device)
        pos = t.clamp(0.0, 1.0) * n
        lo = pos.floor().clamp(0, n - 1).long()
        frac = pos - lo.to(pos.dtype)
        return grid[lo] + frac * (grid[lo + 1] - grid[lo])

    def _alpha_sigma64(self, t):
        i = self._neg_log_abar_at(t)
        return torch.exp(-0.5 * i), (-torch.expm1(-i)).clamp_min(0.0).sqrt()

    def _log_snr64(self, t):
        return -torch.log(torch.expm1(self._neg_log_abar_at(t)))

    def _t_from_log_snr64(self, log_snr):
        target = torch.nn.functional.softplus(-log_snr)  # -log alpha_bar
        grid = self._neg_log_abar.to(target.device)
        n = self.num_train_steps
        idx = torch.searchsorted(grid, target.contiguous()).clamp(1, n)
        lo, hi = grid[idx - 1], grid[idx]
        frac = ((target - lo) / (hi - lo)).clamp(0.0, 1.0)
        return (idx - 1).to(torch.float64).add(frac) / n

    def sample_t(self, shape, *, generator=None, device=None, t_min: float = 0.0, t_max: float = 1.0) -> torch.Tensor:
        """Grid times ``i / N`` with ``i`` uniform over the integers in ``[max(1, ceil(t_min N)), floor(t_max N)]``."""
        if not 0.0 <= t_min < t_max <= 1.0:
            raise InvalidInput(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        n = self.num_train_steps
        lo, hi = max(1, math.ceil(t_min * n - 1e-9)), math.floor(t_max * n + 1e-9)
        if hi < lo:
            raise InvalidInput(f"no DDPM step lies in [{t_min}, {t_max}] with N={n}")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        i = torch.randint(lo, hi + 1, shape, generator=generator, device=gen_device)
        t = i.to(torch.float32) / n
        return t.to(device) if device is not None else t

    def snap(self, t) -> torch.Tensor:
        """Round times to the grid ``i / N``."""
        t = as_time(t)
        return (torch.round(t.to(torch.float64) * self.num_train_steps) / self.num_train_steps).to(_out_dtype(t))

    def timestep_index(self, t) -> torch.Tensor:
        """The 0-based DDPM / diffusers timestep index ``round(t N) - 1`` (int64, ``t = 0`` maps to -1)."""
        t = as_time(t)
        return torch.round(t.to(torch.float64) * self.num_train_steps).long() - 1

    def to_config(self) -> "NoiseScheduleConfig":
        return NoiseScheduleConfig(
            kind="ddpm",
            num_train_steps=self.num_train_steps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule=self.beta_schedule,
        )


# ---------------------------------------------------------------------------------------- angle
class AngleSchedule(NoiseSchedule):
    """MeLoDy's angle parameterisation (Eq. 2): ``z_delta = cos(delta) z_0 + sin(delta) eps``.

    ``alpha_t = cos(pi t / 2)``, ``sigma_t = sin(pi t / 2)``, so ``delta = pi t / 2`` in ``[0, pi/2]``
    and the velocity ``v = dz/d(delta) = cos(delta) eps - sin(delta) z_0`` (Eq. 5) is the v-prediction
    target. ``alpha_1 = 0`` exactly, so eps-prediction is undefined at ``t = 1``: use ``v``.
    """

    name = "angle"

    def _alpha_sigma64(self, t):
        d = HALF_PI * t.clamp(0.0, 1.0)
        a = torch.cos(d)
        a = torch.where(t >= 1.0, torch.zeros_like(a), a)  # cos(pi/2) is not exactly 0 in floating point
        return a, torch.sin(d)

    def _log_snr64(self, t):
        a, s = self._alpha_sigma64(t)
        return 2.0 * (torch.log(a) - torch.log(s))

    def _t_from_log_snr64(self, log_snr):
        return torch.atan(torch.exp(-0.5 * log_snr)) / HALF_PI

    def angle(self, t) -> torch.Tensor:
        t = as_time(t)
        _check_range(t)
        return (HALF_PI * t.to(torch.float64)).to(_out_dtype(t))

    def t_from_angle(self, delta) -> torch.Tensor:
        d = as_time(delta)
        _check_range(d, 0.0, HALF_PI, "angle delta")
        return (d.to(torch.float64) / HALF_PI).clamp(0.0, 1.0).to(_out_dtype(d))

    def to_config(self) -> "NoiseScheduleConfig":
        return NoiseScheduleConfig(kind="angle")


# ---------------------------------------------------------------------------------------- config
@dataclass
class NoiseScheduleConfig(Config):
    """Serialisable choice of noise schedule; ``build()`` makes the :class:`NoiseSchedule`.

    ``kind``: ``cosine`` (uses ``logsnr_min/max``), ``linear`` (``beta_min/max``), ``ddpm``
    (``num_train_steps``, ``beta_start/end``, ``beta_schedule``) or ``angle`` (no parameters).
    Fields not used by ``kind`` are ignored and may be left at ``None``.
    """

    kind: str = "cosine"
    logsnr_min: float | None = None
    logsnr_max: float | None = None
    beta_min: float | None = None
    beta_max: float | None = None
    num_train_steps: int | None = None
    beta_start: float | None = None
    beta_end: float | None = None
    beta_schedule: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _SCHEDULES:
            raise ConfigError(f"unknown noise schedule {self.kind!r} (choose from {', '.join(sorted(_SCHEDULES))})")

    def build(self) -> NoiseSchedule:
        k = self.kind
        if k == "cosine":
            return CosineSchedule(
                -20.0 if self.logsnr_min is None else self.logsnr_min, 20.0 if self.logsnr_max is None else self.logsnr_max
            )
        if k == "linear":
            return LinearSchedule(
                0.1 if self.beta_min is None else self.beta_min, 20.0 if self.beta_max is None else self.beta_max
            )
        if k == "ddpm":
            return DiscreteDDPMSchedule(
                1000 if self.num_train_steps is None else self.num_train_steps,
                0.0015 if self.beta_start is None else self.beta_start,
                0.0195 if self.beta_end is None else self.beta_end,
                "linear" if self.beta_schedule is None else self.beta_schedule,
            )
        return AngleSchedule()

    # named presets ------------------------------------------------------------------------------
    @classmethod
    def noise2music(cls) -> "NoiseScheduleConfig":
        """Imagen-style clipped cosine, log-SNR in [-20, 20]."""
        return cls(kind="cosine", logsnr_min=-20.0, logsnr_max=20.0)

    @classmethod
    def melody(cls) -> "NoiseScheduleConfig":
        """MeLoDy's angle schedule ``alpha = cos(pi t / 2)``."""
        return cls(kind="angle")

    @classmethod
    def jen1(cls) -> "NoiseScheduleConfig":
        """JEN-1: DDPM, 1000 steps, linear beta 0.0015 .. 0.0195."""
        return cls(kind="ddpm", num_train_steps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="linear")


_SCHEDULES = {"cosine": CosineSchedule, "linear": LinearSchedule, "ddpm": DiscreteDDPMSchedule, "angle": AngleSchedule}


def get_noise_schedule(spec: str | NoiseScheduleConfig | NoiseSchedule | dict, **kwargs) -> NoiseSchedule:
    """Build a schedule from a name (``"cosine"``, ``"linear"``, ``"ddpm"``, ``"angle"``, or a preset
    ``"noise2music"``, ``"melody"``, ``"jen1"``), a :class:`NoiseScheduleConfig`, its dict, or pass one through.
    Keyword arguments go to the schedule's constructor when ``spec`` is a kind name."""
    if isinstance(spec, NoiseSchedule):
        return spec
    if isinstance(spec, NoiseScheduleConfig):
        return spec.build()
    if isinstance(spec, dict):
        return NoiseScheduleConfig.from_dict(spec).build()
    if isinstance(spec, str):
        presets = {
            "noise2music": NoiseScheduleConfig.noise2music,
            "melody": NoiseScheduleConfig.melody,
            "jen1": NoiseScheduleConfig.jen1,
        }
        if spec in presets:
            if kwargs:
                raise ConfigError(f"preset noise schedule {spec!r} takes no arguments")
            return presets[spec]().build()
        if spec in _SCHEDULES:
            try:
                return _SCHEDULES[spec](**kwargs)
            except TypeError as e:
                raise ConfigError(f"noise schedule {spec!r}: {e}") from None
        raise ConfigError(
            f"unknown noise schedule {spec!r} (choose from {', '.join(sorted([*_SCHEDULES, *presets]))})"
        )
    raise ConfigError(f"cannot build a noise schedule from {type(spec).__name__}")
