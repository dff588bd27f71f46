"""Fundus photographs as a torch Dataset of MONAI dictionary samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import MbcError
from .datasets import StoreDataset, StoreLike, Transform


class FundusDataset(StoreDataset):
    """One sample per photograph of the selected cases.

    ``{"image": float32 (3, H, W) in [0, 1], "label": tensor, "case_id": str, "patient": str}``,
    and ``"mask"``: int64 (1, H, W) of the manifest's segmentation classes where the case has
    a label image (REFUGE's optic disc and cup).
    ``label`` names a catalog label column (``None``: no label): int columns give int64
    scalars, float columns float32, str columns with listed values the value's index in
    ``.classes``. Sizes vary between photographs: resize in ``transform`` (e.g. MONAI
    ``Resized``) before batching.
    """

    modality = "fundus"

    def __init__(
        self,
        store: StoreLike = None,
        dataset: str = "fundus-glaucoma",
        split: str | None = None,
        query: str | None = None,
        label: str | None = "glaucoma",
        transform: Transform | None = None,
        cache_bytes: int = 0,
    ) -> None:
        super().__init__(store, dataset, split, query, transform, cache_bytes)
        self.label = label
        self.classes: tuple[Any, ...] | None = None
        self._labels = self._label_values(label) if label is not None else None
        self._case_ids = [str(c) for c in self.catalog["case_id"]]
        self._patients = [str(p) for p in self.catalog["patient"]]

    def _label_values(self, label: str) -> np.ndarray:
        """One label per selected case: int64 or float32 (numpy: cheap to pickle to workers)."""
        columns = self.manifest.label_columns
        if label not in columns:
            raise MbcError(
                f"dataset {self.dataset!r} has no label {label!r} "
                f"(labels: {', '.join(columns) or 'none'})"
            )
        values = self.catalog[label]
        unlabelled = int(values.isna().sum())
        if unlabelled:
            raise MbcError(
                f"{unlabelled} selected cases have no {label!r} label; "
                f"select labelled ones with query='{label}.notna()'"
            )
        column = columns[label]
        if column.dtype == "int":
            return values.to_numpy(dtype=np.int64)
        if column.dtype == "float":
            return values.to_numpy(dtype=np.float32)
        if column.values is None:
            raise MbcError(f"label {label!r} is free text; it cannot be a training target")
        self.classes = tuple(column.values)
        return np.array([self.classes.index(v) for v in values], dtype=np.int64)

    def __getitem__(self, index: int) -> Any:
        case_id = self._case_ids[index]
        region = tuple(slice(0, n) for n in self._image(case_id).shape)
        pixels = self._read(case_id, "image", region)
        image = torch.from_numpy(np.multiply(pixels, np.float32(1 / 255), dtype=np.float32))
        sample = {"image": image, "case_id": case_id, "patient": self._patients[index]}
        mask = self._read(case_id, "labels", (slice(0, 1), *region[1:]))
        if mask is not None:
            sample["mask"] = torch.from_numpy(mask.astype(np.int64))
        if self._labels is not None:
            sample["label"] = torch.tensor(self._labels[index])
        return self._finish(sample)
