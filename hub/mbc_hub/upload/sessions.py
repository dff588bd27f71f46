"""Upload sessions on disk: declared files, parts appended by offset, hashes checked on arrival.

A session lives in ``<spool>/sessions/<id>/``: ``session.json`` (written atomically when the
session is made and whenever its state changes) and ``tree/``, the files as they arrive. What a
file holds on disk is its offset, so a session survives a crash of the service: on restart each
file's offset is read from disk and a whole file is checked again, and the client asks where
each file stands and goes on from there. Parts are not synced to disk one by one: a crash of the
machine may lose the tail of a file, whose hash then fails, and it is sent again.

A file whose last part arrives is hashed; a mismatch empties it (send it again), and the PHI
gate runs on it at once: a file that identifies a person is deleted there and then and never
reaches the store. The index (``<spool>/index/<dataset>.jsonl``) remembers the hash of
every file ingested, so a re-run skips what already arrived.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tornado.web import HTTPError

from mbc_lib.atomic import write_bytes
from mbc_lib.upload import file_sha256

#: A session's states, in order; ``failed`` and ``aborted`` end it too.
OPEN, QUEUED, INGESTING, DONE, FAILED, ABORTED = (
    "open",
    "queued",
    "ingesting",
    "done",
    "failed",
    "aborted",
)
ENDED = (DONE, FAILED, ABORTED)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_PATH = 1024
MAX_NAME = 255


class UploadError(HTTPError):
    """A request the service refuses: the HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, log_message=message.replace("%", "%%"))
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return self.message


def safe_path(path: object) -> str:
    """``path`` as a relative POSIX path inside a session, or UploadError(400) saying why not:
    absolute paths, ``..`` and ``.`` parts, empty parts, backslashes, NUL and control bytes,
    and over-long names are refused."""
    if not isinstance(path, str) or not path:
        raise UploadError(400, "a file path must be a non-empty string")
    shown = path.encode("unicode_escape").decode()[:120]
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in path):
        raise UploadError(400, f"file path {shown!r} holds NUL, control or unassigned characters")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UploadError(400, f"file path {shown!r} is absolute; send paths relative to SRC")
    if "\\" in path:
        raise UploadError(400, f"file path {shown!r} holds a backslash; use '/'")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UploadError(400, f"file path {shown!r} has an empty, '.' or '..' part")
    if len(path.encode()) > MAX_PATH or any(len(p.encode()) > MAX_NAME for p in parts):
        raise UploadError(400, f"file path {shown!r} is too long")
    return path


@dataclass
class FileState:
    """One declared file of a session."""

    size: int
    sha256: str
    received: int = 0
    #: pending (being sent), complete (hash checked, gate passed), already (ingested before),
    #: then the ingest's outcome: published | duplicate | quarantined
    status: str = "pending"
    reason: str | None = None


@dataclass
class Session:
    id: str
    society: str
    dataset: str
    created: float
    digest: str  # of the declared file list: the same list resumes the same session
    state: str = OPEN
    files: dict[str, FileState] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = [{"path": rel, **asdict(f)} for rel, f in sorted(self.files.items())]
        out["counts"] = self.counts()
        return out

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in self.files.values():
            counts[f.status] = counts.get(f.status, 0) + 1
        return counts

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        files = {}
        for entry in data.pop("files"):
            rel = entry.pop("path")
            files[rel] = FileState(**entry)
        data.pop("counts", None)
        return cls(**data, files=files)


def files_digest(files: Iterable[tuple[str, int, str]]) -> str:
    h = hashlib.sha256()
    for rel, size, sha in sorted(files):
        h.update(f"{rel}\0{size}\0{sha}\n".encode())
    return h.hexdigest()


