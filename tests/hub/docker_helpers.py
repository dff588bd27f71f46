"""The real Docker engine in hub tests: the engine, the researcher image, and cleanup by name.

Outside CI a machine without an engine (or without the images of ``make local-images``) skips
these tests with the reason, and the pytest summary says so in one line (``conftest.py``); in CI
(``CI=true``) they fail instead, since ``make test`` provides both. The engine is the one
``DOCKER_HOST`` names, as for the hub's spawners (default: the local socket).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

RESEARCHER_IMAGE = os.environ.get("MBC_TEST_IMAGE", "mbc-researcher:local")
HUB_IMAGE = os.environ.get("MBC_TEST_HUB_IMAGE", "mbc-hub:local")


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
    if not client.images(name=image):
        missing(f"image {image} is not built", "make local-images")
    return image


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def remove_everything_on(client: Any, network: str) -> None:
    """Remove the containers attached to ``network``, then the network."""
    for container in client.containers(all=True, filters={"network": network}):
        client.remove_container(container["Id"], force=True)
    for found in client.networks(names=[network]):
        if found["Name"] == network:
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
