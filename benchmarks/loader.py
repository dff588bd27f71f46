"""Training-data loading from the store, against the usual file formats, in one run.

Builds one sample store (``build_sample_store``) and, from the same cases, the copies a
researcher would otherwise train from: ``.nii.gz`` (nibabel), ``.npy`` (the raw limit), and the
original DICOM series and JPEG/PNG photographs. Every reader produces the same samples as the
mbc_lib datasets (float32 image, int64 label tensors), one process, warm OS page cache:

- CT random patches: ``CTPatchDataset`` (uncached: the main figure; and with a warm cache) vs
  MONAI ``LoadImaged`` of image and label ``.nii.gz`` then ``RandSpatialCropd`` vs pydicom
  reading the whole series, stacking and cropping vs ``np.load(mmap_mode="r")`` and cropping;
  vs what MONAI users do to avoid decoding NIfTI each time (``PersistentDataset``: the loaded
  volumes as ``.pt`` files; ``CacheDataset``: in memory);
- CT random axial slices: ``CTSliceDataset`` (uncached; warm cache; and in the slab-grouped
  order of ``GroupShuffleSampler`` with a cache of ``--window`` slabs) vs pydicom reading one
  slice file vs ``.npy``;
- both: the store's arrays read by ``ChunkReader`` (what the datasets use), by zarr-python's
  own path, and by TensorStore (a peer reader of the same files; ``pip install tensorstore``,
  skipped where absent);
- fundus photographs: ``FundusDataset`` vs PIL decoding the original JPEG/PNG files; the
  chunk read by ``ChunkReader`` vs by zarr;
- bytes: the store's level-0 arrays on disk vs the raw uncompressed arrays;
- alternatives: other CT chunk shapes and fundus codecs, read the way the datasets read.

CT labels come from ``.npy`` memory maps for the DICOM and npy readers (the kindest source),
from ``.nii.gz`` for MONAI. Prints a table and, on the last line, one JSON object.

    python benchmarks/loader.py [--n-ct 2] [--ct-size 512] [--n-fundus 40] [--patch 96]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import torch
import zarr
from monai.data import CacheDataset, PersistentDataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, RandSpatialCropd
from PIL import Image
from zarr.codecs import BloscCodec

from mbc_lib.data import CTPatchDataset, CTSliceDataset, FundusDataset, GroupShuffleSampler
from mbc_lib.sample.store import build_sample_store
from mbc_lib.store.chunk_reader import ChunkReader
from mbc_lib.store.reader import Store, open_store
from mbc_lib.store.writer import ct_layout

try:  # a peer reader of the same Zarr arrays (pip install tensorstore; `mbc[bench]`)
    import tensorstore
except ImportError:  # pragma: no cover - the figures say it was absent
    tensorstore = None

CT, FUNDUS = "ct-covid", "fundus-glaucoma"
CACHE_BYTES = 4 << 30
CT_ALTERNATIVES = [  # (inner chunks, shard or None, cname, shuffle); the first is the store's
    ((1, 128, 128), (16, 512, 512), "lz4hc", "bitshuffle"),
    ((1, 128, 128), (16, 512, 512), "zstd", "bitshuffle"),
    ((2, 128, 128), (16, 512, 512), "lz4hc", "bitshuffle"),
    ((4, 128, 128), (16, 512, 512), "lz4hc", "bitshuffle"),
    ((8, 64, 64), (16, 512, 512), "lz4hc", "bitshuffle"),
    ((16, 128, 128), None, "lz4hc", "bitshuffle"),
    ((16, 128, 128), None, "zstd", "bitshuffle"),  # the store's layout until 2026-12-04
    ((64, 64, 64), None, "zstd", "bitshuffle"),
]
FUNDUS_ALTERNATIVES = [("zstd", 3, "bitshuffle"), ("zstd", 3, "noshuffle"), ("lz4", 5, "noshuffle")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-ct", type=int, default=2, help="CT series (default 2)")
    parser.add_argument("--ct-size", type=int, default=512, help="CT in-plane size (512)")
    parser.add_argument("--window", type=int, default=8, help="slabs per shuffle window (8)")
    parser.add_argument("--n-fundus", type=int, default=40, help="photographs (default 40)")
    parser.add_argument("--patch", type=int, default=96, help="cubic patch edge (default 96)")
    parser.add_argument("--n", type=int, default=64, help="samples per pass (64)")
    parser.add_argument("--seconds", type=float, default=4.0, help="time cap per pass (4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-alternatives", action="store_true", help="skip chunk/codec runs")
    return parser.parse_args()


# -- timing -----------------------------------------------------------------------------------
def rate(items: list[Any], load: Callable[[Any], Any], seconds: float, repeat: int = 3) -> float:
    """Samples per second of ``load`` over ``items``: the best of ``repeat`` passes.

    A pass stops after ``seconds`` (with at least 3 items); a reader that slow runs one pass.
    """
    best = 0.0
    for _ in range(repeat):
        count, start = 0, time.perf_counter()
        for item in items:
            load(item)
            count += 1
            if count >= 3 and time.perf_counter() - start > seconds:
                break
        elapsed = time.perf_counter() - start
        best = max(best, count / elapsed)
        if elapsed > seconds:
            break
    return best


def image_tensor(hu: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(hu, dtype=np.float32)[np.newaxis])


def label_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64)[np.newaxis])


def axial(shape: tuple[int, ...], z: int) -> tuple[slice, ...]:
    """The region of axial slice ``z`` of a ``(z, y, x)`` volume."""
    return (slice(z, z + 1), slice(0, shape[1]), slice(0, shape[2]))


def array_path(array: zarr.Array) -> Path:
    return Path(array.store.root) / array.path


RegionRead = Callable[[tuple[slice, ...]], np.ndarray]


def direct_reader(array: zarr.Array) -> RegionRead:
    """Region reads by ``ChunkReader`` (what the datasets use)."""
    return ChunkReader(array).read


def zarr_reader(array: zarr.Array) -> RegionRead:
    """Region reads by zarr-python's own path."""
    return lambda region: np.asarray(array[region])


