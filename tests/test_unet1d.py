"""Tests for the 1D Efficient U-Net (tunecraft.diffusion.unet1d) and its building blocks."""

from __future__ import annotations

import math

import pytest
import torch

from tunecraft.diffusion import (
    UNET1D_PRESETS,
    CosineSchedule,
    DiffusionObjective,
    DiffusionSampler,
    UNet1D,
    UNet1DConfig,
    guided_model_fn,
    text_dropout_mask,
)
from tunecraft.errors import ConfigError, InvalidInput
from tunecraft.modules.conv_blocks import CrossAttention1d, Downsample1d, ResBlock1d, Upsample1d
from tunecraft.modules.film import FiLM, sinusoidal_embedding
from tunecraft.text import TextStates

TEXT_DIM = 12


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one intra-op thread


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every layer random weights (unit-gain fan-in scaling), including the zero-initialised
    output convolutions, attention projections and FiLM layers, so every path shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _text(b: int, lengths: list[int], seed: int = 1, dim: int = TEXT_DIM) -> TextStates:
    g = torch.Generator().manual_seed(seed)
    L = max(max(lengths), 1)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    states = torch.randn(b, L, dim, generator=g) * mask[..., None]
    return TextStates(states, mask)


def _tiny(**kw) -> UNet1DConfig:
    return UNet1DConfig.tiny(**kw)


# =============================================================================== shapes
@pytest.mark.parametrize("length", [1, 7, 8, 37, 64])
@pytest.mark.parametrize(
    "extras",
    [
        {},
        {"cond_channels": 2},
        {"text_dim": TEXT_DIM},
        {"compressed_channels": 3},
        {"cond_channels": 1, "text_dim": TEXT_DIM, "compressed_channels": 4, "upsample": "nearest"},
    ],
    ids=["plain", "cond", "text", "compressed", "all"],
)
def test_output_shape_any_length(length, extras):
    cfg = _tiny(in_channels=2, **extras)
    model = UNet1D(cfg).eval()
    b = 2
    kwargs = {}
    if cfg.cond_channels:
        kwargs["cond"] = torch.randn(b, cfg.cond_channels, length)
    if cfg.text_dim:
        kwargs["text"] = _text(b, [3, 0])
    if cfg.compressed_channels:
        kwargs["compressed"] = torch.randn(b, cfg.compressed_channels, max(1, length // 5))
    with torch.no_grad():
        out = model(torch.randn(b, 2, length), torch.tensor([0.3, -4.0]), **kwargs)
    assert out.shape == (b, 2, length)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(UNET1D_PRESETS))
def test_presets_build_and_round_trip(name):
    cfg = UNet1DConfig.preset(name, text_dim=16)
    again = UNet1DConfig.from_json(cfg.to_json())
    assert again == cfg
    if name != "noise2music":
        model = UNet1D(cfg).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 1, 300), torch.tensor([1.0]), text=_text(1, [4], dim=16))
        assert out.shape == (1, 1, 300)


def test_noise2music_table8_preset_on_meta_device():
    cfg = UNet1DConfig.noise2music(text_dim=64)
    assert cfg.kernel_size == 7 and cfg.strides == [4] * 6 and cfg.total_stride == 4096
    assert cfg.channels == [256 * m for m in (1, 1, 2, 3, 4, 4)] and cfg.blocks == [3, 3, 3, 4, 4, 4]
    assert cfg.self_attention_levels == [3, 4, 5] and cfg.cross_attention_levels == [3, 4, 5]
    with torch.device("meta"):
        model = UNet1D(cfg)
        x = torch.empty(1, 1, 3 * 4096 + 5)
        text = TextStates(torch.empty(1, 8, 64), torch.ones(1, 8, dtype=torch.bool))
        out = model(x, torch.zeros(1), text=text)
    assert out.shape == (1, 1, 3 * 4096 + 5)
    n = model.num_parameters()
    assert 3e8 < n < 7e8  # hundreds of millions, the scale of the paper's Table 2 models
    attn = [m for m in model.modules() if type(m).__name__ in ("SelfAttention1d", "CrossAttention1d")]
    assert len(attn) == 12  # self + cross in 3 levels, down and up


