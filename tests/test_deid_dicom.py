"""DICOM de-identification: PHI gone from every byte, references kept, method recorded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from mbc_lib.deid.dicom import (
    deid_dicom_file,
    deidentify_dataset,
    refusal_reason,
    shift_da,
    shift_dt,
)
from mbc_lib.deid.keys import PSEUDONYM_RE, DeidKey
from mbc_lib.deid.profile import get_profile, resolve_combined
from mbc_lib.phi_gate import check_dicom_dataset

KEY = DeidKey(bytes(range(32)))
OTHER_KEY = DeidKey(bytes(range(1, 33)))
UID_ROOT = "1.2.826.0.1.3680043.10.4711"
PATIENT_ID = "MRN-4711-0815"
#: Every string below is injected somewhere and must not survive in any output byte.
PHI = [
    "Quixote",
    "Zebulon",
    "Ignatius",
    "Sancho",
    "Panza",
    "Kildare",
    "Gillespie",
    "Rocinante",
    "4711-0815",
    "19610412",
    "1961-04-12",
    "12.04.1961",
    "Wallaby",
    "5550 1234",
    "OTHERID-998877",
    "ACC-55501",
    "Elsewhere",
    "CTSTATION-7",
    "SN-ELSE-9",
    "STUDYID-777",
    UID_ROOT,
    "20210314",
    "ACME PRIVATE",
    "Barataria",
    "Toboso",
]


def _item(**elements: object) -> Dataset:
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _private(ds: Dataset, group: int, text: str) -> None:
    block = ds.private_block(group, "ACME PRIVATE", create=True)
    block.add_new(0x01, "LO", text)
    block.add_new(0x02, "SQ", Sequence([_item(PatientName="Panza^Sancho", PatientID=PATIENT_ID)]))


def make_ct(
    path: Path,
    index: int = 0,
    *,
    patient_id: str = PATIENT_ID,
    study: str = "1",
    study_date: str = "20210314",
    size: int = 16,
    refer_to: str | None = None,
) -> Path:
    """A CT slice whose header carries PHI at the top, in sequences and in private tags."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{UID_ROOT}.{study}.3.{index + 1}"
    ds.StudyInstanceUID = f"{UID_ROOT}.{study}"
    ds.SeriesInstanceUID = f"{UID_ROOT}.{study}.2"
    ds.FrameOfReferenceUID = f"{UID_ROOT}.{study}.9"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.InstanceCreationDate = study_date
    ds.StudyTime, ds.SeriesTime, ds.ContentTime = "101500", "101600", "101700.25"
    ds.AcquisitionDateTime = f"{study_date}101500.123456+0100"
    ds.AccessionNumber = "ACC-55501"
    ds.Modality = "CT"
    ds.Manufacturer = "Synthetic Scanners"
    ds.InstitutionName = "St Elsewhere Clinic"
    ds.InstitutionAddress = "1 Barataria Road, Toboso"
    ds.ReferringPhysicianName = "Kildare^James"
    ds.PerformingPhysicianName = "Gillespie^Leonard"
    ds.OperatorsName = "Rocinante^Tech"
    ds.StationName = "CTSTATION-7"
    ds.DeviceSerialNumber = "SN-ELSE-9"
    ds.StudyDescription = "CT chest for Quixote Zebulon MRN-4711-0815 born 12.04.1961"
    ds.SeriesDescription = "series of ZEBULON 20210314"
    ds.ProtocolName = "Zebulon protocol"
    ds.ImageComments = "patient quixote called 0815 on 5550 1234"
    ds.PatientName = "Quixote^Zebulon^Ignatius"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19610412"
    ds.PatientSex = "M"
    ds.PatientAge = "059Y"
    ds.PatientWeight = "81.5"
    ds.PatientAddress = "42 Wallaby Way, Sydney"
    ds.PatientTelephoneNumbers = "+61 2 5550 1234"
    ds.OtherPatientIDs = "OTHERID-998877"
    ds.OtherPatientIDsSequence = [_item(PatientID="OTHERID-998877")]
    ds.StudyID = "STUDYID-777"
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.ImagePositionPatient = [0, 0, float(index)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    # depth 2: a walked sequence whose items hold a sequence with PN, dates, UIDs, text
    deep = _item(
        PersonName="Panza^Sancho",
        Date=study_date,
        CodeValue="T-D3000",
        CodingSchemeDesignator="SRT",
        ReferencedSOPInstanceUID=ds.SOPInstanceUID,
        RequestedProcedureDescription="requested by Dr Kildare for Quixote",
    )
    _private(deep, 0x0011, "deep private Quixote")
    region = _item(
        CodeValue="T-D3000",
        CodingSchemeDesignator="SRT",
        CodeMeaning="Chest",
        AnatomicRegionModifierSequence=[deep],
    )
    ds.AnatomicRegionSequence = [region]
    ds.RequestAttributesSequence = [
        _item(
            RequestedProcedureDescription="CT for Zebulon Quixote",
            ScheduledProcedureStepDescription="Sancho Panza 1961-04-12",
        )
    ]
    if refer_to:
        ds.ReferencedImageSequence = [
            _item(
                ReferencedSOPClassUID=CTImageStorage,
                ReferencedSOPInstanceUID=refer_to,
            )
        ]
    _private(ds, 0x0009, "Quixote private note")
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    rng = np.random.default_rng(index)
    ds.PixelData = rng.integers(0, 2000, (size, size), dtype=np.int16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "ELSEWHERE"
    ds.preamble = b"Quixote Zebulon".ljust(128, b"\0")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def assert_no_phi(data: bytes, where: str = "") -> None:
    for text in PHI:
        for variant in {text, text.upper(), text.lower(), text.title()}:
            assert variant.encode() not in data, f"{variant!r} left in {where}"


@pytest.fixture
def ct_pair(tmp_path: Path) -> tuple[Path, Path]:
    a = make_ct(tmp_path / "in" / "a.dcm", 0)
    b = make_ct(tmp_path / "in" / "b.dcm", 1, refer_to=f"{UID_ROOT}.1.3.1")
    return a, b


def _deid(src: Path, dst: Path, key: DeidKey = KEY) -> pydicom.Dataset:
    result = deid_dicom_file(src, dst, key)
    assert result.status == "deidentified", result.reason
    return pydicom.dcmread(dst)


def test_no_phi_in_any_byte_and_method_recorded(ct_pair, tmp_path):
    a, _ = ct_pair
    out = tmp_path / "out" / "a.dcm"
    ds = _deid(a, out)
    assert_no_phi(out.read_bytes(), str(out))
    assert ds.PatientIdentityRemoved == "YES"
    assert "mbc deid" in ds.DeidentificationMethod
    codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108", "113105"]
    assert {item.CodingSchemeDesignator for item in ds.DeidentificationMethodCodeSequence} == {
        "DCM"
    }
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert PSEUDONYM_RE.match(ds.PatientID)
    assert ds.PatientID == str(ds.PatientName) == KEY.pseudonym(PATIENT_ID)
    # patient characteristics kept, identity dates emptied
    assert (ds.PatientSex, ds.PatientAge, ds.PatientWeight) == ("M", "059Y", 81.5)
    assert ds.PatientBirthDate == ""
    # no private tags anywhere, no person name but the pseudonym
    for elem in ds.iterall():
        assert not elem.tag.is_private
        if elem.VR == "PN" and elem.value:
            assert elem.tag == 0x00100010 and str(elem.value) == ds.PatientID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert ds.preamble == b"\0" * 128


def test_descriptions_cleaned_not_dropped(ct_pair, tmp_path):
    ds = _deid(ct_pair[0], tmp_path / "a.dcm")
    assert ds.StudyDescription.startswith("CT chest for")
    assert "born" in ds.StudyDescription
    assert ds.ProtocolName == "protocol"
    assert ds.SeriesDescription == "series of"
    deep = ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
    assert deep.RequestedProcedureDescription == "requested by Dr for"
    assert "PersonName" in deep and not deep.PersonName  # D on a person name: emptied


def test_pixels_and_transfer_syntax_untouched(ct_pair, tmp_path):
    src = pydicom.dcmread(ct_pair[0])
    out = _deid(ct_pair[0], tmp_path / "a.dcm")
    assert out.PixelData == src.PixelData
    assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
    assert np.array_equal(out.pixel_array, src.pixel_array)


def test_uid_references_stay_consistent(ct_pair, tmp_path):
    a = _deid(ct_pair[0], tmp_path / "a.dcm")
    b = _deid(ct_pair[1], tmp_path / "b.dcm")
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.StudyInstanceUID == b.StudyInstanceUID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    deep = a.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
    assert deep.ReferencedSOPInstanceUID == a.SOPInstanceUID
    # DICOM-defined UIDs are kept
    assert a.SOPClassUID == CTImageStorage
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert a.SOPInstanceUID == KEY.uid(f"{UID_ROOT}.1.3.1")
    assert a.SOPInstanceUID.startswith("2.25.")


def test_same_key_same_bytes_other_key_unlinkable(ct_pair, tmp_path):
    one, two, other = tmp_path / "1.dcm", tmp_path / "2.dcm", tmp_path / "3.dcm"
    _deid(ct_pair[1], one)
    _deid(ct_pair[1], two)
    assert one.read_bytes() == two.read_bytes()
    x, y = pydicom.dcmread(one), _deid(ct_pair[1], other, OTHER_KEY)
    uids = {e.value for e in x.iterall() if e.VR == "UI" and str(e.value).startswith("2.25.")}
    other_uids = {e.value for e in y.iterall() if e.VR == "UI"}
    assert uids and not uids & other_uids
    assert x.PatientID != y.PatientID
    assert x.StudyDate != y.StudyDate
    assert KEY.date_shift_days(PATIENT_ID) != OTHER_KEY.date_shift_days(PATIENT_ID)


def test_intervals_between_studies_preserved(tmp_path):
    first = _deid(
        make_ct(tmp_path / "s1.dcm", study="1", study_date="20210314"), tmp_path / "o1.dcm"
    )
    second = _deid(
        make_ct(tmp_path / "s2.dcm", study="2", study_date="20230101"), tmp_path / "o2.dcm"
    )

    def day(text: str) -> dt.date:
        return dt.datetime.strptime(text, "%Y%m%d").date()

    original = (dt.date(2023, 1, 1) - dt.date(2021, 3, 14)).days
    assert (day(second.StudyDate) - day(first.StudyDate)).days == original
    shift = KEY.date_shift_days(PATIENT_ID)
    assert day(first.StudyDate) == dt.date(2021, 3, 14) + dt.timedelta(days=shift)
    assert first.StudyTime == "101500"  # whole-day shift keeps times
    assert first.AcquisitionDateTime == day(first.StudyDate).strftime("%Y%m%d") + "101500.123456"
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.PatientID == second.PatientID


def test_empty_patient_id_does_not_collapse_patients(tmp_path):
    a = _deid(make_ct(tmp_path / "a.dcm", patient_id="", study="1"), tmp_path / "oa.dcm")
    b = _deid(make_ct(tmp_path / "b.dcm", patient_id="", study="2"), tmp_path / "ob.dcm")
    assert PSEUDONYM_RE.match(a.PatientID) and PSEUDONYM_RE.match(b.PatientID)
    assert a.PatientID != b.PatientID


def test_date_shift_helpers():
    assert shift_da("20210301", -1) == "20210228"
    assert shift_da("20200101-20200131", -1) == "20191231-20200130"
    assert shift_da("2021.03.01", -1) == "20210228"
    assert shift_da("20211340", -1) is None
    assert shift_dt("20210301120000+0100", -1) == "20210228120000"
    assert shift_dt("2021", -1) == "2020"
    assert shift_dt("20210301-20210302", -1) == "20210228-20210301"
    assert shift_dt("garbage", -1) is None


def test_malformed_date_is_emptied(tmp_path):
    src = make_ct(tmp_path / "a.dcm")
    ds = pydicom.dcmread(src)
    with pytest.warns(UserWarning):
        ds.SeriesDate = "notadate"
    deidentify_dataset(ds, KEY)
    assert "SeriesDate" in ds and not ds.SeriesDate
    assert ds.StudyDate == shift_da("20210314", KEY.date_shift_days(PATIENT_ID))


def _refusal(tmp_path: Path, **changes: object) -> tuple[str | None, Path]:
    src = make_ct(tmp_path / "in.dcm")
    ds = pydicom.dcmread(src)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(src, enforce_file_format=True)
    dst = tmp_path / "out.dcm"
    result = deid_dicom_file(src, dst, KEY)
    return (result.reason if result.status == "refused" else None), dst


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"BurnedInAnnotation": "YES"}, "burned-in annotation"),
        ({"SOPClassUID": SecondaryCaptureImageStorage}, "secondary capture"),
        ({"ConversionType": "WSD"}, "secondary capture"),
        ({"ContentSequence": [Dataset()]}, "structured or encapsulated content"),
    ],
)
def test_unsafe_objects_refused(tmp_path, changes, expected):
    reason, dst = _refusal(tmp_path, **changes)
    assert reason and reason.startswith(expected)
    assert not dst.exists()


