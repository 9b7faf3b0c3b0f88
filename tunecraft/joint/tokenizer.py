"""MuLan tokens: residual vector quantisation of joint music-text embeddings.

MusicLM (and MeLoDy, which follows it) conditions its language models on *MuLan tokens*: the
``d``-dimensional MuLan embedding of the audio (in training) or of the text prompt (at
inference) is quantised by a separately learned residual VQ with ``K`` stages of ``N`` codewords
(``K = 12``, ``N = 1024`` in the papers), and the ``K`` indices are prefixed to the token stream.
Because audio and text share the embedding space, one tokenizer serves both.

Quantisation (stage ``k`` with codebook ``E^k = {e^k_1..e^k_N}``)::

    r_0 = x,   c_k = argmin_i ||r_{k-1} - e^k_i||^2,   r_k = r_{k-1} - e^k_{c_k},   x_hat = sum_k e^k_{c_k}

Fitting (:meth:`MuLanTokenizer.fit`): stage by stage, Lloyd's k-means on the residuals of the
previous stages (``kmeans_iters`` iterations), then ``ema_epochs`` passes of EMA codebook updates
with dead-code re-seeding (:class:`~tunecraft.modules.quantization.ResidualVectorQuantizer` in
training mode). The squared reconstruction error ``mean ||x - x_hat||^2`` cannot increase when a
stage is added after k-means (a stage can always pick the codeword nearest to zero residual
movement), which :meth:`MuLanTokenizer.reconstruction_error` reports per number of stages.

CPU default: 12 stages as in the paper but 128 instead of 1024 codewords, because the procedural
corpus has about 1.8k training clips (k-means needs several vectors per codeword).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError, InvalidInput
from ..modules.quantization import ResidualVectorQuantizer, RVQConfig

__all__ = ["MuLanTokenizer", "MuLanTokenizerConfig"]


@dataclasses.dataclass
class MuLanTokenizerConfig(Config):
    """RVQ over ``dim``-d embeddings: ``n_q`` stages of ``bins`` codewords (paper: 12 x 1024).

    ``kmeans_iters``: Lloyd iterations per stage; ``ema_epochs``: EMA refinement passes over the
    fitting set after k-means (0 keeps the k-means codebooks); ``decay``: EMA decay;
    ``threshold_ema_dead_code``: EMA usage below which a codeword is re-seeded during refinement.
    """

    dim: int = 128
    n_q: int = 12
    bins: int = 128
    kmeans_iters: int = 50
    ema_epochs: int = 2
    decay: float = 0.95
    threshold_ema_dead_code: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_q < 1 or self.bins < 2:
            raise ConfigError(f"tokenizer needs dim >= 1, n_q >= 1, bins >= 2 "
                              f"(got {self.dim}, {self.n_q}, {self.bins})")
        if self.kmeans_iters < 1 or self.ema_epochs < 0:
            raise ConfigError("tokenizer kmeans_iters must be >= 1 and ema_epochs >= 0")
        if not 0.0 < self.decay < 1.0:
            raise ConfigError(f"tokenizer decay must be in (0, 1), got {self.decay}")
        if self.threshold_ema_dead_code < 0:
            raise ConfigError("tokenizer threshold_ema_dead_code must be >= 0")

    def rvq_config(self) -> RVQConfig:
        return RVQConfig(dimension=self.dim, n_q=self.n_q, bins=self.bins, kmeans_init=True,
                         kmeans_iters=self.kmeans_iters, decay=self.decay,
                         threshold_ema_dead_code=self.threshold_ema_dead_code, commitment_weight=0.0,
                         q_dropout=False)


class MuLanTokenizer(nn.Module):
    """Residual VQ tokenizer of embeddings ``[B, dim]`` -> codes ``[B, n_q]`` in ``[0, bins)``.

    All state lives in buffers (``rvq.layers.k.codebook.*``), so it saves and loads with the
    joint model's ``state_dict``. :attr:`fitted` is False until :meth:`fit` has run (or fitted
    codebooks were loaded).
    """

    def __init__(self, config: Optional[MuLanTokenizerConfig] = None):
        super().__init__()
        self.config = config or MuLanTokenizerConfig()
        self.rvq = ResidualVectorQuantizer(self.config.rvq_config())
        self.rvq.eval()

    # ---- properties -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def num_codebooks(self) -> int:
        return self.config.n_q

    @property
    def cardinality(self) -> int:
        return self.config.bins

    @property
    def fitted(self) -> bool:
        return all(bool(layer.codebook.inited.item()) for layer in self.rvq.layers)

    def train(self, mode: bool = True) -> "MuLanTokenizer":
        """The codebooks change only inside :meth:`fit`: the module always stays in eval mode."""
        return super().train(False)

    # ---- checks -----------------------------------------------------------------------
    def _check_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise InvalidInput(f"expected embeddings [B, {self.dim}], got {shape}")
        if not torch.isfinite(x).all():
            raise InvalidInput("embeddings contain NaN or infinite values")
        return x.float()

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise InvalidInput("the MuLan tokenizer has not been fitted (call fit() on corpus embeddings first)")

    def _check_n_q(self, n_q: Optional[int]) -> int:
        n = self.num_codebooks if n_q is None else n_q
        if isinstance(n, bool) or int(n) != n or not 1 <= n <= self.num_codebooks:
            raise InvalidInput(f"n_q must be an integer in [1, {self.num_codebooks}], got {n_q!r}")
        return int(n)

    # ---- fitting ----------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor, seed: int = 0, batch_size: int = 256) -> List[float]:
        """Fit the codebooks on ``embeddings [N, dim]`` (``N >= bins``); returns the mean squared
        reconstruction error after 1..n_q stages (see :meth:`reconstruction_error`).

        Deterministic for a given ``seed`` (the global RNG is forked, not disturbed). Refitting
        replaces earlier codebooks.
        """
        x = self._check_embeddings(embeddings)
        if x.shape[0] < self.cardinality:
            raise InvalidInput(f"fitting {self.cardinality} codewords needs at least that many embeddings, "
                               f"got {x.shape[0]}")
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
        fresh = ResidualVectorQuantizer(self.config.rvq_config()).to(x.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            residual = x
            for layer in fresh.layers:  # k-means, stage by stage on the residuals
                layer.codebook.init_embed_(residual)
                residual = residual - layer.codebook.dequantize(layer.codebook.quantize(residual))
            fresh.train()
            for _ in range(self.config.ema_epochs):  # EMA refinement
                order = torch.randperm(x.shape[0], device=x.device)
                for start in range(0, x.shape[0], batch_size):
                    chunk = x[order[start:start + batch_size]]
                    fresh(chunk[:, :, None])
            fresh.eval()
        self.rvq.load_state_dict(fresh.state_dict())
        return self.reconstruction_error(x)

    # ---- tokenisation -----------------------------------------------------------------
    @torch.no_grad()
    def encode(self, embeddings: torch.Tensor, n_q: Optional[int] = None) -> torch.Tensor:
        """``embeddings [B, dim]`` -> codes ``[B, K]`` int64 (``K = n_q`` or all stages)."""
        self._check_fitted()
        x = self._check_embeddings(embeddings)
        return self.rvq.encode(x[:, :, None], n_q=self._check_n_q(n_q))[:, :, 0]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, K]`` (``K <= n_q``) -> ``x_hat = sum_k e^k_{c_k}``, ``[B, dim]``."""
        self._check_fitted()
        if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.dtype not in (torch.int64, torch.int32):
            raise InvalidInput(f"expected integer codes [B, K], got {getattr(codes, 'shape', type(codes))}")
        self._check_n_q(codes.shape[1])
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cardinality):
            raise InvalidInput(f"codes must lie in [0, {self.cardinality})")
        return self.rvq.decode(codes.long()[:, :, None])[:, :, 0]

    @torch.no_grad()
    def reconstruction_error(self, embeddings: torch.Tensor) -> List[float]:
        """``[mean_b ||x_b - x_hat_b^{(k)}||^2 for k = 1..n_q]``: the error with the first ``k`` stages."""
        self._check_fitted()
        x = self._check_embeddings(embeddings)
        residual = x
        errors = []
        for layer in self.rvq.layers:
            residual = residual - layer.codebook.dequantize(layer.codebook.quantize(residual))
            errors.append(float(residual.pow(2).sum(1).mean()))
        return errors

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_q={self.num_codebooks}, bins={self.cardinality}, fitted={self.fitted}"
