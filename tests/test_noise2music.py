"""Noise2Music (tunecraft.noise2music + tunecraft.systems.noise2music): the five stages' shapes,
conditioning augmentation, save/load, the cascade on a tiny random bundle (both paths, the CLI,
seeding, bad input) and a training smoke test of each ``n2m-*`` task through the harness."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tunecraft.audio import resampled_length
from tunecraft.cli import main
from tunecraft.diffusion import UNet1DConfig, text_dropout_mask
from tunecraft.errors import CheckpointError, ConfigError, InvalidInput, InvalidPrompt, TunecraftError
from tunecraft.noise2music import (
    STAGES_BY_NAME,
    ConditionAugmentConfig,
    DiffusionStage,
    MelConfig,
    SpectrogramGenerator,
    SpectrogramGeneratorConfig,
    SpectrogramVocoder,
    SpectrogramVocoderConfig,
    SRCascaderConfig,
    StageSampling,
    WaveformCascader,
    WaveformCascaderConfig,
    WaveformGenerator,
    WaveformGeneratorConfig,
    augment_condition,
    blur1d,
    blur2d,
    gaussian_kernels,
    load_stage,
    mel_frames,
)
from tunecraft.systems import load_system
from tunecraft.systems.noise2music import PATHS, Noise2Music

TINY = dict(channels=[8, 16, 16], blocks=[1, 1, 1], num_heads=2, norm_groups=4, embed_dim=16, kernel_size=3)
TINY_MEL = MelConfig(n_mels=16, n_fft=512, win_length=400)


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_configs() -> dict:
    """Test-sized configs of the five stages (text width 16, 3-level U-Nets, 16-bin mels)."""
    return {
        "waveform_generator": WaveformGeneratorConfig(  # with a beat clock and attribute tokens
            unet=UNet1DConfig(in_channels=1, cond_channels=4, text_dim=16, strides=[2, 2, 2], self_attention_levels=[2],
                              cross_attention_levels=[1, 2], **TINY),
            beat_rates=[1.0, 2.0], text_attributes=["bpm", "tonic", "mode"], key_profile=False, tonic_octaves=[],
            triad_octaves=[], chord_octaves=[], sampling=StageSampling(steps=3, cfg_scale=3.0,
                                                                         step_schedule="front-heavy")),
        "waveform_cascader": WaveformCascaderConfig(
            unet=UNet1DConfig(in_channels=1, cond_channels=1, text_dim=16, strides=[2, 2, 2],
                              self_attention_levels=[], cross_attention_levels=[2], **TINY),
            sampling=StageSampling(steps=2, step_schedule="front-heavy")),
        "spectrogram_generator": SpectrogramGeneratorConfig(  # without them (the paper's conditioning)
            mel=TINY_MEL, beat_rates=[], text_attributes=[], key_profile=False, key_prior=False, chord_mel=False,
            standardize=False, unet=UNet1DConfig(in_channels=16, text_dim=16, strides=[1, 2, 2], self_attention_levels=[2],
                              cross_attention_levels=[2], **TINY),
            sampling=StageSampling(steps=3, cfg_scale=2.0, step_schedule="back-heavy")),
        "spectrogram_vocoder": SpectrogramVocoderConfig(  # the paper's conditioning (options tested below)
            mel=TINY_MEL, griffin_lim_iters=0, residual=False, consistency_iters=0,
            unet=UNet1DConfig(in_channels=1, compressed_channels=16, strides=[4, 8, 5], self_attention_levels=[],
                              cross_attention_levels=[], **TINY),
            sampling=StageSampling(steps=2)),
        "sr_cascader": SRCascaderConfig(
            unet=UNet1DConfig(in_channels=1, cond_channels=1, strides=[2, 2, 2], self_attention_levels=[],
                              cross_attention_levels=[], **TINY),
            sampling=StageSampling(steps=2), residual=False),
    }


def perturb(stage: DiffusionStage, seed: int = 0, scale: float = 0.05) -> DiffusionStage:
    """Give the zero-initialised output layers non-zero weights so predictions depend on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in stage.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return stage.eval()


def tiny_stages(names=None) -> dict:
    configs = tiny_configs()
    return {n: perturb(STAGES_BY_NAME[n](configs[n]), seed=i) for i, n in enumerate(names or configs)}


@pytest.fixture(scope="module")
def stages() -> dict:
    return tiny_stages()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, stages) -> Path:
    root = tmp_path_factory.mktemp("n2m") / "bundle"
    Noise2Music(stages, sampling={"waveform_cascader": {"steps": 3}}, description="tiny random").save_pretrained(root)
    return root


# ---- stages: shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 37, 640])
def test_generator_shapes(stages, length):
    gen = stages["waveform_generator"]
    x = torch.randn(2, 1, length)
    with torch.no_grad():
        out = gen(x, torch.rand(2), text=["calm piano", "fast techno"], drop_text=torch.tensor([False, True]))
    assert out.shape == (2, 1, length)
    spec = stages["spectrogram_generator"]
    with torch.no_grad():
        out = spec(torch.randn(2, 16, length), torch.rand(2), text=["a", "b"])
    assert out.shape == (2, 16, length)
    g = torch.Generator().manual_seed(0)
    assert gen.generate(["calm piano"], length, steps=2, generator=g).shape == (1, 1, length)
    assert spec.generate(["calm piano"], length, steps=2, generator=g).shape == (1, 16, length)


@pytest.mark.parametrize("length", [1, 99, 1001, 4097])
def test_cascaders_are_fully_convolutional_on_odd_lengths(stages, length):
    casc, sr = stages["waveform_cascader"], stages["sr_cascader"]
    with torch.no_grad():
        assert casc(torch.randn(1, 1, length), torch.rand(1), cond=torch.randn(1, 1, length),
                    text=["piano"]).shape == (1, 1, length)
        assert sr(torch.randn(2, 1, length), torch.rand(2), cond=torch.randn(2, 1, length)).shape == (2, 1, length)
    g = torch.Generator().manual_seed(0)
    low = torch.randn(1, 1, length) * 0.1
    assert casc.generate(low, ["piano"], generator=g).shape == (1, 1, 5 * length)  # 3.2 -> 16 kHz
    out = sr.generate(low, generator=g)
    assert out.shape == (1, 1, resampled_length(length, 16000, 24000)) and bool(torch.isfinite(out).all())
    # no self-attention: a cascader trained on short crops runs on any length
    assert not casc.config.unet.self_attention_levels and not sr.config.unet.self_attention_levels


@pytest.mark.parametrize("frames", [1, 7, 50])
def test_vocoder_shapes_and_alignment(stages, frames):
    voc = stages["spectrogram_vocoder"]
    mel = torch.rand(2, 16, frames) * 2 - 1
    out = voc.generate(mel, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, frames * 160)
    with pytest.raises(InvalidInput):
        voc.generate(torch.rand(2, 15, frames))
    # training examples: T // hop frames, frame k centred on sample k * hop
    wav = torch.randn(1, 160 * frames) * 0.1
    ex = SpectrogramVocoder.prepare_example(voc.config, wav)
    assert ex["compressed"].shape == (16, frames) and ex["x0"].shape == (1, 160 * frames)
    assert float(ex["compressed"].min()) >= -1 and float(ex["compressed"].max()) <= 1


