"""PS3.15 Annex E Table E.1-1: the one reference table that de-identifier and PHI gate share.

The rows live in the generated module :mod:`mbc_lib.deid._table_e11` (written ahead of time
by ``python -m mbc_lib.deid.generate_table`` from maintained packages; a test regenerates it
and compares). This module is its public API: rows by tag, the repeating-group masks, the
options mbc applies with their CID 7050 codes, and what an object must not hold given the
options it records. It holds the standard's table, not the de-identifier's choices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import NamedTuple

from . import _table_e11 as _generated

#: The edition, as the basic-profile source names it (``dicomfields_<year><letter>``).
EDITION: str = _generated.EDITION
#: Versions of the packages the table was generated from.
VERSIONS: dict[str, str] = _generated.VERSIONS
#: What each source letter of :attr:`Row.sources` stands for.
SOURCES: dict[str, str] = _generated.SOURCES
#: The rule that fills option cells the option-column source lacks for this edition.
COMPLETION_RULE: str = _generated.COMPLETION_RULE

#: The Basic Profile's code (CID 7050) and code meaning.
BASIC_PROFILE = ("113100", "Basic Application Confidentiality Profile")


class Option(NamedTuple):
    """An option mbc applies: manifest name, CID 7050 code and meaning, its cell in a Row."""

    name: str
    code: str
    meaning: str
    cell: str


#: The options mbc applies, by manifest name (``mbc_lib.manifests.DEID_OPTIONS``).
OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option(
            "retain_longitudinal_modified_dates",
            "113107",
            "Retain Longitudinal Temporal Information Modified Dates Option",
            "modified_dates",
        ),
        Option(
            "retain_patient_characteristics",
            "113108",
            "Retain Patient Characteristics Option",
            "patient_characteristics",
        ),
        Option("clean_descriptors", "113105", "Clean Descriptors Option", "clean_descriptors"),
    )
}


class Row(NamedTuple):
    """One attribute of Table E.1-1; an empty string is an empty cell.

    ``sources`` has one letter per cell (keyword through strongest_type), each a key of
    :data:`SOURCES`.
    """

    tag: int
    keyword: str
    vr: str
    basic: str
    patient_characteristics: str
    modified_dates: str
    clean_descriptors: str
    strongest_type: str
    sources: str

    def option(self, name: str) -> str:
        """This row's cell in the column of the option named ``name``."""
        return getattr(self, OPTIONS[name].cell)


class Mask(NamedTuple):
    """A repeating-group row: ``tag & mask == value`` for group and element."""

    group: int
    element: int
    group_mask: int
    element_mask: int
    basic: str

    def matches(self, tag: int) -> bool:
        """Whether ``tag`` is one of this row's attributes."""
        group, element = tag >> 16, tag & 0xFFFF
        return group & self.group_mask == self.group and element & self.element_mask == self.element


_ROWS = {tag: Row(tag, *cells) for tag, cells in _generated.TABLE.items()}
_MASKS = tuple(Mask(*mask) for mask in _generated.MASKS)


def row(tag: int) -> Row | None:
    """The row of ``tag`` (an ``int`` such as ``0x00100010``), or None outside the table."""
    return _ROWS.get(tag)


def rows() -> Iterator[Row]:
    """Every single-tag row, in tag order."""
    return iter(_ROWS.values())


def masks() -> tuple[Mask, ...]:
    """The repeating-group rows (curves 50xx, overlay data and comments 60xx)."""
    return _MASKS


def check_options(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as known option names in the order of :data:`OPTIONS`; ValueError if unknown."""
    chosen = set(names)
    unknown = chosen - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown de-identification options {sorted(unknown)}")
    return tuple(name for name in OPTIONS if name in chosen)


def options_for_codes(codes: Iterable[str]) -> tuple[str, ...]:
    """The options recorded by CID 7050 code values (other codes are ignored)."""
    recorded = set(codes)
    return tuple(name for name, option in OPTIONS.items() if option.code in recorded)


def method_codes(options: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """(code, meaning) of the Basic Profile and of ``options``, in the order of :data:`OPTIONS`."""
    return (BASIC_PROFILE, *((OPTIONS[n].code, OPTIONS[n].meaning) for n in check_options(options)))


@lru_cache(maxsize=16)
def _must_be_absent(options: tuple[str, ...]) -> frozenset[int]:
    return frozenset(
        r.tag for r in _ROWS.values() if r.basic == "X" and not any(r.option(n) for n in options)
    )


def must_be_absent(options: Iterable[str]) -> frozenset[int]:
    """Tags the Basic Profile removes (X) for which none of ``options`` has a cell."""
    return _must_be_absent(check_options(options))


__all__ = [
    "BASIC_PROFILE",
    "COMPLETION_RULE",
    "EDITION",
    "OPTIONS",
    "SOURCES",
    "VERSIONS",
    "Mask",
    "Option",
    "Row",
    "check_options",
    "masks",
    "method_codes",
    "must_be_absent",
    "options_for_codes",
    "row",
    "rows",
]
