"""Whole reads of single-chunk arrays straight from their chunk file.

zarr-python 3 serves every read through its event loop and worker threads, about 0.5 ms per
call: for a photograph stored as one Blosc chunk that is more than reading and decoding the
chunk together (benchmarks/loader.py). For arrays of exactly that layout on a local store, the
one chunk file is read and decoded with numcodecs' Blosc (the codec zarr itself wraps); any
other array, or a chunk that is absent (fill value), is read through zarr as usual.
"""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

_BLOSC = numcodecs.Blosc()


def chunk_file(array: zarr.Array) -> tuple[Path, np.dtype] | None:
    """The file and on-disk dtype of ``array``'s only chunk, or None where zarr must read it."""
    store = array.store
    meta = array.metadata
    if not isinstance(store, LocalStore) or getattr(meta, "zarr_format", None) != 3:
        return None
    if tuple(array.chunks) != tuple(array.shape) or array.size == 0:
        return None
    codecs = tuple(meta.codecs)
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec):
        return None
    if not isinstance(codecs[1], BloscCodec):
        return None
    dtype = np.dtype(array.dtype)
    if dtype.itemsize > 1:
        endian = codecs[0].endian
        order = "<" if endian is None or endian.value == "little" else ">"
        dtype = dtype.newbyteorder(order)
    key = meta.encode_chunk_key((0,) * array.ndim)
    return Path(store.root) / array.path / key, dtype


def read_whole(array: zarr.Array) -> np.ndarray:
    """``array[...]`` as a numpy array, by the chunk file where the layout allows."""
    found = chunk_file(array)
    if found is not None:
        path, dtype = found
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            out = np.empty(array.shape, dtype=dtype)
            _BLOSC.decode(raw, out=out)
            return out.astype(array.dtype, copy=False)
    return np.asarray(array[...])
