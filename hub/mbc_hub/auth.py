"""Authenticators: a demo login for loopback only, and OIDC through GenericOAuthenticator.

Both let the login decide the user's hub groups (``manage_groups``), make members of the admin
group hub admins, and write logins and refusals to the audit log.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from inspect import isawaitable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from jupyterhub.auth import Authenticator
from oauthenticator.generic import GenericOAuthenticator
from traitlets import Bool, Set, default

from .audit import AuditLog
from .platform import is_loopback_url, resolve_path, url_with_scheme
from .store import MbcStore
from .traits import AbsolutePath


class LoopbackOnlyError(RuntimeError):
    """The demo login was asked to serve a non-loopback address."""


def require_loopback(bind_url: str) -> str:
    """The host of ``bind_url`` (``127.0.0.1``, ``::1``, ``localhost``) if it is a loopback
    address; :class:`LoopbackOnlyError` for any other."""
    if not is_loopback_url(bind_url):
        raise LoopbackOnlyError(
            f"the demo login serves only loopback addresses; the hub binds {bind_url}. "
            "Bind it to 127.0.0.1 or use auth mode 'oidc'."
        )
    return urlparse(url_with_scheme(bind_url)).hostname or ""


def read_demo_users(path: Path) -> dict[str, dict[str, Any]]:
    """``{name: {password, groups, admin}}`` from a demo users file (YAML, key ``users``)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise FileNotFoundError(
            f"no demo users file at {path} ({exc.strerror}); `mbc demo` writes one"
        ) from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict) or not users:
        raise ValueError(f"demo users file {path} has no 'users' mapping")
    out = {}
    for name, spec in users.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("password"), str):
            raise ValueError(f"demo users file {path}: user {name!r} needs a password")
        groups = spec.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ValueError(f"demo users file {path}: groups of {name!r} must be a list")
        out[str(name)] = {
            "password": spec["password"],
            "groups": groups,
            "admin": bool(spec.get("admin")),
        }
    return out


