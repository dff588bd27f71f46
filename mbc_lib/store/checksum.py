"""Content checksum of a case: SHA-256 over the full-resolution image and label arrays."""

from __future__ import annotations

import hashlib

import numpy as np

PREFIX = "sha256:"


def array_digest(h: hashlib._Hash, array: np.ndarray) -> None:
    """Feed dtype, shape and little-endian C-order bytes of ``array`` into ``h``."""
    a = np.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    h.update(f"{a.dtype.str}{list(a.shape)}".encode())
    h.update(memoryview(a).cast("B"))


def case_checksum(image: np.ndarray, labels: np.ndarray | None) -> str:
    h = hashlib.sha256()
    array_digest(h, image)
    if labels is not None:
        h.update(b"labels")
        array_digest(h, labels)
    return PREFIX + h.hexdigest()
