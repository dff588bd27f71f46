"""The ingest service's HTTP API (tornado), behind the hub's proxy at ``/services/mbc-upload/``.

Every request but ``api/health`` carries a hub API token (``Authorization: token ...``) that
the service checks with the hub (:class:`jupyterhub.services.auth.HubAuth`); the token must hold
``custom:mbc:upload:<dataset>`` for the dataset it writes to. No token: 401; any other token:
403. Routes, under the prefix:

- ``POST api/datasets/<dataset>/sessions`` ``{files: [{path, size, sha256}]}``: an upload
  session (the open one with the same files if there is one: a re-run resumes it)
- ``GET api/sessions/<id>``: where it stands, file by file
- ``PUT api/sessions/<id>/files?path=P&offset=N``: a part of a file (body: its bytes)
- ``POST api/sessions/<id>/commit``: ingest it (queued); poll ``GET`` until ``done``
- ``DELETE api/sessions/<id>``: give it up
- ``POST dicomweb/<dataset>/studies[/<study>]``: DICOMweb STOW-RS
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubAuth
from tornado import httputil, web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback

from mbc_lib.deid.report import REPORT_JSON, REPORT_TEXT
from mbc_lib.errors import MbcError
from mbc_lib.ingest.pipeline import IngestResult, gate_data, gate_file
from mbc_lib.manifests import get_manifest

from ..audit import AuditLog
from .dicom_in import Received, receive_instance
from .ingest_jobs import IngestQueue, IngestTarget, PendingStudies, StudyKey
from .receiver import DicomReceiver
from .sessions import (
    ABORTED,
    DONE,
    FAILED,
    INGESTING,
    OPEN,
    QUEUED,
    IngestedIndex,
    Limits,
    Session,
    SessionStore,
    UploadError,
)
from .settings import MbcUpload, may_upload
from .stow import DICOM_JSON, check_content_type, response, split_parts

log = logging.getLogger("mbc.upload")


class UploadService:
    """Sessions, pending DICOM studies, the ingest queue and the audit log of one service."""

    def __init__(
        self,
        settings: MbcUpload,
        target: IngestTarget,
        audit: AuditLog,
        hub_auth: HubAuth | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.audit = audit
        self._manifests: dict[str, Any] = {}  # before the sessions: their restart gates files
        self.hub_auth = hub_auth or HubAuth(cache_max_age=30)
        spool = Path(settings.spool_dir)
        spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        spool.chmod(0o700)
        self.index = IngestedIndex(spool / "index")
        limits = Limits(
            settings.max_part_bytes,
            settings.max_files_per_session,
            settings.max_session_bytes,
            settings.max_sessions_per_society,
        )
        self.sessions = SessionStore(
            spool / "sessions", limits, self.gate_received, self.index, self.metadata_names
        )
        self.queue = IngestQueue()
        self.pending = PendingStudies(
            spool / "dicom", settings.stow_settle_seconds, self._queue_batch
        )
        self.receiver: DicomReceiver | None = None

    # -- the gate --------------------------------------------------------------------------
    def manifest(self, dataset: str) -> Any:
        if dataset not in self._manifests:
            try:
                self._manifests[dataset] = get_manifest(dataset, self.target.manifest_dir)
            except MbcError as exc:
                raise UploadError(404, str(exc)) from None
        return self._manifests[dataset]

    def metadata_names(self, dataset: str) -> set[str]:
        """Names of the files of ``dataset`` that make no case of their own."""
        label_file = self.manifest(dataset).label_file
        names = {"dataset.json", REPORT_JSON, REPORT_TEXT}
        return names | ({Path(label_file).name} if label_file else set())

    def gate_received(self, path: Path, rel: str, dataset: str, data: bytes | None) -> list[str]:
        """The PHI gate on a file of a session (its bytes, when they are at hand)."""
        if data is not None:
            return gate_data(data, rel, self.manifest(dataset))
        return gate_file(path, rel, self.manifest(dataset))

    def gate_instance(self, data: bytes, dataset: str) -> list[str]:
        """The PHI gate on a DICOM instance received by STOW-RS or C-STORE."""
        return gate_data(data, "instance.dcm", self.manifest(dataset))

    # -- start and stop --------------------------------------------------------------------
    def start(self) -> None:
        """Take up what a stopped service left: queued sessions and DICOM batches."""
        root = self.target.store
        where = root if root.exists() else root.parent
        if where.exists() and not os.access(where, os.W_OK):
            log.error(
                "the store %s is not writable here: every ingest will fail (run the service "
                "where the store is mounted read-write, MbcUpload.managed: false)",
                root,
            )
        for session in list(self.sessions.sessions.values()):
            if session.state in (QUEUED, INGESTING):
                self.queue.submit(self._ingest_session, session)
        for key, batch in self.pending.leftover_batches():
            self._queue_batch(key, batch)
        if self.settings.dicom_port:
            self.receiver = DicomReceiver(
                ae_title=self.settings.dicom_ae_title,
                ip=self.settings.dicom_ip,
                port=self.settings.dicom_port,
                callers=self.settings.dicom_callers,
                pending=self.pending,
                gate=self.gate_instance,
                on_received=self._on_cstore,
            )
            self.receiver.start()

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        self.queue.shutdown()

    # -- ingest jobs (on the queue's thread) ------------------------------------------------
    def commit(self, session: Session, who: str) -> None:
        missing = self.sessions.missing(session)
        if missing:
            raise UploadError(
                409, f"{len(missing)} files have not fully arrived, e.g. {missing[0]}"
            )
        self.sessions.set_state(session, QUEUED)
        self.audit.record(
            "upload", who, action="commit", session=session.id, dataset=session.dataset
        )
        self.queue.submit(self._ingest_session, session)

    def _ingest_session(self, session: Session) -> None:
        self.sessions.set_state(session, INGESTING)
        tree = self.sessions.tree(session)
        sent = {rel: f for rel, f in session.files.items() if f.status == "complete"}
        try:
            result = self.target.run(tree, session.dataset) if sent else None
        except MbcError as exc:
            self.sessions.set_state(session, FAILED, str(exc))
            self.audit.record(
                "ingest",
                session.society,
                session=session.id,
                dataset=session.dataset,
                failed=str(exc),
            )
            return
        if result is not None:
            for rel, f in sent.items():
                outcome, reason = result.outcomes.get(rel, ("quarantined", "not seen by ingest"))
                f.status, f.reason = outcome, reason
            self.index.add(
                session.dataset,
                [f.sha256 for f in sent.values() if f.status in ("published", "duplicate")],
            )
        shutil.rmtree(tree, ignore_errors=True)
        self.sessions.set_state(session, DONE)
        self._audit_result(session.society, session.dataset, result, session=session.id)

    def _queue_batch(self, key: StudyKey, batch: Path) -> None:
        self.queue.submit(self._ingest_batch, key, batch)

    def _ingest_batch(self, key: StudyKey, batch: Path) -> None:
        dataset, society, study = key
        try:
            result = self.target.run(batch / "tree", dataset)
        except MbcError as exc:
            self.audit.record("ingest", society, dataset=dataset, study=study, failed=str(exc))
            log.error("ingest of study %s failed: %s", study, exc)
            return  # the batch stays: a restart ingests it again
        shutil.rmtree(batch, ignore_errors=True)
        self._audit_result(society, dataset, result, study=study)

    def _audit_result(
        self, society: str, dataset: str, result: IngestResult | None, **where: Any
    ) -> None:
        counts = {"published": 0, "duplicate": 0, "quarantined": 0, "cases_published": 0}
        if result is not None:
            counts = {
                "published": result.published,
                "duplicate": result.duplicate,
                "quarantined": result.quarantined,
                "cases_published": result.cases_published,
            }
        self.audit.record("ingest", society, dataset=dataset, **where, **counts)

    def _on_cstore(self, caller: str, society: str, got: Received) -> None:
        if got.status:
            self.audit.record(
                "refusal",
                society,
                action="c-store",
                caller=caller,
                instance=got.sop_instance,
                reason=got.reason,
            )

    # -- the web application ---------------------------------------------------------------
    def application(self, prefix: str) -> web.Application:
        p = prefix.rstrip("/")
        opts = {"service": self}
        routes = [
            (rf"{p}/?", HealthHandler, opts),  # the hub looks here when it starts
            (rf"{p}/api/health", HealthHandler, opts),
            (rf"{p}/api/datasets/([^/]+)/sessions", SessionsHandler, opts),
            (rf"{p}/api/sessions/([0-9a-f]+)", SessionHandler, opts),
            (rf"{p}/api/sessions/([0-9a-f]+)/files", PartHandler, opts),
            (rf"{p}/api/sessions/([0-9a-f]+)/commit", CommitHandler, opts),
            (rf"{p}/dicomweb/([^/]+)/studies", StowHandler, opts),
            (rf"{p}/dicomweb/([^/]+)/studies/([0-9.]+)", StowHandler, opts),
        ]
        return web.Application(routes, xsrf_cookies=False)


# -- handlers --------------------------------------------------------------------------------
class BaseHandler(web.RequestHandler):
    """JSON errors; the caller identified by its hub token (401 without one)."""

    def initialize(self, service: UploadService) -> None:
        self.service = service
        self.who: dict[str, Any] = {}

    async def prepare(self) -> None:
        auth = self.service.hub_auth
        token = auth.get_token(self, in_cookie=False)
        model = await auth.user_for_token(token, sync=False) if token else None
        if not model:
            self.set_header("WWW-Authenticate", 'token realm="mbc-upload"')
            self.service.audit.record(
                "refusal", None, action="upload", reason="no valid token", path=self.request.path
            )
            raise UploadError(401, "a hub API token is required (Authorization: token ...)")
        self.who = model

    @property
    def account(self) -> str:
        return str(self.who.get("name"))

    def require(self, dataset: str) -> None:
        """403 unless the token may fill ``dataset``."""
        if not may_upload(self.who.get("scopes", []), dataset):
            self.service.audit.record(
                "refusal",
                self.account,
                action="upload",
                dataset=dataset,
                reason="token lacks the upload scope",
                kind=self.who.get("kind"),
            )
            raise UploadError(
                403, f"this token may not upload into {dataset} (needs custom:mbc:upload:{dataset})"
            )

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, UploadError):
            message = exc.message
        else:
            message = httputil.responses.get(status_code, "error")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message, "status": status_code}))


class _BoundedBody:
    """A streamed request body kept up to ``limit`` bytes; what is past it is counted and
    dropped, so the answer (413) still reaches the client over a sane connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= self.limit:
            self.data += chunk

    def take(self, what: str) -> bytes:
        if self.size > self.limit:
            raise UploadError(413, f"{what} holds at most {self.limit} bytes, got {self.size}")
        data, self.data = bytes(self.data), bytearray()
        return data


