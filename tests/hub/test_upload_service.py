"""The ingest service under a real hub and proxy: tokens and scopes, upload sessions, `mbc
upload` (resumed after kill -9), two societies at once, STOW-RS through dicomweb-client, and
refusals of names, parts and identified files. Everything runs on loopback; nothing is mocked."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest
import requests

from mbc_lib.cli import main as mbc
from mbc_lib.ingest.pipeline import ingest
from mbc_lib.store.verify import verify_store
from mbc_lib.upload import UploadClient, upload

from .conftest import DEMO_USERS
from .conftest import UPLOAD_PART as PART
from .hub_helpers import auth, login, user_token, wait_for
from .upload_helpers import (
    api_url,
    array_bytes,
    case_count,
    ct_files,
    kill_service,
    lock_waiters,
    restudy,
    service_pids,
    society_token,
    tree_files,
    wait_for_audit,
    wait_for_cases,
)

pytestmark = pytest.mark.slow


def declare(root: Path, paths: list[Path]) -> list[dict]:
    return [
        {
            "path": p.relative_to(root).as_posix(),
            "size": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in paths
    ]


def test_tokens_without_the_upload_scope_are_refused(upload_hub):
    url = f"{api_url(upload_hub)}/datasets/ct-covid/sessions"
    body = {"files": [{"path": "a.dcm", "size": 1, "sha256": "0" * 64}]}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    assert requests.post(url, json=body, headers=auth("not-a-token"), timeout=10).status_code == 401
    session, _ = login(upload_hub.url, "carol", DEMO_USERS["carol"]["password"])
    researcher = user_token(session, upload_hub.url, "carol")  # an admin researcher, even
    assert requests.post(url, json=body, headers=auth(researcher), timeout=10).status_code == 403
    eye = society_token(upload_hub, "eye-society")
    reply = requests.post(url, json=body, headers=auth(eye), timeout=10)
    assert reply.status_code == 403
    assert "custom:mbc:upload:ct-covid" in reply.json()["error"]
    stow = f"{upload_hub.url}/services/mbc-upload/dicomweb/ct-covid/studies"
    assert requests.post(stow, data=b"", headers=auth(eye), timeout=10).status_code == 403
    refusals = wait_for_audit(
        upload_hub, lambda e: e["event"] == "refusal" and e.get("user") == "eye-society"
    )
    assert refusals["dataset"] == "ct-covid"


@pytest.mark.parametrize(
    "bad",
    ["../escape.dcm", "a/../../b.dcm", "/etc/passwd", "a\x00b.dcm", "a\x01b.dcm", "a/./b", "a//b"],
)
def test_file_names_that_could_escape_are_refused(upload_hub, bad):
    client = UploadClient(upload_hub.url, society_token(upload_hub, "radiology-society"))
    reply = client.request(
        "POST",
        "datasets/ct-covid/sessions",
        json={"files": [{"path": bad, "size": 1, "sha256": "0" * 64}]},
    )
    assert reply.status_code == 400, reply.text
    assert "file path" in reply.json()["error"]


def test_oversized_and_corrupted_parts_are_refused_and_can_be_sent_again(upload_hub, trees):
    root = trees["deid0"]
    slice_file = ct_files(root)[0]
    data = slice_file.read_bytes()
    client = UploadClient(upload_hub.url, society_token(upload_hub, "radiology-society"))
    session = client.open_session("ct-covid", declare(root, [slice_file]))
    rel = session["files"][0]["path"]
    too_big = client.send_part(session["id"], rel, 0, b"\0" * (PART + 1))
    assert too_big.status_code == 413 and "at most" in too_big.json()["error"]
    corrupted = bytearray(data)
    corrupted[-1] ^= 0xFF
    for start in range(0, len(data), PART):
        reply = client.send_part(session["id"], rel, start, bytes(corrupted[start : start + PART]))
    assert reply.status_code == 422, reply.text
    assert "sha256" in reply.json()["error"]
    again = client.session(session["id"])["files"][0]
    assert again["received"] == 0 and again["status"] == "pending"
    for start in range(0, len(data), PART):
        reply = client.send_part(session["id"], rel, start, data[start : start + PART])
    assert reply.json()["status"] == "complete"
    wrong_offset = client.send_part(session["id"], rel, 5, b"x")
    assert wrong_offset.status_code == 409
    client.request("DELETE", f"sessions/{session['id']}")


def test_identified_files_are_refused_and_never_kept(upload_hub, trees, upload_store):
    src = trees["input0"] / "ct-covid"
    files = [p for p in tree_files(src) if p.suffix == ".dcm"][:3]
    client = UploadClient(upload_hub.url, society_token(upload_hub, "radiology-society"))
    session = client.open_session("ct-covid", declare(src, files))
    for state, path in zip(session["files"], files, strict=True):
        data = path.read_bytes()
        for start in range(0, len(data), PART):
            reply = client.send_part(
                session["id"], state["path"], start, data[start : start + PART]
            )
        body = reply.json()
        assert body["status"] == "quarantined", body
        assert body["reason"].startswith("identifies a person")
    client.commit(session["id"])
    done = wait_for(
        lambda: client.session(session["id"])["state"] == "done", 30, "the session to end"
    )
    assert done
    assert {f["status"] for f in client.session(session["id"])["files"]} == {"quarantined"}
    identified = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    kept = [
        p
        for place in (upload_hub.data_dir, upload_store.parent)
        if place.exists()
        for p in tree_files(place)
        if p.stat().st_size in {f.stat().st_size for f in files}
        and hashlib.sha256(p.read_bytes()).hexdigest() in identified
        and not str(p).startswith(str(trees["input0"].parent))
    ]
    assert kept == [], f"identified bytes kept on the cloud side: {kept}"


def test_mbc_upload_publishes_then_a_rerun_sends_nothing(upload_hub, trees, upload_store, capsys):
    token_file = upload_hub.workdir / "eye.token"
    token_file.write_text(society_token(upload_hub, "eye-society"))
    args = [
        "upload",
        str(trees["deid0"] / "fundus-glaucoma"),
        "--url",
        upload_hub.url,
        "--token-file",
        str(token_file),
        "--dataset",
        "fundus-glaucoma",
        "-q",
    ]
    assert mbc(args) == 0
    first = capsys.readouterr().out
    n = len(list(tree_files(trees["deid0"] / "fundus-glaucoma")))
    assert f"{n} files: {n} sent" in first, first
    assert f"{n} published, 0 duplicate, 0 quarantined" in first, first
    wait_for_cases(upload_store, "fundus-glaucoma", 6)
    assert mbc(args) == 0
    second = capsys.readouterr().out
    assert "0 sent" in second, second
    assert "already there" in second
    assert verify_store(upload_store) == []
    commit = wait_for_audit(
        upload_hub,
        lambda e: (
            e["event"] == "ingest"
            and e.get("user") == "eye-society"
            and e.get("cases_published") == 6
        ),
    )
    assert commit["dataset"] == "fundus-glaucoma"


def test_killed_service_resumes_and_the_store_is_what_one_run_gives(
    upload_hub, trees, upload_store, tmp_path
):
    src = trees["deid0"] / "ct-covid"
    token = society_token(upload_hub, "radiology-society")
    client = UploadClient(upload_hub.url, token)
    files = list(tree_files(src))
    session = client.open_session("ct-covid", declare(src, files))
    half = session["files"][: len(files) // 2]
    for state in half:
        data = (src / state["path"]).read_bytes()
        client.send_part(session["id"], state["path"], 0, data[:PART])
    killed = kill_service(upload_hub)
    token_file = tmp_path / "rad.token"
    token_file.write_text(token)
    code = mbc(
        ["upload", str(src), "--url", upload_hub.url, "--token-file", str(token_file)]
        + ["--dataset", "ct-covid", "-q"]
    )
    assert code == 0
    assert service_pids(upload_hub) and killed not in service_pids(upload_hub)
    resumed = client.session(session["id"])
    assert resumed["state"] == "done", resumed
    assert {f["status"] for f in resumed["files"]} <= {"published", "duplicate"}
    reference = tmp_path / "reference" / "store"
    ingest(src, reference, "ct-covid", progress=False)
    expected = array_bytes(reference, "ct-covid")
    got = array_bytes(upload_store, "ct-covid")  # other tests' cases too: compare these
    assert {k: got.get(k) for k in expected} == expected
    assert verify_store(upload_store) == []


def test_two_societies_upload_into_one_dataset_at_once(upload_hub, trees, upload_store):
    src = trees["deid1"] / "ct-covid"
    before = case_count(upload_store, "ct-covid")
    results = {}

    def send(society: str) -> None:
        results[society] = upload(
            src, upload_hub.url, society_token(upload_hub, society), "ct-covid", progress=False
        )

    threads = [
        threading.Thread(target=send, args=(s,)) for s in ("radiology-society", "second-radiology")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    n = len(list(tree_files(src)))
    for society, summary in results.items():
        assert summary.accounted, (society, summary.lines())
        assert len(summary.files) == n
    outcomes = [o for s in results.values() for o, _ in s.files.values()]
    assert outcomes.count("quarantined") == 0
    catalog_ids = wait_for_cases(upload_store, "ct-covid", before + 2)
    # the two series of the tree, each published once, whoever came first
    assert len(catalog_ids) == len(set(catalog_ids)) == before + 2
    assert verify_store(upload_store) == []


def test_stow_rs_from_dicomweb_client(upload_hub, trees, upload_store):
    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread

    base = f"{upload_hub.url}/services/mbc-upload/dicomweb/ct-covid"
    client = DICOMwebClient(
        url=base,
        headers={"Authorization": f"token {society_token(upload_hub, 'radiology-society')}"},
    )
    identified = [dcmread(p) for p in ct_files(trees["input1"])[:2]]
    with pytest.raises(requests.HTTPError) as refused:
        client.store_instances(identified)
    assert refused.value.response.status_code == 409
    body = refused.value.response.json()
    failed = body["00081198"]["Value"]
    assert len(failed) == 2 and failed[0]["00081197"]["Value"] == [0x0110]
    # de-identified: every instance referenced, and the study reaches the catalog
    before = case_count(upload_store, "ct-covid")
    series = sorted({p.parent for p in ct_files(trees["deid1"])})[0]
    instances = restudy(sorted(series.glob("*.dcm")), "stow", trees["key"])
    answer = client.store_instances(instances)
    assert len(answer.ReferencedSOPSequence) == len(instances)
    assert "FailedSOPSequence" not in answer
    wait_for_cases(upload_store, "ct-covid", before + 1)
    event = wait_for_audit(upload_hub, lambda e: e.get("action") == "stow" and e["refused"] == 0)
    assert event["instances"] == len(instances)
    assert json.dumps(event).find("token") == -1


def test_a_researchers_kernel_cannot_upload_with_its_own_token(upload_hub):
    from .hub_helpers import run_in_kernel, start_server, stop_server

    session, _ = login(upload_hub.url, "alice", DEMO_USERS["alice"]["password"])
    token = user_token(session, upload_hub.url, "alice")
    start_server(upload_hub.url, "alice", token)
    try:
        code = (
            "import os, requests\n"
            f"url = '{api_url(upload_hub)}/datasets/fundus-glaucoma/sessions'\n"
            "h = {'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']}\n"
            "body = {'files': [{'path': 'a.png', 'size': 1, 'sha256': '0' * 64}]}\n"
            "print(requests.post(url, json=body, headers=h, timeout=10).status_code)\n"
        )
        assert run_in_kernel(upload_hub.url, "alice", token, code).strip() == "403"
    finally:
        stop_server(upload_hub.url, "alice", token)
    shutil.rmtree(upload_hub.data_dir / "homes" / "alice", ignore_errors=True)


def test_an_upload_waits_for_an_ingest_holding_the_store(upload_hub, trees, upload_store):
    """An admin's `mbc ingest` holds the store's lock: the service's ingest waits for it (the
    session stays ingesting, never fails), then runs."""
    from mbc_lib.manifests import get_manifest
    from mbc_lib.store.layout import LOCK_FILE
    from mbc_lib.store.writer import StoreWriter

    src = trees["deid1"] / "fundus-glaucoma"
    client = UploadClient(upload_hub.url, society_token(upload_hub, "eye-society"))
    session = client.open_session("fundus-glaucoma", declare(src, list(tree_files(src))))
    for state in session["files"]:
        if state["status"] == "pending":
            data = (src / state["path"]).read_bytes()
            for start in range(0, len(data), PART):
                client.send_part(session["id"], state["path"], start, data[start : start + PART])
    with StoreWriter(upload_store, get_manifest("fundus-glaucoma")):
        client.commit(session["id"])
        wait_for(lambda: client.session(session["id"])["state"] == "ingesting", 30, "the ingest")
        # the service's ingest is blocked on the store's lock (the kernel lists it waiting),
        # not failed: an ingest that did not wait would have ended instead
        wait_for(lambda: lock_waiters(upload_store / LOCK_FILE), 30, "an ingest waiting")
        assert client.session(session["id"])["state"] == "ingesting"
    done = wait_for(
        lambda: (s := client.session(session["id"]))["state"] in ("done", "failed") and s,
        60,
        "the ingest after the lock",
    )
    assert done["state"] == "done", done
    assert {f["status"] for f in done["files"]} <= {"published", "duplicate", "already"}


def test_mbc_upload_with_a_key_deidentifies_at_the_society_first(
    upload_hub, trees, tmp_path, capsys
):
    token_file = tmp_path / "eye.token"
    token_file.write_text(society_token(upload_hub, "eye-society"))
    args = ["upload", str(trees["input1"] / "fundus-glaucoma"), "--url", upload_hub.url]
    args += ["--token-file", str(token_file), "--dataset", "fundus-glaucoma", "-q"]
    assert mbc(args) == 0  # every file accounted for: refused on arrival, never kept
    refused = capsys.readouterr().out
    assert "quarantined: identifies a person" in refused, refused
    assert mbc([*args, "--deid-key-file", str(trees["key"])]) == 0
    out = capsys.readouterr().out
    assert " 0 quarantined, 0 not sent" in out, out


def test_session_limits_are_refused_in_one_line(upload_hub):
    url = f"{api_url(upload_hub)}/datasets/ct-covid/sessions"
    headers = auth(society_token(upload_hub, "second-radiology"))

    def files(n: int, tag: str, size: int = 1) -> dict:
        return {
            "files": [
                {"path": f"{tag}/{i}.dcm", "size": size, "sha256": "0" * 64} for i in range(n)
            ]
        }

    too_many = requests.post(url, json=files(401, "many"), headers=headers, timeout=30)
    assert too_many.status_code == 413 and "at most 400" in too_many.json()["error"]
    too_big = requests.post(url, json=files(1, "big", 2**40), headers=headers, timeout=30)
    assert too_big.status_code == 413, too_big.text
    opened = [
        requests.post(url, json=files(1, f"s{i}"), headers=headers, timeout=30) for i in range(4)
    ]
    assert [r.status_code for r in opened] == [201, 201, 201, 429], [r.text for r in opened]
    assert "open upload sessions" in opened[3].json()["error"]
    for reply in opened[:3]:
        gone = requests.delete(
            f"{api_url(upload_hub)}/sessions/{reply.json()['id']}", headers=headers, timeout=30
        )
        assert gone.status_code == 200
