"""A real hub spawning real containers (DockerSpawner on the local engine, the researcher image).

Two researchers of different groups each get a container of their own: inside it (code run in a
kernel over the Jupyter server's API) the store reads, refuses writes and shows only their
group's datasets; the home survives a restart; the container has no route to a server the test
starts on another network. The GPU path runs without a GPU: the engine's ``nvidia`` device
driver with a stand-in hook (``make docker-engine`` in CI) applies the DeviceRequests for real.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest
import requests
import yaml
from mbc_hub.audit import read_audit

from .conftest import DEMO_USERS
from .docker_helpers import (
    NAMESPACE_ADDRESS,
    engine,
    fetch_from_network,
    host_listener,
    hub_on_engine,
    missing,
    network_namespace,
    require_image,
    sentinel_server,
    unique,
)
from .hub_helpers import (
    HubProcess,
    auth,
    free_port,
    login,
    run_in_kernel,
    start_server,
    stop_server,
    user_token,
    wait_for,
    write_users,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]

PROFILES = [
    {
        "name": "cpu",
        "display_name": "CPU",
        "description": "test server",
        "cpu_limit": 1.0,
        "mem_limit": "2G",
        "shm_size": "256M",
        "gpus": 0,
    },
    {
        "name": "gpu",
        "display_name": "GPU",
        "description": "test server with a GPU",
        "cpu_limit": 1.0,
        "mem_limit": "2G",
        "shm_size": "512M",
        "gpus": 1,
    },
]

INSIDE = """
import errno, json, os, pathlib
import mbc_lib
from mbc_lib.errors import ReadOnlyStoreError
store = mbc_lib.open_store()
name = store.datasets()[0]
case_id = store.catalog(name).case_id[0]
case = store.open_case(name, case_id)
root = pathlib.Path(os.environ["MBC_STORE"])
try:
    store.image_array(name, case_id)[...] = 0
    library_write = "written"
except ReadOnlyStoreError as exc:
    library_write = str(exc)
def try_write(path):
    try:
        path.write_text("x")
        return "written"
    except OSError as exc:
        return errno.errorcode[exc.errno]