def _stream_limit(limit: int) -> int:
    """How much of an oversized body is read (and dropped) before the connection is closed."""
    return limit + max(limit, 64 * 1024 * 1024)


class HealthHandler(BaseHandler):
    async def prepare(self) -> None:
        return None

    def get(self) -> None:
        self.send_json({"service": "mbc-upload", "status": "ok", "docs": "docs/upload.md"})


class SessionsHandler(BaseHandler):
    def post(self, dataset: str) -> None:
        self.require(dataset)
        self.service.manifest(dataset)
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise UploadError(
                400, "the body must be JSON: {files: [{path, size, sha256}]}"
            ) from None
        session, created = self.service.sessions.create(
            self.account, dataset, body.get("files") if isinstance(body, dict) else None
        )
        if created:
            self.service.audit.record(
                "upload",
                self.account,
                action="session",
                session=session.id,
                dataset=dataset,
                files=len(session.files),
                already=session.counts().get("already", 0),
            )
        answer = session.to_json() | {"max_part_bytes": self.service.settings.max_part_bytes}
        self.send_json(answer, 201 if created else 200)


class SessionHandler(BaseHandler):
    def _session(self, session_id: str) -> Session:
        session = self.service.sessions.get(session_id, self.account)
        self.require(session.dataset)
        return session

    def get(self, session_id: str) -> None:
        self.send_json(self._session(session_id).to_json())

    def delete(self, session_id: str) -> None:
        session = self._session(session_id)
        if session.state != OPEN:
            raise UploadError(409, f"the session is {session.state}")
        shutil.rmtree(self.service.sessions.tree(session), ignore_errors=True)
        self.service.sessions.set_state(session, ABORTED)
        self.service.audit.record("upload", self.account, action="abort", session=session.id)
        self.send_json(session.to_json())


