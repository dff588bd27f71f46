"""Loading the platform config into JupyterHub's ``c``, as Zero to JupyterHub's ``hub.config``.

Layers, later ones winning: :data:`~mbc_hub.platform.MBC_DEFAULTS`, then the YAML platform file
(``$MBC_PLATFORM_CONFIG``; keyed by class, e.g. ``DockerSpawner: {image: ...}``), then the
environment variables of :data:`~mbc_hub.platform.ENV_OVERRIDES`. Every value is checked by its
trait before the hub starts, and a class or setting the hub does not have is refused, so a typo
never passes silently. ``{data_dir}`` in a string stands for ``MbcPlatform.data_dir``. Then what
follows from the choices is derived (spawner and authenticator classes, the proxy command, the
hub API's address in docker mode, the culler service), where the file did not set it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from traitlets import HasTraits, TraitError, TraitType
from traitlets.config import Config, Configurable

from .platform import (
    ENV_OVERRIDES,
    MBC_DEFAULTS,
    MbcPlatform,
    PlatformConfigError,
    is_loopback_url,
    url_with_scheme,
)
from .traits import DATA_DIR

CONFIG_ENV = "MBC_PLATFORM_CONFIG"
#: In ``JupyterHub.hub_bind_url``: the platform network's gateway address (docker mode).
GATEWAY = "{gateway}"
PROXY_BIN = Path(".cache/npm/node_modules/.bin/configurable-http-proxy")
#: Settings the loader derives from ``MbcPlatform``; a platform file sets the choice instead.
DERIVED_ONLY = {
    ("JupyterHub", "spawner_class"): "MbcPlatform.spawner",
    ("JupyterHub", "authenticator_class"): "MbcPlatform.authenticator",
}
#: The OIDC settings a login needs, and OAuthenticator's own environment variable for each.
OIDC_REQUIRED = {
    "authorize_url": "OAUTH2_AUTHORIZE_URL",
    "token_url": "OAUTH2_TOKEN_URL",
    "userdata_url": "OAUTH2_USERDATA_URL",
    "client_id": "OAUTH_CLIENT_ID",
    "oauth_callback_url": "OAUTH_CALLBACK_URL",
}
_URL_SETTINGS = {("JupyterHub", "bind_url"), ("JupyterHub", "hub_bind_url")}
_URL_SETTINGS |= {("JupyterHub", "hub_connect_url"), ("ConfigurableHTTPProxy", "api_url")}


def mbc_classes() -> list[type[Configurable]]:
    """The classes mbc adds to JupyterHub, each with its settings (the settings reference)."""
    from .audit import AuditLog
    from .auth import DemoAuthenticator, MbcOAuthenticator
    from .courses import MbcCourses
    from .gpu import GpuAllocator
    from .services import IdleCuller
    from .spawner import (
        MbcContainerSpawner,
        MbcDockerSpawner,
        MbcLocalSpawner,
        MbcSpawner,
        MbcSwarmSpawner,
    )
    from .store import MbcStore
    from .upload.settings import MbcUpload

    return [
        MbcPlatform,
        MbcStore,
        MbcSpawner,
        MbcLocalSpawner,
        MbcContainerSpawner,
        MbcDockerSpawner,
        MbcSwarmSpawner,
        GpuAllocator,
        DemoAuthenticator,
        MbcOAuthenticator,
        AuditLog,
        IdleCuller,
        MbcUpload,
        MbcCourses,
    ]


def configurable_classes() -> dict[str, type[Configurable]]:
    """Every class a platform file may configure, by name: mbc's and those of JupyterHub, its
    proxy, DockerSpawner and OAuthenticator that mbc's derive from."""
    from dockerspawner import DockerSpawner, SwarmSpawner
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator
    from jupyterhub.proxy import ConfigurableHTTPProxy, Proxy
    from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, Spawner
    from oauthenticator.generic import GenericOAuthenticator
    from oauthenticator.oauth2 import OAuthenticator

    classes: list[type[Configurable]] = [
        JupyterHub,
        Proxy,
        ConfigurableHTTPProxy,
        Spawner,
        LocalProcessSpawner,
        SimpleLocalProcessSpawner,
        DockerSpawner,
        SwarmSpawner,
        Authenticator,
        OAuthenticator,
        GenericOAuthenticator,
        *mbc_classes(),
    ]
    return {cls.__name__: cls for cls in classes}


