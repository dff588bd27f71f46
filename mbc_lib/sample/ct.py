"""Synthetic chest CT series written as real scanners write them: identifying headers, nested
sequences, private tags, and slice order that ingest must recover from the geometry.

One patient, one study, one series: ``SEnnnn/IMnnnn.dcm``, with ``masks/SEnnnn.npz`` (labels and
the SOP Instance UID of each labelled slice) and ``labels.csv`` (patient_id, diagnosis).
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from .ct_phantom import Geometry, Phantom, chest_phantom
from .identities import SampleIdentity, rng_for

PRIVATE_CREATOR = "ACME CT 1.0"
RECON_CREATOR = "ACME CT RECON"
ORDERS = ("head-to-foot", "foot-to-head", "shuffled-files")
_STUDY_REF_CLASS = "1.2.840.10008.3.1.2.3.1"


@dataclass(frozen=True)
class CtCase:
    """One written series: its folder, patient, diagnosis and slice files."""

    series_dir: str
    patient_id: str
    diagnosis: str
    n_files: int


def geometry(ct_size: int) -> Geometry:
    """About ``ct_size // 2`` slices covering ~300 mm; 340 mm field of view in-plane."""
    return Geometry(
        size=ct_size, slices=ct_size // 2, pixel_mm=340.0 / ct_size, slice_mm=600.0 / ct_size
    )


