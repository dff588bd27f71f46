"""Hub services: the idle culler, run by the hub with the least scopes it needs."""

from __future__ import annotations

import sys
from typing import Any

from .config import CullerSettings

CULLER_NAME = "idle-culler"
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def idle_culler(culler: CullerSettings, python: str = sys.executable) -> tuple[dict, dict]:
    """The idle culler's service definition and its role (``JupyterHub.services``/``load_roles``).

    Servers idle for ``culler.timeout`` seconds are stopped, and any server older than
    ``culler.max_age`` (0: no limit) too, checked every ``culler.cull_every`` seconds.
    """
    command = [
        python,
        "-m",
        "jupyterhub_idle_culler",
        f"--timeout={culler.timeout}",
        f"--cull-every={culler.cull_every}",
    ]
    if culler.max_age:
        command.append(f"--max-age={culler.max_age}")
    service: dict[str, Any] = {"name": CULLER_NAME, "command": command}
    role: dict[str, Any] = {
        "name": CULLER_NAME,
        "scopes": list(CULLER_SCOPES),
        "services": [CULLER_NAME],
    }
    return service, role
