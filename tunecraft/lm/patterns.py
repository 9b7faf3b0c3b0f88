"""Codebook interleaving patterns (MusicGen, section 2.2).

An RVQ codec gives ``K`` parallel token streams ``Q[t, k]`` (codes ``[B, K, T]``). A *pattern*
turns them into one sequence that an autoregressive model can predict step by step:
``P = (P_0, P_1, ..., P_S)``, each ``P_s`` a set of coordinates ``(t, q)``, with ``P_0 = {}``
(the first input is all special tokens) and every codebook at most once per step. At step
``s`` the model sees everything placed at steps ``< s`` and predicts, in parallel, every
coordinate in ``P_s``.

Examples from the paper, for ``K = 4`` codebooks:

``parallel``       ``P_s = {(s - 1, k)}``: all codebooks of a frame at once. ``T`` steps.
``delay``          ``P_s = {(s - 1 - k, k) : s - 1 - k >= 0}``: codebook ``k`` lags by ``k``.
                   ``T + K - 1`` steps (the last ``K - 1`` steps finish the delayed codebooks).
``partial delay``  only a subset of codebooks is delayed (default: all but the first, by one).
``flattening``     one coordinate per step, frame by frame: the exact decomposition, ``K * T`` steps.
``partial flattening``  the first codebook alone, then the others together: ``2 * T`` steps.
``coarse first``   all frames of codebook 1, then the rest in parallel: ``2 * T`` steps.
``musiclm``        MusicLM's grouping: the first ``K / 2`` codebooks flattened, then the rest.
``stereo (partial) delay``  ``2K`` codebooks, left/right interleaved (``2k`` left, ``2k + 1`` right).

**What "steps" counts.** :attr:`Pattern.num_steps` is the number of autoregressive steps, i.e.
``S`` not counting ``P_0``; the model input has ``S + 1`` positions (``P_0`` included). For 30 s
at 50 Hz (``T = 1500``), ``K = 4``: parallel 1500, delay 1503 (the paper's "1500 steps" plus the
``K - 1 = 3`` tail steps that audiocraft also runs), partial delay 1501, partial flattening and
coarse first 3000, flattening and musiclm 6000.

Unlike audiocraft, a :class:`Pattern` only holds coordinates with ``t < timesteps``: steps whose
coordinates would all be out of range stay in the layout as empty steps, so step counts match
audiocraft's, while every ``(t, q)`` appears exactly once. Build and revert are single gathers
through index tables computed once per pattern, length and device.
"""

from __future__ import annotations

import abc
import functools
import threading
from typing import Callable, NamedTuple, Sequence

import torch

from ..errors import ConfigError, InvalidInput

__all__ = [
    "LayoutCoord",
    "Pattern",
    "CodebooksPatternProvider",
    "DelayedPatternProvider",
    "ParallelPatternProvider",
    "PartialDelayPatternProvider",
    "UnrolledPatternProvider",
    "FlattenedPatternProvider",
    "PartialFlattenedPatternProvider",
    "CoarseFirstPatternProvider",
    "MusicLMPatternProvider",
    "StereoDelayPatternProvider",
    "StereoPartialDelayPatternProvider",
    "PATTERN_PROVIDERS",
    "get_pattern_provider",
]


class LayoutCoord(NamedTuple):
    """One token of the codes: frame ``t`` of codebook ``q``."""

    t: int
    q: int


Layout = list[list[LayoutCoord]]


