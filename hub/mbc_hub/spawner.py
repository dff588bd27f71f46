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
import shutil
import sys
from pathlib import Path
from typing import Any, ClassVar

from docker.types import Mount
from dockerspawner import DockerSpawner, SwarmSpawner
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Bool, Int, Unicode, default
from traitlets.config import Configurable

from .audit import AuditLog
from .courses import Course, MbcCourses, course_scope
from .firewall import ensure_host_firewall
from .gpu import OWNER_LABEL, GpuAllocator, NoGpuFree
from .homes import copy_notebooks, write_lab_settings
from .network import api_port, ensure_network, gateway
from .platform import PlatformConfigError, resolve_path
from .policy import (
    ContainerSettings,
    PolicyViolation,
    SpawnPlan,
    home_volume_name,
    plan_container,
    swarm_specs,
)
from .store import MbcStore, visible_datasets
from .traits import AbsolutePath, ContainerPath, ContainerUser, Profile, Profiles, UsernameTemplate
from .views import build_store_view

DEFAULT_PROFILES = [
    {
        "name": "cpu",
        "display_name": "CPU",
        "description": "2 CPUs, 8 GB memory: data exploration and notebooks",
        "cpu_limit": 2.0,
        "mem_limit": "8G",
        "shm_size": "2G",
        "gpus": 0,
    },
    {
        "name": "gpu",
        "display_name": "GPU",
        "description": "one GPU of your own, 8 CPUs, 48 GB memory: training",
        "cpu_limit": 8.0,
        "mem_limit": "48G",
        "shm_size": "16G",
        "gpus": 1,
    },
]


class SpawnRefused(RuntimeError):
    """A spawn the policy refuses; JupyterHub shows the message to the researcher."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


def _identity_volume_name(template: str, spawner: Any) -> str:
    # The policy renders volume names and paths itself; DockerSpawner must not format them again.
    return template


class MbcSpawner(Configurable):
    """What every mbc spawner shares: the store, the user's groups and the audit log."""

    @property
    def store(self) -> MbcStore:
        return MbcStore(parent=self)

    @property
    def audit_log(self) -> AuditLog:
        return AuditLog(parent=self)

    @property
    def owner(self) -> str:
        """``user`` or ``user/server``: who holds this server's resources."""
        return f"{self.user.name}/{self.name}" if self.name else self.user.name

    def user_groups(self) -> list[str]:
        return sorted(group.name for group in self.user.groups)

    def audit(self, event: str, **details: Any) -> None:
        self.audit_log.record(event, self.user.name, server=self.name, **details)

    def refuse(self, reason: str, **details: Any) -> SpawnRefused:
        self.audit("refusal", action="spawn", reason=reason, **details)
        return SpawnRefused(reason)

    @property
    def courses(self) -> MbcCourses:
        return MbcCourses(parent=self)

    def visible(self) -> list[str]:
        """The datasets of the store this user's groups may read: those whose manifest names
        one of their groups, and the teaching datasets of their courses."""
        groups = self.user_groups()
        in_store = self.store.dataset_groups()
        teaching = self.courses.datasets_for(groups) & set(in_store)
        return sorted(set(visible_datasets(in_store, groups)) | teaching)

    def server_access_scopes(self) -> list[str]:
        """Who may open this server (``Spawner.oauth_access_scopes``): its owner, as
        JupyterHub has it, and the instructors of the owner's courses, whose role holds
        ``access:servers!group=course-<name>`` (courses whose instructor_access is ``course``;
        an instructor the owner shares the server with holds ``access:servers!server=``)."""
        owner = self.user.name
        scopes = [f"access:servers!server={owner}/{self.name}", f"access:servers!user={owner}"]
        courses = self.courses.courses_of(self.user_groups())
        return scopes + [f"access:servers!group={c.group}" for c in courses if c.opens_servers]

    @default("server_token_scopes")
    def _server_token_scopes_default(self):
        def scopes(spawner: Any) -> list[str]:
            # JupyterHub's 'server' role, and publishing the courses the owner teaches
            base = ["users:activity!user", "access:servers!server"]
            taught = spawner.courses.instructed(spawner.user.name)
            return base + [course_scope(c.name) for c in taught]

        return scopes

    def get_env(self) -> dict[str, str]:
        # at each start, so a change of the owner's courses applies to their next server
        self.oauth_access_scopes = self.server_access_scopes()
        return super().get_env()  # type: ignore[misc]

    def course_names(self) -> list[str]:
        """The courses of this user (as member of their groups)."""
        return [c.name for c in self.courses.courses_of(self.user_groups())]

    #: is_student()'s answer for the length of one start (it reads every manifest)
    _student: bool | None = None

    def is_student(self) -> bool:
        """Whether this user uses the hub as a course's student (:mod:`mbc_hub.courses`)."""
        if self._student is not None:
            return self._student
        research = set(self.store.dataset_groups().values())
        return self.courses.is_student(self.user.name, self.user_groups(), research)


