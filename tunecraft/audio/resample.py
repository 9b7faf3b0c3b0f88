"""Sample-rate conversion.

Two resamplers with different jobs:

* :func:`resample` — general-purpose, high-quality polyphase resampling with soxr (``HQ``).
  Use it for loading data and for handing audio between models that run at different rates.
* :func:`fft_resample` / :class:`FFTUpsampler` — band-limited resampling in the frequency
  domain: upsampling zero-pads the spectrum, downsampling truncates it. Noise2Music
  (Huang et al., 2023, §3.2) upsamples the 3.2 kHz low-fidelity waveform to 16 kHz this way
  before it conditions the cascader. For a signal that is periodic in the window and
  band-limited below the original Nyquist frequency, FFT upsampling is *exact*: the output
  equals the continuous signal sampled at the new rate.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInput

ArrayLike = Union[torch.Tensor, np.ndarray]


def _check_rate(name: str, sr) -> int:
    if isinstance(sr, bool) or not float(sr).is_integer() or int(sr) <= 0:
        raise InvalidInput(f"{name} must be a positive integer sample rate, got {sr!r}")
    return int(sr)


def resampled_length(length: int, orig_sr: int, target_sr: int) -> int:
    """Length in frames of ``length`` frames resampled from ``orig_sr`` to ``target_sr``:
    ``round(length * target_sr / orig_sr)`` (exact integer arithmetic, halves round up)."""
    return (2 * length * target_sr + orig_sr) // (2 * orig_sr)


def resample(wav: ArrayLike, orig_sr: int, target_sr: int, quality: str = "HQ") -> ArrayLike:
    """Resample ``wav`` ``[..., T]`` from ``orig_sr`` to ``target_sr`` with soxr.

    Any leading shape is accepted (``[T]``, ``[C, T]``, ``[B, C, T]`` ...); all leading
    entries are resampled as independent channels. The output has exactly
    :func:`resampled_length` frames. A torch tensor comes back as a tensor of the same dtype
    on the same device (the work is done on the CPU; the operation is not differentiable);
    a numpy array comes back as numpy. Equal rates return the input unchanged.

    Args:
        wav: audio ``[..., T]``, floating point.
        orig_sr: rate of ``wav``.
        target_sr: rate wanted.
        quality: soxr quality: ``"QQ"``, ``"LQ"``, ``"MQ"``, ``"HQ"`` (default) or ``"VHQ"``.
    """
    import soxr

    orig_sr = _check_rate("orig_sr", orig_sr)
    target_sr = _check_rate("target_sr", target_sr)
    if orig_sr == target_sr:
        return wav
    is_torch = isinstance(wav, torch.Tensor)
    if is_torch:
        if not wav.is_floating_point():
            raise InvalidInput(f"resample expects floating-point audio, got {wav.dtype}")
        arr = wav.detach().to("cpu", torch.float64 if wav.dtype == torch.float64 else torch.float32).numpy()
    elif isinstance(wav, np.ndarray):
        arr = np.asarray(wav, dtype=np.float64 if wav.dtype == np.float64 else np.float32)
    else:
        raise InvalidInput(f"resample expects a torch.Tensor or numpy array, got {type(wav).__name__}")
    if arr.ndim == 0:
        raise InvalidInput("resample expects audio shaped [..., T], got a scalar")
    lead = arr.shape[:-1]
    t = arr.shape[-1]
    out_len = resampled_length(t, orig_sr, target_sr)
    flat = arr.reshape(-1, t)
    if t == 0 or flat.shape[0] == 0:
        out = np.zeros((flat.shape[0], out_len), dtype=arr.dtype)
    else:
        y = soxr.resample(np.ascontiguousarray(flat.T), orig_sr, target_sr, quality=quality)  # [T', N]
        y = y.T
        if y.shape[-1] > out_len:
            y = y[:, :out_len]
        elif y.shape[-1] < out_len:
            y = np.pad(y, ((0, 0), (0, out_len - y.shape[-1])))
        out = np.ascontiguousarray(y)
    out = out.reshape(*lead, out_len)
    if is_torch:
        return torch.from_numpy(out).to(device=wav.device, dtype=wav.dtype)
    return out.astype(wav.dtype if np.issubdtype(wav.dtype, np.floating) else np.float32, copy=False)


def fft_resample(x: torch.Tensor, orig_sr: int, target_sr: int, length: int | None = None) -> torch.Tensor:
    """Band-limited resampling of ``x`` ``[..., T]`` by FFT zero-padding or truncation.

    With ``X = rfft(x)`` (length ``N = T``) and output length ``M`` (default
    :func:`resampled_length`), the output is ``irfft(Y, M) * M / N`` where ``Y`` keeps the bins
    ``k < min(N, M) / 2`` of ``X`` and zeros the rest. The Nyquist bin is handled so that
    real signals stay exact:

    * upsampling, ``N`` even: bin ``N/2`` stands for both ``+fs/2`` and ``-fs/2``; in the
      longer spectrum they are two distinct bins, so each gets half (``Y[N/2] = X[N/2] / 2``,
      its mirror is implied by the real inverse transform);
    * downsampling, ``M`` even: bins ``+M/2`` and ``-M/2`` of the input fold onto the single
      output Nyquist bin: ``Y[M/2] = 2 Re X[M/2]``.

    This is ``scipy.signal.resample`` for real input, batched in torch and device-agnostic.
    If ``x`` is periodic in the window and band-limited below ``orig_sr / 2`` and
    ``T * target_sr / orig_sr`` is an integer, upsampling returns the continuous signal
    sampled at ``target_sr`` exactly (to floating-point precision).

    Args:
        x: real audio ``[..., T]`` (float16/bfloat16 are computed in float32 and cast back).
        orig_sr: rate of ``x``.
        target_sr: rate wanted.
        length: output length; defaults to ``round(T * target_sr / orig_sr)``.

    Returns:
        ``[..., M]`` tensor of ``x``'s dtype and device.
    """
    orig_sr = _check_rate("orig_sr", orig_sr)
    target_sr = _check_rate("target_sr", target_sr)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InvalidInput("fft_resample expects a real floating-point torch.Tensor [..., T]")
    n = x.shape[-1]
    m = resampled_length(n, orig_sr, target_sr) if length is None else int(length)
    if m <= 0:
        raise InvalidInput(f"fft_resample: output length must be positive, got {m}")
    if n == 0:
        raise InvalidInput("fft_resample: input is empty")
    if m == n:
        return x
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    spec = torch.fft.rfft(work, dim=-1)  # [..., n//2+1]
    out = spec.new_zeros(*spec.shape[:-1], m // 2 + 1)
    keep = min(n, m) // 2 + 1  # bins 0..min(n,m)//2
    out[..., :keep] = spec[..., :keep]
    if m > n and n % 2 == 0:
        out[..., n // 2] = out[..., n // 2] * 0.5
    elif m < n and m % 2 == 0:
        out[..., m // 2] = 2.0 * spec[..., m // 2].real
    y = torch.fft.irfft(out, n=m, dim=-1) * (m / n)
    return y.to(x.dtype)


class FFTUpsampler(nn.Module):
    """Module form of :func:`fft_resample` from ``orig_sr`` to ``target_sr``.

    Noise2Music's cascader and vocoder take their low-rate conditioning upsampled this way
    (e.g. 3.2 kHz -> 16 kHz, a factor of 5). Input ``[..., T]``, output
    ``[..., round(T * target_sr / orig_sr)]``. Works for downsampling too
    (``target_sr < orig_sr``), where it is an ideal low-pass followed by decimation.
    """

    def __init__(self, orig_sr: int, target_sr: int):
        super().__init__()
        self.orig_sr = _check_rate("orig_sr", orig_sr)
        self.target_sr = _check_rate("target_sr", target_sr)

    @property
    def factor(self) -> float:
        """``target_sr / orig_sr``."""
        return self.target_sr / self.orig_sr

    def output_length(self, length: int) -> int:
        """Frames produced from ``length`` input frames."""
        return resampled_length(length, self.orig_sr, self.target_sr)

    def forward(self, x: torch.Tensor, length: int | None = None) -> torch.Tensor:
        return fft_resample(x, self.orig_sr, self.target_sr, length=length)

    def extra_repr(self) -> str:
        return f"orig_sr={self.orig_sr}, target_sr={self.target_sr}"

