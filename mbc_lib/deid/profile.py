"""What ``mbc deid`` does with each tag: PS3.15 Annex E Table E.1-1 resolved to one operation.

The table itself (edition, Basic Profile codes, option columns, attribute types, masks and
where each cell came from) is :mod:`mbc_lib.deid.table_e11`, generated ahead of time from
maintained packages; nothing here reads those packages. This module owns the
de-identifier's choices: which options apply, how a combined code resolves, what an
attribute outside the table gets, and how an action becomes an operation of the walk in
``dicom.py``. Value representations and keywords come from pydicom's data dictionary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from pydicom.datadict import DicomDictionary, keyword_dict

from ..manifests import DEID_OPTIONS
from . import table_e11
from .table_e11 import Row

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

#: Codes of the profile and of every option mbc applies (CID 7050), with their code meanings.
METHOD_CODES = table_e11.method_codes(DEID_OPTIONS)

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
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
    """The resolved table for one set of options: what to do with each tag, and its sources."""

    actions: dict[int, int]
    keep: frozenset[int]
    vrs: dict[int, str]
    masks: tuple[tuple[int, int, int, int, int], ...]
    identity: frozenset[int]
    basic_codes: dict[int, str]
    resolved: dict[int, str]
    edition: str
    sources: dict[str, str]
    options: tuple[str, ...]
    method_codes: tuple[tuple[str, str], ...]


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


def _resolve(row: Row, vr: str, options: tuple[str, ...]) -> tuple[int | None, str]:
    """Operation and resolved letter for a row of the table, with ``options`` applied."""
    applied = set(options)
    if "retain_patient_characteristics" in applied:
        if row.patient_characteristics == "K":
            return None, "K"
        if row.patient_characteristics == "C" and vr in TEXT_VRS:
            return CLEAN, "C"
    if (
        "retain_longitudinal_modified_dates" in applied
        and row.modified_dates == "C"
        and vr in ("DA", "DT", "TM")
    ):
        return {"DA": SHIFT_DA, "DT": SHIFT_DT, "TM": None}[vr], "C"
    if "clean_descriptors" in applied and row.clean_descriptors == "C":
        if vr in TEXT_VRS:
            return CLEAN, "C"
        if vr == "SQ":
            return RECURSE, "C"
    if not row.basic:
        return _default_op(row.tag, vr, row.keyword), "-"
    letter = resolve_combined(row.basic, row.strongest_type or None)
    return _op_for_letter(letter, vr), letter


def _sources() -> dict[str, str]:
    return {
        "basic_profile": table_e11.SOURCES["a"],
        "option_columns": table_e11.SOURCES["s"],
        "completion_rule": table_e11.COMPLETION_RULE,
        "attribute_types": table_e11.SOURCES["m"],
        "table": f"mbc_lib.deid._table_e11 ({table_e11.EDITION})",
    }


@cache
def _build(options: tuple[str, ...]) -> Profile:
    actions: dict[int, int] = {}
    resolved: dict[int, str] = {}
    for row in table_e11.rows():
        op, letter = _resolve(row, row.vr.split(" or ")[0] or "UN", options)
        resolved[row.tag] = letter
        if op is not None:
            actions[row.tag] = op
    for tag, entry in DicomDictionary.items():
        if tag not in resolved:
            op = _default_op(tag, entry[0].split(" or ")[0], entry[4])
            if op is not None:
                actions[tag] = op
    actions[keyword_dict["PatientID"]] = PATIENT_ID
    actions[keyword_dict["PatientName"]] = PATIENT_NAME
    masks = tuple(
        (m.group, m.element, m.group_mask, m.element_mask, _mask_op(m.basic))
        for m in table_e11.masks()
    )
    identity = {keyword_dict[k] for k in _IDENTITY_KEYWORDS if k in keyword_dict}
    identity |= {t for t, entry in DicomDictionary.items() if entry[0] == "PN"}
    return Profile(
        actions=actions,
        keep=frozenset(t for t in DicomDictionary if t not in actions),
        vrs={t: _dictionary_vr(t) for t in actions},
        masks=masks,
        identity=frozenset(identity),
        basic_codes={row.tag: row.basic for row in table_e11.rows()},
        resolved=resolved,
        edition=table_e11.EDITION,
        sources=_sources(),
        options=options,
        method_codes=table_e11.method_codes(options),
    )


def _mask_op(code: str) -> int:
    return _op_for_letter(resolve_combined(code, None), "UN") or REMOVE


def get_profile(options: Iterable[str] = DEID_OPTIONS) -> Profile:
    """The tag -> operation table with ``options`` (manifest option names) applied.

    Built once per process for each set of options; the order of ``options`` does not
    matter, and an unknown name raises ValueError.
    """
    return _build(table_e11.check_options(options))


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
