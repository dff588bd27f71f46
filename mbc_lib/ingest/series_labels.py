"""Lesion labels that come beside a DICOM CT series: NIfTI, DICOM-SEG, RTSTRUCT.

One job: read a label object and give a ``uint8`` array on a :class:`convert.Volume`'s grid
(``z, y, x``, values the manifest's class values), or raise :class:`LabelRefused` with the
reason. Nothing is resampled: a NIfTI mask must lie on the series' voxel grid (its axes may
be permuted or flipped, which only re-indexes voxels), a SEG's frames must be the series'
slices, an RTSTRUCT's contours must lie in the series' slice planes. Segment and ROI names
are matched to the manifest's class names case-insensitively.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..sources import nifti
from . import convert

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
LABEL_SOP_CLASSES = frozenset({SEG_STORAGE, RTSTRUCT_STORAGE})
#: How far (mm) a label's voxel or contour may lie from the series' grid.
TOLERANCE_MM = 0.01


class LabelRefused(ValueError):
    """The label cannot be placed on its series; ``str(exc)`` is the quarantine reason."""


def class_values(classes: dict[int, str]) -> dict[str, int]:
    """The manifest's class values by lower-cased name."""
    return {name.strip().lower(): value for value, name in classes.items()}


def _class_of(name: str, classes: dict[int, str], what: str) -> int:
    value = class_values(classes).get(str(name).strip().lower())
    if value is None:
        known = ", ".join(repr(n) for n in classes.values())
        raise LabelRefused(f"{what} {name!r} is not a class of the manifest ({known})")
    return value


def _read(data: bytes) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on a damaged file
        raise LabelRefused(f"malformed label object: {exc.__class__.__name__}") from None


def referenced_series(data: bytes) -> set[str]:
    """The Series Instance UIDs a SEG or RTSTRUCT says it was drawn on."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    uids = {str(s.get("SeriesInstanceUID", "")) for s in ds.get("ReferencedSeriesSequence", [])}
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                uids.add(str(series.get("SeriesInstanceUID", "")))
    return uids - {""}


# -- the series' grid ---------------------------------------------------------------------
def grid_affine(vol: convert.Volume) -> np.ndarray:
    """The 4x4 map from the series' voxel index (z, y, x) to LPS mm."""
    affine = np.eye(4)
    for axis in range(3):
        affine[:3, axis] = np.array(vol.direction[axis]) * vol.spacing[axis]
    affine[:3, 3] = vol.origin
    return affine


