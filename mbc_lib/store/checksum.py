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


class CaseHasher:
    """The case checksum fed one array at a time: the image, then the labels if any."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._arrays = 0

    def add(self, array: np.ndarray) -> None:
        if self._arrays:
            self._h.update(b"labels")
        array_digest(self._h, array)
        self._arrays += 1

    def checksum(self) -> str:
        return PREFIX + self._h.hexdigest()


def case_checksum(image: np.ndarray, labels: np.ndarray | None) -> str:
    hasher = CaseHasher()
    hasher.add(image)
    if labels is not None:
        hasher.add(labels)
    return hasher.checksum()
