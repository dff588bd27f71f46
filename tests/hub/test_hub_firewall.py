"""The host's firewall chain of the platform network (mbc_hub.firewall), on this host's real
iptables: written whole however many spawns ask for it at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from mbc_hub.firewall import chain_name, ensure_host_firewall, remove_host_firewall
from mbc_hub.policy import BRIDGE_NAME_OPTION

pytestmark = pytest.mark.skipif(
    not shutil.which("iptables-restore") or os.geteuid() != 0,
    reason="needs iptables and root (CI has both)",
)


def rules(chain: str) -> list[str]:
    out = subprocess.run(["iptables", "-w", "-S", chain], capture_output=True, text=True)
    return out.stdout.splitlines()


def hooks(chain: str) -> list[str]:
    out = subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.endswith(f"-j {chain}")]


def test_twenty_spawns_at_once_leave_one_chain_in_order_and_one_hook():
    """Seen when 20 researchers spawned at once: the hub could no longer reach any of their
    servers (connection timeouts until the spawn timed out). Each spawn flushed and refilled
    the chain; interleaved, the REJECT rules came before the one accepting replies."""
    # an interface name no host has: the rules match no packet of this machine
    tag = uuid.uuid4().hex[:8]
    network = {
        "Name": f"mbc-test-fw-{tag}",
        "Id": "0" * 64,
        "Options": {BRIDGE_NAME_OPTION: f"mbcfw{tag}"},
    }
    chain = chain_name(network)
    try:
        with ThreadPoolExecutor(20) as pool:
            list(pool.map(lambda _: ensure_host_firewall(network, "10.254.0.1", 8081), range(60)))
        assert rules(chain) == [
            f"-N {chain}",
            f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A {chain} -d 10.254.0.1/32 -p tcp -m tcp --dport 8081 -j ACCEPT",
            f"-A {chain} -p tcp -j REJECT --reject-with tcp-reset",
            f"-A {chain} -j REJECT --reject-with icmp-port-unreachable",
        ]
        assert len(hooks(chain)) == 1
        # the hub's port changes (a restart): the chain is rewritten, still hooked once
        ensure_host_firewall(network, "10.254.0.1", 8082)
        assert "--dport 8082" in rules(chain)[2] and len(rules(chain)) == 5
        assert len(hooks(chain)) == 1
    finally:
        remove_host_firewall(network)
    assert rules(chain) == [] and hooks(chain) == []
