"""Label tables (``labels.csv``) and segmentation masks (``masks/*.npz``) of a dataset folder.

Only columns and arrays whose content is known are let through: patient ids become
pseudonyms, UIDs become keyed UIDs (the same ones as in the de-identified DICOM
files), label values are checked against the dataset manifest; anything else (free
text could carry PHI) refuses the file.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
from pydicom._uid_dict import UID_dictionary

from ..manifests import LabelColumn, Manifest
from ..sources.tables import TableError, describe_duplicates, duplicate_keys, read_table
from ..sources.walk import MASK_FOLDER
from .keys import DeidKey

MASK_ARRAYS = ("labels", "sop_instance_uids")


class TableRefused(ValueError):
    """A label table or mask that cannot be let through; the message names no value."""


def map_uid(key: DeidKey, value: str) -> str:
    """The keyed UID for ``value``, as in DICOM (DICOM-defined UIDs stay)."""
    value = value.strip("\x00 ")
    return value if (not value or value in UID_dictionary) else key.uid(value)


def dataset_of(root: Path, rel: str, manifests: dict[str, Manifest]) -> tuple[Manifest | None, str]:
    """The manifest of the nearest folder named after a dataset (``root`` itself included),
    and the file's path inside that folder; ``(None, rel)`` outside every dataset folder."""
    parts = rel.split("/")
    folders = [Path(root).name, *parts[:-1]]
    for depth in range(len(folders) - 1, -1, -1):
        if folders[depth] in manifests:
            return manifests[folders[depth]], "/".join(parts[depth:])
    return None, rel


def table_columns(manifest: Manifest) -> frozenset[str]:
    """The columns a label table of this dataset may hold: the patient column, ``path``, the key
    column and the columns the label columns are read from (plus ``*_uid`` columns)."""
    names = {"path", *(c.table_column for c in manifest.label_columns.values())}
    if manifest.label_patient:
        names.add(manifest.label_patient)
    if manifest.label_key_column:
        names.add(manifest.label_key_column)
    return frozenset(names)


def deid_labels(data: bytes, manifest: Manifest, key: DeidKey) -> bytes:
    """Pseudonymise a label table; raise :class:`TableRefused` for unknown columns/values."""
    try:
        table = read_table(data)
    except TableError as exc:
        raise TableRefused(str(exc)) from None
    known = table_columns(manifest)
    header = [name for name in table.header if name not in manifest.label_drop]
    for name in header:
        if not (name in known or name.endswith("_uid")):
            raise TableRefused(
                f"column {name!r} is not declared in dataset manifest {manifest.name!r} "
                "(free text could carry PHI)"
            )
    if not table.rows:
        raise TableRefused("label table holds no rows")
    key_column = manifest.label_key_column or "path"
    if key_column not in table.header:
        raise TableRefused(f"label table lacks its key column {key_column!r}")
    duplicates = duplicate_keys(table, key_column)
    if duplicates:
        raise TableRefused(describe_duplicates(duplicates))
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    checked = {c.table_column: c for c in manifest.label_columns.values()}
    for number, row in table.rows:
        writer.writerow([_cell(name, row[name], number, manifest, key, checked) for name in header])
    return out.getvalue().encode("utf-8")


def _cell(
    name: str,
    cell: str,
    number: int,
    manifest: Manifest,
    key: DeidKey,
    checked: dict[str, LabelColumn],
) -> str:
    """One cell of the de-identified table; ``checked``: label columns by table column."""
    value = cell.strip()
    if name == manifest.label_patient:
        return key.pseudonym(value) if value else ""
    if name.endswith("_uid") and name not in manifest.label_columns:
        return map_uid(key, value)
    if name in ("path", manifest.label_key_column):
        return cell
    column = checked.get(name)
    if column is not None:
        try:
            column.convert(value)
        except ValueError:
            allowed = f" (one of {list(column.values)})" if column.values is not None else ""
            if column.mapping is not None:
                allowed = f" (one of {sorted(column.mapping)})"
            raise TableRefused(
                f"row {number}, column {name!r}: value is not a valid {column.dtype}{allowed}"
            ) from None
    return cell


def deid_mask(data: bytes, key: DeidKey) -> bytes:
    """Remap the UIDs of a mask archive; raise :class:`TableRefused` for anything else."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            names = sorted(archive.files)
            unknown = [n for n in names if n not in MASK_ARRAYS]
            if unknown:
                raise TableRefused(
                    f"mask holds {len(unknown)} array(s) other than {list(MASK_ARRAYS)}"
                )
            if "labels" not in names:
                raise TableRefused("mask has no 'labels' array")
            arrays = {n: archive[n] for n in names}
    except TableRefused:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/npy errors, pickled objects
        raise TableRefused(f"mask is not a readable npz archive ({type(exc).__name__})") from None
    if arrays["labels"].dtype.kind not in "iu":
        raise TableRefused(f"mask 'labels' must be integer, not {arrays['labels'].dtype}")
    if "sop_instance_uids" in arrays:
        uids = arrays["sop_instance_uids"]
        if uids.dtype.kind != "U":
            raise TableRefused(f"mask 'sop_instance_uids' must be unicode, not {uids.dtype}")
        mapped = [map_uid(key, str(v)) for v in uids.ravel()]
        arrays["sop_instance_uids"] = np.array(mapped, dtype=str).reshape(uids.shape)
    return _write_npz(arrays)


def _write_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed npz with fixed timestamps, so the same input gives the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            array_bytes = io.BytesIO()
            np.lib.format.write_array(array_bytes, np.asarray(arrays[name]), allow_pickle=False)
            archive.writestr(info, array_bytes.getvalue())
    return buffer.getvalue()


__all__ = [
    "MASK_ARRAYS",
    "MASK_FOLDER",
    "TableRefused",
    "dataset_of",
    "deid_labels",
    "deid_mask",
    "map_uid",
]
