"""Spectral features as batched, device-agnostic torch modules.

The filter banks come from librosa (``librosa.filters.mel`` / ``librosa.filters.chroma``), are
computed once per module and registered as (non-persistent) buffers, so ``module.to(device)``
moves them and checkpoints do not store them. The transforms themselves use ``torch.stft``.

Input convention for every feature here:

* ``[B, C, T]`` — channels are averaged to mono first; output ``[B, F, frames]``;
* ``[B, T]`` — output ``[B, F, frames]``;
* ``[T]`` — output ``[F, frames]``.

With ``center=True`` (the default) ``frames = 1 + T // hop_length``. Outputs are float32 and
finite on silence.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from ..errors import InvalidInput


def _as_batch(wav: torch.Tensor, what: str) -> tuple[torch.Tensor, bool]:
    """``[B, C, T]``/``[B, T]``/``[T]`` -> (float32 ``[B, T]``, whether the input was 1-D)."""
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(wav)
    if not isinstance(wav, torch.Tensor):
        raise InvalidInput(f"{what}: expected a torch.Tensor, got {type(wav).__name__}")
    if not wav.is_floating_point():
        raise InvalidInput(f"{what}: expected floating-point audio, got {wav.dtype}")
    if wav.ndim == 1:
        return wav.float()[None], True
    if wav.ndim == 2:
        return wav.float(), False
    if wav.ndim == 3:
        return wav.float().mean(dim=1), False
    raise InvalidInput(f"{what}: expected audio [B, C, T], [B, T] or [T], got shape {tuple(wav.shape)}")


def _stft_magnitude(
    x: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int,
    window: torch.Tensor,
    center: bool,
    pad_mode: str,
) -> torch.Tensor:
    """|STFT| of ``x`` ``[B, T]`` -> ``[B, n_fft // 2 + 1, frames]``.

    Inputs too short for reflect padding (``T <= n_fft // 2``) are zero-padded instead; inputs
    shorter than ``n_fft`` without centering are zero-padded to ``n_fft``.
    """
    if x.shape[-1] == 0:
        raise InvalidInput("cannot compute a spectrogram of empty audio")
    if center and pad_mode == "reflect" and x.shape[-1] <= n_fft // 2:
        pad_mode = "constant"
    if not center and x.shape[-1] < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.shape[-1]))
    spec = torch.stft(
        x,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=center,
        pad_mode=pad_mode,
        return_complex=True,
    )
    return spec.abs()


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def griffin_lim(
    magnitude: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int,
    window: torch.Tensor,
    n_iter: int = 32,
    momentum: float = 0.99,
    length: int | None = None,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Waveform ``[B, T]`` whose centred STFT magnitude approximates ``magnitude [B, n_fft//2+1, F]``.

    The fast Griffin-Lim algorithm (Perraudin, Balazs and Soendergaard, 2013): alternate projections
    between consistent spectrograms and the given magnitude, with ``momentum`` (0 = the original
    Griffin-Lim of 1984). The phase starts at zero, so the result is deterministic, or at the phase
    of the waveform ``init [B, T]`` (e.g. a neural vocoder's output; ``n_iter = 0`` then just puts
    ``magnitude`` under that phase). ``length`` defaults to ``(F - 1) * hop_length`` (frame ``k``
    centred on sample ``k * hop_length``).
    """
    if magnitude.dim() != 3 or magnitude.shape[1] != n_fft // 2 + 1:
        raise InvalidInput(f"griffin_lim expects a magnitude [B, {n_fft // 2 + 1}, frames], got {tuple(magnitude.shape)}")
    if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < 0:
        raise InvalidInput(f"n_iter must be an integer >= 0, got {n_iter!r}")
    if not 0.0 <= float(momentum) < 1.0:
        raise InvalidInput(f"momentum must be in [0, 1), got {momentum!r}")
    mag = magnitude.float()
    frames = mag.shape[-1]
    length = int(length) if length is not None else (frames - 1) * hop_length
    window = window.to(mag.device)
    stft = dict(n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window, center=True)

    def project(spec: torch.Tensor) -> torch.Tensor:  # nearest consistent spectrogram
        wav = torch.istft(spec, length=length, **stft)
        out = torch.stft(wav, pad_mode="constant", return_complex=True, **stft)[..., :frames]
        return out if out.shape[-1] == frames else torch.nn.functional.pad(out, (0, frames - out.shape[-1]))

    angles = torch.ones_like(mag, dtype=torch.complex64)
    if init is not None:
        init = torch.as_tensor(init).float().to(mag.device)
        if init.dim() != 2 or init.shape[0] != mag.shape[0]:
            raise InvalidInput(f"init must be a waveform [{mag.shape[0]}, T], got {tuple(init.shape)}")
        start = torch.stft(init, pad_mode="constant", return_complex=True, **stft)[..., :frames]
        start = torch.nn.functional.pad(start, (0, frames - start.shape[-1]))
        angles = torch.where(start.abs() > 1e-8, start / start.abs().clamp_min(1e-8), angles)
    previous = torch.zeros_like(angles)
    for _ in range(int(n_iter)):
        rebuilt = project(mag * angles)
        accelerated = rebuilt - (momentum / (1.0 + momentum)) * previous if momentum else rebuilt
        angles = accelerated / accelerated.abs().clamp_min(1e-8)
        previous = rebuilt
    return torch.istft(mag * angles, length=length, **stft)


class MelSpectrogram(nn.Module):
    """Mel spectrogram ``M = F_mel · |STFT(x)|^power``.

    With the defaults this matches ``librosa.feature.melspectrogram`` (Hann window, centred
    frames with zero padding, Slaney mel scale and area-normalised filters, power 2).

    Args:
        sample_rate: rate of the input audio.
        n_fft: FFT size.
        hop_length: frame step (default ``n_fft // 4``).
        win_length: window length (default ``n_fft``), zero-padded to ``n_fft``.
        n_mels: number of mel bands.
        f_min, f_max: band edges in Hz (``f_max`` defaults to ``sample_rate / 2``).
        power: exponent of the magnitude (1: magnitude, 2: power).
        center: centre frames (``frames = 1 + T // hop_length``).
        pad_mode: padding used when centring (``"constant"`` = zeros, librosa's default; or
            ``"reflect"``, torchaudio's).
        norm: librosa mel filter normalisation: ``"slaney"`` (area), ``None`` (peak 1) or a p-norm.
        htk: use the HTK mel formula instead of Slaney's.
        normalized: divide the STFT by the window sum, so a full-scale sine has magnitude 0.5
            whatever ``win_length`` is.

    Shapes: ``[B, C, T]`` or ``[B, T]`` -> ``[B, n_mels, frames]``; ``[T]`` -> ``[n_mels, frames]``.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 2048,
        hop_length: int | None = None,
        win_length: int | None = None,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 2.0,
        center: bool = True,
        pad_mode: str = "constant",
        norm: str | float | None = "slaney",
        htk: bool = False,
        normalized: bool = False,
    ):
        super().__init__()
        from librosa import filters

        self.sample_rate = _check_positive("sample_rate", sample_rate)
        self.n_fft = _check_positive("n_fft", n_fft)
        self.hop_length = _check_positive("hop_length", hop_length or self.n_fft // 4)
        self.win_length = _check_positive("win_length", win_length or self.n_fft)
        if self.win_length > self.n_fft:
            raise InvalidInput(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        self.n_mels = _check_positive("n_mels", n_mels)
        self.f_min = float(f_min)
        self.f_max = float(f_max) if f_max is not None else self.sample_rate / 2.0
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2.0 + 1e-6:
            raise InvalidInput(
                f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, f_max={self.f_max}, "
                f"sample_rate={self.sample_rate}"
            )
        if power <= 0:
            raise InvalidInput(f"power must be > 0, got {power}")
        self.power = float(power)
        self.center = bool(center)
        self.pad_mode = pad_mode
        self.normalized = bool(normalized)
        fb = filters.mel(
            sr=self.sample_rate,
            n_fft=self.n_fft,
            n_mels=self.n_mels,
            fmin=self.f_min,
            fmax=self.f_max,
            htk=htk,
            norm=norm,
        )
        self.register_buffer("mel_fb", torch.from_numpy(np.asarray(fb, dtype=np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True), persistent=False)
        self._fb_pinv: torch.Tensor | None = None  # pseudo-inverse of mel_fb, made by the first inverse()

    def num_frames(self, length: int) -> int:
        """Frames produced for ``length`` samples."""
        if self.center:
            return 1 + length // self.hop_length
        return 1 + max(length - self.n_fft, 0) // self.hop_length

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x, squeeze = _as_batch(wav, type(self).__name__)
        x = x.to(self.window.device)
        mag = _stft_magnitude(x, self.n_fft, self.hop_length, self.win_length, self.window, self.center, self.pad_mode)
        if self.normalized:
            mag = mag / self.window.sum()
        spec = mag if self.power == 1.0 else mag.pow(self.power)
        mel = torch.matmul(self.mel_fb, spec)  # [B, n_mels, frames]
        return mel[0] if squeeze else mel

    def inverse(self, mel: torch.Tensor, n_iter: int = 32, momentum: float = 0.99,
                length: int | None = None, init: torch.Tensor | None = None) -> torch.Tensor:
        """Audio ``[B, T]`` from a mel spectrogram ``[B, n_mels, F]`` of this transform: the
        non-negative least-norm linear spectrogram (pseudo-inverse of the filter bank, clipped at
        0), then :func:`griffin_lim` for the phase (from zero, or from the waveform ``init``). A
        deterministic estimate, not a vocoder: it keeps pitch and onsets but sounds phasey."""
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise InvalidInput(f"expected a mel spectrogram [B, {self.n_mels}, frames], got {tuple(mel.shape)}")
        if self._fb_pinv is None or self._fb_pinv.device != mel.device:
            self._fb_pinv = torch.linalg.pinv(self.mel_fb.to(mel.device))
        spec = torch.matmul(self._fb_pinv, mel.float()).clamp_min(0.0)
        mag = spec if self.power == 1.0 else spec.pow(1.0 / self.power)
        if self.normalized:
            mag = mag * self.window.sum()
        return griffin_lim(mag, self.n_fft, self.hop_length, self.win_length, self.window, n_iter, momentum, length,
                           init=init)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"win_length={self.win_length}, n_mels={self.n_mels}, power={self.power}"
        )


class LogMel(nn.Module):
    """Log-mel spectrogram normalised to [-1, 1], the Noise2Music spectrogram representation.

    Noise2Music (Huang et al., 2023, §3.1) models 80-bin log-mel spectrograms at 100 frames/s
    (16 kHz audio, hop 160), with values normalised to [-1, 1]. The paper does not pin the
    dB mapping down, so ours is fixed and invertible::

        M   = F_mel · |STFT(x)| / sum(window)          # magnitude, peak-1 (un-normalised) mel filters
        dB  = clamp(20 log10(max(M, 10^(min_db/20))), min_db, max_db)
        y   = 2 (dB - min_db) / (max_db - min_db) - 1  # in [-1, 1]

    With the defaults ``min_db = -100`` (HiFi-GAN's 1e-5 floor) and ``max_db = +20``:
    dividing by the window sum makes a full-scale sine peak near 0 dB, and full-scale noise,
    square waves and sweeps stay below +10 dB, so the ceiling is reached only by audio far
    beyond full scale. :meth:`denormalize` inverts the map exactly for values between floor and
    ceiling (to dB, magnitude or power).

    Args:
        sample_rate: rate of the input (16 kHz in Noise2Music).
        n_fft: FFT size (1024).
        hop_length: frame step (160 = 100 frames/s at 16 kHz).
        win_length: window length (640 = 40 ms at 16 kHz).
        n_mels: mel bands (80).
        f_min, f_max: band edges (0 Hz to Nyquist).
        min_db, max_db: the dB floor and ceiling mapped to -1 and +1.

    Shapes: ``[B, C, T]`` or ``[B, T]`` -> ``[B, n_mels, 1 + T // hop_length]``; ``[T]`` ->
    ``[n_mels, frames]``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 160,
        win_length: int = 640,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        min_db: float = -100.0,
        max_db: float = 20.0,
    ):
        super().__init__()
        if not max_db > min_db:
            raise InvalidInput(f"max_db ({max_db}) must be greater than min_db ({min_db})")
        self.min_db = float(min_db)
        self.max_db = float(max_db)
        self.mel = MelSpectrogram(
            sample_rate,
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=win_length,
            n_mels=n_mels,
            f_min=f_min,
            f_max=f_max,
            power=1.0,
            norm=None,
            normalized=True,
        )

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.mel.hop_length

    @property
    def n_mels(self) -> int:
        return self.mel.n_mels

    @property
    def frame_rate(self) -> float:
        """Frames per second (``sample_rate / hop_length``)."""
        return self.mel.sample_rate / self.mel.hop_length

    def num_frames(self, length: int) -> int:
        """Frames produced for ``length`` samples."""
        return self.mel.num_frames(length)

    def to_db(self, wav: torch.Tensor) -> torch.Tensor:
        """Clamped log-mel in dB, ``[B, n_mels, frames]``, in ``[min_db, max_db]``."""
        mag = self.mel(wav)
        floor = 10.0 ** (self.min_db / 20.0)
        return (20.0 * torch.log10(mag.clamp_min(floor))).clamp(self.min_db, self.max_db)

    def normalize_db(self, db: torch.Tensor) -> torch.Tensor:
        """Map dB in ``[min_db, max_db]`` to [-1, 1]."""
        return (2.0 * (db - self.min_db) / (self.max_db - self.min_db) - 1.0).clamp(-1.0, 1.0)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.normalize_db(self.to_db(wav))

    def denormalize(self, y: torch.Tensor, to: str = "magnitude") -> torch.Tensor:
        """Invert the [-1, 1] map: ``to="db"`` gives dB, ``"magnitude"`` ``10^(dB/20)`` (the
        mel magnitude ``M`` above), ``"power"`` ``M^2``. Values outside [-1, 1] are clamped."""
        db = (y.float().clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.max_db - self.min_db) + self.min_db
        if to == "db":
            return db
        if to == "magnitude":
            return torch.pow(10.0, db / 20.0)
        if to == "power":
            return torch.pow(10.0, db / 10.0)
        raise InvalidInput(f"denormalize: 'to' must be 'db', 'magnitude' or 'power', got {to!r}")

    def invert(self, y: torch.Tensor, n_iter: int = 32, momentum: float = 0.99,
               length: int | None = None, init: torch.Tensor | None = None) -> torch.Tensor:
        """Griffin-Lim audio ``[B, T]`` from a normalised log-mel ``[B, n_mels, F]`` (see
        :meth:`MelSpectrogram.inverse`); ``length`` defaults to ``(F - 1) * hop``."""
        return self.mel.inverse(self.denormalize(y), n_iter=n_iter, momentum=momentum, length=length, init=init)

    def extra_repr(self) -> str:
        return f"min_db={self.min_db}, max_db={self.max_db}"


class Chroma(nn.Module):
    """STFT chromagram, as audiocraft's ``ChromaExtractor`` (MusicGen melody conditioning).

    ``S = |STFT(x)|^2 / sum(window^2)`` (Hann, centred, ``win_length = 2**radix2_exp``,
    hop ``win_length // 4``); ``chroma = F_chroma · S`` with ``librosa.filters.chroma``
    (tuning 0, bin 0 = C); each frame is then divided by its ``norm``-norm (max by default,
    eps 1e-6). With ``argmax=True`` each frame becomes the one-hot of its dominant pitch class:
    MusicGen's melody "information bottleneck" (Copet et al., 2023, §3.2), which keeps the
    melody but not the timbre. Digital silence gives all-zero frames (or, with ``argmax``, the
    one-hot of bin 0, as audiocraft does).

    Inputs shorter than ``n_fft`` are zero-padded on both sides to ``n_fft`` (as audiocraft).

    Shapes: ``[B, C, T]`` or ``[B, T]`` -> ``[B, n_chroma, frames]``; ``[T]`` -> ``[n_chroma, frames]``.
    Note that audiocraft returns ``[B, frames, n_chroma]``; we keep features channel-first.
    """

    def __init__(
        self,
        sample_rate: int,
        n_chroma: int = 12,
        radix2_exp: int = 12,
        n_fft: int | None = None,
        win_length: int | None = None,
        hop_length: int | None = None,
        argmax: bool = False,
        norm: float = math.inf,
    ):
        super().__init__()
        from librosa import filters

        self.sample_rate = _check_positive("sample_rate", sample_rate)
        self.n_chroma = _check_positive("n_chroma", n_chroma)
        self.win_length = _check_positive("win_length", win_length or 2**radix2_exp)
        self.n_fft = _check_positive("n_fft", n_fft or self.win_length)
        if self.win_length > self.n_fft:
            raise InvalidInput(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        self.hop_length = _check_positive("hop_length", hop_length or self.win_length // 4)
        self.argmax = bool(argmax)
        self.norm = float(norm)
        fb = filters.chroma(sr=self.sample_rate, n_fft=self.n_fft, tuning=0, n_chroma=self.n_chroma)
        self.register_buffer("chroma_fb", torch.from_numpy(np.asarray(fb, dtype=np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length, periodic=True), persistent=False)

    def num_frames(self, length: int) -> int:
        """Frames produced for ``length`` samples."""
        return 1 + max(length, self.n_fft) // self.hop_length

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x, squeeze = _as_batch(wav, type(self).__name__)
        x = x.to(self.window.device)
        t = x.shape[-1]
        if t < self.n_fft:
            pad = self.n_fft - t
            x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2))
        mag = _stft_magnitude(x, self.n_fft, self.hop_length, self.win_length, self.window, True, "reflect")
        spec = mag.pow(2) / self.window.pow(2).sum()
        raw = torch.matmul(self.chroma_fb, spec)  # [B, n_chroma, frames]
        chroma = torch.nn.functional.normalize(raw, p=self.norm, dim=-2, eps=1e-6)
        if self.argmax:
            idx = chroma.argmax(dim=-2, keepdim=True)
            chroma = torch.zeros_like(chroma).scatter_(-2, idx, 1.0)
        return chroma[0] if squeeze else chroma

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_chroma={self.n_chroma}, n_fft={self.n_fft}, "
            f"hop_length={self.hop_length}, argmax={self.argmax}"
        )


@functools.lru_cache(maxsize=16)
def _cached(cls: type, device: str, *args, **kwargs) -> nn.Module:
    return cls(*args, **kwargs).to(device)


def log_mel(
    wav: torch.Tensor,
    sample_rate: int = 16000,
    n_fft: int = 1024,
    hop_length: int = 160,
    win_length: int = 640,
    n_mels: int = 80,
    f_min: float = 0.0,
    f_max: float | None = None,
    min_db: float = -100.0,
    max_db: float = 20.0,
) -> torch.Tensor:
    """Functional form of :class:`LogMel` (modules are cached per settings and device)."""
    wav = torch.as_tensor(wav)
    mod = _cached(LogMel, str(wav.device), sample_rate, n_fft, hop_length, win_length, n_mels, f_min, f_max, min_db, max_db)
    return mod(wav)


def log_mel_inverse(y: torch.Tensor, *, n_iter: int = 32, length: int | None = None,
                    init: torch.Tensor | None = None, **settings) -> torch.Tensor:
    """Functional form of :meth:`LogMel.invert` (Griffin-Lim audio ``[B, T]`` from ``y [B, n_mels, F]``,
    the phase starting at ``init``'s when given); ``settings`` are :class:`LogMel`'s keyword
    arguments (modules are cached per settings and device)."""
    y = torch.as_tensor(y)
    return _cached(LogMel, str(y.device), **settings).invert(y, n_iter=n_iter, length=length, init=init)


def chromagram(
    wav: torch.Tensor,
    sample_rate: int,
    n_chroma: int = 12,
    argmax: bool = False,
    radix2_exp: int = 12,
    n_fft: int | None = None,
    win_length: int | None = None,
    hop_length: int | None = None,
    norm: float = math.inf,
) -> torch.Tensor:
    """Functional form of :class:`Chroma` (modules are cached per settings and device).

    ``[B, C, T]``/``[B, T]`` -> ``[B, n_chroma, frames]``; ``[T]`` -> ``[n_chroma, frames]``.
    """
    wav = torch.as_tensor(wav)
    mod = _cached(
        Chroma, str(wav.device), sample_rate, n_chroma, radix2_exp, n_fft, win_length, hop_length, bool(argmax), norm
    )
    return mod(wav)
