"""The store's only writer: datasets, cases (NGFF 0.5 with pyramid and labels), atomic publish."""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ..atomic import TMP_SUFFIX
from ..checkpoints import checkpoint
from ..errors import MbcError
from ..manifests import Manifest
from . import layout, ngff
from .checksum import case_checksum

#: CT layout, chosen by measurement (benchmarks/loader.py, docs/benchmarks.md): one shard file
#: per slab of ``CT_SHARD[0]`` slices (at most ``CT_SHARD`` voxels), decoded in inner chunks one
#: slice thick, so that an axial slice decodes exactly what it uses (16 x 128 x 128 chunks
#: decoded sixteen times as much) and a random 96^3 patch about three times its voxels.
CT_CHUNKS = (1, 128, 128)
CT_SHARD = (16, 512, 512)
PYRAMID_LEVELS = 3
#: Also by measurement: zstd with bit shuffle keeps int16 CT below half its raw size (lz4hc
#: decodes 1.2 times as fast but is 4 % larger, which takes the store past half of raw);
#: labels (uint8, mostly constant) take lz4 without shuffle. For 8-bit photographs lz4 without
#: shuffle decodes about twice as fast as zstd, which is what keeps reading a photograph from
#: the store well ahead of decoding its JPEG.
_COMPRESSORS = {
    "ct-volume": (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),),
    "ct-labels": (BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),),
    "fundus": (BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),),
    "default": (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),),
}


@dataclass
class CaseData:
    """Everything needed to publish one case."""

    case_id: str
    kind: str  # "ct-volume" | "fundus" | "generic"
    image: np.ndarray
    dims: tuple[str, ...]
    spacing: tuple[float, ...]  # one per dim; 1.0 for c and t
    unit: str | None  # "millimeter", or None when the pixel size is unknown
    attrs: dict[str, Any] = field(default_factory=dict)  # mbc case attributes
    origin: list[float] | None = None  # LPS position (mm) of the first voxel
    direction: list[list[float]] | None = None  # LPS unit vectors of the spatial dims
    labels: np.ndarray | None = None

    def checksum(self) -> str:
        return case_checksum(self.image, self.labels)


