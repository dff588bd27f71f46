"""The pixel budget: how large an image any decoder is allowed to unpack.

A 20 KB PNG can declare 13000 x 13000 pixels and a DICOM header 60000 x 60000: decoding
either costs gigabytes. Every decoder checks the size an image declares against this budget
before it decodes, and refuses the image (never the run) when it is over.
"""

from __future__ import annotations

import os

from ..errors import MbcError

#: Default budget per image (a photograph, one DICOM object's frames, one CT slice):
#: 2**27 = 134 million pixels, far above a fundus camera (~24 MP) or a CT slice (0.26 MP).
DEFAULT_MAX_PIXELS = 1 << 27
ENV_MAX_PIXELS = "MBC_MAX_PIXELS"


class OverBudget(ValueError):
    """An image declares more pixels than the budget; the message says how many."""


def max_pixels(value: int | str | None = None) -> int:
    """The budget: ``value``, else ``$MBC_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    raw = value if value is not None else os.environ.get(ENV_MAX_PIXELS)
    if raw is None or raw == "":
        return DEFAULT_MAX_PIXELS
    try:
        budget = int(raw)
    except (TypeError, ValueError):
        raise MbcError(f"pixel budget must be a whole number, not {raw!r}") from None
    if budget < 1:
        raise MbcError(f"pixel budget must be at least 1, not {budget}")
    return budget


def check_pixels(count: int, budget: int, what: str) -> None:
    """Raise :class:`OverBudget` when ``count`` pixels exceed ``budget``."""
    if count > budget:
        raise OverBudget(
            f"{what} declares {count:,} pixels, over the budget of {budget:,} "
            f"(--max-pixels / ${ENV_MAX_PIXELS})"
        )


__all__ = ["DEFAULT_MAX_PIXELS", "ENV_MAX_PIXELS", "OverBudget", "check_pixels", "max_pixels"]
