"""mbc: de-identification, the anonymized Zarr store, ingest and research data access."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Store", "open_store", "__version__"]

if TYPE_CHECKING:
    from .store.reader import Store, open_store


def __getattr__(name: str) -> Any:
    # Imported lazily: `import mbc_lib` stays cheap for the CLI and data-loader workers.
    if name in ("Store", "open_store"):
        from .store import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'mbc_lib' has no attribute {name!r}")
