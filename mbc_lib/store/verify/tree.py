"""Step 1 of ``mbc verify``, the tree: every folder listed without following links.

A symbolic link or a special file is a finding and is never opened; :func:`expect` holds a
folder to the names its level allows, and :func:`sweep` reports every link and special file
below a folder that verify cannot interpret.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .findings import Findings, join


@dataclass
class Listing:
    """One folder's entries: regular files, folders, and links or special files (unsafe)."""

    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    unsafe: set[str] = field(default_factory=set)

    def names(self) -> set[str]:
        """Every entry, whatever its kind."""
        return self.files | self.dirs | self.unsafe


def _special(entry: os.DirEntry[str]) -> str:
    """What kind of special file ``entry`` is (never following a link)."""
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except OSError:
        return "special file"
    kinds = {
        stat.S_ISFIFO: "FIFO",
        stat.S_ISSOCK: "socket",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def scan(path: Path, where: str, out: Findings) -> Listing:
    """List ``path`` without following links; each link or special file is a finding."""
    listing = Listing()
    try:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        out.add(where, f"cannot list: {exc.strerror}")
        return listing
    for entry in entries:
        rel = join(where, entry.name)
        if entry.is_symlink():
            listing.unsafe.add(entry.name)
            out.add(rel, f"symbolic link to {_link_target(entry.path)!r}, not followed")
        elif entry.is_dir(follow_symlinks=False):
            listing.dirs.add(entry.name)
        elif entry.is_file(follow_symlinks=False):
            listing.files.add(entry.name)
        else:
            listing.unsafe.add(entry.name)
            out.add(rel, f"{_special(entry)}, not a regular file or folder")
    return listing


def _link_target(path: str) -> str:
    """Where the link at ``path`` points ("?" if it cannot be read)."""
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def sweep(path: Path, where: str, out: Findings) -> None:
    """Report every link and special file below ``path`` (a folder verify cannot interpret)."""
    listing = scan(path, where, out)
    for name in sorted(listing.dirs):
        sweep(path / name, join(where, name), out)


def expect(
    listing: Listing,
    path: Path,
    where: str,
    out: Findings,
    files: Collection[str] = (),
    dirs: Collection[str] = (),
) -> None:
    """Every entry of ``listing`` outside ``files`` and ``dirs`` is a finding."""
    for name in sorted(listing.files - set(files)):
        out.add(join(where, name), "unexpected file")
    for name in sorted(listing.dirs - set(dirs)):
        out.add(join(where, name), "unexpected folder")
        sweep(path / name, join(where, name), out)


def require(listing: Listing, where: str, out: Findings, dirs: Iterable[str]) -> bool:
    """Whether every folder in ``dirs`` is there (a link in its place is already a finding)."""
    missing = [d for d in dirs if d not in listing.dirs]
    for name in missing:
        if name not in listing.unsafe:
            out.add(join(where, name), "missing")
    return not missing
