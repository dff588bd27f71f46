"""Quarantine: refused files are kept, with their reason, outside the store."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path


class Quarantine:
    """One ingest run's quarantine folder: ``<root>/<run>/files/<rel>`` plus ``reasons.jsonl``."""

    def __init__(self, root: Path, dataset: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.root = Path(root)
        self.run_dir = self.root / dataset / f"{stamp}-{os.getpid()}"
        self.count = 0

    def _ensure(self) -> None:
        (self.run_dir / "files").mkdir(parents=True, exist_ok=True)

    def put(self, source: Path, rel: str, reason: str) -> None:
        """Copy ``source`` into the quarantine and record why."""
        self._ensure()
        target = self.run_dir / "files" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        self.record(rel, reason)

    def record(self, rel: str, reason: str, copied: bool = True) -> None:
        self._ensure()
        with open(self.run_dir / "reasons.jsonl", "a") as fh:
            fh.write(json.dumps({"path": rel, "reason": reason, "copied": copied}) + "\n")
        self.count += 1

    def write_refusal(self, findings: dict[str, list[str]]) -> Path:
        """Record a whole-input refusal (the files themselves are NOT copied: they hold PHI)."""
        self._ensure()
        path = self.run_dir / "refused-input.json"
        path.write_text(json.dumps({"refused": "identified input", "files": findings}, indent=1))
        return path