fs_write = try_write(root / name / "planted.txt")
root_write = try_write(root / "planted.txt")
print(json.dumps({
    "uid": os.getuid(),
    "store_entries": sorted(p.name for p in root.iterdir()),
    "datasets": store.datasets(),
    "shape": list(case.shape),
    "mean": float(case.mean()),
    "library_write": library_write,
    "fs_write": fs_write,
    "root_write": root_write,
    "docker_socket": os.path.exists("/var/run/docker.sock"),
    "notebooks": sorted(os.listdir(os.path.expanduser("~/notebooks"))),
    "gpu_env": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
    "env": sorted(os.environ),
}))
"""

#: What the hub passes into a researcher's container (besides what the image sets): the
#: singleuser server's own JUPYTERHUB_* settings and mbc's four. Nothing of the hub's config.
PASSED_ENV = {"MBC_STORE", "MBC_DATASETS", "MBC_PROFILE", "MBC_COURSES"}


@pytest.fixture(scope="module")
def client():
    return engine()


@pytest.fixture(scope="module")
def image(client):
    return require_image(client)


@pytest.fixture(scope="module")
def docker_hub(tmp_path_factory, client, image, hub_store):
    """A hub (on the host) spawning containers on a fresh internal network; GPU ids 0 and 1."""
    work = tmp_path_factory.mktemp("dockerhub")
    network = unique("mbc-test-internal")
    volumes = unique("mbc-test-home")
    users = write_users(work / "demo-users.yaml", DEMO_USERS)
    api_port = free_port()
    hub = HubProcess(
        work,
        {
            "MbcPlatform": {"spawner": "docker"},
            "JupyterHub": {"hub_bind_url": "http://{gateway}:" + str(api_port)},
            "Spawner": {"start_timeout": 120, "http_timeout": 120},
            "DemoAuthenticator": {"users_file": str(users)},
            "MbcStore": {"path": str(hub_store)},
            "DockerSpawner": {"image": image, "network_name": network, "pull_policy": "never"},
            "MbcContainerSpawner": {"home_volume": volumes + "-{username}", "profiles": PROFILES},
            "GpuAllocator": {"devices": ["0", "1"]},
            "IdleCuller": {"enabled": False},
        },
    )
    hub.network, hub.volume_prefix, hub.api_port = network, volumes, api_port
    with hub_on_engine(hub, client, network, volumes):
        yield hub


@pytest.fixture(scope="module")
def tokens(docker_hub):
    out = {}
    for name, user in DEMO_USERS.items():
        session, reply = login(docker_hub.url, name, user["password"])
        assert reply.status_code == 200, reply.text
        out[name] = user_token(session, docker_hub.url, name)
    return out


@pytest.fixture(scope="module")
def gpu_engine(client, image):
    """The engine applies ``nvidia`` DeviceRequests (a real GPU stack or the CI stand-in)."""
    container = client.create_container(
        image,
        command=["true"],
        entrypoint=[],
        host_config=client.create_host_config(
            device_requests=[{"Driver": "nvidia", "DeviceIDs": ["0"], "Capabilities": [["gpu"]]}]
        ),
    )
    try:
        client.start(container["Id"])
    except Exception as exc:  # noqa: BLE001
        missing("the Docker engine has no nvidia device driver", str(exc))
    finally:
        client.remove_container(container["Id"], force=True)


def inside(hub: HubProcess, user: str, token: str) -> dict:
    return json.loads(run_in_kernel(hub.url, user, token, INSIDE, timeout=120).strip())


def container_of(client, hub: HubProcess, user: str) -> dict:
    (found,) = client.containers(filters={"network": hub.network, "label": f"mbc.hub.owner={user}"})
    return client.inspect_container(found["Id"])


def test_two_groups_get_containers_with_only_their_datasets_read_only(
    docker_hub, tokens, client, hub_store
):
    start_server(docker_hub.url, "alice", tokens["alice"], timeout=150)
    start_server(docker_hub.url, "bob", tokens["bob"], timeout=150)
    try:
        alice = inside(docker_hub, "alice", tokens["alice"])
        bob = inside(docker_hub, "bob", tokens["bob"])
        notification = requests.get(
            f"{docker_hub.url}/user/alice/lab/api/settings/"
            "@jupyterlab/apputils-extension:notification",
            headers=auth(tokens["alice"]),
            timeout=30,
        )
        # TensorBoard behind jupyter-server-proxy, started on the first request, reading the
        # results folder; only for the server's owner
        board = f"{docker_hub.url}/user/bob/tensorboard/data/logdir"
        tensorboard = requests.get(board, headers=auth(tokens["bob"]), timeout=120)
        stranger = requests.get(board, timeout=30, allow_redirects=False)
    finally:
        stop_server(docker_hub.url, "alice", tokens["alice"])
        stop_server(docker_hub.url, "bob", tokens["bob"])

    assert alice["datasets"] == ["fundus-glaucoma"] and bob["datasets"] == ["ct-covid"]
    assert alice["store_entries"] == ["fundus-glaucoma", "zarr.json"]
    assert bob["store_entries"] == ["ct-covid", "zarr.json"]
    for seen in (alice, bob):
        assert seen["uid"] == 1000 and not seen["docker_socket"]
        assert seen["mean"] != 0 and len(seen["shape"]) >= 2  # real pixels, not a blank
        assert "read-only" in seen["library_write"]
        assert seen["fs_write"] == "EROFS"  # the dataset mounts are read-only
        assert seen["root_write"] == "EACCES"  # and nothing can be planted beside them
        assert "00_getting_started.ipynb" in seen["notebooks"]
        assert seen["gpu_env"] is None
        image_env = {"PATH", "HOME", "SHELL", "MBC_NOTEBOOKS", "SSL_CERT_FILE", "PIP_CERT"}
        passed = {k for k in seen["env"] if not k.startswith(("JUPYTERHUB_", "JPY_"))}
        extra = passed - PASSED_ENV - image_env - {"REQUESTS_CA_BUNDLE", "HOSTNAME"}
        assert not {k for k in extra if k.startswith(("MBC_", "DOCKER", "CONFIGPROXY"))}, extra
        assert passed >= PASSED_ENV
    assert not list(hub_store.rglob("planted.txt"))
    # JupyterLab is told by the image not to ask for news or updates (no route out)
    assert notification.status_code == 200, notification.text
    defaults = notification.json()["schema"]["properties"]
    assert defaults["fetchNews"]["default"] == "false"
    assert defaults["checkForUpdates"]["default"] is False
    assert tensorboard.status_code == 200, tensorboard.text[:500]
    assert tensorboard.json()["logdir"] == "/home/jovyan/mbc-results"
    assert stranger.status_code in (302, 401, 403)

    spawns = [e for e in read_audit(docker_hub.audit_path) if e["event"] == "spawn"]
    alice_spawn = next(e for e in spawns if e["user"] == "alice")
    assert alice_spawn["datasets"] == ["fundus-glaucoma"] and alice_spawn["gpu"] is None
    assert all(m["read_only"] for m in alice_spawn["mounts"] if "mbc-store" in m["target"])


def test_home_survives_a_server_restart_and_notebook_edits_are_kept(docker_hub, tokens):
    token = tokens["alice"]
    start_server(docker_hub.url, "alice", token, timeout=150)
    run_in_kernel(
        docker_hub.url,
        "alice",
        token,
        "import pathlib\n"
        "home = pathlib.Path.home()\n"
        "(home / 'results').mkdir(exist_ok=True)\n"
        "(home / 'results' / 'auc.txt').write_text('0.91')\n"
        "(home / 'notebooks' / '00_getting_started.ipynb').write_text('{\"edited\": 1}')\n",
    )
    stop_server(docker_hub.url, "alice", token)
    start_server(docker_hub.url, "alice", token, timeout=150)
    try:
        out = run_in_kernel(
            docker_hub.url,
            "alice",
            token,
            "import pathlib\n"
            "home = pathlib.Path.home()\n"
            "print((home / 'results' / 'auc.txt').read_text())\n"
            "print((home / 'notebooks' / '00_getting_started.ipynb').read_text())\n",
        )
    finally:
        stop_server(docker_hub.url, "alice", token)
    assert out.split() == ["0.91", '{"edited":', "1}"]


def test_container_cannot_reach_a_server_on_another_network(docker_hub, tokens, client, image):
    with sentinel_server(client, image) as sentinel:
        # the sentinel is up and reachable from its own network
        assert sentinel["page"] in fetch_from_network(
            client, image, sentinel["network"], sentinel["url"]
        )
        start_server(docker_hub.url, "bob", tokens["bob"], timeout=150)
        try:
            out = run_in_kernel(
                docker_hub.url,
                "bob",
                tokens["bob"],
                "import urllib.request\n"
                "try:\n"
                f"    print(urllib.request.urlopen('{sentinel['url']}', timeout=5).read())\n"
                "except OSError as exc:\n"
                "    print('unreachable', type(exc).__name__)\n",
            )
        finally:
            stop_server(docker_hub.url, "bob", tokens["bob"])
    assert out.startswith("unreachable"), out
    assert sentinel["page"] not in out


#: Logs in through the hub's form as a browser would, once plainly and once with a forged
#: X-Forwarded-For; prints the status and whether a login cookie came back for each.
LOGIN_PROBE = """
import json, re, requests
url, password = {url!r}, {password!r}
out = {{}}
for name, headers in (("plain", {{}}), ("forged", {{"X-Forwarded-For": "127.0.0.1"}})):
    s = requests.Session()
    page = s.get(url + "/hub/login", headers=headers, timeout=10)
    xsrf = re.search('name="_xsrf" value="([^"]+)"', page.text).group(1)
    reply = s.post(url + "/hub/login?next=/hub/home", headers=headers, timeout=30,
                   data={{"username": "alice", "password": password, "_xsrf": xsrf}},
                   allow_redirects=False)
    out[name] = [reply.status_code, "jupyterhub-hub-login" in s.cookies]
