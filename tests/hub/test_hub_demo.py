"""``mbc demo``: what ``make demo`` ends in, run as a user runs it."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
from subprocess import PIPE

import pytest
import requests
import yaml
from mbc_hub.demo import DEMO_USERS, demo_logins

from .docker_helpers import engine, remove_everything_on, remove_volumes, require_image, unique
from .hub_helpers import (
    ROOT,
    free_port,
    login,
    start_server,
    user_token,
    wait_for,
)


def test_demo_help():
    proc = subprocess.run(
        [sys.executable, "-m", "mbc_lib.cli", "demo", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "--bind" in proc.stdout and "--workdir" in proc.stdout


def test_demo_logins_are_made_once_and_kept_private(tmp_path):
    path = tmp_path / "hub" / "demo-users.yaml"
    first = demo_logins(path)
    assert set(first) == set(DEMO_USERS) == {"alice", "bob", "carol", "ines", "sam", "tess"}
    assert first["carol"]["groups"] == ["ophthalmology", "radiology", "mbc-admins"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert demo_logins(path) == first


def test_a_demo_logins_file_of_an_older_mbc_gains_the_course_s_people(tmp_path):
    path = tmp_path / "demo-users.yaml"
    old = {n: {"password": f"{n}-kept", "groups": DEMO_USERS[n]} for n in ("alice", "bob", "carol")}
    path.write_text(yaml.safe_dump({"users": old}))
    path.chmod(0o600)
    users = demo_logins(path)
    assert {n: users[n]["password"] for n in old} == {n: f"{n}-kept" for n in old}
    assert {"ines", "sam", "tess"} <= set(users) and users["sam"]["password"] != "sam-kept"
    assert yaml.safe_load(path.read_text())["users"] == users
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_demo_course_sits_under_the_user_s_own_platform_settings(tmp_path):
    from mbc_hub.demo import DEMO_COURSE, demo_platform_file

    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({"MbcUpload": {"port": 9999}, "IdleCuller": {"enabled": False}}))
    merged = yaml.safe_load(demo_platform_file(tmp_path / "hub", str(own)).read_text())
    assert merged["MbcCourses"] == {"courses": [DEMO_COURSE]}
    assert merged["MbcUpload"]["port"] == 9999 and merged["MbcUpload"]["dicom_port"] == 11112
    assert merged["IdleCuller"] == {"enabled": False}
    alone = yaml.safe_load(demo_platform_file(tmp_path / "hub").read_text())
    assert alone["MbcCourses"] == {"courses": [DEMO_COURSE]} and "IdleCuller" not in alone


def test_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mbc_lib.cli",
                "demo",
                "--bind",
                f"127.0.0.1:{port}",
                "--workdir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"mbc demo: error: 127.0.0.1:{port} is in use (a hub already running?); "
        "stop it or pass --bind HOST:PORT"
    )


@pytest.mark.slow
@pytest.mark.parametrize("spawner", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_mbc_demo_serves_the_hub_and_prints_url_and_logins(tmp_path, hub_store, spawner):
    port = free_port()
    platform = tmp_path / "platform.yaml"
    settings = {
        "JupyterHub": {"hub_bind_url": f"http://127.0.0.1:{free_port()}"},
        "ConfigurableHTTPProxy": {"api_url": f"http://127.0.0.1:{free_port()}"},
        "IdleCuller": {"enabled": False},
        "MbcUpload": {"port": free_port(), "dicom_port": free_port()},
    }
    if spawner == "docker":
        client = engine()
        settings["JupyterHub"]["hub_bind_url"] = "http://{gateway}:" + str(free_port())
        settings["DockerSpawner"] = {
            "image": require_image(client),
            "network_name": unique("mbc-test-demo"),
            "pull_policy": "never",
        }
        settings["MbcContainerSpawner"] = {
            "home_volume": unique("mbc-test-demo-home") + "-{username}"
        }
    platform.write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MBC_")}
    env["MBC_PLATFORM_CONFIG"] = str(platform)
    workdir = hub_store.parent  # a finished sample store is reused, not rebuilt
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mbc_lib.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--bind",
            f"127.0.0.1:{port}",
            "--spawner",
            spawner,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "hub.log").open("wb"),
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    try:
        wait_for(lambda: any("Ctrl-C stops the hub" in line for line in lines), 90, "the banner")
        text = "".join(lines)
        assert f"mbc demo hub: http://127.0.0.1:{port}" in text
        assert f"ingest service: http://127.0.0.1:{port}/services/mbc-upload/" in text
        password = re.search(r"alice\s+password (\S+)", text).group(1)
        saved = yaml.safe_load((workdir / "hub" / "demo-users.yaml").read_text())["users"]
        assert password == saved["alice"]["password"]
        session, reply = login(f"http://127.0.0.1:{port}", "alice", password)
        assert reply.status_code == 200 and reply.url.endswith("/hub/home")
        # the demo course: its instructor and students, whose login puts them in its group
        assert re.search(r"ines\s+password \S+\s+instructor of demo-course", text)
        assert re.search(r"sam\s+password \S+\s+student of demo-course", text)
        sam, reply = login(f"http://127.0.0.1:{port}", "sam", saved["sam"]["password"])
        me = sam.get(f"http://127.0.0.1:{port}/hub/api/user", timeout=10)
        assert reply.status_code == 200 and me.json()["groups"] == ["course-demo-course"]
        if spawner == "docker":  # alice's server is a container on the demo's network
            url = f"http://127.0.0.1:{port}"
            token = user_token(session, url, "alice")
            start_server(url, "alice", token, timeout=150)
            network = settings["DockerSpawner"]["network_name"]
            (container,) = client.containers(filters={"network": network})
            assert container["Image"] == settings["DockerSpawner"]["image"]
            # left running: Ctrl-C must stop it
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 130
        reader.join(timeout=10)
        if spawner == "docker":
            network = settings["DockerSpawner"]["network_name"]
            left = client.containers(all=True, filters={"network": network})
            networks = [n for n in client.networks(names=[network]) if n["Name"] == network]
            prefix = settings["MbcContainerSpawner"]["home_volume"].split("{")[0]
            homes = [
                v["Name"]
                for v in (client.volumes() or {}).get("Volumes") or []
                if v["Name"].startswith(prefix)
            ]
            remove_everything_on(client, network)
            remove_volumes(client, prefix)
            # Ctrl-C stopped what the demo started (alice's container, the network), not homes
            assert left == [] and networks == [], (left, networks)
            assert homes == [prefix + "alice"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/hub/health", timeout=5)


def test_demo_asks_the_proxy_only_once_the_hub_is_running():
    """Issue 10: the proxy printed a red 404 for /hub/health on every start, asked before the
    hub had added its route. The demo waits for the hub's running line first."""
    import http.server

    from mbc_hub.demo import wait_until_up

    asked = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    class Watched(threading.Event):
        """The hub's running flag, counting how often the demo has looked at it."""

        def __init__(self) -> None:
            super().__init__()
            self.looks = threading.Semaphore(0)

        def wait(self, timeout: float | None = None) -> bool:
            self.looks.release()
            return super().wait(timeout)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # a stand-in for the hub's process: alive until the test ends it
    hub = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=PIPE)
    running = Watched()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        waiter = threading.Thread(target=wait_until_up, args=(url, hub, running, 20))
        waiter.start()
        for _ in range(3):  # the demo has looked at the flag three times, and asked nothing
            assert running.looks.acquire(timeout=10), "the demo does not wait on the hub"
        assert asked == []  # not before the hub says it runs
        running.set()
        waiter.join(timeout=10)
        assert not waiter.is_alive() and asked == ["/hub/health"]
    finally:
        hub.kill()
        server.shutdown()


def test_the_demo_society_and_receiver_are_in_the_banner(tmp_path):
    from mbc_hub.demo import DEMO_PACS, DEMO_SOCIETY, demo_platform_file, upload_lines

    data = tmp_path / "hub"
    env = {"MBC_PLATFORM_CONFIG": str(demo_platform_file(data)), "MBC_HUB_DATA_DIR": str(data)}
    lines = "\n".join(upload_lines("http://127.0.0.1:8000", env, tmp_path))
    token = data / "society-tokens" / f"{DEMO_SOCIETY}.token"
    assert f"society {DEMO_SOCIETY} may fill ct-covid, fundus-glaucoma; token in {token}" in lines
    assert f"--token-file {token} --dataset ct-covid" in lines
    assert f"takes calling AE {DEMO_PACS} into ct-covid" in lines
