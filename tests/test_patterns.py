"""Codebook interleaving patterns: property tests of build/revert, coverage, causality and step counts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunecraft.errors import ConfigError, InvalidInput
from tunecraft.lm.patterns import (
    PATTERN_PROVIDERS,
    DelayedPatternProvider,
    LayoutCoord,
    Pattern,
    UnrolledPatternProvider,
    get_pattern_provider,
)

SPECIAL = 9999
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def providers(draw):
    """Any registered provider with random options and a compatible number of codebooks."""
    name = draw(st.sampled_from(sorted(PATTERN_PROVIDERS)))
    n_q = draw(st.integers(1, 6))
    kwargs: dict = {}
    if name.startswith("stereo"):
        n_q = 2 * draw(st.integers(1, 3))
        if name == "stereo_delay":
            kwargs["right_offset"] = draw(st.integers(0, 2))
    elif name == "coarse_first":
        n_q = max(n_q, 2)
        kwargs["delays"] = sorted(draw(st.lists(st.integers(0, 3), min_size=n_q - 1, max_size=n_q - 1)))
    elif name == "delay":
        kwargs["delays"] = draw(st.lists(st.integers(0, 4), min_size=n_q, max_size=n_q))
        kwargs["flatten_first"] = draw(st.integers(0, 3))
        kwargs["empty_initial"] = draw(st.integers(0, 2))
    elif name == "partial_delay":
        kwargs["delayed"] = draw(st.lists(st.integers(0, n_q - 1), max_size=n_q, unique=True))
        kwargs["delay"] = draw(st.integers(0, 3))
    elif name == "unroll":
        steps = sorted(draw(st.lists(st.integers(0, 3), min_size=n_q, max_size=n_q)))
        flattening = [0]
        for a, b in zip(steps, steps[1:]):  # non-decreasing, starting at 0
            flattening.append(flattening[-1] + (1 if b > a else 0))
        group_delay: dict[int, int] = {}
        for inner in flattening:
            group_delay.setdefault(inner, (group_delay[inner - 1] if inner else 0) + draw(st.integers(0, 2)))
        kwargs["flattening"] = flattening
        kwargs["delays"] = [group_delay[i] for i in flattening]
    elif name == "musiclm":
        kwargs["group_by"] = draw(st.integers(1, n_q))
    return name, n_q, kwargs


@FAST
@given(spec=providers(), T=st.integers(0, 12), B=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_build_then_revert_is_identity(spec, T, B, seed):
    name, n_q, kwargs = spec
    pattern = get_pattern_provider(name, n_q, **kwargs).get_pattern(T)
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 100, (B, n_q, T), generator=g)
    seq, idx, mask = pattern.build_pattern_sequence(codes, SPECIAL)
    assert seq.shape == (B, n_q, pattern.sequence_length)
    assert idx.shape == mask.shape == (n_q, pattern.sequence_length)
    # special token exactly where nothing is placed, and P_0 is all special
    assert torch.equal(seq == SPECIAL, (~mask).unsqueeze(0).expand_as(seq))
    assert bool((seq[:, :, 0] == SPECIAL).all())
    assert int(mask.sum()) == n_q * T
    back, _, back_mask = pattern.revert_pattern_sequence(seq, SPECIAL)
    assert torch.equal(back, codes)
    assert bool(back_mask.all())


@FAST
@given(spec=providers(), T=st.integers(0, 12))
def test_every_code_exactly_once_and_causal(spec, T):
    name, n_q, kwargs = spec
    pattern = get_pattern_provider(name, n_q, **kwargs).get_pattern(T)
    assert pattern.layout[0] == []
    seen: dict[tuple[int, int], int] = {}
    for s, step in enumerate(pattern.layout):
        assert len({c.q for c in step}) == len(step), "a codebook twice in one step"
        for c in step:
            assert (c.t, c.q) not in seen
            seen[(c.t, c.q)] = s
    assert set(seen) == {(t, q) for t in range(T) for q in range(n_q)}
    # causality: within a codebook, a later frame never comes at an earlier or equal step
    for q in range(n_q):
        steps = [seen[(t, q)] for t in range(T)]
        assert steps == sorted(steps) and len(set(steps)) == len(steps)


@FAST
@given(spec=providers(), T=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_revert_logits_take_the_previous_position(spec, T, seed):
    name, n_q, kwargs = spec
    pattern = get_pattern_provider(name, n_q, **kwargs).get_pattern(T)
    S = pattern.sequence_length
    logits = torch.randn(2, 5, n_q, S, generator=torch.Generator().manual_seed(seed))
    out, _, mask = pattern.revert_pattern_logits(logits)
    assert out.shape == (2, 5, n_q, T) and bool(mask.all())
    for t in range(T):
        for q in range(n_q):
            s = pattern.step_of(t, q)
            assert s >= 1
            assert torch.equal(out[:, :, q, t], logits[:, :, q, s - 1])


@FAST
@given(spec=providers(), T=st.integers(0, 12))
def test_predicted_frames_name_the_newest_frame_of_the_next_step(spec, T):
    name, n_q, kwargs = spec
    pattern = get_pattern_provider(name, n_q, **kwargs).get_pattern(T)
    frames = pattern.predicted_frames
    assert frames.shape == (pattern.sequence_length,) and frames is pattern.predicted_frames  # cached
    for t in range(T):
        for q in range(n_q):  # the logits at step_of - 1 predict (t, q): a frame at least as new
            assert frames[pattern.step_of(t, q) - 1] >= t
    for s in range(pattern.sequence_length - 1):
        if pattern.layout[s + 1]:
            assert frames[s] == max(c.t for c in pattern.layout[s + 1])


def test_predicted_frames_of_concrete_layouts():
    delay = get_pattern_provider("delay", 3).get_pattern(4)
    assert delay.predicted_frames.tolist() == [0, 1, 2, 3, 3, 3, 3]
    flat = get_pattern_provider("unroll", 2).get_pattern(2)  # (0,0) (0,1) (1,0) (1,1)
    assert flat.predicted_frames.tolist() == [0, 0, 1, 1, 1]


@FAST
@given(spec=providers(), T=st.integers(1, 10), cut=st.integers(1, 60))
def test_revert_of_a_partial_sequence_masks_unreached_codes(spec, T, cut):
    name, n_q, kwargs = spec
    pattern = get_pattern_provider(name, n_q, **kwargs).get_pattern(T)
    S = min(cut, pattern.sequence_length)
    codes = torch.randint(0, 50, (1, n_q, T))
    seq, _, _ = pattern.build_pattern_sequence(codes, SPECIAL)
    back, _, mask = pattern.revert_pattern_sequence(seq[:, :, :S], SPECIAL)
    for t in range(T):
        for q in range(n_q):
            reached = pattern.step_of(t, q) < S
            assert bool(mask[q, t]) == reached
            assert int(back[0, q, t]) == (int(codes[0, q, t]) if reached else SPECIAL)
    assert pattern.steps_covering(T) <= pattern.sequence_length


@FAST
@given(spec=providers(), T=st.integers(1, 10), t0=st.integers(0, 10))
def test_first_step_and_coverage_steps(spec, T, t0):
    name, n_q, kwargs = spec
    pattern = get_pattern_provider(name, n_q, **kwargs).get_pattern(T)
    t0 = min(t0, T)
    first = pattern.first_step_with_timestep(t0)
    if t0 < T:
        assert first == min(pattern.step_of(t0, q) for q in range(n_q))
    else:
        assert first == pattern.sequence_length
    cover = pattern.steps_covering(t0)
    assert all(pattern.step_of(t, q) < cover for t in range(t0) for q in range(n_q))


def test_build_with_fewer_frames_than_the_pattern():
    pattern = get_pattern_provider("delay", 3).get_pattern(6)
    codes = torch.arange(1, 13).view(1, 3, 4)
    seq, _, mask = pattern.build_pattern_sequence(codes, 0)
    full = torch.zeros(1, 3, 6, dtype=torch.long)
    full[:, :, :4] = codes
    ref, _, ref_mask = pattern.build_pattern_sequence(full, 0)
    assert torch.equal(seq, ref)
    assert int(mask.sum()) == 12 and int(ref_mask.sum()) == 18


# ---------------------------------------------------------------------- concrete layouts


def test_delay_layout_matches_the_paper_and_transformers():
    """P_s = {(s - 1 - k, k)}; transformers' build_delay_pattern_mask gives the same grid."""
    pattern = get_pattern_provider("delay", 3).get_pattern(4)
    codes = torch.tensor([[[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]])
    seq, _, _ = pattern.build_pattern_sequence(codes, 0)
    assert seq[0].tolist() == [[0, 1, 2, 3, 4, 0, 0], [0, 0, 1, 2, 3, 4, 0], [0, 0, 0, 1, 2, 3, 4]]
    # transformers: max_length = T + K, codebook k valid at positions [k + 1, T + k]
    K, T = 3, 4
    for k in range(K):
        for s in range(T + K):
            assert bool(seq[0, k, s] != 0) == (k + 1 <= s <= T + k)


def test_other_concrete_layouts():
    codes = torch.tensor([[[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]]])
    par, _, _ = get_pattern_provider("parallel", 4).get_pattern(3).build_pattern_sequence(codes, 0)
    assert par[0].tolist() == [[0, 1, 2, 3]] * 4
    flat = get_pattern_provider("flattening", 4).get_pattern(3)
    assert [tuple(s) for s in flat.layout[1:5]] == [(LayoutCoord(0, q),) for q in range(4)]
    coarse = get_pattern_provider("coarse_first", 4).get_pattern(3)
    assert [s for s in coarse.layout[1:4]] == [[LayoutCoord(t, 0)] for t in range(3)]
    assert coarse.layout[4] == [LayoutCoord(0, 1), LayoutCoord(0, 2), LayoutCoord(0, 3)]
    musiclm = get_pattern_provider("musiclm", 4).get_pattern(2)  # group_by = K // 2
    assert [s[0] for s in musiclm.layout[1:]] == [
        LayoutCoord(0, 0), LayoutCoord(0, 1), LayoutCoord(1, 0), LayoutCoord(1, 1),
        LayoutCoord(0, 2), LayoutCoord(0, 3), LayoutCoord(1, 2), LayoutCoord(1, 3),
    ]
    pflat = get_pattern_provider("partial_flattening", 4).get_pattern(2)
    assert pflat.layout[1:] == [[LayoutCoord(0, 0)], [LayoutCoord(0, 1), LayoutCoord(0, 2), LayoutCoord(0, 3)],
                                [LayoutCoord(1, 0)], [LayoutCoord(1, 1), LayoutCoord(1, 2), LayoutCoord(1, 3)]]
    pdelay = get_pattern_provider("partial_delay", 4).get_pattern(2)
    assert pdelay.layout[1:] == [[LayoutCoord(0, 0)], [LayoutCoord(1, 0), LayoutCoord(0, 1), LayoutCoord(0, 2),
                                                       LayoutCoord(0, 3)], [LayoutCoord(1, 1), LayoutCoord(1, 2),
                                                                            LayoutCoord(1, 3)]]


def test_unroll_follows_audiocraft_ordering():
    """audiocraft's flattening=[0, 1, 1], delays=[0, 3, 3] example, computed as its code does."""
    pattern = UnrolledPatternProvider(3, flattening=[0, 1, 1], delays=[0, 3, 3]).get_pattern(4)
    codes = torch.tensor([[[1, 2, 3, 4]] * 3])
    seq, _, _ = pattern.build_pattern_sequence(codes, 0)
    assert seq[0].tolist() == [
        [0, 1, 2, 3, 0, 4, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0],
        [0, 0, 0, 0, 1, 0, 2, 0, 3, 0, 4, 0],
    ]


def test_stereo_layouts_interleave_left_and_right():
    partial = get_pattern_provider("stereo_partial_delay", 8)
    assert partial.delays == [0, 0, 1, 1, 2, 2, 3, 3]
    delayed = get_pattern_provider("stereo_delay", 8)
    assert delayed.delays == [0, 1, 1, 2, 2, 3, 3, 4]
    p = partial.get_pattern(5)
    for k in range(4):  # left 2k and right 2k + 1 of a level are predicted together
        assert all(p.step_of(t, 2 * k) == p.step_of(t, 2 * k + 1) for t in range(5))
    d = delayed.get_pattern(5)
    assert all(d.step_of(t, 2 * k + 1) == d.step_of(t, 2 * k) + 1 for k in range(4) for t in range(5))


def test_step_counts_for_30_seconds_at_50_hz():
    """The review's numbers for K = 4, T = 1500; delay adds the K - 1 tail steps audiocraft runs."""
    T = 1500
    expected = {
        "parallel": 1500,
        "delay": 1500 + 3,
        "partial_delay": 1500 + 1,
        "partial_flattening": 3000,
        "coarse_first": 3000,
        "flattening": 6000,
        "unroll": 6000,
        "musiclm": 6000,
    }
    for name, steps in expected.items():
        pattern = get_pattern_provider(name, 4).get_pattern(T)
        assert pattern.num_steps == steps, name
        assert pattern.sequence_length == steps + 1
    assert get_pattern_provider("stereo_partial_delay", 8).num_steps(T) == 1503
    assert get_pattern_provider("stereo_delay", 8).num_steps(T) == 1504


# ---------------------------------------------------------------------- errors and caching


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown codebook pattern"):
        get_pattern_provider("zigzag", 4)
    with pytest.raises(ConfigError, match="pattern 'delay'"):
        get_pattern_provider("delay", 4, bogus=1)
    with pytest.raises(ConfigError, match="one entry per codebook"):
        get_pattern_provider("delay", 4, delays=[0, 1])
    with pytest.raises(ConfigError, match="even number"):
        get_pattern_provider("stereo_delay", 3)
    with pytest.raises(ConfigError, match="at least 2"):
        get_pattern_provider("coarse_first", 1)
    with pytest.raises(ConfigError, match="share one delay"):
        get_pattern_provider("unroll", 3, flattening=[0, 1, 1], delays=[0, 1, 2])
    with pytest.raises(ConfigError, match="positive integer"):
        get_pattern_provider("delay", 0)
    assert get_pattern_provider("Partial-Delay", 4).delays == [0, 1, 1, 1]


def test_invalid_layouts_are_rejected():
    with pytest.raises(ConfigError, match="P_0"):
        Pattern([[(0, 0)]], timesteps=1, n_q=1)
    with pytest.raises(ConfigError, match="more than once"):
        Pattern([[], [(0, 0), (1, 0)]], timesteps=2, n_q=1)
    with pytest.raises(ConfigError, match="not causal"):
        Pattern([[], [(1, 0)], [(0, 0)]], timesteps=2, n_q=1)
    with pytest.raises(ConfigError, match="codes out"):
        Pattern([[], [(0, 0)]], timesteps=2, n_q=1)
    with pytest.raises(ConfigError, match="outside"):
        Pattern([[], [(0, 1)]], timesteps=1, n_q=1)


def test_input_errors_and_index_caching():
    provider = DelayedPatternProvider(4)
    pattern = provider.get_pattern(5)
    assert provider.get_pattern(5) is pattern
    with pytest.raises(InvalidInput, match="codebooks"):
        pattern.build_pattern_sequence(torch.zeros(1, 3, 5, dtype=torch.long), 0)
    with pytest.raises(InvalidInput, match="frames"):
        pattern.build_pattern_sequence(torch.zeros(1, 4, 6, dtype=torch.long), 0)
    with pytest.raises(InvalidInput, match=r"\[B, K, T\]"):
        pattern.build_pattern_sequence(torch.zeros(4, 5, dtype=torch.long), 0)
    with pytest.raises(InvalidInput, match="steps"):
        pattern.revert_pattern_sequence(torch.zeros(1, 4, 99, dtype=torch.long), 0)
    with pytest.raises(InvalidInput):
        provider.get_pattern(-1)
    a = pattern.build_pattern_sequence(torch.zeros(1, 4, 5, dtype=torch.long), 0)[1]
    b = pattern.build_pattern_sequence(torch.ones(2, 4, 5, dtype=torch.long), 0)[1]
    assert a is b  # the gather table is computed once