def read_platform_file(path: Path) -> dict[str, Any]:
    """The platform file's mapping of class -> settings (empty for an empty file)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise PlatformConfigError(f"cannot read platform config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise PlatformConfigError(f"platform config {path} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PlatformConfigError(f"platform config {path}: top level must map class names")
    return data


class _Layers:
    """The settings of every layer, by (class, setting), each with the layer it came from."""

    def __init__(self, classes: Mapping[str, type[Configurable]]) -> None:
        self.classes = classes
        self.values: dict[tuple[str, str], tuple[Any, str]] = {}

    def trait(self, section: str, key: str, source: str) -> TraitType:
        cls = self.classes.get(section)
        if cls is None:
            known = ", ".join(sorted(self.classes))
            raise PlatformConfigError(f"{source}: unknown class {section!r} (known: {known})")
        traits = cls.class_traits(config=True)
        if key not in traits:
            raise PlatformConfigError(
                f"{source}: {section} has no setting {key!r} (docs/hub.md lists the settings)"
            )
        return traits[key]

    def set(self, section: str, key: str, value: Any, source: str) -> None:
        self.trait(section, key, source)
        if (section, key) in DERIVED_ONLY and source != "mbc default":
            raise PlatformConfigError(
                f"{source}: set {DERIVED_ONLY[section, key]} instead of {section}.{key}"
            )
        self.values[section, key] = (value, source)

    def add_mapping(self, data: Mapping[str, Any], source: str) -> None:
        for section, settings in data.items():
            if not isinstance(settings, Mapping):
                raise PlatformConfigError(f"{source}: {section} must map settings to values")
            for key, value in settings.items():
                self.set(str(section), str(key), value, source)

    def get(self, section: str, key: str) -> Any:
        """The value set, else the class's default."""
        if (section, key) in self.values:
            return self.values[section, key][0]
        return self.classes[section].class_traits()[key].default()

    def has(self, section: str, key: str) -> bool:
        return (section, key) in self.values

    def check(self, section: str, key: str, value: Any, source: str) -> Any:
        """``value`` as the trait takes it, or PlatformConfigError naming the setting."""
        trait = self.trait(section, key, source)
        try:
            if source in ENV_OVERRIDES and isinstance(value, str):
                value = trait.from_string(value)
            return trait._validate(_HOLDER, value)
        except TraitError as exc:
            text = str(exc).replace(" of a HasTraits instance", "").replace("\n", " ")
            raise PlatformConfigError(f"{source}: {section}.{key}: {text}") from None


_HOLDER = HasTraits()


