"""Convert de-identified source files into arrays with geometry (CT volumes, photos, generic)."""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import describe_error
from ..sources import header
from ..sources.limits import DEFAULT_MAX_PIXELS, OverBudget, check_pixels

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


@dataclass(frozen=True, slots=True)
class Slice:
    """What stacking needs of one CT slice, read from its header (a few hundred bytes)."""

    sop_uid: str
    rows: int
    columns: int
    orientation: tuple[float, ...]  # Image Orientation (Patient): row then column cosines
    position: tuple[float, float, float]  # Image Position (Patient), mm
    pixel_spacing: tuple[float, float]  # mm between rows, between columns
    pixels: NativePixels | None = None  # where its pixels lie, when they can be read directly


@dataclass(frozen=True, slots=True)
class NativePixels:
    """Uncompressed little-endian 16-bit pixel data: where it lies in the file and how to
    read it exactly as pydicom's ``pixel_array`` and ``apply_modality_lut`` would."""

    offset: int
    length: int
    bits_stored: int
    signed: bool
    rescale: tuple[float, float] | None  # (slope, intercept) when both are present


_NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian})
_PIXEL_DATA = 0x7FE00010


def native_pixels(ds: Dataset, rows: int, columns: int) -> NativePixels | None:
    """How to read ``ds``'s pixels straight from the file, or None (pydicom decodes them)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax not in _NATIVE_SYNTAXES or "ModalityLUTSequence" in ds:
        return None
    try:
        layout = [int(header.get(ds, k, d)) for k, d in _NATIVE_LAYOUT]
    except (TypeError, ValueError):
        return None
    bits_allocated, samples, frames, representation, bits_stored, high_bit = layout
    raw = ds.get_item(_PIXEL_DATA)
    if (
        bits_allocated != 16
        or samples != 1
        or frames != 1
        or representation not in (0, 1)
        or not 1 <= bits_stored <= 16
        or high_bit != bits_stored - 1
        or not isinstance(raw, RawDataElement)
        or raw.length != rows * columns * 2
    ):
        return None
    both = "RescaleSlope" in ds and "RescaleIntercept" in ds
    return NativePixels(
        offset=raw.value_tell,
        length=raw.length,
        bits_stored=bits_stored,
        signed=representation == 1,
        rescale=rescale(ds) if both else None,
    )


_NATIVE_LAYOUT = (
    ("BitsAllocated", 0),
    ("SamplesPerPixel", 1),
    ("NumberOfFrames", 1),
    ("PixelRepresentation", -1),
    ("BitsStored", 0),
    ("HighBit", -1),
)


def native_hu(data: bytes, pixels: NativePixels, shape: tuple[int, int]) -> np.ndarray:
    """Modality values from the bytes :class:`NativePixels` points at (pydicom's result:
    unused high bits masked, signed values sign-extended, slope and intercept in float64)."""
    stored = np.frombuffer(data, dtype="<u2").reshape(shape)
    if pixels.bits_stored < 16:
        stored = stored & np.uint16((1 << pixels.bits_stored) - 1)
    if pixels.signed:
        values = stored.astype(np.int32)
        values[values >= 1 << (pixels.bits_stored - 1)] -= 1 << pixels.bits_stored
        values = values.astype(np.int16)
    else:
        values = stored
    if pixels.rescale is None:
        return values
    slope, intercept = pixels.rescale
    hu = values.astype(np.float64) * slope
    hu += intercept
    return hu


def _floats(value: object, n: int, what: str) -> tuple[float, ...]:
    try:
        arr = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ConversionError(f"{what} missing or not numeric") from None
    if len(arr) != n:
        raise ConversionError(f"{what} must have {n} values")
    if not all(math.isfinite(v) for v in arr):
        raise ConversionError(f"{what} holds a value that is not finite (NaN or infinite)")
    return arr


def _count(ds: Dataset, keyword: str) -> int:
    value = header.get(ds, keyword)
    if value is None or value == "":
        raise ConversionError(f"no {keyword}")
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ConversionError(f"{keyword} is not a number") from None
    if count < 1:
        raise ConversionError(f"{keyword} is {count}")
    return count


def rescale(ds: Dataset) -> tuple[float, float]:
    """Rescale Slope and Intercept (1, 0 when absent); refused when not finite numbers."""
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        raw = header.get(ds, keyword)
        try:
            value = default if raw is None or raw == "" else float(raw)
        except (TypeError, ValueError):
            raise ConversionError(f"{keyword} is not a number") from None
        if not math.isfinite(value):
            raise ConversionError(f"{keyword} is not finite")
        values.append(value)
    return values[0], values[1]


def ct_slice(ds: Dataset, budget: int) -> Slice:
    """The stacking geometry of one CT slice header; :class:`ConversionError` if unusable."""
    uid = str(header.get(ds, "SOPInstanceUID", "") or "").strip()
    if not uid:
        raise ConversionError("no SOP Instance UID")
    rows, columns = _count(ds, "Rows"), _count(ds, "Columns")
    samples = int(header.get(ds, "SamplesPerPixel", 1) or 1)
    try:
        check_pixels(rows * columns * samples, budget, f"a {rows} x {columns} slice")
    except OverBudget as exc:
        raise ConversionError(str(exc)) from None
    rescale(ds)
    return Slice(
        sop_uid=uid,
        rows=rows,
        columns=columns,
        pixels=native_pixels(ds, rows, columns),
        orientation=_floats(
            header.get(ds, "ImageOrientationPatient"), 6, "Image Orientation (Patient)"
        ),
        position=_floats(header.get(ds, "ImagePositionPatient"), 3, "Image Position (Patient)"),
        pixel_spacing=_floats(header.get(ds, "PixelSpacing"), 2, "Pixel Spacing"),  # type: ignore[arg-type]
    )


def in_int16(hu: np.ndarray) -> np.ndarray:
    """Round to int16; refuse values that int16 cannot hold instead of clipping them."""
    if hu.dtype.kind == "f" and not np.isfinite(hu).all():
        raise ConversionError("rescaled values are not finite (check Rescale Slope/Intercept)")
    low, high = (float(hu.min()), float(hu.max())) if hu.size else (0.0, 0.0)
    if low < -32768 or high > 32767:
        raise ConversionError(
            f"rescaled values {low:.4g} to {high:.4g} overflow int16 "
            "(check Rescale Slope/Intercept)"
        )
    return np.rint(hu).astype(np.int16) if hu.dtype.kind == "f" else hu.astype(np.int16)


def dataset_hu(ds: Dataset) -> np.ndarray:
    """Modality values of a whole dataset, decoded by pydicom."""
    try:
        return np.asarray(apply_modality_lut(ds.pixel_array, ds))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason to refuse
        raise ConversionError(f"pixel data cannot be decoded: {describe_error(exc)}") from None


def ct_volume(slices: Sequence[Slice], read_hu: Callable[[int], np.ndarray]) -> Volume:
    """Stack one CT series, ordered along the slice normal, into an int16 HU volume.

    ``slices`` are the series' slice geometries; ``read_hu(i)`` returns the modality values
    of slice ``i`` (:func:`native_hu` or :func:`dataset_hu`). Inconsistent series raise
    :class:`ConversionError`.
    """
    if len(slices) < 2:
        raise ConversionError(f"series has {len(slices)} slice; a CT volume needs at least 2")
    first = slices[0]
    iop = np.array(first.orientation)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise ConversionError("Image Orientation (Patient) is not orthonormal")
    shape = (first.rows, first.columns)
    pixel_spacing = np.array(first.pixel_spacing)
    if np.any(pixel_spacing <= 0):
        raise ConversionError("Pixel Spacing must be positive")
    for s in slices:
        if (s.rows, s.columns) != shape:
            raise ConversionError("slices differ in size")
        if not np.allclose(s.orientation, iop, atol=1e-4):
            raise ConversionError("slices differ in orientation")
        if not np.allclose(s.pixel_spacing, pixel_spacing):
            raise ConversionError("slices differ in pixel spacing")
    positions = [np.array(s.position) for s in slices]
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
    volume = np.empty((len(slices), *shape), dtype=np.int16)
    for z, index in enumerate(order):
        hu = read_hu(int(index))
        if hu.shape != shape:
            raise ConversionError("pixel data does not match Rows/Columns")
        volume[z] = in_int16(np.asarray(hu))
    origin = positions[int(order[0])]
    # array axis y runs down the columns (col_dir), x along the rows (row_dir)
    return Volume(
        image=volume,
        spacing=(median, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=[float(v) for v in origin],
        direction=[[float(v) for v in vec] for vec in (normal, col_dir, row_dir)],
        sop_uids=[slices[int(i)].sop_uid for i in order],
    )


def photo_rgb(data: bytes, budget: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG/PNG photograph to a (3, H, W) uint8 array, within the pixel budget."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            check_pixels(width * height, budget, f"a {width} x {height} photograph")
            img.load()
            rgb = img.convert("RGB")
    except OverBudget as exc:
        raise ConversionError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise ConversionError(f"image cannot be decoded: {describe_error(exc)}") from None
    pixels = np.asarray(rgb)
    if pixels.size and pixels.min() == pixels.max():
        raise ConversionError("malformed image: every pixel has one value (no image data)")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def mask_grey(data: bytes, budget: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a mask image (BMP, PNG) to a (H, W) uint8 array of its grey values, within
    the pixel budget; a colour or palette image is refused (its values would be guesses)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            check_pixels(width * height, budget, f"a {width} x {height} mask")
            img.load()
            grey = img.convert("L") if img.mode == "1" else img
            if grey.mode != "L":
                raise ConversionError(f"mask is not an 8-bit grey image (mode {img.mode})")
            return np.array(grey, dtype=np.uint8)
    except ConversionError:
        raise
    except OverBudget as exc:
        raise ConversionError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise ConversionError(f"mask cannot be decoded: {describe_error(exc)}") from None


@dataclass
class GenericImage:
    image: np.ndarray
    dims: tuple[str, ...]
    spacing: tuple[float, ...]
    unit: str | None
    value_units: str | None


def generic_image(ds: Dataset, budget: int = DEFAULT_MAX_PIXELS) -> GenericImage:
    """Any DICOM image as an array with NGFF dims (t, c, y, x subsets), within the budget."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ConversionError("no pixel data: not an image")
    rows, columns = _count(ds, "Rows"), _count(ds, "Columns")
    frames = int(header.get(ds, "NumberOfFrames", 1) or 1)
    samples = int(header.get(ds, "SamplesPerPixel", 1) or 1)
    try:
        check_pixels(rows * columns * frames * samples, budget, f"a {rows} x {columns} image")
    except OverBudget as exc:
        raise ConversionError(str(exc)) from None
    rescale(ds)
    try:
        pixels = ds.pixel_array
        if header.get(ds, "PhotometricInterpretation", "") == "PALETTE COLOR":
            pixels = pydicom.pixels.apply_color_lut(pixels, ds)
        elif int(header.get(ds, "SamplesPerPixel", 1)) == 1:
            pixels = apply_modality_lut(pixels, ds)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason to refuse
        raise ConversionError(f"pixel data cannot be decoded: {describe_error(exc)}") from None
    pixels = np.asarray(pixels)
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise ConversionError("pixel values are not finite (check Rescale Slope/Intercept)")
    frames = int(header.get(ds, "NumberOfFrames", 1) or 1)
    color = pixels.ndim == (4 if frames > 1 else 3)
    dims: list[str] = (["t"] if frames > 1 else []) + ["y", "x"]
    if color:
        pixels = np.moveaxis(pixels, -1, -3)
        dims.insert(len(dims) - 2, "c")
    if pixels.dtype.kind == "f":
        as_int = np.rint(pixels)
        if np.array_equal(as_int, pixels) and np.abs(pixels).max(initial=0) < 2**31:
            pixels = as_int.astype(np.int16 if np.abs(pixels).max(initial=0) < 2**15 else np.int32)
        elif np.abs(pixels).max(initial=0) > np.finfo(np.float32).max:
            raise ConversionError("pixel values overflow float32 (check Rescale Slope/Intercept)")
        else:
            pixels = pixels.astype(np.float32)
    spacing_tag = header.get(ds, "PixelSpacing") or header.get(ds, "ImagerPixelSpacing")
    unit = None
    yx = (1.0, 1.0)
    if spacing_tag is not None and len(spacing_tag) == 2:
        try:
            yx = (float(spacing_tag[0]), float(spacing_tag[1]))
            unit = "millimeter"
        except (TypeError, ValueError):
            yx = (1.0, 1.0)
        if not all(math.isfinite(v) for v in yx):
            raise ConversionError("Pixel Spacing holds a value that is not finite")
        if not all(v > 0 for v in yx):  # 0.000 in real files: the size is simply unknown
            yx, unit = (1.0, 1.0), None
    spacing = tuple(yx[["y", "x"].index(d)] if d in "yx" else 1.0 for d in dims)
    value_units = "HU" if header.get(ds, "Modality") == "CT" else None
    return GenericImage(np.ascontiguousarray(pixels), tuple(dims), spacing, unit, value_units)
