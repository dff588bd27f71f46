"""One case for ``mbc verify``: its attributes, labels group, arrays and chunk trees (steps 1, 2).

The case group's attributes must pass the PHI gate, agree with where the case is and describe
its geometry, from which the NGFF multiscales and labels metadata are rebuilt; every pyramid
level's array metadata and chunk tree are checked. The result is a :class:`Case` whose arrays
are safe to read, or None.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import phi_gate
from ...manifests import Manifest
from .. import layout, ngff
from ..writer import PYRAMID_LEVELS
from .findings import Findings, join
from .metadata import expect_attrs, node
from .tree import Listing, expect, require, scan, sweep

_CHUNK_KEY_ENCODING = {"name": "default", "configuration": {"separator": "/"}}
_INDEX_RE = re.compile(r"0|[1-9][0-9]*")
_KIND_OF_PREFIX = {"ct": "ct-volume", "fu": "fundus", "dc": "generic"}
_AXES_ORDER = "tczyx"


@dataclass(frozen=True)
class Geometry:
    """What a case's attributes say about its arrays and their pyramid."""

    dims: tuple[str, ...]
    spacing: tuple[float, ...]
    unit: str | None
    translation: list[float]
    factors: list[list[int]]

    def multiscales(self, name: str, downsampling: str) -> dict[str, Any]:
        """The NGFF multiscales of image ``name`` with this geometry."""
        scales = ngff.level_scales(self.dims, self.spacing, self.factors)
        return ngff.multiscales(name, self.dims, self.unit, scales, self.translation, downsampling)


@dataclass(frozen=True)
class Array:
    """One pyramid level whose folder holds nothing but its metadata and chunk files."""

    path: Path
    where: str
    chunks: tuple[int, ...]


@dataclass
class Case:
    """A case whose tree and metadata are sound enough to read its arrays."""

    where: str
    mbc: dict[str, Any]
    geometry: Geometry
    image: list[Array]
    labels: list[Array]


def case_metadata(
    attrs: dict[str, Any],
    case_id: str,
    dataset: str,
    manifest: Manifest,
    where: str,
    out: Findings,
) -> tuple[dict[str, Any], Geometry | None, list[str]]:
    """The case group's attributes: (mbc attributes, geometry, level paths)."""
    mbc = attrs.get("mbc") if isinstance(attrs.get("mbc"), dict) else {}
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else {}
    expect_attrs(attrs, {"ome": ome, "mbc": mbc}, where, out)
    for problem in phi_gate.check_case_attrs(mbc, manifest):
        out.add(where, f"PHI gate: {problem}")
    _check_identity(mbc, case_id, dataset, where, out)
    geometry = _geometry(mbc, where, out)
    levels = _stored_levels(ome, where, out)
    if geometry is not None:
        expected = ngff.image_attrs(geometry.multiscales(case_id, "mean"))
        expect_attrs(ome, expected, where, out, "ome attribute", "the case attributes imply")
    return mbc, geometry, levels


def case_arrays(
    path: Path,
    where: str,
    listing: Listing,
    mbc: dict[str, Any],
    geometry: Geometry | None,
    levels: list[str],
    manifest: Manifest,
    out: Findings,
) -> Case | None:
    """The case's folder and arrays; the case to read, or None where it must not be read."""
    expect(listing, path, where, out, files={"zarr.json"}, dirs={*levels, layout.LABELS_GROUP})
    sound = require(listing, where, out, levels) and not listing.unsafe
    image = [_verify_array(path, lv, where, listing, geometry, out) for lv in levels]
    labels: list[Array | None] = []
    if layout.LABELS_GROUP in listing.dirs:
        labels = _verify_labels(path / layout.LABELS_GROUP, where, geometry, levels, manifest, out)
        sound = sound and bool(labels)
    elif layout.LABELS_GROUP not in listing.unsafe and mbc.get("label_stats") is not None:
        out.add(where, "label_stats attribute without a label image")
    image_ok = [a for a in image if a is not None]
    labels_ok = [a for a in labels if a is not None]
    if not sound or geometry is None or not levels or None in image + labels:
        return None
    return Case(where, mbc, geometry, image_ok, labels_ok)


def _check_identity(
    mbc: dict[str, Any], case_id: str, dataset: str, where: str, out: Findings
) -> None:
    """The case's id, dataset and kind agree with where it is."""
    if mbc.get("case_id") != case_id:
        out.add(where, "case_id attribute is not the folder's name")
    if "dataset" in mbc and mbc["dataset"] != dataset:
        out.add(where, f"dataset attribute is not {dataset!r}")
    kind = _KIND_OF_PREFIX[case_id.split("-", 1)[0]]
    if mbc.get("kind") != kind:
        out.add(where, f"kind attribute is not {kind!r} (a {case_id[:3]} case)")


