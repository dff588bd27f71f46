"""Reading a label table (CSV): header, rows with their line numbers, one key per row.

The de-identifier, the PHI gate and ingest all read label tables through :func:`read_table`
and :func:`duplicate_keys`, so they agree on what a table holds: UTF-8 with or without a
byte-order mark, a header row, rows as long as the header, blank lines ignored.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass


class TableError(ValueError):
    """A table that cannot be read as one; the message names no cell value."""


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, str]], ...]  # (line number, column -> cell)


def read_table(data: bytes) -> Table:
    """Parse a label table; :class:`TableError` if it is not a well-formed CSV table."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TableError("label table is not UTF-8 text") from None
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise TableError(f"label table is not valid CSV: {exc}") from None
    if not lines or not any(cell.strip() for cell in lines[0]):
        raise TableError("label table has no header row")
    header = tuple(cell.strip() for cell in lines[0])
    if len(set(header)) != len(header):
        raise TableError("label table names a column twice")
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise TableError(f"line {number} has {len(cells)} cells, the header has {len(header)}")
        rows.append((number, dict(zip(header, cells, strict=True))))
    return Table(header, tuple(rows))


def duplicate_keys(table: Table, key: str) -> dict[str, list[int]]:
    """Keys that more than one row gives, with their line numbers (cells compared stripped)."""
    lines: dict[str, list[int]] = defaultdict(list)
    for number, row in table.rows:
        lines[row.get(key, "").strip()].append(number)
    return {k: v for k, v in lines.items() if len(v) > 1}


def describe_duplicates(duplicates: dict[str, list[int]]) -> str:
    """One line naming the lines that share a key (never the key itself: it may be PHI)."""
    groups = sorted(duplicates.values())
    shown = "; ".join(", ".join(str(n) for n in lines) for lines in groups[:3])
    more = f" and {len(groups) - 3} more" if len(groups) > 3 else ""
    return f"{len(groups)} key(s) given by more than one row (lines {shown}{more})"


__all__ = ["Table", "TableError", "describe_duplicates", "duplicate_keys", "read_table"]
