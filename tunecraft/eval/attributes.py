"""Attribute estimators from audio: tempo (BPM) and key, plus match rules.

These estimators look at audio only. They share no code with the procedural
composer (:mod:`tunecraft.data.composer`), so agreement between an estimate and a
clip's sidecar metadata is evidence that the attribute is audible, and the same
functions score generated music (attribute accuracy in evaluation reports).

Tempo (:func:`estimate_tempo`)
    1. Onset strength: librosa's log-mel spectral flux at 22.05 kHz, hop 256
       (86 frames/s), with a local-mean detrend and half-wave rectification.
    2. Unbiased, mean-removed autocorrelation of the whole envelope (unlike
       ``librosa.feature.tempo``, whose non-centred tempogram makes every lag look
       alike and lets the 120-BPM prior decide between metrical levels).
    3. Each candidate tempo ``b`` in [``min_bpm``, ``max_bpm``] is scored by the
       autocorrelation at its beat period and its multiples (harmonic enhancement:
       ``AC(L) + 0.5 AC(2L) + 0.25 AC(4L)``, ``L = 60/b``), plus a weak log-normal
       prior centred on ``prior_bpm`` (default 110, one octave wide). The best
       candidate is refined with parabolic interpolation.
    Reported as BPM (float).

Key (:func:`estimate_key`)
    Krumhansl-Kessler major/minor key profiles (Krumhansl 1990) correlated
    (Pearson) with a time-averaged CLP chroma: constant-Q magnitudes (22.05 kHz,
    hop 512, C1-C8, 36 bins/octave) of the peak-normalised signal, log-compressed
    ``log(1 + 10 |X|)`` so that chord thirds are not buried under bass roots and
    their harmonics, folded to 12 pitch classes by ``librosa.feature.chroma_cqt``
    and L2-normalised per frame. Without the compression, fifths (third partials)
    dominate and dominant-key / parallel-mode errors double. The best of the
    24 rotated profiles gives ``(tonic, mode)``; confidence is the margin between
    the best and the second-best correlation. ``profile="temperley"`` switches to
    Temperley's (2001) Kostka-Payne profiles.

Matching
    :func:`tempo_match` accepts a relative error within ``tol`` (default 6%,
    strict); with ``allow_octave=True`` also at 1/2, 2, 1/3, 3 times the reference.
    :func:`key_match` is exact (same tonic and mode) by default; ``mode="relaxed"``
    also accepts the relative key, the parallel key, and keys a fifth away
    (MIREX-style lenient matching, reported separately, never as exact).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DependencyError, InvalidInput

__all__ = [
    "estimate_tempo",
    "estimate_key",
    "tempo_match",
    "key_match",
    "KEY_PROFILES",
    "PITCH_CLASSES",
]

PITCH_CLASSES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_PC = {"C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4, "F": 5, "E#": 5,
       "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10, "B": 11, "CB": 11}

# Krumhansl & Kessler (1982) probe-tone ratings; Temperley (2001) Kostka-Payne profiles.
KEY_PROFILES = {
    "krumhansl": (
        np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
        np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
    ),
    "temperley": (
        np.array([5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0]),
        np.array([5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0]),
    ),
}

_ANALYSIS_SR = 22050


def _librosa():
    try:
        import librosa
    except ImportError as e:
        raise DependencyError("librosa is required for tempo/key estimation: pip install librosa") from e
    return librosa


def _mono(wav, sr: int) -> np.ndarray:
    """Any of [T], [C, T], [B=1, C, T] (numpy or torch) -> mono float32 at 22.05 kHz."""
    if hasattr(wav, "detach"):
        wav = wav.detach().cpu().numpy()
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim == 3:
        if x.shape[0] != 1:
            raise InvalidInput(f"expected one clip, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise InvalidInput(f"audio must be [T] or [C, T], got shape {tuple(np.shape(wav))}")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise InvalidInput(f"sample rate must be a positive integer, got {sr!r}")
    if x.size < sr // 2:
        raise InvalidInput("audio is shorter than 0.5 s; too short to estimate tempo or key")
    if not np.isfinite(x).all():
        raise InvalidInput("audio contains NaN or infinite values")
    if sr != _ANALYSIS_SR:
        try:
            import soxr

            x = soxr.resample(x, sr, _ANALYSIS_SR, quality="HQ").astype(np.float32)
        except ImportError:
            x = _librosa().resample(x, orig_sr=sr, target_sr=_ANALYSIS_SR).astype(np.float32)
    return x


# ------------------------------------------------------------------------------ tempo
def _onset_envelope(x: np.ndarray, hop: int) -> np.ndarray:
    librosa = _librosa()
    env = librosa.onset.onset_strength(y=x, sr=_ANALYSIS_SR, hop_length=hop, n_fft=2048, n_mels=128)
    env = env.astype(np.float64)
    fps = _ANALYSIS_SR / hop
    w = max(3, int(round(0.5 * fps)) | 1)  # remove the local mean over ~0.5 s
    kernel = np.ones(w) / w
    local = np.convolve(env, kernel, mode="same")
    env = np.maximum(env - local, 0.0)
    return env


def _autocorr(env: np.ndarray) -> np.ndarray:
    e = env - env.mean()
    n = e.size
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    spec = np.fft.rfft(e, nfft)
    ac = np.fft.irfft(spec * np.conj(spec), nfft)[:n]
    ac /= np.arange(n, 0, -1)  # unbiased: divide by the overlap
    if ac[0] <= 0:
        return np.zeros_like(ac)
    return ac / ac[0]


def _interp(ac: np.ndarray, lag: float) -> float:
    if lag >= ac.size - 1:
        return 0.0
    i = int(lag)
    f = lag - i
    return float((1 - f) * ac[i] + f * ac[i + 1])


def estimate_tempo(
    wav,
    sr: int,
    *,
    min_bpm: float = 40.0,
    max_bpm: float = 240.0,
    prior_bpm: float = 120.0,
    prior_octaves: float = 1.0,
) -> float:
    """Estimate the tempo of a clip in beats per minute.

    Args:
        wav: audio ``[T]`` or ``[C, T]`` (numpy or torch), any sample rate.
        sr: its sample rate.
        min_bpm, max_bpm: candidate range.
        prior_bpm, prior_octaves: centre and width (std in octaves) of the log-normal
            tempo prior that breaks ties between metrical levels.

    Returns:
        tempo in BPM; 0.0 when the clip has no onsets (silence or a drone).
    """
    if not 0 < min_bpm < max_bpm:
        raise InvalidInput(f"need 0 < min_bpm < max_bpm, got {min_bpm}, {max_bpm}")
    x = _mono(wav, sr)
    hop = 256
    fps = _ANALYSIS_SR / hop
    env = _onset_envelope(x, hop)
    if env.max() <= 1e-9:
        return 0.0
    ac = _autocorr(env)
    bpms = np.arange(min_bpm, max_bpm + 1e-9, 0.25)
    lags = 60.0 * fps / bpms
    score = np.array([_interp(ac, lag) for lag in lags])
    prior = np.exp(-0.5 * (np.log2(bpms / prior_bpm) / prior_octaves) ** 2)
    total = np.maximum(score, 0.0) * prior
    k = int(np.argmax(total))
    if total[k] <= 0:
        return 0.0
    if 0 < k < len(total) - 1:  # parabolic refinement on the grid
        a, b, c = total[k - 1], total[k], total[k + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        return float(bpms[k] + np.clip(shift, -0.5, 0.5) * (bpms[1] - bpms[0]))
    return float(bpms[k])


# ------------------------------------------------------------------------------ key
def _chroma(x: np.ndarray, gamma: float = 10.0) -> np.ndarray:
    """Log-compressed, L2-normalised CQT chroma (CLP chroma, Mueller 2015), [12, frames]."""
    librosa = _librosa()
    peak = float(np.abs(x).max())
    if peak > 0:
        x = x / peak  # make the log compression independent of the playback level
    fmin = librosa.note_to_hz("C1")
    with warnings.catch_warnings():  # librosa's tuning estimate warns on very short inputs
        warnings.simplefilter("ignore", UserWarning)
        cqt = np.abs(librosa.cqt(x, sr=_ANALYSIS_SR, hop_length=512, fmin=fmin, n_bins=7 * 36, bins_per_octave=36))
    cqt = np.log1p(gamma * cqt)
    return librosa.feature.chroma_cqt(C=cqt, sr=_ANALYSIS_SR, hop_length=512, fmin=fmin, bins_per_octave=36,
                                      n_octaves=7, norm=2)


def estimate_key(wav, sr: int, *, profile: str = "krumhansl") -> tuple[str, str, float]:
    """Estimate the key of a clip.

    Args:
        wav: audio ``[T]`` or ``[C, T]`` (numpy or torch), any sample rate.
        sr: its sample rate.
        profile: ``"krumhansl"`` (Krumhansl-Kessler, default) or ``"temperley"``.

    Returns:
        ``(tonic, mode, confidence)``: tonic as a pitch-class name (``"F#"``), mode
        ``"major"``/``"minor"``, confidence = best minus second-best correlation
        (0 for silence).
    """
    if profile not in KEY_PROFILES:
        raise InvalidInput(f"unknown key profile {profile!r}; choose from {', '.join(KEY_PROFILES)}")
    x = _mono(wav, sr)
    chroma = _chroma(x)
    energy = chroma.sum(axis=0)
    if chroma.size == 0 or float(np.abs(x).max()) < 1e-6 or energy.max() <= 0:
        return "C", "major", 0.0
    v = chroma.mean(axis=1)
    v = v - v.mean()
    if np.allclose(v, 0):
        return "C", "major", 0.0
    scores = []
    for mode, prof in zip(("major", "minor"), KEY_PROFILES[profile]):
        p = prof - prof.mean()
        for t in range(12):
            r = float(np.dot(v, np.roll(p, t)) / (np.linalg.norm(v) * np.linalg.norm(p)))
            scores.append((r, t, mode))
    scores.sort(key=lambda s: -s[0])
    best, second = scores[0], scores[1]
    return PITCH_CLASSES[best[1]], best[2], float(best[0] - second[0])


# ------------------------------------------------------------------------------ matching
def tempo_match(estimate: float, reference: float, tol: float = 0.06, allow_octave: bool = False) -> bool:
    """True when ``estimate`` is within ``tol`` (relative) of ``reference``.

    With ``allow_octave`` the estimate may also match 1/2, 2, 1/3 or 3 times the
    reference (metrical-level errors).
    """
    if reference <= 0:
        raise InvalidInput(f"reference tempo must be positive, got {reference!r}")
    if estimate <= 0:
        return False
    factors = (1.0, 0.5, 2.0, 1 / 3, 3.0) if allow_octave else (1.0,)
    return any(abs(estimate - f * reference) <= tol * f * reference for f in factors)


def _parse_key(key) -> tuple[int, str]:
    if isinstance(key, (tuple, list)):
        tonic, mode = key[0], key[1]
    else:
        parts = str(key).strip().split()
        if not parts:
            raise InvalidInput("empty key")
        tonic, mode = parts[0], (parts[1] if len(parts) > 1 else "major")
    t = str(tonic).strip()
    name = t[:1].upper() + t[1:].upper()
    mode = str(mode).lower()
    mode = {"maj": "major", "min": "minor", "m": "minor"}.get(mode, mode)
    if name not in _PC or mode not in ("major", "minor"):
        raise InvalidInput(f"cannot read key {key!r} (expected e.g. 'G major' or ('F#', 'minor'))")
    return _PC[name], mode


def key_match(estimate, reference, mode: str = "exact") -> bool:
    """Compare two keys given as ``"A minor"`` strings or ``(tonic, mode)`` tuples.

    ``mode="exact"``: same tonic and mode. ``mode="relaxed"``: also the relative
    key (C major / A minor), the parallel key (C major / C minor) and the keys a
    perfect fifth above or below in the same mode.
    """
    if mode not in ("exact", "relaxed"):
        raise InvalidInput(f"key_match mode must be 'exact' or 'relaxed', got {mode!r}")
    et, em = _parse_key(estimate)
    rt, rm = _parse_key(reference)
    if (et, em) == (rt, rm):
        return True
    if mode == "exact":
        return False
    if em == rm and (et - rt) % 12 in (5, 7):
        return True
    if et == rt:
        return True  # parallel
    if rm == "major" and em == "minor" and (et - rt) % 12 == 9:
        return True
    if rm == "minor" and em == "major" and (et - rt) % 12 == 3:
        return True
    return False
