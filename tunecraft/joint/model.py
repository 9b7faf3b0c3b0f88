"""A MuLan-like music-text joint embedding (two towers trained with a contrastive loss).

MuLan (Huang et al., 2022) embeds 10-second music clips and free-form music descriptions into one
space; Noise2Music uses it to pseudo-label unlabelled audio and MusicLM/MeLoDy quantise its
embeddings into conditioning tokens (:mod:`tunecraft.joint.tokenizer`). This module is the
CPU-sized version:

* **Audio tower** (:class:`AudioTower`): 16 kHz mono -> log-mel (64 bands, hop 320 = 50 frames/s,
  normalised to [-1, 1] by :class:`~tunecraft.audio.LogMel`) ``[B, 64, F]`` -> 1D residual conv
  stages with strided downsampling (50 -> 12.5 frames/s) -> bidirectional self-attention blocks
  -> masked mean over frames -> LayerNorm -> linear projection to ``embed_dim``.
  (MuLan uses a ResNet-50 or an AST on 10 s log-mels; ours has about 1.5M parameters.)
* **Text tower** (:class:`TextProjection`): a frozen sentence encoder (MiniLM by default, 384-d
  token states, masked mean pooled; MuLan fine-tunes a BERT) -> 2-layer MLP -> ``embed_dim``.
* Both outputs are L2-normalised. Training minimises the symmetric InfoNCE (CLIP) loss with a
  learnable temperature ``tau = 1 / s``::

      L = 1/2 [ CE(s A T^T, I) + CE(s T A^T, I) ],   A, T in R^{B x d} (rows unit-norm),
      s = exp(log_s) clamped to ``max_logit_scale``, initialised to 1 / init_temperature.

* **Clip embeddings of long audio** (:meth:`JointEmbeddingModel.embed_audio`), as Noise2Music
  describes for MuLan: split the clip into non-overlapping ``window_seconds`` (10 s) windows,
  embed each, and average; a trailing partial window of at least ``min_window_seconds`` takes
  part with a weight proportional to its length. The mean is re-normalised to unit length so
  cosine similarities are plain dot products.

Model directories hold ``config.json`` (class, version, config) and ``model.safetensors``; a
fitted :class:`~tunecraft.joint.tokenizer.MuLanTokenizer` is stored in the same file (its config
in ``config.tokenizer``). The text encoder's weights are not stored: ``config.text.encoder``
names it (``"minilm"`` ships with tunecraft's dependencies).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..audio import LogMel, resample
from ..config import Config
from ..errors import CheckpointError, ConfigError, InvalidInput, InvalidPrompt
from ..modules.conv_blocks import Downsample1d, ResBlock1d, SelfAttention1d, group_norm
from .tokenizer import MuLanTokenizer, MuLanTokenizerConfig

__all__ = [
    "AudioTower",
    "AudioTowerConfig",
    "JointConfig",
    "JointEmbeddingModel",
    "TextProjection",
    "TextTowerConfig",
    "clip_loss",
]

FORMAT_VERSION = 1
STORAGE_DTYPES = ("float32", "float16")


# ---- configs ------------------------------------------------------------------------------------


@dataclasses.dataclass
class AudioTowerConfig(Config):
    """Log-mel front end and 1D conv/attention encoder of the audio tower.

    ``channels[i]`` is the width of stage ``i`` (``blocks_per_stage`` residual blocks each);
    ``strides[i]`` downsamples between stage ``i`` and ``i + 1`` (``len(channels) ==
    len(strides) + 1``); then ``attention_layers`` x (self-attention + residual block) at the
    last width.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 320
    win_length: int = 800
    n_mels: int = 64
    channels: List[int] = dataclasses.field(default_factory=lambda: [128, 128, 192])
    strides: List[int] = dataclasses.field(default_factory=lambda: [2, 2])
    blocks_per_stage: int = 1
    kernel_size: int = 5
    attention_layers: int = 2
    num_heads: int = 4
    norm_groups: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "blocks_per_stage", "num_heads",
                     "norm_groups"):
            if getattr(self, name) < 1:
                raise ConfigError(f"audio.{name} must be >= 1, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"audio.win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if not self.channels or len(self.channels) != len(self.strides) + 1:
            raise ConfigError(f"audio.channels needs one width more than audio.strides, got {self.channels} "
                              f"and {self.strides}")
        if any(c < 1 or c % self.norm_groups for c in self.channels):
            raise ConfigError(f"audio.channels {self.channels} must be positive multiples of norm_groups "
                              f"{self.norm_groups}")
        if self.channels[-1] % self.num_heads:
            raise ConfigError(f"audio.num_heads {self.num_heads} must divide the last width {self.channels[-1]}")
        if any(s < 1 for s in self.strides):
            raise ConfigError(f"audio.strides must be >= 1, got {self.strides}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"audio.kernel_size must be a positive odd number, got {self.kernel_size}")
        if self.attention_layers < 0 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("audio.attention_layers must be >= 0 and audio.dropout in [0, 1)")

    @property
    def total_stride(self) -> int:
        return int(math.prod(self.strides))

    @property
    def frame_rate(self) -> float:
        """Log-mel frames per second."""
        return self.sample_rate / self.hop_length


@dataclasses.dataclass
class TextTowerConfig(Config):
    """Frozen text encoder (a :func:`~tunecraft.text.get_text_encoder` spec, its width ``dim``)
    and the learned MLP on its pooled states. ``cache_size`` pooled encodings are memoised."""

    encoder: str = "minilm"
    dim: int = 384
    hidden: int = 512
    dropout: float = 0.1
    cache_size: int = 65536

    def __post_init__(self) -> None:
        if not self.encoder:
            raise ConfigError("text.encoder is empty")
        if self.dim < 1 or self.hidden < 1 or self.cache_size < 0:
            raise ConfigError("text.dim and text.hidden must be >= 1 and text.cache_size >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"text.dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass
class JointConfig(Config):
    """The whole joint model. ``tokenizer`` is set when a fitted MuLan tokenizer ships with it."""

    embed_dim: int = 128
    audio: AudioTowerConfig = dataclasses.field(default_factory=AudioTowerConfig)
    text: TextTowerConfig = dataclasses.field(default_factory=TextTowerConfig)
    window_seconds: float = 10.0
    min_window_seconds: float = 1.0
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    tokenizer: Optional[MuLanTokenizerConfig] = None

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ConfigError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not 0 < self.min_window_seconds <= self.window_seconds:
            raise ConfigError(f"need 0 < min_window_seconds <= window_seconds, got {self.min_window_seconds}, "
                              f"{self.window_seconds}")
        if not self.init_temperature > 0 or self.max_logit_scale < 1.0:
            raise ConfigError("init_temperature must be > 0 and max_logit_scale >= 1")
        if 1.0 / self.init_temperature > self.max_logit_scale:
            raise ConfigError(f"1 / init_temperature ({1.0 / self.init_temperature:.3g}) exceeds max_logit_scale "
                              f"({self.max_logit_scale})")
        if self.tokenizer is not None and self.tokenizer.dim != self.embed_dim:
            raise ConfigError(f"tokenizer.dim ({self.tokenizer.dim}) must equal embed_dim ({self.embed_dim})")


# ---- towers -------------------------------------------------------------------------------------


class AudioTower(nn.Module):
    """``wav [B, T]`` (mono, ``sample_rate``) -> unnormalised embedding ``[B, embed_dim]``.

    Shapes: log-mel ``[B, n_mels, F]`` with ``F = 1 + T // hop``; padded with the silence value
    (-1) to ``F' = ceil(F / S) * S`` (``S = prod(strides)``); encoder output ``[B, C, F' / S]``;
    the mean runs over the ``ceil(F / S)`` frames that contain signal.
    """

    def __init__(self, config: AudioTowerConfig, embed_dim: int):
        super().__init__()
        self.config = config
        c = config
        self.logmel = LogMel(c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                             n_mels=c.n_mels)
        self.stem = nn.Conv1d(c.n_mels, c.channels[0], 3, padding=1)
        stages: List[nn.Module] = []
        width = c.channels[0]
        for i, out in enumerate(c.channels):
            for _ in range(c.blocks_per_stage):
                stages.append(ResBlock1d(width, out, None, kernel_size=c.kernel_size, norm_groups=c.norm_groups,
                                         dropout=c.dropout))
                width = out
            if i < len(c.strides) and c.strides[i] > 1:
                stages.append(Downsample1d(width, width, c.strides[i]))
        self.stages = nn.ModuleList(stages)
        self.attention = nn.ModuleList()
        self.attention_ff = nn.ModuleList()
        for _ in range(c.attention_layers):
            self.attention.append(SelfAttention1d(width, c.num_heads, norm_groups=c.norm_groups))
            self.attention_ff.append(ResBlock1d(width, width, None, kernel_size=3, norm_groups=c.norm_groups,
                                                dropout=c.dropout))
        self.out_norm = group_norm(width, c.norm_groups)
        self.pool_norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim)

    def features(self, wav: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, n_mels, F]`` in [-1, 1]."""
        return self.logmel(wav)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self.features(wav)
        frames = mel.shape[-1]
        stride = self.config.total_stride
        pad = (-frames) % stride
        if pad:
            mel = F.pad(mel, (0, pad), value=-1.0)
        x = self.stem(mel)
        for layer in self.stages:
            x = layer(x)
        valid = -(-frames // stride)
        key_mask = None
        if valid < x.shape[-1]:
            key_mask = torch.arange(x.shape[-1], device=x.device) < valid
        for attn, ff in zip(self.attention, self.attention_ff):
            x = ff(attn(x, key_mask))
        x = F.silu(self.out_norm(x))[..., :valid].mean(dim=-1)
        return self.proj(self.pool_norm(x))


class TextProjection(nn.Module):
    """Pooled frozen-encoder states ``[B, text.dim]`` -> ``[B, embed_dim]`` (LayerNorm, MLP)."""

    def __init__(self, config: TextTowerConfig, embed_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(config.dim),
            nn.Linear(config.dim, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, embed_dim),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.net(pooled)


def clip_loss(audio: torch.Tensor, text: torch.Tensor,
              logit_scale: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Symmetric InfoNCE on unit-norm rows ``audio, text [B, d]``: ``(CE(sAT^T, I) + CE(sTA^T, I)) / 2``.

    Returns the loss and logs: in-batch top-1 accuracy both ways (``acc_a2t``, ``acc_t2a``) and ``s``.
    """
    if audio.shape != text.shape or audio.dim() != 2:
        raise InvalidInput(f"clip_loss needs audio and text embeddings of one shape [B, d], got "
                           f"{tuple(audio.shape)} and {tuple(text.shape)}")
    logits = logit_scale * audio.float() @ text.float().t()
    target = torch.arange(audio.shape[0], device=audio.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    with torch.no_grad():
        logs = {
            "acc_a2t": (logits.argmax(1) == target).float().mean(),
            "acc_t2a": (logits.argmax(0) == target).float().mean(),
            "logit_scale": logit_scale.detach().float(),
        }
    return loss, logs


# ---- the model ----------------------------------------------------------------------------------


class JointEmbeddingModel(nn.Module):
    """MuLan-like two-tower model (see the module docstring).

    Training: ``audio_emb, text_emb = model(wav, texts)`` (``wav [B, T]`` or ``[B, C, T]`` at
    ``config.audio.sample_rate``; unit rows ``[B, d]``), then :meth:`loss`.
    Inference: :meth:`embed_audio` (any rate/length, 10 s window averaging), :meth:`embed_text`,
    :meth:`similarity`, and with a fitted tokenizer :meth:`audio_tokens` / :meth:`text_tokens`.
    """

    CLASS_NAME = "JointEmbeddingModel"
    VERSION = 1

    def __init__(self, config: Optional[JointConfig] = None, text_encoder=None):
        super().__init__()
        self.config = config or JointConfig()
        cfg = self.config
        self.audio_tower = AudioTower(cfg.audio, cfg.embed_dim)
        self.text_proj = TextProjection(cfg.text, cfg.embed_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        self.tokenizer: Optional[MuLanTokenizer] = MuLanTokenizer(cfg.tokenizer) if cfg.tokenizer is not None else None
        # the frozen text encoder is shared and not part of this module's state
        object.__setattr__(self, "_text_encoder", text_encoder)
        object.__setattr__(self, "_pooled_cache", OrderedDict())

    # ---- basic properties -------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def sample_rate(self) -> int:
        return self.config.audio.sample_rate

    @property
    def device(self) -> torch.device:
        return self.log_logit_scale.device

    @property
    def logit_scale(self) -> torch.Tensor:
        """``s = min(exp(log_s), max_logit_scale)`` (the inverse temperature)."""
        return self.log_logit_scale.exp().clamp(max=self.config.max_logit_scale)

    # ---- text -------------------------------------------------------------------------
    @property
    def text_encoder(self):
        """The frozen text encoder named by ``config.text.encoder`` (loaded on first use)."""
        if self._text_encoder is None:
            from ..text import get_text_encoder

            enc = get_text_encoder(self.config.text.encoder)
            if enc.dim != self.config.text.dim:
                raise CheckpointError(f"text encoder {self.config.text.encoder!r} gives {enc.dim}-d states, the "
                                      f"model was built for {self.config.text.dim}")
            object.__setattr__(self, "_text_encoder", enc)
        return self._text_encoder

    @staticmethod
    def _check_texts(texts: Sequence[str]) -> List[str]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidPrompt("texts must be a list of strings")
        out = []
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise InvalidPrompt(f"joint text embeddings need non-empty strings, got {t!r}")
            out.append(t)
        if not out:
            raise InvalidPrompt("texts is empty")
        return out

    def pooled_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Masked-mean pooled frozen-encoder states ``[B, text.dim]`` (memoised per text)."""
        texts = self._check_texts(texts)
        cache: OrderedDict = self._pooled_cache
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            pooled = self.text_encoder.encode(missing, device="cpu").pooled().float()
            for t, p in zip(missing, pooled):
                cache[t] = p.clone()
            while len(cache) > max(self.config.text.cache_size, len(texts)):
                cache.popitem(last=False)
        for t in texts:
            if t in cache:
                cache.move_to_end(t)
        return torch.stack([cache[t] for t in texts]).to(self.device)

    def text_forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``[B, d]`` (with gradient through the projection)."""
        return F.normalize(self.text_proj(self.pooled_text(texts)), dim=-1)

    # ---- audio ------------------------------------------------------------------------
    def _mono(self, wav: torch.Tensor) -> torch.Tensor:
        if not isinstance(wav, torch.Tensor) or not wav.is_floating_point():
            raise InvalidInput("audio must be a floating-point tensor")
        if wav.dim() == 3:
            return wav.mean(dim=1)
        if wav.dim() == 2:
            return wav
        if wav.dim() == 1:
            return wav[None]
        raise InvalidInput(f"audio must be [B, C, T], [B, T] or [T], got {tuple(wav.shape)}")

    def audio_forward(self, wav: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``[B, d]`` of ``wav [B, T]``/``[B, C, T]`` at ``sample_rate`` (one window)."""
        x = self._mono(wav).to(self.device, torch.float32)
        if x.shape[-1] < self.config.audio.n_fft // 2 + 1:
            raise InvalidInput(f"audio of {x.shape[-1]} samples is too short to embed")
        return F.normalize(self.audio_tower(x), dim=-1)

    def forward(self, wav: torch.Tensor, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(audio [B, d], text [B, d])``, both unit-norm."""
        a = self.audio_forward(wav)
        t = self.text_forward(texts)
        if a.shape[0] != t.shape[0]:
            raise InvalidInput(f"{a.shape[0]} audio clips but {t.shape[0]} texts")
        return a, t

    def loss(self, audio: torch.Tensor, text: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The symmetric InfoNCE loss (:func:`clip_loss`) at the current temperature."""
        return clip_loss(audio, text, self.logit_scale)

    def window_layout(self, length: int) -> List[Tuple[int, int, float]]:
        """``[(start, size, weight)]`` of the windows of a ``length``-sample clip at ``sample_rate``:
        full ``window_seconds`` windows (weight 1) and a trailing partial window of at least
        ``min_window_seconds`` (weight = its fraction of a window). A clip shorter than that is
        one window of its own length."""
        win = int(round(self.config.window_seconds * self.sample_rate))
        min_len = int(round(self.config.min_window_seconds * self.sample_rate))
        if length <= 0:
            raise InvalidInput("cannot embed empty audio")
        out = [(s, win, 1.0) for s in range(0, length - win + 1, win)]
        tail_start = len(out) * win
        tail = length - tail_start
        if tail > 0 and (tail >= min_len or not out):
            out.append((tail_start, tail, tail / win if out else 1.0))
        return out

    @torch.no_grad()
    def embed_audio(self, wav: torch.Tensor, sample_rate: int, batch_size: int = 16) -> torch.Tensor:
        """Clip embeddings ``[B, d]`` (unit-norm) of ``wav [B, C, T]``, ``[B, T]`` or ``[T]`` at
        ``sample_rate``: ``normalize(sum_w weight_w * e_w / sum_w weight_w)`` over the 10 s windows
        ``w`` of :meth:`window_layout` (Noise2Music's MuLan clip embedding). ``batch_size``
        windows are embedded at a time."""
        x = self._mono(wav).float()
        if sample_rate != self.sample_rate:
            x = resample(x, int(sample_rate), self.sample_rate)
        layout = self.window_layout(x.shape[-1])
        total = torch.zeros(x.shape[0], self.embed_dim, device=self.device)
        weight_sum = 0.0
        # windows of equal size are embedded together
        by_size: Dict[int, List[Tuple[int, float]]] = {}
        for start, size, w in layout:
            by_size.setdefault(size, []).append((start, w))
        for size, items in by_size.items():
            segs = torch.cat([x[:, s:s + size] for s, _ in items], dim=0)  # [n*B, size]
            weights = torch.tensor([w for _, w in items], device=self.device).repeat_interleave(x.shape[0])
            embs = torch.cat([self.audio_forward(segs[i:i + batch_size]) for i in range(0, segs.shape[0], batch_size)])
            embs = embs * weights[:, None]
            total += embs.view(len(items), x.shape[0], -1).sum(0)
            weight_sum += sum(w for _, w in items)
        return F.normalize(total / weight_sum, dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``[B, d]``."""
        return self.text_forward(texts)

    @torch.no_grad()
    def similarity(self, wav: torch.Tensor, sample_rate: int, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity ``[B]`` of each clip with its own text (the MuLan score)."""
        a = self.embed_audio(wav, sample_rate)
        t = self.embed_text(texts)
        if a.shape[0] != t.shape[0]:
            raise InvalidInput(f"{a.shape[0]} clips but {len(texts)} texts")
        return (a * t).sum(-1)

    # ---- MuLan tokens -----------------------------------------------------------------
    def attach_tokenizer(self, tokenizer: MuLanTokenizer) -> None:
        """Ship ``tokenizer`` (fitted, ``dim == embed_dim``) with this model."""
        if tokenizer.dim != self.embed_dim:
            raise InvalidInput(f"tokenizer dim {tokenizer.dim} != embed_dim {self.embed_dim}")
        if not tokenizer.fitted:
            raise InvalidInput("attach a fitted tokenizer (MuLanTokenizer.fit)")
        self.tokenizer = tokenizer.to(self.device)
        self.config = dataclasses.replace(self.config, tokenizer=tokenizer.config)

    def _need_tokenizer(self) -> MuLanTokenizer:
        if self.tokenizer is None:
            raise InvalidInput("this joint model has no MuLan tokenizer (fit one and attach_tokenizer())")
        return self.tokenizer

    @torch.no_grad()
    def audio_tokens(self, wav: torch.Tensor, sample_rate: int, n_q: Optional[int] = None) -> torch.Tensor:
        """MuLan tokens ``[B, K]`` of audio (training-time conditioning in MusicLM/MeLoDy)."""
        return self._need_tokenizer().encode(self.embed_audio(wav, sample_rate), n_q)

    @torch.no_grad()
    def text_tokens(self, texts: Sequence[str], n_q: Optional[int] = None) -> torch.Tensor:
        """MuLan tokens ``[B, K]`` of prompts (inference-time conditioning)."""
        return self._need_tokenizer().encode(self.embed_text(texts), n_q)

    # ---- model directory --------------------------------------------------------------
    def save_pretrained(self, path: Union[str, Path], dtype: str = "float32") -> Path:
        """Write ``config.json`` + ``model.safetensors`` into directory ``path``. ``dtype="float16"``
        stores the float32 parameters in half precision (loaded back as float32); buffers (the
        tokenizer's codebooks and EMA counts) keep float32."""
        from .. import __version__
        from ..pretrained import state_for_saving, write_model_dir

        if dtype not in STORAGE_DTYPES:
            raise InvalidInput(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
        state = state_for_saving(self, dtype)
        meta = {"class": self.CLASS_NAME, "format_version": FORMAT_VERSION, "model_version": self.VERSION,
                "tunecraft_version": __version__, "dtype": dtype, "config": self.config.to_dict()}
        return write_model_dir(path, meta, state)

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
                        text_encoder=None) -> "JointEmbeddingModel":
        """Load a model directory or a bundle name (e.g. ``"joint-tiny"``), checking class,
        versions, tensor names and shapes. Returns the model in eval mode."""
        from ..pretrained import build_from_model_dir, read_model_config, resolve_model_dir

        path = resolve_model_dir(name_or_path)
        cfg_file, meta = read_model_config(path)
        if meta["class"] != cls.CLASS_NAME:
            raise CheckpointError(f"{path} holds a {meta['class']!r}, not a {cls.CLASS_NAME}")
        return build_from_model_dir(path, meta, cfg_file, config_class=JointConfig, model_version=cls.VERSION,
                                    format_version=FORMAT_VERSION,
                                    build=lambda config: cls(config, text_encoder=text_encoder), device=device)
