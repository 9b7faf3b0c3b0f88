"""Audio datasets over manifests, plain folders and lists of :class:`AudioMeta`.

:class:`AudioDataset` yields one dict per clip::

    {"wav": [C, T] float32, "sample_rate": int, "description": str, "info": dict,
     "path": str, "seek_time": float, "index": int, "skipped": list[dict]}

and :func:`collate_audio` batches them (zero-padding to the longest clip, with lengths and a
mask). Sources it accepts:

* a manifest (``data.jsonl`` / ``.jsonl.gz``, audiocraft's format, see :mod:`.manifest`);
* a folder holding a manifest (e.g. the output of ``tunecraft data synth``);
* a plain folder of audio files with same-stem ``.json`` sidecars and/or ``.txt`` captions;
* a list of :class:`AudioMeta`.

Bad files never crash a run:

* at construction, every file's header is read (``check_headers=True``); missing, empty or
  corrupt files are left out with a warning naming the file, and listed in
  :attr:`AudioDataset.skipped` (path and reason). If no file is left, :class:`TunecraftError`.
* at load time, a file that fails to decode (garbage data, truncation, NaN samples) is
  replaced by the next valid index (deterministically), with a warning. Each process remembers
  the files that failed, so it does not try them again. How the main process learns about
  failures that happen inside DataLoader workers:

  - ``item["skipped"]`` (and ``batch["skipped"]`` after :func:`collate_audio`) lists
    ``{"path", "reason"}`` for the files that failed while producing that item; pass a batch to
    :meth:`AudioDataset.update_skipped` to merge them into :attr:`AudioDataset.skipped`;
  - :attr:`AudioDataset.num_load_failures` counts failed load attempts in all processes. It
    lives in a small shared-memory tensor (one slot per worker, so no locking is needed),
    which DataLoader workers share with the main process under fork, spawn and forkserver.

The epoch set by :meth:`AudioDataset.set_epoch` lives in the same shared tensor, so
persistent workers see it too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from ..audio.io import audio_info, fit_length, load_audio
from ..config import Config
from ..errors import AudioFormatError, ConfigError, InvalidInput, TunecraftError
from .manifest import AudioMeta, SkippedFile, find_manifest, load_info, read_manifest, scan_audio_folder


def load_first_good(index: int, metas: Sequence[AudioMeta], bad: set, load) -> Any:
    """``load(i)`` for the first loadable file from ``index`` on (wrapping round).

    A file that fails is added to ``bad`` (never retried), named in a warning, and the next one
    is tried; when every file has failed a :class:`TunecraftError` is raised.
    """
    n = len(metas)
    if not -n <= index < n:
        raise IndexError(f"clip {index} out of range for {n} files")
    index %= n
    for k in range(n):
        i = (index + k) % n
        if i in bad:
            continue
        try:
            return load(i)
        except (AudioFormatError, InvalidInput, OSError, RuntimeError) as e:
            bad.add(i)
            warnings.warn(f"skipping audio file that failed to load {metas[i].path}: {e}", stacklevel=3)
    raise TunecraftError(f"every one of the {n} audio files failed to load")

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# Shared-memory layout: slot 0 = epoch, slot 1 = main-process failures, slots 2.. = workers.
_N_WORKER_SLOTS = 256
_EPOCH_SLOT = 0


@dataclasses.dataclass
class AudioDatasetConfig(Config):
    """Settings of an :class:`AudioDataset` (see its docstring for each field)."""

    source: str = ""
    segment_duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    random_crop: bool = True
    min_duration: float | None = None
    max_duration: float | None = None
    return_info: bool = True
    seed: int = 0
    pad: bool = True
    check_headers: bool = True


class AudioDataset(torch.utils.data.Dataset):
    """Clips (or random crops) of audio files with their captions and metadata.

    Args:
        source: manifest path, folder (with or without a manifest) or a list of :class:`AudioMeta`.
        segment_duration: crop length in seconds; ``None`` returns whole files.
        sample_rate: resample every clip to this rate (soxr); ``None`` keeps each file's rate.
        channels: convert every clip to this many channels; ``None`` keeps each file's.
        random_crop: pick the crop start uniformly in ``[0, duration - segment_duration]``
            from a generator seeded with ``(seed, epoch, index)``; ``False`` starts at 0.
        min_duration, max_duration: leave out files shorter / longer than these (seconds).
        return_info: read sidecars and captions (``False`` skips that work; ``description`` is
            then ``""`` and ``info`` ``{}``).
        seed: non-negative seed of the crops.
        pad: zero-pad crops of files shorter than ``segment_duration`` to the full length;
            ``False`` returns them shorter (:func:`collate_audio` pads and masks).
        check_headers: read every file's header at construction, leave out unreadable ones and
            take duration and sample rate from the header.

    Items are dicts, see the module docstring; ``wav`` is ``[C, T]`` float32 with
    ``T = round(segment_duration * sample_rate)`` when cropping with ``pad=True``.
    """

    def __init__(
        self,
        source: PathLike | Sequence[AudioMeta],
        segment_duration: float | None = None,
        sample_rate: int | None = None,
        channels: int | None = None,
        random_crop: bool = True,
        min_duration: float | None = None,
        max_duration: float | None = None,
        return_info: bool = True,
        seed: int = 0,
        pad: bool = True,
        check_headers: bool = True,
    ):
        if segment_duration is not None and not segment_duration > 0:
            raise InvalidInput(f"segment_duration must be > 0 seconds, got {segment_duration}")
        if sample_rate is not None and (isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0):
            raise InvalidInput(f"sample_rate must be a positive integer, got {sample_rate!r}")
        if channels is not None and (isinstance(channels, bool) or int(channels) != channels or channels <= 0):
            raise InvalidInput(f"channels must be a positive integer, got {channels!r}")
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
        self.segment_duration = float(segment_duration) if segment_duration is not None else None
        self.sample_rate = int(sample_rate) if sample_rate is not None else None
        self.channels = int(channels) if channels is not None else None
        self.random_crop = bool(random_crop)
        self.return_info = bool(return_info)
        self.seed = int(seed)
        self.pad = bool(pad)
        self.skipped: list[SkippedFile] = []
        self._source_name = str(source) if not isinstance(source, (list, tuple)) else f"list of {len(source)} AudioMeta"

        metas, headers_read = self._resolve_source(source)
        n_listed = len(metas) + len(self.skipped)
        if check_headers and not headers_read:
            metas = self._check_headers(metas)
        if min_duration is not None:
            metas = [m for m in metas if m.duration >= min_duration]
        if max_duration is not None:
            metas = [m for m in metas if m.duration <= max_duration]
        if not metas:
            if self.skipped:
                first = self.skipped[0]
                raise TunecraftError(
                    f"no readable audio in {self._source_name}: all {n_listed} file(s) were skipped "
                    f"(first: {first})"
                )
            if min_duration is not None or max_duration is not None:
                raise TunecraftError(
                    f"no audio in {self._source_name} between min_duration={min_duration} and "
                    f"max_duration={max_duration} seconds"
                )
            raise TunecraftError(f"no audio files found in {self._source_name}")
        for m in metas:
            if m.weight is not None and not (m.weight >= 0 and math.isfinite(m.weight)):
                raise InvalidInput(f"sampling weight of {m.path} must be a finite number >= 0, got {m.weight}")
        self.metas: list[AudioMeta] = metas
        self._bad: set[int] = set()
        self._info_warned: set[str] = set()
        # slot 0: epoch; slot 1: failures in the main process; 2..: failures per DataLoader worker
        self._shared = torch.zeros(2 + _N_WORKER_SLOTS, dtype=torch.int64).share_memory_()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, config: AudioDatasetConfig) -> AudioDataset:
        """Build from an :class:`AudioDatasetConfig`."""
        d = config.to_dict()
        source = d.pop("source")
        if not source:
            raise InvalidInput("AudioDatasetConfig.source is empty: give a manifest or a folder")
        return cls(source, **d)

    def _skip(self, path: str, reason: str) -> None:
        self.skipped.append(SkippedFile(str(path), reason))
        msg = f"skipping unreadable audio file {path}: {reason}"
        logger.warning(msg)
        warnings.warn(msg, stacklevel=3)

    def _resolve_source(self, source) -> tuple[list[AudioMeta], bool]:
        """Return (metas, whether their headers were already read)."""
        if isinstance(source, (list, tuple)):
            if not all(isinstance(m, AudioMeta) for m in source):
                raise InvalidInput("a list source must hold AudioMeta entries")
            return [dataclasses.replace(m) for m in source], False
        if not isinstance(source, (str, os.PathLike)):
            raise InvalidInput(f"source must be a manifest, a folder or a list of AudioMeta, got {type(source).__name__}")
        p = Path(source)
        if p.is_dir():
            manifest = find_manifest(p)
            if manifest is not None:
                return read_manifest(manifest), False
            metas, skipped = scan_audio_folder(p)
            for s in skipped:
                self._skip(s.path, s.reason)
            return metas, True
        if p.is_file():
            return read_manifest(p), False
        raise InvalidInput(f"dataset source not found: {p}")

    def _check_headers(self, metas: list[AudioMeta]) -> list[AudioMeta]:
        kept = []
        for m in metas:
            try:
                info = audio_info(m.path)
            except AudioFormatError as e:
                self._skip(m.path, str(e))
                continue
            kept.append(dataclasses.replace(m, duration=info.duration, sample_rate=info.sample_rate))
        return kept

    # ------------------------------------------------------------------ epochs, weights, stats

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the crops (shared with DataLoader workers, persistent or not)."""
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise InvalidInput(f"epoch must be a non-negative integer, got {epoch!r}")
        self._shared[_EPOCH_SLOT] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._shared[_EPOCH_SLOT])

    def sampler_weights(self) -> torch.Tensor:
        """Per-item sampling weights ``[N]`` float64 (``weight`` from the manifest, 1 when null),
        for :class:`torch.utils.data.WeightedRandomSampler`."""
        return torch.tensor([1.0 if m.weight is None else m.weight for m in self.metas], dtype=torch.float64)

    def weighted_sampler(
        self, num_samples: int | None = None, replacement: bool = True, generator: torch.Generator | None = None
    ) -> torch.utils.data.WeightedRandomSampler:
        """A :class:`~torch.utils.data.WeightedRandomSampler` over :meth:`sampler_weights`
        drawing ``num_samples`` (default: the dataset size) indices per epoch."""
        weights = self.sampler_weights()
        if float(weights.sum()) <= 0:
            raise InvalidInput("every sampling weight is zero")
        return torch.utils.data.WeightedRandomSampler(
            weights, num_samples or len(self), replacement=replacement, generator=generator
        )

    @property
    def num_load_failures(self) -> int:
        """Failed load attempts so far, in this process and all its DataLoader workers."""
        return int(self._shared[1:].sum())

    @property
    def total_duration(self) -> float:
        """Seconds of audio in the dataset."""
        return float(sum(m.duration for m in self.metas))

    def update_skipped(self, batch_or_item: dict) -> int:
        """Merge the ``skipped`` entries of a batch/item (reported by workers) into
        :attr:`skipped`; returns how many were new."""
        known = {s.path for s in self.skipped}
        new = 0
        for entry in batch_or_item.get("skipped", []):
            if entry["path"] not in known:
                self.skipped.append(SkippedFile(entry["path"], entry["reason"]))
                known.add(entry["path"])
                new += 1
        return new

    def __len__(self) -> int:
        return len(self.metas)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} files, {self.total_duration / 60:.1f} min, "
            f"segment_duration={self.segment_duration}, sample_rate={self.sample_rate}, "
            f"channels={self.channels}, skipped={len(self.skipped)})"
        )

    # ------------------------------------------------------------------ loading

    def crop_start(self, index: int, epoch: int | None = None) -> float:
        """Start (seconds) of the crop of item ``index`` at ``epoch`` (default: current)."""
        meta = self.metas[index]
        if self.segment_duration is None or not self.random_crop:
            return 0.0
        slack = meta.duration - self.segment_duration
        if slack <= 0:
            return 0.0
        ep = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed, ep, int(index)])
        return float(rng.uniform(0.0, slack))

    def _failure_slot(self) -> int:
        info = torch.utils.data.get_worker_info()
        return 1 if info is None else 2 + info.id % _N_WORKER_SLOTS

    def _read_info(self, meta: AudioMeta) -> dict:
        try:
            return load_info(meta)
        except InvalidInput as e:
            if meta.path not in self._info_warned:
                self._info_warned.add(meta.path)
                msg = f"ignoring metadata of {meta.path}: {e}"
                logger.warning(msg)
                warnings.warn(msg, stacklevel=3)
            return {}

    def _load(self, index: int) -> dict:
        meta = self.metas[index]
        seek = self.crop_start(index)
        wav, sr = load_audio(
            meta.path,
            sample_rate=self.sample_rate,
            channels=self.channels,
            offset=seek,
            duration=self.segment_duration,
            pad=self.pad,
        )
        if self.segment_duration is not None and self.pad:
            wav = fit_length(wav, int(round(self.segment_duration * sr)))
        if wav.shape[-1] == 0:
            raise AudioFormatError(f"no samples could be read from {meta.path} at {seek:.3f}s")
        if self.return_info:
            info = self._read_info(meta)
            description = info.get("description") or ""
        else:
            info, description = {}, ""
        return {
            "wav": wav,
            "sample_rate": sr,
            "description": description,
            "info": info,
            "path": meta.path,
            "seek_time": seek,
            "index": index,
        }

    def __getitem__(self, index: int) -> dict:
        n = len(self.metas)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        index %= n
        failures: list[dict] = []
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                item = self._load(i)
            except (AudioFormatError, InvalidInput, OSError, RuntimeError) as e:
                path = self.metas[i].path
                reason = " ".join(str(e).split()) or type(e).__name__
                self._bad.add(i)
                self._shared[self._failure_slot()] += 1
                self.skipped.append(SkippedFile(path, reason))
                failures.append({"path": path, "reason": reason})
                msg = f"skipping audio file that failed to load {path}: {reason}"
                logger.warning(msg)
                warnings.warn(msg, stacklevel=2)
                continue
            item["skipped"] = failures
            return item
        raise TunecraftError(
            f"every audio file of {self._source_name} failed to load ({len(self._bad)} file(s)); "
            f"last error: {failures[-1]['path'] if failures else '?'}"
        )


