"""Tempo and key estimators on synthetic signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("librosa")

from tunecraft.errors import InvalidInput  # noqa: E402
from tunecraft.eval.attributes import estimate_key, estimate_tempo, key_match, tempo_match  # noqa: E402

SR = 22050


def _clicks(bpm: float, seconds: float = 10.0, accent_every: int = 4) -> np.ndarray:
    """Decaying noise bursts on every beat, the downbeat louder."""
    rng = np.random.default_rng(0)
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    burst = (rng.standard_normal(800) * np.exp(-np.arange(800) / 120)).astype(np.float32)
    for k, t in enumerate(np.arange(0, seconds - 0.1, 60.0 / bpm)):
        i = int(t * SR)
        y[i:i + 800] += burst[: len(y) - i] * (1.0 if k % accent_every == 0 else 0.6)
    return y


def _tone(midi: int, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f = 440.0 * 2 ** ((midi - 69) / 12)
    env = np.minimum(1.0, t / 0.01) * np.exp(-t * 1.5)
    return sum(a * np.sin(2 * np.pi * f * h * t) for h, a in ((1, 1.0), (2, 0.4), (3, 0.2))) * env


def _progression(chords: list[list[int]], seconds_per_chord: float = 1.0) -> np.ndarray:
    return np.concatenate([sum(_tone(p, seconds_per_chord) for p in ch) for ch in chords]).astype(np.float32) * 0.2


@pytest.mark.parametrize("bpm", [72.0, 100.0, 128.0, 165.0])
def test_tempo_of_a_click_track(bpm):
    est = estimate_tempo(_clicks(bpm), SR)
    assert tempo_match(est, bpm, tol=0.02), est


def test_tempo_accepts_stereo_other_rates_and_torch():
    torch = pytest.importorskip("torch")
    y = _clicks(110.0)
    stereo = np.stack([y, y])
    assert tempo_match(estimate_tempo(stereo, SR), 110.0, tol=0.02)
    import soxr

    y32 = soxr.resample(y, SR, 32000).astype(np.float32)
    assert tempo_match(estimate_tempo(torch.from_numpy(y32)[None], 32000), 110.0, tol=0.02)
    assert estimate_tempo(np.zeros(SR * 3, dtype=np.float32), SR) == 0.0


def test_key_of_cadences():
    g_major = [[55, 59, 62, 67], [48, 60, 64, 67], [50, 62, 66, 69], [55, 59, 62, 67]]  # G C D G
    tonic, mode, conf = estimate_key(_progression(g_major), SR)
    assert (tonic, mode) == ("G", "major") and conf > 0
    e_minor = [[52, 59, 64, 67], [45, 60, 64, 69], [47, 59, 63, 66], [52, 59, 64, 67]]  # Em Am B Em
    assert estimate_key(_progression(e_minor), SR)[:2] == ("E", "minor")
    assert estimate_key(np.zeros(SR, dtype=np.float32), SR) == ("C", "major", 0.0)


def test_match_rules():
    assert tempo_match(123.0, 120.0) and not tempo_match(130.0, 120.0)
    assert not tempo_match(60.0, 120.0) and tempo_match(60.0, 120.0, allow_octave=True)
    assert tempo_match(40.5, 120.0, allow_octave=True) and not tempo_match(90.0, 120.0, allow_octave=True)
    assert not tempo_match(0.0, 120.0)
    assert key_match("A minor", ("A", "minor")) and key_match(("Bb", "major"), "A# major")
    assert not key_match("C major", "A minor")
    assert key_match("C major", "A minor", mode="relaxed")  # relative
    assert key_match("C minor", "C major", mode="relaxed")  # parallel
    assert key_match("G major", "C major", mode="relaxed") and key_match("F major", "C major", mode="relaxed")
    assert not key_match("D major", "C major", mode="relaxed")
    with pytest.raises(InvalidInput):
        key_match("H major", "C major")
    with pytest.raises(InvalidInput):
        tempo_match(100.0, 0.0)


def test_invalid_audio():
    with pytest.raises(InvalidInput):
        estimate_tempo(np.zeros(100, dtype=np.float32), SR)
    with pytest.raises(InvalidInput):
        estimate_key(np.full(SR, np.nan, dtype=np.float32), SR)
    with pytest.raises(InvalidInput):
        estimate_key(np.zeros((2, 2, 2, SR), dtype=np.float32), SR)
    with pytest.raises(InvalidInput):
        estimate_key(np.zeros(SR, dtype=np.float32), SR, profile="unknown")
