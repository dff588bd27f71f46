"""Seconds from spawn request to a ready server: the hub with DockerSpawner on the local engine.

Starts a real hub (demo login, docker mode, the researcher image already built by
``make images``) on a small sample store and measures, in one run:

- one researcher's spawn, from the REST request to the hub reporting the server ready
  (median of ``--repeat`` spawn/stop cycles), against the baseline of a bare ``docker run``
  of the same image to the moment its Jupyter server answers (what the engine and the
  server cost without the hub);
- ``--concurrent`` researchers requesting a server at the same moment, until all are ready;
- a class (a second hub, with a course of ``--class-size`` students and the idle culler on):
  the instructor publishes the tutorial, every student logs in and requests the class profile
  at the same moment, until all servers are ready (each has pulled the course's material at
  its start); then nobody touches them, until the culler has stopped them all.

Prints a table and, on the last line, JSON with ``spawn_ready_s_median``,
``concurrent20_all_ready_s`` and ``class30_all_ready_s`` (goals on 2 cores: under 5 s, under
60 s and under 60 s) and ``class30_culled_s`` (from the last server ready until the culler has
stopped all of them; its timeout is ``--cull-timeout``).

    python -m benchmarks.spawn [--repeat 5] [--concurrent 20] [--class-size 30]   # checkout
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
    parser.add_argument("--class-size", type=int, default=30, help="students (0: no class)")
    parser.add_argument(
        "--cull-timeout", type=int, default=30, help="the class hub's idle culler timeout (s)"
    )
    parser.add_argument("--image", default=RESEARCHER_IMAGE)
    return parser.parse_args()


def request_and_wait(url: str, user: str, token: str, timeout: float = 300) -> float:
    """POST a server for ``user``; seconds until the hub reports it ready, read from the spawn's
    progress events as the browser's spawn page reads them (polling the user model of thirty
    users ten times a second would load the hub more than the spawns themselves)."""
    start = time.perf_counter()
    reply = requests.post(
        f"{url}/hub/api/users/{user}/server", headers=auth(token), json={}, timeout=timeout
    )
    if reply.status_code not in (201, 202):
        raise SystemExit(f"spawn of {user} refused: {reply.status_code} {reply.text}")
    if reply.status_code == 202:
        with requests.get(
            f"{url}/hub/api/users/{user}/server/progress",
            headers=auth(token),
            stream=True,
            timeout=timeout,
        ) as events:
            for line in events.iter_lines(decode_unicode=True):
                if not line or not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:") :])
                if event.get("failed"):
                    raise SystemExit(f"spawn of {user} failed: {event.get('message')}")
                if event.get("ready"):
                    break
            else:
                raise SystemExit(f"{user}'s progress ended before the server was ready")
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


def log_in(url: str, users: dict[str, dict]) -> dict[str, str]:
    """Each demo user logs in; their API tokens by name."""
    tokens = {}
    for name, spec in users.items():
        session, _ = login(url, name, spec["password"])
        tokens[name] = user_token(session, url, name)
    return tokens


def hub_settings(store: Path, image: str, network: str, volumes: str, users: Path) -> dict:
    """A docker-mode hub on the engine's fresh ``network``, demo logins from ``users``."""
    return {
        "MbcPlatform": {"spawner": "docker"},
        # the hub API on the platform network's gateway only, as the tests and the demo bind it
        "JupyterHub": {"hub_bind_url": "http://{gateway}:" + str(free_port())},
        "Spawner": {"start_timeout": 300, "http_timeout": 300},
        "DemoAuthenticator": {"users_file": str(users)},
        "MbcStore": {"path": str(store)},
        "DockerSpawner": {"image": image, "network_name": network, "pull_policy": "never"},
        "MbcContainerSpawner": {"home_volume": volumes + "-{username}", "profiles": [PROFILE]},
        "GpuAllocator": {"devices": "none"},
        "IdleCuller": {"enabled": False},
    }


def run_class(client, args: argparse.Namespace, work: Path, store: Path) -> dict[str, float]:
    """A course of ``args.class_size`` students spawning at once, then culled when idle."""
    from mbc_lib.course_material import send_material

    network, volumes = unique("mbc-bench-class"), unique("mbc-bench-class-home")
    students = [f"student{i:02d}" for i in range(args.class_size)]
    people = {n: {"password": f"{n}-pw", "groups": []} for n in ["teacher", *students]}
    settings = hub_settings(
        store, args.image, network, volumes, write_users(work / "class.yaml", people)
    )
    course = {
        "name": "bench-class",
        "instructors": ["teacher"],
        "students": students,
        "datasets": ["fundus-glaucoma"],
    }
    settings["MbcCourses"] = {"courses": [course]}
    cull_every = max(5, args.cull_timeout // 3)  # IdleCuller.cull_every: 5 s at least
    settings["IdleCuller"] = {
        "enabled": True,
        "timeout": args.cull_timeout,
        "cull_every": cull_every,
        "max_age": 0,
    }
    hub = HubProcess(work / "class-hub", settings)
    try:
        hub.start()
        tokens = log_in(hub.url, people)
        material = work / "material"
        material.mkdir()
        tutorial = Path(__file__).resolve().parents[1] / "notebooks"
        for notebook in tutorial.glob("90_*.ipynb"):
            (material / notebook.name).write_bytes(notebook.read_bytes())
        send_material(material, "bench-class", f"{hub.url}/hub/api", tokens["teacher"])
        start = time.perf_counter()
        with ThreadPoolExecutor(len(students)) as pool:
            list(pool.map(lambda n: request_and_wait(hub.url, n, tokens[n]), students))
        ready = time.perf_counter()

        def all_culled() -> bool:
            listed = requests.get(
                f"{hub.url}/hub/api/users", headers=auth(tokens["teacher"]), timeout=30
            ).json()
            return not any(u.get("servers") for u in listed if u["name"] in students)

        wait_for(all_culled, args.cull_timeout * 4 + 120, "the culler", interval=1)
        culled = time.perf_counter()
        # the culled servers' containers are gone too (a fresh container on each start)
        left = len(client.containers(all=True, filters={"network": network}))
    finally:
        hub.stop()
        remove_everything_on(client, network)
        remove_volumes(client, volumes)
    return {
        f"class{args.class_size}_all_ready_s": round(ready - start, 1),
        f"class{args.class_size}_culled_s": round(culled - ready, 1),
        "class_cull_timeout_s": args.cull_timeout,
        "class_containers_left": left,
    }


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
        users_file = write_users(work / "users.yaml", users)
        hub = HubProcess(
            work / "hub", hub_settings(store, args.image, network, volumes, users_file)
        )
        try:
            hub.start()
            tokens = log_in(hub.url, users)
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
        taught = run_class(client, args, work, store) if args.class_size else {}

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
        **taught,
    }
    rows = [
        ("bare docker run to server answering (median)", statistics.median(bare)),
        ("hub spawn request to ready (median)", statistics.median(single)),
        (f"{args.concurrent} concurrent spawns, all ready", concurrent),
    ]
    if taught:
        n = args.class_size
        rows += [
            (f"class of {n}: all students' servers ready", taught[f"class{n}_all_ready_s"]),
            (f"class of {n}: all culled, after the last ready", taught[f"class{n}_culled_s"]),
        ]
    print(f"{'what':<46} seconds")
    for what, seconds in rows:
        print(f"{what:<46} {seconds:7.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
