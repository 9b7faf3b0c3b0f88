"""Pre-norm transformer decoder with causal self-attention, optional cross-attention and a KV cache.

Each layer (MusicGen section 2.4, audiocraft's ``StreamingTransformerLayer`` with ``norm_first``)::

    x = x + SelfAttn(LN_1(x))              # causal
    x = x + CrossAttn(LN_cross(x), C)      # if the layer has cross-attention and C is given
    x = x + W_2 act(W_1 LN_2(x))           # feed-forward, GELU by default

The input gets ``positional_scale * sin_embedding(position)`` (``positional="sin"``) and/or
rotary embeddings in self-attention (``"rope"``, ``"sin_rope"``). Positions continue from
``cache.length`` when a :class:`~tunecraft.modules.attention.KVCache` is given, so feeding a
sequence in pieces through the cache gives the same outputs as one full forward.

Module names follow audiocraft (``self_attn``, ``cross_attention``, ``norm1``, ``norm_cross``,
``norm2``, ``linear1``, ``linear2``) so official checkpoints map one to one.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError, InvalidInput
from .attention import CrossAttention, CrossContext, KVCache, SelfAttention, linear
from .positional import RotaryEmbedding, SinusoidalTable

__all__ = ["ACTIVATIONS", "POSITIONAL", "TransformerLayer", "Transformer", "DecodePlan", "KVCache", "CrossContext"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}

POSITIONAL = ("sin", "rope", "sin_rope", "none")


class TransformerLayer(nn.Module):
    """One pre-norm decoder layer: self-attention, optional cross-attention, feed-forward."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, *, cross_attention: bool = False,
                 bias_attn: bool = False, bias_ff: bool = False, activation: str = "gelu",
                 dropout: float = 0.0, attention_dropout: float = 0.0, norm_eps: float = 1e-5) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")
        self.activation_name = activation
        self.activation = ACTIVATIONS[activation]
        self.dropout = float(dropout)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.self_attn = SelfAttention(dim, num_heads, bias=bias_attn, dropout=attention_dropout)
        if cross_attention:
            self.norm_cross = nn.LayerNorm(dim, eps=norm_eps)
            self.cross_attention = CrossAttention(dim, num_heads, bias=bias_attn, dropout=attention_dropout)
        else:
            self.norm_cross = None
            self.cross_attention = None
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.linear1 = nn.Linear(dim, ffn_dim, bias=bias_ff)
        self.linear2 = nn.Linear(ffn_dim, dim, bias=bias_ff)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, training=True) if self.training and self.dropout > 0 else x

    def forward(self, x: torch.Tensor, cross: CrossContext | None = None, cache: KVCache | None = None,
                layer: int = 0, rope: RotaryEmbedding | None = None) -> torch.Tensor:
        """``x [B, T, D] -> [B, T, D]``."""
        x = x + self._drop(self.self_attn(self.norm1(x), cache=cache, layer=layer, rope=rope))
        if self.cross_attention is not None and cross is not None:
            x = x + self._drop(self.cross_attention(self.norm_cross(x), cross, layer))
        h = self.activation(linear(self.norm2(x), self.linear1.weight, self.linear1.bias))
        return x + self._drop(linear(self._drop(h), self.linear2.weight, self.linear2.bias))


