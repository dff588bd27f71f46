"""The store as the hub sees it: where it is, where containers see it, and who may read what.

Each dataset's access group comes from the store itself (the manifest ingest wrote into the
dataset's ``zarr.json``), read with :mod:`mbc_lib`'s reader, so the hub and the library answer
"which datasets does this researcher see" from one source.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from traitlets.config import Configurable

from .traits import AbsolutePath, ContainerPath


class MbcStore(Configurable):
    """The anonymized Zarr store researchers read (the spawners mount it, the OIDC login
    lets in the groups its datasets name)."""

    path = AbsolutePath(
        "work-demo/store",
        help="The store's root on the host (each GPU node: the same path). Environment: "
        "MBC_STORE_HOST_PATH.",
    ).tag(config=True)

    mount_path = ContainerPath(
        "/mnt/mbc-store",
        help="Where a researcher's container sees the store, read-only ($MBC_STORE there).",
    ).tag(config=True)

    @property
    def root(self) -> Path:
        return Path(self.path).expanduser().absolute()

    def present(self) -> bool:
        """Whether the store is there (its root metadata)."""
        return (self.root / "zarr.json").is_file()

    def dataset_groups(self) -> dict[str, str]:
        """Dataset name -> the group whose members may read it, from the store's manifests;
        empty where there is no store yet."""
        return dataset_groups(self.root)

    def visible(self, user_groups: Iterable[str]) -> list[str]:
        """The datasets of the store that members of ``user_groups`` may read."""
        return visible_datasets(self.dataset_groups(), user_groups)


def dataset_groups(store_root: Path) -> dict[str, str]:
    """Dataset name -> access group, as the store's own manifests say."""
    from mbc_lib.errors import MbcError
    from mbc_lib.store.reader import open_store

    if not (Path(store_root) / "zarr.json").is_file():
        return {}
    try:
        store = open_store(store_root)
    except MbcError:
        return {}
    groups = {}
    for name in store.datasets():
        try:
            groups[name] = store.manifest(name).group
        except MbcError:
            continue  # a dataset without a readable manifest is seen by nobody
    return groups


def visible_datasets(
    groups_of_datasets: Mapping[str, str], user_groups: Iterable[str]
) -> list[str]:
    """The datasets a member of ``user_groups`` may see, sorted. A dataset whose manifest names
    no group of theirs is seen by nobody of them."""
    groups = set(user_groups)
    return sorted(name for name, group in groups_of_datasets.items() if group in groups)