def test_model_starts_as_zero_predictor():
    model = UNet1D(_tiny(text_dim=TEXT_DIM)).eval()
    out = model(torch.randn(2, 1, 20), torch.tensor([0.1, 0.2]), text=_text(2, [2, 2]))
    assert torch.equal(out, torch.zeros_like(out))


# =============================================================================== conditioning paths
def test_drop_text_removes_the_text_influence():
    model = _randomize(UNet1D(_tiny(text_dim=TEXT_DIM)))
    x, lvl = torch.randn(2, 1, 33), torch.tensor([0.5, -2.0])
    text_a, text_b = _text(2, [5, 3], seed=1), _text(2, [2, 6], seed=2)
    with torch.no_grad():
        with_a = model(x, lvl, text=text_a)
        with_b = model(x, lvl, text=text_b)
        none = model(x, lvl)
        null = model(x, lvl, text=text_a.null_like())
        dropped_a = model(x, lvl, text=text_a, drop_text=torch.tensor([True, True]))
        dropped_b = model(x, lvl, text=text_b, drop_text=torch.tensor([True, True]))
        half = model(x, lvl, text=text_a, drop_text=torch.tensor([True, False]))
    assert (with_a - with_b).abs().max() > 0.05  # the text matters ...
    assert (with_a - none).abs().max() > 0.05
    torch.testing.assert_close(dropped_a, none)  # ... and dropping it removes it entirely
    torch.testing.assert_close(dropped_b, none)
    torch.testing.assert_close(null, none)  # the all-False mask is the null condition
    torch.testing.assert_close(half[0], none[0])
    torch.testing.assert_close(half[1], with_a[1])


def test_padding_tokens_do_not_matter():
    model = _randomize(UNet1D(_tiny(text_dim=TEXT_DIM)))
    x, lvl = torch.randn(1, 1, 16), torch.tensor([0.0])
    short = _text(1, [3])
    longer = short.pad_to(9)
    garbage = TextStates(longer.states + torch.randn_like(longer.states) * (~longer.mask)[..., None], longer.mask)
    with torch.no_grad():
        torch.testing.assert_close(model(x, lvl, text=short), model(x, lvl, text=garbage))


def test_cond_compressed_and_noise_level_paths_change_the_output():
    cfg = _tiny(cond_channels=1, compressed_channels=2, text_dim=TEXT_DIM)
    model = _randomize(UNet1D(cfg))
    x, lvl = torch.randn(1, 1, 40), torch.tensor([1.0])
    cond, comp = torch.randn(1, 1, 40), torch.randn(1, 2, 7)
    with torch.no_grad():
        base = model(x, lvl, cond=cond, compressed=comp)
        assert (base - model(x, lvl, cond=torch.randn(1, 1, 40), compressed=comp)).abs().max() > 0.05
        assert (base - model(x, lvl, cond=cond, compressed=torch.randn(1, 2, 7))).abs().max() > 0.05
        assert (base - model(x, lvl, cond=cond)).abs().max() > 0.05  # compressed is optional
        assert (base - model(x, torch.tensor([-5.0]), cond=cond, compressed=comp)).abs().max() > 0.05


def test_per_frame_noise_level_matches_per_example_when_constant():
    model = _randomize(UNet1D(_tiny()))
    x = torch.randn(2, 1, 29)
    lvl = torch.tensor([0.7, -3.0])
    with torch.no_grad():
        per_example = model(x, lvl)
        per_frame = model(x, lvl[:, None].expand(2, 29))
        varied = model(x, torch.cat([lvl[:, None].expand(2, 15), torch.full((2, 14), 9.0)], dim=1))
    torch.testing.assert_close(per_frame, per_example)
    assert (varied - per_example).abs().max() > 0.05


def test_noise_level_helper_follows_time_input():
    sched = CosineSchedule()
    t = torch.tensor([0.25, 0.75])
    assert torch.allclose(UNet1D(_tiny()).noise_level(sched, t), sched.log_snr(t))
    assert torch.allclose(UNet1D(_tiny(time_input="t")).noise_level(sched, t), t)
    assert torch.allclose(UNet1D(_tiny(time_input="angle")).noise_level(sched, t), sched.angle(t))


