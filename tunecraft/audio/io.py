"""Reading and writing audio files (soundfile / libsndfile).

Audio in tunecraft is a float32 tensor ``[C, T]`` in [-1, 1] (``[B, C, T]`` when batched).
:func:`load_audio` reads WAV, FLAC, OGG (Vorbis/Opus), AIFF and, where the installed
libsndfile supports it (>= 1.1), MP3. Seeking reads only the frames it needs.
:func:`save_audio` writes WAV (PCM_16 by default, float on request), FLAC and OGG/Vorbis
atomically (temporary file + ``os.replace``).

Every problem with a file (missing, unsupported extension, corrupt, empty, NaN content)
raises :class:`~tunecraft.errors.AudioFormatError` with the path in the message; problems
with the arguments raise :class:`~tunecraft.errors.InvalidInput`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import soundfile as sf
import torch

from ..errors import AudioFormatError, InvalidInput

PathLike = Union[str, os.PathLike]
ArrayLike = Union[torch.Tensor, np.ndarray]

#: Extensions :func:`load_audio` reads, mapped to the libsndfile major format they need.
READ_FORMATS: dict[str, str] = {
    ".wav": "WAV",
    ".wave": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".opus": "OGG",
    ".mp3": "MP3",
    ".aif": "AIFF",
    ".aiff": "AIFF",
}

#: Extensions :func:`save_audio` writes: (libsndfile format, default subtype).
WRITE_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}

_SUBTYPE_ALIASES = {
    "float": "FLOAT",
    "float32": "FLOAT",
    "double": "DOUBLE",
    "float64": "DOUBLE",
    "int16": "PCM_16",
    "pcm16": "PCM_16",
    "int24": "PCM_24",
    "pcm24": "PCM_24",
    "int32": "PCM_32",
    "pcm32": "PCM_32",
}


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What an audio file's header says.

    Attributes:
        sample_rate: frames per second.
        frames: number of frames (samples per channel).
        channels: number of channels.
        duration: ``frames / sample_rate`` in seconds.
        format: libsndfile major format, e.g. ``"WAV"``, ``"FLAC"``, ``"OGG"``, ``"MP3"``.
        subtype: libsndfile subtype, e.g. ``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``.
    """

    sample_rate: int
    frames: int
    channels: int
    duration: float
    format: str
    subtype: str = ""


def _check_readable(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioFormatError(f"audio file not found: {p}")
    if not p.is_file():
        raise AudioFormatError(f"not an audio file (it is a directory or special file): {p}")
    ext = p.suffix.lower()
    if ext not in READ_FORMATS:
        supported = ", ".join(sorted(READ_FORMATS))
        raise AudioFormatError(f"unsupported audio extension {ext or '(none)'!r} for {p}; supported: {supported}")
    if READ_FORMATS[ext] not in sf.available_formats():
        if READ_FORMATS[ext] == "MP3":
            raise AudioFormatError(
                f"cannot read {p}: MP3 needs libsndfile>=1.1 (installed: {sf.__libsndfile_version__}); "
                "convert it to WAV/FLAC first"
            )
        raise AudioFormatError(f"cannot read {p}: the installed libsndfile has no {READ_FORMATS[ext]} support")
    if p.stat().st_size == 0:
        raise AudioFormatError(f"audio file is empty (0 bytes): {p}")
    return p


def _open(p: Path) -> sf.SoundFile:
    try:
        return sf.SoundFile(str(p))
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError) as e:
        raise AudioFormatError(f"cannot read audio file {p}: {_short(e)}") from None


