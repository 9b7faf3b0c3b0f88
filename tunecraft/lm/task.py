"""Training task ``musicgen-lm``: the MusicGen codec-token LM on a captioned corpus.

**Tokens, once.** The codec is frozen, so every clip is encoded once and the codes are cached
(:func:`tokenize_clips`): ``<token_cache>/<split>-<codec fingerprint>-q<K>[-stereo][-chroma].pt``
(default ``token_cache``: ``<corpus>/tokens``). The fingerprint is a hash of the codec's weights
file, so a retrained codec gets fresh tokens. Clips that fail to load are skipped and counted.
Under ``torchrun`` rank 0 encodes and the other ranks wait. The cache follows its manifest
(:func:`refresh_token_cache`): clips added to the corpus are encoded on the next run (only
those), clips removed from it are dropped, a clip whose file changed (size or modification
time) is encoded again, and the captions are always the manifest's.

**Items** (:class:`TokenClipDataset`): a ``segment_seconds`` crop of a clip's codes at a random
frame offset and one of its captions drawn uniformly (both from the global torch RNG, which the
training loop seeds from ``(seed, epoch, index)``); shorter clips are padded and masked out of
the loss. Validation items use fixed offsets and the first caption. With melody conditioning
(``lm.n_chroma > 0``) each item carries the argmax chromagram of the same span, computed from
the full mix at tokenisation time (the paper removes drums and bass with a source separator
first; no separator ships here, so the chroma of the mix is the honest substitute).

**Loss**: :meth:`CodecLM.compute_loss` (cross-entropy per codebook, averaged; conditions dropped
with ``lm.cfg_dropout`` for classifier-free guidance). The text goes through a frozen encoder
(MiniLM by default) and a learned projection (:class:`~tunecraft.text.TextConditioner`).

**Export** writes a MusicGen bundle (:class:`tunecraft.systems.musicgen.MusicGen`): the LM and
projection in float16, the codec referenced by name when it is a shipped bundle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..config import Config
from ..errors import AudioFormatError, CheckpointError, ConfigError, InvalidInput, TunecraftError
from ..pretrained import BUNDLES_DIR, WEIGHTS_NAME, resolve_model_dir
from ..text.conditioner import TextConditioner, TextConditionerConfig
from ..train.task import TrainTask, register_task
from .model import CodecLM, CodecLMConfig

__all__ = [
    "CaptionContrastConfig",
    "ConditionedLM",
    "MusicGenDataConfig",
    "MusicGenTaskConfig",
    "MusicGenTask",
    "TokenClipDataset",
    "codec_fingerprint",
    "refresh_token_cache",
    "tokenize_clips",
]

TOKEN_CACHE_VERSION = 1
#: chromagram settings of the melody condition (audiocraft's ChromaExtractor: 2**12 window)
CHROMA_RADIX2_EXP = 12


@dataclasses.dataclass
class CaptionContrastConfig(Config):
    """``[task.contrast]`` of ``musicgen-lm``: a caption-contrast term added to the loss (off when
    ``weight`` is 0, the default; not part of the MusicGen paper).

    For up to ``items`` clips of each batch whose caption states one of ``edits`` (see
    :mod:`tunecraft.text.counterfactual`: ``mode``, ``tempo``, ``tonic``), the caption gets one
    fact changed and the first ``frames`` frames are scored with both captions (teacher forced,
    no condition dropout). With ``gap`` = CE(counterfactual) - CE(real), in nats per token, the
    term is ``weight * mean(relu(margin - gap))``: the LM is asked to find the real caption more
    likely by at least ``margin``. Plain next-token training gives a fact a gradient only where
    the audio context has not yet revealed it (the first frames), so a small LM can learn to
    ignore a subtle fact such as the mode; the term is a direct signal for it.
    """

    weight: float = 0.0
    margin: float = 0.05
    frames: int = 150
    items: int = 8
    edits: Tuple[str, ...] = ("mode", "tempo")

    def __post_init__(self) -> None:
        from ..text.counterfactual import EDITS

        if self.weight < 0 or self.margin < 0:
            raise ConfigError(f"contrast weight and margin must be >= 0, got {self.weight}, {self.margin}")
        if self.frames < 1 or self.items < 1:
            raise ConfigError(f"contrast frames and items must be >= 1, got {self.frames}, {self.items}")
        self.edits = tuple(self.edits)
        bad = [e for e in self.edits if e not in EDITS]
        if bad or not self.edits:
            raise ConfigError(f"contrast edits must be a non-empty subset of {', '.join(EDITS)}, got {list(self.edits)}")


def _tiny_lm() -> CodecLMConfig:
    return CodecLMConfig(n_q=4, card=2048, dim=256, num_heads=4, num_layers=6, ffn_dim=1024, cfg_dropout=0.2,
                         max_context=500, extend_stride=300)


@dataclasses.dataclass
class MusicGenTaskConfig(Config):
    """``[task]`` of ``musicgen-lm``.

    ``codec``: a codec bundle name or directory (frozen); ``num_codebooks``: codec streams per
    channel the LM models (its ``lm.n_q`` must equal that, doubled when ``stereo``).
    ``text_encoder``: a :func:`~tunecraft.text.get_text_encoder` spec; ``text_cache_size``
    should cover every distinct caption, so each is encoded once. ``sampling``: the bundle's
    default sampling settings; ``description``: one line shown by ``tunecraft systems``;
    ``default``: the exported bundle is its family's default (``--system musicgen``).
    ``sample_seconds``: length of the audio logged every ``train.sample_every`` steps.
    ``contrast``: the optional caption-contrast term (:class:`CaptionContrastConfig`).
    ``text_attributes``: facts read from each caption and given to the LM as extra
    cross-attention tokens (subset of ``bpm``, ``tonic``, ``mode``; :mod:`tunecraft.text.attributes`;
    none by default, as in the paper).
    """

    lm: CodecLMConfig = dataclasses.field(default_factory=_tiny_lm)
    codec: str = "codec-rvq"
    num_codebooks: int = 4
    stereo: bool = False
    text_encoder: str = "minilm"
    text_max_length: Optional[int] = None
    text_cache_size: int = 16384
    text_attributes: list = dataclasses.field(default_factory=list)
    sampling: dict = dataclasses.field(default_factory=lambda: {"top_k": 250, "temperature": 1.0, "cfg_scale": 3.0})
    description: str = ""
    default: bool = False
    sample_seconds: float = 4.0
    contrast: CaptionContrastConfig = dataclasses.field(default_factory=CaptionContrastConfig)

    def __post_init__(self) -> None:
        from ..text.attributes import check_attributes

        self.text_attributes = check_attributes(self.text_attributes, "task.text_attributes")
        if self.num_codebooks < 1:
            raise ConfigError(f"num_codebooks must be >= 1, got {self.num_codebooks}")
        streams = self.num_codebooks * (2 if self.stereo else 1)
        if self.lm.n_q != streams:
            raise ConfigError(f"lm.n_q ({self.lm.n_q}) must equal num_codebooks{' x 2 (stereo)' if self.stereo else ''} "
                              f"= {streams}")
        if self.sample_seconds <= 0:
            raise ConfigError(f"sample_seconds must be positive, got {self.sample_seconds}")


@dataclasses.dataclass
class MusicGenDataConfig(Config):
    """``[data]`` of ``musicgen-lm``: a captioned corpus (``tunecraft data synth`` output or any
    source with caption sidecars), crops of ``segment_seconds``, ``valid_clips`` validation clips."""

    source: str = "data/synth"
    train_split: str = "train"
    valid_split: str = "valid"
    segment_seconds: float = 10.0
    valid_clips: int = 32
    token_cache: str = ""
    encode_batch: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.segment_seconds <= 0:
            raise ConfigError(f"segment_seconds must be positive, got {self.segment_seconds}")
        if self.valid_clips < 0 or self.encode_batch < 1:
            raise ConfigError("valid_clips must be >= 0 and encode_batch >= 1")


# ---- tokens -------------------------------------------------------------------------------


def codec_fingerprint(codec_spec: str) -> str:
    """16 hex digits of the SHA-256 of a codec directory's weights file."""
    path = resolve_model_dir(codec_spec) / WEIGHTS_NAME
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    return h.hexdigest()[:16]


