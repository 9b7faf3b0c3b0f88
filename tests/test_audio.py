"""Tests for tunecraft.audio: I/O, resampling, channels, loudness and features."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from tunecraft.audio import (
    AudioInfo,
    Chroma,
    FFTUpsampler,
    LogMel,
    MelSpectrogram,
    audio_info,
    chromagram,
    convert_channels,
    fft_resample,
    griffin_lim,
    load_audio,
    log_mel,
    log_mel_inverse,
    loudness_lufs,
    normalize_loudness,
    peak_normalize,
    resample,
    resampled_length,
    save_audio,
)
from tunecraft.errors import AudioFormatError, InvalidInput, TunecraftError


def _sine(freq: float, sr: int, seconds: float, amp: float = 0.5, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(round(sr * seconds)), dtype=torch.float64) / sr
    x = (amp * torch.sin(2 * math.pi * freq * t)).float()
    return x[None].repeat(channels, 1)


def _music_like(sr: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Stereo harmonic notes with decaying envelopes plus a little noise."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    t = np.arange(n) / sr
    out = np.zeros((2, n))
    note_len = int(0.25 * sr)
    for start in range(0, n, note_len):
        f0 = 220.0 * 2 ** (rng.integers(0, 12) / 12)
        seg = t[: min(note_len, n - start)]
        env = np.exp(-6 * seg)
        tone = sum(np.sin(2 * np.pi * f0 * h * seg) / h for h in range(1, 6)) * env
        out[0, start : start + len(seg)] += 0.3 * tone
        out[1, start : start + len(seg)] += 0.25 * tone
    out += 0.01 * rng.standard_normal(out.shape)
    return torch.from_numpy(out).float()


def _peak_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


# ----------------------------------------------------------------------------- I/O


@pytest.mark.parametrize("ext,subtype,atol", [(".wav", None, 1.0 / 32767), (".wav", "float", 0.0), (".flac", None, 1.0 / 32767)])
def test_lossless_round_trip(tmp_path, ext, subtype, atol):
    wav = torch.cat([_sine(440, 16000, 1.0), _sine(660, 16000, 1.0, amp=0.3)])
    path = save_audio(tmp_path / "sub" / f"x{ext}", wav, 16000, subtype=subtype)
    assert path.exists() and path.parent.name == "sub"
    out, sr = load_audio(path)
    assert sr == 16000 and out.dtype == torch.float32 and out.shape == (2, 16000)
    assert torch.allclose(out, wav, atol=atol + 1e-7)
    info = audio_info(path)
    assert isinstance(info, AudioInfo)
    assert (info.sample_rate, info.frames, info.channels) == (16000, 16000, 2)
    assert info.duration == pytest.approx(1.0)
    assert info.format == ("WAV" if ext == ".wav" else "FLAC")
    assert info.subtype == ("FLOAT" if subtype == "float" else "PCM_16")
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]


def test_ogg_round_trip_and_segment(tmp_path):
    wav = _sine(440, 16000, 1.0)
    path = save_audio(tmp_path / "x.ogg", wav, 16000)
    out, sr = load_audio(path)
    assert sr == 16000 and out.shape == (1, 16000)
    assert audio_info(path).format == "OGG"
    assert _peak_freq(out[0].numpy(), sr) == pytest.approx(440, abs=2)
    seg, _ = load_audio(path, offset=0.25, duration=0.5)
    assert seg.shape == (1, 8000)
    # lossy codec: compare the segment to the same slice of the full decode
    assert torch.corrcoef(torch.stack([seg[0], out[0, 4000:12000]]))[0, 1] > 0.99


def test_offset_duration_pad_resample_channels(tmp_path):
    sr = 8000
    ramp = torch.linspace(-0.9, 0.9, 2 * sr)[None]  # unique value per frame
    path = save_audio(tmp_path / "ramp.wav", ramp, sr, subtype="float")
    seg, _ = load_audio(path, offset=0.5, duration=0.25)
    assert torch.equal(seg, ramp[:, 4000:6000])
    # past the end: shorter without pad, exact length with pad
    tail, _ = load_audio(path, offset=1.75, duration=0.5)
    assert tail.shape == (1, 2000) and torch.equal(tail, ramp[:, 14000:])
    padded, _ = load_audio(path, offset=1.75, duration=0.5, pad=True)
    assert padded.shape == (1, 4000) and torch.equal(padded[:, 2000:], torch.zeros(1, 2000))
    beyond, _ = load_audio(path, offset=5.0, duration=0.5, pad=True)
    assert torch.equal(beyond, torch.zeros(1, 4000))
    with pytest.raises(InvalidInput):
        load_audio(path, offset=5.0)
    with pytest.raises(InvalidInput):
        load_audio(path, offset=-1.0)
    # resampling + channel conversion on load, exact padded length at the new rate
    out, out_sr = load_audio(path, sample_rate=22050, channels=2, offset=1.9, duration=0.3, pad=True)
    assert out_sr == 22050 and out.shape == (2, round(0.3 * 22050))
    assert torch.equal(out[0], out[1])


def test_mp3(tmp_path):
    path = tmp_path / "x.mp3"
    if "MP3" not in sf.available_formats():
        path.write_bytes(b"\xff\xfb" + b"\0" * 100)
        with pytest.raises(AudioFormatError, match="libsndfile>=1.1"):
            load_audio(path)
        return
    sf.write(str(path), _sine(440, 16000, 1.0)[0].numpy(), 16000, format="MP3")
    wav, sr = load_audio(path, sample_rate=16000)
    assert sr == 16000 and wav.shape[0] == 1 and abs(wav.shape[1] - 16000) < 2000
    assert _peak_freq(wav[0].numpy(), sr) == pytest.approx(440, abs=3)


def test_bad_files_raise_audio_format_error(tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "missing.wav"
    (tmp_path / "notes.txt").write_text("not audio")
    cases["unsupported"] = tmp_path / "notes.txt"
    (tmp_path / "garbage.wav").write_bytes(os.urandom(512))
    cases["garbage"] = tmp_path / "garbage.wav"
    (tmp_path / "empty.flac").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.flac"
    nan = np.zeros(1000, dtype=np.float32)
    nan[10] = np.nan
    sf.write(str(tmp_path / "nan.wav"), nan, 8000, subtype="FLOAT")
    cases["nan"] = tmp_path / "nan.wav"
    good = save_audio(tmp_path / "good.flac", _sine(440, 8000, 1.0), 8000)
    data = bytearray(good.read_bytes())
    data[120:] = np.random.default_rng(0).integers(0, 256, len(data) - 120, dtype=np.uint8).tobytes()
    (tmp_path / "garbled.flac").write_bytes(bytes(data))
    cases["garbled"] = tmp_path / "garbled.flac"
    for name, path in cases.items():
        with pytest.raises(AudioFormatError) as err:
            load_audio(path)
        assert str(path) in str(err.value), name
        assert isinstance(err.value, TunecraftError)
    for name in ("missing", "unsupported", "garbage", "empty"):
        with pytest.raises(AudioFormatError):
            audio_info(cases[name])


def test_save_audio_validation_and_clipping(tmp_path):
    with pytest.raises(InvalidInput):
        save_audio(tmp_path / "a.wav", torch.tensor([0.1, float("nan")]), 8000)
    with pytest.raises(InvalidInput):
        save_audio(tmp_path / "a.wav", torch.zeros(1, 0), 8000)
    with pytest.raises(InvalidInput):
        save_audio(tmp_path / "a.mp4", torch.zeros(1, 10), 8000)
    with pytest.raises(InvalidInput):
        save_audio(tmp_path / "a.wav", torch.zeros(1000, 2), 8000)  # [T, C] by mistake
    with pytest.raises(InvalidInput):
        save_audio(tmp_path / "a.flac", torch.zeros(1, 10), 8000, subtype="float")
    assert not list(tmp_path.iterdir())
    loud = np.array([0.5, 1.5, -2.0, 0.25], dtype=np.float32)  # numpy [T]
    with pytest.warns(UserWarning, match="clipped 2 samples"):
        path = save_audio(tmp_path / "clip.wav", loud, 8000, subtype="float")
    back, _ = load_audio(path)
    assert back[0].tolist() == [0.5, 1.0, -1.0, 0.25]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = save_audio(tmp_path / "peak.wav", torch.tensor(loud), 8000, subtype="float", normalize="peak")
    assert load_audio(p)[0].abs().max().item() == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    p = save_audio(tmp_path / "loud.wav", 0.05 * _music_like(16000, 2.0), 16000, subtype="float", normalize="loudness")
    assert loudness_lufs(load_audio(p)[0], 16000) == pytest.approx(-14.0, abs=0.1)


# ----------------------------------------------------------------------------- channels


def test_convert_channels():
    mono = torch.randn(1, 100)
    stereo = convert_channels(mono, 2)
    assert stereo.shape == (2, 100) and torch.equal(stereo[0], mono[0]) and torch.equal(stereo[1], mono[0])
    st = torch.randn(3, 2, 50)
    down = convert_channels(st, 1)
    assert down.shape == (3, 1, 50) and torch.allclose(down[:, 0], st.mean(1))
    six = torch.randn(6, 40)
    to2 = convert_channels(six, 2)
    assert to2.shape == (2, 40) and torch.allclose(to2[0], six.mean(0)) and torch.equal(to2[0], to2[1])
    assert convert_channels(st, 2) is st
    npst = convert_channels(np.ones((1, 5), dtype=np.float32), 2)
    assert isinstance(npst, np.ndarray) and npst.shape == (2, 5)
    with pytest.raises(InvalidInput):
        convert_channels(torch.randn(2, 10), 6)
    with pytest.raises(InvalidInput):
        convert_channels(torch.randn(10), 1)
    with pytest.raises(InvalidInput):
        convert_channels(torch.randn(1, 10), 0)


# ----------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("orig,target", [(16000, 44100), (44100, 16000), (32000, 24000)])
def test_resample_sine(orig, target):
    x = _sine(1000, orig, 0.5, channels=2)[None].repeat(2, 1, 1)  # [B, C, T]
    y = resample(x, orig, target)
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and y.device == x.device
    assert y.shape == (2, 2, resampled_length(x.shape[-1], orig, target)) == (2, 2, round(x.shape[-1] * target / orig))
    assert _peak_freq(y[1, 1].numpy(), target) == pytest.approx(1000, abs=target / y.shape[-1] + 1)
    # amplitude preserved away from the edges
    mid = y[0, 0, y.shape[-1] // 4 : -y.shape[-1] // 4]
    assert mid.abs().max().item() == pytest.approx(0.5, abs=0.01)


def test_resample_identity_numpy_and_dtype():
    x = torch.randn(2, 100, dtype=torch.float64)
    assert resample(x, 16000, 16000) is x
    y = resample(x, 16000, 8000)
    assert y.dtype == torch.float64 and y.shape == (2, 50)
    n = resample(np.zeros(160, dtype=np.float32), 16000, 48000)
    assert isinstance(n, np.ndarray) and n.shape == (480,) and n.dtype == np.float32
    with pytest.raises(InvalidInput):
        resample(x, 0, 16000)


def _bandlimited(n: torch.Tensor, fs: float, base_sr: float, period: int, with_nyquist: bool) -> torch.Tensor:
    """A sum of cosines at multiples of base_sr/period (all below base_sr/2), sampled at fs."""
    parts = [(1, 0.3, 1.0), (7, 1.1, 0.5), (50, 2.0, 0.25), ((period - 1) // 2, 0.7, 0.4)]
    out = sum(a * torch.cos(2 * math.pi * k * base_sr / period * n / fs + p) for k, p, a in parts)
    if with_nyquist:  # the cosine at exactly base_sr / 2 (phase 0, the only one a real signal can hold)
        out = out + 0.3 * torch.cos(math.pi * base_sr * n / fs)
    return out


@pytest.mark.parametrize("period", [320, 321])
def test_fft_upsampling_is_exact_on_bandlimited_signals(period):
    sr, up = 3200, 16000  # Noise2Music: low-fi 3.2 kHz waveform -> 16 kHz
    with_nyquist = period % 2 == 0
    n = torch.arange(period, dtype=torch.float64)
    x = _bandlimited(n, sr, sr, period, with_nyquist)
    batch = torch.stack([x, -0.5 * x])[None]  # [1, 2, T]
    m = period * up // sr
    y = fft_resample(batch, sr, up)
    assert y.shape == (1, 2, m) and y.dtype == torch.float64
    ref = _bandlimited(torch.arange(m, dtype=torch.float64), up, sr, period, with_nyquist)
    assert (y[0, 0] - ref).abs().max().item() < 1e-10
    assert (y[0, 1] + 0.5 * ref).abs().max().item() < 1e-10
    # float32 through the module form
    up32 = FFTUpsampler(sr, up)
    y32 = up32(batch.float())
    assert y32.dtype == torch.float32 and up32.output_length(period) == m
    assert (y32[0, 0].double() - ref).abs().max().item() < 1e-5
    # the original samples are kept (every 5th output sample)
    assert (y[0, 0, ::5] - x).abs().max().item() < 1e-10


def test_fft_resample_matches_scipy_both_ways():
    scipy_signal = pytest.importorskip("scipy.signal")
    x = torch.randn(3, 2, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for n_in, x_in in ((1000, x), (999, x[..., :999])):
        for m in (400, 401, 2000, 2001):
            ref = torch.from_numpy(scipy_signal.resample(x_in.numpy(), m, axis=-1))
            out = fft_resample(x_in, n_in, m)
            assert out.shape[-1] == m
            assert torch.allclose(out, ref, atol=1e-12)
    # downsampling keeps a low tone and removes one above the new Nyquist
    t = torch.arange(1600, dtype=torch.float64) / 1600
    x = torch.sin(2 * math.pi * 100 * t) + torch.sin(2 * math.pi * 500 * t)
    y = fft_resample(x, 1600, 800)
    assert torch.allclose(y, torch.sin(2 * math.pi * 100 * torch.arange(800, dtype=torch.float64) / 800), atol=1e-10)


# ----------------------------------------------------------------------------- loudness


def test_loudness_matches_pyloudnorm_and_normalizes():
    pyln = pytest.importorskip("pyloudnorm")
    sr = 16000
    noise = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 3 * sr)) * 0.02).float()
    music = 0.5 * _music_like(sr, 3.0, seed=1)
    for wav in (noise, music):
        ref = pyln.Meter(sr).integrated_loudness(wav.double().numpy().T)
        assert loudness_lufs(wav, sr) == pytest.approx(ref, abs=1e-6)
        out = normalize_loudness(wav, sr, target_lufs=-14.0)
        assert out.shape == wav.shape and out.dtype == torch.float32
        assert abs(loudness_lufs(out, sr) - (-14.0)) < 0.5
    batch = torch.stack([music, 0.1 * music])
    outb = normalize_loudness(batch, sr)
    lufs = loudness_lufs(outb, sr)
    assert lufs.shape == (2,) and torch.allclose(lufs, torch.full((2,), -14.0, dtype=torch.float64), atol=0.5)
    # max_gain_db caps the boost, peak_limit caps the peak
    quiet = 0.05 * music  # RMS above the 2e-3 energy floor, needs far more than 6 dB
    capped = normalize_loudness(quiet, sr, max_gain_db=6.0)
    assert torch.allclose(capped, quiet * 10 ** (6 / 20), atol=1e-6)
    near_silent = 0.002 * music  # RMS below audiocraft's 2e-3 energy floor: left alone
    assert torch.equal(normalize_loudness(near_silent, sr), near_silent)
    limited = normalize_loudness(music, sr, target_lufs=0.0, peak_limit=0.9)
    assert limited.abs().max().item() == pytest.approx(0.9, abs=1e-5)


def test_loudness_silence_short_clips_and_peak():
    sr = 16000
    silence = torch.zeros(2, sr)
    assert loudness_lufs(silence, sr) == float("-inf")
    out = normalize_loudness(silence, sr)
    assert torch.equal(out, silence)
    assert torch.equal(peak_normalize(silence), silence)
    # a 100 ms tone: measured as one ungated block, close to the long-term loudness of the same tone
    long = _sine(1000, sr, 2.0)
    short = long[:, : sr // 10]
    assert loudness_lufs(short, sr) == pytest.approx(loudness_lufs(long, sr), abs=0.5)
    assert abs(loudness_lufs(normalize_loudness(short, sr), sr) + 14.0) < 0.5
    p = peak_normalize(np.array([[0.1, -0.4]], dtype=np.float32), headroom_db=0.0)
    assert isinstance(p, np.ndarray) and np.allclose(p, [[0.25, -1.0]])
    with pytest.raises(InvalidInput):
        loudness_lufs(torch.zeros(8, sr), sr)


# ----------------------------------------------------------------------------- features


def test_mel_matches_librosa_and_shapes():
    librosa = pytest.importorskip("librosa")
    sr = 22050
    x = np.random.default_rng(0).standard_normal(sr).astype(np.float32) * 0.1
    ref = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=2048, hop_length=512, n_mels=80)
    mel = MelSpectrogram(sr, n_fft=2048, hop_length=512, n_mels=80)
    out = mel(torch.from_numpy(x))
    assert out.shape == ref.shape == (80, mel.num_frames(sr))
    assert np.abs(out.numpy() - ref).max() < 1e-4 * ref.max()
    batched = mel(torch.from_numpy(x)[None, None].repeat(3, 2, 1))
    assert batched.shape == (3, 80, mel.num_frames(sr)) and torch.allclose(batched[2], out, rtol=1e-4, atol=1e-6)
    assert mel.state_dict() == {}  # filter banks are buffers that checkpoints do not carry


def test_log_mel_range_and_inverse():
    lm = LogMel()  # 16 kHz, 80 bins, hop 160
    assert lm.frame_rate == 100.0 and lm.n_mels == 80
    x = torch.cat([0.5 * _music_like(16000, 1.0)[:1], torch.zeros(1, 16000)], dim=-1)  # music then silence
    loud = torch.sign(torch.randn(1, 16000))  # full-scale +-1 noise
    y = lm(torch.stack([x[:, :16000], loud, torch.zeros(1, 16000)]))
    assert y.shape == (3, 80, 101) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and y.min() >= -1.0 and y.max() <= 1.0
    assert torch.equal(y[2], torch.full_like(y[2], -1.0))  # silence sits on the floor
    assert y[1].max() < 1.0  # full-scale audio stays under the ceiling
    db = lm.to_db(x)
    yy = lm(x)
    assert torch.allclose(lm.denormalize(yy, to="db"), db, atol=1e-3)
    mag = lm.denormalize(yy)
    assert torch.allclose(lm.normalize_db(20 * torch.log10(mag)), yy, atol=1e-5)
    assert torch.allclose(lm.denormalize(yy, to="power"), mag**2, rtol=1e-4)
    assert torch.allclose(log_mel(x), yy)
    with pytest.raises(InvalidInput):
        lm.denormalize(yy, to="bels")


def test_griffin_lim_inverts_log_mel_keeping_pitch():
    """Mel pseudo-inverse + fast Griffin-Lim: the estimate has the tone's frequencies and the
    spectrogram it was made from, more so with more iterations; deterministic; bad input is refused."""
    sr = 16000
    lm = LogMel()
    tone = 0.3 * _sine(220.0, sr, 1.0) + 0.15 * _sine(330.0, sr, 1.0)  # A3 + E4
    y = lm(tone[None])[..., :100]  # 100 frames, frame k centred on sample 160 k
    errs = []
    for n_iter in (0, 4, 32):
        out = lm.invert(y, n_iter=n_iter, length=16000)
        assert out.shape == (1, 16000) and bool(torch.isfinite(out).all())
        errs.append(float((lm(out)[..., :100] - y).abs().mean()))
    assert errs[2] < errs[1] < errs[0] and errs[2] < 0.05
    spec = torch.fft.rfft(out[0, 2000:14000] * torch.hann_window(12000)).abs()
    freqs = torch.fft.rfftfreq(12000, 1 / sr)
    near = lambda f, w: (freqs - f).abs() <= w  # noqa: E731
    elsewhere = spec[~(near(220.0, 15.0) | near(330.0, 15.0))].max()
    for f in (220.0, 330.0):  # both partials, at their frequencies, above everything else
        assert float(spec[near(f, 3.0)].max()) > 3 * float(elsewhere), f
    torch.testing.assert_close(log_mel_inverse(y, n_iter=32, length=16000), out)  # functional form, deterministic
    assert lm.invert(y, n_iter=2).shape == (1, 99 * 160)  # default length (F - 1) * hop
    mag = torch.rand(2, 513, 10)
    with pytest.raises(InvalidInput):
        griffin_lim(mag[:, :500], 1024, 160, 640, torch.hann_window(640))
    with pytest.raises(InvalidInput):
        griffin_lim(mag, 1024, 160, 640, torch.hann_window(640), n_iter=-1)
    with pytest.raises(InvalidInput):
        griffin_lim(mag, 1024, 160, 640, torch.hann_window(640), momentum=1.0)
    with pytest.raises(InvalidInput):
        lm.invert(torch.rand(1, 40, 10))


def test_griffin_lim_from_a_given_phase():
    """init: the phase starts at the given waveform's. With a signal's own STFT magnitude and phase,
    zero iterations give the signal back; a wrong waveform's phase is a worse start than it."""
    sr, n_fft, hop, win = 16000, 1024, 160, 640
    window = torch.hann_window(win)
    x = (0.3 * _sine(220.0, sr, 1.0).reshape(-1) + 0.1 * torch.randn(sr, generator=torch.Generator().manual_seed(0)))[None]
    spec = torch.stft(x, n_fft, hop, win, window=window, center=True, pad_mode="constant", return_complex=True)
    mag = spec.abs()
    back = griffin_lim(mag, n_fft, hop, win, window, n_iter=0, length=sr, init=x)
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)
    other = torch.randn(1, sr, generator=torch.Generator().manual_seed(1))

    def consistency(w):  # distance of the result's magnitudes from the requested ones
        got = torch.stft(w, n_fft, hop, win, window=window, center=True, pad_mode="constant", return_complex=True).abs()
        return float((got - mag).abs().mean())

    assert consistency(back) < 0.1 * consistency(griffin_lim(mag, n_fft, hop, win, window, n_iter=0, length=sr, init=other))
    with pytest.raises(InvalidInput, match="init"):
        griffin_lim(mag, n_fft, hop, win, window, init=torch.zeros(2, sr))


