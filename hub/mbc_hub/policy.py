"""The spawn policy as pure functions: who sees which datasets, and how a container is built.

A researcher's container gets, and only gets:

- the store's root metadata and each dataset their groups may see (the dataset's manifest in
  the store names the group), bind-mounted read-only at ``MbcStore.mount_path``; ``MBC_STORE``
  points there;
- a home of their own on a named volume (``MbcContainerSpawner.home_volume``) that outlives
  the container;
- the CPU, memory and ``/dev/shm`` of the profile they chose, and with a GPU profile one device id;
- a non-root user, no capabilities, no new privileges, the platform's internal network (no route
  out), and never the Docker socket.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .gpu import GPU_LABEL, OWNER_LABEL
from .traits import Profile

PROFILE_LABEL = "mbc.hub.profile"
#: The bridge driver's switch for traffic between containers of one network.
ICC_OPTION = "com.docker.network.bridge.enable_icc"
#: The bridge driver's name for the host interface of a network.
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def bridge_name(network: str) -> str:
    """The host interface of the platform network ``network``: a name of its own (15
    characters at most), the same each time the network is made, so the host's firewall
    rules for it (:mod:`mbc_hub.firewall`) still apply when it is removed and made again."""
    return "mbc" + hashlib.sha256(network.encode()).hexdigest()[:11]


DOCKER_SOCKETS = ("docker.sock", "containerd.sock", "podman.sock")


class PolicyViolation(RuntimeError):
    """A container spec breaks the isolation rules; nothing is started."""


def home_volume_name(template: str, escaped_username: str) -> str:
    """The named volume that holds a researcher's home: ``template`` with ``{username}`` (the
    name as the spawner escapes it for Docker, ``DockerSpawner.escaped_name``)."""
    return template.format(username=escaped_username)


def store_mounts(store_host_path: Path, mount_path: str, datasets: Iterable[str]) -> list[dict]:
    """Read-only binds of the store's root metadata and of each dataset folder."""
    root = Path(store_host_path)
    mounts = [_bind(root / "zarr.json", f"{mount_path}/zarr.json")]
    mounts += [_bind(root / name, f"{mount_path}/{name}") for name in sorted(datasets)]
    return mounts


def _bind(source: Path, target: str) -> dict[str, Any]:
    return {"type": "bind", "source": str(source), "target": target, "read_only": True}


def home_mount(volume: str, home_path: str) -> dict[str, Any]:
    return {"type": "volume", "source": volume, "target": home_path, "read_only": False}


def environment(mount_path: str, datasets: Iterable[str], profile: Profile) -> dict[str, str]:
    """What the researcher's server sees: the store root, its datasets and the profile."""
    return {
        "MBC_STORE": mount_path,
        "MBC_DATASETS": ",".join(sorted(datasets)),
        "MBC_PROFILE": profile.name,
    }


def gpu_request(device: str) -> dict[str, Any]:
    """A Docker DeviceRequest (docker-py keyword form) for exactly one GPU."""
    return {"driver": "nvidia", "device_ids": [str(device)], "capabilities": [["gpu"]]}


def host_config(network: str, pids_limit: int, profile: Profile, gpu: str | None) -> dict[str, Any]:
    """``extra_host_config`` for DockerSpawner: limits, shm, isolation, network, GPU."""
    config: dict[str, Any] = {
        "shm_size": profile.shm_size,
        "network_mode": network,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": pids_limit,
        "init": True,
        "privileged": False,
    }
    if gpu is not None:
        config["device_requests"] = [gpu_request(gpu)]
    return config


def labels(owner: str, profile: Profile, gpu: str | None) -> dict[str, str]:
    out = {OWNER_LABEL: owner, PROFILE_LABEL: profile.name}
    if gpu is not None:
        out[GPU_LABEL] = str(gpu)
    return out


def network_spec(name: str, *, swarm: bool) -> dict[str, Any]:
    """How the platform's network is created: internal, so containers have no route out; on one
    engine (a bridge) also without traffic between containers, so researchers do not reach
    each other's servers (the proxy and the hub, on the host, still do)."""
    spec: dict[str, Any] = {"name": name, "internal": True, "check_duplicate": True}
    if swarm:
        spec.update(driver="overlay", attachable=True, scope="swarm")
    else:
        spec.update(
            driver="bridge", options={ICC_OPTION: "false", BRIDGE_NAME_OPTION: bridge_name(name)}
        )
    return spec


