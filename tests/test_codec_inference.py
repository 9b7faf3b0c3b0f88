"""The codecs' inference fast path against the reference computation.

Without autograd the SEANet runs convolutions with their own zero padding in the NWC layout,
computes activations and residual sums in place, caches weight-normed weights, and the
quantiser searches codewords with in-place distance updates (tunecraft.modules.conv/seanet/
quantization). Here a plain re-implementation of the original computation (``F.pad`` copies,
``[B, C, T]`` layout, fresh tensors everywhere) is the reference: codes must be identical and
latents/audio equal to float rounding.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from tunecraft.codecs import MaskedAEConfig, MaskedAutoencoder, RVQCodec, RVQCodecConfig
from tunecraft.modules.conv import (
    StreamableConv1d,
    StreamableConvTranspose1d,
    extra_padding_for_conv1d,
    padded_conv,
    pad1d,
    to_nwc,
    unpad1d,
)
from tunecraft.modules.quantization import RVQConfig, nearest_codewords, squared_distances
from tunecraft.modules.seanet import SEANetConfig, SEANetResnetBlock, StreamableLSTM

SR = 8000


pytestmark = pytest.mark.usefixtures("single_thread")


# ---- the reference computation (the code before the fast path) -----------------------------


def ref_conv(m: StreamableConv1d, x: torch.Tensor) -> torch.Tensor:
    conv = m.conv.conv
    k = (conv.kernel_size[0] - 1) * conv.dilation[0] + 1
    s = conv.stride[0]
    total = k - s
    extra = extra_padding_for_conv1d(x.shape[-1], k, s, total)
    if m.causal:
        x = pad1d(x, (total, extra), mode=m.pad_mode)
    else:
        right = total // 2
        x = pad1d(x, (total - right, right + extra), mode=m.pad_mode)
    return m.conv.norm(F.conv1d(x, conv.weight, conv.bias, s, 0, conv.dilation[0], conv.groups))


def ref_convtr(m: StreamableConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    convtr = m.convtr.convtr
    total = convtr.kernel_size[0] - convtr.stride[0]
    y = m.convtr.norm(F.conv_transpose1d(x, convtr.weight, convtr.bias, convtr.stride[0]))
    right = math.ceil(total * m.trim_right_ratio) if m.causal else total // 2
    return unpad1d(y, (total - right, right))


def ref_run(modules, x: torch.Tensor) -> torch.Tensor:
    for m in modules:
        if isinstance(m, StreamableConv1d):
            x = ref_conv(m, x)
        elif isinstance(m, StreamableConvTranspose1d):
            x = ref_convtr(m, x)
        elif isinstance(m, SEANetResnetBlock):
            short = x if isinstance(m.shortcut, torch.nn.Identity) else ref_conv(m.shortcut, x)
            x = short + ref_run(m.block, x)
        elif isinstance(m, StreamableLSTM):
            seq = x.permute(2, 0, 1)
            y, _ = m.lstm(seq)
            x = (y + seq if m.skip else y).permute(1, 2, 0)
        else:
            x = m(x)
    return x


def ref_encode_codes(codec: RVQCodec, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoder output, codes) computed the original way."""
    with torch.no_grad():
        z = ref_run(codec.encoder.model, wav)
        residual, codes = z, []
        for layer in codec.quantizer.layers[: codec.num_codebooks]:
            flat = residual.transpose(1, 2).reshape(-1, residual.shape[1])
            c = squared_distances(flat, layer.codebook.embed).max(dim=-1).indices.view(wav.shape[0], -1)
            residual = residual - layer.codebook.embed[c].transpose(1, 2)
            codes.append(c)
    return z, torch.stack(codes, dim=1)


def ref_decode(codec, codes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = sum(codec.quantizer.layers[k].codebook.embed[codes[:, k]] for k in range(codes.shape[1]))
        return ref_run(codec.decoder.model, z.transpose(1, 2))


def tiny_codec(seed: int = 0, **seanet) -> RVQCodec:
    torch.manual_seed(seed)
    kw = dict(dimension=16, n_filters=4, ratios=[5, 4, 2], lstm=2)
    kw.update(seanet)
    codec = RVQCodec(RVQCodecConfig(sample_rate=SR, seanet=SEANetConfig(**kw),
                                    quantizer=RVQConfig(dimension=16, n_q=6, bins=64)))
    with torch.no_grad():  # non-trivial weight norm gains, norms and codebooks seeded with real latents
        for name, p in codec.named_parameters():
            if name.endswith("original0") or ".norm." in name:
                p.mul_(1 + 0.2 * torch.rand_like(p))
        z = codec.encoder.model(0.3 * torch.randn(4, kw.get("channels", 1), 4000)).transpose(1, 2).reshape(-1, 16)
        residual = z
        for layer in codec.quantizer.layers:
            embed = residual[torch.randperm(residual.shape[0])[:64]].clone()
            layer.codebook.embed.copy_(embed)
            layer.codebook.inited.fill_(1.0)
            residual = residual - embed[squared_distances(residual, embed).max(-1).indices]
    return codec.eval()


# ---- padded_conv ----------------------------------------------------------------------------


@pytest.mark.parametrize("nwc", [False, True])
def test_padded_conv_equals_pad_then_conv(nwc):
    torch.manual_seed(0)
    for k, s, d, left, right, length in [(3, 1, 1, 1, 1, 50), (7, 1, 1, 3, 3, 9), (3, 1, 4, 4, 4, 30),
                                         (8, 4, 1, 2, 2, 64), (8, 4, 1, 2, 5, 61), (10, 5, 1, 3, 6, 47),
                                         (16, 8, 1, 4, 11, 33), (16, 8, 1, 8, 7, 5), (4, 2, 1, 2, 0, 13),
                                         (6, 3, 1, 0, 2, 4), (5, 5, 1, 0, 4, 3), (1, 1, 1, 0, 0, 7)]:
        x = torch.randn(2, 3, length)
        w, b = torch.randn(5, 3, k), torch.randn(5)
        ref = F.conv1d(F.pad(x, (left, right)), w, b, s, 0, d)
        if nwc:
            out = padded_conv(to_nwc(x), w.unsqueeze(2).contiguous(memory_format=torch.channels_last), b, s, d, 1,
                              left, right).squeeze(2)
        else:
            out = padded_conv(x, w, b, s, d, 1, left, right)
        assert out.shape == ref.shape, (k, s, left, right, length)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_padded_conv_keeps_gradients():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 29, requires_grad=True)
    w = torch.randn(3, 2, 8, requires_grad=True)
    padded_conv(x, w, None, 4, 1, 1, 2, 5).square().sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    F.conv1d(F.pad(x, (2, 5)), w, None, 4).square().sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)


