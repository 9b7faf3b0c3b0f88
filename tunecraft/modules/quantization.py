"""Residual vector quantisation (SoundStream Alg. 1, EnCodec) with EMA codebooks.

Quantiser ``q`` of ``N`` codewords ``e_1..e_N`` maps a vector to its nearest codeword in L2,
``q(x) = e_{argmin_i ||x - e_i||^2}``. Residual VQ with ``K`` stages::

    r_0 = x,   c_k = argmin_i ||r_{k-1} - e^k_i||^2,   r_k = r_{k-1} - e^k_{c_k},   x_hat = sum_k e^k_{c_k}

Training (van den Oord et al. 2017; Razavi et al. 2019; Zeghidour et al. 2021):

* codebooks are initialised by k-means on the first training batch;
* codewords follow exponential moving averages with decay ``gamma`` (0.99) and Laplace smoothing::

      N_i <- gamma N_i + (1 - gamma) n_i,   m_i <- gamma m_i + (1 - gamma) sum_{x: c(x)=i} x
      e_i  = m_i / (((N_i + eps) / (sum_j N_j + N eps)) sum_j N_j)

* codewords whose EMA usage ``N_i`` falls below ``threshold_ema_dead_code`` are re-seeded with
  random vectors of the current batch;
* commitment loss ``||r_{k-1} - sg(e^k_{c_k})||^2`` (mean over stages, times its weight);
* straight-through estimator on the sum: ``x_hat = x + sg(x_hat - x)``;
* quantiser dropout: each training batch uses ``K' ~ U{1..K}`` stages (variable bitrate).

At inference the nearest-neighbour search computes ``-(||x||^2 - 2 x e^T + ||e||^2)`` exactly as
audiocraft and transformers' ``EncodecResidualVectorQuantizer`` do, so converted checkpoints
give identical codes.

Under ``torch.distributed`` the k-means initialisation and dead-code replacement are broadcast
from rank 0 and the EMA statistics are summed over ranks, so every replica keeps the same codebook.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ..config import Config
from ..errors import ConfigError, InvalidInput


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _broadcast_buffers(module: nn.Module) -> None:
    if _distributed():
        for buf in module.buffers(recurse=False):
            dist.broadcast(buf.data, src=0)


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def sample_vectors(samples: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` rows of ``samples [N, D]``: without replacement when ``N >= num``, else with replacement."""
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device)
    return samples[idx]


def squared_distances(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """Negated squared L2 distances ``[N, C]`` between ``x [N, D]`` and codewords ``embed [C, D]``.

    Computed as ``-(||x||^2 - 2 x e^T + ||e||^2)``, the same expression (and float rounding) as
    EnCodec's reference implementations.
    """
    embed_t = embed.t()
    return -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed_t + embed_t.pow(2).sum(0, keepdim=True))


