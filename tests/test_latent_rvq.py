"""The residual-VQ codec over a frozen VAE-GAN's latents (``vae-gan-rvq``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from tunecraft.codecs import LatentRVQCodec, LatentRVQConfig, RVQCodec, VAEGANCodec, load_codec
from tunecraft.codecs.tasks import CodecDataConfig, LatentRVQTask, LatentRVQTaskConfig, cpu_vae_gan_config
from tunecraft.errors import ConfigError
from tunecraft.modules.bottlenecks import KLBottleneckConfig
from tunecraft.modules.quantization import RVQConfig
from tunecraft.modules.seanet import SEANetConfig
from tunecraft.pretrained import BUNDLES_DIR
from tunecraft.train import get_task_class, load_recipe

SR = 8000
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    lines = {"train": [], "valid": [], "test": []}
    for i in range(8):
        split = "train" if i < 5 else ("valid" if i < 7 else "test")
        t = np.arange(int(1.5 * SR)) / SR
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(110, 880) * t) * np.exp(-2 * (t % 0.5))
        sf.write(root / "audio" / f"{i}.wav", x.astype(np.float32), SR)
        lines[split].append(json.dumps({"path": f"audio/{i}.wav", "duration": 1.5, "sample_rate": SR}))
    for split, ls in lines.items():
        (root / f"{split}.jsonl").write_text("".join(x + "\n" for x in ls))
    (root / "data.jsonl").write_text("".join(x + "\n" for ls in lines.values() for x in ls))
    return root


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny random VAE-GAN (8 kHz, hop 16, 4-d latents) saved as a model directory."""
    torch.manual_seed(0)
    cfg = cpu_vae_gan_config().replace(
        sample_rate=SR, seanet=SEANetConfig(n_filters=4, ratios=[4, 4], dimension=8, lstm=0),
        bottleneck=KLBottleneckConfig(latent_dim=4))
    path = tmp_path_factory.mktemp("base") / "vae"
    VAEGANCodec(cfg).save_pretrained(path)
    return path


def tiny_task(corpus, base_dir, **codec) -> LatentRVQTask:
    codec_cfg = LatentRVQConfig(
        seanet=SEANetConfig(channels=4, n_filters=8, ratios=[5], dimension=16, lstm=1),
        quantizer=RVQConfig(dimension=16, n_q=2, bins=16, kmeans_iters=5, threshold_ema_dead_code=0.01), **codec)
    data = CodecDataConfig(source=str(corpus), min_segment=0.3, max_segment=0.5, valid_clips=2, sample_clips=1,
                           sample_seconds=0.5, fit_clips=2, fit_seconds=0.5)
    return LatentRVQTask(LatentRVQTaskConfig(base=str(base_dir), codec=codec_cfg, init_clips=2), data)


def test_task_fills_the_base_config_and_the_audio_format(corpus, base_dir):
    task = tiny_task(corpus, base_dir)
    cfg = task.config.codec
    assert cfg.base == VAEGANCodec.from_pretrained(base_dir).config and cfg.sample_rate == SR
    assert (task.channels, task.hop_length) == (1, 16 * 5)
    codec = LatentRVQCodec(cfg)
    assert codec.frame_rate == SR / 80 and codec.total_codebooks == 2 and codec.cardinality == 16


def test_config_validation(base_dir):
    base = VAEGANCodec.from_pretrained(base_dir).config
    with pytest.raises(ConfigError, match="latent size"):
        LatentRVQConfig(base=base, sample_rate=SR, seanet=SEANetConfig(channels=5, ratios=[5], dimension=128))
    with pytest.raises(ConfigError, match="sample_rate"):
        LatentRVQConfig(base=base, sample_rate=SR * 2, seanet=SEANetConfig(channels=4, ratios=[5], dimension=128))
    with pytest.raises(ConfigError, match="base"):
        LatentRVQCodec(LatentRVQConfig())
    with pytest.raises(ConfigError, match="discriminator"):
        LatentRVQConfig(loss=LatentRVQConfig().loss.replace(adv=1.0))


