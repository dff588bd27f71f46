"""Header values read straight from the bytes pydicom left raw, for the attributes every
slice is asked for (UIDs, codes, sizes, geometry).

``Dataset.get`` converts an element through pydicom's value machinery (hooks, VR lookup,
character set), about 10 µs each; ingest asks some 30 of them per slice. :func:`get` gives
the same value (tested against pydicom for every element of every file pydicom ships) for
the simple cases: a raw ASCII text element, a number string (DS, IS) or a binary unsigned
or signed integer. Anything else (a non-ASCII or escaped value, a sequence, a converted
element) goes to pydicom.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import IS, DSfloat

_TEXT = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UI"})
_INTEGERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}
_ESC = b"\x1b"
_MISSING = object()
_MANY = (list, tuple, MultiValue)


def _vr(raw: RawDataElement, tag: int) -> str | None:
    if raw.VR is not None:
        return raw.VR
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _fast(raw: RawDataElement, vr: str | None) -> Any:
    """The value of a simple raw element, or _MISSING when pydicom must convert it.

    Only values without an inner space or NUL are read here (padding at the end is
    dropped, as pydicom drops it): where pydicom's rules differ by VR (leading spaces,
    spaces inside values, empty values) the value goes to pydicom."""
    data = raw.value
    if not data:
        return _MISSING  # deferred read or empty value
    if vr in _INTEGERS:
        code = _INTEGERS[vr]
        size = struct.calcsize(code)
        if len(data) % size:
            return _MISSING
        order = "<" if raw.is_little_endian else ">"
        values = struct.unpack(f"{order}{len(data) // size}{code}", data)
        return values[0] if len(values) == 1 else list(values)
    if vr not in _TEXT and vr not in ("DS", "IS"):
        return _MISSING
    if not data.isascii() or _ESC in data:
        return _MISSING
    text = data.decode("ascii").rstrip("\x00 ")
    if not text or " " in text or "\x00" in text:
        return _MISSING
    parts = text.split("\\")
    if vr in ("DS", "IS"):
        try:
            numbers = [DSfloat(p) if vr == "DS" else IS(p) for p in parts]
        except (TypeError, ValueError, OverflowError):
            return _MISSING
        return numbers[0] if len(numbers) == 1 else numbers
    return parts[0] if len(parts) == 1 else parts


def get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)``, fast for a simple raw element (see the module)."""
    tag = tag_for_keyword(keyword)
    elem = ds._dict.get(tag) if tag is not None else None
    if isinstance(elem, RawDataElement):
        value = _fast(elem, _vr(elem, tag))  # type: ignore[arg-type]
        if value is not _MISSING:
            return value
    return ds.get(keyword, default)


def acquisition(ds: Dataset) -> dict[str, Any]:
    """The cohort fields of :data:`mbc_lib.store.schema.ACQUISITION` in ``ds``: strings
    (multiple values joined with ``\\``), slice thickness in mm, pixel spacing as
    [row, column] mm. A field that is absent, or whose value is not what the field may
    hold (:func:`~mbc_lib.store.schema.acquisition_value_ok`), is None."""
    from ..store.schema import ACQUISITION, acquisition_value_ok

    out: dict[str, Any] = {}
    for name, keyword in ACQUISITION.items():
        try:
            value = get(ds, keyword, None)
        except Exception:  # noqa: BLE001 - an unreadable value is an absent one
            value = None
        values = list(value) if isinstance(value, _MANY) else [value]
        if name == "slice_thickness":
            value = _number(values[0])
        elif name == "pixel_spacing":
            value = [_number(v) for v in values]
        else:
            value = "\\".join(str(v).strip() for v in values if v is not None) or None
        out[name] = value if value is not None and acquisition_value_ok(name, value) else None
    return out


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


__all__ = ["acquisition", "get"]