def _uid(rng: np.random.Generator) -> str:
    return "2.25." + str(int.from_bytes(rng.bytes(16), "big"))


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (values here are within +-10000)."""
    text = format(round(float(value), 6), ".10g")
    return "0" if text == "-0" else text


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "L"
    item.CodeMeaning = meaning
    return item


def _patient(ds: Dataset, who: SampleIdentity, rng: np.random.Generator, study_date: str) -> None:
    ds.PatientName = who.dicom_name
    ds.PatientID = who.patient_id
    ds.IssuerOfPatientID = who.institution
    ds.PatientBirthDate = who.birth_date
    ds.PatientSex = who.sex
    age = int(study_date[:4]) - int(who.birth_date[:4]) - (study_date[4:] < who.birth_date[4:])
    ds.PatientAge = f"{age:03d}Y"
    ds.PatientSize = _ds(rng.uniform(1.55, 1.9))
    ds.PatientWeight = _ds(round(rng.uniform(52, 110)))
    ds.PatientAddress = who.address
    ds.PatientTelephoneNumbers = who.phone
    others = []
    for issuer, other_id in (("RIS", f"RIS-{who.patient_id}"), ("REGIONAL MPI", who.patient_id)):
        item = Dataset()
        item.PatientID = other_id
        item.IssuerOfPatientID = issuer
        item.TypeOfPatientID = "TEXT"
        others.append(item)
    ds.OtherPatientIDsSequence = Sequence(others)


def _study(
    ds: Dataset,
    who: SampleIdentity,
    uids: dict[str, str],
    when: tuple[str, str],
    rng: np.random.Generator,
) -> None:
    date, time = when
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    for prefix in ("Study", "Series", "Acquisition", "Content", "InstanceCreation"):
        setattr(ds, f"{prefix}Date", date)
        setattr(ds, f"{prefix}Time", time)
    ds.AccessionNumber = who.accession_number
    ds.StudyID = f"ST{who.accession_number[-6:]}"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.StudyDescription = f"CT THORAX LOW DOSE - {who.dicom_name}"
    ds.SeriesDescription = f"LUNG 1.0 B70f - {who.patient_id}"
    ds.ProtocolName = f"CHEST LD {who.patient_id}"
    ds.ImageComments = f"Thorax for {who.dicom_name} ({who.patient_id}), DOB {who.birth_date}"
    ds.ReferringPhysicianName = who.referring_physician
    ds.PerformingPhysicianName = who.referring_physician
    ds.OperatorsName = who.operator
    person = Dataset()
    person.PersonIdentificationCodeSequence = Sequence(
        [_code_item(f"EMP{rng.integers(100000, 999999)}", who.referring_physician)]
    )
    person.InstitutionName = who.institution
    person.InstitutionAddress = f"1 Infirmary Row, {who.address.rsplit(', ', 1)[-1]}"
    ds.PerformingPhysicianIdentificationSequence = Sequence([person])
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = _STUDY_REF_CLASS
    referenced.ReferencedSOPInstanceUID = uids["study"]
    request = Dataset()
    request.RequestedProcedureID = f"RP{who.accession_number[3:]}"
    request.ScheduledProcedureStepID = f"SPS{who.accession_number[3:]}"
    request.AccessionNumber = who.accession_number
    request.RequestedProcedureDescription = f"CT chest for {who.dicom_name}"
    request.ReferencedStudySequence = Sequence([referenced])
    ds.RequestAttributesSequence = Sequence([request])


def _equipment(ds: Dataset, who: SampleIdentity) -> None:
    ds.Manufacturer = "ACME MEDICAL SYSTEMS"
    ds.ManufacturerModelName = "Helixon 64"
    ds.InstitutionName = who.institution
    ds.InstitutionAddress = f"1 Infirmary Row, {who.address.rsplit(', ', 1)[-1]}"
    ds.InstitutionalDepartmentName = "Radiology CT Suite 2"
    ds.StationName = f"CT{who.device_serial[-5:]}"
    ds.DeviceSerialNumber = who.device_serial
    ds.SoftwareVersions = "HX 7.2.1"


def _private(ds: Dataset, who: SampleIdentity) -> None:
    block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", who.dicom_name)
    block.add_new(0x11, "LO", who.patient_id)
    block.add_new(0x12, "DS", "0.75")
    nested = Dataset()
    nested.PatientName = who.dicom_name
    nested.PatientBirthDate = who.birth_date
    inner = nested.private_block(0x0009, PRIVATE_CREATOR, create=True)
    inner.add_new(0x20, "LO", who.operator)
    block.add_new(0x13, "SQ", Sequence([nested]))
    recon = ds.private_block(0x0019, RECON_CREATOR, create=True)
    recon.add_new(0x10, "LO", f"{ds.StationName} {who.device_serial}")
    recon.add_new(0x11, "SH", "B70f")


def _image(ds: Dataset, geo: Geometry, signed: bool) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.KVP = "120"
    ds.SliceThickness = _ds(geo.slice_mm)
    ds.SpacingBetweenSlices = _ds(geo.slice_mm)
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = _ds(geo.size * geo.pixel_mm)
    ds.GantryDetectorTilt = "0"
    ds.ConvolutionKernel = "B70f"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = geo.size
    ds.PixelSpacing = [_ds(geo.pixel_mm), _ds(geo.pixel_mm)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.WindowCenter = ["-600", "40"]
    ds.WindowWidth = ["1500", "400"]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"


def _series_base(
    who: SampleIdentity, rng: np.random.Generator, geo: Geometry, uids: dict[str, str], order: str
) -> Dataset:
    day = np.datetime64("2020-03-01") + int(rng.integers(0, 1000))
    date = str(day).replace("-", "")
    time = f"{rng.integers(7, 20):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}"
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.PatientPosition = "FFS" if order == "foot-to-head" else "HFS"
    _patient(ds, who, rng, date)
    _study(ds, who, uids, (date, time), rng)
    _equipment(ds, who)
    _image(ds, geo, signed=rng.random() < 0.5)
    _private(ds, who)
    return ds


def _instance_numbers(order: str, n: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Instance number of each slice (head to foot) and the slice held by each file name."""
    if order == "foot-to-head":
        return [n - k for k in range(n)], [n - 1 - j for j in range(n)]
    files = list(range(n))
    if order == "shuffled-files":
        files = rng.permutation(n).tolist()
    return [k + 1 for k in range(n)], files


