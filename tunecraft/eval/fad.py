"""Fréchet Audio Distance (Kilgour et al., 2019) with a pluggable embedding.

Fit a Gaussian to the embeddings of a reference set and of a generated set, and report the
Fréchet (2-Wasserstein) distance between them::

    FAD = ||mu_r - mu_g||^2 + Tr(Sigma_r + Sigma_g - 2 (Sigma_r Sigma_g)^{1/2})

``mu`` is the mean and ``Sigma`` the unbiased covariance (``N - 1``) of the embedding rows.
:func:`frechet_distance` follows the reference implementation (Google's FAD / pytorch-fid): the
matrix square root is ``scipy.linalg.sqrtm(Sigma_r Sigma_g)``; when it is not finite (a singular
product) both covariances get ``eps * I`` added and the root is recomputed; a complex result
whose diagonal has an imaginary part above ``1e-3`` is an error, otherwise the real part is kept.

Embedders (:class:`Embedder`): anything with ``name``, ``dim`` and ``embed(wav, sample_rate) ->
[N, D]``. They return one row per clip (joint model, CLAP) or per frame (VGGish computes one per
0.96 s); FAD pools all rows of a set.

* :class:`JointAudioEmbedder` - tunecraft's joint model audio tower (default, bundle ``joint-tiny``):
  one unit-norm row per clip, mean over 10 s windows.
* :class:`ClapAudioEmbedder` - the audio tower of a local LAION-CLAP checkpoint in transformers'
  ``ClapModel`` format (48 kHz; one projection-space row per clip).
* VGGish and PaSST: their reference weights come from TensorFlow / timm hub downloads; nothing
  here can fetch them, so :func:`get_embedder` raises :class:`~tunecraft.errors.DependencyError`
  with what to install and where to put the weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, List, Optional, Protocol, Tuple, Union, runtime_checkable

import numpy as np
import torch

from ..errors import DependencyError, InvalidInput, TunecraftError

__all__ = [
    "ClapAudioEmbedder",
    "Embedder",
    "FrechetAudioDistance",
    "GaussianStats",
    "JointAudioEmbedder",
    "embed_clips",
    "frechet_audio_distance",
    "frechet_distance",
    "get_embedder",
]


# ---- the distance -------------------------------------------------------------------------------


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (see the module docstring).

    Args:
        mu1, mu2: means ``[D]``.
        sigma1, sigma2: covariances ``[D, D]`` (symmetric positive semi-definite).
        eps: the ``eps * I`` offset used when ``sqrtm(sigma1 sigma2)`` is not finite.
    """
    from scipy import linalg

    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise InvalidInput(f"means must both be [D], got {mu1.shape} and {mu2.shape}")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise InvalidInput(f"covariances must be [{d}, {d}], got {sigma1.shape} and {sigma2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise InvalidInput(f"{name} holds NaN or infinite values")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            worst = float(np.max(np.abs(np.diagonal(covmean).imag)))
            raise TunecraftError(f"Fréchet distance: sqrt(Sigma1 Sigma2) has imaginary part {worst:.3g} "
                                 f"(too few samples for {d} dimensions?)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


@dataclasses.dataclass
class GaussianStats:
    """Mean ``mu [D]``, covariance ``sigma [D, D]`` and row count ``n`` of a set of embeddings."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_embeddings(cls, x: Union[np.ndarray, torch.Tensor]) -> "GaussianStats":
        """Statistics of rows ``x [N, D]`` (``N >= 2``): ``mu = mean``, ``sigma = cov`` with ``N - 1``."""
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().double().numpy()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise InvalidInput(f"need embeddings [N, D] with N >= 2, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise InvalidInput("embeddings hold NaN or infinite values")
        return cls(x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), int(x.shape[0]))

    def save(self, path: Union[str, Path]) -> None:
        """Write ``mu``, ``sigma`` and ``n`` to an ``.npz`` file (reference statistics)."""
        np.savez(str(path), mu=self.mu, sigma=self.sigma, n=np.array(self.n))

    @classmethod
    def load(cls, path: Union[str, Path]) -> "GaussianStats":
        try:
            with np.load(str(path)) as f:
                return cls(f["mu"], f["sigma"], int(f["n"]))
        except (OSError, KeyError, ValueError) as e:
            raise InvalidInput(f"{path} is not a statistics file written by GaussianStats.save ({e})") from None

    def distance(self, other: "GaussianStats", eps: float = 1e-6) -> float:
        """``frechet_distance`` from these statistics to ``other``'s."""
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma, eps)


def frechet_audio_distance(reference: Union[np.ndarray, torch.Tensor], generated: Union[np.ndarray, torch.Tensor],
                           eps: float = 1e-6) -> float:
    """FAD between two sets of embedding rows ``[N_r, D]`` and ``[N_g, D]``."""
    return GaussianStats.from_embeddings(reference).distance(GaussianStats.from_embeddings(generated), eps)


# ---- embedders ----------------------------------------------------------------------------------


@runtime_checkable
class Embedder(Protocol):
    """An audio embedding for FAD: ``embed(wav [B, C, T] | [B, T] | [T], sample_rate) -> [N, D]``."""

    name: str
    dim: int

    def embed(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor: ...


class JointAudioEmbedder:
    """The joint model's audio tower: one unit-norm ``[d]`` row per clip (10 s window mean).

    ``model``: a :class:`~tunecraft.joint.JointEmbeddingModel`, a model directory or a bundle
    name (default ``"joint-tiny"``).
    """

    def __init__(self, model="joint-tiny", batch_size: int = 16):
        from ..joint import JointEmbeddingModel

        if not isinstance(model, JointEmbeddingModel):
            model = JointEmbeddingModel.from_pretrained(model)
        self.model = model.eval()
        self.batch_size = int(batch_size)
        self.name = "joint"
        self.dim = model.embed_dim

    def embed(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.model.embed_audio(wav, sample_rate, batch_size=self.batch_size).cpu()


class ClapAudioEmbedder:
    """Audio tower of a local CLAP checkpoint (transformers ``ClapModel`` directory, e.g. a saved
    ``laion/clap-htsat-unfused`` or ``laion/larger_clap_music``): one L2-normalised
    ``projection_dim`` row per clip. Audio is resampled to the feature extractor's rate (48 kHz);
    clips longer than its ``max_length_s`` (10 s) are cut into windows whose embeddings are
    averaged, as for the joint model."""

    def __init__(self, path: Union[str, Path], device: Optional[Union[str, torch.device]] = None):
        from ..text.encoders import _import_transformers, _quiet_transformers, local_model_dir, read_model_config

        root = local_model_dir(path)
        cfg = read_model_config(root)
        if cfg.get("model_type") != "clap":
            raise DependencyError(f"{root} is not a CLAP checkpoint (model_type {cfg.get('model_type')!r}); "
                                  f"save one with ClapModel.save_pretrained + ClapProcessor.save_pretrained")
        transformers = _import_transformers()
        try:
            with _quiet_transformers():
                self.model = transformers.ClapModel.from_pretrained(str(root)).eval()
                self.extractor = transformers.ClapFeatureExtractor.from_pretrained(str(root))
        except (OSError, ValueError) as e:
            raise DependencyError(f"cannot load the CLAP checkpoint at {root}: {e}") from None
        if device is not None:
            self.model = self.model.to(device)
        self.name = f"clap:{root}"
        self.dim = int(self.model.config.projection_dim)
        self.sample_rate = int(self.extractor.sampling_rate)
        self.window = int(round(float(getattr(self.extractor, "max_length_s", 10)) * self.sample_rate))
        # windows never exceed max_length_s, so nothing is truncated at random; the input layout
        # (4 fused views or 1) must match the audio tower
        self.truncation = "fusion" if getattr(self.model.config.audio_config, "enable_fusion", False) else "rand_trunc"

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        from ..audio import resample

        x = _as_mono_batch(wav)
        if sample_rate != self.sample_rate:
            x = resample(x, int(sample_rate), self.sample_rate)
        starts = list(range(0, max(1, x.shape[-1] - self.window // 10), self.window)) or [0]
        total = None
        for s in starts:
            seg = x[:, s:s + self.window].numpy()
            feats = self.extractor(list(seg), sampling_rate=self.sample_rate, return_tensors="pt",
                                   truncation=self.truncation)
            feats = {k: v.to(self.model.device) for k, v in feats.items()}
            e = self.model.get_audio_features(**feats)
            e = getattr(e, "pooler_output", e)  # transformers 5 may return a model output
            e = torch.nn.functional.normalize(e.float(), dim=-1).cpu()
            total = e if total is None else total + e
        return torch.nn.functional.normalize(total / len(starts), dim=-1)


def _as_mono_batch(wav: torch.Tensor) -> torch.Tensor:
    if not isinstance(wav, torch.Tensor) or not wav.is_floating_point():
        raise InvalidInput("audio must be a floating-point tensor")
    if wav.dim() == 3:
        return wav.float().mean(1).cpu()
    if wav.dim() == 2:
        return wav.float().cpu()
    if wav.dim() == 1:
        return wav.float()[None].cpu()
    raise InvalidInput(f"audio must be [B, C, T], [B, T] or [T], got {tuple(wav.shape)}")


_NEEDS = {
    "vggish": ("VGGish FAD needs the VGGish network and its PCA parameters (Google's TensorFlow release, or a "
               "PyTorch port such as torchvggish's vggish-10086976.pth + vggish_pca_params-970ea276.pth) and a "
               "package that builds the network (e.g. `pip install frechet_audio_distance` with the weights in "
               "its cache directory); tunecraft does not download weights. Use the default 'joint' embedder or "
               "'clap:/path/to/local/clap' instead."),
    "passt": ("PaSST embeddings need `pip install hear21passt` (which builds the network with timm) and its "
              "checkpoint file in the torch hub cache; tunecraft does not download weights. Use the default "
              "'joint' embedder or 'clap:/path/to/local/clap' instead."),
}


def get_embedder(spec: Union[str, Embedder] = "joint") -> Embedder:
    """An embedder from a spec: ``"joint"`` (bundle ``joint-tiny``), ``"joint:/dir"``,
    ``"clap:/dir"``, ``"vggish"``/``"passt"`` (see :data:`_NEEDS`), or an embedder instance."""
    if not isinstance(spec, str):
        if isinstance(spec, Embedder):
            return spec
        raise InvalidInput(f"an embedder spec must be a string or an Embedder, got {type(spec).__name__}")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "joint":
        return JointAudioEmbedder(arg or "joint-tiny")
    if kind == "clap":
        if not arg:
            raise InvalidInput("the CLAP embedder needs a local checkpoint: 'clap:/path/to/clap'")
        return ClapAudioEmbedder(arg)
    if kind in _NEEDS:
        raise DependencyError(_NEEDS[kind])
    raise InvalidInput(f"unknown embedder {spec!r} (use 'joint', 'joint:/dir', 'clap:/dir', 'vggish' or 'passt')")


def embed_clips(embedder: Embedder, clips: Iterable[Tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Stack ``embedder.embed`` rows of clips given as ``(wav [C, T] or [B, C, T], sample_rate)``."""
    rows: List[torch.Tensor] = []
    for wav, sr in clips:
        if wav.dim() == 2:
            wav = wav[None]
        rows.append(embedder.embed(wav, int(sr)).float().cpu())
    if not rows:
        raise InvalidInput("no clips to embed")
    return torch.cat(rows)


class FrechetAudioDistance:
    """FAD with one embedder: ``score(reference_clips, generated_clips)``; reference statistics
    can be computed once (:meth:`stats`) and saved (:meth:`GaussianStats.save`)."""

    def __init__(self, embedder: Union[str, Embedder] = "joint", eps: float = 1e-6):
        self.embedder = get_embedder(embedder)
        self.eps = float(eps)

    def stats(self, clips: Iterable[Tuple[torch.Tensor, int]]) -> GaussianStats:
        return GaussianStats.from_embeddings(embed_clips(self.embedder, clips))

    def score(self, reference: Union[GaussianStats, Iterable[Tuple[torch.Tensor, int]]],
              generated: Union[GaussianStats, Iterable[Tuple[torch.Tensor, int]]]) -> float:
        ref = reference if isinstance(reference, GaussianStats) else self.stats(reference)
        gen = generated if isinstance(generated, GaussianStats) else self.stats(generated)
        if ref.mu.shape != gen.mu.shape:
            raise InvalidInput(f"statistics of different embeddings ({ref.mu.shape[0]}-d vs {gen.mu.shape[0]}-d)")
        return ref.distance(gen, self.eps)
