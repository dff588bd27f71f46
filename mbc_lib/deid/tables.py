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

from ..manifests import Manifest
from .keys import DeidKey

MASK_FOLDER = "masks"
MASK_ARRAYS = ("labels", "sop_instance_uids")


class TableRefused(ValueError):
    """A label table or mask that cannot be let through; the message names no value."""


def map_uid(key: DeidKey, value: str) -> str:
    """The keyed UID for ``value``, as in DICOM (DICOM-defined UIDs stay)."""
    value = value.strip("\x00 ")
    return value if (not value or value in UID_dictionary) else key.uid(value)


def dataset_manifest(path: Path, root: Path, manifests: dict[str, Manifest]) -> Manifest | None:
    """The manifest of the nearest folder (up to ``root``) whose name is a dataset name."""
    root = root.resolve()
    for folder in path.resolve().parents:
        if folder.name in manifests:
            return manifests[folder.name]
        if folder == root:
            break
    return None


def is_label_table(path: Path, manifest: Manifest | None) -> bool:
    return (
        manifest is not None
        and manifest.label_file is not None
        and (path.name == manifest.label_file)
    )


def is_mask(path: Path, manifest: Manifest | None) -> bool:
    return manifest is not None and path.suffix == ".npz" and path.parent.name == MASK_FOLDER


def deid_labels(data: bytes, manifest: Manifest, key: DeidKey) -> bytes:
    """Pseudonymise a label table; raise :class:`TableRefused` for unknown columns/values."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TableRefused("label table is not UTF-8 text") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or not rows[0]:
        raise TableRefused("label table has no header row")
    header = [h.strip() for h in rows[0]]
    for name in header:
        if not (
            name in ("patient_id", "path")
            or name.endswith("_uid")
            or name in manifest.label_columns
        ):
            raise TableRefused(
                f"column {name!r} is not declared in dataset manifest {manifest.name!r} "
                "(free text could carry PHI)"
            )
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise TableRefused(f"row {number} has {len(row)} cells, header has {len(header)}")
        writer.writerow(
            [
                _cell(name, cell, number, manifest, key)
                for name, cell in zip(header, row, strict=True)
            ]
        )
    return out.getvalue().encode("utf-8")


def _cell(name: str, cell: str, number: int, manifest: Manifest, key: DeidKey) -> str:
    value = cell.strip()
    if name == "patient_id":
        return key.pseudonym(value) if value else ""
    if name.endswith("_uid") and name not in manifest.label_columns:
        return map_uid(key, value)
    if name == "path":
        return cell
    column = manifest.label_columns[name]
    if column.check(value) is not None:
        allowed = f" (one of {list(column.values)})" if column.values is not None else ""
        raise TableRefused(
            f"row {number}, column {name!r}: value is not a valid {column.dtype}{allowed}"
        )
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
    "dataset_manifest",
    "deid_labels",
    "deid_mask",
    "is_label_table",
    "is_mask",
    "map_uid",
]
