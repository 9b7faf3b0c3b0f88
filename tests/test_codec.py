"""The codec family: EnCodec compatibility, round trips, persistence, and input validation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunecraft.codecs import (
    CodecGAN,
    CompressionModel,
    MaskedAEConfig,
    MaskedAutoencoder,
    RVQCodec,
    RVQCodecConfig,
    VAEGANCodec,
    VAEGANConfig,
    convert_encodec,
    from_audiocraft,
    from_transformers,
    load_codec,
)
from tunecraft.errors import CheckpointError, InvalidInput
from tunecraft.modules.bottlenecks import KLBottleneckConfig, MaskedBottleneckConfig
from tunecraft.modules.discriminators import DiscriminatorConfig
from tunecraft.modules.quantization import RVQConfig
from tunecraft.modules.seanet import SEANetConfig

transformers = pytest.importorskip("transformers")
from transformers.models.encodec import modeling_encodec as hf_enc  # noqa: E402

SR = 8000


pytestmark = pytest.mark.usefixtures("single_thread")

# ---------------------------------------------------------------------------------------------
# tiny models
# ---------------------------------------------------------------------------------------------


def tiny_rvq(**quant) -> RVQCodec:
    q = dict(dimension=16, n_q=4, bins=32)
    q.update(quant)
    return RVQCodec(RVQCodecConfig(sample_rate=SR, seanet=SEANetConfig(dimension=16, n_filters=4, ratios=[4, 2], lstm=1),
                                   quantizer=RVQConfig(**q)))


def tiny_vae() -> VAEGANCodec:
    return VAEGANCodec(VAEGANConfig(sample_rate=SR, seanet=SEANetConfig(dimension=8, n_filters=4, ratios=[4, 2], lstm=0),
                                    bottleneck=KLBottleneckConfig(latent_dim=4)))


def tiny_mae() -> MaskedAutoencoder:
    return MaskedAutoencoder(MaskedAEConfig(
        sample_rate=SR, seanet=SEANetConfig(channels=2, dimension=8, n_filters=4, ratios=[4, 2], lstm=0),
        bottleneck=MaskedBottleneckConfig(latent_dim=6)))


def tiny_hf(causal: bool, shortcut: bool, pad_mode: str, channels: int = 1, norm: str = "weight_norm"):
    cfg = transformers.EncodecConfig(
        sampling_rate=SR, audio_channels=channels, hidden_size=16, num_filters=4, upsampling_ratios=[4, 2],
        codebook_size=32, target_bandwidths=[5.0, 20.0], num_lstm_layers=1, use_causal_conv=causal,
        use_conv_shortcut=shortcut, pad_mode=pad_mode, norm_type=norm, num_residual_layers=1,
    )
    torch.manual_seed(0)
    model = transformers.EncodecModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm." in name:  # GroupNorm affine starts at 1/0: make it non-trivial
                p.add_(0.1 * torch.randn_like(p))
        # seed each codebook with residuals of real encoder outputs so codes vary
        frames = model.encoder(0.3 * torch.randn(4, channels, 2000)).transpose(1, 2).reshape(-1, 16)
        residual = frames
        for layer in model.quantizer.layers:
            embed = residual[torch.randperm(residual.shape[0])[:32]].clone()
            layer.codebook.embed.copy_(embed)
            layer.codebook.embed_avg.copy_(embed)
            residual = residual - embed[layer.codebook.quantize(residual)]
    return model


def hf_codes_and_audio(model, x, bandwidth):
    with torch.no_grad():
        enc = model.encode(x, bandwidth=bandwidth)
        wav = model.decode(enc.audio_codes, enc.audio_scales)[0]
    return enc.audio_codes[0], wav


# ---------------------------------------------------------------------------------------------
# official EnCodec compatibility
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "causal,shortcut,pad_mode,channels,norm",
    [
        (True, True, "reflect", 1, "weight_norm"),
        (False, False, "constant", 2, "weight_norm"),
        (False, True, "reflect", 1, "time_group_norm"),
    ],
)
def test_transformers_encodec_matches(causal, shortcut, pad_mode, channels, norm):
    hf = tiny_hf(causal, shortcut, pad_mode, channels, norm)
    ours = from_transformers(hf)
    assert ours.total_codebooks == 4 and ours.cardinality == 32 and ours.frame_rate == SR / 8
    torch.manual_seed(1)
    x = 0.3 * torch.randn(2, channels, 1203)
    codes_hf, wav_hf = hf_codes_and_audio(hf, x, 20.0)
    codes = ours.encode(x)
    assert codes.shape == (2, 4, math.ceil(1203 / 8))
    assert len(torch.unique(codes[:, 0])) > 3  # a meaningful comparison
    assert torch.equal(codes, codes_hf)
    wav = ours.decode(codes)
    assert wav.shape == wav_hf.shape
    assert (wav - wav_hf).abs().max().item() < 1e-4
    # lower bandwidth: 5 kbps = one codebook of 5 bits at 1 kHz frames
    ours.set_bandwidth(5.0)
    codes_hf1, wav_hf1 = hf_codes_and_audio(hf, x, 5.0)
    assert ours.num_codebooks == 1 and ours.bandwidth == pytest.approx(5.0)
    assert torch.equal(ours.encode(x), codes_hf1)
    assert (ours.decode(codes_hf1) - wav_hf1).abs().max().item() < 1e-4


def test_transformers_directory_and_save_round_trip(tmp_path):
    hf = tiny_hf(False, False, "reflect")
    hf.save_pretrained(tmp_path / "hf")
    x = 0.3 * torch.randn(1, 1, 800)
    codes_hf, wav_hf = hf_codes_and_audio(hf, x, 20.0)
    out = convert_encodec(tmp_path / "hf", tmp_path / "ours")
    model = load_codec(out)
    assert isinstance(model, RVQCodec)
    assert torch.equal(model.encode(x), codes_hf)
    assert (model.decode(codes_hf) - wav_hf).abs().max().item() < 1e-4


def _audiocraft_package(hf) -> dict:
    """An exported audiocraft checkpoint with the weights of ``hf``, built from audiocraft's key names."""
    wn = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    state = {}
    for key, value in hf.state_dict().items():
        for new, old in wn.items():
            key = key.replace(new, old)
        parts = key.split(".")
        if parts[0] in ("encoder", "decoder"):
            side, idx, rest = parts[0], int(parts[2]), parts[3:]
            module = getattr(hf, side).layers[idx]
            if isinstance(module, hf_enc.EncodecConvTranspose1d):
                rest = ["convtr", "convtr"] + rest[1:]
            elif isinstance(module, hf_enc.EncodecConv1d):
                rest = ["conv"] + rest
            elif isinstance(module, hf_enc.EncodecResnetBlock):
                head = 2 if rest[0] == "block" else 1
                rest = rest[:head] + ["conv"] + rest[head:]
            key = ".".join([side, "model", str(idx)] + rest)
        elif parts[0] == "quantizer":
            key = ".".join(["quantizer", "vq", "layers", parts[2], "_codebook"] + parts[4:])
        state[key] = value.clone()
    assert "encoder.model.0.conv.conv.weight_g" in state
    assert "quantizer.vq.layers.0._codebook.embed" in state
    yaml_cfg = f"""
sample_rate: {SR}
channels: 1
compression_model: encodec
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${{sample_rate}}
  channels: ${{channels}}
  causal: false
  renormalize: false
seanet:
  dimension: 16
  channels: ${{channels}}
  causal: ${{encodec.causal}}
  n_filters: 4
  n_residual_layers: 1
  ratios: [4, 2]
  activation: ELU
  activation_params: {{alpha: 1.0}}
  norm: weight_norm
  norm_params: {{}}
  kernel_size: 7
  residual_kernel_size: 3
  last_kernel_size: 7
  dilation_base: 2
  pad_mode: constant
  true_skip: true
  compress: 2
  lstm: 1
  disable_norm_outer_blocks: 0
  decoder: {{trim_right_ratio: 1.0, final_activation: null, final_activation_params: null}}
  encoder: {{}}
rvq:
  n_q: 4
  q_dropout: false
  bins: 32
  decay: 0.99
  kmeans_init: true
  kmeans_iters: 50
  threshold_ema_dead_code: 2
  orthogonal_reg_weight: 0.0
  orthogonal_reg_active_codes_only: false
"""
    return {"best_state": state, "xp.cfg": yaml_cfg, "version": "1.3.0", "exported": True}


