"""The one ingest: every way in (upload sessions, STOW-RS, C-STORE) ends in a job of this queue.

Jobs run one at a time, in the order they came, on one worker thread, and each waits for the
store's ingest lock (``mbc ingest`` run by an admin meanwhile holds it): a second upload into a
dataset is queued, never refused. The lock is an ``flock`` on the store, so a service killed
mid-ingest releases it; ingest's staging and atomic rename leave no half-written case behind,
and the next run of the same files finds what was published as duplicates.

DICOM instances (STOW-RS, C-STORE) gather per study in ``<spool>/dicom/`` and go to the queue
as one batch when their study is complete: when the association that sent them ends, or when no
instance of the study has arrived for ``stow_settle_seconds``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbc_lib.ingest.pipeline import IngestResult, ingest

#: ``(dataset, society, study)``: where DICOM instances of one study gather.
StudyKey = tuple[str, str, str]


@dataclass
class IngestTarget:
    """Where the ingest writes: the store, its quarantine, the manifests."""

    store: Path
    quarantine: Path | None = None
    manifest_dir: Path | None = None

    def run(self, tree: Path, dataset: str) -> IngestResult:
        """Ingest ``tree`` into ``dataset``, waiting for the store's lock."""
        return ingest(
            tree,
            self.store,
            dataset,
            quarantine=self.quarantine,
            progress=False,
            manifest_dir=self.manifest_dir,
            wait_for_lock=True,
        )


class IngestQueue:
    """A FIFO of ingest jobs on one worker thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mbc-ingest")

    def submit(self, job: Callable[..., Any], *args: Any) -> Future:
        return self._pool.submit(job, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)


class PendingStudies:
    """DICOM instances gathering per study until their study goes to the ingest queue."""

    def __init__(
        self, root: Path, settle_seconds: float, on_batch: Callable[[StudyKey, Path], None]
    ) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.batches = self.root / "batches"
        self.settle = settle_seconds
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self._last: dict[StudyKey, float] = {}
        self._due: dict[StudyKey, float] = {}
        for folder in (self.incoming, self.batches):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # after a restart: every study that was gathering is due after the settle time
        for dataset in sorted(p for p in self.incoming.iterdir() if p.is_dir()):
            for society in sorted(p for p in dataset.iterdir() if p.is_dir()):
                for study in sorted(p for p in society.iterdir() if p.is_dir()):
                    self._last[(dataset.name, society.name, study.name)] = time.monotonic()

    def folder(self, key: StudyKey) -> Path:
        return self.incoming.joinpath(*key)

    def write(self, key: StudyKey, name: str, data: bytes) -> Path:
        """Keep one instance of the study (written whole, mode 0600); returns its path."""
        with self._lock:
            folder = self.folder(key)
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = folder / name
            tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.part"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            self._last[key] = time.monotonic()
            self._due.pop(key, None)
            return path

    def due_now(self, key: StudyKey) -> None:
        """The sender is done with the study (its association ended): ingest it next tick."""
        with self._lock:
            if key in self._last:
                self._due[key] = 0.0

    def tick(self) -> int:
        """Hand every settled study to ``on_batch``; returns how many went."""
        now = time.monotonic()
        with self._lock:
            ready = [
                key
                for key, last in self._last.items()
                if key in self._due or now - last >= self.settle
            ]
            moved = []
            for key in ready:
                self._last.pop(key, None)
                self._due.pop(key, None)
                source = self.folder(key)
                for torn in source.glob(".*.part"):  # a write a crash cut short
                    torn.unlink()
                if not source.is_dir() or not any(source.iterdir()):
                    shutil.rmtree(source, ignore_errors=True)
                    continue
                batch = self.batches / f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
                (batch / "tree").mkdir(parents=True, mode=0o700)
                os.rename(source, batch / "tree" / key[2])
                (batch / "key").write_text("\n".join(key))
                moved.append((key, batch))
        for key, batch in moved:
            self.on_batch(key, batch)
        return len(moved)

    def leftover_batches(self) -> list[tuple[StudyKey, Path]]:
        """Batches a stopped service had not ingested yet (they are ingested again)."""
        out = []
        for batch in sorted(p for p in self.batches.iterdir() if (p / "key").is_file()):
            parts = (batch / "key").read_text().split("\n")
            if len(parts) == 3:
                out.append(((parts[0], parts[1], parts[2]), batch))
        return out