def _is_loopback_ip(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%")[0]).is_loopback
    except ValueError:
        return False


def request_addresses(handler: Any) -> tuple[str | None, str | None]:
    """(the socket peer, the client the proxy forwarded) of the request ``handler`` serves.

    JupyterHub serves with ``xheaders``: ``remote_ip`` is what ``X-Forwarded-For`` says, which
    anyone who reaches the hub's port can write; the socket's own peer address is not.
    """
    request = getattr(handler, "request", None)
    context = getattr(getattr(request, "connection", None), "context", None)
    peer = getattr(context, "_orig_remote_ip", None)
    return peer, getattr(request, "remote_ip", None)


def is_own_address(address: str | None) -> bool:
    """Whether ``address`` is one of this machine's: loopback, or an address a socket here can
    bind to (in docker mode the hub API listens on the platform network's gateway, and the
    proxy beside the hub connects from there). A container's or another machine's address is
    not; a TCP peer cannot pretend to be one (the handshake's replies would not reach it)."""
    if _is_loopback_ip(address):
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


def from_loopback(handler: Any) -> bool:
    """Whether a login came through the proxy beside the hub from a browser on loopback: the
    socket's peer is this machine (:func:`is_own_address`) and the client the proxy
    forwarded is a loopback address."""
    peer, client = request_addresses(handler)
    return is_own_address(peer) and _is_loopback_ip(client)


async def _after_login(authenticator: Any, handler: Any, authentication: dict) -> dict:
    """post_auth_hook: the course groups of the courses that list the user join the groups
    the login gave (:mod:`mbc_hub.courses`), then one audit line per successful login."""
    from .courses import MbcCourses

    courses = MbcCourses(parent=authenticator).groups_for(authentication["name"])
    if courses:
        authentication["groups"] = sorted(set(authentication.get("groups") or []) | set(courses))
    AuditLog(parent=authenticator).record(
        "login",
        authentication["name"],
        groups=sorted(authentication.get("groups") or []),
        admin=bool(authentication.get("admin")),
        via=type(authenticator).__name__,
        remote_ip=getattr(getattr(handler, "request", None), "remote_ip", None),
    )
    return authentication


def _audit_refusal(authenticator: Any, handler: Any, user: str | None, reason: str, **kw) -> None:
    AuditLog(parent=authenticator).record(
        "refusal",
        user,
        action="login",
        reason=reason,
        remote_ip=getattr(getattr(handler, "request", None), "remote_ip", None),
        **kw,
    )


class DemoAuthenticator(Authenticator):
    """Passwords and groups from a demo users file, for a browser on this machine only.

    It refuses to run when the public URL is not a loopback address, and refuses any login
    that does not arrive over loopback from a loopback client (:func:`from_loopback`), so a
    researcher's container that reaches the hub API cannot log in with the demo passwords."""

    users_file = AbsolutePath(
        "{data_dir}/demo-users.yaml",
        help="The demo logins (YAML: users: {name: {password, groups, admin}}); `mbc demo` "
        "writes it. Environment: MBC_DEMO_USERS_FILE.",
    ).tag(config=True)
    admin_groups = Set({"mbc-admins"}, help="Members of these groups are hub admins.").tag(
        config=True
    )

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True  # the users file says who is in which group

    @default("allow_all")
    def _allow_all_default(self) -> bool:
        # the users file is the allow list: no one else can authenticate
        return True

    @default("post_auth_hook")
    def _post_auth_hook_default(self):
        return _after_login

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        bind_url = getattr(self.parent, "bind_url", None)
        if bind_url:
            require_loopback(bind_url)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict | None:
        name = (data.get("username") or "").strip()
        password = data.get("password") or ""
        if not from_loopback(handler):
            # Whatever the hub binds to (in docker mode its API listens where containers
            # reach it), the demo's passwords are good only on this machine's loopback.
            peer, client = request_addresses(handler)
            _audit_refusal(
                self, handler, name or None, "demo login off loopback", peer=peer, client=client
            )
            return None
        users = read_demo_users(resolve_path(self.users_file, self.config))
        spec = users.get(name)
        if spec is None or not hmac.compare_digest(spec["password"].encode(), password.encode()):
            _audit_refusal(self, handler, name or None, "wrong user name or password")
            return None
        groups = sorted(spec["groups"])
        return {
            "name": name,
            "groups": groups,
            "admin": spec["admin"] or bool(self.admin_groups & set(groups)),
        }


class MbcOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator that lets in the groups the store's datasets name, audits logins
    and says clearly why it refuses someone."""

    allow_store_groups = Bool(
        True,
        help="Members of a group that a dataset of the store names may log in (read from the "
        "store's manifests at each login), besides allowed_groups and admin_groups.",
    ).tag(config=True)

    def store_groups(self) -> set[str]:
        """The groups the datasets of the store name."""
        return set(MbcStore(parent=self).dataset_groups().values())

    @default("post_auth_hook")
    def _post_auth_hook_default(self):
        return _after_login

    @default("custom_403_message")
    def _custom_403_default(self) -> str:
        groups = ", ".join(sorted(self.allowed_group_names())) or "none configured"
        return (
            "You signed in, but your account is not in a group that may use this hub "
            f"(allowed groups: {groups}). Ask your society's data steward for access."
        )

    def course_groups(self) -> set[str]:
        """The groups of the platform's courses."""
        from .courses import MbcCourses

        return {c.group for c in MbcCourses(parent=self).course_list()}

    def allowed_group_names(self) -> set[str]:
        """Every group whose members may log in."""
        groups = set(self.allowed_groups) | set(self.admin_groups) | self.course_groups()
        return groups | self.store_groups() if self.allow_store_groups else groups

    async def check_allowed(self, username: str, auth_model: dict | None) -> bool:
        from .courses import MbcCourses

        allowed = super().check_allowed(username, auth_model)
        if isawaitable(allowed):
            allowed = await allowed
        if not allowed and auth_model is not None and self.allow_store_groups:
            allowed = bool(set(auth_model.get("groups") or []) & self.store_groups())
        if not allowed and auth_model is not None:
            # a course's members: listed by the course, or in its group at the provider
            listed = MbcCourses(parent=self).groups_for(username)
            allowed = bool(listed or set(auth_model.get("groups") or []) & self.course_groups())
        if not allowed and auth_model is not None:
            _audit_refusal(
                self,
                None,
                username,
                "not in an allowed group",
                groups=sorted(auth_model.get("groups") or []),
                allowed_groups=sorted(self.allowed_group_names()),
            )
        return bool(allowed)