def test_vocoder_griffin_lim_conditioning():
    """griffin_lim_iters > 0: the Griffin-Lim estimate of the (augmented) spectrogram is stacked with
    x_t; it is a function of the spectrogram alone and has the audio's length."""
    cfg = tiny_configs()["spectrogram_vocoder"]
    with pytest.raises(ConfigError):  # the estimate needs a stacked input channel
        SpectrogramVocoderConfig(mel=TINY_MEL, unet=cfg.unet, griffin_lim_iters=4)
    with pytest.raises(ConfigError):
        SpectrogramVocoderConfig(mel=TINY_MEL, unet=cfg.unet, griffin_lim_iters=-1)
    unet = UNet1DConfig(**dict(cfg.unet.to_dict(), cond_channels=1))
    with pytest.raises(ConfigError):  # a stacked channel without the estimate
        SpectrogramVocoderConfig(mel=TINY_MEL, unet=unet, griffin_lim_iters=0, residual=False)
    voc = perturb(SpectrogramVocoder(SpectrogramVocoderConfig(mel=TINY_MEL, unet=unet, griffin_lim_iters=4,
                                                              residual=False, consistency_iters=0,
                                                              sampling=StageSampling(steps=2))))
    t = torch.arange(160 * 20) / 16000
    wav = (0.3 * torch.sin(2 * math.pi * 440.0 * t))[None]
    ex = SpectrogramVocoder.prepare_example(voc.config, wav)
    mel = ex["compressed"][None]
    est = voc.estimate(mel)
    assert est.shape == (1, 1, 160 * 20) and bool(torch.isfinite(est).all())
    assert set(ex) == {"x0", "compressed"}  # the estimate is derived in the model, not stored by the data
    inputs = voc.augment_aligned({"compressed": mel}, torch.Generator().manual_seed(0))
    assert set(inputs) == {"compressed", "cond"} and inputs["cond"].shape == (1, 1, 160 * 20)
    torch.testing.assert_close(inputs["cond"], voc.estimate(inputs["compressed"]))  # of the augmented mel
    out = voc.generate(mel.repeat(2, 1, 1), generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 160 * 20)
    loss, _ = voc.loss({"x0": ex["x0"][None].repeat(2, 1, 1), "compressed": mel.repeat(2, 1, 1)},
                       generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert bool(torch.isfinite(loss)) and voc.unet.parameters().__next__().grad is not None


def _twin(stage: DiffusionStage, **changes) -> DiffusionStage:
    """The same weights under a config with ``changes``."""
    import dataclasses

    other = type(stage)(dataclasses.replace(stage.config, **changes))
    other.load_state_dict(stage.state_dict())
    return other.eval()


def test_residual_vocoder_and_cascaders_work_relative_to_their_input():
    """residual = true: the diffusion models the target minus the deterministic input (the
    vocoder's Griffin-Lim estimate, a cascader's upsampled audio) and generation adds it back."""
    cfg = tiny_configs()["spectrogram_vocoder"]
    unet = UNet1DConfig(**dict(cfg.unet.to_dict(), cond_channels=1))
    with pytest.raises(ConfigError, match="residual needs griffin_lim_iters"):
        SpectrogramVocoderConfig(mel=TINY_MEL, unet=cfg.unet, griffin_lim_iters=0, residual=True)
    with pytest.raises(ConfigError, match="residual"):
        SRCascaderConfig(residual="yes")
    plain = perturb(SpectrogramVocoder(SpectrogramVocoderConfig(mel=TINY_MEL, unet=unet, griffin_lim_iters=4,
                                                                residual=False, consistency_iters=0,
                                                                sampling=StageSampling(steps=2))))
    res = _twin(plain, residual=True)
    t = torch.arange(160 * 20) / 16000
    wav = (0.3 * torch.sin(2 * math.pi * 440.0 * t))[None]
    ex = SpectrogramVocoder.prepare_example(plain.config, wav)
    mel = ex["compressed"][None]
    est = plain.estimate(mel)
    # loss: the residual model's loss on x0 is the plain model's loss on x0 - estimate (same draws)
    batch = {"x0": ex["x0"][None], "compressed": mel}
    moved = {"x0": ex["x0"][None] - est, "compressed": mel}
    no_aug = dict(noise_p=0.0, blur_p=0.0)
    res_na = _twin(res, augment=res.config.augment.replace(**no_aug))
    plain_na = _twin(plain, augment=plain.config.augment.replace(**no_aug))
    torch.testing.assert_close(res_na.loss(batch, generator=torch.Generator().manual_seed(3))[0],
                               plain_na.loss(moved, generator=torch.Generator().manual_seed(3))[0])
    # generation: the plain sample plus the estimate
    with torch.no_grad():
        a = res.generate(mel, generator=torch.Generator().manual_seed(0))
        b = plain.generate(mel, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, (b + est).clamp(-1, 1))
    # the same for the SR cascader: its sample is added to the FFT-upsampled input
    sr = tiny_stages(["sr_cascader"])["sr_cascader"]
    sr_res = _twin(sr, residual=True)
    low = 0.3 * torch.sin(2 * math.pi * 300.0 * torch.arange(1600) / 16000)[None, None]
    with torch.no_grad():
        a = sr_res.generate(low, generator=torch.Generator().manual_seed(0))
        b = sr.generate(low, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, (b + sr.upsample(low)).clamp(-1, 1))


def test_vocoder_consistency_projection():
    """consistency_iters > 0: the sample goes under the magnitudes its input spectrogram implies
    (phase from the sample), so its spectrogram is much nearer the input than the raw sample's."""
    cfg = tiny_configs()["spectrogram_vocoder"]
    with pytest.raises(ConfigError, match="consistency_iters"):
        SpectrogramVocoderConfig(mel=TINY_MEL, unet=cfg.unet, consistency_iters=-1)
    raw = perturb(SpectrogramVocoder(cfg))
    proj = _twin(raw, consistency_iters=8)
    t = torch.arange(160 * 40) / 16000
    wav = (0.3 * torch.sin(2 * math.pi * 440.0 * t))[None]
    mel = SpectrogramVocoder.prepare_example(cfg, wav)["compressed"][None]
    with torch.no_grad():
        a = raw.generate(mel, generator=torch.Generator().manual_seed(0))
        b = proj.generate(mel, generator=torch.Generator().manual_seed(0))
    assert b.shape == a.shape == (1, 1, 160 * 40)
    err = lambda w: float((mel_frames(w, cfg.mel)[..., 2:-2] - mel[..., 2:-2]).abs().mean())  # noqa: E731
    assert err(b) < 0.5 * err(a)


def test_spectral_loss_on_the_implied_clean_signal():
    """spectral_loss_weight > 0 adds a multi-resolution STFT loss between the x0 the model's output
    implies and the target; the x0 that the objective returns is exactly the implied one."""
    from tunecraft.diffusion.objectives import DiffusionObjective

    cfg = tiny_configs()["spectrogram_vocoder"]
    for bad in (-0.1, float("inf"), True, "1"):
        with pytest.raises(ConfigError):
            SpectrogramVocoderConfig(mel=TINY_MEL, unet=cfg.unet, spectral_loss_weight=bad)
    with pytest.raises(ConfigError, match="waveform stages"):
        tiny_configs()["spectrogram_generator"].replace(spectral_loss_weight=1.0)
    # the objective's implied x0: an oracle v output gives x0 back, for any t
    obj = DiffusionObjective("cosine", parameterization="v")
    x0 = torch.randn(3, 1, 64)
    noise = torch.randn(3, 1, 64)
    t = torch.tensor([0.1, 0.5, 0.9])
    oracle = lambda x, tt: obj.noisy_input(x0, tt, noise)[1]  # noqa: E731
    loss, x0_hat = obj.loss(oracle, x0, t=t, noise=noise, return_pred_x0=True)
    assert float(loss) < 1e-10
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    t = torch.arange(160 * 20) / 16000
    wav = (0.3 * torch.sin(2 * math.pi * 440.0 * t))[None]
    ex = SpectrogramVocoder.prepare_example(cfg, wav)
    batch = {"x0": ex["x0"][None].repeat(2, 1, 1), "compressed": ex["compressed"][None].repeat(2, 1, 1)}
    plain = perturb(SpectrogramVocoder(cfg.replace(objective=cfg.objective.replace(parameterization="v"))))
    spectral = SpectrogramVocoder(plain.config.replace(spectral_loss_weight=0.5))
    spectral.load_state_dict(plain.state_dict())
    assert set(spectral.state_dict()) == set(plain.state_dict())
    base, logs0 = plain.loss(batch, generator=torch.Generator().manual_seed(1))
    total, logs = spectral.loss(batch, generator=torch.Generator().manual_seed(1))
    assert "spectral_sc" not in logs0 and {"spectral_sc", "spectral_mag", "denoise"} <= set(logs)
    torch.testing.assert_close(logs["denoise"], base.detach())
    torch.testing.assert_close(total, base + 0.5 * (logs["spectral_sc"] + logs["spectral_mag"]))
    total.backward()
    assert all(p.grad is not None for p in spectral.unet.parameters() if p.requires_grad)


def test_default_configs_hold_the_paper_structure():
    """CPU defaults: the representations and sampling recipes of the paper; Table 8 via paper()."""
    g, c, s, v, r = (WaveformGeneratorConfig(), WaveformCascaderConfig(), SpectrogramGeneratorConfig(),
                     SpectrogramVocoderConfig(), SRCascaderConfig())
    assert g.sample_rate == 3200 and c.low_sample_rate == 3200 and c.sample_rate == 16000
    assert (r.low_sample_rate, r.sample_rate) == (16000, 24000)
    assert s.mel.n_mels == 80 and s.mel.frame_rate == 100
    # CPU generators use v-prediction (they read the prompt); paper() keeps the paper's objectives
    assert s.objective.parameterization == g.objective.parameterization == "v"
    # the CPU vocoder and both cascaders: v, residual (and the vocoder's Griffin-Lim options); the
    # paper's vocoder and waveform cascader have none of that
    assert v.objective.parameterization == r.objective.parameterization == c.objective.parameterization == "v"
    assert v.residual and r.residual and c.residual
    pc = WaveformCascaderConfig.paper()
    assert (pc.objective.parameterization, pc.residual) == ("eps", False)
    assert v.griffin_lim_iters > 0 and v.consistency_iters > 0 and v.unet.cond_channels == 1
    pv = SpectrogramVocoderConfig.paper()
    assert (pv.objective.parameterization, pv.residual, pv.griffin_lim_iters, pv.consistency_iters) == ("eps", False, 0, 0)
    assert pv.augment == ConditionAugmentConfig.vocoder() and pv.unet.cond_channels == 0
    ps = SpectrogramGeneratorConfig.paper()
    assert (ps.objective.parameterization, ps.objective.weighting) == ("eps", "sigma")
    assert WaveformGeneratorConfig.paper().objective.parameterization == "eps"
    assert v.unet.total_stride == v.mel.hop_length == 160 and v.unet.text_dim == 0 and r.unet.text_dim == 0
    assert (g.sampling.step_schedule, g.sampling.cfg_scale) == ("front-heavy", 10.0)
    assert (s.sampling.step_schedule, s.sampling.cfg_scale) == ("back-heavy", 5.0)
    assert g.text_dropout == 0.1 and c.augment.noise_t_max == 1.0 and v.augment.noise_t_max == 0.5
    assert v.augment.blur_2d and (v.augment.blur_size, v.augment.blur_sigma_max) == (5, 1.0)
    assert (c.augment.blur_size, c.augment.blur_sigma_min, c.augment.blur_sigma_max) == (10, 0.1, 5.0)
    paper = WaveformGeneratorConfig.paper()
    assert paper.unet.strides == [4] * 6 and paper.unet.channels == [256, 256, 512, 768, 1024, 1024]
    assert paper.sampling.steps == 1000


def test_config_validation():
    with pytest.raises(ConfigError):
        SpectrogramVocoderConfig(unet=UNet1DConfig(in_channels=1, compressed_channels=80, strides=[4, 4, 4, 4],
                                                   channels=[16, 32, 64, 128], norm_groups=8))  # stride 256 != hop
    with pytest.raises(ConfigError):
        SRCascaderConfig(unet=UNet1DConfig(in_channels=1, cond_channels=1, text_dim=8, **TINY, strides=[2, 2, 2]))
    with pytest.raises(ConfigError):
        WaveformGeneratorConfig(unet=UNet1DConfig(in_channels=1, **TINY, strides=[2, 2, 2]))  # no text
    with pytest.raises(ConfigError):
        StageSampling(step_schedule="sideways")
    with pytest.raises(ConfigError):
        ConditionAugmentConfig(noise_t_max=0.0)
    with pytest.raises(ConfigError):
        WaveformGenerator(WaveformCascaderConfig())


# ---- conditioning augmentation ----------------------------------------------------------------


def test_blur_kernels_and_blurs():
    k = gaussian_kernels(torch.tensor([0.1, 1.0, 5.0]), 10)
    torch.testing.assert_close(k.sum(1), torch.ones(3))
    torch.testing.assert_close(k, k.flip(1))  # symmetric about (size - 1) / 2
    assert float(k[0].max()) > 0.49 and float(k[2].max()) < 0.15  # sigma 0.1: two middle taps; 5: spread
    # one seeded signal in every row, so each row differs only by how much it is blurred
    x = torch.randn(1, 2, 101, generator=torch.Generator().manual_seed(0)).repeat(3, 1, 1)
    const = torch.full((3, 2, 101), 0.3)
    torch.testing.assert_close(blur1d(const, torch.tensor([0.1, 1.0, 5.0]), 10), const)
    y = blur1d(x, torch.tensor([0.1, 2.0, 5.0]), 10)
    assert y.shape == x.shape and float(y[2].std()) < float(y[1].std()) < float(x[1].std())
    spec = torch.rand(2, 16, 30) * 2 - 1
    z = blur2d(spec, torch.tensor([0.2, 1.0]), 5)
    assert z.shape == spec.shape and float((z[1] - spec[1]).abs().mean()) > float((z[0] - spec[0]).abs().mean())
    torch.testing.assert_close(blur2d(torch.full((2, 16, 30), -0.5), torch.tensor([0.2, 1.0]), 5),
                               torch.full((2, 16, 30), -0.5))


def test_augment_condition_probabilities_and_determinism(stages):
    sched = stages["waveform_cascader"].schedule
    c = torch.sin(torch.linspace(0, 60, 800)).repeat(64, 1, 1)
    off = ConditionAugmentConfig(noise_p=0.0, blur_p=0.0)
    assert torch.equal(augment_condition(c, off, sched), c)
    cfg = ConditionAugmentConfig()
    a = augment_condition(c, cfg, sched, torch.Generator().manual_seed(3))
    b = augment_condition(c, cfg, sched, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    changed = (a - c).abs().flatten(1).max(1).values > 1e-6
    assert 0.5 < float(changed.float().mean()) < 1.0  # 1 - 0.5 * 0.5 = 75 % expected
    noisy_only = augment_condition(c, ConditionAugmentConfig(noise_p=1.0, blur_p=0.0, noise_t_max=0.5), sched,
                                   torch.Generator().manual_seed(0))
    # t <= 0.5 under the cosine schedule keeps alpha >= cos(pi/4): the signal still dominates on average
    corr = torch.nn.functional.cosine_similarity(noisy_only.flatten(1), c.flatten(1)).mean()
    assert float(corr) > 0.7


def test_training_loss_and_text_dropout(stages):
    casc = stages["waveform_cascader"]
    ex = WaveformCascader.prepare_example(casc.config, torch.sin(torch.arange(1600) * 0.05)[None] * 0.5)
    # a 127 Hz tone survives the 3.2 kHz round trip (away from the crop edges, where the FFT wraps)
    torch.testing.assert_close(ex["cond"][:, 50:-50], ex["x0"][:, 50:-50], atol=0.02, rtol=0)
    batch = {"x0": torch.stack([ex["x0"]] * 4), "cond": torch.stack([ex["cond"]] * 4), "text": ["a"] * 4}
    loss, logs = casc.loss(batch, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and set(logs) <= {"loss_t_lo", "loss_t_hi"}
    loss.backward()
    assert casc.text.proj.weight.grad is not None  # the projection trains with the U-Net
    casc.zero_grad(set_to_none=True)
    with pytest.raises(InvalidInput):
        casc.loss({"x0": batch["x0"], "cond": batch["cond"], "text": ["a"]})


# ---- the generators' beat clock and attribute tokens (not in the paper) -------------------------


def test_beat_clock_and_attribute_config_validation():
    u = dict(in_channels=1, text_dim=16, strides=[2, 2, 2], self_attention_levels=[], cross_attention_levels=[2], **TINY)
    nokey = dict(key_profile=False, tonic_octaves=[], triad_octaves=[], chord_octaves=[])
    ok = WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=6, **u), beat_rates=[0.5, 1, 2], text_attributes=["mode"],
                                 **nokey)
    assert ok.beat_rates == [0.5, 1.0, 2.0] and ok.text_attributes == ["mode"]
    assert WaveformGeneratorConfig.from_dict(ok.to_dict()) == ok
    with pytest.raises(ConfigError, match="cond_channels must be 2 x len"):
        WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=2, **u), beat_rates=[0.5, 1, 2], **nokey)
    for bad in ([0.0], [-1.0], "1", [float("nan")], [True]):
        with pytest.raises(ConfigError, match="beat_rates"):
            WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=2, **u), beat_rates=bad, **nokey)
    with pytest.raises(ConfigError, match="text_attributes"):
        WaveformGeneratorConfig(unet=UNet1DConfig(**u), beat_rates=[], text_attributes=["genre"], **nokey)
    with pytest.raises(ConfigError, match="only the generators"):
        SRCascaderConfig(beat_rates=[1.0])
    with pytest.raises(ConfigError, match="text-conditioned"):
        SRCascaderConfig(text_attributes=["bpm"])
    # the CPU defaults have both, the paper's configs neither
    for cls in (WaveformGeneratorConfig, SpectrogramGeneratorConfig):
        assert cls().beat_rates and cls().text_attributes == ["bpm", "tonic", "mode"]
        assert cls().unet.cond_channels == cls().aligned_channels
        paper = cls.paper()
        assert paper.beat_rates == [] and paper.text_attributes == [] and paper.unet.cond_channels == 0


