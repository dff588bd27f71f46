"""The real Docker engine in hub tests: the engine, the researcher image, and cleanup by name.

Outside CI a machine without an engine (or without the images of ``make local-images``) skips
these tests with the reason, and the pytest summary says so in one line (``conftest.py``); in CI
(``CI=true``) they fail instead, since ``make test`` provides both. The engine is the one
``DOCKER_HOST`` names, as for the hub's spawners (default: the local socket).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# (an empty variable means the default: an empty image name would match every image below and
# start containers from whatever the engine makes of it)
RESEARCHER_IMAGE = os.environ.get("MBC_TEST_IMAGE") or "mbc-researcher:local"
HUB_IMAGE = os.environ.get("MBC_TEST_HUB_IMAGE") or "mbc-hub:local"


#: the attribute of a skip raised by :func:`missing`: (what is missing, the detail)
MISSING_ATTR = "mbc_hub_missing"


def missing(what: str, detail: str = "") -> None:
    """Skip outside CI; fail in CI, where ``make test`` provides the engine and the images.

    The skip carries :data:`MISSING_ATTR`, which the summary line of ``conftest.py`` counts.
    """
    reason = f"{what}: {detail}" if detail else what
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI must provide it: make docker-engine local-images)")
    skip = pytest.skip.Exception(reason)
    setattr(skip, MISSING_ATTR, (what, detail))
    raise skip


def engine() -> Any:
    """A low-level client of the engine ``DOCKER_HOST`` names, or skip/fail with the reason."""
    try:
        import docker
        from docker.utils import kwargs_from_env

        client = docker.APIClient(version="auto", timeout=120, **kwargs_from_env())
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine here
        missing("no Docker engine", str(exc))
    return client


def require_image(client: Any, image: str = RESEARCHER_IMAGE) -> str:
    if not image or not client.images(name=image):
        missing(f"image {image} is not built", "make local-images")
    return image


def remove_host_firewall(network: dict[str, Any]) -> None:
    """The hub's iptables chain for ``network``, where it made one (root only)."""
    from mbc_hub.firewall import FirewallError, remove_host_firewall

    with contextlib.suppress(FirewallError):  # no iptables here, so the hub made none
        remove_host_firewall(network)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def remove_everything_on(client: Any, network: str) -> None:
    """Remove the containers attached to ``network``, then the network."""
    for container in client.containers(all=True, filters={"network": network}):
        client.remove_container(container["Id"], force=True)
    for found in client.networks(names=[network]):
        if found["Name"] == network:
            remove_host_firewall(client.inspect_network(found["Id"]))
            client.remove_network(found["Id"])


def remove_volumes(client: Any, prefix: str, timeout: float = 60) -> None:
    """Remove the volumes named ``prefix*``, waiting for containers still being torn down."""
    import docker

    for volume in (client.volumes() or {}).get("Volumes") or []:
        if not volume["Name"].startswith(prefix):
            continue
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.remove_volume(volume["Name"], force=True)
                break
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@contextmanager
def sentinel_server(client: Any, image: str) -> Iterator[dict[str, str]]:
    """An HTTP server in a container on a network of its own (an ordinary bridge with a route
    out): the only target of the egress tests. Yields its network, address and the page."""
    network = unique("mbc-test-outside")
    client.create_network(network, driver="bridge")
    page = unique("sentinel-page")
    try:
        container = client.create_container(
            image,
            command=[
                "sh",
                "-c",
                f"mkdir -p /tmp/www && echo {page} > /tmp/www/index.html && "
                "exec python3 -m http.server 8080 --bind 0.0.0.0 --directory /tmp/www",
            ],
            entrypoint=[],
            user="1000:100",
            host_config=client.create_host_config(network_mode=network),
            name=unique("mbc-test-sentinel"),
        )
        client.start(container["Id"])
        info = client.inspect_container(container["Id"])
        address = info["NetworkSettings"]["Networks"][network]["IPAddress"]
        yield {
            "network": network,
            "address": address,
            "page": page,
            "url": f"http://{address}:8080/",
        }
    finally:
        remove_everything_on(client, network)


def fetch_from_network(client: Any, image: str, network: str, url: str) -> str:
    """What a throwaway container on ``network`` gets from ``url`` (or the error)."""
    output = client.create_container(
        image,
        command=[
            "python3",
            "-c",
            "import urllib.request, time\n"
            "for i in range(60):\n"
            "    try:\n"
            f"        print(urllib.request.urlopen('{url}', timeout=1).read().decode()); break\n"
            "    except OSError as e:\n"
            "        err = e; time.sleep(0.25)\n"
            "else:\n"
            "    print('error', err)\n",
        ],
        entrypoint=[],
        user="1000:100",
        host_config=client.create_host_config(network_mode=network),
    )
    try:
        client.start(output["Id"])
        client.wait(output["Id"], timeout=120)
        return client.logs(output["Id"]).decode()
    finally:
        client.remove_container(output["Id"], force=True)


@contextmanager
def host_listener(address: str) -> Iterator[int]:
    """An HTTP server of the test on ``address`` (a free port; yields it), answering
    ``host-listener``: what a service of the host listening there would be."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            body = b"host-listener"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


#: The addresses of the veth pair :func:`network_namespace` makes (a /30 of the test's own).
HOST_SIDE_ADDRESS, NAMESPACE_ADDRESS = "10.213.77.1", "10.213.77.2"


@contextmanager
def network_namespace() -> Iterator[Any]:
    """A network namespace joined to the host by a veth pair (host side 10.213.77.1, its side
    10.213.77.2, its default route through the host), so the host's addresses are reached
    from a non-loopback address. Yields ``run(argv) -> stdout`` inside it."""
    import shutil
    import subprocess

    if shutil.which("ip") is None or os.geteuid() != 0:
        missing("network namespaces (iproute2, root)")
    name = unique("mbc-test-ns")
    host_if, ns_if = "v" + name[-8:] + "h", "v" + name[-8:] + "n"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", name)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
        ip("addr", "add", f"{HOST_SIDE_ADDRESS}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("-n", name, "addr", "add", f"{NAMESPACE_ADDRESS}/30", "dev", ns_if)
        ip("-n", name, "link", "set", ns_if, "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "route", "add", "default", "via", HOST_SIDE_ADDRESS)

        def run(argv: list[str]) -> str:
            proc = subprocess.run(
                ["ip", "netns", "exec", name, *argv], capture_output=True, text=True, timeout=120
            )
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        yield run
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextmanager
def hub_on_engine(hub: Any, client: Any, network: str, volume_prefix: str) -> Iterator[Any]:
    """Start ``hub`` (a HubProcess spawning on ``network``); afterwards stop it and remove what
    it left on the engine: the network's containers and firewall, the home volumes."""
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()
        remove_everything_on(client, network)
        remove_volumes(client, volume_prefix)
