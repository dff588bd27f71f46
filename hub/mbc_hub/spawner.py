"""Spawners that apply the platform's spawn policy.

- :class:`MbcLocalSpawner` (mode ``local``, the demo): a process per researcher as the hub's
  own user, a home folder each, the notebooks copied in, ``MBC_STORE`` set.
- :class:`MbcDockerSpawner` (mode ``docker``): a container per researcher built by
  :func:`mbc_hub.policy.plan_container`, with a GPU from the hub's allocator.
- :class:`MbcSwarmSpawner` (mode ``swarm``): the same as a Swarm service; Swarm places GPUs.
"""

from __future__ import annotations

import asyncio
import html
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

from docker.types import Mount
from dockerspawner import DockerSpawner, SwarmSpawner
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Any as AnyTrait
from traitlets import HasTraits, default

from .audit import audit_log
from .config import PlatformConfig, PlatformConfigError, Profile
from .firewall import ensure_host_firewall
from .gpu import OWNER_LABEL, GpuAllocator, NoGpuFree, detect_gpus
from .homes import copy_notebooks, write_lab_settings
from .network import api_port, ensure_network, gateway, hub_connect_url
from .policy import (
    PolicyViolation,
    SpawnPlan,
    dataset_groups,
    plan_container,
    swarm_specs,
    visible_datasets,
)
from .views import build_store_view, present_datasets


class SpawnRefused(RuntimeError):
    """A spawn the policy refuses; JupyterHub shows the message to the researcher."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


def _identity_volume_name(template: str, spawner: Any) -> str:
    # The policy renders volume names and paths itself; DockerSpawner must not format them again.
    return template


class PolicyMixin(HasTraits):
    """What every mbc spawner shares: the platform config, profiles, groups and the audit log."""

    platform = AnyTrait(help="the validated mbc_hub.config.PlatformConfig").tag(config=True)

    @property
    def cfg(self) -> PlatformConfig:
        if not isinstance(self.platform, PlatformConfig):
            raise SpawnRefused("the hub is misconfigured: no platform config for the spawner")
        return self.platform

    @property
    def owner(self) -> str:
        """``user`` or ``user/server``: who holds this server's resources."""
        return f"{self.user.name}/{self.name}" if self.name else self.user.name

    def user_groups(self) -> list[str]:
        return sorted(group.name for group in self.user.groups)

    def audit(self, event: str, **details: Any) -> None:
        audit_log(self.cfg.audit_path).record(event, self.user.name, server=self.name, **details)

    def refuse(self, reason: str, **details: Any) -> SpawnRefused:
        self.audit("refusal", action="spawn", reason=reason, **details)
        return SpawnRefused(reason)

    def chosen_profile(self) -> Profile:
        """The profile in ``user_options`` (from the form or the REST API), else the first."""
        name = (self.user_options or {}).get("profile") or self.cfg.profiles[0].name
        if isinstance(name, list):
            name = name[0] if name else self.cfg.profiles[0].name
        try:
            return self.cfg.profile(str(name))
        except KeyError as exc:
            raise self.refuse(str(exc.args[0]), profile=str(name)) from None

    def visible(self) -> list[str]:
        """The datasets this user's groups may see (and the store holds)."""
        groups_of = dataset_groups(self.cfg.store.manifest_dir)
        present = present_datasets(self.cfg.store.host_path)
        return visible_datasets(groups_of, self.user_groups(), present)


class ProfileFormMixin(PolicyMixin):
    """The spawn form: one radio button per profile, with its limits and free GPUs. A GPU
    profile is left out where the hub has no GPU, and cannot be chosen while none is free."""

    async def gpu_count(self) -> tuple[int, int] | None:
        """(free, all) GPUs this hub hands out, or None where the scheduler places them."""
        return None

    async def profile_form(self) -> str:
        count = await self.gpu_count() if any(p.gpus for p in self.cfg.profiles) else None
        rows, checked = [], False
        for profile in self.cfg.profiles:
            extra, disabled = "", False
            if profile.gpus and count is not None:
                free, total = count
                if total == 0:
                    continue  # no GPU on this hub: nothing to offer
                disabled = free < profile.gpus
                extra = f" ({free} of {total} GPUs free)"
            check = not disabled and not checked
            checked = checked or check
            rows.append(
                f'<div class="radio{" disabled" if disabled else ""}"><label>'
                f'<input type="radio" name="profile" value="{html.escape(profile.name)}"'
                f"{' checked' if check else ''}{' disabled' if disabled else ''}> "
                f"<strong>{html.escape(profile.display_name)}</strong>{html.escape(extra)}: "
                f"{html.escape(profile.description)} "
                f"<small>[{profile.cpu_limit:g} CPU, {html.escape(profile.mem_limit)} memory, "
                f"{html.escape(profile.shm_size)} /dev/shm]</small>"
                "</label></div>"
            )
        return '<div class="form-group"><p>Choose a server:</p>' + "".join(rows) + "</div>"

    @default("options_form")
    def _options_form_default(self):
        return lambda spawner: spawner.profile_form()

    @default("options_from_form")
    def _options_from_form_default(self):
        def options_from_form(form: dict[str, list[str]]) -> dict[str, str]:
            return {"profile": (form.get("profile") or [""])[0]}

        return options_from_form


