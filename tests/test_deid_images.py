"""JPEG/PNG metadata removal: same pixels, none of the injected metadata, malformed refused."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from mbc_lib.deid.images import MalformedImageError, strip_jpeg, strip_png

PHI = ["Quixote", "Zebulon", "Toboso", "2021:03:14", "Rocinante", "SN-CAM-4711"]


def _image(mode: str = "RGB", size: tuple[int, int] = (48, 32)) -> Image.Image:
    rng = np.random.default_rng(7)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    array = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array.squeeze() if channels == 1 else array, mode)


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _insert_after_soi(data: bytes, *segments: bytes) -> bytes:
    return data[:2] + b"".join(segments) + data[2:]


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "Fundus of Quixote Zebulon"  # ImageDescription
    exif[0x013B] = "Dr Rocinante"  # Artist
    exif[0x0132] = "2021:03:14 10:15:00"  # DateTime
    exif[0xA431] = "SN-CAM-4711"  # BodySerialNumber
    return exif.tobytes()


def _jpeg_with_metadata(progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    _image().save(
        buffer,
        "JPEG",
        quality=90,
        exif=_exif(),
        progressive=progressive,
        icc_profile=b"ICC profile of camera SN-CAM-4711 at Toboso".ljust(132, b"\0"),
        comment=b"patient Quixote Zebulon",
    )
    data = buffer.getvalue()
    xmp = _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>Quixote</x:xmpmeta>")
    iptc = _segment(0xED, b"Photoshop 3.0\08BIM\x04\x04\0\0\0\0\0\x0cZebulon Town")
    jfif_thumb = _segment(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\x02\x02" + b"QUIXOTEZEBUL")
    app9 = _segment(0xE9, b"vendor Toboso")
    return _insert_after_soi(data, jfif_thumb, xmp, iptc, app9)


def _assert_clean(data: bytes) -> None:
    for text in PHI:
        for variant in {text, text.upper(), text.lower()}:
            assert variant.encode() not in data, variant


def test_jpeg_metadata_removed_pixels_identical():
    original = _jpeg_with_metadata()
    assert b"Quixote" in original and b"SN-CAM-4711" in original
    stripped = strip_jpeg(original)
    _assert_clean(stripped)
    assert np.array_equal(_pixels(stripped), _pixels(original))
    with Image.open(io.BytesIO(stripped)) as img:
        assert not img.getexif()
        assert "icc_profile" not in img.info and "comment" not in img.info
    # JFIF kept without its thumbnail, right after SOI
    assert stripped[2:4] == b"\xff\xe0" and stripped[6:11] == b"JFIF\0"
    assert stripped[18:20] == b"\0\0"  # thumbnail 0 x 0


def test_progressive_jpeg_comment_between_scans_removed():
    original = _jpeg_with_metadata(progressive=True)
    second_sos = original.index(b"\xff\xda", original.index(b"\xff\xda") + 2)
    tampered = (
        original[:second_sos] + _segment(0xFE, b"between scans: Quixote") + original[second_sos:]
    )
    stripped = strip_jpeg(tampered)
    _assert_clean(stripped)
    assert stripped.count(b"\xff\xda") == original.count(b"\xff\xda")
    assert np.array_equal(_pixels(stripped), _pixels(original))


def test_jpeg_trailing_data_and_adobe_segment():
    buffer = io.BytesIO()
    _image().convert("CMYK").save(buffer, "JPEG", quality=90)
    original = buffer.getvalue() + b"appended after EOI: Quixote"
    stripped = strip_jpeg(original)
    assert stripped.endswith(b"\xff\xd9")
    assert b"Adobe" in stripped  # colour transform kept
    _assert_clean(stripped)
    assert np.array_equal(_pixels(stripped), _pixels(original))


def test_png_chunks_removed_pixels_identical():
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Quixote Zebulon")
    info.add_text("Comment", "Toboso clinic", zip=True)
    info.add_itxt("Description", "Rocinante", lang="en", tkey="Beschreibung")
    buffer = io.BytesIO()
    _image("RGBA").save(
        buffer,
        "PNG",
        pnginfo=info,
        exif=_exif(),
        icc_profile=b"camera SN-CAM-4711".ljust(128, b"\0"),
        dpi=(300, 300),
    )
    data = buffer.getvalue()
    time_chunk = b"tIME" + struct.pack(">HBBBBB", 2021, 3, 14, 10, 15, 0)
    chunk = struct.pack(">I", 7) + time_chunk + struct.pack(">I", zlib.crc32(time_chunk))
    original = data[:33] + chunk + data[33:] + b"trailing Quixote"
    stripped = strip_png(original)
    _assert_clean(stripped)
    assert b"tIME" not in stripped and b"iCCP" not in stripped and b"eXIf" not in stripped
    assert b"pHYs" in stripped
    assert np.array_equal(_pixels(stripped), _pixels(data))
    with Image.open(io.BytesIO(stripped)) as img:
        assert not img.text
        assert img.info.get("dpi") is not None


def test_palette_png_keeps_palette_and_transparency():
    img = _image("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    img.save(buffer, "PNG", transparency=0)
    stripped = strip_png(buffer.getvalue())
    assert np.array_equal(_pixels(stripped), _pixels(buffer.getvalue()))
    assert b"PLTE" in stripped and b"tRNS" in stripped


def _png() -> bytes:
    buffer = io.BytesIO()
    _image("L").save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    _image().save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("strip", "data", "message"),
    [
        (strip_png, b"\x89PNX\r\n\x1a\n" + b"\0" * 20, "bad signature"),
        (strip_png, _png()[:-20], "truncated"),
        (strip_png, _png()[:40] + bytes([_png()[40] ^ 0xFF]) + _png()[41:], "CRC"),
        (strip_png, _png()[:33] + _png()[-12:], "no IDAT"),
        (strip_jpeg, b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated segment"),
        (strip_jpeg, b"\xff\xd8\xff\xd9", "no SOS"),
        (strip_jpeg, b"GIF89a", "missing SOI"),
        (strip_jpeg, _jpeg()[:-2], "EOI"),
    ],
)
def test_malformed_images_raise(strip, data, message):
    with pytest.raises(MalformedImageError, match=message):
        strip(data)
