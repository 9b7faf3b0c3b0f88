"""Objective metrics of text-to-music generation (MusicGen / Noise2Music / MeLoDy / JEN-1 tables).

* :func:`kl_divergence` / :class:`KLDivergenceMetric` - KL between the label posteriors of the
  reference clip and of the generation for the same prompt, per pair then averaged, as
  audiocraft's ``KLDivergenceMetric`` (with our :class:`~tunecraft.eval.classifiers.TagClassifier`
  in place of PaSST)::

      KL(p || q) = sum_v p_v (log p_v - log(q_v + eps)),   eps = 1e-6, 0 log 0 = 0

  ``kld`` is ``KL(p_ref || p_gen)``, ``kld_rev`` the reverse, ``kld_both`` their sum; with several
  heads each pair's KL is the mean over heads.
* :func:`text_audio_similarity` - the CLAP/MuLan score: mean over pairs of
  ``cos(e_audio(x_i), e_text(y_i))`` with the joint model.
* :func:`chroma_cosine_similarity` - MusicGen's melody metric: chromagrams (12 bins, STFT
  chroma as audiocraft's ``ChromaExtractor``) of the reference melody and the generation,
  truncated to the shorter one, cosine per frame, averaged over frames and clips.
* :func:`attribute_accuracy` - tempo within 6 % (:func:`~tunecraft.eval.attributes.tempo_match`),
  exact key and mode (:func:`~tunecraft.eval.attributes.estimate_key`), and style/instrument by the
  tag classifier's argmax.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..errors import InvalidInput
from .attributes import estimate_key, estimate_tempo, key_match, tempo_match

__all__ = [
    "KLDivergenceMetric",
    "attribute_accuracy",
    "attribute_hits",
    "chroma_cosine_similarity",
    "clip_attributes",
    "estimate_attributes",
    "kl_divergence",
    "paired_kl_divergence",
    "hit_matrices",
    "tempo_steady",
    "permutation_chance",
    "permutation_p_values",
    "text_audio_similarity",
]


# ---- KL divergence ------------------------------------------------------------------------------


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``KL(p || q)`` per row of distributions ``p, q [B, V]`` -> ``[B]`` (see the module docstring)."""
    if p.shape != q.shape or p.dim() != 2:
        raise InvalidInput(f"kl_divergence needs two [B, V] tensors of one shape, got {tuple(p.shape)} and "
                           f"{tuple(q.shape)}")
    p = p.double()
    q = q.double()
    if (p < 0).any() or (q < 0).any():
        raise InvalidInput("probabilities must be >= 0")
    return F.kl_div((q + eps).log(), p, reduction="none").sum(-1).float()


