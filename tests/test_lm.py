"""The MusicGen codec LM: shapes, causality, KV cache, CFG, melody, sampling, sliding windows, checkpoints."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tunecraft.errors import CheckpointError, ConfigError, InvalidInput
from tunecraft.lm import CodecLM, CodecLMConfig, SamplingParams, apply_cfg, sample_next_token, sample_top_k, sample_top_p
from tunecraft.lm.convert import (
    convert_audiocraft_state_dict,
    convert_transformers_musicgen,
    load_audiocraft_checkpoint,
)
from tunecraft.modules.attention import linear
from tunecraft.modules.transformer import Transformer
from tunecraft.text import TextStates

CARD, DIM, K = 64, 32, 4


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one intra-op thread


def tiny(**kw) -> CodecLM:
    cfg = dict(n_q=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, cfg_dropout=0.0, max_context=64, extend_stride=32)
    cfg.update(kw)
    torch.manual_seed(cfg.pop("seed", 0))
    return CodecLM(CodecLMConfig(**cfg)).eval()


def text_states(B: int = 2, L: int = 5, null_rows=(), pad: int = 2, seed: int = 1) -> TextStates:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, L, dtype=torch.bool)
    if B > 1 and pad:
        mask[1, L - pad:] = False
    for r in null_rows:
        mask[r] = False
    states = torch.randn(B, L, DIM, generator=g) * mask.unsqueeze(-1)
    return TextStates(states, mask)


def codes(B=2, T=10, seed=2) -> torch.Tensor:
    return torch.randint(0, CARD, (B, K, T), generator=torch.Generator().manual_seed(seed))


# ====================================================================== config and shapes


def test_config_validation_and_round_trip():
    cfg = CodecLMConfig(n_q=4, card=CARD, dim=DIM, num_heads=4, num_layers=2, pattern="coarse_first")
    assert CodecLMConfig.from_json(cfg.to_json()) == cfg
    assert cfg.special_token == CARD
    bad = [
        dict(dim=30, num_heads=4), dict(pattern="zigzag"), dict(text_fuse="sum"), dict(activation="tanh"),
        dict(extend_stride=64, max_context=64), dict(cfg_dropout=1.5), dict(layer_drop=1.0), dict(n_q=0),
        dict(pattern="delay", pattern_options={"delays": [0, 1]}), dict(positional="alibi"),
    ]
    for kw in bad:
        with pytest.raises(ConfigError):
            CodecLMConfig(**{**dict(card=CARD, dim=DIM, num_heads=4, num_layers=1), **kw})
    with pytest.raises(ConfigError, match="unknown key"):
        CodecLMConfig.from_dict({"dim": 32, "wings": 2})


def test_shapes_loss_and_gradients():
    lm = tiny()
    c, text = codes(), text_states()
    pattern = lm.pattern_provider.get_pattern(10)
    seq, _, _ = pattern.build_pattern_sequence(c, lm.special_token)
    logits = lm(seq, text)
    assert logits.shape == (2, K, pattern.sequence_length, CARD)
    out = lm.compute_predictions(c, text)
    assert out.logits.shape == (2, K, 10, CARD) and out.mask.shape == (2, K, 10)
    assert bool(out.mask.all()) and bool(torch.isfinite(out.logits).all())
    lm.train()
    loss = lm.compute_loss(c, text)
    assert loss.ce_per_codebook.shape == (K,)
    assert torch.allclose(loss.loss, loss.ce_per_codebook.mean())
    assert abs(float(loss.loss.detach()) - math.log(CARD)) < 0.5  # near-uniform at init
    loss.loss.backward()
    assert all(p.grad is not None for n, p in lm.named_parameters() if not n.startswith("chroma"))
    # the loss is exactly the per-codebook CE of the reverted logits
    lm.eval()
    with torch.no_grad():
        ref = torch.stack([F.cross_entropy(out.logits[:, k].reshape(-1, CARD), c[:, k].reshape(-1)) for k in range(K)])
        assert torch.allclose(lm.compute_loss(c, text).ce_per_codebook, ref, atol=1e-5)
        fm = torch.ones(2, 10, dtype=torch.bool)
        fm[1, 6:] = False
        masked = lm.compute_loss(c, text, frame_mask=fm).ce_per_codebook
        ref0 = F.cross_entropy(torch.cat([out.logits[0, 0], out.logits[1, 0, :6]]), torch.cat([c[0, 0], c[1, 0, :6]]))
        assert torch.allclose(masked[0], ref0, atol=1e-5)


def test_input_errors():
    lm = tiny()
    with pytest.raises(InvalidInput, match="int64"):
        lm(torch.zeros(1, K, 3))
    with pytest.raises(InvalidInput, match=r"\[B, 4, T\]"):
        lm(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(InvalidInput, match="special token"):
        lm(torch.full((1, K, 3), CARD + 1))
    with pytest.raises(InvalidInput, match=r"codes must be in \[0, 64\)"):
        lm.compute_predictions(torch.full((1, K, 3), CARD))
    with pytest.raises(InvalidInput, match="width"):
        lm(torch.zeros(1, K, 3, dtype=torch.long), TextStates(torch.zeros(1, 2, 8), torch.ones(1, 2, dtype=torch.bool)))
    with pytest.raises(InvalidInput, match="rows"):
        lm(torch.zeros(1, K, 3, dtype=torch.long), text_states(B=2))
    with pytest.raises(InvalidInput, match="no melody"):
        lm(torch.zeros(1, K, 3, dtype=torch.long), chroma=torch.zeros(1, 12, 4))
    with pytest.raises(InvalidInput, match="max_new_frames"):
        lm.generate(max_new_frames=-1)
    with pytest.raises(InvalidInput, match="extend_stride"):
        lm.generate(max_new_frames=2, max_context=8, extend_stride=8)
    with pytest.raises(InvalidInput, match="top_p"):
        lm.generate(max_new_frames=2, top_p=2.0)
    with pytest.raises(InvalidInput, match="rows"):
        lm.generate(text_states(B=2), prompt=codes(B=3), max_new_frames=2)


# ====================================================================== causality and KV cache


def test_causality_future_tokens_do_not_change_past_logits():
    lm = tiny()
    text = text_states()
    seq = torch.randint(0, CARD + 1, (2, K, 12), generator=torch.Generator().manual_seed(5))
    changed = seq.clone()
    changed[:, :, 7:] = torch.randint(0, CARD, (2, K, 5))
    with torch.no_grad():
        a, b = lm(seq, text), lm(changed, text)
    assert torch.allclose(a[:, :, :7], b[:, :, :7], atol=1e-6)
    assert not torch.allclose(a[:, :, 7:], b[:, :, 7:])
    # in code space: changing frame t of codebook q only affects predictions made after its step
    c = codes(B=1, T=8)
    c2 = c.clone()
    c2[0, 2, 5] = (c2[0, 2, 5] + 1) % CARD
    pattern = lm.pattern_provider.get_pattern(8)
    step = pattern.step_of(5, 2)
    with torch.no_grad():
        la, lb = lm.compute_predictions(c, text[0]).logits, lm.compute_predictions(c2, text[0]).logits
    for t in range(8):
        for q in range(K):
            if pattern.step_of(t, q) - 1 < step:
                assert torch.allclose(la[0, q, t], lb[0, q, t], atol=1e-6)


@pytest.mark.parametrize("positional", ["sin", "rope", "sin_rope"])
def test_kv_cache_decoding_equals_full_forward(positional):
    torch.manual_seed(0)
    tr = Transformer(DIM, 4, 2, cross_attention=True, positional=positional).eval()
    x = torch.randn(3, 11, DIM)
    mem = torch.randn(3, 4, DIM)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        full = tr(x, tr.cross_context(mem, mask))
        cache = tr.new_cache(3, 16)
        ctx = tr.cross_context(mem, mask, precompute=True)
        pieces = [tr(x[:, :4], ctx, cache), tr(x[:, 4:5], ctx, cache), tr(x[:, 5:9], ctx, cache), tr(x[:, 9:], ctx, cache)]
    assert cache.length == 11
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)
    # the decoding plan (no module dispatch) does the same math
    plan, cache2 = tr.decode_plan(), tr.new_cache(3, 16)
    with torch.no_grad():
        planned = [plan(x[:, :5], ctx, cache2)] + [plan(x[:, i:i + 1], ctx, cache2) for i in range(5, 11)]
    assert torch.allclose(torch.cat(planned, 1), full, atol=1e-5)
    with pytest.raises(InvalidInput, match="precomputed"):
        plan(x[:, :1], tr.cross_context(mem, mask), tr.new_cache(3, 4))
    with pytest.raises(InvalidInput, match="overflow"):
        tr(torch.randn(3, 6, DIM), ctx, cache)


def test_generation_agrees_with_teacher_forcing():
    """Greedy decoding through the KV cache picks the argmax of the full forward at every code."""
    for kw in (dict(), dict(pattern="flattening"), dict(pattern="coarse_first"), dict(positional="rope")):
        lm = tiny(**kw)
        text = text_states()
        gen = lm.generate(text, max_new_frames=9, greedy=True, cfg_scale=None)
        assert gen.shape == (2, K, 9)
        with torch.no_grad():
            pred = lm.compute_predictions(gen, text).logits.argmax(-1)
        assert torch.equal(pred, gen), kw


def test_fast_linear_matches_f_linear():
    torch.manual_seed(0)
    w, b = torch.randn(48, 16), torch.randn(48)
    for shape in [(1, 16), (2, 1, 16), (4, 3, 16), (40, 16)]:
        x = torch.randn(*shape)
        assert torch.allclose(linear(x, w, b), F.linear(x, w, b), atol=1e-5)
        assert linear(x, w).is_contiguous()
    x = torch.randn(2, 16, requires_grad=True)
    linear(x, w, b).sum().backward()
    assert torch.allclose(x.grad, w.sum(0).expand(2, -1), atol=1e-5)


# ====================================================================== conditioning and CFG


def test_null_text_rows_zero_the_cross_attention():
    lm = tiny()
    text = text_states(B=3, null_rows=(2,))
    seq = lm.pattern_provider.get_pattern(6).build_pattern_sequence(codes(B=3, T=6), lm.special_token)[0]
    with torch.no_grad():
        out = lm(seq, text)
        alone = lm(seq[2:], None)
        unpadded = lm(seq[1:2], TextStates(text.states[1:2, :3], text.mask[1:2, :3]))
    assert bool(torch.isfinite(out).all())
    assert torch.allclose(out[2:], alone, atol=1e-5)  # null row == no text at all
    assert torch.allclose(out[1:2], unpadded, atol=1e-5)  # padding is invisible
    assert not torch.allclose(out[0:1], lm(seq[0:1], None))


def test_condition_dropout_in_training():
    lm = tiny(cfg_dropout=1.0).train()
    c, text = codes(), text_states()
    dropped = lm.compute_loss(c, text).loss
    lm.eval()
    with torch.no_grad():
        null = lm.compute_loss(c, text.null_like()).loss
    assert torch.allclose(dropped, null, atol=1e-5)
    lm = tiny(cfg_dropout=0.5).train()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(lm.compute_loss(c, text, generator=g1).loss, lm.compute_loss(c, text, generator=g2).loss)


def test_cfg_batched_two_step_and_formula():
    lm = tiny()
    text = text_states()
    a = lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=3.0)
    b = lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=3.0, two_step_cfg=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=None))
    assert torch.equal(lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=1.0),
                       lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=None))
    cond, uncond = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.allclose(apply_cfg(cond, uncond, 3.0), uncond + 3.0 * (cond - uncond))
    # the first step's guided logits, computed by hand from two forwards
    seq = torch.full((2, K, 1), CARD)
    with torch.no_grad():
        lc, lu = lm(seq, text)[:, :, 0], lm(seq, text.null_like())[:, :, 0]
    first = lm.generate(text, max_new_frames=1, greedy=True, cfg_scale=3.0)
    assert torch.equal(first[:, 0, 0], apply_cfg(lc, lu, 3.0)[:, 0].argmax(-1))


def test_fact_guidance_pushes_away_from_negative_conditions():
    """l = l_null + s (l_cond - l_null) + s_f (l_cond - l_neg): checked on the first step by hand,
    batched == two-step, a negative equal to the condition or s_f = 0 changes nothing."""
    lm = tiny()
    text = text_states()
    neg = text_states(seed=11)
    base = lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=3.0)
    guided = lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=3.0, fact_guidance=4.0, negatives=[neg])
    assert not torch.equal(base, guided)
    assert torch.equal(guided, lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=3.0, fact_guidance=4.0,
                                           negatives=[neg], two_step_cfg=True))
    assert torch.equal(base, lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=3.0, fact_guidance=4.0,
                                         negatives=[text]))
    assert torch.equal(base, lm.generate(text, max_new_frames=8, greedy=True, cfg_scale=3.0, negatives=[neg]))
    seq = torch.full((2, K, 1), CARD)
    with torch.no_grad():
        lc, lu, ln = (lm(seq, t)[:, :, 0] for t in (text, text.null_like(), neg))
    for cfg in (3.0, None):
        first = lm.generate(text, max_new_frames=1, greedy=True, cfg_scale=cfg, fact_guidance=4.0, negatives=[neg])
        want = (apply_cfg(lc, lu, 3.0) if cfg else lc) + 4.0 * (lc - ln)
        assert torch.equal(first[:, 0, 0], want[:, 0].argmax(-1))
    with pytest.raises(InvalidInput):
        lm.generate(None, num_samples=2, max_new_frames=2, fact_guidance=1.0, negatives=[neg])
    with pytest.raises(InvalidInput):
        lm.generate(text, max_new_frames=2, fact_guidance=-1.0)
    with pytest.raises(InvalidInput):
        lm.generate(text, max_new_frames=2, fact_guidance=1.0, negatives=[text_states(B=3)])


def test_melody_prefix():
    lm = tiny(n_chroma=12, chroma_length=6)
    c, text = codes(T=7), text_states()
    idx = torch.randint(0, 12, (2, 3), generator=torch.Generator().manual_seed(4))
    chroma = F.one_hot(idx, 12).float().transpose(1, 2)  # [B, 12, 3]
    with torch.no_grad():
        out = lm.compute_predictions(c, text, chroma)
        repeated = lm.compute_predictions(c, text, chroma.repeat(1, 1, 2))  # 3 frames repeat to 6 anyway
        other = lm.compute_predictions(c, text, chroma.roll(1, dims=1))
        null = lm.compute_predictions(c, text, lm.null_chroma(2, 5))
        default = lm.compute_predictions(c, text)
    assert out.logits.shape == (2, K, 7, CARD)  # prefix positions are not returned
    assert torch.allclose(out.logits, repeated.logits, atol=1e-5)
    assert not torch.allclose(out.logits, other.logits)
    assert torch.allclose(null.logits, default.logits, atol=1e-5)
    lm.train()
    loss = lm.compute_loss(c, text, chroma)
    loss.loss.backward()
    assert lm.chroma_proj.weight.grad is not None and lm.chroma_proj.weight.grad.abs().sum() > 0
    lm.eval()
    gen = lm.generate(text, chroma=chroma, max_new_frames=6, greedy=True, cfg_scale=None)
    with torch.no_grad():
        assert torch.equal(lm.compute_predictions(gen, text, chroma).logits.argmax(-1), gen)
    # prepended text: the text rows become prefix positions as well
    lm2 = tiny(n_chroma=12, chroma_length=4, text_fuse="prepend")
    gen2 = lm2.generate(text, chroma=chroma, max_new_frames=5, greedy=True, cfg_scale=2.0)
    assert gen2.shape == (2, K, 5)
    assert torch.equal(gen2, lm2.generate(text, chroma=chroma, max_new_frames=5, greedy=True, cfg_scale=2.0,
                                          two_step_cfg=True))


# ====================================================================== sampling


def test_sampling_is_deterministic_by_seed():
    lm = tiny()
    text = text_states()
    a = lm.generate(text, max_new_frames=10, seed=7, top_k=20, temperature=1.5)
    b = lm.generate(text, max_new_frames=10, seed=7, top_k=20, temperature=1.5)
    c = lm.generate(text, max_new_frames=10, seed=8, top_k=20, temperature=1.5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(a, lm.generate(text, max_new_frames=10, generator=g, top_k=20, temperature=1.5))
    params = SamplingParams(top_k=0, top_p=0.9, temperature=1.0, cfg_scale=2.0)
    assert torch.equal(lm.generate(text, max_new_frames=6, seed=1, params=params),
                       lm.generate(text, max_new_frames=6, seed=1, params=params))


def test_top_k_top_p_and_greedy():
    logits = torch.log(torch.tensor([0.05, 0.4, 0.3, 0.15, 0.1]))
    many = logits.expand(20000, 5)
    g = torch.Generator().manual_seed(0)
    k2 = sample_next_token(many, top_k=2, generator=g)
    assert set(k2.unique().tolist()) == {1, 2}
    assert abs(float((k2 == 1).float().mean()) - 0.4 / 0.7) < 0.02
    p = sample_next_token(many, top_p=0.8, generator=g)  # 0.4 + 0.3 < 0.8 <= 0.4 + 0.3 + 0.15
    assert set(p.unique().tolist()) == {1, 2, 3}
    assert abs(float((p == 3).float().mean()) - 0.15 / 0.85) < 0.02
    # top-k first, then top-p on the renormalised top-2 (0.57, 0.43)
    assert set(sample_next_token(many, top_k=2, top_p=0.5, generator=g).unique().tolist()) == {1}
    assert set(sample_next_token(many, top_k=2, top_p=0.6, generator=g).unique().tolist()) == {1, 2}
    full = sample_next_token(many, generator=g)
    assert abs(float((full == 0).float().mean()) - 0.05) < 0.01
    cold = sample_next_token(many, temperature=0.05, generator=g)
    assert float((cold == 1).float().mean()) > 0.99
    assert torch.equal(sample_next_token(logits.view(1, 5), greedy=True), torch.tensor([1]))
    assert torch.equal(sample_next_token(logits.view(1, 5), temperature=0.0), torch.tensor([1]))
    probs = torch.softmax(logits, -1).expand(5000, 5)
    assert set(sample_top_k(probs, 1, g).unique().tolist()) == {1}
    assert set(sample_top_p(probs, 0.01, g).unique().tolist()) == {1}
    with pytest.raises(InvalidInput):
        sample_top_k(probs, 0)


# ====================================================================== continuation, windows, progress


def test_prompt_continuation():
    lm = tiny()
    text, prompt = text_states(), codes(T=6)
    out = lm.generate(text, prompt=prompt, max_new_frames=5, greedy=True, cfg_scale=None)
    assert out.shape == (2, K, 11) and torch.equal(out[:, :, :6], prompt)
    new = lm.generate(text, prompt=prompt, max_new_frames=5, greedy=True, cfg_scale=None, include_prompt=False)
    assert torch.equal(new, out[:, :, 6:])
    with torch.no_grad():
        pred = lm.compute_predictions(out, text).logits.argmax(-1)
    assert torch.equal(pred[:, :, 6:], out[:, :, 6:])  # every new code is the argmax given the prompt


def test_sliding_window_beyond_max_context():
    lm = tiny(max_context=12, extend_stride=8)
    text = text_states()
    calls = []
    out = lm.generate(text, max_new_frames=30, greedy=True, cfg_scale=2.0, callback=lambda d, t: calls.append((d, t)))
    assert out.shape == (2, K, 30)
    # windows: [0, 12) fresh, then each re-encodes the last 4 frames and adds up to 8 more
    first = lm.generate(text, max_new_frames=12, greedy=True, cfg_scale=2.0)
    assert torch.equal(out[:, :, :12], first)
    second = lm.generate(text, prompt=out[:, :, 8:12], max_new_frames=8, greedy=True, cfg_scale=2.0)
    assert torch.equal(out[:, :, 12:20], second[:, :, 4:])
    last = lm.generate(text, prompt=out[:, :, 24:28], max_new_frames=2, greedy=True, cfg_scale=2.0)
    assert torch.equal(out[:, :, 28:], last[:, :, 4:])
    # progress: one call per decoding step over every window, ending at the total
    total = calls[-1][1]
    assert [d for d, _ in calls] == list(range(1, total + 1)) and all(t == total for _, t in calls)
    assert total == (12 + 3) + 2 * (8 + 3) + (2 + 3)  # steps = new frames + K - 1 per window
    # a prompt longer than the context keeps only its tail as context
    long_prompt = codes(T=20)
    cont = lm.generate(text, prompt=long_prompt, max_new_frames=3, greedy=True, cfg_scale=None)
    ref = lm.generate(text, prompt=long_prompt[:, :, -4:], max_new_frames=3, greedy=True, cfg_scale=None)
    assert torch.equal(cont[:, :, 20:], ref[:, :, 4:])


def test_melody_windows_and_unconditional_batches():
    lm = tiny(n_chroma=12, chroma_length=4, max_context=10, extend_stride=6)
    chroma = F.one_hot(torch.arange(24) % 12, 12).float().T.unsqueeze(0).expand(2, -1, -1)
    out = lm.generate(text_states(), chroma=chroma, max_new_frames=22, seed=0)
    assert out.shape == (2, K, 22)
    uncond = lm.generate(num_samples=3, max_new_frames=4, seed=0)
    assert uncond.shape == (3, K, 4)
    assert not lm.training
    lm.train()
    lm.generate(num_samples=1, max_new_frames=2, seed=0)
    assert lm.training  # generation restores the mode


def test_training_after_a_long_generation():
    """Position tables grown inside generation (inference mode) still work with autograd."""
    for positional in ("sin", "rope"):
        lm = tiny(positional=positional, max_context=300, extend_stride=100)
        lm.generate(num_samples=1, max_new_frames=280, seed=0, cfg_scale=None)
        lm.train()
        lm.compute_loss(codes(B=1, T=290), text_states(B=1)).loss.backward()
        assert lm.emb[0].weight.grad is not None


# ====================================================================== persistence


def test_save_and_load(tmp_path):
    lm = tiny(pattern="partial_delay", n_chroma=12, chroma_length=3)
    lm.save_pretrained(tmp_path / "lm")
    back = CodecLM.from_pretrained(tmp_path / "lm")
    assert back.config == lm.config
    c, text = codes(), text_states()
    with torch.no_grad():
        assert torch.equal(back.compute_predictions(c, text).logits, lm.compute_predictions(c, text).logits)
    with pytest.raises(CheckpointError, match="not a model directory"):
        CodecLM.from_pretrained(tmp_path / "missing")
    (tmp_path / "lm" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        CodecLM.from_pretrained(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="does not match"):
        lm.load_state_checked({"emb.0.weight": torch.zeros(CARD + 1, DIM)})


# ====================================================================== official checkpoints (offline, tiny)

transformers = pytest.importorskip("transformers")


def _quiet():
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()


def _hf_musicgen(melody: bool = False, channels: int = 1, seed: int = 0):
    _quiet()
    from transformers import EncodecConfig, T5Config

    torch.manual_seed(seed)
    n_q = 4 * channels
    t5 = T5Config(vocab_size=50, d_model=24, d_kv=6, d_ff=48, num_layers=1, num_heads=4)
    enc = EncodecConfig(target_bandwidths=[2.2], upsampling_ratios=[8, 5, 4, 4], num_filters=2, hidden_size=8,
                        codebook_size=CARD, num_lstm_layers=1, sampling_rate=32000, audio_channels=channels)
    dec_kw = dict(vocab_size=CARD, hidden_size=DIM, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                  num_codebooks=n_q, max_position_embeddings=256, pad_token_id=CARD, bos_token_id=CARD,
                  audio_channels=channels)
    if melody:
        from transformers import (MusicgenMelodyConfig, MusicgenMelodyDecoderConfig,
                                  MusicgenMelodyForConditionalGeneration)

        cfg = MusicgenMelodyConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(),
                                   decoder=MusicgenMelodyDecoderConfig(**dec_kw).to_dict(), chroma_length=20)
        model = MusicgenMelodyForConditionalGeneration(cfg).eval()
    else:
        from transformers import MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration

        cfg = MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(),
                             decoder=MusicgenDecoderConfig(**dec_kw).to_dict())
        model = MusicgenForConditionalGeneration(cfg).eval()
    model.generation_config.decoder_start_token_id = CARD
    model.generation_config.pad_token_id = CARD
    captured = []

    def capture(audio_codes, *_, **__):  # keep the codes, skip the codec
        captured.append(audio_codes[0].clone())
        return SimpleNamespace(audio_values=audio_codes.float())

    model.audio_encoder.decode = capture
    return model, captured


def _hf_text(model, B=2):
    ids = torch.randint(2, 50, (B, 7), generator=torch.Generator().manual_seed(9))
    mask = torch.ones(B, 7, dtype=torch.long)
    mask[1, 4:] = 0
    with torch.no_grad():
        hidden = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return ids, mask, hidden


def _hf_generate(model, captured, channels=1, **kw):
    captured.clear()
    with torch.no_grad():
        model.generate(do_sample=False, **kw)
    if channels == 1:
        return captured[0]
    left, right = captured  # transformers decodes the left (even) and right (odd) codebooks separately
    return torch.stack([left, right], dim=2).flatten(1, 2)


@pytest.mark.parametrize("channels", [1, 2])
def test_transformers_musicgen_parity(channels):
    model, captured = _hf_musicgen(channels=channels)
    conv = convert_transformers_musicgen(model)
    lm = conv.lm
    assert lm.config.pattern == ("delay" if channels == 1 else "stereo_partial_delay")
    ids, mask, hidden = _hf_text(model)
    text = conv.project_text(hidden, mask)
    n_q = lm.n_q
    c = torch.randint(0, CARD, (2, n_q, 12), generator=torch.Generator().manual_seed(3))
    seq = lm.pattern_provider.get_pattern(12).build_pattern_sequence(c, lm.special_token)[0]
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=seq.reshape(2 * n_q, -1)).logits
        ours = lm(seq, text)
    assert (ref.view(2, n_q, -1, CARD) - ours).abs().max() < 1e-4
    causal = convert_transformers_musicgen(model.decoder)  # MusicgenForCausalLM: same decoder, no projection
    assert causal.text_projection is None
    with torch.no_grad():
        assert torch.equal(causal.lm(seq, text), ours)
    for scale in (1.0, 3.0):  # 50 frames: max_new_tokens counts the K - 1 tail steps of the delay pattern
        hf = _hf_generate(model, captured, channels, input_ids=ids, attention_mask=mask, guidance_scale=scale,
                          max_new_tokens=50 + n_q // channels - 1)
        assert hf.shape == (2, n_q, 50)
        ours = lm.generate(text, max_new_frames=50, greedy=True, cfg_scale=scale)
        assert torch.equal(hf, ours), f"greedy tokens differ (guidance {scale})"


def test_transformers_musicgen_melody_parity():
    model, captured = _hf_musicgen(melody=True)
    conv = convert_transformers_musicgen(model)
    lm = conv.lm
    assert lm.config.text_fuse == "prepend" and lm.config.n_chroma == 12 and lm.config.chroma_length == 20
    ids, mask, hidden = _hf_text(model)
    text = conv.project_text(hidden, mask)
    feats = F.one_hot(torch.randint(0, 12, (2, 13), generator=torch.Generator().manual_seed(6)), 12).float()
    c = codes(T=12)
    seq = lm.pattern_provider.get_pattern(12).build_pattern_sequence(c, lm.special_token)[0]
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, input_features=feats,
                    decoder_input_ids=seq.reshape(2 * K, -1)).logits.view(2, K, -1, CARD)[:, :, -seq.shape[-1]:]
        ours = lm(seq, text, feats.transpose(1, 2))
    assert (ref - ours).abs().max() < 1e-4
    for scale in (1.0, 3.0):
        hf = _hf_generate(model, captured, input_ids=ids, attention_mask=mask, input_features=feats,
                          guidance_scale=scale, max_new_tokens=50 + K - 1)
        ours = lm.generate(text, chroma=feats.transpose(1, 2), max_new_frames=50, greedy=True, cfg_scale=scale)
        assert torch.equal(hf, ours), f"greedy tokens differ (guidance {scale})"


def _audiocraft_state_from_hf(model) -> dict:
    """Rebuild the audiocraft key layout from a transformers model (the inverse of transformers' converter)."""
    out = {}
    for key, value in model.state_dict().items():
        if not key.startswith(("decoder.", "enc_to_dec_proj.")) or "embed_positions" in key:
            continue
        name = key.replace("decoder.model.decoder.", "").replace("decoder.", "")
        name = name.replace("embed_tokens", "emb").replace("lm_heads", "linears").replace("encoder_attn.", "cross_attention.")
        name = name.replace("self_attn_layer_norm", "norm1").replace("encoder_attn_layer_norm", "norm_cross")
        name = name.replace("final_layer_norm", "norm2").replace("fc1", "linear1").replace("fc2", "linear2")
        name = name.replace("enc_to_dec_proj", "condition_provider.conditioners.description.output_proj")
        if name.startswith("layer_norm."):
            name = "out_norm." + name.split(".")[1]
        if name.startswith("layers."):
            name = "transformer." + name
        out[name] = value
    for key in [k for k in out if k.endswith("q_proj.weight")]:
        base = key[: -len("q_proj.weight")]
        out[base + "in_proj_weight"] = torch.cat([out.pop(base + p + "_proj.weight") for p in "qkv"])
    return out


def test_audiocraft_state_dict_conversion(tmp_path):
    model, _ = _hf_musicgen()
    state = _audiocraft_state_from_hf(model)
    assert "transformer.layers.0.self_attn.in_proj_weight" in state and "emb.3.weight" in state
    xp_cfg = "transformer_lm:\n  num_heads: 4\ncodebooks_pattern:\n  modeling: delay\n  delay:\n    delays: [0, 1, 2, 3]\n"
    torch.save({"best_state": state, "xp.cfg": xp_cfg, "exported": True}, tmp_path / "state_dict.bin")
    conv = load_audiocraft_checkpoint(tmp_path / "state_dict.bin")
    ref = convert_transformers_musicgen(model)
    assert conv.lm.config.num_heads == 4 and conv.lm.config.pattern_options == {"delays": [0, 1, 2, 3]}
    ids, mask, hidden = _hf_text(model)
    seq = conv.lm.pattern_provider.get_pattern(9).build_pattern_sequence(codes(T=9), CARD)[0]
    with torch.no_grad():
        a = conv.lm(seq, conv.project_text(hidden, mask))
        b = ref.lm(seq, ref.project_text(hidden, mask))
    assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="unexpected audiocraft tensor"):
        convert_audiocraft_state_dict({**state, "mystery.weight": torch.zeros(1)}, xp_cfg=xp_cfg)
    (tmp_path / "bad.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_audiocraft_checkpoint(tmp_path / "bad.bin")