def test_beat_clock_values_offsets_and_prompts(stages):
    gen = stages["waveform_generator"]  # 3.2 kHz, rates [1, 2]
    texts = ["a march in C major, 120 bpm", "a waltz, 90 BPM", "no tempo stated"]
    clock = gen.beat_clock(texts, 4000, offsets=[0.0, 0.25, 0.0])
    assert clock.shape == (3, 4, 4000) and clock.dtype == torch.float32
    n = torch.arange(4000, dtype=torch.float64)
    for row, (bpm, off) in enumerate([(120.0, 0.0), (90.0, 0.25)]):
        phase = (off + n / 3200) * bpm / 60  # beats since the piece's first beat
        want = torch.stack([torch.sin(2 * math.pi * phase), torch.sin(4 * math.pi * phase),
                            torch.cos(2 * math.pi * phase), torch.cos(4 * math.pi * phase)]).float()
        torch.testing.assert_close(clock[row], want, atol=1e-5, rtol=0)
    assert torch.count_nonzero(clock[2]) == 0  # no tempo, no clock
    # a crop that starts 800 samples in carries the clock of those samples of the whole clip
    whole = gen.beat_clock(texts[:1], 4800)
    torch.testing.assert_close(gen.beat_clock(texts[:1], 4000, offsets=[0.25]), whole[..., 800:], atol=1e-5, rtol=0)
    assert stages["spectrogram_generator"].beat_clock(texts, 10) is None  # no clock configured
    # training examples carry their crop's offset, and the loss reads it
    batch = {"x0": torch.zeros(2, 1, 64), "text": texts[:2], "offset": torch.tensor([0.5, 0.0], dtype=torch.float64)}
    got = gen._training_aligned(batch, batch["x0"])["cond"]
    torch.testing.assert_close(got, gen.beat_clock(texts[:2], 64, offsets=[0.5, 0.0]))


def test_key_profile_and_tonic_reference():
    from tunecraft.modules.key import KK_MAJOR, KK_MINOR, key_profile, tonic_features, tonic_frequency, triad_features

    prof = key_profile([0, 9, 4, None, 2], ["major", "minor", "minor", "major", None])
    assert prof.shape == (5, 12) and prof.dtype == torch.float32
    assert torch.count_nonzero(prof[3:]) == 0  # no tonic or no mode: no profile
    for row, (tonic, table) in enumerate([(0, KK_MAJOR), (9, KK_MINOR), (4, KK_MINOR)]):
        t = torch.tensor(table, dtype=torch.float64)
        want = (t - t.mean()) / t.std(unbiased=False)
        for pc in range(12):  # pitch class pc is scale degree (pc - tonic) mod 12
            assert prof[row, pc].item() == pytest.approx(want[(pc - tonic) % 12].item(), abs=1e-6)
        assert prof[row].argmax().item() == tonic  # the tonic rates highest
        assert prof[row].mean().abs() < 1e-6 and prof[row].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InvalidInput, match="a key is"):
        key_profile([12], ["major"])
    assert tonic_frequency(9, 4) == pytest.approx(440.0) and tonic_frequency(0, 4) == pytest.approx(261.6256, abs=1e-3)
    feats = tonic_features([9, None], [3, 4], 3200.0, 800, start=[0.5, 0.0])
    assert feats.shape == (2, 4, 800) and torch.count_nonzero(feats[1]) == 0
    n = torch.arange(800, dtype=torch.float64)
    for i, f in enumerate((220.0, 440.0)):
        phase = 2 * math.pi * f * (0.5 + n / 3200)
        torch.testing.assert_close(feats[0, i], torch.sin(phase).float(), atol=1e-4, rtol=0)
        torch.testing.assert_close(feats[0, 2 + i], torch.cos(phase).float(), atol=1e-4, rtol=0)
    # the triad reference: the third by the mode, then the fifth, above the tonic of each octave
    tri = triad_features([0, 9, 11, None, 4], ["major", "minor", "major", "minor", None], [3, 4], 3200.0, 800)
    assert tri.shape == (5, 8, 800) and torch.count_nonzero(tri[3:]) == 0
    for row, (third, fifth) in enumerate([((4, 3), (7, 3)), ((12, 3), (16, 3)), ((15, 3), (18, 3))]):
        # C major: E3, G3 / A minor: C4, E4 / B major: D#4, F#4 (octave 3, then one octave up)
        for j, (pc, octave) in enumerate((third, fifth)):
            for k in range(2):
                f = tonic_frequency(pc, octave + k)
                phase = 2 * math.pi * f * n / 3200
                torch.testing.assert_close(tri[row, 4 * j + k], torch.sin(phase).float(), atol=1e-4, rtol=0)
                torch.testing.assert_close(tri[row, 4 * j + 2 + k], torch.cos(phase).float(), atol=1e-4, rtol=0)
    assert tonic_frequency(12, 3) == pytest.approx(tonic_frequency(0, 4))  # above B comes the next octave's C
    # C major and C minor differ in the third only; C major and A minor share E and differ in G / A
    cmaj, cmin = triad_features([0, 0], ["major", "minor"], [4], 3200.0, 800)
    assert not torch.allclose(cmaj[:2], cmin[:2]) and torch.equal(cmaj[2:], cmin[2:])
    with pytest.raises(InvalidInput, match="a key is"):
        triad_features([3], ["dorian"], [4], 3200.0, 8)