class StreamedBody:
    """A handler mixin: the body streamed into a :class:`_BoundedBody` as large as the
    ``MbcUpload`` setting ``limit_setting`` allows."""

    limit_setting: str

    async def prepare(self) -> None:
        limit = getattr(self.service.settings, self.limit_setting)
        self._body = _BoundedBody(limit)
        self.request.connection.set_max_body_size(_stream_limit(limit))
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        self._body.add(chunk)


@web.stream_request_body
class PartHandler(StreamedBody, SessionHandler):
    """One part of one file; the body is streamed and refused past ``max_part_bytes``."""

    limit_setting = "max_part_bytes"

    def put(self, session_id: str) -> None:
        session = self._session(session_id)
        path = self.get_query_argument("path", "")
        try:
            offset = int(self.get_query_argument("offset", "0"))
        except ValueError:
            raise UploadError(400, "offset must be a whole number") from None
        try:
            data = self._body.take("a part")
            f = self.service.sessions.put_part(session, path, offset, data)
        except UploadError as exc:
            if exc.status in (400, 413, 422):
                self.service.audit.record(
                    "refusal",
                    self.account,
                    action="part",
                    session=session.id,
                    reason=str(exc)[:200],
                )
            raise
        if f.status == "quarantined":
            self.service.audit.record(
                "refusal",
                self.account,
                action="part",
                session=session.id,
                reason=f.reason,
                file=path,
            )
        self.send_json(
            {"path": path, "received": f.received, "status": f.status, "reason": f.reason}
        )


