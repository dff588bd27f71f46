"""``mbc verify``: layout, checksums, catalog and the PHI gate, over the whole store."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import zarr

from .. import phi_gate
from ..errors import MbcError
from ..manifests import Manifest, parse_manifest
from ..progress import progress as progress_bar
from . import layout
from .catalog import SPLITS, read_catalog
from .checksum import case_checksum

_DATASET_ENTRIES = {"zarr.json", layout.CASES, layout.CATALOG_FILE}
_ROOT_HIDDEN = {layout.STAGING, layout.LOCK_FILE}


def _attrs(path: Path) -> dict[str, Any]:
    with open(path / "zarr.json") as fh:
        return json.load(fh).get("attributes", {}) or {}


def verify_store(root: Path, progress: bool = False) -> list[str]:
    """Every problem found in the store, one line each (empty list: the store is sound)."""
    root = Path(root)
    if not (root / "zarr.json").is_file():
        raise MbcError(f"not an mbc store (no zarr.json): {root}")
    findings: list[str] = []
    root_attrs = _attrs(root)
    if set(root_attrs) != {"mbc"} or "store_version" not in root_attrs["mbc"]:
        findings.append("root: attributes are not exactly the mbc store header")
    staging = root / layout.STAGING
    if staging.exists() and any(staging.iterdir()):
        findings.append("staging holds a half-written case (an ingest crashed): re-run ingest")
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name in ("zarr.json", *_ROOT_HIDDEN):
            continue
        if not entry.is_dir() or not (Path(entry.path) / "zarr.json").exists():
            findings.append(f"root: unexpected entry {entry.name!r}")
            continue
        findings += _verify_dataset(root, entry.name, progress)
    return findings


def _verify_dataset(root: Path, name: str, progress: bool) -> list[str]:
    base = layout.dataset_path(root, name)
    attrs = _attrs(base)
    try:
        manifest = parse_manifest(attrs.get("mbc", {}).get("manifest"), name)
    except MbcError as exc:
        return [f"{name}: manifest in the store is invalid: {exc}"]
    findings = [f"{name}: unexpected attribute {k!r}" for k in attrs if k != "mbc"]
    findings += [
        f"{name}: unexpected entry {e!r}"
        for e in sorted(os.listdir(base))
        if e not in _DATASET_ENTRIES and not e.startswith(".")
    ]
    cases_dir = layout.cases_path(root, name)
    if not (cases_dir / "zarr.json").exists():
        return [*findings, f"{name}: no cases group"]
    case_sums: dict[str, str | None] = {}
    case_patients: dict[str, str] = {}
    entries = sorted(e for e in os.listdir(cases_dir) if e != "zarr.json")
    for case_id in progress_bar(entries, progress, desc=f"verify {name}", unit="case"):
        where = f"{name}/{case_id}"
        if not layout.CASE_ID_RE.match(case_id):
            findings.append(f"{where}: not a case id")
            continue
        problems, checksum, patient = _verify_case(cases_dir / case_id, manifest)
        findings += [f"{where}: {p}" for p in problems]
        case_sums[case_id] = checksum
        if patient:
            case_patients[case_id] = patient
    findings += [
        f"{name}/catalog: {p}" for p in _verify_catalog(root, name, case_sums, case_patients)
    ]
    return findings


def _verify_case(path: Path, manifest: Manifest) -> tuple[list[str], str | None, str | None]:
    try:
        group = zarr.open_group(path, mode="r", zarr_format=3)
    except Exception as exc:  # noqa: BLE001 - a broken case is a finding, not a crash
        return [f"cannot open: {exc}"], None, None
    attrs = dict(group.attrs)
    problems = [f"unexpected attribute {k!r}" for k in attrs if k not in ("ome", "mbc")]
    mbc = attrs.get("mbc") or {}
    problems += [f"PHI gate: {p}" for p in phi_gate.check_case_attrs(mbc, manifest)]
    ome = attrs.get("ome") or {}
    if ome.get("version") != "0.5" or not ome.get("multiscales"):
        return [*problems, "not an OME-Zarr 0.5 image"], None, mbc.get("patient")
    try:
        levels = [d["path"] for d in ome["multiscales"][0]["datasets"]]
        image = group[levels[0]][...]
        labels = None
        if layout.LABELS_GROUP in group:
            lroot = group[layout.LABELS_GROUP]
            lname = lroot.attrs["ome"]["labels"][0]
            labels = lroot[lname]["0"][...]
            if labels.shape != image.shape:
                problems.append("label image does not match the image shape")
        for level in levels:
            arr = group[level]
            if dict(arr.attrs):
                problems.append(f"array {level} carries attributes")
    except Exception as exc:  # noqa: BLE001
        return [*problems, f"unreadable arrays: {exc}"], None, mbc.get("patient")
    checksum = case_checksum(image, labels)
    if checksum != mbc.get("checksum"):
        problems.append("checksum mismatch: content changed since publish")
    if list(image.shape) != mbc.get("shape"):
        problems.append("shape attribute does not match the data")
    return problems, mbc.get("checksum"), mbc.get("patient")


def _verify_catalog(
    root: Path, name: str, sums: dict[str, str | None], patients: dict[str, str]
) -> list[str]:
    try:
        frame = read_catalog(root, name)
    except Exception as exc:  # noqa: BLE001
        return [f"unreadable: {exc}"]
    if frame is None:
        return ["missing"] if sums else []
    problems = []
    listed = dict(zip(frame["case_id"], frame["checksum"], strict=True))
    problems += [f"case {c} missing from the catalog" for c in sorted(set(sums) - set(listed))]
    problems += [f"lists {c}, which is not in the store" for c in sorted(set(listed) - set(sums))]
    problems += [
        f"checksum of {c} differs from the case"
        for c in sorted(set(sums) & set(listed))
        if sums[c] != listed[c]
    ]
    bad = set(frame["split"]) - set(SPLITS)
    if bad:
        problems.append(f"unknown split values {sorted(bad)}")
    per_patient = frame.groupby("patient")["split"].nunique()
    problems += [f"patient {p} spans {n} splits" for p, n in per_patient.items() if n > 1]
    for case_id, patient in frame[["case_id", "patient"]].itertuples(index=False):
        if case_id in patients and patients[case_id] != patient:
            problems.append(f"patient of {case_id} differs from the case")
    return problems
