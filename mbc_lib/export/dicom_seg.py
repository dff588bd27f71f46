"""A label volume as a DICOM Segmentation that refers to the store's pseudonymous CT series.

The store keeps, per case, the re-derived Study, Series, Frame of Reference and per-slice SOP
Instance UIDs and the geometry of every slice, which is all a Segmentation needs of its source
images: highdicom builds it from header-only stand-ins of those slices. A PACS that holds the
same pseudonymous series (what the society uploaded) shows the SEG over it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .. import __version__
from ..errors import MbcError
from ..store.reader import Store
from .nifti import as_array

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

#: Segmented property (category, type) by lower-cased class name. A class without an exact
#: concept gets its nearest superordinate one; its label says what it is.
_ANATOMY, _ABNORMAL = codes.SCT.AnatomicalStructure, codes.SCT.MorphologicallyAbnormalStructure
PROPERTY_CODES: dict[str, tuple[Code, Code]] = {
    "normal lung": (_ANATOMY, codes.SCT.Lung),
    "lung": (_ANATOMY, codes.SCT.Lung),
    "ground-glass opacity": (_ABNORMAL, codes.DCM.GroundGlassOpacity),
    "ground glass opacity": (_ABNORMAL, codes.DCM.GroundGlassOpacity),
    "consolidation": (_ABNORMAL, codes.DCM.Opacity),
}
_LESION = Code("52988006", "SCT", "Lesion")
_FALLBACK = (_ABNORMAL, _LESION)


def source_images(store: Store, dataset: str, case_id: str) -> list[Dataset]:
    """Header-only stand-ins of a case's CT slices, in z order, as its store attributes say."""
    attrs = store.case_attrs(dataset, case_id)
    uids = attrs.get("sop_instance_uids")
    missing = [k for k in ("study_uid", "series_uid", "frame_of_reference_uid") if not attrs.get(k)]
    if not uids or missing:
        what = ", ".join(missing or ["sop_instance_uids"])
        raise MbcError(
            f"case {case_id!r} has no DICOM source references ({what}): it did not come from "
            "a DICOM series; export it as NIfTI instead"
        )
    shape = attrs["shape"]
    lps = store.affine(dataset, case_id, space="LPS")
    row_dir = lps[:3, 2] / np.linalg.norm(lps[:3, 2])  # along a row: the x axis
    col_dir = lps[:3, 1] / np.linalg.norm(lps[:3, 1])  # down a column: the y axis
    spacing = [float(s) for s in attrs["spacing"]]
    sex = (attrs.get("acquisition") or {}).get("sex") or ""
    slices = []
    for z, uid in enumerate(uids):
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = uid
        ds.StudyInstanceUID = attrs["study_uid"]
        ds.SeriesInstanceUID = attrs["series_uid"]
        ds.FrameOfReferenceUID = attrs["frame_of_reference_uid"]
        ds.Modality = "CT"
        ds.PatientID = ds.PatientName = attrs["patient"]
        ds.PatientBirthDate = ""
        ds.PatientSex = sex
        ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ds.StudyID = ""
        ds.ReferringPhysicianName = ""
        ds.InstanceNumber = z + 1
        ds.Rows, ds.Columns = int(shape[1]), int(shape[2])
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(v) for v in lps[:3, 3] + lps[:3, 0] * z]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        slices.append(ds)
    return slices


def segment_descriptions(
    classes: Mapping[int, str], algorithm: str, version: str
) -> list[hd.seg.SegmentDescription]:
    """One description per class (background excluded), numbered 1.. in class order."""
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm, family=codes.DCM.ArtificialIntelligence, version=version
    )
    out = []
    for number, (_, name) in enumerate(sorted(classes.items()), start=1):
        category, kind = PROPERTY_CODES.get(name.strip().lower(), _FALLBACK)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identification,
            )
        )
    return out


def write_dicom_seg(
    store: Store,
    dataset: str,
    case_id: str,
    labels: Any,
    path: str | os.PathLike[str],
    *,
    algorithm: str = "mbc model",
    algorithm_version: str = "1",
    series_description: str = "mbc segmentation",
) -> Path:
    """Write ``labels`` (the case's grid, values the manifest's classes) as a DICOM SEG.

    Binary segments, one per manifest class other than background, referring to the case's
    pseudonymous source slices. Returns the written path.
    """
    classes = {
        int(v): spec["name"]
        for v, spec in (store.manifest(dataset).segmentation or {}).get("classes", {}).items()
        if int(v) != 0
    }
    if not classes:
        raise MbcError(f"dataset {dataset!r} declares no segmentation classes")
    sources = source_images(store, dataset, case_id)
    array = as_array(labels)
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if array.shape != shape:
        raise MbcError(f"labels of shape {array.shape} are not on case {case_id}'s grid {shape}")
    unknown = sorted(set(np.unique(array).tolist()) - set(classes) - {0})
    if unknown:
        raise MbcError(f"label values {unknown} are not classes of {dataset!r} ({classes})")
    numbered = np.zeros(shape, dtype=np.uint8)  # segment numbers 1.. in class order
    for number, value in enumerate(sorted(classes), start=1):
        numbered[array == value] = number
    with warnings.catch_warnings():  # the pseudonym is a one-component name, as in its series
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        seg = _segmentation(sources, numbered, classes, algorithm, algorithm_version)
    seg.SeriesDescription = series_description[:64]
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    return out


def _segmentation(
    sources: list[Dataset],
    numbered: np.ndarray,
    classes: Mapping[int, str],
    algorithm: str,
    algorithm_version: str,
) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=numbered,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(classes, algorithm, algorithm_version),
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="mbc",
        manufacturer_model_name="mbc_lib",
        software_versions=__version__,
        device_serial_number="0",
        omit_empty_frames=True,
    )


__all__ = ["PROPERTY_CODES", "source_images", "write_dicom_seg"]
