"""Deterministic, resumable data feeding.

Three pieces make a resumed run see exactly the batches (and augmentations) an
uninterrupted run would have seen, with any number of DataLoader workers:

* :class:`ResumableBatchSampler` shuffles with ``DistributedSampler`` (seeded by
  ``(seed, epoch)``), cuts its rank's share into batches and can start mid-epoch.
* It yields ``(epoch, index)`` keys; :class:`SeededItems` seeds Python's, NumPy's and
  torch's global RNGs from ``(seed, epoch, index)`` around each ``dataset[index]``, so
  item-level randomness no longer depends on which worker loads the item or when.
* :class:`BatchStream` counts consumed batches per epoch, which is what a checkpoint
  stores as the position in the epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any, Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import ConfigError

Key = Tuple[int, int]  # (epoch, index)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes and runs)."""
    h = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def seed_all(seed: int, cuda: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and, if ``cuda``, every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    if cuda:
        torch.manual_seed(seed)  # also seeds every CUDA device
    else:
        torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed the CPU-side global RNGs for a block, then restore their previous states."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    seed_all(seed, cuda=False)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


class SeededItems(Dataset):
    """Wrap a map-style dataset so ``self[(epoch, index)]`` is ``dataset[index]`` computed
    with the global RNGs seeded from ``(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Any:
        epoch, index = key
        with seeded_rng(derive_seed(self.seed, "item", epoch, index)):
            return self.dataset[index]


class ResumableBatchSampler(Sampler[List[Key]]):
    """Batches of ``(epoch, index)`` keys for one rank, resumable at any batch.

    Uses ``DistributedSampler`` (``drop_last=True``) for the shuffle and the split across
    ranks, then drops the incomplete last batch, so every rank sees the same number of
    equally sized batches per epoch.
    """

    def __init__(self, dataset_len: int, batch_size: int, rank: int, world_size: int,
                 seed: int, shuffle: bool = True):
        self.batch_size = batch_size
        self._sampler = DistributedSampler(
            range(dataset_len), num_replicas=world_size, rank=rank, shuffle=shuffle,
            seed=derive_seed(seed, "order") % (1 << 31), drop_last=True,
        )
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self):
            raise ConfigError(f"cannot start epoch {epoch} at batch {start_batch}: it has {len(self)} batches")
        self.epoch = epoch
        self.start_batch = start_batch
        self._sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self._sampler.num_samples // self.batch_size

    def __iter__(self) -> Iterator[List[Key]]:
        indices = list(iter(self._sampler))
        for b in range(self.start_batch, len(self)):
            chunk = indices[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(self.epoch, i) for i in chunk]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, batch_sampler: ResumableBatchSampler, seed: int, num_workers: int,
                collate: Callable[[List[Any]], Any], pin_memory: bool) -> DataLoader:
    return DataLoader(
        SeededItems(dataset, seed),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
    )


def check_dataset(dataset: Any, what: str) -> int:
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ConfigError(f"the {what} dataset must be map-style (__getitem__ and __len__), got {type(dataset).__name__}")
    return len(dataset)


class BatchStream:
    """An endless stream of batches that knows its (epoch, batch-in-epoch) position."""

    def __init__(self, loader: DataLoader, epoch: int = 0, batch_in_epoch: int = 0):
        self.loader = loader
        self.sampler: ResumableBatchSampler = loader.batch_sampler  # type: ignore[assignment]
        if len(self.sampler) == 0:
            raise ConfigError(
                f"the training dataset ({len(loader.dataset)} items) is smaller than one batch on every rank"  # type: ignore[arg-type]
            )
        if batch_in_epoch >= len(self.sampler):  # the checkpoint was taken at an epoch boundary
            epoch, batch_in_epoch = epoch + 1, 0
        self.epoch = epoch
        self.batch_in_epoch = batch_in_epoch
        self._it: Optional[Iterator[Any]] = None

    def _start(self) -> None:
        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        self._it = iter(self.loader)

    def __next__(self) -> Any:
        if self._it is None:
            self._start()
        try:
            batch = next(self._it)  # type: ignore[arg-type]
        except StopIteration:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._start()
            batch = next(self._it)  # type: ignore[arg-type]
        self.batch_in_epoch += 1
        return batch

    def position(self) -> Tuple[int, int]:
        return self.epoch, self.batch_in_epoch

    def close(self) -> None:
        self._it = None


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
