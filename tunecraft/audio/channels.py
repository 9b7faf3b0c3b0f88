"""Channel-count conversion (mono <-> stereo)."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch

from ..errors import InvalidInput

ArrayLike = Union[torch.Tensor, np.ndarray]


def convert_channels(wav: ArrayLike, channels: int) -> ArrayLike:
    """Convert ``wav`` ``[..., C, T]`` to ``channels`` channels.

    Rules (as audiocraft's ``convert_audio_channels``):

    * same count: returned unchanged;
    * to mono: the mean over channels;
    * from mono: the channel is duplicated ``channels`` times;
    * from more than two channels to stereo: averaged to mono, then duplicated.

    Any other conversion (e.g. stereo to 5.1) has no unambiguous answer and raises.

    Args:
        wav: ``[C, T]`` or ``[B, C, T]`` torch tensor or numpy array.
        channels: the channel count wanted (>= 1).

    Returns:
        The same kind of array, ``[..., channels, T]``.

    Raises:
        InvalidInput: ``wav`` has fewer than 2 dims, ``channels < 1``, or the conversion
            is not one of the rules above.
    """
    if isinstance(channels, bool) or int(channels) != channels or int(channels) < 1:
        raise InvalidInput(f"channels must be a positive integer, got {channels!r}")
    channels = int(channels)
    if not isinstance(wav, (torch.Tensor, np.ndarray)):
        raise InvalidInput(f"convert_channels expects a torch.Tensor or numpy array, got {type(wav).__name__}")
    if wav.ndim < 2:
        raise InvalidInput(f"convert_channels expects audio shaped [..., C, T], got shape {tuple(wav.shape)}")
    src = wav.shape[-2]
    if src == channels:
        return wav
    is_torch = isinstance(wav, torch.Tensor)
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True) if is_torch else wav.mean(axis=-2, keepdims=True)
    if src == 1:
        mono = wav
    elif channels == 2 and src > 2:
        mono = wav.mean(dim=-2, keepdim=True) if is_torch else wav.mean(axis=-2, keepdims=True)
    else:
        raise InvalidInput(
            f"cannot convert {src} channels to {channels}: supported are mono<->N and N>2 -> stereo"
        )
    if is_torch:
        return mono.expand(*mono.shape[:-2], channels, mono.shape[-1]).contiguous()
    return np.repeat(mono, channels, axis=-2)
