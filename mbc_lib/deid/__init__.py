"""Edge de-identification: DICOM (PS3.15 Annex E), JPEG/PNG metadata, label tables, masks."""

from .dicom import DicomRefused, deid_dicom_file, deidentify_dataset, refusal_reason
from .images import MalformedImageError, strip_jpeg, strip_png
from .keys import DeidKey
from .report import REPORT_JSON, REPORT_TEXT, ActionCounts, DeidReport, FileResult
from .tables import TableRefused, deid_labels, deid_mask
from .tree import deid_tree

__all__ = [
    "REPORT_JSON",
    "REPORT_TEXT",
    "ActionCounts",
    "DeidKey",
    "DeidReport",
    "DicomRefused",
    "FileResult",
    "MalformedImageError",
    "TableRefused",
    "deid_dicom_file",
    "deid_labels",
    "deid_mask",
    "deid_tree",
    "deidentify_dataset",
    "refusal_reason",
    "strip_jpeg",
    "strip_png",
]
