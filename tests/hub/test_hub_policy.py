"""The spawn policy: datasets by group, read-only mounts, homes, profiles and isolation."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path

import docker.types
import pytest
from mbc_hub.policy import (
    ContainerSettings,
    PolicyViolation,
    check_isolation,
    home_volume_name,
    network_spec,
    plan_container,
    swarm_specs,
)
from mbc_hub.spawner import DEFAULT_PROFILES, MbcDockerSpawner, MbcSwarmSpawner
from mbc_hub.store import MbcStore, visible_datasets
from mbc_hub.traits import Profile
from traitlets.config import Config

from .test_hub_apply import fake_user

PROFILES = {spec["name"]: Profile(**spec) for spec in DEFAULT_PROFILES}
#: who may read what in the policy tests
GROUPS_OF = {
    "fundus-glaucoma": "ophthalmology",
    "ct-covid": "radiology",
    "dicom-reference": "radiology",
}


@pytest.fixture
def settings(tmp_path):
    return ContainerSettings(
        store_path=tmp_path / "store",
        store_mount_path="/mnt/mbc-store",
        home_path="/home/jovyan",
        user="1000:100",
        network="mbc-internal",
        pids_limit=4096,
    )


def plan(settings, user="alice", groups=("ophthalmology",), profile="cpu", gpu=None, **kw):
    return plan_container(
        settings,
        owner=user,
        home_volume=home_volume_name("mbc-home-{username}", user),
        datasets=visible_datasets(GROUPS_OF, groups),
        profile=PROFILES[profile],
        gpu=gpu,
        **kw,
    )


def test_the_store_s_own_manifests_name_the_groups(hub_store, tmp_path):
    """The hub reads each dataset's access group from the manifest ingest wrote into the
    store; change it there and the hub follows."""
    assert MbcStore(path=str(hub_store)).dataset_groups() == {
        "fundus-glaucoma": "ophthalmology",
        "ct-covid": "radiology",
    }
    copy = tmp_path / "store"
    copy.mkdir()
    shutil.copy(hub_store / "zarr.json", copy / "zarr.json")
    (copy / "ct-covid").mkdir()
    meta = json.loads((hub_store / "ct-covid" / "zarr.json").read_text())
    meta["attributes"]["mbc"]["manifest"]["group"] = "ophthalmology"
    (copy / "ct-covid" / "zarr.json").write_text(json.dumps(meta))
    (copy / "unlabelled").mkdir()  # a dataset without a manifest: seen by nobody
    (copy / "unlabelled" / "zarr.json").write_text(json.dumps({"zarr_format": 3}))
    store = MbcStore(path=str(copy))
    assert store.dataset_groups() == {"ct-covid": "ophthalmology"}
    assert store.visible(["ophthalmology"]) == ["ct-covid"] and store.visible(["radiology"]) == []
    assert MbcStore(path=str(tmp_path / "nothing")).dataset_groups() == {}


def test_datasets_follow_group_membership():
    assert visible_datasets(GROUPS_OF, ["ophthalmology"]) == ["fundus-glaucoma"]
    assert visible_datasets(GROUPS_OF, ["radiology"]) == ["ct-covid", "dicom-reference"]
    assert visible_datasets(GROUPS_OF, ["radiology", "ophthalmology"]) == sorted(GROUPS_OF)
    assert visible_datasets(GROUPS_OF, ["mbc-admins"]) == []


def test_researcher_gets_only_their_groups_datasets_read_only(settings):
    p = plan(settings)
    store = str(settings.store_path)
    binds = [m for m in p.mounts if m["type"] == "bind"]
    assert [(m["source"], m["target"]) for m in binds] == [
        (f"{store}/zarr.json", "/mnt/mbc-store/zarr.json"),
        (f"{store}/fundus-glaucoma", "/mnt/mbc-store/fundus-glaucoma"),
    ]
    assert all(m["read_only"] for m in binds)
    text = repr(dataclasses.asdict(p))
    assert "ct-covid" not in text and "dicom-reference" not in text
    assert p.environment["MBC_STORE"] == "/mnt/mbc-store"
    assert p.environment["MBC_DATASETS"] == "fundus-glaucoma"


def test_home_is_a_named_volume_per_user(settings):
    p = plan(settings)
    home = [m for m in p.mounts if m["type"] == "volume"]
    assert home == [
        {"type": "volume", "source": "mbc-home-alice", "target": "/home/jovyan", "read_only": False}
    ]
    # names as DockerSpawner escapes them for Docker (its public escaped_name): distinct
    c = Config({"MbcContainerSpawner": {"home_volume": "mbc-home-{username}"}})
    odd = set()
    for name in ("Jane.Doe", "jane-doe", "jane_doe"):
        spawner = MbcDockerSpawner(config=c, user=fake_user(name, []))
        odd.add(home_volume_name(spawner.home_volume, spawner.escaped_name))
    assert len(odd) == 3 and all(n == n.lower() and "." not in n for n in odd)


def test_profiles_set_limits_and_shm(settings):
    cpu = plan(settings)
    assert (cpu.cpu_limit, cpu.mem_limit, cpu.host_config["shm_size"]) == (2.0, "8G", "2G")
    assert "device_requests" not in cpu.host_config
    gpu = plan(settings, profile="gpu", gpu="1")
    assert (gpu.cpu_limit, gpu.mem_limit, gpu.host_config["shm_size"]) == (8.0, "48G", "16G")
    assert gpu.host_config["device_requests"] == [
        {"driver": "nvidia", "device_ids": ["1"], "capabilities": [["gpu"]]}
    ]
    assert gpu.create_kwargs["labels"] == {
        "mbc.hub.owner": "alice",
        "mbc.hub.profile": "gpu",
        "mbc.hub.gpu": "1",
    }
    assert gpu.audit_details()["gpu"] == "1"


def test_gpu_profile_needs_exactly_the_allocated_gpu(settings):
    with pytest.raises(PolicyViolation, match="needs a GPU"):
        plan(settings, profile="gpu", gpu=None)
    with pytest.raises(PolicyViolation, match="has no GPU"):
        plan(settings, profile="cpu", gpu="0")


def test_container_is_isolated(settings):
    p = plan(settings)
    assert p.create_kwargs["user"] == "1000:100"
    hc = p.host_config
    assert hc["network_mode"] == "mbc-internal" and hc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in hc["security_opt"] and hc["privileged"] is False
    assert not any("docker.sock" in str(m["source"]) for m in p.mounts)
    assert network_spec("mbc-internal", swarm=False)["internal"] is True
    assert network_spec("mbc-internal", swarm=True)["driver"] == "overlay"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: {
                "mounts": (
                    *p.mounts,
                    {
                        "type": "bind",
                        "source": "/var/run/docker.sock",
                        "target": "/var/run/docker.sock",
                        "read_only": True,
                    },
                ),
            },
            "Docker engine",
        ),
        (
            lambda p: {"mounts": tuple({**m, "read_only": False} for m in p.mounts)},
            "is writable",
        ),
        (lambda p: {"create_kwargs": {**p.create_kwargs, "user": "0"}}, "as root"),
        (lambda p: {"host_config": {**p.host_config, "network_mode": "bridge"}}, "route out"),
        (lambda p: {"host_config": {**p.host_config, "privileged": True}}, "privileged"),
    ],
)
def test_isolation_check_refuses_unsafe_specs(settings, change, message):
    p = plan(settings)
    with pytest.raises(PolicyViolation, match=message):
        check_isolation(dataclasses.replace(p, **change(p)), settings.store_path)


def test_docker_accepts_the_specs(settings):
    p = plan(settings, profile="gpu", gpu="0")
    mounts = [docker.types.Mount(**m) for m in p.mounts]
    host = docker.types.HostConfig(version="1.44", mounts=mounts, **p.host_config)
    assert host["ShmSize"] == 16 * 1024**3
    assert host["DeviceRequests"][0]["DeviceIDs"] == ["0"]
    assert all(m["ReadOnly"] for m in host["Mounts"] if m["Type"] == "bind")


def test_swarm_specs(settings):
    p = plan(settings, user="bob", groups=["radiology"], profile="gpu", scheduler_assigns_gpu=True)
    specs = swarm_specs(p, "NVIDIA-GPU")
    shm = specs["mounts"][-1]
    assert shm["type"] == "tmpfs" and shm["target"] == "/dev/shm"
    assert shm["tmpfs_size"] == 16 * 1024**3
    assert specs["extra_resources_spec"] == {"generic_resources": {"NVIDIA-GPU": 1}}
    assert specs["extra_container_spec"]["user"] == "1000:100"
    docker.types.ContainerSpec(
        image="x",
        mounts=[docker.types.Mount(**m) for m in specs["mounts"]],
        **specs["extra_container_spec"],
    )
    docker.types.Resources(**specs["extra_resources_spec"])


def test_lab_settings_are_the_same_in_local_homes_and_in_the_image(tmp_path):
    """JupyterLab is told not to fetch news or check for updates in both kinds of server: the
    local spawner writes them as user settings, the researcher image as admin overrides."""
    import json

    from mbc_hub.homes import LAB_SETTINGS, write_lab_settings

    image = Path(__file__).resolve().parents[2] / "images" / "researcher" / "overrides.json"
    overrides = json.loads(image.read_text())
    user_settings = {
        name.replace(".jupyterlab-settings", "").replace("-extension/", "-extension:"): value
        for name, value in LAB_SETTINGS.items()
    }
    assert overrides == user_settings
    assert overrides["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
    (written,) = write_lab_settings(tmp_path)
    assert (
        json.loads(written.read_text())
        == LAB_SETTINGS[str(written.relative_to(tmp_path / ".jupyter" / "lab" / "user-settings"))]
    )


def test_swarm_server_is_reached_at_its_running_task_address_not_its_service_name():
    """A restarted server's service name may still resolve to the task stopped just before
    (Swarm's DNS lags on other nodes): the hub must route to the running task's own address
    on the platform network."""
    task = {
        "NetworksAttachments": [
            {"Network": {"ID": "i1", "Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.5/24"]},
            {
                "Network": {"ID": "p1", "Spec": {"Name": "mbc-internal"}},
                "Addresses": ["10.0.1.10/24"],
            },
        ]
    }
    spawner = MbcSwarmSpawner(network_name="mbc-internal", port=8888)

    async def running_task() -> dict:
        return task

    spawner.get_task = running_task
    assert asyncio.run(spawner.get_ip_and_port()) == ("10.0.1.10", 8888)
