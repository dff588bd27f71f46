"""Read-only access to the store: datasets, manifests, catalogs and lazy cases in mm."""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.storage import LocalStore

from ..errors import MbcError, ReadOnlyStoreError
from ..manifests import Manifest, parse_manifest
from . import geometry, layout
from .catalog import read_catalog

STORE_ENV = "MBC_STORE"
_READ_ONLY_MESSAGE = (
    "the mbc store is read-only: nothing is ever written through mbc_lib "
    "(save results to your home folder instead)"
)


class ReadOnlyLocalStore(LocalStore):
    """A zarr LocalStore that refuses every write with :class:`ReadOnlyStoreError`."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, read_only=True)

    async def set(self, key: str, value: Any) -> None:  # noqa: D102
        raise ReadOnlyStoreError(_READ_ONLY_MESSAGE)

    async def set_if_not_exists(self, key: str, value: Any) -> None:  # noqa: D102
        raise ReadOnlyStoreError(_READ_ONLY_MESSAGE)

    async def delete(self, key: str) -> None:  # noqa: D102
        raise ReadOnlyStoreError(_READ_ONLY_MESSAGE)

    def _check_writable(self) -> None:
        raise ReadOnlyStoreError(_READ_ONLY_MESSAGE)

    def with_read_only(self, read_only: bool = False) -> ReadOnlyLocalStore:  # noqa: D102
        if not read_only:
            raise ReadOnlyStoreError(_READ_ONLY_MESSAGE)
        return self


class Store:
    """A store opened read-only. Nothing written through it reaches the disk."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        meta = self.root / "zarr.json"
        if not meta.is_file():
            raise MbcError(f"not an mbc store (no zarr.json): {self.root}")
        attrs = json.loads(meta.read_text()).get("attributes", {}).get("mbc")
        if not isinstance(attrs, dict) or "store_version" not in attrs:
            raise MbcError(f"not an mbc store (no mbc attributes): {self.root}")
        self.version = attrs["store_version"]
        self._zstore = ReadOnlyLocalStore(self.root)

    def __repr__(self) -> str:
        return f"<mbc Store {self.root} datasets={self.datasets()}>"

    @cached_property
    def group(self) -> zarr.Group:
        return zarr.open_group(self._zstore, mode="r", zarr_format=3)

    def datasets(self) -> list[str]:
        out = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            meta = Path(entry.path) / "zarr.json"
            if entry.is_dir() and not entry.name.startswith(".") and meta.exists():
                out.append(entry.name)
        return out

    def _check_dataset(self, dataset: str) -> None:
        if dataset not in self.datasets():
            raise MbcError(
                f"no dataset {dataset!r} in {self.root} "
                f"(has: {', '.join(self.datasets()) or 'none'})"
            )

    def manifest(self, dataset: str) -> Manifest:
        self._check_dataset(dataset)
        meta = json.loads((layout.dataset_path(self.root, dataset) / "zarr.json").read_text())
        raw = meta.get("attributes", {}).get("mbc", {}).get("manifest")
        return parse_manifest(raw, f"{dataset} (in store)")

    def catalog(
        self, dataset: str, split: str | None = None, query: str | None = None
    ) -> pd.DataFrame:
        """The dataset's catalog, optionally one split and a pandas ``query`` string."""
        self._check_dataset(dataset)
        frame = read_catalog(self.root, dataset)
        if frame is None:
            raise MbcError(f"dataset {dataset!r} has no catalog yet")
        if split is not None:
            frame = frame[frame["split"] == split]
        if query:
            frame = frame.query(query)
        return frame.reset_index(drop=True)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    def case_ids(self, dataset: str) -> list[str]:
        self._check_dataset(dataset)
        base = layout.cases_path(self.root, dataset)
        return sorted(p.name for p in base.iterdir() if (p / "zarr.json").exists())

    def case_group(self, dataset: str, case_id: str) -> zarr.Group:
        self._check_dataset(dataset)
        if (
            not layout.CASE_ID_RE.match(case_id)
            or not (layout.case_path(self.root, dataset, case_id) / "zarr.json").exists()
        ):
            raise MbcError(f"no case {case_id!r} in dataset {dataset!r}")
        return zarr.open_group(
            self._zstore, path=f"{dataset}/{layout.CASES}/{case_id}", mode="r", zarr_format=3
        )

    def case_attrs(self, dataset: str, case_id: str) -> dict[str, Any]:
        return dict(self.case_group(dataset, case_id).attrs["mbc"])

    def affine(
        self, dataset: str, case_id: str, level: int = 0, space: geometry.Space = "RAS"
    ) -> np.ndarray:
        """The 4x4 affine of a CT case's ``(z, y, x)`` array at ``level``: index to mm.

        RAS (NIfTI's and MONAI's convention) by default, or LPS (DICOM's); from the NGFF scale
        and translation of the level and the case's ``direction`` attribute.
        """
        group = self.case_group(dataset, case_id)
        return geometry.case_affine(group.attrs["ome"], group.attrs["mbc"], level, space)

    def open_case(self, dataset: str, case_id: str, level: int = 0) -> xr.DataArray:
        """The case image as a lazy DataArray with coordinates in mm (where known)."""
        group = self.case_group(dataset, case_id)
        return _as_dataarray(group, level, name="image")

    def open_case_dataset(self, dataset: str, case_id: str, level: int = 0) -> xr.Dataset:
        """Image and (where present) labels of a case as one lazy Dataset."""
        image = self.open_case(dataset, case_id, level)
        variables = {"image": image}
        labels = self.open_labels(dataset, case_id, level)
        if labels is not None:
            variables["labels"] = labels.drop_attrs() if hasattr(labels, "drop_attrs") else labels
        return xr.Dataset(variables, attrs=image.attrs)

    def image_array(self, dataset: str, case_id: str, level: int = 0) -> zarr.Array:
        """The raw (read-only) zarr array of one pyramid level."""
        return self.case_group(dataset, case_id)[str(level)]

    def labels_array(self, dataset: str, case_id: str, level: int = 0) -> zarr.Array | None:
        group = self.case_group(dataset, case_id)
        if layout.LABELS_GROUP not in group:
            return None
        lroot = group[layout.LABELS_GROUP]
        return lroot[lroot.attrs["ome"]["labels"][0]][str(level)]

    def open_labels(self, dataset: str, case_id: str, level: int = 0) -> xr.DataArray | None:
        group = self.case_group(dataset, case_id)
        if layout.LABELS_GROUP not in group:
            return None
        lroot = group[layout.LABELS_GROUP]
        name = lroot.attrs["ome"]["labels"][0]
        labels = _as_dataarray(lroot[name], level, name=name)
        labels.attrs["image-label"] = lroot[name].attrs["ome"].get("image-label", {})
        return labels


def _as_dataarray(group: zarr.Group, level: int, name: str) -> xr.DataArray:
    import dask.array as da

    ms = group.attrs["ome"]["multiscales"][0]
    entry, transforms = geometry.level_entry(group.attrs["ome"], level)
    array = group[entry["path"]]
    dims = [ax["name"] for ax in ms["axes"]]
    coords = {}
    for i, ax in enumerate(ms["axes"]):
        if ax["type"] == "space":
            n = array.shape[i]
            values = transforms["translation"][i] + transforms["scale"][i] * np.arange(n)
            coords[ax["name"]] = xr.Variable(ax["name"], values, {"units": ax.get("unit", "pixel")})
    attrs = dict(group.attrs.get("mbc", {}))
    data = da.from_zarr(array)
    return xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=attrs)


def open_store(path: str | os.PathLike[str] | None = None) -> Store:
    """Open ``path`` (default ``$MBC_STORE``) read-only."""
    if path is None:
        env = os.environ.get(STORE_ENV)
        if not env:
            raise MbcError(f"no store given and ${STORE_ENV} is not set")
        path = env
    root = Path(path)
    if not root.is_dir():
        raise MbcError(f"store not found: {root}")
    return Store(root)
