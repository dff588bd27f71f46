"""``zarr.json`` for ``mbc verify``: each node read as plain JSON, its attributes held to account.

A group or array folder's ``zarr.json`` must be Zarr v3 metadata of its node type with no key
the writer does not write; attributes are compared key by key with what the writer writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import describe_error
from .findings import Findings, join
from .tree import Listing

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


def node(
    path: Path, where: str, listing: Listing, node_type: str, out: Findings
) -> dict[str, Any] | None:
    """The parsed ``zarr.json`` of a group or array folder, or None (and a finding)."""
    if "zarr.json" not in listing.files:
        if "zarr.json" not in listing.unsafe:
            out.add(where, "no zarr.json")
        return None
    where_file = join(where, "zarr.json")
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


def expect_attrs(
    actual: dict[str, Any],
    expected: dict[str, Any],
    where: str,
    out: Findings,
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
