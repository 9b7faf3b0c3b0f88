"""FiLM "combine" layers and noise-level embeddings shared by the diffusion networks.

* :func:`sinusoidal_embedding` - transformer-style sin/cos features of a scalar (a diffusion time,
  a log-SNR, an angle), for ``[B]`` or per-frame ``[B, T]`` inputs.
* :class:`NoiseLevelEmbedding` - sinusoidal features followed by an MLP (DDPM / Imagen time embedding).
* :class:`FiLM` - feature-wise linear modulation (Perez et al. 2018): a conditioning vector yields a
  channel-wise scale and bias, ``h <- h * (1 + gamma(c)) + beta(c)``. This is the "combine layer" of
  Noise2Music's 1D Efficient U-Net (Fig. 1) and the FiLM after MeLoDy's fine-path RNN.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InvalidInput

__all__ = ["FiLM", "NoiseLevelEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(x: torch.Tensor, dim: int, *, scale: float = 1.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sin/cos features of ``scale * x``: ``[..., dim]`` for ``x [...]``.

    Frequencies ``f_k = max_period^(-k / (dim/2))``, ``k = 0..dim/2-1``; the output is
    ``[cos(scale x f), sin(scale x f)]`` (an odd ``dim`` gets one zero column).
    """
    if dim < 2:
        raise InvalidInput(f"sinusoidal embedding needs dim >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
    args = (x.float() * scale).unsqueeze(-1) * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class NoiseLevelEmbedding(nn.Module):
    """Noise level (``t``, log-SNR, ...) ``[B]`` or ``[B, T]`` -> embedding ``[B, dim]`` or ``[B, T, dim]``.

    ``MLP(sinusoidal(scale * x))`` with a SiLU between two linear layers. ``scale`` maps the
    expected input range onto about ``[0, 1000]`` (1000 for ``t`` in [0, 1]; 25 for log-SNR in [-20, 20]).
    """

    def __init__(self, dim: int, *, freq_dim: int = 256, scale: float = 1000.0, max_period: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.freq_dim = freq_dim
        self.scale = float(scale)
        self.max_period = float(max_period)
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        feats = sinusoidal_embedding(level, self.freq_dim, scale=self.scale, max_period=self.max_period)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, freq_dim={self.freq_dim}, scale={self.scale}"


class FiLM(nn.Module):
    """Channel-wise scale and bias from a conditioning vector: ``h * (1 + gamma) + beta``.

    ``(gamma, beta) = Linear(SiLU(c))``, zero-initialised so the layer starts as the identity.

    Args:
        cond_dim: width of the conditioning vector ``c``.
        channels: channels of the modulated features.
        channels_last: features are ``[B, T, C]`` instead of ``[B, C, T]``.

    Shapes (channels first): ``h [B, C, T]`` with ``c [B, cond_dim]`` (one vector per example) or
    ``c [B, T, cond_dim]`` (one vector per frame, e.g. MeLoDy's per-frame angle embedding).
    """

    def __init__(self, cond_dim: int, channels: int, *, channels_last: bool = False):
        super().__init__()
        self.cond_dim = cond_dim
        self.channels = channels
        self.channels_last = channels_last
        self.act = nn.SiLU()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-1] != self.cond_dim:
            raise InvalidInput(f"FiLM expects conditioning of width {self.cond_dim}, got {tuple(cond.shape)}")
        params = self.proj(self.act(cond.to(self.proj.weight.dtype))).to(h.dtype)  # [B, 2C] or [B, T, 2C]
        gamma, beta = params.chunk(2, dim=-1)
        if cond.dim() == 2:
            if self.channels_last:
                gamma, beta = gamma.unsqueeze(1), beta.unsqueeze(1)
            else:
                gamma, beta = gamma.unsqueeze(-1), beta.unsqueeze(-1)
        elif cond.dim() == 3:
            if not self.channels_last:
                gamma, beta = gamma.transpose(1, 2), beta.transpose(1, 2)
        else:
            raise InvalidInput(f"FiLM conditioning must be [B, D] or [B, T, D], got {tuple(cond.shape)}")
        return h * (1.0 + gamma) + beta

    def extra_repr(self) -> str:
        return f"cond_dim={self.cond_dim}, channels={self.channels}, channels_last={self.channels_last}"
