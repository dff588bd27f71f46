"""Windows BMP files: the header read and checked before any pixel is decoded.

A BMP holds no text or time metadata, but its header must be sane: the declared file size
is the file's size (nothing hidden after it), the pixel data lies inside the file, and the
size it declares fits the pixel budget. A V4/V5 header may name a colour profile, embedded
(it can name a device) or linked (a file path): both are reported.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .limits import OverBudget, check_pixels

BMP_MAGIC = b"BM"
#: Sizes of the info headers writers use: OS/2 core, BITMAPINFOHEADER, V2, V3, V4, V5.
INFO_HEADER_SIZES = frozenset({12, 40, 52, 56, 108, 124})
_BITS = frozenset({1, 4, 8, 16, 24, 32})
_RGB, _RLE8, _RLE4, _BITFIELDS = 0, 1, 2, 3
_PROFILES = {0x4D424544: "embedded", 0x4C494E4B: "linked"}  # 'MBED', 'LINK'


class MalformedBmp(ValueError):
    """The file is not a plain BMP; ``str(exc)`` says what is wrong, never its content."""


@dataclass(frozen=True, slots=True)
class BmpHeader:
    width: int
    height: int  # rows; the file stores them bottom-up when its declared height is positive
    bits: int
    file_size: int  # as declared
    profile: str | None  # "embedded" or "linked" colour profile, else None


def looks_like_bmp(head: bytes) -> bool:
    """``BM`` followed by a known info-header size (a text file starting "BM" is not one)."""
    if len(head) < 18 or not head.startswith(BMP_MAGIC):
        return False
    return int.from_bytes(head[14:18], "little") in INFO_HEADER_SIZES


def parse_bmp(data: bytes, budget: int, *, trailing_ok: bool = False) -> BmpHeader:
    """The header of a BMP file, checked; :class:`MalformedBmp` or
    :class:`~mbc_lib.sources.limits.OverBudget` otherwise. ``trailing_ok``: bytes after the
    declared end are allowed (the de-identifier drops them)."""
    if not looks_like_bmp(data[:18]) or len(data) < 26:
        raise MalformedBmp("not a BMP file")
    file_size, offset, info = struct.unpack_from("<I4xII", data, 2)
    if file_size > len(data):
        raise MalformedBmp(f"truncated: declares {file_size} bytes, holds {len(data)}")
    if file_size < len(data) and not trailing_ok:
        raise MalformedBmp(f"{len(data) - file_size} bytes after its declared end")
    if 14 + info > file_size:
        raise MalformedBmp("info header runs past the end of the file")
    width, height, bits, compression = _dimensions(data, info)
    if width < 1 or height == 0 or bits not in _BITS:
        raise MalformedBmp(f"bad header: {width} x {height}, {bits} bits per pixel")
    check_pixels(width * abs(height), budget, f"a {width} x {abs(height)} BMP")
    if compression not in (_RGB, _RLE8, _RLE4, _BITFIELDS):
        raise MalformedBmp(f"unsupported compression {compression}")
    if not 14 + info <= offset <= file_size:
        raise MalformedBmp("pixel data offset outside the file")
    if compression in (_RGB, _BITFIELDS):
        stride = (width * bits + 31) // 32 * 4
        if offset + stride * abs(height) > file_size:
            raise MalformedBmp("pixel data runs past the declared end of the file")
    return BmpHeader(width, abs(height), bits, file_size, _profile(data, info))


def _dimensions(data: bytes, info: int) -> tuple[int, int, int, int]:
    if info == 12:
        width, height, planes, bits = struct.unpack_from("<HHHH", data, 18)
        compression = _RGB
    else:
        width, height, planes, bits, compression = struct.unpack_from("<iiHHI", data, 18)
    if planes != 1:
        raise MalformedBmp(f"bad header: {planes} colour planes")
    return width, height, bits, compression


def _profile(data: bytes, info: int) -> str | None:
    if info < 108:
        return None
    (cs_type,) = struct.unpack_from("<I", data, 14 + 56)
    return _PROFILES.get(cs_type)


__all__ = ["BMP_MAGIC", "BmpHeader", "MalformedBmp", "OverBudget", "looks_like_bmp", "parse_bmp"]
