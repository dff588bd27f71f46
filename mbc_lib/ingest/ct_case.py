"""One CT case as the store keeps it, whatever it came from (a DICOM series, a NIfTI volume)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..manifests import Manifest
from ..store.schema import ACQUISITION, label_stats
from ..store.writer import CaseData
from . import convert


def ct_case(
    manifest: Manifest,
    *,
    source_key: str,
    image: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float] | None,
    direction: Sequence[Sequence[float]] | None,
    patient: str,
    row: dict[str, Any] | None,
    labels: np.ndarray | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    sop_instance_uids: Sequence[str] | None = None,
    sop_class: str | None = None,
    acquisition: dict[str, Any] | None = None,
) -> CaseData:
    """The :class:`CaseData` of a CT volume in HU (``z, y, x``, mm). ``source_key`` names the
    source for the content-derived case id (a series UID, ``nifti:<dataset>:<case>``);
    ``row``: its label-table row (None: no row); ``labels``: its mask on the same grid;
    ``sop_instance_uids``: the source slice of each z index (DICOM-SEG export refers to them)."""
    attrs: dict[str, Any] = {
        "modality": "CT",
        "patient": patient,
        "study_uid": study_uid or None,
        "series_uid": series_uid or None,
        "sop_class": sop_class,
        "labels": {k: (row or {}).get(k) for k in manifest.label_columns},
        "value_units": "HU",
        "acquisition": {k: (acquisition or {}).get(k) for k in ACQUISITION},
    }
    if frame_of_reference_uid:
        attrs["frame_of_reference_uid"] = frame_of_reference_uid
    if sop_instance_uids is not None:
        if len(sop_instance_uids) != image.shape[0]:
            raise ValueError("one SOP Instance UID per slice")
        attrs["sop_instance_uids"] = [str(u) for u in sop_instance_uids]
    if labels is not None:
        attrs["label_stats"] = label_stats(labels, spacing, manifest)
    return CaseData(
        case_id=convert.case_id("ct", source_key),
        kind="ct-volume",
        image=image,
        dims=("z", "y", "x"),
        spacing=tuple(spacing),
        unit="millimeter",
        attrs=attrs,
        origin=origin,
        direction=direction,
        labels=labels,
    )


__all__ = ["ct_case"]
