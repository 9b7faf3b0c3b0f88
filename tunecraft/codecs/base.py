"""The one interface every audio codec implements: :class:`CompressionModel`.

A codec turns audio ``wav [B, C, T]`` (float32 in [-1, 1]) into either discrete codes
``[B, K, F]`` (int64, :class:`DiscreteCompressionModel`) or continuous latents ``[B, D, F]``
(:class:`ContinuousCompressionModel`), with ``F = ceil(T / hop_length)`` frames at
``frame_rate = sample_rate / hop_length`` Hz, and back.

``encode``/``decode`` validate their inputs (:class:`~tunecraft.errors.InvalidInput`), resample
other sample rates, convert channel counts, and run under ``torch.inference_mode``; their results
are returned as ordinary tensors, so they can feed a training graph. ``forward`` is the training
pass (reconstruction plus bottleneck penalty, see :class:`CodecOutput`).

Model directories: ``config.json`` (class name, format and model versions, the typed config)
plus ``model.safetensors``. ``from_pretrained`` accepts a directory or the name of a bundle
shipped in ``tunecraft/bundles/<name>``; it checks class, versions, keys and shapes and raises
:class:`~tunecraft.errors.CheckpointError` with a one-line reason.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import torch
from torch import nn

from ..audio import convert_channels, resample
from ..config import Config
from ..errors import CheckpointError, InvalidInput
from ..pretrained import (
    build_from_model_dir,
    read_model_config,
    resolve_model_dir,
    state_for_saving,
    write_model_dir,
)

FORMAT_VERSION = 1

_REGISTRY: dict[str, type["CompressionModel"]] = {}

M = TypeVar("M", bound="CompressionModel")


@dataclass
class CodecOutput:
    """Result of a codec's training forward pass.

    ``wav``: reconstruction ``[B, C, T]`` (same length as the input), or ``None`` when the codec's
    objective has no waveform term and it skipped rendering (:class:`LatentRVQCodec`); ``penalty``: the
    bottleneck's weighted loss (RVQ commitment, KL, or 0); ``codes [B, K, F]`` for discrete
    codecs; ``latents [B, D, F]`` (before masking) for continuous ones; ``mask [B, F]``: frames
    hidden from the decoder (masked autoencoder); ``metrics``: floats for logging.
    """

    wav: torch.Tensor | None
    penalty: torch.Tensor
    codes: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)


def registered_codecs() -> dict[str, type["CompressionModel"]]:
    """Codec classes by name, as written in ``config.json``."""
    return dict(_REGISTRY)


def codec_format(config: Any) -> tuple[int, int]:
    """``(channels, hop_length)`` of a codec config: its ``audio_format()`` where it defines one
    (codecs over another codec's latents), else its SEANet's."""
    fmt = getattr(config, "audio_format", None)
    if fmt is not None:
        channels, hop = fmt()
        return int(channels), int(hop)
    return int(config.seanet.channels), int(config.seanet.hop_length)


def _inference(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` under ``torch.inference_mode`` and return normal (non-inference) tensors."""
    with torch.inference_mode():
        out = fn()
    if isinstance(out, torch.Tensor):
        return out.clone()
    return out


class CompressionModel(nn.Module, abc.ABC):
    """Base class of tunecraft's audio codecs (see the module docstring)."""

    #: The dataclass config the model is built from; subclasses that set it are registered.
    config_class: ClassVar[type[Config]]
    #: Bumped when a change makes older weights of this class unloadable.
    model_version: ClassVar[int] = 1
    is_discrete: ClassVar[bool] = False

    config: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" in cls.__dict__:
            _REGISTRY[cls.__name__] = cls

    # ---- properties ------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def channels(self) -> int:
        return codec_format(self.config)[0]

    @property
    def hop_length(self) -> int:
        return codec_format(self.config)[1]

    @property
    def frame_rate(self) -> float:
        """Latent frames (or code steps) per second: ``sample_rate / hop_length``."""
        return self.sample_rate / self.hop_length

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples at the model's rate: ``ceil(T / hop)``."""
        return -(-int(num_samples) // self.hop_length)

    # ---- input handling --------------------------------------------------------------------

    def prepare_audio(self, wav: Any, sample_rate: int | None = None) -> torch.Tensor:
        """Validate audio and bring it to ``[B, channels, T']`` float32 at :attr:`sample_rate`.

        Accepts ``[B, C, T]`` (or a mono ``[T]``) tensors or arrays. Channels are converted with
        :func:`tunecraft.audio.convert_channels` (mean to mono, mono duplicated, more than two
        channels to stereo via mono) and other sample rates resampled with
        :func:`tunecraft.audio.resample` (soxr).
        """
        if not isinstance(wav, torch.Tensor):
            try:
                wav = torch.as_tensor(wav)
            except (TypeError, ValueError, RuntimeError):
                raise InvalidInput(f"audio must be a tensor or array, got {type(wav).__name__}") from None
        if not torch.is_floating_point(wav):
            raise InvalidInput(f"audio must be floating point in [-1, 1], got dtype {wav.dtype}")
        if wav.dim() == 1:
            wav = wav[None, None]
        if wav.dim() != 3:
            raise InvalidInput(f"audio must have shape [B, C, T], got {tuple(wav.shape)}")
        if wav.shape[1] == 0:
            raise InvalidInput(f"audio has no channels (shape {tuple(wav.shape)})")
        if wav.numel() == 0:
            raise InvalidInput(f"audio is empty (shape {tuple(wav.shape)})")
        if not torch.isfinite(wav).all():
            raise InvalidInput("audio contains NaN or infinite values")
        if sample_rate is not None:
            if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
                raise InvalidInput(f"sample_rate must be a positive integer, got {sample_rate!r}")
            sample_rate = int(sample_rate)
        wav = convert_channels(wav.to(device=self.device, dtype=torch.float32), self.channels)
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = resample(wav, sample_rate, self.sample_rate)
            if wav.shape[-1] == 0:
                raise InvalidInput("audio is too short to resample")
        return wav

    # ---- the codec -------------------------------------------------------------------------

    @abc.abstractmethod
    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Training pass on ``wav [B, C, T]`` at the model's sample rate and channel count."""

    @abc.abstractmethod
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Audio ``[B, C, T]`` -> codes ``[B, K, F]`` or latents ``[B, D, F]``."""

    @abc.abstractmethod
    def decode(self, x: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Codes or latents -> audio ``[B, C, F * hop_length]`` (or ``length`` samples)."""

    def reconstruct(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """``decode(encode(wav))`` trimmed to the (resampled) input length, at :attr:`sample_rate`."""
        x = self.prepare_audio(wav, sample_rate)
        return self.decode(self.encode(x), length=x.shape[-1])

    @staticmethod
    def _trim(wav: torch.Tensor, length: int | None) -> torch.Tensor:
        if length is None:
            return wav
        if isinstance(length, bool) or int(length) != length or length < 1:
            raise InvalidInput(f"length must be a positive number of samples, got {length!r}")
        return wav[..., : int(length)]

    # ---- persistence -----------------------------------------------------------------------

    def save_pretrained(self, path: str | Path, dtype: str = "float32") -> Path:
        """Write ``config.json`` and ``model.safetensors`` to the directory ``path``.

        ``dtype="float16"`` stores the float32 *parameters* in half precision (about half the
        size) and the RVQ codewords too; they are loaded back as float32. Training-only state
        that is a function of other tensors (the codebooks' EMA sums) is left out and rebuilt on
        load. The other buffers (codebook usage counts, latent scale, whitening statistics and
        matrices) keep their precision, since EMA counts can exceed the float16 range and the
        whitening is a precise linear map.
        """
        from .. import __version__

        state = state_for_saving(self, dtype)
        for name, module in self.named_modules():  # training-only state (e.g. codebook EMA sums)
            prune = getattr(module, "prune_export_state", None)
            if prune is not None:
                prune(state, f"{name}." if name else "", half=dtype == "float16")
        meta = {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "model_version": self.model_version,
            "tunecraft_version": __version__,
            "dtype": dtype,
            "config": self.config.to_dict(),
        }
        return write_model_dir(path, meta, state)

    @classmethod
    def from_pretrained(cls: type[M], name_or_path: str | Path, device: str | torch.device | None = None) -> M:
        """Load a codec directory (or bundle name); on ``CompressionModel`` any registered class."""
        path = resolve_model_dir(name_or_path)
        cfg_file, meta = read_model_config(path)
        klass = _REGISTRY.get(meta["class"])
        if klass is None:
            raise CheckpointError(f"{path} holds a '{meta['class']}', which is not a codec this tunecraft knows "
                                  f"({', '.join(sorted(_REGISTRY))})")
        if not issubclass(klass, cls):
            raise CheckpointError(f"{path} holds a {meta['class']}, not a {cls.__name__}")

        def restore_pruned(model: nn.Module, state: dict) -> None:  # e.g. codebook EMA sums
            for name, module in model.named_modules():
                restore = getattr(module, "restore_export_state", None)
                if restore is not None:
                    restore(state, f"{name}." if name else "")

        return build_from_model_dir(path, meta, cfg_file, config_class=klass.config_class,
                                    model_version=klass.model_version, format_version=FORMAT_VERSION,
                                    build=klass, prepare_state=restore_pruned, device=device)


class DiscreteCompressionModel(CompressionModel):
    """A codec with ``num_codebooks`` parallel streams of tokens in ``[0, cardinality)``."""

    is_discrete = True

    @property
    @abc.abstractmethod
    def total_codebooks(self) -> int:
        """Codebooks the model has."""

    @property
    @abc.abstractmethod
    def num_codebooks(self) -> int:
        """Codebooks :meth:`encode` produces (``<= total_codebooks``)."""

    @property
    @abc.abstractmethod
    def cardinality(self) -> int:
        """Size of each codebook."""

    @abc.abstractmethod
    def set_num_codebooks(self, n: int) -> None:
        """Use the first ``n`` codebooks from now on (lower bitrate)."""

    def check_codes(self, codes: Any) -> torch.Tensor:
        """Validate codes ``[B, K, F]``: integers in ``[0, cardinality)``, ``1 <= K <= total_codebooks``."""
        if not isinstance(codes, torch.Tensor):
            try:
                codes = torch.as_tensor(codes)
            except (TypeError, ValueError, RuntimeError):
                raise InvalidInput(f"codes must be an integer tensor, got {type(codes).__name__}") from None
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise InvalidInput(f"codes must be integers, got dtype {codes.dtype}")
        if codes.dim() != 3:
            raise InvalidInput(f"codes must have shape [B, K, T], got {tuple(codes.shape)}")
        if codes.numel() == 0:
            raise InvalidInput(f"codes are empty (shape {tuple(codes.shape)})")
        k = codes.shape[1]
        if not 1 <= k <= self.total_codebooks:
            raise InvalidInput(f"codes have {k} codebooks; this model has {self.total_codebooks}")
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= self.cardinality:
            raise InvalidInput(f"codes must be in [0, {self.cardinality}), got values in [{lo}, {hi}]")
        return codes.to(device=self.device, dtype=torch.long)


class QuantizedCompressionModel(DiscreteCompressionModel):
    """A discrete codec whose codebooks are those of its residual quantiser ``self.quantizer``."""

    quantizer: Any

    @property
    def total_codebooks(self) -> int:
        return self.quantizer.total_codebooks

    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def cardinality(self) -> int:
        return self.quantizer.cardinality

    def set_num_codebooks(self, n: int) -> None:
        self.quantizer.set_num_codebooks(n)

    @property
    def bandwidth(self) -> float:
        """Bitrate of :meth:`encode` in kbit/s: ``num_codebooks * log2(cardinality) * frame_rate / 1000``."""
        return self.num_codebooks * self.quantizer.bandwidth_per_codebook(self.frame_rate)

    def set_bandwidth(self, kbps: float) -> None:
        """Use as many codebooks as fit in ``kbps`` kbit/s (at least one)."""
        self.set_num_codebooks(self.quantizer.num_codebooks_for_bandwidth(kbps, self.frame_rate))


class ContinuousCompressionModel(CompressionModel):
    """A codec with continuous latents ``[B, latent_dim, F]``."""

    is_discrete = False

    @property
    @abc.abstractmethod
    def latent_dim(self) -> int:
        """Channels of the latent sequence."""

    def check_latents(self, latents: Any) -> torch.Tensor:
        """Validate latents ``[B, latent_dim, F]`` (finite floats)."""
        if not isinstance(latents, torch.Tensor):
            try:
                latents = torch.as_tensor(latents)
            except (TypeError, ValueError, RuntimeError):
                raise InvalidInput(f"latents must be a float tensor, got {type(latents).__name__}") from None
        if not torch.is_floating_point(latents):
            raise InvalidInput(f"latents must be floating point, got dtype {latents.dtype}")
        if latents.dim() != 3 or latents.shape[1] != self.latent_dim:
            raise InvalidInput(f"latents must have shape [B, {self.latent_dim}, T], got {tuple(latents.shape)}")
        if latents.numel() == 0:
            raise InvalidInput(f"latents are empty (shape {tuple(latents.shape)})")
        if not torch.isfinite(latents).all():
            raise InvalidInput("latents contain NaN or infinite values")
        return latents.to(device=self.device, dtype=torch.float32)