def test_audiocraft_checkpoint_matches(tmp_path):
    hf = tiny_hf(False, False, "constant")
    path = tmp_path / "compression_state_dict.bin"
    torch.save(_audiocraft_package(hf), path)
    ours = from_audiocraft(path)
    assert ours.config.seanet.pad_mode == "constant" and ours.sample_rate == SR
    x = 0.3 * torch.randn(2, 1, 999)
    codes_hf, wav_hf = hf_codes_and_audio(hf, x, 20.0)
    assert torch.equal(ours.encode(x), codes_hf)
    assert (ours.decode(codes_hf) - wav_hf).abs().max().item() < 1e-4


def test_unsupported_checkpoints_are_rejected(tmp_path):
    cfg48 = transformers.EncodecConfig(sampling_rate=SR, audio_channels=2, hidden_size=16, num_filters=4,
                                       upsampling_ratios=[4, 2], codebook_size=32, target_bandwidths=[5.0],
                                       num_lstm_layers=1, normalize=True, chunk_length_s=1.0, overlap=0.01,
                                       norm_type="time_group_norm", use_causal_conv=False)
    with pytest.raises(CheckpointError, match="48 kHz"):
        from_transformers(transformers.EncodecModel(cfg48))
    pkg = _audiocraft_package(tiny_hf(False, False, "constant"))
    pkg["xp.cfg"] = pkg["xp.cfg"].replace("renormalize: false", "renormalize: true")
    with pytest.raises(CheckpointError, match="renormalises"):
        from_audiocraft(pkg)
    with pytest.raises(CheckpointError, match="facebook/encodec_32khz"):
        from_audiocraft({"pretrained": "facebook/encodec_32khz", "exported": True})
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        from_audiocraft(tmp_path / "junk.bin")
    bad = _audiocraft_package(tiny_hf(False, False, "constant"))
    bad["best_state"].pop("encoder.model.0.conv.conv.bias")
    with pytest.raises(CheckpointError, match="missing"):
        from_audiocraft(bad)


