"""The PHI gate: an independent check, run by ingest and verify, that nothing identifies a person.

It does not trust the de-identifier: it looks at what a file or a store actually holds and
reports every identifying attribute it finds. An empty list means the object may pass.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .deid import table_e11
from .deid.keys import DERIVED_UID_RE, PSEUDONYM_RE
from .errors import describe_error
from .manifests import Manifest
from .sources import header, nifti, nnunet
from .sources.bmp import MalformedBmp, OverBudget, parse_bmp
from .sources.dicom import MalformedDicom, read_dicom
from .sources.limits import DEFAULT_MAX_PIXELS
from .sources.tables import TableError, read_table
from .sources.walk import UnreadableFile, read_file
from .store.schema import ACQUISITION, CASE_ATTR_KEYS, acquisition_value_ok

JPEG_SOI = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG chunks that carry pixels or colour rendering only (no text, time or device data).
PNG_ALLOWED_CHUNKS = frozenset(
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
BASIC_PROFILE_CODE = "113100"
#: Findings that say a file cannot be checked (damaged), not that it identifies someone.
NOT_PHI = ("unreadable", "malformed", "too large")


# -- reference tables ---------------------------------------------------------------------
@lru_cache(maxsize=1)
def _standard_uids() -> frozenset[str]:
    from pydicom._uid_dict import UID_dictionary

    return frozenset(UID_dictionary)


@lru_cache(maxsize=16)
def _must_be_absent(codes: frozenset[str] | None = None) -> frozenset[int]:
    """Tags Table E.1-1 removes (X) that no option recorded by ``codes`` keeps or cleans.

    ``codes`` are the object's De-identification Method Code values; None stands for every
    option mbc applies. The table is the standard's (:mod:`mbc_lib.deid.table_e11`), shared
    with the de-identifier; what the de-identifier makes of it is not consulted.
    """
    if codes is None:
        return table_e11.must_be_absent(table_e11.OPTIONS)
    return table_e11.must_be_absent(table_e11.options_for_codes(codes))


# -- DICOM --------------------------------------------------------------------------------
_BIRTH = frozenset({0x00100030, 0x00100032})  # Patient's Birth Date, Birth Time
_PATIENT_NAME = 0x00100010


def _vr(elem: Any) -> str:
    """The VR of a (possibly raw, implicit VR) element, without converting its value."""
    if elem.VR:
        return str(elem.VR)
    try:
        return dictionary_VR(elem.tag).split(" or ")[0]
    except KeyError:
        return "UN"


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the gate needs of one element: where it is and its non-empty values."""

    tag: int
    vr: str
    depth: int
    private: bool
    values: tuple[str, ...]  # text values with padding removed; ("<binary>",) for binary

    @property
    def where(self) -> str:
        name = keyword_for_tag(self.tag) or f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"
        return name + (f" (in a sequence, depth {self.depth})" if self.depth else "")


_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST"})
_TEXT_VRS |= frozenset({"TM", "UC", "UI", "UR", "UT"})


def _values(elem: Any, vr: str) -> tuple[str, ...]:
    """Non-empty values of a raw or converted element, read from its bytes when raw."""
    value = elem.value
    if isinstance(elem, RawDataElement):
        if value is None:
            return ("<deferred>",) if elem.length else ()
        if vr not in _TEXT_VRS:
            return ("<binary>",) if value else ()
        text = value.decode("latin-1")
        return tuple(v for v in (v.strip("\x00 ") for v in text.split("\\")) if v)
    if elem.is_empty:
        return ()
    if vr not in _TEXT_VRS:
        return ("<binary>",)
    many = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    return tuple(t for t in (str(v).strip("\x00 ") for v in many) if t)


def _iter_elements(ds: Dataset, wanted: frozenset[int], depth: int = 0) -> Iterable[_Seen]:
    """Every element the gate must look at, at any depth, without converting its value:
    private ones (by tag), sequences (walked), person names, UIDs and the ``wanted`` tags."""
    for raw in ds.elements():
        tag = int(raw.tag)
        if tag >> 16 & 1:
            yield _Seen(tag, "", depth, True, ())
            continue
        vr = _vr(raw)
        if vr == "SQ":
            items = ds[raw.tag].value or []
            yield _Seen(tag, vr, depth, False, ("<items>",) if items else ())
            for item in items:
                yield from _iter_elements(item, wanted, depth + 1)
        elif vr in ("PN", "UI") or tag in wanted:
            yield _Seen(tag, vr, depth, False, _values(raw, vr))


