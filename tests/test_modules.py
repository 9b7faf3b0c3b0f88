"""Building blocks of the codecs: SEANet, residual VQ, bottlenecks, whitening, discriminators, losses."""

from __future__ import annotations

import math

import pytest
import torch

from tunecraft.errors import ConfigError, InvalidInput
from tunecraft.modules.bottlenecks import (
    KLBottleneck,
    KLBottleneckConfig,
    MaskedBottleneck,
    MaskedBottleneckConfig,
    Whitener,
)
from tunecraft.modules.conv import StreamableConv1d, extra_padding_for_conv1d, pad1d
from tunecraft.modules.discriminators import (
    DiscriminatorConfig,
    MultiPeriodDiscriminator,
    MultiResolutionSpectrogramDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from tunecraft.modules.losses import (
    CodecLoss,
    CodecLossConfig,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from tunecraft.modules.quantization import ResidualVectorQuantizer, RVQConfig
from tunecraft.modules.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder


pytestmark = pytest.mark.usefixtures("single_thread")

# ---------------------------------------------------------------------------------------------
# conv + SEANet
# ---------------------------------------------------------------------------------------------


def test_extra_padding_makes_last_window_complete():
    # kernel 4, stride 2, padding_total 2: length 5 needs one more sample for a full last window
    assert extra_padding_for_conv1d(5, 4, 2, 2) == 1
    assert extra_padding_for_conv1d(6, 4, 2, 2) == 0
    x = torch.arange(3.0)[None, None]
    # reflect padding longer than the signal still works (zeros are inserted first)
    assert pad1d(x, (4, 4), mode="reflect").shape[-1] == 11


@pytest.mark.parametrize(
    "kw",
    [
        dict(causal=True, pad_mode="reflect", true_skip=False),
        dict(causal=False, pad_mode="constant", true_skip=True, lstm=0),
        dict(causal=False, pad_mode="reflect", norm="time_group_norm", channels=2, n_residual_layers=2),
    ],
)
def test_seanet_shapes(kw):
    cfg = SEANetConfig(**{**dict(dimension=12, n_filters=4, ratios=[4, 2], lstm=1), **kw})
    enc, dec = SEANetEncoder(cfg), SEANetDecoder(cfg)
    x = torch.randn(2, cfg.channels, 101)
    z = enc(x)
    assert z.shape == (2, 12, math.ceil(101 / 8))
    y = dec(z)
    assert y.shape == (2, cfg.channels, z.shape[-1] * 8)


def test_seanet_weight_norm_and_layer_names_follow_audiocraft():
    cfg = SEANetConfig(dimension=8, n_filters=4, ratios=[2, 2], lstm=1, true_skip=False)
    keys = set(SEANetEncoder(cfg).state_dict())
    assert "model.0.conv.conv.parametrizations.weight.original0" in keys
    assert "model.1.block.1.conv.conv.parametrizations.weight.original1" in keys
    assert "model.1.shortcut.conv.conv.bias" in keys
    assert any(k.startswith("model.7.lstm.weight_ih_l0") for k in keys)
    dec_keys = set(SEANetDecoder(cfg).state_dict())
    assert "model.3.convtr.convtr.parametrizations.weight.original0" in dec_keys


def test_causal_encoder_ignores_the_future():
    torch.manual_seed(0)
    cfg = SEANetConfig(dimension=8, n_filters=4, ratios=[4, 2], lstm=1, causal=True, pad_mode="constant")
    enc = SEANetEncoder(cfg).eval()
    x = torch.randn(1, 1, 400)
    x2 = x.clone()
    x2[..., 200:] = torch.randn(200)
    with torch.no_grad():
        a, b = enc(x), enc(x2)
    n_past = 200 // 8
    assert torch.equal(a[..., :n_past], b[..., :n_past])
    assert not torch.allclose(a[..., n_past + 2 :], b[..., n_past + 2 :])


def test_seanet_config_validation():
    with pytest.raises(ConfigError):
        SEANetConfig(activation="Swishy")
    with pytest.raises(ConfigError):
        SEANetConfig(causal=True, norm="time_group_norm")
    with pytest.raises(ConfigError):
        SEANetConfig.from_dict({"ratios": [2], "bogus": 1})
    assert SEANetConfig.from_json(SEANetConfig(ratios=[3, 2]).to_json()).hop_length == 6
    with pytest.raises(ConfigError):
        StreamableConv1d(1, 1, 3, pad_mode="mirror")


# ---------------------------------------------------------------------------------------------
# residual VQ
# ---------------------------------------------------------------------------------------------


def _clustered(centers: torch.Tensor, n: int, g: torch.Generator, batch: int) -> torch.Tensor:
    idx = torch.randint(0, centers.shape[0], (n,), generator=g)
    pts = centers[idx] + 0.1 * torch.randn(n, centers.shape[1], generator=g)
    return pts.T.reshape(centers.shape[1], batch, n // batch).permute(1, 0, 2).contiguous()  # [B, D, T]


def _quant_error(rvq: ResidualVectorQuantizer, x: torch.Tensor) -> float:
    rvq.eval()
    with torch.no_grad():
        return (rvq(x).quantized - x).pow(2).sum(1).mean().item()


def test_rvq_shapes_encode_decode_and_straight_through():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(RVQConfig(dimension=8, n_q=3, bins=16))
    x = torch.randn(2, 8, 30, requires_grad=True)
    out = rvq(x)  # training mode: k-means init on this batch
    assert out.quantized.shape == (2, 8, 30)
    assert out.codes.shape == (2, 3, 30) and out.codes.dtype == torch.int64
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < 16
    assert out.penalty.item() > 0
    out.quantized.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))  # straight-through estimator
    rvq.eval()
    with torch.no_grad():
        ev = rvq(x)
        codes = rvq.encode(x)
        assert torch.equal(codes, ev.codes)
        assert torch.allclose(rvq.decode(codes), ev.quantized, atol=1e-6)
        # more stages -> smaller residual error
        e1 = (rvq.decode(codes[:, :1]) - x).pow(2).mean()
        e3 = (rvq.decode(codes) - x).pow(2).mean()
    assert e3 < e1
    with pytest.raises(InvalidInput):
        rvq.set_num_codebooks(4)
    rvq.set_num_codebooks(2)
    assert rvq.encode(x).shape == (2, 2, 30)
    assert rvq.num_codebooks_for_bandwidth(0.5, frame_rate=50) == 2  # 4 bits * 50 Hz = 0.2 kbps per codebook


def test_quantizer_dropout_varies_in_training_only():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(RVQConfig(dimension=4, n_q=4, bins=8, q_dropout=True))
    x = torch.randn(2, 4, 20)
    used = {rvq(x).num_codebooks for _ in range(40)}
    assert len(used) > 1 and used <= {1, 2, 3, 4}
    shapes = {rvq(x).codes.shape[1] for _ in range(20)}
    assert len(shapes) > 1
    rvq.eval()
    with torch.no_grad():
        assert {rvq(x).num_codebooks for _ in range(10)} == {4}


def test_kmeans_init_and_ema_reduce_quantization_error():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    centers = 3 * torch.randn(16, 8, generator=g)
    held_out = _clustered(centers, 2000, g, 20)

    # random (uniform) codebook, then EMA updates with dead-code replacement
    rvq = ResidualVectorQuantizer(RVQConfig(dimension=8, n_q=1, bins=16, kmeans_init=False))
    e_random = _quant_error(rvq, held_out)
    rvq.train()
    for _ in range(40):
        rvq(_clustered(centers, 800, g, 8))
    e_ema = _quant_error(rvq, held_out)
    assert e_ema < 0.5 * e_random

    # k-means on the first batch lands near the noise floor (0.1^2 * 8 = 0.08)
    km = ResidualVectorQuantizer(RVQConfig(dimension=8, n_q=1, bins=32, kmeans_init=True))
    assert _quant_error(km, held_out) > 10  # uninitialised codebook is all zeros
    km.train()
    km(_clustered(centers, 800, g, 8))
    e_kmeans = _quant_error(km, held_out)
    assert e_kmeans < 0.1 * e_random
    km.train()
    for _ in range(10):
        km(_clustered(centers, 800, g, 8))
    assert _quant_error(km, held_out) <= e_kmeans * 1.05  # EMA keeps a good codebook in place


def test_dead_codes_are_replaced_from_the_batch():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(RVQConfig(dimension=4, n_q=1, bins=8, kmeans_init=False, threshold_ema_dead_code=2))
    cb = rvq.layers[0].codebook
    x = torch.randn(4, 4, 50)  # data near the origin
    with torch.no_grad():
        cb.embed[:4] = torch.randn(4, 4) * 0.5
        cb.embed[4:] = 100.0  # never chosen
        cb.cluster_size[:4] = 50.0
        cb.cluster_size[4:] = 0.0
        cb.embed_avg.copy_(cb.embed * cb.cluster_size[:, None])
    out = rvq(x)
    assert out.metrics["replaced_codes"] == 4
    assert cb.embed[4:].abs().max() < 10  # re-seeded from the batch
    # used codes stayed (they only moved by the EMA update)
    assert cb.embed[:4].abs().max() < 10


# ---------------------------------------------------------------------------------------------
# bottlenecks
# ---------------------------------------------------------------------------------------------


def test_kl_bottleneck():
    torch.manual_seed(0)
    kl = KLBottleneck(12, KLBottleneckConfig(latent_dim=4, kl_weight=5e-3))
    h = torch.randn(2, 12, 40)
    out = kl(h)
    assert out.latents.shape == (2, 4, 40) and out.penalty.item() > 0
    assert out.penalty.item() == pytest.approx(5e-3 * out.metrics["kl"], rel=1e-5)
    # a posterior equal to the prior costs nothing
    with torch.no_grad():
        kl.to_moments.weight.zero_()
        kl.to_moments.bias.zero_()
    assert kl(h).penalty.abs().item() < 1e-7
    # log-variance is clamped: no overflow
    with torch.no_grad():
        kl.to_moments.bias[4:] = 1e4
    assert torch.isfinite(kl(h).penalty)
    kl.eval()
    mean = kl.encode(h)
    assert torch.equal(kl.encode(h), mean)  # deterministic
    assert not torch.equal(kl.encode(h, sample=True), mean)
    # latent scaling: unit std after fitting; unscale inverts scale inside the clip range
    with torch.no_grad():
        kl.to_moments.reset_parameters()
        z = kl.encode(h) * 7.0
    s = kl.fit_scale(z)
    assert kl.scale(z).std().item() == pytest.approx(1.0, rel=1e-4) and s > 0
    assert torch.allclose(kl.unscale(kl.scale(z)), z, atol=1e-5)
    assert kl.unscale(torch.full((1, 4, 2), 100.0)).max().item() == pytest.approx(5.0 / s, rel=1e-5)


def test_masked_bottleneck_masks_about_five_percent_of_frames():
    torch.manual_seed(0)
    mb = MaskedBottleneck(8, MaskedBottleneckConfig(latent_dim=8, mask_rate=0.05))
    with torch.no_grad():
        mb.mask_embedding.fill_(3.0)
    h = torch.randn(8, 8, 2500)
    out = mb(h)
    frac = out.mask.float().mean().item()
    assert 0.04 < frac < 0.06
    m = out.mask[:, None, :].expand_as(h)
    assert torch.all(out.latents[m] == 3.0)
    assert torch.equal(out.latents[~m], h[~m])
    mb.eval()
    ev = mb(h)
    assert ev.mask is None and torch.equal(ev.latents, h)
    zeros = MaskedBottleneck(8, MaskedBottleneckConfig(latent_dim=4, mask_mode="zeros"))
    o = zeros(h)
    assert o.latents.shape == (8, 4, 2500)
    assert torch.all(o.latents.transpose(1, 2)[o.mask] == 0)
    with pytest.raises(ConfigError):
        MaskedBottleneckConfig(mask_rate=1.5)


def _correlated(n_frames: int, a: torch.Tensor, mu: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    noise = torch.randn(n_frames, a.shape[1], generator=g)
    z = noise @ a.T + mu
    return z.T.reshape(a.shape[0], -1, 250).permute(1, 0, 2).contiguous()  # [B, D, 250]


def test_whitening_gives_identity_covariance_on_held_out_data():
    g = torch.Generator().manual_seed(0)
    d = 6
    a = torch.randn(d, d, generator=g)
    mu = 3 * torch.randn(d, generator=g)
    w = Whitener(d)
    for _ in range(8):  # incremental accumulation over a "dataset"
        w.update(_correlated(2000, a, mu, g))
    assert not w.is_fitted
    w.finalize()
    assert w.is_fitted
    held = _correlated(20000, a, mu, g)
    y = w.whiten(held)
    flat = y.transpose(1, 2).reshape(-1, d).double()
    assert flat.mean(0).abs().max() < 0.05
    cov = torch.cov(flat.T)
    assert (cov - torch.eye(d, dtype=cov.dtype)).abs().max() < 0.08
    assert torch.allclose(w.unwhiten(y), held, atol=1e-3)
    # raw data is far from white
    raw_cov = torch.cov(held.transpose(1, 2).reshape(-1, d).T)
    assert (raw_cov - torch.eye(d)).abs().max() > 1
    for name in ("count", "sum", "sum_outer", "mean", "whitening", "unwhitening", "fitted"):
        assert name in w.state_dict()


def test_whitening_drops_degenerate_directions():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 4, generator=g)
    a[3] = a[0] + a[1]  # channel 3 is a linear combination: covariance has rank 3
    w = Whitener(4)
    z = _correlated(4000, a, torch.zeros(4), g)
    w.update(z)
    w.finalize()
    y = w.whiten(z)
    assert torch.isfinite(y).all()
    cov = torch.cov(y.transpose(1, 2).reshape(-1, 4).T)
    eig = torch.linalg.eigvalsh(cov)
    assert eig[0].abs() < 1e-3 and torch.allclose(eig[1:], torch.ones(3), atol=0.05)
    assert torch.allclose(w.unwhiten(y), z, atol=1e-3)
    with pytest.raises(InvalidInput):
        Whitener(4).finalize()
    with pytest.raises(InvalidInput):
        w.update(torch.randn(2, 5, 10))


# ---------------------------------------------------------------------------------------------
# discriminators and losses
# ---------------------------------------------------------------------------------------------


def test_discriminator_output_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 2000)
    ms = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(256, 128), hop_lengths=(64, 32), win_lengths=(256, 128))
    out = ms(x)
    assert len(out) == 2
    for logits, fmap in out:
        assert logits.dim() == 4 and logits.shape[:2] == (2, 1) and len(fmap) == 5
    mpd = MultiPeriodDiscriminator(periods=(2, 3, 5), channels=(4, 8, 8))
    out = mpd(x)
    assert len(out) == 3
    for (logits, fmap), p in zip(out, (2, 3, 5)):
        assert logits.shape[0] == 2 and logits.shape[1] == 1 and logits.shape[-1] == p and len(fmap) == 4
    mrd = MultiResolutionSpectrogramDiscriminator(channels=4, resolutions=((256, 32, 128), (128, 16, 64)))
    out = mrd(torch.randn(2, 2, 2000)[:, :1])
    assert len(out) == 2 and all(len(f) == 6 for _, f in out)
    stereo = DiscriminatorConfig(kinds=["msstftd", "mpd", "mrd"], msstftd_filters=4, msstftd_n_ffts=[128],
                                 msstftd_hop_lengths=[32], msstftd_win_lengths=[128], mpd_periods=[2],
                                 mpd_channels=[4, 4], mrd_resolutions=[[128, 16, 64]], mrd_channels=4).build(2)
    assert len(stereo(torch.randn(1, 2, 1000))) == 3
    with pytest.raises(InvalidInput):
        mpd(torch.randn(2, 2, 100))
    with pytest.raises(ConfigError):
        DiscriminatorConfig(kinds=["nope"])


