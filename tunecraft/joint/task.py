"""Training task ``joint``: the MuLan-like joint embedding on a captioned corpus.

Data (``[data]``, :class:`JointDataConfig`): a corpus directory written by ``tunecraft data synth``
(``train.jsonl``/``valid.jsonl`` beside ``data.jsonl``; every sidecar has a ``captions`` list),
or any source :class:`~tunecraft.data.AudioDataset` reads (captions then come from the sidecar's
``captions``, else its ``description``, else a ``.txt`` caption). Files without any caption are
left out with a warning.

Training item ``i`` (:class:`CaptionedClipDataset`): a ``crop_seconds`` crop of file ``i`` at a
random offset, mono at the model's rate, paired with one of the file's captions drawn uniformly.
Both draws use the global torch RNG, which the training loop seeds from ``(seed, epoch, index)``,
so the pair is a pure function of ``(seed, epoch, index)``. Validation items use fixed crops
(offset from ``(data.seed, index)``) and the file's first caption.

The loss is the symmetric InfoNCE of :func:`~tunecraft.joint.model.clip_loss` over the batch;
logs carry in-batch retrieval accuracy both ways and the logit scale.

Export (:meth:`JointTask.export`): round parameters to float16 precision, embed ``fit_clips``
train-split clips (whole files, 10 s window averaging) and fit the MuLan tokenizer on them, then
``save_pretrained(dir, dtype="float16")`` with the tokenizer inside. Export an unfinished run
with ``tunecraft export runs/joint-tiny tunecraft/bundles/joint-tiny``
(that exporter works for every task).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..config import Config
from ..errors import AudioFormatError, CheckpointError, ConfigError, InvalidInput, TunecraftError
from ..train.task import ClipDataConfig, TrainTask, register_task
from .model import JointConfig, JointEmbeddingModel
from .tokenizer import MuLanTokenizer, MuLanTokenizerConfig

__all__ = ["CaptionedClipDataset", "JointDataConfig", "JointTask", "JointTaskConfig", "captions_of", "collate_pairs"]


@dataclasses.dataclass
class JointTaskConfig(Config):
    """``[task]`` of ``joint``: the model, and the tokenizer fitted at export on ``fit_clips``
    train-split clips (0 skips the tokenizer)."""

    model: JointConfig = dataclasses.field(default_factory=JointConfig)
    tokenizer: MuLanTokenizerConfig = dataclasses.field(default_factory=MuLanTokenizerConfig)
    fit_clips: int = 1024

    def __post_init__(self) -> None:
        if self.fit_clips < 0:
            raise ConfigError(f"fit_clips must be >= 0, got {self.fit_clips}")
        if self.tokenizer.dim != self.model.embed_dim:
            raise ConfigError(f"tokenizer.dim ({self.tokenizer.dim}) must equal model.embed_dim "
                              f"({self.model.embed_dim})")
        if 0 < self.fit_clips < self.tokenizer.bins:
            raise ConfigError(f"fit_clips ({self.fit_clips}) must be >= tokenizer.bins ({self.tokenizer.bins})")


@dataclasses.dataclass
class JointDataConfig(ClipDataConfig):
    """``[data]`` of ``joint``: source, split names, crop length (s), validation size, seed."""

    crop_seconds: float = 5.0
    valid_clips: int = 64


def captions_of(info: Mapping[str, Any]) -> List[str]:
    """The non-empty captions of a sidecar: its ``captions`` list, else ``[description]``."""
    caps = info.get("captions")
    out = [c.strip() for c in caps if isinstance(c, str) and c.strip()] if isinstance(caps, (list, tuple)) else []
    if not out:
        desc = info.get("description")
        if isinstance(desc, str) and desc.strip():
            out = [desc.strip()]
    return out


class CaptionedClipDataset(torch.utils.data.Dataset):
    """``{"wav": [1, T], "text": str, "index": int}`` items: a mono ``segment``-second crop of
    file ``i`` at ``sample_rate`` and one of its captions (see the module docstring).

    ``metas`` are :class:`~tunecraft.data.AudioMeta`; ``captions[i]`` the captions of file ``i``.
    Files that fail to load are replaced by the next loadable one (reported once as a warning).
    """

    def __init__(self, metas: List[Any], captions: List[List[str]], segment: float, sample_rate: int,
                 random: bool, seed: int = 0):
        if not metas or len(metas) != len(captions):
            raise InvalidInput("CaptionedClipDataset needs one caption list per file and at least one file")
        if any(not c for c in captions):
            raise InvalidInput("every file needs at least one caption")
        self.metas = list(metas)
        self.captions = [list(c) for c in captions]
        self.segment = float(segment)
        self.sample_rate = int(sample_rate)
        self.random = bool(random)
        self.seed = int(seed)
        self.num_samples = int(round(self.segment * self.sample_rate))
        self._bad: set = set()

    def __len__(self) -> int:
        return len(self.metas)

    def _draws(self, index: int) -> Tuple[float, int]:
        slack = max(0.0, float(self.metas[index].duration) - self.segment)
        if self.random:
            u = float(torch.rand(()).item())
            k = int(torch.randint(len(self.captions[index]), ()).item())
            return u * slack, k
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return float(torch.rand((), generator=g).item()) * slack, 0

    def _load(self, index: int) -> Dict[str, Any]:
        from ..audio.io import fit_length, load_audio

        offset, k = self._draws(index)
        wav, _ = load_audio(self.metas[index].path, sample_rate=self.sample_rate, channels=1, offset=offset,
                            duration=self.segment, pad=True)
        if not torch.isfinite(wav).all():
            raise AudioFormatError(f"{self.metas[index].path} holds NaN or infinite samples")
        wav = fit_length(wav.float(), self.num_samples).clamp(-1.0, 1.0)
        return {"wav": wav, "text": self.captions[index][k], "index": index, "offset": offset}

    def __getitem__(self, index: int) -> Dict[str, Any]:
        from ..data.dataset import load_first_good

        return load_first_good(index, self.metas, self._bad, self._load)


def collate_pairs(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack ``wav`` to ``[B, 1, T]``, keep ``text`` as a list of ``B`` strings, ``index`` ``[B]``."""
    return {"wav": torch.stack([it["wav"] for it in items]), "text": [it["text"] for it in items],
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}


