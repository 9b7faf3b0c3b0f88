"""Tag classifier for evaluation: per-attribute posteriors from audio.

MusicGen reports the KL divergence between the label posteriors of a reference clip and of the
generation for the same prompt, using PaSST's AudioSet classifier. Our corpus has its own labels
(sidecar metadata), so :class:`TagClassifier` is trained on them: one softmax head per attribute
on top of frozen clip descriptors::

    e = [joint(x); chroma(x); tempo(x)]   # config.features: the joint model's clip embedding
                                          # (10 s window mean) plus, optionally, the 12-bin chroma
                                          # profile and the 32-bin onset autocorrelation
                                          # (tunecraft.eval.features)
    h = GELU(W_1 LayerNorm(e) + b_1)      # shared hidden layer [H]
    p_a = softmax(W_a h + b_a)            # one distribution per attribute a

The joint embedding alone separates styles but not keys (a key head on it scores chance); the
chroma profile gives the key, the onset autocorrelation the tempo bucket.

Single-valued fields (``style`` i.e. genre, lead ``instrument``, ``mode``, ``key``) train with
the usual cross-entropy; list fields (``moods``, ``instruments``) with soft targets: the uniform
distribution over the clip's values (so every head's output is a distribution and the KL is well
defined). Derived fields: ``tempo_bucket`` is the composer's tempo word of ``bpm`` (slow < 76 <=
moderate < 108 <= upbeat < 140 <= fast). The same heads give attribute accuracy (style,
instrument) for generations.

Model directories (:mod:`tunecraft.pretrained`): ``config.json`` (class, versions, config with the
vocabularies, the descriptors and the joint model it reads) + ``model.safetensors`` (float16 or
float32). The shipped bundle ``tag-classifier`` is trained by the recipe of the same name
(``tunecraft train tag-classifier``, task :class:`~tunecraft.eval.task.TagClassifierTask`).
Held-out accuracy::

    python -m tunecraft.eval.classifiers evaluate --model tag-classifier --source data/synth --split test

A quick full-batch fit without the training loop: ``python -m tunecraft.eval.classifiers fit
--joint joint-tiny --source data/synth --out runs/tagger``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..errors import AudioFormatError, CheckpointError, ConfigError, InvalidInput, run_main
from ..pretrained import (
    build_from_model_dir,
    read_model_config,
    resolve_model_dir,
    state_for_saving,
    write_model_dir,
)
from .features import FEATURE_DIMS, chroma_profile, tempo_profile

__all__ = [
    "DEFAULT_TAG_FIELDS",
    "FEATURES",
    "TagClassifier",
    "TagClassifierConfig",
    "clip_features",
    "field_values",
    "tag_loss",
    "fit_tag_classifier",
    "tag_targets",
    "transpose_key",
]

#: Sidecar fields the classifier predicts by default (list-valued ones get soft targets).
DEFAULT_TAG_FIELDS = ("style", "instrument", "mode", "moods", "instruments")
#: Clip descriptors a classifier can read, in the order they are concatenated.
FEATURES = ("joint", "chroma", "tempo")
FORMAT_VERSION = 1
_NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # the composer's spelling


@dataclasses.dataclass
class TagClassifierConfig(Config):
    """Input width, hidden width, the joint model it reads (name or path), the descriptors it
    concatenates (``features``, a subset of :data:`FEATURES` in that order) and per-field
    vocabularies."""

    input_dim: int = 128
    hidden: int = 256
    dropout: float = 0.1
    joint_model: str = "joint-tiny"
    fields: List[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_TAG_FIELDS))
    vocab: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    features: List[str] = dataclasses.field(default_factory=lambda: ["joint"])

    def __post_init__(self) -> None:
        if self.input_dim < 1 or self.hidden < 1 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("tag classifier needs input_dim, hidden >= 1 and dropout in [0, 1)")
        if not self.fields:
            raise ConfigError("tag classifier needs at least one field")
        for f in self.fields:
            if len(self.vocab.get(f, [])) < 2:
                raise ConfigError(f"tag field {f!r} needs a vocabulary of at least 2 labels")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown or not self.features or len(set(self.features)) != len(self.features):
            raise ConfigError(f"tag classifier features must be distinct names from {FEATURES}, got {self.features}")
        self.features = [f for f in FEATURES if f in self.features]
        extra = sum(FEATURE_DIMS[f] for f in self.features if f != "joint")
        if ("joint" in self.features and self.input_dim <= extra) or ("joint" not in self.features
                                                                        and self.input_dim != extra):
            raise ConfigError(f"input_dim {self.input_dim} does not fit the features {self.features}")

    @property
    def joint_dim(self) -> int:
        """Width of the joint-embedding part of the input (0 without ``joint``)."""
        return self.input_dim - sum(FEATURE_DIMS[f] for f in self.features if f != "joint")


def tempo_bucket(bpm: Any) -> Optional[str]:
    """The composer's tempo word of a BPM value (``None`` when it is missing or not positive)."""
    from ..data.composer import tempo_word

    try:
        value = float(bpm)
    except (TypeError, ValueError):
        return None
    return tempo_word(value) if value > 0 else None


