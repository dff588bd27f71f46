"""Copies of the real DICOM test files shipped by pydicom and pydicom-data, flattened.

Every DICOM file is kept, malformed ones included (they are what a robust ingest must cope with).
A file counts as DICOM when it ends in ``.dcm``, or has no suffix and the ``DICM`` magic at byte
128 (DICOMDIRs and the files they index); READMEs, dumps, JSON, ICC and gzip files are not copied.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

MAX_BYTES = 50 * 1024 * 1024


@dataclass
class RealDicomCopy:
    """What ``copy_real_dicom`` wrote and what it left out, and why."""

    copied: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)
    too_large_bytes: int = 0
    not_dicom: list[str] = field(default_factory=list)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix:
        return False
    with path.open("rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM"


def _sources() -> list[tuple[str, Path, Path]]:
    """(source label, root folder, file) for every test data file, in a stable order."""
    from pydicom.data import get_testdata_files
    from pydicom.data.data_manager import DATA_ROOT

    pydicom_root = Path(DATA_ROOT) / "test_files"
    found = []
    for name in get_testdata_files():
        path = Path(name)
        if not path.is_file():
            continue
        if path.is_relative_to(pydicom_root):
            found.append(("pydicom", pydicom_root, path))
        else:
            found.append(("pydicom-data", path.parent, path))
    return sorted(found, key=lambda item: (item[0], str(item[2].relative_to(item[1]))))


def _flat_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).parts
    name = "_".join(parts)
    return name if name.lower().endswith(".dcm") else f"{name}.dcm"


def copy_real_dicom(out: Path) -> RealDicomCopy:
    """Copy every pydicom / pydicom-data DICOM test file into ``out`` under a flat, unique name."""
    out.mkdir(parents=True, exist_ok=True)
    report = RealDicomCopy()
    taken: set[str] = set()
    for label, root, path in _sources():
        if not _is_dicom(path):
            report.not_dicom.append(str(path))
            continue
        size = path.stat().st_size
        if size > MAX_BYTES:
            report.too_large.append(str(path))
            report.too_large_bytes += size
            continue
        name = _flat_name(root, path)
        if name.lower() in taken:
            name = f"{label}_{name}"
        stem, n = name[:-4], 2
        while name.lower() in taken:
            name, n = f"{stem}_{n}.dcm", n + 1
        taken.add(name.lower())
        shutil.copyfile(path, out / name)
        report.copied.append(name)
    return report


__all__ = ["MAX_BYTES", "RealDicomCopy", "copy_real_dicom"]
