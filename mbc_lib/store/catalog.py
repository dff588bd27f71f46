"""The catalog table of a dataset: one row per case, with a patient-level split."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_path
from ..checkpoints import checkpoint
from ..manifests import Manifest
from . import layout
from .schema import ACQUISITION, catalog_columns

SPLITS = ("train", "val", "test")


def read_case_attrs(root: Path, dataset: str) -> list[dict[str, Any]]:
    """The ``mbc`` attributes of every published case (read straight from zarr.json)."""
    base = layout.cases_path(root, dataset)
    out = []
    if not base.is_dir():
        return out
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        meta = Path(entry.path) / "zarr.json"
        if entry.is_dir() and meta.exists():
            with open(meta) as fh:
                out.append(json.load(fh).get("attributes", {}).get("mbc", {}))
    return out


def _patient_rank(patient: str) -> str:
    return hashlib.sha256(patient.encode()).hexdigest()


def assign_splits(
    patients: list[str],
    fractions: dict[str, float],
    previous: dict[str, str] | None = None,
    strata: dict[str, str] | None = None,
) -> dict[str, str]:
    """Patient -> split, stratified by ``strata`` (patient -> label stratum).

    Every case of a patient lands in the same split, so no patient spans two splits, and a
    patient never moves when the store grows (earlier assignments are kept). Within each
    stratum new patients fill the largest deficit; with ``strata``, a stratum with at least one
    patient per split reaches every split first, so each split holds every class the dataset
    has enough patients of (without, the split is exactly the unstratified one).
    """
    previous = {p: s for p, s in (previous or {}).items() if s in SPLITS}
    strata = strata or {}
    result = {p: previous[p] for p in patients if p in previous}
    by_stratum: dict[str, list[str]] = {}
    for patient in sorted(set(patients), key=_patient_rank):
        by_stratum.setdefault(strata.get(patient, ""), []).append(patient)
    wanted = [s for s in SPLITS if fractions[s] > 0]
    for members in by_stratum.values():
        counts = {s: sum(1 for p in members if result.get(p) == s) for s in SPLITS}
        spread = bool(strata) and len(members) >= len(wanted)
        for patient in (p for p in members if p not in result):
            total = sum(counts.values()) + 1
            split = max(
                SPLITS,
                key=lambda s: (
                    spread and s in wanted and counts[s] == 0,
                    fractions[s] * total - counts[s],
                    -SPLITS.index(s),
                ),
            )
            result[patient] = split
            counts[split] += 1
    return result


def patient_strata(cases: list[dict[str, Any]], column: str | None) -> dict[str, str]:
    """Patient -> stratum: the rarest value of ``column`` (fewest patients) among the
    patient's cases, so a patient with one glaucomatous eye counts with the glaucoma patients
    and the rare class is the one spread over every split."""
    if column is None:
        return {}
    values: dict[str, set[str]] = {}
    for case in cases:
        labels = case.get("labels") if isinstance(case.get("labels"), dict) else {}
        value = labels.get(column)
        values.setdefault(str(case.get("patient")), set()).add("" if value is None else str(value))
    patients_with: dict[str, int] = {}
    for held in values.values():
        for value in held:
            patients_with[value] = patients_with.get(value, 0) + 1
    return {p: min(held, key=lambda v: (patients_with[v], v)) for p, held in values.items()}


def catalog_row(attrs: dict[str, Any], manifest: Manifest) -> dict[str, Any]:
    """The catalog values (all but the split) that a case's ``mbc`` attributes give.

    Tolerant of damaged attributes (``mbc verify`` compares rows against it).
    """
    labels = attrs.get("labels") if isinstance(attrs.get("labels"), dict) else {}
    stats = attrs.get("label_stats") if isinstance(attrs.get("label_stats"), dict) else {}
    row = {
        "case_id": attrs.get("case_id"),
        "patient": attrs.get("patient"),
        "kind": attrs.get("kind"),
        "modality": attrs.get("modality"),
        "shape": _joined(attrs.get("shape"), "{}"),
        "spacing": _joined(attrs.get("spacing"), "{:.4g}"),
        "unit": attrs.get("unit"),
        "study_uid": attrs.get("study_uid"),
        "series_uid": attrs.get("series_uid"),
        "n_source_files": attrs.get("n_source_files"),
        "checksum": attrs.get("checksum"),
    }
    acquisition = attrs.get("acquisition") if isinstance(attrs.get("acquisition"), dict) else {}
    for name in ACQUISITION:
        value = acquisition.get(name)
        row[name] = _joined(value, "{:.4g}") if name == "pixel_spacing" and value else value
    row.update({name: labels.get(name) for name in manifest.label_columns})
    row.update({name: stats.get(name) for name in manifest.label_stat_names})
    return row


def _joined(values: Any, fmt: str) -> str | None:
    try:
        return "x".join(fmt.format(v) for v in values)
    except (TypeError, ValueError):
        return None


def build_catalog(
    root: Path, manifest: Manifest, previous: pd.DataFrame | None = None
) -> pd.DataFrame:
    cases = read_case_attrs(root, manifest.name)
    prev_splits: dict[str, str] = {}
    if previous is not None and len(previous):
        prev_splits = dict(zip(previous["patient"], previous["split"], strict=True))
    strata = patient_strata(cases, manifest.split_stratify)
    splits = assign_splits([c["patient"] for c in cases], manifest.split, prev_splits, strata)
    rows = [{**catalog_row(c, manifest), "split": splits[c["patient"]]} for c in cases]
    return pd.DataFrame(rows, columns=list(catalog_columns(manifest)))


def read_catalog(root: Path, dataset: str) -> pd.DataFrame | None:
    path = layout.catalog_path(root, dataset)
    return pd.read_parquet(path) if path.exists() else None


def write_catalog(root: Path, manifest: Manifest) -> pd.DataFrame:
    """Rebuild the catalog from the published cases and replace it atomically."""
    frame = build_catalog(root, manifest, read_catalog(root, manifest.name))
    with atomic_path(layout.catalog_path(root, manifest.name), mode=0o444) as tmp:
        frame.to_parquet(tmp, index=False)
        checkpoint("catalog-staged")
    return frame