class MbcLocalSpawner(PolicyMixin, SimpleLocalProcessSpawner):
    """A local process per researcher (demo mode): home folder, notebooks and MBC_STORE."""

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @default("args")
    def _args_default(self) -> list[str]:
        # The demo's servers run as the hub's own user; on a machine where that is root
        # (a container, CI), Jupyter Server wants to be told that this is intended.
        return ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []

    @default("home_dir_template")
    def _home_dir_template_default(self) -> str:
        return self.cfg.local.home_dir

    async def start(self) -> Any:
        cfg = self.cfg
        if not (cfg.store.host_path / "zarr.json").is_file():
            raise self.refuse(f"the store is not at {cfg.store.host_path}; ask the hub admin")
        datasets = self.visible()
        store = cfg.store.host_path
        if cfg.local.dataset_views:
            view = cfg.hub.data_dir / "views" / self.user.name
            store = await asyncio.to_thread(build_store_view, view, cfg.store.host_path, datasets)
        home = Path(self.home_dir)
        home.mkdir(parents=True, exist_ok=True)
        copied = await asyncio.to_thread(copy_notebooks, cfg.local.notebooks_dir, home)
        await asyncio.to_thread(write_lab_settings, home)
        self.environment = {
            **self.environment,
            "MBC_STORE": str(store),
            "MBC_DATASETS": ",".join(datasets),
        }
        result = await super().start()
        self.audit(
            "spawn",
            mode="local",
            datasets=datasets,
            store=str(store),
            home=str(home),
            notebooks_copied=[p.name for p in copied],
            gpu=None,
        )
        return result

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        self.audit("stop", mode="local")


class ContainerPolicyMixin(ProfileFormMixin):
    """Turns the policy's :class:`SpawnPlan` into DockerSpawner's settings."""

    #: servers are Swarm services: an overlay network, and Swarm places GPUs itself
    on_swarm: ClassVar[bool] = False

    @default("format_volume_name")
    def _format_volume_name_default(self):
        return _identity_volume_name

    @default("image")
    def _image_default(self) -> str:
        return self.cfg.docker.image

    @default("network_name")
    def _network_name_default(self) -> str:
        return self.cfg.docker.network

    @default("pull_policy")
    def _pull_policy_default(self) -> str:
        return self.cfg.docker.pull_policy

    @default("remove")
    def _remove_default(self) -> bool:
        # A fresh container on each start, so mounts, GPU and limits follow the current policy;
        # the home lives on a named volume and outlives it.
        return True

    async def allocate_gpu(self, profile: Profile) -> str | None:
        return None

    async def release_gpu(self) -> str | None:
        return None

    def make_plan(self, profile: Profile, gpu: str | None) -> SpawnPlan:
        return plan_container(
            self.cfg,
            username=self.user.name,
            owner=self.owner,
            user_groups=self.user_groups(),
            profile=profile,
            gpu=gpu,
            groups_of_datasets=dataset_groups(self.cfg.store.manifest_dir),
            present=present_datasets(self.cfg.store.host_path),
            scheduler_assigns_gpu=self.on_swarm,
        )

    def apply_plan(self, plan: SpawnPlan) -> None:
        self.volumes = {}
        self.read_only_volumes = {}
        self.mounts = [dict(m) for m in plan.mounts]
        self.environment = {**self.environment, **plan.environment}
        self.extra_host_config = dict(plan.host_config)
        self.extra_create_kwargs = dict(plan.create_kwargs)
        self.mem_limit = plan.mem_limit
        self.cpu_limit = plan.cpu_limit

    async def prepare_network(self) -> None:
        """The platform network (created internal if missing); the hub's address on it."""
        network = await asyncio.to_thread(
            ensure_network, self.client, self.cfg.docker.network, swarm=self.on_swarm
        )
        if self.on_swarm:
            return
        connect = self.cfg.hub.hub_connect_url
        if not connect:
            # A hub on the host: containers reach it at the network's gateway address.
            connect = self.hub_connect_url = hub_connect_url(self.cfg.hub.hub_bind_url, network)
        if self.cfg.docker.host_firewall:
            await asyncio.to_thread(
                ensure_host_firewall, network, gateway(network), api_port(connect)
            )

    async def start(self) -> Any:
        profile = self.chosen_profile()
        try:
            await self.prepare_network()
        except PlatformConfigError as exc:
            raise self.refuse(str(exc)) from None
        gpu = await self.allocate_gpu(profile)
        try:
            try:
                plan = self.make_plan(profile, gpu)
            except PolicyViolation as exc:
                raise self.refuse(f"refused by the platform policy: {exc}") from None
            self.apply_plan(plan)
            result = await super().start()
        except BaseException:
            await self.release_gpu()
            raise
        self.audit("spawn", mode=type(self).__name__, **plan.audit_details())
        return result

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        released = await self.release_gpu()
        self.audit("stop", gpu=released)


