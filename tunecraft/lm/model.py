"""MusicGen's codec-token language model (Copet et al., 2023, sections 2.2-2.4).

Codes ``Q [B, K, T]`` of an RVQ codec are interleaved by a codebook pattern into a sequence
``V [B, K, S + 1]`` (:mod:`tunecraft.lm.patterns`; position 0 is ``P_0``, all special tokens).
At each position the model embeds every codebook with its own table (``card + 1`` rows, the
extra one being the special token ``card``) and sums them, adds a sinusoidal position
embedding, and runs a pre-norm causal transformer decoder that cross-attends to the text
states ``C`` (or reads them, and the melody, as a prefix). One linear head per codebook turns
the output at position ``s`` into logits for the codes of step ``s + 1``:

    p(V_{s+1, k} | V_{<=s}, C) = softmax(W_k LN(h_s))           for every k in P_{s+1}

Training minimises ``(1/K) sum_k CE_k`` over the codes the pattern places (melody and
text-prefix positions carry no loss), with the conditions replaced by the null condition with
probability ``cfg_dropout``. Inference samples step by step with a preallocated KV cache and
classifier-free guidance ``l = l_uncond + s (l_cond - l_uncond)``, the conditional and
unconditional rows run as one batch; generations longer than the trained context continue
with a sliding window (audiocraft's ``extend_stride``).

**Conditions.** ``text`` is a :class:`~tunecraft.text.TextStates` already projected to the
model width (:class:`~tunecraft.text.TextConditioner` owns that projection). An all-False mask
row is the null condition. ``chroma`` is ``[B, n_chroma, frames]`` (argmax chroma from
:func:`tunecraft.audio.chromagram`), projected by ``chroma_proj`` and repeated/truncated to
``chroma_length`` prefix positions; its null value is a one-hot on bin 0 (what the argmax chroma
of silence gives, and what transformers uses). The prefix order is ``[chroma, text]`` as in
transformers' ``MusicgenMelodyForConditionalGeneration``.

**Beat clock** (not in the paper; off unless ``beat_rates`` is set). ``beat [B, 2]`` =
``(beats per frame, beat at frame 0)`` per row, from the tempo a prompt states
(:meth:`CodecLM.beat_clock`); a row with 0 beats per frame has no clock. Every input position
gets ``W [sin, cos](2 pi r phi)`` for each rate ``r`` of ``beat_rates`` (cycles per beat), where
``phi`` is the beat position of the frame that position predicts; ``W`` starts at zero, so a
model warm-started without a clock computes what it computed before. It is a time-aligned
control in the manner of JASCO's or Music ControlNet's rhythm conditions, with the beat grid
given by the requested tempo instead of extracted from a reference: a model that only reads the
tempo from the text has to keep the beat by itself over hundreds of frames, and a small CPU
model does not. The clock is a condition like the text: dropped with it (``cfg_dropout``) and
absent from the null row of classifier-free guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..pretrained import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    build_from_model_dir,
    load_state_checked,
    read_model_config,
)
from ..errors import CheckpointError, ConfigError, InvalidInput
from ..modules.attention import linear
from ..modules.beat import beat_after, beat_clock, beat_features
from ..modules.transformer import ACTIVATIONS, POSITIONAL, CrossContext, Transformer
from ..text.states import TextStates, null_condition
from .patterns import PATTERN_PROVIDERS, CodebooksPatternProvider, get_pattern_provider
from .sampling import SamplingParams, apply_cfg, sample_next_token

__all__ = ["CodecLMConfig", "CodecLM", "LMOutput", "LMLoss", "ProgressCallback"]

FORMAT_VERSION = 1
TEXT_FUSE = ("cross", "prepend", "none")
#: marker for codes still to be generated (never fed to the model)
UNKNOWN_TOKEN = -1

#: ``callback(done_steps, total_steps)`` called after every decoding step
ProgressCallback = Callable[[int, int], None]


def _check_int(value, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _check_arg(value, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInput(f"{what} must be an integer >= {minimum}, got {value!r}")


def _check_prob(value, what: str, upper_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0
    if not ok or (upper_open and float(value) >= 1.0):
        raise ConfigError(f"{what} must be in [0, 1{')' if upper_open else ']'}, got {value!r}")


@dataclass
class CodecLMConfig(Config):
    """Hyperparameters of :class:`CodecLM`. Defaults are MusicGen 300M (paper section 3.1).

    ``text_fuse``: ``"cross"`` (MusicGen: cross-attention to T5 states), ``"prepend"``
    (text states as input prefix, as MusicGen-melody in transformers) or ``"none"``.
    ``n_chroma > 0`` adds the melody prefix of ``chroma_length`` positions.
    ``cfg_dropout`` drops all conditions of a training example (MusicGen: 0.3);
    ``chroma_dropout`` drops only the melody. ``max_context`` (frames) is the window that
    generation keeps; ``extend_stride`` (frames) is how far it slides (30 s and 18 s at 50 Hz).
    """

    n_q: int = 4
    card: int = 2048
    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    ffn_dim: int | None = None
    activation: str = "gelu"
    bias_attn: bool = False
    bias_ff: bool = False
    bias_proj: bool = False
    norm_eps: float = 1e-5
    positional: str = "sin"
    positional_scale: float = 1.0
    max_period: float = 10000.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layer_drop: float = 0.0
    checkpointing: bool = False
    pattern: str = "delay"
    pattern_options: dict = field(default_factory=dict)
    text_fuse: str = "cross"
    n_chroma: int = 0
    chroma_length: int = 235
    cfg_dropout: float = 0.3
    chroma_dropout: float = 0.0
    max_context: int = 1500
    extend_stride: int = 900
    init_std: float = 0.02
    beat_rates: list = field(default_factory=list)
    frame_rate: float = 50.0

    def __post_init__(self) -> None:
        _check_int(self.n_q, "n_q", 1)
        _check_int(self.card, "card", 2)
        _check_int(self.dim, "dim", 2)
        _check_int(self.num_heads, "num_heads", 1)
        _check_int(self.num_layers, "num_layers", 0)
        if self.dim % self.num_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.ffn_dim is not None:
            _check_int(self.ffn_dim, "ffn_dim", 1)
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{self.activation}' (known: {', '.join(ACTIVATIONS)})")
        if self.positional not in POSITIONAL:
            raise ConfigError(f"unknown positional encoding '{self.positional}' (known: {', '.join(POSITIONAL)})")
        if self.positional in ("sin", "sin_rope") and self.dim % 2:
            raise ConfigError(f"sinusoidal positions need an even dim, got {self.dim}")
        if self.positional in ("rope", "sin_rope") and (self.dim // self.num_heads) % 2:
            raise ConfigError("rotary positions need an even head dimension")
        if self.text_fuse not in TEXT_FUSE:
            raise ConfigError(f"text_fuse must be one of {', '.join(TEXT_FUSE)}, got {self.text_fuse!r}")
        _check_int(self.n_chroma, "n_chroma", 0)
        _check_int(self.chroma_length, "chroma_length", 1)
        for name in ("dropout", "attention_dropout", "cfg_dropout", "chroma_dropout"):
            _check_prob(getattr(self, name), name)
        _check_prob(self.layer_drop, "layer_drop", upper_open=True)
        _check_int(self.max_context, "max_context", 2)
        _check_int(self.extend_stride, "extend_stride", 1)
        if self.extend_stride >= self.max_context:
            raise ConfigError(f"extend_stride ({self.extend_stride}) must be smaller than max_context ({self.max_context})")
        if not isinstance(self.pattern_options, dict):
            raise ConfigError("pattern_options must be a mapping")
        if str(self.pattern) not in PATTERN_PROVIDERS:
            raise ConfigError(f"unknown codebook pattern '{self.pattern}' (known: {', '.join(sorted(PATTERN_PROVIDERS))})")
        get_pattern_provider(self.pattern, self.n_q, **self.pattern_options)  # validates the options
        if not self.init_std > 0:
            raise ConfigError(f"init_std must be positive, got {self.init_std}")
        if not isinstance(self.beat_rates, (list, tuple)) or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0
                for r in self.beat_rates):
            raise ConfigError(f"beat_rates must be a list of positive numbers (cycles per beat), got {self.beat_rates!r}")
        self.beat_rates = [float(r) for r in self.beat_rates]
        if isinstance(self.frame_rate, bool) or not isinstance(self.frame_rate, (int, float)) \
                or not math.isfinite(self.frame_rate) or self.frame_rate <= 0:
            raise ConfigError(f"frame_rate must be a positive number of frames per second, got {self.frame_rate!r}")

    @property
    def special_token(self) -> int:
        """Id of the special token (``card``): pattern padding and ``P_0``; transformers' pad/BOS id."""
        return self.card


