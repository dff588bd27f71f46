"""Named checkpoints in long writes, where a test (or an operator) can stop the process.

``MBC_STOP_AT=<name>[:<n>]`` makes the process send itself SIGSTOP the ``n``-th time (default
first) it reaches checkpoint ``name``; a crash test waits until the process is stopped, then
kills it with SIGKILL, so the kill lands exactly there and not after the work has finished.
Checkpoints: ``case-staged`` (a case written to staging, not yet renamed into place),
``case-published`` (renamed, catalog not yet rewritten), ``catalog-staged`` (the new catalog
written beside the old one), ``deid-progress`` (de-identification under way, results coming
back from the workers).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "MBC_STOP_AT"
NAMES = ("case-staged", "case-published", "catalog-staged", "deid-progress")
_reached: Counter[str] = Counter()


def checkpoint(name: str) -> None:
    """Mark checkpoint ``name``; stop this process here if ``$MBC_STOP_AT`` asks for it."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, count = wanted.partition(":")
    if target != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGSTOP)


__all__ = ["ENV", "NAMES", "checkpoint"]
