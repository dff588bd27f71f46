"""Byte builders for the metadata containers that cameras and PACS exports leave in photographs.

EXIF (a little-endian TIFF structure with IFD0, the Exif and GPS sub-IFDs and an IFD1 JPEG
thumbnail), an XMP packet, a small ICC v2 display profile whose descriptions name the device, and
the PNG ``tIME`` chunk payload. Everything is built from the arguments alone, so it is byte-stable.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from xml.sax.saxutils import escape

EXIF_HEADER = b"Exif\x00\x00"
XMP_JPEG_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"

_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED, _BYTE = 2, 3, 4, 5, 7, 1


@dataclass(frozen=True)
class Tag:
    """One TIFF directory entry: tag number, field type, element count and packed value."""

    tag: int
    type: int
    count: int
    payload: bytes


def ascii_tag(tag: int, text: str) -> Tag:
    """An ASCII entry (NUL-terminated)."""
    data = text.encode("latin-1") + b"\x00"
    return Tag(tag, _ASCII, len(data), data)


def short_tag(tag: int, *values: int) -> Tag:
    """A SHORT entry."""
    return Tag(tag, _SHORT, len(values), struct.pack(f"<{len(values)}H", *values))


def long_tag(tag: int, *values: int) -> Tag:
    """A LONG entry."""
    return Tag(tag, _LONG, len(values), struct.pack(f"<{len(values)}I", *values))


def byte_tag(tag: int, *values: int) -> Tag:
    """A BYTE entry."""
    return Tag(tag, _BYTE, len(values), bytes(values))


def rational_tag(tag: int, *pairs: tuple[int, int]) -> Tag:
    """A RATIONAL entry from (numerator, denominator) pairs."""
    flat = [v for pair in pairs for v in pair]
    return Tag(tag, _RATIONAL, len(pairs), struct.pack(f"<{len(flat)}I", *flat))


def undefined_tag(tag: int, data: bytes) -> Tag:
    """An UNDEFINED entry (opaque bytes)."""
    return Tag(tag, _UNDEFINED, len(data), data)


def user_comment(text: str) -> bytes:
    """An EXIF UserComment value with the ASCII character-code prefix."""
    return b"ASCII\x00\x00\x00" + text.encode("ascii")


def degrees_rationals(value: float) -> tuple[tuple[int, int], ...]:
    """Degrees, minutes and seconds of an absolute coordinate, as EXIF GPS rationals."""
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60 * 100)
    return (degrees, 1), (minutes, 1), (seconds, 100)


def _ifd_size(tags: list[Tag]) -> int:
    data = sum(len(t.payload) + len(t.payload) % 2 for t in tags if len(t.payload) > 4)
    return 2 + 12 * len(tags) + 4 + data


def _ifd_bytes(tags: list[Tag], offset: int, next_ifd: int) -> bytes:
    tags = sorted(tags, key=lambda t: t.tag)
    data_offset = offset + 2 + 12 * len(tags) + 4
    head = [struct.pack("<H", len(tags))]
    data: list[bytes] = []
    for t in tags:
        if len(t.payload) <= 4:
            value = t.payload.ljust(4, b"\x00")
        else:
            value = struct.pack("<I", data_offset)
            chunk = t.payload + b"\x00" * (len(t.payload) % 2)
            data.append(chunk)
            data_offset += len(chunk)
        head.append(struct.pack("<HHI", t.tag, t.type, t.count) + value)
    head.append(struct.pack("<I", next_ifd))
    return b"".join(head + data)


def build_exif(
    ifd0: list[Tag], exif_ifd: list[Tag], gps_ifd: list[Tag], ifd1: list[Tag], thumbnail: bytes
) -> bytes:
    """A complete EXIF block (``Exif\\0\\0`` + TIFF) with the sub-IFDs and the IFD1 thumbnail."""
    ifd0_full_size = _ifd_size([*ifd0, long_tag(0x8769, 0), long_tag(0x8825, 0)])
    exif_at = 8 + ifd0_full_size
    gps_at = exif_at + _ifd_size(exif_ifd)
    ifd1_at = gps_at + _ifd_size(gps_ifd)
    ifd1_full = [*ifd1, long_tag(0x0201, 0), long_tag(0x0202, len(thumbnail))]
    thumb_at = ifd1_at + _ifd_size(ifd1_full)
    ifd1_full[-2] = long_tag(0x0201, thumb_at)
    parts = [
        b"II*\x00" + struct.pack("<I", 8),
        _ifd_bytes([*ifd0, long_tag(0x8769, exif_at), long_tag(0x8825, gps_at)], 8, ifd1_at),
        _ifd_bytes(exif_ifd, exif_at, 0),
        _ifd_bytes(gps_ifd, gps_at, 0),
        _ifd_bytes(ifd1_full, ifd1_at, 0),
        thumbnail,
    ]
    return EXIF_HEADER + b"".join(parts)


def xmp_packet(properties: dict[str, str], creator: str, description: str) -> bytes:
    """An XMP packet with Dublin Core creator/description and custom ``mbcs:`` properties."""
    props = "".join(
        f"   <mbcs:{name}>{escape(value)}</mbcs:{name}>\n" for name, value in properties.items()
    )
    text = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        '    xmlns:mbcs="http://ns.example.invalid/fundus-capture/1.0/">\n'
        f"   <dc:creator><rdf:Seq><rdf:li>{escape(creator)}</rdf:li></rdf:Seq></dc:creator>\n"
        '   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
        f"{escape(description)}</rdf:li></rdf:Alt></dc:description>\n"
        f"{props}"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return text.encode("utf-8")


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + _s15(x) + _s15(y) + _s15(z)


def _text_description(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\x00"
    return (
        b"desc\x00\x00\x00\x00"
        + struct.pack(">I", len(ascii_))
        + ascii_
        + struct.pack(">II", 0, 0)
        + struct.pack(">HB", 0, 0)
        + b"\x00" * 67
    )


def icc_profile(
    description: str, model: str, copyright_: str, date: tuple[int, int, int, int, int, int]
) -> bytes:
    """A valid ICC v2 sRGB-like matrix/TRC display profile whose texts name the device."""
    gamma = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, 0x0233) + b"\x00\x00"
    tags = [
        (b"desc", _text_description(description)),
        (b"dmdd", _text_description(model)),
        (b"cprt", b"text\x00\x00\x00\x00" + copyright_.encode("ascii") + b"\x00"),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", _xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", _xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", gamma),
        (b"gTRC", gamma),
        (b"bTRC", gamma),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = [struct.pack(">I", len(tags))], []
    for signature, payload in tags:
        table.append(signature + struct.pack(">II", offset, len(payload)))
        padded = payload + b"\x00" * (-len(payload) % 4)
        data.append(padded)
        offset += len(padded)
    header = (
        struct.pack(">I", offset)
        + b"\x00\x00\x00\x00"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", *date)
        + b"acsp"
        + b"\x00" * 4
        + struct.pack(">I", 0)
        + b"MBCS"
        + b"FNDS"
        + b"\x00" * 8
        + struct.pack(">I", 0)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"MBCS"
        + b"\x00" * 16
        + b"\x00" * 28
    )
    return header + b"".join(table) + b"".join(data)


def png_time(date: tuple[int, int, int, int, int, int]) -> bytes:
    """The payload of a PNG ``tIME`` chunk (year, month, day, hour, minute, second)."""
    return struct.pack(">HBBBBB", *date)


__all__ = [
    "EXIF_HEADER",
    "XMP_JPEG_HEADER",
    "Tag",
    "ascii_tag",
    "build_exif",
    "byte_tag",
    "degrees_rationals",
    "icc_profile",
    "long_tag",
    "png_time",
    "rational_tag",
    "short_tag",
    "undefined_tag",
    "user_comment",
    "xmp_packet",
]