@dataclass
class LMOutput:
    """Teacher-forced predictions: ``logits [B, K, T, card]`` and ``mask [B, K, T]`` (True = predicted)."""

    logits: torch.Tensor
    mask: torch.Tensor


@dataclass
class LMLoss:
    """``loss`` = mean over codebooks of ``ce_per_codebook [K]`` (cross-entropy in nats)."""

    loss: torch.Tensor
    ce_per_codebook: torch.Tensor


class _DecodeWeights:
    """Decoding weights: concatenated embedding tables and heads (one gather and one matmul per
    step) and the transformer's :class:`DecodePlan`."""

    def __init__(self, lm: "CodecLM") -> None:
        K, rows = lm.n_q, lm.card + 1
        self.card = lm.card
        self.plan = lm.transformer.decode_plan()
        norm = lm.out_norm
        self.out_norm = (norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        self.table = torch.cat([e.weight for e in lm.emb], dim=0)  # [K * (card + 1), D]
        self.offsets = (torch.arange(K, device=self.table.device) * rows).view(1, K, 1)
        self.head_w = torch.cat([lin.weight for lin in lm.linears], dim=0)  # [K * card, D]
        biases = [lin.bias for lin in lm.linears]
        self.head_b = torch.cat(biases) if biases[0] is not None else None

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, K, n] -> [B, n, D]`` (sum of the per-codebook embeddings)."""
        return F.embedding(tokens + self.offsets, self.table).sum(dim=1)

    def heads(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, D] -> [B, K, card]``."""
        return linear(h, self.head_w, self.head_b).view(h.shape[0], -1, self.card)