def check_dicom_dataset(ds: Dataset) -> list[str]:
    """Identifying content left in a DICOM dataset (header only is enough)."""
    problems: list[str] = []
    if str(header.get(ds, "PatientIdentityRemoved", "")).upper() != "YES":
        problems.append("Patient Identity Removed is not YES")
    codes = {
        str(item.get("CodeValue", "")) for item in ds.get("DeidentificationMethodCodeSequence", [])
    }
    if BASIC_PROFILE_CODE not in codes:
        problems.append("De-identification Method Code Sequence lacks 113100 (Basic Profile)")
    if str(header.get(ds, "BurnedInAnnotation", "")).upper() == "YES":
        problems.append("Burned In Annotation is YES")
    for keyword in ("PatientID", "PatientName"):
        value = str(header.get(ds, keyword, "") or "")
        if value and not PSEUDONYM_RE.match(value):
            problems.append(f"{keyword} is not a pseudonym")
    absent = _must_be_absent(frozenset(codes))
    standard_uids = _standard_uids()
    meta_uid = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPInstanceUID", ""))
    if meta_uid and meta_uid not in standard_uids and not DERIVED_UID_RE.match(meta_uid):
        problems.append("MediaStorageSOPInstanceUID holds an original (not re-derived) UID")
    private = 0
    for seen in _iter_elements(ds, absent | _BIRTH):
        if seen.private:
            private += 1
        elif not seen.values:
            continue
        elif seen.tag in absent:
            problems.append(f"{seen.where} should have been removed")
        elif seen.vr == "PN" and not (seen.depth == 0 and seen.tag == _PATIENT_NAME):
            problems.append(f"person name in {seen.where}")
        elif seen.vr == "UI" and any(
            uid not in standard_uids and not DERIVED_UID_RE.match(uid) for uid in seen.values
        ):
            problems.append(f"{seen.where} holds an original (not re-derived) UID")
        elif seen.tag in _BIRTH:
            problems.append(f"{seen.where} present")
    if private:
        problems.append(f"{private} private attribute(s) present")
    return _unique(problems)


def check_dicom_file(path: Path) -> list[str]:
    """Identifying content left in a DICOM file (``malformed``/``unreadable`` when it cannot
    be read whole)."""
    try:
        ds = read_dicom(read_file(Path(path)))
    except (MalformedDicom, UnreadableFile) as exc:
        text = str(exc)
        return [text if text.startswith(NOT_PHI) else f"unreadable DICOM: {text}"]
    return check_dicom_dataset(ds)


