"""Convert de-identified source files into arrays with geometry (CT volumes, photos, generic)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
#: Slices whose spacing differs from the median by more than this fraction are refused.
SPACING_TOLERANCE = 0.05


class ConversionError(ValueError):
    """The input cannot be converted; the message is the quarantine reason."""


def case_id(prefix: str, key: str) -> str:
    return f"{prefix}-" + hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Volume:
    image: np.ndarray  # (z, y, x) int16 HU
    spacing: tuple[float, float, float]  # mm along z, y, x
    origin: list[float]  # LPS of voxel (0, 0, 0)
    direction: list[list[float]]  # LPS unit vectors of z, y, x
    sop_uids: list[str]  # SOP Instance UID of each z index


def _floats(value: object, n: int, what: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ConversionError(f"{what} missing or not numeric") from None
    if arr.shape != (n,):
        raise ConversionError(f"{what} must have {n} values")
    return arr


def ct_volume(headers: Sequence[Dataset], read_pixels: callable) -> Volume:  # type: ignore[valid-type]
    """Stack one CT series, ordered along the slice normal, into an int16 HU volume.

    ``headers`` are the series' datasets without pixels; ``read_pixels(i)`` returns the
    full dataset of slice ``i``. Inconsistent series raise :class:`ConversionError`.
    """
    if len(headers) < 2:
        raise ConversionError(f"series has {len(headers)} slice; a CT volume needs at least 2")
    first = headers[0]
    iop = _floats(first.get("ImageOrientationPatient"), 6, "Image Orientation (Patient)")
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise ConversionError("Image Orientation (Patient) is not orthonormal")
    shape = (int(first.Rows), int(first.Columns))
    pixel_spacing = _floats(first.get("PixelSpacing"), 2, "Pixel Spacing")
    positions = []
    for ds in headers:
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise ConversionError("slices differ in size")
        other = _floats(ds.get("ImageOrientationPatient"), 6, "Image Orientation (Patient)")
        if not np.allclose(other, iop, atol=1e-4):
            raise ConversionError("slices differ in orientation")
        if not np.allclose(_floats(ds.get("PixelSpacing"), 2, "Pixel Spacing"), pixel_spacing):
            raise ConversionError("slices differ in pixel spacing")
        ipp = _floats(ds.get("ImagePositionPatient"), 3, "Image Position (Patient)")
        positions.append(ipp)
    distances = np.array([float(np.dot(normal, p)) for p in positions])
    order = np.argsort(distances, kind="stable")
    gaps = np.diff(distances[order])
    if np.any(gaps < 1e-3):
        raise ConversionError("two slices share one position")
    median = float(np.median(gaps))
    if np.any(np.abs(gaps - median) > SPACING_TOLERANCE * median):
        raise ConversionError(
            f"non-uniform slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm): missing slices?"
        )
    volume = np.empty((len(headers), *shape), dtype=np.int16)
    sop_uids = []
    for z, index in enumerate(order):
        ds = read_pixels(int(index))
        try:
            hu = apply_modality_lut(ds.pixel_array, ds)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason to refuse
            raise ConversionError(f"pixel data cannot be decoded: {exc}") from None
        if hu.shape != shape:
            raise ConversionError("pixel data does not match Rows/Columns")
        volume[z] = np.clip(np.rint(hu), -32768, 32767)
        sop_uids.append(str(headers[index].SOPInstanceUID))
    origin = positions[int(order[0])]
    # array axis y runs down the columns (col_dir), x along the rows (row_dir)
    return Volume(
        image=volume,
        spacing=(median, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=[float(v) for v in origin],
        direction=[[float(v) for v in vec] for vec in (normal, col_dir, row_dir)],
        sop_uids=sop_uids,
    )


def photo_rgb(data: bytes) -> np.ndarray:
    """Decode a JPEG/PNG photograph to a (3, H, W) uint8 array."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise ConversionError(f"image cannot be decoded: {exc}") from None
    return np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1))


@dataclass
class GenericImage:
    image: np.ndarray
    dims: tuple[str, ...]
    spacing: tuple[float, ...]
    unit: str | None
    value_units: str | None


def generic_image(ds: Dataset) -> GenericImage:
    """Any DICOM image as an array with NGFF dims (t, c, y, x subsets)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ConversionError("no pixel data: not an image")
    try:
        pixels = ds.pixel_array
        if ds.get("PhotometricInterpretation", "") == "PALETTE COLOR":
            pixels = pydicom.pixels.apply_color_lut(pixels, ds)
        elif int(ds.get("SamplesPerPixel", 1)) == 1:
            pixels = apply_modality_lut(pixels, ds)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason to refuse
        raise ConversionError(f"pixel data cannot be decoded: {exc}") from None
    pixels = np.asarray(pixels)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    color = pixels.ndim == (4 if frames > 1 else 3)
    dims: list[str] = (["t"] if frames > 1 else []) + ["y", "x"]
    if color:
        pixels = np.moveaxis(pixels, -1, -3)
        dims.insert(len(dims) - 2, "c")
    if pixels.dtype.kind == "f":
        as_int = np.rint(pixels)
        if np.array_equal(as_int, pixels) and np.abs(pixels).max(initial=0) < 2**31:
            pixels = as_int.astype(np.int16 if np.abs(pixels).max(initial=0) < 2**15 else np.int32)
        else:
            pixels = pixels.astype(np.float32)
    spacing_tag = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    unit = None
    yx = (1.0, 1.0)
    if spacing_tag is not None and len(spacing_tag) == 2:
        try:
            yx = (float(spacing_tag[0]), float(spacing_tag[1]))
            unit = "millimeter"
        except (TypeError, ValueError):
            yx = (1.0, 1.0)
    spacing = tuple(yx[["y", "x"].index(d)] if d in "yx" else 1.0 for d in dims)
    value_units = "HU" if ds.get("Modality") == "CT" else None
    return GenericImage(np.ascontiguousarray(pixels), tuple(dims), spacing, unit, value_units)
