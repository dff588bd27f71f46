"""Step 3 of ``mbc verify``, content: read only for a case whose tree holds no link.

The checksum over level 0, every further level of the image and its labels equal to
:func:`ngff.downsample` of the level below, and the mask's values and volumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import zarr

from ...errors import describe_error
from ...manifests import Manifest
from .. import layout, ngff, schema
from ..checksum import CaseHasher
from .cases import Array, Case
from .findings import Findings, join


def check_content(case: Case, manifest: Manifest, out: Findings) -> None:
    """Checksum, pyramids and mask of a case whose tree holds no link."""
    hasher = CaseHasher()
    shape: list[tuple[int, ...]] = []

    def image_base(image: np.ndarray) -> None:
        hasher.add(image)
        shape.append(image.shape)
        if list(image.shape) != case.mbc.get("shape"):
            out.add(case.where, "shape attribute does not match the data")
        if str(image.dtype) != case.mbc.get("dtype"):
            out.add(case.where, "dtype attribute does not match the data")

    def labels_base(labels: np.ndarray) -> None:
        hasher.add(labels)
        _check_mask(labels, shape[0], case, manifest, out)

    dims = case.geometry.dims
    read = _check_pyramid(case.image, dims, False, image_base, out)
    if read and case.labels:
        read = _check_pyramid(case.labels, dims, True, labels_base, out)
    if read and hasher.checksum() != case.mbc.get("checksum"):
        out.add(case.where, "checksum mismatch: content changed since publish")


def _check_pyramid(
    arrays: Sequence[Array],
    dims: Sequence[str],
    labels: bool,
    inspect: Callable[[np.ndarray], None],
    out: Findings,
) -> bool:
    """Read every level once: ``inspect`` level 0, then level k must equal level 0 halved
    k times. Whether level 0 could be read. Holds at most two levels at a time."""
    level = _read(arrays[0], out)
    if level is None:
        return False
    inspect(level)
    for index, array in enumerate(arrays[1:], start=1):
        level = ngff.downsample(level, dims, 2, labels)
        stored = _read(array, out)
        if stored is not None:
            _compare_level(stored, level, array, index, out)
        del stored
    return True


def _read(array: Array, out: Findings) -> np.ndarray | None:
    """The whole level, or None with one finding per chunk that does not decode."""
    try:
        z = zarr.open_array(str(array.path), mode="r", zarr_format=3)
    except Exception as exc:  # noqa: BLE001
        out.add(array.where, f"not a readable Zarr array: {describe_error(exc)}")
        return None
    try:
        return np.asarray(z[...])
    except Exception as exc:  # noqa: BLE001
        bad = _undecodable_chunks(z, array.chunks)
        for key, error in bad:
            out.add(join(array.where, key), f"unreadable chunk: {error}")
        if not bad:
            out.add(array.where, f"unreadable: {describe_error(exc)}")
        return None


def _chunk_slices(shape: Sequence[int], chunks: Sequence[int]) -> Iterable[tuple[str, Any]]:
    """(``c/i/j/...``, slices) for every chunk of the grid."""
    grid = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
    for index in np.ndindex(*grid):
        key = "c/" + "/".join(str(i) for i in index)
        yield key, tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks, strict=True))


def _undecodable_chunks(z: zarr.Array, chunks: Sequence[int]) -> list[tuple[str, str]]:
    """(``c/i/j/...``, error) for every chunk of ``z`` that does not decode."""
    bad = []
    for key, index in _chunk_slices(z.shape, chunks):
        try:
            z[index]
        except Exception as exc:  # noqa: BLE001
            bad.append((key, describe_error(exc)))
    return bad


def _compare_level(
    stored: np.ndarray, expected: np.ndarray, array: Array, level: int, out: Findings
) -> None:
    """A stored level against level 0 downsampled; a mismatch names its chunks (five at most)."""
    if stored.shape != expected.shape or stored.dtype != expected.dtype:
        out.add(
            array.where,
            f"{stored.dtype} {list(stored.shape)}, but level 0 downsampled {level} times "
            f"is {expected.dtype} {list(expected.shape)}",
        )
    elif not np.array_equal(stored, expected, equal_nan=True):
        keys = [
            key
            for key, index in _chunk_slices(stored.shape, array.chunks)
            if not np.array_equal(stored[index], expected[index], equal_nan=True)
        ]
        more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
        out.add(
            array.where, f"differs from level 0 downsampled in chunk {', '.join(keys[:5])}{more}"
        )


def _check_mask(
    labels: np.ndarray, shape: tuple[int, ...], case: Case, manifest: Manifest, out: Findings
) -> None:
    """The label image fits the image and the manifest, and its volumes are the attribute's."""
    where = join(case.where, layout.LABELS_GROUP)
    dims = case.geometry.dims
    expected = tuple(1 if d == "c" else n for n, d in zip(shape, dims, strict=True))
    if labels.shape != expected:
        out.add(where, "label image shape differs from the image's (one channel)")
    if labels.dtype != np.uint8:
        out.add(where, f"label image is {labels.dtype}, not uint8")
        return
    present = {int(v) for v in np.flatnonzero(np.bincount(labels.ravel()))}
    unknown = sorted(present - set(manifest.segmentation_classes))
    if unknown:
        out.add(where, f"label values {unknown} are not the manifest's classes")
    stats = schema.label_stats(labels, case.geometry.spacing, manifest)
    if "label_stats" in case.mbc and case.mbc["label_stats"] != stats:
        out.add(case.where, f"label_stats attribute differs from the mask's volumes {stats}")
