"""NIfTI-1 and NIfTI-2 volumes (``.nii``, ``.nii.gz``): recognising, de-identifying, reading.

A NIfTI file carries no patient fields, but its header has free-text fields that converters
fill with acquisition details or names (``descrip``, ``aux_file``, ``intent_name`` and the
Analyze leftovers ``db_name`` and ``data_type``), and extensions that may hold a whole DICOM
header (dcm2niix, AFNI, CIfTI). :func:`deidentify` clears the text fields and drops every
extension, byte for byte otherwise: the voxel data and the affine are left as they are.
The PHI gate (:func:`mbc_lib.phi_gate.check_nifti`) tests the result independently.

:func:`read_volume` gives the voxels in the store's axis order (z, y, x) with the store's
geometry (LPS origin, direction cosines, spacing), so that a voxel's position in patient
coordinates is the same in the store as in the file. Nothing is resampled.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from .limits import DEFAULT_MAX_PIXELS, OverBudget, check_pixels

GZIP_MAGIC = b"\x1f\x8b"
#: The header fields that hold free text; each must be empty after de-identification.
TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name", "data_type")
_N1_MAGICS = (b"n+1\x00", b"ni1\x00")
_N2_MAGIC = b"n+2\x00\r\n\x1a\n"
#: RAS (NIfTI) to LPS (DICOM and the store): x and y change sign.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


class MalformedNifti(ValueError):
    """Not a complete NIfTI volume; ``str(exc)`` is the one-line reason."""


def is_nifti_name(name: str) -> bool:
    return name.endswith((".nii", ".nii.gz"))


_SIZES = {n.to_bytes(4, order) for n in (348, 540) for order in ("little", "big")}


def looks_like_nifti(head: bytes, name: str) -> bool:
    """A NIfTI file by its name and first bytes: the gzip magic for ``.nii.gz``, the header
    size (348 or 540, either byte order) for ``.nii``; :func:`parse` checks the rest."""
    if name.endswith(".nii.gz"):
        return head.startswith(GZIP_MAGIC)
    return name.endswith(".nii") and head[:4] in _SIZES


def _header_class(raw: bytes) -> type[nib.Nifti1Header] | None:
    if len(raw) >= 348 and raw[344:348] in _N1_MAGICS:
        return nib.Nifti1Header
    if len(raw) >= 12 and raw[4:12] == _N2_MAGIC:
        return nib.Nifti2Header
    return None


@dataclass(frozen=True)
class NiftiFile:
    """A NIfTI file's header and the bytes that follow it (extensions and voxels)."""

    header: nib.Nifti1Header
    raw: bytes  # the whole uncompressed file
    compressed: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.header.get_data_shape())

    @property
    def extensions(self) -> int:
        return len(self.header.extensions)


def _inflate(data: bytes, budget: int) -> bytes:
    """Decompress a ``.nii.gz``, checking the header's voxel count against the budget
    before the voxels are decompressed."""
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = stream.decompress(data, 540)
        while len(head) < 540 and stream.unconsumed_tail:
            head += stream.decompress(stream.unconsumed_tail, 540 - len(head))
    except zlib.error as exc:
        raise MalformedNifti(f"malformed NIfTI: gzip stream is damaged ({exc})") from None
    cls = _header_class(head)
    if cls is None:
        raise MalformedNifti("malformed NIfTI: no NIfTI header inside the gzip stream")
    try:
        header = cls(binaryblock=head[: cls.sizeof_hdr], check=False)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types on a bad header
        raise MalformedNifti(f"malformed NIfTI: header cannot be read ({exc})") from None
    _check_budget(header, budget)
    try:  # the same stream goes on: the header is not decompressed a second time
        body = head + stream.decompress(stream.unconsumed_tail) + stream.flush()
        if not stream.eof:
            raise EOFError("compressed file ended before the end-of-stream marker")
        if stream.unused_data.strip(b"\x00"):  # further gzip members (rare, but valid)
            body += gzip.decompress(stream.unused_data)
        return body
    except (OSError, EOFError, zlib.error) as exc:
        raise MalformedNifti(f"malformed NIfTI: gzip stream is damaged ({exc})") from None


#: A volume may hold this many times the per-image budget in all (2^31 voxels by default).
VOLUME_BUDGET_FACTOR = 16


def _check_budget(header: nib.Nifti1Header, budget: int) -> None:
    """The budget applies to each slice, as to a DICOM slice; the volume may hold
    :data:`VOLUME_BUDGET_FACTOR` times as many voxels in all."""
    shape = tuple(int(n) for n in header.get_data_shape())
    what = "a " + " x ".join(str(n) for n in shape) + " volume"
    voxels = int(np.prod(shape, dtype=np.int64)) if shape else 0
    per_slice = int(np.prod(shape[:2], dtype=np.int64)) if shape else 0
    try:
        check_pixels(per_slice, budget, what + " (per slice)")
        check_pixels(voxels, budget * VOLUME_BUDGET_FACTOR, what)
    except OverBudget as exc:
        raise MalformedNifti(f"too large: {exc}") from None


