"""De-identify one DICOM object: a table-driven walk of every element at any depth.

Elements whose tag needs nothing stay pydicom raw elements and are written back as
read; only tags with an action, private tags and tags unknown to the dictionary are
touched. Pixel data and the transfer syntax are never changed.
"""

from __future__ import annotations

import re
import warnings
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

from pydicom._uid_dict import UID_dictionary
from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import keyword_dict
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..atomic import write_bytes
from ..manifests import DEID_OPTIONS
from ..sources.dicom import MalformedDicom
from ..sources.dicom import read_dicom as read_source_dicom
from .encode import encode_file
from .keys import DeidKey
from .profile import (
    CLEAN,
    DUMMY,
    EMPTY,
    PATIENT_ID,
    PATIENT_NAME,
    RECURSE,
    REMOVE,
    SHIFT_DA,
    SHIFT_DT,
    UID,
    Profile,
    fallback_action,
    get_profile,
)
from .report import ActionCounts, FileResult, describe_error

_T = keyword_dict
_PATIENT_ID = BaseTag(_T["PatientID"])
_PATIENT_NAME = BaseTag(_T["PatientName"])
_OTHER_IDS_SEQ = _T["OtherPatientIDsSequence"]
_CONTENT_SEQ = _T["ContentSequence"]
_ENCAPSULATED = _T["EncapsulatedDocument"]
_DIR_RECORDS = _T["DirectoryRecordSequence"]
_BIRTH_DATE = _T["PatientBirthDate"]
_ISSUER = _T["IssuerOfPatientID"]
_STUDY_UID = _T["StudyInstanceUID"]
_SOP_UID = BaseTag(_T["SOPInstanceUID"])
_SOP_CLASS = BaseTag(_T["SOPClassUID"])
_BURNED_IN = _T["BurnedInAnnotation"]
_CONVERSION = _T["ConversionType"]
_IDENTITY_REMOVED = BaseTag(_T["PatientIdentityRemoved"])
_METHOD = BaseTag(_T["DeidentificationMethod"])
_METHOD_SEQ = BaseTag(_T["DeidentificationMethodCodeSequence"])
_TEMPORAL_MODIFIED = BaseTag(_T["LongitudinalTemporalInformationModified"])
_ESC = b"\x1b"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: Conversion types whose pixels are likely to carry burned-in text (PS3.3 C.8.6.1).
RISKY_CONVERSION_TYPES = frozenset({"DV", "DI", "DF", "WSD", "SD", "SI", "DRW"})
_SECONDARY_CAPTURE = frozenset(
    uid for uid, info in UID_dictionary.items() if "Secondary Capture" in info[0]
)
_STRUCTURED = frozenset(
    uid
    for uid, info in UID_dictionary.items()
    if info[1] == "SOP Class"
    and any(w in info[0] for w in ("SR Storage", "Encapsulated", "Key Object Selection"))
)
_DUMMIES: dict[str, object] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "DS": "0",
    "IS": "0",
    "AS": "000D",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
}
_SYNTAX_BY_ENCODING = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
_DUMMY_TEXT = "ANONYMIZED"
_TEXT_DUMMY_VRS = frozenset({"PN", "LO", "SH", "AE", "CS", "ST", "LT", "UT", "UC"})
_DT_RE = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$"
)
_DA_RE = re.compile(r"^(\d{4})\.?(\d{2})\.?(\d{2})$")


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
#: Anything that looks like an identifier or a date, whatever the object says.
_GENERIC_PHI = re.compile(
    r"\b\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b"
    rf"|\b\d{{1,2}}[ .-]?{_MONTH}[ .-]?\d{{2,4}}\b"
    rf"|\b{_MONTH} \d{{1,2}},? \d{{4}}\b"
    r"|\+\d[\d ()./-]{6,}\d",
    re.IGNORECASE,
)
#: Digit runs, possibly split by - / . _ (IDs such as 4711-0815); six digits or more go.
_NUMBER_RUN = re.compile(r"\d(?:[\d/._-]*\d)?")
_TOKEN_SPLIT = re.compile(r"[\s^=,;:/\\()]+")
_EDGE_JUNK = " \t-_,;:/^|.()[]"


def _drop_long_number(match: re.Match[str]) -> str:
    return " " if sum(c.isdigit() for c in match[0]) >= 6 else match[0]