class IngestedIndex:
    """The hashes of files ingested (published or duplicate) per dataset, append-only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def _load(self, dataset: str) -> set[str]:
        if dataset not in self._known:
            known: set[str] = set()
            path = self.root / f"{dataset}.jsonl"
            if path.exists():
                for line in path.read_text().splitlines():
                    try:
                        known.add(json.loads(line)["sha256"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a line torn by a crash
            self._known[dataset] = known
        return self._known[dataset]

    def __contains__(self, key: tuple[str, str]) -> bool:
        dataset, sha = key
        with self._lock:
            return sha in self._load(dataset)

    def add(self, dataset: str, hashes: Iterable[str]) -> None:
        with self._lock:
            known = self._load(dataset)
            new = [h for h in hashes if h not in known]
            if not new:
                return
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / f"{dataset}.jsonl", "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps({"sha256": h}) + "\n" for h in new))
                fh.flush()
                os.fsync(fh.fileno())
            known.update(new)


@dataclass(frozen=True)
class Limits:
    max_part_bytes: int
    max_files_per_session: int
    max_session_bytes: int
    max_sessions_per_society: int


#: ``gate(path, rel, dataset, data) -> findings``: what in a received file identifies a person
#: (``data``: its bytes when they are at hand, else None: read ``path``).
Gate = Callable[[Path, str, str, bytes | None], list[str]]
#: ``metadata(dataset) -> names``: the files that make no case of their own (label tables,
#: nnU-Net's dataset.json, mbc deid's report). When new cases come, they are sent again even
#: if their hash was ingested before: the new cases take their labels from them.
Metadata = Callable[[str], Collection[str]]


class SessionStore:
    """Every upload session of the service, on disk under ``root``."""

    def __init__(
        self, root: Path, limits: Limits, gate: Gate, index: IngestedIndex, metadata: Metadata
    ) -> None:
        self.root = Path(root)
        self.limits = limits
        self.metadata = metadata
        self.gate = gate
        self.index = index
        self._lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        for path in sorted(self.root.glob("*/session.json")):
            try:
                session = Session.from_json(json.loads(path.read_text()))
            except (ValueError, TypeError, KeyError):
                continue  # never written whole: atomic writes make this a crash before create
            self.sessions[session.id] = session
            self._resync(session)

    # -- paths -----------------------------------------------------------------------------
    def folder(self, session: Session) -> Path:
        return self.root / session.id

    def tree(self, session: Session) -> Path:
        return self.folder(session) / "tree"

    def save(self, session: Session) -> None:
        with self._lock:
            data = json.dumps(session.to_json(), indent=1).encode()
            write_bytes(self.folder(session) / "session.json", data, mode=0o600)

    def _resync(self, session: Session) -> None:
        """After a restart: each pending file's offset is what its bytes on disk hold."""
        for rel, f in session.files.items():
            if f.status == "pending":
                path = self.tree(session) / rel
                f.received = min(path.stat().st_size, f.size) if path.exists() else 0
                if path.exists() and f.received == f.size:  # whole, but not yet checked
                    with contextlib.suppress(UploadError):  # emptied: it is sent again
                        self._arrived(session, rel, f, path)
        self.save(session)

    # -- sessions --------------------------------------------------------------------------
    def get(self, session_id: str, society: str) -> Session:
        if not _ID.match(session_id):
            raise UploadError(404, "no such upload session")
        session = self.sessions.get(session_id)
        if session is None or session.society != society:
            raise UploadError(404, "no such upload session")  # another society's is not shown
        return session

    def create(self, society: str, dataset: str, files: object) -> tuple[Session, bool]:
        """A session for ``files`` ([{path, size, sha256}]); the open session of this society
        with the same list if there is one (a re-run resumes it). Returns (session, created)."""
        declared = self._declared(files)
        digest = files_digest((rel, size, sha) for rel, (size, sha) in declared.items())
        with self._lock:
            for session in self.sessions.values():
                if (
                    session.society == society
                    and session.dataset == dataset
                    and session.digest == digest
                    and session.state not in ENDED
                ):
                    return session, False
            open_ones = [
                s for s in self.sessions.values() if s.society == society and s.state == OPEN
            ]
            if len(open_ones) >= self.limits.max_sessions_per_society:
                raise UploadError(
                    429,
                    f"society {society} has {len(open_ones)} open upload sessions (the limit); "
                    "commit or delete one first",
                )
            session = Session(
                id=uuid.uuid4().hex,
                society=society,
                dataset=dataset,
                created=time.time(),
                digest=digest,
            )
            metadata = set(self.metadata(dataset))
            for rel, (size, sha) in declared.items():
                state = FileState(size=size, sha256=sha)
                if (dataset, sha) in self.index and _name(rel) not in metadata:
                    state.status, state.received = "already", size
                session.files[rel] = state
            # no new case: the metadata ingested before is not needed again either
            if all(f.status == "already" or _name(r) in metadata for r, f in session.files.items()):
                for f in session.files.values():
                    if (dataset, f.sha256) in self.index:
                        f.status, f.received = "already", f.size
            self.tree(session).mkdir(parents=True, mode=0o700)
            self.sessions[session.id] = session
            self.save(session)
            return session, True

    def _declared(self, files: object) -> dict[str, tuple[int, str]]:
        if not isinstance(files, list) or not files:
            raise UploadError(400, "files must be a non-empty list of {path, size, sha256}")
        if len(files) > self.limits.max_files_per_session:
            raise UploadError(
                413,
                f"{len(files)} files: a session holds at most {self.limits.max_files_per_session}",
            )
        declared: dict[str, tuple[int, str]] = {}
        total = 0
        for entry in files:
            if not isinstance(entry, dict):
                raise UploadError(400, "each file must be {path, size, sha256}")
            rel = safe_path(entry.get("path"))
            size, sha = entry.get("size"), entry.get("sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise UploadError(400, f"{rel}: size must be a whole number of bytes")
            if not isinstance(sha, str) or not _SHA256.match(sha):
                raise UploadError(400, f"{rel}: sha256 must be 64 lower-case hex digits")
            if rel in declared:
                raise UploadError(400, f"{rel} is declared twice")
            declared[rel] = (size, sha)
            total += size
        prefixes = {rel.rsplit("/", i)[0] for rel in declared for i in range(1, rel.count("/") + 1)}
        clash = prefixes & set(declared)
        if clash:
            raise UploadError(400, f"{sorted(clash)[0]} is declared both as a file and a folder")
        if total > self.limits.max_session_bytes:
            raise UploadError(
                413, f"{total} bytes: a session holds at most {self.limits.max_session_bytes}"
            )
        return declared

    # -- parts -----------------------------------------------------------------------------
    def put_part(self, session: Session, rel: str, offset: int, data: bytes) -> FileState:
        """Append ``data`` at ``offset`` of ``rel``; on its last byte, check hash and gate."""
        rel = safe_path(rel)
        if session.state != OPEN:
            raise UploadError(409, f"the session is {session.state}; no more parts are taken")
        f = session.files.get(rel)
        if f is None:
            raise UploadError(404, f"{rel} is not declared in this session")
        if len(data) > self.limits.max_part_bytes:
            raise UploadError(
                413, f"a part holds at most {self.limits.max_part_bytes} bytes, got {len(data)}"
            )
        if f.status != "pending":
            raise UploadError(409, f"{rel} is {f.status}; nothing more is taken for it")
        if offset != f.received:
            raise UploadError(409, f"{rel}: expected offset {f.received}, got {offset}")
        if offset + len(data) > f.size:
            raise UploadError(400, f"{rel}: the part runs past the declared size {f.size}")
        path = self.tree(session) / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, offset)  # bytes past a lost part's offset are dropped
            os.lseek(fd, offset, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        f.received = offset + len(data)
        if f.received == f.size:
            self._arrived(session, rel, f, path, data if offset == 0 else None)
        return f

    def _arrived(
        self, session: Session, rel: str, f: FileState, path: Path, data: bytes | None = None
    ) -> None:
        """A file's last byte is in: its hash, then the PHI gate (``data``: the whole file,
        when it came in one part)."""
        digest = hashlib.sha256(data).hexdigest() if data is not None else file_sha256(path)
        if digest != f.sha256:
            path.unlink()
            f.received = 0
            raise UploadError(422, f"{rel}: sha256 does not match what was declared; send it again")
        findings = self.gate(path, rel, session.dataset, data)
        if findings:
            path.unlink()  # an identified file is never kept on the cloud side
            f.status = "quarantined"
            f.reason = f"identifies a person: {findings[0]}; de-identify it (mbc deid) first"
        else:
            f.status = "complete"

    # -- commit ----------------------------------------------------------------------------
    def missing(self, session: Session) -> list[str]:
        return sorted(rel for rel, f in session.files.items() if f.status == "pending")

    def set_state(self, session: Session, state: str, error: str | None = None) -> None:
        with self._lock:
            session.state = state
            session.error = error
            self.save(session)


def _name(rel: str) -> str:
    return rel.rsplit("/", 1)[-1]