def source_metas(source: Union[PathLike, Sequence[AudioMeta]], what: str) -> list[AudioMeta]:
    """The readable files of a training-data ``source`` (headers checked, unreadable files left
    out with a warning); a missing path raises :class:`ConfigError` naming ``what`` it is for
    (``"training data"``...) and how to make it."""
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise ConfigError(f"{what}: data source {source} does not exist (make it with `tunecraft data synth "
                          f"--n 2000 --duration 10 --seed 1 --out {source}` or set data.source)")
    return AudioDataset(source, return_info=False, check_headers=True).metas


def collate_audio(batch: Sequence[dict]) -> dict:
    """Batch :class:`AudioDataset` items.

    Returns a dict with:

    * ``wav``: ``[B, C, T_max]`` float32, zero-padded at the end;
    * ``wav_lengths``: ``[B]`` int64 valid frames per item; ``mask``: ``[B, T_max]`` bool;
    * ``sample_rate``: int (all items must share it);
    * ``seek_time``: ``[B]`` float64; ``index``: ``[B]`` int64 (when the items have them);
    * ``skipped``: all items' ``skipped`` entries, flattened;
    * every other key (``description``, ``info``, ``path``, ...) as a list.

    Raises:
        InvalidInput: empty batch, or items with different sample rates or channel counts
            (set ``sample_rate=`` / ``channels=`` on the dataset).
    """
    if not batch:
        raise InvalidInput("collate_audio got an empty batch")
    wavs = [item["wav"] for item in batch]
    chans = {w.shape[0] for w in wavs}
    if len(chans) != 1:
        raise InvalidInput(f"cannot batch clips with different channel counts {sorted(chans)}; set channels= on the dataset")
    rates = {item.get("sample_rate") for item in batch}
    if len(rates) != 1:
        raise InvalidInput(f"cannot batch clips with different sample rates {sorted(rates)}; set sample_rate= on the dataset")
    lengths = torch.tensor([w.shape[-1] for w in wavs], dtype=torch.int64)
    t_max = int(lengths.max())
    out_wav = torch.zeros(len(wavs), chans.pop(), t_max, dtype=torch.float32)
    for b, w in enumerate(wavs):
        out_wav[b, :, : w.shape[-1]] = w
    out: dict[str, Any] = {
        "wav": out_wav,
        "wav_lengths": lengths,
        "mask": torch.arange(t_max)[None, :] < lengths[:, None],
        "sample_rate": rates.pop(),
    }
    keys = [k for k in batch[0] if k not in ("wav", "sample_rate")]
    for key in keys:
        values = [item.get(key) for item in batch]
        if key == "seek_time":
            out[key] = torch.tensor(values, dtype=torch.float64)
        elif key == "index":
            out[key] = torch.tensor(values, dtype=torch.int64)
        elif key == "skipped":
            out[key] = [entry for v in values for entry in (v or [])]
        else:
            out[key] = values
    return out
