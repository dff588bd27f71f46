"""``mbc sample-data``: the tree a user gets, its labels, its metadata, and its determinism."""

from __future__ import annotations

import csv
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from mbc_lib.errors import MbcError
from mbc_lib.sample import phi_strings, sample_identities, write_sample_tree
from mbc_lib.sample.fundus import render_fundus
from mbc_lib.sample.identities import rng_for

SMALL = {"n_fundus": 6, "n_ct": 2, "ct_size": 64}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("sample") / "tree"
    return out, write_sample_tree(out, seed=7, **SMALL)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _header(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[0].split(",")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) for every segment before the scan data."""
    assert data[:2] == b"\xff\xd8"
    pos = 2
    while pos < len(data):
        assert data[pos] == 0xFF
        marker = data[pos + 1]
        if marker == 0xDA:
            return
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        yield marker, data[pos + 4 : pos + 2 + length]
        pos += 2 + length


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) for every chunk, checking each CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        assert crc == zlib.crc32(kind + payload), kind
        yield kind, payload
        pos += 12 + length


def _series(root: Path) -> dict[str, list[pydicom.Dataset]]:
    return {
        d.name: [pydicom.dcmread(f) for f in sorted(d.glob("*.dcm"))]
        for d in sorted((root / "ct-covid").glob("SE*"))
    }


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_layout_and_counts(tree: tuple[Path, dict[str, int]]) -> None:
    out, counts = tree
    assert set(counts) == {"fundus-glaucoma", "ct-covid", "dicom-real"}
    images = sorted((out / "fundus-glaucoma" / "images").iterdir())
    assert [p.stem for p in images] == [f"IMG_{i:04d}" for i in range(1, 7)]
    assert {p.suffix for p in images} == {".JPG", ".PNG"}
    assert counts["fundus-glaucoma"] == len(images) == 6
    assert _header(out / "fundus-glaucoma" / "labels.csv") == [
        "path",
        "patient_id",
        "eye",
        "glaucoma",
        "cdr",
    ]
    series = sorted((out / "ct-covid").glob("SE*"))
    assert [s.name for s in series] == ["SE0001", "SE0002"]
    slices = [sorted(s.glob("*.dcm")) for s in series]
    assert [f.name for f in slices[0]] == [f"IM{i:04d}.dcm" for i in range(1, 33)]
    assert counts["ct-covid"] == sum(map(len, slices)) == 64
    assert sorted(p.name for p in (out / "ct-covid" / "masks").iterdir()) == [
        "SE0001.npz",
        "SE0002.npz",
    ]
    assert _header(out / "ct-covid" / "labels.csv") == ["patient_id", "diagnosis"]
    assert counts["dicom-real"] == len(list((out / "dicom-real").iterdir()))
    assert not list(out.parent.glob(".tree.partial-*"))


def test_same_seed_same_bytes_other_seed_differs(
    tmp_path: Path, tree: tuple[Path, dict[str, int]]
) -> None:
    out, _ = tree
    again = write_sample_tree(tmp_path / "again", seed=7, **SMALL)
    assert again == tree[1]
    assert _files(tmp_path / "again") == _files(out)
    write_sample_tree(tmp_path / "other", seed=8, **SMALL)
    first, other = _files(out), _files(tmp_path / "other")
    for name in (
        "fundus-glaucoma/images/IMG_0001.JPG",
        "ct-covid/SE0001/IM0001.dcm",
        "ct-covid/masks/SE0001.npz",
        "fundus-glaucoma/labels.csv",
    ):
        assert first[name] != other[name], name


def test_fundus_labels_follow_cdr_and_files(tree: tuple[Path, dict[str, int]]) -> None:
    out, _ = tree
    root = out / "fundus-glaucoma"
    rows = _rows(root / "labels.csv")
    people = sample_identities(7, SMALL["n_fundus"], SMALL["n_ct"])["fundus-glaucoma"]
    assert [r["path"] for r in rows] == sorted(
        f"images/{p.name}" for p in (root / "images").iterdir()
    )
    assert [r["patient_id"] for r in rows] == [p.patient_id for p in people for _ in "RL"]
    for row in rows:
        cdr = float(row["cdr"])
        assert row["eye"] in {"L", "R"} and row["glaucoma"] in {"0", "1"}
        assert 0.1 <= cdr <= 0.9 and len(row["cdr"].split(".")[1]) == 3
        if cdr >= 0.6:
            assert row["glaucoma"] == "1"
        if cdr < 0.5:
            assert row["glaucoma"] == "0"
        data = (root / row["path"]).read_bytes()
        who = next(p for p in people if p.patient_id == row["patient_id"])
        assert [t for t in phi_strings(who) if t.encode() not in data] == []
        with Image.open(root / row["path"]) as img:
            assert img.mode == "RGB" and 384 <= min(img.size) <= max(img.size) <= 512
    for pid in {r["patient_id"] for r in rows}:
        assert sorted(r["eye"] for r in rows if r["patient_id"] == pid) == ["L", "R"]


def test_cup_size_follows_cdr() -> None:
    def bright(cdr: float) -> int:
        pixels = render_fundus(rng_for(3, "cup"), "R", cdr).astype(int)
        return int(((pixels[..., 1] > 200) & (pixels[..., 2] > 160)).sum())

    small, medium, large = bright(0.2), bright(0.5), bright(0.85)
    assert small < medium < large
    assert large > 4 * small


def test_jpeg_carries_every_metadata_container(tree: tuple[Path, dict[str, int]]) -> None:
    out, _ = tree
    jpegs = sorted((out / "fundus-glaucoma" / "images").glob("*.JPG"))
    assert jpegs
    people = {p.patient_id: p for p in sample_identities(7, 6, 2)["fundus-glaucoma"]}
    for path in jpegs:
        data = path.read_bytes()
        segments = list(_jpeg_segments(data))
        exif = [p for m, p in segments if m == 0xE1 and p.startswith(b"Exif\x00\x00")]
        xmp = [p for m, p in segments if m == 0xE1 and p.startswith(b"http://ns.adobe.com/xap/")]
        com = [p for m, p in segments if m == 0xFE]
        icc = [p for m, p in segments if m == 0xE2 and p.startswith(b"ICC_PROFILE\x00")]
        assert len(exif) == len(xmp) == len(com) == len(icc) == 1, path.name
        pid = next(i for i in people if i.encode() in com[0])
        who = people[pid]
        assert who.family_name.encode() in xmp[0] and who.birth_date.encode() in xmp[0]
        assert who.family_name.encode() in exif[0] and who.device_serial.encode() in exif[0]
        assert who.device_serial.encode() in icc[0]
        with Image.open(path) as img:
            tags = img.getexif()
            assert tags[0x010F] and tags[0x0110] and pid in tags[0x010E]
            assert who.operator.split("^")[0] in tags[0x013B]
            sub = tags.get_ifd(0x8769)
            assert sub[0xA431] == who.device_serial and who.birth_date.encode() in sub[0x9286]
            assert 0x9003 in sub
            gps = tags.get_ifd(0x8825)
            assert {1, 2, 3, 4} <= set(gps)
        tiff = exif[0][6:]
        ifd1 = struct.unpack("<I", tiff[8 + 2 + 12 * struct.unpack("<H", tiff[8:10])[0] :][:4])[0]
        assert ifd1, "no IFD1 (thumbnail directory)"
        assert b"\xff\xd8" in tiff[ifd1:], "no JPEG thumbnail after IFD1"


def test_png_carries_every_metadata_chunk(tree: tuple[Path, dict[str, int]]) -> None:
    out, _ = tree
    pngs = sorted((out / "fundus-glaucoma" / "images").glob("*.PNG"))
    assert pngs
    for path in pngs:
        chunks = list(_png_chunks(path.read_bytes()))
        kinds = [k for k, _ in chunks]
        for kind in (b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf", b"iCCP"):
            assert kind in kinds, (path.name, kind)
        texts = dict(p.split(b"\x00", 1) for k, p in chunks if k == b"tEXt")
        assert b"ID " in texts[b"Description"] and texts[b"Author"]
        ztxt = next(p for k, p in chunks if k == b"zTXt")
        keyword, rest = ztxt.split(b"\x00", 1)
        assert b"DOB" in zlib.decompress(rest[1:])
        itxt = next(p for k, p in chunks if k == b"iTXt")
        assert itxt.startswith(b"XML:com.adobe.xmp\x00") and b"PatientID" in itxt
        year = struct.unpack(">H", next(p for k, p in chunks if k == b"tIME")[:2])[0]
        assert 2018 <= year <= 2024
        assert next(p for k, p in chunks if k == b"eXIf")[:4] == b"II*\x00"


def test_ct_hu_matches_mask_classes(tree: tuple[Path, dict[str, int]]) -> None:
    out, _ = tree
    series = _series(out)
    diagnosis = {r["patient_id"]: r["diagnosis"] for r in _rows(out / "ct-covid" / "labels.csv")}
    assert sorted(diagnosis.values()) == ["covid19", "normal"]
    for name, slices in series.items():
        mask = np.load(out / "ct-covid" / "masks" / f"{name}.npz")
        assert sorted(mask.files) == ["labels", "sop_instance_uids"]
        labels, uids = mask["labels"], mask["sop_instance_uids"]
        assert labels.dtype == np.uint8 and uids.dtype == np.dtype("<U64")
        by_uid = {ds.SOPInstanceUID: ds for ds in slices}
        assert sorted(uids.tolist()) == sorted(by_uid)
        assert labels.shape == (len(slices), slices[0].Rows, slices[0].Columns)
        hu = np.stack([_hu(by_uid[str(u)]) for u in uids])
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        assert hu[labels == 1].mean() < -700
        lesions = (labels >= 2).any()
        assert lesions == (diagnosis[slices[0].PatientID] == "covid19")
        if lesions:
            assert -750 <= hu[labels == 2].mean() <= -250
            assert -150 <= hu[labels == 3].mean() <= 100
        assert hu[0, 0, 0] < -900


def test_ct_geometry_order_and_references(tree: tuple[Path, dict[str, int]]) -> None:
    out, _ = tree
    directions = []
    for slices in _series(out).values():
        assert all(ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" for ds in slices)
        assert slices[0].file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert len({ds.FrameOfReferenceUID for ds in slices}) == 1
        by_z = sorted(slices, key=lambda ds: float(ds.ImagePositionPatient[2]))
        z = np.array([float(ds.ImagePositionPatient[2]) for ds in by_z])
        assert np.allclose(np.diff(z), float(slices[0].SliceThickness), atol=1e-3)
        numbers = [int(ds.InstanceNumber) for ds in by_z]
        assert sorted(numbers) == list(range(1, len(slices) + 1))
        directions.append(numbers[0] < numbers[-1])
        uids = {ds.SOPInstanceUID for ds in slices}
        for pos, ds in enumerate(by_z):
            ref = ds.ReferencedImageSequence[0]
            assert ref.ReferencedSOPInstanceUID in uids - {ds.SOPInstanceUID}
            neighbours = {by_z[i].SOPInstanceUID for i in (pos - 1, pos + 1) if 0 <= i < len(by_z)}
            assert ref.ReferencedSOPInstanceUID in neighbours
            assert ds.PhotometricInterpretation == "MONOCHROME2"
            assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert len(set(directions)) == 2, "instance numbers should run both ways across series"


def test_ct_headers_carry_identity_everywhere(tree: tuple[Path, dict[str, int]]) -> None:
    out, _ = tree
    people = sample_identities(7, 6, 2)["ct-covid"]
    rows = _rows(out / "ct-covid" / "labels.csv")
    assert [r["patient_id"] for r in rows] == [p.patient_id for p in people]
    for who, slices in zip(people, _series(out).values(), strict=True):
        ds = slices[0]
        assert ds.PatientID == who.patient_id and str(ds.PatientName) == who.dicom_name
        assert ds.PatientBirthDate == who.birth_date and ds.PatientAddress == who.address
        assert ds.AccessionNumber == who.accession_number
        assert ds.DeviceSerialNumber == who.device_serial
        assert who.family_name in ds.StudyDescription and who.patient_id in ds.SeriesDescription
        assert who.patient_id in ds.OtherPatientIDsSequence[0].PatientID
        request = ds.RequestAttributesSequence[0]
        assert request.ReferencedStudySequence[0].ReferencedSOPInstanceUID == ds.StudyInstanceUID
        person = ds.PerformingPhysicianIdentificationSequence[0]
        assert person.PersonIdentificationCodeSequence[0].CodeMeaning == who.referring_physician
        block = ds.private_block(0x0009, "ACME CT 1.0")
        assert block[0x10].value == who.dicom_name and block[0x11].value == who.patient_id
        nested = block[0x13].value[0]
        assert str(nested.PatientName) == who.dicom_name
        raw = b"".join(p.read_bytes() for p in (out / "ct-covid").glob("SE*/IM0001.dcm"))
        for text in phi_strings(who):
            assert text.encode() in raw, text


def test_identities_are_distinct_and_distinctive() -> None:
    people = sample_identities(0, 40, 6)
    fundus, ct = people["fundus-glaucoma"], people["ct-covid"]
    assert len(fundus) == 20 and len(ct) == 6
    everyone = fundus + ct
    assert len({p.patient_id for p in everyone}) == len({p.family_name for p in everyone}) == 26
    for person in everyone:
        assert all(len(text) >= 6 for text in phi_strings(person))
        assert not person.patient_id.isdigit()
    assert sample_identities(0, 40, 6) == people != sample_identities(1, 40, 6)


def test_dicom_real_holds_pydicom_test_files(tree: tuple[Path, dict[str, int]]) -> None:
    from pydicom.data import get_testdata_file

    out, counts = tree
    real = out / "dicom-real"
    names = {p.name for p in real.iterdir()}
    assert counts["dicom-real"] == len(names) > 100
    assert all(name.endswith(".dcm") for name in names)
    for name in ("CT_small.dcm", "rtplan.dcm", "693_J2KR.dcm", "bad_sequence.dcm"):
        assert (real / name).read_bytes() == Path(get_testdata_file(name)).read_bytes(), name
    assert {"dicomdirtests_DICOMDIR.dcm", "dicomdirtests_TINY_ALPHA_DICOMDIR.dcm"} <= names


def _mbc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mbc_lib.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_writes_tree_and_prints_counts(tmp_path: Path) -> None:
    result = _mbc(
        "sample-data", str(tmp_path / "out"), "--n-fundus", "4", "--n-ct", "1", "--ct-size", "32"
    )
    assert result.returncode == 0, result.stderr
    assert "fundus-glaucoma: 4 files" in result.stdout
    assert "ct-covid: 16 files" in result.stdout
    assert "dicom-real:" in result.stdout
    assert (tmp_path / "out" / "ct-covid" / "SE0001" / "IM0016.dcm").is_file()


@pytest.mark.parametrize("case", ["negative", "file", "nonempty", "small"])
def test_cli_bad_arguments_give_one_line(tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    args = [str(out)]
    if case == "negative":
        args += ["--n-ct", "-1"]
    elif case == "file":
        out.write_text("keep me")
    elif case == "nonempty":
        out.mkdir()
        (out / "mine.txt").write_text("keep me")
    else:
        args += ["--ct-size", "16"]
    result = _mbc("sample-data", *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("mbc sample-data: error:")
    if case in {"file", "nonempty"}:
        assert "exists and is not empty" in lines[0]
        assert (out.read_text() if case == "file" else (out / "mine.txt").read_text()) == "keep me"


def test_empty_existing_folder_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    counts = write_sample_tree(out, n_fundus=0, n_ct=0, ct_size=32)
    assert counts["fundus-glaucoma"] == counts["ct-covid"] == 0
    assert _rows(out / "fundus-glaucoma" / "labels.csv") == []
    with pytest.raises(MbcError, match="--n-fundus"):
        write_sample_tree(tmp_path / "x", n_fundus=-2)