def test_chroma_pitch_classes_and_argmax():
    sr = 32000
    a4 = _sine(440.0, sr, 1.0)
    c = chromagram(a4[None], sr)
    assert c.shape == (1, 12, Chroma(sr).num_frames(sr)) and c.dtype == torch.float32
    assert torch.all(c[0].argmax(0) == 9)  # A
    assert torch.allclose(c.max(dim=1).values, torch.ones(1, c.shape[-1]))  # max-normalised frames
    freqs = [261.63, 329.63, 392.00]  # C4 E4 G4
    triad = sum(_sine(f, sr, 1.0) for f in freqs)
    ct = chromagram(triad, sr)[0].mean(-1)
    assert set(ct.topk(3).indices.tolist()) == {0, 4, 7}
    assert ct[[0, 4, 7]].min() > 2 * ct[[1, 2, 3, 5, 6, 8, 9, 10, 11]].max()
    melody = torch.cat([_sine(f, sr, 0.5) for f in (261.63, 392.0)], dim=-1)  # C then G
    one_hot = Chroma(sr, argmax=True)(melody[None])
    assert torch.equal(one_hot.sum(1), torch.ones(1, one_hot.shape[-1]))
    assert set(one_hot.unique().tolist()) == {0.0, 1.0}
    idx = one_hot[0].argmax(0)
    assert idx[2].item() == 0 and idx[-3].item() == 7
    silent = Chroma(sr)(torch.zeros(2, 1, 100))  # shorter than n_fft and silent
    assert silent.shape == (2, 12, Chroma(sr).num_frames(100)) and torch.equal(silent, torch.zeros_like(silent))
    assert torch.isfinite(chromagram(torch.zeros(2, 1, 100), sr, argmax=True)).all()