def test_generator_key_conditioning_config_and_channels():
    u = dict(in_channels=1, text_dim=16, strides=[2, 2, 2], self_attention_levels=[], cross_attention_levels=[2], **TINY)
    cfg = WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=4 + 12 + 4 + 4, **u), beat_rates=[1.0, 2.0],
                                  key_profile=True, tonic_octaves=[3, 4], triad_octaves=[4], chord_octaves=[],
                                  sampling=StageSampling(steps=2))
    assert cfg.aligned_channels == 24 and WaveformGeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="= 24, got 4"):
        WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=4, **u), beat_rates=[1.0, 2.0],
                                key_profile=True, tonic_octaves=[3, 4], triad_octaves=[4], chord_octaves=[])
    for name in ("tonic_octaves", "triad_octaves"):
        for bad in ([3, 3], [3.5], "3", [True], [12]):
            with pytest.raises(ConfigError, match=name):
                WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=2, **u), **{name: bad})
    nochords = dict(chord_octaves=[])
    with pytest.raises(ConfigError, match="tonic_octaves up to 7 reach 3951 Hz, above half"):  # B7 does not fit 3.2 kHz
        WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=2, **u), beat_rates=[], key_profile=False,
                                tonic_octaves=[7], triad_octaves=[], **nochords)
    # the triad reaches a fifth above B: octave 5 (F#6 = 1480 Hz) fits 3.2 kHz, octave 6 (2960 Hz) does not
    WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=4, **u), beat_rates=[], key_profile=False,
                            tonic_octaves=[], triad_octaves=[5], **nochords)
    with pytest.raises(ConfigError, match="triad_octaves up to 6 reach 2960 Hz, above half"):
        WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=4, **u), beat_rates=[], key_profile=False,
                                tonic_octaves=[], triad_octaves=[6], **nochords)
    with pytest.raises(ConfigError, match="above half"):  # a 100 frames/s spectrogram holds no tonic
        SpectrogramGeneratorConfig(mel=TINY_MEL, unet=UNet1DConfig(
            in_channels=16, cond_channels=2, text_dim=16, strides=[1, 2, 2], self_attention_levels=[],
            cross_attention_levels=[2], **TINY), beat_rates=[], key_profile=False, tonic_octaves=[2], chord_mel=False)
    with pytest.raises(ConfigError, match="key_profile must be"):
        WaveformGeneratorConfig(unet=UNet1DConfig(cond_channels=12, **u), beat_rates=[], key_profile=1, **nochords)
    with pytest.raises(ConfigError, match="only the generators"):
        SRCascaderConfig(key_profile=True)
    with pytest.raises(ConfigError, match="only the generators"):
        WaveformCascaderConfig(triad_octaves=[3])
    # the CPU defaults have the profile (and the waveform generator the tonic), the paper's configs neither
    assert WaveformGeneratorConfig().key_profile and WaveformGeneratorConfig().tonic_octaves == [2, 3, 4]
    assert WaveformGeneratorConfig().triad_octaves == [3, 4] and WaveformGeneratorConfig().chord_octaves == [3, 4]
    assert SpectrogramGeneratorConfig().chord_mel and SpectrogramGeneratorConfig().standardize
    assert SpectrogramGeneratorConfig().key_profile and SpectrogramGeneratorConfig().tonic_octaves == []
    assert SpectrogramGeneratorConfig().triad_octaves == []
    for paper in (WaveformGeneratorConfig.paper(), SpectrogramGeneratorConfig.paper()):
        assert not paper.key_profile and paper.tonic_octaves == paper.triad_octaves == [] and paper.aligned_channels == 0

    # a config stored before an option existed loads with that option off when its U-Net has no room for it
    for cls in (WaveformGeneratorConfig, SpectrogramGeneratorConfig):
        stored = cls().to_dict()
        for name in ("key_profile", "tonic_octaves", "triad_octaves", "chord_octaves", "chord_mel"):
            stored.pop(name, None)
        stored["unet"]["cond_channels"] = 10  # the beat clock only (session 10's generators)
        old = cls.from_dict(stored)
        assert not old.key_profile and old.tonic_octaves == old.triad_octaves == old.chord_octaves == []
        assert old.aligned_channels == 10
    stored = WaveformGeneratorConfig().to_dict()
    stored.pop("chord_octaves")
    assert WaveformGeneratorConfig.from_dict(stored).chord_octaves == [3, 4]  # room for it: the default
    stored["unet"]["cond_channels"] = 36  # session 12's waveform generator: no chord reference
    assert WaveformGeneratorConfig.from_dict(stored).chord_octaves == []
    stored.pop("triad_octaves")
    stored["unet"]["cond_channels"] = 28  # session 11's: neither the triad nor the chords
    old = WaveformGeneratorConfig.from_dict(stored)
    assert old.triad_octaves == old.chord_octaves == [] and old.tonic_octaves == [2, 3, 4]
    stored["unet"]["cond_channels"] = 30  # none of these: the mismatch is reported
    with pytest.raises(ConfigError, match="= 48, got 30"):
        WaveformGeneratorConfig.from_dict(stored)
    # the spectrogram generator's chord templates and standardisation likewise (its stored configs
    # before them: 22 channels, neither option)
    stored = SpectrogramGeneratorConfig().to_dict()
    stored.pop("chord_mel")
    stored.pop("standardize")
    new = SpectrogramGeneratorConfig.from_dict(stored)  # room for the templates: the defaults
    assert new.chord_mel and new.standardize
    stored["unet"]["cond_channels"] = 22
    old = SpectrogramGeneratorConfig.from_dict(stored)
    assert not old.chord_mel and not old.standardize and old.key_profile
    stored["chord_mel"] = True  # session 13's chord_mel runs: the templates, no standardisation
    stored["unet"]["cond_channels"] = 102
    old = SpectrogramGeneratorConfig.from_dict(stored)
    assert old.chord_mel and not old.standardize
    stored["unet"]["cond_channels"] = 30  # none of these: the mismatch is reported
    with pytest.raises(ConfigError, match="= 102, got 30"):
        SpectrogramGeneratorConfig.from_dict(stored)

    gen = perturb(WaveformGenerator(cfg), seed=5).eval()
    texts = ["a march in A minor, 120 bpm", "a waltz in D major", "no key, 90 bpm"]
    cond = gen.prompt_aligned(texts, 640, offsets=[0.0, 0.25, 0.0])
    assert cond.shape == (3, 24, 640)
    torch.testing.assert_close(cond[:, :4], gen.beat_clock(texts, 640, offsets=[0.0, 0.25, 0.0]))
    from tunecraft.modules.key import key_profile, tonic_features, triad_features

    want_prof = key_profile([9, 2, None], ["minor", "major", None])
    torch.testing.assert_close(cond[:, 4:16], want_prof.unsqueeze(-1).expand(-1, -1, 640))
    torch.testing.assert_close(cond[:, 16:20], tonic_features([9, 2, None], [3, 4], 3200.0, 640, [0.0, 0.25, 0.0]))
    torch.testing.assert_close(cond[:, 20:], triad_features([9, 2, None], ["minor", "major", None], [4], 3200.0, 640,
                                                            [0.0, 0.25, 0.0]))
    assert torch.count_nonzero(cond[2, 4:]) == 0  # no key stated
    # the key channels reach the output, and a dropped text drops them
    x = torch.randn(2, 1, 64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.5, 0.5])
    pair = ["a song in A minor", "a song in A minor"]
    with torch.no_grad():
        torch.nn.init.normal_(gen.unet.stem.weight)  # let the new channels matter
        real = gen(x, t, text=pair)
        other = gen(x, t, text=["a song in Eb major", "a song in Eb major"])
        assert not torch.allclose(real, other)
        drop = torch.tensor([True, False])
        dropped = gen(x, t, text=pair, drop_text=drop)
        torch.testing.assert_close(dropped[0], gen(x, t, text=pair, drop_text=drop, cond=torch.zeros(2, 24, 64))[0])
    out = gen.generate(texts[:1], 64, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 64) and torch.isfinite(out).all()


def test_spectrogram_key_prior_is_fitted_to_training_spectrograms_and_added_back(tmp_path):
    base = tiny_configs()["spectrogram_generator"]
    assert not base.key_prior and not SpectrogramGeneratorConfig().key_prior and not SpectrogramGeneratorConfig.paper().key_prior
    with pytest.raises(ConfigError, match="key_prior must be"):
        base.replace(key_prior="yes")
    stored = SpectrogramGeneratorConfig(key_prior=True).to_dict()
    stored.pop("key_prior")  # written before the option existed: off
    assert not SpectrogramGeneratorConfig.from_dict(stored).key_prior
    assert "key_prior_mean" not in SpectrogramGenerator(base).state_dict()  # off: no buffers, old weights load

    gen = SpectrogramGenerator(base.replace(key_prior=True)).train()
    assert gen.key_prior(["in C major"]).abs().sum() == 0  # nothing fitted yet: no prior
    g = torch.Generator().manual_seed(0)
    c_major, a_minor = torch.rand(16, generator=g) - 0.5, torch.rand(16, generator=g) - 0.5
    examples = []
    for _ in range(3):  # each key's prior is the mean over its examples' frames
        x0 = torch.stack([c_major, a_minor, torch.ones(16)])[..., None] + 0.1 * torch.randn(3, 16, 12, generator=g)
        examples += [(x0[0], ["a waltz in C major"]), (x0[1], ["no key here", "a song in A minor, 90 bpm"]),
                     (x0[2], ["a march, no key"])]
    assert gen.fit_key_prior(examples) == 6  # the march states no key: left out
    assert gen.key_prior_count[0] == 3 and gen.key_prior_count[9 + 12] == 3 and gen.key_prior_count.sum() == 6
    torch.testing.assert_close(gen.key_prior_mean[0], torch.stack([e[0].mean(-1) for e in examples[0::3]]).mean(0)
                               .double())
    overall = (gen.key_prior_mean[0] + gen.key_prior_mean[21]) / 2
    prior = gen.key_prior(["C major", "A minor", "no key", "D major"])
    assert prior.shape == (4, 16, 1)
    torch.testing.assert_close(prior[0, :, 0], (gen.key_prior_mean[0] - overall).float())
    torch.testing.assert_close(prior[0, :, 0], ((c_major - a_minor) / 2), atol=0.03, rtol=0)
    assert prior[2:].abs().sum() == 0  # no key stated, a key never seen: zero
    with pytest.raises(InvalidInput, match="n_mels, frames"):
        gen.fit_key_prior([(torch.zeros(8, 12), ["in C major"])])
    with pytest.raises(InvalidInput, match="no key prior"):
        SpectrogramGenerator(base).fit_key_prior(examples)
    # the loss is on x0 minus the prior (text dropped or not), which training does not move
    texts = ["a waltz in C major", "a song in A minor, 90 bpm"]
    counts = gen.key_prior_count.clone()
    x0 = torch.rand(2, 16, 12, generator=g) * 2 - 1
    with torch.no_grad():
        got, _ = gen.loss({"x0": x0, "text": texts[:2]}, generator=torch.Generator().manual_seed(1))
        r = torch.Generator().manual_seed(1)  # the same draws, in the loss's order
        drop = text_dropout_mask(2, base.text_dropout, generator=r)
        t = gen.objective.sample_t(2, generator=r)
        kw = dict(text=texts[:2], drop_text=drop)
        want = gen.objective.loss(lambda x, tt: gen(x, tt, **kw), x0 - gen.key_prior(texts[:2]), t=t, generator=r)
    assert torch.equal(gen.key_prior_count, counts)
    torch.testing.assert_close(got, want)
    # generation adds the prior back: same seed, the outputs differ by it (within the clip range)
    gen.eval()
    with torch.no_grad():
        out = gen.generate(["a song in C major"], 12, steps=2, generator=torch.Generator().manual_seed(4))
        gen.key_prior_count.zero_()
        plain = gen.generate(["a song in C major"], 12, steps=2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, (plain + prior[:1]).clamp(-1, 1))
    gen.key_prior_count.copy_(counts)
    # the means travel with the weights (float64 buffers, also in a float16 export)
    path = gen.save_pretrained(tmp_path / "gen", dtype="float16")
    back = SpectrogramGenerator.from_pretrained(path)
    assert back.key_prior_mean.dtype == torch.float64 and torch.equal(back.key_prior_mean, gen.key_prior_mean)
    torch.testing.assert_close(back.key_prior(["C major"]), prior[:1])