def tokenize_clips(metas: List[Any], captions: List[List[str]], codec, num_codebooks: int, stereo: bool = False,
                   chroma: bool = False, batch_size: int = 8, progress: bool = True,
                   allow_empty: bool = False) -> Dict[str, Any]:
    """Encode every clip once: ``{"items": [{"path", "codes" int16 [Q, T], "captions",
    "chroma" uint8 [frames] | None, "stat": [size, mtime_ns]}], "skipped": n, "skipped_paths",
    ...}``. With no loadable clip it raises, unless ``allow_empty``.

    Stereo clips give ``Q = 2 K`` streams interleaved L0, R0, L1, R1, ... (each channel through the
    mono codec); otherwise the audio is mixed to the codec's channel count. ``chroma`` stores the
    argmax pitch class of every chroma frame (hop ``2**12 / 4`` samples at the codec rate).
    """
    from ..audio import chromagram
    from ..audio.io import load_audio

    codec.set_num_codebooks(num_codebooks)
    sr = codec.sample_rate
    items: List[Dict[str, Any]] = []
    skipped_paths: List[str] = []
    pending: List[Tuple[Any, List[str], torch.Tensor]] = []
    t0 = time.time()

    def flush() -> None:
        if not pending:
            return
        wav = torch.stack([w for _, _, w in pending])  # [B, C, T]
        with torch.inference_mode():
            if stereo:
                left = codec.encode(wav[:, :1])
                right = codec.encode(wav[:, 1:2])
                codes = torch.stack([left, right], dim=2).flatten(1, 2)
            else:
                codes = codec.encode(wav)
            pc = None
            if chroma:
                pc = chromagram(wav.mean(dim=1), sr, argmax=True, radix2_exp=CHROMA_RADIX2_EXP).argmax(dim=1)
        for j, (meta, caps, _) in enumerate(pending):
            items.append({"path": str(meta.path), "codes": codes[j].to(torch.int16).clone(), "captions": caps,
                          "chroma": None if pc is None else pc[j].to(torch.uint8).clone(),
                          "stat": file_stat(meta.path)})
        pending.clear()

    for i, (meta, caps) in enumerate(zip(metas, captions)):
        try:
            wav, _ = load_audio(meta.path, sample_rate=sr, channels=2 if stereo else codec.channels)
        except (AudioFormatError, InvalidInput, OSError) as e:
            warnings.warn(f"tokenize: skipping {meta.path}: {e}", stacklevel=2)
            skipped_paths.append(str(meta.path))
            continue
        if wav.shape[-1] < codec.hop_length or not torch.isfinite(wav).all():
            warnings.warn(f"tokenize: skipping {meta.path}: too short or not finite", stacklevel=2)
            skipped_paths.append(str(meta.path))
            continue
        if pending and (len(pending) >= batch_size or pending[0][2].shape[-1] != wav.shape[-1]):
            flush()
        pending.append((meta, caps, wav.clamp(-1.0, 1.0)))
        if progress and (i + 1) % 100 == 0:
            print(f"tokenize: {i + 1}/{len(metas)} clips ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    flush()
    if not items and not allow_empty:
        raise TunecraftError("tokenize: no clip could be loaded")
    return {"version": TOKEN_CACHE_VERSION, "num_codebooks": num_codebooks, "stereo": stereo,
            "frame_rate": codec.frame_rate, "sample_rate": sr, "items": items, "skipped": len(skipped_paths),
            "skipped_paths": skipped_paths}


def file_stat(path: Any) -> Optional[List[int]]:
    """``[size, mtime_ns]`` of a file (``None`` if it cannot be read): how a token cache tells a
    changed clip from the one it encoded."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def refresh_token_cache(cache: Optional[Dict[str, Any]], metas: List[Any], captions: List[List[str]],
                        encode) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """Bring a token cache in line with its manifest ``metas`` / ``captions``.

    Items whose path is still listed and whose file is unchanged (same ``[size, mtime_ns]``; items
    of caches written before the stat was stored are trusted by path) keep their codes; the other
    listed clips, except those a previous encoding skipped as unreadable and that have not changed
    since, go through ``encode(metas, captions)`` (:func:`tokenize_clips` with ``allow_empty``);
    clips no longer listed are dropped. Items follow the manifest's order and carry its captions.
    Returns ``(cache, {"kept", "encoded", "dropped", "skipped"})``; with ``cache=None`` everything
    is encoded.
    """
    have: Dict[str, Dict[str, Any]] = {}
    skipped_before: Dict[str, Any] = {}
    if cache is not None:
        have = {str(it["path"]): it for it in cache["items"]}
        skipped_before = {str(p): st for p, st in (cache.get("skipped_stats") or {}).items()}
    listed = [str(m.path) for m in metas]
    stats = {p: file_stat(p) for p in listed}
    kept = {p for p in listed if p in have and have[p].get("stat") in (None, stats[p])}
    still_skipped = {p: st for p, st in skipped_before.items() if p in stats and stats[p] == st}
    todo = [i for i, p in enumerate(listed) if p not in kept and p not in still_skipped]
    fresh: Dict[str, Any] = {"items": [], "skipped_paths": []}
    if todo:
        fresh = encode([metas[i] for i in todo], [captions[i] for i in todo])
    new_items = {str(it["path"]): it for it in fresh["items"]}
    items = [{**(new_items.get(p) or have[p]), "captions": list(caps)}
             for p, caps in zip(listed, captions) if p in new_items or p in kept]
    skipped = {**still_skipped, **{p: stats[p] for p in fresh["skipped_paths"]}}
    out = {k: v for k, v in (cache if cache is not None else fresh).items()
           if k not in ("items", "skipped", "skipped_paths", "skipped_stats")}
    out.update(items=items, skipped=len(skipped), skipped_stats=skipped)
    listed_set = set(listed)
    report = {"kept": len(kept), "encoded": len(new_items),
              "dropped": sum(1 for p in have if p not in listed_set), "skipped": len(skipped)}
    return out, report


class TokenClipDataset(torch.utils.data.Dataset):
    """``{"codes": [Q, S] int64, "mask": [S] bool, "text": str[, "chroma": [12, F] float]}`` items
    (see the module docstring)."""

    def __init__(self, items: List[Dict[str, Any]], segment_frames: int, frame_rate: float, sample_rate: int,
                 random: bool, seed: int = 0, chroma_bins: int = 0):
        if not items:
            raise InvalidInput("TokenClipDataset needs at least one clip")
        self.items = items
        self.segment = int(segment_frames)
        self.frame_rate = float(frame_rate)
        self.random = bool(random)
        self.seed = int(seed)
        self.chroma_bins = int(chroma_bins)
        self.chroma_rate = sample_rate / (2 ** CHROMA_RADIX2_EXP // 4)
        self.chroma_frames = max(1, int(round(self.segment * self.chroma_rate / self.frame_rate)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        item = self.items[index]
        codes = item["codes"].long()
        T = codes.shape[1]
        slack = max(0, T - self.segment)
        if self.random:
            offset = int(torch.randint(slack + 1, ()).item())
            k = int(torch.randint(len(item["captions"]), ()).item())
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            offset, k = int(torch.randint(slack + 1, (), generator=g).item()), 0
        crop = codes[:, offset: offset + self.segment]
        n = crop.shape[1]
        mask = torch.zeros(self.segment, dtype=torch.bool)
        mask[:n] = True
        if n < self.segment:
            crop = torch.cat([crop, crop.new_zeros(crop.shape[0], self.segment - n)], dim=1)
        out = {"codes": crop, "mask": mask, "text": item["captions"][k], "offset": offset}
        if self.chroma_bins:
            pc = item.get("chroma")
            if pc is None:
                raise InvalidInput(f"{item['path']}: the token cache has no chroma (re-tokenise with melody)")
            lo = int(round(offset * self.chroma_rate / self.frame_rate))
            idx = pc[lo: lo + self.chroma_frames].long()
            onehot = torch.zeros(self.chroma_bins, self.chroma_frames)
            onehot[0] = 1.0  # frames past the clip: the null melody (bin 0)
            if idx.numel():
                onehot[:, : idx.numel()] = torch.nn.functional.one_hot(idx, self.chroma_bins).t().float()
            out["chroma"] = onehot
        return out


def collate_tokens(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    out = {"codes": torch.stack([it["codes"] for it in items]), "mask": torch.stack([it["mask"] for it in items]),
           "text": [it["text"] for it in items], "offset": torch.tensor([it.get("offset", 0) for it in items])}
    if "chroma" in items[0]:
        out["chroma"] = torch.stack([it["chroma"] for it in items])
    return out


# ---- model ----------------------------------------------------------------------------------


class ConditionedLM(nn.Module):
    """The trainable part of MusicGen: :class:`CodecLM` + the text projection (frozen encoder)."""

    def __init__(self, lm: CodecLMConfig, text: TextConditionerConfig) -> None:
        super().__init__()
        self.lm = CodecLM(lm)
        self.text = TextConditioner.from_config(text)

    def beat_clock(self, texts: List[str], offsets: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The LM's beat clocks for ``texts`` (the tempo each states, :func:`parse_facts`; none
        when it states none) on crops ``offsets`` frames into their clips; None without a clock."""
        if not self.lm.has_beat_clock:
            return None
        from ..text.attributes import parse_facts

        return self.lm.beat_clock([parse_facts(t).bpm for t in texts], offsets)

    def forward(self, codes: torch.Tensor, texts: List[str], chroma: Optional[torch.Tensor] = None,
                frame_mask: Optional[torch.Tensor] = None, negatives: Optional[List[Optional[str]]] = None,
                contrast_frames: int = 0,
                offsets: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(loss, ce_per_codebook [K], gaps)``: the loss of :meth:`CodecLM.compute_loss` and,
        when ``negatives`` (a counterfactual caption or None per row) is given, ``gaps [n]`` =
        CE(counterfactual) - CE(real) over the first ``contrast_frames`` frames of each of the
        ``n`` rows with a counterfactual (else None). Both run in this one forward so that DDP
        sees a single call. ``offsets [B]``: the frame each crop starts at in its clip (for the
        beat clock; default 0). A counterfactual gets the clock of the tempo it states."""
        text = self.text(texts) if self.lm.config.text_fuse != "none" else None
        beat = self.beat_clock(texts, offsets)
        out = self.lm.compute_loss(codes, text, chroma, frame_mask=frame_mask, beat=beat)
        gaps = None
        rows = [i for i, n in enumerate(negatives or []) if n is not None]
        if rows and text is not None:
            frames = max(1, min(int(contrast_frames) or codes.shape[2], codes.shape[2]))
            sub = codes[rows, :, :frames]
            both = torch.cat([sub, sub])
            mask = None if frame_mask is None else frame_mask[rows, :frames].repeat(2, 1)
            cond = self.text([texts[i] for i in rows] + [negatives[i] for i in rows])
            sub_chroma = None if chroma is None else chroma[rows].repeat(2, 1, 1)
            sub_beat = None
            if beat is not None:  # the real captions' clocks, then each counterfactual's own
                sub_offsets = None if offsets is None else offsets[rows]
                sub_beat = torch.cat([beat[rows], self.beat_clock([negatives[i] for i in rows], sub_offsets)])
            ce = self.lm.sequence_cross_entropy(both, cond, sub_chroma, frame_mask=mask, beat=sub_beat)
            gaps = ce[len(rows):] - ce[: len(rows)]
        return out.loss, out.ce_per_codebook, gaps


@register_task("musicgen-lm")
class MusicGenTask(TrainTask):
    """Trains the MusicGen LM over frozen codec tokens (module docstring)."""

    config_class = MusicGenTaskConfig
    data_config_class = MusicGenDataConfig
    config: MusicGenTaskConfig
    data: MusicGenDataConfig

    def __init__(self, config: Optional[MusicGenTaskConfig] = None, data: Optional[MusicGenDataConfig] = None):
        super().__init__(config, data)
        self._codec = None
        self._valid_texts: List[str] = []

    # ---- parts ------------------------------------------------------------------------------
    def codec(self):
        if self._codec is None:
            from ..codecs import DiscreteCompressionModel, load_codec

            codec = load_codec(self.config.codec, device="cpu")
            if not isinstance(codec, DiscreteCompressionModel):
                raise ConfigError(f"task.codec {self.config.codec!r} is not a discrete (RVQ) codec")
            if self.config.num_codebooks > codec.total_codebooks:
                raise ConfigError(f"num_codebooks={self.config.num_codebooks} but the codec has {codec.total_codebooks}")
            if codec.cardinality != self.config.lm.card:
                raise ConfigError(f"lm.card ({self.config.lm.card}) must equal the codec's codebook size "
                                  f"({codec.cardinality})")
            if self.config.stereo and codec.channels != 1:
                raise ConfigError("stereo training codes each channel with a mono codec")
            codec.set_num_codebooks(self.config.num_codebooks)
            self._codec = codec
        return self._codec

    def text_config(self) -> TextConditionerConfig:
        return TextConditionerConfig(model_dim=self.config.lm.dim, encoder=self.config.text_encoder,
                                     max_length=self.config.text_max_length, cache_size=self.config.text_cache_size,
                                     cfg_dropout_p=0.0, attributes=list(self.config.text_attributes))

    def build_model(self) -> ConditionedLM:
        return ConditionedLM(self.config.lm, self.text_config())

    # ---- data -------------------------------------------------------------------------------
    def _split_source(self, split: str) -> Optional[Any]:
        from ..data.manifest import split_source

        return split_source(self.data.source, split, self.data.train_split)

    def _cache_file(self, split: str) -> Path:
        if self.data.token_cache:
            root = Path(self.data.token_cache)
        else:
            src = Path(self.data.source)
            root = (src if src.is_dir() else src.parent) / "tokens"
        tag = f"{split}-{codec_fingerprint(self.config.codec)}-q{self.config.num_codebooks}"
        tag += "-stereo" if self.config.stereo else ""
        tag += "-chroma" if self.config.lm.n_chroma else ""
        return root / f"{tag}.pt"

    def tokens(self, split: str) -> Optional[Dict[str, Any]]:
        """The split's token cache (encoding it first if needed); ``None`` if the split is absent."""
        from ..train.checkpoint import atomic_write

        source = self._split_source(split)
        if source is None:
            return None
        path = self._cache_file(split)
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        main = not dist or torch.distributed.get_rank() == 0
        cache = None
        if main:
            from ..joint.task import load_captioned

            metas, caps = load_captioned(source, f"{split} data")
            old = self._load_token_cache(path) if path.is_file() else None

            def encode(todo_metas, todo_caps):
                print(f"tokenize: encoding {len(todo_metas)} {split} clips with {self.config.codec} -> {path}",
                      file=sys.stderr, flush=True)
                return tokenize_clips(todo_metas, todo_caps, self.codec(), self.config.num_codebooks,
                                      self.config.stereo, chroma=self.config.lm.n_chroma > 0,
                                      batch_size=self.data.encode_batch, allow_empty=True)

            cache, report = refresh_token_cache(old, metas, caps, encode)
            if not cache["items"]:
                raise TunecraftError(f"tokenize: no {split} clip of {source} could be loaded")
            if (old is None or report["encoded"] or report["dropped"]
                    or old.get("skipped_stats") != cache["skipped_stats"]):
                if old is not None:
                    print(f"tokenize: {path.name}: kept {report['kept']}, encoded {report['encoded']}, "
                          f"dropped {report['dropped']} clip(s) no longer in the manifest", file=sys.stderr, flush=True)
                if report["skipped"]:
                    print(f"tokenize: skipped {report['skipped']} unreadable clip(s)", file=sys.stderr, flush=True)
                atomic_write(path, lambda f: torch.save(cache, f))
        if dist:
            torch.distributed.barrier()
        if cache is None:
            cache = self._load_token_cache(path)
        return cache

    @staticmethod
    def _load_token_cache(path: Path) -> Dict[str, Any]:
        try:
            cache = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file
            raise CheckpointError(f"token cache {path} is unreadable ({e}); delete it to re-encode") from None
        if cache.get("version") != TOKEN_CACHE_VERSION:
            raise CheckpointError(f"token cache {path} has version {cache.get('version')}; delete it to re-encode")
        return cache

    def _dataset(self, cache: Dict[str, Any], random: bool, limit: Optional[int] = None) -> TokenClipDataset:
        items = cache["items"] if limit is None else cache["items"][:limit]
        frames = max(1, int(round(self.data.segment_seconds * cache["frame_rate"])))
        lm = self.config.lm
        if lm.beat_rates and abs(float(cache["frame_rate"]) - lm.frame_rate) > 1e-6:
            raise ConfigError(f"task.lm.frame_rate is {lm.frame_rate:g} but the codec's tokens are at "
                              f"{cache['frame_rate']:g} frames/s (the beat clock counts frames)")
        return TokenClipDataset(items, frames, cache["frame_rate"], cache["sample_rate"], random=random,
                                seed=self.data.seed, chroma_bins=self.config.lm.n_chroma)

    def build_train_dataset(self) -> TokenClipDataset:
        cache = self.tokens(self.data.train_split)
        if cache is None:
            raise ConfigError(f"no training split {self.data.train_split!r} in {self.data.source}")
        return self._dataset(cache, random=True)

    def build_valid_dataset(self) -> Optional[TokenClipDataset]:
        if self.data.valid_clips == 0:
            return None
        cache = self.tokens(self.data.valid_split)
        if cache is None:
            return None
        ds = self._dataset(cache, random=False, limit=self.data.valid_clips)
        self._valid_texts = [it["captions"][0] for it in ds.items]
        return ds

    def collate(self, items: List[Any]) -> Any:
        return collate_tokens(items)

    # ---- steps ------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Mapping[str, Any], step: int,
                      phase: str = "main") -> Tuple[torch.Tensor, Mapping[str, Any]]:
        c = self.config.contrast
        negatives = self.counterfactuals(batch["text"]) if c.weight > 0 else None
        loss, ce, gaps = model(batch["codes"], batch["text"], batch.get("chroma"), frame_mask=batch["mask"],
                               negatives=negatives, contrast_frames=c.frames, offsets=batch.get("offset"))
        logs = {f"ce_q{k}": ce[k].detach() for k in range(ce.shape[0])}
        if gaps is not None:
            hinge = torch.relu(c.margin - gaps).mean()
            loss = loss + c.weight * hinge
            logs.update(contrast_gap=gaps.detach().mean(), contrast_hinge=hinge.detach())
        return loss, logs

    def counterfactuals(self, texts: List[str]) -> List[Optional[str]]:
        """One counterfactual caption (``task.contrast.edits``) or None per caption, for at most
        ``task.contrast.items`` of them; draws from the global torch RNG (seeded per step)."""
        import random

        from ..text.counterfactual import pick_counterfactual

        c = self.config.contrast
        rng = random.Random(int(torch.randint(2**31 - 1, ()).item()))
        out: List[Optional[str]] = []
        for text in texts:
            picked = pick_counterfactual(text, c.edits, rng) if len(out) - out.count(None) < c.items else None
            out.append(None if picked is None else picked[1])
        return out

    def system(self, model: nn.Module):
        """A :class:`~tunecraft.systems.musicgen.MusicGen` around the trained parts."""
        from ..systems.musicgen import MusicGen, MusicGenConfig
        from ..train.distributed import unwrap

        inner = unwrap(model)
        cfg = MusicGenConfig(codec=self.config.codec, num_codebooks=self.config.num_codebooks,
                             text=self.text_config().to_dict(), stereo=self.config.stereo,
                             sampling=dict(self.config.sampling), description=self.config.description,
                             default=self.config.default)
        codec = self.codec().to(inner.lm.device)
        system = MusicGen(inner.lm, inner.text, codec, cfg)
        return system

    def sample(self, model: nn.Module, step: int) -> Dict[str, Tuple[torch.Tensor, int]]:
        text = self._valid_texts[0] if self._valid_texts else "an upbeat pop song with piano and drums"
        system = self.system(model)
        was_training = model.training
        try:
            wav, sr = system.generate([text], duration=self.config.sample_seconds, seed=step)
        finally:
            model.train(was_training)
        return {"sample": (wav[0].cpu(), sr)}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        if not isinstance(model, ConditionedLM):
            raise CheckpointError(f"musicgen-lm exports a ConditionedLM, got {type(model).__name__}")
        system = self.system(model.cpu().eval())
        spec = self.config.codec
        shipped = "/" not in spec and not spec.startswith(".") and (BUNDLES_DIR / spec).is_dir()
        system.save_pretrained(out_dir, dtype="float16", codec_name=spec if shipped else None)
