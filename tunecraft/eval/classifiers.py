"""Tag classifier for evaluation: per-attribute posteriors from audio.

MusicGen reports the KL divergence between the label posteriors of a reference clip and of the
generation for the same prompt, using PaSST's AudioSet classifier. Our corpus has its own labels
(sidecar metadata), so :class:`TagClassifier` is trained on them: one softmax head per attribute
on top of a frozen audio embedding (the joint model's clip embedding, :mod:`tunecraft.joint`)::

    h = GELU(W_1 e + b_1)                 # e: clip embedding [d], shared hidden layer [H]
    p_a = softmax(W_a h + b_a)            # one distribution per attribute a

Single-valued fields (``style`` i.e. genre, lead ``instrument``, ``mode``) train with the usual
cross-entropy; list fields (``moods``, ``instruments``) with soft targets: the uniform
distribution over the clip's values (so every head's output is a distribution and the KL is
well defined). The same heads give attribute accuracy (style, instrument) for generations.

Model directories: ``config.json`` (class, version, config with the vocabularies and the joint
model it reads) + ``model.safetensors``. Fit one with::

    python -m tunecraft.eval.classifiers fit --joint joint-tiny --source data/synth --out runs/tagger
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
from ..errors import CheckpointError, ConfigError, InvalidInput, TunecraftError

__all__ = ["DEFAULT_TAG_FIELDS", "TagClassifier", "TagClassifierConfig", "fit_tag_classifier", "tag_targets"]

#: Sidecar fields the classifier predicts by default (list-valued ones get soft targets).
DEFAULT_TAG_FIELDS = ("style", "instrument", "mode", "moods", "instruments")


@dataclasses.dataclass
class TagClassifierConfig(Config):
    """Input width, hidden width, the joint model it reads (name or path) and per-field vocabularies."""

    input_dim: int = 128
    hidden: int = 256
    dropout: float = 0.1
    joint_model: str = "joint-tiny"
    fields: List[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_TAG_FIELDS))
    vocab: Dict[str, List[str]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.input_dim < 1 or self.hidden < 1 or not 0.0 <= self.dropout < 1.0:
            raise ConfigError("tag classifier needs input_dim, hidden >= 1 and dropout in [0, 1)")
        if not self.fields:
            raise ConfigError("tag classifier needs at least one field")
        for f in self.fields:
            if len(self.vocab.get(f, [])) < 2:
                raise ConfigError(f"tag field {f!r} needs a vocabulary of at least 2 labels")


def _values(info: Mapping[str, Any], field: str) -> List[str]:
    v = info.get(field)
    if isinstance(v, str):
        return [v.strip().lower()] if v.strip() else []
    if isinstance(v, (list, tuple)):
        return [str(x).strip().lower() for x in v if str(x).strip()]
    return []


def tag_targets(infos: Sequence[Mapping[str, Any]], field: str, vocab: Sequence[str]) -> torch.Tensor:
    """Target distributions ``[N, V]``: uniform over each clip's values of ``field`` found in
    ``vocab``; rows with no known value are all zero (and are ignored by the loss/accuracy)."""
    index = {v: i for i, v in enumerate(vocab)}
    out = torch.zeros(len(infos), len(vocab))
    for row, info in enumerate(infos):
        hits = [index[v] for v in _values(info, field) if v in index]
        if hits:
            out[row, hits] = 1.0 / len(hits)
    return out


class TagClassifier(nn.Module):
    """Embedding ``[B, input_dim]`` -> ``{field: probabilities [B, V_field]}`` (see the module docstring)."""

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

    def logits(self, emb: torch.Tensor) -> Dict[str, torch.Tensor]:
        if emb.dim() != 2 or emb.shape[1] != self.config.input_dim:
            raise InvalidInput(f"expected embeddings [B, {self.config.input_dim}], got {tuple(emb.shape)}")
        h = self.trunk(emb.float())
        return {f: head(h) for f, head in self.heads.items()}

    def forward(self, emb: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Posteriors ``{field: [B, V]}`` (softmax) of embeddings ``[B, input_dim]``."""
        return {f: torch.softmax(z, dim=-1) for f, z in self.logits(emb).items()}

    @torch.no_grad()
    def embed(self, wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Joint clip embeddings ``[B, d]`` of ``wav [B, C, T]`` at ``sample_rate``."""
        return self.joint.embed_audio(wav, sample_rate).to(self.trunk[1].weight.device)

    @torch.no_grad()
    def posteriors(self, wav: torch.Tensor, sample_rate: int) -> Dict[str, torch.Tensor]:
        """``{field: [B, V]}`` label distributions of audio."""
        was = self.training
        self.eval()
        try:
            return self(self.embed(wav, sample_rate))
        finally:
            self.train(was)

    @torch.no_grad()
    def predict(self, wav: torch.Tensor, sample_rate: int) -> Dict[str, List[str]]:
        """Most likely label per field, ``{field: [B labels]}``."""
        post = self.posteriors(wav, sample_rate)
        return {f: [self.config.vocab[f][int(i)] for i in p.argmax(-1)] for f, p in post.items()}

    def loss(self, emb: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Mean over fields of the soft-target cross-entropy ``-sum_v t_v log p_v`` over rows that
        have a target; returns the loss and per-field accuracy (argmax in the target's support)."""
        logits = self.logits(emb)
        total = emb.new_zeros(())
        logs: Dict[str, float] = {}
        used = 0
        for f, z in logits.items():
            t = targets[f].to(z.device)
            has = t.sum(-1) > 0
            if not has.any():
                continue
            ce = -(t[has] * F.log_softmax(z[has], dim=-1)).sum(-1).mean()
            total = total + ce
            used += 1
            hit = t[has].gather(1, z[has].argmax(-1, keepdim=True)).squeeze(1) > 0
            logs[f"acc_{f}"] = float(hit.float().mean())
        if used == 0:
            raise InvalidInput("no row has a target for any field")
        return total / used, logs

    # ---- model directory --------------------------------------------------------------
    def save_pretrained(self, path: Union[str, Path]) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(path / "model.safetensors"), metadata={"format": "pt", "class": self.CLASS_NAME})
        meta = {"class": self.CLASS_NAME, "model_version": self.VERSION, "config": self.config.to_dict()}
        (path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], joint=None) -> "TagClassifier":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from ..pretrained import load_state_checked, resolve_model_dir

        path = resolve_model_dir(path)
        try:
            meta = json.loads((path / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}/config.json is missing or invalid: {e}") from None
        if not isinstance(meta, dict) or meta.get("class") != cls.CLASS_NAME:
            raise CheckpointError(f"{path} does not hold a {cls.CLASS_NAME}")
        if meta.get("model_version") != cls.VERSION:
            raise CheckpointError(f"{path} holds {cls.CLASS_NAME} version {meta.get('model_version')!r}, "
                                  f"this tunecraft reads {cls.VERSION}")
        try:
            config = TagClassifierConfig.from_dict(meta.get("config", {}))
        except ConfigError as e:
            raise CheckpointError(f"{path}/config.json: {e}") from None
        try:
            state = load_file(str(path / "model.safetensors"))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}/model.safetensors is missing or corrupt: {e}") from None
        model = cls(config, joint=joint)
        load_state_checked(model, state, str(path / "model.safetensors"))
        return model.eval()


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
                       seed: int = 0, min_count: int = 2) -> TagClassifier:
    """Train a :class:`TagClassifier` on clip embeddings ``[N, d]`` and their sidecar ``infos``
    (full-batch AdamW, ``epochs`` steps; deterministic for ``seed``)."""
    if embeddings.dim() != 2 or embeddings.shape[0] != len(infos):
        raise InvalidInput(f"need embeddings [N, d] with one info per row, got {tuple(embeddings.shape)} and "
                           f"{len(infos)} infos")
    vocab = build_vocab(infos, fields, min_count)
    kept = [f for f in fields if len(vocab[f]) >= 2]
    if not kept:
        raise InvalidInput(f"no field of {list(fields)} has two or more labels in the data")
    config = TagClassifierConfig(input_dim=int(embeddings.shape[1]), hidden=hidden, joint_model=joint_model,
                                 fields=kept, vocab={f: vocab[f] for f in kept})
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


