"""Byte-level removal of metadata containers from JPEG and PNG files (no re-encoding), and
BMP files rewritten as a plain BMP of the same pixels.

JPEG keeps only what decoding needs: SOI, DQT, DHT, DAC, DRI, SOFn, SOS with its
entropy-coded data, DNL, EXP, EOI, a JFIF APP0 without its thumbnail and an Adobe
APP14 (colour transform). EXIF/XMP (APP1), ICC profiles (APP2: they can name a
device), IPTC/Photoshop (APP13), comments and all other APPn segments are dropped,
including any that sit between the scans of a progressive JPEG, and anything after EOI.

PNG keeps IHDR, PLTE, IDAT, IEND and the colour/appearance chunks tRNS, gAMA, cHRM,
sRGB, sBIT, bKGD, pHYs; text (tEXt, zTXt, iTXt), time (tIME), eXIf, iCCP and every
other chunk are dropped, and anything after IEND.

BMP has no metadata chunks, but a V4/V5 header can carry or name a colour profile and bytes
can follow its declared end: the pixels are decoded (within the pixel budget) and written
again with a plain BITMAPINFOHEADER, values and palette unchanged.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from ..sources.bmp import MalformedBmp, OverBudget, parse_bmp
from ..sources.limits import DEFAULT_MAX_PIXELS

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_APP0, _APP14 = 0xE0, 0xEE
#: Marker segments needed to decode: SOF0-15 (but not JPG 0xC8), DHT, DAC, DQT, DNL,
#: DRI, DHP, EXP, and the JPEG-LS SOF55 / LSE.
_KEEP_MARKERS = frozenset(
    {m for m in range(0xC0, 0xD0) if m != 0xC8} | {0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xF7, 0xF8}
)
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_KEEP = frozenset(
    {
        b"IHDR",
        b"PLTE",
        b"IDAT",
        b"IEND",
        b"tRNS",
        b"gAMA",
        b"cHRM",
        b"sRGB",
        b"sBIT",
        b"bKGD",
        b"pHYs",
    }
)


class MalformedImageError(ValueError):
    """The image file is not well formed; ``str(exc)`` says where, without content."""


def _jfif_without_thumbnail(payload: bytes) -> bytes | None:
    """APP0 JFIF rewritten with a 0x0 thumbnail; None for any other APP0."""
    if len(payload) < 14 or payload[:5] != b"JFIF\x00":
        return None
    body = payload[:12] + b"\x00\x00"
    return b"\xff\xe0" + struct.pack(">H", len(body) + 2) + body


def _adobe(payload: bytes) -> bytes | None:
    """APP14 Adobe reduced to its 12 defined bytes (version, flags, colour transform)."""
    if len(payload) < 12 or payload[:5] != b"Adobe":
        return None
    body = payload[:12]
    return b"\xff\xee" + struct.pack(">H", len(body) + 2) + body


def _scan_end(data: bytes, pos: int) -> int:
    """End of entropy-coded data starting at ``pos``: the next real marker."""
    n = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            raise MalformedImageError("JPEG: entropy-coded data ends without EOI marker")
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            pos += 1
            continue
        return pos


def strip_jpeg(data: bytes) -> bytes:
    """Remove every metadata segment from a JPEG; the coded image is copied verbatim."""
    if not data.startswith(JPEG_MAGIC):
        raise MalformedImageError("JPEG: missing SOI marker")
    out = [b"\xff\xd8"]
    pos, n = 2, len(data)
    scans = 0
    while True:
        if pos >= n:
            raise MalformedImageError("JPEG: ends without EOI marker")
        if data[pos] != 0xFF:
            raise MalformedImageError(f"JPEG: expected a marker at byte {pos}")
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= n:
            raise MalformedImageError("JPEG: truncated marker")
        marker = data[pos + 1]
        if marker == _EOI:
            if not scans:
                raise MalformedImageError("JPEG: no SOS (start of scan) before EOI")
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker in _STANDALONE:
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        if marker == _SOI:
            raise MalformedImageError("JPEG: unexpected second SOI marker")
        if pos + 4 > n:
            raise MalformedImageError("JPEG: truncated segment header")
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        end = pos + 2 + length
        if length < 2 or end > n:
            raise MalformedImageError(f"JPEG: truncated segment (marker 0x{marker:02X})")
        payload = data[pos + 4 : end]
        if marker == _SOS:
            scans += 1
            stop = _scan_end(data, end)
            out.append(data[pos:stop])
            pos = stop
            continue
        if marker in _KEEP_MARKERS:
            out.append(data[pos:end])
        elif marker == _APP0:
            kept = _jfif_without_thumbnail(payload)
            if kept and len(out) == 1:  # JFIF is only valid right after SOI
                out.append(kept)
        elif marker == _APP14:
            kept = _adobe(payload)
            if kept:
                out.append(kept)
        pos = end


def strip_png(data: bytes) -> bytes:
    """Keep only the chunks needed to show the image the same way; verify every CRC."""
    if not data.startswith(PNG_SIGNATURE):
        raise MalformedImageError("PNG: bad signature")
    out = [PNG_SIGNATURE]
    pos, n = len(PNG_SIGNATURE), len(data)
    first, has_idat = True, False
    while True:
        if pos + 8 > n:
            raise MalformedImageError("PNG: truncated chunk header (no IEND)")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > n:
            raise MalformedImageError(f"PNG: truncated chunk {ctype!r}")
        body = data[pos + 8 : end - 4]
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(ctype + body) != crc:
            raise MalformedImageError(f"PNG: CRC error in chunk {ctype!r}")
        if first and ctype != b"IHDR":
            raise MalformedImageError("PNG: first chunk is not IHDR")
        first = False
        if ctype == b"IDAT":
            has_idat = True
        if ctype in _PNG_KEEP:
            out.append(data[pos:end])
        if ctype == b"IEND":
            if not has_idat:
                raise MalformedImageError("PNG: no IDAT chunk")
            return b"".join(out)
        pos = end


def strip_bmp(data: bytes, budget: int = DEFAULT_MAX_PIXELS) -> bytes:
    """A BMP re-encoded from its pixels alone: no colour profile, nothing after its end."""
    try:
        parse_bmp(data, budget, trailing_ok=True)
        with Image.open(io.BytesIO(data), formats=["BMP"]) as img:
            img.load()
            out = io.BytesIO()
            img.save(out, "BMP")
    except (MalformedBmp, OverBudget) as exc:
        raise MalformedImageError(f"BMP: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad files
        raise MalformedImageError(f"BMP: cannot be decoded ({type(exc).__name__})") from None
    return out.getvalue()


__all__ = [
    "JPEG_MAGIC",
    "PNG_SIGNATURE",
    "MalformedImageError",
    "strip_bmp",
    "strip_jpeg",
    "strip_png",
]
