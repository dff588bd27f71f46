"""Find and classify the files of an ingest source tree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..phi_gate import JPEG_SOI, PNG_SIGNATURE

#: Files that ``mbc deid`` writes beside its output (metadata, not images).
REPORT_NAMES = frozenset({"deid-report.json", "deid-report.txt"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima", ""})


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str  # path relative to the source root, '/'-separated
    kind: str  # dicom | jpeg | png | labels | mask | report | other


def classify(path: Path, rel: str, label_file: str | None) -> str:
    name = path.name
    parts = rel.split("/")
    if name in REPORT_NAMES and len(parts) == 1:
        return "report"
    if label_file and rel == label_file:
        return "labels"
    if name.endswith(".npz") and len(parts) >= 2 and parts[-2] == "masks":
        return "mask"
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return "other"
    if head.startswith(JPEG_SOI):
        return "jpeg"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES:
        return "dicom"
    return "other"


def scan_tree(src: Path, label_file: str | None) -> list[SourceFile]:
    """Every regular file under ``src``, sorted, classified by content and place."""
    files: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not path.is_file() or path.is_symlink():
                continue
            rel = path.relative_to(src).as_posix()
            files.append(SourceFile(path, rel, classify(path, rel, label_file)))
    return files
