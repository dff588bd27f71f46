"""``deid_tree`` / ``mbc deid``: a whole source tree, its report, tables, masks and the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.uid import SecondaryCaptureImageStorage

from mbc_lib import phi_gate
from mbc_lib.cli import main
from mbc_lib.deid.keys import PSEUDONYM_RE
from mbc_lib.deid.report import REPORT_JSON, REPORT_TEXT
from mbc_lib.deid.tree import deid_tree
from mbc_lib.errors import MbcError

from .test_deid_dicom import KEY, OTHER_KEY, PATIENT_ID, PHI, UID_ROOT, make_ct
from .test_deid_images import _jpeg_with_metadata

SECOND_PATIENT = "MRN-0002-Toboso"


def _png_with_text() -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Quixote Zebulon")
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def build_source(root: Path) -> Path:
    """A source tree with every kind of file the edge meets, PHI everywhere."""
    src = root / "src"
    ct = src / "ct-covid"
    for i in range(3):
        make_ct(ct / "p1" / f"s{i}.dcm", i, refer_to=f"{UID_ROOT}.1.3.{i}" if i else None)
    for i in range(2):
        make_ct(
            ct / "p2" / f"s{i}.dcm", i, patient_id=SECOND_PATIENT, study="2", study_date="20190101"
        )
    _write_csv(
        ct / "labels.csv",
        [["patient_id", "diagnosis"], [PATIENT_ID, "covid19"], [SECOND_PATIENT, "normal"]],
    )
    (ct / "masks").mkdir()
    np.savez(
        ct / "masks" / "p1.npz",
        labels=np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4),
        sop_instance_uids=np.array([f"{UID_ROOT}.1.3.{i + 1}" for i in range(3)]),
    )
    fundus = src / "fundus-glaucoma"
    fundus.mkdir()
    (fundus / "eye1.jpg").write_bytes(_jpeg_with_metadata())
    (fundus / "eye2.png").write_bytes(_png_with_text())
    _write_csv(
        fundus / "labels.csv",
        [
            ["path", "eye", "glaucoma", "cdr"],
            ["eye1.jpg", "L", "1", "0.7"],
            ["eye2.png", "R", "0", "0.3"],
        ],
    )
    bad = src / "unsafe"
    ds = pydicom.dcmread(make_ct(bad / "sc.dcm", 7))
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.save_as(bad / "sc.dcm", enforce_file_format=True)
    ds = pydicom.dcmread(make_ct(bad / "burned.dcm", 8))
    ds.BurnedInAnnotation = "YES"
    ds.save_as(bad / "burned.dcm", enforce_file_format=True)
    shutil.copy(get_testdata_file("test-SR.dcm"), bad / "report.dcm")
    shutil.copy(get_testdata_file("DICOMDIR"), bad / "DICOMDIR")
    (bad / "notes.txt").write_text("Quixote Zebulon called")
    (bad / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x08\x00" * 30)
    (bad / "not-dicom.bin").write_bytes(b"\x08\x00garbage Quixote")
    # a DICOM data set written without preamble and file meta
    ds = pydicom.dcmread(make_ct(src / "bare.dcm", 9))
    del ds.file_meta
    ds.preamble = None
    ds.save_as(src / "bare.dcm", enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert (src / "bare.dcm").read_bytes()[:2] == b"\x08\x00"
    return src


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    src = build_source(root)
    report = deid_tree(src, root / "out", KEY, progress=False)
    return src, root / "out", report


def _status(report) -> dict[str, tuple[str, str | None]]:
    return {f.path: (f.status, f.reason) for f in report.files}


def test_every_file_deidentified_or_refused_with_reason(run):
    _, out, report = run
    status = _status(report)
    for path in [
        "ct-covid/p1/s0.dcm",
        "ct-covid/p2/s1.dcm",
        "ct-covid/labels.csv",
        "ct-covid/masks/p1.npz",
        "fundus-glaucoma/eye1.jpg",
        "fundus-glaucoma/eye2.png",
        "fundus-glaucoma/labels.csv",
        "bare.dcm",
    ]:
        assert status[path][0] == "deidentified", (path, status[path])
        assert (out / path).is_file()
    expected = {
        "unsafe/sc.dcm": "secondary capture",
        "unsafe/burned.dcm": "burned-in annotation",
        "unsafe/report.dcm": "structured or encapsulated content",
        "unsafe/DICOMDIR": "DICOMDIR",
        "unsafe/notes.txt": "unsupported file type",
        "unsafe/garbage.dcm": ("not readable", "incomplete", "malformed"),
        "unsafe/not-dicom.bin": "unsupported file type",
    }
    for path, reason in expected.items():
        assert status[path][0] == "refused"
        assert status[path][1].startswith(reason), status[path]
        assert not (out / path).exists()
    assert len(report.files) == len(status) == 18
    assert len(report.refused) == len(expected)


def test_no_phi_in_any_output_byte(run):
    _, out, _ = run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {REPORT_JSON, REPORT_TEXT} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        for text in [*PHI, SECOND_PATIENT, "Toboso"]:
            for variant in {text, text.upper(), text.lower(), text.title()}:
                assert variant.encode() not in data, f"{variant!r} in {path}"


def test_report_files(run):
    _, out, report = run
    data = json.loads((out / REPORT_JSON).read_text())
    assert data["totals"]["files"] == 18
    assert data["totals"]["deidentified"] + data["totals"]["refused"] == 18
    assert data["profile"]["table_edition"].startswith("dicomfields_")
    assert [c["value"] for c in data["profile"]["codes"]] == [
        "113100",
        "113107",
        "113108",
        "113105",
    ]
    entry = next(f for f in data["files"] if f["path"] == "ct-covid/p1/s0.dcm")
    assert entry["kind"] == "dicom" and entry["output"] == "ct-covid/p1/s0.dcm"
    assert entry["actions"]["private_removed"] > 0 and entry["actions"]["uids_remapped"] > 0
    text = (out / REPORT_TEXT).read_text()
    assert "unsafe/burned.dcm: burned-in annotation" in text
    summary = report.summary()
    assert "files seen: 18" in summary and "refused: 7" in summary
    assert "secondary capture" in summary and str(out) in summary


def test_label_table_and_mask_follow_the_dicom(run):
    _, out, _ = run
    first = pydicom.dcmread(out / "ct-covid/p1/s0.dcm")
    second = pydicom.dcmread(out / "ct-covid/p2/s0.dcm")
    rows = list(csv.DictReader((out / "ct-covid/labels.csv").open()))
    assert [r["patient_id"] for r in rows] == [first.PatientID, second.PatientID]
    assert all(PSEUDONYM_RE.match(r["patient_id"]) for r in rows)
    assert [r["diagnosis"] for r in rows] == ["covid19", "normal"]
    with np.load(out / "ct-covid/masks/p1.npz", allow_pickle=False) as mask:
        uids = list(mask["sop_instance_uids"])
        assert mask["labels"].tolist() == np.arange(48).reshape(3, 4, 4).tolist()
    assert uids == [pydicom.dcmread(out / f"ct-covid/p1/s{i}.dcm").SOPInstanceUID for i in range(3)]
    later = pydicom.dcmread(out / "ct-covid/p1/s1.dcm")
    assert later.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    fundus = (out / "fundus-glaucoma/labels.csv").read_text().splitlines()
    assert fundus == ["path,eye,glaucoma,cdr", "eye1.jpg,L,1,0.7", "eye2.png,R,0,0.3"]


def test_preamble_less_dicom_written_as_file_format(run):
    _, out, _ = run
    data = (out / "bare.dcm").read_bytes()
    assert data[128:132] == b"DICM"
    ds = pydicom.dcmread(out / "bare.dcm")
    assert ds.PatientID == KEY.pseudonym(PATIENT_ID)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian


def test_same_key_same_bytes_other_key_unlinkable(run, tmp_path):
    src, out, _ = run
    again = tmp_path / "again"
    deid_tree(src, again, KEY, progress=False)
    for path in out.rglob("*"):
        if path.is_file():
            assert (again / path.relative_to(out)).read_bytes() == path.read_bytes(), path
    other = tmp_path / "other"
    deid_tree(src, other, OTHER_KEY, progress=False)
    a = pydicom.dcmread(out / "ct-covid/p1/s0.dcm")
    b = pydicom.dcmread(other / "ct-covid/p1/s0.dcm")
    assert a.PatientID != b.PatientID
    assert {a.SOPInstanceUID, a.StudyInstanceUID, a.FrameOfReferenceUID}.isdisjoint(
        {b.SOPInstanceUID, b.StudyInstanceUID, b.FrameOfReferenceUID}
    )
    assert a.StudyDate != b.StudyDate
    assert (other / "ct-covid/labels.csv").read_text() != (out / "ct-covid/labels.csv").read_text()


def test_unknown_label_column_and_bad_values_refused(tmp_path):
    src = tmp_path / "src"
    _write_csv(
        src / "ct-covid" / "labels.csv",
        [["patient_id", "diagnosis", "notes"], [PATIENT_ID, "covid19", "Quixote"]],
    )
    _write_csv(
        src / "fundus-glaucoma" / "labels.csv",
        [["path", "eye", "glaucoma", "cdr"], ["a.jpg", "X", "1", "0.5"]],
    )
    (src / "ct-covid" / "masks").mkdir()
    np.savez(
        src / "ct-covid" / "masks" / "m.npz",
        labels=np.zeros(3, np.uint8),
        comment=np.array(["Quixote"]),
    )
    np.savez(src / "ct-covid" / "loose.npz", labels=np.zeros(3, np.uint8))
    report = deid_tree(src, tmp_path / "out", KEY, progress=False)
    status = _status(report)
    assert status["ct-covid/labels.csv"][0] == "refused"
    assert "'notes'" in status["ct-covid/labels.csv"][1]
    reason = status["fundus-glaucoma/labels.csv"][1]
    assert "'eye'" in reason and "'X'" not in reason  # the value itself is never echoed
    assert status["ct-covid/masks/m.npz"][1].startswith("mask refused")
    assert status["ct-covid/loose.npz"][1].startswith("unsupported file type")
    assert not any((tmp_path / "out").rglob("*.csv"))


@pytest.mark.parametrize("case", ["missing", "inside", "not-empty"])
def test_bad_paths_are_one_line_errors(tmp_path, case):
    src = tmp_path / "src"
    src.mkdir()
    out = {"missing": tmp_path / "out", "inside": src / "out", "not-empty": tmp_path / "full"}[case]
    if case == "missing":
        src = tmp_path / "nope"
    if case == "not-empty":
        out.mkdir()
        (out / "x").write_text("x")
    with pytest.raises(MbcError) as err:
        deid_tree(src, out, KEY, progress=False)
    assert "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore::UserWarning")  # odd values in pydicom's own test files
def test_every_real_pydicom_test_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = sorted(p for p in map(Path, get_testdata_files()) if p.is_file())
    for i, path in enumerate(files):
        shutil.copy(path, src / f"{i:03d}_{path.name}")
    report = deid_tree(src, tmp_path / "out", KEY, progress=False)
    done, refused = len(report.deidentified), len(report.refused)
    assert done + refused == len(files) == len(report.files)
    assert done > 100 and refused > 0
    assert all(f.reason and not f.reason.startswith("internal error") for f in report.refused)
    checked = 0
    for entry in report.deidentified:
        if entry.kind != "dicom":
            continue
        out = tmp_path / "out" / entry.output
        ds = pydicom.dcmread(out)
        assert ds.PatientIdentityRemoved == "YES"
        assert not any(elem.tag.is_private for elem in ds.iterall())
        assert phi_gate.check_dicom_file(out) == [], entry.path
        texts = [str(e.value).lower() for e in ds.iterall() if e.VR in _TEXT_VRS and e.value]
        for value in _identity_values(pydicom.dcmread(src / entry.path, force=True)):
            word = re.compile(rf"(?<!\w){re.escape(value.lower())}(?!\w)")
            assert not [t for t in texts if word.search(t)], (entry.path, value)
            checked += 1
    assert checked > 200  # identifying values were there to be removed


#: Text VRs that can hold a name or an identifier.
_TEXT_VRS = ("SH", "LO", "ST", "LT", "UT", "PN", "UC", "AE")
#: Attributes of the source whose values must not survive anywhere in the output.
_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionName",
    "InstitutionAddress",
    "AccessionNumber",
)


def _identity_values(ds: pydicom.Dataset) -> set[str]:
    """Identifying values of a source file long enough to be told apart from ordinary words."""
    values = set()
    for keyword in _IDENTIFYING:
        elem = ds.get(keyword)
        if elem is None or elem == "":
            continue
        for value in elem if isinstance(elem, (list, pydicom.multival.MultiValue)) else [elem]:
            text = str(value).strip()
            if len(text) >= 6 and text.upper() not in ("ANONYMIZED", "ANONYMOUS"):
                values.add(text)
    return values


def _key_file(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def test_cli_deid_prints_summary(tmp_path, capsys):
    src = tmp_path / "src"
    make_ct(src / "ct-covid" / "a.dcm")
    (src / "notes.txt").write_text("x")
    key = _key_file(tmp_path / "key", KEY.secret.hex())
    assert main(["deid", str(src), str(tmp_path / "out"), "--key-file", str(key), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "files seen: 2" in printed and "de-identified: 1" in printed
    assert "1 x unsupported file type" in printed
    strict = ["deid", str(src), str(tmp_path / "out2"), "--key-file", str(key), "-q", "--strict"]
    assert main(strict) == 1


@pytest.mark.parametrize("key_text", [None, "abcd"])
def test_cli_bad_key_is_one_line(tmp_path, key_text):
    src = tmp_path / "src"
    src.mkdir()
    key = tmp_path / "key"
    if key_text is not None:
        _key_file(key, key_text)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mbc_lib.cli",
            "deid",
            str(src),
            str(tmp_path / "out"),
            "--key-file",
            str(key),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "key file" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_label_table_refused_without_manifests(tmp_path, monkeypatch):
    monkeypatch.setenv("MBC_DATASETS_DIR", str(tmp_path / "no-manifests"))
    src = tmp_path / "src"
    _write_csv(src / "ct-covid" / "labels.csv", [["patient_id", "diagnosis"], ["x", "normal"]])
    make_ct(src / "ct-covid" / "a.dcm")
    report = deid_tree(src, tmp_path / "out", KEY, progress=False)
    status = _status(report)
    assert status["ct-covid/a.dcm"][0] == "deidentified"
    assert status["ct-covid/labels.csv"][1].startswith("no dataset manifests")


def test_worker_pool_gives_the_same_output_as_one_process(sample_tree, key, tmp_path):
    one = deid_tree(sample_tree / "ct-covid", tmp_path / "one", key, progress=False, workers=1)
    two = deid_tree(sample_tree / "ct-covid", tmp_path / "two", key, progress=False, workers=2)
    assert len(one.files) >= 64  # large enough for the pool to be used
    assert [(f.path, f.status) for f in one.files] == [(f.path, f.status) for f in two.files]
    for f in one.deidentified:
        assert (tmp_path / "one" / f.output).read_bytes() == (
            tmp_path / "two" / f.output
        ).read_bytes()


def test_each_dataset_is_deidentified_with_its_manifests_options(tmp_path, monkeypatch):
    manifests = tmp_path / "datasets"
    manifests.mkdir()
    text = (Path(__file__).parents[1] / "datasets" / "ct-covid.yaml").read_text()
    (manifests / "ct-covid.yaml").write_text(
        text.replace(
            "options: [retain_longitudinal_modified_dates, retain_patient_characteristics, "
            "clean_descriptors]",
            "options: [clean_descriptors]",
        )
    )
    monkeypatch.setenv("MBC_DATASETS_DIR", str(manifests))
    src = tmp_path / "src"
    make_ct(src / "ct-covid" / "a.dcm")  # this dataset: Clean Descriptors only
    make_ct(src / "elsewhere" / "a.dcm")  # outside any dataset folder: the defaults
    report = deid_tree(src, tmp_path / "out", KEY, progress=False)
    assert [f.status for f in report.files] == ["deidentified", "deidentified"]
    fewer = pydicom.dcmread(tmp_path / "out" / "ct-covid" / "a.dcm")
    full = pydicom.dcmread(tmp_path / "out" / "elsewhere" / "a.dcm")
    codes = [[i.CodeValue for i in ds.DeidentificationMethodCodeSequence] for ds in (fewer, full)]
    assert codes == [["113100", "113105"], ["113100", "113107", "113108", "113105"]]
    assert "Retain Patient Characteristics" not in fewer.DeidentificationMethod
    for keyword in ("PatientAge", "PatientSex", "StudyDate"):  # kept or shifted by the options
        assert keyword in full and full.data_element(keyword).value, keyword
        assert not fewer.get(keyword), keyword  # removed or emptied by the Basic Profile
    for path in (tmp_path / "out").rglob("a.dcm"):
        assert phi_gate.check_dicom_file(path) == []  # each against the options it records
