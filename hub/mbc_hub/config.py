"""The platform config: embedded defaults, then one YAML file, then environment variables.

Every key and its default is listed in ``hub/platform.example.yaml`` (a test keeps the two equal).
Relative paths are taken from the folder the hub starts in, as JupyterHub does for its own files.
``{data_dir}`` in a path stands for ``hub.data_dir``.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

CONFIG_ENV = "MBC_PLATFORM_CONFIG"
SPAWNER_MODES = ("local", "docker", "swarm")
AUTH_MODES = ("demo", "oidc")
PULL_POLICIES = ("ifnotpresent", "always", "never", "skip")

DEFAULTS: dict[str, Any] = {
    "hub": {
        "bind_url": "http://127.0.0.1:8000",
        "hub_bind_url": "http://127.0.0.1:8081",
        "hub_connect_url": "",
        "proxy_api_url": "http://127.0.0.1:8001",
        "proxy_command": "auto",
        "data_dir": "work-demo/hub",
        "admin_users": [],
    },
    "spawner": {
        "mode": "local",
        "start_timeout": 120,
        "http_timeout": 60,
        "default_url": "/lab",
    },
    "store": {
        "host_path": "work-demo/store",
        "mount_path": "/mnt/mbc-store",
        "manifest_dir": "datasets",
    },
    "local": {
        "home_dir": "{data_dir}/homes/{username}",
        "notebooks_dir": "notebooks",
        "dataset_views": True,
    },
    "docker": {
        "image": "mbc-researcher:latest",
        "network": "mbc-internal",
        "home_volume": "mbc-home-{username}",
        "home_path": "/home/jovyan",
        "user": "1000:100",
        "pull_policy": "ifnotpresent",
        "pids_limit": 4096,
        "host_firewall": True,
    },
    "profiles": [
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
    ],
    "gpus": {
        "devices": "auto",
        "wait_seconds": 0,
        "swarm_resource": "NVIDIA-GPU",
    },
    "auth": {
        "mode": "demo",
        "admin_group": "mbc-admins",
        "demo": {
            "users_file": "{data_dir}/demo-users.yaml",
        },
        "oidc": {
            "authorize_url": "",
            "token_url": "",
            "userdata_url": "",
            "client_id": "",
            "client_secret": "",
            "callback_url": "",
            "scope": ["openid", "profile", "email", "groups"],
            "username_claim": "preferred_username",
            "groups_claim": "groups",
            "allowed_groups": [],
            "login_service": "institution login",
            "validate_server_cert": True,
        },
    },
    "culler": {
        "enabled": True,
        "timeout": 3600,
        "max_age": 28800,
        "cull_every": 300,
    },
    "audit": {
        "path": "{data_dir}/audit.jsonl",
    },
}

#: environment variable -> dotted key it overrides
ENV_OVERRIDES: dict[str, str] = {
    "MBC_SPAWNER": "spawner.mode",
    "MBC_AUTH": "auth.mode",
    "MBC_STORE_HOST_PATH": "store.host_path",
    "MBC_HUB_BIND": "hub.bind_url",
    "MBC_HUB_API_BIND": "hub.hub_bind_url",
    "MBC_HUB_DATA_DIR": "hub.data_dir",
    "MBC_IMAGE": "docker.image",
    "MBC_GPUS": "gpus.devices",
    "MBC_DEMO_USERS_FILE": "auth.demo.users_file",
    "MBC_OIDC_CLIENT_ID": "auth.oidc.client_id",
    "MBC_OIDC_CLIENT_SECRET": "auth.oidc.client_secret",
}

_BYTES_RE = re.compile(r"^[0-9]+(\.[0-9]+)?[KMGT]?$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class PlatformConfigError(ValueError):
    """The platform config is invalid; the message names the key and the source."""


@dataclass(frozen=True)
class HubSettings:
    bind_url: str
    hub_bind_url: str
    hub_connect_url: str
    proxy_api_url: str
    proxy_command: str
    data_dir: Path
    admin_users: tuple[str, ...]


@dataclass(frozen=True)
class SpawnerSettings:
    mode: str
    start_timeout: int
    http_timeout: int
    default_url: str


@dataclass(frozen=True)
class StoreSettings:
    host_path: Path
    mount_path: str
    manifest_dir: Path


@dataclass(frozen=True)
class LocalSettings:
    home_dir: str
    notebooks_dir: Path
    dataset_views: bool


@dataclass(frozen=True)
class DockerSettings:
    image: str
    network: str
    home_volume: str
    home_path: str
    user: str
    pull_policy: str
    pids_limit: int
    host_firewall: bool


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    description: str
    cpu_limit: float
    mem_limit: str
    shm_size: str
    gpus: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class GpuSettings:
    devices: tuple[str, ...] | None  # None: detect with nvidia-smi
    wait_seconds: float
    swarm_resource: str


@dataclass(frozen=True)
class OidcSettings:
    authorize_url: str
    token_url: str
    userdata_url: str
    client_id: str
    client_secret: str
    callback_url: str
    scope: tuple[str, ...]
    username_claim: str
    groups_claim: str
    allowed_groups: tuple[str, ...]
    login_service: str
    validate_server_cert: bool


@dataclass(frozen=True)
class AuthSettings:
    mode: str
    admin_group: str
    demo_users_file: Path
    oidc: OidcSettings


@dataclass(frozen=True)
class CullerSettings:
    enabled: bool
    timeout: int
    max_age: int
    cull_every: int


@dataclass(frozen=True)
class PlatformConfig:
    """The validated platform config."""

    hub: HubSettings
    spawner: SpawnerSettings
    store: StoreSettings
    local: LocalSettings
    docker: DockerSettings
    profiles: tuple[Profile, ...]
    gpus: GpuSettings
    auth: AuthSettings
    culler: CullerSettings
    audit_path: Path
    sources: tuple[str, ...]

    def profile(self, name: str) -> Profile:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        known = ", ".join(p.name for p in self.profiles)
        raise KeyError(f"unknown profile {name!r} (choose one of: {known})")


def default_config() -> dict[str, Any]:
    """A fresh copy of the embedded defaults."""
    return copy.deepcopy(DEFAULTS)


def merge(base: dict[str, Any], override: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Deep-merge ``override`` into ``base``: mappings merge, other values replace.

    Keys that ``base`` does not have are refused, so a typo never passes silently.
    """
    out = dict(base)
    for key, value in override.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            known = ", ".join(sorted(base))
            raise PlatformConfigError(f"unknown key {path!r} (known here: {known})")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise PlatformConfigError(f"{path} must be a mapping")
            out[key] = merge(base[key], value, path)
        else:
            out[key] = value
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        data = data[part]
    data[leaf] = value


