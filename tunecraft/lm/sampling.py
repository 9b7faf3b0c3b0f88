"""Next-token sampling for codec LMs: greedy, temperature, top-k, top-p, classifier-free guidance.

All functions take logits ``[..., card]`` (any leading shape, e.g. ``[B, K, card]``) and return
token ids ``[...]`` int64. Randomness comes only from the ``generator`` argument, so a seeded
:class:`torch.Generator` gives bit-identical tokens on the same machine and versions.

* temperature ``tau``: ``p = softmax(logits / tau)``; ``tau = 0`` is greedy.
* top-k (MusicGen: ``k = 250``): sample among the ``k`` most likely tokens, renormalised.
* top-p (nucleus, Holtzman et al.): sample among the smallest set of most likely tokens whose
  probability reaches ``p``. With both, top-k is applied first.
* classifier-free guidance (MusicGen section 2.3): ``l = l_uncond + s * (l_cond - l_uncond)``
  on raw logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Config
from ..errors import ConfigError, InvalidInput

__all__ = [
    "SamplingParams",
    "apply_cfg",
    "multinomial",
    "sample_top_k",
    "sample_top_p",
    "sample_next_token",
]


@dataclass
class SamplingParams(Config):
    """How to pick each token. MusicGen's defaults: top-k 250, temperature 1.0, CFG 3.0.

    ``greedy=True`` (or ``temperature == 0``) takes the argmax. ``top_k = 0`` and
    ``top_p = 0`` disable those filters. ``cfg_scale`` of ``None`` or ``1`` disables
    guidance; ``two_step_cfg`` runs the conditional and unconditional passes separately
    instead of as one batch (same result up to float rounding, half the peak batch).
    ``fact_guidance`` (``s_f >= 0``, off at 0; not in the MusicGen paper) scales extra negative
    conditions: ``l = l_uncond + s (l_cond - l_uncond) + s_f * sum_i (l_cond - l_neg_i)``, the
    negation term of composable guidance (Liu et al., 2022); MusicGen makes the negatives by
    swapping the mode a prompt states (:func:`tunecraft.text.counterfactual.guidance_negatives`).
    """

    temperature: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    greedy: bool = False
    cfg_scale: float | None = 3.0
    two_step_cfg: bool = False
    fact_guidance: float = 0.0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0) or self.temperature == float("inf"):
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0.0 <= float(self.top_p) <= 1.0:
            raise ConfigError(f"top_p must be in [0, 1], got {self.top_p}")
        if self.cfg_scale is not None and not (float(self.cfg_scale) == float(self.cfg_scale)
                                               and abs(float(self.cfg_scale)) != float("inf")):
            raise ConfigError(f"cfg_scale must be a finite number, got {self.cfg_scale}")
        if isinstance(self.fact_guidance, bool) or not isinstance(self.fact_guidance, (int, float)) \
                or not 0.0 <= float(self.fact_guidance) < float("inf"):
            raise ConfigError(f"fact_guidance must be a finite number >= 0, got {self.fact_guidance!r}")

    @property
    def uses_cfg(self) -> bool:
        return self.cfg_scale is not None and float(self.cfg_scale) != 1.0

    @property
    def uses_sampling(self) -> bool:
        return not self.greedy and self.temperature > 0.0


def apply_cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits: ``uncond + scale * (cond - uncond)``."""
    return uncond + (cond - uncond) * scale


def multinomial(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw from each distribution ``probs [..., card]`` -> ``[...]`` int64."""
    flat = probs.reshape(-1, probs.shape[-1])
    out = torch.multinomial(flat, 1, replacement=True, generator=generator)
    return out.view(probs.shape[:-1])


def sample_top_k(probs: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample among the ``k`` most probable tokens of ``probs [..., card]`` (renormalised)."""
    if k < 1:
        raise InvalidInput(f"top-k needs k >= 1, got {k}")
    k = min(int(k), probs.shape[-1])
    top, idx = torch.topk(probs, k, dim=-1)
    choice = multinomial(top / top.sum(dim=-1, keepdim=True), generator)
    return idx.gather(-1, choice.unsqueeze(-1)).squeeze(-1)


def sample_top_p(probs: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nucleus sampling: keep the most probable tokens while the mass before them is ``< p``."""
    if not 0.0 < p <= 1.0:
        raise InvalidInput(f"top-p needs p in (0, 1], got {p}")
    sorted_probs, idx = torch.sort(probs, dim=-1, descending=True)
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(before >= p, 0.0)
    choice = multinomial(sorted_probs / sorted_probs.sum(dim=-1, keepdim=True), generator)
    return idx.gather(-1, choice.unsqueeze(-1)).squeeze(-1)


def sample_next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
                      greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per distribution of ``logits [..., card]`` -> ``[...]`` int64.

    Greedy when ``greedy`` or ``temperature == 0``; otherwise ``softmax(logits / temperature)``
    filtered by top-k then top-p and sampled with ``generator``.
    """
    if greedy or temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / float(temperature), dim=-1)
    if top_k and top_k > 0:
        k = min(int(top_k), probs.shape[-1])
        top, idx = torch.topk(probs, k, dim=-1)
        if top_p and 0.0 < top_p < 1.0:
            choice = sample_top_p(top / top.sum(dim=-1, keepdim=True), top_p, generator)
        else:
            choice = multinomial(top / top.sum(dim=-1, keepdim=True), generator)
        return idx.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
    if top_p and 0.0 < top_p < 1.0:
        return sample_top_p(probs, top_p, generator)
    return multinomial(probs, generator)
