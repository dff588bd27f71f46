"""The DICOM receiver and STOW-RS against clients no one here wrote: dcmtk's storescu, and
Orthanc as a society PACS forwarding a study by C-STORE and by DICOMweb STOW-RS."""

from __future__ import annotations

import subprocess

import pytest

from .hub_helpers import wait_for
from .orthanc_helpers import OrthancProcess, tool
from .upload_helpers import (
    case_count,
    ct_files,
    restudy,
    society_token,
    wait_for_audit,
    wait_for_cases,
    write_instances,
)

pytestmark = pytest.mark.slow


def series_of(tree, index: int = 0):
    return sorted({p.parent for p in ct_files(tree)})[index]


def storescu(port: int, calling: str, files, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("storescu"), "-v", "-aet", calling, "-aec", "MBC-INGEST", *extra]
        + ["127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_storescu_pushes_a_study_that_reaches_the_catalog(
    upload_hub, upload_store, trees, tmp_path
):
    before = case_count(upload_store, "ct-covid")
    files = write_instances(
        restudy(sorted(series_of(trees["deid0"]).glob("*.dcm")), "storescu", trees["key"]),
        tmp_path / "s",
    )
    done = storescu(upload_hub.dicom_port, "SOCPACS", files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Received Store Response (Success)" in done.stdout + done.stderr
    wait_for_cases(upload_store, "ct-covid", before + 1)
    wait_for_audit(
        upload_hub,
        lambda e: (
            e["event"] == "ingest"
            and e.get("user") == "radiology-society"
            and e.get("study")
            and e.get("cases_published") == 1
        ),
    )


def test_an_unknown_calling_ae_title_is_rejected_at_association(upload_hub, trees):
    files = ct_files(trees["deid0"])[:1]
    done = storescu(upload_hub.dicom_port, "STRANGER", files)
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Association Rejected" in out, out
    assert "Calling AE Title Not Recognized" in out, out


def test_an_identified_instance_is_answered_with_a_failure_status(upload_hub, trees):
    files = ct_files(trees["input0"])[:1]
    done = storescu(upload_hub.dicom_port, "SOCPACS", files)
    out = done.stdout + done.stderr
    # 0x0124 "Refused: Not authorized" (PS3.7 C.5), which dcmtk prints by its code
    assert "Received Store Response (Unknown Status: 0x124)" in out, out
    event = wait_for_audit(
        upload_hub, lambda e: e["event"] == "refusal" and e.get("action") == "c-store"
    )
    assert event["reason"].startswith("identifies a person")


def test_orthanc_forwards_a_study_by_c_store_and_by_stow_rs(
    upload_hub, upload_store, trees, tmp_path
):
    token = society_token(upload_hub, "radiology-society")
    pacs = OrthancProcess(
        tmp_path / "orthanc",
        aet="SOCPACS",
        modalities={"mbc": ["MBC-INGEST", "127.0.0.1", upload_hub.dicom_port]},
        dicomweb_servers={
            "mbc": {
                "Url": f"{upload_hub.url}/services/mbc-upload/dicomweb/ct-covid/",
                "HttpHeaders": {"Authorization": f"token {token}"},
            }
        },
    ).start()
    try:
        before = case_count(upload_store, "ct-covid")
        by_cstore = write_instances(
            restudy(
                sorted(series_of(trees["deid1"], 0).glob("*.dcm")), "orthanc-c-store", trees["key"]
            ),
            tmp_path / "a",
        )
        by_stow = write_instances(
            restudy(
                sorted(series_of(trees["deid1"], 1).glob("*.dcm")), "orthanc-stow", trees["key"]
            ),
            tmp_path / "b",
        )
        study_a, study_b = pacs.add(by_cstore), pacs.add(by_stow)
        sent = pacs.rest(
            "POST", "/modalities/mbc/store", json={"Resources": [study_a], "Synchronous": True}
        )
        assert sent["FailedInstancesCount"] == 0, sent
        assert sent["InstancesCount"] == len(by_cstore)
        wait_for_cases(upload_store, "ct-covid", before + 1)
        stow = pacs.rest("POST", "/dicom-web/servers/mbc/stow", json={"Resources": [study_b]})
        assert stow is None or "Failed" not in str(stow)
        wait_for_cases(upload_store, "ct-covid", before + 2)
        event = wait_for(
            lambda: wait_for_audit(
                upload_hub,
                lambda e: e.get("action") == "stow" and e.get("instances") == len(by_stow),
            ),
            30,
            "the STOW-RS audit event",
        )
        assert event["refused"] == 0
    finally:
        pacs.stop()