class MbcContainerSpawner(MbcSpawner):
    """A container per researcher (docker and swarm modes): the spawn form's profiles, the
    home volume, the unprivileged user and the limits; turns the policy's
    :class:`~mbc_hub.policy.SpawnPlan` into DockerSpawner's settings."""

    profiles = Profiles(
        DEFAULT_PROFILES,
        help="The choices of the spawn form; the first is the default. Each: name, "
        "display_name, description, cpu_limit (CPUs), mem_limit and shm_size (e.g. 8G), gpus "
        "(0 or 1: one GPU per researcher). A key a profile leaves out takes the cpu default.",
    ).tag(config=True)

    home_volume = UsernameTemplate(
        "mbc-home-{username}",
        help="The named volume of each researcher's home; outlives their containers.",
    ).tag(config=True)

    home_path = ContainerPath(
        "/home/jovyan", help="Where the home volume is mounted in the container."
    ).tag(config=True)

    container_user = ContainerUser(
        "1000:100", help="UID[:GID] the researcher's server runs as; never 0 (root)."
    ).tag(config=True)

    pids_limit = Int(4096, min=64, help="Processes per container.").tag(config=True)

    #: servers are Swarm services: an overlay network, and Swarm places GPUs itself
    on_swarm: ClassVar[bool] = False

    def profile_list(self) -> list[Profile]:
        """The profiles this user may choose: a course's student gets the class profiles."""
        if self.is_student():
            return self.courses.student_profiles(self.user_groups())
        return [Profile(**spec) for spec in self.profiles]

    def profile(self, name: str) -> Profile:
        profiles = self.profile_list()
        for profile in profiles:
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in profiles)
        raise KeyError(f"unknown profile {name!r} (choose one of: {known})")

    def chosen_profile(self) -> Profile:
        """The profile in ``user_options`` (from the form or the REST API), else the first."""
        first = self.profile_list()[0].name
        name = (self.user_options or {}).get("profile") or first
        if isinstance(name, list):
            name = name[0] if name else first
        try:
            return self.profile(str(name))
        except KeyError as exc:
            raise self.refuse(str(exc.args[0]), profile=str(name)) from None

    async def gpu_count(self) -> tuple[int, int] | None:
        """(free, all) GPUs this hub hands out, or None where the scheduler places them."""
        return None

    async def profile_form(self) -> str:
        """The spawn form: one radio button per profile, with its limits and free GPUs. A GPU
        profile is left out where the hub has no GPU, and cannot be chosen while none is
        free."""
        profiles = self.profile_list()
        count = await self.gpu_count() if any(p.gpus for p in profiles) else None
        rows, checked = [], False
        for profile in profiles:
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

    @default("format_volume_name")
    def _format_volume_name_default(self):
        return _identity_volume_name

    @default("remove")
    def _remove_default(self) -> bool:
        # A fresh container on each start, so mounts, GPU and limits follow the current policy;
        # the home lives on a named volume and outlives it.
        return True

    async def allocate_gpu(self, profile: Profile) -> str | None:
        return None

    async def release_gpu(self) -> str | None:
        return None

    def container_settings(self) -> ContainerSettings:
        store = self.store
        return ContainerSettings(
            store_path=store.root,
            store_mount_path=store.mount_path,
            home_path=self.home_path,
            user=self.container_user,
            network=self.network_name,
            pids_limit=self.pids_limit,
        )

    def make_plan(self, profile: Profile, gpu: str | None) -> SpawnPlan:
        return plan_container(
            self.container_settings(),
            owner=self.owner,
            home_volume=home_volume_name(self.home_volume, self.escaped_name),
            datasets=self.visible(),
            profile=profile,
            gpu=gpu,
            scheduler_assigns_gpu=self.on_swarm,
        )

    def apply_plan(self, plan: SpawnPlan) -> None:
        self.volumes = {}
        self.read_only_volumes = {}
        self.mounts = [dict(m) for m in plan.mounts]
        # the image's start pulls each course's material into ~/courses/<course>
        courses = {"MBC_COURSES": ",".join(self.course_names())}
        self.environment = {**self.environment, **plan.environment, **courses}
        self.extra_host_config = dict(plan.host_config)
        self.extra_create_kwargs = dict(plan.create_kwargs)
        self.mem_limit = plan.mem_limit
        self.cpu_limit = plan.cpu_limit

    async def prepare_network(self) -> None:
        """The platform network (created internal if missing)."""
        await asyncio.to_thread(ensure_network, self.client, self.network_name, swarm=self.on_swarm)

    #: owners whose course GPU server this hub started (until it stops): a course's share
    #: counts them besides the database's running servers, so a server between its start and
    #: its database record is counted too
    _course_gpu_starting: ClassVar[set[str]] = set()

    def course_gpu_holders(self, course: Course) -> set[str]:
        """Owners of the servers of ``course``'s students that hold a class GPU profile:
        running (the hub's database) or starting (this hub)."""
        from jupyterhub import orm

        gpu_profiles = {p["name"] for p in self.courses.class_profiles if p["gpus"]}
        students = set(course.students)
        db = getattr(self.user, "db", None)
        if db is not None:
            group = db.query(orm.Group).filter_by(name=course.group).one_or_none()
            members = [u for u in group.users] if group is not None else []
            students |= {u.name for u in members if u.name not in course.instructors}
            running = {
                f"{u.name}/{sp.name}" if sp.name else u.name
                for u in members
                if u.name in students
                for sp in u._orm_spawners
                if sp.server is not None and (sp.user_options or {}).get("profile") in gpu_profiles
            }
        else:
            running = set()
        starting = {o for o in self._course_gpu_starting if o.split("/")[0] in students}
        return running | starting

    def take_course_gpu(self, profile: Profile) -> bool:
        """For a student's GPU profile: a place in a course's GPU share, or a refusal when
        every share of theirs is in use. True where a place was taken (give it back with
        :meth:`give_back_course_gpu` if the start fails)."""
        if not profile.gpus or not self.is_student():
            return False
        courses = self.courses.gpu_courses(self.user_groups())
        for course in courses:
            if len(self.course_gpu_holders(course) - {self.owner}) < course.gpus:
                self._course_gpu_starting.add(self.owner)
                return True
        shares = ", ".join(f"{c.name}: {c.gpus}" for c in courses) or "none"
        raise self.refuse(
            f"your course's GPUs are all in use (GPU servers per course: {shares}); "
            "start the class (CPU) profile or try again later",
            profile=profile.name,
        )

    def give_back_course_gpu(self) -> None:
        self._course_gpu_starting.discard(self.owner)

    async def start(self) -> Any:
        self._student = None
        self._student = self.is_student()
        try:
            return await self._start()
        finally:
            self._student = None

    async def _start(self) -> Any:
        profile = self.chosen_profile()
        try:
            await self.prepare_network()
        except PlatformConfigError as exc:
            raise self.refuse(str(exc)) from None
        self.take_course_gpu(profile)
        try:
            gpu = await self.allocate_gpu(profile)
        except BaseException:
            self.give_back_course_gpu()
            raise
        try:
            try:
                plan = self.make_plan(profile, gpu)
            except PolicyViolation as exc:
                raise self.refuse(f"refused by the platform policy: {exc}") from None
            self.apply_plan(plan)
            result = await super().start()
        except BaseException:
            await self.release_gpu()
            self.give_back_course_gpu()
            raise
        self.audit("spawn", mode=type(self).__name__, **plan.audit_details())
        return result

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        self.give_back_course_gpu()
        released = await self.release_gpu()
        self.audit("stop", gpu=released)