@pytest.mark.parametrize("name", ["spectrogram_generator", "waveform_generator"])
def test_generator_standardisation_is_fitted_undone_and_saved(tmp_path, name):
    base = tiny_configs()[name]
    cls = STAGES_BY_NAME[name]
    assert not base.standardize and not type(base).paper().standardize
    assert type(base)().standardize == (name == "spectrogram_generator")  # the CPU defaults
    with pytest.raises(ConfigError, match="standardize must be"):
        base.replace(standardize=1)
    with pytest.raises(ConfigError, match="only the generators"):
        tiny_configs()["sr_cascader"].replace(standardize=True)
    stored = base.replace(standardize=True).to_dict()
    stored.pop("standardize")  # written before the option existed: off, and no buffers
    assert not type(base).from_dict(stored).standardize and "data_std" not in cls(base).state_dict()

    gen = cls(base.replace(standardize=True)).train()
    c = base.unet.in_channels
    with pytest.raises(InvalidInput, match="never set"):
        gen.loss({"x0": torch.zeros(1, c, 16), "text": ["x"]})
    g = torch.Generator().manual_seed(0)
    offsets = torch.linspace(-0.5, 0.3, c)[:, None]
    examples = [offsets + 0.2 * torch.randn(c, 40, generator=g) for _ in range(5)]
    assert gen.fit_standardization(examples) == 5
    data = torch.cat(examples, -1).double()
    torch.testing.assert_close(gen.data_mean, data.mean(-1))
    torch.testing.assert_close(gen.data_std, (data - data.mean(-1, keepdim=True)).pow(2).mean().sqrt())
    x = torch.stack(examples[:2])
    z = gen.to_diffusion(x)
    assert abs(float(z.std()) - 1.0) < 0.1 and abs(float(z.mean())) < 0.1
    torch.testing.assert_close(gen.from_diffusion(z), x)
    with pytest.raises(InvalidInput, match=r"\[%d, T\]" % c):
        gen.fit_standardization([torch.zeros(c + 1, 4)])
    with pytest.raises(InvalidInput, match="constant"):
        cls(base.replace(standardize=True)).fit_standardization([torch.ones(c, 4)])
    # the loss is the plain loss on the standardised target
    texts = ["a waltz in C major", "a song in A minor, 90 bpm"]
    with torch.no_grad():
        got, _ = gen.loss({"x0": x, "text": texts}, generator=torch.Generator().manual_seed(1))
        r = torch.Generator().manual_seed(1)  # the same draws, in the loss's order
        drop = text_dropout_mask(2, base.text_dropout, generator=r)
        t = gen.objective.sample_t(2, generator=r)
        kw = dict(text=texts, drop_text=drop)
        want = gen.objective.loss(lambda xx, tt: gen(xx, tt, **kw), z, t=t, generator=r)
    torch.testing.assert_close(got, want)
    # generation undoes it, clamped to the data range; the sampler clips at the widest channel's bound
    gen = perturb(gen)
    assert gen._diffusion_clip() == pytest.approx((1.0 + float(gen.data_mean.abs().max())) / float(gen.data_std))
    assert abs(float(gen.data_mean.abs().max()) - 0.5) < 0.1
    with torch.no_grad():
        out = gen.generate(texts[:1], 40, steps=2, generator=torch.Generator().manual_seed(4))
        cond = gen.prompt_aligned(texts[:1], 40)  # the beat clock of the waveform generator; None here
        raw = gen.sample((1, c, 40), text=texts[:1], cond=cond, steps=2, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, gen.from_diffusion(raw).clamp(-1, 1))
    # the statistics travel with the weights (float64 buffers, also in a float16 export)
    back = cls.from_pretrained(gen.save_pretrained(tmp_path / "gen", dtype="float16"))
    assert back.data_std.dtype == torch.float64 and torch.equal(back.data_std, gen.data_std)
    assert torch.equal(back.data_mean, gen.data_mean)


def test_beat_clock_goes_with_the_text(stages):
    gen = stages["waveform_generator"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 96, generator=g)
    t = torch.tensor([0.4, 0.7])
    texts = ["a song in E minor, 100 bpm", "a song in E minor, 140 bpm"]
    with torch.no_grad():
        both = gen(x, t, text=texts)
        # strings without cond: the stage makes the clock itself
        torch.testing.assert_close(both, gen(x, t, text=texts, cond=gen.beat_clock(texts, 96)))
        # the clock matters, and a dropped text drops it: the row equals one without any clock
        assert not torch.allclose(both, gen(x, t, text=texts, cond=torch.zeros(2, 4, 96)))
        drop = torch.tensor([True, False])
        dropped = gen(x, t, text=texts, drop_text=drop)
        without = gen(x, t, text=texts, drop_text=drop, cond=torch.zeros(2, 4, 96))
        torch.testing.assert_close(dropped[0], without[0])
        torch.testing.assert_close(dropped[1], both[1])
        # the same text states with another tempo's clock: another prediction
        states = gen.encode_text(texts[:1])
        assert not torch.allclose(gen(x[:1], t[:1], text=states, cond=gen.beat_clock(texts[1:], 96)), both[:1])
    with pytest.raises(InvalidInput, match="aligned conditioning from its prompt"):
        gen(x, t, text=gen.encode_text(texts))  # states alone cannot say the tempo


def test_attribute_tokens_reach_the_generator(stages):
    gen = stages["waveform_generator"]
    prompts = ["a song in E minor, 100 bpm", "a song"]
    states = gen.encode_text(prompts)
    words = gen.text.project(gen.text.encoder.encode(prompts))
    # three tokens (tempo, tonic, mode) after the text; masked out for a prompt that states nothing
    assert states.states.shape[1] == words.states.shape[1] + 3
    assert states.mask[:, -3:].tolist() == [[True, True, True], [False, False, False]]
    torch.testing.assert_close(states.states[:, :-3], words.states)
    x = torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(1))
    no_clock = torch.zeros(1, 4, 64)
    with torch.no_grad():
        minor = gen(x, 0.5, text=["a song in E minor"], cond=no_clock)
        major = gen(x, 0.5, text=["a song in E major"], cond=no_clock)
        assert not torch.allclose(minor, major)
        # dropped with the text: the null condition is the same whatever the prompt states
        drop = torch.tensor([True])
        torch.testing.assert_close(gen(x, 0.5, text=["a song in E minor"], cond=no_clock, drop_text=drop),
                                   gen(x, 0.5, text=["a song in E major"], cond=no_clock, drop_text=drop))


# ---- save / load ------------------------------------------------------------------------------