def ct_layout(
    shape: tuple[int, ...],
    chunks: tuple[int, ...] = CT_CHUNKS,
    shard: tuple[int, ...] | None = CT_SHARD,
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(inner chunks, shards) of a CT array of ``shape``: both cut to the array, shards a whole
    number of inner chunks; ``shard=None`` gives regular chunks."""
    chunks = tuple(min(c, n) for c, n in zip(chunks, shape, strict=True))
    if shard is None:
        return chunks, None
    shards = tuple(
        c * min(-(-n // c), s // c) for c, n, s in zip(chunks, shape, shard, strict=True)
    )
    return chunks, shards


def _layout(
    kind: str, shape: tuple[int, ...], dims: tuple[str, ...]
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(chunks, shards or None) of one pyramid level."""
    if kind == "ct-volume":
        return ct_layout(shape)
    if kind == "fundus":
        return tuple(shape), None  # a photograph is always read whole
    return tuple(1 if d == "t" else min(n, 512) for n, d in zip(shape, dims, strict=True)), None


def _compressors(kind: str, labels: bool) -> tuple[BloscCodec, ...]:
    if kind == "ct-volume" and labels:
        return _COMPRESSORS["ct-labels"]
    return _COMPRESSORS.get(kind, _COMPRESSORS["default"])


def _make_writable(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        os.chmod(dirpath, 0o755)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)


def remove_tree(path: Path) -> None:
    """Remove a (possibly read-only) tree."""
    if path.exists():
        _make_writable(path)
        shutil.rmtree(path)


class StoreWriter:
    """Writes one dataset of a store. Use as a context manager: it holds the ingest lock."""

    def __init__(self, root: Path, manifest: Manifest, *, wait: bool = False) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.wait = wait  # wait for the ingest lock instead of refusing at once
        self._lock_fh: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> StoreWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.root / layout.LOCK_FILE, "a")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            self._lock_fh.close()
            raise MbcError(f"another ingest is writing to {self.root}; try again later") from None
        try:
            self._init_groups()
            self.clean_staging()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the ingest lock."""
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _init_groups(self) -> None:
        root = zarr.open_group(self.root, mode="a", zarr_format=3)
        if "mbc" not in root.attrs:
            root.attrs["mbc"] = {"store_version": layout.STORE_VERSION}
        ds_path = layout.dataset_path(self.root, self.manifest.name)
        group = zarr.open_group(ds_path, mode="a", zarr_format=3)
        wanted = {"manifest": self.manifest.to_dict()}
        if group.attrs.get("mbc") != wanted:
            group.attrs["mbc"] = wanted
        zarr.open_group(layout.cases_path(self.root, self.manifest.name), mode="a", zarr_format=3)

    def clean_staging(self) -> None:
        """Remove what a crashed run left half-written (never visible as a case): staged
        cases and the temporary files of an interrupted catalog write."""
        staging = layout.staging_path(self.root)
        if staging.exists():
            for child in staging.iterdir():
                remove_tree(child)
        staging.mkdir(exist_ok=True)
        dataset = layout.dataset_path(self.root, self.manifest.name)
        for leftover in dataset.glob(f".*{TMP_SUFFIX}"):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink()

    # -- cases -----------------------------------------------------------------------------
    def case_path(self, case_id: str) -> Path:
        return layout.case_path(self.root, self.manifest.name, case_id)

    def exists(self, case_id: str) -> bool:
        return (self.case_path(case_id) / "zarr.json").exists()

    def existing_checksum(self, case_id: str) -> str | None:
        if not self.exists(case_id):
            return None
        group = zarr.open_group(self.case_path(case_id), mode="r")
        return group.attrs.get("mbc", {}).get("checksum")

    def case_ids(self) -> list[str]:
        base = layout.cases_path(self.root, self.manifest.name)
        return sorted(p.name for p in base.iterdir() if (p / "zarr.json").exists())

    def publish(self, case: CaseData) -> str:
        """Write ``case`` to staging, then rename it into place; return its checksum."""
        if not layout.CASE_ID_RE.match(case.case_id):
            raise ValueError(f"bad case id {case.case_id!r}")
        checksum = case.checksum()
        staged = layout.staging_path(self.root) / f"{case.case_id}.{uuid.uuid4().hex[:8]}"
        try:
            self._write_case(staged, case, checksum)
            _set_read_only_contents(staged)
            checkpoint("case-staged")
            os.rename(staged, self.case_path(case.case_id))
        except BaseException:
            remove_tree(staged)
            raise
        os.chmod(self.case_path(case.case_id), 0o555)
        checkpoint("case-published")
        return checksum

    def _write_case(self, path: Path, case: CaseData, checksum: str) -> None:
        group = zarr.open_group(path, mode="w-", zarr_format=3)
        factors = ngff.pyramid_factors(case.image.shape, case.dims, PYRAMID_LEVELS)
        scales = ngff.level_scales(case.dims, case.spacing, factors)
        translation = ngff.translation(case.dims, case.origin, case.direction)
        self._write_pyramid(group, case.image, case, factors, labels=False)
        attrs = dict(case.attrs)
        attrs.update(
            case_id=case.case_id,
            kind=case.kind,
            shape=list(case.image.shape),
            dtype=str(case.image.dtype),
            dims=list(case.dims),
            spacing=[float(s) for s in case.spacing],
            unit=case.unit,
            origin=case.origin,
            direction=case.direction,
            frame="LPS" if case.direction is not None else None,
            checksum=checksum,
        )
        ms = ngff.multiscales(case.case_id, case.dims, case.unit, scales, translation, "mean")
        group.attrs.update({"ome": ngff.image_attrs(ms), "mbc": attrs})
        if case.labels is not None:
            seg = self.manifest.segmentation or {}
            name = seg.get("name", "labels")
            classes = {int(k): v for k, v in seg.get("classes", {}).items()}
            lroot = group.create_group(layout.LABELS_GROUP)
            lroot.attrs["ome"] = {"version": ngff.NGFF_VERSION, "labels": [name]}
            lgroup = lroot.create_group(name)
            self._write_pyramid(lgroup, case.labels, case, factors, labels=True)
            lms = ngff.multiscales(name, case.dims, case.unit, scales, translation, "nearest")
            lgroup.attrs["ome"] = ngff.label_attrs(lms, classes)

    def _write_pyramid(
        self,
        group: zarr.Group,
        array: np.ndarray,
        case: CaseData,
        factors: list[list[int]],
        labels: bool,
    ) -> None:
        level = array
        for index in range(len(factors)):
            if index:
                level = ngff.downsample(level, case.dims, 2, labels)
            chunks, shards = _layout(case.kind, level.shape, case.dims)
            arr = group.create_array(
                str(index),
                shape=level.shape,
                dtype=level.dtype,
                chunks=chunks,
                shards=shards,
                compressors=_compressors(case.kind, labels),
                dimension_names=case.dims,
                fill_value=0,
            )
            arr[...] = level


def _set_read_only_contents(path: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)
