"""The ingest service's request checks, without a hub: names, multipart bodies, STOW answers."""

from __future__ import annotations

import pytest
from mbc_hub.upload.dicom_in import Received
from mbc_hub.upload.sessions import UploadError, safe_path
from mbc_hub.upload.settings import may_upload
from mbc_hub.upload.stow import check_content_type, response, split_parts


@pytest.mark.parametrize("good", ["a.dcm", "SE0001/IM0001.dcm", "ümlaut/ß.png", "a b/c.dcm"])
def test_relative_paths_are_taken(good):
    assert safe_path(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "/abs",
        "C:/x",
        "a\\b",
        "a/../b",
        "..",
        "./a",
        "a//b",
        "a/",
        "a\x00",
        "a\x1fb",
        "a\u202eb",
    ],
)
def test_escaping_or_odd_paths_are_refused_with_400(bad):
    with pytest.raises(UploadError) as refused:
        safe_path(bad)
    assert refused.value.status == 400 and "\n" not in refused.value.message


def test_a_multipart_body_splits_into_its_parts():
    body = (
        b"preamble\r\n--xyz\r\nContent-Type: application/dicom\r\n\r\nONE\r\n"
        b"--xyz\r\nContent-Type: application/dicom\r\n\r\nTWO\r\n--xyz--\r\n"
    )
    parts = split_parts(body, b"xyz")
    assert [c for _, c in parts] == [b"ONE", b"TWO"]
    assert parts[0][0]["content-type"] == "application/dicom"


@pytest.mark.parametrize("body", [b"no boundary here", b"--xyz\r\nA: b\r\n\r\nunclosed"])
def test_a_malformed_multipart_body_is_a_400(body):
    with pytest.raises(UploadError) as refused:
        split_parts(body, b"xyz")
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("application/dicom", 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 400),
    ],
)
def test_stow_content_types(value, status):
    with pytest.raises(UploadError) as refused:
        check_content_type(value)
    assert refused.value.status == status
    assert check_content_type('multipart/related; type="application/dicom"; boundary=ab') == b"ab"


def test_stow_answers_200_202_409_with_failure_reasons():
    ok = Received("1.2.840.10008.5.1.4.1.1.2", "2.25.1", "2.25.9", 0)
    bad = Received("1.2.840.10008.5.1.4.1.1.2", "2.25.2", "2.25.9", 0x0110, "identifies a person")
    assert response([ok])[0] == 200
    status, body = response([ok, bad])
    assert status == 202
    (failed,) = body["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0x0110]
    assert failed["00081155"]["Value"] == ["2.25.2"]
    assert failed["00000902"]["Value"] == ["identifies a person"]
    assert response([bad])[0] == 409


def test_upload_scopes_are_per_dataset_under_one_parent():
    assert may_upload(["custom:mbc:upload:ct-covid"], "ct-covid")
    assert not may_upload(["custom:mbc:upload:ct-covid"], "fundus-glaucoma")
    assert may_upload(["custom:mbc:upload"], "fundus-glaucoma")
    assert not may_upload(["self", "access:servers!user=alice"], "ct-covid")
