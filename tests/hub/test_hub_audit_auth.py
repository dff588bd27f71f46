"""The audit log and the authenticators (demo login, OIDC settings)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from jupyterhub.app import JupyterHub
from mbc_hub.audit import AuditLog, read_audit
from mbc_hub.auth import (
    DemoAuthenticator,
    LoopbackOnlyError,
    MbcOAuthenticator,
    oidc_traits,
    require_loopback,
)
from mbc_hub.config import load_platform_config


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


def test_audit_log_survives_concurrent_writers(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    threads = [
        threading.Thread(target=lambda i=i: [log.record("stop", f"u{i}", n=n) for n in range(25)])
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_audit(tmp_path / "audit.jsonl")) == 200


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8"])
def test_loopback_addresses_are_accepted(url):
    require_loopback(url)


@pytest.mark.parametrize("url", ["http://0.0.0.0:8000", "http://10.1.2.3:80", "http://hub:8000"])
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
    auth = DemoAuthenticator(
        parent=JupyterHub(bind_url="http://127.0.0.1:8000"),
        users_file=str(users),
        admin_group="mbc-admins",
        audit_log_path=str(tmp_path / "audit.jsonl"),
    )
    assert auth.manage_groups
    ok = asyncio.run(auth.authenticate(None, {"username": "alice", "password": "pa55"}))
    assert ok == {"name": "alice", "groups": ["ophthalmology"], "admin": False}
    admin = asyncio.run(auth.authenticate(None, {"username": "carol", "password": "pc"}))
    assert admin["admin"] is True
    assert asyncio.run(auth.authenticate(None, {"username": "alice", "password": "x"})) is None
    assert asyncio.run(auth.authenticate(None, {"username": "eve", "password": "x"})) is None
    refusals = read_audit(tmp_path / "audit.jsonl")
    assert [(e["event"], e["user"]) for e in refusals] == [("refusal", "alice"), ("refusal", "eve")]


def test_oidc_settings_build_a_generic_oauthenticator(tmp_path):
    env = {
        "MBC_AUTH": "oidc",
        "MBC_HUB_BIND": "0.0.0.0:8000",
        "MBC_OIDC_CLIENT_ID": "mbc-hub",
        "MBC_OIDC_CLIENT_SECRET": "s3cret",
        "MBC_HUB_DATA_DIR": str(tmp_path),
    }
    path = tmp_path / "platform.yaml"
    path.write_text(
        "auth:\n  oidc:\n"
        "    authorize_url: https://idp.example.org/auth\n"
        "    token_url: https://idp.example.org/token\n"
        "    userdata_url: https://idp.example.org/userinfo\n"
        "    callback_url: https://hub.example.org/hub/oauth_callback\n"
    )
    cfg = load_platform_config(path, environ=env)
    traits = oidc_traits(cfg, {"ophthalmology", "radiology", "mbc-admins"})
    auth = MbcOAuthenticator(**traits)
    assert auth.client_secret == "s3cret" and auth.client_id == "mbc-hub"
    assert auth.manage_groups and auth.auth_state_groups_key == "oauth_user.groups"
    assert auth.admin_groups == {"mbc-admins"}
    assert auth.allowed_groups == {"ophthalmology", "radiology", "mbc-admins"}
    assert auth.username_claim == "preferred_username" and auth.enable_pkce
    assert "allowed groups: mbc-admins, ophthalmology, radiology" in auth.custom_403_message