print(json.dumps(out))
"""

#: From a kernel: a TCP connection to each target, and the hub API, as JSON.
REACH_PROBE = """
import json, os, socket, urllib.request
out = {{}}
for name, host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=4).close()
        out[name] = "connected"
    except OSError as exc:
        out[name] = type(exc).__name__
hub = urllib.request.urlopen(os.environ["JUPYTERHUB_API_URL"] + "/", timeout=10)
out["hub_api"] = [hub.status, json.load(hub)["version"]]
print(json.dumps(out))
"""


def test_researchers_reach_the_hub_api_and_nothing_else_and_cannot_log_in(
    docker_hub, tokens, client
):
    """As Zero to JupyterHub's network policy: a kernel talks to the hub API, not to another
    researcher's server nor any other port of the host; and the demo login, which the hub
    API's port would otherwise serve to containers, answers only over loopback."""
    network = client.inspect_network(docker_hub.network)
    gateway = network["IPAM"]["Config"][0]["Gateway"]
    api = f"http://{gateway}:{docker_hub.api_port}"
    password = DEMO_USERS["alice"]["password"]
    for name in ("alice", "bob"):
        start_server(docker_hub.url, name, tokens[name], timeout=150)
    try:
        bob = container_of(client, docker_hub, "bob")
        bob_ip = bob["NetworkSettings"]["Networks"][docker_hub.network]["IPAddress"]
        with host_listener(gateway) as port:
            # the targets answer: the host reaches the listener and bob's server
            assert requests.get(f"http://{gateway}:{port}/", timeout=5).text == "host-listener"
            assert requests.get(f"http://{bob_ip}:8888/", timeout=5).status_code < 500
            upload_port = yaml.safe_load(docker_hub.platform_file.read_text())["MbcUpload"]["port"]
            targets = [
                ("host_port", gateway, port),
                ("bob_server", bob_ip, 8888),
                ("ingest_service", gateway, upload_port),  # the store's writer: loopback only
            ]
            out = json.loads(
                run_in_kernel(
                    docker_hub.url, "alice", tokens["alice"], REACH_PROBE.format(targets=targets)
                )
            )
        assert out["host_port"] == "ConnectionRefusedError", out
        assert out["ingest_service"] == "ConnectionRefusedError", out
        assert out["bob_server"] in ("TimeoutError", "timeout"), out
        assert out["hub_api"][0] == 200, out
        # the demo login, from alice's container to the hub API's port: refused
        probe = LOGIN_PROBE.format(url=api, password=password)
        from_container = json.loads(run_in_kernel(docker_hub.url, "alice", tokens["alice"], probe))
    finally:
        for name in ("alice", "bob"):
            stop_server(docker_hub.url, name, tokens[name])
    assert from_container == {"plain": [403, False], "forged": [403, False]}, from_container
    # ... and from a non-loopback address of a namespace made here
    with network_namespace() as run_inside:
        from_namespace = json.loads(run_inside([sys.executable, "-c", probe]))
    assert from_namespace == {"plain": [403, False], "forged": [403, False]}, from_namespace
    # ... while the same probe through the proxy on loopback logs in
    on_loopback = LOGIN_PROBE.format(url=docker_hub.url, password=password)
    local = subprocess.run([sys.executable, "-c", on_loopback], capture_output=True, text=True)
    assert json.loads(local.stdout)["plain"] == [302, True], local.stdout + local.stderr
    refusals = [
        e for e in read_audit(docker_hub.audit_path) if e.get("reason") == "demo login off loopback"
    ]
    assert len(refusals) >= 4
    assert {e["peer"] for e in refusals} >= {NAMESPACE_ADDRESS}


