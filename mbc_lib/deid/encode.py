"""Encoding a de-identified data set as a DICOM file, in memory.

The bytes are those of pydicom's ``save_as(..., enforce_file_format=True)`` for a data set
whose file meta the de-identifier has just rebuilt (tested file by file), without the work
that ``dcmwrite`` spends on a data set it does not know: a deep copy of the file meta,
a second validation, many small writes to the file. One encoded buffer is then written
atomically by the caller.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import (
    EXPLICIT_VR_LENGTH_32,
    write_data_element,
    write_dataset,
    write_file_meta_info,
)
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF


def encoding_of(syntax: UID) -> tuple[bool, bool]:
    """(implicit VR, little endian) of a transfer syntax, as pydicom writes it."""
    return syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian


def encode_file(ds: Dataset) -> bytes:
    """Preamble, ``DICM``, the file meta group and the data set, encoded with the file meta's
    transfer syntax (deflated when it says so)."""
    if any(tag >> 16 in (0, 2) for tag in ds._dict):
        raise ValueError("command or file meta elements (group 0000/0002) in the data set")
    meta = ds.file_meta
    syntax = UID(meta.TransferSyntaxUID)
    implicit, little = encoding_of(syntax)
    if _PIXEL_DATA in ds._dict and syntax.is_transfer_syntax and not syntax.is_private:
        ds[_PIXEL_DATA].is_undefined_length = syntax.is_compressed
    out = DicomBytesIO()
    out.write(ds.preamble or b"\x00" * 128)
    out.write(b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    body = DicomBytesIO() if syntax == DeflatedExplicitVRLittleEndian else out
    body.is_implicit_VR, body.is_little_endian = implicit, little
    _write_top_level(body, ds)
    if body is not out:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        deflated = compressor.compress(body.getvalue()) + compressor.flush()
        out.write(deflated + b"\x00" * (len(deflated) % 2))
    return out.getvalue()


def _raw_header(elem: RawDataElement, implicit: bool, little: bool) -> bytes | None:
    """Tag, VR and length of a raw element that can be copied as it was read, or None when
    pydicom's writer must handle it (undefined length, deferred value, a VR to correct, a
    value too long for a 2-byte length)."""
    value, vr = elem.value, elem.VR
    if value is None or elem.length == _UNDEFINED:
        return None
    order = "<" if little else ">"
    tag = struct.pack(f"{order}HH", elem.tag >> 16, elem.tag & 0xFFFF)
    if implicit:
        return tag + struct.pack(f"{order}L", len(value))
    if vr is None or len(vr) != 2:
        return None
    if vr in EXPLICIT_VR_LENGTH_32:
        return tag + vr.encode("ascii") + struct.pack(f"{order}HL", 0, len(value))
    if len(value) > 0xFFFF:
        return None
    return tag + vr.encode("ascii") + struct.pack(f"{order}H", len(value))


def _write_top_level(fp: DicomBytesIO, ds: Dataset) -> None:
    """``write_dataset(fp, ds)``, with the raw elements that need nothing copied as read
    (most of a de-identified object) instead of passing each through a buffer."""
    encoding = (fp.is_implicit_VR, fp.is_little_endian)
    if encoding != ds.original_encoding or ds.original_character_set != ds._character_set:
        write_dataset(fp, ds)  # pydicom corrects VRs and character sets
        return
    charset = ds.get("SpecificCharacterSet", "iso8859")
    for tag in sorted(ds._dict):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # group lengths are not written
        elem = ds.get_item(tag)
        header = _raw_header(elem, *encoding) if isinstance(elem, RawDataElement) else None
        if header is None:
            write_data_element(fp, elem, charset)
        else:
            fp.write(header)
            fp.write(elem.value)


__all__ = ["encode_file", "encoding_of"]
