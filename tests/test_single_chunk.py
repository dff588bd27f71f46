"""Single-chunk arrays read from their chunk file give exactly what zarr gives."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

from mbc_lib.store.single_chunk import chunk_file, read_whole


@pytest.mark.parametrize(
    ("dtype", "cname", "shuffle", "endian"),
    [
        ("uint8", "lz4", "noshuffle", None),
        ("int16", "zstd", "bitshuffle", "little"),
        ("int16", "lz4", "shuffle", "big"),
        ("float32", "zstd", "shuffle", "little"),
    ],
)
def test_whole_read_equals_zarr(tmp_path, dtype, cname, shuffle, endian):
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(3, 37, 41)) * 100).astype(dtype)
    array = zarr.create_array(
        zarr.storage.LocalStore(tmp_path),
        name="img",
        shape=data.shape,
        chunks=data.shape,
        dtype=dtype,
        serializer=BytesCodec(endian=endian) if endian else BytesCodec(),
        compressors=BloscCodec(cname=cname, shuffle=shuffle),
    )
    array[...] = data
    assert chunk_file(array) is not None  # the direct path is taken
    out = read_whole(array)
    assert out.dtype == array.dtype and out.flags.writeable
    np.testing.assert_array_equal(out, data)


def test_other_layouts_and_missing_chunks_go_through_zarr(tmp_path):
    store = zarr.storage.LocalStore(tmp_path)
    tiled = zarr.create_array(store, name="tiled", shape=(8, 8), chunks=(4, 4), dtype="int16")
    tiled[...] = np.arange(64, dtype="int16").reshape(8, 8)
    zstd = zarr.create_array(
        store, name="zstd", shape=(4, 4), chunks=(4, 4), dtype="int16", compressors=ZstdCodec()
    )
    zstd[...] = 7
    empty = zarr.create_array(
        store,
        name="empty",
        shape=(4, 4),
        chunks=(4, 4),
        dtype="int16",
        fill_value=-1000,
        compressors=BloscCodec(),
    )
    assert chunk_file(tiled) is None and chunk_file(zstd) is None
    np.testing.assert_array_equal(read_whole(tiled), tiled[...])
    np.testing.assert_array_equal(read_whole(zstd), np.full((4, 4), 7))
    assert chunk_file(empty) is not None  # the layout fits, but no chunk was written
    np.testing.assert_array_equal(read_whole(empty), np.full((4, 4), -1000))