# ---- the whole codec ------------------------------------------------------------------------


@pytest.mark.parametrize("seanet", [
    {},
    {"causal": True},
    {"pad_mode": "reflect", "true_skip": False},
    {"norm": "time_group_norm", "lstm": 1},
    {"channels": 2, "lstm": 0, "activation": "LeakyReLU", "activation_params": {"negative_slope": 0.2}},
])
@pytest.mark.parametrize("encoder_layout", ["ncw", "nwc"])
def test_fast_inference_equals_reference_computation(seanet, encoder_layout):
    codec = tiny_codec(**seanet)
    codec.encoder.inference_layout = encoder_layout
    torch.manual_seed(1)
    for batch, length in [(1, 4000), (3, 4000), (1, 3333), (2, 1201), (1, 41)]:
        wav = 0.3 * torch.randn(batch, codec.channels, length)
        z_ref, codes_ref = ref_encode_codes(codec, wav)
        with torch.inference_mode():
            z = codec.encoder(wav)
        if encoder_layout == "ncw" and seanet.get("norm") != "time_group_norm":
            assert torch.equal(z, z_ref)  # the default encoder path is bit-exact
        torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
        codes = codec.encode(wav)
        assert codes.shape == (batch, 6, math.ceil(length / 40))
        assert len(torch.unique(codes[:, 0])) > 1 or length < 100  # a meaningful comparison
        assert torch.equal(codes, codes_ref), (seanet, batch, length)
        audio = codec.decode(codes)
        audio_ref = ref_decode(codec, codes_ref)
        assert audio.shape == audio_ref.shape and audio.is_contiguous()
        assert (audio - audio_ref).abs().max().item() < 1e-4
        codec.set_num_codebooks(3)
        assert torch.equal(codec.encode(wav), codes_ref[:, :3])
        codec.set_num_codebooks(6)


def test_training_path_is_unchanged_and_differentiable():
    codec = tiny_codec()
    codec.train()
    wav = 0.3 * torch.randn(2, 1, 1203)
    z = codec.encoder(wav)  # autograd on: the plain [B, C, T] path
    z_ref = ref_run(codec.encoder.model, wav)
    torch.testing.assert_close(z, z_ref, rtol=1e-6, atol=1e-6)
    z.square().mean().backward()
    assert all(p.grad is not None for p in codec.encoder.parameters())


def test_cached_weights_follow_parameter_updates():
    codec = tiny_codec()
    wav = 0.3 * torch.randn(1, 1, 2000)
    before = codec.encode(wav)
    # an optimiser step on the weight-norm parameters must invalidate the cached weights
    opt = torch.optim.SGD(codec.encoder.parameters(), lr=0.5)
    codec.encoder(wav).square().mean().backward()
    opt.step()
    after = codec.encode(wav)
    assert torch.equal(after, ref_encode_codes(codec, wav)[1])
    assert not torch.equal(after, before)
    # and so must load_state_dict
    fresh = tiny_codec(seed=5)
    codec.load_state_dict(fresh.state_dict())
    assert torch.equal(codec.encode(wav), fresh.encode(wav))
    assert torch.equal(codec.encode(wav), ref_encode_codes(fresh, wav)[1])


def test_input_tensors_are_not_modified():
    codec = tiny_codec()
    wav = 0.3 * torch.randn(1, 1, 2000)
    keep = wav.clone()
    codes = codec.encode(wav)
    z = codec.quantizer.decode(codes)
    z_keep = z.clone()
    with torch.inference_mode():
        codec.decoder(z)
    assert torch.equal(wav, keep) and torch.equal(z, z_keep)


def test_nearest_codewords_matches_the_reference_distances_bit_for_bit():
    torch.manual_seed(0)
    for trial in range(20):
        x = torch.randn(300, 16) * (0.1 + trial)
        embed = torch.randn(64, 16)
        x[:10] = embed[:10]  # exact hits
        embed[5] = embed[6]  # duplicate codewords: ties go to the first index in both
        ref = squared_distances(x, embed).max(dim=-1).indices
        assert torch.equal(nearest_codewords(x, embed), ref)


def test_masked_autoencoder_stereo_fast_path():
    torch.manual_seed(0)
    mae = MaskedAutoencoder(MaskedAEConfig(sample_rate=SR, seanet=SEANetConfig(channels=2, dimension=8, n_filters=4,
                                                                               ratios=[4, 2], lstm=1))).eval()
    wav = 0.3 * torch.randn(2, 2, 1001)
    with torch.no_grad():
        z_ref = mae.bottleneck.encode(ref_run(mae.encoder.model, wav))
        out_ref = ref_run(mae.decoder.model, mae.bottleneck.decode_input(z_ref))
    z = mae.encode(wav)
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mae.decode(z), out_ref, rtol=1e-5, atol=1e-5)
