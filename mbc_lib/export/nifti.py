"""Volumes as NIfTI-1 files whose affine places them where the store says they lie."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..errors import MbcError
from ..store.reader import Store

#: Codes for the sform and qform: coordinates relative to the scanner (NIfTI's "scanner").
SCANNER = 1


def as_array(data: Any) -> np.ndarray:
    """A numpy array of a numpy array, tensor or MetaTensor (channel axis of size 1 dropped)."""
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    array = np.asarray(data)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise MbcError(f"a NIfTI volume needs three axes (z, y, x), got shape {array.shape}")
    return array


def write_nifti(
    path: str | os.PathLike[str],
    data: Any,
    affine: np.ndarray,
    *,
    labels: bool = False,
    canonical: bool = True,
    description: str = "",
) -> Path:
    """Write ``data`` (3D; ``affine``: index to RAS mm) to ``path`` (``.nii`` or ``.nii.gz``).

    ``canonical`` reorders and flips the axes to the closest RAS order (x, y, z), as most
    viewers and nnU-Net expect; the voxels stay where they are in the patient. ``labels``
    (class values 0-255) are written as ``uint8``; images as they come (float64 as float32).
    """
    path = Path(path).expanduser()
    if not path.name.endswith((".nii", ".nii.gz")):
        raise MbcError(f"a NIfTI file name ends in .nii or .nii.gz, got {path.name!r}")
    array = as_array(data)
    if labels:
        if array.dtype.kind not in "biu" or (
            array.size and not 0 <= array.min() <= array.max() <= 255
        ):
            raise MbcError("labels must be integer class values from 0 to 255")
        array = array.astype(np.uint8)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(np.ascontiguousarray(array), affine)
    if canonical:
        image = nib.as_closest_canonical(image)
    image.header.set_xyzt_units("mm")
    image.set_sform(image.affine, code=SCANNER)
    image.set_qform(image.affine, code=SCANNER)
    if description:
        image.header["descrip"] = description[:79].encode("ascii", "replace")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def write_case_nifti(
    store: Store,
    dataset: str,
    case_id: str,
    path: str | os.PathLike[str],
    data: Any = None,
    *,
    part: str = "image",
) -> Path:
    """Write a case's image, its labels (``part="labels"``) or ``data`` on its grid as NIfTI.

    ``data``: e.g. a model's prediction, written as labels with ``part="labels"``.
    """
    if data is None:
        if part == "image":
            data = store.image_array(dataset, case_id)[...]
        elif part == "labels":
            labels = store.labels_array(dataset, case_id)
            if labels is None:
                raise MbcError(f"case {case_id!r} has no labels")
            data = labels[...]
        else:
            raise MbcError(f"part must be image or labels, got {part!r}")
    shape = tuple(store.image_array(dataset, case_id).shape)
    array = as_array(data)
    if array.shape != shape:
        raise MbcError(f"data of shape {array.shape} is not on case {case_id}'s grid {shape}")
    affine = store.affine(dataset, case_id)
    return write_nifti(path, array, affine, labels=part == "labels", description=case_id)


__all__ = ["write_case_nifti", "write_nifti"]