# =============================================================================== errors
def test_invalid_inputs_are_reported():
    model = UNet1D(_tiny(cond_channels=1, text_dim=TEXT_DIM))
    x, lvl = torch.randn(2, 1, 16), torch.zeros(2)
    cond = torch.randn(2, 1, 16)
    with pytest.raises(InvalidInput, match="x must be"):
        model(torch.randn(2, 3, 16), lvl, cond=cond)
    with pytest.raises(InvalidInput, match="aligned condition"):
        model(x, lvl)
    with pytest.raises(InvalidInput, match="cond must be"):
        model(x, lvl, cond=torch.randn(2, 1, 15))
    with pytest.raises(InvalidInput, match="text states"):
        model(x, lvl, cond=cond, text=_text(2, [1, 1], dim=5))
    with pytest.raises(InvalidInput, match="drop_text"):
        model(x, lvl, cond=cond, drop_text=torch.ones(3, dtype=torch.bool))
    with pytest.raises(InvalidInput, match="noise level"):
        model(x, torch.zeros(3), cond=cond)
    with pytest.raises(InvalidInput, match="compressed"):
        model(x, lvl, cond=cond, compressed=torch.randn(2, 1, 4))
    plain = UNet1D(_tiny())
    with pytest.raises(InvalidInput, match="no text"):
        plain(x, lvl, text=_text(2, [1, 1]))
    with pytest.raises(InvalidInput, match="no aligned"):
        plain(x, lvl, cond=cond)


@pytest.mark.parametrize(
    "bad",
    [
        {"strides": [2, 2]},
        {"channels": []},
        {"kernel_size": 4},
        {"norm_groups": 5},
        {"num_heads": 3},
        {"self_attention_levels": [3]},
        {"time_input": "sigma"},
        {"upsample": "pixelshuffle"},
        {"blocks": [1, -1, 1]},
    ],
)
def test_bad_configs_raise_config_error(bad):
    with pytest.raises(ConfigError):
        UNet1DConfig.tiny(**bad)


# =============================================================================== training & sampling
def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    cfg = _tiny(text_dim=TEXT_DIM)
    ref = _randomize(UNet1D(cfg)).train()
    ckpt = UNet1D(cfg.replace(gradient_checkpointing=True)).train()
    ckpt.load_state_dict(ref.state_dict())
    x, lvl, text = torch.randn(2, 1, 24), torch.tensor([0.1, 2.0]), _text(2, [3, 1])
    outs = []
    for model in (ref, ckpt):
        model.zero_grad()
        out = model(x, lvl, text=text, drop_text=torch.tensor([False, True]))
        out.pow(2).mean().backward()
        outs.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for g0, g1 in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(g0, g1)


def test_state_dict_round_trip_through_config():
    cfg = _tiny(text_dim=TEXT_DIM, compressed_channels=2)
    a = _randomize(UNet1D(cfg))
    b = UNet1D(UNet1DConfig.from_json(cfg.to_json())).eval()
    b.load_state_dict(a.state_dict())
    x, lvl = torch.randn(1, 1, 19), torch.tensor([0.0])
    with torch.no_grad():
        torch.testing.assert_close(a(x, lvl, text=_text(1, [2])), b(x, lvl, text=_text(1, [2])))


def test_unet_trains_and_samples_with_the_diffusion_core():
    torch.manual_seed(0)
    sched = CosineSchedule()
    model = UNet1D(_tiny(text_dim=TEXT_DIM)).train()
    obj = DiffusionObjective(sched, parameterization="v", weighting="sigma")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    text = _text(4, [3, 2, 4, 1])
    x0 = torch.sin(torch.linspace(0, 6 * math.pi, 48)).expand(4, 1, 48).contiguous()
    losses = []
    for _ in range(25):
        drop = text_dropout_mask(4, 0.1, generator=g)
        loss = obj.loss(lambda x, t: model(x, model.noise_level(sched, t), text=text, drop_text=drop), x0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1]) and sum(losses[-5:]) < sum(losses[:5])
    model.eval()
    fn = guided_model_fn(
        lambda x, t, **kw: model(x, model.noise_level(sched, t), **kw),
        3.0,
        {"text": text[:2]},
        {"text": text[:2].null_like()},
    )
    with torch.no_grad():
        a = DiffusionSampler(sched, "v", "ddim").sample(fn, (2, 1, 45), steps=4, generator=torch.Generator().manual_seed(1))
        b = DiffusionSampler(sched, "v", "ddim").sample(fn, (2, 1, 45), steps=4, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 1, 45) and torch.isfinite(a).all() and torch.equal(a, b)


