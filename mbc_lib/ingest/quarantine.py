"""Quarantine: every refused file is kept with its reason, outside the store and the source.

A refused file is *copied* only when the PHI gate has read all of it and found nothing that
identifies a person (a de-identified CT slice of an inconsistent series, say). Anything the
gate could not verify (a link, an unreadable or malformed file, an unsupported type, a file
the de-identifier refused) is *listed* in ``reasons.jsonl`` with ``"copied": false`` and
stays where it was: no identified byte is written on the cloud side. Identified input is
listed in ``refused-input.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..atomic import write_bytes
from ..sources.walk import Stamp, UnreadableFile, read_file

REASONS_FILE = "reasons.jsonl"
REFUSAL_FILE = "refused-input.json"


class Quarantine:
    """One ingest run's quarantine folder: ``<root>/<dataset>/<run>/`` with ``files/`` copies
    of verified refused files and one ``reasons.jsonl`` line per refused file."""

    def __init__(self, root: Path, dataset: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.root = Path(root)
        self.run_dir = self.root / dataset / f"{stamp}-{os.getpid()}"
        self.count = 0

    def _ensure(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def put(self, source: Path, rel: str, reason: str, stamp: Stamp | None = None) -> None:
        """Copy a verified file into ``files/`` and record why; the copy is made only of
        the version the gate verified (``stamp``), never through a link."""
        try:
            content = read_file(source, stamp=stamp)
        except UnreadableFile as exc:
            self.record(rel, f"{reason} (not copied: {exc})")
            return
        self._ensure()
        write_bytes(self.run_dir / "files" / rel, content)
        self.record(rel, reason, copied=True)

    def record(self, rel: str, reason: str, copied: bool = False) -> None:
        """Record a refused file that is not copied (it may identify a person)."""
        self._ensure()
        with open(self.run_dir / REASONS_FILE, "a", encoding="utf-8") as fh:
            line = {"path": rel, "reason": reason, "copied": copied}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        self.count += 1

    def write_refusal(self, findings: dict[str, list[str]]) -> Path:
        """Record a whole-input refusal (the files themselves are NOT copied: they hold PHI)."""
        self._ensure()
        path = self.run_dir / REFUSAL_FILE
        path.write_text(json.dumps({"refused": "identified input", "files": findings}, indent=1))
        return path


__all__ = ["REASONS_FILE", "REFUSAL_FILE", "Quarantine"]
