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
from traitlets import Unicode, default

from .audit import audit_log
from .config import PlatformConfig, is_loopback_url


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
    return urlparse(bind_url if "://" in bind_url else f"http://{bind_url}").hostname or ""


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


async def _audit_login(authenticator: Any, handler: Any, authentication: dict) -> dict:
    """post_auth_hook: one audit line per successful login."""
    if authenticator.audit_log_path:
        audit_log(authenticator.audit_log_path).record(
            "login",
            authentication["name"],
            groups=sorted(authentication.get("groups") or []),
            admin=bool(authentication.get("admin")),
            via=type(authenticator).__name__,
            remote_ip=getattr(getattr(handler, "request", None), "remote_ip", None),
        )
    return authentication


def _audit_refusal(authenticator: Any, handler: Any, user: str | None, reason: str, **kw) -> None:
    if authenticator.audit_log_path:
        audit_log(authenticator.audit_log_path).record(
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

    users_file = Unicode(help="YAML file: users: {name: {password, groups, admin}}").tag(
        config=True
    )
    admin_group = Unicode("", help="members of this group are hub admins").tag(config=True)
    audit_log_path = Unicode("", help="JSON-lines audit log (empty: none)").tag(config=True)

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True

    @default("allow_all")
    def _allow_all_default(self) -> bool:
        # the users file is the allow list: no one else can authenticate
        return True

    @default("post_auth_hook")
    def _post_auth_hook_default(self):
        return _audit_login

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
        users = read_demo_users(Path(self.users_file))
        spec = users.get(name)
        if spec is None or not hmac.compare_digest(spec["password"].encode(), password.encode()):
            _audit_refusal(self, handler, name or None, "wrong user name or password")
            return None
        groups = sorted(spec["groups"])
        return {
            "name": name,
            "groups": groups,
            "admin": spec["admin"] or (bool(self.admin_group) and self.admin_group in groups),
        }


class MbcOAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator that audits logins and says clearly why it refuses someone."""

    audit_log_path = Unicode("", help="JSON-lines audit log (empty: none)").tag(config=True)

    @default("post_auth_hook")
    def _post_auth_hook_default(self):
        return _audit_login

    @default("custom_403_message")
    def _custom_403_default(self) -> str:
        groups = ", ".join(sorted(self.allowed_groups)) or "none configured"
        return (
            "You signed in, but your account is not in a group that may use this hub "
            f"(allowed groups: {groups}). Ask your society's data steward for access."
        )

    async def check_allowed(self, username: str, auth_model: dict | None) -> bool:
        allowed = super().check_allowed(username, auth_model)
        if isawaitable(allowed):
            allowed = await allowed
        if not allowed and auth_model is not None:
            _audit_refusal(
                self,
                None,
                username,
                "not in an allowed group",
                groups=sorted(auth_model.get("groups") or []),
                allowed_groups=sorted(self.allowed_groups),
            )
        return bool(allowed)


def oidc_traits(cfg: PlatformConfig, allowed_groups: set[str]) -> dict[str, Any]:
    """The traits of :class:`MbcOAuthenticator` for the platform's OIDC settings."""
    oidc = cfg.auth.oidc
    return {
        "client_id": oidc.client_id,
        "client_secret": oidc.client_secret,
        "oauth_callback_url": oidc.callback_url,
        "authorize_url": oidc.authorize_url,
        "token_url": oidc.token_url,
        "userdata_url": oidc.userdata_url,
        "scope": list(oidc.scope),
        "username_claim": oidc.username_claim,
        "login_service": oidc.login_service,
        "validate_server_cert": oidc.validate_server_cert,
        "manage_groups": True,
        "auth_state_groups_key": f"oauth_user.{oidc.groups_claim}",
        "admin_groups": {cfg.auth.admin_group},
        "allowed_groups": set(allowed_groups),
        "admin_users": set(cfg.hub.admin_users),
        "audit_log_path": str(cfg.audit_path),
    }


def demo_traits(cfg: PlatformConfig) -> dict[str, Any]:
    """The traits of :class:`DemoAuthenticator`."""
    require_loopback(cfg.hub.bind_url)
    return {
        "users_file": str(cfg.auth.demo_users_file),
        "admin_group": cfg.auth.admin_group,
        "admin_users": set(cfg.hub.admin_users),
        "audit_log_path": str(cfg.audit_path),
    }
