"""End to end: sample data -> edge de-identification -> ingest -> verify, as users run it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from mbc_lib.ingest.pipeline import ingest
from mbc_lib.sample.identities import phi_strings, sample_identities
from mbc_lib.store import layout
from mbc_lib.store.reader import open_store
from mbc_lib.store.verify import verify_store

from .conftest import SAMPLE_ARGS, run_mbc


def _phi() -> list[bytes]:
    identities = sample_identities(
        SAMPLE_ARGS["seed"], SAMPLE_ARGS["n_fundus"], SAMPLE_ARGS["n_ct"]
    )
    strings = {s for people in identities.values() for p in people for s in phi_strings(p)}
    out = set()
    for s in strings:
        for variant in (s, s.upper(), s.lower(), s.title()):
            out.add(variant.encode())
    return sorted(out)


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def store(deid_out, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store") / "store"
    for folder, dataset in (("fundus-glaucoma", "fundus-glaucoma"), ("ct-covid", "ct-covid")):
        run_mbc(
            "ingest",
            str(deid_out / folder),
            "--store",
            str(root),
            "--dataset",
            dataset,
            "-q",
            check=True,
        )
    return root


def test_cli_ingest_verify_catalog(store):
    proc = run_mbc("verify", str(store))
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    proc = run_mbc("catalog", str(store), "--dataset", "ct-covid")
    assert proc.returncode == 0
    assert f"ct-covid: {SAMPLE_ARGS['n_ct']} cases" in proc.stdout
    frame = pd.read_json(
        __import__("io").StringIO(
            run_mbc(
                "catalog", str(store), "--format", "json", "--dataset", "fundus-glaucoma"
            ).stdout
        )
    )
    assert len(frame) == SAMPLE_ARGS["n_fundus"]
    assert set(frame["glaucoma"]) == {0, 1}


def test_no_phi_in_any_byte_of_the_store(store):
    phi = _phi()
    assert len(phi) > 50
    for path in _all_files(store):
        data = path.read_bytes()
        leaked = [p for p in phi if p in data]
        assert not leaked, f"{path.relative_to(store)} holds {leaked[:3]}"
    for dataset in ("fundus-glaucoma", "ct-covid"):
        text = open_store(store).catalog(dataset).to_csv().encode()
        assert not [p for p in phi if p in text]


def test_patient_level_split_and_catalog(store):
    s = open_store(store)
    for dataset in s.datasets():
        frame = s.catalog(dataset)
        assert frame.groupby("patient")["split"].nunique().max() == 1
        assert frame["patient"].str.match(r"^PSN-[0-9a-f]{16}$").all()
    fundus = s.catalog("fundus-glaucoma")
    assert fundus.groupby("patient").size().max() == 2  # two eyes, one split
    assert {"train", "val"} <= set(fundus["split"])


def test_ct_volume_matches_the_dicom_series(store, deid_out):
    s = open_store(store)
    case_id = s.catalog("ct-covid").case_id.iloc[0]
    attrs = s.case_attrs("ct-covid", case_id)
    series = [pydicom.dcmread(p) for p in (deid_out / "ct-covid").rglob("*.dcm")]
    series = [d for d in series if d.SeriesInstanceUID == attrs["series_uid"]]
    series.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    expected = np.stack(
        [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in series]
    )
    image = s.open_case("ct-covid", case_id)
    np.testing.assert_array_equal(image.values, expected.astype(np.int16))
    assert image.attrs["value_units"] == "HU"
    assert float(image.z[1] - image.z[0]) == pytest.approx(
        abs(float(series[1].ImagePositionPatient[2]) - float(series[0].ImagePositionPatient[2]))
    )
    assert float(image.y[1] - image.y[0]) == pytest.approx(float(series[0].PixelSpacing[0]))
    labels = s.open_labels("ct-covid", case_id)
    assert labels is not None and set(np.unique(labels.values)) <= {0, 1, 2, 3}
    hu = image.values[labels.values == 1]
    assert hu.mean() < -600  # normal lung is dark
    assert attrs["direction"][0] == pytest.approx([0, 0, 1])


def _store_state(store: Path) -> dict[str, str]:
    """Every file of the store (the lock excepted) and its sha256."""
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != layout.LOCK_FILE
    }


def test_ingest_is_idempotent(store, deid_out):
    s = open_store(store)
    catalog = s.catalog("ct-covid")
    before = _store_state(store)
    result = ingest(deid_out / "ct-covid", store, "ct-covid", progress=False)
    n_files = len(_all_files(deid_out / "ct-covid"))
    assert (result.seen, result.duplicate, result.published, result.quarantined) == (
        n_files,
        n_files,
        0,
        0,
    )
    assert (result.cases_published, result.cases_duplicate) == (0, SAMPLE_ARGS["n_ct"])
    pd.testing.assert_frame_equal(open_store(store).catalog("ct-covid"), catalog)
    assert _store_state(store) == before  # not one byte of a case, checksum or catalog moved
    assert verify_store(store) == []


def test_identified_input_is_refused_whole(sample_tree, tmp_path):
    store = tmp_path / "store"
    proc = run_mbc(
        "ingest",
        str(sample_tree / "ct-covid"),
        "--store",
        str(store),
        "--dataset",
        "ct-covid",
        "-q",
    )
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "identifying" in proc.stderr
    assert "Traceback" not in proc.stderr
    cases = layout.cases_path(store, "ct-covid")
    assert not cases.exists() or not any(cases.iterdir())
    quarantine = tmp_path / "store.quarantine" / "ct-covid"
    refusal = next(quarantine.rglob("refused-input.json"))
    assert len(json.loads(refusal.read_text())["files"]) > 10
    assert not list(quarantine.rglob("*.dcm"))  # identified files are not copied anywhere
    phi = _phi()
    assert not [p for p in phi if p in refusal.read_bytes()]


def test_single_site_ingest_with_key_counts_add_up(sample_tree, key_file, tmp_path):
    store = tmp_path / "store"
    result = ingest(
        sample_tree / "dicom-real", store, "dicom-reference", deid_key_file=key_file, progress=False
    )
    n_files = len(_all_files(sample_tree / "dicom-real"))
    assert result.seen == n_files
    assert result.published + result.duplicate + result.quarantined == n_files
    assert result.cases_published > 50
    reasons = [
        json.loads(line)
        for line in (result.quarantine_dir / "reasons.jsonl").read_text().splitlines()
    ]
    assert len(reasons) == result.quarantined
    assert all(r["reason"] for r in reasons)
    assert verify_store(store) == []


def _stopped_at(cmd: list[str], checkpoint: str, **kwargs) -> subprocess.Popen:
    """Start ``cmd`` with ``MBC_STOP_AT=checkpoint``; return it once it has stopped there."""
    env = {**os.environ, "MBC_STOP_AT": checkpoint, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, **kwargs
    )
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"{cmd[3]} ended before checkpoint {checkpoint}"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    _, status = os.waitpid(proc.pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    proc.returncode = -signal.SIGKILL


def _ingest_cmd(src: Path, store: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mbc_lib.cli",
        "ingest",
        str(src),
        "--store",
        str(store),
        "--dataset",
        "ct-covid",
        "-q",
        *extra,
    ]


@pytest.mark.parametrize(
    "checkpoint",
    ["case-staged:1", "case-published:1", "case-staged:2", "catalog-staged:1"],
)
def test_kill_9_during_ingest_then_rerun(deid_out, tmp_path, checkpoint):
    store = tmp_path / "store"
    cmd = _ingest_cmd(deid_out / "ct-covid", store)
    _kill(_stopped_at(cmd, checkpoint))  # killed mid-write, at exactly that point
    staged = list((store / layout.STAGING).iterdir())
    assert bool(staged) == checkpoint.startswith("case-staged")
    for finding in verify_store(store):  # whatever is visible as a case is complete
        assert "staging" in finding or "catalog" in finding, finding
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert verify_store(store) == []
    assert not list((store / layout.STAGING).iterdir())
    frame = open_store(store).catalog("ct-covid")
    assert len(frame) == SAMPLE_ARGS["n_ct"]
    assert frame["series_uid"].is_unique


def _children(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    return pids


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_kill_9_during_single_site_ingest_leaves_no_workers_and_no_trees(
    sample_tree, key_file, tmp_path
):
    store = tmp_path / "store"
    cmd = _ingest_cmd(sample_tree / "ct-covid", store, "--deid-key-file", str(key_file))
    proc = _stopped_at(cmd, "deid-progress:10")
    workers = _children(proc.pid)
    assert len(workers) >= 2  # the de-identification pool is running
    _kill(proc)
    deadline = time.monotonic() + 20
    while not all(_gone(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(w) for w in workers), "pool workers outlived the killed ingest"
    left = list(tmp_path.glob(".mbc-deid-*"))
    assert left, "the killed run's temporary tree should be there until the next run"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob(".mbc-deid-*"))  # the next run removed it, and its own
    assert verify_store(store) == []
    assert len(open_store(store).catalog("ct-covid")) == SAMPLE_ARGS["n_ct"]


def test_bad_input_gives_one_line_errors(tmp_path, deid_out):
    cases = [
        (
            [
                "ingest",
                str(tmp_path / "missing"),
                "--store",
                str(tmp_path / "s"),
                "--dataset",
                "ct-covid",
            ],
            "source folder not found",
        ),
        (
            [
                "ingest",
                str(deid_out / "ct-covid"),
                "--store",
                str(tmp_path / "s"),
                "--dataset",
                "nope",
            ],
            "unknown dataset",
        ),
        (["verify", str(tmp_path)], "not an mbc store"),
        (["catalog", str(tmp_path / "none")], "store not found"),
    ]
    for args, message in cases:
        proc = run_mbc(*args)
        assert proc.returncode != 0
        assert message in proc.stderr
        assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_quarantine_lists_unsupported_files_without_copying_them(deid_out, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(deid_out / "ct-covid", src)
    (src / "notes.txt").write_text("scanner log of Jane Doe")
    store = tmp_path / "store"
    result = ingest(src, store, "ct-covid", progress=False)
    assert result.quarantined == 1
    assert result.published + result.duplicate + result.quarantined == result.seen
    line = json.loads((result.quarantine_dir / "reasons.jsonl").read_text())
    assert line == {"path": "notes.txt", "reason": "unsupported file type", "copied": False}
    # a file the gate cannot read may identify someone: it is listed, never copied
    assert not (result.quarantine_dir / "files" / "notes.txt").exists()
    assert (src / "notes.txt").read_text() == "scanner log of Jane Doe"  # nothing lost
