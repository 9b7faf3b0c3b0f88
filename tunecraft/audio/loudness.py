"""Loudness measurement (ITU-R BS.1770-4) and normalisation.

* :func:`loudness_lufs` — integrated, gated loudness in LUFS (pyloudnorm's BS.1770-4 meter:
  K-weighting, 400 ms blocks with 75 % overlap, absolute gate -70 LUFS, relative gate -10 LU).
* :func:`normalize_loudness` — the loudness normalisation MusicGen's evaluation applies to
  every clip before computing metrics (audiocraft ``audio_utils.normalize_loudness``): a
  single gain bringing the clip to ``target_lufs`` (default -14 LUFS, i.e. audiocraft's
  ``loudness_headroom_db=14``), optional ``tanh`` compressor; clips whose RMS is below
  ``energy_floor`` (near-silence) are returned unchanged, so silence stays silence.
* :func:`peak_normalize` — scale so the absolute peak sits ``headroom_db`` below full scale.

All three accept a torch tensor or numpy array ``[T]``, ``[C, T]`` or (batched, each item on its
own) ``[B, C, T]``.
"""

from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from ..errors import InvalidInput

ArrayLike = Union[torch.Tensor, np.ndarray]

#: BS.1770 gating block (seconds).
BLOCK_SECONDS = 0.4
#: BS.1770 absolute gate (LUFS).
ABSOLUTE_GATE_LUFS = -70.0
# BS.1770 channel weights for L, R, C, Ls, Rs.
_CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)


def _to_numpy(wav: ArrayLike) -> np.ndarray:
    if isinstance(wav, torch.Tensor):
        return wav.detach().to("cpu", torch.float64).numpy()
    if isinstance(wav, np.ndarray):
        return np.asarray(wav, dtype=np.float64)
    raise InvalidInput(f"expected a torch.Tensor or numpy array, got {type(wav).__name__}")


def _check_sr(sample_rate) -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or int(sample_rate) < 4000:
        raise InvalidInput(f"loudness needs a sample rate >= 4000 Hz (K-weighting shelf at 1.5 kHz), got {sample_rate!r}")
    return int(sample_rate)


def _k_weighting(rate: int):
    import pyloudnorm

    return (
        pyloudnorm.IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, rate, "high_shelf"),
        pyloudnorm.IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"),
    )


def _lufs_one(x: np.ndarray, sr: int) -> float:
    """Loudness of one clip ``x`` ``[C, T]`` (float64)."""
    import pyloudnorm

    c, t = x.shape
    if c > len(_CHANNEL_GAINS):
        raise InvalidInput(f"loudness supports at most {len(_CHANNEL_GAINS)} channels, got {c}")
    if t == 0:
        raise InvalidInput("loudness of empty audio is undefined")
    if not np.isfinite(x).all():
        raise InvalidInput("loudness: audio contains NaN or infinite samples")
    if not np.any(x):
        return float("-inf")
    if t >= int(math.ceil(BLOCK_SECONDS * sr)) + 1:
        return float(pyloudnorm.Meter(sr, block_size=BLOCK_SECONDS).integrated_loudness(x.T.copy()))
    # Shorter than one gating block: BS.1770's integrated loudness is undefined, so we use the
    # loudness of the whole clip as one (ungated) block: -0.691 + 10 log10(sum_c G_c mean(y_c^2)),
    # y the K-weighted signal, with the -70 LUFS absolute gate applied.
    filters = _k_weighting(sr)
    energy = 0.0
    for ch in range(c):
        y = x[ch]
        for f in filters:
            y = f.apply_filter(y)
        energy += _CHANNEL_GAINS[ch] * float(np.mean(np.square(y)))
    if energy <= 0.0:
        return float("-inf")
    lufs = -0.691 + 10.0 * math.log10(energy)
    return lufs if lufs >= ABSOLUTE_GATE_LUFS else float("-inf")


def loudness_lufs(wav: ArrayLike, sample_rate: int):
    """Integrated loudness (ITU-R BS.1770-4) in LUFS.

    Args:
        wav: ``[T]``, ``[C, T]`` (up to 5 channels, ordered L, R, C, Ls, Rs) or ``[B, C, T]``.
        sample_rate: rate of ``wav`` (>= 4 kHz).

    Returns:
        A float for ``[T]``/``[C, T]``; a float64 tensor ``[B]`` for ``[B, C, T]``. Digital
        silence (or anything below the -70 LUFS absolute gate) gives ``-inf``.

    Clips shorter than one 400 ms gating block have no BS.1770 integrated loudness; for them
    the K-weighted mean-square of the whole clip is used as a single ungated block (the
    "momentary" loudness of the clip), which agrees with the integrated loudness of a
    stationary signal.
    """
    sr = _check_sr(sample_rate)
    x = _to_numpy(wav)
    if x.ndim == 1:
        return _lufs_one(x[None], sr)
    if x.ndim == 2:
        return _lufs_one(x, sr)
    if x.ndim == 3:
        return torch.tensor([_lufs_one(item, sr) for item in x], dtype=torch.float64)
    raise InvalidInput(f"loudness expects [T], [C, T] or [B, C, T], got shape {tuple(x.shape)}")


