"""tunecraft.eval: objective metrics of generated music.

* :mod:`~tunecraft.eval.fad` - Fréchet Audio Distance with a pluggable embedding (joint model by
  default, CLAP from a local checkpoint).
* :mod:`~tunecraft.eval.metrics` - paired KL divergence of tag posteriors, text-audio similarity
  (MuLan/CLAP score), chroma cosine similarity, attribute accuracy.
* :mod:`~tunecraft.eval.classifiers` - the tag classifier (style, instrument, key, tempo bucket,
  instrument set; shipped as the ``tag-classifier`` bundle) behind the KL and the style/instrument
  accuracies; :mod:`~tunecraft.eval.task` trains it (recipe ``tag-classifier``).
* :mod:`~tunecraft.eval.attributes` - tempo and key estimators and their match rules.
* :mod:`~tunecraft.eval.runner` / :mod:`~tunecraft.eval.report` - ``tunecraft eval``: generate a
  prompt set (:mod:`~tunecraft.eval.prompt_set`, the shipped benchmark) with a system, score it,
  write ``report.json`` and ``report.html``.
"""

from .attributes import estimate_key, estimate_tempo, key_match, tempo_match
from .classifiers import (
    DEFAULT_TAG_FIELDS,
    TagClassifier,
    TagClassifierConfig,
    clip_features,
    fit_tag_classifier,
    tag_targets,
    transpose_key,
)
from .fad import (
    ClapAudioEmbedder,
    Embedder,
    FrechetAudioDistance,
    GaussianStats,
    JointAudioEmbedder,
    embed_clips,
    frechet_audio_distance,
    frechet_distance,
    get_embedder,
)
from .metrics import (
    KLDivergenceMetric,
    attribute_accuracy,
    chroma_cosine_similarity,
    clip_attributes,
    kl_divergence,
    paired_kl_divergence,
    text_audio_similarity,
)

__all__ = [
    "ClapAudioEmbedder",
    "DEFAULT_TAG_FIELDS",
    "Embedder",
    "FrechetAudioDistance",
    "GaussianStats",
    "JointAudioEmbedder",
    "KLDivergenceMetric",
    "TagClassifier",
    "TagClassifierConfig",
    "attribute_accuracy",
    "chroma_cosine_similarity",
    "clip_attributes",
    "clip_features",
    "embed_clips",
    "estimate_key",
    "estimate_tempo",
    "fit_tag_classifier",
    "frechet_audio_distance",
    "frechet_distance",
    "get_embedder",
    "key_match",
    "kl_divergence",
    "paired_kl_divergence",
    "tag_targets",
    "tempo_match",
    "text_audio_similarity",
    "transpose_key",
]
