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

The store's root is checked here; :mod:`.datasets` walks each dataset through the steps, which
live in :mod:`.tree` (1), :mod:`.metadata` and :mod:`.cases` (2), :mod:`.content` (3) and
:mod:`.catalog_check` (4), all recording into one :class:`.findings.Findings`.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import MbcError, describe_error
from .. import layout
from .datasets import verify_dataset
from .findings import Findings
from .metadata import expect_attrs, node
from .tree import expect, scan


def verify_store(root: Path, progress: bool = False) -> list[str]:
    """Every problem found in the store, one line each (empty list: the store is sound)."""
    root = Path(root)
    if not (root / "zarr.json").is_file():
        raise MbcError(f"not an mbc store (no zarr.json): {root}")
    out = Findings()
    listing = scan(root, "", out)
    datasets = sorted(d for d in listing.dirs if not d.startswith("."))
    expect(
        listing,
        root,
        "",
        out,
        files={"zarr.json", layout.LOCK_FILE},
        dirs={layout.STAGING, *datasets},
    )
    meta = node(root, "", listing, "group", out)
    if meta is not None:
        header = {"mbc": {"store_version": layout.STORE_VERSION}}
        expect_attrs(meta["attributes"], header, "", out, source="this store version has")
    if layout.STAGING in listing.dirs and scan(root / layout.STAGING, layout.STAGING, out).names():
        out.add(layout.STAGING, "holds a half-written case (an ingest crashed): re-run ingest")
    for name in datasets:
        try:
            verify_dataset(root / name, name, out, progress)
        except Exception as exc:  # noqa: BLE001 - a broken dataset is a finding, never a crash
            out.add(name, f"cannot be checked: {describe_error(exc)}")
    return out.lines