class Pattern:
    """A layout ``[P_0, P_1, ..., P_S]`` over ``timesteps`` frames of ``n_q`` codebooks.

    The layout is validated on construction: ``P_0`` is empty, every coordinate is in range,
    a codebook appears at most once per step, every ``(t, q)`` with ``t < timesteps`` appears
    exactly once, and each codebook's frames appear in increasing order (a step never needs a
    later frame of the same codebook). Invalid layouts raise :class:`ConfigError`.

    Index tables are cached per (length, device), so building and reverting are one gather each.
    """

    def __init__(self, layout: Sequence[Sequence[tuple[int, int]]], timesteps: int, n_q: int) -> None:
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 0:
            raise ConfigError(f"pattern timesteps must be a non-negative integer, got {timesteps!r}")
        if isinstance(n_q, bool) or not isinstance(n_q, int) or n_q < 1:
            raise ConfigError(f"pattern n_q must be a positive integer, got {n_q!r}")
        self.layout: Layout = [[LayoutCoord(int(c[0]), int(c[1])) for c in step] for step in layout]
        self.timesteps = timesteps
        self.n_q = n_q
        self._validate()
        # step index (in the layout) of every (t, q): [n_q, timesteps]
        steps = torch.empty(n_q, timesteps, dtype=torch.long)
        for s, coords in enumerate(self.layout):
            for c in coords:
                steps[c.q, c.t] = s
        self._steps_of = steps
        self._lock = threading.Lock()
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        if not self.layout or self.layout[0]:
            raise ConfigError("a pattern's first step P_0 must exist and be empty (it holds the special tokens)")
        seen: set[LayoutCoord] = set()
        last_t = [-1] * self.n_q
        for s, coords in enumerate(self.layout):
            qs = set()
            for c in coords:
                if not 0 <= c.q < self.n_q:
                    raise ConfigError(f"pattern step {s} has codebook {c.q}, outside [0, {self.n_q})")
                if not 0 <= c.t < self.timesteps:
                    raise ConfigError(f"pattern step {s} has frame {c.t}, outside [0, {self.timesteps})")
                if c.q in qs:
                    raise ConfigError(f"pattern step {s} holds codebook {c.q} more than once")
                qs.add(c.q)
                if c in seen:
                    raise ConfigError(f"pattern places ({c.t}, {c.q}) twice")
                seen.add(c)
                if c.t <= last_t[c.q]:
                    raise ConfigError(
                        f"pattern step {s} holds frame {c.t} of codebook {c.q} after frame {last_t[c.q]} (not causal)"
                    )
                last_t[c.q] = c.t
        missing = self.n_q * self.timesteps - len(seen)
        if missing:
            raise ConfigError(f"pattern leaves {missing} of {self.n_q * self.timesteps} codes out")

    # ------------------------------------------------------------------ sizes
    @property
    def num_steps(self) -> int:
        """Autoregressive steps ``S`` (the layout without ``P_0``)."""
        return len(self.layout) - 1

    @property
    def sequence_length(self) -> int:
        """Positions of the built sequence, ``S + 1`` (``P_0`` included)."""
        return len(self.layout)

    def step_of(self, t: int, q: int) -> int:
        """The layout step that holds frame ``t`` of codebook ``q``."""
        if not (0 <= t < self.timesteps and 0 <= q < self.n_q):
            raise InvalidInput(f"({t}, {q}) is outside the pattern's {self.timesteps} frames x {self.n_q} codebooks")
        return int(self._steps_of[q, t])

    def first_step_with_timestep(self, t: int) -> int:
        """First step that holds any codebook of frame ``t``; ``sequence_length`` when ``t == timesteps``.

        To continue a prompt of ``t`` frames, the steps before this one are fully known.
        """
        if not 0 <= t <= self.timesteps:
            raise InvalidInput(f"frame {t} is outside [0, {self.timesteps}]")
        if t == self.timesteps:
            return self.sequence_length
        return int(self._steps_of[:, t].min())

    def steps_covering(self, t: int) -> int:
        """Number of layout positions (``P_0`` included) needed to hold every code of frames ``< t``."""
        if not 0 <= t <= self.timesteps:
            raise InvalidInput(f"frame {t} is outside [0, {self.timesteps}]")
        if t == 0:
            return 1
        return int(self._steps_of[:, :t].max()) + 1

    @functools.cached_property
    def predicted_frames(self) -> torch.Tensor:
        """``[S + 1]`` float: for each input position ``s``, the newest frame among the codes of
        step ``s + 1`` (what the logits at ``s`` predict); a position whose next step is empty or
        missing repeats the previous value (0 at the start). The LM's beat clock reads it."""
        frames, newest = [], 0
        for s in range(1, self.sequence_length + 1):
            coords = self.layout[s] if s < self.sequence_length else ()
            if coords:
                newest = max(c.t for c in coords)
            frames.append(newest)
        return torch.tensor(frames, dtype=torch.float32)

    # ------------------------------------------------------------------ index tables
    def _tables(self, kind: str, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (kind, length, str(device))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        K, T, S = self.n_q, self.timesteps, self.sequence_length
        steps = self._steps_of  # [K, T]
        q_idx = torch.arange(K).view(K, 1)
        if kind == "build":
            # gather codes.view(B, K * length) + [special] -> [B, K, S]
            indexes = torch.full((K, S), K * length, dtype=torch.long)
            mask = torch.zeros(K, S, dtype=torch.bool)
            t_idx = torch.arange(T).view(1, T).expand(K, T)
            valid = t_idx < length
            flat = (q_idx * length + t_idx)[valid]
            qq = q_idx.expand(K, T)[valid]
            ss = steps[valid]
            indexes[qq, ss] = flat
            mask[qq, ss] = True
        else:
            # gather seq.view(B, K * length) + [special] -> [B, K, T]; logits at step s predict s + 1
            shift = 1 if kind == "logits" else 0
            pos = steps - shift
            valid = pos < length
            indexes = torch.where(valid, q_idx * length + pos, torch.full_like(pos, K * length))
            mask = valid.clone()
        out = (indexes.to(device), mask.to(device))
        with self._lock:
            self._cache[key] = out
        return out

    def build_indexes(self, timesteps: int | None = None, device: torch.device | str = "cpu"):
        """``(indexes [K, S+1], mask [K, S+1])`` used by :meth:`build_pattern_sequence`."""
        T = self.timesteps if timesteps is None else timesteps
        return self._tables("build", T, torch.device(device))

    # ------------------------------------------------------------------ build / revert
    def build_pattern_sequence(self, codes: torch.Tensor, special_token: int):
        """Interleave codes ``[B, K, T']`` (``T' <= timesteps``) into ``[B, K, S + 1]``.

        Positions that hold no code (``P_0``, delay padding, frames ``>= T'``) get
        ``special_token``. Returns ``(sequence, indexes [K, S+1], mask [K, S+1])`` where
        ``mask`` is True where a code was placed.
        """
        if codes.dim() != 3:
            raise InvalidInput(f"codes must be [B, K, T], got shape {tuple(codes.shape)}")
        B, K, T = codes.shape
        if K != self.n_q:
            raise InvalidInput(f"codes have {K} codebooks, the pattern has {self.n_q}")
        if T > self.timesteps:
            raise InvalidInput(f"codes have {T} frames, the pattern only {self.timesteps}")
        indexes, mask = self._tables("build", T, codes.device)
        flat = torch.cat([codes.reshape(B, K * T), codes.new_full((B, 1), special_token)], dim=1)
        seq = flat[:, indexes.view(-1)].view(B, K, -1)
        return seq, indexes, mask

    def revert_pattern_sequence(self, sequence: torch.Tensor, special_token: int):
        """Inverse of :meth:`build_pattern_sequence`: ``[B, K, S']`` -> codes ``[B, K, timesteps]``.

        ``S'`` may be shorter than the full layout (a partly generated sequence): codes whose
        step is ``>= S'`` come back as ``special_token`` with ``mask`` False.
        Returns ``(codes, indexes [K, T], mask [K, T])``.
        """
        if sequence.dim() != 3:
            raise InvalidInput(f"sequence must be [B, K, S], got shape {tuple(sequence.shape)}")
        B, K, S = sequence.shape
        if K != self.n_q:
            raise InvalidInput(f"sequence has {K} codebooks, the pattern has {self.n_q}")
        if S > self.sequence_length:
            raise InvalidInput(f"sequence has {S} steps, the pattern only {self.sequence_length}")
        indexes, mask = self._tables("sequence", S, sequence.device)
        flat = torch.cat([sequence.reshape(B, K * S), sequence.new_full((B, 1), special_token)], dim=1)
        codes = flat[:, indexes.view(-1)].view(B, K, self.timesteps)
        return codes, indexes, mask

    def revert_pattern_logits(self, logits: torch.Tensor, special_token: float = float("nan")):
        """Map model outputs ``[B, card, K, S']`` back to ``[B, card, K, timesteps]``.

        The output at position ``s`` predicts the codes of step ``s + 1`` (the model input
        starts with ``P_0``), so code ``(t, q)`` placed at step ``s`` takes the logits of
        position ``s - 1``. Codes without a prediction get ``special_token`` (NaN by default,
        so misuse is loud) and ``mask`` False. Returns ``(logits, indexes [K, T], mask [K, T])``.
        """
        if logits.dim() != 4:
            raise InvalidInput(f"logits must be [B, card, K, S], got shape {tuple(logits.shape)}")
        B, C, K, S = logits.shape
        if K != self.n_q:
            raise InvalidInput(f"logits have {K} codebooks, the pattern has {self.n_q}")
        if S > self.sequence_length:
            raise InvalidInput(f"logits have {S} steps, the pattern only {self.sequence_length}")
        indexes, mask = self._tables("logits", S, logits.device)
        flat = torch.cat([logits.reshape(B, C, K * S), logits.new_full((B, C, 1), special_token)], dim=2)
        out = flat[:, :, indexes.view(-1)].view(B, C, K, self.timesteps)
        return out, indexes, mask

    def __repr__(self) -> str:
        return f"Pattern(n_q={self.n_q}, timesteps={self.timesteps}, steps={self.num_steps})"


# ====================================================================== providers


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def _int_list(values, n: int, what: str, minimum: int = 0) -> list[int]:
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a list of integers, got {values!r}") from None
    if any(isinstance(v, bool) or int(v) != v for v in values):
        raise ConfigError(f"{what} must be a list of integers, got {values!r}")
    if len(out) != n:
        raise ConfigError(f"{what} needs one entry per codebook ({n}), got {len(out)}")
    if any(v < minimum for v in out):
        raise ConfigError(f"{what} must be >= {minimum}, got {out}")
    return out


class CodebooksPatternProvider(abc.ABC):
    """Makes the :class:`Pattern` of one interleaving for any number of frames.

    ``get_pattern(T)`` is cached per provider (patterns and their index tables are reused).
    """

    #: registry name
    name: str = ""

    def __init__(self, n_q: int) -> None:
        self.n_q = _positive_int(n_q, "number of codebooks n_q")
        self._patterns: dict[int, Pattern] = {}
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _layout(self, timesteps: int) -> Layout:
        """The layout for ``timesteps`` frames (``P_0`` included)."""

    def get_pattern(self, timesteps: int) -> Pattern:
        if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 0:
            raise InvalidInput(f"number of frames must be a non-negative integer, got {timesteps!r}")
        pattern = self._patterns.get(timesteps)
        if pattern is None:
            pattern = Pattern(self._layout(timesteps), timesteps=timesteps, n_q=self.n_q)
            with self._lock:
                if len(self._patterns) >= 64:
                    self._patterns.pop(next(iter(self._patterns)))
                self._patterns[timesteps] = pattern
        return pattern

    def num_steps(self, timesteps: int) -> int:
        """Autoregressive steps for ``timesteps`` frames (see the module docstring)."""
        return self.get_pattern(timesteps).num_steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_q={self.n_q})"