def test_adversarial_loss_signs():
    real_good, fake_good = [torch.full((2, 1, 5), 2.0)], [torch.full((2, 1, 5), -2.0)]
    assert hinge_discriminator_loss(real_good, fake_good).item() == 0.0  # perfect discriminator
    assert hinge_discriminator_loss(fake_good, real_good).item() > 0
    assert hinge_generator_loss(fake_good).item() == pytest.approx(3.0)
    assert hinge_generator_loss(real_good).item() == 0.0
    ones, zeros = [torch.ones(2, 1, 5)], [torch.zeros(2, 1, 5)]
    assert lsgan_discriminator_loss(ones, zeros).item() == 0.0
    assert lsgan_discriminator_loss(zeros, ones).item() == pytest.approx(2.0)
    assert lsgan_generator_loss(zeros).item() == pytest.approx(1.0)
    assert lsgan_generator_loss(ones).item() == 0.0
    r = [[torch.randn(2, 3, 4), torch.randn(2, 3, 2)]]
    f = [[t.clone().requires_grad_() for t in r[0]]]
    assert feature_matching_loss(r, f).item() == 0.0
    f2 = [[(t + 1).requires_grad_() for t in r[0]]]
    loss = feature_matching_loss(r, f2, relative=False)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert f2[0][0].grad is not None


