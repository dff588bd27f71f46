"""Chunk shape and codec for CT volumes, chosen by measurement.

Writes one 160x512x512 int16 CT-like volume with several chunk shapes and codecs and times
the two access patterns researchers use: a whole random axial slice and a random 96^3
patch. Prints a table and, on the last line, JSON with every candidate's figures.

    python benchmarks/chunking.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage
from zarr.codecs import BloscCodec

SHAPE = (160, 512, 512)
PATCH = 96
CANDIDATES = [
    ("1x512x512", (1, 512, 512), "zstd"),
    ("8x256x256", (8, 256, 256), "lz4"),
    ("8x256x256", (8, 256, 256), "zstd"),
    ("8x128x128", (8, 128, 128), "zstd"),
    ("16x128x128", (16, 128, 128), "zstd"),
    ("16x128x128", (16, 128, 128), "lz4"),
    ("32x128x128", (32, 128, 128), "zstd"),
    ("64x64x64", (64, 64, 64), "zstd"),
]


def ct_like_volume(seed: int = 0) -> np.ndarray:
    """Body ellipse, lungs and soft tissue with noise: compresses like real CT."""
    rng = np.random.default_rng(seed)
    z, y, x = SHAPE
    field = ndimage.zoom(rng.normal(size=(z // 8, y // 8, x // 8)), 8, order=1)
    vol = np.where(field > 0.3, 40, -850).astype(np.int16)
    yy, xx = np.mgrid[:y, :x]
    body = ((yy - y / 2) / (0.43 * y)) ** 2 + ((xx - x / 2) / (0.49 * x)) ** 2 < 1
    vol[:, ~body] = -1000
    return (vol + rng.normal(0, 20, vol.shape)).astype(np.int16)


def measure(vol: np.ndarray, path: Path, chunks: tuple[int, ...], cname: str) -> dict:
    codec = BloscCodec(cname=cname, clevel=3 if cname == "zstd" else 5, shuffle="bitshuffle")
    arr = zarr.create_array(
        path, shape=vol.shape, dtype=vol.dtype, chunks=chunks, compressors=[codec], zarr_format=3
    )
    arr[...] = vol
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    arr = zarr.open_array(path, mode="r")
    rng = np.random.default_rng(1)
    n = 40
    start = time.perf_counter()
    for _ in range(n):
        arr[int(rng.integers(0, vol.shape[0]))]
    slice_ms = (time.perf_counter() - start) / n * 1e3
    start = time.perf_counter()
    for _ in range(n):
        z, y, x = (int(rng.integers(0, s - PATCH)) for s in vol.shape)
        arr[z : z + PATCH, y : y + PATCH, x : x + PATCH]
    patch_ms = (time.perf_counter() - start) / n * 1e3
    return {
        "size_vs_raw": round(size / vol.nbytes, 3),
        "slice_ms": round(slice_ms, 2),
        "patch_ms": round(patch_ms, 2),
    }


def main() -> None:
    vol = ct_like_volume()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mbc-chunks-") as tmp:
        for name, chunks, cname in CANDIDATES:
            key = f"{name} {cname}"
            results[key] = measure(vol, Path(tmp) / key.replace(" ", "_"), chunks, cname)
            r = results[key]
            print(
                f"{key:20s} size {r['size_vs_raw']:.3f}  slice {r['slice_ms']:6.1f} ms  "
                f"patch {r['patch_ms']:6.1f} ms",
                flush=True,
            )
    print(json.dumps({"benchmark": "chunking", "cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