class DelayedPatternProvider(CodebooksPatternProvider):
    """Delay pattern: codebook ``q`` is shifted right by ``delays[q]`` steps.

    ``P_s = {(s - 1 - delays[q], q)}`` (MusicGen eq. "delay" with ``delays = [0, 1, ..., K-1]``).
    With ``T`` frames it has ``T + max(delays)`` steps. ``flatten_first`` flattens the first
    frames (one code per step); ``empty_initial`` inserts empty steps after ``P_0``.

    Example with ``T = 4``, ``K = 3`` (S = special)::

        [[S, 1, 2, 3, 4, S, S],
         [S, S, 1, 2, 3, 4, S],
         [S, S, S, 1, 2, 3, 4]]
    """

    name = "delay"

    def __init__(self, n_q: int, delays: Sequence[int] | None = None, flatten_first: int = 0,
                 empty_initial: int = 0) -> None:
        super().__init__(n_q)
        self.delays = list(range(self.n_q)) if delays is None else _int_list(delays, self.n_q, "delays")
        if isinstance(flatten_first, bool) or not isinstance(flatten_first, int) or flatten_first < 0:
            raise ConfigError(f"flatten_first must be a non-negative integer, got {flatten_first!r}")
        if isinstance(empty_initial, bool) or not isinstance(empty_initial, int) or empty_initial < 0:
            raise ConfigError(f"empty_initial must be a non-negative integer, got {empty_initial!r}")
        self.flatten_first = flatten_first
        self.empty_initial = empty_initial

    def _layout(self, timesteps: int) -> Layout:
        out: Layout = [[]]
        out += [[] for _ in range(self.empty_initial)]
        first = min(timesteps, self.flatten_first)
        for t in range(first):
            for q in range(self.n_q):
                out.append([LayoutCoord(t, q)])
        max_delay = max(self.delays)
        for s in range(first, timesteps + max_delay):
            step = []
            for q, delay in enumerate(self.delays):
                t = s - delay
                if first <= t < timesteps:
                    step.append(LayoutCoord(t, q))
            out.append(step)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_q={self.n_q}, delays={self.delays})"


