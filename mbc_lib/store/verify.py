"""``mbc verify``: what a sound store is, checked over the whole store.

Every dataset and case goes through the same steps, and every problem is one line naming
where it is (a path inside the store):

1. **tree**: every folder is listed without following links; a symbolic link or a special
   file anywhere is a finding and is never opened, and each folder may hold only the names
   its level allows (root, dataset, cases, case, labels, array and chunk tree);
2. **metadata**: every ``zarr.json`` holds exactly what the writer writes: the root header,
   the manifest, no attributes on the cases group or the arrays, the case attributes through
   the PHI gate, and NGFF multiscales and labels rebuilt from the case attributes;
3. **content** (only where step 1 found no link): the checksum over level 0, every further
   level of the image and its labels equal to :func:`ngff.downsample` of the level below,
   the mask's values and volumes;
4. **catalog**: exactly the manifest's columns, one row per case holding the values the
   case's attributes imply, known splits and one split per patient.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import zarr

from .. import phi_gate
from ..deid.keys import PSEUDONYM_RE
from ..errors import MbcError, describe_error
from ..manifests import Manifest, parse_manifest
from ..progress import progress as progress_bar
from . import layout, ngff, schema
from .catalog import SPLITS, catalog_row
from .checksum import CaseHasher
from .writer import PYRAMID_LEVELS

_GROUP_KEYS = frozenset({"zarr_format", "node_type", "attributes"})
_ARRAY_KEYS = frozenset(
    {
        "zarr_format",
        "node_type",
        "attributes",
        "shape",
        "data_type",
        "chunk_grid",
        "chunk_key_encoding",
        "fill_value",
        "codecs",
        "dimension_names",
        "storage_transformers",
    }
)
_CHUNK_KEY_ENCODING = {"name": "default", "configuration": {"separator": "/"}}
_INDEX_RE = re.compile(r"0|[1-9][0-9]*")
_KIND_OF_PREFIX = {"ct": "ct-volume", "fu": "fundus", "dc": "generic"}
_AXES_ORDER = "tczyx"
_NOT_READ = "content not read (see the findings above)"


# -- findings and the tree ----------------------------------------------------------------------
@dataclass
class _Findings:
    """Problems found so far, one line each: ``where: problem``."""

    lines: list[str] = field(default_factory=list)

    def add(self, where: str, problem: str) -> None:
        self.lines.append(f"{where or 'store'}: {problem}")


@dataclass
class _Listing:
    """One folder's entries: regular files, folders, and links or special files (unsafe)."""

    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    unsafe: set[str] = field(default_factory=set)

    def names(self) -> set[str]:
        return self.files | self.dirs | self.unsafe


def _join(where: str, name: str) -> str:
    return f"{where}/{name}" if where else name


