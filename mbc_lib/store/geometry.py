"""Where a case's voxels lie in the patient: the 4x4 affine of a CT volume from its store geometry.

The store keeps what NGFF can say (per pyramid level, a scale and a translation in the
array-aligned frame) and, in the case's ``mbc`` attributes, what it cannot: the direction
cosines of the array axes in the DICOM patient frame (LPS). Together they give the affine that
maps an index ``(z, y, x)`` to millimetres, as NIfTI, ITK and MONAI use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ..errors import MbcError

Space = Literal["RAS", "LPS"]

#: Directions of ``z, y, x`` when a case has none: the axial DICOM frame (slices towards
#: the head, rows towards the back, columns towards the patient's left).
AXIAL_LPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0))
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def level_entry(ome: Mapping[str, Any], level: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pyramid ``level``'s NGFF dataset entry and its transforms by type (``scale``, ...)."""
    ms = ome["multiscales"][0]
    if not 0 <= level < len(ms["datasets"]):
        raise MbcError(f"level {level} not in pyramid (0..{len(ms['datasets']) - 1})")
    entry = ms["datasets"][level]
    return entry, {t["type"]: t[t["type"]] for t in entry["coordinateTransformations"]}


def level_transform(ome: Mapping[str, Any], level: int) -> tuple[list[float], list[float]]:
    """The NGFF scale and translation of pyramid ``level`` of an image group's ``ome`` attrs."""
    _, found = level_entry(ome, level)
    dims = [ax["name"] for ax in ome["multiscales"][0]["axes"]]
    scale = [float(s) for d, s in zip(dims, found["scale"], strict=True) if d in "zyx"]
    translation = found.get("translation", [0.0] * len(dims))
    shift = [float(t) for d, t in zip(dims, translation, strict=True) if d in "zyx"]
    return scale, shift


def affine(
    scale: Sequence[float],
    translation: Sequence[float],
    direction: Sequence[Sequence[float]] | None,
    space: Space = "RAS",
) -> np.ndarray:
    """The 4x4 affine of a ``(z, y, x)`` array: index to mm in ``space`` (RAS or LPS).

    ``scale`` and ``translation`` are NGFF's (array-aligned frame), ``direction`` the LPS unit
    vectors of ``z, y, x`` (None: :data:`AXIAL_LPS`). Column ``i`` is axis ``i``'s step; the
    last column is the centre of voxel ``(0, 0, 0)``.
    """
    if len(scale) != 3 or len(translation) != 3:
        raise MbcError(f"a CT affine needs three spatial axes, got scale {list(scale)}")
    rows = np.asarray(direction if direction is not None else AXIAL_LPS, dtype=np.float64)
    if rows.shape != (3, 3) or not np.allclose(rows @ rows.T, np.eye(3), atol=1e-4):
        raise MbcError(f"direction must be three orthonormal vectors, got {rows.tolist()}")
    out = np.eye(4)
    out[:3, :3] = rows.T * np.asarray(scale, dtype=np.float64)
    out[:3, 3] = rows.T @ np.asarray(translation, dtype=np.float64)  # translation = rows . origin
    if space == "RAS":
        return _LPS_TO_RAS @ out
    if space == "LPS":
        return out
    raise MbcError(f"space must be RAS or LPS, got {space!r}")


def case_affine(
    ome: Mapping[str, Any], mbc: Mapping[str, Any], level: int = 0, space: Space = "RAS"
) -> np.ndarray:
    """The affine of pyramid ``level`` of a CT case from its ``ome`` and ``mbc`` attributes."""
    scale, translation = level_transform(ome, level)
    return affine(scale, translation, mbc.get("direction"), space)


def shifted(affine_: np.ndarray, start: Sequence[int]) -> np.ndarray:
    """The affine of a region of the array that begins at index ``start``."""
    out = np.array(affine_, dtype=np.float64)
    out[:3, 3] = affine_[:3, :3] @ np.asarray(start, dtype=np.float64) + affine_[:3, 3]
    return out


__all__ = [
    "AXIAL_LPS",
    "Space",
    "affine",
    "case_affine",
    "level_entry",
    "level_transform",
    "shifted",
]
