"""Inference step schedules: where the ``n`` denoising steps fall in ``t`` in ``[0, 1]``.

A step schedule turns a step count ``n`` into ``n + 1`` decreasing times
``1 = t_0 > t_1 > ... > t_n = 0``; the sampler moves ``x`` from ``t_k`` to ``t_{k+1}`` at step ``k``.

* :class:`UniformStepSchedule` - equal spacing.
* :class:`PiecewiseStepSchedule` - Noise2Music's way of writing a schedule: a list of
  ``(t_start, t_end, n_steps)`` intervals covering ``[0, 1]``, uniform inside each interval.
  "Front-heavy" puts more steps near ``t = 0`` (the clean end, fine detail), "back-heavy" near
  ``t = 1`` (the noisy end, global structure); Noise2Music uses front-heavy for its waveform models
  and back-heavy for the spectrogram generator (Table 3). The paper gives those schedules only
  as a table image, so the presets here are *our* allotments, written as fractions of the total and
  scaled to any step count (:data:`FRONT_HEAVY`, :data:`BACK_HEAVY`):

  * front-heavy: ``[0, 0.2)`` 50 % of the steps, ``[0.2, 0.6)`` 30 %, ``[0.6, 1]`` 20 %
    (step densities 2.5x, 0.75x and 0.5x uniform);
  * back-heavy, its mirror image: ``[0, 0.4)`` 20 %, ``[0.4, 0.8)`` 30 %, ``[0.8, 1]`` 50 %.

* :class:`AngleStepSchedule` - MeLoDy's angle steps ``omega_1..omega_T`` with ``sum omega_t = pi/2``
  (Eq. 3), ``delta_T = pi/2``, ``delta_{t-1} = delta_t - omega_t``. ``linear``:
  ``omega_t = pi / (6T) + 2 pi t / (3T(T+1))`` (Eq. 4: large steps first, small near the data);
  ``uniform``: ``omega_t = pi / (2T)``. Angles map to times through the noise schedule
  (``t = 2 delta / pi`` for :class:`~tunecraft.diffusion.schedules.AngleSchedule`).
"""

from __future__ import annotations

import abc
import math
from typing import Sequence

import torch

from ..errors import ConfigError, InvalidInput
from .schedules import AngleSchedule, NoiseSchedule

__all__ = [
    "BACK_HEAVY",
    "FRONT_HEAVY",
    "STEP_SCHEDULES",
    "AngleStepSchedule",
    "PiecewiseStepSchedule",
    "StepSchedule",
    "UniformStepSchedule",
    "get_step_schedule",
]

#: front-heavy allotment: ``(t_start, t_end, fraction of the steps)``
FRONT_HEAVY: tuple[tuple[float, float, float], ...] = ((0.0, 0.2, 0.5), (0.2, 0.6, 0.3), (0.6, 1.0, 0.2))
#: back-heavy allotment, the mirror image of :data:`FRONT_HEAVY`
BACK_HEAVY: tuple[tuple[float, float, float], ...] = ((0.0, 0.4, 0.2), (0.4, 0.8, 0.3), (0.8, 1.0, 0.5))


def _check_steps(num_steps) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise InvalidInput(f"number of sampling steps must be a positive integer, got {num_steps!r}")
    return num_steps


class StepSchedule(abc.ABC):
    """Maps a step count to ``n + 1`` decreasing times from 1 to 0 (float64 ``[n + 1]``)."""

    #: name used by :func:`get_step_schedule`
    name: str = ""

    @abc.abstractmethod
    def times(self, num_steps: int | None = None, noise_schedule: NoiseSchedule | None = None) -> torch.Tensor:
        """``[t_0 = 1, t_1, ..., t_n = 0]``; ``noise_schedule`` is needed by angle-based schedules."""

    @property
    def default_steps(self) -> int | None:
        """Step count used when ``times`` is called with ``num_steps=None`` (``None``: must be given)."""
        return None

    def _resolve(self, num_steps: int | None) -> int:
        if num_steps is None:
            if self.default_steps is None:
                raise InvalidInput(f"the {self.name or type(self).__name__} step schedule needs a number of steps")
            return self.default_steps
        return _check_steps(num_steps)


class UniformStepSchedule(StepSchedule):
    """``t_k = 1 - k / n``."""

    name = "uniform"

    def times(self, num_steps: int | None = None, noise_schedule: NoiseSchedule | None = None) -> torch.Tensor:
        n = self._resolve(num_steps)
        return torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)

    def __repr__(self) -> str:
        return "UniformStepSchedule()"


