"""An in-memory LRU of decoded zarr chunks under a byte budget, one per process.

Regions are read through :meth:`ChunkCache.read`: chunks already decoded are copied from
memory, the missing ones are read from the store (:class:`~mbc_lib.store.chunk_reader.ChunkReader`)
and kept. Chunks, not whole volumes, are the unit because a 2D slice or a 3D
patch touches only a few chunks of a case, and a budget smaller than one volume still helps.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store.chunk_reader import ChunkReader

Region = tuple[slice, ...]


@dataclass(frozen=True)
class CacheInfo:
    """Counts since the cache was created in this process (hits and misses are chunks)."""

    hits: int
    misses: int
    bytes: int
    max_bytes: int
    chunks: int


class ChunkCache:
    """Thread-safe LRU of decoded chunks holding at most ``max_bytes`` bytes of array data.

    A cache belongs to one process: pickled (to a DataLoader worker) or forked, it starts
    empty there, so each worker process has its own budget. ``max_bytes=0`` disables it.
    """

    def __init__(self, max_bytes: int = 0) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._chunks: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0

    def _own(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's lock and contents are not ours
            self._reset()

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])  # type: ignore[misc]

    def __repr__(self) -> str:
        info = self.cache_info()
        return f"<ChunkCache {info.bytes}/{info.max_bytes} bytes, {info.chunks} chunks>"

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def cache_info(self) -> CacheInfo:
        self._own()
        with self._lock:
            return CacheInfo(
                self._hits, self._misses, self._bytes, self.max_bytes, len(self._chunks)
            )

    def clear(self) -> None:
        """Drop every chunk and reset the counts."""
        self._own()
        with self._lock:
            self._chunks.clear()
            self._bytes = self._hits = self._misses = 0

    def _lookup(self, keys: list[Hashable]) -> dict[Hashable, np.ndarray]:
        found = {}
        with self._lock:
            for key in keys:
                chunk = self._chunks.get(key)
                if chunk is None:
                    self._misses += 1
                else:
                    self._chunks.move_to_end(key)
                    self._hits += 1
                    found[key] = chunk
        return found

    def _store(self, key: Hashable, chunk: np.ndarray) -> None:
        if chunk.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._chunks.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            while self._chunks and self._bytes + chunk.nbytes > self.max_bytes:
                self._bytes -= self._chunks.popitem(last=False)[1].nbytes
            self._chunks[key] = chunk
            self._bytes += chunk.nbytes

    def read(self, reader: ChunkReader, key: Hashable, region: Region) -> np.ndarray:
        """``reader``'s array at ``region`` (one slice with explicit bounds per dimension).

        ``key`` names the array in the cache, e.g. ``(dataset, case_id, "image")``; the cache
        holds the reader's blocks (:attr:`ChunkReader.blocks`).
        """
        if not self.enabled:
            return reader.read(region)
        self._own()
        grid = [
            range(s.start // c, (s.stop - 1) // c + 1)
            for s, c in zip(region, reader.blocks, strict=True)
        ]
        coords = list(itertools.product(*grid))
        found = self._lookup([(key, c) for c in coords])
        chunks = {c: found[(key, c)] for c in coords if (key, c) in found}
        missing = [c for c in coords if c not in chunks]
        if missing:
            for coord, chunk in reader.read_blocks(missing).items():
                chunk.flags.writeable = False
                self._store((key, coord), chunk)
                chunks[coord] = chunk
        out = np.empty(tuple(s.stop - s.start for s in region), dtype=reader.dtype)
        for coord, chunk in chunks.items():
            src, dst = [], []
            for axis, (s, c, i) in enumerate(zip(region, reader.blocks, coord, strict=True)):
                lo = max(s.start, i * c)
                hi = min(s.stop, i * c + chunk.shape[axis])
                src.append(slice(lo - i * c, hi - i * c))
                dst.append(slice(lo - s.start, hi - s.start))
            out[tuple(dst)] = chunk[tuple(src)]
        return out