@dataclass(frozen=True)
class SpawnPlan:
    """Everything a container for one researcher's server is made of."""

    owner: str
    profile: Profile
    datasets: tuple[str, ...]
    gpu: str | None
    mounts: tuple[dict[str, Any], ...]
    environment: dict[str, str]
    host_config: dict[str, Any]
    create_kwargs: dict[str, Any]
    cpu_limit: float
    mem_limit: str
    home_volume: str = ""
    notes: tuple[str, ...] = field(default=())

    def audit_details(self) -> dict[str, Any]:
        """What the audit log records about a spawn."""
        return {
            "profile": self.profile.name,
            "gpu": self.gpu,
            "datasets": list(self.datasets),
            "mounts": [
                {"source": m["source"], "target": m["target"], "read_only": m["read_only"]}
                for m in self.mounts
            ],
            "cpu_limit": self.cpu_limit,
            "mem_limit": self.mem_limit,
        }


@dataclass(frozen=True)
class ContainerSettings:
    """The settings a researcher's container is built from (a spawner's traits)."""

    store_path: Path
    store_mount_path: str
    home_path: str
    user: str
    network: str
    pids_limit: int


def plan_container(
    settings: ContainerSettings,
    *,
    owner: str,
    home_volume: str,
    datasets: Iterable[str],
    profile: Profile,
    gpu: str | None,
    scheduler_assigns_gpu: bool = False,
) -> SpawnPlan:
    """The container for ``owner`` (``user`` or ``user/server``), who may read ``datasets``,
    under the platform's policy.

    ``scheduler_assigns_gpu``: Docker Swarm places GPU tasks itself (generic resources), so a
    GPU profile needs no device id from the hub's allocator.
    """
    if profile.gpus and gpu is None and not scheduler_assigns_gpu:
        raise PolicyViolation(f"profile {profile.name!r} needs a GPU but none was allocated")
    if not profile.gpus and gpu is not None:
        raise PolicyViolation(f"profile {profile.name!r} has no GPU; got device {gpu}")
    datasets = sorted(datasets)
    mounts = [
        *store_mounts(settings.store_path, settings.store_mount_path, datasets),
        home_mount(home_volume, settings.home_path),
    ]
    plan = SpawnPlan(
        owner=owner,
        profile=profile,
        datasets=tuple(datasets),
        gpu=gpu,
        mounts=tuple(mounts),
        environment=environment(settings.store_mount_path, datasets, profile),
        host_config=host_config(settings.network, settings.pids_limit, profile, gpu),
        create_kwargs={"user": settings.user, "labels": labels(owner, profile, gpu)},
        cpu_limit=profile.cpu_limit,
        mem_limit=profile.mem_limit,
        home_volume=home_volume,
    )
    check_isolation(plan, settings.store_path)
    return plan


def check_isolation(plan: SpawnPlan, store_path: Path) -> None:
    """Raise :class:`PolicyViolation` if ``plan`` breaks any isolation rule."""
    problems = []
    store_root = Path(store_path)
    for mount in plan.mounts:
        source = str(mount.get("source") or "")
        if any(source.endswith(s) for s in DOCKER_SOCKETS) or source in ("/", "/var/run", "/run"):
            problems.append(f"mount of {source} would hand the container the Docker engine")
        is_store = mount["type"] == "bind" and Path(source).is_relative_to(store_root)
        if is_store and not mount["read_only"]:
            problems.append(f"store mount {source} is writable")
    user = str(plan.create_kwargs.get("user", ""))
    if not user or user.split(":")[0] in ("0", "root"):
        problems.append("container would run as root")
    hc = plan.host_config
    if hc.get("privileged") or hc.get("cap_add"):
        problems.append("container would be privileged or gain capabilities")
    if hc.get("network_mode") in (None, "bridge", "host", "default"):
        problems.append(f"network {hc.get('network_mode')!r} has a route out")
    if hc.get("pid_mode") == "host" or hc.get("ipc_mode") == "host":
        problems.append("container would share the host's processes")
    if problems:
        raise PolicyViolation("; ".join(problems))


def swarm_specs(plan: SpawnPlan, gpu_resource: str) -> dict[str, Any]:
    """SwarmSpawner's settings for ``plan``: a service task instead of a container.

    Swarm has no device ids per task: a GPU profile asks for one unit of the generic resource
    ``gpu_resource``, which each node advertises per GPU, and Swarm hands out distinct ones.
    ``/dev/shm`` is a tmpfs mount of the profile's size.
    """
    from docker.utils import parse_bytes

    mounts = [dict(m) for m in plan.mounts]
    mounts.append(
        {
            "type": "tmpfs",
            "source": None,
            "target": "/dev/shm",
            "read_only": False,
            "tmpfs_size": parse_bytes(plan.profile.shm_size),
        }
    )
    resources: dict[str, Any] = {}
    if plan.profile.gpus:
        resources["generic_resources"] = {gpu_resource: plan.profile.gpus}
    return {
        "mounts": mounts,
        "extra_container_spec": {
            "user": plan.create_kwargs["user"],
            "labels": dict(plan.create_kwargs["labels"]),
            "cap_drop": ["ALL"],
            "init": True,
        },
        "extra_resources_spec": resources,
    }
