"""GPU allocation: one device per server, refusal when none is free, release, rebuild."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from mbc_hub.gpu import GpuAllocator, NoGpuFree, detect_gpus


def test_two_servers_get_distinct_gpus_and_a_third_is_refused():
    gpus = GpuAllocator(["0", "1"])
    first, second = gpus.allocate("alice"), gpus.allocate("bob")
    assert {first, second} == {"0", "1"}
    assert gpus.allocate("alice") == first  # the same server asking again
    with pytest.raises(NoGpuFree, match="all 2 GPUs are in use.*CPU profile"):
        gpus.allocate("carol")
    assert gpus.release("alice") == first
    assert gpus.allocate("carol") == first
    assert gpus.release("nobody") is None


def test_no_gpus_says_so():
    with pytest.raises(NoGpuFree, match="this hub has no GPUs"):
        GpuAllocator([]).allocate("alice")


def test_waiting_spawn_gets_the_gpu_released_meanwhile():
    gpus = GpuAllocator(["0"])
    gpus.allocate("alice")

    async def scenario():
        waiter = asyncio.create_task(gpus.acquire("bob", wait_seconds=5, poll=0.05))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        gpus.release("alice")
        return await waiter

    assert asyncio.run(scenario()) == "0"
    with pytest.raises(NoGpuFree, match=r"waited 0.2 s"):
        asyncio.run(gpus.acquire("carol", wait_seconds=0.2, poll=0.05))


class _YieldingTable(dict):
    """A holder table that lets other threads run between a membership test and a store.

    ``allocate`` checks ``device not in holders`` and then sets ``holders[device]``; without the
    allocator's lock a thread switch between the two hands one device to several owners. The
    short sleeps make that switch happen every time instead of once in a while.
    """

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        time.sleep(0.001)
        return found

    def __setitem__(self, key: str, value: str) -> None:
        time.sleep(0.001)
        super().__setitem__(key, value)


def test_concurrent_allocation_never_hands_out_a_gpu_twice():
    gpus = GpuAllocator(["0", "1", "2", "3"])
    gpus._holder = _YieldingTable()  # the seam: the same table, with the window widened
    start = threading.Barrier(40)
    got: dict[str, str] = {}
    refused: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def spawn(owner: str) -> None:
        start.wait()
        try:
            device = gpus.allocate(owner)
        except NoGpuFree:
            with lock:
                refused.append(owner)
        except BaseException as exc:  # noqa: BLE001 - e.g. a dict changed during iteration
            with lock:
                errors.append(exc)
        else:
            with lock:
                got[owner] = device

    threads = [threading.Thread(target=spawn, args=(f"user{i}",)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got.values()) == ["0", "1", "2", "3"], got  # each device to one owner
    assert gpus.holders() == {device: owner for owner, device in got.items()}
    assert len(refused) == 36 and gpus.free() == []


def test_rebuild_from_running_containers():
    gpus = GpuAllocator(["0", "1", "2"])
    gpus.allocate("stale")
    containers = [
        # docker ps (APIClient.containers) entries
        {"Labels": {"mbc.hub.owner": "alice", "mbc.hub.gpu": "2"}, "State": "running"},
        {"Labels": {"mbc.hub.owner": "bob", "mbc.hub.gpu": "0"}, "State": "exited"},
        {"Labels": {"other": "x"}, "State": "running"},
        # docker inspect entry without the GPU label: its DeviceRequests tell
        {
            "Config": {"Labels": {"mbc.hub.owner": "carol/train"}},
            "State": {"Running": True},
            "HostConfig": {"DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["1"]}]},
        },
    ]
    assert gpus.rebuild(containers) == {"2": "alice", "1": "carol/train"}
    assert gpus.free() == ["0"]
    assert gpus.allocate("bob") == "0"
    gpus.claim("alice", "2")
    with pytest.raises(NoGpuFree, match="held by 'alice'"):
        gpus.claim("dave", "2")


def test_detect_gpus_uses_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == ()
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    smi.chmod(0o755)
    assert os.access(smi, os.X_OK)
    assert detect_gpus() == ("0", "1")