def test_stage_round_trip_in_float16(tmp_path, stages):
    for name, stage in stages.items():
        d = stage.save_pretrained(tmp_path / name)
        meta = json.loads((d / "config.json").read_text())
        assert meta["class"] == stage.CLASS_NAME and meta["dtype"] == "float16" and meta["stage"] == name
        loaded = load_stage(d)
        assert type(loaded) is type(stage) and loaded.config == stage.config
        for key, value in stage.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value.half().float()), key
    with pytest.raises(CheckpointError):
        WaveformGenerator.from_pretrained(tmp_path / "sr_cascader")  # wrong class
    (tmp_path / "sr_cascader" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_stage(tmp_path / "sr_cascader")


# ---- the system -------------------------------------------------------------------------------


def test_bundle_generates_both_paths_at_24khz(bundle, tmp_path):
    n2m = load_system(str(bundle))
    assert isinstance(n2m, Noise2Music) and n2m.sample_rate == 24000 and set(n2m.paths) == set(PATHS)
    assert n2m.default_path == "waveform" and n2m.stage_options("waveform")["waveform_cascader"]["steps"] == 3
    for path, duration in (("waveform", 0.5), ("spectrogram", 0.37)):
        wav, sr = n2m.generate(["calm piano in C major"], duration=duration, seed=0, path=path)
        assert sr == 24000 and wav.shape == (1, 1, round(duration * 24000))
        assert bool(torch.isfinite(wav).all()) and float(wav.abs().max()) <= 1.0
    outs = n2m.generate_stages(["a", "b"], duration=0.2, seed=1, path="spectrogram")
    assert list(outs) == list(PATHS["spectrogram"])
    assert outs["spectrogram_generator"].shape == (2, 16, 20)
    assert outs["spectrogram_vocoder"].shape == (2, 1, 3200) and outs["sr_cascader"].shape == (2, 1, 4800)
    keep = tmp_path / "stages"
    n2m.generate("calm piano", duration=0.25, seed=2, keep_stages=keep)
    names = sorted(p.name for p in keep.iterdir())
    assert names == ["calm_piano_1_waveform_generator_3200hz.wav", "calm_piano_2_waveform_cascader_16000hz.wav",
                     "calm_piano_3_sr_cascader_24000hz.wav"]
    assert sf.info(keep / names[0]).samplerate == 3200 and sf.info(keep / names[0]).frames == 800


def test_shipped_noise2music_tiny_generates_both_paths_offline(tmp_path):
    """The shipped bundle: both paths, the generators with the prompt's beat clock and key signals,
    24 kHz audio from the CLI (short clips and few steps to keep the suite fast)."""
    from tunecraft.systems import list_systems

    info = {s.name: s for s in list_systems()}["noise2music-tiny"]
    assert info.system == "noise2music"
    n2m = load_system("noise2music-tiny")
    assert set(n2m.paths) == set(PATHS) and n2m.default_path == "spectrogram" and n2m.sample_rate == 24000
    gens = {name: n2m.stages[name] for name in ("waveform_generator", "spectrogram_generator")}
    assert all(g.config.beat_rates and g.config.key_profile for g in gens.values())
    assert gens["waveform_generator"].config.tonic_octaves == [2, 3, 4]
    assert gens["waveform_generator"].config.triad_octaves == [3, 4]
    # the waveform generator follows a chord plan and samples with fact guidance (the bundle's setting)
    assert gens["waveform_generator"].config.chord_octaves == [3, 4] and gens["waveform_generator"].has_chords
    assert n2m.stage_options("waveform")["waveform_generator"]["fact_guidance"] == 3
    plans = n2m.harmony_plans(["a gentle folk song in E minor with acoustic guitar, 96 bpm"], 10.0, seed=0,
                              path="waveform")
    assert plans[0][0][1].startswith("Em") and plans[0][-1][1].startswith("Em")
    for path in PATHS:
        out = tmp_path / f"{path}.wav"
        assert main(["generate", "a gentle folk song in E minor with acoustic guitar, 96 bpm", "--system",
                     "noise2music-tiny", "--path", path, "--duration", "1", "--steps", "4", "--seed", "0",
                     "-o", str(out), "-q"]) == 0
        data, sr = sf.read(out)
        assert sr == 24000 and data.shape[0] == 24000 and np.isfinite(data).all() and np.abs(data).max() > 1e-3


def test_same_seed_is_bit_identical_and_overrides_apply(bundle):
    n2m = Noise2Music.from_pretrained(bundle)
    for path in PATHS:
        a, _ = n2m.generate(["slow jazz"], duration=0.3, seed=7, path=path)
        b, _ = n2m.generate(["slow jazz"], duration=0.3, seed=7, path=path)
        c, _ = n2m.generate(["slow jazz"], duration=0.3, seed=8, path=path)
        assert torch.equal(a, b) and not torch.equal(a, c)
    opts = n2m.stage_options("waveform", steps=4, cfg_scale={"waveform_cascader": 2.0}, eta={"sr_cascader": 1.0},
                             step_schedule="uniform")
    assert opts["waveform_generator"]["steps"] == 4 and opts["waveform_generator"]["step_schedule"] == "uniform"
    assert opts["waveform_cascader"]["cfg_scale"] == 2.0 and opts["waveform_cascader"]["steps"] == 3
    assert opts["sr_cascader"]["eta"] == 1.0 and opts["waveform_generator"]["cfg_scale"] == 3.0
    stochastic, _ = n2m.generate(["slow jazz"], duration=0.3, seed=7, eta={"sr_cascader": 1.0}, steps=2)
    again, _ = n2m.generate(["slow jazz"], duration=0.3, seed=7, eta={"sr_cascader": 1.0}, steps=2)
    assert torch.equal(stochastic, again)


def test_progress_bar_per_stage_on_a_terminal(bundle, monkeypatch):
    import io
    import sys

    class FakeTTY(io.StringIO):
        def isatty(self):
            return True

    fake = FakeTTY()
    monkeypatch.setattr(sys, "stderr", fake)
    n2m = Noise2Music.from_pretrained(bundle)
    n2m.generate(["calm piano"], duration=0.1, seed=0, path="spectrogram", progress=True)
    text = fake.getvalue()
    for title in ("spectrogram generator (1/3)", "vocoder (2/3)", "super-resolution (3/3)"):
        assert title in text
    fake.truncate(0)
    n2m.generate(["calm piano"], duration=0.1, seed=0, progress=False)
    assert fake.getvalue().strip("\x00") == ""


@pytest.mark.parametrize("kwargs,error", [
    (dict(descriptions=[""]), InvalidPrompt),
    (dict(descriptions=["ok", "  "]), InvalidPrompt),
    (dict(duration=0.0), InvalidInput),
    (dict(duration=-1.0), InvalidInput),
    (dict(cfg_scale=-1.0), InvalidInput),
    (dict(cfg_scale={"waveform_cascader": -2.0}), InvalidInput),
    (dict(steps=0), InvalidInput),
    (dict(path="midi"), InvalidInput),
    (dict(step_schedule="sideways"), InvalidInput),
    (dict(eta={"vocoder": 0.5}), InvalidInput),
    (dict(steps={"spectrogram_vocoder": 3}), InvalidInput),  # not a stage of the waveform path
    (dict(seed=-1), InvalidInput),
    (dict(temperature=1.0), InvalidInput),
    (dict(keep_stages=__file__), InvalidInput),  # a file, not a directory
    (dict(steps={"sr_cascader": "many"}), InvalidInput),
    (dict(cfg_scale={"waveform_generator": "high"}), InvalidInput),
])
def test_bad_input_raises_tunecraft_errors(bundle, kwargs, error):
    n2m = Noise2Music.from_pretrained(bundle)
    args = dict(descriptions=["calm piano"], duration=0.2, seed=0)
    args.update(kwargs)
    with pytest.raises(error) as info:
        n2m.generate(**args)
    assert isinstance(info.value, TunecraftError) and "\n" not in str(info.value)


def test_partial_and_broken_bundles(tmp_path, stages):
    wave_only = Noise2Music({k: stages[k] for k in PATHS["waveform"]}).save_pretrained(tmp_path / "wave")
    n2m = Noise2Music.from_pretrained(wave_only)
    assert n2m.paths == ["waveform"]
    with pytest.raises(InvalidInput, match="no spectrogram path"):
        n2m.generate(["x"], duration=0.1, path="spectrogram")
    with pytest.raises(ConfigError):
        Noise2Music({"waveform_generator": stages["waveform_generator"]})  # no SR cascader
    with pytest.raises(ConfigError):
        Noise2Music({"sr_cascader": stages["waveform_cascader"]})
    spec = Noise2Music.assemble(tmp_path / "spec", {k: wave_only / k for k in ("sr_cascader",)} | {
        k: stages[k].save_pretrained(tmp_path / "dirs" / k) for k in ("spectrogram_generator", "spectrogram_vocoder")})
    assert Noise2Music.from_pretrained(spec).paths == ["spectrogram"]
    cfg = json.loads((wave_only / "config.json").read_text())
    for broken in ({**cfg, "system": "musicgen"}, {**cfg, "stages": {**cfg["stages"], "sr_cascader": "missing"}},
                   {**cfg, "format_version": 99}, {**cfg, "extra": 1},
                   {**cfg, "stages": {**cfg["stages"], "sr_cascader": "waveform_cascader"}}):
        (wave_only / "config.json").write_text(json.dumps(broken))
        with pytest.raises(CheckpointError):
            Noise2Music.from_pretrained(wave_only)


def _one_line_error(code, err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0].lower()


def test_cli_generates_with_both_paths_and_reports_bad_input(bundle, tmp_path, capsys):
    out = tmp_path / "out.wav"
    keep = tmp_path / "keep"
    code = main(["generate", "calm piano", "--system", str(bundle), "--duration", "0.5", "--seed", "1",
                 "--path", "spectrogram", "--keep-stages", str(keep), "-o", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    info = sf.info(out)
    assert info.samplerate == 24000 and info.frames == 12000 and info.channels == 1
    assert sorted(p.suffix for p in keep.iterdir()) == [".npy", ".wav", ".wav"]
    assert np.load(next(keep.glob("*.npy"))).shape == (16, 50)
    code = main(["generate", "calm piano", "--system", str(bundle), "--duration", "0.3", "--seed", "1",
                 "-o", str(tmp_path / "wave.wav"), "-q", "--steps", "2", "--cfg", "1.5", "--step-schedule",
                 "back-heavy", "--eta", "0.5"])
    assert code == 0 and sf.info(tmp_path / "wave.wav").frames == 7200
    capsys.readouterr()
    for argv, needles in (
        (["generate", "", "--system", str(bundle)], ["empty prompt"]),
        (["generate", "x", "--system", str(bundle), "--duration", "0"], ["duration"]),
        (["generate", "x", "--system", str(bundle), "--cfg", "-1"], ["cfg_scale"]),
        (["generate", "x", "--system", str(bundle), "--path", "midi", "-o", str(tmp_path / "y.wav")], ["path"]),
        (["generate", "x", "--system", str(bundle), "--step-schedule", "sideways", "-o", str(tmp_path / "y.wav")],
         ["schedule"]),
        (["generate", "x", "--system", str(bundle), "--eta", "2", "-o", str(tmp_path / "y.wav")], ["eta"]),
        (["generate", "x", "--system", str(bundle), "--top-k", "5", "-o", str(tmp_path / "y.wav")], ["top_k"]),
    ):
        code = main(argv)
        _one_line_error(code, capsys.readouterr().err, *needles)


# ---- training tasks through the harness -------------------------------------------------------

TASKS = {
    "n2m-wave-generator": "waveform_generator",
    "n2m-wave-cascader": "waveform_cascader",
    "n2m-spec-generator": "spectrogram_generator",
    "n2m-vocoder": "spectrogram_vocoder",
    "n2m-sr-cascader": "sr_cascader",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from tunecraft.data.synth import synthesize_corpus

    root = tmp_path_factory.mktemp("corpus")
    synthesize_corpus(root, n=6, duration=1.0, seed=2, sample_rate=24000, splits={"train": 0.6, "valid": 0.4},
                      quiet=True)
    return root


def _toml(d: dict, name: str) -> str:
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"[{name}]"] + [f"{k} = {value(v)}" for k, v in d.items() if v is not None and not isinstance(v, dict)]
    tables = [_toml(v, f"{name}.{k}") for k, v in d.items() if isinstance(v, dict)]
    return "\n".join(lines) + "\n\n" + "\n".join(tables)


def test_recipes_hold_the_cpu_defaults():
    from tunecraft.train import get_task_class, list_tasks, load_recipe

    assert set(TASKS) <= set(list_tasks())
    for task_name, stage_name in TASKS.items():
        recipe = load_recipe(task_name)
        cls = get_task_class(task_name)
        assert type(recipe.task) is cls and cls.stage_class is STAGES_BY_NAME[stage_name]
        assert recipe.task.config == cls.config_class() and recipe.task.data == cls.data_config_class()
        assert recipe.task.data.source == "data/synth" and recipe.train.ema_decay > 0


def _crop(task_name: str) -> float:
    return 0.2 if TASKS[task_name].startswith("spectrogram_gen") or task_name == "n2m-wave-generator" else 0.1


def _train_tiny(task_name: str, corpus: Path, tmp_path: Path, run_dir: Path):
    """2 steps of ``task_name`` with the tiny stage config into ``run_dir``."""
    from tunecraft.train import get_task_class, run_recipe

    cls = get_task_class(task_name)
    task_cfg = {"name": task_name, **cls.config_class(model=tiny_configs()[TASKS[task_name]], sample_steps=2,
                                                      sample_seconds=0.25).to_dict()}
    data = cls.data_config_class(source=str(corpus), crop_seconds=_crop(task_name), valid_clips=2).to_dict()
    train = dict(steps=2, batch_size=2, lr=1e-3, log_every=1, valid_every=2, valid_batches=1, sample_every=2,
                 ckpt_every=2, ema_decay=0.5)
    recipe = tmp_path / f"{task_name}.toml"
    recipe.write_text(_toml(task_cfg, "task") + "\n" + _toml(data, "data") + "\n" + _toml(train, "train"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_recipe(str(recipe), out_dir=run_dir, quiet=True)


@pytest.mark.parametrize("task_name", list(TASKS))
def test_task_trains_samples_and_exports(task_name, corpus, tmp_path):
    from tunecraft.train import get_task_class

    cls = get_task_class(task_name)
    crop = _crop(task_name)
    result = _train_tiny(task_name, corpus, tmp_path, tmp_path / "run")
    assert result.finished and result.export_dir is not None and math.isfinite(result.metrics["loss"])
    stage = load_stage(result.export_dir)
    assert isinstance(stage, cls.stage_class) and stage.config == tiny_configs()[TASKS[task_name]]
    assert json.loads((result.export_dir / "config.json").read_text())["dtype"] == "float16"
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").rglob("*.wav"))
    assert samples, "sample() logged no audio"
    # one training example has the stage's layout, its crop a multiple of the alignment
    task = cls(cls.config_class(model=tiny_configs()[TASKS[task_name]]), cls.data_config_class(source=str(corpus),
                                                                                              crop_seconds=crop))
    item = task.build_train_dataset()[0]
    assert set(item) == {"x0", *cls.stage_class.aligned_keys, "text", "index", "offset"}
    rate = cls.stage_class.data_sample_rate(task.model_config)
    multiple = cls.stage_class.crop_multiple(task.model_config)
    if item["x0"].shape[0] == 1:
        assert item["x0"].shape[-1] % multiple == 0 and item["x0"].shape[-1] <= crop * rate
    assert (item["text"] != "") == stage.uses_text


def test_spectrogram_key_prior_is_set_from_the_training_data_before_the_first_step(corpus, tmp_path, monkeypatch):
    from tunecraft.train import get_task_class, run_recipe

    cls = get_task_class("n2m-spec-generator")
    model = tiny_configs()["spectrogram_generator"].replace(key_prior=True)
    task_cfg = {"name": "n2m-spec-generator", **cls.config_class(model=model, sample_steps=2,
                                                                  sample_seconds=0.25).to_dict()}
    data = cls.data_config_class(source=str(corpus), crop_seconds=0.2, valid_clips=0)
    train = dict(steps=4, batch_size=2, lr=1e-3, log_every=1, valid_every=0, sample_every=0, ckpt_every=2,
                 ema_decay=0.5, max_steps_this_run=2)
    recipe = tmp_path / "spec.toml"
    recipe.write_text(_toml(task_cfg, "task") + "\n" + _toml(data.to_dict(), "data") + "\n" + _toml(train, "train"))
    # what the task should compute: every training file's first (deterministic) crop, keyed by its captions
    task = cls(cls.config_class(model=model), data)
    ds = task.build_train_dataset()
    fixed = task._dataset(ds.metas, ds.captions, random=False)
    want = SpectrogramGenerator(model)
    counted = want.fit_key_prior((fixed[i]["x0"], fixed.captions[i]) for i in range(len(fixed)))
    assert counted > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_recipe(str(recipe), out_dir=tmp_path / "run", quiet=True)
        ckpt = torch.load(tmp_path / "run" / "checkpoints" / "step-00000002.pt", weights_only=False)
        for part in ("model", "ema"):  # the EMA copy carries the same buffers
            assert torch.equal(ckpt[part]["key_prior_mean"], want.key_prior_mean)
            assert torch.equal(ckpt[part]["key_prior_count"], want.key_prior_count)
        # a resumed run keeps the prior of its checkpoint: it does not fit it again
        monkeypatch.setattr(SpectrogramGenerator, "fit_key_prior", lambda *a, **k: pytest.fail("fitted on resume"))
        result = run_recipe(str(recipe), out_dir=tmp_path / "run", quiet=True, resume=True,
                            overrides=["train.max_steps_this_run=0"])
    stage = load_stage(result.export_dir)
    assert torch.equal(stage.key_prior_mean, want.key_prior_mean) and int(stage.key_prior_count.sum()) == counted


def test_assemble_cli_from_model_and_run_directories(stages, corpus, tmp_path, capsys):
    from tunecraft.noise2music.assemble import RECIPE_STAGES

    assert RECIPE_STAGES == TASKS
    runs = tmp_path / "runs"
    for recipe, name in TASKS.items():
        if name != "sr_cascader":
            stages[name].save_pretrained(runs / recipe)  # model directories
    # the SR cascader from a training run: its newest checkpoint is exported on the fly
    result = _train_tiny("n2m-sr-cascader", corpus, tmp_path, runs / "n2m-sr-cascader")
    out = tmp_path / "bundle"
    assert main(["assemble", "noise2music", str(out), "--runs", str(runs), "--sampling", "waveform_cascader.steps=3",
                 "--sampling", "spectrogram_generator.step_schedule=uniform", "--default-path", "spectrogram",
                 "--description", "tiny test bundle", "-q"]) == 0
    system = Noise2Music.from_pretrained(out)
    assert sorted(system.stages) == sorted(TASKS.values()) and system.default_path == "spectrogram"
    assert system.sampling == {"waveform_cascader": {"steps": 3}, "spectrogram_generator": {"step_schedule": "uniform"}}
    trained = load_stage(result.export_dir).state_dict()
    assert all(torch.equal(a, trained[k]) for k, a in system.stages["sr_cascader"].state_dict().items())
    wav, sr = system.generate("calm piano", duration=0.2, seed=0, steps={"spectrogram_generator": 2,
                                                                          "spectrogram_vocoder": 2, "sr_cascader": 2})
    assert sr == 24000 and wav.shape == (1, 1, 4800) and torch.isfinite(wav).all()
    capsys.readouterr()
    for argv, needle in (
        (["--stage", "bogus=x"], "unknown stage"),
        (["--stage", f"waveform_generator={runs / 'n2m-wave-generator'}"], "sr_cascader"),
        (["--stage", f"sr_cascader={tmp_path / 'missing'}"], "does not exist"),
        (["--runs", str(runs), "--sampling", "steps=3"], "stage.key=value"),
        ([], "no stages"),
    ):
        assert main(["assemble", "noise2music", str(tmp_path / "bad"), *argv]) == 2, argv
        _one_line_error(2, capsys.readouterr().err, needle)


def test_mel_frames_alignment():
    mel = MelConfig()
    wav = torch.zeros(1, 16000)
    wav[0, 8000:] = 0.5 * torch.sin(torch.arange(8000) * 2 * math.pi * 440 / 16000)
    spec = mel_frames(wav[0], mel)
    assert spec.shape == (80, 100)
    loudest = spec.max(0).values  # frame k is centred on sample 160 k and spans +-320 samples
    assert float(loudest[:48].max()) == -1.0 and float(loudest[52:].min()) > 0.0  # onset at sample 8000 = frame 50
    with pytest.raises(InvalidInput):
        mel_frames(torch.zeros(100), mel)
    # the spectrogram generator's training previews invert the same map (Griffin-Lim)
    from tunecraft.noise2music.tasks import griffin_lim_preview

    tones = (0.3 * torch.sin(torch.arange(8000) * 2 * math.pi * 440 / 16000))[None]
    preview = griffin_lim_preview(mel_frames(tones[0], mel), SpectrogramGeneratorConfig())
    assert preview.shape == (1, 8000)
    assert float((mel_frames(preview[0], mel) - mel_frames(tones[0], mel)).abs().mean()) < 0.05


# ---- the inference-ablation benchmark (paper Figures 2 and 3) ----------------------------------


def test_quality_benchmark_sweeps_guidance_schedules_and_steps(bundle, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "n2m_quality", Path(__file__).resolve().parent.parent / "benchmarks" / "noise2music_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "q"
    assert bench.main(["--system", str(bundle), "--path", "waveform", "--limit", "2", "--duration", "0.5",
                       "--cfgs", "1,4", "--step-factors", "1,2", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [(r["options"]["step_schedule"], r["options"]["cfg_scale"]) for r in res["guidance"]] == [
        (s, c) for s in ("back-heavy", "uniform", "front-heavy") for c in (1.0, 4.0)]
    default_steps = res["defaults"]["waveform_cascader"]["steps"]
    assert [r["options"]["steps"]["waveform_cascader"] for r in res["steps"]] == [default_steps, 2 * default_steps]
    for r in res["guidance"] + res["steps"]:
        assert r["fad"] is not None and r["text_audio"] is not None and r["seconds_per_clip"] > 0
        assert (out / r["name"] / "report.json").is_file()
    # each point really used its options: the reports record them
    report = json.loads((out / "uniform-cfg4" / "report.json").read_text())
    assert report["settings"]["options"] == {"path": "waveform", "cfg_scale": 4.0, "step_schedule": "uniform"}
    assert (out / "guidance_schedule.png").stat().st_size > 0 and (out / "steps_time.png").stat().st_size > 0
    assert bench.main(["--system", str(bundle), "--cfgs", "-1", "--out", str(out)]) == 2


def test_stage_benchmark_text_gain(stages, corpus, tmp_path, capsys):
    """benchmarks/noise2music_stages.py --text-gain: real / other / null caption losses of a text
    generator at fixed times and noise; stages with aligned inputs are refused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "n2m_stages", Path(__file__).resolve().parent.parent / "benchmarks" / "noise2music_stages.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in ("spectrogram_generator", "waveform_generator"):
        rows = bench.text_gain(stages[name], corpus, "train", 3, times=(0.3, 0.9))
        assert [r["t"] for r in rows] == [0.3, 0.9]
        for r in rows:
            assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("real", "other", "null"))
            assert r["gain"] == r["other"] - r["real"] and r["real"] != r["other"]  # the text reaches the output
    with pytest.raises(SystemExit, match="text-to-audio generator"):
        bench.text_gain(stages["waveform_cascader"], corpus, "train", 3)
    path = stages["spectrogram_generator"].save_pretrained(tmp_path / "sg")
    assert bench.main(["--text-gain", str(path), "--corpus", str(corpus), "--split", "train", "--clips", "2"]) == 0
    assert "| 0.95 |" in capsys.readouterr().out


def test_stage_benchmark_cascader_check(stages, corpus, tmp_path, capsys):
    """benchmarks/noise2music_stages.py --cascader: an upsampling cascader (SR, or waveform with its
    clip's caption) against the FFT-upsampled input on real clips; the input has nothing above its
    low rate's Nyquist, so its added-band energy ratio is ~0."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "n2m_stages", Path(__file__).resolve().parent.parent / "benchmarks" / "noise2music_stages.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for name in ("sr_cascader", "waveform_cascader"):
        rows = bench.cascader_check(stages[name], corpus, "train", 2, steps=2)
        assert set(rows) == {"FFT-upsampled input", "cascader"}
        assert rows["FFT-upsampled input"]["high_band_energy_ratio"] < 1e-3
        assert rows["cascader"]["high_band_energy_ratio"] > rows["FFT-upsampled input"]["high_band_energy_ratio"]
        assert all(math.isfinite(v) for r in rows.values() for v in r.values())
        assert all(0.0 <= r[f"{a}_kept"] <= 1.0 for r in rows.values() for a in ("key", "mode", "tempo"))
    # identical signals are 0 dB apart
    x = torch.randn(24000, generator=torch.Generator().manual_seed(0))
    assert bench.log_spectral_distance(x, x, 24000, (8000.0, 12000.0)) == 0.0
    path = stages["sr_cascader"].save_pretrained(tmp_path / "sr")
    assert bench.main(["--sr", str(path), "--corpus", str(corpus), "--split", "train", "--clips", "1",
                       "--sr-steps", "2"]) == 0
    assert "| cascader |" in capsys.readouterr().out
    # a waveform generator, scored resampled and through the waveform cascader
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "a waltz in A minor, 90 bpm", "bpm": 90, "key": "A minor",
                                   "mode": "minor"}) + "\n")
    wg = stages["waveform_generator"].save_pretrained(tmp_path / "wg")
    wc = stages["waveform_cascader"].save_pretrained(tmp_path / "wc")
    for extra in ([], ["--then", str(wc)]):
        assert bench.main(["--generator", str(wg), "--prompts", str(prompts), "--generator-steps", "2", *extra]) == 0
        out = capsys.readouterr().out
        assert "Waveform generator" in out and "| key exact |" in out
        assert ("through the waveform cascader" in out) == bool(extra)


def _chord_generator_config(**kw) -> WaveformGeneratorConfig:
    """The tiny waveform generator with the chord reference in octave 4 (6 more aligned channels)."""
    base = tiny_configs()["waveform_generator"]
    return base.replace(chord_octaves=[4], unet=base.unet.replace(cond_channels=base.aligned_channels + 6), **kw)


def test_chord_reference_config_plans_and_channels():
    from tunecraft.modules.key import chord_features

    cfg = _chord_generator_config()
    assert cfg.aligned_channels == 10 and WaveformGeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"6 x len\(chord_octaves\) = 10, got 4"):
        cfg.replace(unet=cfg.unet.replace(cond_channels=4))
    # the highest chord tone is an augmented fifth above B: octave 5 (G6 = 1568 Hz) fits 3.2 kHz, 6 does not
    cfg.replace(chord_octaves=[5])
    with pytest.raises(ConfigError, match="chord_octaves up to 6 reach 3136 Hz, above half"):
        cfg.replace(chord_octaves=[6])
    for bad in ([4, 4], [4.0], "4"):
        with pytest.raises(ConfigError, match="chord_octaves"):
            cfg.replace(chord_octaves=bad)
    with pytest.raises(ConfigError, match="only the generators"):
        WaveformCascaderConfig(chord_octaves=[3])
    assert WaveformGeneratorConfig.paper().chord_octaves == []
    # a config stored before the option existed loads without it
    stored = tiny_configs()["waveform_generator"].to_dict()
    stored.pop("chord_octaves")
    assert WaveformGeneratorConfig.from_dict(stored).chord_octaves == []

    gen = perturb(WaveformGenerator(cfg), seed=3).eval()
    texts = ["a bossa nova in A minor, 134 bpm", "no key here, 90 bpm", "a waltz in D major"]
    plans = gen.harmony_plans(texts, 6.0, torch.Generator().manual_seed(0))
    assert plans[1] is None and plans[0][0][1].startswith("Am") and plans[2][0][1] == "D"
    assert plans == gen.harmony_plans(texts, 6.0, torch.Generator().manual_seed(0))
    assert plans != gen.harmony_plans(texts, 6.0, torch.Generator().manual_seed(1))
    beat = 60.0 / 110.0  # no tempo stated: 110 bpm, three beats to the bar in a waltz
    assert all(abs(t / (3 * beat) - round(t / (3 * beat))) < 1e-2 for t, _ in plans[2])
    cond = gen.prompt_aligned(texts, 640, offsets=[0.0, 0.0, 0.25], chords=plans)
    assert cond.shape == (3, 10, 640)
    torch.testing.assert_close(cond[:, 4:], chord_features([plans[0], None, plans[2]], [4], 3200.0, 640,
                                                           [0.0, 0.0, 0.25]))
    # a plan reaches the U-Net only where the prompt states its key (as at generation)
    same = gen.prompt_aligned(texts, 640, chords=[plans[0], plans[0], plans[2]])
    assert torch.count_nonzero(same[1, 4:]) == 0
    with pytest.raises(InvalidInput, match="chord plans"):
        gen.prompt_aligned(texts, 640, chords=plans[:2])
    # training reads the clips' plans from the batch, and needs them
    batch = {"x0": torch.zeros(3, 1, 64), "text": texts, "offset": torch.tensor([0.0, 0.0, 0.25], dtype=torch.float64),
             "chords": plans}
    torch.testing.assert_close(gen._training_aligned(batch, batch["x0"])["cond"],
                               gen.prompt_aligned(texts, 64, offsets=[0.0, 0.0, 0.25], chords=plans))
    with pytest.raises(InvalidInput, match="chord plans"):
        gen._training_aligned({k: v for k, v in batch.items() if k != "chords"}, batch["x0"])
    # generation draws the plans from its generator: seeded runs repeat, a given plan is followed
    with torch.no_grad():
        torch.nn.init.normal_(gen.unet.stem.weight)  # let the chord channels matter
        a = gen.generate(texts[:1], 320, generator=torch.Generator().manual_seed(4))
        b = gen.generate(texts[:1], 320, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b)
        c = gen.generate(texts[:1], 320, chords=[[[0.0, "Eb"]]], generator=torch.Generator().manual_seed(4))
        d = gen.generate(texts[:1], 320, chords=[[[0.0, "Eb"]]], generator=torch.Generator().manual_seed(4))
        assert torch.equal(c, d) and not torch.allclose(a, c)


def test_chord_generator_task_reads_the_sidecars_chords(corpus, tmp_path):
    import dataclasses

    from tunecraft.data import load_info
    from tunecraft.noise2music.tasks import load_chord_plans
    from tunecraft.train import get_task_class, run_recipe

    cls = get_task_class("n2m-wave-generator")
    model = _chord_generator_config()
    data = cls.data_config_class(source=str(corpus), crop_seconds=0.2, valid_clips=2)
    task = cls(cls.config_class(model=model), data)
    ds = task.build_train_dataset()
    item = ds[0]
    info = load_info(ds.metas[0])
    assert item["chords"] == [[float(t), name] for t, name in info["chords"]] and len(item["chords"]) >= 1
    batch = task.collate([ds[0], ds[1]])
    assert batch["chords"] == [ds[0]["chords"], ds[1]["chords"]]
    # a sidecar whose chords are not a timed plan gives that file none, counted
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**info, "chords": [[0.0, "Q7"]]}))
    meta = dataclasses.replace(ds.metas[0], info_path=str(bad))
    with pytest.warns(UserWarning, match="ignoring the chords of 1 file"):
        plans, n_bad = load_chord_plans([ds.metas[0], meta])
    assert n_bad == 1 and plans[1] is None and plans[0] == item["chords"]
    # two training steps, and the stage it exports keeps the option
    task_cfg = {"name": "n2m-wave-generator", **cls.config_class(model=model, sample_steps=2,
                                                                  sample_seconds=0.25).to_dict()}
    train = dict(steps=2, batch_size=2, lr=1e-3, log_every=1, valid_every=2, valid_batches=1, sample_every=2,
                 ckpt_every=2, ema_decay=0.5)
    recipe = tmp_path / "chords.toml"
    recipe.write_text(_toml(task_cfg, "task") + "\n" + _toml(data.to_dict(), "data") + "\n" + _toml(train, "train"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_recipe(str(recipe), out_dir=tmp_path / "run", quiet=True)
    assert result.finished and math.isfinite(result.metrics["loss"])
    stage = load_stage(result.export_dir)
    assert stage.config.chord_octaves == [4]
    out = stage.generate(["a song in G major, 100 bpm"], 320, steps=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 1, 320) and torch.isfinite(out).all()


def test_spectrogram_generator_chord_mel_templates(corpus):
    from tunecraft.modules.key import chord_mel_features
    from tunecraft.train import get_task_class

    base = tiny_configs()["spectrogram_generator"]
    n_mels = base.mel.n_mels
    cfg = base.replace(chord_mel=True, unet=base.unet.replace(cond_channels=base.aligned_channels + n_mels))
    assert cfg.aligned_channels == n_mels and SpectrogramGeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=rf"mel.n_mels x chord_mel = {n_mels}, got 0"):
        base.replace(chord_mel=True)
    with pytest.raises(ConfigError, match="chord_mel must be true or false"):
        base.replace(chord_mel=1, unet=base.unet.replace(cond_channels=n_mels))
    assert SpectrogramGeneratorConfig().chord_mel and not SpectrogramGeneratorConfig.paper().chord_mel
    stored = base.to_dict()
    stored.pop("chord_mel")
    assert not SpectrogramGeneratorConfig.from_dict(stored).chord_mel  # written before the option: off

    gen = perturb(SpectrogramGenerator(cfg), seed=2).eval()
    assert gen.has_chords
    texts = ["a jazz tune in Bb major, 150 bpm", "no key stated"]
    plans = gen.harmony_plans(texts, 2.0, torch.Generator().manual_seed(0))
    assert plans[1] is None and plans[0][0][1].startswith("Bb")
    cond = gen.prompt_aligned(texts, 96, offsets=[0.5, 0.0], chords=plans)
    mel = {k: v for k, v in cfg.mel.to_dict().items()}
    torch.testing.assert_close(cond, chord_mel_features(plans, 100.0, 96, [0.5, 0.0], **mel))
    with torch.no_grad():
        torch.nn.init.normal_(gen.unet.stem.weight)
        a = gen.generate(texts[:1], 32, generator=torch.Generator().manual_seed(1))
        b = gen.generate(texts[:1], 32, generator=torch.Generator().manual_seed(1))
        c = gen.generate(texts[:1], 32, chords=[[[0.0, "E"]]], generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # its training task reads the clips' chords, and the loss runs on them
    cls = get_task_class("n2m-spec-generator")
    task = cls(cls.config_class(model=cfg), cls.data_config_class(source=str(corpus), crop_seconds=0.2))
    batch = task.collate([task.build_train_dataset()[i] for i in range(2)])
    assert all(isinstance(plan, list) and plan for plan in batch["chords"])
    loss, _ = task.training_step(gen.train(), batch, 0)
    assert torch.isfinite(loss)


def test_pipeline_chord_plans_are_seeded_passed_and_kept(stages, tmp_path):
    chordal = perturb(WaveformGenerator(_chord_generator_config()), seed=7).eval()
    with torch.no_grad():
        torch.nn.init.normal_(chordal.unet.stem.weight)  # let the chord channels matter
    n2m = Noise2Music({**stages, "waveform_generator": chordal})
    prompts = ["a bossa nova in A minor, 134 bpm", "no key at all"]
    plans = n2m.harmony_plans(prompts, duration=2.0, seed=3, path="waveform")
    assert plans[1] is None and plans[0][0][1].startswith("Am") and plans == n2m.harmony_plans(prompts, 2.0, 3, "waveform")
    assert n2m.harmony_plans(prompts, 2.0, seed=3, path="spectrogram") is None  # that generator takes none
    # the drawn plans are those of the seed; passing them gives the same audio, another plan other audio
    a = n2m.generate_stages(prompts, duration=0.25, seed=3, path="waveform")
    b = n2m.generate_stages(prompts, duration=0.25, seed=3, path="waveform",
                            chords=n2m.harmony_plans(prompts, 0.25, 3, "waveform"))
    c = n2m.generate_stages(prompts, duration=0.25, seed=3, path="waveform", chords=[[[0.0, "Eb"]], None])
    assert torch.equal(a["sr_cascader"], b["sr_cascader"])
    assert not torch.allclose(a["waveform_generator"][0], c["waveform_generator"][0])
    assert torch.equal(a["waveform_generator"][1], c["waveform_generator"][1])  # no key stated: no plan read
    keep = tmp_path / "keep"
    n2m.generate(prompts, duration=0.25, seed=3, path="waveform", keep_stages=keep)
    saved = json.loads((keep / "00_a_bossa_nova_in_a_minor_134_bpm_chords.json").read_text())
    assert saved == {"prompt": prompts[0], "chords": n2m.harmony_plans(prompts, 0.25, 3, "waveform")[0]}
    assert not list(keep.glob("01_*_chords.json"))
    for bad, match in (([[[0.0, "Q"]], None], "chord name"), ([None], "one timed plan"), ("Am F", "one timed plan")):
        with pytest.raises(InvalidInput, match=match):
            n2m.generate(prompts, duration=0.25, seed=3, path="waveform", chords=bad)
    with pytest.raises(InvalidInput, match="takes no chord plan"):
        n2m.generate(prompts, duration=0.25, seed=3, path="spectrogram", chords=[None, None])


def test_generator_fact_guidance_swaps_the_mode_in_text_key_signals_and_chords(monkeypatch):
    from tunecraft.modules.key import triad_features

    base = _chord_generator_config()
    cfg = base.replace(triad_octaves=[4], unet=base.unet.replace(cond_channels=base.aligned_channels + 4))
    gen = perturb(WaveformGenerator(cfg), seed=11).eval()
    with torch.no_grad():
        torch.nn.init.normal_(gen.unet.stem.weight)
    texts = ["a song in A minor, 100 bpm", "a song with no key, 100 bpm"]
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = gen.generate(texts, 256, generator=g())
    assert torch.equal(plain, gen.generate(texts, 256, generator=g(), fact_guidance=0.0))
    guided = gen.generate(texts, 256, generator=g(), fact_guidance=2.0)
    assert not torch.allclose(plain[0], guided[0])
    torch.testing.assert_close(plain[1], guided[1])  # no mode stated: its negative is itself, the term zero
    # what the negative branch is made of: the mode swapped in the text, the triad and the chord plan
    seen = {}
    original = DiffusionStage.sample

    def spy(self, shape, **kw):
        seen.update(kw)
        return original(self, shape, **kw)

    monkeypatch.setattr(DiffusionStage, "sample", spy)
    gen.generate(texts, 256, generator=g(), fact_guidance=2.0)
    neg = seen["negative"]
    assert neg["text"] == ["a song in A major, 100 bpm", texts[1]]
    torch.testing.assert_close(neg["cond"][:, 4:8], triad_features([9, None], ["major", None], [4], 3200.0, 256))
    seeds = gen._plan_seeds(texts, g())
    pos_plan, neg_plan = gen._plans(texts, 256 / 3200, seeds)[0], gen._plans(neg["text"], 256 / 3200, seeds)[0]
    assert pos_plan[0][1].startswith("Am") and neg_plan[0][1].startswith("A") and not neg_plan[0][1].startswith("Am")
    with pytest.raises(ConfigError, match="fact_guidance"):
        StageSampling(fact_guidance=-1.0)
    assert StageSampling().fact_guidance == 0.0


def test_fact_guidance_through_the_pipeline(bundle):
    n2m = load_system(str(bundle))
    a, _ = n2m.generate(["calm piano in C major"], duration=0.25, seed=0, path="waveform")
    b, _ = n2m.generate(["calm piano in C major"], duration=0.25, seed=0, path="waveform", fact_guidance=2.0)
    assert a.shape == b.shape and not torch.equal(a, b)
    with pytest.raises(InvalidInput, match="no fact guidance"):
        n2m.generate(["calm piano in C major"], duration=0.25, seed=0, path="waveform",
                     fact_guidance={"waveform_cascader": 1.0})
