"""DICOMweb STOW-RS (PS3.18 10.5): the request body and the standard response.

The body is ``multipart/related; type="application/dicom"``, one instance per part. The answer
is a DICOM JSON data set with ``ReferencedSOPSequence`` (instances kept for ingest) and
``FailedSOPSequence`` (each with its ``FailureReason`` code, and the reason in words in
``ErrorComment``); HTTP 200 when every instance was kept, 202 when some were, 409 when none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.dataset import Dataset

from .dicom_in import Received
from .sessions import UploadError

DICOM_JSON = "application/dicom+json"
_PARAM = re.compile(r';\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]+)')


def content_type_params(value: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` -> (media type, params)."""
    media, _, rest = value.partition(";")
    params = {k.lower(): v.strip('"') for k, v in _PARAM.findall(";" + rest)}
    return media.strip().lower(), params


def check_content_type(value: str) -> bytes:
    """The boundary of a STOW-RS body, or UploadError(415) saying what is wrong."""
    media, params = content_type_params(value or "")
    if media != "multipart/related":
        raise UploadError(415, f"STOW-RS takes multipart/related, not {media or 'nothing'}")
    kind = params.get("type", "application/dicom").lower()
    if kind != "application/dicom":
        raise UploadError(415, f"STOW-RS here takes type=application/dicom, not {kind}")
    boundary = params.get("boundary")
    if not boundary:
        raise UploadError(400, "the multipart/related body names no boundary")
    return boundary.encode("latin-1")


def split_parts(body: bytes, boundary: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: (headers, content) each; UploadError(400) if malformed."""
    delimiter = b"--" + boundary
    pos = body.find(delimiter)
    if pos < 0:
        raise UploadError(400, "the body holds no part (boundary not found)")
    parts = []
    while True:
        pos += len(delimiter)
        if body.startswith(b"--", pos):
            return parts
        if body.startswith(b"\r\n", pos):
            pos += 2
        end = body.find(b"\r\n" + delimiter, pos)
        if end < 0:
            raise UploadError(400, "a part of the body is not closed by its boundary")
        head_end = body.find(b"\r\n\r\n", pos, end)
        if body.startswith(b"\r\n", pos):  # a part without headers
            head, content_start = b"", pos + 2
        elif head_end < 0:
            raise UploadError(400, "a part of the body has no header block")
        else:
            head, content_start = body[pos:head_end], head_end + 4
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, body[content_start:end]))
        pos = end + 2


def response(received: Iterable[Received], retrieve_url: str | None = None) -> tuple[int, dict]:
    """The HTTP status and DICOM JSON body answering a STOW-RS request."""
    ok, failed = [], []
    for r in received:
        item = Dataset()
        item.ReferencedSOPClassUID = r.sop_class or "1.2.840.10008.5.1.4.1.1.7"
        item.ReferencedSOPInstanceUID = r.sop_instance or "0"
        if r.status == 0:
            ok.append(item)
        else:
            item.FailureReason = r.status
            item.add_new(0x00000902, "LO", (r.reason or "")[:64])  # ErrorComment
            failed.append(item)
    ds = Dataset()
    if retrieve_url:
        ds.RetrieveURL = retrieve_url
    if ok:
        ds.ReferencedSOPSequence = ok
    if failed:
        ds.FailedSOPSequence = failed
    status = 200 if not failed else (202 if ok else 409)
    return status, ds.to_json_dict()
