"""The platform's Docker network: created internal (no route out) when missing.

Researchers' containers live on it. A hub that runs on the host (docker mode) listens on the
network's gateway address, which is the one address of the host such a container can reach;
a hub in a container (swarm mode) joins the network and is reached by its name.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlparse

from .platform import PlatformConfigError
from .policy import ICC_OPTION, network_spec


def ensure_network(client: Any, name: str, *, swarm: bool) -> dict[str, Any]:
    """The network ``name`` (docker inspect form), created from :func:`network_spec` if absent.

    An existing network must be internal: one with a route out would break the isolation
    the platform promises, so the hub refuses to start on it.
    """
    found = [n for n in client.networks(names=[name]) if n.get("Name") == name]
    if not found:
        spec = network_spec(name, swarm=swarm)
        client.create_network(**spec)
        found = [n for n in client.networks(names=[name]) if n.get("Name") == name]
    network = client.inspect_network(found[0]["Id"])
    if not network.get("Internal"):
        raise PlatformConfigError(
            f"docker network {name!r} exists but is not internal (it has a route out); "
            f"remove it (docker network rm {name}) and let the hub create it"
        )
    icc = (network.get("Options") or {}).get(ICC_OPTION, "true")
    if network.get("Driver") == "bridge" and icc != "false":
        raise PlatformConfigError(
            f"docker network {name!r} exists but lets containers reach each other "
            f"({ICC_OPTION} is not false); remove it (docker network rm {name}) and let the "
            "hub create it"
        )
    return network


def gateway(network: dict[str, Any]) -> str:
    """The host's address on a bridge network (its first IPv4 gateway)."""
    for pool in (network.get("IPAM") or {}).get("Config") or []:
        address = pool.get("Gateway")
        if address and ipaddress.ip_address(address).version == 4:
            return address
    raise PlatformConfigError(f"docker network {network.get('Name')!r} has no IPv4 gateway")


def api_port(bind_url: str) -> int:
    """The port of the hub API bound to ``bind_url`` (JupyterHub's default: 8081)."""
    return urlparse(bind_url).port or 8081
