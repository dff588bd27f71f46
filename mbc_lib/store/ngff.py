"""OME-Zarr (NGFF 0.5) metadata for images, pyramids and label images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

NGFF_VERSION = "0.5"
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def axes(dims: Sequence[str], unit: str | None) -> list[dict[str, str]]:
    """NGFF axes for ``dims`` (subset of t, c, z, y, x in that order)."""
    out = []
    for d in dims:
        ax = {"name": d, "type": _AXIS_TYPES[d]}
        if ax["type"] == "space" and unit:
            ax["unit"] = unit
        out.append(ax)
    return out


def level_scales(
    dims: Sequence[str], spacing: Sequence[float], factors: Sequence[Sequence[int]]
) -> list[list[float]]:
    """Scale per pyramid level: the base spacing times each level's cumulative factor."""
    return [[float(s) * f for s, f in zip(spacing, fac, strict=True)] for fac in factors]


def translation(
    dims: Sequence[str],
    origin: Sequence[float] | None,
    direction: Sequence[Sequence[float]] | None,
) -> list[float]:
    """First voxel in the array-aligned frame: direction . origin per spatial axis, else 0."""
    spatial = [d for d in dims if d in "zyx"]
    if origin is None or direction is None or len(direction) != len(spatial):
        return [0.0] * len(dims)
    proj = iter(float(np.dot(v, origin)) for v in direction)
    return [next(proj) if d in "zyx" else 0.0 for d in dims]


def multiscales(
    name: str,
    dims: Sequence[str],
    unit: str | None,
    scales: Sequence[Sequence[float]],
    translation: Sequence[float],
    downsampling: str,
) -> dict[str, Any]:
    datasets = []
    for level, scale in enumerate(scales):
        tr = [
            float(t) + (float(s) - float(scales[0][i])) / 2.0 if dims[i] in "zyx" else 0.0
            for i, (t, s) in enumerate(zip(translation, scale, strict=True))
        ]
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [float(s) for s in scale]},
                    {"type": "translation", "translation": tr},
                ],
            }
        )
    return {"name": name, "axes": axes(dims, unit), "datasets": datasets, "type": downsampling}


def image_attrs(ms: dict[str, Any]) -> dict[str, Any]:
    return {"version": NGFF_VERSION, "multiscales": [ms]}


def label_attrs(ms: dict[str, Any], classes: dict[int, dict[str, Any]]) -> dict[str, Any]:
    colors = [
        {"label-value": int(v), "rgba": [*spec.get("color", [128, 128, 128]), 0 if v == 0 else 255]}
        for v, spec in sorted(classes.items())
    ]
    properties = [
        {"label-value": int(v), "name": spec["name"]} for v, spec in sorted(classes.items())
    ]
    return {
        "version": NGFF_VERSION,
        "multiscales": [ms],
        "image-label": {
            "version": NGFF_VERSION,
            "colors": colors,
            "properties": properties,
            "source": {"image": "../../"},
        },
    }


def pyramid_factors(shape: Sequence[int], dims: Sequence[str], levels: int) -> list[list[int]]:
    """Cumulative downsampling factors: halve y and x each level while both stay >= 32."""
    factors = [[1] * len(dims)]
    for _ in range(1, levels):
        prev = factors[-1]
        nxt = [f * 2 if d in "yx" else f for f, d in zip(prev, dims, strict=True)]
        if any(n // f < 32 for n, f, d in zip(shape, nxt, dims, strict=True) if d in "yx"):
            break
        factors.append(nxt)
    return factors


def downsample(array: np.ndarray, dims: Sequence[str], step: int, labels: bool) -> np.ndarray:
    """Halve y and x once: mean of 2x2 blocks for images, top-left sample for labels.

    An odd last row or column is dropped for both, so the label pyramid keeps the shape of
    the image pyramid at every level.
    """
    if labels:
        index = tuple(
            slice(0, (n // step) * step, step) if d in "yx" else slice(None)
            for n, d in zip(array.shape, dims, strict=True)
        )
        return np.ascontiguousarray(array[index])
    crop = tuple(
        slice(0, (n // step) * step) if d in "yx" else slice(None)
        for n, d in zip(array.shape, dims, strict=True)
    )
    a = array[crop]
    if step == 2 and a.dtype.kind in "iu" and a.dtype.itemsize <= 4:
        return _mean_2x2_int(a, dims)
    shape: list[int] = []
    reduce_axes: list[int] = []
    for n, d in zip(a.shape, dims, strict=True):
        if d in "yx":
            shape.extend([n // step, step])
            reduce_axes.append(len(shape) - 1)
        else:
            shape.append(n)
    mean = a.reshape(shape).mean(axis=tuple(reduce_axes))
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        mean = np.clip(np.rint(mean), info.min, info.max)
    return mean.astype(array.dtype)


def _mean_2x2_int(a: np.ndarray, dims: Sequence[str]) -> np.ndarray:
    """``rint(mean)`` of the 2x2 blocks of an integer array, in integer arithmetic.

    The same values as the float64 mean: a sum of four integers and a division by four are
    exact there, and ``rint`` rounds halves to even, as here. Slabs of about a million
    values along the first axis keep the temporaries in cache.
    """
    out = np.empty(
        [n // 2 if d in "yx" else n for n, d in zip(a.shape, dims, strict=True)], a.dtype
    )
    step = 2 if dims[0] in "yx" else 1  # input rows per output row along the first axis
    slab = max(1, (1 << 20) // max(1, step * (a.size // max(1, a.shape[0]))))
    for start in range(0, out.shape[0], slab):
        out[start : start + slab] = _block_mean(a[start * step : (start + slab) * step], dims)
    return out


def _block_mean(a: np.ndarray, dims: Sequence[str]) -> np.ndarray:
    acc = {1: np.int16, 2: np.int32}.get(a.dtype.itemsize, np.int64)
    total = a
    for axis in (dims.index("y"), dims.index("x")):
        even = tuple(slice(0, None, 2) if i == axis else slice(None) for i in range(a.ndim))
        odd = tuple(slice(1, None, 2) if i == axis else slice(None) for i in range(a.ndim))
        total = np.add(total[even], total[odd], dtype=acc)
    quotient, remainder = total >> 2, total & 3
    quotient += (remainder + (quotient & 1)) > 2
    return quotient
