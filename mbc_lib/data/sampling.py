"""Chunk-aware sampling: reproducible patch starts, optionally chunk-aligned; slab-grouped order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def patch_start(
    shape: Sequence[int],
    patch: Sequence[int],
    rng: np.random.Generator,
    chunks: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """A random start so that ``patch`` fits in ``shape`` (0 where the volume is smaller).

    With ``chunks``, starts are multiples of the chunk size along each axis (the last one
    that still fits), so a patch touches as few chunks as its size allows.
    """
    starts = []
    for axis, (n, p) in enumerate(zip(shape, patch, strict=True)):
        room = max(n - p, 0)
        if chunks is None:
            starts.append(int(rng.integers(0, room + 1)))
        else:
            step = chunks[axis]
            starts.append(int(rng.integers(0, room // step + 1)) * step)
    return tuple(starts)


def patch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: the same (seed, epoch, index) gives the same patch."""
    return np.random.default_rng([seed, epoch, index])


class GroupShuffleSampler(Sampler[int]):
    """A shuffled order that keeps items sharing chunks close together.

    ``groups`` lists the item indices that read the same chunks (e.g. the slices of one chunk
    slab: :meth:`CTSliceDataset.slab_groups`). Each epoch the groups are shuffled, and the
    items of ``window`` consecutive groups are shuffled together, so a cache holding
    ``window`` groups' chunks decodes each chunk once per epoch instead of once per item.
    Call ``set_epoch`` before each epoch for a new order.
    """

    def __init__(self, groups: Sequence[Sequence[int]], window: int = 8, seed: int = 0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.groups = [np.asarray(g, dtype=np.int64) for g in groups if len(g)]
        self.window = int(window)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.groups))
        for begin in range(0, len(order), self.window):
            items = np.concatenate([self.groups[g] for g in order[begin : begin + self.window]])
            yield from (int(i) for i in rng.permutation(items))