def _largest_remainder(weights: Sequence[float], total: int, minimum: int = 1) -> list[int]:
    """Integer counts proportional to ``weights`` summing to ``total``, each at least ``minimum``."""
    k = len(weights)
    if total < k * minimum:
        raise InvalidInput(f"cannot spread {total} steps over {k} intervals with at least {minimum} each")
    wsum = float(sum(weights))
    spare = total - k * minimum
    raw = [spare * w / wsum for w in weights]
    counts = [minimum + math.floor(r) for r in raw]
    order = sorted(range(k), key=lambda i: (-(raw[i] - math.floor(raw[i])), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


class PiecewiseStepSchedule(StepSchedule):
    """Steps allotted to time intervals: ``[(t_start, t_end, n_steps), ...]`` covering ``[0, 1]``.

    Intervals may be listed in either order but must tile ``[0, 1]`` without gaps or overlaps;
    inside an interval the steps are uniform. ``times(n)`` with ``n`` different from the
    schedule's total rescales the counts proportionally (largest remainder, at least one step
    per interval).
    """

    name = "piecewise"

    def __init__(self, intervals: Sequence[tuple[float, float, int]], name: str | None = None):
        items = []
        for item in intervals:
            try:
                a, b, n = item
            except (TypeError, ValueError):
                raise ConfigError(f"step-schedule interval must be (t_start, t_end, n_steps), got {item!r}") from None
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"interval {item!r}: n_steps must be a positive integer")
            a, b = float(a), float(b)
            if not 0.0 <= a < b <= 1.0:
                raise ConfigError(f"interval {item!r}: need 0 <= t_start < t_end <= 1")
            items.append((a, b, n))
        if not items:
            raise ConfigError("a piecewise step schedule needs at least one interval")
        items.sort()
        if abs(items[0][0]) > 1e-9 or abs(items[-1][1] - 1.0) > 1e-9:
            raise ConfigError(f"step-schedule intervals must cover [0, 1], they cover [{items[0][0]}, {items[-1][1]}]")
        for (a0, b0, _), (a1, b1, _) in zip(items, items[1:]):
            if abs(b0 - a1) > 1e-9:
                raise ConfigError(f"step-schedule intervals [{a0}, {b0}] and [{a1}, {b1}] leave a gap or overlap")
        self.intervals: tuple[tuple[float, float, int], ...] = tuple(items)
        if name is not None:
            self.name = name

    @classmethod
    def from_fractions(
        cls, fractions: Sequence[tuple[float, float, float]], num_steps: int, name: str | None = None
    ) -> "PiecewiseStepSchedule":
        """Allot ``num_steps`` to intervals in proportion to ``(t_start, t_end, fraction)``."""
        _check_steps(num_steps)
        fractions = sorted((float(a), float(b), float(f)) for a, b, f in fractions)
        if any(f <= 0 for _, _, f in fractions):
            raise ConfigError("step-schedule fractions must be positive")
        counts = _largest_remainder([f for _, _, f in fractions], num_steps)
        return cls([(a, b, n) for (a, b, _), n in zip(fractions, counts)], name=name)

    @classmethod
    def uniform(cls, num_steps: int) -> "PiecewiseStepSchedule":
        return cls([(0.0, 1.0, _check_steps(num_steps))], name="uniform")

    @classmethod
    def front_heavy(cls, num_steps: int = 1000) -> "PiecewiseStepSchedule":
        """More steps near ``t = 0`` (:data:`FRONT_HEAVY`)."""
        return cls.from_fractions(FRONT_HEAVY, num_steps, name="front-heavy")

    @classmethod
    def back_heavy(cls, num_steps: int = 1000) -> "PiecewiseStepSchedule":
        """More steps near ``t = 1`` (:data:`BACK_HEAVY`)."""
        return cls.from_fractions(BACK_HEAVY, num_steps, name="back-heavy")

    @property
    def total_steps(self) -> int:
        return sum(n for _, _, n in self.intervals)

    @property
    def default_steps(self) -> int:
        return self.total_steps

    def scaled(self, num_steps: int) -> "PiecewiseStepSchedule":
        """The same shape with ``num_steps`` steps in all."""
        _check_steps(num_steps)
        if num_steps == self.total_steps:
            return self
        counts = _largest_remainder([n for _, _, n in self.intervals], num_steps)
        return PiecewiseStepSchedule([(a, b, n) for (a, b, _), n in zip(self.intervals, counts)], name=self.name)

    def times(self, num_steps: int | None = None, noise_schedule: NoiseSchedule | None = None) -> torch.Tensor:
        sched = self.scaled(self._resolve(num_steps))
        pieces = [torch.tensor([0.0], dtype=torch.float64)]
        for a, b, n in sched.intervals:
            pieces.append(torch.linspace(a, b, n + 1, dtype=torch.float64)[1:])
        ascending = torch.cat(pieces)
        ascending[-1] = 1.0
        return ascending.flip(0)

    def __repr__(self) -> str:
        return f"PiecewiseStepSchedule({list(self.intervals)!r}, name={self.name!r})"


class AngleStepSchedule(StepSchedule):
    """MeLoDy's angle schedule ``omega_1..omega_T`` (Eq. 3-4), ``sum_t omega_t = pi / 2``.

    ``linear``: ``omega_t = pi / (6T) + 2 pi t / (3T(T+1))``; indeed
    ``sum_t omega_t = pi/6 + (2 pi / (3T(T+1))) T(T+1)/2 = pi/6 + pi/3 = pi/2``.
    ``uniform``: ``omega_t = pi / (2T)``. Sampling runs ``t = T .. 1`` from ``delta_T = pi/2``, so the
    first (noisiest) step is the largest, ``omega_T``.
    """

    def __init__(self, kind: str = "linear"):
        if kind not in ("linear", "uniform"):
            raise ConfigError(f"unknown angle schedule {kind!r} (use 'linear' or 'uniform')")
        self.kind = kind
        self.name = f"angle-{kind}"

    def omegas(self, num_steps: int) -> torch.Tensor:
        """``[omega_1, ..., omega_T]`` (float64)."""
        big_t = _check_steps(num_steps)
        t = torch.arange(1, big_t + 1, dtype=torch.float64)
        if self.kind == "uniform":
            return torch.full((big_t,), math.pi / (2 * big_t), dtype=torch.float64)
        return math.pi / (6 * big_t) + 2 * math.pi * t / (3 * big_t * (big_t + 1))

    def angles(self, num_steps: int) -> torch.Tensor:
        """``[delta_T = pi/2, delta_{T-1}, ..., delta_0 = 0]`` with ``delta_{t-1} = delta_t - omega_t``."""
        om = self.omegas(num_steps)
        # delta_t = pi/2 - sum_{i > t} omega_i ; reversed cumulative sums give delta_T .. delta_0
        delta = torch.cat([torch.zeros(1, dtype=torch.float64), om.flip(0).cumsum(0)])
        delta = (math.pi / 2 - delta).clamp_min(0.0)
        delta[0] = math.pi / 2
        delta[-1] = 0.0
        return delta

    def times(self, num_steps: int | None = None, noise_schedule: NoiseSchedule | None = None) -> torch.Tensor:
        angles = self.angles(self._resolve(num_steps))
        sched = noise_schedule if noise_schedule is not None else AngleSchedule()
        t = sched.t_from_angle(angles).to(torch.float64)
        t[0], t[-1] = 1.0, 0.0
        return t

    def __repr__(self) -> str:
        return f"AngleStepSchedule({self.kind!r})"


STEP_SCHEDULES = ("uniform", "front-heavy", "back-heavy", "angle-linear", "angle-uniform")


def get_step_schedule(spec: "str | StepSchedule | Sequence[tuple[float, float, int]]") -> StepSchedule:
    """A step schedule from a name in :data:`STEP_SCHEDULES`, a list of ``(t_start, t_end, n_steps)``
    intervals, or a :class:`StepSchedule` (returned as is). Named piecewise presets take their step
    count from the sampler (``front-heavy`` with ``n`` steps = :data:`FRONT_HEAVY` scaled to ``n``)."""
    if isinstance(spec, StepSchedule):
        return spec
    if isinstance(spec, str):
        if spec == "uniform":
            return UniformStepSchedule()
        if spec == "front-heavy":
            return PiecewiseStepSchedule.front_heavy(1000)
        if spec == "back-heavy":
            return PiecewiseStepSchedule.back_heavy(1000)
        if spec == "angle-linear":
            return AngleStepSchedule("linear")
        if spec == "angle-uniform":
            return AngleStepSchedule("uniform")
        raise ConfigError(f"unknown step schedule {spec!r} (choose from {', '.join(STEP_SCHEDULES)})")
    if isinstance(spec, (list, tuple)):
        return PiecewiseStepSchedule(spec)
    raise ConfigError(f"cannot build a step schedule from {type(spec).__name__}")