def identity_tokens(known: list[tuple[int, list[str]]], birth_date_tag: int) -> tuple[str, ...]:
    """Strings to remove from descriptors: whole values, their words, birth-date forms."""
    return _identity_tokens(tuple((tag, tuple(values)) for tag, values in known), birth_date_tag)


@lru_cache(maxsize=1024)
def _identity_tokens(
    known: tuple[tuple[int, tuple[str, ...]], ...], birth_date_tag: int
) -> tuple[str, ...]:
    tokens: set[str] = set()
    for tag, values in known:
        for value in values:
            tokens.add(value.strip())
            tokens.update(_TOKEN_SPLIT.split(value))
            if tag == birth_date_tag and len(value) == 8 and value.isdigit():
                y, m, d = value[:4], value[4:6], value[6:]
                tokens.update(
                    {
                        f"{y}-{m}-{d}",
                        f"{d}.{m}.{y}",
                        f"{d}/{m}/{y}",
                        f"{m}/{d}/{y}",
                        f"{y}/{m}/{d}",
                        f"{y}.{m}.{d}",
                    }
                )
    usable = {t for t in tokens if len(t) >= 2 and any(c.isalnum() for c in t)}
    return tuple(sorted(usable, key=lambda t: (-len(t), t.lower())))


@lru_cache(maxsize=256)
def _identity_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    parts = [
        re.escape(t) if len(t) >= 4 else rf"(?<![0-9A-Za-z]){re.escape(t)}(?![0-9A-Za-z])"
        for t in tokens
    ]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def clean_text(text: str, tokens: tuple[str, ...]) -> str:
    """Clean Descriptors: remove known identifiers, long numbers and dates from text.

    Returns "" when nothing meaningful is left.
    """
    return _clean(text, _identity_pattern(tokens))


@lru_cache(maxsize=8192)
def _clean(text: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is not None:  # again until stable: "BucJérôme" shows "Buc" only once
        for _ in range(8):  # "Jérôme" has gone, so a short token gets its word boundary
            cleaned = pattern.sub(" ", text)
            if cleaned == text:
                break
            text = cleaned
    text = _GENERIC_PHI.sub(" ", text)
    text = _NUMBER_RUN.sub(_drop_long_number, text)
    text = re.sub(r"[ \t]{2,}", " ", text).strip(_EDGE_JUNK)
    return text if any(c.isalnum() for c in text) else ""


class DicomRefused(Exception):
    """A DICOM object that cannot be made safe; ``str(exc)`` is the one-line reason."""


def _strings(value: object) -> list[str]:
    """The values of a (raw or converted) string element, padding removed."""
    if value is None:
        return []
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
        return [v.strip("\x00 ") for v in text.split("\\")] if text.strip("\x00 ") else []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v).strip("\x00 ") for v in value]
    text = str(value).strip("\x00 ")
    return [text] if text else []


