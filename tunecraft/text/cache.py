"""A small thread-safe LRU cache of per-text encodings.

Training data repeats captions (many crops of one track share a description) and
classifier-free guidance re-encodes the same prompt, so each encoder keeps the token
states of the last ``capacity`` distinct texts. Entries are the real tokens only
(``[L_i, D]`` float32, no padding), so a cached text can be placed in any batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    capacity: int


class EncodingCache:
    """LRU map ``text -> Tensor [L, D]``; ``capacity = 0`` disables caching."""

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigError(f"text cache size must be a non-negative integer, got {capacity!r}")
        self.capacity = capacity
        self._data: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, text: str) -> torch.Tensor | None:
        with self._lock:
            value = self._data.get(text)
            if value is None:
                self._misses += 1
                return None
            self._data.move_to_end(text)
            self._hits += 1
            return value

    def put(self, text: str, value: torch.Tensor) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._data[text] = value
            self._data.move_to_end(text)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._hits = 0
            self._misses = 0

    def __contains__(self, text: object) -> bool:
        with self._lock:
            return text in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._data), self.capacity)