def tensorstore_reader(array: zarr.Array) -> RegionRead:
    """Region reads of the same array files through TensorStore (its defaults: no cache)."""
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(array_path(array))}}
    handle = tensorstore.open(spec, read=True).result()
    return lambda region: handle[region].read().result()


class PerCase:
    """Image and label tensors of CT regions through one kind of reader, one per array."""

    def __init__(self, store: Store, make: Callable[[zarr.Array], RegionRead]) -> None:
        self.store, self.make = store, make
        self._readers: dict[tuple[str, str], RegionRead] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def _read(self, case_id: str, part: str, region: tuple[slice, ...]) -> np.ndarray:
        key = (case_id, part)
        if key not in self._readers:
            get = self.store.image_array if part == "image" else self.store.labels_array
            array = get(CT, case_id)
            self._shapes[case_id] = tuple(array.shape)
            self._readers[key] = self.make(array)
        return self._readers[key](region)

    def patch(self, case_id: str, region: tuple[slice, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        image = self._read(case_id, "image", region)
        return image_tensor(image), label_tensor(self._read(case_id, "labels", region))

    def plane(self, case_id: str, z: int) -> tuple[torch.Tensor, torch.Tensor]:
        if case_id not in self._shapes:
            self._shapes[case_id] = tuple(self.store.image_array(CT, case_id).shape)
        region = axial(self._shapes[case_id], z)
        image = self._read(case_id, "image", region)[0]
        return image_tensor(image), label_tensor(self._read(case_id, "labels", region)[0])


# -- copies of the same cases -----------------------------------------------------------------
def read_series(files: list[Path]) -> np.ndarray:
    """A DICOM series in HU, slices ordered along the slice normal (as the store orders them)."""
    slices = [pydicom.dcmread(f) for f in files]
    normal = np.cross(*np.reshape(np.asarray(slices[0].ImageOrientationPatient, float), (2, 3)))
    slices.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    return np.stack([dicom_hu(ds) for ds in slices])


def dicom_hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def sorted_series(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    normal = np.cross(*np.reshape(np.asarray(headers[0].ImageOrientationPatient, float), (2, 3)))
    order = np.argsort(
        [float(np.dot(normal, np.asarray(h.ImagePositionPatient, float))) for h in headers]
    )
    return [files[i] for i in order]


def export_ct(store: Store, workdir: Path) -> dict[str, dict[str, Any]]:
    """Per case: .npy and .nii.gz copies of image and labels, and its original DICOM series."""
    out = workdir / "copies"
    out.mkdir()
    copies: dict[str, dict[str, Any]] = {}
    volumes = {}
    for case_id in store.case_ids(CT):
        image = store.image_array(CT, case_id)[...]
        labels = store.labels_array(CT, case_id)[...]
        spacing = [float(s) for s in store.case_attrs(CT, case_id)["spacing"]]
        affine = np.diag([*spacing[::-1], 1.0])
        entry: dict[str, Any] = {}
        for part, array in (("image", image), ("label", labels)):
            entry[f"{part}_npy"] = out / f"{case_id}_{part}.npy"
            np.save(entry[f"{part}_npy"], array)
            entry[f"{part}_nii"] = out / f"{case_id}_{part}.nii.gz"
            nib.save(nib.Nifti1Image(array.transpose(2, 1, 0), affine), entry[f"{part}_nii"])
        copies[case_id] = entry
        volumes[case_id] = image
    for folder in sorted((workdir / "input" / CT).glob("SE*")):
        files = sorted_series(folder)
        hu = read_series(files)
        match = [c for c, v in volumes.items() if v.shape == hu.shape and np.array_equal(v, hu)]
        if len(match) != 1:
            raise SystemExit(f"no store case equals the DICOM series {folder.name}")
        copies[match[0]]["dicom"] = files
    return copies


def fundus_originals(workdir: Path) -> list[tuple[Path, int]]:
    folder = workdir / "input" / FUNDUS
    with (folder / "labels.csv").open() as fh:
        return [(folder / row["path"], int(row["glaucoma"])) for row in csv.DictReader(fh)]


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- measurements -----------------------------------------------------------------------------
def ct_patches(
    store: Store, copies: dict, workdir: Path, args: argparse.Namespace
) -> dict[str, float]:
    patch = (args.patch,) * 3
    per_case = max(args.n // max(len(copies), 1), 1)
    order = np.random.default_rng(args.seed).permutation(len(copies) * per_case).tolist()

    def dataset(**kw: Any) -> CTPatchDataset:
        return CTPatchDataset(
            store, CT, patch_size=patch, samples_per_case=per_case, seed=args.seed, **kw
        )

    plain = dataset()
    where = [plain.locate(i) for i in order]
    regions = [
        (c, tuple(slice(s, s + p) for s, p in zip(st, patch, strict=True))) for c, st in where
    ]

    def npy(item: tuple) -> Any:
        case_id, region = item
        image = np.load(copies[case_id]["image_npy"], mmap_mode="r")
        label = np.load(copies[case_id]["label_npy"], mmap_mode="r")
        return image_tensor(image[region]), label_tensor(label[region])

    def dicom(item: tuple) -> Any:
        case_id, region = item
        label = np.load(copies[case_id]["label_npy"], mmap_mode="r")
        return image_tensor(read_series(copies[case_id]["dicom"])[region]), label_tensor(
            label[region]
        )

    monai = Compose(
        [
            LoadImaged(["image", "label"], image_only=True),
            EnsureChannelFirstd(["image", "label"]),
            RandSpatialCropd(["image", "label"], roi_size=patch, random_size=False),
        ]
    )
    monai.set_random_state(args.seed)

    def nifti(item: tuple) -> Any:
        case_id, _ = item
        return monai({"image": copies[case_id]["image_nii"], "label": copies[case_id]["label_nii"]})

    # What a MONAI user does to avoid decoding NIfTI every time: keep the loaded volumes (up
    # to the first random transform) in memory (CacheDataset) or as .pt files (PersistentDataset)
    case_ids = list(copies)
    files = [{"image": copies[c]["image_nii"], "label": copies[c]["label_nii"]} for c in case_ids]
    persistent = PersistentDataset(files, monai, cache_dir=workdir / "monai-persistent")
    start = time.perf_counter()
    for i in range(len(files)):  # writes the .pt files
        persistent[i]
    fill = {"monai_persistent_fill_s": time.perf_counter() - start}
    start = time.perf_counter()
    in_memory = CacheDataset(files, monai, progress=False, num_workers=1)
    fill["monai_cache_fill_s"] = time.perf_counter() - start
    by_case = [case_ids.index(c) for c, _ in where]

    direct, through_zarr = PerCase(store, direct_reader), PerCase(store, zarr_reader)

    cached = dataset(cache_bytes=CACHE_BYTES)
    for i in range(len(cached)):  # epoch 0 fills the cache
        cached[i]
    cached.set_epoch(1)
    before = cached.cache_info()
    aligned = dataset(chunk_aligned=True)
    results = {
        "store": rate(order, plain.__getitem__, args.seconds),
        "store_chunk_aligned": rate(order, aligned.__getitem__, args.seconds),
        "store_cached": rate(order, cached.__getitem__, args.seconds),
        "store_reader_direct": rate(regions, lambda it: direct.patch(*it), args.seconds),
        "store_reader_zarr": rate(regions, lambda it: through_zarr.patch(*it), args.seconds),
        "npy": rate(regions, npy, args.seconds),
        "nifti": rate(regions, nifti, args.seconds),
        "monai_persistent": rate(by_case, persistent.__getitem__, args.seconds),
        "monai_cache": rate(by_case, in_memory.__getitem__, args.seconds),
        "dicom": rate(regions, dicom, args.seconds),
    }
    del in_memory
    if tensorstore is not None:
        peer = PerCase(store, tensorstore_reader)
        results["tensorstore"] = rate(regions, lambda it: peer.patch(*it), args.seconds)
    results.update(fill)
    after = cached.cache_info()
    hits, misses = after.hits - before.hits, after.misses - before.misses
    results["cached_hit_rate"] = hits / max(hits + misses, 1)
    return results


def ct_slices(store: Store, copies: dict, args: argparse.Namespace) -> dict[str, float]:
    plain = CTSliceDataset(store, CT)
    n = min(4 * args.n, len(plain))
    order = np.random.default_rng(args.seed).permutation(len(plain))[:n].tolist()
    where = [plain.locate(i) for i in order]

    def npy(item: tuple) -> Any:
        case_id, z = item
        image = np.load(copies[case_id]["image_npy"], mmap_mode="r")
        label = np.load(copies[case_id]["label_npy"], mmap_mode="r")
        return image_tensor(image[z]), label_tensor(label[z])

    def dicom(item: tuple) -> Any:
        case_id, z = item
        label = np.load(copies[case_id]["label_npy"], mmap_mode="r")
        hu = dicom_hu(pydicom.dcmread(copies[case_id]["dicom"][z]))
        return image_tensor(hu), label_tensor(label[z])

    cached = CTSliceDataset(store, CT, cache_bytes=CACHE_BYTES)
    for i in range(len(cached)):
        cached[i]
    first = store.image_array(CT, str(plain.catalog["case_id"].iloc[0]))
    depth = ChunkReader(first).blocks[0]  # what the cache holds: a shard's depth of slices
    slab_bytes = depth * first.shape[1] * first.shape[2] * 3  # int16 + uint8
    grouped = CTSliceDataset(store, CT, cache_bytes=args.window * slab_bytes)
    sampler = GroupShuffleSampler(grouped.slab_groups(), window=args.window, seed=args.seed)

    direct, through_zarr = PerCase(store, direct_reader), PerCase(store, zarr_reader)
    results = {
        "store": rate(order, plain.__getitem__, args.seconds),
        "store_slab_shuffled": rate(list(sampler)[:n], grouped.__getitem__, args.seconds),
        "store_cached": rate(order, cached.__getitem__, args.seconds),
        "store_reader_direct": rate(where, lambda it: direct.plane(*it), args.seconds),
        "store_reader_zarr": rate(where, lambda it: through_zarr.plane(*it), args.seconds),
        "npy": rate(where, npy, args.seconds),
        "dicom": rate(where, dicom, args.seconds),
    }
    if tensorstore is not None:
        peer = PerCase(store, tensorstore_reader)
        results["tensorstore"] = rate(where, lambda it: peer.plane(*it), args.seconds)
    return results


def fundus(store: Store, originals: list[tuple[Path, int]], args: argparse.Namespace) -> dict:
    plain = FundusDataset(store, FUNDUS)
    arrays = [store.image_array(FUNDUS, c) for c in plain.catalog["case_id"]]
    readers = [(ChunkReader(a), tuple(slice(0, n) for n in a.shape)) for a in arrays]
    order = [i % len(plain) for i in range(4 * args.n)]

    def pil_array(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))

    def pil(item: tuple[Path, int]) -> Any:
        path, label = item
        pixels = pil_array(path).transpose(2, 0, 1)
        image = torch.from_numpy(np.multiply(pixels, np.float32(1 / 255), dtype=np.float32))
        return {"image": image, "label": torch.tensor(label)}

    cached = FundusDataset(store, FUNDUS, cache_bytes=CACHE_BYTES)
    for i in range(len(cached)):
        cached[i]
    jpegs = [o for o in originals if o[0].suffix.upper() in (".JPG", ".JPEG")]
    return {
        "store": rate(order, plain.__getitem__, args.seconds),
        "store_cached": rate(order, cached.__getitem__, args.seconds),
        "jpeg_png": rate([originals[i] for i in order], pil, args.seconds),
        "jpeg_only": rate([jpegs[i % len(jpegs)] for i in order], pil, args.seconds),
        "store_uint8": rate([readers[i] for i in order], lambda r: r[0].read(r[1]), args.seconds),
        "store_uint8_zarr": rate([arrays[i] for i in order], lambda a: a[...], args.seconds),
        "jpeg_png_uint8": rate([originals[i][0] for i in order], pil_array, args.seconds),
    }


def sizes(store: Store, workdir: Path, copies: dict) -> dict[str, float]:
    def level0(dataset: str) -> tuple[int, int]:
        stored = raw = 0
        for case_id in store.case_ids(dataset):
            array = store.image_array(dataset, case_id)
            raw += array.nbytes
            stored += disk_bytes(store.root / dataset / "cases" / case_id / "0")
        return stored, raw

    ct_stored, ct_raw = level0(CT)
    fu_stored, fu_raw = level0(FUNDUS)
    ct_cases = disk_bytes(store.root / CT / "cases")  # pyramids and labels included
    ct_raw_all = sum(store.labels_array(CT, c).nbytes for c in copies) + ct_raw
    originals = workdir / "input" / FUNDUS / "images"
    return {
        "store_bytes_vs_raw": (ct_stored + fu_stored) / (ct_raw + fu_raw),
        "ct_bytes_vs_raw": ct_stored / ct_raw,
        "fundus_bytes_vs_raw": fu_stored / fu_raw,
        "ct_cases_with_pyramid_and_labels_vs_raw": ct_cases / ct_raw_all,
        "ct_nifti_vs_raw": sum(c["image_nii"].stat().st_size for c in copies.values()) / ct_raw,
        "ct_dicom_vs_raw": sum(f.stat().st_size for c in copies.values() for f in c["dicom"])
        / ct_raw,
        "fundus_originals_vs_raw": disk_bytes(originals) / fu_raw,
        "ct_raw_mb": ct_raw / 1e6,
        "fundus_raw_mb": fu_raw / 1e6,
    }


def alternatives(store: Store, workdir: Path, args: argparse.Namespace) -> dict[str, dict]:
    """The first two volumes and all photographs rewritten with other chunks and codecs."""
    out: dict[str, dict] = {}
    volumes = [store.image_array(CT, c)[...] for c in store.case_ids(CT)[:2]]
    rng = np.random.default_rng(args.seed)
    p = args.patch
    for chunks, shard, cname, shuffle in CT_ALTERNATIVES:
        sharded = f" in {'x'.join(map(str, shard))} shards" if shard else ""
        name = f"ct {'x'.join(map(str, chunks))}{sharded} {cname} {shuffle}"
        arrays = []
        for i, volume in enumerate(volumes):
            codec = BloscCodec(cname=cname, clevel=3 if cname == "zstd" else 5, shuffle=shuffle)
            path = workdir / "alt" / name.replace(" ", "_") / str(i)
            inner, shards = ct_layout(volume.shape, chunks, shard)
            arr = zarr.create_array(
                path,
                shape=volume.shape,
                dtype=volume.dtype,
                chunks=inner,
                shards=shards,
                compressors=[codec],
                zarr_format=3,
            )
            arr[...] = volume
            arrays.append(ChunkReader(zarr.open_array(path, mode="r")))
        patches = [
            (a, tuple(slice(s, s + p) for s in (int(rng.integers(0, n - p + 1)) for n in a.shape)))
            for a in (arrays[int(rng.integers(len(arrays)))] for _ in range(args.n))
        ]
        slices = [
            (a, axial(a.shape, int(rng.integers(a.shape[0]))))
            for a in (arrays[int(rng.integers(len(arrays)))] for _ in range(args.n))
        ]
        out[name] = {
            "bytes_vs_raw": disk_bytes(workdir / "alt" / name.replace(" ", "_"))
            / sum(v.nbytes for v in volumes),
            "patch_per_s": rate(patches, lambda it: it[0].read(it[1]), args.seconds, 2),
            "slice_per_s": rate(slices, lambda it: it[0].read(it[1]), args.seconds, 2),
        }
    photos = [store.image_array(FUNDUS, c)[...] for c in store.case_ids(FUNDUS)]
    for cname, level, shuffle in FUNDUS_ALTERNATIVES:
        name = f"fundus {cname}{level} {shuffle}"
        base = workdir / "alt" / name.replace(" ", "_")
        arrays = []
        for i, photo in enumerate(photos):
            arr = zarr.create_array(
                base / str(i),
                shape=photo.shape,
                dtype=photo.dtype,
                chunks=photo.shape,
                zarr_format=3,
                compressors=[BloscCodec(cname=cname, clevel=level, shuffle=shuffle)],
            )
            arr[...] = photo
            reader = ChunkReader(zarr.open_array(base / str(i), mode="r"))
            arrays.append((reader, tuple(slice(0, n) for n in photo.shape)))
        out[name] = {
            "bytes_vs_raw": disk_bytes(base) / sum(p.nbytes for p in photos),
            "image_per_s": rate(arrays, lambda it: it[0].read(it[1]), args.seconds, 2),
        }
    return out


# -- report -----------------------------------------------------------------------------------
def peer_ratios(patch: dict[str, float], slices: dict[str, float]) -> dict[str, float]:
    """The store against TensorStore reading the same arrays, where it is installed."""
    if "tensorstore" not in patch:
        return {}
    return {
        "ct_patch_vs_tensorstore": patch["store"] / patch["tensorstore"],
        "ct_patch_direct_vs_tensorstore": patch["store_reader_direct"] / patch["tensorstore"],
        "ct_slice_vs_tensorstore": slices["store"] / slices["tensorstore"],
        "ct_slice_direct_vs_tensorstore": slices["store_reader_direct"] / slices["tensorstore"],
    }


def goals(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    wanted = {  # key: (goal, higher is better)
        "ct_patch_vs_nifti": (10.0, True),
        "ct_patch_vs_dicom": (5.0, True),
        "ct_patch_vs_npy": (0.5, True),
        "ct_slice_vs_dicom": (1.0, True),
        "fundus_vs_jpeg": (3.0, True),
        "store_bytes_vs_raw": (0.5, False),
    }
    out = {}
    for key, (goal, higher) in wanted.items():
        value = result[key]
        met = value >= goal if higher else value <= goal
        out[key] = {"value": round(value, 3), "goal": goal, "met": bool(met)}
    return out


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3 if abs(value) < 10 else 1)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


timings: dict[str, float] = {}


def timed(name: str, func: Callable[..., Any], *args: Any) -> Any:
    start = time.perf_counter()
    try:
        return func(*args)
    finally:
        timings[name] = time.perf_counter() - start


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mbc-loader-") as tmp:
        workdir = Path(tmp)
        store = open_store(
            build_sample_store(
                workdir / "sample",
                seed=args.seed,
                n_fundus=args.n_fundus,
                n_ct=args.n_ct,
                ct_size=args.ct_size,
                include_real_dicom=False,
            )
        )
        copies = export_ct(store, workdir / "sample")
        first = store.image_array(CT, next(iter(copies)))
        ct_shape, ct_chunks = first.shape, first.chunks
        shapes = [store.image_array(FUNDUS, c).shape for c in store.case_ids(FUNDUS)]
        timings["setup"] = time.perf_counter() - started
        patch = timed("ct_patches", ct_patches, store, copies, workdir, args)
        report(f"CT {args.patch}^3 patches (samples/s)", patch)
        slices = timed("ct_slices", ct_slices, store, copies, args)
        report("CT axial slices (samples/s)", slices)
        photos = timed("fundus", fundus, store, fundus_originals(workdir / "sample"), args)
        report("fundus photographs (samples/s)", photos)
        size = sizes(store, workdir / "sample", copies)
        report("bytes (ratio to raw)", size)
        alts = (
            {}
            if args.no_alternatives
            else timed("alternatives", alternatives, store, workdir, args)
        )
        for name, values in alts.items():
            print(f"  {name:28s} " + "  ".join(f"{k} {v:8.3f}" for k, v in values.items()))
    result: dict[str, Any] = {
        "benchmark": "loader",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "sizes": {
            "n_ct": len(copies),
            "ct_shape": list(ct_shape),
            "ct_chunks": list(ct_chunks),
            "patch": [args.patch] * 3,
            "n_fundus": len(shapes),
            "fundus_hw_min": [min(s[1] for s in shapes), min(s[2] for s in shapes)],
            "fundus_hw_max": [max(s[1] for s in shapes), max(s[2] for s in shapes)],
            "samples_per_reader": args.n,
            "seconds_cap": args.seconds,
        },
        "ct_patch_vs_nifti": patch["store"] / patch["nifti"],
        "ct_patch_vs_dicom": patch["store"] / patch["dicom"],
        "ct_patch_vs_npy": patch["store"] / patch["npy"],
        "ct_patch_cached_vs_npy": patch["store_cached"] / patch["npy"],
        "ct_patch_cached_vs_nifti": patch["store_cached"] / patch["nifti"],
        "ct_patch_vs_monai_persistent": patch["store"] / patch["monai_persistent"],
        "ct_patch_cached_vs_monai_cache": patch["store_cached"] / patch["monai_cache"],
        "ct_patch_direct_vs_zarr": patch["store_reader_direct"] / patch["store_reader_zarr"],
        "ct_slice_vs_dicom": slices["store"] / slices["dicom"],
        "ct_slice_direct_vs_zarr": slices["store_reader_direct"] / slices["store_reader_zarr"],
        "ct_slice_cached_vs_dicom": slices["store_cached"] / slices["dicom"],
        "ct_slice_slab_shuffled_vs_dicom": slices["store_slab_shuffled"] / slices["dicom"],
        "ct_slice_vs_npy": slices["store"] / slices["npy"],
        "fundus_vs_jpeg": photos["store"] / photos["jpeg_png"],
        "fundus_cached_vs_jpeg": photos["store_cached"] / photos["jpeg_png"],
        "fundus_vs_jpeg_only": photos["store"] / photos["jpeg_only"],
        "fundus_uint8_vs_jpeg_uint8": photos["store_uint8"] / photos["jpeg_png_uint8"],
        "fundus_direct_vs_zarr": photos["store_uint8"] / photos["store_uint8_zarr"],
        **peer_ratios(patch, slices),
        "store_bytes_vs_raw": size["store_bytes_vs_raw"],
        "ct_patch_per_s": patch,
        "ct_slice_per_s": slices,
        "fundus_per_s": photos,
        "bytes": size,
        "alternatives": alts,
        "seconds": time.perf_counter() - started,
        "section_seconds": timings,
    }
    result["goals"] = goals(result)
    for key, goal in result["goals"].items():
        sense = "<=" if key == "store_bytes_vs_raw" else ">="
        verdict = "met" if goal["met"] else "NOT met"
        print(f"goal {key:22s} {goal['value']:8.3f} (goal {sense} {goal['goal']}): {verdict}")
    print(json.dumps(rounded(result)))


def report(title: str, values: dict[str, float]) -> None:
    print(title)
    for key, value in values.items():
        print(f"  {key:40s} {value:10.3f}", flush=True)


if __name__ == "__main__":
    main()
