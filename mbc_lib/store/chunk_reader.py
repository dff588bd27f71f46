"""Regions of local Zarr v3 arrays read straight from their chunk files.

zarr-python 3 serves every read through its event loop and worker threads and runs its codec
pipeline per chunk: about 0.5 ms a call, and tens of microseconds a chunk, which is more than
decoding a photograph or a thin CT chunk costs (benchmarks/loader.py). For the layouts the
store writes, :class:`ChunkReader` reads the chunk files itself and decodes them with numcodecs'
Blosc (the codec zarr wraps):

- regular chunks encoded ``bytes`` then ``blosc`` (photographs: one chunk per image);
- shards (``sharding_indexed``) whose inner chunks are encoded that way, with the shard index
  at the end of the file (CT: one shard per slab of slices, thin inner chunks).

Any other array goes through zarr, so a reader can be made for every array. Absent chunks and
empty inner chunks read as the fill value, as in zarr. A shard index that points outside its
file, or a chunk that does not decode to its shape, raises :class:`CorruptChunkError`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.storage import LocalStore

Region = tuple[slice, ...]
Coord = tuple[int, ...]

_BLOSC = numcodecs.Blosc()
_EMPTY = np.uint64(2**64 - 1)  # offset and length of an inner chunk that was never written
_INDEX_ENTRY = 16  # two little-endian uint64 per inner chunk
_CRC = 4
_BLOSC_HEADER = 16


class CorruptChunkError(ValueError):
    """A chunk or shard index on disk that cannot be what its metadata describe."""


@dataclass(frozen=True)
class DirectLayout:
    """What reading an array's chunk files needs: where, which grid, which encoding."""

    root: Path
    shape: tuple[int, ...]
    dtype: np.dtype  # with the byte order on disk
    fill_value: object
    file_chunks: tuple[int, ...]  # the grid of files: shards, or the chunks themselves
    chunks: tuple[int, ...]  # what one Blosc frame decodes to
    sharded: bool

    @property
    def per_file(self) -> tuple[int, ...]:
        return tuple(f // c for f, c in zip(self.file_chunks, self.chunks, strict=True))


def direct_layout(array: zarr.Array) -> DirectLayout | None:
    """The layout of ``array`` when its chunk files can be read directly, else None."""
    meta = array.metadata
    if not isinstance(array.store, LocalStore) or getattr(meta, "zarr_format", None) != 3:
        return None
    if array.size == 0 or meta.chunk_key_encoding.to_dict() != {
        "name": "default",
        "configuration": {"separator": "/"},
    }:
        return None
    codecs = tuple(meta.codecs)
    sharded = len(codecs) == 1 and isinstance(codecs[0], ShardingCodec)
    file_chunks = tuple(meta.chunk_grid.chunk_shape)
    chunks = file_chunks
    if sharded:
        shard = codecs[0]
        index = tuple(shard.index_codecs)
        if shard.index_location.value != "end" or not (
            len(index) == 2
            and isinstance(index[0], BytesCodec)
            and (index[0].endian is None or index[0].endian.value == "little")
            and isinstance(index[1], Crc32cCodec)
        ):
            return None
        chunks = tuple(shard.chunk_shape)
        codecs = tuple(shard.codecs)
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec):
        return None
    if not isinstance(codecs[1], BloscCodec):
        return None
    dtype = np.dtype(array.dtype)
    if dtype.itemsize > 1:
        endian = codecs[0].endian
        dtype = dtype.newbyteorder("<" if endian is None or endian.value == "little" else ">")
    return DirectLayout(
        root=Path(array.store.root) / array.path,
        shape=tuple(array.shape),
        dtype=dtype,
        fill_value=meta.fill_value,
        file_chunks=file_chunks,
        chunks=chunks,
        sharded=sharded,
    )


