"""A real demo hub (local spawner): log in, start a server, use the store from a kernel, stop."""

from __future__ import annotations

import json

import pytest
import requests
from mbc_hub.audit import read_audit

from .hub_helpers import auth, login, run_in_kernel, start_server, stop_server, user_token

pytestmark = pytest.mark.slow

KERNEL_CODE = """
import json, os
from mbc_lib.store.reader import open_store
from mbc_lib.errors import ReadOnlyStoreError
store = open_store()
datasets = store.datasets()
catalog = store.catalog(datasets[0])
case = store.open_case(datasets[0], catalog.case_id[0])
try:
    store.image_array(datasets[0], catalog.case_id[0])[...] = 0
    write = "written"
except ReadOnlyStoreError as exc:
    write = type(exc).__name__
print(json.dumps({
    "MBC_STORE": os.environ.get("MBC_STORE"),
    "datasets": datasets,
    "cases": len(catalog),
    "shape": list(case.shape),
    "mean": float(case.mean()),
    "write": write,
    "home": os.environ.get("HOME"),
    "notebooks": sorted(os.listdir(os.path.join(os.environ["HOME"], "notebooks"))),
}))
"""


def test_wrong_password_is_refused_and_audited(demo_hub):
    _, reply = login(demo_hub.url, "alice", "not-her-password")
    assert reply.status_code == 403
    assert "Invalid username or password" in reply.text
    refusals = [e for e in read_audit(demo_hub.audit_path) if e["event"] == "refusal"]
    assert any(e["user"] == "alice" and e["action"] == "login" for e in refusals)
    assert "not-her-password" not in demo_hub.audit_path.read_text()


def test_researcher_logs_in_spawns_reads_store_and_stops(demo_hub, hub_store):
    session, reply = login(demo_hub.url, "alice", "alice-demo-pw")
    assert reply.status_code == 200 and reply.url.endswith("/hub/home")
    token = user_token(session, demo_hub.url, "alice")

    me = requests.get(f"{demo_hub.url}/hub/api/user", headers=auth(token), timeout=10).json()
    assert me["name"] == "alice" and me["groups"] == ["ophthalmology"] and not me["admin"]

    start_server(demo_hub.url, "alice", token)
    status = requests.get(f"{demo_hub.url}/user/alice/api/status", headers=auth(token), timeout=10)
    assert status.status_code == 200

    result = json.loads(run_in_kernel(demo_hub.url, "alice", token, KERNEL_CODE).strip())
    # alice (ophthalmology) sees the fundus dataset only, read-only
    assert result["MBC_STORE"] and result["datasets"] == ["fundus-glaucoma"]
    assert result["cases"] == 6 and result["shape"][0] == 3 and result["mean"] > 0
    assert result["write"] == "ReadOnlyStoreError"
    assert result["home"].endswith("/homes/alice")
    assert "00_getting_started.ipynb" in result["notebooks"]

    stop_server(demo_hub.url, "alice", token)
    events = [e for e in read_audit(demo_hub.audit_path) if e["user"] == "alice"]
    kinds = [e["event"] for e in events]
    assert "login" in kinds and "spawn" in kinds and "stop" in kinds
    assert kinds.index("login") < kinds.index("spawn") < kinds.index("stop")
    spawn = next(e for e in events if e["event"] == "spawn")
    assert spawn["datasets"] == ["fundus-glaucoma"] and spawn["gpu"] is None
    assert all("token" not in key for e in events for key in e)


def test_other_group_sees_only_its_datasets(demo_hub):
    session, _ = login(demo_hub.url, "bob", "bob-demo-pw")
    token = user_token(session, demo_hub.url, "bob")
    start_server(demo_hub.url, "bob", token)
    try:
        code = "from mbc_lib.store.reader import open_store; print(open_store().datasets())"
        assert run_in_kernel(demo_hub.url, "bob", token, code).strip() == "['ct-covid']"
    finally:
        stop_server(demo_hub.url, "bob", token)


def test_instructor_is_admin_and_the_idle_culler_runs(demo_hub):
    session, _ = login(demo_hub.url, "carol", "carol-demo-pw")
    token = user_token(session, demo_hub.url, "carol")
    me = requests.get(f"{demo_hub.url}/hub/api/user", headers=auth(token), timeout=10).json()
    assert me["admin"] and sorted(me["groups"]) == ["mbc-admins", "ophthalmology", "radiology"]
    services = requests.get(f"{demo_hub.url}/hub/api/services", headers=auth(token), timeout=10)
    assert "idle-culler" in services.json()
