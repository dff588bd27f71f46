"""Results that leave the platform in formats other tools read.

* :mod:`.nifti`: a volume (image, prediction) as NIfTI with the store's geometry, aligned in
  3D Slicer, ITK-SNAP and nibabel;
* :mod:`.dicom_seg`: a label volume as a DICOM Segmentation (highdicom) that refers to the
  store's pseudonymous CT series, slice by slice;
* :mod:`.cohort`: a catalog selection as an nnU-Net raw dataset and a MONAI Decathlon-style
  datalist.

Everything is written under a folder the caller names (the researcher's home); the store is
only read.
"""

from __future__ import annotations

from .cohort import export_cohort
from .dicom_seg import write_dicom_seg
from .nifti import write_case_nifti, write_nifti

__all__ = ["export_cohort", "write_case_nifti", "write_dicom_seg", "write_nifti"]