def _short(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def audio_info(path: PathLike) -> AudioInfo:
    """Read only the header of ``path`` (fast; no samples are decoded).

    Raises:
        AudioFormatError: the file is missing, of an unsupported extension, unreadable,
            or holds no frames.
    """
    p = _check_readable(path)
    try:
        info = sf.info(str(p))
    except (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError) as e:
        raise AudioFormatError(f"cannot read audio header of {p}: {_short(e)}") from None
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise AudioFormatError(f"audio file holds no samples: {p}")
    return AudioInfo(
        sample_rate=int(info.samplerate),
        frames=int(info.frames),
        channels=int(info.channels),
        duration=float(info.frames) / float(info.samplerate),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def load_audio(
    path: PathLike,
    sample_rate: int | None = None,
    channels: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
    pad: bool = False,
) -> tuple[torch.Tensor, int]:
    """Load (a segment of) an audio file as a float32 tensor ``[C, T]``.

    Args:
        path: a .wav/.flac/.ogg/.opus/.aiff (or .mp3 with libsndfile >= 1.1) file.
        sample_rate: resample to this rate (soxr HQ, see :func:`~tunecraft.audio.resample`);
            ``None`` keeps the file's rate.
        channels: convert to this many channels (see :func:`~tunecraft.audio.convert_channels`);
            ``None`` keeps the file's channels.
        offset: start of the segment in seconds. Only the frames from ``offset`` to
            ``offset + duration`` are decoded.
        duration: length of the segment in seconds; ``None`` reads to the end.
        pad: when the file ends before ``offset + duration``, zero-pad so the result has
            exactly ``round(duration * sr)`` frames (``sr`` the returned rate).

    Returns:
        ``(wav, sr)``: ``wav`` is ``[C, T]`` float32, ``sr`` the rate of ``wav``.

    Raises:
        AudioFormatError: missing, unsupported, corrupt, truncated or empty file, or a file
            whose samples are NaN/inf. The message names the path.
        InvalidInput: negative offset/duration, or an offset past the end without ``pad``.
    """
    if offset < 0:
        raise InvalidInput(f"offset must be >= 0 seconds, got {offset}")
    if duration is not None and duration <= 0:
        raise InvalidInput(f"duration must be > 0 seconds, got {duration}")
    if sample_rate is not None and int(sample_rate) <= 0:
        raise InvalidInput(f"sample_rate must be a positive integer, got {sample_rate}")
    p = _check_readable(path)
    with _open(p) as f:
        sr = int(f.samplerate)
        total = int(f.frames)
        n_ch = int(f.channels)
        if total <= 0:
            raise AudioFormatError(f"audio file holds no samples: {p}")
        start = int(round(offset * sr))
        want = total - start if duration is None else int(round(duration * sr))
        if start >= total:
            if not (pad and duration is not None):
                raise InvalidInput(f"offset {offset:.3f}s is past the end of {p} ({total / sr:.3f}s)")
            available = 0
        else:
            available = min(want, total - start)
        data = np.zeros((0, n_ch), dtype=np.float32)
        if available > 0:
            try:
                if start > 0:
                    f.seek(start)
                data = f.read(available, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError, ValueError, OSError) as e:
                raise AudioFormatError(f"corrupt audio data in {p}: {_short(e)}") from None
            if data.shape[0] < available:
                raise AudioFormatError(
                    f"truncated audio file {p}: header says {total} frames, only "
                    f"{start + data.shape[0]} could be decoded"
                )
    if not np.isfinite(data).all():
        raise AudioFormatError(f"audio file contains NaN or infinite samples: {p}")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    out_sr = sr
    if sample_rate is not None and int(sample_rate) != sr and wav.shape[-1] > 0:
        from .resample import resample

        out_sr = int(sample_rate)
        wav = resample(wav, sr, out_sr)
    elif sample_rate is not None:
        out_sr = int(sample_rate)
    if duration is not None and pad:
        # pad after resampling, so the padding is exact zeros (no filter ringing into it)
        target = want if out_sr == sr else int(round(duration * out_sr))
        wav = fit_length(wav, target)
    if channels is not None:
        from .channels import convert_channels

        wav = convert_channels(wav, channels)
    return wav.to(torch.float32).contiguous(), out_sr


def fit_length(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad (at the end) or trim the last axis of ``wav`` ``[..., T]`` to ``length`` frames."""
    t = wav.shape[-1]
    if t > length:
        return wav[..., :length]
    if t < length:
        return torch.nn.functional.pad(wav, (0, length - t))
    return wav


def _as_numpy_ct(wav: ArrayLike, what: str) -> np.ndarray:
    """Return ``wav`` as a float32 numpy array ``[C, T]`` (from ``[T]`` or ``[C, T]``)."""
    if isinstance(wav, torch.Tensor):
        arr = wav.detach().to("cpu", torch.float32).numpy()
    elif isinstance(wav, np.ndarray):
        if not (np.issubdtype(wav.dtype, np.floating) or np.issubdtype(wav.dtype, np.integer)):
            raise InvalidInput(f"{what}: expected a numeric array, got dtype {wav.dtype}")
        arr = np.asarray(wav, dtype=np.float32)
    else:
        raise InvalidInput(f"{what}: expected a torch.Tensor or numpy array, got {type(wav).__name__}")
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InvalidInput(f"{what}: expected audio shaped [T] or [C, T], got shape {tuple(arr.shape)}")
    if arr.shape[0] > 64:
        raise InvalidInput(
            f"{what}: got {arr.shape[0]} channels (shape {tuple(arr.shape)}); audio must be [C, T], "
            "did you pass [T, C]?"
        )
    if arr.size == 0 or arr.shape[1] == 0:
        raise InvalidInput(f"{what}: audio is empty (shape {tuple(arr.shape)})")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{what}: audio contains NaN or infinite samples")
    return arr


def save_audio(
    path: PathLike,
    wav: ArrayLike,
    sample_rate: int,
    subtype: str | None = None,
    normalize: bool | str = False,
    target_lufs: float = -14.0,
) -> Path:
    """Write ``wav`` to ``path`` atomically, creating parent folders.

    Args:
        path: destination; the extension picks the format: ``.wav`` (default subtype
            PCM_16), ``.flac`` (PCM_16) or ``.ogg`` (Vorbis).
        wav: ``[T]`` or ``[C, T]`` torch tensor or numpy array (``[1, C, T]`` is accepted too).
        sample_rate: frames per second.
        subtype: libsndfile subtype, e.g. ``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``; aliases
            ``"float"``, ``"int16"``, ``"int24"`` are accepted.
        normalize: ``False`` writes the samples as given; ``"peak"`` scales the peak to
            -1 dBFS (:func:`~tunecraft.audio.peak_normalize`); ``"loudness"`` normalises to
            ``target_lufs`` (:func:`~tunecraft.audio.normalize_loudness`). ``True`` means ``"peak"``.
        target_lufs: target of ``normalize="loudness"``.

    Samples outside [-1, 1] are clipped, with a warning that says how many.

    Returns:
        The path written.

    Raises:
        InvalidInput: empty audio, NaN/inf samples, wrong shape, unknown extension/subtype,
            or a bad sample rate.
        AudioFormatError: libsndfile refused to encode (e.g. a rate the format cannot store).
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in WRITE_FORMATS:
        raise InvalidInput(f"cannot write {p}: unsupported extension {ext or '(none)'!r}; use .wav, .flac or .ogg")
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or int(sample_rate) <= 0:
        raise InvalidInput(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    fmt, default_subtype = WRITE_FORMATS[ext]
    sub = default_subtype if subtype is None else _SUBTYPE_ALIASES.get(subtype.lower(), subtype.upper())
    if not sf.check_format(fmt, sub):
        raise InvalidInput(f"cannot write {p}: subtype {subtype!r} is not valid for {fmt}")
    arr = _as_numpy_ct(wav, "save_audio")
    if normalize:
        mode = "peak" if normalize is True else str(normalize).lower()
        t = torch.from_numpy(arr)
        if mode == "peak":
            from .loudness import peak_normalize

            t = peak_normalize(t)
        elif mode == "loudness":
            from .loudness import normalize_loudness

            t = normalize_loudness(t, sample_rate, target_lufs=target_lufs)
        else:
            raise InvalidInput(f"normalize must be False, 'peak' or 'loudness', got {normalize!r}")
        arr = t.numpy()
    n_clipped = int(np.count_nonzero(np.abs(arr) > 1.0))
    if n_clipped:
        warnings.warn(f"save_audio: clipped {n_clipped} samples to [-1, 1] while writing {p}", stacklevel=2)
        arr = np.clip(arr, -1.0, 1.0)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(p) as tmp:
        try:
            sf.write(tmp, np.ascontiguousarray(arr.T), sample_rate, subtype=sub, format=fmt)
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            raise AudioFormatError(f"cannot write {p} ({fmt}/{sub}, {sample_rate} Hz): {_short(e)}") from None
    return p


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[str]:
    """The name of a new empty temporary file beside ``path`` (``.<name>.<random suffix>.tmp``; the folder
    must exist) to write in the ``with`` block; when the block ends it is moved over ``path``
    with ``os.replace`` (readers see the old file or the new one, never a part), and when the
    block raises it is removed and ``path`` is left as it was."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