# ---------------------------------------------------------------------------------------------
# round trips and training passes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_rvq, tiny_vae, tiny_mae])
def test_training_pass_and_a_few_steps_reduce_the_loss(make):
    torch.manual_seed(0)
    model = make()
    x = 0.5 * torch.sin(torch.linspace(0, 300, 800)).expand(2, model.channels, -1).contiguous()
    x = x + 0.05 * torch.randn_like(x)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(25):
        out = model(x)
        assert out.wav.shape == x.shape and torch.isfinite(out.penalty)
        loss = (out.wav - x).abs().mean() + out.penalty
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append((out.wav - x).abs().mean().item())
    assert min(losses[-5:]) < 0.7 * losses[0]


def test_rvq_codec_interface():
    torch.manual_seed(0)
    model = tiny_rvq(q_dropout=True)
    x = 0.3 * torch.randn(3, 1, 1001)
    model.train()
    used = {model(x).codes.shape[1] for _ in range(20)}
    assert len(used) > 1  # variable bitrate in training
    model.eval()
    codes = model.encode(x)
    assert codes.shape == (3, 4, math.ceil(1001 / 8)) and codes.dtype == torch.int64
    assert not codes.is_inference()
    assert torch.equal(model.encode(x), codes)  # deterministic
    wav = model.decode(codes)
    assert wav.shape == (3, 1, codes.shape[-1] * 8)
    assert model.decode(codes, length=1001).shape == (3, 1, 1001)
    assert model.reconstruct(x).shape == x.shape
    assert model.decode(codes[:, :2]).shape == wav.shape  # fewer codebooks decode too
    assert model.bandwidth == pytest.approx(4 * 5 * 1000 / 1000)
    model.set_num_codebooks(2)
    assert model.encode(x).shape[1] == 2
    with pytest.raises(InvalidInput):
        model.set_num_codebooks(0)


def test_continuous_codecs_interface():
    torch.manual_seed(0)
    vae = tiny_vae().eval()
    x = 0.3 * torch.randn(2, 1, 640)
    z = vae.encode(x)
    assert z.shape == (2, 4, 80) and vae.latent_dim == 4
    assert torch.equal(vae.encode(x), z) and not torch.equal(vae.encode(x, sample=True), z)
    assert vae.decode(z).shape == (2, 1, 640)
    # latents are ordinary tensors usable in a training graph
    lin = torch.nn.Linear(80, 1)
    lin(z).sum().backward()
    scale = vae.fit_latent_scale([x, 0.5 * x])
    assert scale > 0 and vae.encode(x).std().item() == pytest.approx(scale * vae.encode(x, scaled=False).std().item(), rel=1e-4)
    assert torch.allclose(vae.decode(vae.encode(x)), vae.decode(vae.encode(x, scaled=False), scaled=False), atol=1e-5)

    mae = tiny_mae().eval()
    xs = 0.3 * torch.randn(2, 2, 800)
    assert not mae.is_whitened
    raw = mae.encode(xs)
    assert raw.shape == (2, 6, 100)
    with pytest.raises(InvalidInput, match="whitening"):
        mae.encode(xs, whiten=True)
    mae.fit_whitening([0.3 * torch.randn(4, 2, 800) for _ in range(3)])
    assert mae.is_whitened
    white = mae.encode(xs)
    assert not torch.allclose(white, raw)
    assert torch.allclose(mae.whitener.unwhiten(white), raw, atol=1e-4)
    assert torch.allclose(mae.decode(white), mae.decode(raw, whitened=False), atol=1e-4)
    mae.train()
    out = mae(torch.randn(8, 2, 4000) * 0.3)
    assert out.mask is not None and out.mask.shape == (8, 500)
    assert 0.02 < out.mask.float().mean().item() < 0.08


