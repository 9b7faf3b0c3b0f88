"""tunecraft.audio: audio I/O, resampling, channels, loudness and spectral features.

Audio is a float32 tensor ``[C, T]`` in [-1, 1] (``[B, C, T]`` when batched).
"""

from __future__ import annotations

from .channels import convert_channels
from .features import Chroma, LogMel, MelSpectrogram, chromagram, griffin_lim, log_mel, log_mel_inverse
from .io import READ_FORMATS, WRITE_FORMATS, AudioInfo, audio_info, fit_length, load_audio, save_audio
from .loudness import loudness_lufs, normalize_loudness, peak_normalize
from .resample import FFTUpsampler, fft_resample, resample, resampled_length

__all__ = [
    "AudioInfo",
    "Chroma",
    "FFTUpsampler",
    "LogMel",
    "MelSpectrogram",
    "READ_FORMATS",
    "WRITE_FORMATS",
    "audio_info",
    "chromagram",
    "convert_channels",
    "fft_resample",
    "fit_length",
    "griffin_lim",
    "load_audio",
    "log_mel",
    "log_mel_inverse",
    "loudness_lufs",
    "normalize_loudness",
    "peak_normalize",
    "resample",
    "resampled_length",
    "save_audio",
]
