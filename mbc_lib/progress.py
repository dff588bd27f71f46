"""Progress bars for long work: shown on a terminal, silent in logs and pipes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], enabled: bool = True, **kwargs: object) -> Iterable[T]:
    """``tqdm(iterable)`` when ``enabled`` and stderr is a terminal, else the bare iterable."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=None if enabled else True, **kwargs)  # type: ignore[arg-type]
