"""Hand-made clip descriptors that complement the joint embedding in the tag classifier.

The joint embedding (:mod:`tunecraft.joint`) separates styles and instruments well but carries
almost no key information (a tag head on it alone scores chance on the 24 keys) and only a rough
idea of tempo. Two small, cheap descriptors fill the gap:

* :func:`chroma_profile` - the time-averaged STFT chromagram (12 bins, every frame max-normalised
  as audiocraft's ``ChromaExtractor``, :func:`tunecraft.audio.chromagram`), then scaled to unit
  maximum: ``[B, 12]``, pitch class C first. Rolling it by ``r`` bins is the profile of the clip
  transposed up ``r`` semitones, which the tag-classifier task uses for key augmentation.
* :func:`tempo_profile` - the autocorrelation of an onset envelope sampled at the beat periods of
  ``n`` log-spaced tempi (40-240 BPM): log-mel (64 bands, 100 frames/s) spectral flux, local mean
  removed over 0.5 s, half-wave rectified; unbiased autocorrelation normalised to 1 at lag 0,
  linearly interpolated at lag ``60 * fps / bpm``: ``[B, n]``.

Both take ``wav [B, C, T]``, ``[B, T]`` or ``[T]`` at any rate (resampled to 16 kHz).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InvalidInput

__all__ = ["FEATURE_DIMS", "FEATURE_RATE", "TEMPO_BINS", "chroma_profile", "roll_chroma", "tempo_profile"]

FEATURE_RATE = 16000
TEMPO_BINS = 32
#: Width of each descriptor (``joint`` is the joint model's ``embed_dim``).
FEATURE_DIMS = {"chroma": 12, "tempo": TEMPO_BINS}


def _mono16k(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    from ..audio import resample

    if not isinstance(wav, torch.Tensor) or not wav.is_floating_point():
        raise InvalidInput("audio must be a floating-point tensor")
    x = wav.detach().float().cpu()
    if x.dim() == 3:
        x = x.mean(1)
    elif x.dim() == 1:
        x = x[None]
    elif x.dim() != 2:
        raise InvalidInput(f"audio must be [B, C, T], [B, T] or [T], got {tuple(wav.shape)}")
    if int(sample_rate) != FEATURE_RATE:
        x = resample(x, int(sample_rate), FEATURE_RATE)
    if x.shape[-1] < FEATURE_RATE // 2:
        raise InvalidInput("audio shorter than 0.5 s is too short for chroma and tempo descriptors")
    if not torch.isfinite(x).all():
        raise InvalidInput("audio contains NaN or infinite values")
    return x


@torch.no_grad()
def chroma_profile(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean frame-normalised chroma ``[B, 12]`` scaled to unit maximum (zeros for silence)."""
    from ..audio import chromagram

    x = _mono16k(wav, sample_rate)
    c = chromagram(x, FEATURE_RATE).float()  # [B, 12, frames], each frame max-normalised
    prof = c.mean(-1)
    peak = prof.amax(-1, keepdim=True)
    return torch.where(peak > 0, prof / peak.clamp_min(1e-8), torch.zeros_like(prof))


def roll_chroma(profile: torch.Tensor, semitones: int) -> torch.Tensor:
    """The profile of the clip transposed up ``semitones`` (pitch class ``p`` moves to ``p + r``)."""
    return torch.roll(profile, shifts=int(semitones), dims=-1)


@torch.no_grad()
def tempo_profile(wav: torch.Tensor, sample_rate: int, bins: int = TEMPO_BINS, min_bpm: float = 40.0,
                  max_bpm: float = 240.0) -> torch.Tensor:
    """Onset-envelope autocorrelation at ``bins`` log-spaced tempi ``[B, bins]`` (module docstring)."""
    from ..audio import log_mel

    x = _mono16k(wav, sample_rate)
    hop = FEATURE_RATE // 100
    mel = log_mel(x, FEATURE_RATE, n_fft=1024, hop_length=hop, win_length=640, n_mels=64)  # [B, 64, F]
    flux = F.relu(mel[..., 1:] - mel[..., :-1]).mean(1)  # [B, F-1]
    w = 51  # 0.5 s local mean
    local = F.avg_pool1d(F.pad(flux[:, None], (w // 2, w // 2), mode="replicate"), w, stride=1)[:, 0]
    env = F.relu(flux - local)
    env = env - env.mean(-1, keepdim=True)
    n = env.shape[-1]
    nfft = 1 << int(math.ceil(math.log2(2 * n)))
    spec = torch.fft.rfft(env, nfft)
    ac = torch.fft.irfft(spec * spec.conj(), nfft)[..., :n]
    ac = ac / torch.arange(n, 0, -1, dtype=ac.dtype)  # unbiased
    ac = torch.where(ac[..., :1] > 0, ac / ac[..., :1].clamp_min(1e-12), torch.zeros_like(ac))
    bpms = torch.logspace(math.log10(min_bpm), math.log10(max_bpm), bins, dtype=torch.float64)
    lags = (60.0 * 100.0 / bpms).clamp(max=n - 2)
    lo = lags.floor().long()
    frac = (lags - lo).float()
    return (1 - frac) * ac[..., lo] + frac * ac[..., lo + 1]
