"""GPU allocation: one GPU per researcher's server, by device id.

The inventory comes from ``GpuAllocator.devices`` or from ``nvidia-smi``. A server gets one free id
(Docker ``DeviceRequest(device_ids=[id])``), gives it back when it stops, and after a hub restart
the allocator is rebuilt from the running containers' labels (or their DeviceRequests).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from traitlets import Float
from traitlets.config import Configurable

from .traits import GpuDevices

#: container labels the spawner sets; the allocator rebuilds from them
OWNER_LABEL = "mbc.hub.owner"
GPU_LABEL = "mbc.hub.gpu"


class NoGpuFree(RuntimeError):
    """Every GPU is in use; the message says so in words a researcher understands."""


def detect_gpus(
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> tuple[str, ...]:
    """The device indices ``nvidia-smi`` reports, or () where there is no NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        proc = run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if proc.returncode != 0:
        return ()
    return tuple(line.strip() for line in proc.stdout.splitlines() if line.strip())


def _running(container: Mapping[str, Any]) -> bool:
    state = container.get("State")
    if isinstance(state, Mapping):  # docker inspect
        return bool(state.get("Running"))
    return str(state or "").lower() == "running"  # docker ps (containers list)


def _labels(container: Mapping[str, Any]) -> Mapping[str, str]:
    if "Labels" in container:
        return container.get("Labels") or {}
    return (container.get("Config") or {}).get("Labels") or {}


def _device_ids(container: Mapping[str, Any]) -> list[str]:
    requests = (container.get("HostConfig") or {}).get("DeviceRequests") or []
    return [str(i) for req in requests for i in (req.get("DeviceIDs") or [])]


class GpuAllocator(Configurable):
    """Hands out device ids, one per owner; safe across threads and asyncio tasks. One per
    hub (docker mode); Swarm places GPUs itself."""

    devices = GpuDevices(
        help="The GPUs the hub hands out: 'auto' (what nvidia-smi lists), 'none', or device "
        "ids such as [0, 1]. Environment: MBC_GPUS (e.g. '0,1').",
    ).tag(config=True)
    wait_seconds = Float(
        0, min=0, help="How long a GPU spawn waits for a GPU to be free (0: refuse at once)."
    ).tag(config=True)

    def __init__(self, devices: Iterable[str] | str | None = None, **kwargs: Any) -> None:
        if devices is not None:
            kwargs["devices"] = devices if isinstance(devices, str) else list(devices)
        super().__init__(**kwargs)
        self._inventory: tuple[str, ...] | None = None
        self._holder: dict[str, str] = {}  # device id -> owner
        self._lock = threading.Lock()

    @property
    def inventory(self) -> tuple[str, ...]:
        """The device ids handed out: :attr:`devices`, or what ``nvidia-smi`` lists (asked
        once)."""
        if self._inventory is None:
            found = detect_gpus() if self.devices == "auto" else self.devices
            self._inventory = tuple(str(d) for d in found)
        return self._inventory

    def __repr__(self) -> str:
        return f"<GpuAllocator {len(self.free())}/{len(self.inventory)} free>"

    def holders(self) -> dict[str, str]:
        """Device id -> owner, for the devices in use."""
        with self._lock:
            return dict(self._holder)

    def free(self) -> list[str]:
        with self._lock:
            return [d for d in self.inventory if d not in self._holder]

    def held_by(self, owner: str) -> str | None:
        with self._lock:
            return next((d for d, o in self._holder.items() if o == owner), None)

    def allocate(self, owner: str) -> str:
        """A free device id for ``owner`` (the one it already holds, if any)."""
        with self._lock:
            for device, holder in self._holder.items():
                if holder == owner:
                    return device
            for device in self.inventory:
                if device not in self._holder:
                    self._holder[device] = owner
                    return device
        raise NoGpuFree(self._refusal())

    def _refusal(self) -> str:
        if not self.inventory:
            return "this hub has no GPUs; choose the CPU profile"
        return (
            f"all {len(self.inventory)} GPUs are in use by other researchers; choose the CPU "
            "profile or try again later"
        )

    async def acquire(
        self, owner: str, wait_seconds: float | None = None, poll: float = 1.0
    ) -> str:
        """:meth:`allocate`, waiting up to ``wait_seconds`` (default :attr:`wait_seconds`) for
        a GPU to be released."""
        wait_seconds = self.wait_seconds if wait_seconds is None else wait_seconds
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return self.allocate(owner)
            except NoGpuFree as exc:
                if time.monotonic() >= deadline:
                    if wait_seconds > 0:
                        raise NoGpuFree(f"{exc} (waited {wait_seconds:g} s)") from None
                    raise
            await asyncio.sleep(min(poll, max(deadline - time.monotonic(), 0.01)))

    def release(self, owner: str) -> str | None:
        """Give back the device ``owner`` holds; returns it (None if it held none)."""
        with self._lock:
            for device, holder in list(self._holder.items()):
                if holder == owner:
                    del self._holder[device]
                    return device
        return None

    def claim(self, owner: str, device: str) -> None:
        """Record that ``owner`` holds ``device`` (a server that was already running)."""
        device = str(device)
        with self._lock:
            holder = self._holder.get(device)
            if holder is not None and holder != owner:
                raise NoGpuFree(f"GPU {device} is held by {holder!r}, not {owner!r}")
            for other, held in list(self._holder.items()):
                if held == owner and other != device:
                    del self._holder[other]
            self._holder[device] = owner

    def rebuild(self, containers: Iterable[Mapping[str, Any]]) -> dict[str, str]:
        """Forget every allocation, then claim the GPUs that running containers hold.

        ``containers`` are entries of ``docker ps`` (``APIClient.containers()``) or
        ``docker inspect``; the owner comes from the :data:`OWNER_LABEL` label, the device from
        :data:`GPU_LABEL` or, failing that, the container's DeviceRequests.
        """
        held: dict[str, str] = {}
        for container in containers:
            if not _running(container):
                continue
            labels = _labels(container)
            owner = labels.get(OWNER_LABEL)
            if not owner:
                continue
            devices = [labels[GPU_LABEL]] if labels.get(GPU_LABEL) else _device_ids(container)
            for device in devices:
                held[str(device)] = owner
        with self._lock:
            self._holder = held
        return dict(held)