def test_codec_gan_phases():
    torch.manual_seed(0)
    codec = tiny_rvq()
    codec.config.discriminator = DiscriminatorConfig(kinds=["msstftd"], msstftd_filters=4, msstftd_n_ffts=[128, 64],
                                                     msstftd_hop_lengths=[32, 16], msstftd_win_lengths=[128, 64])
    codec.config.loss = codec.config.loss.replace(mel_scales=[5, 6])
    gan = CodecGAN(codec).train()
    assert gan.phases == ("discriminator", "generator")
    x = 0.3 * torch.randn(2, 1, 800)
    books = {k: v.clone() for k, v in codec.quantizer.state_dict().items()}
    d_loss, d_logs = gan(x, "discriminator")
    d_loss.backward()
    assert d_loss.item() >= 0 and "discriminator" in d_logs
    assert all(torch.equal(v, codec.quantizer.state_dict()[k]) for k, v in books.items())  # codebooks untouched
    assert all(p.grad is None for p in gan.generator_parameters())
    assert any(p.grad is not None for p in gan.discriminator_parameters())
    gan.zero_grad()
    g_loss, g_logs = gan(x, "generator")
    g_loss.backward()
    assert torch.isfinite(g_loss) and {"l1", "mel", "adv_g", "feat", "penalty", "bandwidth_kbps"} <= set(g_logs)
    assert codec.quantizer.layers[0].codebook.inited.item() == 1.0  # k-means ran in the generator phase
    assert all(p.grad is not None for p in codec.encoder.parameters())
    warm, logs = gan(x, "generator", adversarial=False)
    assert "adv_g" not in logs and torch.isfinite(warm)
    with pytest.raises(InvalidInput):
        gan(x, "critic")


