"""The audit log and the authenticators (demo login, OIDC settings)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from jupyterhub.app import JupyterHub
from mbc_hub.audit import AuditLog, read_audit
from mbc_hub.auth import DemoAuthenticator, LoopbackOnlyError, MbcOAuthenticator, require_loopback
from mbc_hub.config import load_platform_config
from traitlets.config import Config

from .conftest import ROOT


def demo_authenticator(url: str, audit, **traits) -> DemoAuthenticator:
    """A DemoAuthenticator in a hub bound to ``url`` whose audit log is ``audit``."""
    hub = JupyterHub(bind_url=url, config=Config({"AuditLog": {"path": str(audit)}}))
    return DemoAuthenticator(parent=hub, **traits)


def test_audit_lines_are_json_with_time_event_user_and_no_secrets(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.record("login", "alice", groups=["ophthalmology"], password="hunter2", api_token="t0k")
    log.record(
        "spawn",
        "alice",
        gpu="0",
        mounts=[{"source": "/s", "target": "/t"}],
        env={"MBC_STORE": "/mnt", "JUPYTERHUB_API_TOKEN": "t1k"},
    )
    text = (tmp_path / "audit.jsonl").read_text()
    assert "hunter2" not in text and "t0k" not in text and "t1k" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [e["event"] for e in lines] == ["login", "spawn"]
    assert lines[0]["user"] == "alice" and lines[0]["time"].endswith("+00:00")
    assert lines[1]["env"] == {"MBC_STORE": "/mnt"} and lines[1]["gpu"] == "0"
    with pytest.raises(ValueError, match="unknown audit event"):
        log.record("coffee", "alice")


#: lines of about 110 kB: far beyond any buffer, so a writer that puts a line out in pieces
#: (a buffered file, json.dump) interleaves with the others
_PIECES, _THREADS, _LINES, _PROCESSES = 2000, 3, 6, 3

_WRITER = """
import sys, threading, time
from pathlib import Path
from mbc_hub.audit import AuditLog

path, go, ready, name = sys.argv[1:5]
threads, lines, pieces = (int(a) for a in sys.argv[5:])


def write(t):
    log = AuditLog(path)
    start.wait()
    for n in range(lines):
        me = f"{name}-t{t}-n{n}"
        log.record("stop", me, n=n, pieces=[f"{me}-{k:05d}-" + "x" * 40 for k in range(pieces)])


start = threading.Barrier(threads + 1)
workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
Path(ready).touch()
deadline = time.monotonic() + 60
while not Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.005)
start.wait()
for w in workers:
    w.join()