def test_real_sr_and_dicomdir_refused():
    sr = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    assert refusal_reason(sr).startswith("structured")
    dicomdir = pydicom.dcmread(get_testdata_file("DICOMDIR"))
    assert refusal_reason(dicomdir).startswith("DICOMDIR")


def test_garbage_refused_with_reason(tmp_path):
    src = tmp_path / "x.dcm"
    src.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    result = deid_dicom_file(src, tmp_path / "y.dcm", KEY)
    assert result.status == "refused"
    assert result.reason.startswith(("not readable as DICOM", "incomplete", "cannot", "malformed"))
    assert not (tmp_path / "y.dcm").exists()


def test_profile_comes_from_the_packages():
    profile = get_profile()
    assert profile.edition.startswith("dicomfields_20")
    assert len(profile.basic_codes) > 400
    assert resolve_combined("X/Z", "2") == "Z"
    assert resolve_combined("X/Z/D", "1") == "D"
    assert resolve_combined("X/D", None) == "X"
    assert resolve_combined("Z/D", None) == "Z"
    assert resolve_combined("X/Z/U*", "3") == "U*"
    # curves and overlays masks from the table
    assert any(g == 0x5000 and gm == 0xFF00 for g, _, gm, _, _ in profile.masks)


def test_real_ct_small(tmp_path):
    ds = _deid(Path(get_testdata_file("CT_small.dcm")), tmp_path / "ct.dcm")
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert ds.PatientID == KEY.pseudonym(src.PatientID)
    assert ds.PixelData == src.PixelData
    assert str(src.PatientName).encode() not in (tmp_path / "ct.dcm").read_bytes()


