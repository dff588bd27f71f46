"""What a case may hold, in one place: its ``mbc`` attributes and the catalog's columns.

The writer writes these attributes, the catalog turns them into columns, the PHI gate
refuses anything else and ``mbc verify`` checks the catalog against them. Columns that
depend on the dataset (label columns, mask volumes) come from its manifest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..manifests import Manifest

#: Every ``mbc`` attribute a published case may carry, and what it holds.
CASE_ATTRS: dict[str, str] = {
    "case_id": "content-derived id (ct-/fu-/dc- and 16 hex digits)",
    "kind": "ct-volume, fundus or generic",
    "dataset": "the dataset's manifest name",
    "modality": "DICOM Modality, or fundus",
    "patient": "keyed patient pseudonym (PSN-...)",
    "study_uid": "re-derived Study Instance UID",
    "series_uid": "re-derived Series Instance UID",
    "frame_of_reference_uid": "re-derived Frame of Reference UID (DICOM sources)",
    "sop_instance_uids": "re-derived SOP Instance UID of the source slice at each z index",
    "labels": "label-table values, by manifest column",
    "label_stats": "volumes computed from the mask, by manifest volume name",
    "shape": "full-resolution array shape",
    "dtype": "array dtype",
    "dims": "NGFF axis names",
    "spacing": "voxel size per axis (mm where unit is millimeter)",
    "unit": "spatial unit, or null when the pixel size is unknown",
    "origin": "LPS position (mm) of the first voxel",
    "direction": "LPS unit vectors of the spatial axes",
    "frame": "LPS when direction is known",
    "checksum": "sha256 over the full-resolution image and label arrays",
    "n_source_files": "files the case was built from",
    "photometric": "colour model of a photograph",
    "transfer_syntax": "transfer syntax of the source",
    "sop_class": "SOP Class UID of the source",
    "value_units": "HU for CT",
    "ingested_at": "UTC time of publication",
    "acquisition": "cohort fields of the source header, by ACQUISITION name",
}
CASE_ATTR_KEYS = frozenset(CASE_ATTRS)

#: Cohort fields a case keeps from its (de-identified) header, as catalog columns, and the
#: DICOM attribute each is read from. Age and sex are present only where the dataset's
#: de-identification profile retains patient characteristics, in the header's own form
#: (age as DICOM AS: ``045Y``; sex M, F or O).
ACQUISITION: dict[str, str] = {
    "age": "PatientAge",
    "sex": "PatientSex",
    "manufacturer": "Manufacturer",
    "model": "ManufacturerModelName",
    "kernel": "ConvolutionKernel",
    "slice_thickness": "SliceThickness",
    "pixel_spacing": "PixelSpacing",
}
_AGE_RE = re.compile(r"^\d{3}[DWMY]$")  # DICOM AS: 045Y
_SEXES = frozenset({"M", "F", "O"})
_SHORT_TEXT_RE = re.compile(r"^[\x20-\x7e]{1,64}$")  # printable ASCII, as an LO holds


def acquisition_value_ok(name: str, value: Any) -> bool:
    """Whether ``value`` is what acquisition field ``name`` may hold: an age in DICOM AS
    form, a sex M/F/O, equipment strings of printable ASCII (at most 64 characters), slice
    thickness a positive finite mm, pixel spacing two of them."""
    if name == "age":
        return isinstance(value, str) and bool(_AGE_RE.match(value))
    if name == "sex":
        return value in _SEXES
    if name == "slice_thickness":
        return _positive_mm(value)
    if name == "pixel_spacing":
        return isinstance(value, list) and len(value) == 2 and all(map(_positive_mm, value))
    return name in ACQUISITION and isinstance(value, str) and bool(_SHORT_TEXT_RE.match(value))


def _positive_mm(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


#: Catalog columns every dataset has, in order.
BASE_COLUMNS: tuple[str, ...] = (
    "case_id",
    "patient",
    "split",
    "kind",
    "modality",
    "shape",
    "spacing",
    "unit",
    "study_uid",
    "series_uid",
    "n_source_files",
    "checksum",
)


def catalog_columns(manifest: Manifest) -> tuple[str, ...]:
    """The catalog's columns for ``manifest``: base, acquisition, label-table and mask-volume
    columns."""
    return (*BASE_COLUMNS, *ACQUISITION, *manifest.label_columns, *manifest.label_stat_names)


def label_stats(mask: np.ndarray, spacing: Sequence[float], manifest: Manifest) -> dict[str, float]:
    """The manifest's mask volumes (ml) and involvement (% of the region) for one mask."""
    ml_per_voxel = float(np.prod(spacing)) / 1000.0
    top = max(manifest.segmentation_classes, default=0)
    counts = np.bincount(mask.ravel(), minlength=top + 1)

    def voxels(values: Sequence[int]) -> int:
        return int(sum(int(counts[v]) for v in values if v < len(counts)))

    stats = {
        f"{name}_ml": round(voxels(v) * ml_per_voxel, 2) for name, v in manifest.volumes.items()
    }
    if manifest.involvement:
        lesions, region = manifest.involvement
        total = voxels(region)
        stats["involvement_pct"] = round(100.0 * voxels(lesions) / total, 2) if total else 0.0
    return stats


__all__ = [
    "ACQUISITION",
    "BASE_COLUMNS",
    "CASE_ATTRS",
    "CASE_ATTR_KEYS",
    "acquisition_value_ok",
    "catalog_columns",
    "label_stats",
]