class ParallelPatternProvider(DelayedPatternProvider):
    """All codebooks of a frame in one step: ``P_s = {(s - 1, k)}``. ``T`` steps."""

    name = "parallel"

    def __init__(self, n_q: int) -> None:
        super().__init__(n_q, delays=[0] * _positive_int(n_q, "number of codebooks n_q"))


class PartialDelayPatternProvider(DelayedPatternProvider):
    """Delay only a subset of codebooks (MusicGen table 4, "partial delay").

    ``delayed`` lists the delayed codebooks (default: all but the first) and ``delay`` is
    their shift; the others are predicted in parallel with the first. ``T + delay`` steps.
    """

    name = "partial_delay"

    def __init__(self, n_q: int, delayed: Sequence[int] | None = None, delay: int = 1) -> None:
        n_q = _positive_int(n_q, "number of codebooks n_q")
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise ConfigError(f"delay must be a non-negative integer, got {delay!r}")
        chosen = list(range(1, n_q)) if delayed is None else list(delayed)
        for q in chosen:
            if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < n_q:
                raise ConfigError(f"delayed codebooks must be integers in [0, {n_q}), got {chosen}")
        super().__init__(n_q, delays=[delay if q in set(chosen) else 0 for q in range(n_q)])
        self.delayed = sorted(set(chosen))


