"""The platform's choices (which spawner, which login, where the hub keeps its files), mbc's
defaults for JupyterHub's own settings, and the short list of environment overrides."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from traitlets import Enum
from traitlets.config import Configurable

from .traits import DATA_DIR, AbsolutePath


class PlatformConfigError(ValueError):
    """The platform config is invalid; the one-line message names the setting and its source."""


class MbcPlatform(Configurable):
    """What kind of hub this is. The loader (:mod:`mbc_hub.config`) turns these choices into
    JupyterHub's ``spawner_class``, ``authenticator_class`` and the files under ``data_dir``."""

    spawner = Enum(
        ["local", "docker", "swarm"],
        default_value="local",
        help="local: a process per researcher (the demo); docker: a container per researcher "
        "on this host's engine; swarm: a Swarm service per researcher (the hub in its image on "
        "a manager). Environment: MBC_SPAWNER.",
    ).tag(config=True)

    authenticator = Enum(
        ["demo", "oidc"],
        default_value="demo",
        help="demo: the demo users file, answered on loopback only; oidc: the institution's "
        "OpenID Connect provider (MbcOAuthenticator). Environment: MBC_AUTH.",
    ).tag(config=True)

    data_dir = AbsolutePath(
        "work-demo/hub",
        help="The hub's own files: database, cookie secret, pid files, audit log, demo users. "
        "Written {data_dir} in any other setting. Environment: MBC_HUB_DATA_DIR.",
    ).tag(config=True)


#: mbc's defaults for settings of JupyterHub, its proxy, spawners and authenticators, each set
#: on the class that defines it, so a value set on that class or a subclass wins.
MBC_DEFAULTS: dict[str, dict[str, Any]] = {
    "JupyterHub": {
        "bind_url": "http://127.0.0.1:8000",
        "hub_bind_url": "http://127.0.0.1:8081",
        "db_url": "sqlite:///{data_dir}/jupyterhub.sqlite",
        "cookie_secret_file": "{data_dir}/jupyterhub_cookie_secret",
        "pid_file": "{data_dir}/jupyterhub.pid",
    },
    "ConfigurableHTTPProxy": {
        "api_url": "http://127.0.0.1:8001",
        "pid_file": "{data_dir}/proxy.pid",
    },
    "Spawner": {
        "start_timeout": 120,
        "http_timeout": 60,
        "default_url": "/lab",
    },
    "SimpleLocalProcessSpawner": {
        "home_dir_template": "{data_dir}/homes/{username}",
    },
    "DockerSpawner": {
        "image": "mbc-researcher:latest",
        "network_name": "mbc-internal",
    },
    "Authenticator": {
        "manage_groups": True,
    },
    "OAuthenticator": {
        "scope": ["openid", "profile", "email", "groups"],
        "username_claim": "preferred_username",
        "auth_state_groups_key": "oauth_user.groups",
        "login_service": "institution login",
        "admin_groups": ["mbc-admins"],
    },
}

#: environment variable -> (section, setting) it overrides; nothing else is read from the
#: environment (besides OAuthenticator's own OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, ...).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "MBC_SPAWNER": ("MbcPlatform", "spawner"),
    "MBC_AUTH": ("MbcPlatform", "authenticator"),
    "MBC_HUB_DATA_DIR": ("MbcPlatform", "data_dir"),
    "MBC_HUB_BIND": ("JupyterHub", "bind_url"),
    "MBC_HUB_API_BIND": ("JupyterHub", "hub_bind_url"),
    "MBC_STORE_HOST_PATH": ("MbcStore", "path"),
    "MBC_IMAGE": ("DockerSpawner", "image"),
    "MBC_GPUS": ("GpuAllocator", "devices"),
    "MBC_DEMO_USERS_FILE": ("DemoAuthenticator", "users_file"),
}


def resolve_path(value: str, config: Any) -> Path:
    """A path setting as a path: ``{data_dir}`` filled in from ``config`` (the loader fills it
    in already; this serves objects made without it)."""
    if DATA_DIR in value:
        value = value.replace(DATA_DIR, MbcPlatform(config=config).data_dir)
    return Path(value).expanduser().absolute()


def url_with_scheme(url: str) -> str:
    """``HOST:PORT`` as ``http://HOST:PORT``; no trailing slash."""
    return (url if "://" in url else f"http://{url}").rstrip("/")


def is_loopback_url(url: str) -> bool:
    """True if ``url``'s host is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    host = urlparse(url_with_scheme(url)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