def test_gpu_servers_get_distinct_devices_a_third_is_refused_and_stop_frees(
    docker_hub, tokens, client, gpu_engine
):
    start_server(docker_hub.url, "alice", tokens["alice"], timeout=150, profile="gpu")
    start_server(docker_hub.url, "bob", tokens["bob"], timeout=150, profile="gpu")
    requests_of = {
        user: container_of(client, docker_hub, user)["HostConfig"]["DeviceRequests"]
        for user in ("alice", "bob")
    }
    ids = {user: reqs[0]["DeviceIDs"] for user, reqs in requests_of.items()}
    assert sorted(ids["alice"] + ids["bob"]) == ["0", "1"]
    assert all(reqs[0]["Driver"] == "nvidia" and len(reqs) == 1 for reqs in requests_of.values())
    # the engine applied the request: the container sees exactly its own device
    assert inside(docker_hub, "alice", tokens["alice"])["gpu_env"] == ids["alice"][0]

    reply = requests.post(
        f"{docker_hub.url}/hub/api/users/carol/server",
        headers=auth(tokens["carol"]),
        json={"profile": "gpu"},
        timeout=60,
    )
    assert reply.status_code >= 400, reply.text
    assert "all 2 GPUs are in use" in reply.json()["message"]
    refusals = [e for e in read_audit(docker_hub.audit_path) if e["event"] == "refusal"]
    assert any(e["user"] == "carol" and "GPUs are in use" in e["reason"] for e in refusals)

    stop_server(docker_hub.url, "alice", tokens["alice"])
    start_server(docker_hub.url, "carol", tokens["carol"], timeout=150, profile="gpu")
    carol = container_of(client, docker_hub, "carol")["HostConfig"]["DeviceRequests"]
    assert carol[0]["DeviceIDs"] == ids["alice"]  # the id alice's stop freed
    # bob (GPU) and carol (GPU) stay up for the restart test below