def _one_or_many(values: list[str]) -> str | list[str] | None:
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@lru_cache(maxsize=65536)
def shift_da(value: str, days: int) -> str | None:
    """Shift a DA value (or range) by ``days``; None if it is not a valid date."""
    if "-" in value:
        parts = value.split("-")
        if len(parts) != 2:
            return None
        shifted = [shift_da(p, days) if p else "" for p in parts]
        return None if None in shifted else "-".join(shifted)  # type: ignore[arg-type]
    match = _DA_RE.match(value)
    if not match:
        return None
    try:
        day = date(int(match[1]), int(match[2]), int(match[3])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _shift_dt_single(value: str, days: int) -> str | None:
    match = _DT_RE.match(value)
    if not match:
        return None
    year, month, day_, rest = match[1], match[2], match[3], match[4] or ""
    try:
        moved = date(int(year), int(month or 1), int(day_ or 1)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    text = f"{moved.year:04d}"
    if month:
        text += f"{moved.month:02d}"
    if day_:
        text += f"{moved.day:02d}"
    return text + rest  # the UTC offset is dropped


@lru_cache(maxsize=65536)
def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of a DT value (or range); drop any UTC offset."""
    single = _shift_dt_single(value, days)
    if single is not None:
        return single
    for i, char in enumerate(value):
        if char == "-":
            left, right = value[:i], value[i + 1 :]
            a = _shift_dt_single(left, days) if left else ""
            b = _shift_dt_single(right, days) if right else ""
            if a is not None and b is not None and (left or right):
                return f"{a}-{b}"
    return None


def _first(ds: Dataset, tag: int) -> str:
    """First value of a top-level text element, read without converting it."""
    elem = ds._dict.get(tag)
    if elem is None:
        return ""
    values = _text_values(ds, elem)
    return values[0] if values else ""


def refusal_reason(ds: Dataset) -> str | None:
    """Why this object cannot be made safe without pixel or content cleaning, if so."""
    meta = getattr(ds, "file_meta", None)
    meta_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if meta_class == _DICOMDIR_CLASS or _DIR_RECORDS in ds._dict:
        return "DICOMDIR: a media directory, not an image (rebuild it after de-identification)"
    sop_class = _first(ds, _SOP_CLASS) or meta_class.strip("\x00 ")
    if not sop_class:
        return "incomplete DICOM object: no SOP Class UID"
    meta_instance = meta.get("MediaStorageSOPInstanceUID") if meta is not None else None
    if not (_first(ds, _SOP_UID) or meta_instance):
        return "incomplete DICOM object: no SOP Instance UID"
    if _first(ds, _BURNED_IN).upper() == "YES":
        return "burned-in annotation: BurnedInAnnotation is YES and pixels are not cleaned"
    if sop_class in _SECONDARY_CAPTURE:
        return "secondary capture: screenshot-like object may carry burned-in identity"
    conversion = _first(ds, _CONVERSION).upper()
    if conversion in RISKY_CONVERSION_TYPES:
        return f"secondary capture: conversion type {conversion} may carry burned-in identity"
    if sop_class in _STRUCTURED or _CONTENT_SEQ in ds._dict or _ENCAPSULATED in ds._dict:
        return (
            "structured or encapsulated content: needs Clean Structured Content, "
            "which is not applied"
        )
    return None


def _padded(text: str, vr: str) -> bytes:
    data = text.encode("ascii")
    return data + (b"\x00" if vr == "UI" else b" ") if len(data) % 2 else data


def _method_items(codes: tuple[tuple[str, str], ...]) -> list[Dataset]:
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    return items


@lru_cache(maxsize=32)
def _method_sequence_bytes(
    implicit: bool, little: bool, codes: tuple[tuple[str, str], ...]
) -> bytes:
    """The encoded items of the De-identification Method Code Sequence."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_sequence(buffer, DataElement(_METHOD_SEQ, "SQ", _method_items(codes)), ["iso8859"])
    return buffer.getvalue()


class _Elements:
    """Makes replacement elements: raw (written as is, fast) when the encoding is known."""

    def __init__(self, ds: Dataset) -> None:
        implicit, little = ds.original_encoding
        self.raw = implicit is not None and little is not None
        self.implicit, self.little = implicit, little

    def text(self, tag: int, vr: str, value: str | list[str] | None) -> object:
        """An ASCII text element (UIDs, dates, pseudonyms, dummies) or an empty one."""
        if not self.raw:
            return DataElement(tag, vr, [] if vr == "SQ" and value is None else value)
        joined = "" if value is None else value if isinstance(value, str) else "\\".join(value)
        data = _padded(joined, vr)
        return RawDataElement(tag, vr, len(data), data, 0, self.implicit, self.little)

    def method_sequence(self, codes: tuple[tuple[str, str], ...]) -> object:
        if not self.raw:
            return DataElement(_METHOD_SEQ, "SQ", _method_items(codes))
        data = _method_sequence_bytes(self.implicit, self.little, codes)
        return RawDataElement(_METHOD_SEQ, "SQ", len(data), data, 0, self.implicit, self.little)


class _Walker:
    """One object's walk: collects identifiers, applies the table, defers cleaning."""

    def __init__(self, key: DeidKey, profile: Profile, basis: str, make: _Elements) -> None:
        self.key = key
        self.profile = profile
        self.make = make
        self.counts = ActionCounts()
        self.pseudonym = key.pseudonym(basis)
        self.days = key.date_shift_days(basis)
        self.known: list[tuple[int, list[str]]] = []
        self.deferred: list[tuple[Dataset, int, str, list[str]]] = []

    def walk(self, ds: Dataset, top: bool) -> None:
        d = ds._dict
        actions = self.profile.actions
        keep = self.profile.keep
        identity = self.profile.identity
        counts = self.counts
        make = self.make
        for tag in list(d):
            op = actions.get(tag)
            if op is None:
                if tag in keep:
                    continue
                if tag >> 16 & 1:
                    del d[tag]
                    counts.private_removed += 1
                    continue
                op = fallback_action(self.profile, tag)
            if op == UID:
                self._uid(d, tag)
                continue
            if op == RECURSE:
                for item in _sequence(ds, tag):
                    self.walk(item, False)
                continue
            if op in (SHIFT_DA, SHIFT_DT):
                self._shift(d, tag, op)
                continue
            values = _text_values(ds, d[tag]) if tag in identity or op == CLEAN else None
            if values and tag in identity:
                self.known.append((tag, values))
            if op == REMOVE:
                if tag == _OTHER_IDS_SEQ:
                    self._collect_nested_ids(_sequence(ds, tag))
                del d[tag]
                counts.removed += 1
            elif op == EMPTY:
                d[tag] = make.text(tag, self._vr(d, tag), None)
                counts.emptied += 1
            elif op == DUMMY:
                self._dummy(d, tag)
                counts.replaced += 1
            elif op == CLEAN:
                if values:
                    self.deferred.append((ds, tag, self._vr(d, tag), values))
            elif op == PATIENT_ID:
                if top or values:
                    new = self.pseudonym if top else self.key.pseudonym(values[0])  # type: ignore[index]
                    d[tag] = make.text(tag, "LO", new)
                    counts.replaced += 1
            elif op == PATIENT_NAME:
                d[tag] = make.text(tag, "PN", self.pseudonym if top else None)
                if top:
                    counts.replaced += 1
                else:
                    counts.emptied += 1

    def _vr(self, d: dict, tag: int) -> str:
        vr = d[tag].VR
        if vr is None or vr == "UN":
            vr = self.profile.vrs.get(tag, "UN")
        return vr

    def _dummy(self, d: dict, tag: int) -> None:
        vr = self._vr(d, tag)
        if vr in _TEXT_DUMMY_VRS or vr in ("DA", "TM", "DT", "DS", "IS", "AS"):
            dummy = _DUMMY_TEXT if vr in _TEXT_DUMMY_VRS else str(_DUMMIES[vr])
            d[tag] = self.make.text(tag, vr, dummy)
        else:
            d[tag] = DataElement(tag, vr, _DUMMIES.get(vr))

    def _collect_nested_ids(self, items: Sequence | None) -> None:
        for item in items or ():
            for tag in (_PATIENT_ID, _ISSUER):
                if tag in item:
                    self.known.append((tag, _strings(item[tag].value)))

    def _uid(self, d: dict, tag: int) -> None:
        values = _strings(d[tag].value)
        if not values:
            return
        uid = self.key.uid
        new = [v if (not v or v in UID_dictionary) else uid(v) for v in values]
        self.counts.uids_remapped += sum(a != b for a, b in zip(values, new, strict=True))
        d[tag] = self.make.text(tag, "UI", new)

    def _shift(self, d: dict, tag: int, op: int) -> None:
        values = _strings(d[tag].value)
        if not values:
            return
        shift = shift_da if op == SHIFT_DA else shift_dt
        new = [s for s in (shift(v, self.days) for v in values) if s is not None]
        d[tag] = self.make.text(tag, "DA" if op == SHIFT_DA else "DT", new or None)
        if new:
            self.counts.dates_shifted += 1
        else:
            self.counts.emptied += 1

    def clean_deferred(self) -> None:
        """Clean Descriptors, once every identifier of the object is known."""
        if not self.deferred:
            return
        pattern = _identity_pattern(identity_tokens(self.known, birth_date_tag=_BIRTH_DATE))
        for ds, tag, vr, values in self.deferred:
            cleaned = [c for c in (_clean(v, pattern) for v in values) if c]
            if cleaned != values:
                if cleaned and encode_text(ds, "\\".join(cleaned)) is None:
                    cleaned = []  # what is left cannot be written in the object's charset
                ds._dict[tag] = DataElement(tag, vr, _one_or_many(cleaned))
                self.counts.cleaned += 1


def _sequence(ds: Dataset, tag: int) -> Sequence:
    """The items of a sequence element, converting it from raw without side work."""
    d = ds._dict
    elem = d[tag]
    if isinstance(elem, RawDataElement):
        if elem.value is None and elem.length:
            elem = ds[tag]  # deferred read
        else:
            charset = ds.original_character_set or ds._character_set
            elem = d[tag] = convert_raw_data_element(elem, encoding=charset, ds=ds)
    value = elem.value
    return value if isinstance(value, Sequence) else Sequence()


def _text_values(ds: Dataset, elem: object) -> list[str]:
    """Text values of an element, decoded with the character set that applies to ``ds``."""
    value = elem.value  # type: ignore[attr-defined]
    if isinstance(value, bytes):
        value = decode_text(ds, elem)  # type: ignore[arg-type]
    if isinstance(value, str):
        return [v.strip("\x00 ") for v in value.split("\\") if v.strip("\x00 ")]
    if isinstance(value, Sequence):
        return []
    return _strings(value)


def encodings(ds: Dataset) -> list[str]:
    """Python codecs of the Specific Character Set that applies to ``ds`` (an item inherits
    its parent's)."""
    return convert_encodings(ds._character_set)


def decode_text(ds: Dataset, elem: RawDataElement) -> str:
    """A raw text element's value as one string (values joined by a backslash), decoded in
    the character set that applies to ``ds``.

    ISO 2022 code extensions (Japanese ISO 2022 IR 87 / IR 159, Korean IR 149) switch with
    escape sequences and are 7-bit: their bytes look like ASCII, so bytes are taken as
    ASCII only when they hold neither 8-bit bytes nor an ESC. Everything else is decoded by
    pydicom, which knows where each VR resets the code extensions (PN components, lines).
    """
    raw = elem.value
    if raw.isascii() and _ESC not in raw:
        return raw.decode("ascii")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = convert_raw_data_element(elem, encoding=encodings(ds), ds=ds).value
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def encode_text(ds: Dataset, text: str) -> bytes | None:
    """``text`` encoded in the data set's character set; None if it cannot be, exactly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return encode_string(text, encodings(ds))
        except (UnicodeError, UserWarning, LookupError):
            return None


def _patient_basis(ds: Dataset) -> str:
    """What pseudonym and date shift derive from: PatientID, else a stable fallback."""
    d = ds._dict
    for tag, prefix in ((_PATIENT_ID, ""), (_STUDY_UID, "study:"), (_SOP_UID, "instance:")):
        values = _text_values(ds, d[tag]) if tag in d else []
        if values and values[0]:
            return prefix + values[0]
    return "unknown"


def _record_method(ds: Dataset, pseudonym: str, profile: Profile, make: _Elements) -> None:
    d = ds._dict
    codes = profile.method_codes
    method = ["mbc deid", f"PS3.15 E.1-1 Basic Profile ({profile.edition})"]
    method += [meaning.replace(" Option", "") for _, meaning in codes[1:]]
    for tag, vr, value in (
        (_PATIENT_ID, "LO", pseudonym),
        (_PATIENT_NAME, "PN", pseudonym),
        (_IDENTITY_REMOVED, "CS", "YES"),
        (_METHOD, "LO", method),
        (_TEMPORAL_MODIFIED, "CS", "MODIFIED"),
    ):
        d[tag] = make.text(tag, vr, value)
    d[_METHOD_SEQ] = make.method_sequence(codes)


def _rebuild_file_meta(ds: Dataset, key: DeidKey) -> None:
    """Fresh file meta: transfer syntax kept, class and (new) instance UID of the object."""
    old = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta = FileMetaDataset()
    syntax = old.get("TransferSyntaxUID") or _SYNTAX_BY_ENCODING.get(tuple(ds.original_encoding))
    if not syntax:
        raise DicomRefused("incomplete DICOM object: transfer syntax unknown")
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = _first(ds, _SOP_CLASS) or old.get("MediaStorageSOPClassUID")
    instance = _first(ds, _SOP_UID)
    if not instance:
        instance = key.uid(str(old.get("MediaStorageSOPInstanceUID", "")).strip("\x00 "))
        ds.SOPInstanceUID = instance
    meta.MediaStorageSOPInstanceUID = instance
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128


def _roi_items(ds: Dataset) -> list[tuple[Dataset, str]]:
    """The Structure Set ROI items of an RTSTRUCT and each one's ROI Name as it came in."""
    return [
        (item, str(item.get("ROIName", "") or "")) for item in ds.get("StructureSetROISequence", [])
    ]


def _name_rois(items: list[tuple[Dataset, str]], classes: tuple[str, ...]) -> int:
    """Give back the ROI Name of each ROI whose name was one of ``classes`` (letter case
    and surrounding spaces aside), spelled as the class is; every other name stays empty.

    Table E.1-1 empties ROI Name (Z): a name a person typed may hold anything. A class
    name of the dataset's manifest holds nothing of the patient, and is what lets an
    RTSTRUCT's ROIs become the case's labels. Returns how many names were given back.
    """
    spelled = {c.strip().casefold(): c for c in classes}
    named = 0
    for item, original in items:
        cls = spelled.get(original.strip().casefold())
        if cls is not None:
            item.ROIName = cls
            named += 1
    return named


def deidentify_dataset(
    ds: Dataset,
    key: DeidKey,
    options: tuple[str, ...] = DEID_OPTIONS,
    roi_classes: tuple[str, ...] = (),
) -> ActionCounts:
    """De-identify ``ds`` in place with the manifest ``options`` (no refusal checks; see
    :func:`refusal_reason`). ``roi_classes``: the manifest's class names, which an
    RTSTRUCT's ROI names keep when they are exactly one (see :func:`_name_rois`)."""
    profile = get_profile(options)
    make = _Elements(ds)
    rois = _roi_items(ds) if roi_classes else []
    walker = _Walker(key, profile, _patient_basis(ds), make)
    walker.walk(ds, True)
    _record_method(ds, walker.pseudonym, profile, make)
    walker.clean_deferred()
    walker.counts.replaced += _name_rois(rois, roi_classes)
    _rebuild_file_meta(ds, key)
    return walker.counts


def read_dicom(src: Path | bytes, *, force: bool = False) -> Dataset:
    """Read a whole DICOM file (a path or its bytes); :class:`DicomRefused` if unreadable."""
    try:
        return read_source_dicom(src, force=force)
    except MalformedDicom as exc:
        raise DicomRefused(str(exc)) from None


def write_dicom(ds: Dataset, dst: Path) -> None:
    """Write as a conformant DICOM file (preamble, file meta), atomically."""
    write_bytes(dst, encode_file(ds))


def deid_dicom_dataset(
    ds: Dataset,
    dst: Path,
    key: DeidKey,
    *,
    options: tuple[str, ...] = DEID_OPTIONS,
    roi_classes: tuple[str, ...] = (),
) -> ActionCounts:
    """Check, de-identify and write an already read dataset; raises DicomRefused.
    ``roi_classes``: see :func:`deidentify_dataset`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reason = refusal_reason(ds)
        except Exception as exc:  # noqa: BLE001 - elements that cannot even be read
            raise DicomRefused(f"cannot de-identify: {describe_error(exc)}") from None
        if reason:
            raise DicomRefused(reason)
        try:
            counts = deidentify_dataset(ds, key, tuple(options), tuple(roi_classes))
        except DicomRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - a dataset that cannot be walked
            raise DicomRefused(f"cannot de-identify: {describe_error(exc)}") from None
        try:
            write_dicom(ds, dst)
        except Exception as exc:  # noqa: BLE001
            raise DicomRefused(f"cannot write DICOM: {describe_error(exc)}") from None
    return counts


def deid_dicom_file(
    src: Path,
    dst: Path,
    key: DeidKey,
    *,
    force: bool = False,
    options: tuple[str, ...] = DEID_OPTIONS,
) -> FileResult:
    """De-identify one DICOM file to ``dst``; a refused file writes nothing."""
    try:
        ds = read_dicom(Path(src), force=force)
        counts = deid_dicom_dataset(ds, Path(dst), key, options=options)
    except DicomRefused as exc:
        return FileResult.refused(str(src), "dicom", str(exc))
    return FileResult(
        path=str(src), kind="dicom", status="deidentified", output=str(dst), actions=counts
    )


__all__ = [
    "RISKY_CONVERSION_TYPES",
    "DicomRefused",
    "clean_text",
    "deid_dicom_dataset",
    "deid_dicom_file",
    "deidentify_dataset",
    "identity_tokens",
    "read_dicom",
    "refusal_reason",
    "shift_da",
    "shift_dt",
    "write_dicom",
]
