"""SwarmSpawner on a real single-node swarm: the hub runs in its image, as in a swarm deployment.

The hub container joins the platform's attachable internal overlay network (the only way to
reach the servers' tasks) and talks to the engine through its socket; its web pages stay on the
container's loopback, so the test drives it from inside (``docker exec``) with the same helpers
as every hub test. The researcher's server is a Swarm service with the store read-only.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import yaml
from mbc_hub.policy import network_spec

from .conftest import DEMO_USERS, ROOT
from .docker_helpers import HUB_IMAGE, engine, missing, remove_volumes, require_image, unique
from .hub_helpers import wait_for, write_users

pytestmark = [pytest.mark.slow, pytest.mark.docker]


SOCKET = "/var/run/docker.sock"

DRIVE = """
import json
import requests
from hub_helpers import auth, login, run_in_kernel, start_server, stop_server, user_token, wait_for
url = "http://127.0.0.1:8000"
wait_for(lambda: requests.get(url + "/hub/health", timeout=2).ok, 90, "the hub")
session, _ = login(url, "bob", "bob-demo-pw")
token = user_token(session, url, "bob")
"""

SPAWN = """
start_server(url, "bob", token, timeout=240)
code = "import json, mbc_lib; s = mbc_lib.open_store(); print(json.dumps(s.datasets()))"
print(json.dumps({"datasets": json.loads(run_in_kernel(url, "bob", token, code, timeout=120))}))
"""

STOP = """
stop_server(url, "bob", token, timeout=120)
print(json.dumps({"stopped": True}))
"""


@pytest.fixture(scope="module")
def client():
    return engine()


@pytest.fixture(scope="module")
def swarm(client):
    """A single-node swarm on loopback (left again afterwards if this test made it)."""
    made = False
    if client.info()["Swarm"]["LocalNodeState"] != "active":
        try:
            client.init_swarm(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        except Exception as exc:  # noqa: BLE001
            missing("cannot start a single-node swarm", str(exc))
        made = True
    yield
    if made:
        client.leave_swarm(force=True)


def exec_in(client, container: str, code: str, timeout: float = 300) -> dict:
    # run in the tests' folder: `python -c` finds hub_helpers there
    run = client.exec_create(
        container, ["python3", "-c", textwrap.dedent(code)], workdir="/srv/tests/hub"
    )
    output = client.exec_start(run["Id"]).decode()
    code_ = client.exec_inspect(run["Id"])["ExitCode"]
    assert code_ == 0, f"driver failed ({code_}):\n{output}"
    return json.loads(output.strip().splitlines()[-1])


def test_swarm_spawner_spawns_a_service_and_stops_it(tmp_path, client, swarm, hub_store):
    researcher = require_image(client)
    require_image(client, HUB_IMAGE)
    network, volumes, hub_name = (
        unique("mbc-test-overlay"),
        unique("mbc-test-home"),
        unique("mbc-test-hub"),
    )
    client.create_network(**network_spec(network, swarm=True))
    users = write_users(tmp_path / "demo-users.yaml", DEMO_USERS)
    platform = tmp_path / "platform.yaml"
    platform.write_text(
        yaml.safe_dump(
            {
                "MbcPlatform": {"spawner": "swarm"},
                "JupyterHub": {
                    "bind_url": "http://127.0.0.1:8000",
                    "hub_bind_url": "http://0.0.0.0:8081",
                    "hub_connect_url": f"http://{hub_name}:8081",
                },
                "Spawner": {"start_timeout": 240, "http_timeout": 120},
                "DemoAuthenticator": {"users_file": str(users)},
                "MbcStore": {"path": str(hub_store)},
                "DockerSpawner": {
                    "image": researcher,
                    "network_name": network,
                    "pull_policy": "skip",
                },
                "MbcContainerSpawner": {"home_volume": volumes + "-{username}"},
                "GpuAllocator": {"devices": "none"},
                "IdleCuller": {"enabled": False},
            }
        )
    )
    binds = {
        SOCKET: {"bind": SOCKET, "mode": "rw"},
        str(tmp_path): {"bind": str(tmp_path), "mode": "ro"},
        str(hub_store): {"bind": str(hub_store), "mode": "ro"},
        str(ROOT / "tests"): {"bind": "/srv/tests", "mode": "ro"},
    }
    hub = client.create_container(
        HUB_IMAGE,
        name=hub_name,
        environment={"MBC_PLATFORM_CONFIG": str(platform)},
        host_config=client.create_host_config(binds=binds, network_mode=network),
    )
    try:
        client.start(hub["Id"])
        spawned = exec_in(client, hub["Id"], DRIVE + SPAWN)
        assert spawned["datasets"] == ["ct-covid"]  # bob: radiology only

        (service,) = [s for s in client.services() if "bob" in s["Spec"]["Name"]]
        spec = service["Spec"]["TaskTemplate"]
        assert [n["Target"] for n in spec["Networks"]] in ([network], [_id(client, network)])
        mounts = {m["Target"]: m for m in spec["ContainerSpec"]["Mounts"]}
        assert mounts["/mnt/mbc-store/ct-covid"]["ReadOnly"] is True
        assert "/mnt/mbc-store/fundus-glaucoma" not in mounts
        assert spec["ContainerSpec"]["User"] == "1000:100"

        assert exec_in(client, hub["Id"], DRIVE + STOP) == {"stopped": True}
        wait_for(
            lambda: not [s for s in client.services() if "bob" in s["Spec"]["Name"]],
            60,
            "bob's service to be removed",
        )
    except AssertionError:
        print(client.logs(hub["Id"]).decode()[-6000:])
        raise
    finally:
        client.remove_container(hub["Id"], force=True)
        for service in client.services():
            if volumes in json.dumps(service["Spec"]):
                client.remove_service(service["ID"])
        wait_for(lambda: _removable(client, network), 60, f"network {network} to be free")
        remove_volumes(client, volumes)


def _id(client, network: str) -> str:
    return client.inspect_network(network)["Id"]


def _removable(client, network: str) -> bool:
    try:
        client.remove_network(network)
    except Exception:  # noqa: BLE001 - still in use by a task being torn down
        return False
    return True


IMAGE_PROBE = """
import sqlalchemy
from mbc_lib.manifests import get_manifest
sqlalchemy.create_engine("postgresql+psycopg2://mbc_hub@/jupyterhub?host=/var/run/postgresql")
print(get_manifest("fundus-glaucoma").group)
"""


def test_hub_image_has_the_manifests_and_the_postgresql_driver_its_services_need(client):
    """The ingest service (run from the hub image, ansible/roles/ingest) opens sessions by the
    datasets' manifests; the hub (ansible/roles/hub) keeps its database on PostgreSQL."""
    require_image(client, HUB_IMAGE)
    container = client.create_container(
        HUB_IMAGE, ["python", "-c", IMAGE_PROBE], host_config=client.create_host_config()
    )
    try:
        client.start(container["Id"])
        code = client.wait(container["Id"], timeout=120)["StatusCode"]
        output = client.logs(container["Id"]).decode()
    finally:
        client.remove_container(container["Id"], force=True)
    assert code == 0, output
    assert output.strip().splitlines()[-1] == "ophthalmology"
