"""jupyterhub_config: platform config -> JupyterHub, DockerSpawner and SwarmSpawner settings."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from mbc_hub.apply import apply_platform_config, proxy_command
from mbc_hub.audit import read_audit
from mbc_hub.auth import DemoAuthenticator, MbcOAuthenticator
from mbc_hub.config import PlatformConfigError, load_platform_config
from mbc_hub.gpu import GpuAllocator
from mbc_hub.spawner import MbcDockerSpawner, MbcLocalSpawner, MbcSwarmSpawner, SpawnRefused
from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[2]
CONTAINER_HUB = (
    "hub: {hub_bind_url: 'http://0.0.0.0:8081', hub_connect_url: 'http://mbc-hub:8081'}\n"
)


def configure(tmp_path, yaml_text: str = "", **env: str) -> tuple[Config, object]:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml_text)
    cfg = load_platform_config(
        path,
        environ={
            "MBC_HUB_DATA_DIR": str(tmp_path / "hub"),
            "MBC_STORE_HOST_PATH": str(tmp_path / "store"),
            **env,
        },
    )
    c = Config()
    apply_platform_config(c, cfg, ROOT)
    return c, cfg


def fake_user(name: str, groups: list[str]) -> SimpleNamespace:
    """What a spawner reads of its JupyterHub user: the name and the group names."""
    return SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups])


def test_local_demo_settings(tmp_path):
    c, cfg = configure(tmp_path)
    hub = tmp_path / "hub"
    assert c.JupyterHub.bind_url == "http://127.0.0.1:8000"
    assert c.JupyterHub.db_url == f"sqlite:///{hub / 'jupyterhub.sqlite'}"
    assert c.JupyterHub.cookie_secret_file == str(hub / "jupyterhub_cookie_secret")
    assert c.JupyterHub.spawner_class is MbcLocalSpawner and c.JupyterHub.cleanup_servers
    assert c.JupyterHub.authenticator_class is DemoAuthenticator
    assert c.DemoAuthenticator.audit_log_path == str(hub / "audit.jsonl")
    assert c.Spawner.default_url == "/lab"
    assert Path(c.ConfigurableHTTPProxy.command[0]).name == "configurable-http-proxy"
    (culler,) = c.JupyterHub.services
    assert culler["name"] == "idle-culler"
    assert "--timeout=3600" in culler["command"] and "--max-age=28800" in culler["command"]
    (role,) = c.JupyterHub.load_roles
    assert role["services"] == ["idle-culler"] and "delete:servers" in role["scopes"]


def test_culler_settings_and_disabling(tmp_path):
    c, _ = configure(tmp_path, "culler: {timeout: 600, max_age: 0, cull_every: 60}\n")
    (culler,) = c.JupyterHub.services
    assert "--timeout=600" in culler["command"] and "--cull-every=60" in culler["command"]
    assert not any(a.startswith("--max-age") for a in culler["command"])
    c, _ = configure(tmp_path, "culler: {enabled: false}\n")
    assert c.JupyterHub.services == [] and c.JupyterHub.load_roles == []


def test_proxy_command_prefers_the_project_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PlatformConfigError, match="make proxy"):
        proxy_command("auto", tmp_path)
    assert proxy_command("/opt/chp/bin/configurable-http-proxy", tmp_path) == [
        "/opt/chp/bin/configurable-http-proxy"
    ]


def test_oidc_allowed_groups_default_to_the_dataset_groups(tmp_path):
    text = (
        "hub: {bind_url: 'https://hub.example.org'}\n"
        "auth:\n  mode: oidc\n  oidc:\n"
        "    authorize_url: https://idp/auth\n    token_url: https://idp/token\n"
        "    userdata_url: https://idp/userinfo\n    client_id: mbc-hub\n"
        "    callback_url: https://hub.example.org/hub/oauth_callback\n"
    )
    c, _ = configure(tmp_path, text)
    assert c.JupyterHub.authenticator_class is MbcOAuthenticator
    assert c.MbcOAuthenticator.allowed_groups == {"ophthalmology", "radiology", "mbc-admins"}
    assert c.MbcOAuthenticator.admin_groups == {"mbc-admins"}


def test_container_modes_need_a_hub_address_containers_can_reach(tmp_path):
    with pytest.raises(PlatformConfigError, match="containers cannot reach the hub API"):
        configure(tmp_path, "spawner: {mode: docker}\n")


def test_docker_hub_on_every_address_is_reached_on_loopback_by_its_proxy(tmp_path):
    c, _ = configure(
        tmp_path, "hub: {hub_bind_url: 'http://0.0.0.0:8181'}\nspawner: {mode: docker}\n"
    )
    assert c.JupyterHub.hub_bind_url == "http://0.0.0.0:8181"
    assert c.JupyterHub.hub_connect_url == "http://127.0.0.1:8181"


def test_docker_spawner_receives_the_policy(tmp_path):
    c, cfg = configure(tmp_path, CONTAINER_HUB + "spawner: {mode: docker}\n", MBC_GPUS="0")
    assert c.JupyterHub.spawner_class is MbcDockerSpawner and not c.JupyterHub.cleanup_servers
    spawner = MbcDockerSpawner(config=c, user=fake_user("alice", ["ophthalmology"]))
    assert spawner.image == "mbc-researcher:latest" and spawner.network_name == "mbc-internal"
    assert spawner.remove and spawner.use_internal_ip and spawner.pull_policy == "ifnotpresent"

    MbcDockerSpawner._gpu_allocators[cfg.gpus.devices] = GpuAllocator(["0"])
    try:
        form = asyncio.run(spawner.get_options_form())
    finally:
        MbcDockerSpawner._gpu_allocators.pop(cfg.gpus.devices)
    assert 'value="cpu" checked' in form and 'value="gpu"' in form and "1 of 1 GPUs free" in form
    assert spawner.options_from_form({"profile": ["gpu"]}) == {"profile": "gpu"}
    for devices, offered in ((["0"], "disabled"), ([], "absent")):
        allocator = GpuAllocator(devices)
        if devices:  # bob holds the only GPU
            asyncio.run(allocator.acquire("bob", 0))
        MbcDockerSpawner._gpu_allocators[cfg.gpus.devices] = allocator
        try:
            form = asyncio.run(spawner.get_options_form())
        finally:
            MbcDockerSpawner._gpu_allocators.pop(cfg.gpus.devices)
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


def test_unknown_profile_and_busy_gpus_are_refused_with_a_clear_message(tmp_path):
    c, cfg = configure(tmp_path, CONTAINER_HUB + "spawner: {mode: docker}\n", MBC_GPUS="0")
    allocator = GpuAllocator(["0"])
    allocator.allocate("bob")
    MbcDockerSpawner._gpu_allocators[cfg.gpus.devices] = allocator
    try:
        spawner = MbcDockerSpawner(config=c, user=fake_user("alice", ["ophthalmology"]))
        spawner.user_options = {"profile": "tpu"}
        with pytest.raises(SpawnRefused, match="unknown profile 'tpu'"):
            spawner.chosen_profile()
        with pytest.raises(SpawnRefused) as refused:
            asyncio.run(spawner.allocate_gpu(cfg.profile("gpu")))
        assert "all 1 GPUs are in use" in refused.value.jupyterhub_message
    finally:
        MbcDockerSpawner._gpu_allocators.pop(cfg.gpus.devices)
    events = read_audit(cfg.audit_path)
    assert [(e["event"], e["user"], e["action"]) for e in events] == [
        ("refusal", "alice", "spawn"),
        ("refusal", "alice", "spawn"),
    ]


def test_swarm_spawner_receives_services_specs(tmp_path):
    c, cfg = configure(tmp_path, CONTAINER_HUB + "spawner: {mode: swarm}\n")
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