# =============================================================================== building blocks
def test_down_and_up_sampling_are_exact_factors():
    for s in (1, 2, 3, 4, 5):
        x = torch.randn(1, 4, 12 * s * 2)
        d = Downsample1d(4, 6, s)(x)
        assert d.shape == (1, 6, 24)
        for mode in ("transposed", "nearest", "linear"):
            assert Upsample1d(6, 4, s, mode=mode)(d).shape == x.shape
    with pytest.raises(InvalidInput):
        Downsample1d(4, 4, 4)(torch.randn(1, 4, 10))


def test_linear_upsampling_damps_the_images_that_repetition_leaves():
    """x4 upsampling of a low-rate tone at 0.05 of its rate, through an identity convolution: the
    image at (1 - 0.05) of the low rate is far weaker after linear interpolation than after
    repetition; both keep the tone. nearest and linear share their weights."""
    n, f = 256, 0.05
    tone = torch.sin(2 * math.pi * f * torch.arange(n, dtype=torch.float64))[None, None].float()
    spectra = {}
    for mode in ("nearest", "linear"):
        up = Upsample1d(1, 1, 4, mode=mode, kernel_size=3)
        with torch.no_grad():
            up.conv.weight.zero_()
            up.conv.weight[0, 0, 1] = 1.0
            up.conv.bias.zero_()
        with torch.no_grad():
            y = up(tone)[0, 0, 16:-16].double()
        spectra[mode] = torch.fft.rfft(y * torch.hann_window(y.numel(), dtype=torch.float64)).abs()
    m = spectra["nearest"].numel() - 1  # bin k is frequency k / (2 m) of the output rate
    tone_bin, image_bin = round(2 * m * f / 4), round(2 * m * (1 - f) / 4)
    for spec in spectra.values():
        assert int(spec[1:].argmax()) + 1 == tone_bin
    image = {k: float(v[image_bin - 2:image_bin + 3].max() / v[tone_bin]) for k, v in spectra.items()}
    assert image["nearest"] > 0.03 and image["linear"] < image["nearest"] / 5, image
    assert set(Upsample1d(2, 3, 4, mode="linear").state_dict()) == set(Upsample1d(2, 3, 4, mode="nearest").state_dict())
    with pytest.raises(ConfigError):
        Upsample1d(2, 3, 4, mode="cubic")


def test_film_and_resblock_conditioning():
    film = FiLM(8, 3)
    h = torch.randn(2, 3, 5)
    assert torch.equal(film(h, torch.randn(2, 8)), h)  # identity at initialisation
    with torch.no_grad():
        film.proj.weight.normal_()
    c = torch.randn(2, 8)
    gamma, beta = film.proj(torch.nn.functional.silu(c)).chunk(2, dim=-1)
    torch.testing.assert_close(film(h, c), h * (1 + gamma[..., None]) + beta[..., None])
    per_frame = film(h, c[:, None, :].expand(2, 5, 8))
    torch.testing.assert_close(per_frame, film(h, c))
    last = FiLM(8, 3, channels_last=True)
    last.load_state_dict(film.state_dict())
    torch.testing.assert_close(last(h.transpose(1, 2), c), film(h, c).transpose(1, 2))
    block = ResBlock1d(3, 6, 8, kernel_size=7, norm_groups=3)
    assert block(h, c).shape == (2, 6, 5)
    emb = sinusoidal_embedding(torch.tensor([0.0, 1.0]), 6)
    assert emb.shape == (2, 6) and torch.allclose(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))


def test_cross_attention_null_rows_are_identity():
    attn = _randomize(CrossAttention1d(8, 5, 2, norm_groups=4))
    x = torch.randn(3, 8, 6)
    ctx = torch.randn(3, 4, 5)
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True] * 4])
    out = attn(x, ctx, mask, drop=torch.tensor([False, False, True]))
    torch.testing.assert_close(out[1:], x[1:])  # row 1 has no text, row 2 is dropped
    assert (out[0] - x[0]).abs().max() > 0.05 and torch.isfinite(out).all()
