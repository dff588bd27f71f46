"""Local mode's stand-in for per-dataset mounts: a store view of symbolic links.

A view holds the store's ``zarr.json`` and one link per dataset the researcher's groups may see,
so ``mbc_lib.open_store()`` lists just those. It shows the policy, it does not enforce it: a
local process can follow the links back to the whole store. Containers enforce it by mounts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def build_store_view(view: Path, store: Path, datasets: Iterable[str]) -> Path:
    """(Re)make ``view`` as links to ``store``'s root metadata and ``datasets``; return it."""
    view, store = Path(view), Path(store).absolute()
    wanted = {"zarr.json", *datasets}
    view.mkdir(parents=True, exist_ok=True)
    for entry in view.iterdir():
        stale_link = entry.is_symlink() and entry.name not in wanted
        if stale_link or (entry.is_file() and not entry.is_symlink()):
            entry.unlink()
    for name in sorted(wanted):
        link, target = view / name, store / name
        if not target.exists():
            continue
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=target.is_dir())
    return view
