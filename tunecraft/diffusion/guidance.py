"""Classifier-free guidance (Ho & Salimans 2022) for diffusion models.

Inference combines a conditional and an unconditional prediction,

    guided = uncond + w (cond - uncond)  =  w cond + (1 - w) uncond      (Noise2Music Sec. 3.1)

with ``w`` the CFG scale (Noise2Music 5-10, MeLoDy 2.5, JEN-1 2.0; ``w = 1`` is no guidance).
Because every parameterisation is an affine function of the model output at fixed ``x_t``,
guiding ``eps``, ``v`` or ``x0`` outputs gives the same sampler update.

Training makes the unconditional model by dropping the text for a fraction of the examples
(Noise2Music 10 %, JEN-1 20 %): :func:`text_dropout_mask` draws the ``[B]`` mask that the
U-Net's ``drop_text`` argument takes (it zeroes the cross-attention output for those rows).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from ..errors import InvalidInput
from ..text import TextStates
from .schedules import expand_like

__all__ = ["cat_batch", "cfg_combine", "guided_model_fn", "split_batch", "text_dropout_mask"]


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """``uncond + scale (cond - uncond)``; ``scale`` is a float or a per-example ``[B]`` tensor."""
    if cond.shape != uncond.shape:
        raise InvalidInput(
            f"conditional {tuple(cond.shape)} and unconditional {tuple(uncond.shape)} outputs differ in shape"
        )
    w = expand_like(scale, cond) if isinstance(scale, torch.Tensor) else float(scale)
    return uncond + w * (cond - uncond)


def text_dropout_mask(
    batch_size: int, p: float, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """``[B]`` bool, each ``True`` with probability ``p``: rows whose text is dropped in training.

    Draws ``torch.rand(B, generator=generator)`` so a seeded generator gives the same rows.
    """
    if not 0.0 <= float(p) <= 1.0:
        raise InvalidInput(f"text dropout probability must be in [0, 1], got {p}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    mask = torch.rand(batch_size, generator=generator, device=gen_device) < float(p)
    return mask.to(device) if device is not None else mask


def cat_batch(a: Any, b: Any) -> Any:
    """Concatenate two condition values along the batch: tensors, :class:`TextStates` (padded to
    the longer text), ``None`` with ``None``, or equal non-tensor values (passed through)."""
    if a is None and b is None:
        return None
    if isinstance(a, TextStates) or isinstance(b, TextStates):
        if not (isinstance(a, TextStates) and isinstance(b, TextStates)):
            raise InvalidInput("cannot batch TextStates with a non-TextStates condition; use TextStates.null_like()")
        return TextStates.cat([a, b])
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape[1:] != b.shape[1:]:
            raise InvalidInput(f"cannot batch condition tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
        return torch.cat([a, b], dim=0)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        raise InvalidInput("a condition is a tensor in one branch and not in the other")
    if a != b:
        raise InvalidInput(f"non-tensor condition values differ between branches: {a!r} vs {b!r}")
    return a


def split_batch(out: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a doubled batch ``[2B, ...]`` into its two halves."""
    if out.shape[0] != 2 * batch_size:
        raise InvalidInput(f"expected a doubled batch of {2 * batch_size}, got {out.shape[0]}")
    return out[:batch_size], out[batch_size:]


def guided_model_fn(
    model: Callable[..., torch.Tensor],
    scale: float | torch.Tensor,
    cond: Mapping[str, Any],
    uncond: Mapping[str, Any],
    *,
    batched: bool = True,
    negatives: Sequence[Mapping[str, Any]] = (),
    negative_scale: float = 0.0,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``model_fn(x, t)`` for the samplers that applies classifier-free guidance.

    ``model(x, t, **kwargs)`` is called with ``cond`` and ``uncond`` keyword arguments (they must
    have the same keys, e.g. ``{"text": states}`` and ``{"text": states.null_like()}`` or
    ``{"drop_text": all_true}``). With ``batched=True`` both branches run as one ``[2B]`` pass
    (``x``, ``t`` and each kwarg concatenated with :func:`cat_batch`); otherwise as two passes,
    which halves peak memory. ``scale == 1`` (a float) runs the conditional branch only.

    ``negatives`` (same keys) with ``negative_scale = s_f > 0`` add the negation term of composable
    guidance (Liu et al. 2022): ``uncond + scale (cond - uncond) + s_f sum_i (cond - neg_i)``, every
    branch in the one batched pass (``[(2 + N) B]``) - what tunecraft calls fact guidance when the
    negatives are the prompt with a stated fact changed (:func:`tunecraft.text.counterfactual.guidance_negatives`).
    """
    if set(cond) != set(uncond):
        raise InvalidInput(f"cond and uncond need the same keys, got {sorted(cond)} and {sorted(uncond)}")
    if not float(negative_scale) >= 0 or float(negative_scale) == float("inf"):
        raise InvalidInput(f"negative_scale must be a finite number >= 0, got {negative_scale!r}")
    negatives = list(negatives) if float(negative_scale) > 0 else []
    for neg in negatives:
        if set(neg) != set(cond):
            raise InvalidInput(f"a negative needs the keys of cond {sorted(cond)}, got {sorted(neg)}")
    if not negatives and not isinstance(scale, torch.Tensor) and float(scale) == 1.0:
        def conditional(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model(x, t, **cond)

        return conditional
    if negatives or batched:
        return _batched(model, scale, [cond, uncond, *negatives], negative_scale)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return cfg_combine(model(x, t, **cond), model(x, t, **uncond), scale)

    return fn


def _batched(model, scale, branches, negative_scale):
    """:func:`guided_model_fn` as one pass over ``branches = [cond, uncond, neg_1, ...]``."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[0], len(branches)
        kwargs = {}
        for key in branches[0]:
            value = branches[0][key]
            for br in branches[1:]:
                value = cat_batch(value, br[key])
            kwargs[key] = value
        tt = t if t.dim() == 0 else t.repeat(k)
        out = model(x.repeat(k, *([1] * (x.dim() - 1))), tt, **kwargs)
        if out.shape[0] != k * b:
            raise InvalidInput(f"expected {k} branches of {b}, got a batch of {out.shape[0]}")
        c, u, *negs = out.split(b, dim=0)
        guided = cfg_combine(c, u, scale)
        for n in negs:
            guided = guided + float(negative_scale) * (c - n)
        return guided

    return fn