def field_values(info: Mapping[str, Any], field: str) -> List[str]:
    """Lower-cased labels of ``field`` in a sidecar (``tempo_bucket`` is derived from ``bpm``)."""
    if field == "tempo_bucket":
        v = info.get("tempo_bucket") or tempo_bucket(info.get("bpm"))
    else:
        v = info.get(field)
    if isinstance(v, str):
        return [v.strip().lower()] if v.strip() else []
    if isinstance(v, (list, tuple)):
        return [str(x).strip().lower() for x in v if str(x).strip()]
    return []


_values = field_values


def transpose_key(key: str, semitones: int) -> str:
    """``"Db major"`` transposed up ``semitones`` in the composer's spelling (``"D major"``)."""
    from .attributes import _parse_key

    pc, mode = _parse_key(key)
    return f"{_NOTE_NAMES[(pc + int(semitones)) % 12]} {mode}"


def tag_targets(infos: Sequence[Mapping[str, Any]], field: str, vocab: Sequence[str]) -> torch.Tensor:
    """Target distributions ``[N, V]``: uniform over each clip's values of ``field`` found in
    ``vocab``; rows with no known value are all zero (and are ignored by the loss/accuracy)."""
    index = {v: i for i, v in enumerate(vocab)}
    out = torch.zeros(len(infos), len(vocab))
    for row, info in enumerate(infos):
        hits = [index[v] for v in field_values(info, field) if v in index]
        if hits:
            out[row, hits] = 1.0 / len(hits)
    return out


