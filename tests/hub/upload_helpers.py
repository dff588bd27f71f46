"""The ingest service under a real hub: society tokens, its process, the trees it is sent."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import requests

from .hub_helpers import HubProcess, wait_for

SERVICE = "services/mbc-upload"


def society_token(hub: HubProcess, society: str) -> str:
    return (hub.data_dir / "society-tokens" / f"{society}.token").read_text().strip()


def api_url(hub: HubProcess) -> str:
    return f"{hub.url}/{SERVICE}/api"


def wait_for_service(hub: HubProcess, timeout: float = 60) -> None:
    def up() -> bool:
        return requests.get(f"{api_url(hub)}/health", timeout=5).status_code == 200

    wait_for(up, timeout, "the ingest service behind the hub's proxy")


def service_pids(hub: HubProcess) -> list[int]:
    """The pids of this hub's ingest service (its command and its platform file)."""
    pids = []
    wanted = f"MBC_PLATFORM_CONFIG={hub.platform_file.absolute()}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mbc_hub.upload" in cmdline and wanted in environ:
            pids.append(int(entry.name))
    return pids


def kill_service(hub: HubProcess) -> int:
    """kill -9 the ingest service; returns the pid killed (the hub starts a new one)."""
    pids = service_pids(hub)
    assert len(pids) == 1, f"expected one ingest service process, found {pids}"
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: pids[0] not in service_pids(hub), 10, "the killed service to go")
    return pids[0]


def lock_waiters(path: Path) -> int:
    """How many processes wait, blocked, for an flock on ``path`` (from /proc/locks)."""
    inode = os.stat(path).st_ino
    waiting = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and fields[fields.index("->") + 1] == "FLOCK":
            device_inode = fields[fields.index("->") + 5]
            waiting += int(device_inode.rsplit(":", 1)[-1]) == inode
    return waiting


def tree_files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in Path(root).rglob("*") if p.is_file())


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def array_bytes(store: Path, dataset: str) -> dict[str, str]:
    """Every file of a dataset's cases but their metadata (which holds the ingest time), by
    path, as a hash: what must be the same whichever way the same files were ingested."""
    cases = Path(store) / dataset / "cases"
    return {
        p.relative_to(cases).as_posix(): sha256(p)
        for p in tree_files(cases)
        if p.name != "zarr.json" and not p.name.startswith("catalog")
    }


def case_count(store: Path, dataset: str) -> int:
    """Cases of ``dataset`` in the store's catalog now (0 while there is none)."""
    from mbc_lib.errors import MbcError
    from mbc_lib.store.reader import open_store

    if not (Path(store) / "zarr.json").exists():
        return 0
    try:
        return len(open_store(store).catalog(dataset))
    except MbcError:
        return 0


def wait_for_cases(store: Path, dataset: str, count: int, timeout: float = 60) -> list[str]:
    from mbc_lib.store.reader import open_store

    def enough() -> list[str] | None:
        if not (Path(store) / "zarr.json").exists():
            return None
        s = open_store(store)
        if dataset not in s.datasets():
            return None
        try:
            ids = list(s.catalog(dataset)["case_id"])
        except Exception:  # noqa: BLE001 - no catalog yet
            return None
        return ids if len(ids) >= count else None

    return wait_for(enough, timeout, f"{count} cases of {dataset} in the catalog", interval=0.2)


def wait_for_audit(hub: HubProcess, predicate, timeout: float = 60) -> dict:
    from mbc_hub.audit import read_audit

    def found() -> dict | None:
        return next((e for e in read_audit(hub.audit_path) if predicate(e)), None)

    return wait_for(found, timeout, "an audit event")


def ct_files(tree: Path) -> list[Path]:
    return [p for p in tree_files(Path(tree) / "ct-covid") if p.suffix == ".dcm"]


def restudy(paths: list[Path], salt: str, key_file: Path) -> list:
    """The instances of ``paths`` as a study of their own: new Study, Series and SOP Instance
    UIDs derived (as ``mbc deid`` derives them) from the old ones and ``salt``; pixels and
    everything else the same."""
    from pydicom import dcmread

    from mbc_lib.deid.keys import DeidKey

    key = DeidKey.from_file(key_file)
    out = []
    for path in paths:
        ds = dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(ds, keyword, key.uid(f"{salt}:{getattr(ds, keyword)}"))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def write_instances(instances: list, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(instances):
        path = folder / f"IM{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