"""


def test_audit_log_survives_concurrent_writers(tmp_path):
    """Threads in several processes (the hub and its services) append long lines at once: every
    line arrives whole, none is lost or torn, whatever the interleaving."""
    path, go = tmp_path / "audit.jsonl", tmp_path / "go"
    env = dict(os.environ)  # mbc_hub is installed: nothing to add to the path
    args = [str(_THREADS), str(_LINES), str(_PIECES)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(go), str(tmp_path / f"ready{p}")]
            + [f"p{p}", *args],
            env=env,
        )
        for p in range(_PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready{p}").exists() for p in range(_PROCESSES)):
            assert all(proc.poll() is None for proc in procs), "a writer died before the start"
            assert time.monotonic() < deadline, "the writers did not get ready in 60 s"
            time.sleep(0.01)
        go.touch()  # every writer in every process starts now
        assert [proc.wait(timeout=120) for proc in procs] == [0] * _PROCESSES
    finally:
        for proc in procs:
            proc.kill()

    try:
        events = read_audit(path)
    except json.JSONDecodeError as exc:
        pytest.fail(f"a torn audit line: {exc}")
    expected = {
        f"p{p}-t{t}-n{n}" for p in range(_PROCESSES) for t in range(_THREADS) for n in range(_LINES)
    }
    assert sorted(e["user"] for e in events) == sorted(expected)
    for event in events:
        assert len(event["pieces"]) == _PIECES
        assert all(piece.startswith(event["user"] + "-") for piece in event["pieces"])
    assert path.read_bytes().count(b"\n") == len(expected)


def _handler(peer: str | None, client: str | None) -> SimpleNamespace:
    """A request as tornado presents it behind ``xheaders``: the socket's peer address, and
    ``remote_ip`` as X-Forwarded-For says."""
    context = SimpleNamespace(_orig_remote_ip=peer)
    return SimpleNamespace(
        request=SimpleNamespace(remote_ip=client, connection=SimpleNamespace(context=context))
    )


LOOPBACK = _handler("127.0.0.1", "127.0.0.1")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1"),
        ("http://localhost:1", "localhost"),
        ("http://[::1]:8", "::1"),
        ("http://127.0.0.2:8000", "127.0.0.2"),  # all of 127.0.0.0/8 is loopback
    ],
)
def test_loopback_addresses_are_accepted(url, host, tmp_path):
    """The demo login starts on every loopback bind address and lets a researcher in."""
    assert require_loopback(url) == host
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  alice: {password: pa55, groups: [ophthalmology]}\n")
    audit = tmp_path / "audit.jsonl"
    auth = demo_authenticator(url, audit, users_file=str(users))
    address = "127.0.0.1" if host == "localhost" else host
    handler = _handler(address, address)
    user = asyncio.run(
        auth.get_authenticated_user(handler, {"username": "alice", "password": "pa55"})
    )
    assert user["name"] == "alice" and user["groups"] == ["ophthalmology"]
    (login,) = read_audit(audit)
    assert (login["event"], login["user"], login["remote_ip"]) == ("login", "alice", address)


@pytest.mark.parametrize(
    "url",
    [
        "http://0.0.0.0:8000",
        "http://10.1.2.3:80",
        "http://hub:8000",
        # look-alikes of loopback addresses
        "http://127.0.0.1.nip.io:8000",
        "http://localhost.example.org:1",
        "http://[::2]:8",
        "http://128.0.0.1:8000",
    ],
)
def test_demo_login_refuses_non_loopback(url):
    with pytest.raises(LoopbackOnlyError, match="only loopback"):
        require_loopback(url)
    with pytest.raises(LoopbackOnlyError):
        DemoAuthenticator(parent=JupyterHub(bind_url=url))


def test_demo_login_checks_password_and_sets_groups(tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n"
        "  alice: {password: pa55, groups: [ophthalmology]}\n"
        "  carol: {password: pc, groups: [radiology, mbc-admins]}\n"
    )
    auth = demo_authenticator(
        "http://127.0.0.1:8000", tmp_path / "audit.jsonl", users_file=str(users)
    )
    assert auth.admin_groups == {"mbc-admins"}  # the default
    assert auth.manage_groups
    ok = asyncio.run(auth.authenticate(LOOPBACK, {"username": "alice", "password": "pa55"}))
    assert ok == {"name": "alice", "groups": ["ophthalmology"], "admin": False}
    admin = asyncio.run(auth.authenticate(LOOPBACK, {"username": "carol", "password": "pc"}))
    assert admin["admin"] is True
    assert asyncio.run(auth.authenticate(LOOPBACK, {"username": "alice", "password": "x"})) is None
    assert asyncio.run(auth.authenticate(LOOPBACK, {"username": "eve", "password": "x"})) is None
    refusals = read_audit(tmp_path / "audit.jsonl")
    assert [(e["event"], e["user"]) for e in refusals] == [("refusal", "alice"), ("refusal", "eve")]


@pytest.mark.parametrize(
    ("peer", "client"),
    [
        ("172.18.0.5", "127.0.0.1"),  # a container on the hub API, X-Forwarded-For forged
        ("172.18.0.5", "172.18.0.5"),  # a container on the hub API
        ("127.0.0.1", "192.0.2.7"),  # through the proxy, from another machine
        ("10.200.0.2", None),
        (None, None),  # no request at all
    ],
)
def test_demo_login_is_refused_unless_it_arrives_over_loopback(tmp_path, peer, client):
    users = tmp_path / "users.yaml"
    users.write_text("users:\n  alice: {password: pa55, groups: [ophthalmology]}\n")
    audit = tmp_path / "audit.jsonl"
    auth = demo_authenticator("http://127.0.0.1:8000", audit, users_file=str(users))
    handler = _handler(peer, client)
    login = {"username": "alice", "password": "pa55"}
    assert asyncio.run(auth.authenticate(handler, login)) is None
    (refusal,) = read_audit(audit)
    assert refusal["reason"] == "demo login off loopback"
    assert (refusal["peer"], refusal["client"]) == (peer, client)
    assert asyncio.run(auth.authenticate(_handler("::1", "::1"), login))["name"] == "alice"
    # the proxy beside the hub may connect from another address of this machine
    own = socket.gethostbyname(socket.gethostname())
    assert asyncio.run(auth.authenticate(_handler(own, "127.0.0.1"), login))["name"] == "alice"


def test_oidc_settings_build_a_generic_oauthenticator(tmp_path, hub_store, monkeypatch):
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "s3cret")  # OAuthenticator's own variable
    env = {
        "MBC_AUTH": "oidc",
        "MBC_HUB_BIND": "0.0.0.0:8000",
        "MBC_HUB_DATA_DIR": str(tmp_path),
        "MBC_STORE_HOST_PATH": str(hub_store),
    }
    path = tmp_path / "platform.yaml"
    path.write_text(
        "MbcOAuthenticator:\n"
        "  client_id: mbc-hub\n"
        "  authorize_url: https://idp.example.org/auth\n"
        "  token_url: https://idp.example.org/token\n"
        "  userdata_url: https://idp.example.org/userinfo\n"
        "  oauth_callback_url: https://hub.example.org/hub/oauth_callback\n"
    )
    c = load_platform_config(path=path, environ=env, project_dir=ROOT)
    assert c.JupyterHub.authenticator_class is MbcOAuthenticator
    auth = MbcOAuthenticator(config=c)
    assert auth.client_secret == "s3cret" and auth.client_id == "mbc-hub"
    assert auth.manage_groups and auth.auth_state_groups_key == "oauth_user.groups"
    assert auth.admin_groups == {"mbc-admins"} and auth.allowed_groups == set()
    assert auth.username_claim == "preferred_username" and auth.enable_pkce
    # no allowed_groups configured: the groups the store's datasets name may log in
    assert auth.allowed_group_names() == {"ophthalmology", "radiology", "mbc-admins"}
    assert "allowed groups: mbc-admins, ophthalmology, radiology" in auth.custom_403_message
    model = {"name": "dave", "admin": False, "groups": ["radiology"], "auth_state": {}}
    assert asyncio.run(auth.check_allowed("dave", model))
    assert not asyncio.run(auth.check_allowed("eve", {**model, "groups": ["marketing"]}))
    closed = MbcOAuthenticator(config=c, allow_store_groups=False)
    assert not asyncio.run(closed.check_allowed("dave", model))
    assert "s3cret" not in (tmp_path / "audit.jsonl").read_text()