class MbcDockerSpawner(ContainerPolicyMixin, DockerSpawner):
    """A container per researcher on one Docker engine, with a GPU of their own."""

    _gpu_allocators: ClassVar[dict[tuple[str, ...] | None, GpuAllocator]] = {}
    _gpu_lock: ClassVar[asyncio.Lock | None] = None

    async def gpu_allocator(self) -> GpuAllocator:
        """The hub-wide allocator; built once, from the running containers, after a restart."""
        cls = type(self)
        if cls._gpu_lock is None:
            cls._gpu_lock = asyncio.Lock()
        key = self.cfg.gpus.devices
        async with cls._gpu_lock:
            if key not in cls._gpu_allocators:
                devices = key if key is not None else await asyncio.to_thread(detect_gpus)
                allocator = GpuAllocator(devices)
                running = await self.docker("containers", filters={"label": OWNER_LABEL})
                allocator.rebuild(running)
                self.log.info(
                    "GPU inventory %s; in use after rebuild: %s", devices, allocator.holders()
                )
                cls._gpu_allocators[key] = allocator
            return cls._gpu_allocators[key]

    async def gpu_count(self) -> tuple[int, int] | None:
        allocator = await self.gpu_allocator()
        return len(allocator.free()), len(allocator.devices)

    async def allocate_gpu(self, profile: Profile) -> str | None:
        if not profile.gpus:
            return None
        allocator = await self.gpu_allocator()
        try:
            return await allocator.acquire(self.owner, self.cfg.gpus.wait_seconds)
        except NoGpuFree as exc:
            raise self.refuse(str(exc), profile=profile.name) from None

    async def release_gpu(self) -> str | None:
        allocator = await self.gpu_allocator()
        return allocator.release(self.owner)


class MbcSwarmSpawner(ContainerPolicyMixin, SwarmSpawner):
    """A Swarm service per researcher, for a hub that spans several machines."""

    on_swarm: ClassVar[bool] = True
    _plan_mounts: list[dict[str, Any]] | None = None

    @default("extra_endpoint_spec")
    def _extra_endpoint_spec_default(self) -> dict[str, Any]:
        # One task per service: its name resolves straight to the task (DNS round robin), no
        # virtual IP, so no IPVS load balancer in the way of the hub reaching the server.
        return {"mode": "dnsrr"}

    @property
    def mounts(self) -> list[Mount]:  # type: ignore[override]
        return [Mount(**m) for m in (self._plan_mounts or [])]

    def apply_plan(self, plan: SpawnPlan) -> None:
        specs = swarm_specs(plan, self.cfg)
        self._plan_mounts = specs["mounts"]
        self.environment = {**self.environment, **plan.environment}
        self.extra_container_spec = specs["extra_container_spec"]
        self.extra_resources_spec = specs["extra_resources_spec"]
        self.mem_limit = plan.mem_limit
        self.cpu_limit = plan.cpu_limit
