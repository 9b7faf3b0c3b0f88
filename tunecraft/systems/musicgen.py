"""The MusicGen system: text (and melody) -> codec tokens with :class:`~tunecraft.lm.CodecLM` -> audio.

A MusicGen bundle is a directory::

    config.json              {"system": "musicgen", "class": "MusicGen", "format_version": 1,
                              "description": ..., "default": ..., "config": {MusicGenConfig:
                              "codec": "codec-rvq" | "codec", "text": {TextConditionerConfig},
                              "stereo": false, "sampling": {SamplingParams}, ...}}
    lm/                      the CodecLM (config.json + model.safetensors)
    text_projection.safetensors   the learned projection of the frozen text encoder's states
    codec/                   (optional) the codec, when it is not a shipped bundle referenced by name

The text encoder itself (MiniLM by default; T5 / FLAN-T5 / CLAP from a local directory) is never
stored in the bundle: ``text.encoder`` names it and :func:`tunecraft.text.get_text_encoder`
loads it offline.

**Stereo** follows MusicGen-stereo: the mono codec encodes the left and the right channel
separately and the LM models ``2 K`` streams interleaved ``L0, R0, L1, R1, ...`` (with the
``stereo_delay`` / ``stereo_partial_delay`` patterns or any other). A stereo bundle has
``"stereo": true`` and an LM with ``n_q = 2 K``.

**Duration.** ``frames = round(duration * codec.frame_rate)``; past the LM's ``max_context``
frames generation continues with a sliding window (``extend_stride``), so any duration works.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from ..config import Config
from ..errors import CheckpointError, ConfigError, InvalidInput, TunecraftError
from ..lm import CodecLM
from ..lm.sampling import SamplingParams
from ..pretrained import (
    CONFIG_NAME,
    load_state_checked,
    parse_model_config,
    read_model_config,
    read_weights,
    resolve_model_dir,
)
from ..text.conditioner import TextConditioner, TextConditionerConfig
from .base import GenerationSystem, check_cfg_scale, check_descriptions, check_duration

__all__ = ["MusicGen", "MusicGenConfig"]

FORMAT_VERSION = 1
TEXT_PROJECTION = "text_projection.safetensors"


@dataclass
class MusicGenConfig(Config):
    """What a MusicGen bundle's ``config.json`` holds besides the LM weights.

    ``codec``: a shipped codec bundle name (``"codec-rvq"``) or a directory relative to the
    bundle (``"codec"``). ``num_codebooks``: codec streams per channel the LM models.
    ``sampling``: default :class:`~tunecraft.lm.sampling.SamplingParams` (top-k 250, CFG 3).
    """

    codec: str = "codec-rvq"
    num_codebooks: int = 4
    text: dict = field(default_factory=lambda: {"model_dim": 1024})
    stereo: bool = False
    sampling: dict = field(default_factory=dict)
    description: str = ""
    default: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_codebooks, bool) or not isinstance(self.num_codebooks, int) or self.num_codebooks < 1:
            raise ConfigError(f"num_codebooks must be a positive integer, got {self.num_codebooks!r}")
        TextConditionerConfig.from_dict(self.text)
        SamplingParams.from_dict(self.sampling)


def _resolve_codec(bundle: Path, codec: str) -> Path:
    local = bundle / codec
    if local.is_dir():
        return local
    return resolve_model_dir(codec)


def _localize_encoder(spec: str, bundle: Path) -> str:
    """A text encoder spec whose directory is relative to the bundle (``t5:text_encoder``) made absolute."""
    from ..text.encoders import parse_text_encoder_spec

    prefix, rel = parse_text_encoder_spec(spec)
    if rel is None or Path(rel).expanduser().is_absolute() or not (bundle / rel).is_dir():
        return spec
    local = str((bundle / rel).resolve())
    return local if prefix == "auto" else f"{prefix}:{local}"


class MusicGen(GenerationSystem):
    """Text-to-music with a codec-token LM (Copet et al., 2023).

    Build one from parts with ``MusicGen(lm, text, codec)`` or load a bundle with
    :meth:`from_pretrained`; :meth:`save_pretrained` writes a bundle.
    """

    system_name: ClassVar[str] = "musicgen"
    capabilities: ClassVar[frozenset[str]] = frozenset({"text", "continuation", "melody", "stereo", "batch"})

    def __init__(self, lm: CodecLM, text: TextConditioner, codec, config: MusicGenConfig | None = None) -> None:
        from ..codecs import DiscreteCompressionModel

        if not isinstance(codec, DiscreteCompressionModel):
            raise ConfigError(f"MusicGen needs a discrete (RVQ) codec, got {type(codec).__name__}")
        config = config or MusicGenConfig(num_codebooks=codec.num_codebooks, text=text.config.to_dict())
        self.config = config
        self.lm = lm.eval()
        self.text = text.eval()
        self.codec = codec.eval()
        if codec.channels != 1 and config.stereo:
            raise ConfigError("stereo MusicGen codes each channel with a mono codec; this codec has "
                              f"{codec.channels} channels")
        k = config.num_codebooks
        if k > codec.total_codebooks:
            raise ConfigError(f"num_codebooks={k} but the codec has {codec.total_codebooks}")
        codec.set_num_codebooks(k)
        streams = k * (2 if config.stereo else 1)
        if lm.n_q != streams:
            raise ConfigError(f"the LM models {lm.n_q} streams; the codec gives {streams} "
                              f"({k} codebooks{' x 2 channels' if config.stereo else ''})")
        if lm.card != codec.cardinality:
            raise ConfigError(f"the LM has {lm.card} codes per codebook, the codec {codec.cardinality}")
        if text.model_dim != lm.dim and lm.config.text_fuse != "none":
            raise ConfigError(f"text projection width {text.model_dim} != LM width {lm.dim}")
        if lm.has_beat_clock and abs(lm.config.frame_rate - codec.frame_rate) > 1e-6:
            raise ConfigError(f"the LM's beat clock counts {lm.config.frame_rate:g} frames/s, the codec makes "
                              f"{codec.frame_rate:g}")
        caps = {"text", "continuation", "batch"} | ({"melody"} if lm.has_melody else set())
        self.capabilities = frozenset(caps | ({"stereo"} if config.stereo else set()))
        self.sample_rate = codec.sample_rate
        self.channels = 2 if config.stereo else codec.channels
        self.frame_rate = codec.frame_rate
        self.sampling = SamplingParams.from_dict(config.sampling)

    # ---- properties ------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def has_melody(self) -> bool:
        return self.lm.has_melody

    @property
    def max_duration(self) -> float:
        """Seconds of the LM's context window (longer outputs slide the window)."""
        return self.lm.config.max_context / self.frame_rate

    def to(self, device: torch.device | str) -> "MusicGen":
        self.lm.to(device)
        self.text.to(device)
        self.codec.to(device)
        return self

    # ---- codes <-> audio ---------------------------------------------------------------------

    def encode_audio(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Audio ``[B, C, T]`` -> the LM's streams ``[B, n_q, frames]`` (stereo: L0, R0, L1, R1, ...)."""
        if not isinstance(wav, torch.Tensor):
            wav = torch.as_tensor(wav)
        if wav.dim() == 2:
            wav = wav[None]
        if wav.dim() != 3:
            raise InvalidInput(f"audio must be [B, C, T] or [C, T], got shape {tuple(wav.shape)}")
        if not self.config.stereo:
            return self.codec.encode(wav, sample_rate)
        if wav.shape[1] == 1:
            wav = wav.expand(-1, 2, -1)
        elif wav.shape[1] != 2:
            wav = wav.mean(dim=1, keepdim=True).expand(-1, 2, -1)
        left = self.codec.encode(wav[:, :1], sample_rate)
        right = self.codec.encode(wav[:, 1:2], sample_rate)
        return torch.stack([left, right], dim=2).flatten(1, 2)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The LM's streams ``[B, n_q, frames]`` -> audio ``[B, channels, frames * hop]``."""
        if not self.config.stereo:
            return self.codec.decode(codes)
        B, Q, T = codes.shape
        pairs = codes.view(B, Q // 2, 2, T)
        left = self.codec.decode(pairs[:, :, 0])
        right = self.codec.decode(pairs[:, :, 1])
        return torch.cat([left, right], dim=1)

    # ---- generation ----------------------------------------------------------------------------

    def _params(self, cfg_scale: float | None, kwargs: dict) -> tuple[SamplingParams, dict]:
        names = ("temperature", "top_k", "top_p", "greedy", "two_step_cfg", "fact_guidance")
        overrides = {k: kwargs.pop(k) for k in names if kwargs.get(k) is not None}
        for k in names:
            kwargs.pop(k, None)
        if cfg_scale is not None:
            overrides["cfg_scale"] = check_cfg_scale(cfg_scale)
        try:
            return self.sampling.replace(**overrides), kwargs
        except (ConfigError, TypeError) as e:
            raise InvalidInput(str(e)) from None

    def _frames(self, duration: float) -> int:
        return max(1, int(round(duration * self.frame_rate)))

    def _text_states(self, descriptions: list[str]):
        if self.lm.config.text_fuse == "none":
            return None
        with torch.inference_mode():
            return self.text(descriptions)

    def _run(self, descriptions: list[str], frames: int, *, prompt: torch.Tensor | None = None,
             chroma: torch.Tensor | None = None, seed: int | None, params: SamplingParams, progress: bool,
             extend_stride: float | None = None, callback=None) -> torch.Tensor:
        text = self._text_states(descriptions)
        negatives = []
        if text is not None and params.fact_guidance > 0:
            from ..text.counterfactual import guidance_negatives

            negatives = [self._text_states(neg) for neg in guidance_negatives(descriptions)]
        beat = None
        if self.lm.has_beat_clock:  # the tempo each prompt states starts its beat grid at frame 0
            from ..text.attributes import parse_facts

            beat = self.lm.beat_clock([parse_facts(d).bpm for d in descriptions])
        stride = None
        if extend_stride is not None:
            stride = int(round(float(extend_stride) * self.frame_rate))
            if not 0 < stride < self.lm.config.max_context:
                raise InvalidInput(f"extend_stride must be between 0 and {self.max_duration:g} s, got {extend_stride}")
        bar = None
        cb = callback
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None, desc="musicgen", unit="step", leave=False)

            def with_bar(done: int, total: int) -> None:
                if bar.total != total:
                    bar.total = total
                bar.update(done - bar.n)
                if callback is not None:
                    callback(done, total)

            cb = with_bar
        try:
            new = frames - (0 if prompt is None else prompt.shape[2])
            codes = self.lm.generate(text, prompt=prompt, chroma=chroma, num_samples=len(descriptions),
                                     max_new_frames=max(0, new), params=params, negatives=negatives, beat=beat,
                                     seed=seed,
                                     extend_stride=stride, callback=cb)
        finally:
            if bar is not None:
                bar.close()
        with torch.inference_mode():
            wav = self.decode_codes(codes)
        return wav[..., : int(round(frames * self.codec.hop_length))].float().clamp(-1.0, 1.0)

    def generate(self, descriptions: Sequence[str] | str, duration: float = 10.0, seed: int | None = None,
                 cfg_scale: float | None = None, steps: int | None = None, progress: bool = False,
                 force: bool = False, **kwargs: Any) -> tuple[torch.Tensor, int]:
        """Text to music: ``(wav [B, channels, duration * sample_rate], sample_rate)``.

        Keyword options: ``temperature``, ``top_k``, ``top_p``, ``greedy``, ``two_step_cfg``,
        ``fact_guidance`` (override the bundle's :class:`SamplingParams`), ``extend_stride`` (seconds the window
        slides past the LM's context), ``callback(done, total)``.
        """
        descriptions = check_descriptions(descriptions)
        duration = check_duration(duration, force=force)
        if steps is not None:
            raise InvalidInput("musicgen samples one token per step; 'steps' applies to diffusion systems only")
        params, kwargs = self._params(cfg_scale, dict(kwargs))
        extend_stride = kwargs.pop("extend_stride", None)
        callback = kwargs.pop("callback", None)
        if kwargs:
            raise InvalidInput(f"unknown musicgen option(s): {', '.join(sorted(kwargs))}")
        wav = self._run(descriptions, self._frames(duration), seed=seed, params=params, progress=progress,
                        extend_stride=extend_stride, callback=callback)
        return wav, self.sample_rate

    def continue_audio(self, prompt_wav: torch.Tensor, sample_rate: int, duration: float,
                       descriptions: Sequence[str] | str | None = None, seed: int | None = None,
                       cfg_scale: float | None = None, progress: bool = False, force: bool = False,
                       **kwargs: Any) -> tuple[torch.Tensor, int]:
        """Continue ``prompt_wav [B, C, T]`` (any rate) to ``duration`` seconds in all.

        Without descriptions the continuation is unconditional (no guidance). With an LM that
        has a beat clock, a description that states a tempo puts a beat at the prompt's first
        sample: trim the prompt to start on a beat.
        """
        duration = check_duration(duration, force=force)
        if not isinstance(prompt_wav, torch.Tensor):
            prompt_wav = torch.as_tensor(prompt_wav)
        if prompt_wav.dim() == 2:
            prompt_wav = prompt_wav[None]
        with torch.inference_mode():
            prompt = self.encode_audio(prompt_wav.to(self.device), sample_rate)
        B = prompt.shape[0]
        if descriptions is None:
            texts = [""] * B
            if cfg_scale is None:
                cfg_scale = 1.0
        else:
            texts = check_descriptions(descriptions)
            if len(texts) == 1 and B > 1:
                texts = texts * B
            if len(texts) != B:
                raise InvalidInput(f"{len(texts)} descriptions for {B} prompt recordings")
        frames = self._frames(duration)
        if prompt.shape[2] >= frames:
            raise InvalidInput(f"the prompt is {prompt.shape[2] / self.frame_rate:.2f} s long; ask for a longer "
                               f"duration than that (got {duration:g} s)")
        params, kwargs = self._params(cfg_scale, dict(kwargs))
        extend_stride = kwargs.pop("extend_stride", None)
        callback = kwargs.pop("callback", None)
        if kwargs:
            raise InvalidInput(f"unknown musicgen option(s): {', '.join(sorted(kwargs))}")
        wav = self._run(texts, frames, prompt=prompt, seed=seed, params=params, progress=progress,
                        extend_stride=extend_stride, callback=callback)
        return wav, self.sample_rate

    def generate_with_chroma(self, descriptions: Sequence[str] | str, melody_wav: torch.Tensor,
                             melody_sample_rate: int, duration: float | None = None, seed: int | None = None,
                             cfg_scale: float | None = None, steps: int | None = None, progress: bool = False,
                             force: bool = False, **kwargs: Any) -> tuple[torch.Tensor, int]:
        """Text plus the argmax chromagram of ``melody_wav [C, T]`` or ``[B, C, T]``.

        ``duration`` defaults to the melody's length.
        """
        if not self.has_melody:
            raise self._unsupported("melody", "melody conditioning (this bundle's LM has no chroma input)")
        from ..audio import chromagram

        descriptions = check_descriptions(descriptions)
        if not isinstance(melody_wav, torch.Tensor):
            melody_wav = torch.as_tensor(melody_wav)
        if melody_wav.dim() == 1:
            melody_wav = melody_wav[None]
        if melody_wav.dim() == 2:
            melody_wav = melody_wav[None]
        if melody_wav.dim() != 3 or melody_wav.shape[-1] == 0:
            raise InvalidInput(f"melody must be [C, T] or [B, C, T] audio, got shape {tuple(melody_wav.shape)}")
        if not torch.isfinite(melody_wav).all():
            raise InvalidInput("melody contains NaN or infinite values")
        if duration is None:
            duration = melody_wav.shape[-1] / float(melody_sample_rate)
        duration = check_duration(duration, force=force)
        if steps is not None:
            raise InvalidInput("musicgen samples one token per step; 'steps' applies to diffusion systems only")
        B = len(descriptions)
        if melody_wav.shape[0] == 1 and B > 1:
            melody_wav = melody_wav.expand(B, -1, -1)
        if melody_wav.shape[0] != B:
            raise InvalidInput(f"{melody_wav.shape[0]} melodies for {B} descriptions")
        from ..audio import resample

        mono = melody_wav.float().mean(dim=1)
        if int(melody_sample_rate) != self.sample_rate:
            mono = resample(mono, int(melody_sample_rate), self.sample_rate)
        chroma = chromagram(mono.to(self.device), self.sample_rate, n_chroma=self.lm.config.n_chroma, argmax=True)
        params, kwargs = self._params(cfg_scale, dict(kwargs))
        extend_stride = kwargs.pop("extend_stride", None)
        callback = kwargs.pop("callback", None)
        if kwargs:
            raise InvalidInput(f"unknown musicgen option(s): {', '.join(sorted(kwargs))}")
        wav = self._run(descriptions, self._frames(duration), chroma=chroma, seed=seed, params=params,
                        progress=progress, extend_stride=extend_stride, callback=callback)
        return wav, self.sample_rate

    # ---- persistence ---------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path, dtype: str = "float16", codec_name: str | None = None,
                        extra_dirs: dict[str, Path] | None = None) -> Path:
        """Write a bundle (see the module docstring) atomically to ``path``.

        ``codec_name``: reference this shipped codec bundle instead of copying the codec into
        ``path/codec``. ``dtype`` is the storage precision of the LM and the projection.
        ``extra_dirs``: ``{name: directory}`` copied into the bundle (e.g. a converted checkpoint's
        T5 encoder, which ``text.encoder = "t5:text_encoder"`` then names relative to the bundle).
        """
        from safetensors.torch import save_file

        from .. import __version__

        if dtype not in ("float16", "float32"):
            raise InvalidInput(f"dtype must be float16 or float32, got {dtype!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            lm = CodecLM(self.lm.config)  # a CPU copy (the LM holds caches that do not deep-copy)
            lm.load_state_dict({k: v.detach().cpu() for k, v in self.lm.state_dict().items()})
            if dtype == "float16":
                lm = lm.half()
            lm.save_pretrained(tmp / "lm")
            proj = {k: (v.detach().cpu().half() if dtype == "float16" else v.detach().cpu()).contiguous()
                    for k, v in self.text.state_dict().items()}
            save_file(proj, str(tmp / TEXT_PROJECTION), metadata={"format": "pt"})
            if codec_name is not None:
                resolve_model_dir(codec_name)
                codec_ref = codec_name
            else:
                self.codec.save_pretrained(tmp / "codec", dtype=dtype)
                codec_ref = "codec"
            for name, src in (extra_dirs or {}).items():
                if name in ("lm", "codec") or "/" in name or name.startswith("."):
                    raise InvalidInput(f"cannot store an extra directory named {name!r} in a bundle")
                shutil.copytree(src, tmp / name)
            # the encoder keeps its spec as configured (a bundle-relative directory stays relative)
            text_cfg = self.text.config.replace(cfg_dropout_p=0.0,
                                                encoder=self.config.text.get("encoder", self.text.config.encoder))
            cfg = self.config.replace(codec=codec_ref, text=text_cfg.to_dict())
            meta = {"system": self.system_name, "class": type(self).__name__, "format_version": FORMAT_VERSION,
                    "tunecraft_version": __version__, "dtype": dtype, "description": cfg.description,
                    "capabilities": sorted(self.capabilities),
                    "default": cfg.default, "config": cfg.to_dict()}
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> "MusicGen":
        from ..codecs import load_codec

        path = resolve_model_dir(path)
        cfg_file, meta = read_model_config(path)
        if meta.get("system") != cls.system_name:
            raise CheckpointError(f"{path} is not a musicgen bundle (config.json names system {meta.get('system')!r})")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{cfg_file}: bundle format {version!r} is newer than this tunecraft supports "
                                  f"({FORMAT_VERSION}); upgrade tunecraft")
        config = parse_model_config(MusicGenConfig, meta, cfg_file)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        lm = CodecLM.from_pretrained(path / "lm", device=device)
        text_cfg = dict(config.text)
        text_cfg["encoder"] = _localize_encoder(str(text_cfg.get("encoder", "minilm")), path)
        try:
            text = TextConditioner.from_config(text_cfg, device=device)
        except TunecraftError:
            raise
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{cfg_file}: bad text section: {e}") from None
        load_state_checked(text, read_weights(path, TEXT_PROJECTION), str(path / TEXT_PROJECTION))
        codec = load_codec(_resolve_codec(path, config.codec), device=device)
        return cls(lm, text.to(device), codec, config)

    def __repr__(self) -> str:
        return (f"MusicGen(lm={self.lm.num_parameters() / 1e6:.1f}M params, n_q={self.lm.n_q}, "
                f"pattern={self.lm.config.pattern!r}, codec={self.sample_rate} Hz @ {self.frame_rate:g} Hz, "
                f"stereo={self.config.stereo}, melody={self.has_melody})")
