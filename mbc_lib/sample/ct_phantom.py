"""A synthetic chest CT volume in Hounsfield units with a lung / lesion ground-truth mask.

Axes are (z, y, x): z runs head to foot, y anterior to posterior, x patient right to left, as in
an axial series displayed in the usual radiological orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

BACKGROUND, NORMAL_LUNG, GGO, CONSOLIDATION = 0, 1, 2, 3


@dataclass(frozen=True)
class Geometry:
    """Voxel grid: in-plane size and spacing, slice count and spacing (mm)."""

    size: int
    slices: int
    pixel_mm: float
    slice_mm: float


@dataclass
class Phantom:
    """HU volume (int16) and label volume (uint8), both shaped (slices, size, size)."""

    hu: np.ndarray
    labels: np.ndarray


def _grid(geo: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mm coordinates, broadcastable: z (head=0, downwards), y, x centred on the volume."""
    z = (np.arange(geo.slices, dtype=np.float32) * geo.slice_mm)[:, None, None]
    c = (np.arange(geo.size, dtype=np.float32) - (geo.size - 1) / 2) * geo.pixel_mm
    return z, c[None, :, None], c[None, None, :]


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (field.std() + 1e-6)


def _lung(
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    side: float,
    rng: np.random.Generator,
    length: float,
) -> np.ndarray:
    """One lung: a superellipse cross-section that widens from the apex and ends in a dome."""
    apex = length * rng.uniform(0.04, 0.10)
    base = length * rng.uniform(0.86, 0.95) - (0.04 * length if side < 0 else 0.0)
    u = np.clip((z - apex) / (base - apex), -1.0, 2.0)
    width = np.where(u < 0.75, np.clip(1.3 * np.sqrt(np.clip(u, 0, None)), 0, 1), 1.0)
    width = np.where((u >= 0) & (u <= 1), width, 0.0)
    cx, cy = side * rng.uniform(60, 70), rng.uniform(-2, 8)
    ax, ay = rng.uniform(46, 54), rng.uniform(72, 84)
    shape = (np.abs(x - cx) / ax) ** 2.4 + (np.abs(y - cy) / ay) ** 2.4
    lung = shape < width**2.4
    dome = np.clip((u - 0.6) / 0.4, 0, 1)
    dome_r = 1.05 * ax * np.sqrt(dome)
    lung &= ((x - cx) ** 2 + (y - cy + 15) ** 2) > dome_r**2
    return lung


def _airways(
    z: np.ndarray, y: np.ndarray, x: np.ndarray, length: float, spine_y: float
) -> np.ndarray:
    """Trachea down to the carina, then two main bronchi running out to the hila."""
    carina = 0.33 * length
    ty = spine_y - 38.0
    trachea = (z <= carina) & ((x**2 + (y - ty) ** 2) < 9.0**2)
    frac = np.clip((z - carina) / (0.12 * length), 0, 1)
    in_range = (z > carina) & (z <= carina + 0.12 * length)
    bronchi = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), bool)
    for side in (-1.0, 1.0):
        bx, by = side * 42.0 * frac, ty + 8.0 * frac
        bronchi |= in_range & (((x - bx) ** 2 + (y - by) ** 2) < 6.0**2)
    return trachea | bronchi


def _body(z, y, x, rng: np.random.Generator, length: float) -> tuple[np.ndarray, ...]:
    ax, ay, y0 = rng.uniform(140, 162), rng.uniform(98, 116), rng.uniform(0, 8)
    fat = rng.uniform(8, 20)
    rho = np.sqrt((x / ax) ** 2 + ((y - y0) / ay) ** 2)
    inner = np.sqrt((x / (ax - fat)) ** 2 + ((y - y0) / (ay - fat)) ** 2)
    spine_y = y0 + 0.55 * ay
    bone = ((x**2 + (y - spine_y) ** 2) < 16.0**2) | (
        (np.abs(x) < 5) & (y > spine_y + 20) & (y < spine_y + 38)
    )
    arch = np.sqrt(x**2 + (y - spine_y - 24) ** 2)
    bone |= (arch > 8) & (arch < 13) & (y > spine_y + 14)
    angle = np.arctan2(y - y0, x)
    ribs = (np.abs(inner - 0.93) < 0.035) & (
        np.cos(2 * np.pi * (z / length * 10 + 0.35 * angle / np.pi)) > 0.5
    )
    ribs &= np.abs(x) > 30
    sternum = (
        ((x / 14) ** 2 + ((y - (y0 - (ay - fat) + 12)) / 6) ** 2 < 1)
        & (z > 0.15 * length)
        & (z < 0.7 * length)
    )
    return rho <= 1, inner <= 1, bone | ribs | sternum, inner, spine_y