class Transformer(nn.Module):
    """A stack of :class:`TransformerLayer` with positional encodings, layer-drop and a KV cache.

    Args:
        dim, num_heads, num_layers: width, heads, depth (MusicGen 300M: 1024, 16, 24).
        ffn_dim: feed-forward width (default ``4 * dim``).
        cross_attention: give every layer a cross-attention block.
        positional: ``"sin"`` (MusicGen), ``"rope"``, ``"sin_rope"`` or ``"none"``.
        positional_scale: factor on the sinusoidal embedding.
        layer_drop: probability of skipping each layer in training (LayerDrop).
        checkpointing: recompute activations in the backward pass to save memory.
    """

    def __init__(self, dim: int, num_heads: int, num_layers: int, ffn_dim: int | None = None, *,
                 cross_attention: bool = False, positional: str = "sin", positional_scale: float = 1.0,
                 max_period: float = 10000.0, bias_attn: bool = False, bias_ff: bool = False,
                 activation: str = "gelu", dropout: float = 0.0, attention_dropout: float = 0.0,
                 layer_drop: float = 0.0, norm_eps: float = 1e-5, checkpointing: bool = False) -> None:
        super().__init__()
        if positional not in POSITIONAL:
            raise ConfigError(f"unknown positional encoding '{positional}' (known: {', '.join(POSITIONAL)})")
        if dim < 1 or num_heads < 1 or num_layers < 0 or dim % num_heads:
            raise ConfigError(f"invalid transformer size: dim={dim}, heads={num_heads}, layers={num_layers}")
        if not 0.0 <= layer_drop < 1.0:
            raise ConfigError(f"layer_drop must be in [0, 1), got {layer_drop}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.positional = positional
        self.positional_scale = float(positional_scale)
        self.layer_drop = float(layer_drop)
        self.checkpointing = bool(checkpointing)
        self.has_cross_attention = bool(cross_attention)
        self.sin = SinusoidalTable(dim, max_period) if positional in ("sin", "sin_rope") else None
        self.rope = RotaryEmbedding(self.head_dim, max_period) if positional in ("rope", "sin_rope") else None
        self.layers = nn.ModuleList([
            TransformerLayer(dim, num_heads, ffn_dim or 4 * dim, cross_attention=cross_attention, bias_attn=bias_attn,
                             bias_ff=bias_ff, activation=activation, dropout=dropout,
                             attention_dropout=attention_dropout, norm_eps=norm_eps)
            for _ in range(num_layers)
        ])

    # ------------------------------------------------------------------ caches
    def new_cache(self, batch_size: int, capacity: int, *, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> KVCache:
        """A :class:`KVCache` for ``batch_size`` rows and up to ``capacity`` positions."""
        ref = next(self.parameters(), None)
        dtype = dtype or (ref.dtype if ref is not None else torch.float32)
        device = device or (ref.device if ref is not None else "cpu")
        return KVCache(len(self.layers), batch_size, self.num_heads, self.head_dim, capacity, dtype=dtype, device=device)

    def cross_context(self, states: torch.Tensor, mask: torch.Tensor, precompute: bool = False) -> CrossContext:
        """Wrap memory ``states [B, L, D]`` with ``mask [B, L]``; ``precompute`` projects every layer's K/V now."""
        if states.shape[-1] != self.dim:
            raise InvalidInput(f"cross-attention states have width {states.shape[-1]}, the transformer {self.dim}")
        context = CrossContext.from_states(states, mask)
        if precompute:
            self.precompute_cross(context)
        return context

    def decode_plan(self) -> "DecodePlan":
        """A :class:`DecodePlan` over this transformer's current parameters (for incremental decoding)."""
        return DecodePlan(self)

    def precompute_cross(self, context: CrossContext) -> CrossContext:
        """Project the memory once for all layers (for decoding: the memory does not change)."""
        if self.has_cross_attention:
            context.kv = [layer.cross_attention.memory_kv(context.states) for layer in self.layers]
        return context

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, cross: CrossContext | None = None, cache: KVCache | None = None) -> torch.Tensor:
        """``x [B, T, D]`` -> ``[B, T, D]``; with ``cache``, positions start at ``cache.length``."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise InvalidInput(f"transformer input must be [B, T, {self.dim}], got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        if cache is not None and cache.batch_size != B:
            raise InvalidInput(f"KV cache holds {cache.batch_size} rows, the input {B}")
        if cross is not None and cross.batch_size != B:
            raise InvalidInput(f"cross-attention memory has {cross.batch_size} rows, the input {B}")
        start = cache.length if cache is not None else 0
        if self.sin is not None:
            x = x + self.positional_scale * self.sin(start, T, x.dtype)
        for i, layer in enumerate(self.layers):
            if self.training and self.layer_drop > 0 and float(torch.rand(())) < self.layer_drop:
                continue
            if self.checkpointing and self.training and torch.is_grad_enabled() and cache is None:
                x = checkpoint(layer, x, cross, None, i, self.rope, use_reentrant=False)
            else:
                x = layer(x, cross, cache, i, self.rope)
        if cache is not None:
            cache.advance(T)
        return x


class DecodePlan:
    """The math of :meth:`Transformer.forward` in eval mode with a KV cache, without module dispatch.

    Decoding runs one position per call through every layer; at that size the per-call cost
    of ``nn.Module`` (hooks, attribute lookups, wrappers) is a sizeable part of a step. A plan
    gathers each layer's parameters once (references, not copies: in-place updates are seen)
    and runs the same operations directly. Build a new plan after replacing parameters.
    No dropout or layer-drop: use it for inference only.
    """

    def __init__(self, transformer: Transformer) -> None:
        self.dim = transformer.dim
        self.num_heads = transformer.num_heads
        self.head_dim = transformer.head_dim
        self.sin = transformer.sin
        self.positional_scale = transformer.positional_scale
        self.rope = transformer.rope
        self.layers = []
        D = self.dim
        for layer in transformer.layers:
            sa, ca = layer.self_attn, layer.cross_attention
            cross = None
            if ca is not None:
                b = ca.in_proj.bias
                cross = (layer.norm_cross.weight, layer.norm_cross.bias, layer.norm_cross.eps, ca.in_proj.weight[:D],
                         None if b is None else b[:D], ca.out_proj.weight, ca.out_proj.bias)
            self.layers.append((
                layer.norm1.weight, layer.norm1.bias, layer.norm1.eps, sa.in_proj.weight, sa.in_proj.bias,
                sa.out_proj.weight, sa.out_proj.bias, cross, layer.norm2.weight, layer.norm2.bias, layer.norm2.eps,
                layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias, layer.activation,
            ))

    def __call__(self, x: torch.Tensor, cross: CrossContext | None, cache: KVCache) -> torch.Tensor:
        """``x [B, T, D]`` at positions ``cache.length ...`` -> ``[B, T, D]``; appends to ``cache``."""
        B, T, D = x.shape
        H, hd = self.num_heads, self.head_dim
        start = cache.length
        if self.sin is not None:
            x = x + self.positional_scale * self.sin(start, T, x.dtype)
        mask, causal = None, False
        if T > 1:
            if start == 0:
                causal = True
            else:
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
        if cross is not None and cross.kv is None:
            raise InvalidInput("decoding needs the cross-attention keys/values precomputed (precompute=True)")
        shape = (D,)
        for i, (n1w, n1b, n1e, qkv_w, qkv_b, o_w, o_b, xattn, n2w, n2b, n2e, w1, b1, w2, b2, act) in enumerate(self.layers):
            h = F.layer_norm(x, shape, n1w, n1b, n1e)
            q, k, v = linear(h, qkv_w, qkv_b).view(B, T, 3, H, hd).permute(2, 0, 3, 1, 4).unbind(0)
            if self.rope is not None:
                q, k = self.rope(q, k, start)
            k, v = cache.update(i, k, v)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
            x = x + linear(a.transpose(1, 2).reshape(B, T, D), o_w, o_b)
            if xattn is not None and cross is not None:
                ncw, ncb, nce, cq_w, cq_b, co_w, co_b = xattn
                h = F.layer_norm(x, shape, ncw, ncb, nce)
                q = linear(h, cq_w, cq_b).view(B, T, H, hd).transpose(1, 2)
                ck, cv = cross.kv[i]
                a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=cross.attn_mask)
                o = linear(a.transpose(1, 2).reshape(B, T, D), co_w, co_b)
                x = x + (o * cross.keep if cross.keep is not None else o)
            h = F.layer_norm(x, shape, n2w, n2b, n2e)
            x = x + linear(act(linear(h, w1, b1)), w2, b2)
        cache.advance(T)
        return x
