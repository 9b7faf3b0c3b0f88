"""Continuous bottlenecks: the KL (VAE) bottleneck of MeLoDy's audio VAE-GAN, the masked
noise-robust bottleneck of JEN-1's autoencoder, and JEN-1's incremental SVD whitening.

Shapes: encoder features ``h [B, H, T]``, latents ``z [B, D, T]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from ..config import Config
from ..errors import ConfigError, InvalidInput


@dataclass
class BottleneckOutput:
    """``latents [B, D, T]`` fed to the decoder, the weighted ``penalty`` (scalar) and diagnostics."""

    latents: torch.Tensor
    penalty: torch.Tensor
    metrics: dict = field(default_factory=dict)
    mask: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------
# KL bottleneck (MeLoDy audio VAE-GAN)
# --------------------------------------------------------------------------------------------


@dataclass
class KLBottleneckConfig(Config):
    """KL-regularised bottleneck.

    ``kl_weight`` 5e-3 is MeLoDy's. ``logvar_min``/``logvar_max`` clamp the predicted log-variance
    (the LDM autoencoder's ``[-30, 20]``) so ``exp`` never overflows. ``latent_clip`` bounds the
    *scaled* latents given to the decoder (diffusion samples can overshoot); ``None`` disables it.
    The MeLoDy review does not give numbers for the scaling/clipping; these are LDM's conventions.
    """

    latent_dim: int = 16
    kl_weight: float = 5e-3
    logvar_min: float = -30.0
    logvar_max: float = 20.0
    latent_clip: float | None = 5.0

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.logvar_min >= self.logvar_max:
            raise ConfigError("logvar_min must be below logvar_max")
        if self.latent_clip is not None and not self.latent_clip > 0:
            raise ConfigError(f"latent_clip must be positive or null, got {self.latent_clip}")


class KLBottleneck(nn.Module):
    """Diagonal-Gaussian posterior ``q(z|x) = N(mu, diag(sigma^2))`` with a KL penalty.

    ``h [B, H, T] --1x1 conv--> [mu, log sigma^2] [B, 2D, T]``; training samples
    ``z = mu + sigma * eps`` (reparameterisation), ``eps ~ N(0, I)``, with penalty::

        KL(q || N(0, I)) = 1/2 sum_d (mu_d^2 + sigma_d^2 - 1 - log sigma_d^2)

    summed over channels and averaged over batch and frames, times ``kl_weight``.

    Latent scaling (LDM): diffusion models see ``s * z`` with ``s = 1 / std(z)`` estimated on
    data by :meth:`fit_scale` and stored in the ``latent_scale`` buffer; :meth:`scale` /
    :meth:`unscale` apply it, and :meth:`unscale` first clips to ``[-latent_clip, latent_clip]``.
    """

    def __init__(self, in_dim: int, config: KLBottleneckConfig):
        super().__init__()
        self.config = config
        self.to_moments = nn.Conv1d(in_dim, 2 * config.latent_dim, 1)
        self.from_latent = nn.Conv1d(config.latent_dim, in_dim, 1)
        self.register_buffer("latent_scale", torch.ones(()))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def moments(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``h [B, H, T]`` -> ``(mu, logvar)``, each ``[B, D, T]``, logvar clamped."""
        mean, logvar = self.to_moments(h).chunk(2, dim=1)
        return mean, logvar.clamp(self.config.logvar_min, self.config.logvar_max)

    def encode(self, h: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Unscaled latents ``[B, D, T]``: the posterior mean, or a sample when ``sample=True``."""
        mean, logvar = self.moments(h)
        if not sample:
            return mean
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)

    def decode_input(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents ``[B, D, T]`` -> decoder input ``[B, H, T]``."""
        return self.from_latent(z)

    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        mean, logvar = self.moments(h)
        if self.training:
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        else:
            z = mean
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()
        return BottleneckOutput(z, kl * self.config.kl_weight, {"kl": float(kl.detach())})

    @torch.no_grad()
    def fit_scale(self, latents: torch.Tensor) -> float:
        """Set ``latent_scale = 1 / std(latents)`` from unscaled latents ``[B, D, T]``; returns it."""
        std = latents.detach().float().std()
        if not torch.isfinite(std) or std <= 0:
            raise InvalidInput("cannot fit the latent scale: latents are constant or not finite")
        self.latent_scale.fill_(float(1.0 / std))
        return float(self.latent_scale)

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled -> diffusion-space latents: ``s * z``."""
        return z * self.latent_scale

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        """Diffusion-space -> unscaled latents: ``clip(z, -c, c) / s``."""
        if self.config.latent_clip is not None:
            z = z.clamp(-self.config.latent_clip, self.config.latent_clip)
        return z / self.latent_scale


# --------------------------------------------------------------------------------------------
# Masked continuous bottleneck (JEN-1)
# --------------------------------------------------------------------------------------------


@dataclass
class MaskedBottleneckConfig(Config):
    """JEN-1's continuous, noise-robust bottleneck.

    ``mask_rate`` (0.05): fraction of latent frames hidden from the decoder in training, each
    frame independently. ``mask_mode``: ``"learned"`` replaces a masked frame by a trained
    embedding vector (initialised at zero), ``"zeros"`` by zeros. ``noise_std``: optional
    Gaussian noise added to all latents in training (extra robustness; 0 disables).
    """

    latent_dim: int = 128
    mask_rate: float = 0.05
    mask_mode: str = "learned"
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if not 0.0 <= self.mask_rate < 1.0:
            raise ConfigError(f"mask_rate must be in [0, 1), got {self.mask_rate}")
        if self.mask_mode not in ("learned", "zeros"):
            raise ConfigError(f"mask_mode must be 'learned' or 'zeros', got {self.mask_mode!r}")
        if self.noise_std < 0:
            raise ConfigError(f"noise_std must be >= 0, got {self.noise_std}")


class MaskedBottleneck(nn.Module):
    """Continuous latents with frame masking in training.

    ``h [B, H, T] -> z = W h [B, D, T]`` (a 1x1 conv, identity when ``H == D``). In training a
    Bernoulli(``mask_rate``) mask ``m [B, T]`` selects frames that are replaced::

        z'_t = m_t * e_mask + (1 - m_t) * z_t        (e_mask learned, or 0)

    and optionally ``z' += noise_std * eps``. The decoder thus learns to reconstruct audio from
    corrupted latents. No penalty term.
    """

    def __init__(self, in_dim: int, config: MaskedBottleneckConfig):
        super().__init__()
        self.config = config
        d = config.latent_dim
        self.to_latent: nn.Module = nn.Conv1d(in_dim, d, 1) if in_dim != d else nn.Identity()
        self.from_latent: nn.Module = nn.Conv1d(d, in_dim, 1) if in_dim != d else nn.Identity()
        if config.mask_mode == "learned":
            self.mask_embedding = nn.Parameter(torch.zeros(d))
        else:
            self.register_parameter("mask_embedding", None)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, h: torch.Tensor) -> torch.Tensor:
        return self.to_latent(h)

    def decode_input(self, z: torch.Tensor) -> torch.Tensor:
        return self.from_latent(z)

    def apply_mask(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Replace frames where ``mask [B, T]`` is true by the mask embedding (or zeros)."""
        m = mask[:, None, :].to(z.dtype)
        fill = self.mask_embedding[None, :, None] if self.mask_embedding is not None else torch.zeros_like(z)
        return z * (1 - m) + fill * m

    def corrupt(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training-time corruption of latents ``[B, D, T]``: returns ``(z', mask [B, T] or None)``.

        Identity in evaluation mode.
        """
        mask = None
        if self.training and self.config.mask_rate > 0:
            mask = torch.rand(z.shape[0], z.shape[-1], device=z.device) < self.config.mask_rate
            z = self.apply_mask(z, mask)
        if self.training and self.config.noise_std > 0:
            z = z + self.config.noise_std * torch.randn_like(z)
        return z, mask

    def forward(self, h: torch.Tensor) -> BottleneckOutput:
        """``h [B, H, T]`` -> corrupted latents for the decoder, the mask and a zero penalty."""
        z, mask = self.corrupt(self.to_latent(h))
        metrics = {"mask_fraction": float(mask.float().mean()) if mask is not None else 0.0}
        return BottleneckOutput(z, z.new_zeros(()), metrics, mask)


# --------------------------------------------------------------------------------------------
# Whitening (JEN-1)
# --------------------------------------------------------------------------------------------


class Whitener(nn.Module):
    """Per-channel centring plus SVD (ZCA) whitening of latents, fitted incrementally.

    Statistics are accumulated in float64 over any number of batches (``update``): the frame
    count ``n``, the channel sums ``s = sum_t z_t`` and the outer-product sums
    ``S = sum_t z_t z_t^T``. :meth:`finalize` computes::

        mu = s / n,   C = (S - n mu mu^T) / (n - 1) = U diag(lambda) U^T   (SVD of the symmetric C)
        W = U diag(1 / sqrt(lambda + eps)) U^T,   W^+ = U diag(sqrt(lambda + eps)) U^T

    so ``whiten(z) = W (z - mu)`` has zero mean and identity covariance, and
    ``unwhiten(y) = W^+ y + mu`` inverts it. Directions whose eigenvalue is below
    ``rank_tol * lambda_max`` carry no signal; they are dropped (JEN-1's dimension reduction
    against anisotropy): whitened to 0 and ignored by ``unwhiten``.

    Everything is a buffer, so the statistics and matrices save and load with the model.
    Under ``torch.distributed`` :meth:`finalize` sums the statistics of all ranks first.
    """

    def __init__(self, dim: int, eps: float = 1e-5, rank_tol: float = 1e-6):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.rank_tol = rank_tol
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sum", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("sum_outer", torch.zeros(dim, dim, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("whitening", torch.eye(dim))
        self.register_buffer("unwhitening", torch.eye(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.item())

    # ---- shipping: the accumulators are fitting state, not needed to whiten ------------------

    _ACCUMULATORS = ("count", "sum", "sum_outer")

    def prune_export_state(self, state: dict, prefix: str, half: bool) -> None:
        """For a shipped (``half``) export, drop the float64 accumulators ``count``, ``sum`` and
        ``sum_outer`` (``D^2`` doubles) of a fitted whitener: whitening needs only ``mean`` and
        the two matrices. A float32 save keeps them, so accumulation can continue after loading."""
        if half and self.is_fitted:
            for name in self._ACCUMULATORS:
                state.pop(prefix + name, None)

    def restore_export_state(self, state: dict, prefix: str) -> None:
        """Inverse of :meth:`prune_export_state`: empty accumulators (``count = 0``), so a later
        :meth:`update` + :meth:`finalize` fits on the new data alone."""
        if prefix + "whitening" in state and all(prefix + name not in state for name in self._ACCUMULATORS):
            state[prefix + "count"] = torch.zeros_like(self.count)
            state[prefix + "sum"] = torch.zeros_like(self.sum)
            state[prefix + "sum_outer"] = torch.zeros_like(self.sum_outer)

    def _check(self, z: torch.Tensor) -> None:
        if z.dim() != 3 or z.shape[1] != self.dim:
            raise InvalidInput(f"expected latents [B, {self.dim}, T], got shape {tuple(z.shape)}")

    @torch.no_grad()
    def reset(self) -> None:
        """Forget the accumulated statistics and the fitted transform."""
        self.count.zero_()
        self.sum.zero_()
        self.sum_outer.zero_()
        self.mean.zero_()
        self.whitening.copy_(torch.eye(self.dim))
        self.unwhitening.copy_(torch.eye(self.dim))
        self.fitted.fill_(False)

    @torch.no_grad()
    def update(self, latents: torch.Tensor) -> None:
        """Accumulate statistics from raw latents ``[B, D, T]`` (every frame is one sample)."""
        self._check(latents)
        if not torch.isfinite(latents).all():
            raise InvalidInput("latents contain NaN or infinite values")
        x = latents.detach().transpose(1, 2).reshape(-1, self.dim).to(torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        self.sum_outer += x.t() @ x

    @torch.no_grad()
    def finalize(self) -> None:
        """Compute mean and whitening matrices from the accumulated statistics."""
        stats = [self.count.clone(), self.sum.clone(), self.sum_outer.clone()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in stats:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
        n, s, ss = stats
        if n < 2:
            raise InvalidInput(f"whitening needs at least 2 latent frames, got {int(n)}")
        mu = s / n
        cov = (ss - n * torch.outer(mu, mu)) / (n - 1)
        cov = 0.5 * (cov + cov.t())
        u, lam, _ = torch.linalg.svd(cov)
        lam = lam.clamp_min(0.0)
        keep = lam > self.rank_tol * lam.max().clamp_min(torch.finfo(torch.float64).tiny)
        inv_sqrt = torch.where(keep, 1.0 / torch.sqrt(lam + self.eps), torch.zeros_like(lam))
        sqrt = torch.where(keep, torch.sqrt(lam + self.eps), torch.zeros_like(lam))
        self.mean.copy_(mu.to(self.mean.dtype))
        self.whitening.copy_(((u * inv_sqrt) @ u.t()).to(self.whitening.dtype))
        self.unwhitening.copy_(((u * sqrt) @ u.t()).to(self.unwhitening.dtype))
        self.fitted.fill_(True)

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents ``[B, D, T]`` -> whitened latents ``W (z - mu)``."""
        self._check(z)
        return torch.einsum("ij,bjt->bit", self.whitening.to(z.dtype), z - self.mean.to(z.dtype)[None, :, None])

    def unwhiten(self, y: torch.Tensor) -> torch.Tensor:
        """Whitened latents ``[B, D, T]`` -> raw latents ``W^+ y + mu``."""
        self._check(y)
        return torch.einsum("ij,bjt->bit", self.unwhitening.to(y.dtype), y) + self.mean.to(y.dtype)[None, :, None]