class MbcLocalSpawner(MbcSpawner, SimpleLocalProcessSpawner):
    """A local process per researcher (demo mode): home folder, notebooks and MBC_STORE."""

    notebooks_dir = AbsolutePath(
        "notebooks",
        help="Each *.ipynb here is copied into the researcher's ~/notebooks on start; never "
        "overwritten.",
    ).tag(config=True)

    dataset_views = Bool(
        True,
        help="MBC_STORE is a view (symbolic links) of only the user's datasets: shows the "
        "policy, does not enforce it (containers do).",
    ).tag(config=True)

    views_dir = AbsolutePath(
        "{data_dir}/views", help="Where the per-user store views are made."
    ).tag(config=True)

    @default("cmd")
    def _cmd_default(self) -> list[str]:
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @default("args")
    def _args_default(self) -> list[str]:
        # Terminals run a plain (not login) shell: a login shell reads the host's /etc/profile,
        # which resets PATH, and the terminal would lose the mbc command beside this Python.
        shell = os.environ.get("SHELL") or shutil.which("bash") or "/bin/sh"
        args = [f"--ServerApp.terminado_settings=shell_command={shell}"]
        # The demo's servers run as the hub's own user; on a machine where that is root
        # (a container, CI), Jupyter Server wants to be told that this is intended.
        return args + (["--ServerApp.allow_root=True"] if os.geteuid() == 0 else [])

    async def start(self) -> Any:
        store = self.store
        if not store.present():
            raise self.refuse(f"the store is not at {store.root}; ask the hub admin")
        datasets = self.visible()
        root = store.root
        if self.dataset_views:
            view = resolve_path(self.views_dir, self.config) / self.user.name
            root = await asyncio.to_thread(build_store_view, view, store.root, datasets)
        home = Path(self.home_dir)
        home.mkdir(parents=True, exist_ok=True)
        copied = await asyncio.to_thread(copy_notebooks, Path(self.notebooks_dir), home)
        await asyncio.to_thread(write_lab_settings, home)
        courses = await asyncio.to_thread(self.pull_courses, home)
        # the mbc command (mbc course publish, pull, share) beside the Python the server runs
        here = str(Path(sys.executable).parent)
        path = os.environ.get("PATH", os.defpath)
        self.environment = {
            **self.environment,
            "MBC_STORE": str(root),
            "MBC_DATASETS": ",".join(datasets),
            "MBC_COURSES": ",".join(self.course_names()),
            "PATH": path if path.split(os.pathsep)[0] == here else here + os.pathsep + path,
        }
        result = await super().start()
        self.audit(
            "spawn",
            mode="local",
            datasets=datasets,
            store=str(root),
            home=str(home),
            notebooks_copied=[p.name for p in copied],
            courses=courses,
            gpu=None,
        )
        return result

    def pull_courses(self, home: Path) -> dict[str, str]:
        """Each course's published material into ``home/courses/<course>`` (nbgitpuller's
        merge: the student's edits are kept), straight from the repository on this host.
        A course with nothing published is skipped; a failed pull is logged, not fatal."""
        from mbc_lib.course_material import MaterialError, pull

        from .course_handlers import material_repo

        done = {}
        for name in self.course_names():
            repo = material_repo(self.courses, name)
            refs = repo / "info" / "refs"  # what each publish writes for plain HTTP
            if not refs.is_file() or not refs.stat().st_size:
                done[name] = "nothing published"
                continue
            try:
                pull(repo.as_uri(), home / "courses" / name)
                done[name] = "pulled"
            except MaterialError as exc:
                self.log.warning("course %s: %s", name, exc)
                done[name] = f"failed: {exc}"
        return done

    async def stop(self, now: bool = False) -> None:
        await super().stop(now=now)
        self.audit("stop", mode="local")