def _as_heads(x: Union[torch.Tensor, Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {"probs": x} if isinstance(x, torch.Tensor) else dict(x)


class KLDivergenceMetric:
    """Accumulates paired KL divergences over batches (audiocraft's ``KLDivergenceMetric``).

    ``update(reference, generated)`` takes posteriors ``[B, V]`` or ``{head: [B, V_head]}`` of
    the reference clips and of the generations for the same prompts (row ``i`` with row ``i``).
    ``compute()`` returns ``{"kld", "kld_rev", "kld_both", "pairs"}`` averaged over all pairs.
    """

    def __init__(self, eps: float = 1e-6):
        self.eps = float(eps)
        self.reset()

    def reset(self) -> None:
        self._pq = 0.0
        self._qp = 0.0
        self._n = 0

    def update(self, reference: Union[torch.Tensor, Mapping[str, torch.Tensor]],
               generated: Union[torch.Tensor, Mapping[str, torch.Tensor]]) -> None:
        ref, gen = _as_heads(reference), _as_heads(generated)
        if set(ref) != set(gen) or not ref:
            raise InvalidInput(f"reference and generated posteriors have different heads: "
                               f"{sorted(ref)} vs {sorted(gen)}")
        pq = torch.stack([kl_divergence(ref[h], gen[h], self.eps) for h in sorted(ref)]).mean(0)
        qp = torch.stack([kl_divergence(gen[h], ref[h], self.eps) for h in sorted(ref)]).mean(0)
        self._pq += float(pq.sum())
        self._qp += float(qp.sum())
        self._n += int(pq.shape[0])

    def compute(self) -> Dict[str, float]:
        if self._n == 0:
            raise InvalidInput("KLDivergenceMetric: no pairs were added")
        kld, rev = self._pq / self._n, self._qp / self._n
        return {"kld": kld, "kld_rev": rev, "kld_both": kld + rev, "pairs": float(self._n)}


@torch.no_grad()
def paired_kl_divergence(classifier, reference: torch.Tensor, generated: torch.Tensor, sample_rate: int,
                         generated_sample_rate: Optional[int] = None) -> Dict[str, float]:
    """KL metrics of ``reference [B, C, T]`` vs ``generated [B, C, T']`` (pairs by row) with a
    :class:`~tunecraft.eval.classifiers.TagClassifier`."""
    if reference.shape[0] != generated.shape[0]:
        raise InvalidInput(f"{reference.shape[0]} reference clips but {generated.shape[0]} generations")
    metric = KLDivergenceMetric()
    metric.update(classifier.posteriors(reference, sample_rate),
                  classifier.posteriors(generated, generated_sample_rate or sample_rate))
    return metric.compute()


# ---- text-audio similarity ----------------------------------------------------------------------


@torch.no_grad()
def text_audio_similarity(model, wav: torch.Tensor, sample_rate: int, texts: Sequence[str],
                          reduce: bool = True) -> Union[float, torch.Tensor]:
    """Mean cosine ``(1/B) sum_i cos(a_i, t_i)`` of paired clips ``wav [B, C, T]`` and ``texts``
    under a :class:`~tunecraft.joint.JointEmbeddingModel` (``reduce=False``: the ``[B]`` cosines)."""
    sims = model.similarity(wav, sample_rate, list(texts)).float().cpu()
    return float(sims.mean()) if reduce else sims


# ---- chroma cosine ------------------------------------------------------------------------------


@torch.no_grad()
def chroma_cosine_similarity(reference: torch.Tensor, generated: torch.Tensor, sample_rate: int,
                             generated_sample_rate: Optional[int] = None, argmax: bool = False,
                             radix2_exp: int = 12, reduce: bool = True) -> Union[float, torch.Tensor]:
    """Chroma cosine similarity of ``reference`` and ``generated`` (``[B, C, T]``, ``[B, T]`` or ``[T]``).

    Both are brought to ``sample_rate`` (the generation is resampled if its rate differs), their
    chromagrams ``[B, 12, F]`` (frame-wise max-normalised; one-hot with ``argmax``) truncated to the
    shorter ``F``, and ``cos(c_ref[:, :, f], c_gen[:, :, f])`` (eps 1e-8) averaged over frames and
    clips. ``reduce=False`` returns the per-clip means ``[B]``.
    """
    from ..audio import chromagram, resample

    def batch(x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise InvalidInput("audio must be a floating-point tensor")
        return x[None] if x.dim() == 1 else x

    ref = batch(reference).float()
    gen = batch(generated).float()
    if generated_sample_rate is not None and generated_sample_rate != sample_rate:
        gen = resample(gen, int(generated_sample_rate), int(sample_rate))
    if ref.shape[0] != gen.shape[0]:
        raise InvalidInput(f"{ref.shape[0]} reference clips but {gen.shape[0]} generations")
    c_ref = chromagram(ref, sample_rate, argmax=argmax, radix2_exp=radix2_exp)
    c_gen = chromagram(gen, sample_rate, argmax=argmax, radix2_exp=radix2_exp)
    n = min(c_ref.shape[-1], c_gen.shape[-1])
    if n == 0:
        raise InvalidInput("audio too short for a chromagram")
    cos = F.cosine_similarity(c_ref[..., :n], c_gen[..., :n], dim=1, eps=1e-8)  # [B, n]
    per_clip = cos.mean(-1)
    return float(per_clip.mean()) if reduce else per_clip


# ---- attribute accuracy -------------------------------------------------------------------------


def _np_mono(wav: torch.Tensor):
    x = wav.detach().float().cpu()
    if x.dim() == 2:
        x = x.mean(0)
    if x.dim() != 1:
        raise InvalidInput(f"expected one clip [C, T] or [T], got {tuple(wav.shape)}")
    return x.numpy()


def attribute_hits(estimates: Mapping[str, Any], target: Mapping[str, Any],
                   predicted: Optional[Mapping[str, str]] = None, tempo_tol: float = 0.06) -> Dict[str, bool]:
    """Which of ``target``'s attributes the ``estimates`` (``bpm``, ``key``, ``mode`` of
    :func:`clip_attributes`) and ``predicted`` labels (``style``, ``instrument``) match: a dict with
    ``tempo_acc`` / ``key_acc`` / ``mode_acc`` / ``style_acc`` / ``instrument_acc``, each present
    only when the target names that attribute (and an estimate exists)."""
    hits: Dict[str, bool] = {}
    if target.get("bpm") and estimates.get("bpm") is not None:
        hits["tempo_acc"] = bool(tempo_match(float(estimates["bpm"]), float(target["bpm"]), tol=tempo_tol))
    key_ref = target.get("key")
    mode_ref = target.get("mode") or (str(key_ref).split()[-1].lower() if key_ref else None)
    if key_ref and estimates.get("key"):
        hits["key_acc"] = bool(key_match(estimates["key"], key_ref))
    if mode_ref and estimates.get("mode"):
        hits["mode_acc"] = str(estimates["mode"]) == str(mode_ref).lower()
    for f in ("style", "instrument"):
        if target.get(f) and predicted is not None and predicted.get(f) is not None:
            hits[f"{f}_acc"] = str(predicted[f]).strip().lower() == str(target[f]).strip().lower()
    return hits


def clip_attributes(clip: torch.Tensor, sample_rate: int, target: Mapping[str, Any],
                    predicted: Optional[Mapping[str, str]] = None, tempo_tol: float = 0.06) -> Dict[str, Any]:
    """Estimated attributes of one clip ``[C, T]`` and whether they match ``target`` (a dict with
    any of ``bpm``, ``key`` (``"A minor"``), ``mode``, ``style``, ``instrument``).

    Returns ``{"estimates": {"bpm", "key", "mode", "key_confidence"}, "hits": {"tempo_acc",
    "key_acc", "mode_acc", "style_acc", "instrument_acc"}}`` where a hit is only present when the
    target names that attribute. Tempo needs an estimate within ``tempo_tol`` of ``bpm``; key is
    exact tonic and mode; ``predicted`` (e.g. the tag classifier's argmax labels) is compared with
    the ``style`` / ``instrument`` targets, case-insensitively (:func:`attribute_hits`).
    """
    estimates = estimate_attributes(clip, sample_rate, tempo=bool(target.get("bpm")),
                                    key=bool(target.get("key") or target.get("mode")))
    return {"estimates": estimates, "hits": attribute_hits(estimates, target, predicted, tempo_tol)}


def estimate_attributes(clip: torch.Tensor, sample_rate: int, tempo: bool = True, key: bool = True) -> Dict[str, Any]:
    """The analyzers' estimates for one clip ``[C, T]`` (channels averaged): ``bpm`` (with
    ``tempo``; 0.0 when the clip has no onsets) and ``key`` (``"A minor"``), ``mode``,
    ``key_confidence`` (with ``key``). The dict also serves as a target for :func:`attribute_hits`,
    which then tells whether another clip keeps this one's tempo, key and mode (a reference without
    onsets yields no tempo verdict)."""
    x = _np_mono(clip)
    estimates: Dict[str, Any] = {}
    if tempo:
        estimates["bpm"] = float(estimate_tempo(x, sample_rate))
    if key:
        tonic, mode, conf = estimate_key(x, sample_rate)
        estimates.update(key=f"{tonic} {mode}", mode=mode, key_confidence=float(conf))
    return estimates


def tempo_steady(clip: torch.Tensor, sample_rate: int, tempo_tol: float = 0.06, min_seconds: float = 4.0) -> Optional[bool]:
    """Whether a clip ``[C, T]`` keeps one tempo: the tempo estimates of its first and second
    halves agree within ``tempo_tol`` (the tolerance of the tempo accuracy). ``None`` for clips
    shorter than ``min_seconds`` or a half without onsets. A system whose rhythm drifts cannot
    follow a requested tempo, whatever its text conditioning; the composer's clips agree on ~90%."""
    x = _np_mono(clip)
    if x.shape[-1] < min_seconds * sample_rate:
        return None
    h = x.shape[-1] // 2
    a, b = float(estimate_tempo(x[:h], sample_rate)), float(estimate_tempo(x[h:], sample_rate))
    if a <= 0 or b <= 0:
        return None
    return bool(tempo_match(a, b, tempo_tol))


def hit_matrices(estimates: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                 predicted: Optional[Sequence[Optional[Mapping[str, str]]]] = None,
                 tempo_tol: float = 0.06) -> Dict[str, torch.Tensor]:
    """``{attribute: H}`` with ``H [n, n]`` float: 1 where clip ``i``'s estimates hit prompt ``j``'s
    target, 0 where they miss, NaN where prompt ``j`` does not name the attribute (or clip ``i``
    gave no estimate for it). The diagonal is the run's own hits."""
    n = len(estimates)
    if len(targets) != n or (predicted is not None and len(predicted) != n):
        raise InvalidInput("hit_matrices needs one target (and prediction) per clip")
    out: Dict[str, torch.Tensor] = {}
    for i in range(n):
        pred = predicted[i] if predicted is not None else None
        for j in range(n):
            for k, hit in attribute_hits(estimates[i], targets[j], pred, tempo_tol).items():
                if k not in out:
                    out[k] = torch.full((n, n), float("nan"), dtype=torch.float64)
                out[k][i, j] = float(hit)
    return out


def permutation_chance(estimates: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                       predicted: Optional[Sequence[Optional[Mapping[str, str]]]] = None,
                       tempo_tol: float = 0.06) -> Dict[str, float]:
    """The chance level of each attribute accuracy for this set of clips: the accuracy of clip
    ``i``'s estimates against the targets of every other prompt ``j != i``, averaged over all such
    pairs. It keeps both marginal distributions (what the analyzers tend to output on these clips,
    what the prompts ask for) and breaks only their pairing, so an accuracy above it means the clips
    follow *their own* prompt. ``{}`` with fewer than 2 clips."""
    if len(estimates) != len(targets) or (predicted is not None and len(predicted) != len(estimates)):
        raise InvalidInput("permutation_chance needs one target (and prediction) per clip")
    if len(estimates) < 2:
        return {}
    out = {}
    for k, h in hit_matrices(estimates, targets, predicted, tempo_tol).items():
        off = h[~torch.eye(h.shape[0], dtype=torch.bool)]
        off = off[~off.isnan()]
        if off.numel():
            out[k] = float(off.mean())
    return out


def permutation_p_values(estimates: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                         predicted: Optional[Sequence[Optional[Mapping[str, str]]]] = None,
                         tempo_tol: float = 0.06, draws: int = 10000, seed: int = 0) -> Dict[str, float]:
    """One-sided permutation test of each attribute accuracy: the probability that the clips,
    paired with their prompts at random, hit at least as often as with their own prompts.
    ``(1 + #{draws with accuracy >= observed}) / (1 + draws)`` over ``draws`` uniform random
    permutations of the prompts (pairs with no target are left out of both accuracies). Small
    means the clips follow their own prompts beyond what the analyzers' and prompts' marginals
    give; ``{}`` with fewer than 2 clips."""
    n = len(estimates)
    if n < 2:
        return {}
    if draws < 1:
        raise InvalidInput(f"draws must be >= 1, got {draws}")
    g = torch.Generator().manual_seed(int(seed))
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(draws)])  # [draws, n]
    rows = torch.arange(n).expand(draws, n)
    out = {}
    for k, h in hit_matrices(estimates, targets, predicted, tempo_tol).items():
        diag = h.diagonal()
        if bool(diag.isnan().all()):
            continue
        observed = float(diag[~diag.isnan()].mean())
        sample = h[rows, perms]  # [draws, n]
        valid = ~sample.isnan()
        acc = torch.where(valid, sample, torch.zeros((), dtype=sample.dtype)).sum(1) / valid.sum(1).clamp(min=1)
        out[k] = float((1 + int((acc >= observed - 1e-12).sum())) / (1 + draws))
    return out


def attribute_accuracy(clips: Sequence[torch.Tensor], sample_rate: int, targets: Sequence[Mapping[str, Any]],
                       classifier=None, tempo_tol: float = 0.06) -> Dict[str, Any]:
    """Attribute accuracy of generated ``clips`` (each ``[C, T]``) against what their prompts asked
    (``targets[i]``: a dict with any of ``bpm``, ``key`` (``"A minor"``), ``mode``, ``style``,
    ``instrument``).

    Returns ``{"tempo_acc", "key_acc", "mode_acc", "style_acc", "instrument_acc"}`` (fractions of
    the clips that had that target; metrics without any target are left out) plus ``"counts"``.
    Tempo: estimate within ``tempo_tol`` (6 %) of ``bpm``; key: exact tonic and mode; mode: the
    estimated key's mode; style/instrument: the tag classifier's most likely label
    (:func:`clip_attributes` per clip).
    """
    if len(clips) != len(targets):
        raise InvalidInput(f"{len(clips)} clips but {len(targets)} targets")
    wanted = [f for f in ("style", "instrument") if any(t.get(f) for t in targets)]
    if classifier is not None:
        for f in wanted:
            if f not in classifier.fields:
                raise InvalidInput(f"the tag classifier has no {f!r} head (it has {classifier.fields})")
    hits: Dict[str, List[bool]] = {}
    for clip, target in zip(clips, targets):
        predicted = None
        if classifier is not None and wanted:
            pred = classifier.predict(clip[None] if clip.dim() == 2 else clip[None, None], sample_rate)
            predicted = {f: pred[f][0] for f in wanted}
        for name, ok in clip_attributes(clip, sample_rate, target, predicted, tempo_tol)["hits"].items():
            hits.setdefault(name, []).append(bool(ok))
    out: Dict[str, Any] = {k: sum(v) / len(v) for k, v in hits.items()}
    out["counts"] = {k: len(v) for k, v in hits.items()}
    return out
