"""CT volumes as torch Datasets of MONAI dictionary samples: axial slices, random 3D patches and
whole volumes, as ``MetaTensor``s that know where they lie in the patient.

Every image and label carries the affine of its region (index to RAS mm, from the store's NGFF
scale and translation and its direction cosines), so MONAI's spacing- and orientation-aware
transforms (``Spacingd``, ``Orientationd``) and ``SaveImage`` work on them as on a NIfTI file.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import ScaleIntensityRange, SpatialPad

from ..errors import MbcError
from ..store.geometry import shifted
from .datasets import StoreDataset, StoreLike, Transform, parse_shape
from .sampling import patch_rng, patch_start

#: Hounsfield units of air: what a patch is padded with where the volume is smaller.
AIR_HU = -1024


class _CTDataset(StoreDataset):
    """The CT volumes (``ct-volume`` cases) of the selection, in HU or scaled over a window."""

    modality = "ct"

    def __init__(
        self,
        store: StoreLike = None,
        dataset: str = "ct-covid",
        split: str | None = None,
        query: str | None = None,
        transform: Transform | None = None,
        cache_bytes: int = 0,
        hu_window: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(store, dataset, split, query, transform, cache_bytes)
        self.catalog = self.catalog[self.catalog["kind"] == "ct-volume"].reset_index(drop=True)
        if hu_window is not None:
            lo, hi = (float(v) for v in hu_window)
            if not hi > lo:
                raise MbcError(f"hu_window must be (low, high) with high > low, got {hu_window}")
            hu_window = (lo, hi)
        self.hu_window = hu_window
        self._window = (
            None
            if hu_window is None
            else ScaleIntensityRange(hu_window[0], hu_window[1], 0.0, 1.0, clip=True)
        )
        self.shapes = [parse_shape(s) for s in self.catalog["shape"]]
        self._case_ids = [str(c) for c in self.catalog["case_id"]]
        self._affines: dict[str, np.ndarray] = {}

    def affine(self, case_id: str) -> np.ndarray:
        """The RAS affine of the case's full-resolution ``(z, y, x)`` array."""
        if case_id not in self._affines:
            self._affines[case_id] = self.store.affine(self.dataset, case_id)
        return self._affines[case_id]

    def _meta_tensor(self, data: np.ndarray, case_id: str, start: Sequence[int]) -> MetaTensor:
        """``data`` (channel first) with the affine of the region that begins at ``start``."""
        affine = shifted(self.affine(case_id), start)
        meta = {
            "filename_or_obj": case_id,
            "original_affine": affine,
            "spatial_shape": np.asarray(data.shape[1:]),
            "original_channel_dim": 0,
            "space": "RAS",
        }
        return MetaTensor(torch.from_numpy(data), affine=torch.from_numpy(affine), meta=meta)

    def _image_tensor(self, hu: np.ndarray, case_id: str, start: Sequence[int]) -> MetaTensor:
        image = self._meta_tensor(hu.astype(np.float32)[np.newaxis], case_id, start)
        return image if self._window is None else self._window(image)

    def _label_tensor(self, labels: np.ndarray, case_id: str, start: Sequence[int]) -> MetaTensor:
        return self._meta_tensor(labels.astype(np.int64)[np.newaxis], case_id, start)


class CTSliceDataset(_CTDataset):
    """One sample per axial slice of every selected case, in catalog order.

    ``{"image": float32 (1, H, W), "label": int64 (1, H, W), "case_id": str, "z": int}``;
    ``label`` (the lesion mask) is absent for cases without one. Reads only the chunks
    holding the slice. The affine's first two columns step along ``y`` and ``x``; the third
    is the slice normal (a slice is a volume one voxel deep).
    """

    @cached_property
    def _offsets(self) -> np.ndarray:
        """The item index of each case's first slice, and the total."""
        return np.cumsum([0] + [shape[0] for shape in self.shapes])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[str, int]:
        """The case id and slice number of item ``index``."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"slice index {index} out of range for {len(self)} slices")
        case = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return self._case_ids[case], int(index - self._offsets[case])

    def slab_groups(self) -> list[list[int]]:
        """Item indices grouped by the chunk slab (chunk row along z) they read.

        For :class:`~mbc_lib.data.sampling.GroupShuffleSampler`: with a cache of ``window``
        slabs (``window * chunk_depth * H * W * 3`` bytes for int16 images and uint8 labels)
        each chunk is decoded once per epoch.
        """
        groups = []
        for case, case_id in enumerate(self._case_ids):
            depth = self._image(case_id).blocks[0]
            first, stop = int(self._offsets[case]), int(self._offsets[case + 1])
            groups += [list(range(z, min(z + depth, stop))) for z in range(first, stop, depth)]
        return groups

    def __getitem__(self, index: int) -> Any:
        case_id, z = self.locate(index)
        shape = self._image(case_id).shape
        region = (slice(z, z + 1), slice(0, shape[1]), slice(0, shape[2]))
        sample: dict[str, Any] = {
            "image": self._slice(self._read(case_id, "image", region)[0], case_id, z, True),
            "case_id": case_id,
            "z": z,
        }
        labels = self._read(case_id, "labels", region)
        if labels is not None:
            sample["label"] = self._slice(labels[0], case_id, z, False)
        return self._finish(sample)

    def affine(self, case_id: str) -> np.ndarray:
        """The RAS affine of the case's slices as ``(y, x, z)``: in-plane axes first."""
        if case_id not in self._affines:
            volume = self.store.affine(self.dataset, case_id)
            self._affines[case_id] = volume[:, [1, 2, 0, 3]]
        return self._affines[case_id]

    def _slice(self, data: np.ndarray, case_id: str, z: int, image: bool) -> MetaTensor:
        start = (0, 0, z)  # in the (y, x, z) order of this dataset's affine
        if image:
            return self._image_tensor(data, case_id, start)
        return self._label_tensor(data, case_id, start)


