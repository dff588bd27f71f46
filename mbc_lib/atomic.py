"""Atomic file writes: a temporary sibling, then one rename, so a reader never sees half a file.

Every file mbc writes that others read (de-identified output, the catalog) goes through
:func:`atomic_path`; a crash leaves at most a dot-named ``.tmp`` sibling, never a partial file
under the real name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temporary_sibling(target: Path) -> Path:
    """A unique dot-named path beside ``target`` for writing it."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


@contextmanager
def atomic_path(target: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``target`` (with ``mode``) atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(target)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(target: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target, mode) as tmp:
        tmp.write_bytes(data)


__all__ = ["TMP_SUFFIX", "atomic_path", "temporary_sibling", "write_bytes"]