def _special(entry: os.DirEntry[str]) -> str:
    """What kind of special file ``entry`` is (never following a link)."""
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "special file"
    kinds = {
        stat.S_ISFIFO: "FIFO",
        stat.S_ISSOCK: "socket",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def _scan(path: Path, where: str, out: _Findings) -> _Listing:
    """List ``path`` without following links; each link or special file is a finding."""
    listing = _Listing()
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        out.add(where, f"cannot list: {exc.strerror}")
        return listing
    for entry in entries:
        rel = _join(where, entry.name)
        if entry.is_symlink():
            listing.unsafe.add(entry.name)
            out.add(rel, f"symbolic link to {_link_target(entry.path)!r}, not followed")
        elif entry.is_dir(follow_symlinks=False):
            listing.dirs.add(entry.name)
        elif entry.is_file(follow_symlinks=False):
            listing.files.add(entry.name)
        else:
            listing.unsafe.add(entry.name)
            out.add(rel, f"{_special(entry)}, not a regular file or folder")
    return listing


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _sweep(path: Path, where: str, out: _Findings) -> None:
    """Report every link and special file below ``path`` (a folder verify cannot interpret)."""
    listing = _scan(path, where, out)
    for name in sorted(listing.dirs):
        _sweep(path / name, _join(where, name), out)


def _expect(
    listing: _Listing,
    path: Path,
    where: str,
    out: _Findings,
    files: Collection[str] = (),
    dirs: Collection[str] = (),
) -> None:
    """Every entry of ``listing`` outside ``files`` and ``dirs`` is a finding."""
    for name in sorted(listing.files - set(files)):
        out.add(_join(where, name), "unexpected file")
    for name in sorted(listing.dirs - set(dirs)):
        out.add(_join(where, name), "unexpected folder")
        _sweep(path / name, _join(where, name), out)


def _require(listing: _Listing, where: str, out: _Findings, dirs: Iterable[str]) -> bool:
    """Whether every folder in ``dirs`` is there (a link in its place is already a finding)."""
    missing = [d for d in dirs if d not in listing.dirs]
    for name in missing:
        if name not in listing.unsafe:
            out.add(_join(where, name), "missing")
    return not missing


# -- metadata -----------------------------------------------------------------------------------
def _node(
    path: Path, where: str, listing: _Listing, node_type: str, out: _Findings
) -> dict[str, Any] | None:
    """The parsed ``zarr.json`` of a group or array folder, or None (and a finding)."""
    if "zarr.json" not in listing.files:
        if "zarr.json" not in listing.unsafe:
            out.add(where, "no zarr.json")
        return None
    where_file = _join(where, "zarr.json")
    try:
        doc = json.loads((path / "zarr.json").read_bytes())
    except (OSError, ValueError) as exc:
        out.add(where_file, f"unreadable: {describe_error(exc)}")
        return None
    if (
        not isinstance(doc, dict)
        or doc.get("zarr_format") != 3
        or doc.get("node_type") != node_type
        or not isinstance(doc.get("attributes", {}), dict)
    ):
        out.add(where_file, f"not Zarr v3 {node_type} metadata")
        return None
    allowed = _GROUP_KEYS if node_type == "group" else _ARRAY_KEYS
    for key in sorted(set(doc) - allowed):
        out.add(where_file, f"unexpected metadata key {key!r}")
    doc.setdefault("attributes", {})
    return doc


def _expect_attrs(
    actual: dict[str, Any],
    expected: dict[str, Any],
    where: str,
    out: _Findings,
    what: str = "attribute",
    source: str = "the writer writes",
) -> None:
    """``actual`` has exactly the keys and values of ``expected``."""
    for key in sorted(set(actual) - set(expected)):
        out.add(where, f"unexpected {what} {key!r}")
    for key in sorted(set(expected) - set(actual)):
        out.add(where, f"missing {what} {key!r}")
    for key in sorted(set(actual) & set(expected)):
        if actual[key] != expected[key]:
            out.add(where, f"{what} {key!r} differs from what {source}")


# -- store and datasets -------------------------------------------------------------------------
def verify_store(root: Path, progress: bool = False) -> list[str]:
    """Every problem found in the store, one line each (empty list: the store is sound)."""
    root = Path(root)
    if not (root / "zarr.json").is_file():
        raise MbcError(f"not an mbc store (no zarr.json): {root}")
    out = _Findings()
    listing = _scan(root, "", out)
    datasets = sorted(d for d in listing.dirs if not d.startswith("."))
    _expect(
        listing,
        root,
        "",
        out,
        files={"zarr.json", layout.LOCK_FILE},
        dirs={layout.STAGING, *datasets},
    )
    meta = _node(root, "", listing, "group", out)
    if meta is not None:
        header = {"mbc": {"store_version": layout.STORE_VERSION}}
        _expect_attrs(meta["attributes"], header, "", out, source="this store version has")
    if layout.STAGING in listing.dirs and _scan(root / layout.STAGING, layout.STAGING, out).names():
        out.add(layout.STAGING, "holds a half-written case (an ingest crashed): re-run ingest")
    for name in datasets:
        try:
            _verify_dataset(root / name, name, out, progress)
        except Exception as exc:  # noqa: BLE001 - a broken dataset is a finding, never a crash
            out.add(name, f"cannot be checked: {describe_error(exc)}")
    return out.lines


def _verify_dataset(path: Path, name: str, out: _Findings, progress: bool) -> None:
    """One dataset group: its entries, manifest, cases and catalog."""
    listing = _scan(path, name, out)
    _expect(listing, path, name, out, files={"zarr.json", layout.CATALOG_FILE}, dirs={layout.CASES})
    manifest = _dataset_manifest(path, name, listing, out)
    if manifest is None:
        for sub in sorted(listing.dirs):
            _sweep(path / sub, _join(name, sub), out)
        return
    if _require(listing, name, out, [layout.CASES]):
        cases = _verify_cases(path / layout.CASES, name, manifest, out, progress)
        _verify_catalog(path, name, listing, manifest, cases, out)


def _dataset_manifest(path: Path, name: str, listing: _Listing, out: _Findings) -> Manifest | None:
    """The manifest in the dataset group's attributes, or None (and a finding)."""
    meta = _node(path, name, listing, "group", out)
    if meta is None:
        return None
    attrs = meta["attributes"]
    mbc = attrs.get("mbc") if isinstance(attrs.get("mbc"), dict) else {}
    _expect_attrs(attrs, {"mbc": mbc}, name, out)
    _expect_attrs(mbc, {"manifest": mbc.get("manifest")}, name, out, "mbc attribute")
    try:
        manifest = parse_manifest(mbc.get("manifest"), name)
    except MbcError as exc:
        out.add(name, f"manifest in the store is invalid: {exc}")
        return None
    if manifest.name != name:
        out.add(name, f"manifest is named {manifest.name!r}, not after its folder")
    return manifest


def _verify_cases(
    path: Path, dataset: str, manifest: Manifest, out: _Findings, progress: bool
) -> dict[str, dict[str, Any] | None]:
    """Verify every case; return each case's ``mbc`` attributes (None where unreadable)."""
    where = _join(dataset, layout.CASES)
    listing = _scan(path, where, out)
    meta = _node(path, where, listing, "group", out)
    if meta is not None:
        _expect_attrs(meta["attributes"], {}, where, out)
    ids = sorted(d for d in listing.dirs if layout.CASE_ID_RE.fullmatch(d))
    _expect(listing, path, where, out, files={"zarr.json"}, dirs=ids)
    cases = {}
    for case_id in progress_bar(ids, progress, desc=f"verify {dataset}", unit="case"):
        case_where = _join(where, case_id)
        try:
            cases[case_id] = _verify_case(path / case_id, case_where, dataset, manifest, out)
        except Exception as exc:  # noqa: BLE001 - a broken case is a finding, never a crash
            out.add(case_where, f"cannot be checked: {describe_error(exc)}")
            cases[case_id] = None
    return cases


# -- cases --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Geometry:
    """What a case's attributes say about its arrays and their pyramid."""

    dims: tuple[str, ...]
    spacing: tuple[float, ...]
    unit: str | None
    translation: list[float]
    factors: list[list[int]]

    def multiscales(self, name: str, downsampling: str) -> dict[str, Any]:
        scales = ngff.level_scales(self.dims, self.spacing, self.factors)
        return ngff.multiscales(name, self.dims, self.unit, scales, self.translation, downsampling)


@dataclass(frozen=True)
class _Array:
    """One pyramid level whose folder holds nothing but its metadata and chunk files."""

    path: Path
    where: str
    chunks: tuple[int, ...]


@dataclass
class _Case:
    """A case whose tree and metadata are sound enough to read its arrays."""

    where: str
    mbc: dict[str, Any]
    geometry: _Geometry
    image: list[_Array]
    labels: list[_Array]


def _verify_case(
    path: Path, where: str, dataset: str, manifest: Manifest, out: _Findings
) -> dict[str, Any] | None:
    """Steps 1 to 3 for one case; return its ``mbc`` attributes (None where unreadable)."""
    listing = _scan(path, where, out)
    meta = _node(path, where, listing, "group", out)
    if meta is None:
        for sub in sorted(listing.dirs):
            _sweep(path / sub, _join(where, sub), out)
        out.add(where, _NOT_READ)
        return None
    mbc, geometry, levels = _case_metadata(
        meta["attributes"], path.name, dataset, manifest, where, out
    )
    case = _case_arrays(path, where, listing, mbc, geometry, levels, manifest, out)
    if case is None:
        out.add(where, _NOT_READ)
    else:
        _check_content(case, manifest, out)
    return mbc


def _case_metadata(
    attrs: dict[str, Any],
    case_id: str,
    dataset: str,
    manifest: Manifest,
    where: str,
    out: _Findings,
) -> tuple[dict[str, Any], _Geometry | None, list[str]]:
    """The case group's attributes: (mbc attributes, geometry, level paths)."""
    mbc = attrs.get("mbc") if isinstance(attrs.get("mbc"), dict) else {}
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    _expect_attrs(attrs, {"ome": ome, "mbc": mbc}, where, out)
    for problem in phi_gate.check_case_attrs(mbc, manifest):
        out.add(where, f"PHI gate: {problem}")
    _check_identity(mbc, case_id, dataset, where, out)
    geometry = _geometry(mbc, where, out)
    levels = _stored_levels(ome, where, out)
    if geometry is not None:
        expected = ngff.image_attrs(geometry.multiscales(case_id, "mean"))
        _expect_attrs(ome, expected, where, out, "ome attribute", "the case attributes imply")
    return mbc, geometry, levels


def _case_arrays(
    path: Path,
    where: str,
    listing: _Listing,
    mbc: dict[str, Any],
    geometry: _Geometry | None,
    levels: list[str],
    manifest: Manifest,
    out: _Findings,
) -> _Case | None:
    """The case's folder and arrays; the case to read, or None where it must not be read."""
    _expect(listing, path, where, out, files={"zarr.json"}, dirs={*levels, layout.LABELS_GROUP})
    sound = _require(listing, where, out, levels) and not listing.unsafe
    image = [_verify_array(path, lv, where, listing, geometry, out) for lv in levels]
    labels: list[_Array | None] = []
    if layout.LABELS_GROUP in listing.dirs:
        labels = _verify_labels(path / layout.LABELS_GROUP, where, geometry, levels, manifest, out)
        sound = sound and bool(labels)
    elif layout.LABELS_GROUP not in listing.unsafe and mbc.get("label_stats") is not None:
        out.add(where, "label_stats attribute without a label image")
    image_ok = [a for a in image if a is not None]
    labels_ok = [a for a in labels if a is not None]
    if not sound or geometry is None or not levels or None in image + labels:
        return None
    return _Case(where, mbc, geometry, image_ok, labels_ok)


def _check_identity(
    mbc: dict[str, Any], case_id: str, dataset: str, where: str, out: _Findings
) -> None:
    """The case's id, dataset and kind agree with where it is."""
    if mbc.get("case_id") != case_id:
        out.add(where, "case_id attribute is not the folder's name")
    if "dataset" in mbc and mbc["dataset"] != dataset:
        out.add(where, f"dataset attribute is not {dataset!r}")
    kind = _KIND_OF_PREFIX[case_id.split("-", 1)[0]]
    if mbc.get("kind") != kind:
        out.add(where, f"kind attribute is not {kind!r} (a {case_id[:3]} case)")


def _geometry(mbc: dict[str, Any], where: str, out: _Findings) -> _Geometry | None:
    """The arrays' geometry from the case attributes, or None (and a finding)."""
    try:
        dims = tuple(str(d) for d in mbc["dims"])
        shape = tuple(int(n) for n in mbc["shape"])
        spacing = tuple(float(s) for s in mbc["spacing"])
        unit = mbc.get("unit")
        order = [_AXES_ORDER.index(d) for d in dims]
        if (
            order != sorted(set(order))
            or not {"y", "x"} <= set(dims)
            or not len(dims) == len(shape) == len(spacing)
            or min(shape) < 1
            or not (unit is None or isinstance(unit, str))
        ):
            raise ValueError("inconsistent")
        translation = ngff.translation(dims, mbc.get("origin"), mbc.get("direction"))
        factors = ngff.pyramid_factors(shape, dims, PYRAMID_LEVELS)
    except (KeyError, TypeError, ValueError):
        out.add(where, "case attributes do not describe an image (dims, shape, spacing, unit)")
        return None
    return _Geometry(dims, spacing, unit, translation, factors)


def _stored_levels(ome: dict[str, Any], where: str, out: _Findings) -> list[str]:
    """The level paths the stored multiscales list (plain level numbers only)."""
    try:
        paths = [str(d["path"]) for d in ome["multiscales"][0]["datasets"]]
    except (KeyError, IndexError, TypeError):
        out.add(where, "not an OME-Zarr 0.5 image (no multiscales)")
        return []
    good = [p for p in paths if _INDEX_RE.fullmatch(p)]
    if len(good) != len(paths) or len(set(good)) != len(good):
        out.add(where, "multiscales list level paths that are not level numbers")
    return sorted(set(good), key=int)


def _verify_labels(
    path: Path,
    case_where: str,
    geometry: _Geometry | None,
    levels: list[str],
    manifest: Manifest,
    out: _Findings,
) -> list[_Array | None]:
    """The NGFF labels group and its one label image; empty if it cannot be read."""
    where = _join(case_where, layout.LABELS_GROUP)
    listing = _scan(path, where, out)
    seg = manifest.segmentation
    if not seg:
        out.add(where, "labels, but the manifest has no segmentation")
        for sub in sorted(listing.dirs):
            _sweep(path / sub, _join(where, sub), out)
        return []
    name = str(seg.get("name", "labels"))
    meta = _node(path, where, listing, "group", out)
    if meta is not None:
        expected = {"ome": {"version": ngff.NGFF_VERSION, "labels": [name]}}
        _expect_attrs(meta["attributes"], expected, where, out, source="the manifest implies")
    _expect(listing, path, where, out, files={"zarr.json"}, dirs={name})
    if not _require(listing, where, out, [name]) or listing.unsafe or meta is None:
        return []
    return _verify_label_image(path / name, _join(where, name), geometry, levels, seg, out)


def _verify_label_image(
    path: Path,
    where: str,
    geometry: _Geometry | None,
    levels: list[str],
    seg: dict[str, Any],
    out: _Findings,
) -> list[_Array | None]:
    listing = _scan(path, where, out)
    meta = _node(path, where, listing, "group", out)
    if meta is not None and geometry is not None:
        classes = {int(k): v for k, v in seg.get("classes", {}).items()}
        ms = geometry.multiscales(path.name, "nearest")
        expected = {"ome": ngff.label_attrs(ms, classes)}
        _expect_attrs(meta["attributes"], expected, where, out, source="the case attributes imply")
    _expect(listing, path, where, out, files={"zarr.json"}, dirs=levels)
    if not _require(listing, where, out, levels) or listing.unsafe or meta is None:
        return []
    return [_verify_array(path, lv, where, listing, geometry, out) for lv in levels]


# -- arrays -------------------------------------------------------------------------------------
def _verify_array(
    parent: Path,
    level: str,
    parent_where: str,
    parent_listing: _Listing,
    geometry: _Geometry | None,
    out: _Findings,
) -> _Array | None:
    """Metadata and chunk tree of one level; None if it must not or cannot be read."""
    if level not in parent_listing.dirs:
        return None  # missing or a link: already a finding of the folder above
    path, where = parent / level, _join(parent_where, level)
    listing = _scan(path, where, out)
    _expect(listing, path, where, out, files={"zarr.json"}, dirs={"c"})
    meta = _node(path, where, listing, "array", out)
    spec = _array_spec(meta, where, geometry, out) if meta is not None else None
    if spec is None:
        return None
    shape, chunks = spec
    grid = tuple(math.ceil(n / c) for n, c in zip(shape, chunks, strict=True))
    safe = not listing.unsafe
    if "c" in listing.dirs:
        safe = _chunk_tree(path / "c", _join(where, "c"), grid, out) and safe
    return _Array(path, where, chunks) if safe else None


def _array_spec(
    meta: dict[str, Any], where: str, geometry: _Geometry | None, out: _Findings
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(shape, chunk shape) of well-formed array metadata, or None (and a finding)."""
    _expect_attrs(meta["attributes"], {}, where, out)
    try:
        shape = tuple(int(n) for n in meta["shape"])
        grid = meta["chunk_grid"]
        chunks = tuple(int(n) for n in grid["configuration"]["chunk_shape"])
        regular = grid["name"] == "regular" and len(chunks) == len(shape) and min(chunks) > 0
    except (KeyError, TypeError, ValueError):
        regular = False
    if not regular or not shape:
        out.add(where, "array metadata do not describe a regular chunk grid")
        return None
    problems = []
    if meta.get("chunk_key_encoding") != _CHUNK_KEY_ENCODING:
        problems.append("chunk key encoding is not the default with '/'")
    if meta.get("storage_transformers", []) != []:
        problems.append("unexpected storage transformers")
    if geometry is not None and meta.get("dimension_names") != list(geometry.dims):
        problems.append("dimension names differ from the case's dims")
    for problem in problems:
        out.add(where, problem)
    return None if problems else (shape, chunks)


def _chunk_tree(path: Path, where: str, grid: tuple[int, ...], out: _Findings) -> bool:
    """Check ``c/i/j/...`` holds only chunk files inside the grid; False if it holds a link."""
    listing = _scan(path, where, out)
    safe = not listing.unsafe
    depth_left = len(grid) - 1
    for name in sorted(listing.files | listing.dirs, key=lambda n: (len(n), n)):
        rel = _join(where, name)
        if not _INDEX_RE.fullmatch(name):
            out.add(rel, "unexpected entry in the chunk tree")
        elif int(name) >= grid[0]:
            out.add(rel, "chunk outside the array's shape")
        elif depth_left and name in listing.dirs:
            safe = _chunk_tree(path / name, rel, grid[1:], out) and safe
        elif depth_left or name in listing.dirs:
            out.add(rel, "unexpected " + ("folder" if name in listing.dirs else "file"))
    return safe


# -- content ------------------------------------------------------------------------------------
def _check_content(case: _Case, manifest: Manifest, out: _Findings) -> None:
    """Checksum, pyramids and mask of a case whose tree holds no link."""
    hasher = CaseHasher()
    shape: list[tuple[int, ...]] = []

    def image_base(image: np.ndarray) -> None:
        hasher.add(image)
        shape.append(image.shape)
        if list(image.shape) != case.mbc.get("shape"):
            out.add(case.where, "shape attribute does not match the data")
        if str(image.dtype) != case.mbc.get("dtype"):
            out.add(case.where, "dtype attribute does not match the data")

    def labels_base(labels: np.ndarray) -> None:
        hasher.add(labels)
        _check_mask(labels, shape[0], case, manifest, out)

    dims = case.geometry.dims
    read = _check_pyramid(case.image, dims, False, image_base, out)
    if read and case.labels:
        read = _check_pyramid(case.labels, dims, True, labels_base, out)
    if read and hasher.checksum() != case.mbc.get("checksum"):
        out.add(case.where, "checksum mismatch: content changed since publish")


def _check_pyramid(
    arrays: Sequence[_Array],
    dims: Sequence[str],
    labels: bool,
    inspect: Callable[[np.ndarray], None],
    out: _Findings,
) -> bool:
    """Read every level once: ``inspect`` level 0, then level k must equal level 0 halved
    k times. Whether level 0 could be read. Holds at most two levels at a time."""
    level = _read(arrays[0], out)
    if level is None:
        return False
    inspect(level)
    for index, array in enumerate(arrays[1:], start=1):
        level = ngff.downsample(level, dims, 2, labels)
        stored = _read(array, out)
        if stored is not None:
            _compare_level(stored, level, array, index, out)
        del stored
    return True


def _read(array: _Array, out: _Findings) -> np.ndarray | None:
    """The whole level, or None with one finding per chunk that does not decode."""
    try:
        z = zarr.open_array(str(array.path), mode="r", zarr_format=3)
    except Exception as exc:  # noqa: BLE001
        out.add(array.where, f"not a readable Zarr array: {describe_error(exc)}")
        return None
    try:
        return np.asarray(z[...])
    except Exception as exc:  # noqa: BLE001
        bad = _undecodable_chunks(z, array.chunks)
        for key, error in bad:
            out.add(_join(array.where, key), f"unreadable chunk: {error}")
        if not bad:
            out.add(array.where, f"unreadable: {describe_error(exc)}")
        return None


def _chunk_slices(shape: Sequence[int], chunks: Sequence[int]) -> Iterable[tuple[str, Any]]:
    """(``c/i/j/...``, slices) for every chunk of the grid."""
    grid = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
    for index in np.ndindex(*grid):
        key = "c/" + "/".join(str(i) for i in index)
        yield key, tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks, strict=True))


def _undecodable_chunks(z: zarr.Array, chunks: Sequence[int]) -> list[tuple[str, str]]:
    bad = []
    for key, index in _chunk_slices(z.shape, chunks):
        try:
            z[index]
        except Exception as exc:  # noqa: BLE001
            bad.append((key, describe_error(exc)))
    return bad


def _compare_level(
    stored: np.ndarray, expected: np.ndarray, array: _Array, level: int, out: _Findings
) -> None:
    if stored.shape != expected.shape or stored.dtype != expected.dtype:
        out.add(
            array.where,
            f"{stored.dtype} {list(stored.shape)}, but level 0 downsampled {level} times "
            f"is {expected.dtype} {list(expected.shape)}",
        )
    elif not np.array_equal(stored, expected, equal_nan=True):
        keys = [
            key
            for key, index in _chunk_slices(stored.shape, array.chunks)
            if not np.array_equal(stored[index], expected[index], equal_nan=True)
        ]
        more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
        out.add(
            array.where, f"differs from level 0 downsampled in chunk {', '.join(keys[:5])}{more}"
        )


def _check_mask(
    labels: np.ndarray, shape: tuple[int, ...], case: _Case, manifest: Manifest, out: _Findings
) -> None:
    """The label image fits the image and the manifest, and its volumes are the attribute's."""
    where = _join(case.where, layout.LABELS_GROUP)
    if labels.shape != shape:
        out.add(where, "label image shape differs from the image's")
    if labels.dtype != np.uint8:
        out.add(where, f"label image is {labels.dtype}, not uint8")
        return
    present = {int(v) for v in np.flatnonzero(np.bincount(labels.ravel()))}
    unknown = sorted(present - set(manifest.segmentation_classes))
    if unknown:
        out.add(where, f"label values {unknown} are not the manifest's classes")
    stats = schema.label_stats(labels, case.geometry.spacing, manifest)
    if "label_stats" in case.mbc and case.mbc["label_stats"] != stats:
        out.add(case.where, f"label_stats attribute differs from the mask's volumes {stats}")


# -- catalog ------------------------------------------------------------------------------------
def _verify_catalog(
    path: Path,
    dataset: str,
    listing: _Listing,
    manifest: Manifest,
    cases: dict[str, dict[str, Any] | None],
    out: _Findings,
) -> None:
    """Columns, rows and splits of the dataset's catalog against its cases."""
    where = f"{dataset}/catalog"
    if layout.CATALOG_FILE in listing.unsafe:
        out.add(where, "not read (not a regular file)")
        return
    if layout.CATALOG_FILE not in listing.files:
        if cases:
            out.add(where, "missing")
        return
    frame = _read_catalog(path / layout.CATALOG_FILE, where, manifest, out)
    if frame is None:
        return
    _check_rows(frame, cases, manifest, where, out)
    _check_splits(frame, where, out)


def _read_catalog(
    path: Path, where: str, manifest: Manifest, out: _Findings
) -> pd.DataFrame | None:
    """The catalog as a frame, after checking its columns and file metadata."""
    try:
        table = pq.read_table(path)
        frame = table.to_pandas()
    except Exception as exc:  # noqa: BLE001
        out.add(where, f"unreadable: {describe_error(exc)}")
        return None
    expected = list(schema.catalog_columns(manifest))
    names = list(table.column_names)
    for name in names:
        if name not in expected:
            out.add(where, f"unexpected column {name!r}")
    for name in expected:
        if name not in names:
            out.add(where, f"missing column {name!r}")
    if sorted(names) == sorted(expected) and names != expected:
        out.add(where, "columns are not in the catalog's order")
    for key in sorted(set(table.schema.metadata or {}) - {b"pandas"}):
        out.add(where, f"unexpected file metadata {key.decode(errors='replace')!r}")
    return frame if "case_id" in names else None


def _check_rows(
    frame: pd.DataFrame,
    cases: dict[str, dict[str, Any] | None],
    manifest: Manifest,
    where: str,
    out: _Findings,
) -> None:
    """One row per case, each holding what the case's attributes imply."""
    counts = Counter(str(c) for c in frame["case_id"])
    for case_id in sorted(c for c, n in counts.items() if n > 1):
        out.add(where, f"case {_case_id(case_id)} listed more than once")
    for case_id in sorted(set(cases) - set(counts)):
        out.add(where, f"case {case_id} missing from the catalog")
    for case_id in sorted(set(counts) - set(cases)):
        out.add(where, f"lists case {_case_id(case_id)}, which is not in the store")
    for row in frame.to_dict("records"):
        mbc = cases.get(str(row["case_id"]))
        if not mbc:
            continue
        for column, value in catalog_row(mbc, manifest).items():
            if column in row and not _same(row[column], value):
                out.add(where, f"{row['case_id']}: {_difference(column, row[column], value)}")


def _case_id(value: str) -> str:
    """A case id as shown in a finding: only what looks like one (never a cell's content)."""
    return value if layout.CASE_ID_RE.fullmatch(value) else "<not a case id>"


def _difference(column: str, cell: Any, value: Any) -> str:
    """How a cell differs from the case; only numbers are shown (text could identify)."""
    cell = _plain(cell)
    numbers = int | float
    if isinstance(cell, numbers) and isinstance(value, numbers):
        return f"{column} is {cell!r}, the case says {value!r}"
    return f"{column} differs from the case's attributes"


def _plain(value: Any) -> Any:
    """A catalog cell as plain Python (None where missing)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _same(cell: Any, value: Any) -> bool:
    """A catalog cell holds ``value`` (numbers compare by value, anything else by type too)."""
    cell = _plain(cell)
    if cell is None or value is None:
        return cell is None and value is None
    if isinstance(cell, int | float) and isinstance(value, int | float):
        return cell == value
    return type(cell) is type(value) and cell == value


def _check_splits(frame: pd.DataFrame, where: str, out: _Findings) -> None:
    """Known split values, and every case of a patient in one split."""
    if "split" not in frame or "patient" not in frame:
        return
    by_patient: dict[str, dict[str, list[str]]] = {}
    for case_id, patient, split in zip(
        frame["case_id"], frame["patient"], frame["split"], strict=True
    ):
        if split not in SPLITS:
            out.add(where, f"{_case_id(str(case_id))}: split is not one of {list(SPLITS)}")
        by_patient.setdefault(str(patient), {}).setdefault(str(split), []).append(str(case_id))
    for patient, splits in sorted(by_patient.items()):
        if len(splits) > 1:
            name = patient if PSEUDONYM_RE.match(patient) else "<not a pseudonym>"
            detail = "; ".join(
                f"{s if s in SPLITS else '?'}: {', '.join(sorted(_case_id(i) for i in ids))}"
                for s, ids in sorted(splits.items())
            )
            out.add(where, f"patient {name} spans {len(splits)} splits ({detail})")