@torch.no_grad()
def clip_features(wav: torch.Tensor, sample_rate: int, features: Sequence[str], joint=None,
                  joint_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The concatenated descriptors ``[B, D]`` of ``wav [B, C, T]`` (order of :data:`FEATURES`).
    ``joint_embedding [B, d]``, when given, is used instead of running ``joint`` again."""
    parts = []
    for f in FEATURES:
        if f not in features:
            continue
        if f == "joint":
            if joint_embedding is not None:
                parts.append(joint_embedding.float().cpu())
                continue
            if joint is None:
                raise InvalidInput("the 'joint' feature needs a joint model")
            parts.append(joint.embed_audio(wav, sample_rate).float().cpu())
        elif f == "chroma":
            parts.append(chroma_profile(wav, sample_rate))
        else:
            parts.append(tempo_profile(wav, sample_rate).float())
    return torch.cat(parts, dim=-1)


def tag_loss(logits: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Mean over fields of the soft-target cross-entropy ``-sum_v t_v log p_v`` over rows that
    have a target; returns the loss and per-field accuracy (argmax in the target's support)."""
    total = None
    logs: Dict[str, float] = {}
    used = 0
    for f, z in logits.items():
        t = targets[f].to(z.device)
        has = t.sum(-1) > 0
        if not has.any():
            continue
        ce = -(t[has] * F.log_softmax(z[has].float(), dim=-1)).sum(-1).mean()
        total = ce if total is None else total + ce
        used += 1
        hit = t[has].gather(1, z[has].argmax(-1, keepdim=True)).squeeze(1) > 0
        logs[f"acc_{f}"] = float(hit.float().mean())
    if used == 0:
        raise InvalidInput("no row has a target for any field")
    return total / used, logs


class TagClassifier(nn.Module):
    """Descriptors ``[B, input_dim]`` -> ``{field: probabilities [B, V_field]}`` (see the module docstring)."""

    CLASS_NAME = "TagClassifier"
    VERSION = 1

    def __init__(self, config: TagClassifierConfig, joint=None):
        super().__init__()
        self.config = config
        self.trunk = nn.Sequential(nn.LayerNorm(config.input_dim), nn.Linear(config.input_dim, config.hidden),
                                   nn.GELU(), nn.Dropout(config.dropout))
        self.heads = nn.ModuleDict({f: nn.Linear(config.hidden, len(config.vocab[f])) for f in config.fields})
        object.__setattr__(self, "_joint", joint)

    @property
    def fields(self) -> List[str]:
        return list(self.config.fields)

    @property
    def joint(self):
        """The joint model whose clip embeddings feed the classifier (loaded on first use)."""
        if self._joint is None:
            from ..joint import JointEmbeddingModel

            object.__setattr__(self, "_joint", JointEmbeddingModel.from_pretrained(self.config.joint_model))
        return self._joint

    def use_joint(self, joint) -> "TagClassifier":
        """Share an already loaded joint model (it must be the one ``config.joint_model`` names)."""
        if joint is not None and "joint" in self.config.features and joint.embed_dim != self.config.joint_dim:
            raise InvalidInput(f"the joint model gives {joint.embed_dim}-d embeddings, the classifier reads "
                               f"{self.config.joint_dim}")
        object.__setattr__(self, "_joint", joint)
        return self

    def logits(self, emb: torch.Tensor) -> Dict[str, torch.Tensor]:
        if emb.dim() != 2 or emb.shape[1] != self.config.input_dim:
            raise InvalidInput(f"expected embeddings [B, {self.config.input_dim}], got {tuple(emb.shape)}")
        h = self.trunk(emb.float())
        return {f: head(h) for f, head in self.heads.items()}

    def forward(self, emb: torch.Tensor, return_logits: bool = False) -> Dict[str, torch.Tensor]:
        """Posteriors ``{field: [B, V]}`` (softmax) of descriptors ``[B, input_dim]`` (the logits
        with ``return_logits``)."""
        z = self.logits(emb)
        return z if return_logits else {f: torch.softmax(v, dim=-1) for f, v in z.items()}

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, sample_rate: int, joint_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The classifier's input descriptors ``[B, input_dim]`` of ``wav [B, C, T]`` at ``sample_rate``
        (``joint_embedding``: the clips' joint embeddings when the caller already has them)."""
        joint = self.joint if "joint" in self.config.features and joint_embedding is None else None
        x = clip_features(wav, sample_rate, self.config.features, joint, joint_embedding)
        if x.shape[-1] != self.config.input_dim:
            raise CheckpointError(f"descriptors {self.config.features} give {x.shape[-1]} values, the classifier "
                                  f"was built for {self.config.input_dim} (another joint model?)")
        return x.to(self.trunk[1].weight.device)

    @torch.no_grad()
    def posteriors(self, wav: torch.Tensor, sample_rate: int,
                   joint_embedding: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """``{field: [B, V]}`` label distributions of audio (see :meth:`embed`)."""
        was = self.training
        self.eval()
        try:
            return self(self.embed(wav, sample_rate, joint_embedding))
        finally:
            self.train(was)

    @torch.no_grad()
    def predict(self, wav: torch.Tensor, sample_rate: int) -> Dict[str, List[str]]:
        """Most likely label per field, ``{field: [B labels]}``."""
        post = self.posteriors(wav, sample_rate)
        return {f: [self.config.vocab[f][int(i)] for i in p.argmax(-1)] for f, p in post.items()}

    def loss(self, emb: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, float]]:
        """:func:`tag_loss` of the logits of ``emb``."""
        return tag_loss(self.logits(emb), targets)

    # ---- model directory --------------------------------------------------------------
    def save_pretrained(self, path: Union[str, Path], dtype: str = "float32") -> Path:
        """Write ``config.json`` + ``model.safetensors`` into directory ``path`` (``dtype="float16"``
        halves the stored parameters; they load back as float32)."""
        from .. import __version__

        state = state_for_saving(self, dtype)
        meta = {"class": self.CLASS_NAME, "format_version": FORMAT_VERSION, "model_version": self.VERSION,
                "tunecraft_version": __version__, "dtype": dtype, "config": self.config.to_dict()}
        return write_model_dir(path, meta, state)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path] = "tag-classifier", joint=None) -> "TagClassifier":
        """Load a model directory or bundle name (default ``tag-classifier``), checking class,
        versions, tensor names and shapes. Returns the model in eval mode."""
        path = resolve_model_dir(path)
        cfg_file, meta = read_model_config(path)
        if meta["class"] != cls.CLASS_NAME:
            raise CheckpointError(f"{path} holds a {meta['class']!r}, not a {cls.CLASS_NAME}")
        return build_from_model_dir(path, meta, cfg_file, config_class=TagClassifierConfig,
                                    model_version=cls.VERSION, format_version=FORMAT_VERSION,
                                    build=lambda config: cls(config, joint=joint))


