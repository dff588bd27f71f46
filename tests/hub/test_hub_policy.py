"""The spawn policy: datasets by group, read-only mounts, homes, profiles and isolation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import docker.types
import pytest
from mbc_hub.config import load_platform_config
from mbc_hub.policy import (
    PolicyViolation,
    check_isolation,
    dataset_groups,
    home_volume_name,
    network_spec,
    plan_container,
    swarm_specs,
    visible_datasets,
)

DATASETS = Path(__file__).resolve().parents[2] / "datasets"


@pytest.fixture
def cfg(tmp_path):
    return load_platform_config(
        environ={"MBC_STORE_HOST_PATH": str(tmp_path / "store"), "MBC_GPUS": "0,1"}
    )


#: The datasets the policy tests place (the shipped manifests hold more of each group).
POLICY_DATASETS = ("fundus-glaucoma", "ct-covid", "dicom-reference")


@pytest.fixture
def groups_of():
    return {k: v for k, v in dataset_groups(DATASETS).items() if k in POLICY_DATASETS}


def plan(cfg, groups_of, user="alice", groups=("ophthalmology",), profile="cpu", gpu=None):
    return plan_container(
        cfg,
        username=user,
        owner=user,
        user_groups=groups,
        profile=cfg.profile(profile),
        gpu=gpu,
        groups_of_datasets=groups_of,
    )


def test_manifests_name_the_groups():
    assert dataset_groups(DATASETS) == {
        "fundus-glaucoma": "ophthalmology",
        "airogs": "ophthalmology",
        "origa": "ophthalmology",
        "refuge": "ophthalmology",
        "ct-covid": "radiology",
        "dicom-reference": "radiology",
        "covid19-20": "radiology",
        "mosmeddata": "radiology",
        "nnunet-example": "radiology",
    }


def test_datasets_follow_group_membership(groups_of):
    assert visible_datasets(groups_of, ["ophthalmology"]) == ["fundus-glaucoma"]
    assert visible_datasets(groups_of, ["radiology"]) == ["ct-covid", "dicom-reference"]
    assert visible_datasets(groups_of, ["radiology", "ophthalmology"]) == sorted(groups_of)
    assert visible_datasets(groups_of, ["mbc-admins"]) == []
    assert visible_datasets(groups_of, ["radiology"], present=["ct-covid"]) == ["ct-covid"]
    # a dataset without a manifest is seen by nobody
    assert visible_datasets(groups_of, ["radiology"], present=["ct-covid", "secret"]) == [
        "ct-covid"
    ]


def test_researcher_gets_only_their_groups_datasets_read_only(cfg, groups_of):
    p = plan(cfg, groups_of)
    store = str(cfg.store.host_path)
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


def test_home_is_a_named_volume_per_user(cfg, groups_of):
    p = plan(cfg, groups_of)
    home = [m for m in p.mounts if m["type"] == "volume"]
    assert home == [
        {"type": "volume", "source": "mbc-home-alice", "target": "/home/jovyan", "read_only": False}
    ]
    assert home_volume_name("mbc-home-{username}", "alice") == "mbc-home-alice"
    odd = {home_volume_name("mbc-home-{username}", n) for n in ("Jane.Doe", "jane-doe", "jane_doe")}
    assert len(odd) == 3 and all(n.islower() or "-" in n for n in odd)


def test_profiles_set_limits_and_shm(cfg, groups_of):
    cpu = plan(cfg, groups_of)
    assert (cpu.cpu_limit, cpu.mem_limit, cpu.host_config["shm_size"]) == (2.0, "8G", "2G")
    assert "device_requests" not in cpu.host_config
    gpu = plan(cfg, groups_of, profile="gpu", gpu="1")
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


def test_gpu_profile_needs_exactly_the_allocated_gpu(cfg, groups_of):
    with pytest.raises(PolicyViolation, match="needs a GPU"):
        plan(cfg, groups_of, profile="gpu", gpu=None)
    with pytest.raises(PolicyViolation, match="has no GPU"):
        plan(cfg, groups_of, profile="cpu", gpu="0")


def test_container_is_isolated(cfg, groups_of):
    p = plan(cfg, groups_of)
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
def test_isolation_check_refuses_unsafe_specs(cfg, groups_of, change, message):
    p = plan(cfg, groups_of)
    with pytest.raises(PolicyViolation, match=message):
        check_isolation(dataclasses.replace(p, **change(p)), cfg)


def test_docker_accepts_the_specs(cfg, groups_of):
    p = plan(cfg, groups_of, profile="gpu", gpu="0")
    mounts = [docker.types.Mount(**m) for m in p.mounts]
    host = docker.types.HostConfig(version="1.44", mounts=mounts, **p.host_config)
    assert host["ShmSize"] == 16 * 1024**3
    assert host["DeviceRequests"][0]["DeviceIDs"] == ["0"]
    assert all(m["ReadOnly"] for m in host["Mounts"] if m["Type"] == "bind")


def test_swarm_specs(cfg, groups_of):
    p = plan_container(
        cfg,
        username="bob",
        owner="bob",
        user_groups=["radiology"],
        profile=cfg.profile("gpu"),
        gpu=None,
        groups_of_datasets=groups_of,
        scheduler_assigns_gpu=True,
    )
    specs = swarm_specs(p, cfg)
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
