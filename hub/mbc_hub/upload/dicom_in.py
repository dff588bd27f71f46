"""DICOM instances arriving by STOW-RS or C-STORE: checked, gated, kept per study.

Both ways in take an instance the same way: it must be a readable DICOM object with its SOP
Class, SOP Instance and Study Instance UIDs; the PHI gate runs on it before it is kept; one that
identifies a person is refused and not a byte of it is written. What passes gathers per study
(:class:`~mbc_hub.upload.ingest_jobs.PendingStudies`) until the study is ingested.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mbc_lib.sources.dicom import MalformedDicom, read_dicom

from .ingest_jobs import PendingStudies

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

#: DICOM status / failure reason codes (PS3.4 C-STORE, PS3.18 STOW-RS FailureReason)
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NOT_AUTHORIZED = 0x0124
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xA900  # "data set does not match": not of the study the URL names


@dataclass
class Received:
    """What became of one instance: ``status`` 0 when it is kept for ingest."""

    sop_class: str
    sop_instance: str
    study: str
    status: int
    reason: str | None = None


#: ``gate(data, dataset) -> findings``: what in an instance identifies a person.
InstanceGate = Callable[[bytes, str], list[str]]


def receive_instance(
    data: bytes,
    *,
    dataset: str,
    society: str,
    pending: PendingStudies,
    gate: InstanceGate,
    study: str | None = None,
) -> Received:
    """Check, gate and keep one instance (``study``: the study the request names, if any)."""
    try:
        ds = read_dicom(data)
    except MalformedDicom as exc:
        return Received("", "", "", CANNOT_UNDERSTAND, str(exc))
    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_instance = str(ds.get("SOPInstanceUID", "") or "")
    study_uid = str(ds.get("StudyInstanceUID", "") or "")
    got = Received(sop_class, sop_instance, study_uid, SUCCESS)
    for name, uid in (("SOP Class", sop_class), ("SOP Instance", sop_instance)):
        if not _UID.match(uid) or len(uid) > 64:
            got.status, got.reason = CANNOT_UNDERSTAND, f"no valid {name} UID"
            return got
    if not _UID.match(study_uid) or len(study_uid) > 64:
        got.status, got.reason = CANNOT_UNDERSTAND, "no valid Study Instance UID"
        return got
    if study is not None and study_uid != study:
        got.status, got.reason = STUDY_MISMATCH, f"instance of study {study_uid}, not {study}"
        return got
    findings = gate(data, dataset)
    if findings:
        got.status = PROCESSING_FAILURE
        got.reason = f"identifies a person: {findings[0]}; de-identify it (mbc deid) first"
        return got
    pending.write((dataset, society, study_uid), f"{sop_instance}.dcm", data)
    return got
