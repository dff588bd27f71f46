"""Fundus cases: photographs with their labels (table row or folder names) and masks.

A photograph's labels come from the manifest's label table (by file name or path) or from
the folders it lies in (``labels.from: folder``, as REFUGE ships them); a mask named like
its photograph (``source.masks``) becomes the case's NGFF label image, its values mapped to
the manifest's classes by ``segmentation.map``. A mask that does not fit its photograph is
quarantined and the photograph published without it; nothing is resampled.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..manifests import image_key
from ..progress import progress as progress_bar
from ..sources.walk import UnreadableFile
from ..store.writer import CaseData
from . import convert
from .nifti_cases import case_patient

if TYPE_CHECKING:
    from .pipeline import SourceFile, _Dicom, _Run


def ingest_fundus(run: _Run, dicoms: list[_Dicom], photos: list[SourceFile]) -> None:
    """Photographs as cases, each with its mask (``source.masks``, paired by file name)."""
    for d in dicoms:
        run.refuse(d.file, "DICOM files are not accepted by a fundus photograph dataset")
    masks = [f for f in photos if run.manifest.photo_mask_case(f.rel) is not None]
    photos = [f for f in photos if run.manifest.photo_mask_case(f.rel) is None]
    mask_of = _pair_masks(run, masks, photos)
    for f in progress_bar(photos, run.progress, desc="fundus", unit="image"):
        found = _photo_labels(run, f)
        if found is None:
            continue
        row, patient = found
        try:
            image = convert.photo_rgb(f.read(), run.budget)
        except (convert.ConversionError, UnreadableFile) as exc:
            run.refuse(f, str(exc))
            continue
        mask_file = mask_of.get(image_key(f.rel))
        labels = _photo_mask(run, mask_file, f, image) if mask_file else None
        case = CaseData(
            case_id=convert.case_id("fu", run.manifest.name + ":" + _digest(image)),
            kind="fundus",
            image=image,
            dims=("c", "y", "x"),
            spacing=(1.0, 1.0, 1.0),
            unit=None,
            attrs={"modality": "fundus", "patient": patient, "labels": row, "photometric": "RGB"},
            labels=labels,
        )
        files = [f] if labels is None or mask_file is None else [f, mask_file]
        run.used_row(run.publish(case, files))
    for m in masks:
        if m.rel not in run.counted:
            run.refuse(m, "its photograph was not published (see the photograph's reason)")


def _pair_masks(
    run: _Run, masks: list[SourceFile], photos: list[SourceFile]
) -> dict[str, SourceFile]:
    """Masks by the file name (without extension) of the one photograph each belongs to;
    a mask without exactly one such photograph, or a second mask for one, is refused."""
    stems: dict[str, int] = defaultdict(int)
    for f in photos:
        stems[image_key(f.rel)] += 1
    paired: dict[str, SourceFile] = {}
    for m in masks:
        stem = run.manifest.photo_mask_case(m.rel)
        assert stem is not None
        if stems[stem] != 1:
            how = "no photograph" if not stems[stem] else f"{stems[stem]} photographs"
            run.refuse(m, f"{how} named {stem} in this input: the mask has no one photograph")
        elif stem in paired:
            run.refuse(m, f"a second mask for photograph {stem}")
        else:
            paired[stem] = m
    return paired


def _photo_labels(run: _Run, f: SourceFile) -> tuple[dict[str, Any], str] | None:
    """A photograph's label values and patient, from its folder names or its table row;
    None (and ``f`` refused) when there are none."""
    manifest = run.manifest
    if manifest.label_from == "folder":
        values = manifest.folder_labels(f.rel)
        if isinstance(values, str):
            run.refuse(f, values)
            return None
        return values, case_patient(manifest.name, image_key(f.rel))
    if run.labels.refused is not None:
        run.refuse(f, run.table_refusal())
        return None
    by_name = manifest.label_key == "image"
    row = run.labels.rows.get(image_key(f.rel) if by_name else f.rel)
    if row is None:
        run.refuse(f, "no row for this image in the label table")
        return None
    patient = row["__patient"]
    if manifest.label_patient is None:  # no patient ids: each image its own patient
        patient = case_patient(manifest.name, image_key(f.rel) if by_name else f.rel)
    if not patient:
        run.refuse(f, "no patient id for this image in the label table")
        return None
    return {k: v for k, v in row.items() if not k.startswith("__")}, patient


def _photo_mask(
    run: _Run, mask: SourceFile, photo: SourceFile, image: np.ndarray
) -> np.ndarray | None:
    """A photograph's mask as its (1, H, W) label image of the manifest's classes (mask
    values mapped by ``segmentation.map``); None, and the mask refused, when it does not fit."""
    try:
        values = convert.mask_grey(mask.read(), run.budget)
    except (convert.ConversionError, UnreadableFile) as exc:
        run.refuse(mask, str(exc))
        return None
    if values.shape != image.shape[1:]:
        (h, w), (ph, pw) = values.shape, image.shape[1:]
        run.refuse(
            mask,
            f"mask size {w} x {h} differs from its photograph {photo.rel} ({pw} x {ph}); "
            "not resampled",
        )
        return None
    mapping = run.manifest.mask_values or {c: c for c in run.manifest.segmentation_classes}
    unknown = sorted(set(np.unique(values).tolist()) - set(mapping))
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:8])
        run.refuse(mask, f"mask holds values ({shown}) that are not the manifest's mask values")
        return None
    lut = np.zeros(256, dtype=np.uint8)
    for value, cls in mapping.items():
        lut[value] = cls
    return lut[values][np.newaxis]


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


__all__ = ["ingest_fundus"]
