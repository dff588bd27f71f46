"""Whatever ``mbc deid`` publishes, the PHI gate accepts (issue 8, section 2).

De-identifies every file that pydicom and pydicom-data ship, the sample tree, a DICOM-SEG
made with highdicom, an RTSTRUCT made with rt-utils, a PET series, SR documents and one
object carrying every attribute of pydicom's dictionary with a simple VR, then runs
:func:`mbc_lib.phi_gate.check_dicom_file` on each file that deid wrote. Refusals are
fine (SR, secondary capture, ...): the invariant is about what deid publishes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from rt_utils import RTStructBuilder

from mbc_lib.deid.keys import DeidKey
from mbc_lib.deid.report import REPORT_JSON
from mbc_lib.deid.tree import deid_tree
from mbc_lib.phi_gate import check_dicom_file

from .conftest import dicom_instance, identified_seg

KEY = DeidKey(bytes(range(32)))
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Groups of made objects; each must publish at least one file unless listed as refusable.
GROUPS = ("pydicom", "seg", "rtstruct", "pet", "sr", "dictionary")
REFUSABLE = frozenset({"sr"})
#: A value for each simple VR, identifying-looking where the VR allows it.
_VALUES = {
    "DA": "20210314",
    "DT": "20210314101112.123456",
    "TM": "101112",
    "LO": "John Smith 4711-0815",
    "SH": "J SMITH 4711",
    "ST": "Seen by Dr John Smith on 14.03.2021",
    "LT": "Seen by Dr John Smith on 14.03.2021",
    "UT": "Seen by Dr John Smith on 14.03.2021",
    "UC": "John Smith",
    "PN": "Smith^John",
    "AS": "045Y",
    "AE": "HOSPITAL_AE",
    "UI": "1.2.826.0.1.3680043.2.1143.4711",
}


def _save(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _copy_pydicom_files(dst: Path) -> None:
    """Every file (and folder) of pydicom's and pydicom-data's test data, DICOM or not."""
    dst.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(sorted(get_testdata_files())):
        target = dst / f"{i:03d}-{Path(name).name}"
        if Path(name).is_dir():
            shutil.copytree(name, target)
        else:
            shutil.copyfile(name, target)


def _ct_series(sample_tree: Path) -> Path:
    return sorted(p.parent for p in (sample_tree / "ct-covid").rglob("*.dcm"))[0]


def _seg(dst: Path) -> None:
    """A binary DICOM-SEG over CT_small, as highdicom writes it."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    mask = np.zeros((1, ct.Rows, ct.Columns), np.uint8)
    mask[0, 20:40, 20:40] = 1
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = identified_seg(
        [ct], mask, [segment], series_number=99, manufacturer="General Hospital Radiology"
    )
    _save(seg, dst / "seg-highdicom.dcm")


def _rtstruct(dst: Path, series: Path, work: Path) -> None:
    """An RTSTRUCT with one ROI over a sample CT series, as rt-utils writes it."""
    source = work / "rt-source"
    shutil.copytree(series, source)
    first = pydicom.dcmread(next(source.glob("*.dcm")), stop_before_pixels=True)
    n = len(list(source.glob("*.dcm")))
    rtstruct = RTStructBuilder.create_new(dicom_series_path=str(source))
    mask = np.zeros((first.Rows, first.Columns, n), bool)
    mask[8:20, 8:20, 1 : n - 1] = True
    rtstruct.add_roi(mask=mask, name="GTV Dr Smith")
    dst.mkdir(parents=True, exist_ok=True)
    rtstruct.save(str(dst / "rtstruct-rt-utils.dcm"))


