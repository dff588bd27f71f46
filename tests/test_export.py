"""Results that leave the platform: store geometry as affines, MetaTensors, NIfTI, DICOM-SEG,
and a cohort as an nnU-Net raw dataset with a MONAI datalist, each checked by the tool that
reads it (nibabel, highdicom and dciodvfy, nnU-Net's own integrity check, MONAI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import load_decathlon_datalist
from monai.transforms import Compose, LoadImaged, Orientationd, SaveImage, Spacingd

from mbc_lib.data import CTPatchDataset, CTSliceDataset, CTVolumeDataset
from mbc_lib.errors import MbcError
from mbc_lib.export import export_cohort, write_case_nifti, write_dicom_seg
from mbc_lib.ingest import convert, series_labels
from mbc_lib.phi_gate import check_case_attrs
from mbc_lib.sample.store import build_sample_store
from mbc_lib.store.reader import open_store
from tests.conftest import run_mbc

CT = "ct-covid"
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("export") / "work"
    build_sample_store(work, seed=3, n_fundus=2, n_ct=6, ct_size=64, include_real_dicom=False)
    return work


@pytest.fixture(scope="module")
def store(work):
    return open_store(work / "store")


@pytest.fixture(scope="module")
def case(store) -> str:
    catalog = store.catalog(CT)
    return str(catalog.loc[catalog["consolidation_ml"].idxmax(), "case_id"])


def series_slices(work: Path, series_uid: str) -> list[pydicom.Dataset]:
    """The de-identified slice files of one series (what the society uploaded), in z order."""
    found = [
        ds
        for path in sorted((work / "deid" / CT).rglob("*.dcm"))
        if (ds := pydicom.dcmread(path, stop_before_pixels=True)).SeriesInstanceUID == series_uid
    ]
    normal = np.cross(*np.reshape(np.asarray(found[0].ImageOrientationPatient, float), (2, 3)))
    return sorted(found, key=lambda ds: float(np.dot(normal, ds.ImagePositionPatient)))


def world(affine: np.ndarray, index) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(index, float) + affine[:3, 3]


# -- the store's geometry and source references -----------------------------------------------
def test_store_keeps_each_slices_pseudonymous_source_uid(store, work, case):
    attrs = store.case_attrs(CT, case)
    slices = series_slices(work, attrs["series_uid"])
    assert attrs["sop_instance_uids"] == [str(ds.SOPInstanceUID) for ds in slices]
    assert attrs["frame_of_reference_uid"] == str(slices[0].FrameOfReferenceUID)
    assert len(set(attrs["sop_instance_uids"])) == store.image_array(CT, case).shape[0]
    assert check_case_attrs(attrs, store.manifest(CT)) == []
    original = {**attrs, "sop_instance_uids": ["1.2.840.113619.2.55.3.1"] * len(slices)}
    assert "case sop_instance_uids are not all re-derived UIDs" in check_case_attrs(
        original, store.manifest(CT)
    )


def test_affine_puts_every_slice_where_its_dicom_header_says(store, work, case):
    attrs = store.case_attrs(CT, case)
    ras, lps = store.affine(CT, case), store.affine(CT, case, space="LPS")
    for z, ds in enumerate(series_slices(work, attrs["series_uid"])):
        position = np.asarray(ds.ImagePositionPatient, float)
        np.testing.assert_allclose(world(lps, (z, 0, 0)), position, atol=1e-3)
        np.testing.assert_allclose(world(ras, (z, 0, 0)), position * LPS_TO_RAS, atol=1e-3)
        row = np.asarray(ds.ImageOrientationPatient[:3], float)  # along a row: x
        step = float(ds.PixelSpacing[1])
        np.testing.assert_allclose(world(lps, (z, 0, 1)) - position, row * step, atol=1e-4)
    # level 1 averages 2 x 2 blocks in y and x: its voxel (0, 0, 0) is the block's centre
    level1 = store.affine(CT, case, level=1)
    np.testing.assert_allclose(world(level1, (0, 0, 0)), world(ras, (0, 0.5, 0.5)), atol=1e-6)


# -- MetaTensors for MONAI --------------------------------------------------------------------
def test_samples_are_meta_tensors_placed_in_the_patient(store, case):
    volume = CTVolumeDataset(store, query=f"case_id == '{case}'")[0]
    affine = store.affine(CT, case)
    np.testing.assert_allclose(volume["image"].affine.numpy(), affine)
    np.testing.assert_allclose(volume["label"].affine.numpy(), affine)
    np.testing.assert_array_equal(volume["image"][0].numpy(), store.image_array(CT, case)[...])
    patches = CTPatchDataset(store, query=f"case_id == '{case}'", patch_size=(8, 16, 16))
    patch = patches[1]
    np.testing.assert_allclose(
        world(patch["image"].affine.numpy(), (0, 0, 0)), world(affine, patch["start"])
    )
    slices = CTSliceDataset(store, query=f"case_id == '{case}'")
    z = 7
    image = slices[z]["image"]  # (1, y, x); the affine's third column is the slice normal
    np.testing.assert_allclose(world(image.affine.numpy(), (3, 5, 0)), world(affine, (z, 3, 5)))


def test_monai_spacing_orientation_and_save_image_read_the_affine(store, case, tmp_path):
    keys = ["image", "label"]
    resample = Compose(
        [
            Orientationd(keys, axcodes="RAS", labels=None),
            Spacingd(keys, pixdim=(2.0, 2.0, 4.0), mode=("bilinear", "nearest")),
        ]
    )
    sample = resample(CTVolumeDataset(store, query=f"case_id == '{case}'")[0])
    np.testing.assert_allclose(np.diag(sample["image"].affine.numpy())[:3], [2.0, 2.0, 4.0])
    extent = np.asarray(store.case_attrs(CT, case)["spacing"]) * store.image_array(CT, case).shape
    np.testing.assert_allclose(
        np.asarray(sample["image"].shape[1:]) * [2.0, 2.0, 4.0], extent[::-1], atol=4.0
    )
    # Orientationd moves axes, not the patient: every voxel keeps its place and its value
    oriented = Orientationd(keys, axcodes="RAS", labels=None)(
        CTVolumeDataset(store, query=f"case_id == '{case}'")[0]
    )
    inverse = np.linalg.inv(oriented["image"].affine.numpy())
    hu = store.image_array(CT, case)
    for index in [(0, 0, 0), (3, 10, 50), (hu.shape[0] - 1, 63, 2)]:
        ijk = tuple(np.rint(world(inverse, world(store.affine(CT, case), index))).astype(int))
        assert float(oriented["image"][0][ijk]) == float(hu[index])
    SaveImage(output_dir=tmp_path, output_postfix="seg", separate_folder=False)(sample["label"])
    saved = nib.load(tmp_path / f"{case}_seg.nii.gz")
    np.testing.assert_allclose(saved.affine, sample["label"].affine.numpy(), atol=1e-4)


# -- NIfTI ------------------------------------------------------------------------------------
def test_nifti_export_opens_aligned(store, case, tmp_path):
    image = nib.load(write_case_nifti(store, CT, case, tmp_path / "image.nii.gz"))
    labels = nib.load(write_case_nifti(store, CT, case, tmp_path / "labels.nii.gz", part="labels"))
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")  # viewers' and nnU-Net's order
    assert image.header.get_sform(coded=True)[1] == 1 and labels.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, labels.affine)
    hu, mask = store.image_array(CT, case)[...], store.labels_array(CT, case)[...]
    data, affine = np.asarray(image.dataobj), store.affine(CT, case)
    inverse = np.linalg.inv(image.affine)
    for index in [(0, 0, 0), (5, 10, 20), (hu.shape[0] - 1, 63, 1)]:  # (z, y, x) in the store
        ijk = np.rint(world(inverse, world(affine, index))).astype(int)
        assert data[tuple(ijk)] == hu[index]
        assert np.asarray(labels.dataobj)[tuple(ijk)] == mask[index]
    with pytest.raises(MbcError, match="not on case"):
        write_case_nifti(store, CT, case, tmp_path / "x.nii.gz", np.zeros((2, 2, 2)), part="labels")


# -- DICOM-SEG --------------------------------------------------------------------------------
def dciodvfy(path: Path) -> str:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return result.stdout + result.stderr


def test_dicom_seg_refers_to_the_pseudonymous_series_and_validates(store, case, tmp_path):
    import highdicom as hd

    labels = store.labels_array(CT, case)[...]
    path = write_dicom_seg(store, CT, case, labels, tmp_path / "seg.dcm", algorithm="test model")
    report = dciodvfy(path)
    assert "Segmentation" in report
    assert [line for line in report.splitlines() if line.startswith("Error")] == []
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(path))
    attrs = store.case_attrs(CT, case)
    assert seg.StudyInstanceUID == attrs["study_uid"] and seg.PatientID == attrs["patient"]
    assert seg.FrameOfReferenceUID == attrs["frame_of_reference_uid"]
    assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} == {attrs["series_uid"]}
    names = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    assert names == ["normal lung", "ground-glass opacity", "consolidation"]
    # what the ingest reads back from a SEG beside its series is the array that was written
    volume = convert.Volume(
        image=store.image_array(CT, case)[...],
        spacing=tuple(attrs["spacing"]),
        origin=attrs["origin"],
        direction=attrs["direction"],
        sop_uids=attrs["sop_instance_uids"],
    )
    classes = {v: spec["name"] for v, spec in store.manifest(CT).segmentation["classes"].items()}
    back = series_labels.seg_on_grid(path.read_bytes(), volume, classes)
    np.testing.assert_array_equal(back, labels)


def test_dicom_seg_refuses_what_it_cannot_place(store, case, tmp_path):
    labels = store.labels_array(CT, case)[...]
    with pytest.raises(MbcError, match="not on case"):
        write_dicom_seg(store, CT, case, labels[1:], tmp_path / "a.dcm")
    with pytest.raises(MbcError, match=r"label values \[7\]"):
        write_dicom_seg(store, CT, case, np.full_like(labels, 7), tmp_path / "b.dcm")
    assert not list(tmp_path.iterdir())


# -- a cohort for nnU-Net and MONAI -----------------------------------------------------------
def verify_with_nnunet(raw: Path, dataset_id: int, tmp_path: Path) -> subprocess.CompletedProcess:
    """nnU-Net's own fingerprint extraction with its dataset integrity check."""
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(tmp_path / "preprocessed"),
        "nnUNet_results": str(tmp_path / "results"),
    }
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    script = shutil.which("nnUNetv2_extract_fingerprint", path=search)
    assert script, "nnunetv2 is not installed (pip install -e '.[ml,test]')"
    command = [script, "-d", str(dataset_id), "-np", "1", "--verify_dataset_integrity"]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def test_cohort_export_passes_nnunet_integrity_check_and_loads_in_monai(store, tmp_path):
    root = export_cohort(store, CT, tmp_path / "raw", dataset_id=501, progress=False)
    assert root.name == "Dataset501_CtCovid"
    catalog = store.catalog(CT)
    spec = json.loads((root / "dataset.json").read_text())
    assert spec["labels"] == {
        "background": 0,
        "normal lung": 1,
        "ground-glass opacity": 2,
        "consolidation": 3,
    }
    assert spec["numTraining"] == catalog["split"].isin(["train", "val"]).sum()
    assert len(list((root / "imagesTs").iterdir())) == (catalog["split"] == "test").sum() > 0
    fold = json.loads((root / "splits_final.json").read_text())[0]
    assert set(fold["val"]) == set(catalog.loc[catalog["split"] == "val", "case_id"])
    checked = verify_with_nnunet(root.parent, 501, tmp_path)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]

    training = load_decathlon_datalist(root / "datalist.json", data_list_key="training")
    first = training[0]
    keys = ["image", "label"]
    loaded = Compose(
        [LoadImaged(keys, ensure_channel_first=True), Orientationd(keys, "RAS", labels=None)]
    )(first)
    case = Path(first["label"]).name.removesuffix(".nii.gz")
    sample = Orientationd(["image"], "RAS", labels=None)(
        CTVolumeDataset(store, query=f"case_id == '{case}'")[0]
    )
    torch.testing.assert_close(
        torch.as_tensor(loaded["image"]).float(), torch.as_tensor(sample["image"]).float()
    )
    np.testing.assert_allclose(loaded["image"].affine.numpy(), sample["image"].affine.numpy())

    # the check is real: a label file on another grid fails it
    broken = tmp_path / "broken"
    shutil.copytree(root.parent, broken)
    label = next((broken / root.name / "labelsTr").iterdir())
    bad = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(bad.dataobj)[:-1], bad.affine), label)
    assert verify_with_nnunet(broken, 501, tmp_path).returncode != 0

    with pytest.raises(MbcError, match="exists"):
        export_cohort(store, CT, tmp_path / "raw", dataset_id=501, progress=False)


def test_export_cli(work, tmp_path):
    store = str(work / "store")
    done = run_mbc(
        "export", "cohort", store, "--dataset", CT, "--out", str(tmp_path), "--id", "7", "-q",
        "--query", "diagnosis == 'covid19'",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "training" in done.stdout and "Dataset007_CtCovid" in done.stdout
    cohort = json.loads((tmp_path / "Dataset007_CtCovid" / "cohort.json").read_text())
    covid = open_store(store).catalog(CT, query="diagnosis == 'covid19'")
    covid = covid[covid["split"].isin(["train", "val", "test"])]
    assert {c["case_id"] for c in cohort["cases"]} == set(covid["case_id"])
    bad = run_mbc("export", "cohort", store, "--dataset", CT, "--out", str(tmp_path), "--id", "0")
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0
    assert "1 to 999" in bad.stderr
