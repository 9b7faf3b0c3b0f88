"""``tunecraft codec encode | decode | reconstruct``, the codes file, and bad input (exit 2, one line)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from tunecraft.cli import main
from tunecraft.codecs import RVQCodec, RVQCodecConfig, VAEGANCodec, VAEGANConfig
from tunecraft.codecs.cli import read_codes_file
from tunecraft.errors import InvalidInput
from tunecraft.modules.bottlenecks import KLBottleneckConfig
from tunecraft.modules.quantization import RVQConfig
from tunecraft.modules.seanet import SEANetConfig

SR = 8000


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    rvq = RVQCodec(RVQCodecConfig(sample_rate=SR, seanet=SEANetConfig(dimension=16, n_filters=4, ratios=[4, 2], lstm=1),
                                  quantizer=RVQConfig(dimension=16, n_q=4, bins=32)))
    rvq.train()
    rvq(0.3 * torch.randn(4, 1, 2000))  # k-means initialises the codebooks
    rvq.eval()
    vae = VAEGANCodec(VAEGANConfig(sample_rate=SR, seanet=SEANetConfig(dimension=8, n_filters=4, ratios=[4, 2], lstm=0),
                                   bottleneck=KLBottleneckConfig(latent_dim=4)))
    return {"rvq": rvq.save_pretrained(root / "rvq"), "rvq2": _other(root / "rvq2"),
            "vae": vae.save_pretrained(root / "vae")}


def _other(path):
    torch.manual_seed(7)
    return RVQCodec(RVQCodecConfig(sample_rate=SR, seanet=SEANetConfig(dimension=16, n_filters=4, ratios=[4, 2], lstm=1),
                                   quantizer=RVQConfig(dimension=16, n_q=4, bins=32))).save_pretrained(path)


def write_wav(path, sr=SR, seconds=0.5, channels=1, value=None):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)
    if value is not None:
        x = np.full_like(x, value)
    data = np.stack([x] * channels, axis=1).astype(np.float32)
    sf.write(path, data, sr, subtype="FLOAT")
    return path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err


def assert_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, lines
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


def test_encode_decode_reconstruct_round_trip(tmp_path, models, capsys):
    wav = write_wav(tmp_path / "in.wav")
    codes_file = tmp_path / "in.npz"
    code, err = cli(capsys, "codec", "encode", wav, "-o", codes_file, "--model", models["rvq"])
    assert code == 0, err
    data = read_codes_file(codes_file)
    assert data["codes"].shape == (4, math.ceil(4000 / 8)) and data["codes"].dtype == np.int16
    assert data["model_class"] == "RVQCodec" and data["sample_rate"] == SR and data["frame_rate"] == SR / 8
    assert data["length"] == 4000 and data["cardinality"] == 32 and data["channels"] == 1
    # the file holds exactly what the API gives
    codec = RVQCodec.from_pretrained(models["rvq"])
    audio = torch.from_numpy(sf.read(wav, dtype="float32")[0])[None, None]
    api_codes = codec.encode(audio)
    assert np.array_equal(data["codes"], api_codes[0].numpy())

    out = tmp_path / "out.wav"
    code, err = cli(capsys, "codec", "decode", codes_file, "-o", out)  # the model named in the file
    assert code == 0, err
    decoded, sr = sf.read(out, dtype="float32")
    assert sr == SR and decoded.shape == (4000,)
    expected = codec.decode(api_codes, length=4000)[0, 0].clamp(-1, 1).numpy()
    assert np.abs(decoded - expected).max() < 1e-3  # 16-bit PCM

    rec = tmp_path / "rec.flac"
    code, err = cli(capsys, "codec", "reconstruct", wav, "-o", rec, "--model", models["rvq"], "-q")
    assert code == 0 and err == ""
    assert np.abs(sf.read(rec, dtype="float32")[0] - expected).max() < 1e-3


def test_num_codebooks_and_resampling(tmp_path, models, capsys):
    wav16 = write_wav(tmp_path / "in16k.wav", sr=16000, channels=2)  # other rate and channel count
    f2 = tmp_path / "two.npz"
    assert cli(capsys, "codec", "encode", wav16, "-o", f2, "--model", models["rvq"], "--num-codebooks", 2)[0] == 0
    data = read_codes_file(f2)
    assert data["codes"].shape == (2, math.ceil(4000 / 8)) and data["input_sample_rate"] == 16000
    full = tmp_path / "full.npz"
    assert cli(capsys, "codec", "encode", wav16, "-o", full, "--model", models["rvq"])[0] == 0
    assert np.array_equal(read_codes_file(full)["codes"][:2], data["codes"])
    # decoding the first 2 codebooks of a full file = decoding the 2-codebook file
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert cli(capsys, "codec", "decode", full, "-o", a, "--num-codebooks", 2)[0] == 0
    assert cli(capsys, "codec", "decode", f2, "-o", b)[0] == 0
    assert np.array_equal(sf.read(a)[0], sf.read(b)[0])


def test_continuous_codec_latents(tmp_path, models, capsys):
    wav = write_wav(tmp_path / "in.wav")
    f = tmp_path / "lat.npz"
    assert cli(capsys, "codec", "encode", wav, "-o", f, "--model", models["vae"])[0] == 0
    data = read_codes_file(f)
    assert data["latents"].shape == (4, 500) and data["latents"].dtype == np.float32 and "codes" not in data
    assert cli(capsys, "codec", "decode", f, "-o", tmp_path / "o.wav")[0] == 0
    assert_error(*cli(capsys, "codec", "decode", f, "-o", tmp_path / "o.wav", "--num-codebooks", 1), "discrete")
    assert_error(*cli(capsys, "codec", "encode", wav, "-o", f, "--model", models["vae"], "--num-codebooks", 1),
                 "discrete")


def test_bad_input_exits_2_with_one_line(tmp_path, models, capsys):
    rvq = ["--model", models["rvq"]]
    good = write_wav(tmp_path / "good.wav")
    out = tmp_path / "x.wav"
    codes_file = tmp_path / "c.npz"
    assert cli(capsys, "codec", "encode", good, "-o", codes_file, *rvq)[0] == 0

    assert_error(*cli(capsys, "codec", "encode", tmp_path / "missing.wav", "-o", codes_file, *rvq), "missing.wav")
    assert_error(*cli(capsys, "codec", "encode", write_wav(tmp_path / "nan.wav", value=np.nan), "-o",
                      tmp_path / "n.npz", *rvq), "nan")
    assert_error(*cli(capsys, "codec", "encode", write_wav(tmp_path / "inf.wav", value=np.inf), "-o",
                      tmp_path / "n.npz", *rvq))
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), SR)
    assert_error(*cli(capsys, "codec", "encode", empty, "-o", tmp_path / "n.npz", *rvq))
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    assert_error(*cli(capsys, "codec", "reconstruct", tmp_path / "junk.wav", "-o", out, *rvq))
    assert_error(*cli(capsys, "codec", "encode", good, "-o", tmp_path / "c.wav", *rvq), ".npz")
    assert_error(*cli(capsys, "codec", "reconstruct", good, "-o", tmp_path / "c.npz", *rvq), ".wav")
    assert_error(*cli(capsys, "codec", "encode", good, "-o", codes_file, *rvq, "--num-codebooks", 9), "codebooks")
    assert_error(*cli(capsys, "codec", "encode", good, "-o", codes_file, *rvq, "--num-codebooks", 0))
    assert_error(*cli(capsys, "codec", "encode", good, "-o", codes_file, "--model", tmp_path / "nope"), "nope")
    assert_error(*cli(capsys, "codec"), "encode")

    # codes files
    data = dict(np.load(codes_file))
    bad = dict(data, codes=data["codes"].copy())
    bad["codes"][1, 3] = 32
    np.savez(tmp_path / "range.npz", **bad)
    assert_error(*cli(capsys, "codec", "decode", tmp_path / "range.npz", "-o", out), "[0, 32)")
    bad["codes"][1, 3] = -1
    np.savez(tmp_path / "neg.npz", **bad)
    assert_error(*cli(capsys, "codec", "decode", tmp_path / "neg.npz", "-o", out), "[0, 32)")
    np.savez(tmp_path / "many.npz", **dict(data, codes=np.concatenate([data["codes"], data["codes"][:1]])))
    assert_error(*cli(capsys, "codec", "decode", tmp_path / "many.npz", "-o", out), "codebooks")
    np.savez(tmp_path / "short.npz", **dict(data, codes=data["codes"][:, :-3]))
    assert_error(*cli(capsys, "codec", "decode", tmp_path / "short.npz", "-o", out), "frames")
    np.savez(tmp_path / "float.npz", **dict(data, codes=data["codes"].astype(np.float32)))
    assert_error(*cli(capsys, "codec", "decode", tmp_path / "float.npz", "-o", out), "integers")
    assert_error(*cli(capsys, "codec", "decode", codes_file, "-o", out, "--num-codebooks", 5), "codebooks")
    assert_error(*cli(capsys, "codec", "decode", codes_file, "-o", out, "--model", models["rvq2"]), "other weights")
    assert_error(*cli(capsys, "codec", "decode", codes_file, "-o", out, "--model", models["vae"]), "RVQCodec")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 broken")
    assert_error(*cli(capsys, "codec", "decode", tmp_path / "corrupt.npz", "-o", out), "corrupt.npz")
    np.savez(tmp_path / "other.npz", codes=data["codes"])
    assert_error(*cli(capsys, "codec", "decode", tmp_path / "other.npz", "-o", out), "not a tunecraft codes file")
    assert_error(*cli(capsys, "codec", "decode", tmp_path / "absent.npz", "-o", out), "absent.npz")
    assert not out.exists()


def test_api_bad_input_messages():
    torch.manual_seed(0)
    codec = RVQCodec(RVQCodecConfig(sample_rate=SR, seanet=SEANetConfig(dimension=16, n_filters=4, ratios=[4, 2],
                                                                        lstm=0),
                                    quantizer=RVQConfig(dimension=16, n_q=4, bins=32))).eval()
    with pytest.raises(InvalidInput, match="no channels"):
        codec.encode(torch.zeros(1, 0, 100))
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        codec.encode(torch.tensor([[[0.0, float("inf")] * 50]]))
    with pytest.raises(InvalidInput, match="codebooks"):
        codec.decode(torch.zeros(1, 5, 10, dtype=torch.long))
    with pytest.raises(InvalidInput, match=r"\[0, 32\)"):
        codec.decode(torch.full((1, 2, 10), 32))
    with pytest.raises(InvalidInput, match="sample_rate"):
        codec.encode(torch.zeros(1, 1, 100), sample_rate=-5)
    # other sample rates are resampled: 16 kHz in, frames at the codec's 8 kHz rate
    assert codec.encode(0.1 * torch.randn(1, 1, 1600), sample_rate=16000).shape == (1, 4, 100)
