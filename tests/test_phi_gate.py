"""The PHI gate finds identifying content wherever it hides, and passes clean objects."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image, PngImagePlugin
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mbc_lib import phi_gate
from mbc_lib.deid.keys import DeidKey
from mbc_lib.deid.profile import METHOD_CODES
from mbc_lib.manifests import get_manifest

KEY = DeidKey(b"k" * 32)


def clean_ct() -> Dataset:
    """CT_small made conformant by hand (independently of mbc deid)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.remove_private_tags()
    for elem in list(ds.iterall()):
        if elem.VR == "UI" and elem.value and not str(elem.value).startswith("1.2.840.10008"):
            elem.value = KEY.uid(str(elem.value))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = ds.PatientName = KEY.pseudonym("CompressedSamples^CT1")
    for keyword in (
        "OtherPatientIDsSequence",
        "PatientBirthDate",
        "InstitutionName",
        "DataSetTrailingPadding",
    ):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PatientIdentityRemoved = "YES"
    codes = []
    for value, meaning in METHOD_CODES:  # the profile and the three options it keeps with
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, "DCM", meaning
        codes.append(code)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    return ds


def test_an_object_is_checked_against_the_options_it_records():
    ds = clean_ct()
    ds.ImageComments = "kept and cleaned under Clean Descriptors"
    assert phi_gate.check_dicom_dataset(ds) == []
    ds.DeidentificationMethodCodeSequence = Sequence(ds.DeidentificationMethodCodeSequence[:1])
    assert "ImageComments should have been removed" in phi_gate.check_dicom_dataset(ds)


def test_clean_dicom_passes():
    assert phi_gate.check_dicom_dataset(clean_ct()) == []


def test_raw_dicom_is_flagged_on_every_count():
    findings = phi_gate.check_dicom_file(get_testdata_file("CT_small.dcm"))
    text = "\n".join(findings)
    for expected in (
        "Patient Identity Removed",
        "113100",
        "PatientName is not a pseudonym",
        "private attribute",
        "StudyInstanceUID holds an original",
        "OtherPatientIDsSequence should have been removed",
    ):
        assert expected in text


@pytest.mark.parametrize("where", ["top", "nested"])
def test_names_and_private_tags_in_sequences_are_found(where):
    ds = clean_ct()
    target = ds
    if where == "nested":
        outer, inner = Dataset(), Dataset()
        outer.RequestAttributesSequence = Sequence([inner])
        ds.ReferencedStudySequence = Sequence([outer])
        target = inner
    target.PerformingPhysicianName = "WHO^DOCTOR"
    target.add_new(0x00091010, "LO", "ACME")
    target.add_new(0x00091001, "LO", "secret")
    findings = phi_gate.check_dicom_dataset(ds)
    assert any("PerformingPhysicianName" in f for f in findings)
    assert any("private attribute" in f for f in findings)
    if where == "nested":
        assert any("depth" in f for f in findings)


def test_original_uid_in_reference_is_found():
    ds = clean_ct()
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
    ds.ReferencedImageSequence = Sequence([ref])
    findings = phi_gate.check_dicom_dataset(ds)
    assert findings == [
        "ReferencedSOPInstanceUID (in a sequence, depth 1) holds an original (not re-derived) UID"
    ]


def _jpeg(**save_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(buf, "JPEG", **save_kwargs)
    return buf.getvalue()


def test_jpeg_containers():
    assert phi_gate.check_jpeg(_jpeg()) == []
    exif = Image.Exif()
    exif[0x013B] = "Jane Doe"  # Artist
    assert any("EXIF" in f for f in phi_gate.check_jpeg(_jpeg(exif=exif)))
    assert phi_gate.check_jpeg(_jpeg(comment="Jane Doe")) == ["JPEG comment (COM) present"]
    assert any("APP1" in f for f in phi_gate.check_jpeg(_jpeg(xmp=b"<x:xmpmeta/>")))
    assert phi_gate.check_jpeg(b"\xff\xd8\xff\xe0\x00")[0].startswith("malformed")


def test_png_chunks():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "PNG")
    assert phi_gate.check_png(buf.getvalue()) == []
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "PNG", pnginfo=info)
    assert phi_gate.check_png(buf.getvalue()) == ["PNG tEXt chunk present"]


def test_label_table_needs_pseudonyms_and_declared_columns():
    manifest = get_manifest("fundus-glaucoma")
    good = f"path,patient_id,eye,glaucoma,cdr\nimages/a.JPG,{KEY.pseudonym('x')},L,1,0.7\n"
    assert phi_gate.check_labels_csv(good.encode(), manifest) == []
    bad = "path,patient_id,eye,glaucoma,cdr,notes\nimages/a.JPG,HSP123456,L,1,0.7,Jane\n"
    findings = phi_gate.check_labels_csv(bad.encode(), manifest)
    assert "label column 'notes' is not declared in the fundus-glaucoma manifest" in findings
    assert "line 2: patient_id is not a pseudonym" in findings


def test_mask_needs_rederived_uids():
    buf = io.BytesIO()
    np.savez(
        buf,
        labels=np.zeros((2, 4, 4), np.uint8),
        sop_instance_uids=np.array(["1.2.3.4", KEY.uid("x")]),
    )
    assert phi_gate.check_mask_npz(buf.getvalue()) == [
        "mask refers to original (not re-derived) SOP Instance UIDs"
    ]
