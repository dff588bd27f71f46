"""The DICOM receiver: a C-STORE SCP (pynetdicom) for society PACS that push.

Only the calling AE titles of ``MbcUpload.dicom_callers`` are accepted; any other is rejected
at association (``require_calling_aet``). Each AE title stands for one society and one dataset.
Each C-STORE is answered with its status (0x0000 when the instance is kept for ingest; 0x0124
"Refused: Not authorized", with the reason in ErrorComment, when the PHI gate finds it
identifies a person; 0xC000 when it is not readable), and
the studies an association sent are ingested as soon as it is released or aborted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from .dicom_in import NOT_AUTHORIZED, PROCESSING_FAILURE, Received, receive_instance
from .ingest_jobs import PendingStudies

log = logging.getLogger("mbc.upload.receiver")


class DicomReceiver:
    """A C-STORE SCP on ``(ip, port)`` feeding :class:`PendingStudies`."""

    def __init__(
        self,
        *,
        ae_title: str,
        ip: str,
        port: int,
        callers: Mapping[str, Mapping[str, str]],
        pending: PendingStudies,
        gate: Callable[[bytes, str], list[str]],
        on_received: Callable[[str, str, Received], None] | None = None,
    ) -> None:
        self.callers = {ae: dict(spec) for ae, spec in callers.items()}
        self.pending = pending
        self.gate = gate
        self.on_received = on_received
        self.address = (ip, port)
        self.ae = AE(ae_title=ae_title)
        self.ae.require_calling_aet = sorted(self.callers)
        transfer_syntaxes = _all_transfer_syntaxes()
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, transfer_syntaxes)
        self.ae.add_supported_context(Verification)
        self.ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
        self._studies: dict[int, set[tuple[str, str, str]]] = {}
        self._lock = threading.Lock()
        self.server: Any = None

    def start(self) -> None:
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]
        self.server = self.ae.start_server(self.address, block=False, evt_handlers=handlers)
        log.info("DICOM receiver %s on %s:%d", self.ae.ae_title, *self.address)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_store(self, event: Any) -> Dataset | int:
        caller = event.assoc.requestor.ae_title.strip()
        spec = self.callers.get(caller)
        if spec is None:  # require_calling_aet rejects them first; never store for them
            return 0x0124
        data = event.encoded_dataset(include_meta=True)
        got = receive_instance(
            data,
            dataset=spec["dataset"],
            society=spec["society"],
            pending=self.pending,
            gate=self.gate,
        )
        if self.on_received is not None:
            self.on_received(caller, spec["society"], got)
        if got.status == 0:
            with self._lock:
                key = (spec["dataset"], spec["society"], got.study)
                self._studies.setdefault(id(event.assoc), set()).add(key)
            return 0x0000
        status = Dataset()
        # the receiver is not authorised to take identified data (STOW-RS says 0x0110)
        status.Status = NOT_AUTHORIZED if got.status == PROCESSING_FAILURE else got.status
        status.ErrorComment = (got.reason or "")[:64]
        return status

    def _on_end(self, event: Any) -> None:
        with self._lock:
            keys = self._studies.pop(id(event.assoc), set())
        for key in keys:
            self.pending.due_now(key)


def _all_transfer_syntaxes() -> list[str]:
    from pydicom.uid import AllTransferSyntaxes

    return [str(uid) for uid in AllTransferSyntaxes]
