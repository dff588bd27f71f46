"""Platform config -> JupyterHub traitlets: what ``jupyterhub_config.py`` does with ``c``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .auth import DemoAuthenticator, MbcOAuthenticator, demo_traits, oidc_traits
from .config import PlatformConfig, PlatformConfigError, is_loopback_url
from .network import api_port, ensure_network, gateway
from .policy import dataset_groups
from .services import idle_culler
from .spawner import MbcDockerSpawner, MbcLocalSpawner, MbcSwarmSpawner

SPAWNERS = {"local": MbcLocalSpawner, "docker": MbcDockerSpawner, "swarm": MbcSwarmSpawner}
#: In ``hub.hub_bind_url``: the platform network's gateway address.
GATEWAY = "{gateway}"
PROXY_BIN = Path(".cache/npm/node_modules/.bin/configurable-http-proxy")


def proxy_command(setting: str, project_dir: Path) -> list[str]:
    """configurable-http-proxy: as configured, else the project's npm install, else on PATH."""
    if setting != "auto":
        return [setting]
    local = Path(project_dir) / PROXY_BIN
    if local.exists():
        return [str(local)]
    found = shutil.which("configurable-http-proxy")
    if found:
        return [found]
    raise PlatformConfigError(
        f"configurable-http-proxy not found (looked in {local} and on PATH): run `make proxy` "
        "or set hub.proxy_command"
    )


def _binds_every_address(url: str) -> bool:
    return (urlparse(url).hostname or "") in ("0.0.0.0", "::", "")


def resolve_hub_bind_url(cfg: PlatformConfig) -> str:
    """``hub.hub_bind_url`` with ``{gateway}`` replaced by the platform network's gateway (the
    network is created if missing): in docker mode the hub API then listens on the one host
    address its containers reach, not on every address of the host."""
    url = cfg.hub.hub_bind_url
    if GATEWAY not in url:
        return url
    if cfg.spawner.mode != "docker":
        raise PlatformConfigError(
            f"hub.hub_bind_url {url}: {GATEWAY} stands for the platform network's gateway, "
            "which a hub on the host has in spawner mode 'docker' only"
        )
    import docker
    from docker.utils import kwargs_from_env

    client = docker.APIClient(version="auto", **kwargs_from_env())
    network = ensure_network(client, cfg.docker.network, swarm=False)
    return url.replace(GATEWAY, gateway(network))


def allowed_groups(cfg: PlatformConfig) -> set[str]:
    """Groups whose members may log in: as configured, else every group a dataset names."""
    if cfg.auth.oidc.allowed_groups:
        return set(cfg.auth.oidc.allowed_groups)
    return set(dataset_groups(cfg.store.manifest_dir).values()) | {cfg.auth.admin_group}


def _section(c: Any, name: str) -> Any:
    return getattr(c, name)


def apply_platform_config(c: Any, cfg: PlatformConfig, project_dir: Path) -> None:
    """Set JupyterHub's configuration ``c`` from the platform config ``cfg``."""
    hub = cfg.hub
    mode = cfg.spawner.mode
    if mode != "local" and not hub.hub_connect_url and is_loopback_url(hub.hub_bind_url):
        raise PlatformConfigError(
            f"spawner mode {mode!r}: containers cannot reach the hub API at {hub.hub_bind_url}; "
            "set hub.hub_bind_url to an address on the platform network (and hub.hub_connect_url)"
        )
    hub.data_dir.mkdir(parents=True, exist_ok=True)

    c.JupyterHub.bind_url = hub.bind_url
    c.JupyterHub.hub_bind_url = resolve_hub_bind_url(cfg)
    if hub.hub_connect_url:
        c.JupyterHub.hub_connect_url = hub.hub_connect_url
    elif mode == "docker" and _binds_every_address(hub.hub_bind_url):
        # The proxy runs beside the hub and reaches it on loopback (JupyterHub would use the
        # machine's host name, which need not resolve); containers get the network's gateway
        # from the spawner.
        c.JupyterHub.hub_connect_url = f"http://127.0.0.1:{api_port(hub.hub_bind_url)}"
    c.JupyterHub.db_url = f"sqlite:///{hub.data_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(hub.data_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(hub.data_dir / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.command = proxy_command(hub.proxy_command, project_dir)
    c.ConfigurableHTTPProxy.api_url = hub.proxy_api_url
    c.ConfigurableHTTPProxy.pid_file = str(hub.data_dir / "proxy.pid")
    # Containers outlive a hub restart (their GPUs are rebuilt from them); local processes don't.
    c.JupyterHub.cleanup_servers = mode == "local"

    spawner = SPAWNERS[mode]
    c.JupyterHub.spawner_class = spawner
    _section(c, spawner.__name__).platform = cfg
    c.Spawner.start_timeout = cfg.spawner.start_timeout
    c.Spawner.http_timeout = cfg.spawner.http_timeout
    c.Spawner.default_url = cfg.spawner.default_url

    if cfg.auth.mode == "demo":
        c.JupyterHub.authenticator_class = DemoAuthenticator
        traits = demo_traits(cfg)
    else:
        c.JupyterHub.authenticator_class = MbcOAuthenticator
        traits = oidc_traits(cfg, allowed_groups(cfg))
    auth_section = _section(c, c.JupyterHub.authenticator_class.__name__)
    for name, value in traits.items():
        setattr(auth_section, name, value)

    services, roles = [], []
    if cfg.culler.enabled:
        service, role = idle_culler(cfg.culler)
        services.append(service)
        roles.append(role)
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