def _fill_data_dir(value: Any, data_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace(DATA_DIR, data_dir)
    if isinstance(value, list | tuple):
        return type(value)(_fill_data_dir(v, data_dir) for v in value)
    if isinstance(value, dict):
        return {k: _fill_data_dir(v, data_dir) for k, v in value.items()}
    return value


def layered_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """The three layers merged and checked, ``{data_dir}`` filled in; nothing derived, nothing
    touched on disk or on the Docker engine."""
    environ = os.environ if environ is None else environ
    classes = configurable_classes()
    layers = _Layers(classes)
    for section, settings in MBC_DEFAULTS.items():
        for key, value in settings.items():
            layers.set(section, key, value, "mbc default")
    path = path or environ.get(CONFIG_ENV) or None
    if path:
        layers.add_mapping(read_platform_file(Path(path)), f"platform config {path}")
    for var, (section, key) in ENV_OVERRIDES.items():
        if environ.get(var):
            layers.set(section, key, environ[var], var)
    # mbc's own path settings whose default lies in the data folder
    for cls in mbc_classes():
        for key, trait in cls.class_own_traits(config=True).items():
            default = trait.default()
            in_data_dir = isinstance(default, str) and DATA_DIR in default
            if in_data_dir and not layers.has(cls.__name__, key):
                layers.set(cls.__name__, key, default, "mbc default")

    data_dir_source = layers.values.get(("MbcPlatform", "data_dir"), (None, "mbc default"))[1]
    data_dir = layers.check(
        "MbcPlatform", "data_dir", layers.get("MbcPlatform", "data_dir"), data_dir_source
    )
    config = Config()
    for (section, key), (value, source) in layers.values.items():
        value = _fill_data_dir(value, data_dir)
        if (section, key) in _URL_SETTINGS and isinstance(value, str) and value:
            value = url_with_scheme(value)
        config[section][key] = layers.check(section, key, value, source)
    return config


def proxy_command(setting: list[str] | None, project_dir: Path) -> list[str]:
    """configurable-http-proxy: as configured, else the project's npm install, else on PATH."""
    if setting:
        return list(setting)
    local = Path(project_dir) / PROXY_BIN
    if local.exists():
        return [str(local)]
    found = shutil.which("configurable-http-proxy")
    if found:
        return [found]
    raise PlatformConfigError(
        f"configurable-http-proxy not found (looked in {local} and on PATH): run `make proxy` "
        "or set ConfigurableHTTPProxy.command"
    )


def _binds_every_address(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("0.0.0.0", "::", "")


def _api_port(url: str) -> int:
    return urlparse(url).port or 8081


def resolve_gateway(url: str, network_name: str) -> str:
    """``url`` with ``{gateway}`` replaced by the platform network's gateway (the network is
    created if missing): the hub API then listens on the one host address its containers
    reach, not on every address of the host."""
    import docker
    from docker.utils import kwargs_from_env

    from .network import ensure_network, gateway

    client = docker.APIClient(version="auto", **kwargs_from_env())
    return url.replace(GATEWAY, gateway(ensure_network(client, network_name, swarm=False)))


def upload_service_environment(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> dict[str, str]:
    """What the ingest service needs of the hub's environment to read the same settings."""
    env = {var: environ[var] for var in (*ENV_OVERRIDES, "MBC_DATASETS_DIR") if environ.get(var)}
    path = path or environ.get(CONFIG_ENV)
    if path:
        env[CONFIG_ENV] = str(Path(path).absolute())
    return env


def _add_upload_service(
    c: Config, services: list, roles: list, env: dict[str, str], store: Any
) -> None:
    """The ingest service, the society accounts, their roles and the upload scopes."""
    from mbc_lib.errors import MbcError
    from mbc_lib.manifests import load_manifests

    from .upload.settings import MbcUpload

    upload = MbcUpload(config=c)
    if not upload.enabled:
        return
    try:
        upload.check()
    except ValueError as exc:
        raise PlatformConfigError(str(exc)) from None
    try:
        datasets = set(load_manifests())
    except MbcError:
        datasets = set()
    datasets |= set(store.dataset_groups())
    taken = {s.get("name") for s in services}
    for entry in upload.services(env):
        if entry["name"] in taken:
            raise PlatformConfigError(
                f"MbcUpload.societies: {entry['name']!r} is also the name of another hub service"
            )
        services.append(entry)
    roles.extend(upload.roles())
    scopes = dict(c.JupyterHub.get("custom_scopes") or {})
    scopes.update(upload.custom_scopes(datasets))
    c.JupyterHub.custom_scopes = scopes


def _add_courses(c: Config, roles: list, store: Any) -> None:
    """The courses' instructor roles, their publishing scopes and the material endpoints; a
    course naming a dataset the store lacks is refused."""
    from .courses import MbcCourses

    courses = MbcCourses(config=c)
    try:
        courses.check(store.dataset_groups() if store.present() else None)
    except ValueError as exc:
        raise PlatformConfigError(str(exc)) from None
    if courses.courses:
        c.JupyterHub.custom_scopes = {
            **(c.JupyterHub.get("custom_scopes") or {}),
            **courses.custom_scopes(),
        }
        from .course_handlers import course_handlers

        c.JupyterHub.extra_handlers = list(c.JupyterHub.get("extra_handlers") or []) + list(
            course_handlers()
        )
    taken = {r.get("name") for r in roles}
    for role in courses.roles():
        if role["name"] in taken:
            raise PlatformConfigError(
                f"MbcCourses.courses: role {role['name']!r} is also set in JupyterHub.load_roles"
            )
        roles.append(role)


def derive(
    c: Config,
    project_dir: Path,
    environ: Mapping[str, str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> None:
    """What follows from ``MbcPlatform``'s choices, set in ``c`` where it is not set yet."""
    from .audit import AuditLog
    from .auth import DemoAuthenticator, MbcOAuthenticator
    from .services import IdleCuller
    from .spawner import SPAWNERS
    from .store import MbcStore

    environ = os.environ if environ is None else environ
    platform = MbcPlatform(config=c)
    hub = c.JupyterHub
    mode = platform.spawner
    if platform.authenticator == "demo" and not is_loopback_url(hub.bind_url):
        raise PlatformConfigError(
            f"MbcPlatform.authenticator 'demo' serves only a loopback address; "
            f"JupyterHub.bind_url is {hub.bind_url} (use 'oidc' to serve a network)"
        )
    if platform.authenticator == "oidc":
        sections = ("OAuthenticator", "GenericOAuthenticator", "MbcOAuthenticator")
        for key, var in OIDC_REQUIRED.items():
            if not any(c[s].get(key) for s in sections) and not environ.get(var):
                raise PlatformConfigError(
                    f"MbcPlatform.authenticator 'oidc' needs MbcOAuthenticator.{key} (or ${var})"
                )
    network = c.DockerSpawner.network_name
    if network in ("bridge", "host", "none", "default"):
        raise PlatformConfigError(
            f"DockerSpawner.network_name must name the platform's internal network, not {network!r}"
        )
    connect = hub.get("hub_connect_url")
    if mode != "local" and not connect and is_loopback_url(hub.hub_bind_url):
        raise PlatformConfigError(
            f"MbcPlatform.spawner {mode!r}: containers cannot reach the hub API at "
            f"{hub.hub_bind_url}; set JupyterHub.hub_bind_url to an address on the platform "
            "network (docker: http://{gateway}:8081) and, in swarm mode, hub_connect_url"
        )
    if GATEWAY in hub.hub_bind_url:
        if mode != "docker":
            raise PlatformConfigError(
                f"JupyterHub.hub_bind_url {hub.hub_bind_url}: {GATEWAY} stands for the "
                "platform network's gateway, which a hub on the host has in docker mode only"
            )
        hub.hub_bind_url = resolve_gateway(hub.hub_bind_url, network)
    if mode == "docker" and not connect and _binds_every_address(hub.hub_bind_url):
        # The proxy runs beside the hub and reaches it on loopback (JupyterHub would use the
        # machine's host name, which need not resolve); containers get the network's gateway
        # from the spawner.
        hub.hub_connect_url = f"http://127.0.0.1:{_api_port(hub.hub_bind_url)}"
    c.ConfigurableHTTPProxy.command = proxy_command(
        c.ConfigurableHTTPProxy.get("command"), project_dir
    )
    if "cleanup_servers" not in hub:
        # Containers outlive a hub restart (their GPUs are rebuilt from them); processes don't.
        hub.cleanup_servers = mode == "local"
    hub.spawner_class = SPAWNERS[mode]
    hub.authenticator_class = (
        DemoAuthenticator if platform.authenticator == "demo" else (MbcOAuthenticator)
    )
    culler = IdleCuller(config=c)
    services, roles = list(hub.get("services") or []), list(hub.get("load_roles") or [])
    if culler.enabled:
        services.append(culler.service())
        roles.append(culler.role())
    Path(platform.data_dir).mkdir(parents=True, exist_ok=True)
    store = MbcStore(config=c)
    _add_upload_service(c, services, roles, upload_service_environment(path, environ), store)
    _add_courses(c, roles, store)
    hub.services, hub.load_roles = services, roles
    AuditLog(config=c)


def load_platform_config(
    c: Config | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    project_dir: str | os.PathLike[str] | None = None,
) -> Config:
    """Merge the platform config into ``c`` (JupyterHub's, in ``jupyterhub_config.py``) and
    return it; :class:`PlatformConfigError` with one line naming the setting if it is invalid."""
    config = layered_config(path, environ)
    derive(config, Path(project_dir) if project_dir else Path.cwd(), environ, path)
    if c is None:
        return config
    c.merge(config)
    return c