def _axis_parts(start: int, stop: int, chunk: int, size: int) -> list[tuple[int, slice, slice]]:
    """Along one axis: (chunk index, slice inside the chunk, slice inside the region)."""
    parts = []
    for i in range(start // chunk, (stop - 1) // chunk + 1):
        lo, hi = max(start, i * chunk), min(stop, (i + 1) * chunk, size)
        parts.append((i, slice(lo - i * chunk, hi - i * chunk), slice(lo - start, hi - start)))
    return parts


def _file_of(coord: Coord, per_file: tuple[int, ...]) -> Coord:
    """The file (shard) holding chunk ``coord``."""
    return tuple(c // n for c, n in zip(coord, per_file, strict=True))


class ChunkReader:
    """Reads regions and whole chunks of one array, from its files where its layout allows.

    ``chunks`` is the unit of decoding (the inner chunks of a sharded array). ``blocks`` is
    the unit a chunk cache holds: the chunks, or for a sharded array its inner chunks stacked
    to the shard's depth along the first axis (a thin chunk is too small to be worth a cache
    entry of its own). Picklable: a DataLoader worker gets its own copy.
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.layout = direct_layout(array)
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks: tuple[int, ...] = (
            self.layout.chunks if self.layout is not None else tuple(array.chunks)
        )
        self.blocks: tuple[int, ...] = self.chunks
        if self.layout is not None and self.layout.sharded:
            self.blocks = (self.layout.file_chunks[0], *self.chunks[1:])

    @property
    def direct(self) -> bool:
        """Whether reads bypass zarr."""
        return self.layout is not None

    def __repr__(self) -> str:
        how = "direct" if self.direct else "zarr"
        return f"<ChunkReader {self.array.path} {self.shape} chunks={self.chunks} {how}>"

    def read(self, region: Region) -> np.ndarray:
        """``array[region]`` (one slice with explicit, in-bounds bounds per dimension)."""
        layout = self.layout
        if layout is None:
            return np.asarray(self.array[region])
        out = np.empty(tuple(s.stop - s.start for s in region), dtype=layout.dtype)
        axes = [
            _axis_parts(s.start, s.stop, c, n)
            for s, c, n in zip(region, layout.chunks, layout.shape, strict=True)
        ]
        per_file = layout.per_file
        by_file: dict[Coord, list[tuple]] = {}
        for parts in itertools.product(*axes):
            coord = tuple(p[0] for p in parts)
            by_file.setdefault(_file_of(coord, per_file), []).append(parts)
        for file_coord, partss in by_file.items():
            self._fill(out, file_coord, partss)
        return out.astype(self.dtype, copy=False)

    def _fill(self, out: np.ndarray, file_coord: Coord, partss: list[tuple]) -> None:
        """Decode the chunks of one file that ``out`` needs into their places in ``out``."""
        layout = self.layout
        assert layout is not None
        buffer = np.empty(layout.chunks, dtype=layout.dtype)
        frames = self._frames(file_coord, [tuple(p[0] for p in parts) for parts in partss])
        for parts, frame in zip(partss, frames, strict=True):
            dst = tuple(p[2] for p in parts)
            if frame is None:
                out[dst] = layout.fill_value
                continue
            self._decode(frame, buffer)
            out[dst] = buffer[tuple(p[1] for p in parts)]

    def read_blocks(self, coords: Sequence[Coord]) -> dict[Coord, np.ndarray]:
        """The blocks (in units of :attr:`blocks`) at ``coords``, cut to the array."""
        if self.layout is None:
            return self._read_blocks_by_zarr(coords)
        return {tuple(c): self.read(self.block_region(c)) for c in coords}

    def _read_blocks_by_zarr(self, coords: Sequence[Coord]) -> dict[Coord, np.ndarray]:
        """The chunk-aligned box around ``coords`` in one zarr call (it decodes concurrently)."""
        if not coords:
            return {}
        lo = [min(c[d] for c in coords) for d in range(len(self.shape))]
        hi = [max(c[d] for c in coords) for d in range(len(self.shape))]
        box = tuple(
            slice(a * c, min((b + 1) * c, n))
            for a, b, c, n in zip(lo, hi, self.blocks, self.shape, strict=True)
        )
        data = np.asarray(self.array[box])
        out = {}
        for coord in coords:
            part = tuple(
                slice(s.start - b.start, s.stop - b.start)
                for s, b in zip(self.block_region(coord), box, strict=True)
            )
            out[tuple(coord)] = data[part].copy() if len(coords) > 1 else data
        return out

    def block_region(self, coord: Coord) -> Region:
        """The region of the array that block ``coord`` covers."""
        return tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(coord, self.blocks, self.shape, strict=True)
        )

    # -- files ----------------------------------------------------------------------------
    def _path(self, file_coord: Coord) -> Path:
        assert self.layout is not None
        return self.layout.root.joinpath("c", *(str(i) for i in file_coord))

    def _frames(self, file_coord: Coord, coords: list[Coord]) -> list[bytes | None]:
        """The encoded bytes of each chunk in ``coords`` (all in one file); None: absent."""
        layout = self.layout
        assert layout is not None
        path = self._path(file_coord)
        if not layout.sharded:
            try:
                return [path.read_bytes()] * len(coords)
            except FileNotFoundError:
                return [None] * len(coords)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return [None] * len(coords)
        try:
            size = os.fstat(fd).st_size
            per_file = layout.per_file
            n_index = int(np.prod(per_file)) * _INDEX_ENTRY + _CRC
            if size < n_index:
                raise CorruptChunkError(f"{path}: shard smaller than its index")
            index = np.frombuffer(os.pread(fd, n_index, size - n_index)[:-_CRC], dtype="<u8")
            index = index.reshape((*per_file, 2))
            frames: list[bytes | None] = []
            for coord in coords:
                offset, nbytes = index[tuple(c % n for c, n in zip(coord, per_file, strict=True))]
                if offset == _EMPTY and nbytes == _EMPTY:
                    frames.append(None)
                    continue
                if int(offset) + int(nbytes) > size - n_index:
                    raise CorruptChunkError(f"{path}: shard index points outside the file")
                frames.append(os.pread(fd, int(nbytes), int(offset)))
            return frames
        finally:
            os.close(fd)

    def _decode(self, frame: bytes, out: np.ndarray) -> None:
        try:
            # Blosc 1 header: version, versionlz, flags, typesize, then uint32 nbytes,
            # blocksize and cbytes (little-endian)
            if len(frame) < _BLOSC_HEADER or int.from_bytes(frame[12:16], "little") != len(frame):
                raise ValueError("not a whole Blosc frame")
            if int.from_bytes(frame[4:8], "little") != out.nbytes:
                raise ValueError("decoded size differs from the chunk shape")
            _BLOSC.decode(frame, out=out)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise CorruptChunkError(f"{self.array.path}: chunk does not decode: {exc}") from None


def read_region(array: zarr.Array, region: Region | None = None) -> np.ndarray:
    """``array[region]`` (whole array by default), from the chunk files where possible."""
    if region is None:
        region = tuple(slice(0, n) for n in array.shape)
    return ChunkReader(array).read(region)
