"""Training task ``tag-classifier``: the evaluation tag classifier behind the KL metric.

The classifier (:class:`~tunecraft.eval.classifiers.TagClassifier`) reads frozen clip
descriptors (the joint model's 10 s-window clip embedding, the chroma profile and the onset
autocorrelation, :mod:`tunecraft.eval.features`), so training is a small MLP fit:

* the descriptors of every clip of the train and validation splits are computed once, when the
  task first needs them (about a minute for 1.9k ten-second clips on one core), and the
  vocabularies of the heads are read off the training sidecars (labels seen at least
  ``min_count`` times);
* item ``i`` of the training set is clip ``i``'s descriptors and targets; with ``transpose``
  the clip is transposed by ``r ~ U{0..11}`` semitones in feature space: the chroma profile is
  rolled by ``r`` bins and the ``key`` (and ``tonic``) targets move up ``r`` semitones (the
  joint embedding carries almost no key information, so it is left as it is). ``r`` comes from
  the global torch RNG that the training loop seeds from ``(seed, epoch, index)``.
* the loss is :func:`~tunecraft.eval.classifiers.tag_loss` (soft-target cross-entropy averaged
  over heads); logs and validation report per-head accuracy.

Export: ``save_pretrained(dir, dtype="float16")`` plus ``eval.json`` with the held-out accuracy
on the recipe's valid split. Recipe ``tag-classifier`` (tunecraft/recipes/tag-classifier.toml).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..config import Config
from ..errors import CheckpointError, ConfigError
from ..train.task import TrainTask, register_task
from .classifiers import (
    FEATURES,
    TagClassifier,
    TagClassifierConfig,
    build_vocab,
    split_features,
    tag_loss,
    tag_targets,
    transpose_key,
)
from .features import FEATURE_DIMS

__all__ = ["TagClassifierTask", "TagClassifierTaskConfig", "TagDataConfig", "TagFeatureDataset"]


@dataclasses.dataclass
class TagClassifierTaskConfig(Config):
    """``[task]`` of ``tag-classifier``: descriptors, heads, widths and the augmentation."""

    joint_model: str = "joint-tiny"
    features: List[str] = dataclasses.field(default_factory=lambda: ["joint", "chroma", "tempo"])
    fields: List[str] = dataclasses.field(default_factory=lambda: ["style", "instrument", "key", "tempo_bucket",
                                                                   "instruments"])
    hidden: int = 256
    dropout: float = 0.1
    min_count: int = 2
    transpose: bool = True

    def __post_init__(self) -> None:
        if not self.features or any(f not in FEATURES for f in self.features):
            raise ConfigError(f"task.features must be names from {FEATURES}, got {self.features}")
        if not self.fields:
            raise ConfigError("task.fields is empty")
        if self.hidden < 1 or not 0.0 <= self.dropout < 1.0 or self.min_count < 1:
            raise ConfigError("task.hidden and task.min_count must be >= 1 and task.dropout in [0, 1)")
        if self.transpose and "chroma" not in self.features:
            raise ConfigError("task.transpose needs the 'chroma' feature")


@dataclasses.dataclass
class TagDataConfig(Config):
    """``[data]`` of ``tag-classifier``: a corpus directory with split manifests (or any source)."""

    source: str = "data/synth"
    train_split: str = "train"
    valid_split: str = "valid"

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("data.source is empty")


class TagFeatureDataset(torch.utils.data.Dataset):
    """``{"x": [D], "<field>": [V_field]}`` items of precomputed descriptors and targets, with the
    random feature-space transposition of the module docstring when ``chroma_slice`` is given."""

    def __init__(self, x: torch.Tensor, targets: Mapping[str, torch.Tensor],
                 chroma_slice: Optional[Tuple[int, int]] = None,
                 key_rotations: Optional[Mapping[str, torch.Tensor]] = None):
        self.x = x.float()
        self.targets = {f: t.float() for f, t in targets.items()}
        self.chroma_slice = chroma_slice
        self.key_rotations = dict(key_rotations or {})

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        x = self.x[index].clone()
        item = {f: t[index].clone() for f, t in self.targets.items()}
        if self.chroma_slice is not None:
            r = int(torch.randint(12, ()).item())
            if r:
                a, b = self.chroma_slice
                x[a:b] = torch.roll(x[a:b], r)
                for f, rot in self.key_rotations.items():
                    moved = torch.zeros_like(item[f])
                    moved[rot[r]] = item[f]  # label v moves to rot[r][v]
                    item[f] = moved
        item["x"] = x
        return item


def _rotation_table(vocab: List[str], field: str) -> Optional[torch.Tensor]:
    """``rot [12, V]``: index of label ``v`` transposed up ``r`` semitones (None if a transposed
    label is missing from the vocabulary)."""
    from .attributes import PITCH_CLASSES, _parse_key

    index = {v: i for i, v in enumerate(vocab)}
    rows = []
    for r in range(12):
        row = []
        for v in vocab:
            if field == "key":
                moved = transpose_key(v, r).lower()
            else:  # tonic
                pc, _ = _parse_key(f"{v} major")
                moved = PITCH_CLASSES[(pc + r) % 12].lower()
            if moved not in index:
                return None
            row.append(index[moved])
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long)


@register_task("tag-classifier")
class TagClassifierTask(TrainTask):
    """Trains the evaluation :class:`TagClassifier` (see the module docstring)."""

    config_class = TagClassifierTaskConfig
    data_config_class = TagDataConfig
    config: TagClassifierTaskConfig
    data: TagDataConfig

    def __init__(self, config: Optional[TagClassifierTaskConfig] = None, data: Optional[TagDataConfig] = None):
        super().__init__(config, data)
        self._splits: Dict[str, Tuple[torch.Tensor, List[dict]]] = {}
        self._joint = None

    # ---- data -----------------------------------------------------------------------------
    def _joint_model(self):
        if self._joint is None and "joint" in self.config.features:
            from ..joint import JointEmbeddingModel

            self._joint = JointEmbeddingModel.from_pretrained(self.config.joint_model)
        return self._joint

    def split(self, name: str) -> Tuple[torch.Tensor, List[dict]]:
        """Descriptors and infos of a split (computed once)."""
        if name not in self._splits:
            if not Path(self.data.source).exists():
                raise ConfigError(f"data source {self.data.source} does not exist (make it with `tunecraft data "
                                  f"synth --n 2000 --duration 10 --seed 1 --out {self.data.source}`)")
            x, infos, _ = split_features(self.data.source, name, self.config.features, self._joint_model())
            self._splits[name] = (x, infos)
        return self._splits[name]

    def model_config(self) -> TagClassifierConfig:
        x, infos = self.split(self.data.train_split)
        vocab = build_vocab(infos, self.config.fields, self.config.min_count)
        if self.config.transpose:  # transposed items may carry any transposition of a seen key
            from .attributes import PITCH_CLASSES, _parse_key

            if "key" in vocab:
                vocab["key"] = sorted({transpose_key(v, r).lower() for v in vocab["key"] for r in range(12)})
            if "tonic" in vocab:
                vocab["tonic"] = sorted({PITCH_CLASSES[(_parse_key(f"{v} major")[0] + r) % 12].lower()
                                         for v in vocab["tonic"] for r in range(12)})
        kept = [f for f in self.config.fields if len(vocab[f]) >= 2]
        if not kept:
            raise ConfigError(f"no field of {self.config.fields} has two labels seen {self.config.min_count}+ times")
        return TagClassifierConfig(input_dim=int(x.shape[1]), hidden=self.config.hidden, dropout=self.config.dropout,
                                   joint_model=self.config.joint_model, fields=kept,
                                   vocab={f: vocab[f] for f in kept}, features=list(self.config.features))

    def _dataset(self, split: str, config: TagClassifierConfig, augment: bool) -> TagFeatureDataset:
        x, infos = self.split(split)
        targets = {f: tag_targets(infos, f, config.vocab[f]) for f in config.fields}
        chroma = None
        rotations: Dict[str, torch.Tensor] = {}
        if augment and self.config.transpose:
            start = 0
            for f in config.features:
                if f == "chroma":
                    break
                start += (config.joint_dim if f == "joint" else FEATURE_DIMS[f])
            chroma = (start, start + FEATURE_DIMS["chroma"])
            for f in ("key", "tonic"):
                if f in config.fields:
                    rot = _rotation_table(config.vocab[f], f)
                    if rot is None:
                        raise ConfigError(f"transposition needs all 12 transpositions of every {f} label in the "
                                          f"vocabulary; got {config.vocab[f]} (set task.transpose = false)")
                    rotations[f] = rot
        return TagFeatureDataset(x, targets, chroma, rotations)

    def build_model(self) -> TagClassifier:
        return TagClassifier(self.model_config())

    def build_train_dataset(self) -> TagFeatureDataset:
        return self._dataset(self.data.train_split, self.model_config(), augment=True)

    def build_valid_dataset(self) -> Optional[TagFeatureDataset]:
        from ..data.manifest import resolve_split

        if not self.data.valid_split or resolve_split(self.data.source, self.data.valid_split) is None:
            return None
        return self._dataset(self.data.valid_split, self.model_config(), augment=False)

    # ---- training -------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Mapping[str, Any], step: int,
                      phase: str = "main") -> Tuple[torch.Tensor, Mapping[str, Any]]:
        logits = model(batch["x"], return_logits=True)
        return tag_loss(logits, {f: batch[f] for f in logits})

    def export(self, model: nn.Module, out_dir: Path) -> None:
        if not isinstance(model, TagClassifier):
            raise CheckpointError(f"tag-classifier exports a TagClassifier, got {type(model).__name__}")
        model = model.cpu().eval()
        with torch.no_grad():  # report the accuracy of the float16-rounded weights that ship
            for p in model.parameters():
                p.copy_(p.half().float())
        model.save_pretrained(out_dir, dtype="float16")
        valid = self.build_valid_dataset()
        if valid is not None:
            targets = {f: valid.targets[f] for f in model.fields}
            with torch.no_grad():
                loss, logs = tag_loss(model(valid.x, return_logits=True), targets)
            report = {"split": self.data.valid_split, "clips": int(valid.x.shape[0]), "loss": float(loss), **logs}
            (Path(out_dir) / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