# -- JPEG / PNG ---------------------------------------------------------------------------
#: Bytes after 0xFF that do not end entropy-coded data (stuffing, restart markers, fill).
_IN_SCAN = frozenset({0x00, 0xFF, *range(0xD0, 0xD8)})
#: A scan of at least this many bytes, this share of them zero, holds no coded image: real
#: Huffman-coded data is close to random bytes.
_MIN_SCAN, _ZEROED = 256, 0.9


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, length) of every marker segment before and between scans."""
    if not data.startswith(JPEG_SOI):
        raise ValueError("not a JPEG file")
    out: list[tuple[int, int, int]] = []
    i, n = 2, len(data)
    while True:
        if i >= n:
            raise ValueError("ends without EOI marker")
        if data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            raise ValueError("ends inside a marker")
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI
            out.append((marker, i - 2, 0))
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if i + 2 > n:
            raise ValueError("truncated JPEG segment")
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2 or i + length > n:
            raise ValueError(f"truncated segment (marker 0x{marker:02X})")
        out.append((marker, i - 2, length))
        i += length
        if marker == 0xDA:  # SOS: skip entropy-coded data to the next real marker
            start = i
            while True:
                i = data.find(b"\xff", i)
                if i < 0 or i + 1 >= n:
                    raise ValueError("entropy-coded data ends without EOI marker")
                if data[i + 1] in _IN_SCAN:
                    i += 1
                    continue
                break
            if i - start >= _MIN_SCAN and data.count(0, start, i) > _ZEROED * (i - start):
                raise ValueError("image data is zeroed")
    return out


def check_jpeg(data: bytes) -> list[str]:
    try:
        segments = jpeg_segments(data)
    except ValueError as exc:
        return [f"malformed JPEG: {exc}"]
    problems = []
    for marker, offset, length in segments:
        if marker == 0xFE:
            problems.append("JPEG comment (COM) present")
        elif marker == 0xE0:
            body = data[offset + 4 : offset + 2 + length]
            if body.startswith(b"JFIF\x00") and len(body) >= 14 and (body[12] or body[13]):
                problems.append("JFIF thumbnail present")
            elif not body.startswith(b"JFIF\x00"):
                problems.append("APP0 segment other than JFIF present")
        elif 0xE1 <= marker <= 0xEF and marker != 0xEE:
            kind = {0xE1: "EXIF/XMP (APP1)", 0xE2: "ICC/FlashPix (APP2)", 0xED: "IPTC (APP13)"}
            problems.append(f"{kind.get(marker, f'APP{marker - 0xE0}')} metadata present")
    return _unique(problems)


def png_chunks(data: bytes) -> list[bytes]:
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    i, types = len(PNG_SIGNATURE), []
    while True:
        if i + 12 > len(data):
            raise ValueError("ends without IEND chunk")
        length = int.from_bytes(data[i : i + 4], "big")
        end = i + 12 + length
        if end > len(data):
            raise ValueError("truncated chunk")
        body = data[i + 4 : end - 4]
        if zlib.crc32(body) != int.from_bytes(data[end - 4 : end], "big"):
            raise ValueError(f"CRC error in chunk {len(types) + 1}")
        types.append(data[i + 4 : i + 8])
        i = end
        if types[-1] == b"IEND":
            return types


def check_png(data: bytes) -> list[str]:
    try:
        types = png_chunks(data)
    except ValueError as exc:
        return [f"malformed PNG: {exc}"]
    return _unique(
        f"PNG {t.decode('latin-1')} chunk present" for t in types if t not in PNG_ALLOWED_CHUNKS
    )


def check_bmp(data: bytes, budget: int = DEFAULT_MAX_PIXELS) -> list[str]:
    """A BMP is plain: a sane header, nothing after its declared end, within the pixel
    budget, and no colour profile (embedded ones can name a device, linked ones a path)."""
    try:
        bmp = parse_bmp(data, budget, trailing_ok=True)
    except MalformedBmp as exc:
        return [f"malformed BMP: {exc}"]
    except OverBudget as exc:
        return [f"too large: {exc}"]
    problems = []
    if bmp.file_size < len(data):
        problems.append(f"BMP holds {len(data) - bmp.file_size} bytes after its declared end")
    if bmp.profile:
        problems.append(f"BMP {bmp.profile} colour profile present")
    return problems


# -- label tables and masks ----------------------------------------------------------------
def check_labels_csv(data: bytes, manifest: Manifest) -> list[str]:
    """Columns a label table may hold are declared; ids are pseudonyms, UIDs re-derived."""
    try:
        table = read_table(data)
    except TableError as exc:
        return [f"malformed label table: {exc}"]
    patient = manifest.label_patient
    allowed = {"path", *(c.table_column for c in manifest.label_columns.values())}
    if patient:
        allowed.add(patient)
    if manifest.label_key_column:
        allowed.add(manifest.label_key_column)
    problems = [
        f"label column {c!r} is not declared in the {manifest.name} manifest"
        for c in table.header
        if c not in allowed and not c.endswith("_uid")
    ]
    for n, row in table.rows:
        pid = row.get(patient) if patient else None
        if pid is not None and not PSEUDONYM_RE.match(pid):
            problems.append(f"line {n}: {patient} is not a pseudonym")
        for c in table.header:
            if c.endswith("_uid") and not DERIVED_UID_RE.match(row.get(c) or ""):
                problems.append(f"line {n}: {c} is not a re-derived UID")
    return _unique(problems)


def check_nifti(data: bytes, budget: int = DEFAULT_MAX_PIXELS) -> list[str]:
    """A NIfTI file's free-text header fields are empty and it has no extensions (they may
    hold a whole DICOM header) nor bytes hidden between its header and its voxels."""
    try:
        parsed = nifti.parse(data, budget)
    except nifti.MalformedNifti as exc:
        return [str(exc)]
    header, raw = parsed.header, parsed.raw
    problems = [
        f"NIfTI header field {name} holds text"
        for name in nifti.TEXT_FIELDS
        if name in header and header[name].tobytes().strip(b"\x00 ")
    ]
    size, offset = header.sizeof_hdr, int(header["vox_offset"])
    if len(header.extensions) or raw[size : size + 1] not in (b"\x00", b""):
        problems.append("NIfTI header extensions present (they may hold a DICOM header)")
    elif raw[size + 4 : offset].strip(b"\x00"):
        problems.append("NIfTI file holds bytes between its header and its voxels")
    return problems


def check_dataset_json(data: bytes) -> list[str]:
    """An nnU-Net dataset.json holds structure only (labels, channels, file lists)."""
    try:
        doc = nnunet.parse(data)
    except nnunet.DatasetJsonError as exc:
        return [str(exc)]
    return nnunet.structure_problems(doc)


def check_mask_npz(data: bytes) -> list[str]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            keys = set(npz.files)
            uids = npz["sop_instance_uids"] if "sop_instance_uids" in keys else np.array([])
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        return [f"malformed mask file: {describe_error(exc)}"]
    problems = [
        f"mask array {k!r} not allowed" for k in sorted(keys - {"labels", "sop_instance_uids"})
    ]
    if any(not DERIVED_UID_RE.match(str(u)) for u in uids.ravel()):
        problems.append("mask refers to original (not re-derived) SOP Instance UIDs")
    return problems


# -- store attributes ------------------------------------------------------------------------
def check_case_attrs(attrs: dict[str, Any], manifest: Manifest) -> list[str]:
    """The ``mbc`` attributes of a stored case hold only whitelisted, non-identifying fields."""
    problems = [f"unexpected case attribute {k!r}" for k in sorted(set(attrs) - CASE_ATTR_KEYS)]
    patient = attrs.get("patient")
    if not isinstance(patient, str) or not PSEUDONYM_RE.match(patient):
        problems.append("case patient is not a pseudonym")
    for key in ("study_uid", "series_uid", "frame_of_reference_uid"):
        value = attrs.get(key)
        if value is not None and not DERIVED_UID_RE.match(str(value)):
            problems.append(f"case {key} is not a re-derived UID")
    sop_uids = attrs.get("sop_instance_uids")
    if sop_uids is not None and (
        not isinstance(sop_uids, list)
        or not all(isinstance(u, str) and DERIVED_UID_RE.match(u) for u in sop_uids)
    ):
        problems.append("case sop_instance_uids are not all re-derived UIDs")
    problems += _acquisition_problems(attrs.get("acquisition"))
    labels = attrs.get("labels") or {}
    for name, value in labels.items():
        column = manifest.label_columns.get(name)
        if column is None:
            problems.append(f"case label {name!r} not declared in the manifest")
        elif value is not None and (issue := column.check(value)):
            problems.append(issue)
    return problems


def _acquisition_problems(acquisition: Any) -> list[str]:
    """Cohort fields hold only what their DICOM attribute may (see
    :func:`mbc_lib.store.schema.acquisition_value_ok`)."""
    if acquisition is None:
        return []
    if not isinstance(acquisition, dict):
        return ["case acquisition is not a mapping"]
    problems = [
        f"unexpected acquisition field {k!r}" for k in sorted(set(acquisition) - set(ACQUISITION))
    ]
    for name, value in acquisition.items():
        if name in ACQUISITION and value is not None and not acquisition_value_ok(name, value):
            problems.append(f"case acquisition {name} is not a valid {ACQUISITION[name]}")
    return problems


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
