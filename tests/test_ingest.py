"""End to end: sample data -> edge de-identification -> ingest -> verify, as users run it."""

from __future__ import annotations

import json
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
from conftest import SAMPLE_ARGS, run_mbc

from mbc_lib.ingest.pipeline import ingest
from mbc_lib.sample.identities import phi_strings, sample_identities
from mbc_lib.store import layout
from mbc_lib.store.reader import open_store
from mbc_lib.store.verify import verify_store


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


def test_ingest_is_idempotent(store, deid_out):
    result = ingest(deid_out / "ct-covid", store, "ct-covid", progress=False)
    assert result.cases_published == 0
    assert result.published == 0
    assert result.duplicate + result.quarantined == result.seen
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


def test_kill_9_during_ingest_then_rerun(deid_out, tmp_path):
    store = tmp_path / "store"
    src = deid_out / "ct-covid"
    cmd = [
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
    ]
    for delay in (1.0, 1.6, 2.2, 2.8):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if store.exists():  # whatever is visible as a case is complete and intact
            for finding in verify_store(store):
                assert "staging" in finding or "catalog" in finding, finding
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert verify_store(store) == []
    frame = open_store(store).catalog("ct-covid")
    assert len(frame) == SAMPLE_ARGS["n_ct"]
    assert frame["series_uid"].is_unique


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


def test_quarantine_keeps_unsupported_files(deid_out, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(deid_out / "ct-covid", src)
    (src / "notes.txt").write_text("scanner log")
    store = tmp_path / "store"
    result = ingest(src, store, "ct-covid", progress=False)
    assert result.quarantined == 1
    kept = result.quarantine_dir / "files" / "notes.txt"
    assert kept.read_text() == "scanner log"
    line = json.loads((result.quarantine_dir / "reasons.jsonl").read_text())
    assert line == {"path": "notes.txt", "reason": "unsupported file type", "copied": True}