class MbcDockerSpawner(MbcContainerSpawner, DockerSpawner):
    """A container per researcher on one Docker engine, with a GPU of their own."""

    host_firewall = Bool(
        True,
        help="iptables on the host let researchers' containers open connections to the hub "
        "API only (no other host port); false only where the host's own firewall does this.",
    ).tag(config=True)

    _gpu_allocators: ClassVar[dict[str, GpuAllocator]] = {}
    _gpu_lock: ClassVar[asyncio.Lock | None] = None

    async def gpu_allocator(self) -> GpuAllocator:
        """The hub-wide allocator; built once, from the running containers, after a restart."""
        cls = type(self)
        if cls._gpu_lock is None:
            cls._gpu_lock = asyncio.Lock()
        configured = GpuAllocator(parent=self)
        key = repr(configured.devices)
        async with cls._gpu_lock:
            if key not in cls._gpu_allocators:
                devices = await asyncio.to_thread(lambda: configured.inventory)
                running = await self.docker("containers", filters={"label": OWNER_LABEL})
                configured.rebuild(running)
                self.log.info(
                    "GPU inventory %s; in use after rebuild: %s", devices, configured.holders()
                )
                cls._gpu_allocators[key] = configured
            return cls._gpu_allocators[key]

    async def gpu_count(self) -> tuple[int, int] | None:
        allocator = await self.gpu_allocator()
        return len(allocator.free()), len(allocator.inventory)

    async def allocate_gpu(self, profile: Profile) -> str | None:
        if not profile.gpus:
            return None
        allocator = await self.gpu_allocator()
        try:
            return await allocator.acquire(self.owner)
        except NoGpuFree as exc:
            raise self.refuse(str(exc), profile=profile.name) from None

    async def release_gpu(self) -> str | None:
        allocator = await self.gpu_allocator()
        return allocator.release(self.owner)

    async def prepare_network(self) -> None:
        """The platform network; the hub's address on it (its gateway: a hub on the host);
        the host's firewall for it."""
        network = await asyncio.to_thread(
            ensure_network, self.client, self.network_name, swarm=False
        )
        if not self.hub_connect_url:
            # A hub on the host: containers reach it at the network's gateway address.
            port = self.hub.port if self.hub is not None else 8081
            self.hub_connect_url = f"http://{gateway(network)}:{port}"
        if self.host_firewall:
            await asyncio.to_thread(
                ensure_host_firewall, network, gateway(network), api_port(self.hub_connect_url)
            )


