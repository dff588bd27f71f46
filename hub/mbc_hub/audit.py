"""The audit log: one JSON object per line for each login, spawn, stop, refusal, upload,
ingest and course publish.

Lines hold the time (UTC, ISO 8601), the event, the user and details. Secrets never reach the
file: any detail whose key names a password, token, secret or auth state is dropped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from traitlets.config import Configurable

from .traits import AbsolutePath

EVENTS = ("login", "spawn", "stop", "refusal", "upload", "ingest", "publish", "share", "unshare")
_SECRET_KEY = re.compile(r"pass(word)?|token|secret|auth_state|cookie|api_key", re.IGNORECASE)


def scrub(value: Any) -> Any:
    """``value`` with every mapping entry whose key looks secret removed, recursively."""
    if isinstance(value, Mapping):
        return {str(k): scrub(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [scrub(v) for v in items]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class AuditLog(Configurable):
    """Appends audit events to a JSON-lines file that threads and processes may share.

    Each line goes out in one ``write(2)`` on a descriptor opened with ``O_APPEND``: on a local
    file system Linux moves the end of the file and copies the bytes under the inode's lock, so
    lines from any number of threads and processes (the hub and its services on one file) never
    interleave, however long they are. A thread lock would add nothing to that, and could not
    order the writes of other processes, so there is none. A short write (disk full) raises
    instead of leaving half a line unnoticed.
    """

    path = AbsolutePath(
        "{data_dir}/audit.jsonl",
        help="The audit log: JSON lines of logins, spawns, stops and refusals, written by the "
        "hub's authenticator and spawners.",
    ).tag(config=True)

    def __init__(self, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        if path is not None:
            kwargs["path"] = str(path)
        super().__init__(**kwargs)

    @property
    def file(self) -> Path:
        from .platform import resolve_path

        return resolve_path(self.path, self.config)

    def record(self, event: str, user: str | None, **details: Any) -> dict[str, Any]:
        """Append one event and return the line written (as a dict)."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r} (one of {EVENTS})")
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            "user": user,
            **scrub(details),
        }
        data = (json.dumps(line, sort_keys=False, separators=(",", ":")) + "\n").encode()
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(f"audit log {self.file}: wrote {written} of {len(data)} bytes")
        return line


def read_audit(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All events in an audit file (empty if there is none yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