class _Decoder:
    """Decoding state of one batch of rows: KV cache, cross-attention K/V, prefix."""

    def __init__(self, lm: "CodecLM", io: _DecodeWeights, cross: CrossContext | None, prefix: torch.Tensor | None,
                 rows: int, capacity: int, beat: torch.Tensor | None = None) -> None:
        self.lm = lm
        self.io = io
        self.cross = cross
        self.prefix = prefix
        self.beat = beat  # [rows, S + 1, D]: the beat clock of every position of the window
        self.pos = 0
        ref = io.table
        self.cache = lm.transformer.new_cache(rows, capacity, dtype=ref.dtype, device=ref.device)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens [rows, K, n]``; return the logits ``[rows, K, card]`` at the last position."""
        x = self.io.embed(tokens)
        if self.beat is not None:
            n = tokens.shape[2]
            x = x + self.beat[:, self.pos: self.pos + n]
            self.pos += n
        if self.prefix is not None:
            x = torch.cat([self.prefix, x], dim=1)
            self.prefix = None
        h = self.io.plan(x, self.cross, self.cache)
        return self.io.heads(F.layer_norm(h[:, -1], *self.io.out_norm))


class CodecLM(nn.Module):
    """The MusicGen language model over codec tokens (see the module docstring)."""

    config_class = CodecLMConfig
    model_version = 1

    def __init__(self, config: CodecLMConfig | None = None) -> None:
        super().__init__()
        config = config or CodecLMConfig()
        if not isinstance(config, CodecLMConfig):
            raise ConfigError(f"CodecLM needs a CodecLMConfig, got {type(config).__name__}")
        self.config = config
        self.n_q = config.n_q
        self.card = config.card
        self.dim = config.dim
        self.special_token = config.card
        self.pattern_provider: CodebooksPatternProvider = get_pattern_provider(
            config.pattern, config.n_q, **config.pattern_options
        )
        self.emb = nn.ModuleList([nn.Embedding(config.card + 1, config.dim) for _ in range(config.n_q)])
        self.transformer = Transformer(
            config.dim, config.num_heads, config.num_layers, config.ffn_dim,
            cross_attention=config.text_fuse == "cross", positional=config.positional,
            positional_scale=config.positional_scale, max_period=config.max_period, bias_attn=config.bias_attn,
            bias_ff=config.bias_ff, activation=config.activation, dropout=config.dropout,
            attention_dropout=config.attention_dropout, layer_drop=config.layer_drop, norm_eps=config.norm_eps,
            checkpointing=config.checkpointing,
        )
        self.out_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.linears = nn.ModuleList(
            [nn.Linear(config.dim, config.card, bias=config.bias_proj) for _ in range(config.n_q)]
        )
        self.chroma_proj = nn.Linear(config.n_chroma, config.dim) if config.n_chroma > 0 else None
        rates = config.beat_rates
        self.beat_proj = nn.Linear(2 * len(rates), config.dim, bias=False) if rates else None
        if rates:
            self.register_buffer("beat_cycles", torch.tensor(rates, dtype=torch.float32), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Gaussian init (std ``init_std``), zero biases, unit LayerNorms."""
        std = self.config.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.beat_proj is not None:
            nn.init.zeros_(self.beat_proj.weight)  # a warm start without a clock is unchanged

    # ------------------------------------------------------------------ properties
    @property
    def has_melody(self) -> bool:
        return self.chroma_proj is not None

    @property
    def device(self) -> torch.device:
        return self.out_norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.out_norm.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ conditions
    @property
    def has_beat_clock(self) -> bool:
        return self.beat_proj is not None

    def beat_clock(self, bpm: Sequence[float | None], start_frames: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 2]`` beat clocks for tempi ``bpm`` (None or 0: no clock) whose beat grid starts at
        frame ``-start_frames`` (a crop that begins ``start_frames`` into its clip)."""
        starts = None if start_frames is None else [int(f) for f in start_frames]
        return beat_clock(bpm, self.config.frame_rate, starts).to(device=self.device, dtype=torch.float32)

    @staticmethod
    def _beat_after(beat: torch.Tensor, frames: int | torch.Tensor) -> torch.Tensor:
        """The clocks ``beat [B, 2]`` ``frames`` (int or ``[B]``) frames later."""
        return beat_after(beat, frames)

    def _check_beat(self, beat: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if beat is None:
            return None
        if not self.has_beat_clock:
            raise InvalidInput("this model has no beat clock (beat_rates is empty)")
        if not isinstance(beat, torch.Tensor) or tuple(beat.shape) != (batch, 2) or not beat.is_floating_point():
            shape = tuple(beat.shape) if isinstance(beat, torch.Tensor) else type(beat).__name__
            raise InvalidInput(f"beat must be a float tensor [{batch}, 2] (beats per frame, beat at frame 0), got {shape}")
        if not bool(torch.isfinite(beat).all()) or bool((beat[:, 0] < 0).any()):
            raise InvalidInput("beat clocks must be finite with beats per frame >= 0")
        return beat.to(device=self.device, dtype=torch.float32)

    def _beat_embedding(self, beat: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``[B, n, D]``: the clock features of ``beat [B, 2]`` at ``frames [n]``, zero for rows
        without a clock."""
        feats = beat_features(beat.float(), frames, self.beat_cycles)  # fp32 even in a half model
        return self.beat_proj(feats.to(self.beat_proj.weight.dtype))

    def null_chroma(self, batch_size: int, frames: int = 1) -> torch.Tensor:
        """The null melody ``[B, n_chroma, frames]``: a one-hot on bin 0."""
        if not self.has_melody:
            raise InvalidInput("this model has no melody conditioning")
        out = torch.zeros(batch_size, self.config.n_chroma, frames, device=self.device, dtype=self.dtype)
        out[:, 0] = 1.0
        return out

    def _check_text(self, text: TextStates | None, batch: int) -> TextStates | None:
        if text is None:
            return None
        if not isinstance(text, TextStates):
            raise InvalidInput(f"text must be TextStates (projected to width {self.dim}), got {type(text).__name__}")
        if self.config.text_fuse == "none":
            raise InvalidInput("this model takes no text condition (text_fuse='none')")
        if text.dim != self.dim:
            raise InvalidInput(f"text states have width {text.dim}; project them to the model width {self.dim} first")
        if text.batch_size != batch:
            raise InvalidInput(f"text has {text.batch_size} rows, the codes {batch}")
        return text.to(device=self.device, dtype=self.dtype)

    def _check_chroma(self, chroma: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if chroma is None:
            return None
        if not self.has_melody:
            raise InvalidInput("this model has no melody conditioning (n_chroma = 0)")
        if not isinstance(chroma, torch.Tensor) or chroma.dim() != 3:
            raise InvalidInput(f"chroma must be a tensor [B, {self.config.n_chroma}, frames]")
        if chroma.shape[0] != batch or chroma.shape[1] != self.config.n_chroma or chroma.shape[2] < 1:
            raise InvalidInput(f"chroma must be [{batch}, {self.config.n_chroma}, frames >= 1], got {tuple(chroma.shape)}")
        return chroma.to(device=self.device, dtype=self.dtype)

    def _prefix(self, text: TextStates | None, chroma: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Input prefix ``[B, P, D]``: projected melody (``chroma_length``), then text if prepended."""
        parts = []
        if self.has_melody:
            if chroma is None:
                chroma = self.null_chroma(batch)
            c = self.chroma_proj(chroma.transpose(1, 2))  # [B, F, D]
            n = self.config.chroma_length
            if c.shape[1] < n:
                c = c.repeat(1, math.ceil(n / c.shape[1]), 1)
            parts.append(c[:, :n])
        if self.config.text_fuse == "prepend":
            if text is None:
                parts.append(torch.zeros(batch, 1, self.dim, device=self.device, dtype=self.dtype))
            else:
                parts.append(text.states * text.mask.unsqueeze(-1).to(text.states.dtype))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _cross(self, text: TextStates | None, precompute: bool = False) -> CrossContext | None:
        if self.config.text_fuse != "cross" or text is None:
            return None
        return self.transformer.cross_context(text.states, text.mask, precompute=precompute)

    def _drop_conditions(self, text: TextStates | None, chroma: torch.Tensor | None, batch: int,
                         generator: torch.Generator | None, beat: torch.Tensor | None = None):
        """Training-time condition dropout: rows -> null condition with probability ``cfg_dropout``
        (the text, the melody and the beat clock of a row go together)."""
        p = float(self.config.cfg_dropout)
        if p > 0:
            if text is not None:
                text, dropped = null_condition(text, p, generator, return_dropped=True)
            else:
                gen_device = generator.device if generator is not None else torch.device("cpu")
                dropped = (torch.rand(batch, generator=generator, device=gen_device) < p).to(self.device)
            if chroma is not None:
                chroma = torch.where(dropped.view(-1, 1, 1), self.null_chroma(batch, chroma.shape[2]), chroma)
            if beat is not None:
                beat = torch.where(dropped.to(beat.device).view(-1, 1), torch.zeros_like(beat), beat)
        q = float(self.config.chroma_dropout)
        if q > 0 and chroma is not None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            drop_c = (torch.rand(batch, generator=generator, device=gen_device) < q).to(self.device)
            chroma = torch.where(drop_c.view(-1, 1, 1), self.null_chroma(batch, chroma.shape[2]), chroma)
        return text, chroma, beat

    # ------------------------------------------------------------------ forward / loss
    def _check_sequence(self, sequence: torch.Tensor, name: str = "sequence") -> None:
        if not isinstance(sequence, torch.Tensor) or sequence.dim() != 3 or sequence.shape[1] != self.n_q:
            shape = tuple(sequence.shape) if isinstance(sequence, torch.Tensor) else type(sequence).__name__
            raise InvalidInput(f"{name} must be [B, {self.n_q}, T] int64, got {shape}")
        if sequence.dtype != torch.long:
            raise InvalidInput(f"{name} must be int64, got {sequence.dtype}")

    def forward(self, sequence: torch.Tensor, text: TextStates | None = None,
                chroma: torch.Tensor | None = None, beat: torch.Tensor | None = None,
                beat_frames: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, K, S, card]`` for a pattern sequence ``[B, K, S]`` (ids in ``[0, card]``).

        The output at position ``s`` predicts the codes of position ``s + 1``. Prefix
        positions (melody, prepended text) are run but not returned. ``beat [B, 2]`` adds the
        beat clock; ``beat_frames [S]`` is the frame each position predicts (default ``s``, as
        the delay and parallel patterns have it; :meth:`compute_predictions` passes the
        pattern's own).
        """
        self._check_sequence(sequence)
        B, K, S = sequence.shape
        if S and (int(sequence.min()) < 0 or int(sequence.max()) > self.card):
            raise InvalidInput(f"sequence ids must be in [0, {self.card}] ({self.card} = special token)")
        text = self._check_text(text, B)
        chroma = self._check_chroma(chroma, B)
        beat = self._check_beat(beat, B)
        x = self.emb[0](sequence[:, 0])
        for k in range(1, K):
            x = x + self.emb[k](sequence[:, k])
        if beat is not None:
            frames = torch.arange(S, dtype=torch.float32) if beat_frames is None else beat_frames
            if frames.shape != (S,):
                raise InvalidInput(f"beat_frames must be [{S}], got {tuple(frames.shape)}")
            x = x + self._beat_embedding(beat, frames).to(x.dtype)
        prefix = self._prefix(text, chroma, B)
        P = 0 if prefix is None else prefix.shape[1]
        if prefix is not None:
            x = torch.cat([prefix, x], dim=1)
        h = self.out_norm(self.transformer(x, self._cross(text))[:, P:])
        return torch.stack([lin(h) for lin in self.linears], dim=1)

    def compute_predictions(self, codes: torch.Tensor, text: TextStates | None = None,
                            chroma: torch.Tensor | None = None, beat: torch.Tensor | None = None) -> LMOutput:
        """Teacher-forced logits aligned with the codes ``[B, K, T]``: ``logits [B, K, T, card]``.

        The codes are interleaved with the model's pattern, run through :meth:`forward` and the
        logits are reverted with :meth:`Pattern.revert_pattern_logits` (NaN where the pattern
        gives no prediction; ``mask`` says where).
        """
        self._check_sequence(codes, "codes")
        B, K, T = codes.shape
        if T and (int(codes.min()) < 0 or int(codes.max()) >= self.card):
            raise InvalidInput(f"codes must be in [0, {self.card})")
        pattern = self.pattern_provider.get_pattern(T)
        sequence, _, _ = pattern.build_pattern_sequence(codes, self.special_token)
        frames = None if beat is None else pattern.predicted_frames
        logits = self(sequence, text, chroma, beat, frames)  # [B, K, S, card]
        logits, _, mask = pattern.revert_pattern_logits(logits.permute(0, 3, 1, 2), float("nan"))
        return LMOutput(logits=logits.permute(0, 2, 3, 1), mask=mask.unsqueeze(0).expand(B, -1, -1))

    def _scored_predictions(self, codes: torch.Tensor, text: TextStates | None, chroma: torch.Tensor | None,
                            frame_mask: torch.Tensor | None, drop: bool,
                            generator: torch.Generator | None = None,
                            beat: torch.Tensor | None = None) -> tuple[LMOutput, torch.Tensor]:
        """The inputs checked, the conditions dropped when ``drop`` (``cfg_dropout`` /
        ``chroma_dropout``, draws from ``generator``), the teacher-forced predictions and the
        ``[B, K, T]`` mask of the positions that count: those the pattern predicts, within
        ``frame_mask [B, T]`` (True = real frame)."""
        self._check_sequence(codes, "codes")
        B, K, T = codes.shape
        if T == 0:
            raise InvalidInput("codes have no frames")
        text = self._check_text(text, B)
        chroma = self._check_chroma(chroma, B)
        beat = self._check_beat(beat, B)
        if drop:
            text, chroma, beat = self._drop_conditions(text, chroma, B, generator, beat)
        out = self.compute_predictions(codes, text, chroma, beat)
        mask = out.mask
        if frame_mask is not None:
            if frame_mask.dtype != torch.bool or tuple(frame_mask.shape) != (B, T):
                raise InvalidInput(f"frame_mask must be bool [B, T] = {(B, T)}, got {frame_mask.dtype} {tuple(frame_mask.shape)}")
            mask = mask & frame_mask.to(mask.device).unsqueeze(1)
        return out, mask

    def compute_loss(self, codes: torch.Tensor, text: TextStates | None = None, chroma: torch.Tensor | None = None,
                     *, frame_mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     beat: torch.Tensor | None = None) -> LMLoss:
        """Cross-entropy per codebook on the positions the pattern predicts, averaged over codebooks.

        In training mode the conditions are first dropped with ``cfg_dropout`` /
        ``chroma_dropout`` (draws from ``generator``). ``frame_mask [B, T]`` (True = real frame)
        excludes padded frames. ``beat [B, 2]``: beat clocks (:meth:`beat_clock`).
        """
        out, mask = self._scored_predictions(codes, text, chroma, frame_mask, drop=self.training, generator=generator,
                                             beat=beat)
        K = codes.shape[1]
        ces = []
        for k in range(K):
            m = mask[:, k]
            if not bool(m.any()):
                ces.append(out.logits.new_zeros(()))
                continue
            ces.append(F.cross_entropy(out.logits[:, k][m].float(), codes[:, k][m]))
        ce = torch.stack(ces)
        return LMLoss(loss=ce.mean(), ce_per_codebook=ce)

    def sequence_cross_entropy(self, codes: torch.Tensor, text: TextStates | None = None,
                               chroma: torch.Tensor | None = None, *,
                               frame_mask: torch.Tensor | None = None, beat: torch.Tensor | None = None) -> torch.Tensor:
        """``[B]``: each row's mean cross-entropy (nats per token, over every codebook and the
        positions the pattern predicts), teacher forced and never with condition dropout."""
        out, mask = self._scored_predictions(codes, text, chroma, frame_mask, drop=False, beat=beat)
        B, K, T = codes.shape
        logits = torch.where(mask.unsqueeze(-1), out.logits, torch.zeros((), dtype=out.logits.dtype, device=out.logits.device))
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), codes.reshape(-1), reduction="none").view(B, K, T)
        m = mask.to(ce.dtype)
        return (ce * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp(min=1.0)

    # ------------------------------------------------------------------ generation
    def _window_plan(self, prompt_len: int, total: int, max_context: int, stride: int) -> list[tuple[int, int]]:
        """``[(context_frames, window_frames)]``: each window re-encodes its context and fills the rest."""
        plan = []
        known = prompt_len
        first = True
        while known < total:
            if first and known < max_context:
                ctx = known
            else:
                ctx = min(known, max_context - stride)
            new = min(total - known, max_context - ctx)
            plan.append((ctx, ctx + new))
            known += new
            first = False
        return plan

    def _conditioning(self, text: TextStates | None, chroma: torch.Tensor | None, batch: int, null: bool):
        """``(text, chroma)`` for ``batch`` rows, replaced by their null values when ``null``."""
        if null:
            text = text.null_like() if text is not None else None
            if chroma is not None:
                chroma = self.null_chroma(batch, chroma.shape[2])
        return text, chroma

    def _make_decoder(self, io: _DecodeWeights, text: TextStates | None, chroma: torch.Tensor | None, batch: int,
                      capacity_steps: int, beat: torch.Tensor | None = None) -> _Decoder:
        prefix = self._prefix(text, chroma, batch)
        P = 0 if prefix is None else prefix.shape[1]
        cross = self._cross(text, precompute=True)
        return _Decoder(self, io, cross, prefix, batch, P + capacity_steps, beat)

    def _generate_window(self, context: torch.Tensor, total: int, text: TextStates | None,
                         chroma: torch.Tensor | None, params: SamplingParams, generator: torch.Generator | None,
                         io: _DecodeWeights, progress: Callable[[], None] | None,
                         negatives: Sequence[TextStates] = (), beat: torch.Tensor | None = None) -> torch.Tensor:
        """Generate codes ``[B, K, total]`` continuing ``context [B, K, T0]`` (one window);
        ``beat [B, 2]`` is the clock at the window's first frame."""
        B, K, T0 = context.shape
        pattern = self.pattern_provider.get_pattern(total)
        codes = torch.full((B, K, total), UNKNOWN_TOKEN, dtype=torch.long, device=self.device)
        codes[:, :, :T0] = context
        sequence, _, _ = pattern.build_pattern_sequence(codes, self.special_token)
        S1 = pattern.sequence_length
        start = pattern.first_step_with_timestep(T0)
        cfg = params.uses_cfg and (text is not None or chroma is not None)
        scale = float(params.cfg_scale) if cfg else 1.0
        fact = float(params.fact_guidance)  # generate() admits negatives only beside a text
        negatives = list(negatives) if fact > 0 else []

        # the condition rows: [cond, null (with CFG), negative 1, ...], B rows each
        rows: list[tuple[TextStates | None, torch.Tensor | None]] = [(text, chroma)]
        if cfg:
            rows.append(self._conditioning(text, chroma, B, null=True))
        rows += [(neg, chroma) for neg in negatives]
        n = len(rows)
        # the beat clock of every position, per row group: the null row of CFG has none
        clocks: list[torch.Tensor | None] = [None] * n
        if beat is not None:
            emb = self._beat_embedding(beat, pattern.predicted_frames).to(self.dtype)
            clocks = [emb] + ([torch.zeros_like(emb)] if cfg else []) + [emb] * len(negatives)
        # one batch unless asked otherwise; prepended texts of different lengths cannot share one
        lengths = {r[0].length for r in rows if r[0] is not None}
        batched = not params.two_step_cfg and (self.config.text_fuse == "cross" or len(lengths) <= 1)
        if n == 1 or batched:
            t_all = TextStates.cat([r[0] for r in rows]) if text is not None else None
            c_all = torch.cat([r[1] for r in rows]) if chroma is not None else None
            b_all = torch.cat(clocks) if beat is not None else None
            decoders = [self._make_decoder(io, t_all, c_all, n * B, S1, b_all)]
        else:
            decoders = [self._make_decoder(io, t, c, B, S1, b) for (t, c), b in zip(rows, clocks)]

        def logits_for(tokens: torch.Tensor) -> torch.Tensor:
            if len(decoders) == 1:
                out = decoders[0](tokens.repeat(n, 1, 1) if n > 1 else tokens)
                parts = [out[i * B:(i + 1) * B] for i in range(n)]
            else:
                parts = [d(tokens) for d in decoders]
            cond = parts[0]
            logits = apply_cfg(cond, parts[1], scale) if cfg else cond
            for neg in parts[2 if cfg else 1:]:
                logits = logits + fact * (cond - neg)
            return logits

        logits = logits_for(sequence[:, :, :start])
        for s in range(start, S1):
            token = sample_next_token(logits, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                                      greedy=params.greedy, generator=generator)
            known = sequence[:, :, s]
            token = torch.where(known == UNKNOWN_TOKEN, token, known)
            sequence[:, :, s] = token
            if progress is not None:
                progress()
            if s + 1 < S1:
                logits = logits_for(token.unsqueeze(-1))
        out, _, _ = pattern.revert_pattern_sequence(sequence, UNKNOWN_TOKEN)
        return out

    def generate(self, text: TextStates | None = None, *, prompt: torch.Tensor | None = None,
                 chroma: torch.Tensor | None = None, num_samples: int | None = None, max_new_frames: int,
                 params: SamplingParams | None = None, temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, greedy: bool | None = None, cfg_scale: float | None = ...,
                 two_step_cfg: bool | None = None, fact_guidance: float | None = None,
                 negatives: Sequence[TextStates] = (), beat: torch.Tensor | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None, max_context: int | None = None,
                 extend_stride: int | None = None, include_prompt: bool = True,
                 callback: ProgressCallback | None = None) -> torch.Tensor:
        """Sample ``max_new_frames`` frames of codes, optionally continuing ``prompt``.

        Args:
            text: projected text states ``[B, L, dim]`` + mask (None: unconditional).
            prompt: codes ``[B, K, T0]`` to continue.
            chroma: melody ``[B, n_chroma, F]`` covering the whole output (prompt + new frames).
            num_samples: batch size when there is neither text, prompt nor chroma.
            params / temperature / top_k / top_p / greedy / cfg_scale / two_step_cfg / fact_guidance:
                see :class:`SamplingParams`; keyword values override ``params`` (defaults: top-k 250,
                temperature 1, CFG 3). ``cfg_scale=None`` or ``1`` disables guidance; with
                guidance the conditional and null rows run as one batch unless ``two_step_cfg``.
            negatives: text states ``[B, L', dim]`` to guide away from, with scale
                ``fact_guidance`` (ignored when it is 0); they run in the same batch.
            beat: beat clocks ``[B, 2]`` at the first frame of the output, prompt included
                (:meth:`beat_clock`; models with ``beat_rates`` only).
            seed / generator: source of randomness (a seed makes a fresh generator).
            max_context / extend_stride: sliding window in frames (defaults from the config).
                Past ``max_context`` frames, the last ``max_context - extend_stride`` frames are
                re-encoded as the prompt of the next window, as audiocraft does.
            include_prompt: return ``[prompt, new]`` (True) or only the new frames.
            callback: ``callback(done_steps, total_steps)`` after each decoding step.

        Returns:
            codes ``[B, K, T0 + max_new_frames]`` (or ``[B, K, max_new_frames]``) int64.
        """
        params = params or SamplingParams()
        overrides = {k: v for k, v in dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                                           two_step_cfg=two_step_cfg, fact_guidance=fact_guidance).items()
                     if v is not None}
        if cfg_scale is not ...:
            overrides["cfg_scale"] = cfg_scale
        if overrides:
            try:
                params = params.replace(**overrides)
            except ConfigError as e:
                raise InvalidInput(str(e)) from None
        _check_arg(max_new_frames, "max_new_frames", 0)
        max_context = self.config.max_context if max_context is None else max_context
        extend_stride = self.config.extend_stride if extend_stride is None else extend_stride
        _check_arg(max_context, "max_context", 2)
        _check_arg(extend_stride, "extend_stride", 1)
        if extend_stride >= max_context:
            raise InvalidInput(f"extend_stride ({extend_stride}) must be smaller than max_context ({max_context})")

        batch = None
        for name, value in (("text", text), ("prompt", prompt), ("chroma", chroma)):
            if value is None:
                continue
            rows = value.batch_size if isinstance(value, TextStates) else (
                value.shape[0] if isinstance(value, torch.Tensor) else None)
            if rows is None:
                raise InvalidInput(f"{name} must be a tensor, got {type(value).__name__}")
            if batch is not None and rows != batch:
                raise InvalidInput(f"{name} has {rows} rows, another input has {batch}")
            batch = rows
        if num_samples is not None:
            if batch is not None and num_samples != batch:
                raise InvalidInput(f"num_samples={num_samples} but the inputs have {batch} rows")
            _check_arg(num_samples, "num_samples", 1)
            batch = num_samples
        if batch is None:
            batch = 1
        if batch < 1:
            raise InvalidInput("cannot generate for an empty batch")
        text = self._check_text(text, batch)
        chroma = self._check_chroma(chroma, batch)
        negatives = list(negatives or ())
        if negatives and text is None:
            raise InvalidInput("negative conditions need a text condition to guide")
        negatives = [self._check_text(neg, batch) for neg in negatives]
        beat = self._check_beat(beat, batch)
        if prompt is not None:
            self._check_sequence(prompt, "prompt")
            if prompt.shape[2] and (int(prompt.min()) < 0 or int(prompt.max()) >= self.card):
                raise InvalidInput(f"prompt codes must be in [0, {self.card})")
            prompt = prompt.to(self.device)
        else:
            prompt = torch.zeros(batch, self.n_q, 0, dtype=torch.long, device=self.device)
        if generator is None:
            generator = torch.Generator(device=self.device)
            if seed is not None:
                generator.manual_seed(int(seed))
            else:
                generator.seed()
        elif seed is not None:
            generator.manual_seed(int(seed))

        T0 = prompt.shape[2]
        total = T0 + max_new_frames
        plan = self._window_plan(T0, total, max_context, extend_stride)
        total_steps = 0
        for ctx, length in plan:
            pattern = self.pattern_provider.get_pattern(length)
            total_steps += pattern.sequence_length - pattern.first_step_with_timestep(ctx)
        done = [0]

        def progress() -> None:
            done[0] += 1
            callback(done[0], total_steps)

        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                io = _DecodeWeights(self)
                codes = prompt.clone()
                for ctx, length in plan:
                    known = codes.shape[2]
                    window_chroma = chroma
                    if chroma is not None and len(plan) > 1:
                        frames = chroma.shape[2]
                        lo = ((known - ctx) * frames) // total
                        hi = max(lo + 1, -(-((known - ctx + length) * frames) // total))
                        window_chroma = chroma[:, :, lo:hi]
                    # the clock at the window's first frame
                    window_beat = None if beat is None else self._beat_after(beat, known - ctx)
                    window = self._generate_window(codes[:, :, known - ctx:], length, text, window_chroma, params,
                                                   generator, io, progress if callback is not None else None,
                                                   negatives, window_beat)
                    codes = torch.cat([codes, window[:, :, ctx:]], dim=2)
        finally:
            self.train(was_training)
        codes = codes.clone()
        return codes if include_prompt else codes[:, :, T0:]

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``config.json`` (class, versions, config) and ``model.safetensors`` to ``path``."""
        from .. import __version__
        from ..pretrained import state_for_saving, write_model_dir

        meta = {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "model_version": self.model_version,
            "tunecraft_version": __version__,
            "config": self.config.to_dict(),
        }
        return write_model_dir(path, meta, state_for_saving(self))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: torch.device | str | None = None) -> "CodecLM":
        """Load a directory written by :meth:`save_pretrained` (checks class, versions, names and shapes)."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a model directory (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
        cfg_file, meta = read_model_config(path)
        if meta["class"] != cls.__name__:
            raise CheckpointError(f"{path} does not hold a {cls.__name__} (config.json names {meta['class']!r})")
        return build_from_model_dir(path, meta, cfg_file, config_class=cls.config_class,
                                    model_version=cls.model_version, format_version=FORMAT_VERSION,
                                    build=cls, device=device)

    def load_state_checked(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load ``state`` after checking names and shapes (:class:`CheckpointError` on mismatch)."""
        load_state_checked(self, state, source)