def _real_files() -> list[str]:
    from pydicom.data import get_testdata_files

    return sorted(p for p in get_testdata_files() if Path(p).is_file())


def test_written_bytes_are_pydicoms_for_every_real_file(tmp_path):
    """deid encodes its output in memory (no copy of the file meta, one write); the bytes
    must be exactly those pydicom's own writer gives, for every test file pydicom ships that
    deid de-identifies: implicit and explicit, little and big endian, deflated, compressed."""
    import io

    from mbc_lib.deid.dicom import read_dicom
    from mbc_lib.deid.encode import encode_file

    deflated = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    deflated.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    deflated.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    compared, syntaxes = 0, set()
    for name in [*_real_files(), str(tmp_path / "deflated.dcm")]:
        try:
            ds = read_dicom(Path(name))
        except Exception:  # noqa: BLE001 - not a DICOM file deid reads
            continue
        if refusal_reason(ds):
            continue
        try:
            deidentify_dataset(ds, KEY)
            theirs = io.BytesIO()
            ds.save_as(theirs, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - deid refuses what pydicom cannot write either
            continue
        assert encode_file(ds) == theirs.getvalue(), name
        compared += 1
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    assert compared > 150
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"} <= syntaxes
    assert "1.2.840.10008.1.2.1.99" in syntaxes  # deflated


def test_rtstruct_roi_names_keep_only_the_manifests_class_names():
    """ROI Name is emptied (Table E.1-1: Z) unless it is exactly a class name of the
    dataset, which comes back spelled as the manifest spells it."""
    ds = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)
    typed = ["CONSOLIDATION ", "GGO Dr Nowak", "Ground-Glass Opacity"]
    for item, name in zip(ds.StructureSetROISequence, typed, strict=True):
        item.ROIName = name
    classes = ("background", "normal lung", "ground-glass opacity", "consolidation")
    plain = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)
    for item, name in zip(plain.StructureSetROISequence, typed, strict=True):
        item.ROIName = name
    deidentify_dataset(ds, KEY, roi_classes=classes)
    deidentify_dataset(plain, KEY)
    names = [str(r.get("ROIName", "")) for r in ds.StructureSetROISequence]
    assert names == ["consolidation", "", "ground-glass opacity"]
    assert [str(r.get("ROIName", "")) for r in plain.StructureSetROISequence] == ["", "", ""]
    assert check_dicom_dataset(ds) == []