class UnrolledPatternProvider(CodebooksPatternProvider):
    """Flattening, partial flattening and unrolling (audiocraft's ``UnrolledPatternProvider``).

    ``flattening[q]`` is the inner step of codebook ``q`` within a frame: codebooks with the
    same inner step are predicted together, so a frame takes ``max(flattening) + 1`` steps.
    ``delays[q]`` further shifts codebook ``q`` by whole frames (codebooks sharing an inner
    step must share a delay). Default: full flattening, ``K * T`` steps.
    """

    name = "unroll"

    def __init__(self, n_q: int, flattening: Sequence[int] | None = None, delays: Sequence[int] | None = None) -> None:
        super().__init__(n_q)
        self.flattening = list(range(self.n_q)) if flattening is None else _int_list(flattening, self.n_q, "flattening")
        self.delays = [0] * self.n_q if delays is None else _int_list(delays, self.n_q, "delays")
        if sorted(self.flattening) != self.flattening:
            raise ConfigError(f"flattening must be non-decreasing, got {self.flattening}")
        if sorted(self.delays) != self.delays:
            raise ConfigError(f"delays must be non-decreasing, got {self.delays}")
        groups: dict[int, tuple[list[int], int]] = {}
        for q, (inner, delay) in enumerate(zip(self.flattening, self.delays)):
            if inner in groups:
                if groups[inner][1] != delay:
                    raise ConfigError(
                        f"codebooks flattened to inner step {inner} must share one delay, got {groups[inner][1]} and {delay}"
                    )
                groups[inner][0].append(q)
            else:
                groups[inner] = ([q], delay)
        self._groups = groups
        self._inner_steps = max(self.flattening) + 1
        self.max_delay = max(self.delays)

    def _layout(self, timesteps: int) -> Layout:
        indexed: list[tuple[int, list[LayoutCoord]]] = [(-1, [])]
        max_t = timesteps + self.max_delay
        for t in range(max_t):
            for inner in range(self._inner_steps):
                if inner in self._groups:
                    codebooks, delay = self._groups[inner]
                    key = t + delay
                    if key < max_t:
                        indexed.append((key, [LayoutCoord(t, q) for q in codebooks]))
                else:
                    indexed.append((t, []))
        # sort as audiocraft does (out-of-range frames included), then drop frames >= timesteps
        return [[c for c in coords if c.t < timesteps] for _, coords in sorted(indexed)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_q={self.n_q}, flattening={self.flattening}, delays={self.delays})"