def test_hub_restart_keeps_servers_and_rebuilds_the_gpu_allocation(
    docker_hub, tokens, client, gpu_engine
):
    running = ("bob", "carol")  # both GPU servers still up from the test above
    before = {}
    for user in running:
        container = container_of(client, docker_hub, user)
        (request,) = container["HostConfig"]["DeviceRequests"]
        (gpu,) = request["DeviceIDs"]
        before[user] = {"container": container["Id"], "gpu": gpu}
    assert sorted(b["gpu"] for b in before.values()) == ["0", "1"]
    log_start = len(docker_hub.log())
    docker_hub.stop()
    docker_hub.start()
    try:
        for user in running:
            model = requests.get(
                f"{docker_hub.url}/hub/api/users/{user}", headers=auth(tokens[user]), timeout=10
            ).json()
            assert model["servers"][""]["ready"], model
            # the same container, still seeing exactly the GPU it was given before the restart
            assert container_of(client, docker_hub, user)["Id"] == before[user]["container"]
            assert inside(docker_hub, user, tokens[user])["gpu_env"] == before[user]["gpu"]
        # the rebuilt allocator knows both GPUs are held: a new GPU spawn is refused
        reply = requests.post(
            f"{docker_hub.url}/hub/api/users/alice/server",
            headers=auth(tokens["alice"]),
            json={"profile": "gpu"},
            timeout=60,
        )
        assert reply.status_code >= 400 and "all 2 GPUs are in use" in reply.json()["message"]
        # ... and by whom: each device by the server that really has it
        rebuilt = re.search(r"in use after rebuild: (\{.*\})", docker_hub.log()[log_start:])
        assert rebuilt, docker_hub.log()[log_start:][-4000:]
        assert ast.literal_eval(rebuilt.group(1)) == {b["gpu"]: u for u, b in before.items()}
    finally:
        for user in running:
            stop_server(docker_hub.url, user, tokens[user])
    # each stop gave back the device that server had before the restart
    stops = {e["user"]: e["gpu"] for e in read_audit(docker_hub.audit_path) if e["event"] == "stop"}
    assert {user: stops[user] for user in running} == {u: b["gpu"] for u, b in before.items()}
    wait_for(
        lambda: not client.containers(filters={"network": docker_hub.network}),
        30,
        "the stopped servers' containers to be removed",
    )
    # their stops gave both GPUs back to the rebuilt allocator
    start_server(docker_hub.url, "alice", tokens["alice"], timeout=150, profile="gpu")
    start_server(docker_hub.url, "bob", tokens["bob"], timeout=150, profile="gpu")
    stop_server(docker_hub.url, "alice", tokens["alice"])
    stop_server(docker_hub.url, "bob", tokens["bob"])
