"""What store-backed torch Datasets share: store, case selection, per-process arrays, cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from ..errors import MbcError
from ..store.chunk_reader import ChunkReader
from ..store.reader import Store, open_store
from .cache import CacheInfo, ChunkCache, Region

Sample = dict[str, Any]
Transform = Callable[[Sample], Any]
StoreLike = Store | str | os.PathLike[str] | None


def resolve_store(store: StoreLike) -> Store:
    """A :class:`Store` from a Store, a path, or ``None`` (``$MBC_STORE``)."""
    if isinstance(store, Store):
        return store
    return open_store(store)


def select_cases(store: Store, dataset: str, split: str | None, query: str | None) -> pd.DataFrame:
    """The catalog rows of ``dataset`` in ``split`` matching the pandas ``query``."""
    frame = store.catalog(dataset)
    if split is not None:
        splits = list(store.manifest(dataset).split)
        if split not in splits:
            raise MbcError(f"unknown split {split!r} (splits: {', '.join(splits)})")
        frame = frame[frame["split"] == split]
    if query:
        try:
            frame = frame.query(query)
        except Exception as exc:
            columns = ", ".join(frame.columns)
            raise MbcError(f"bad catalog query {query!r}: {exc} (columns: {columns})") from None
    return frame.reset_index(drop=True)


class StoreDataset(Dataset):
    """Cases of one store dataset, selected by split and catalog query (``.catalog``).

    Holds only picklable state: the zarr arrays are opened lazily in each process, and the
    decoded-chunk cache (``cache_bytes``) starts empty in each DataLoader worker.
    """

    modality: ClassVar[str]

    def __init__(
        self,
        store: StoreLike,
        dataset: str,
        split: str | None,
        query: str | None,
        transform: Transform | None,
        cache_bytes: int,
    ) -> None:
        self.store = resolve_store(store)
        self.dataset = dataset
        self.manifest = self.store.manifest(dataset)
        if self.manifest.modality != self.modality:
            raise MbcError(
                f"dataset {dataset!r} holds {self.manifest.modality} cases; "
                f"{type(self).__name__} reads {self.modality}"
            )
        self.catalog = select_cases(self.store, dataset, split, query)
        self.split = split
        self.query = query
        self.transform = transform
        self.cache = ChunkCache(cache_bytes)
        self._arrays: dict[tuple[str, str], ChunkReader | None] = {}
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.dataset!r}, split={self.split!r}, "
            f"query={self.query!r}, cases={len(self.catalog)}, items={len(self)})"
        )

    def __len__(self) -> int:
        return len(self.catalog)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def cache_info(self) -> CacheInfo:
        """Hits and misses (in chunks) and bytes of this process's cache."""
        return self.cache.cache_info()

    def _array(self, case_id: str, part: str) -> ChunkReader | None:
        """The reader of the case's ``"image"`` or ``"labels"`` (None: no labels)."""
        if self._pid != os.getpid():  # forked worker: open our own handles
            self._arrays, self._pid = {}, os.getpid()
        key = (case_id, part)
        if key not in self._arrays:
            if part == "image":
                array = self.store.image_array(self.dataset, case_id)
            else:
                array = self.store.labels_array(self.dataset, case_id)
            self._arrays[key] = None if array is None else ChunkReader(array)
        return self._arrays[key]

    def _image(self, case_id: str) -> ChunkReader:
        array = self._array(case_id, "image")
        if array is None:  # the store always has an image per case
            raise MbcError(f"case {case_id!r} has no image")
        return array

    def _read(self, case_id: str, part: str, region: Region) -> np.ndarray | None:
        """``region`` of the case's image or labels (``None``: the case has no labels)."""
        array = self._array(case_id, part)
        if array is None:
            return None
        return self.cache.read(array, (self.dataset, case_id, part), region)

    def _finish(self, sample: Sample) -> Any:
        return self.transform(sample) if self.transform is not None else sample


def parse_shape(text: str) -> tuple[int, ...]:
    """The catalog's ``"32x512x512"`` as a tuple of ints."""
    return tuple(int(n) for n in str(text).split("x"))
