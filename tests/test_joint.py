"""The MuLan-like joint embedding (tunecraft.joint): towers, window averaging, contrastive
training on a toy paired set, save/load, the MuLan-token RVQ tokenizer and the ``joint`` task."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from tunecraft.errors import CheckpointError, ConfigError, InvalidInput, InvalidPrompt
from tunecraft.joint import (
    AudioTowerConfig,
    JointConfig,
    JointEmbeddingModel,
    MuLanTokenizer,
    MuLanTokenizerConfig,
    TextTowerConfig,
    clip_loss,
)

SR = 16000


def tiny_config(**kw) -> JointConfig:
    audio = AudioTowerConfig(channels=[16, 16, 32], strides=[2, 2], kernel_size=3, attention_layers=1, num_heads=4,
                             norm_groups=8, n_mels=32)
    return JointConfig(embed_dim=16, audio=audio, text=TextTowerConfig(hidden=64, dropout=0.0), **kw)


@pytest.fixture(scope="module")
def model() -> JointEmbeddingModel:
    torch.manual_seed(0)
    return JointEmbeddingModel(tiny_config()).eval()


def tone(freq: float, seconds: float, sr: int = SR, phase: float = 0.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return amp * torch.sin(2 * math.pi * freq * t + phase)


# ---- shapes and normalisation -------------------------------------------------------------------


def test_embedding_shapes_and_unit_norm(model):
    wav = torch.randn(3, 2, 32000 * 3) * 0.1  # stereo, 32 kHz: resampled and downmixed
    a = model.embed_audio(wav, 32000)
    assert a.shape == (3, 16)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(3))
    t = model.embed_text(["a calm piano ballad", "fast techno", "a calm piano ballad"])
    assert t.shape == (3, 16)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(t[0], t[2])
    sims = model.similarity(wav, 32000, ["a", "b", "c"])
    assert sims.shape == (3,) and bool((sims.abs() <= 1 + 1e-5).all())
    with pytest.raises(InvalidPrompt):
        model.embed_text(["ok", "  "])
    with pytest.raises(InvalidInput):
        model.embed_audio(torch.zeros(1, 2, 3, 4), SR)


def test_window_averaging_matches_manual_mean(model):
    g = torch.Generator().manual_seed(1)
    wav = torch.randn(2, 25 * SR, generator=g) * 0.1  # 10 s + 10 s + 5 s tail (weight 0.5)
    assert model.window_layout(25 * SR) == [(0, 10 * SR, 1.0), (10 * SR, 10 * SR, 1.0), (20 * SR, 5 * SR, 0.5)]
    with torch.no_grad():
        parts = [model.audio_forward(wav[:, s:s + n]) * w for s, n, w in model.window_layout(25 * SR)]
    expected = torch.nn.functional.normalize(sum(parts) / 2.5, dim=-1)
    torch.testing.assert_close(model.embed_audio(wav, SR), expected, atol=1e-5, rtol=1e-5)
    # a tail shorter than min_window_seconds is dropped; a short clip is one window
    assert model.window_layout(10 * SR + SR // 2) == [(0, 10 * SR, 1.0)]
    assert model.window_layout(3 * SR) == [(0, 3 * SR, 1.0)]
    with torch.no_grad():
        torch.testing.assert_close(model.embed_audio(wav[:, :10 * SR], SR), model.audio_forward(wav[:, :10 * SR]))


def test_clip_loss_formula():
    a = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    s = torch.tensor(10.0)
    loss, logs = clip_loss(a, t, s)
    logits = s * a @ t.T
    manual = 0.5 * (-logits.log_softmax(1).diag().mean() - logits.log_softmax(0).diag().mean())
    torch.testing.assert_close(loss, manual)
    assert 0.0 <= float(logs["acc_a2t"]) <= 1.0


def test_config_validation():
    with pytest.raises(ConfigError):
        AudioTowerConfig(channels=[16, 16], strides=[2, 2])
    with pytest.raises(ConfigError):
        JointConfig(init_temperature=0.001, max_logit_scale=100.0)
    with pytest.raises(ConfigError):
        JointConfig(embed_dim=16, tokenizer=MuLanTokenizerConfig(dim=8))


# ---- contrastive training on a toy paired set ---------------------------------------------------


PITCHES = {"a very low hum": 110.0, "a low tone": 220.0, "a middle tone": 440.0, "a high tone": 880.0,
           "a very high whistle": 1760.0, "a shrill beep": 3520.0}


def toy_batch(g: torch.Generator):
    texts = list(PITCHES)
    wavs = []
    for text in texts:
        phase = float(torch.rand((), generator=g)) * 6.28
        amp = 0.2 + 0.6 * float(torch.rand((), generator=g))
        wavs.append(tone(PITCHES[text], 0.5, phase=phase, amp=amp) + 0.01 * torch.randn(SR // 2, generator=g))
    return torch.stack(wavs)[:, None], texts


def test_contrastive_training_learns_text_to_pitch():
    torch.manual_seed(0)
    model = JointEmbeddingModel(tiny_config()).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(120):
        wav, texts = toy_batch(g)
        loss, _ = model.loss(*model(wav, texts))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    model.eval()
    wav, texts = toy_batch(torch.Generator().manual_seed(123))  # fresh phases, levels and noise
    sims = model.embed_audio(wav, SR) @ model.embed_text(texts).T
    assert (sims.argmax(1) == torch.arange(len(texts))).float().mean() >= 5 / 6


# ---- save / load --------------------------------------------------------------------------------


def test_save_load_round_trip(model, tmp_path):
    wav = torch.randn(2, 1, 2 * SR) * 0.1
    model.save_pretrained(tmp_path / "fp32")
    loaded = JointEmbeddingModel.from_pretrained(tmp_path / "fp32")
    torch.testing.assert_close(loaded.embed_audio(wav, SR), model.embed_audio(wav, SR))
    torch.testing.assert_close(loaded.embed_text(["lofi beat"]), model.embed_text(["lofi beat"]))
    assert loaded.config == model.config
    model.save_pretrained(tmp_path / "fp16", dtype="float16")
    half = JointEmbeddingModel.from_pretrained(tmp_path / "fp16")
    assert half.log_logit_scale.dtype == torch.float32
    torch.testing.assert_close(half.embed_audio(wav, SR), model.embed_audio(wav, SR), atol=5e-3, rtol=0)
    meta = json.loads((tmp_path / "fp32" / "config.json").read_text())
    meta["class"] = "SomethingElse"
    (tmp_path / "fp32" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        JointEmbeddingModel.from_pretrained(tmp_path / "fp32")
    with pytest.raises(CheckpointError):
        JointEmbeddingModel.from_pretrained(tmp_path / "missing-dir")


def test_tokenizer_ships_with_the_model(model, tmp_path):
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=-1)
    tok = MuLanTokenizer(MuLanTokenizerConfig(dim=16, n_q=4, bins=16, kmeans_iters=10, ema_epochs=1))
    tok.fit(emb, seed=0)
    m = JointEmbeddingModel(tiny_config())
    m.load_state_dict(model.state_dict())
    m.attach_tokenizer(tok)
    m.eval().save_pretrained(tmp_path / "with-tok")
    loaded = JointEmbeddingModel.from_pretrained(tmp_path / "with-tok")
    assert loaded.config.tokenizer == tok.config
    wav = torch.randn(2, 1, SR) * 0.1
    codes = loaded.audio_tokens(wav, SR)
    assert codes.shape == (2, 4) and codes.dtype == torch.int64
    torch.testing.assert_close(codes, m.audio_tokens(wav, SR))
    assert loaded.text_tokens(["jazz trio"], n_q=2).shape == (1, 2)
    with pytest.raises(InvalidInput):
        model.text_tokens(["no tokenizer here"])


# ---- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_shapes_and_error_decreases_with_levels():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(8, 12, generator=g)
    emb = centers[torch.randint(0, 8, (600,), generator=g)] + 0.3 * torch.randn(600, 12, generator=g)
    tok = MuLanTokenizer(MuLanTokenizerConfig(dim=12, n_q=6, bins=32, kmeans_iters=20, ema_epochs=0))
    with pytest.raises(InvalidInput):
        tok.encode(emb)  # not fitted
    errors = tok.fit(emb, seed=0)
    assert len(errors) == 6
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.25 * errors[0]
    assert errors[0] < float(emb.pow(2).sum(1).mean())
    codes = tok.encode(emb[:5])
    assert codes.shape == (5, 6) and int(codes.min()) >= 0 and int(codes.max()) < 32
    assert tok.decode(codes).shape == (5, 12)
    assert tok.encode(emb[:5], n_q=3).shape == (5, 3)
    recon = [float((emb - tok.decode(tok.encode(emb, n_q=k))).pow(2).sum(1).mean()) for k in (1, 3, 6)]
    assert recon[0] > recon[1] > recon[2]
    torch.testing.assert_close(torch.tensor(recon[2]), torch.tensor(errors[-1]), rtol=1e-4, atol=1e-6)
    # deterministic for a seed, without touching the global RNG
    state = torch.get_rng_state()
    tok2 = MuLanTokenizer(tok.config)
    tok2.fit(emb, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(tok2.encode(emb), tok.encode(emb))
    with pytest.raises(InvalidInput):
        MuLanTokenizer(MuLanTokenizerConfig(dim=12, bins=64)).fit(emb[:10])
    with pytest.raises(InvalidInput):
        tok.decode(torch.full((1, 2), 99))
    with pytest.raises(InvalidInput):
        tok.encode(torch.randn(2, 5))


# ---- the training task --------------------------------------------------------------------------


def _corpus(root, n=4, seconds=3.0, sr=32000):
    root.mkdir()
    for i in range(n):
        wav = np.stack([tone(220.0 * (i + 1), seconds, sr).numpy()] * 2, axis=1)
        sf.write(root / f"clip{i}.wav", wav, sr)
        info = {"captions": [f"clip {i} caption {k}" for k in range(5)], "style": "pop"}
        (root / f"clip{i}.json").write_text(json.dumps(info))
    sf.write(root / "nocaption.wav", np.zeros((sr, 2), dtype=np.float32), sr)  # left out (warning)
    return root


def test_joint_task_dataset_is_deterministic_per_seed_epoch_index(tmp_path):
    from tunecraft.train import get_task_class, load_recipe
    from tunecraft.train.data import SeededItems

    source = _corpus(tmp_path / "corpus")
    recipe = load_recipe("joint-tiny", [f"data.source={source}", "data.crop_seconds=1.0"])
    assert get_task_class("joint") is type(recipe.task)
    task = recipe.task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = task.build_train_dataset()
    assert len(ds) == 4
    items = SeededItems(ds, seed=7)
    a, b = items[(0, 2)], items[(0, 2)]
    assert torch.equal(a["wav"], b["wav"]) and a["text"] == b["text"]
    assert a["wav"].shape == (1, SR) and a["text"].startswith("clip 2 caption")
    draws = {(items[(e, 2)]["text"], float(items[(e, 2)]["wav"][0, 0])) for e in range(8)}
    assert len(draws) > 1  # the caption and crop change with the epoch
    batch = task.collate([items[(0, i)] for i in range(4)])
    assert batch["wav"].shape == (4, 1, SR) and len(batch["text"]) == 4
    assert task.build_valid_dataset() is None  # a plain folder has no valid split
    with pytest.raises(ConfigError):
        load_recipe("joint-tiny", ["task.tokenizer.dim=64"])


BUNDLE = __import__("pathlib").Path(__file__).resolve().parent.parent / "tunecraft" / "bundles" / "joint-tiny"


@pytest.mark.skipif(not (BUNDLE / "model.safetensors").is_file(), reason="joint-tiny bundle not exported")
def test_shipped_bundle_loads_by_name():
    model = JointEmbeddingModel.from_pretrained("joint-tiny")
    assert model.tokenizer is not None and model.tokenizer.fitted
    assert model.config.tokenizer.n_q == 12
    wav = torch.stack([tone(440.0, 2.0)[None], tone(110.0, 2.0)[None]])
    a = model.embed_audio(wav, SR)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    codes = model.text_tokens(["an upbeat latin tune", "dark ambient drone"])
    assert codes.shape == (2, 12) and int(codes.max()) < model.tokenizer.cardinality