def _reference(uid: str) -> Sequence:
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = uid
    return Sequence([item])


def write_series(
    folder: Path,
    who: SampleIdentity,
    phantom: Phantom,
    geo: Geometry,
    rng: np.random.Generator,
    order: str,
) -> list[str]:
    """Write one DICOM file per slice; return the SOP Instance UIDs, head to foot."""
    n = geo.slices
    uids = {"study": _uid(rng), "series": _uid(rng), "frame": _uid(rng)}
    sop = [_uid(rng) for _ in range(n)]
    ds = _series_base(who, rng, geo, uids, order)
    top = float(np.round(rng.uniform(-140.0, -40.0), 1))
    corner = -(geo.size - 1) / 2 * geo.pixel_mm
    table = float(np.round(rng.uniform(-20.0, 20.0), 1))
    numbers, files = _instance_numbers(order, n, rng)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "HELIXON_72"
    stored = phantom.hu.astype(np.int32) + 1024
    dtype = "<i2" if ds.PixelRepresentation else "<u2"
    base_time = ds.AcquisitionTime
    folder.mkdir(parents=True, exist_ok=True)
    for j, k in enumerate(files):
        z = top - k * geo.slice_mm
        ds.file_meta.MediaStorageSOPInstanceUID = sop[k]
        ds.SOPInstanceUID = sop[k]
        ds.InstanceNumber = numbers[k]
        ds.ImagePositionPatient = [_ds(corner), _ds(corner + table), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.ContentTime = ds.AcquisitionTime = f"{base_time}.{numbers[k] * 2500:06d}"
        ds.ReferencedImageSequence = _reference(sop[k - 1] if k > 0 else sop[1])
        ds.PixelData = stored[k].astype(dtype).tobytes()
        ds.save_as(folder / f"IM{j + 1:04d}.dcm", enforce_file_format=True)
    return sop


def save_mask(path: Path, labels: np.ndarray, sop_uids: list[str]) -> None:
    """``np.savez_compressed`` layout with fixed zip timestamps, so the bytes are reproducible."""
    arrays = {
        "labels": labels.astype(np.uint8),
        "sop_instance_uids": np.array(sop_uids, dtype="<U64"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, array, allow_pickle=False)


def diagnoses(n: int, rng: np.random.Generator) -> list[str]:
    """About two thirds covid19, at least one of each class when there are two or more cases."""
    n_covid = min(max(round(2 * n / 3), 1 if n else 0), n - 1 if n > 1 else n)
    labels = ["covid19"] * n_covid + ["normal"] * (n - n_covid)
    return [labels[i] for i in rng.permutation(n)]


def write_ct(root: Path, seed: int, ct_size: int, identities: list[SampleIdentity]) -> list[CtCase]:
    """Write every series, its mask, and ``labels.csv``; return one record per series."""
    geo = geometry(ct_size)
    dx = diagnoses(len(identities), rng_for(seed, "ct-diagnoses"))
    cases: list[CtCase] = []
    for i, (who, diagnosis) in enumerate(zip(identities, dx, strict=True)):
        name = f"SE{i + 1:04d}"
        phantom = chest_phantom(rng_for(seed, "ct-phantom", i), geo, diagnosis == "covid19")
        sop = write_series(
            root / name, who, phantom, geo, rng_for(seed, "ct-series", i), ORDERS[i % len(ORDERS)]
        )
        save_mask(root / "masks" / f"{name}.npz", phantom.labels, sop)
        cases.append(CtCase(name, who.patient_id, diagnosis, geo.slices))
    root.mkdir(parents=True, exist_ok=True)
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["patient_id", "diagnosis"])
        for case in cases:
            out.writerow([case.patient_id, case.diagnosis])
    return cases


__all__ = [
    "ORDERS",
    "PRIVATE_CREATOR",
    "CtCase",
    "geometry",
    "save_mask",
    "write_ct",
    "write_series",
]