class MbcSwarmSpawner(MbcContainerSpawner, SwarmSpawner):
    """A Swarm service per researcher, for a hub that spans several machines."""

    gpu_resource = Unicode(
        "NVIDIA-GPU",
        help="The generic resource each swarm node advertises per GPU; a GPU profile asks "
        "for one unit, and Swarm hands out distinct ones.",
    ).tag(config=True)

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

    async def get_ip_and_port(self) -> tuple[str, int]:
        """The running task's own address on the platform network. Its service name may still
        resolve to the task of the server stopped just before (Swarm's DNS lags on other
        nodes), which would leave a restarted server unreachable."""
        task = await self.get_task()
        address = task_address(task, self.network_name) if task else None
        return (address, self.port) if address else await super().get_ip_and_port()

    def apply_plan(self, plan: SpawnPlan) -> None:
        specs = swarm_specs(plan, self.gpu_resource)
        self._plan_mounts = specs["mounts"]
        self.environment = {**self.environment, **plan.environment}
        self.extra_container_spec = specs["extra_container_spec"]
        self.extra_resources_spec = specs["extra_resources_spec"]
        self.mem_limit = plan.mem_limit
        self.cpu_limit = plan.cpu_limit


def task_address(task: dict[str, Any], network: str) -> str | None:
    """A Swarm task's IP address on ``network`` (by name or id), if it has one."""
    for attachment in task.get("NetworksAttachments") or []:
        net = attachment.get("Network") or {}
        if network in (net.get("ID"), (net.get("Spec") or {}).get("Name")):
            for address in attachment.get("Addresses") or []:
                return address.split("/")[0]
    return None


SPAWNERS = {"local": MbcLocalSpawner, "docker": MbcDockerSpawner, "swarm": MbcSwarmSpawner}