def _lesion_field(z, y, x, centre, radii, wobble: np.ndarray) -> np.ndarray:
    d = np.sqrt(
        ((z - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((x - centre[2]) / radii[2]) ** 2
    )
    return 1.0 - d + 0.2 * wobble


def _pick(rng: np.random.Generator, candidates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return candidates[rng.choice(len(candidates), p=weights / weights.sum())]


def _add_lesions(
    rng,
    hu: np.ndarray,
    labels: np.ndarray,
    lung: np.ndarray,
    vessels: np.ndarray,
    grid,
    geo: Geometry,
) -> None:
    """Ground-glass blobs (mostly subpleural, lower and posterior) and consolidation cores."""
    z, y, x = grid
    depth = ndimage.distance_transform_edt(
        lung, sampling=(geo.slice_mm, geo.pixel_mm, geo.pixel_mm)
    )
    parenchyma = lung & ~vessels
    idx = np.argwhere(lung)
    pos = np.stack(
        [
            idx[:, 0] * geo.slice_mm,
            (idx[:, 1] - (geo.size - 1) / 2) * geo.pixel_mm,
            (idx[:, 2] - (geo.size - 1) / 2) * geo.pixel_mm,
        ],
        axis=1,
    )
    peripheral = depth[lung] <= max(12.0, 1.5 * geo.pixel_mm)
    w_base = (1.0 + idx[:, 0] / geo.slices) * (1.0 + np.clip(pos[:, 1] / 80.0, -0.5, 1.0))
    wobble = _smooth(rng, hu.shape, 2.0)
    min_r = np.array([1.6 * geo.slice_mm, 2.5 * geo.pixel_mm, 2.5 * geo.pixel_mm])
    ggo_centres = []
    for _ in range(int(rng.integers(4, 10))):
        weights = w_base * np.where(peripheral, 6.0, 1.0)
        centre = _pick(rng, pos, weights)
        ggo_centres.append(centre)
        radii = np.maximum(rng.uniform(16, 40) * rng.uniform(0.75, 1.3, 3), min_r)
        w = np.clip(_lesion_field(z, y, x, centre, radii, wobble) / 0.35, 0, 1) * lung
        target = rng.uniform(-620, -420)
        hu += (target - hu) * w * parenchyma
        labels[(w >= 0.5) & (labels != CONSOLIDATION)] = GGO
    for k in range(int(rng.integers(1, 4))):
        centre = ggo_centres[k] if k < len(ggo_centres) else _pick(rng, pos, w_base)
        radii = np.maximum(rng.uniform(10, 20) * rng.uniform(0.8, 1.2, 3), min_r)
        w = np.clip(_lesion_field(z, y, x, centre, radii, 0.3 * wobble) / 0.12, 0, 1) * lung
        hu += (rng.uniform(-60, 30) - hu) * w
        labels[w >= 0.5] = CONSOLIDATION


def chest_phantom(rng: np.random.Generator, geo: Geometry, covid: bool) -> Phantom:
    """A chest CT volume; covid cases get ground-glass opacities and consolidations."""
    grid = _grid(geo)
    z, y, x = grid
    length = geo.slices * geo.slice_mm
    shape = (geo.slices, geo.size, geo.size)
    body, inner, bone, inner_rho, spine_y = _body(z, y, x, rng, length)
    lungs = _lung(z, y, x, -1.0, rng, length) | _lung(z, y, x, 1.0, rng, length)
    heart = ((x - 22) / 62) ** 2 + ((y + 28) / 52) ** 2 < np.clip((z / length - 0.42) / 0.2, 0, 1)
    lungs = lungs & ~heart & (np.abs(x) > 16) & (inner_rho < 0.87)
    airway = _airways(z, y, x, length, spine_y) & inner
    lung = np.broadcast_to(lungs, shape) & ~airway

    hu = np.full(shape, -1000.0, np.float32)
    hu[np.broadcast_to(body, shape)] = -100.0
    hu[np.broadcast_to(inner, shape)] = 40.0
    hu += 12.0 * _smooth(rng, shape, 1.5) * np.broadcast_to(inner, shape)
    lung_hu = -865.0 + 0.35 * (y - 0) + 18.0 * _smooth(rng, shape, 1.0)
    hu[lung] = np.broadcast_to(lung_hu, shape)[lung]
    n1, n2 = _smooth(rng, shape, 1.6), _smooth(rng, shape, 1.6)
    vessels = lung & (np.abs(n1) < 0.22) & (np.abs(n2) < 0.22)
    hu[vessels] = 40.0
    hu[np.broadcast_to(airway, shape)] = -1000.0
    hu[np.broadcast_to(bone & inner, shape)] = 700.0

    labels = np.where(lung, NORMAL_LUNG, BACKGROUND).astype(np.uint8)
    if covid:
        _add_lesions(rng, hu, labels, lung, vessels, grid, geo)
    hu = ndimage.gaussian_filter(hu, (0.0, 0.5, 0.5))
    hu += rng.normal(0.0, rng.uniform(10, 22), shape).astype(np.float32)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return Phantom(hu=hu, labels=labels)


__all__ = [
    "BACKGROUND",
    "CONSOLIDATION",
    "GGO",
    "NORMAL_LUNG",
    "Geometry",
    "Phantom",
    "chest_phantom",
]
