"""Regions read from chunk files give exactly what zarr gives, for every layout."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec

from mbc_lib.store.chunk_reader import ChunkReader, CorruptChunkError, read_region


def _array(tmp_path, data, name="img", **kw):
    array = zarr.create_array(
        zarr.storage.LocalStore(tmp_path), name=name, shape=data.shape, dtype=data.dtype, **kw
    )
    array[...] = data
    return zarr.open_array(zarr.storage.LocalStore(tmp_path, read_only=True), path=name, mode="r")


def _regions(shape, rng, n=25):
    out = [tuple(slice(0, s) for s in shape)]
    for _ in range(n):
        lo = [int(rng.integers(0, s)) for s in shape]
        out.append(
            tuple(slice(a, int(rng.integers(a + 1, s + 1))) for a, s in zip(lo, shape, strict=True))
        )
    return out


@pytest.mark.parametrize(
    ("dtype", "cname", "shuffle", "endian", "chunks", "shards"),
    [
        ("uint8", "lz4", "noshuffle", None, (3, 37, 41), None),  # one chunk: a photograph
        ("int16", "zstd", "bitshuffle", "little", (2, 16, 16), None),  # edge chunks
        ("int16", "lz4", "shuffle", "big", (3, 37, 41), None),
        ("float32", "zstd", "shuffle", "little", (1, 8, 16), (3, 16, 32)),
        ("int16", "lz4hc", "bitshuffle", None, (1, 16, 16), (2, 32, 48)),  # the CT layout
        ("uint8", "lz4", "noshuffle", None, (2, 8, 8), (2, 40, 48)),  # shards past the edge
    ],
)
def test_regions_and_chunks_equal_zarr(tmp_path, dtype, cname, shuffle, endian, chunks, shards):
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(3, 37, 41)) * 100).astype(dtype)
    data[:, :16, :16] = 0  # whole inner chunks of fill value: not written by zarr
    array = _array(
        tmp_path,
        data,
        chunks=chunks,
        shards=shards,
        serializer=BytesCodec(endian=endian) if endian else BytesCodec(),
        compressors=BloscCodec(cname=cname, shuffle=shuffle),
        fill_value=0,
    )
    reader = ChunkReader(array)
    assert reader.direct and reader.chunks == chunks
    assert reader.blocks == (chunks if shards is None else (shards[0], *chunks[1:]))
    for region in _regions(data.shape, rng):
        out = reader.read(region)
        assert out.dtype == array.dtype and out.flags.writeable
        np.testing.assert_array_equal(out, data[region])
    grid = [range(-(-n // c)) for n, c in zip(data.shape, reader.blocks, strict=True)]
    coords = [
        tuple(int(g[i % len(g)]) for g, i in zip(grid, (k, 2 * k, 3 * k), strict=True))
        for k in range(7)
    ]
    for coord, block in reader.read_blocks(coords).items():
        np.testing.assert_array_equal(block, data[reader.block_region(coord)])
    np.testing.assert_array_equal(read_region(array), data)


def test_absent_shards_read_as_fill_value(tmp_path):
    data = np.full((4, 16, 16), -1000, dtype="int16")
    data[2:, 8:, 8:] = 5
    array = _array(
        tmp_path,
        data,
        chunks=(1, 8, 8),
        shards=(2, 16, 16),
        fill_value=-1000,
        compressors=BloscCodec(),
    )
    assert not (tmp_path / "img" / "c" / "0" / "0" / "0").exists()  # all fill: never written
    reader = ChunkReader(array)
    np.testing.assert_array_equal(reader.read((slice(0, 4), slice(0, 16), slice(0, 16))), data)


def test_other_layouts_go_through_zarr(tmp_path):
    data = np.arange(64, dtype="int16").reshape(8, 8)
    zstd = _array(tmp_path, data, name="zstd", chunks=(4, 4), compressors=ZstdCodec())
    memory = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(8, 8), chunks=(4, 4), dtype="int16"
    )
    memory[...] = data
    for array in (zstd, memory):
        reader = ChunkReader(array)
        assert not reader.direct
        np.testing.assert_array_equal(reader.read((slice(1, 7), slice(2, 8))), data[1:7, 2:8])
        np.testing.assert_array_equal(reader.read_blocks([(1, 0)])[(1, 0)], data[4:8, 0:4])


def test_corrupt_files_raise_a_clear_error(tmp_path):
    data = np.arange(2 * 16 * 16, dtype="int16").reshape(2, 16, 16)
    array = _array(tmp_path, data, chunks=(1, 8, 8), shards=(2, 16, 16), compressors=BloscCodec())
    shard = tmp_path / "img" / "c" / "0" / "0" / "0"
    whole = (slice(0, 2), slice(0, 16), slice(0, 16))
    good = shard.read_bytes()
    index = np.frombuffer(good[-8 * 16 - 4 : -4], dtype="<u8").copy()
    index[0] = len(good)  # the first chunk's offset: past the end
    shard.write_bytes(good[: -8 * 16 - 4] + index.tobytes() + good[-4:])
    with pytest.raises(CorruptChunkError, match="outside the file"):
        ChunkReader(array).read(whole)
    shard.write_bytes(good[:200] + bytes(100) + good[300:])  # a chunk's bytes overwritten
    with pytest.raises(CorruptChunkError, match="does not decode"):
        ChunkReader(array).read(whole)
    shard.write_bytes(good[-20:])
    with pytest.raises(CorruptChunkError, match="smaller than its index"):
        ChunkReader(array).read(whole)
