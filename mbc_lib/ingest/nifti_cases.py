"""CT cases from NIfTI volumes (COVID-19-20, MosMedData, nnU-Net raw, a site's own export).

The manifest's ``source`` layout says where volumes and masks lie (path patterns with a
``{case}`` key); a mask belongs to the volume with the same key and must lie on its voxel
grid (same shape, same affine), else it is quarantined with a reason that names the
geometry and the volume is published without it. Nothing is resampled: the store keeps the
file's voxels, in the store's axis order, with the file's geometry.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from ..sources import nifti, nnunet
from ..sources.walk import UnreadableFile
from . import convert
from .ct_case import ct_case

if TYPE_CHECKING:
    from .pipeline import SourceFile, _Run


def case_patient(dataset: str, case: str) -> str:
    """The pseudonym of a case whose dataset has no patient ids: each volume is its own
    patient. Derived from the (already public) case key, so a re-run gives the same one."""
    return "PSN-" + hashlib.sha256(f"{dataset}:case:{case}".encode()).hexdigest()[:16]


def _volume(f: SourceFile, budget: int) -> nifti.NiftiVolume:
    return nifti.read_volume(nifti.parse(f.read(), budget))


def _check_classes(run: _Run, f: SourceFile) -> str | None:
    """Why an nnU-Net dataset.json's labels disagree with the manifest's classes, or None:
    values are stored as the dataset defines them, so both must say the same."""
    try:
        found = nnunet.label_classes(nnunet.parse(f.read()))
    except (nnunet.DatasetJsonError, UnreadableFile) as exc:
        return str(exc)
    wanted = run.manifest.segmentation_classes
    differ = {
        v: (found.get(v), wanted.get(v))
        for v in set(found) | set(wanted)
        if (found.get(v) or "").lower() != (wanted.get(v) or "").lower()
    }
    if differ:
        detail = "; ".join(f"{v}: {a!r} vs {b!r}" for v, (a, b) in sorted(differ.items()))
        return f"dataset.json labels disagree with the manifest's classes ({detail})"
    return None


def ingest_nifti_ct(
    run: _Run, files: list[SourceFile], class_files: list[SourceFile] | None = None
) -> None:
    """Pair volumes with masks by case key, convert and publish each case. ``class_files``:
    the dataset's nnU-Net dataset.json, whose labels must be the manifest's classes."""
    layout = run.manifest.source
    masks_refused = None
    for f in class_files or []:
        if (problem := _check_classes(run, f)) is not None:
            run.refuse(f, problem)
            masks_refused = f"its dataset.json was refused ({problem})"
    if layout is None:
        for f in files:
            run.refuse(
                f,
                f"NIfTI file, but the {run.manifest.name} manifest has no source layout "
                "(source.volumes) to tell volumes from masks",
            )
        return
    volumes: dict[str, SourceFile] = {}
    masks: dict[str, SourceFile] = {}
    for f in files:
        rel = f.rel  # the source folder is the dataset's folder
        if (case := layout.mask_case(rel)) is not None:
            masks[case] = f
        elif (case := layout.volume_case(rel)) is not None:
            if case in volumes:
                run.refuse(f, "a second volume for one case key")
                continue
            volumes[case] = f
        else:
            run.refuse(f, "NIfTI file outside the manifest's layout (source.volumes, masks)")
    for case, f in sorted(masks.items()):
        if case not in volumes:
            run.refuse(f, "mask without a volume of the same case key")
        elif masks_refused is not None:
            run.refuse(f, masks_refused)
    if masks_refused is not None:
        masks = {}
    for case, f in sorted(volumes.items()):
        _publish_case(run, case, f, masks.get(case))
    for f in class_files or []:  # metadata of the cases: counted with them
        if f.rel not in run.counted:
            run.counted.add(f.rel)
            run.result.add(f.rel, "published" if run.new_case else "duplicate")


def _publish_case(run: _Run, case: str, f: SourceFile, mask_file: SourceFile | None) -> None:
    manifest = run.manifest
    if run.labels.refused is not None:
        run.refuse(f, f"volume held back: its label table {run.labels.file.rel} was refused")  # type: ignore[union-attr]
        if mask_file is not None:
            run.refuse(mask_file, "its volume was held back")
        return
    try:
        vol = _volume(f, run.budget)
        image = convert.in_int16(np.asarray(vol.image, dtype=np.float64))
    except (nifti.MalformedNifti, convert.ConversionError, UnreadableFile) as exc:
        run.refuse(f, str(exc))
        if mask_file is not None:
            run.refuse(mask_file, "its volume cannot be converted")
        return
    except Exception as exc:  # noqa: BLE001 - e.g. MemoryError: refuse the case, go on
        run.refuse(f, f"volume cannot be converted: {exc.__class__.__name__}")
        return
    mask = _mask(run, mask_file, vol) if mask_file is not None else None
    files = [f] + ([mask_file] if mask is not None and mask_file is not None else [])
    row = run.labels.rows.get(case) if manifest.label_key == "case" else None
    patient = (row or {}).get("__patient") or case_patient(manifest.name, case)
    data = ct_case(
        manifest,
        source_key=f"nifti:{manifest.name}:{case}",
        image=image,
        spacing=vol.spacing,
        origin=vol.origin,
        direction=vol.direction,
        patient=patient,
        row=row,
        labels=mask,
        acquisition={"pixel_spacing": [float(v) for v in vol.spacing[1:]]},
    )
    outcome = run.publish(data, files)
    if row is not None:
        run.used_row(outcome)


def _mask(run: _Run, f: SourceFile, vol: nifti.NiftiVolume) -> np.ndarray | None:
    try:
        mask = _volume(f, run.budget)
    except (nifti.MalformedNifti, UnreadableFile) as exc:
        run.refuse(f, str(exc))
        return None
    problem = nifti.same_grid(vol, mask)
    if problem is not None:
        run.refuse(f, f"mask does not lie on its volume's grid: {problem}; not resampled")
        return None
    values = mask.image
    if values.dtype.kind == "f" and not (
        np.all(np.isfinite(values)) and np.all(values == np.round(values))
    ):
        run.refuse(f, "mask holds values that are not whole numbers")
        return None
    found = {int(v) for v in np.unique(values)}
    classes = set(run.manifest.segmentation_classes)
    if not found <= classes:
        run.refuse(f, f"mask holds values {sorted(found - classes)} outside the manifest's classes")
        return None
    return values.astype(np.uint8)


__all__ = ["case_patient", "ingest_nifti_ct"]
