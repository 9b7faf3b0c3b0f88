"""Conditioning augmentation of the Noise2Music cascaders and vocoder (Sec. 4.1 of the paper).

The low-fidelity audio (cascaders) or spectrogram (vocoder) that conditions a stage is produced
by an earlier, imperfect model at inference time, so training corrupts the clean conditioning:

* **noise corruption** - ``c <- alpha_s c + sigma_s eps`` with ``s ~ U[0, t_max]`` under the stage's
  own noise schedule (the forward diffusion process applied to the conditioning);
* **blur** - a normalised Gaussian kernel with a per-example standard deviation: 1D along time
  (cascaders: 10 taps, sigma 0.1-5.0 samples) or 2D over mel bins x frames (vocoder: 5x5, sigma
  0.2-1.0).

Each is applied to an example with its own probability (:class:`~.configs.ConditionAugmentConfig`).
All randomness comes from ``generator`` (or the global RNG, which the training loop seeds per step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diffusion import NoiseSchedule
from ..errors import InvalidInput
from .configs import ConditionAugmentConfig

__all__ = ["augment_condition", "blur1d", "blur2d", "gaussian_kernels", "noise_corrupt"]


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1D Gaussian kernels ``[B, size]`` centred at ``(size - 1) / 2`` for ``sigma [B]``
    (an even ``size`` centres the kernel between two taps)."""
    if size < 1:
        raise InvalidInput(f"kernel size must be >= 1, got {size}")
    pos = torch.arange(size, dtype=torch.float32, device=sigma.device) - (size - 1) / 2.0
    k = torch.exp(-0.5 * (pos[None, :] / sigma.float().clamp_min(1e-6)[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _pad_amounts(size: int) -> tuple[int, int]:
    # an even kernel has its centre half a tap left of size/2; keep the output length
    return (size - 1) // 2, size // 2


def blur1d(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Blur each example of ``x [B, C, T]`` along time with its own Gaussian (``sigma [B]``, in samples).

    Reflect padding keeps the length (replicate when ``T`` is too short to reflect)."""
    if x.dim() != 3:
        raise InvalidInput(f"blur1d expects [B, C, T], got {tuple(x.shape)}")
    b, c, t = x.shape
    kernels = gaussian_kernels(sigma.to(x.device), size).to(x.dtype)  # [B, size]
    weight = kernels.repeat_interleave(c, dim=0)[:, None, :]  # [B*C, 1, size]
    left, right = _pad_amounts(size)
    mode = "reflect" if t > max(left, right) else "replicate"
    xp = F.pad(x.reshape(1, b * c, t), (left, right), mode=mode)
    return F.conv1d(xp, weight, groups=b * c).reshape(b, c, t)


def blur2d(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Blur each example of ``x [B, F, T]`` (a spectrogram) with its own isotropic ``size x size``
    Gaussian over (mel bin, frame); ``sigma [B]`` in bins/frames."""
    if x.dim() != 3:
        raise InvalidInput(f"blur2d expects [B, F, T], got {tuple(x.shape)}")
    b, f, t = x.shape
    k1 = gaussian_kernels(sigma.to(x.device), size).to(x.dtype)  # [B, size]
    weight = (k1[:, :, None] * k1[:, None, :])[:, None]  # [B, 1, size, size], separable and normalised
    left, right = _pad_amounts(size)
    mode = "reflect" if min(f, t) > max(left, right) else "replicate"
    xp = F.pad(x[None], (left, right, left, right), mode=mode)  # [1, B, F', T']
    return F.conv2d(xp, weight, groups=b)[0]


def noise_corrupt(
    x: torch.Tensor, schedule: NoiseSchedule, t: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The forward diffusion process on a conditioning signal: ``alpha_t x + sigma_t eps`` with ``t [B]``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    eps = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
    return schedule.add_noise(x, eps, t.to(x.device))


def augment_condition(
    c: torch.Tensor,
    config: ConditionAugmentConfig,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Blur then noise-corrupt a batch of conditioning ``c [B, C, T]`` per :class:`ConditionAugmentConfig`.

    Every example draws (in this order) a blur coin, a blur sigma, a noise coin and a noise time,
    whether or not it is augmented, so the draws do not depend on the data.
    """
    b = c.shape[0]
    blur_on = _rand((b,), generator, c.device) < config.blur_p
    sigma = config.blur_sigma_min + (config.blur_sigma_max - config.blur_sigma_min) * _rand((b,), generator, c.device)
    noise_on = _rand((b,), generator, c.device) < config.noise_p
    t = config.noise_t_max * _rand((b,), generator, c.device)
    out = c
    if bool(blur_on.any()):
        blurred = blur2d(out, sigma, config.blur_size) if config.blur_2d else blur1d(out, sigma, config.blur_size)
        out = torch.where(blur_on.view(b, 1, 1), blurred, out)
    if bool(noise_on.any()):
        noisy = noise_corrupt(out, schedule, t, generator)
        out = torch.where(noise_on.view(b, 1, 1), noisy, out)
    return out
