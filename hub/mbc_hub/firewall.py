"""The host's side of the platform network: a researcher's container may open a connection to
the hub API on the host and to nothing else of the host.

Docker's internal network has no route out, and with inter-container traffic off
(``enable_icc=false``) containers do not reach each other; but every container still reaches
the host itself at the network's gateway, where anything listening on all addresses answers.
As Zero to JupyterHub's singleuser network policy allows egress only to the hub, an iptables
chain on the host's INPUT for the network's bridge accepts replies (connections the host
opened: the proxy and the hub talking to the servers) and new connections to the hub API's
address and port, and rejects the rest.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from typing import Any

from .platform import PlatformConfigError
from .policy import BRIDGE_NAME_OPTION


class FirewallError(PlatformConfigError):
    """The host's firewall rules for the platform network cannot be put in place."""


def bridge_interface(network: dict[str, Any]) -> str:
    """The host interface of a Docker bridge network (docker inspect form)."""
    name = (network.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    return name or "br-" + str(network["Id"])[:12]


def chain_name(network: dict[str, Any]) -> str:
    """The iptables chain of a network: ``MBC-`` and a digest of its name (28 characters at
    most), so a network made again under its name finds its rules in place."""
    return "MBC-" + hashlib.sha256(str(network["Name"]).encode()).hexdigest()[:12]


def isolation_rules(chain: str, gateway: str, api_port: int) -> list[list[str]]:
    """The chain's rules, in order (``iptables -A`` arguments)."""
    return [
        [chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        [chain, "-p", "tcp", "-d", gateway, "--dport", str(api_port), "-j", "ACCEPT"],
        [chain, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
        [chain, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"],
    ]


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    binary = shutil.which("iptables")
    if binary is None:
        raise FirewallError("iptables is not installed")
    proc = subprocess.run([binary, "-w", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise FirewallError(f"iptables {' '.join(args)}: {detail}")
    return proc


#: one rebuild of a chain at a time in this hub (spawns run it from several threads at once)
_REBUILD = threading.Lock()


def ensure_host_firewall(network: dict[str, Any], gateway: str, api_port: int) -> str:
    """Put the rules for ``network`` in place and hook the chain into INPUT once; returns the
    chain's name. The chain is written in one ``iptables-restore`` transaction, so it is never
    empty or half-written while containers run, and concurrent spawns cannot interleave their
    rules. :class:`FirewallError` when the rules cannot be put in place, so that no container
    starts unisolated."""
    chain, interface = chain_name(network), bridge_interface(network)
    rules = isolation_rules(chain, gateway, api_port)
    transaction = "\n".join(
        ["*filter", f":{chain} - [0:0]", *("-A " + " ".join(rule) for rule in rules), "COMMIT", ""]
    )
    try:
        with _REBUILD:
            _iptables_restore(transaction)
            hook = ["INPUT", "-i", interface, "-j", chain]
            if _iptables("-C", *hook, check=False).returncode != 0:
                _iptables("-I", *hook)
    except FirewallError as exc:
        raise FirewallError(
            f"cannot keep researchers' containers off the host's ports ({exc}): run the hub "
            "with the right to change iptables, or set docker.host_firewall: false where the "
            "host's own firewall lets containers reach only the hub API"
        ) from None
    return chain


def _iptables_restore(transaction: str) -> None:
    """Apply ``transaction`` (iptables-restore's format) without flushing other chains."""
    binary = shutil.which("iptables-restore")
    if binary is None:
        raise FirewallError("iptables-restore is not installed")
    proc = subprocess.run(
        [binary, "-w", "--noflush"], input=transaction, capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise FirewallError(
            f"iptables-restore: {lines[-1] if lines else f'exit status {proc.returncode}'}"
        )


def remove_host_firewall(network: dict[str, Any]) -> None:
    """Take the network's rules away (when the network itself is removed)."""
    chain, interface = chain_name(network), bridge_interface(network)
    while _iptables("-D", "INPUT", "-i", interface, "-j", chain, check=False).returncode == 0:
        pass
    if _iptables("-n", "-L", chain, check=False).returncode == 0:
        _iptables("-F", chain)
        _iptables("-X", chain)