def test_base_is_a_wrong_kind_of_codec(corpus, tmp_path):
    other = tmp_path / "rvq"
    RVQCodec(RVQCodec.config_class(sample_rate=SR, seanet=SEANetConfig(n_filters=4, ratios=[4], dimension=8),
                                   quantizer=RVQConfig(dimension=8, n_q=1, bins=4))).save_pretrained(other)
    with pytest.raises(ConfigError, match="VAE-GAN"):
        tiny_task(corpus, other)


def test_training_learns_the_latents_keeps_the_base_frozen_and_exports(corpus, base_dir, tmp_path):
    task = tiny_task(corpus, base_dir)
    torch.manual_seed(0)
    model = task.build_model().train()
    codec = model.codec
    base_state = {k: v.clone() for k, v in codec.base.state_dict().items()}
    saved = VAEGANCodec.from_pretrained(base_dir).state_dict()
    assert all(torch.equal(base_state[k], saved[k]) for k in saved)  # base weights come from the bundle
    assert not codec.base.training and not any(p.requires_grad for p in codec.base.parameters())
    assert model.discriminator is None and model.phases == ("generator",)
    (spec,) = task.configure_optimizers(model, type("T", (), {"weight_decay": 0.0})())
    trainable = {id(p) for group in spec.params for p in group["params"]}
    assert not trainable & {id(p) for p in codec.base.parameters()}
    batch = torch.stack([task.build_valid_dataset()[i] for i in range(2)])
    opt = torch.optim.Adam([p for g in spec.params for p in g["params"]], lr=3e-3)
    losses = []
    for step in range(30):
        loss, logs = task.training_step(model, batch, step, "generator")
        assert "latent_mse" in logs and math.isfinite(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["latent_mse"])
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert all(torch.equal(v, base_state[k]) for k, v in codec.base.state_dict().items())

    out = tmp_path / "model"
    task.export(model, out)
    loaded = load_codec(out)
    assert isinstance(loaded, LatentRVQCodec) and loaded.is_discrete
    x = batch[:1, :, : int(0.4 * SR)]
    codes = loaded.encode(x, sample_rate=SR)
    assert codes.shape == (1, 2, loaded.num_frames(x.shape[-1])) and codes.dtype == torch.int64
    y = loaded.decode(codes, length=x.shape[-1])
    assert y.shape == x.shape and torch.isfinite(y).all()
    again = load_codec(out)
    assert torch.equal(again.decode(codes), loaded.decode(codes))  # self-contained: base weights inside
    loaded.set_num_codebooks(1)
    assert loaded.encode(x, sample_rate=SR).shape[1] == 1


def test_waveform_terms_render_through_the_frozen_decoder(corpus, base_dir):
    from tunecraft.modules.losses import CodecLossConfig

    loss = CodecLossConfig(l1=0.0, mel=0.0, mrstft=1.0, adv=0.0, feat=0.0, mrstft_fft_sizes=[128],
                           mrstft_hop_sizes=[32], mrstft_win_lengths=[128])
    task = tiny_task(corpus, base_dir, loss=loss)
    model = task.build_model().train()
    batch = torch.stack([task.build_valid_dataset()[i] for i in range(2)])
    loss_value, logs = task.training_step(model, batch, 0, "generator")
    assert "stft_sc" in logs and "latent_mse" in logs
    loss_value.backward()
    assert any(p.grad is not None for p in model.codec.decoder.parameters())


def test_recipe_holds_musicgens_token_layout():
    assert get_task_class("vae-gan-rvq") is LatentRVQTask
    if not (BUNDLES_DIR / "vae-gan" / "config.json").is_file():
        pytest.skip("the vae-gan bundle is not shipped in this checkout")
    recipe = load_recipe("vae-gan-rvq")
    cfg = recipe.task.config
    assert cfg.base == "vae-gan" and recipe.train.ema_decay == 0.0
    codec = LatentRVQCodec(cfg.codec)
    assert (codec.sample_rate, codec.frame_rate, codec.total_codebooks, codec.cardinality) == (24000, 50, 4, 2048)