# ---------------------------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_rvq()
    x = 0.3 * torch.randn(2, 1, 800)
    model.train()
    model(x)  # k-means initialises the codebooks
    model.eval()
    codes, wav = model.encode(x), model.decode(model.encode(x))
    d32 = model.save_pretrained(tmp_path / "fp32")
    meta = json.loads((d32 / "config.json").read_text())
    assert meta["class"] == "RVQCodec" and meta["format_version"] == 1 and meta["model_version"] == 1
    loaded = CompressionModel.from_pretrained(d32)
    assert isinstance(loaded, RVQCodec) and not loaded.training
    assert torch.equal(loaded.encode(x), codes) and torch.equal(loaded.decode(codes), wav)

    d16 = model.save_pretrained(tmp_path / "fp16", dtype="float16")
    from safetensors import safe_open

    with safe_open(str(d16 / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    params = {n for n, _ in model.named_parameters()}
    assert all(dtypes[k] == "F16" for k in params)  # weights in half precision
    assert dtypes["quantizer.layers.0.codebook.embed"] == "F16"  # codewords ship in half precision
    assert dtypes["quantizer.layers.0.codebook.cluster_size"] == "F32"  # usage counts keep float32
    assert not any(k.endswith("embed_avg") for k in dtypes)  # EMA sums are rebuilt on load
    assert (d16 / "model.safetensors").stat().st_size < (d32 / "model.safetensors").stat().st_size
    half = RVQCodec.from_pretrained(d16)
    assert all(p.dtype == torch.float32 for p in half.state_dict().values() if p.is_floating_point())
    assert (half.decode(codes) - wav).abs().max().item() < 1e-2
    book = half.quantizer.layers[0].codebook
    assert torch.allclose(book.embed_avg, book.embed * book.cluster_size[:, None])

    mae = tiny_mae().eval()
    mae.fit_whitening(0.3 * torch.randn(4, 2, 800))
    xs = 0.3 * torch.randn(1, 2, 400)
    mae_loaded = MaskedAutoencoder.from_pretrained(mae.save_pretrained(tmp_path / "mae", dtype="float16"))
    assert mae_loaded.is_whitened and mae_loaded.whitener.sum.dtype == torch.float64
    assert torch.allclose(mae_loaded.encode(xs), mae.encode(xs), atol=5e-2)
    vae = tiny_vae()
    vae.bottleneck.latent_scale.fill_(0.25)
    assert VAEGANCodec.from_pretrained(vae.save_pretrained(tmp_path / "vae")).latent_scale == 0.25


def test_bundle_lookup(tmp_path, monkeypatch):
    import tunecraft.pretrained as pretrained

    monkeypatch.setattr(pretrained, "BUNDLES_DIR", tmp_path)
    tiny_vae().save_pretrained(tmp_path / "vae-tiny")
    assert isinstance(load_codec("vae-tiny"), VAEGANCodec)
    with pytest.raises(CheckpointError, match="vae-tiny"):  # the error lists what is installed
        load_codec("no-such-codec")


def test_loading_checks(tmp_path):
    d = tiny_rvq().save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not a VAEGANCodec"):
        VAEGANCodec.from_pretrained(d)
    with pytest.raises(CheckpointError):
        load_codec(tmp_path / "missing")

    def edited(name, change):
        import shutil

        target = tmp_path / name
        shutil.copytree(d, target)
        meta = json.loads((target / "config.json").read_text())
        change(meta)
        (target / "config.json").write_text(json.dumps(meta))
        return target

    with pytest.raises(CheckpointError, match="format version"):
        load_codec(edited("fmt", lambda m: m.update(format_version=99)))
    with pytest.raises(CheckpointError, match="version"):
        load_codec(edited("ver", lambda m: m.update(model_version=2)))
    with pytest.raises(CheckpointError, match="shape"):
        load_codec(edited("shape", lambda m: m["config"]["quantizer"].update(bins=64)))
    with pytest.raises(CheckpointError, match="invalid config"):
        load_codec(edited("key", lambda m: m["config"].update(bogus=1)))
    with pytest.raises(CheckpointError, match="not a codec"):
        load_codec(edited("cls", lambda m: m.update({"class": "Nope"})))
    corrupt = edited("corrupt", lambda m: None)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_codec(corrupt)
    with pytest.raises(InvalidInput):
        tiny_rvq().save_pretrained(tmp_path / "x", dtype="int8")


# ---------------------------------------------------------------------------------------------
# input validation, resampling and channels
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_invalid_input():
    model = tiny_rvq().eval()
    x = torch.zeros(1, 1, 100)
    for bad in (torch.full((1, 1, 10), float("nan")), torch.full((1, 1, 10), float("inf")), torch.zeros(1, 1, 0),
                torch.zeros(0, 1, 10), torch.zeros(1, 10), torch.zeros(1, 1, 10, dtype=torch.int16), "audio"):
        with pytest.raises(InvalidInput):
            model.encode(bad)
    with pytest.raises(InvalidInput):
        model.encode(x, sample_rate=0)
    good = model.encode(x)
    for bad_codes in (good + 32, good - good - 1, good.float(), good[:, :, :0], good[0],
                      torch.cat([good, good], dim=1)):
        with pytest.raises(InvalidInput):
            model.decode(bad_codes)
    mae = tiny_mae()
    with pytest.raises(InvalidInput):
        mae.decode(torch.zeros(1, 5, 10))
    with pytest.raises(InvalidInput):
        mae.decode(torch.full((1, 6, 10), float("nan")))
    with pytest.raises(InvalidInput):
        tiny_vae()(torch.zeros(1, 2, 100))


def test_resampling_and_channel_conversion():
    torch.manual_seed(0)
    model = tiny_rvq().eval()
    t = torch.arange(1600) / 16000
    x16 = (0.5 * torch.sin(2 * math.pi * 440 * t))[None, None]
    codes = model.encode(x16, sample_rate=16000)
    assert codes.shape[-1] == math.ceil(800 / 8)
    x8 = x16[..., ::2]
    z_resampled = model.quantizer.decode(codes)
    z_direct = model.quantizer.decode(model.encode(x8))
    assert z_resampled.shape == z_direct.shape
    stereo = 0.3 * torch.randn(2, 2, 400)
    assert torch.equal(model.encode(stereo), model.encode(stereo.mean(1, keepdim=True)))
    mae = tiny_mae().eval()
    mono = 0.3 * torch.randn(1, 1, 400)
    assert torch.equal(mae.encode(mono), mae.encode(mono.expand(1, 2, 400)))
    quad = 0.3 * torch.randn(1, 4, 400)  # more than two channels: averaged, then duplicated
    assert torch.equal(mae.encode(quad), mae.encode(quad.mean(1, keepdim=True)))
    assert model.encode(0.1 * torch.randn(400)).shape == (1, 4, 50)  # a bare mono signal