def _corners(shape: Iterable[int]) -> np.ndarray:
    n = np.array(list(shape), dtype=np.float64) - 1
    return np.array(
        [[a * n[0], b * n[1], c * n[2], 1.0] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    )


def _xyz(shape: Iterable[int]) -> str:
    """A z, y, x shape as x, y, z (the order viewers and NIfTI tools print)."""
    return " x ".join(str(n) for n in list(shape)[::-1])


def _spacing(values: Iterable[float]) -> str:
    return " x ".join(f"{v:.4g}" for v in list(values)[::-1])


def _check_values(mask: np.ndarray, classes: dict[int, str]) -> np.ndarray:
    if mask.dtype.kind == "f" and not (np.isfinite(mask).all() and (mask == np.round(mask)).all()):
        raise LabelRefused("label holds values that are not whole numbers")
    found = {int(v) for v in np.unique(mask)}
    if not found <= set(classes):
        raise LabelRefused(
            f"label holds values {sorted(found - set(classes))} outside the manifest's classes"
        )
    return mask.astype(np.uint8)


# -- NIfTI ------------------------------------------------------------------------------------
def nifti_on_grid(
    data: bytes, vol: convert.Volume, classes: dict[int, str], budget: int
) -> np.ndarray:
    """A NIfTI mask re-indexed onto ``vol``'s grid; refused unless its voxels are the series'."""
    try:
        mask = nifti.read_volume(nifti.parse(data, budget))
    except nifti.MalformedNifti as exc:
        raise LabelRefused(str(exc)) from None
    target = grid_affine(vol)
    own = np.eye(4)
    for axis in range(3):
        own[:3, axis] = np.array(mask.direction[axis]) * mask.spacing[axis]
    own[:3, 3] = mask.origin
    detail = (
        f"label {_xyz(mask.image.shape)} voxels of {_spacing(mask.spacing)} mm, "
        f"series {_xyz(vol.image.shape)} of {_spacing(vol.spacing)} mm"
    )
    to_series = np.linalg.solve(target, own)[:3, :3]  # label index -> series index
    signed = np.round(to_series)
    if not (
        np.allclose(to_series, signed, atol=1e-3)
        and (np.abs(signed).sum(axis=0) == 1).all()
        and (np.abs(signed).sum(axis=1) == 1).all()
    ):
        raise LabelRefused(f"label does not lie on its series' grid ({detail}); not resampled")
    perm = [int(np.argmax(np.abs(signed[a]))) for a in range(3)]
    image = mask.image.transpose(perm)
    moved = own.copy()
    for a, b in enumerate(perm):
        moved[:, a] = own[:, b] * signed[a, b]
        if signed[a, b] < 0:
            image = np.flip(image, axis=a)
            moved[:3, 3] += own[:3, b] * (mask.image.shape[b] - 1)
    if image.shape != vol.image.shape:
        raise LabelRefused(
            f"label does not lie on its series' grid: shape differs ({detail}); not resampled"
        )
    corners = _corners(image.shape)
    gap = float(np.abs((moved - target) @ corners.T).max())
    if gap > TOLERANCE_MM:
        raise LabelRefused(
            f"label does not lie on its series' grid: position differs by up to {gap:.3g} mm "
            f"({detail}); not resampled"
        )
    return _check_values(np.ascontiguousarray(image), classes)


# -- DICOM-SEG --------------------------------------------------------------------------------
def seg_on_grid(data: bytes, vol: convert.Volume, classes: dict[int, str]) -> np.ndarray:
    """A DICOM-SEG's segments as class values on ``vol``'s slices (by referenced SOP UIDs)."""
    import highdicom as hd

    try:
        seg = hd.seg.Segmentation.from_dataset(_read(data), copy=False)
    except LabelRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - highdicom raises many types on a bad object
        raise LabelRefused(f"malformed DICOM-SEG: {exc}") from None
    rows, columns = int(seg.Rows), int(seg.Columns)
    if (rows, columns) != vol.image.shape[1:]:
        raise LabelRefused(
            f"SEG frames are {columns} x {rows} pixels, its series' slices "
            f"{vol.image.shape[2]} x {vol.image.shape[1]}; not resampled"
        )
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    foreign = referenced - set(vol.sop_uids)
    if foreign:
        raise LabelRefused(
            f"SEG references {len(foreign)} images that are not slices of its series"
        )
    values = {
        n: _class_of(seg.get_segment_description(n).segment_label, classes, "segment")
        for n in seg.segment_numbers
    }
    try:
        stack = seg.get_pixels_by_source_instance(
            vol.sop_uids, combine_segments=False, assert_missing_frames_are_empty=True
        )
    except Exception as exc:  # noqa: BLE001
        raise LabelRefused(f"SEG frames cannot be placed on its series' slices: {exc}") from None
    out = np.zeros(vol.image.shape, np.uint8)
    for i, number in enumerate(seg.segment_numbers):
        inside = stack[..., i] > 0
        clash = inside & (out != 0) & (out != values[number])
        if clash.any():
            raise LabelRefused(
                f"segments overlap in {int(clash.sum())} voxels: one class per voxel"
            )
        out[inside] = values[number]
    return out


# -- RTSTRUCT ---------------------------------------------------------------------------------
def rtstruct_on_grid(data: bytes, vol: convert.Volume, classes: dict[int, str]) -> np.ndarray:
    """An RTSTRUCT's ROIs rasterised on ``vol``'s grid: each closed planar contour fills the
    pixels whose centres lie inside it or on its outline, in the slice whose plane it lies in."""
    ds = _read(data)
    names = {
        int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])
    }
    values = {number: _class_of(name, classes, "ROI") for number, name in names.items()}
    inverse = np.linalg.inv(grid_affine(vol))
    out = np.zeros(vol.image.shape, np.uint8)
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        if number not in values:
            raise LabelRefused(
                f"ROI contour {number} has no entry in the Structure Set ROI Sequence"
            )
        layer = np.zeros(vol.image.shape, bool)
        for contour in roi.get("ContourSequence", []):
            points = np.array(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            index = (inverse @ np.c_[points, np.ones(len(points))].T)[:3].T  # z, y, x
            z = float(np.round(index[:, 0].mean()))
            off = float(np.abs(index[:, 0] - z).max()) * vol.spacing[0]
            if off > TOLERANCE_MM or not 0 <= z < vol.image.shape[0]:
                raise LabelRefused(
                    f"ROI {names[number]!r}: a contour lies {off:.3g} mm off the series' slice "
                    f"planes or outside its {vol.image.shape[0]} slices; not resampled"
                )
            layer[int(z)] ^= _fill(index[:, 1:], vol.image.shape[1:])
        clash = layer & (out != 0) & (out != values[number])
        if clash.any():
            raise LabelRefused(f"ROIs overlap in {int(clash.sum())} voxels: one class per voxel")
        out[layer] = values[number]
    return out


def _fill(polygon: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pixels (y, x) whose centres lie inside the closed ``polygon`` (even-odd) or on it."""
    rows, columns = shape
    ys, xs = np.mgrid[0:rows, 0:columns]
    inside = np.zeros(shape, bool)
    edges = list(zip(polygon, np.roll(polygon, -1, axis=0), strict=True))
    for (y0, x0), (y1, x1) in edges:
        if y0 == y1:
            continue
        crosses = (ys >= min(y0, y1)) & (ys < max(y0, y1))
        x_at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < x_at)
    for (y0, x0), (y1, x1) in edges:  # the outline itself
        steps = int(np.ceil(max(abs(y1 - y0), abs(x1 - x0)) * 2)) + 1
        t = np.linspace(0.0, 1.0, steps)
        py, px = np.rint(y0 + t * (y1 - y0)).astype(int), np.rint(x0 + t * (x1 - x0)).astype(int)
        keep = (py >= 0) & (py < rows) & (px >= 0) & (px < columns)
        inside[py[keep], px[keep]] = True
    return inside


__all__ = [
    "LABEL_SOP_CLASSES",
    "RTSTRUCT_STORAGE",
    "SEG_STORAGE",
    "TOLERANCE_MM",
    "LabelRefused",
    "class_values",
    "grid_affine",
    "nifti_on_grid",
    "referenced_series",
    "rtstruct_on_grid",
    "seg_on_grid",
]