def env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """The dotted keys that ``environ`` overrides, with their raw values."""
    return {key: environ[var] for var, key in ENV_OVERRIDES.items() if environ.get(var)}


def load_platform_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PlatformConfig:
    """Defaults, then the YAML file (``path`` or ``$MBC_PLATFORM_CONFIG``), then the environment."""
    environ = os.environ if environ is None else environ
    data = default_config()
    sources = ["defaults"]
    path = path or environ.get(CONFIG_ENV) or None
    if path:
        data = merge(data, read_yaml(Path(path)), "")
        sources.append(str(path))
    overrides = env_overrides(environ)
    for key, value in overrides.items():
        _set_dotted(data, key, value)
    if overrides:
        sources.append("env " + ", ".join(v for v, k in ENV_OVERRIDES.items() if k in overrides))
    try:
        return validate(data, tuple(sources))
    except PlatformConfigError as exc:
        raise PlatformConfigError(f"platform config ({' + '.join(sources)}): {exc}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PlatformConfigError(f"cannot read platform config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise PlatformConfigError(f"platform config {path} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PlatformConfigError(f"platform config {path}: top level must be a mapping")
    return data


# -- validation ------------------------------------------------------------------------------


def _str(data: Mapping[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = data[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (not empty and not value):
        raise PlatformConfigError(f"{where}.{key} must be a non-empty string")
    return value


def _choice(data: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...]) -> str:
    value = _str(data, key, where).lower()
    if value not in choices:
        raise PlatformConfigError(f"{where}.{key} is {value!r}; choose one of {list(choices)}")
    return value


def _number(data: Mapping[str, Any], key: str, where: str, *, minimum: float = 0) -> float:
    value = data[key]
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise PlatformConfigError(f"{where}.{key} must be a number >= {minimum}")
    return float(value)


def _bool(data: Mapping[str, Any], key: str, where: str) -> bool:
    value = data[key]
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes")
    if not isinstance(value, bool):
        raise PlatformConfigError(f"{where}.{key} must be true or false")
    return value


def _strings(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data[key]
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PlatformConfigError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _url(data: Mapping[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = _str(data, key, where, empty=empty)
    if not value:
        return value
    if "://" not in value:
        value = f"http://{value}"
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise PlatformConfigError(f"{where}.{key} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _bytes(data: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(data, key, where).upper()
    if not _BYTES_RE.match(value):
        raise PlatformConfigError(f"{where}.{key} must be a size like 512M or 8G, got {value!r}")
    return value


def _path(value: str, data_dir: Path | None = None) -> Path:
    if data_dir is not None:
        value = value.replace("{data_dir}", str(data_dir))
    return Path(value).expanduser().absolute()


def is_loopback_url(url: str) -> bool:
    """True if ``url``'s host is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    host = urlparse(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _gpu_devices(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return None
        if text in ("", "none"):
            return ()
        value = [v.strip() for v in text.split(",") if v.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise PlatformConfigError("gpus.devices must be 'auto', 'none' or a list of device ids")
    ids = tuple(str(v) for v in value)
    if len(set(ids)) != len(ids) or not all(re.match(r"^[A-Za-z0-9:_-]+$", i) for i in ids):
        raise PlatformConfigError(f"gpus.devices has repeated or odd ids: {list(ids)}")
    return ids


def _profiles(value: Any) -> tuple[Profile, ...]:
    if not isinstance(value, list) or not value:
        raise PlatformConfigError("profiles must be a non-empty list")
    out = []
    for i, raw in enumerate(value):
        where = f"profiles[{i}]"
        if not isinstance(raw, Mapping):
            raise PlatformConfigError(f"{where} must be a mapping")
        spec = merge(DEFAULTS["profiles"][0], raw, where)
        name = _str(spec, "name", where)
        if not _NAME_RE.match(name):
            raise PlatformConfigError(f"{where}.name {name!r}: lower-case letters, digits, - and _")
        gpus = int(_number(spec, "gpus", where))
        if gpus not in (0, 1):
            raise PlatformConfigError(f"{where}.gpus must be 0 or 1 (one GPU per researcher)")
        out.append(
            Profile(
                name=name,
                display_name=_str(spec, "display_name", where),
                description=_str(spec, "description", where, empty=True),
                cpu_limit=_number(spec, "cpu_limit", where, minimum=0.1),
                mem_limit=_bytes(spec, "mem_limit", where),
                shm_size=_bytes(spec, "shm_size", where),
                gpus=gpus,
            )
        )
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise PlatformConfigError(f"profiles: names must be unique, got {names}")
    return tuple(out)


def _container_user(value: str) -> str:
    uid, _, gid = value.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise PlatformConfigError(
            f"docker.user must be 'UID' or 'UID:GID' in digits, got {value!r}"
        )
    if int(uid) == 0:
        raise PlatformConfigError(
            "docker.user must not be root (uid 0): containers run unprivileged"
        )
    return value


def validate(data: dict[str, Any], sources: tuple[str, ...] = ("defaults",)) -> PlatformConfig:
    """Turn merged config data into a :class:`PlatformConfig`, or raise PlatformConfigError."""
    hub = data["hub"]
    data_dir = _path(_str(hub, "data_dir", "hub"))
    hub_settings = HubSettings(
        bind_url=_url(hub, "bind_url", "hub"),
        hub_bind_url=_url(hub, "hub_bind_url", "hub"),
        hub_connect_url=_url(hub, "hub_connect_url", "hub", empty=True),
        proxy_api_url=_url(hub, "proxy_api_url", "hub"),
        proxy_command=_str(hub, "proxy_command", "hub"),
        data_dir=data_dir,
        admin_users=_strings(hub, "admin_users", "hub"),
    )
    sp = data["spawner"]
    spawner = SpawnerSettings(
        mode=_choice(sp, "mode", "spawner", SPAWNER_MODES),
        start_timeout=int(_number(sp, "start_timeout", "spawner", minimum=1)),
        http_timeout=int(_number(sp, "http_timeout", "spawner", minimum=1)),
        default_url=_str(sp, "default_url", "spawner"),
    )
    st = data["store"]
    mount_path = _str(st, "mount_path", "store")
    if not mount_path.startswith("/"):
        raise PlatformConfigError("store.mount_path must be an absolute path in the container")
    store = StoreSettings(
        host_path=_path(_str(st, "host_path", "store")),
        mount_path=mount_path.rstrip("/"),
        manifest_dir=_path(_str(st, "manifest_dir", "store")),
    )
    lo = data["local"]
    home_dir = _str(lo, "home_dir", "local")
    if "{username}" not in home_dir:
        raise PlatformConfigError("local.home_dir must contain {username}")
    local = LocalSettings(
        home_dir=str(_path(home_dir, data_dir)),
        notebooks_dir=_path(_str(lo, "notebooks_dir", "local")),
        dataset_views=_bool(lo, "dataset_views", "local"),
    )
    dk = data["docker"]
    home_volume = _str(dk, "home_volume", "docker")
    if "{username}" not in home_volume:
        raise PlatformConfigError("docker.home_volume must contain {username}: one home each")
    docker = DockerSettings(
        image=_str(dk, "image", "docker"),
        network=_str(dk, "network", "docker"),
        home_volume=home_volume,
        home_path=_str(dk, "home_path", "docker"),
        user=_container_user(_str(dk, "user", "docker")),
        pull_policy=_choice(dk, "pull_policy", "docker", PULL_POLICIES),
        pids_limit=int(_number(dk, "pids_limit", "docker", minimum=64)),
        host_firewall=_bool(dk, "host_firewall", "docker"),
    )
    if docker.network in ("bridge", "host", "none"):
        raise PlatformConfigError(
            f"docker.network must name the platform's internal network, not {docker.network!r}"
        )
    gp = data["gpus"]
    gpus = GpuSettings(
        devices=_gpu_devices(gp["devices"]),
        wait_seconds=_number(gp, "wait_seconds", "gpus"),
        swarm_resource=_str(gp, "swarm_resource", "gpus"),
    )
    au = data["auth"]
    oi = au["oidc"]
    oidc = OidcSettings(
        authorize_url=_url(oi, "authorize_url", "auth.oidc", empty=True),
        token_url=_url(oi, "token_url", "auth.oidc", empty=True),
        userdata_url=_url(oi, "userdata_url", "auth.oidc", empty=True),
        client_id=_str(oi, "client_id", "auth.oidc", empty=True),
        client_secret=_str(oi, "client_secret", "auth.oidc", empty=True),
        callback_url=_url(oi, "callback_url", "auth.oidc", empty=True),
        scope=_strings(oi, "scope", "auth.oidc"),
        username_claim=_str(oi, "username_claim", "auth.oidc"),
        groups_claim=_str(oi, "groups_claim", "auth.oidc"),
        allowed_groups=_strings(oi, "allowed_groups", "auth.oidc"),
        login_service=_str(oi, "login_service", "auth.oidc"),
        validate_server_cert=_bool(oi, "validate_server_cert", "auth.oidc"),
    )
    auth = AuthSettings(
        mode=_choice(au, "mode", "auth", AUTH_MODES),
        admin_group=_str(au, "admin_group", "auth"),
        demo_users_file=_path(_str(au["demo"], "users_file", "auth.demo"), data_dir),
        oidc=oidc,
    )
    if auth.mode == "demo" and not is_loopback_url(hub_settings.bind_url):
        raise PlatformConfigError(
            f"auth.mode 'demo' serves only a loopback address; hub.bind_url is "
            f"{hub_settings.bind_url} (use auth.mode 'oidc' to serve a network)"
        )
    if auth.mode == "oidc":
        for key in ("authorize_url", "token_url", "userdata_url", "client_id", "callback_url"):
            if not getattr(oidc, key):
                raise PlatformConfigError(f"auth.oidc.{key} is required when auth.mode is 'oidc'")
    cu = data["culler"]
    culler = CullerSettings(
        enabled=_bool(cu, "enabled", "culler"),
        timeout=int(_number(cu, "timeout", "culler", minimum=10)),
        max_age=int(_number(cu, "max_age", "culler")),
        cull_every=int(_number(cu, "cull_every", "culler", minimum=5)),
    )
    return PlatformConfig(
        hub=hub_settings,
        spawner=spawner,
        store=store,
        local=local,
        docker=docker,
        profiles=_profiles(data["profiles"]),
        gpus=gpus,
        auth=auth,
        culler=culler,
        audit_path=_path(_str(data["audit"], "path", "audit"), data_dir),
        sources=sources,
    )
