"""Step 4 of ``mbc verify``, the catalog: the dataset's catalog file against its cases.

Exactly the manifest's columns, one row per case holding the values the case's attributes
imply (:func:`mbc_lib.store.catalog.catalog_row`, what ingest writes), known splits and one
split per patient. A finding shows only what cannot identify anyone: case ids and pseudonyms
that look like one, and numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ...deid.keys import PSEUDONYM_RE
from ...errors import describe_error
from ...manifests import Manifest
from .. import layout, schema
from ..catalog import SPLITS, catalog_row
from .findings import Findings
from .tree import Listing


def verify_catalog(
    path: Path,
    dataset: str,
    listing: Listing,
    manifest: Manifest,
    cases: dict[str, dict[str, Any] | None],
    out: Findings,
) -> None:
    """Columns, rows and splits of the dataset's catalog against its cases."""
    where = f"{dataset}/catalog"
    if layout.CATALOG_FILE in listing.unsafe:
        out.add(where, "not read (not a regular file)")
        return
    if layout.CATALOG_FILE not in listing.files:
        if cases:
            out.add(where, "missing")
        return
    frame = _read_catalog(path / layout.CATALOG_FILE, where, manifest, out)
    if frame is None:
        return
    _check_rows(frame, cases, manifest, where, out)
    _check_splits(frame, where, out)


def _read_catalog(path: Path, where: str, manifest: Manifest, out: Findings) -> pd.DataFrame | None:
    """The catalog as a frame, after checking its columns and file metadata."""
    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except Exception as exc:  # noqa: BLE001
        out.add(where, f"unreadable: {describe_error(exc)}")
        return None
    expected = list(schema.catalog_columns(manifest))
    names = list(table.column_names)
    for name in names:
        if name not in expected:
            out.add(where, f"unexpected column {name!r}")
    for name in expected:
        if name not in names:
            out.add(where, f"missing column {name!r}")
    if sorted(names) == sorted(expected) and names != expected:
        out.add(where, "columns are not in the catalog's order")
    for key in sorted(set(table.schema.metadata or {}) - {b"pandas"}):
        out.add(where, f"unexpected file metadata {key.decode(errors='replace')!r}")
    return frame if "case_id" in names else None


def _check_rows(
    frame: pd.DataFrame,
    cases: dict[str, dict[str, Any] | None],
    manifest: Manifest,
    where: str,
    out: Findings,
) -> None:
    """One row per case, each holding what the case's attributes imply."""
    counts = Counter(str(c) for c in frame["case_id"])
    for case_id in sorted(c for c, n in counts.items() if n > 1):
        out.add(where, f"case {_case_id(case_id)} listed more than once")
    for case_id in sorted(set(cases) - set(counts)):
        out.add(where, f"case {case_id} missing from the catalog")
    for case_id in sorted(set(counts) - set(cases)):
        out.add(where, f"lists case {_case_id(case_id)}, which is not in the store")
    for row in frame.to_dict("records"):
        mbc = cases.get(str(row["case_id"]))
        if not mbc:
            continue
        for column, value in catalog_row(mbc, manifest).items():
            if column in row and not _same(row[column], value):
                out.add(where, f"{row['case_id']}: {_difference(column, row[column], value)}")


def _case_id(value: str) -> str:
    """A case id as shown in a finding: only what looks like one (never a cell's content)."""
    return value if layout.CASE_ID_RE.fullmatch(value) else "<not a case id>"


def _difference(column: str, cell: Any, value: Any) -> str:
    """How a cell differs from the case; only numbers are shown (text could identify)."""
    cell = _plain(cell)
    numbers = int | float
    if isinstance(cell, numbers) and isinstance(value, numbers):
        return f"{column} is {cell!r}, the case says {value!r}"
    return f"{column} differs from the case's attributes"


def _plain(value: Any) -> Any:
    """A catalog cell as plain Python (None where missing)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _same(cell: Any, value: Any) -> bool:
    """A catalog cell holds ``value`` (numbers compare by value, anything else by type too)."""
    cell = _plain(cell)
    if cell is None or value is None:
        return cell is None and value is None
    if isinstance(cell, int | float) and isinstance(value, int | float):
        return cell == value
    return type(cell) is type(value) and cell == value


def _check_splits(frame: pd.DataFrame, where: str, out: Findings) -> None:
    """Known split values, and every case of a patient in one split."""
    if "split" not in frame or "patient" not in frame:
        return
    by_patient: dict[str, dict[str, list[str]]] = {}
    for case_id, patient, split in zip(
        frame["case_id"], frame["patient"], frame["split"], strict=True
    ):
        if split not in SPLITS:
            out.add(where, f"{_case_id(str(case_id))}: split is not one of {list(SPLITS)}")
        by_patient.setdefault(str(patient), {}).setdefault(str(split), []).append(str(case_id))
    for patient, splits in sorted(by_patient.items()):
        if len(splits) > 1:
            name = patient if PSEUDONYM_RE.match(patient) else "<not a pseudonym>"
            detail = "; ".join(
                f"{s if s in SPLITS else '?'}: {', '.join(sorted(_case_id(i) for i in ids))}"
                for s, ids in sorted(splits.items())
            )
            out.add(where, f"patient {name} spans {len(splits)} splits ({detail})")