def build_vocab(infos: Sequence[Mapping[str, Any]], fields: Sequence[str], min_count: int = 1) -> Dict[str, List[str]]:
    """Sorted label vocabularies per field (labels seen at least ``min_count`` times)."""
    vocab: Dict[str, List[str]] = {}
    for f in fields:
        counts: Dict[str, int] = {}
        for info in infos:
            for v in set(_values(info, f)):
                counts[v] = counts.get(v, 0) + 1
        vocab[f] = sorted(v for v, c in counts.items() if c >= min_count)
    return vocab


def fit_tag_classifier(embeddings: torch.Tensor, infos: Sequence[Mapping[str, Any]],
                       fields: Sequence[str] = DEFAULT_TAG_FIELDS, joint_model: str = "joint-tiny",
                       hidden: int = 256, epochs: int = 200, lr: float = 3e-3, weight_decay: float = 1e-3,
                       seed: int = 0, min_count: int = 2, features: Sequence[str] = ("joint",)) -> TagClassifier:
    """Train a :class:`TagClassifier` on clip descriptors ``[N, D]`` (``features``, concatenated
    as :func:`clip_features` does) and their sidecar ``infos`` (full-batch AdamW, ``epochs``
    steps; deterministic for ``seed``)."""
    if embeddings.dim() != 2 or embeddings.shape[0] != len(infos):
        raise InvalidInput(f"need embeddings [N, d] with one info per row, got {tuple(embeddings.shape)} and "
                           f"{len(infos)} infos")
    vocab = build_vocab(infos, fields, min_count)
    kept = [f for f in fields if len(vocab[f]) >= 2]
    if not kept:
        raise InvalidInput(f"no field of {list(fields)} has two or more labels in the data")
    config = TagClassifierConfig(input_dim=int(embeddings.shape[1]), hidden=hidden, joint_model=joint_model,
                                 fields=kept, vocab={f: vocab[f] for f in kept}, features=list(features))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TagClassifier(config)
        targets = {f: tag_targets(infos, f, config.vocab[f]) for f in kept}
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        x = embeddings.float()
        model.train()
        for _ in range(epochs):
            loss, _ = model.loss(x, targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def split_features(source: Union[str, Path], split: Optional[str], features: Sequence[str], joint=None,
                   progress: bool = False) -> Tuple[torch.Tensor, List[dict], List[Tuple[str, str]]]:
    """Descriptors ``[N, D]`` and sidecar infos of the clips of ``split`` of a corpus (or of every
    clip of a manifest/folder when ``split`` is ``None`` or the corpus has no such split file);
    unreadable files are skipped and returned as ``(path, reason)``."""
    from ..audio.io import load_audio
    from ..data import AudioDataset, load_info
    from ..data.manifest import resolve_split
    from .features import FEATURE_RATE

    manifest = (resolve_split(source, split) if split else None) or source
    metas = AudioDataset(manifest, return_info=False, check_headers=True).metas
    rate = joint.sample_rate if joint is not None else FEATURE_RATE
    rows, infos, skipped = [], [], []
    iterator = metas
    if progress:
        from tqdm import tqdm

        iterator = tqdm(metas, desc=f"features {split or ''}".strip(), unit="clip", file=sys.stderr)
    for m in iterator:
        try:
            wav, _ = load_audio(m.path, sample_rate=rate, channels=1)
            rows.append(clip_features(wav[None], rate, features, joint))
            infos.append(load_info(m))
        except (AudioFormatError, InvalidInput) as e:
            skipped.append((m.path, str(e)))
    if not rows:
        raise InvalidInput(f"no readable clip in {manifest}")
    return torch.cat(rows), infos, skipped


def evaluate_tag_classifier(model: TagClassifier, features: torch.Tensor, infos: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """Per-field accuracy (argmax in the target's support) and the mean loss on held-out clips."""
    targets = {f: tag_targets(infos, f, model.config.vocab[f]) for f in model.fields}
    with torch.no_grad():
        loss, logs = model.eval().loss(features, targets)
    return {"loss": float(loss), **logs}


def _fit_or_evaluate(args: argparse.Namespace) -> None:
    """The work of ``main()``: fit (``args.command == "fit"``) or load the classifier, print its report."""
    from ..joint import JointEmbeddingModel

    if args.command == "fit":
        features = [f.strip() for f in args.features.split(",") if f.strip()]
        joint = JointEmbeddingModel.from_pretrained(args.joint) if "joint" in features else None
        x, infos, _ = split_features(args.source, args.train_split, features, joint)
        fields = [f.strip() for f in args.fields.split(",") if f.strip()]
        model = fit_tag_classifier(x, infos, fields=fields, joint_model=args.joint, epochs=args.epochs,
                                   features=features)
        model.save_pretrained(args.out)
        train_clips = len(infos)
    else:
        model = TagClassifier.from_pretrained(args.model)
        train_clips = None
    joint = model.joint if "joint" in model.config.features else None
    split = args.eval_split if args.command == "fit" else args.split
    x, infos, skipped = split_features(args.source, split, model.config.features, joint)
    report = {"model": getattr(args, "model", args.out if args.command == "fit" else None), "split": split,
              "clips": len(infos), "skipped": len(skipped), **evaluate_tag_classifier(model, x, infos)}
    if train_clips is not None:
        report["train_clips"] = train_clips
    print(json.dumps(report, indent=2))


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tunecraft.eval.classifiers fit|evaluate ...`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m tunecraft.eval.classifiers",
                                     description="fit or evaluate the evaluation tag classifier on a captioned corpus")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="quick full-batch fit on one split, report accuracy on another")
    p.add_argument("--joint", default="joint-tiny", help="joint model directory or bundle name")
    p.add_argument("--source", default="data/synth")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--features", default="joint,chroma,tempo", help="comma-separated descriptors")
    p.add_argument("--fields", default="style,instrument,key,tempo_bucket,instruments")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=200)
    e = sub.add_parser("evaluate", help="held-out accuracy of a trained classifier")
    e.add_argument("--model", default="tag-classifier", help="model directory or bundle name")
    e.add_argument("--source", default="data/synth")
    e.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    return run_main(lambda: _fit_or_evaluate(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