def _pet_slice(index: int, study: str, series: str, frame: str) -> Dataset:
    ds = dicom_instance(PET_STORAGE, study, series, frame)
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "PT", 3, index + 1
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Smith^John", "PET-4711", "19610412"
    ds.PatientSex, ds.PatientAge, ds.PatientWeight, ds.PatientSize = "M", "059Y", 81.5, 1.82
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20210314"
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101112"
    ds.AccessionNumber, ds.StudyID = "ACC4711", "4711"
    ds.InstitutionName, ds.StationName = "General Hospital", "PETCT01"
    ds.DeviceSerialNumber, ds.Manufacturer = "SN-4711", "Vendor"
    ds.DateOfLastCalibration, ds.TimeOfLastCalibration = "20210301", "080000"
    ds.IssueDateOfImagingServiceRequest = "20210310"
    ds.IssueTimeOfImagingServiceRequest = "090000"
    ds.SeriesDescription = "PET WB FDG John Smith"
    ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "START", ["ATTN", "DECY"]
    ds.SeriesType, ds.CountsSource, ds.NumberOfSlices = ["WHOLE BODY", "IMAGE"], "EMISSION", 2
    ds.ImageIndex, ds.FrameReferenceTime, ds.ActualFrameDuration = index + 1, 0.0, 120000
    ds.DecayFactor, ds.DoseCalibrationFactor = 1.02, 1.0
    drug = Dataset()
    drug.Radiopharmaceutical = "Fludeoxyglucose F^18^"
    drug.RadiopharmaceuticalStartTime = "093000"
    drug.RadiopharmaceuticalStartDateTime = "20210314093000"
    drug.RadiopharmaceuticalStopDateTime = "20210314093100"
    drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = 3.7e8, 6586.2
    nuclide = Dataset()
    nuclide.CodeValue, nuclide.CodingSchemeDesignator = "C-111A1", "SRT"
    nuclide.CodeMeaning = "^18^Fluorine"
    drug.RadionuclideCodeSequence = Sequence([nuclide])
    ds.RadiopharmaceuticalInformationSequence = Sequence([drug])
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImagePositionPatient = [0.0, 0.0, 4.0 * index]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [4.0, 4.0], 4.0
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = 0.0, 1.5
    ds.PixelData = (np.arange(64, dtype=np.uint16) * (index + 1)).tobytes()
    return ds


def _pet(dst: Path) -> None:
    """A two-slice PET series with its radiopharmaceutical, calibration and request dates."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for index in range(2):
        _save(_pet_slice(index, study, series, frame), dst / f"pet-{index + 1}.dcm")


def _sr(dst: Path) -> None:
    """An Enhanced SR written by highdicom (pydicom-data's SR files are in group 'pydicom')."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    container = hd.sr.ContainerContentItem(
        name=codes.DCM.ImagingMeasurementReport, template_id="1500"
    )
    finding = hd.sr.TextContentItem(
        name=codes.DCM.Finding,
        value="seen by Dr John Smith",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence([finding], is_root=False)
    sr = hd.sr.EnhancedSR(
        evidence=[ct],
        content=container,
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="General Hospital",
    )
    _save(sr, dst / "sr-highdicom.dcm")


def _dictionary_object(dst: Path) -> None:
    """CT_small plus every attribute of pydicom's dictionary with a simple VR, filled in."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for tag, (vr, _vm, _name, _retired, keyword) in DicomDictionary.items():
        group = tag >> 16
        if vr not in _VALUES or tag in ds or group in (0x0000, 0x0002) or group >= 0xFFFA:
            continue
        value = _VALUES[vr]
        if vr == "UI" and ("SOPClass" in keyword or "TransferSyntax" in keyword):
            value = CT_STORAGE
        ds.add_new(tag, vr, value)
    _save(ds, dst / "dictionary-attributes.dcm")


@pytest.fixture(scope="module")
def made_tree(tmp_path_factory, sample_tree) -> Path:
    """The input tree: one folder per group."""
    work = tmp_path_factory.mktemp("invariant")
    src = work / "src"
    _copy_pydicom_files(src / "pydicom")
    _seg(src / "seg")
    _rtstruct(src / "rtstruct", _ct_series(sample_tree), work)
    _pet(src / "pet")
    _sr(src / "sr")
    _dictionary_object(src / "dictionary")
    return src


def _published(out: Path) -> dict[str, list[str]]:
    """Gate findings for every DICOM file a deid run wrote, by output path."""
    report = json.loads((out / REPORT_JSON).read_text())
    return {
        entry["output"]: check_dicom_file(out / entry["output"])
        for entry in report["files"]
        if entry["status"] == "deidentified" and entry["kind"] == "dicom"
    }


@pytest.fixture(scope="module")
def published(made_tree, tmp_path_factory) -> dict[str, dict[str, list[str]]]:
    """Gate findings for every published file, by group."""
    out = tmp_path_factory.mktemp("invariant-out") / "out"
    deid_tree(made_tree, out, KEY, progress=False)
    by_group: dict[str, dict[str, list[str]]] = {group: {} for group in GROUPS}
    for output, findings in _published(out).items():
        by_group[Path(output).parts[0]][output] = findings
    return by_group


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS)
def test_gate_accepts_what_deid_publishes(published, group):
    files = published[group]
    if group not in REFUSABLE:
        assert files, f"deid published nothing from group {group}"
    rejected = {path: findings for path, findings in files.items() if findings}
    assert rejected == {}


@pytest.mark.slow
def test_gate_accepts_the_published_sample_tree(deid_out):
    files = _published(deid_out)
    assert files
    assert {path: findings for path, findings in files.items() if findings} == {}