def _per_item(wav: ArrayLike, fn) -> ArrayLike:
    """Apply ``fn`` (on a ``[T]``/``[C, T]`` torch clip) to each clip of ``wav``."""
    if isinstance(wav, np.ndarray):
        return _per_item(torch.from_numpy(np.asarray(wav)), fn).numpy().astype(wav.dtype, copy=False)
    if not isinstance(wav, torch.Tensor):
        raise InvalidInput(f"expected a torch.Tensor or numpy array, got {type(wav).__name__}")
    if wav.ndim in (1, 2):
        return fn(wav)
    if wav.ndim == 3:
        return torch.stack([fn(item) for item in wav])
    raise InvalidInput(f"expected audio shaped [T], [C, T] or [B, C, T], got shape {tuple(wav.shape)}")


def normalize_loudness(
    wav: ArrayLike,
    sample_rate: int,
    target_lufs: float = -14.0,
    max_gain_db: float | None = None,
    peak_limit: float | None = None,
    compressor: bool = False,
    energy_floor: float = 2e-3,
) -> ArrayLike:
    """Scale ``wav`` to ``target_lufs`` integrated loudness (audiocraft's ``normalize_loudness``).

    ``gain_db = target_lufs - loudness_lufs(wav)``; ``out = wav * 10 ** (gain_db / 20)``.

    Args:
        wav: ``[T]``, ``[C, T]`` or ``[B, C, T]`` (each clip normalised on its own), torch or numpy.
        sample_rate: rate of ``wav``.
        target_lufs: loudness wanted; -14 LUFS is what MusicGen's evaluation uses.
        max_gain_db: if given, the gain is clipped to ``[-inf, max_gain_db]`` dB, so quiet
            clips are not boosted into noise.
        peak_limit: if given, after the gain the clip is scaled down (never up) so that its
            absolute peak is at most ``peak_limit`` — the result is then quieter than the target.
        compressor: apply ``tanh`` after the gain (audiocraft's ``loudness_compressor``).
        energy_floor: clips whose RMS is below this are returned unchanged (audiocraft's
            default 2e-3, about -54 dBFS); digital silence is always returned unchanged.

    Returns:
        Same type, shape and dtype as ``wav``; never NaN or inf.
    """
    sr = _check_sr(sample_rate)
    if peak_limit is not None and peak_limit <= 0:
        raise InvalidInput(f"peak_limit must be > 0, got {peak_limit}")

    def one(x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0:
            raise InvalidInput("cannot normalise the loudness of empty audio")
        xd = x.detach().to(torch.float64)
        rms = float(xd.pow(2).mean().sqrt())
        if not math.isfinite(rms):
            raise InvalidInput("normalize_loudness: audio contains NaN or infinite samples")
        if rms < energy_floor or rms == 0.0:
            return x
        lufs = loudness_lufs(xd, sr)
        if not math.isfinite(lufs):
            return x
        gain_db = target_lufs - lufs
        if max_gain_db is not None:
            gain_db = min(gain_db, float(max_gain_db))
        out = x * (10.0 ** (gain_db / 20.0))
        if compressor:
            out = torch.tanh(out)
        if peak_limit is not None:
            peak = float(out.detach().abs().max())
            if peak > peak_limit:
                out = out * (peak_limit / peak)
        return out

    return _per_item(wav, one)


def peak_normalize(wav: ArrayLike, headroom_db: float = 1.0) -> ArrayLike:
    """Scale ``wav`` so its absolute peak is ``10 ** (-headroom_db / 20)`` (default -1 dBFS).

    ``[T]``, ``[C, T]`` or ``[B, C, T]`` (each clip on its own), torch or numpy. Silence is
    returned unchanged.
    """
    if headroom_db < 0:
        raise InvalidInput(f"headroom_db must be >= 0, got {headroom_db}")
    target = 10.0 ** (-headroom_db / 20.0)

    def one(x: torch.Tensor) -> torch.Tensor:
        peak = float(x.detach().abs().max()) if x.numel() else 0.0
        if not math.isfinite(peak):
            raise InvalidInput("peak_normalize: audio contains NaN or infinite samples")
        if peak == 0.0:
            return x
        return x * (target / peak)

    return _per_item(wav, one)