class CTPatchDataset(_CTDataset):
    """``samples_per_case`` random patches per selected case.

    ``{"image": float32 (1, D, H, W), "label": int64 (1, D, H, W), "case_id": str,
    "start": (z, y, x)}``. Item ``i`` comes from case ``i // samples_per_case``; its patch
    depends only on ``(seed, epoch, i)`` (``set_epoch`` before each epoch; DataLoader
    workers see it when they are started per epoch, i.e. without ``persistent_workers``).
    Where the volume is smaller than ``patch_size`` the patch is padded at the end with air
    (-1024 HU, label 0). ``chunk_aligned`` starts patches on the store's chunk grid so each
    touches the fewest chunks. The affine places the patch where it lies in the volume.
    """

    def __init__(
        self,
        store: StoreLike = None,
        dataset: str = "ct-covid",
        split: str | None = None,
        query: str | None = None,
        patch_size: Sequence[int] = (96, 96, 96),
        samples_per_case: int = 8,
        transform: Transform | None = None,
        cache_bytes: int = 0,
        hu_window: tuple[float, float] | None = None,
        chunk_aligned: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(store, dataset, split, query, transform, cache_bytes, hu_window)
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != 3 or min(patch) < 1:
            raise MbcError(f"patch_size must be three positive sizes (z, y, x), got {patch_size}")
        if samples_per_case < 1:
            raise MbcError(f"samples_per_case must be >= 1, got {samples_per_case}")
        self.patch_size = patch
        self.samples_per_case = int(samples_per_case)
        self.chunk_aligned = chunk_aligned
        self.seed = int(seed)
        self.epoch = 0
        self._pad_image = SpatialPad(patch, method="end", mode="constant", value=AIR_HU)
        self._pad_label = SpatialPad(patch, method="end", mode="constant", value=0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the patches of epoch ``epoch`` (the same epoch gives the same patches)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.catalog) * self.samples_per_case

    def locate(self, index: int) -> tuple[str, tuple[int, int, int]]:
        """The case id and patch start of item ``index`` in the current epoch."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"patch index {index} out of range for {len(self)} patches")
        case_id = self._case_ids[index // self.samples_per_case]
        array = self._image(case_id)
        chunks = array.blocks if self.chunk_aligned else None
        rng = patch_rng(self.seed, self.epoch, index)
        z, y, x = patch_start(array.shape, self.patch_size, rng, chunks)
        return case_id, (z, y, x)

    def __getitem__(self, index: int) -> Any:
        case_id, start = self.locate(index)
        shape = self._image(case_id).shape
        region = tuple(
            slice(s, min(s + p, n)) for s, p, n in zip(start, self.patch_size, shape, strict=True)
        )
        hu = self._read(case_id, "image", region)
        image = self._meta_tensor(hu.astype(np.float32)[np.newaxis], case_id, start)
        if hu.shape != self.patch_size:
            image = self._pad_image(image)
        sample: dict[str, Any] = {
            "image": image if self._window is None else self._window(image),
            "case_id": case_id,
            "start": start,
        }
        labels = self._read(case_id, "labels", region)
        if labels is not None:
            label = self._label_tensor(labels, case_id, start)
            sample["label"] = label if labels.shape == self.patch_size else self._pad_label(label)
        return self._finish(sample)


class CTVolumeDataset(_CTDataset):
    """One sample per selected case: the whole volume, for 3D training and inference.

    ``{"image": float32 (1, D, H, W), "label": int64 (1, D, H, W), "case_id": str,
    "patient": str}`` (``label`` absent without a mask). Crop it in ``transform`` (MONAI
    ``RandCropByLabelClassesd`` for label-balanced patches) or feed it to
    ``sliding_window_inference``; ``Spacingd`` and ``Orientationd`` read its affine.
    """

    def __len__(self) -> int:
        return len(self.catalog)

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"volume index {index} out of range for {len(self)} volumes")
        case_id = self._case_ids[index]
        region = tuple(slice(0, n) for n in self._image(case_id).shape)
        start = (0, 0, 0)
        sample: dict[str, Any] = {
            "image": self._image_tensor(self._read(case_id, "image", region), case_id, start),
            "case_id": case_id,
            "patient": str(self.catalog["patient"].iat[index]),
        }
        labels = self._read(case_id, "labels", region)
        if labels is not None:
            sample["label"] = self._label_tensor(labels, case_id, start)
        return self._finish(sample)
