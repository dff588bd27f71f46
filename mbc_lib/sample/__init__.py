"""The sample input tree behind ``mbc sample-data``: identified data as a society receives it.

``OUT/fundus-glaucoma`` (photographs with camera metadata, labels.csv), ``OUT/ct-covid`` (CT series
with identifying headers, masks, labels.csv) and ``OUT/dicom-real`` (pydicom's real test files).
The tree is written into a hidden sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import MbcError
from .ct import write_ct
from .fundus import write_fundus
from .identities import (
    CT_DATASET,
    FUNDUS_DATASET,
    SampleIdentity,
    patient_identities,
    phi_strings,
    sample_identities,
)
from .real_dicom import copy_real_dicom

REAL_DATASET = "dicom-real"
MAX_FUNDUS = 10_000
MAX_CT = 1_000
CT_SIZES = (32, 512)


def _check(out: Path, seed: int, n_fundus: int, n_ct: int, ct_size: int) -> None:
    if seed < 0:
        raise MbcError(f"--seed must be >= 0, got {seed}")
    if not 0 <= n_fundus <= MAX_FUNDUS:
        raise MbcError(f"--n-fundus must be between 0 and {MAX_FUNDUS}, got {n_fundus}")
    if not 0 <= n_ct <= MAX_CT:
        raise MbcError(f"--n-ct must be between 0 and {MAX_CT}, got {n_ct}")
    if not CT_SIZES[0] <= ct_size <= CT_SIZES[1]:
        raise MbcError(f"--ct-size must be between {CT_SIZES[0]} and {CT_SIZES[1]}, got {ct_size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MbcError(f"{out} exists and is not empty")


def write_sample_tree(
    out: Path, seed: int = 0, n_fundus: int = 40, n_ct: int = 6, ct_size: int = 128
) -> dict[str, int]:
    """Write the sample tree to ``out``; return the number of image files per top folder."""
    out = Path(out)
    _check(out, seed, n_fundus, n_ct, ct_size)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise MbcError(f"cannot create {out}: {exc.strerror or exc}") from exc
    try:
        people = sample_identities(seed, n_fundus, n_ct)
        fundus = write_fundus(staging / FUNDUS_DATASET, seed, n_fundus, people[FUNDUS_DATASET])
        ct = write_ct(staging / CT_DATASET, seed, ct_size, people[CT_DATASET])
        real = copy_real_dicom(staging / REAL_DATASET)
        os.replace(staging, out)
    except OSError as exc:
        raise MbcError(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        FUNDUS_DATASET: len(fundus),
        CT_DATASET: sum(case.n_files for case in ct),
        REAL_DATASET: len(real.copied),
    }


__all__ = [
    "CT_DATASET",
    "FUNDUS_DATASET",
    "REAL_DATASET",
    "SampleIdentity",
    "patient_identities",
    "phi_strings",
    "sample_identities",
    "write_sample_tree",
]