class CommitHandler(SessionHandler):
    def post(self, session_id: str) -> None:
        session = self._session(session_id)
        if session.state in (QUEUED, INGESTING, DONE):
            self.send_json(session.to_json(), 202)  # committed before: idempotent
            return
        if session.state != OPEN:
            raise UploadError(409, f"the session is {session.state}")
        self.service.commit(session, self.account)
        self.send_json(session.to_json(), 202)


@web.stream_request_body
class StowHandler(StreamedBody, BaseHandler):
    """DICOMweb STOW-RS: instances checked and gated now, ingested once their study settles."""

    limit_setting = "max_stow_bytes"

    async def post(self, dataset: str, study: str | None = None) -> None:
        self.require(dataset)
        self.service.manifest(dataset)
        boundary = check_content_type(self.request.headers.get("Content-Type", ""))
        parts = split_parts(self._body.take("a STOW-RS request"), boundary)
        receive = partial(
            receive_instance,
            dataset=dataset,
            society=self.account,
            pending=self.service.pending,
            gate=self.service.gate_instance,
            study=study,
        )
        loop = asyncio.get_running_loop()
        received = []
        for headers, content in parts:
            kind = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
            if kind != "application/dicom":
                received.append(Received("", "", "", 0xC000, f"part of type {kind}"))
                continue
            received.append(await loop.run_in_executor(None, receive, content))
        refused = [r for r in received if r.status]
        self.service.audit.record(
            "upload",
            self.account,
            action="stow",
            dataset=dataset,
            instances=len(received),
            refused=len(refused),
            reasons=sorted({r.reason for r in refused if r.reason})[:5],
        )
        status, body = response(received)
        self.set_status(status)
        self.set_header("Content-Type", DICOM_JSON)
        self.finish(json.dumps(body))


def serve(service: UploadService, url: str, prefix: str) -> HTTPServer:
    """Listen on ``url`` (the service's own address) and tick the pending DICOM studies."""
    parsed = urlparse(url)
    app = service.application(prefix)
    server = HTTPServer(app, max_body_size=64 * 1024 * 1024, xheaders=True)
    server.listen(parsed.port or 80, parsed.hostname or "127.0.0.1")
    PeriodicCallback(service.pending.tick, 250).start()
    return server
