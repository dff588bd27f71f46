"""Character sets: names planted in free text, PN components and sequences leave in no form.

Every charset file pydicom ships is made into a CT object (its SOP class is the only change
that lets deid publish it), its patient's name is planted in descriptors, person names and a
sequence item, and the object is de-identified. ISO 2022 IR 87 / IR 159 / IR 149 are 7-bit:
their bytes look like ASCII, which is how a Japanese name once survived (issue 8).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.charset import convert_encodings, decode_bytes, encode_string
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from mbc_lib.deid.dicom import deid_dicom_file
from mbc_lib.deid.keys import DeidKey
from mbc_lib.phi_gate import check_dicom_file

KEY = DeidKey(b"charset-test-key-0123456789abcdef")
CHARSET_FILES = sorted(Path(p) for p in get_charset_files() if p.endswith(".dcm"))
TEXT_VRS = ("SH", "LO", "ST", "LT", "UT", "PN", "UC")
_ESCAPE = re.compile(rb"\x1b[\x24\x28\x29\x2d\x2e\x2f][\x28\x29\x2d\x2e\x2f]?.")


def _name_of(ds: Dataset) -> str:
    if "PatientName" in ds and str(ds.PatientName):
        return str(ds.PatientName)
    for elem in ds.iterall():  # chrSQEncoding*: the only name is in a sequence
        if elem.VR == "PN" and elem.value:
            return str(elem.value)
    raise AssertionError("no person name in the file")


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[\^=\s]+", name) if len(t) >= 2]


def _as_ct(ds: Dataset) -> Dataset:
    """The same object as a CT image: deid refuses secondary captures, not character sets."""
    ds.SOPClassUID = CTImageStorage
    if "SOPInstanceUID" not in ds:
        ds.SOPInstanceUID = generate_uid()
    for keyword in ("ConversionType", "BurnedInAnnotation"):
        if keyword in ds:
            delattr(ds, keyword)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or (
        ExplicitVRLittleEndian
    )
    ds.file_meta = meta
    return ds


def _plant(ds: Dataset, name: str) -> None:
    tokens = _tokens(name)
    ds.PatientName = name
    ds.PatientID = f"ID-{tokens[0]}-4711"
    ds.ImageComments = f"seen {''.join(tokens[:2])} today; {tokens[-1]} again"
    ds.StudyDescription = f"{tokens[0]} chest"
    ds.OtherPatientNames = name
    ds.ReferringPhysicianName = name
    item = Dataset()
    item.RequestedProcedureDescription = f"for {tokens[-1]} {tokens[0]}"
    item.ReasonForTheRequestedProcedure = f"{name} follow-up"
    ds.RequestAttributesSequence = [item]


def _planted(
    source: Path, tmp_path: Path, charset: list[str] | None = None, name: str = ""
) -> Path:
    ds = _as_ct(pydicom.dcmread(source) if source.is_file() else _blank())
    if charset is not None:
        ds.SpecificCharacterSet = charset
    _plant(ds, name or _name_of(ds))
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _blank() -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    return ds


def _header_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    at = data.rfind(b"\xe0\x7f\x10\x00")  # Pixel Data, little endian
    return data[:at] if at > 0 else data


def _check_output(src: Path, out: Path, charsets: list[str]) -> None:
    name = _name_of(pydicom.dcmread(src))
    result = deid_dicom_file(src, out, KEY)
    assert result.status == "deidentified", result.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every value left must be valid in its charset
        ds = pydicom.dcmread(out)
        texts = [str(e.value) for e in ds.iterall() if e.VR in TEXT_VRS and e.value]
    decoded = "\n".join(texts).lower()
    left = [t for t in _tokens(name) if t.lower() in decoded]
    assert not left, f"{left} decoded from {out.name}: {texts}"
    header = _header_bytes(out)
    encodings = convert_encodings(charsets)
    for token in _tokens(name):
        core = _ESCAPE.sub(b"", encode_string(token, encodings))
        if len(core) >= 4:
            assert core not in header, f"bytes of {token!r} in {out.name}"
    assert check_dicom_file(out) == []
    # what was cleaned, not emptied: the descriptors keep their other words
    assert "today" in str(ds.get("ImageComments", "")) and "chest" in str(ds.StudyDescription)


def test_every_charset_file_pydicom_ships_is_here():
    names = {p.name for p in CHARSET_FILES}
    assert {"chrH31.dcm", "chrH32.dcm", "chrX1.dcm", "chrJapMulti.dcm"} <= names
    assert len(CHARSET_FILES) >= 15


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("source", CHARSET_FILES, ids=lambda p: p.name)
def test_names_planted_in_every_charset_file_leave_in_no_form(source, tmp_path):
    src = _planted(source, tmp_path)
    charsets = list(pydicom.dcmread(src).get("SpecificCharacterSet") or ["ISO_IR 6"])
    _check_output(src, tmp_path / "out.dcm", [c for c in charsets] or [""])


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
        (["", "ISO 2022 IR 87", "ISO 2022 IR 159"], "Saitou^Ichirou=丂山^丄郎=さいとう^いちろう"),
        (["", "ISO 2022 IR 159"], "Ueda^Hiroshi=丂丄^丅丌"),
        ("ISO_IR 192", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ],
    ids=["IR87", "IR13+IR87", "IR87+IR159", "IR159", "UTF-8"],
)
def test_japanese_character_sets_are_first_class(charset, name, tmp_path):
    src = _planted(tmp_path / "none", tmp_path, charset=charset, name=name)
    ds = pydicom.dcmread(src)
    assert str(ds.PatientName) == name  # pydicom wrote it in that charset
    _check_output(src, tmp_path / "out.dcm", charset if isinstance(charset, list) else [charset])


def test_a_japanese_name_in_free_text_was_the_observed_leak(tmp_path):
    """chrH31.dcm with 山田太郎 in ImageComments (issue 8): no JIS byte of it survives."""
    source = next(p for p in CHARSET_FILES if p.name == "chrH31.dcm")
    src = _planted(source, tmp_path)
    out = tmp_path / "out.dcm"
    assert deid_dicom_file(src, out, KEY).status == "deidentified"
    raw = _header_bytes(out)
    for token in ("山田", "太郎"):
        core = _ESCAPE.sub(b"", token.encode("iso2022_jp"))
        assert core not in raw
    comments = pydicom.dcmread(out).ImageComments
    assert comments == "seen today; again"
    assert decode_bytes(encode_string(comments, ["iso8859", "iso2022_jp"]), ["iso8859"], set())