class FlattenedPatternProvider(UnrolledPatternProvider):
    """Exact flattened decomposition: one code per step, ``K * T`` steps."""

    name = "flattening"

    def __init__(self, n_q: int) -> None:
        super().__init__(n_q)


class PartialFlattenedPatternProvider(UnrolledPatternProvider):
    """Partial flattening (MusicGen table 4): the first codebook alone, then the rest together.

    ``flattening = [0, 1, 1, ..., 1]``: ``2 * T`` steps.
    """

    name = "partial_flattening"

    def __init__(self, n_q: int) -> None:
        n_q = _positive_int(n_q, "number of codebooks n_q")
        super().__init__(n_q, flattening=[0] + [1] * (n_q - 1))


class CoarseFirstPatternProvider(CodebooksPatternProvider):
    """All frames of the first (coarse) codebook, then the other codebooks, optionally delayed.

    ``delays`` has one entry per remaining codebook (default all 0): ``2 * T + max(delays)`` steps.
    As in audiocraft, the whole duration must be generated at once: the fine codebooks of the
    first frames are only produced after the coarse codebook of the last frame.
    """

    name = "coarse_first"

    def __init__(self, n_q: int, delays: Sequence[int] | None = None) -> None:
        super().__init__(n_q)
        if self.n_q < 2:
            raise ConfigError("coarse_first needs at least 2 codebooks")
        self.delays = [0] * (self.n_q - 1) if delays is None else _int_list(delays, self.n_q - 1, "delays")

    def _layout(self, timesteps: int) -> Layout:
        out: Layout = [[]]
        for t in range(timesteps):
            out.append([LayoutCoord(t, 0)])
        for s in range(timesteps + max(self.delays)):
            step = []
            for i, delay in enumerate(self.delays):
                t = s - delay
                if 0 <= t < timesteps:
                    step.append(LayoutCoord(t, i + 1))
            out.append(step)
        return out