def nearest_codewords(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """``squared_distances(x, embed).max(-1).indices`` (``[N]`` int64) with fewer passes over
    the ``[N, C]`` matrix: the same float operations in the same order, done in place in the
    product ``2 x e^T`` (``-M + a == a - M`` exactly), and the first minimum of the un-negated
    distances (= the first maximum of the negated ones)."""
    with torch.no_grad():
        embed_t = embed.t()
        d = 2 * x @ embed_t
        d.neg_().add_(x.pow(2).sum(1, keepdim=True)).add_(embed_t.pow(2).sum(0, keepdim=True))
        return d.argmin(dim=-1)


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``samples [N, D]``; returns ``(means [C, D], counts [C])``.

    Initial means are random samples; empty clusters keep their previous mean.
    """
    dim = samples.shape[-1]
    means = sample_vectors(samples, num_clusters)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(max(1, num_iters)):
        buckets = squared_distances(samples, means).max(dim=-1).indices
        bins = torch.bincount(buckets, minlength=num_clusters)
        zero_mask = bins == 0
        new_means = samples.new_zeros(num_clusters, dim)
        new_means.scatter_add_(0, buckets[:, None].expand(-1, dim), samples)
        new_means = new_means / bins.masked_fill(zero_mask, 1)[:, None].to(samples.dtype)
        means = torch.where(zero_mask[:, None], means, new_means)
    return means, bins


def laplace_smoothing(x: torch.Tensor, n_categories: int, epsilon: float = 1e-5) -> torch.Tensor:
    """``(x + eps) / (sum(x) + n eps)``: usage probabilities that are never exactly zero."""
    return (x + epsilon) / (x.sum() + n_categories * epsilon)


class EuclideanCodebook(nn.Module):
    """One codebook ``embed [C, D]`` with EMA updates, k-means init and dead-code replacement.

    Buffers (all saved): ``inited [1]``, ``cluster_size [C]`` (EMA usage ``N_i``), ``embed [C, D]``,
    ``embed_avg [C, D]`` (EMA sums ``m_i``).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        threshold_ema_dead_code: float = 2.0,
    ):
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.decay = decay
        self.epsilon = epsilon
        self.threshold_ema_dead_code = threshold_ema_dead_code
        if kmeans_init:
            embed = torch.zeros(codebook_size, dim)
        else:
            embed = torch.empty(codebook_size, dim)
            nn.init.kaiming_uniform_(embed)
        #: When False, training-mode passes leave the codebook untouched (see
        #: :meth:`ResidualVectorQuantizer.frozen_codebooks`).
        self.update_codebook = True
        self.register_buffer("inited", torch.tensor([float(not kmeans_init)]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    # ---- shipping: the EMA sums are training state, rebuilt on load ---------------------------

    def prune_export_state(self, state: dict, prefix: str, half: bool) -> None:
        """Drop ``embed_avg`` from an exported ``state`` (it equals ``embed * cluster_size`` up to
        the Laplace smoothing) and, when ``half``, store the codewords in float16."""
        state.pop(prefix + "embed_avg", None)
        if half and state[prefix + "embed"].dtype == torch.float32:
            state[prefix + "embed"] = state[prefix + "embed"].to(torch.float16)

    def restore_export_state(self, state: dict, prefix: str) -> None:
        """Inverse of :meth:`prune_export_state`: rebuild ``embed_avg = embed * cluster_size`` so
        that fine-tuning a shipped codec continues its EMA from consistent statistics."""
        if prefix + "embed_avg" not in state and prefix + "embed" in state and prefix + "cluster_size" in state:
            embed = state[prefix + "embed"].float()
            state[prefix + "embed_avg"] = embed * state[prefix + "cluster_size"].float()[:, None]

    @torch.no_grad()
    def init_embed_(self, data: torch.Tensor) -> None:
        """k-means initialisation from ``data [N, D]`` (first training batch only)."""
        if bool(self.inited.item()):
            return
        embed, cluster_size = kmeans(data, self.codebook_size, self.kmeans_iters)
        cluster_size = cluster_size.to(self.cluster_size.dtype)
        self.embed.copy_(embed)
        # EMA state consistent with the means: m_i = N_i e_i (so the next update keeps e_i in place)
        self.embed_avg.copy_(embed * cluster_size[:, None])
        self.cluster_size.copy_(cluster_size)
        self.inited.fill_(1.0)
        _broadcast_buffers(self)

    @torch.no_grad()
    def expire_codes_(self, samples: torch.Tensor) -> int:
        """Re-seed codewords with EMA usage below the threshold from ``samples [N, D]``.

        Returns the number of replaced codewords.
        """
        if self.threshold_ema_dead_code <= 0:
            return 0
        expired = self.cluster_size < self.threshold_ema_dead_code
        n_expired = int(expired.sum().item())
        if n_expired == 0:
            return 0
        replacement = sample_vectors(samples, self.codebook_size)
        self.embed.copy_(torch.where(expired[:, None], replacement, self.embed))
        # Keep the EMA state consistent with the new codewords (m_i = N_i e_i, with N_i reset to
        # the threshold); otherwise the next update, e_i = m_i / N_i, restores the dead codeword.
        reset = torch.full_like(self.cluster_size, float(self.threshold_ema_dead_code))
        self.cluster_size.copy_(torch.where(expired, reset, self.cluster_size))
        self.embed_avg.copy_(torch.where(expired[:, None], replacement * reset[:, None], self.embed_avg))
        _broadcast_buffers(self)
        return n_expired

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest codeword index for each row of ``x [N, D]`` -> ``[N]`` int64."""
        return nearest_codewords(x, self.embed)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codewords for integer ``codes [...]`` -> ``[..., D]``."""
        return F.embedding(codes, self.embed)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``x [N, D]`` -> ``(quantised [N, D], codes [N], n_replaced)``; updates EMA when training."""
        update = self.training and self.update_codebook
        if update:
            self.init_embed_(x.detach())
        codes = self.quantize(x.detach())
        quantized = self.dequantize(codes)
        n_replaced = 0
        if update:
            with torch.no_grad():
                xd = x.detach()
                n_replaced = self.expire_codes_(xd)
                onehot = F.one_hot(codes, self.codebook_size).to(xd.dtype)
                counts = _all_reduce_sum(onehot.sum(0))
                embed_sum = _all_reduce_sum(onehot.t() @ xd)
                self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                self.embed_avg.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
                smoothed = laplace_smoothing(self.cluster_size, self.codebook_size, self.epsilon) * self.cluster_size.sum()
                self.embed.copy_(self.embed_avg / smoothed[:, None])
        return quantized, codes, n_replaced


class VectorQuantizer(nn.Module):
    """One VQ stage on ``[B, D, T]``, with optional projection to a smaller codebook dimension."""

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        kmeans_init: bool = True,
        kmeans_iters: int = 50,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        threshold_ema_dead_code: float = 2.0,
    ):
        super().__init__()
        cdim = codebook_dim or dim
        self.project_in: nn.Module = nn.Linear(dim, cdim) if cdim != dim else nn.Identity()
        self.project_out: nn.Module = nn.Linear(cdim, dim) if cdim != dim else nn.Identity()
        self.codebook = EuclideanCodebook(cdim, codebook_size, kmeans_init, kmeans_iters, decay, epsilon,
                                          threshold_ema_dead_code)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, D, T]`` -> codes ``[B, T]``."""
        h = self.project_in(x.transpose(1, 2))
        shape = h.shape
        return self.codebook.quantize(h.reshape(-1, shape[-1])).view(*shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, T]`` -> ``[B, D, T]``."""
        return self.project_out(self.codebook.dequantize(codes)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """``x [B, D, T]`` -> ``(quantised [B, D, T], codes [B, T], commitment loss, n_replaced)``.

        The quantised output carries no gradient (the residual VQ applies the straight-through
        estimator on the sum); the commitment loss ``mse(h, sg(q(h)))`` pulls the encoder output
        toward its codeword in the codebook space.
        """
        h = self.project_in(x.transpose(1, 2))
        shape = h.shape
        flat = h.reshape(-1, shape[-1])
        q, codes, n_replaced = self.codebook(flat)
        commit = F.mse_loss(flat, q.detach()) if self.training else flat.new_zeros(())
        quantized = self.project_out(q.view(shape)).transpose(1, 2)
        return quantized, codes.view(*shape[:-1]), commit, n_replaced


@dataclass
class RVQConfig(Config):
    """Residual VQ settings. Defaults: MusicGen's EnCodec (4 codebooks x 2048, D=128)."""

    dimension: int = 128
    n_q: int = 4
    bins: int = 2048
    codebook_dim: int | None = None
    decay: float = 0.99
    epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 50
    threshold_ema_dead_code: float = 2.0
    commitment_weight: float = 1.0
    q_dropout: bool = False

    def __post_init__(self) -> None:
        if self.n_q < 1 or self.bins < 2 or self.dimension < 1:
            raise ConfigError(f"rvq: need n_q >= 1, bins >= 2, dimension >= 1 (got {self.n_q}, {self.bins}, {self.dimension})")
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"rvq.decay must be in [0, 1), got {self.decay}")


@dataclass
class QuantizerOutput:
    """Result of a residual-VQ forward pass.

    ``quantized [B, D, T]`` (straight-through in training), ``codes [B, K', T]`` int64 for the
    ``K'`` stages used, ``penalty``: weighted commitment loss (scalar), ``num_codebooks``: ``K'``.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    penalty: torch.Tensor
    num_codebooks: int
    metrics: dict = field(default_factory=dict)


class ResidualVectorQuantizer(nn.Module):
    """Residual VQ over ``[B, D, T]`` latents: ``encode -> codes [B, K, T]``, ``decode -> [B, D, T]``."""

    def __init__(self, config: RVQConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([
            VectorQuantizer(config.dimension, config.bins, config.codebook_dim, config.kmeans_init,
                            config.kmeans_iters, config.decay, config.epsilon, config.threshold_ema_dead_code)
            for _ in range(config.n_q)
        ])
        self._num_codebooks = config.n_q

    @property
    def dimension(self) -> int:
        return self.config.dimension

    @property
    def cardinality(self) -> int:
        return self.config.bins

    @property
    def total_codebooks(self) -> int:
        return self.config.n_q

    @property
    def num_codebooks(self) -> int:
        """Number of stages used by :meth:`encode` (and at evaluation by :meth:`forward`)."""
        return self._num_codebooks

    def set_num_codebooks(self, n: int) -> None:
        if isinstance(n, bool) or int(n) != n or not 1 <= n <= self.total_codebooks:
            raise InvalidInput(f"number of codebooks must be an integer in [1, {self.total_codebooks}], got {n!r}")
        self._num_codebooks = int(n)

    @contextlib.contextmanager
    def frozen_codebooks(self) -> Iterator[None]:
        """Within this context, training passes neither initialise, update nor re-seed codebooks
        (e.g. the discriminator step of a GAN, which reconstructs audio a second time)."""
        books = [layer.codebook for layer in self.layers]
        previous = [b.update_codebook for b in books]
        for b in books:
            b.update_codebook = False
        try:
            yield
        finally:
            for b, prev in zip(books, previous):
                b.update_codebook = prev

    def bandwidth_per_codebook(self, frame_rate: float) -> float:
        """kbit/s carried by one codebook at ``frame_rate`` frames per second."""
        return math.log2(self.cardinality) * frame_rate / 1000.0

    def num_codebooks_for_bandwidth(self, bandwidth_kbps: float, frame_rate: float) -> int:
        """Largest number of codebooks whose bitrate does not exceed ``bandwidth_kbps`` (at least 1)."""
        if isinstance(bandwidth_kbps, bool) or not isinstance(bandwidth_kbps, (int, float)) or not bandwidth_kbps > 0:
            raise InvalidInput(f"bandwidth must be a positive number of kbit/s, got {bandwidth_kbps!r}")
        n = int(math.floor(bandwidth_kbps / self.bandwidth_per_codebook(frame_rate) + 1e-9))
        return max(1, min(self.total_codebooks, n))

    def forward(self, x: torch.Tensor) -> QuantizerOutput:
        """Quantise ``x [B, D, T]``; in training, updates codebooks and applies quantiser dropout."""
        n_q = self._num_codebooks
        if self.training and self.config.q_dropout:
            n_q = int(torch.randint(1, self.total_codebooks + 1, (1,)).item())
            if _distributed():
                t = torch.tensor([n_q], device=x.device)
                dist.broadcast(t, src=0)
                n_q = int(t.item())
        residual = x
        quantized_out = torch.zeros_like(x)
        codes, losses, replaced = [], [], 0
        for layer in self.layers[:n_q]:
            q, c, commit, n_rep = layer(residual)
            q = q.detach()
            residual = residual - q
            quantized_out = quantized_out + q
            codes.append(c)
            losses.append(commit)
            replaced += n_rep
        if self.training:
            quantized_out = x + (quantized_out - x).detach()
            penalty = torch.stack(losses).mean() * self.config.commitment_weight
        else:
            penalty = x.new_zeros(())
        return QuantizerOutput(quantized_out, torch.stack(codes, dim=1), penalty, n_q,
                               {"replaced_codes": float(replaced)})

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """``x [B, D, T]`` -> codes ``[B, K, T]`` int64 with ``K = n_q or num_codebooks``."""
        n_q = self._num_codebooks if n_q is None else n_q
        residual = x
        codes = []
        for layer in self.layers[:n_q]:
            c = layer.encode(residual)
            residual = residual - layer.decode(c)
            codes.append(c)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, K, T]`` (``K <= total_codebooks``) -> ``sum_k e^k_{c_k}`` ``[B, D, T]``."""
        if codes.shape[1] > self.total_codebooks:
            raise InvalidInput(f"got {codes.shape[1]} codebooks, the quantizer has {self.total_codebooks}")
        out = torch.zeros((), device=codes.device)
        for k in range(codes.shape[1]):
            out = out + self.layers[k].decode(codes[:, k])
        return out
