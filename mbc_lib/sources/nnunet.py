"""nnU-Net raw datasets: the ``dataset.json`` beside ``imagesTr/`` and ``labelsTr/``.

Only the keys that describe the data's structure are let through (:data:`STRUCTURE_KEYS`);
the free-text ones (name, description, reference, licence, release) are dropped by
``mbc deid`` and refused by the PHI gate. Labels come in nnU-Net v2's form
(``{"background": 0, "lesion": 1}``) or v1's (``{"0": "background", "1": "lesion"}``).
"""

from __future__ import annotations

import json
import re
from typing import Any

DATASET_JSON = "dataset.json"
#: Keys of dataset.json that describe structure, not people (nnU-Net v1 and v2).
STRUCTURE_KEYS = frozenset(
    {
        "channel_names",
        "modality",
        "labels",
        "numTraining",
        "numTest",
        "file_ending",
        "tensorImageSize",
        "regions_class_order",
        "training",
        "test",
    }
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$")
_PATH_RE = re.compile(r"^[A-Za-z0-9_./-]{1,255}$")


class DatasetJsonError(ValueError):
    """A dataset.json that cannot be read or holds what it should not; names no value."""


def parse(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetJsonError(f"malformed dataset.json: {exc.__class__.__name__}") from None
    if not isinstance(doc, dict):
        raise DatasetJsonError("malformed dataset.json: not a JSON object")
    return doc


def structure_problems(doc: dict[str, Any]) -> list[str]:
    """What in ``doc`` is not plain structure: unknown keys, names or paths that are not
    short identifiers (free text could carry PHI)."""
    problems = [f"dataset.json key {k!r} is free text" for k in sorted(set(doc) - STRUCTURE_KEYS)]
    for key in ("channel_names", "modality"):
        for name in (doc.get(key) or {}).values():
            if not isinstance(name, str) or not _NAME_RE.match(name):
                problems.append(f"dataset.json {key} holds a value that is not a short name")
    try:
        names = list(label_classes(doc).values())
    except DatasetJsonError as exc:
        problems.append(str(exc))
        names = []
    if any(not _NAME_RE.match(n) for n in names):
        problems.append("dataset.json labels hold a name that is not a short name")
    for entry in doc.get("training") or []:
        paths = entry.values() if isinstance(entry, dict) else [entry]
        if any(not isinstance(p, str) or not _PATH_RE.match(p) for p in paths):
            problems.append("dataset.json training lists something other than file paths")
            break
    for entry in doc.get("test") or []:
        if not isinstance(entry, str) or not _PATH_RE.match(entry):
            problems.append("dataset.json test lists something other than file paths")
            break
    return problems


def label_classes(doc: dict[str, Any]) -> dict[int, str]:
    """The label values and names of a dataset.json (v1 or v2 form)."""
    labels = doc.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DatasetJsonError("dataset.json has no labels")
    out: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[value] = str(key)  # v2: name -> value
        elif isinstance(value, str) and str(key).isdigit():
            out[int(key)] = value  # v1: "value" -> name
        else:
            raise DatasetJsonError(
                "dataset.json labels must map names to values (region-based labels are "
                "not supported)"
            )
    return dict(sorted(out.items()))


def deidentify(data: bytes) -> bytes:
    """dataset.json with only its structure keys; refused if those hold anything else."""
    doc = parse(data)
    kept = {k: v for k, v in doc.items() if k in STRUCTURE_KEYS}
    problems = structure_problems(kept)
    if problems:
        raise DatasetJsonError(problems[0])
    return (json.dumps(kept, indent=2, sort_keys=True) + "\n").encode()


__all__ = [
    "DATASET_JSON",
    "STRUCTURE_KEYS",
    "DatasetJsonError",
    "deidentify",
    "label_classes",
    "parse",
    "structure_problems",
]
