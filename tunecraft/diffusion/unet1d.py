"""The 1D Efficient U-Net of Noise2Music (Huang et al. 2023, Fig. 1 and Table 8).

A 1D version of Imagen's Efficient U-Net: a stem convolution, then ``L`` down-sampling levels and
``L`` mirrored up-sampling levels; the output of each down level is added to the input of the up
level at the same resolution (scaled by ``skip_scale``). Level ``i``:

* down: strided conv (``/ strides[i]``) -> ``blocks[i]`` residual conv blocks -> self-attention ->
  cross-attention to the text, the attention layers only at the configured levels;
* up: ``blocks[i]`` residual conv blocks -> self-attention -> cross-attention -> transposed conv
  (or nearest + conv) (``* strides[i]``).

Every residual block carries a **combine layer** (:class:`~tunecraft.modules.film.FiLM`): the noise-level
embedding, a single vector, gives a channel-wise scale and bias for the sequence.

The four ways in (Fig. 1):

1. the stacked input - the noisy ``x_t [B, C, T]`` concatenated on channels with an aligned
   condition ``cond [B, cond_channels, T]`` (the FFT-upsampled low-fi audio of a cascader);
2. the noise level - ``[B]`` (or per frame ``[B, T]``), embedded sinusoidally then by an MLP:
   a log-SNR (default), a time ``t``, or an angle (``time_input``); :meth:`UNet1D.noise_level`
   converts a schedule's ``t`` to what the model expects;
3. text states ``[B, L, text_dim]`` with mask ``[B, L]`` through cross-attention; rows with no text
   (all-False mask) or with ``drop_text`` set get a zero cross-attention output (CFG dropout, 10 %);
4. a compressed aligned sequence ``[B, compressed_channels, T']`` (any ``T'``, e.g. a spectrogram for
   the vocoder) resampled to the bottom resolution and added at the bottom of the "U".

The output has ``x``'s length: inputs are padded to a multiple of the total stride and cropped back;
self-attention does not attend to the padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import Config
from ..errors import ConfigError, InvalidInput
from ..modules.conv_blocks import (
    UPSAMPLE_MODES, CrossAttention1d, Downsample1d, ResBlock1d, SelfAttention1d, Upsample1d, group_norm,
)
from ..modules.film import NoiseLevelEmbedding
from ..text import TextStates
from .schedules import NoiseSchedule, as_time

__all__ = ["UNET1D_PRESETS", "UNet1D", "UNet1DConfig"]

TIME_INPUTS = {"log_snr": 25.0, "t": 1000.0, "angle": 2000.0 / math.pi}
LOG_SNR_CLAMP = 40.0


def _pos_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{what} must be a positive integer, got {v!r}")
    return v


@dataclass
class UNet1DConfig(Config):
    """Configuration of :class:`UNet1D`. Per-level lists (``channels``, ``strides``, ``blocks``) have one
    entry per level; attention levels are 0-based level indices.

    ``in_channels``: channels of ``x_t`` (1 for mono audio, 80 for a mel spectrogram);
    ``out_channels``: prediction channels (default ``in_channels``);
    ``cond_channels``: aligned conditioning stacked with ``x_t`` (0 = none);
    ``compressed_channels``: channels of the compressed aligned sequence added at the bottom (0 = none);
    ``text_dim``: width of the text states for cross-attention (0 = no text);
    ``stem_channels``: width before the first level (default ``channels[0]``);
    ``embed_dim``: noise-level embedding width (default ``4 * stem_channels``);
    ``time_input``: what the noise-level argument is - ``log_snr`` (default), ``t`` or ``angle``;
    ``upsample``: ``transposed``, ``nearest`` or ``linear`` (:class:`~tunecraft.modules.conv_blocks.Upsample1d`);
    ``skip_scale``: factor on ``h + skip`` (``1/sqrt(2)`` keeps the variance);
    ``gradient_checkpointing``: recompute blocks in the backward pass to save memory.
    """

    in_channels: int = 1
    out_channels: int | None = None
    cond_channels: int = 0
    compressed_channels: int = 0
    text_dim: int = 0
    channels: list[int] = field(default_factory=lambda: [256, 256, 512, 768, 1024, 1024])
    strides: list[int] = field(default_factory=lambda: [4, 4, 4, 4, 4, 4])
    blocks: list[int] = field(default_factory=lambda: [3, 3, 3, 4, 4, 4])
    stem_channels: int | None = None
    kernel_size: int = 7
    self_attention_levels: list[int] = field(default_factory=lambda: [3, 4, 5])
    cross_attention_levels: list[int] = field(default_factory=lambda: [3, 4, 5])
    num_heads: int = 8
    norm_groups: int = 32
    embed_dim: int | None = None
    time_input: str = "log_snr"
    upsample: str = "transposed"
    dropout: float = 0.0
    skip_scale: float = 1.0 / math.sqrt(2.0)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _pos_int(self.in_channels, "in_channels")
        if self.out_channels is not None:
            _pos_int(self.out_channels, "out_channels")
        for name in ("cond_channels", "compressed_channels", "text_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name} must be a non-negative integer, got {v!r}")
        n = len(self.channels)
        if n == 0:
            raise ConfigError("a U-Net needs at least one level (channels is empty)")
        if len(self.strides) != n or len(self.blocks) != n:
            raise ConfigError(
                f"channels, strides and blocks need one entry per level; got {n}, {len(self.strides)}, {len(self.blocks)}"
            )
        for i, (c, s, b) in enumerate(zip(self.channels, self.strides, self.blocks)):
            _pos_int(c, f"channels[{i}]")
            _pos_int(s, f"strides[{i}]")
            if isinstance(b, bool) or not isinstance(b, int) or b < 0:
                raise ConfigError(f"blocks[{i}] must be a non-negative integer, got {b!r}")
        for name in ("self_attention_levels", "cross_attention_levels"):
            for lvl in getattr(self, name):
                if isinstance(lvl, bool) or not isinstance(lvl, int) or not 0 <= lvl < n:
                    raise ConfigError(f"{name} has level {lvl!r}, outside 0..{n - 1}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd number, got {self.kernel_size}")
        widths = [self.stem, *self.channels]
        for c in widths:
            if c % self.norm_groups:
                raise ConfigError(f"norm_groups={self.norm_groups} must divide every channel count, not {c}")
        attn_levels = set(self.self_attention_levels) | (set(self.cross_attention_levels) if self.text_dim else set())
        for lvl in attn_levels:
            if self.channels[lvl] % self.num_heads:
                raise ConfigError(f"num_heads={self.num_heads} must divide channels[{lvl}]={self.channels[lvl]}")
        if self.time_input not in TIME_INPUTS:
            raise ConfigError(f"time_input must be one of {', '.join(TIME_INPUTS)}, got {self.time_input!r}")
        if self.upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {self.upsample!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.embed_dim is not None:
            _pos_int(self.embed_dim, "embed_dim")
        if self.stem_channels is not None:
            _pos_int(self.stem_channels, "stem_channels")

    @property
    def stem(self) -> int:
        return self.stem_channels if self.stem_channels is not None else self.channels[0]

    @property
    def num_levels(self) -> int:
        return len(self.channels)

    @property
    def total_stride(self) -> int:
        return math.prod(self.strides)

    @property
    def output_channels(self) -> int:
        return self.out_channels if self.out_channels is not None else self.in_channels

    @property
    def embedding_dim(self) -> int:
        return self.embed_dim if self.embed_dim is not None else 4 * self.stem

    # ------------------------------------------------------------------ presets
    @classmethod
    def noise2music(cls, **overrides) -> "UNet1DConfig":
        """Noise2Music Table 8: kernel 7, strides [4]*6, channels 256 x [1, 1, 2, 3, 4, 4],
        blocks [3, 3, 3, 4, 4, 4], self- and cross-attention in the last 3 levels (8 heads)."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides) -> "UNet1DConfig":
        """CPU-sized model: 4 levels (total stride 128), 64..256 channels, attention in the last 2 levels."""
        base = dict(
            channels=[64, 128, 128, 256],
            strides=[2, 4, 4, 4],
            blocks=[1, 2, 2, 2],
            self_attention_levels=[2, 3],
            cross_attention_levels=[2, 3],
            num_heads=4,
            norm_groups=16,
            embed_dim=256,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def tiny(cls, **overrides) -> "UNet1DConfig":
        """Test-sized model: 3 levels (total stride 8), 16..32 channels, attention in the last 2 levels."""
        base = dict(
            channels=[16, 32, 32],
            strides=[2, 2, 2],
            blocks=[1, 1, 1],
            self_attention_levels=[1, 2],
            cross_attention_levels=[1, 2],
            num_heads=2,
            norm_groups=8,
            embed_dim=32,
            kernel_size=5,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides) -> "UNet1DConfig":
        """A named preset from :data:`UNET1D_PRESETS` with field overrides."""
        if name not in UNET1D_PRESETS:
            raise ConfigError(f"unknown U-Net preset {name!r} (choose from {', '.join(UNET1D_PRESETS)})")
        return getattr(cls, UNET1D_PRESETS[name])(**overrides)


#: preset name -> :class:`UNet1DConfig` classmethod
UNET1D_PRESETS = {"noise2music": "noise2music", "small": "small", "tiny": "tiny"}


class _Level(nn.Module):
    """Residual blocks and attention of one level (shared layout of the down and up paths)."""

    def __init__(self, channels: int, n_blocks: int, cfg: UNet1DConfig, self_attn: bool, cross_attn: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock1d(
                channels,
                channels,
                cfg.embedding_dim,
                kernel_size=cfg.kernel_size,
                norm_groups=cfg.norm_groups,
                dropout=cfg.dropout,
            )
            for _ in range(n_blocks)
        )
        self.self_attn = SelfAttention1d(channels, cfg.num_heads, norm_groups=cfg.norm_groups) if self_attn else None
        self.cross_attn = (
            CrossAttention1d(channels, cfg.text_dim, cfg.num_heads, norm_groups=cfg.norm_groups) if cross_attn else None
        )


class UNet1D(nn.Module):
    """Noise2Music's 1D Efficient U-Net (see the module docstring).

    ``forward(x [B, in_channels, T], noise_level [B] | [B, T], *, cond, text, drop_text, compressed)``
    returns the prediction ``[B, out_channels, T]`` for any ``T >= 1``.
    """

    def __init__(self, config: UNet1DConfig | None = None, **overrides):
        super().__init__()
        config = config or UNet1DConfig()
        self.config = cfg = config.replace(**overrides) if overrides else config
        emb = cfg.embedding_dim
        self.time_embed = NoiseLevelEmbedding(emb, scale=TIME_INPUTS[cfg.time_input])
        self.stem = nn.Conv1d(cfg.in_channels + cfg.cond_channels, cfg.stem, cfg.kernel_size, padding=cfg.kernel_size // 2)
        widths = [cfg.stem, *cfg.channels]
        use_text = cfg.text_dim > 0
        self.down_sample = nn.ModuleList()
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        self.up_sample = nn.ModuleList()
        for i in range(cfg.num_levels):
            sa = i in cfg.self_attention_levels
            ca = use_text and i in cfg.cross_attention_levels
            self.down_sample.append(Downsample1d(widths[i], widths[i + 1], cfg.strides[i]))
            self.down.append(_Level(widths[i + 1], cfg.blocks[i], cfg, sa, ca))
            self.up.append(_Level(widths[i + 1], cfg.blocks[i], cfg, sa, ca))
            self.up_sample.append(Upsample1d(widths[i + 1], widths[i], cfg.strides[i], mode=cfg.upsample))
        self.compressed_proj = None
        if cfg.compressed_channels:
            self.compressed_proj = nn.Conv1d(cfg.compressed_channels, cfg.channels[-1], 1)
            nn.init.zeros_(self.compressed_proj.weight)
            nn.init.zeros_(self.compressed_proj.bias)
        self.out_norm = group_norm(cfg.stem, cfg.norm_groups)
        self.out_conv = nn.Conv1d(cfg.stem, cfg.output_channels, cfg.kernel_size, padding=cfg.kernel_size // 2)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    # ------------------------------------------------------------------ helpers
    def noise_level(self, schedule: NoiseSchedule, t) -> torch.Tensor:
        """The noise-level input this model expects for diffusion time ``t`` under ``schedule``
        (``log_snr(t)``, ``t`` or ``angle(t)`` according to ``config.time_input``)."""
        t = as_time(t)
        kind = self.config.time_input
        if kind == "t":
            return t
        if kind == "angle":
            return schedule.angle(t)
        return schedule.log_snr(t)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _ckpt(self, fn, *args):
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _embed(self, level: torch.Tensor, stride: int, length: int) -> torch.Tensor:
        """Per-example ``[B, E]``, or per-frame ``[B, length, E]`` pooled over ``stride`` input frames."""
        if level.dim() == 1:
            return self.time_embed(level)
        pooled = F.avg_pool1d(level[:, None, :], stride, stride)[:, 0] if stride > 1 else level
        if pooled.shape[-1] != length:
            raise InvalidInput(f"internal: per-frame noise level has {pooled.shape[-1]} frames, level has {length}")
        return self.time_embed(pooled)

    def _run_level(self, level: _Level, h, emb, key_mask, ctx, ctx_mask, drop):
        for block in level.blocks:
            h = self._ckpt(block, h, emb)
        if level.self_attn is not None:
            h = self._ckpt(level.self_attn, h, key_mask)
        if level.cross_attn is not None and ctx is not None:
            h = self._ckpt(level.cross_attn, h, ctx, ctx_mask, drop)
        return h

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: torch.Tensor,
        noise_level: torch.Tensor | float,
        *,
        cond: torch.Tensor | None = None,
        text: TextStates | None = None,
        drop_text: torch.Tensor | None = None,
        compressed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the diffusion target for ``x_t``.

        Args:
            x: noisy input ``[B, in_channels, T]``.
            noise_level: ``[]``, ``[B]`` or per-frame ``[B, T]`` - log-SNR, ``t`` or angle per ``config.time_input``.
            cond: aligned condition ``[B, cond_channels, T]`` (required iff ``cond_channels > 0``).
            text: :class:`~tunecraft.text.TextStates` ``[B, L, text_dim]``; ``None`` means no text for any row.
            drop_text: ``[B]`` bool; True rows ignore the text (their cross-attention output is zero).
            compressed: ``[B, compressed_channels, T']`` added at the bottom after resampling; optional.

        Returns:
            ``[B, out_channels, T]``.
        """
        cfg = self.config
        if x.dim() != 3 or x.shape[1] != cfg.in_channels or x.shape[-1] < 1:
            raise InvalidInput(f"x must be [B, {cfg.in_channels}, T >= 1], got {tuple(x.shape)}")
        b, _, length = x.shape
        if cfg.cond_channels:
            if cond is None:
                raise InvalidInput(f"this U-Net needs an aligned condition [B, {cfg.cond_channels}, T]")
            if tuple(cond.shape) != (b, cfg.cond_channels, length):
                raise InvalidInput(
                    f"cond must be [B, {cfg.cond_channels}, T] = {(b, cfg.cond_channels, length)}, got {tuple(cond.shape)}"
                )
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cond is not None:
            raise InvalidInput("this U-Net has cond_channels = 0 and takes no aligned condition")

        # text
        ctx = ctx_mask = drop = None
        if text is not None:
            if not cfg.text_dim:
                raise InvalidInput("this U-Net has text_dim = 0 and takes no text")
            if not isinstance(text, TextStates):
                raise InvalidInput(f"text must be TextStates, got {type(text).__name__}")
            if text.batch_size != b or text.dim != cfg.text_dim:
                raise InvalidInput(f"text states must be [B={b}, L, {cfg.text_dim}], got {tuple(text.states.shape)}")
            ctx, ctx_mask = text.states.to(device=x.device, dtype=x.dtype), text.mask.to(x.device)
        if drop_text is not None:
            drop = torch.as_tensor(drop_text, device=x.device).bool()
            if tuple(drop.shape) != (b,):
                raise InvalidInput(f"drop_text must be a bool [B={b}] mask, got shape {tuple(drop.shape)}")

        # pad to a multiple of the total stride
        total = cfg.total_stride
        padded = -(-length // total) * total
        pad = padded - length
        if pad:
            x = F.pad(x, (0, pad))

        # noise level
        level = torch.as_tensor(noise_level, device=x.device)
        level = level.float() if not level.is_floating_point() else level
        if level.dim() == 0:
            level = level.expand(b)
        elif level.dim() == 2:
            if tuple(level.shape) != (b, length):
                raise InvalidInput(f"per-frame noise level must be [B, T] = {(b, length)}, got {tuple(level.shape)}")
            if pad:
                level = F.pad(level[:, None, :], (0, pad), mode="replicate")[:, 0]
        elif tuple(level.shape) != (b,):
            raise InvalidInput(f"noise level must be [], [B] or [B, T]; got {tuple(level.shape)} for B={b}")
        if cfg.time_input == "log_snr":
            level = level.clamp(-LOG_SNR_CLAMP, LOG_SNR_CLAMP)
        per_frame = level.dim() == 2

        # down path
        h = self.stem(x)
        skips, embs, masks = [], [], []
        stride = 1
        for i in range(cfg.num_levels):
            stride *= cfg.strides[i]
            h = self.down_sample[i](h)
            n = h.shape[-1]
            emb = self._embed(level, stride, n) if (per_frame or i == 0) else embs[0]
            valid = -(-length // stride)
            key_mask = torch.arange(n, device=x.device) < valid if valid < n else None
            h = self._run_level(self.down[i], h, emb, key_mask, ctx, ctx_mask, drop)
            skips.append(h)
            embs.append(emb)
            masks.append(key_mask)

        # bottom of the "U": the compressed aligned sequence
        if compressed is not None:
            if self.compressed_proj is None:
                raise InvalidInput("this U-Net has compressed_channels = 0 and takes no compressed sequence")
            if compressed.dim() != 3 or compressed.shape[0] != b or compressed.shape[1] != cfg.compressed_channels:
                raise InvalidInput(
                    f"compressed sequence must be [B={b}, {cfg.compressed_channels}, T'], got {tuple(compressed.shape)}"
                )
            c = compressed.to(x.dtype)
            if c.shape[-1] != length:
                c = F.interpolate(c, size=length, mode="nearest")
            if pad:
                c = F.pad(c, (0, pad), mode="replicate")
            c = F.avg_pool1d(c, total, total) if total > 1 else c
            h = h + self.compressed_proj(c)

        # up path
        for i in reversed(range(cfg.num_levels)):
            if i != cfg.num_levels - 1:
                h = (h + skips[i]) * cfg.skip_scale
            h = self._run_level(self.up[i], h, embs[i], masks[i], ctx, ctx_mask, drop)
            h = self.up_sample[i](h)

        out = self.out_conv(F.silu(self.out_norm(h)))
        return out[..., :length] if pad else out
