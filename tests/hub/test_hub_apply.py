"""The platform config reaches the spawners: DockerSpawner's and SwarmSpawner's settings, the
spawn form's profiles and GPUs, and refusals with the reason in the audit log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from mbc_hub.audit import read_audit
from mbc_hub.config import load_platform_config
from mbc_hub.gpu import GpuAllocator
from mbc_hub.spawner import MbcDockerSpawner, MbcSwarmSpawner, SpawnRefused
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[2]
CONTAINER_HUB = (
    "JupyterHub: {hub_bind_url: 'http://0.0.0.0:8081', hub_connect_url: 'http://mbc-hub:8081'}\n"
)


def configure(tmp_path, store: Path, yaml_text: str = "", **env: str) -> Config:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml_text)
    return load_platform_config(
        path=path,
        environ={
            "MBC_HUB_DATA_DIR": str(tmp_path / "hub"),
            "MBC_STORE_HOST_PATH": str(store),
            **env,
        },
        project_dir=ROOT,
    )


def fake_user(name: str, groups: list[str]) -> SimpleNamespace:
    """What a spawner reads of its JupyterHub user: the name and the group names."""
    return SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups])


def allocator_key(c: Config) -> str:
    return repr(GpuAllocator(config=c).devices)


def test_docker_spawner_receives_the_policy(tmp_path, hub_store):
    c = configure(tmp_path, hub_store, CONTAINER_HUB, MBC_SPAWNER="docker", MBC_GPUS="0")
    assert c.JupyterHub.spawner_class is MbcDockerSpawner and not c.JupyterHub.cleanup_servers
    spawner = MbcDockerSpawner(config=c, user=fake_user("alice", ["ophthalmology"]))
    assert spawner.image == "mbc-researcher:latest" and spawner.network_name == "mbc-internal"
    assert spawner.home_volume == "mbc-home-{username}" and spawner.pids_limit == 4096
    assert spawner.remove and spawner.use_internal_ip and spawner.pull_policy == "ifnotpresent"

    key = allocator_key(c)
    MbcDockerSpawner._gpu_allocators[key] = GpuAllocator(["0"])
    try:
        form = asyncio.run(spawner.get_options_form())
    finally:
        MbcDockerSpawner._gpu_allocators.pop(key)
    assert 'value="cpu" checked' in form and 'value="gpu"' in form and "1 of 1 GPUs free" in form
    assert spawner.options_from_form({"profile": ["gpu"]}) == {"profile": "gpu"}
    for devices, offered in ((["0"], "disabled"), ([], "absent")):
        allocator = GpuAllocator(devices)
        if devices:  # bob holds the only GPU
            asyncio.run(allocator.acquire("bob", 0))
        MbcDockerSpawner._gpu_allocators[key] = allocator
        try:
            form = asyncio.run(spawner.get_options_form())
        finally:
            MbcDockerSpawner._gpu_allocators.pop(key)
        assert 'value="cpu" checked' in form
        if offered == "disabled":  # none free: shown, but it cannot be chosen
            assert 'value="gpu" disabled' in form and "0 of 1 GPUs free" in form
        else:  # none on this hub: not offered at all
            assert 'value="gpu"' not in form and "GPUs free" not in form

    spawner.user_options = {"profile": "gpu"}
    plan = spawner.make_plan(spawner.chosen_profile(), gpu="0")
    spawner.apply_plan(plan)
    assert spawner.mem_limit == 48 * 1024**3 and spawner.cpu_limit == 8.0
    assert spawner.extra_host_config["device_requests"][0]["device_ids"] == ["0"]
    assert spawner.extra_create_kwargs["user"] == "1000:100"
    assert spawner.environment["MBC_STORE"] == "/mnt/mbc-store"
    binds = {m["Target"]: m for m in spawner.mount_binds}
    assert binds["/mnt/mbc-store/fundus-glaucoma"]["ReadOnly"] is True
    assert "/mnt/mbc-store/ct-covid" not in binds
    assert binds["/home/jovyan"]["Source"] == "mbc-home-alice"


def test_unknown_profile_and_busy_gpus_are_refused_with_a_clear_message(tmp_path, hub_store):
    c = configure(tmp_path, hub_store, CONTAINER_HUB, MBC_SPAWNER="docker", MBC_GPUS="0")
    allocator = GpuAllocator(["0"])
    allocator.allocate("bob")
    key = allocator_key(c)
    MbcDockerSpawner._gpu_allocators[key] = allocator
    try:
        spawner = MbcDockerSpawner(config=c, user=fake_user("alice", ["ophthalmology"]))
        spawner.user_options = {"profile": "tpu"}
        with pytest.raises(SpawnRefused, match="unknown profile 'tpu'"):
            spawner.chosen_profile()
        with pytest.raises(SpawnRefused) as refused:
            asyncio.run(spawner.allocate_gpu(spawner.profile("gpu")))
        assert "all 1 GPUs are in use" in refused.value.jupyterhub_message
    finally:
        MbcDockerSpawner._gpu_allocators.pop(key)
    events = read_audit(c.AuditLog.path)
    assert [(e["event"], e["user"], e["action"]) for e in events] == [
        ("refusal", "alice", "spawn"),
        ("refusal", "alice", "spawn"),
    ]


def test_swarm_spawner_receives_services_specs(tmp_path, hub_store):
    c = configure(tmp_path, hub_store, CONTAINER_HUB, MBC_SPAWNER="swarm")
    assert c.JupyterHub.spawner_class is MbcSwarmSpawner
    spawner = MbcSwarmSpawner(config=c, user=fake_user("bob", ["radiology"]))
    spawner.user_options = {"profile": "gpu"}
    spawner.apply_plan(spawner.make_plan(spawner.chosen_profile(), gpu=None))
    mounts = {m["Target"]: m for m in spawner.mounts}
    assert mounts["/mnt/mbc-store/ct-covid"]["ReadOnly"] is True
    assert mounts["/home/jovyan"]["Type"] == "volume"
    assert mounts["/dev/shm"]["TmpfsOptions"]["SizeBytes"] == 16 * 1024**3
    assert "/mnt/mbc-store/fundus-glaucoma" not in mounts
    assert spawner.extra_resources_spec == {"generic_resources": {"NVIDIA-GPU": 1}}
    assert spawner.extra_container_spec["user"] == "1000:100"
