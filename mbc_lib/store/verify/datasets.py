"""The walk of ``mbc verify`` through one dataset: its group, manifest, cases and catalog.

Each case goes through steps 1 and 2 (:mod:`.cases`) and, where its tree holds no link, step 3
(:mod:`.content`); the dataset's catalog is step 4 (:mod:`.catalog_check`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import MbcError, describe_error
from ...manifests import Manifest, parse_manifest
from ...progress import progress as progress_bar
from .. import layout
from .cases import case_arrays, case_metadata
from .catalog_check import verify_catalog
from .content import check_content
from .findings import Findings, join
from .metadata import expect_attrs, node
from .tree import Listing, expect, require, scan, sweep

_NOT_READ = "content not read (see the findings above)"


def verify_dataset(path: Path, name: str, out: Findings, progress: bool) -> None:
    """One dataset group: its entries, manifest, cases and catalog."""
    listing = scan(path, name, out)
    expect(listing, path, name, out, files={"zarr.json", layout.CATALOG_FILE}, dirs={layout.CASES})
    manifest = _dataset_manifest(path, name, listing, out)
    if manifest is None:
        for sub in sorted(listing.dirs):
            sweep(path / sub, join(name, sub), out)
        return
    if require(listing, name, out, [layout.CASES]):
        cases = _verify_cases(path / layout.CASES, name, manifest, out, progress)
        verify_catalog(path, name, listing, manifest, cases, out)


def _dataset_manifest(path: Path, name: str, listing: Listing, out: Findings) -> Manifest | None:
    """The manifest in the dataset group's attributes, or None (and a finding)."""
    meta = node(path, name, listing, "group", out)
    if meta is None:
        return None
    attrs = meta["attributes"]
    mbc = attrs.get("mbc") if isinstance(attrs.get("mbc"), dict) else {}
    expect_attrs(attrs, {"mbc": mbc}, name, out)
    expect_attrs(mbc, {"manifest": mbc.get("manifest")}, name, out, "mbc attribute")
    try:
        manifest = parse_manifest(mbc.get("manifest"), name)
    except MbcError as exc:
        out.add(name, f"manifest in the store is invalid: {exc}")
        return None
    if manifest.name != name:
        out.add(name, f"manifest is named {manifest.name!r}, not after its folder")
    return manifest


def _verify_cases(
    path: Path, dataset: str, manifest: Manifest, out: Findings, progress: bool
) -> dict[str, dict[str, Any] | None]:
    """Verify every case; return each case's ``mbc`` attributes (None where unreadable)."""
    where = join(dataset, layout.CASES)
    listing = scan(path, where, out)
    meta = node(path, where, listing, "group", out)
    if meta is not None:
        expect_attrs(meta["attributes"], {}, where, out)
    ids = sorted(d for d in listing.dirs if layout.CASE_ID_RE.fullmatch(d))
    expect(listing, path, where, out, files={"zarr.json"}, dirs=ids)
    cases = {}
    for case_id in progress_bar(ids, progress, desc=f"verify {dataset}", unit="case"):
        case_where = join(where, case_id)
        try:
            cases[case_id] = _verify_case(path / case_id, case_where, dataset, manifest, out)
        except Exception as exc:  # noqa: BLE001 - a broken case is a finding, never a crash
            out.add(case_where, f"cannot be checked: {describe_error(exc)}")
            cases[case_id] = None
    return cases


def _verify_case(
    path: Path, where: str, dataset: str, manifest: Manifest, out: Findings
) -> dict[str, Any] | None:
    """Steps 1 to 3 for one case; return its ``mbc`` attributes (None where unreadable)."""
    listing = scan(path, where, out)
    meta = node(path, where, listing, "group", out)
    if meta is None:
        for sub in sorted(listing.dirs):
            sweep(path / sub, join(where, sub), out)
        out.add(where, _NOT_READ)
        return None
    mbc, geometry, levels = case_metadata(
        meta["attributes"], path.name, dataset, manifest, where, out
    )
    case = case_arrays(path, where, listing, mbc, geometry, levels, manifest, out)
    if case is None:
        out.add(where, _NOT_READ)
    else:
        check_content(case, manifest, out)
    return mbc