def test_spectral_losses_are_zero_for_identical_and_grow_with_error():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4000) * 0.3
    mr = MultiResolutionSTFTLoss(fft_sizes=(256, 512), hop_sizes=(32, 64), win_lengths=(128, 256))
    sc, mag = mr(x, x)
    assert sc.item() < 1e-6 and mag.item() < 1e-6
    small = sum(mr(x + 0.01 * torch.randn_like(x), x))
    large = sum(mr(x + 0.3 * torch.randn_like(x), x))
    assert 0 < small < large
    mel = MultiScaleMelLoss(16000, scales=(6, 7, 8))
    assert mel(x, x).item() < 1e-6
    assert 0 < mel(x + 0.01 * torch.randn_like(x), x) < mel(x + 0.3 * torch.randn_like(x), x)


def test_codec_loss_presets_and_total():
    enc = CodecLossConfig.encodec()
    assert (enc.l1, enc.mel, enc.adv, enc.feat, enc.adversarial) == (0.1, 1.0, 3.0, 3.0, "hinge")
    mel = CodecLossConfig.melody()
    assert (mel.mrstft, mel.feat, mel.adv, mel.adversarial) == (50.0, 20.0, 1.0, "lsgan")
    assert CodecLossConfig.from_json(mel.to_json()) == mel
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(128,), hop_lengths=(32,), win_lengths=(128,))
    cfg = CodecLossConfig.encodec().replace(mel_scales=[5, 6, 7])
    loss = CodecLoss(cfg, sample_rate=8000)
    x = torch.randn(2, 1, 1000) * 0.3
    x_hat = (x + 0.1 * torch.randn_like(x)).requires_grad_()
    total, metrics = loss.generator_loss(x, x_hat, disc(x_hat), disc(x), penalty=torch.tensor(0.5))
    assert set(metrics) >= {"l1", "mel", "adv_g", "feat", "penalty", "generator"}
    total.backward()
    assert x_hat.grad is not None and torch.isfinite(total)
    d_loss, _ = loss.discriminator_loss(disc(x), disc(x_hat.detach()))
    assert d_loss.item() >= 0
    with pytest.raises(InvalidInput):
        loss.generator_loss(x, x_hat)  # adversarial terms need discriminator outputs
    with pytest.raises(ConfigError):
        CodecLossConfig(adversarial="wasserstein")


def test_replaced_codes_survive_the_ema_update():
    """A re-seeded codeword must not be pulled back to its dead value by the same step's EMA update."""
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(RVQConfig(dimension=4, n_q=1, bins=8, kmeans_init=False, threshold_ema_dead_code=2))
    cb = rvq.layers[0].codebook
    x = torch.randn(4, 4, 50)
    with torch.no_grad():
        cb.embed[:4] = torch.randn(4, 4) * 0.5
        cb.embed[4:] = 100.0  # rarely used: EMA usage below the threshold but not zero
        cb.cluster_size[:4] = 50.0
        cb.cluster_size[4:] = 1.0
        cb.embed_avg.copy_(cb.embed * cb.cluster_size[:, None])
    out = rvq(x)
    assert out.metrics["replaced_codes"] == 4
    data = x.permute(0, 2, 1).reshape(-1, 4)
    nearest = torch.cdist(cb.embed[4:], data).min(dim=1).values
    assert nearest.max() < 1.0, nearest  # they sit among the batch vectors, not back at 100
    assert torch.all(cb.cluster_size[4:] >= 0.99 * 2.0)  # usage reset to the threshold, then decayed once
