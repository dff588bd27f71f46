"""Seconds from spawn request to a ready server: the hub with DockerSpawner on the local engine.

Starts a real hub (demo login, docker mode, the researcher image already built by
``make images``) on a small sample store and measures, in one run:

- one researcher's spawn, from the REST request to the hub reporting the server ready
  (median of ``--repeat`` spawn/stop cycles), against the baseline of a bare ``docker run``
  of the same image to the moment its Jupyter server answers (what the engine and the
  server cost without the hub);
- ``--concurrent`` researchers requesting a server at the same moment, until all are ready.

Prints a table and, on the last line, JSON with ``spawn_ready_s_median`` and
``concurrent20_all_ready_s`` (goals on 2 cores: under 5 s and under 60 s).

    python -m benchmarks.spawn [--repeat 5] [--concurrent 20]   # from the checkout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.hub.docker_helpers import (
    RESEARCHER_IMAGE,
    remove_everything_on,
    remove_volumes,
    unique,
)
from tests.hub.hub_helpers import (
    HubProcess,
    auth,
    free_port,
    login,
    stop_server,
    user_token,
    wait_for,
    write_users,
)

PROFILE = {
    "name": "cpu",
    "display_name": "CPU",
    "description": "benchmark server",
    "cpu_limit": 1.0,
    "mem_limit": "1G",
    "shm_size": "64M",
    "gpus": 0,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="single spawns to time")
    parser.add_argument("--concurrent", type=int, default=20, help="spawns at the same moment")
    parser.add_argument("--image", default=RESEARCHER_IMAGE)
    return parser.parse_args()


def request_and_wait(url: str, user: str, token: str, timeout: float = 300) -> float:
    """POST a server for ``user``; seconds until the hub reports it ready."""
    start = time.perf_counter()
    reply = requests.post(
        f"{url}/hub/api/users/{user}/server", headers=auth(token), json={}, timeout=timeout
    )
    if reply.status_code not in (201, 202):
        raise SystemExit(f"spawn of {user} refused: {reply.status_code} {reply.text}")

    def ready() -> bool:
        model = requests.get(f"{url}/hub/api/users/{user}", headers=auth(token), timeout=30)
        server = model.json().get("servers", {}).get("")
        return bool(server and server.get("ready"))

    wait_for(ready, timeout, f"{user}'s server", interval=0.1)
    return time.perf_counter() - start


def bare_docker_run(client, image: str, network: str) -> float:
    """Baseline: ``docker run`` of the image, until its Jupyter server answers on its port."""
    start = time.perf_counter()
    container = client.create_container(
        image,
        command=["jupyter", "server", "--ServerApp.ip=0.0.0.0", "--ServerApp.port=8888"],
        user="1000:100",
        host_config=client.create_host_config(network_mode=network),
        environment={"JUPYTER_TOKEN": "bench"},
    )
    try:
        client.start(container["Id"])
        info = client.inspect_container(container["Id"])
        address = info["NetworkSettings"]["Networks"][network]["IPAddress"]
        wait_for(
            lambda: requests.get(f"http://{address}:8888/api", timeout=2).status_code == 200,
            120,
            "the bare container's server",
            interval=0.1,
        )
        return time.perf_counter() - start
    finally:
        client.remove_container(container["Id"], force=True)


def main() -> None:
    import docker

    from mbc_lib.sample.store import build_sample_store

    args = parse_args()
    client = docker.APIClient(version="auto", timeout=300)
    if not client.images(name=args.image):
        raise SystemExit(f"image {args.image} is not built: run `make images` first")
    network, volumes = unique("mbc-bench-internal"), unique("mbc-bench-home")
    names = [f"researcher{i:02d}" for i in range(args.concurrent)]
    users = {n: {"password": f"{n}-pw", "groups": ["ophthalmology"]} for n in names}
    with tempfile.TemporaryDirectory(prefix="mbc-spawn-") as tmp:
        work = Path(tmp)
        store = build_sample_store(
            work / "sample", n_fundus=6, n_ct=2, ct_size=32, include_real_dicom=False
        )
        hub = HubProcess(
            work / "hub",
            {
                "MbcPlatform": {"spawner": "docker"},
                "JupyterHub": {"hub_bind_url": f"http://0.0.0.0:{free_port()}"},
                "Spawner": {"start_timeout": 300, "http_timeout": 300},
                "DemoAuthenticator": {"users_file": str(write_users(work / "users.yaml", users))},
                "MbcStore": {"path": str(store)},
                "DockerSpawner": {
                    "image": args.image,
                    "network_name": network,
                    "pull_policy": "never",
                },
                "MbcContainerSpawner": {
                    "home_volume": volumes + "-{username}",
                    "profiles": [PROFILE],
                },
                "GpuAllocator": {"devices": "none"},
                "IdleCuller": {"enabled": False},
            },
        )
        try:
            hub.start()
            tokens = {}
            for name in names:
                session, _ = login(hub.url, name, users[name]["password"])
                tokens[name] = user_token(session, hub.url, name)
            first = names[0]
            # a first spawn creates the network and the home volume: not timed
            request_and_wait(hub.url, first, tokens[first])
            stop_server(hub.url, first, tokens[first])
            bare = [bare_docker_run(client, args.image, network) for _ in range(args.repeat)]
            single = []
            for _ in range(args.repeat):
                single.append(request_and_wait(hub.url, first, tokens[first]))
                stop_server(hub.url, first, tokens[first])
            start = time.perf_counter()
            with ThreadPoolExecutor(len(names)) as pool:
                list(pool.map(lambda n: request_and_wait(hub.url, n, tokens[n]), names))
            concurrent = time.perf_counter() - start
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: stop_server(hub.url, n, tokens[n], timeout=120), names))
        finally:
            hub.stop()
            remove_everything_on(client, network)
            remove_volumes(client, volumes)

    result = {
        "benchmark": "spawn",
        "cpus": os.cpu_count(),
        "image": args.image,
        "repeat": args.repeat,
        "bare_docker_run_ready_s_median": round(statistics.median(bare), 2),
        "spawn_ready_s_median": round(statistics.median(single), 2),
        "spawn_ready_s_all": [round(s, 2) for s in single],
        "spawn_vs_bare_docker_run": round(statistics.median(single) / statistics.median(bare), 2),
        f"concurrent{args.concurrent}_all_ready_s": round(concurrent, 1),
    }
    rows = [
        ("bare docker run to server answering (median)", statistics.median(bare)),
        ("hub spawn request to ready (median)", statistics.median(single)),
        (f"{args.concurrent} concurrent spawns, all ready", concurrent),
    ]
    print(f"{'what':<46} seconds")
    for what, seconds in rows:
        print(f"{what:<46} {seconds:7.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