def parse(data: bytes, budget: int = DEFAULT_MAX_PIXELS) -> NiftiFile:
    """Header and content of a NIfTI file; :class:`MalformedNifti` if it is not a complete
    one or holds more voxels than the budget allows (checked before decompressing)."""
    compressed = data.startswith(GZIP_MAGIC)
    raw = _inflate(data, budget) if compressed else data
    cls = _header_class(raw)
    if cls is None:
        raise MalformedNifti("malformed NIfTI: no NIfTI-1 or NIfTI-2 header")
    try:
        header = cls.from_fileobj(io.BytesIO(raw), check=True)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types on a bad header
        raise MalformedNifti(f"malformed NIfTI: header cannot be read ({exc})") from None
    if not compressed:
        _check_budget(header, budget)
    offset = int(header["vox_offset"])
    needed = (
        int(np.prod(header.get_data_shape(), dtype=np.int64)) * header.get_data_dtype().itemsize
    )
    if len(raw) < offset + needed:
        raise MalformedNifti(
            f"malformed NIfTI: truncated (voxel data needs {offset + needed} bytes, "
            f"{len(raw)} present)"
        )
    return NiftiFile(header=header, raw=raw, compressed=compressed)


def deidentify(data: bytes, budget: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The file with its text fields cleared and its extensions dropped (compressed again
    when it was): header otherwise unchanged, voxel bytes unchanged."""
    nifti = parse(data, budget)
    header = nifti.header.copy()
    for field in TEXT_FIELDS:
        if field in header:
            header[field] = b""
    old_offset = int(nifti.header["vox_offset"])
    size = int(header.sizeof_hdr)
    new_offset = size + 4  # header, then the 4-byte extension flag (all zero: none)
    header.extensions.clear()
    header["vox_offset"] = new_offset
    out = header.binaryblock + b"\x00\x00\x00\x00" + nifti.raw[old_offset:]
    if nifti.compressed:
        return gzip.compress(out, compresslevel=6, mtime=0)
    return out


@dataclass
class NiftiVolume:
    """Voxels in the store's order (z, y, x) and the store's geometry."""

    image: np.ndarray
    spacing: tuple[float, float, float]  # z, y, x (mm)
    origin: list[float]  # LPS position of voxel (0, 0, 0)
    direction: list[list[float]]  # LPS unit vectors of z, y, x
    affine: np.ndarray  # the file's voxel-to-RAS affine (for matching grids)


def read_volume(nifti: NiftiFile) -> NiftiVolume:
    """The 3-D volume of a parsed NIfTI file (a 4-D file with one volume is accepted)."""
    # Nifti2Header subclasses Nifti1Header: test for it first
    image = nib.Nifti2Image if isinstance(nifti.header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        img = image.from_bytes(nifti.raw)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001
        raise MalformedNifti(f"malformed NIfTI: voxels cannot be read ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise MalformedNifti(f"a volume must be 3-D; this one has shape {data.shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise MalformedNifti("NIfTI affine holds a value that is not finite")
    lps = _RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)  # per file axis i, j, k
    if np.any(spacing <= 0):
        raise MalformedNifti("NIfTI affine has a zero voxel size")
    unit = lps / spacing
    if abs(abs(float(np.linalg.det(unit))) - 1.0) > 1e-3:
        raise MalformedNifti("NIfTI affine is not a rotation with voxel sizes (sheared)")
    origin = _RAS_TO_LPS @ affine[:3, 3]
    # the store's axes (z, y, x) are the file's (k, j, i)
    return NiftiVolume(
        image=np.ascontiguousarray(data.transpose(2, 1, 0)),
        spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
        origin=[float(v) for v in origin],
        direction=[[float(v) for v in unit[:, axis]] for axis in (2, 1, 0)],
        affine=affine,
    )


def same_grid(a: NiftiVolume, b: NiftiVolume, tolerance_mm: float = 1e-3) -> str | None:
    """None when ``b`` lies on ``a``'s voxel grid, else what differs (for a quarantine
    reason that names the geometry)."""
    if a.image.shape != b.image.shape:
        return f"shape {b.image.shape[::-1]} differs from the volume's {a.image.shape[::-1]}"
    corners = np.array([[i, j, k, 1.0] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    corners[:, :3] *= np.array(a.image.shape[::-1]) - 1
    gap = float(np.abs((a.affine - b.affine) @ corners.T).max())
    if gap > tolerance_mm:
        return f"affine differs from the volume's by up to {gap:.3g} mm"
    return None


__all__ = [
    "GZIP_MAGIC",
    "TEXT_FIELDS",
    "MalformedNifti",
    "NiftiFile",
    "NiftiVolume",
    "deidentify",
    "is_nifti_name",
    "looks_like_nifti",
    "parse",
    "read_volume",
    "same_grid",
]