def load_captioned(source: Any, what: str) -> Tuple[List[Any], List[List[str]]]:
    """(metas, captions) of a source, leaving out (with a warning) files without captions."""
    from ..data import load_info, source_metas

    metas = source_metas(source, what)
    kept, caps, dropped = [], [], 0
    for m in metas:
        try:
            c = captions_of(load_info(m))
        except InvalidInput:
            c = []
        if c:
            kept.append(m)
            caps.append(c)
        else:
            dropped += 1
    if dropped:
        warnings.warn(f"{what}: left out {dropped} file(s) without captions", stacklevel=2)
    if not kept:
        raise ConfigError(f"{what}: no file of {source} has a caption (sidecar 'captions'/'description' or .txt)")
    return kept, caps


@register_task("joint")
class JointTask(TrainTask):
    """Contrastive training of :class:`~tunecraft.joint.model.JointEmbeddingModel` (module docstring)."""

    config_class = JointTaskConfig
    data_config_class = JointDataConfig
    config: JointTaskConfig
    data: JointDataConfig

    def __init__(self, config: Optional[JointTaskConfig] = None, data: Optional[JointDataConfig] = None):
        super().__init__(config, data)
        if self.config.model.tokenizer is not None:
            raise ConfigError("task.model.tokenizer must be unset: the tokenizer is fitted at export "
                              "(configure it in [task.tokenizer])")
        self._train: Optional[Tuple[List[Any], List[List[str]]]] = None

    @property
    def sample_rate(self) -> int:
        return self.config.model.audio.sample_rate

    def build_model(self) -> JointEmbeddingModel:
        return JointEmbeddingModel(self.config.model)

    def _split_source(self, split: str) -> Optional[Any]:
        from ..data.manifest import split_source

        return split_source(self.data.source, split, self.data.train_split)

    def train_items(self) -> Tuple[List[Any], List[List[str]]]:
        if self._train is None:
            self._train = load_captioned(self._split_source(self.data.train_split), "training data")
        return self._train

    def build_train_dataset(self) -> CaptionedClipDataset:
        metas, caps = self.train_items()
        return CaptionedClipDataset(metas, caps, self.data.crop_seconds, self.sample_rate, random=True,
                                    seed=self.data.seed)

    def build_valid_dataset(self) -> Optional[CaptionedClipDataset]:
        if self.data.valid_clips == 0:
            return None
        source = self._split_source(self.data.valid_split)
        if source is None:
            return None
        metas, caps = load_captioned(source, "validation data")
        n = self.data.valid_clips
        return CaptionedClipDataset(metas[:n], caps[:n], self.data.crop_seconds, self.sample_rate, random=False,
                                    seed=self.data.seed)

    def collate(self, items: List[Any]) -> Any:
        return collate_pairs(items)

    def training_step(self, model: nn.Module, batch: Mapping[str, Any], step: int,
                      phase: str = "main") -> Tuple[torch.Tensor, Mapping[str, Any]]:
        audio, text = model(batch["wav"], batch["text"])
        from ..train.distributed import unwrap

        return unwrap(model).loss(audio, text)

    @torch.no_grad()
    def fit_embeddings(self, model: JointEmbeddingModel, batch_size: int = 16) -> torch.Tensor:
        """Clip embeddings ``[N, d]`` of the first ``fit_clips`` train-split files (whole files)."""
        from ..audio.io import load_audio

        metas, _ = self.train_items()
        out = []
        wavs: List[torch.Tensor] = []
        for meta in metas[: self.config.fit_clips]:
            try:
                wav, _ = load_audio(meta.path, sample_rate=self.sample_rate, channels=1)
            except (AudioFormatError, InvalidInput) as e:
                warnings.warn(f"tokenizer fit: skipping {meta.path}: {e}", stacklevel=2)
                continue
            wavs.append(wav)
        # equal-length files are embedded in batches, the others one by one
        i = 0
        while i < len(wavs):
            j = i + 1
            while j < len(wavs) and j - i < batch_size and wavs[j].shape[-1] == wavs[i].shape[-1]:
                j += 1
            out.append(model.embed_audio(torch.stack(wavs[i:j]), self.sample_rate))
            i = j
        if not out:
            raise TunecraftError("tokenizer fit: no training file could be loaded")
        return torch.cat(out)

    def export(self, model: nn.Module, out_dir: Path) -> None:
        if not isinstance(model, JointEmbeddingModel):
            raise CheckpointError(f"joint exports a JointEmbeddingModel, got {type(model).__name__}")
        model = model.cpu().eval()
        with torch.no_grad():  # fit on the float16-rounded weights that ship
            for p in model.parameters():
                p.copy_(p.half().float())
        report: Dict[str, Any] = {}
        if self.config.fit_clips > 0:
            emb = self.fit_embeddings(model)
            if emb.shape[0] < self.config.tokenizer.bins:
                raise TunecraftError(f"tokenizer fit: {emb.shape[0]} embeddings for {self.config.tokenizer.bins} "
                                     f"codewords; lower task.tokenizer.bins or add data")
            tok = MuLanTokenizer(self.config.tokenizer)
            errors = tok.fit(emb, seed=self.data.seed)
            model.attach_tokenizer(tok)
            report = {"tokenizer_fit_clips": int(emb.shape[0]), "reconstruction_mse_by_stages": errors}
        model.save_pretrained(out_dir, dtype="float16")
        if report:
            (Path(out_dir) / "fit.json").write_text(json.dumps(report, indent=2) + "\n")
