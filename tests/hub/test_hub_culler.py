"""The idle culler, run by the hub as a service, stops a server nobody uses."""

from __future__ import annotations

import pytest
import requests
from mbc_hub.audit import read_audit

from .conftest import DEMO_USERS
from .hub_helpers import HubProcess, auth, login, start_server, user_token, wait_for, write_users

pytestmark = pytest.mark.slow


def test_idle_server_is_stopped_by_the_culler(tmp_path, hub_store, notebooks_dir):
    users = write_users(tmp_path / "demo-users.yaml", DEMO_USERS)
    hub = HubProcess(
        tmp_path / "hub",
        {
            "Spawner": {"start_timeout": 90, "http_timeout": 90},
            "DemoAuthenticator": {"users_file": str(users)},
            "MbcStore": {"path": str(hub_store)},
            "MbcLocalSpawner": {"notebooks_dir": str(notebooks_dir)},
            "IdleCuller": {"enabled": True, "timeout": 10, "cull_every": 5, "max_age": 0},
        },
    ).start()
    try:
        session, _ = login(hub.url, "alice", DEMO_USERS["alice"]["password"])
        token = user_token(session, hub.url, "alice")
        start_server(hub.url, "alice", token)

        def culled() -> bool:
            model = requests.get(f"{hub.url}/hub/api/users/alice", headers=auth(token), timeout=10)
            return "" not in model.json()["servers"]

        wait_for(culled, 60, "the idle culler to stop alice's server", interval=1)
        assert "Culling server alice" in hub.log() or "culling" in hub.log().lower()
        stops = [e for e in read_audit(hub.audit_path) if e["event"] == "stop"]
        assert [e["user"] for e in stops] == ["alice"]
    finally:
        hub.stop()
