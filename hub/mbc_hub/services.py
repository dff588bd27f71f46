"""Hub services: the idle culler, run by the hub with the least scopes it needs."""

from __future__ import annotations

import sys
from typing import Any

from traitlets import Bool, Int
from traitlets.config import Configurable

CULLER_NAME = "idle-culler"
CULLER_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


class IdleCuller(Configurable):
    """jupyterhub-idle-culler as a hub service: stops servers nobody uses, so their CPUs,
    memory and GPUs go back to the pool."""

    enabled = Bool(
        True, help="Run jupyterhub-idle-culler as a hub service with the scopes it needs."
    ).tag(config=True)
    timeout = Int(3600, min=10, help="Stop servers idle this many seconds.").tag(config=True)
    max_age = Int(
        28800, min=0, help="Stop servers older than this many seconds, idle or not (0: never)."
    ).tag(config=True)
    cull_every = Int(300, min=5, help="Seconds between the culler's checks.").tag(config=True)

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={self.timeout}",
            f"--cull-every={self.cull_every}",
        ]
        if self.max_age:
            command.append(f"--max-age={self.max_age}")
        return command

    def service(self) -> dict[str, Any]:
        """The culler's entry of ``JupyterHub.services``."""
        return {"name": CULLER_NAME, "command": self.command()}

    def role(self) -> dict[str, Any]:
        """The culler's entry of ``JupyterHub.load_roles``: only the scopes it needs."""
        return {"name": CULLER_NAME, "scopes": list(CULLER_SCOPES), "services": [CULLER_NAME]}
