"""Reading a DICOM file whole, and telling a cut file from a complete one.

pydicom reads a file that ends early without complaint: it returns the elements it found
and drops the rest. A file cut inside its header then looks like an object that was never
de-identified, and a file cut inside its pixel data like a sound header. :func:`read_dicom`
refuses both as malformed, so that a damaged file is quarantined for what it is.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from ..errors import describe_error

_UNDEFINED = 0xFFFFFFFF
_SOP_CLASS_UID = 0x00080016
#: Shortest element header (implicit VR, or explicit VR with a 2-byte length).
_MIN_HEADER = 8


class MalformedDicom(ValueError):
    """A file that is not a complete DICOM object; ``str(exc)`` is the one-line reason."""


def truncation(ds: Dataset, size: int) -> str | None:
    """Why ``ds``, read from ``size`` bytes, is cut short; None when it ends where it should."""
    elements = list(ds._dict.values())
    if not elements:
        return "no data set after the file meta information"
    last = elements[-1]
    if not isinstance(last, RawDataElement) or last.length == _UNDEFINED:
        return None  # a parsed sequence: pydicom raises on a cut inside one
    if last.value is not None and len(last.value) < last.length:
        return f"truncated: element {last.tag} needs {last.length} bytes, {len(last.value)} left"
    leftover = size - (last.value_tell + last.length)
    if 0 < leftover < _MIN_HEADER:
        return f"truncated: {leftover} byte(s) of an element header at the end"
    return None


def looks_like_dicom(ds: Dataset) -> bool:
    """A forced read of a file without preamble found real DICOM, not noise: a SOP Class UID
    or an attribute of group 0008 that the dictionary knows."""
    tags = [int(e.tag) for e in ds.elements()]
    return _SOP_CLASS_UID in tags or any(t >> 16 == 0x0008 and t in DicomDictionary for t in tags)


def read_dicom(data: bytes | Path, *, force: bool = False) -> Dataset:
    """Read a whole DICOM file (its bytes or its path); :class:`MalformedDicom` if it is not
    a complete, readable object."""
    raw = Path(data).read_bytes() if isinstance(data, Path) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(raw), force=force)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a refusal
        raise MalformedDicom(f"not readable as DICOM: {describe_error(exc)}") from None
    if force and not looks_like_dicom(ds):
        raise MalformedDicom("not readable as DICOM: no DICOM data set in it")
    problem = truncation(ds, len(raw))
    if problem:
        raise MalformedDicom(f"malformed DICOM: {problem}")
    return ds


__all__ = ["MalformedDicom", "looks_like_dicom", "read_dicom", "truncation"]