class MusicLMPatternProvider(CodebooksPatternProvider):
    """MusicLM-style grouping: groups of ``group_by`` codebooks, each group flattened over all frames.

    With the default ``group_by = K // 2``: every frame of codebooks ``0 .. K/2 - 1`` (flattened),
    then every frame of the rest, as MusicLM's coarse and fine stages. ``K * T`` steps.
    """

    name = "musiclm"

    def __init__(self, n_q: int, group_by: int | None = None) -> None:
        super().__init__(n_q)
        self.group_by = max(1, self.n_q // 2) if group_by is None else _positive_int(group_by, "group_by")

    def _layout(self, timesteps: int) -> Layout:
        out: Layout = [[]]
        for offset in range(0, self.n_q, self.group_by):
            for t in range(timesteps):
                for q in range(offset, min(offset + self.group_by, self.n_q)):
                    out.append([LayoutCoord(t, q)])
        return out


def _stereo_delays(n_q: int, right_offset: int) -> list[int]:
    n_q = _positive_int(n_q, "number of codebooks n_q")
    if n_q % 2:
        raise ConfigError(f"stereo patterns need an even number of codebooks (2K, left/right), got {n_q}")
    delays = []
    for level in range(n_q // 2):
        delays += [level, level + right_offset]  # codebook 2k: left level k, 2k + 1: right level k
    return delays


class StereoDelayPatternProvider(DelayedPatternProvider):
    """Stereo delay (MusicGen section 4.3): ``2K`` codebooks, ``2k`` = left, ``2k + 1`` = right level ``k``.

    Each level ``k`` is delayed by ``k`` as in the mono delay pattern and the right channel
    lags its left channel by ``right_offset`` (default 1) more steps. ``T + K`` steps.
    """

    name = "stereo_delay"

    def __init__(self, n_q: int, right_offset: int = 1) -> None:
        if isinstance(right_offset, bool) or not isinstance(right_offset, int) or right_offset < 0:
            raise ConfigError(f"right_offset must be a non-negative integer, got {right_offset!r}")
        super().__init__(n_q, delays=_stereo_delays(n_q, right_offset))
        self.right_offset = right_offset


class StereoPartialDelayPatternProvider(DelayedPatternProvider):
    """Stereo partial delay: left and right codebooks of one level share the delay ``k``.

    Delays ``[0, 0, 1, 1, ..., K-1, K-1]``: each level's left/right pair is predicted in
    parallel. This is the layout of the released stereo MusicGen models (transformers'
    ``audio_channels=2``). ``T + K - 1`` steps.
    """

    name = "stereo_partial_delay"

    def __init__(self, n_q: int) -> None:
        super().__init__(n_q, delays=_stereo_delays(n_q, 0))


PATTERN_PROVIDERS: dict[str, Callable[..., CodebooksPatternProvider]] = {
    cls.name: cls
    for cls in (
        ParallelPatternProvider,
        DelayedPatternProvider,
        PartialDelayPatternProvider,
        UnrolledPatternProvider,
        FlattenedPatternProvider,
        PartialFlattenedPatternProvider,
        CoarseFirstPatternProvider,
        MusicLMPatternProvider,
        StereoDelayPatternProvider,
        StereoPartialDelayPatternProvider,
    )
}


def get_pattern_provider(name: str, n_q: int, **kwargs) -> CodebooksPatternProvider:
    """Build a provider by registry name (``delay``, ``parallel``, ``flattening``, ...).

    ``kwargs`` are the provider's own options (e.g. ``delays=[0, 2, 4, 6]``). Unknown names or
    options raise :class:`ConfigError`.
    """
    cls = PATTERN_PROVIDERS.get(str(name).strip().lower().replace("-", "_").replace(" ", "_"))
    if cls is None:
        raise ConfigError(f"unknown codebook pattern '{name}' (known: {', '.join(sorted(PATTERN_PROVIDERS))})")
    try:
        return cls(n_q, **kwargs)
    except TypeError as e:
        raise ConfigError(f"pattern '{name}': {e}") from None
