"""``mbc upload``: send a de-identified tree to the cloud's ingest service, resumably.

The tree is hashed, an upload session is opened with the list of files (the same list resumes
the same session, so a re-run after any interruption sends only what has not arrived), each file
is sent in parts from the offset the service reports, and the session is committed; the
service's answer accounts for every file: sent or already there, then published, duplicate or
quarantined with its reason. Network errors and 5xx answers are retried with back-off. With a
de-identification key the tree is de-identified first, on the society's side, so PHI never
leaves it.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from .errors import MbcError
from .sources.walk import walk_tree

SERVICE_PATH = "services/mbc-upload"
DEFAULT_PART_BYTES = 8 * 1024 * 1024
#: where a file ends up; every file of SRC gets one of these
FINAL = ("published", "duplicate", "quarantined", "already", "not sent")


@dataclass
class UploadSummary:
    """What became of every file of the source."""

    dataset: str
    session: str | None = None
    sent_files: int = 0
    sent_bytes: int = 0
    files: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # outcome, reason
    error: str | None = None

    def counts(self) -> Counter[str]:
        return Counter(outcome for outcome, _ in self.files.values())

    @property
    def accounted(self) -> bool:
        """True when every file has a final outcome and the session ended."""
        return self.error is None and all(o in FINAL for o, _ in self.files.values())

    def lines(self) -> list[str]:
        c = self.counts()
        out = [
            f"dataset {self.dataset}: {len(self.files)} files: {self.sent_files} sent "
            f"({self.sent_bytes} bytes), {c['already']} already there",
            f"  {c['published']} published, {c['duplicate']} duplicate, "
            f"{c['quarantined']} quarantined, {c['not sent']} not sent",
        ]
        reasons = Counter(
            (o, r) for o, r in self.files.values() if o in ("quarantined", "not sent") and r
        )
        for (outcome, reason), n in reasons.most_common(10):
            out.append(f"  {n:5d} {outcome}: {reason}")
        if self.error:
            out.append(f"not finished: {self.error}")
        return out


def http_session(token: str, retries: int = 8, backoff: float = 0.5) -> requests.Session:
    """A requests session with the token and retries (connection errors, 5xx, 429) with
    exponential back-off; every call of the service is safe to repeat."""
    session = requests.Session()
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        backoff_max=30,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # POST and PUT too: sessions, parts and commits are idempotent
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    session.headers["Authorization"] = f"token {token}"
    return session


def read_token(path: Path) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise MbcError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise MbcError(f"the token file {path} is empty")
    return token


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class UploadClient:
    """The ingest service's session API at ``url`` (the hub's address, or the service's)."""

    def __init__(self, url: str, token: str, *, timeout: float = 120, retries: int = 8) -> None:
        base = url.rstrip("/")
        self.api = base if base.endswith(SERVICE_PATH) else f"{base}/{SERVICE_PATH}"
        self.api += "/api"
        self.http = http_session(token, retries)
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One call of the API (``path`` below ``api/``), retried as :func:`http_session` says."""
        try:
            reply = self.http.request(method, f"{self.api}/{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise MbcError(f"the ingest service at {self.api} did not answer: {exc}") from None
        return reply

    @staticmethod
    def answer(reply: requests.Response, what: str) -> dict[str, Any]:
        """The reply's JSON, or MbcError with ``what`` and the service's one-line error."""
        if reply.status_code >= 400:
            try:
                message = reply.json().get("error") or reply.reason
            except ValueError:
                message = reply.reason
            raise MbcError(f"{what}: {reply.status_code} {message}")
        return reply.json()

    def open_session(self, dataset: str, files: list[dict[str, Any]]) -> dict[str, Any]:
        reply = self.request("POST", f"datasets/{quote(dataset)}/sessions", json={"files": files})
        return self.answer(reply, "the upload session was refused")

    def session(self, session_id: str) -> dict[str, Any]:
        return self.answer(self.request("GET", f"sessions/{session_id}"), "session status")

    def send_part(self, session_id: str, rel: str, offset: int, data: bytes) -> requests.Response:
        return self.request(
            "PUT",
            f"sessions/{session_id}/files",
            params={"path": rel, "offset": str(offset)},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def commit(self, session_id: str) -> dict[str, Any]:
        return self.answer(self.request("POST", f"sessions/{session_id}/commit"), "commit")


def _hash_tree(src: Path, summary: UploadSummary, progress: bool) -> list[dict[str, Any]]:
    files = []
    entries = list(walk_tree(src))
    for entry in tqdm(entries, desc="hashing", unit="file", disable=None if progress else True):
        if entry.reason:
            summary.files[entry.rel] = ("not sent", entry.reason)
            continue
        try:
            size, sha = entry.path.stat().st_size, file_sha256(entry.path)
        except OSError as exc:
            summary.files[entry.rel] = ("not sent", f"unreadable: {exc.strerror}")
            continue
        files.append({"path": entry.rel, "size": size, "sha256": sha})
        summary.files[entry.rel] = ("pending", None)
    return files


def _send_file(
    client: UploadClient,
    session_id: str,
    path: Path,
    state: dict[str, Any],
    part_bytes: int,
    bar: tqdm,
) -> dict[str, Any]:
    """Send what the service lacks of one file; returns its last state."""
    rel, size = state["path"], state["size"]
    offset, resent = state["received"], 0
    with open(path, "rb") as fh:
        while True:
            fh.seek(offset)
            data = fh.read(min(part_bytes, size - offset))
            reply = client.send_part(session_id, rel, offset, data)
            if reply.status_code == 409:  # the service is elsewhere (a lost answer): ask
                current = next(f for f in client.session(session_id)["files"] if f["path"] == rel)
                if current["status"] != "pending":
                    return current
                offset = current["received"]
                continue
            if reply.status_code == 422 and resent < 2:  # hash mismatch: the file again
                bar.update(-offset)
                offset, resent = 0, resent + 1
                continue
            body = client.answer(reply, f"{rel} was refused")
            bar.update(len(data))
            offset = body["received"]
            if body["status"] != "pending" or offset >= size:
                return body


def _wait(client: UploadClient, session_id: str, poll: float) -> dict[str, Any]:
    delay = poll
    while True:
        state = client.session(session_id)
        if state["state"] in ("done", "failed", "aborted"):
            return state
        time.sleep(delay)
        delay = min(delay * 1.5, 5.0)


def upload(
    src: Path,
    url: str,
    token: str,
    dataset: str,
    *,
    deid_key_file: Path | None = None,
    part_bytes: int = DEFAULT_PART_BYTES,
    progress: bool = True,
    poll: float = 0.2,
    retries: int = 8,
    parallel: int = 4,
) -> UploadSummary:
    """Upload ``src`` into ``dataset``; see the module docstring. ``parallel``: files sent
    at once (their requests overlap the service's work on the others)."""
    src = Path(src)
    if not src.is_dir():
        raise MbcError(f"source folder not found: {src}")
    if part_bytes < 1:
        raise MbcError("the part size must be at least 1 byte")
    with _deidentified(src, dataset, deid_key_file, progress) as (tree, refused):
        summary = UploadSummary(dataset=dataset)
        summary.files.update({rel: ("not sent", reason) for rel, reason in refused.items()})
        files = _hash_tree(tree, summary, progress)
        if not files:
            return summary
        client = UploadClient(url, token, retries=retries)
        session = client.open_session(dataset, files)
        summary.session = session["id"]
        part_bytes = min(part_bytes, session.get("max_part_bytes") or part_bytes)
        pending = [f for f in session["files"] if f["status"] == "pending"]
        total = sum(f["size"] - f["received"] for f in pending)
        bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc="upload",
            disable=None if progress else True,
        )
        with bar, ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            sends = {
                pool.submit(
                    _send_file, client, session["id"], tree / s["path"], s, part_bytes, bar
                ): s
                for s in pending
            }
            for i, future in enumerate(as_completed(sends), 1):
                state, last = sends[future], future.result()
                bar.set_postfix_str(f"{i}/{len(pending)} files")
                summary.sent_files += 1
                summary.sent_bytes += state["size"] - state["received"]
                if last.get("status") == "quarantined":
                    summary.files[state["path"]] = ("quarantined", last.get("reason"))
        if session["state"] == "open":
            client.commit(session["id"])
        final = _wait(client, session["id"], poll)
        for f in final["files"]:
            status = f["status"]
            summary.files[f["path"]] = (status, f.get("reason"))
        if final["state"] != "done":
            summary.error = (
                f"the session {final['state']}: {final.get('error') or 'no reason given'}"
            )
        return summary


@contextmanager
def _deidentified(
    src: Path, dataset: str, key_file: Path | None, progress: bool
) -> Iterator[tuple[Path, dict[str, str]]]:
    """``src`` itself, or its de-identified copy in a temporary folder (removed afterwards),
    with the files the de-identifier refused (they are not sent)."""
    if key_file is None:
        yield src, {}
        return
    from .deid.keys import DeidKey
    from .deid.tree import deid_tree
    from .manifests import get_manifest

    key = DeidKey.from_file(key_file)
    manifest = get_manifest(dataset)
    with tempfile.TemporaryDirectory(prefix="mbc-upload-deid-") as work:
        out = Path(work) / "out"
        report = deid_tree(src, out, key, progress=progress, manifest=manifest)
        refused = {f.path: f"refused by de-identification: {f.reason}" for f in report.refused}
        yield out, refused