def _geometry(mbc: dict[str, Any], where: str, out: Findings) -> Geometry | None:
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
    return Geometry(dims, spacing, unit, translation, factors)


def _stored_levels(ome: dict[str, Any], where: str, out: Findings) -> list[str]:
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
    geometry: Geometry | None,
    levels: list[str],
    manifest: Manifest,
    out: Findings,
) -> list[Array | None]:
    """The NGFF labels group and its one label image; empty if it cannot be read."""
    where = join(case_where, layout.LABELS_GROUP)
    listing = scan(path, where, out)
    seg = manifest.segmentation
    if not seg:
        out.add(where, "labels, but the manifest has no segmentation")
        for sub in sorted(listing.dirs):
            sweep(path / sub, join(where, sub), out)
        return []
    name = str(seg.get("name", "labels"))
    meta = node(path, where, listing, "group", out)
    if meta is not None:
        expected = {"ome": {"version": ngff.NGFF_VERSION, "labels": [name]}}
        expect_attrs(meta["attributes"], expected, where, out, source="the manifest implies")
    expect(listing, path, where, out, files={"zarr.json"}, dirs={name})
    if not require(listing, where, out, [name]) or listing.unsafe or meta is None:
        return []
    return _verify_label_image(path / name, join(where, name), geometry, levels, seg, out)


def _verify_label_image(
    path: Path,
    where: str,
    geometry: Geometry | None,
    levels: list[str],
    seg: dict[str, Any],
    out: Findings,
) -> list[Array | None]:
    """The one label image: its group attributes and every level; empty if it cannot be read."""
    listing = scan(path, where, out)
    meta = node(path, where, listing, "group", out)
    if meta is not None and geometry is not None:
        classes = {int(k): v for k, v in seg.get("classes", {}).items()}
        ms = geometry.multiscales(path.name, "nearest")
        expected = {"ome": ngff.label_attrs(ms, classes)}
        expect_attrs(meta["attributes"], expected, where, out, source="the case attributes imply")
    expect(listing, path, where, out, files={"zarr.json"}, dirs=levels)
    if not require(listing, where, out, levels) or listing.unsafe or meta is None:
        return []
    return [_verify_array(path, lv, where, listing, geometry, out) for lv in levels]


# -- arrays and chunk trees -------------------------------------------------------------------
def _verify_array(
    parent: Path,
    level: str,
    parent_where: str,
    parent_listing: Listing,
    geometry: Geometry | None,
    out: Findings,
) -> Array | None:
    """Metadata and chunk tree of one level; None if it must not or cannot be read."""
    if level not in parent_listing.dirs:
        return None  # missing or a link: already a finding of the folder above
    path, where = parent / level, join(parent_where, level)
    listing = scan(path, where, out)
    expect(listing, path, where, out, files={"zarr.json"}, dirs={"c"})
    meta = node(path, where, listing, "array", out)
    spec = _array_spec(meta, where, geometry, out) if meta is not None else None
    if spec is None:
        return None
    shape, chunks = spec
    grid = tuple(math.ceil(n / c) for n, c in zip(shape, chunks, strict=True))
    safe = not listing.unsafe
    if "c" in listing.dirs:
        safe = _chunk_tree(path / "c", join(where, "c"), grid, out) and safe
    return Array(path, where, chunks) if safe else None


def _array_spec(
    meta: dict[str, Any], where: str, geometry: Geometry | None, out: Findings
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(shape, chunk shape) of well-formed array metadata, or None (and a finding)."""
    expect_attrs(meta["attributes"], {}, where, out)
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


def _chunk_tree(path: Path, where: str, grid: tuple[int, ...], out: Findings) -> bool:
    """Check ``c/i/j/...`` holds only chunk files inside the grid; False if it holds a link."""
    listing = scan(path, where, out)
    safe = not listing.unsafe
    depth_left = len(grid) - 1
    for name in sorted(listing.files | listing.dirs, key=lambda n: (len(n), n)):
        rel = join(where, name)
        if not _INDEX_RE.fullmatch(name):
            out.add(rel, "unexpected entry in the chunk tree")
        elif int(name) >= grid[0]:
            out.add(rel, "chunk outside the array's shape")
        elif depth_left and name in listing.dirs:
            safe = _chunk_tree(path / name, rel, grid[1:], out) and safe
        elif depth_left or name in listing.dirs:
            out.add(rel, "unexpected " + ("folder" if name in listing.dirs else "file"))
    return safe