def _load_split(source: str, split: str, sample_rate: int) -> Tuple[List[torch.Tensor], List[dict]]:
    from ..audio.io import load_audio
    from ..data.manifest import resolve_split
    from ..data import AudioDataset, load_info

    manifest = resolve_split(source, split) or source
    metas = AudioDataset(manifest, return_info=False, check_headers=True).metas
    wavs, infos = [], []
    for m in metas:
        wav, _ = load_audio(m.path, sample_rate=sample_rate, channels=1)
        wavs.append(wav)
        infos.append(load_info(m))
    return wavs, infos


@torch.no_grad()
def embed_waves(joint, wavs: Sequence[torch.Tensor], sample_rate: int, batch_size: int = 16) -> torch.Tensor:
    """Clip embeddings ``[N, d]`` of mono ``[1, T]`` waves (equal-length runs are batched)."""
    out, i = [], 0
    while i < len(wavs):
        j = i + 1
        while j < len(wavs) and j - i < batch_size and wavs[j].shape[-1] == wavs[i].shape[-1]:
            j += 1
        out.append(joint.embed_audio(torch.stack(wavs[i:j]), sample_rate).cpu())
        i = j
    return torch.cat(out)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tunecraft.eval.classifiers fit --joint NAME --source DIR --out DIR``."""
    parser = argparse.ArgumentParser(prog="python -m tunecraft.eval.classifiers",
                                     description="fit the evaluation tag classifier on a captioned corpus")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fit", help="train on one split, report accuracy on another")
    p.add_argument("--joint", default="joint-tiny", help="joint model directory or bundle name")
    p.add_argument("--source", default="data/synth")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        from ..joint import JointEmbeddingModel

        joint = JointEmbeddingModel.from_pretrained(args.joint)
        sr = joint.sample_rate
        wavs, infos = _load_split(args.source, args.train_split, sr)
        model = fit_tag_classifier(embed_waves(joint, wavs, sr), infos, joint_model=args.joint, epochs=args.epochs)
        model.save_pretrained(args.out)
        ev_wavs, ev_infos = _load_split(args.source, args.eval_split, sr)
        emb = embed_waves(joint, ev_wavs, sr)
        targets = {f: tag_targets(ev_infos, f, model.config.vocab[f]) for f in model.fields}
        with torch.no_grad():
            _, logs = model.loss(emb, targets)
        print(json.dumps({"train_clips": len(infos), "eval_split": args.eval_split, "eval_clips": len(ev_infos),
                          **logs}, indent=2))
    except TunecraftError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
