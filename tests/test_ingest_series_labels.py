"""Lesion labels beside DICOM CT series: NIfTI on the series grid, DICOM-SEG, RTSTRUCT.

An identified tree is fabricated here (pydicom CT series, a nibabel mask, a highdicom SEG,
an rt-utils RTSTRUCT) and ingested with ``mbc ingest --deid-key-file`` into ``ct-covid``:
each label must arrive as the case's ``labels`` at the voxels it was drawn on; a label off
its series' grid, or naming no class of the manifest, is quarantined and the series
published without it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from rt_utils import RTStructBuilder

from mbc_lib.data.ct import CTPatchDataset
from mbc_lib.ingest import convert, series_labels
from mbc_lib.store.reader import open_store
from mbc_lib.store.verify import verify_store

from .conftest import dicom_instance, identified_seg, run_mbc

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
N, ROWS, COLUMNS = 6, 32, 32  # slices, rows, columns (rt-utils needs square slices)
SPACING = (2.5, 0.8, 0.7)  # z, y, x mm
ORIGIN = (-12.0, -20.0, 100.0)  # LPS of voxel (0, 0, 0)


def _slice(
    patient: str, study: str, series: str, frame: str, z: int, pixel: tuple[float, float]
) -> Dataset:
    ds = dicom_instance(CT_STORAGE, study, series, frame)
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, z + 1
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Nowak^Anna", patient, "19580402"
    ds.PatientSex, ds.StudyID, ds.ReferringPhysicianName = "F", "1", ""
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20210314", "101112", "ACC-" + patient
    ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + SPACING[0] * z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = list(pixel), SPACING[0]
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024.0, 1.0
    rng = np.random.default_rng(z)
    ds.PixelData = rng.integers(0, 400, (ROWS, COLUMNS)).astype(np.int16).tobytes()
    return ds


def _series(folder: Path, patient: str, pixel: tuple[float, float] = SPACING[1:]) -> list[Dataset]:
    """A CT series of N slices in ``folder``, ordered by z (= store index)."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    slices = [_slice(patient, study, series, frame, z, pixel) for z in range(N)]
    for z, ds in enumerate(slices):
        ds.save_as(folder / f"IM{z:04d}.dcm", enforce_file_format=True)
    return slices


def _mask(seed: int) -> np.ndarray:
    """A z, y, x mask with a GGO block and a consolidation block, off-centre on every axis."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((N, ROWS, COLUMNS), np.uint8)
    z, y, x = (int(v) for v in rng.integers((1, 3, 3), (N - 3, ROWS - 12, COLUMNS - 14)))
    mask[z : z + 2, y : y + 6, x : x + 9] = 2
    mask[z + 1 : z + 3, y + 7 : y + 10, x + 2 : x + 5] = 3
    return mask


def _nifti(
    path: Path,
    mask: np.ndarray,
    shift_mm: float = 0.0,
    order: tuple[int, int, int] = (2, 1, 0),
    flip: tuple[int, ...] = (),
) -> None:
    """``mask`` (store z, y, x) as NIfTI, affine in RAS. File axis a holds store axis
    ``order[a]`` (default i, j, k = x, y, z, as most tools write), reversed for the axes in
    ``flip``; the affine says so, so every variant puts each voxel at the same place."""
    step = {0: (0.0, 0.0, SPACING[0]), 1: (0.0, SPACING[1], 0.0), 2: (SPACING[2], 0.0, 0.0)}
    data = mask.transpose(order)
    lps = np.eye(4)
    origin = np.array([ORIGIN[0] + shift_mm, ORIGIN[1], ORIGIN[2]])
    for a, axis in enumerate(order):
        column = np.array(step[axis])  # L, P, S mm per voxel along store ``axis``
        if a in flip:
            data = np.flip(data, axis=a)
            origin += column * (mask.shape[axis] - 1)
            column = -column
        lps[:3, a] = column
    lps[:3, 3] = origin
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    img = nib.Nifti1Image(np.ascontiguousarray(data), ras)
    img.header["descrip"] = b"Nowak^Anna mask"
    path.write_bytes(img.to_bytes())


def _volume(slices: list[Dataset]) -> convert.Volume:
    return convert.ct_volume(
        [convert.ct_slice(ds, 10**7) for ds in slices],
        lambda i: convert.dataset_hu(slices[i]),
    )


def _seg(path: Path, slices: list[Dataset], mask: np.ndarray, names: tuple[str, str]) -> None:
    segments = [
        hd.seg.SegmentDescription(
            segment_number=n + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, name in enumerate(names)
    ]
    pixels = np.stack([mask == 2, mask == 3], axis=-1)
    seg = identified_seg(
        slices, pixels, segments, series_number=90, manufacturer="General Hospital"
    )
    seg.save_as(path)


def _rtstruct(
    path: Path, series: Path, mask: np.ndarray, work: Path, name: str = "Consolidation"
) -> None:
    """An RTSTRUCT (rt-utils) with one ROI ``name`` drawn around the mask's value 3."""
    source = work / f"rt-{path.parent.name}"
    shutil.copytree(series, source)
    rt = RTStructBuilder.create_new(dicom_series_path=str(source))
    rt.add_roi(mask=(mask == 3).transpose(1, 2, 0), name=name)  # y, x, z
    rt.save(str(path))


@pytest.fixture
def tree(tmp_path) -> tuple[Path, dict[str, np.ndarray | None]]:
    """Identified input; the expected labels by patient folder (None: published without)."""
    src = tmp_path / "site-export"
    return src, make_site_export(src, tmp_path)


def make_site_export(src: Path, work: Path) -> dict[str, np.ndarray | None]:
    """A site's identified CT export with labels beside its series (NIfTI, SEG, RTSTRUCT),
    42 files; the labels each patient folder's case must hold (None: published without)."""
    expected: dict[str, np.ndarray | None] = {}
    # P1: NIfTI in the patient's folder, on the series' grid
    _series(src / "P1" / "SE1", "P1")
    expected["P1"] = _mask(1)
    _nifti(src / "P1" / "lesions.nii", expected["P1"])
    # P2: DICOM-SEG, segment labels in other letter case than the manifest's classes
    slices = _series(src / "P2" / "SE1", "P2")
    expected["P2"] = _mask(2)
    _seg(src / "P2" / "seg.dcm", slices, expected["P2"], ("Ground-Glass Opacity", "CONSOLIDATION"))
    # P3: RTSTRUCT drawn by rt-utils, its ROI named after a class in other letter case:
    # de-identification empties ROI names (Table E.1-1: Z) but gives a class name back
    _series(src / "P3" / "SE1", "P3", pixel=(0.75, 0.75))  # rt-utils: square pixels
    expected["P3"] = np.where(_mask(3) == 3, 3, 0).astype(np.uint8)
    _rtstruct(src / "P3" / "rtstruct.dcm", src / "P3" / "SE1", _mask(3), work)
    # P6: an RTSTRUCT whose ROI name is a person's note: emptied, so it names no class
    _series(src / "P6" / "SE1", "P6", pixel=(0.75, 0.75))
    _rtstruct(src / "P6" / "rt.dcm", src / "P6" / "SE1", _mask(6), work, "GTV Dr Nowak")
    expected["P6"] = None
    # P4: a NIfTI mask 1.4 mm beside the series' grid: quarantined, series published without
    _series(src / "P4" / "SE1", "P4")
    _nifti(src / "P4" / "SE1" / "shifted.nii", _mask(4), shift_mm=1.4)
    expected["P4"] = None
    # P5: a SEG whose segment names no class of the manifest
    slices = _series(src / "P5" / "SE1", "P5")
    _seg(src / "P5" / "seg.dcm", slices, _mask(5), ("tumour", "consolidation"))
    expected["P5"] = None
    return expected


def _ingest(src: Path, store: Path, key_file: Path, dataset: str = "ct-covid"):
    return run_mbc(
        "ingest", str(src), "--store", str(store), "--dataset", dataset,
        "--deid-key-file", str(key_file), "-q",
    )  # fmt: skip


def _reasons(quarantine: Path) -> dict[str, str]:
    lines = []
    for path in quarantine.rglob("reasons.jsonl"):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return {line["path"]: line["reason"] for line in lines}


def test_labels_beside_dicom_series_arrive_on_their_voxels(tree, tmp_path, key_file):
    src, expected = tree
    store = tmp_path / "store"
    proc = _ingest(src, store, key_file)
    assert proc.returncode == 0, proc.stderr
    assert "42 files seen: 39 published, 0 duplicate, 3 quarantined" in proc.stdout, proc.stdout
    assert "cases: 6 new" in proc.stdout
    reasons = _reasons(tmp_path / "store.quarantine")
    assert set(reasons) == {"P6/rt.dcm", "P4/SE1/shifted.nii", "P5/seg.dcm"}
    assert "ROI '' is not a class" in reasons["P6/rt.dcm"]
    assert "grid" in reasons["P4/SE1/shifted.nii"] and "1.4 mm" in reasons["P4/SE1/shifted.nii"]
    assert "'tumour' is not a class" in reasons["P5/seg.dcm"]
    s = open_store(store)
    found: dict[int, np.ndarray | None] = {}
    for case_id in s.case_ids("ct-covid"):
        labels = s.open_labels("ct-covid", case_id)
        image = s.image_array("ct-covid", case_id)[...]
        assert image.shape == (N, ROWS, COLUMNS)
        # the slices' pixels identify the patient's series: slice 0 is the same for all,
        # so tell the cases apart by which expected mask (if any) they hold
        found[len(found)] = None if labels is None else np.asarray(labels.values)
    masks = [m for m in found.values() if m is not None]
    assert len(masks) == 3
    for name in ("P1", "P2", "P3"):
        want = expected[name]
        assert any(np.array_equal(m, want) for m in masks), name
    for case_id in s.case_ids("ct-covid"):
        stats = s.case_attrs("ct-covid", case_id).get("label_stats")
        if s.labels_array("ct-covid", case_id) is not None:
            assert stats and stats["ggo_ml"] >= 0
    assert verify_store(store) == []
    again = _ingest(src, store, key_file)
    assert again.returncode == 0, again.stderr
    assert "42 files seen: 0 published, 39 duplicate, 3 quarantined" in again.stdout, again.stdout
    assert len(s.case_ids("ct-covid")) == 6
    patches = CTPatchDataset(store, "ct-covid", patch_size=(4, 16, 16), samples_per_case=1)
    assert len(patches) == 6
    labelled = [p for p in patches if "label" in p]
    assert len(labelled) == 3
    assert all(tuple(p["label"].shape) == (1, 4, 16, 16) for p in labelled)


@pytest.mark.parametrize(
    ("order", "flip"),
    [
        ((2, 1, 0), ()),
        ((2, 1, 0), (0, 2)),
        ((0, 1, 2), ()),
        ((1, 2, 0), (1,)),
        ((0, 2, 1), (0, 1, 2)),
    ],
)
def test_a_nifti_label_in_any_axis_order_and_direction_lands_on_its_voxels(tmp_path, order, flip):
    """Tools write masks with axes permuted or reversed; the affine says how. The label
    must come back in the series' own index order, each voxel where it was drawn."""
    vol = _volume(_series(tmp_path / "SE1", "P7"))
    mask = _mask(7)
    _nifti(tmp_path / "mask.nii", mask, order=order, flip=flip)
    classes = {0: "background", 2: "ground-glass opacity", 3: "consolidation"}
    placed = series_labels.nifti_on_grid((tmp_path / "mask.nii").read_bytes(), vol, classes, 10**8)
    assert np.array_equal(placed, mask)


def test_second_labels_and_labels_without_their_series_are_quarantined(tmp_path, key_file):
    """One label per series (the first that fits); a label whose series is absent or was
    refused is quarantined, and never published on its own."""
    src = tmp_path / "export"
    # Q1: a SEG and a NIfTI for one series: the SEG labels it, the NIfTI is a second label
    slices = _series(src / "Q1" / "SE1", "Q1")
    _seg(src / "Q1" / "seg.dcm", slices, _mask(1), ("ground-glass opacity", "consolidation"))
    _nifti(src / "Q1" / "lesions.nii", _mask(1))
    # Q2: a SEG of a series that is not in this input
    slices = _series(tmp_path / "elsewhere" / "SE1", "Q2")
    (src / "Q2").mkdir()
    _seg(src / "Q2" / "seg.dcm", slices, _mask(2), ("ground-glass opacity", "consolidation"))
    # Q3: a SEG of a series one of whose slices is refused (no pixel spacing)
    slices = _series(src / "Q3" / "SE1", "Q3")
    _seg(src / "Q3" / "seg.dcm", slices, _mask(3), ("ground-glass opacity", "consolidation"))
    broken = pydicom.dcmread(src / "Q3" / "SE1" / "IM0002.dcm")
    del broken.PixelSpacing
    broken.save_as(src / "Q3" / "SE1" / "IM0002.dcm")
    store = tmp_path / "store"
    proc = _ingest(src, store, key_file)
    assert proc.returncode == 0, proc.stderr
    assert f"{2 * N + 4} files seen: {N + 1} published, 0 duplicate, {N + 3} quarantined" in (
        proc.stdout
    ), proc.stdout
    reasons = _reasons(tmp_path / "store.quarantine")
    assert "a second label for its series (labelled by Q1/seg.dcm)" in reasons["Q1/lesions.nii"]
    assert "no CT series in this input is the one it references" in reasons["Q2/seg.dcm"]
    assert reasons["Q3/seg.dcm"] == "its series was refused"
    assert "slice refused" in reasons["Q3/SE1/IM0002.dcm"]
    s = open_store(store)
    (case_id,) = s.case_ids("ct-covid")
    assert np.array_equal(np.asarray(s.labels_array("ct-covid", case_id)), _mask(1))
    assert verify_store(store) == []


def test_a_dataset_with_a_source_layout_still_takes_labels_beside_its_series(tmp_path, key_file):
    """covid19-20 names its NIfTI volumes and masks by pattern; a NIfTI beside a DICOM
    series is that series' label, and one that is neither is refused as outside the layout."""
    src = tmp_path / "covid"
    _series(src / "P1" / "SE1", "P1")
    lesion = (_mask(1) > 0).astype(np.uint8)
    _nifti(src / "P1" / "lesion.nii", lesion)
    (src / "Train").mkdir()
    ct = nib.Nifti1Image(np.full((16, 16, 4), -700, np.int16), np.diag([-0.8, -0.8, 2.0, 1.0]))
    ct.to_filename(src / "Train" / "volume-covid19-A-0001_ct.nii.gz")
    (src / "notes").mkdir()
    _nifti(src / "notes" / "draft.nii", lesion)
    store = tmp_path / "store"
    proc = _ingest(src, store, key_file, "covid19-20")
    assert proc.returncode == 0, proc.stderr
    assert f"{N + 3} files seen: {N + 2} published, 0 duplicate, 1 quarantined" in proc.stdout
    assert "cases: 2 new" in proc.stdout
    reasons = _reasons(tmp_path / "store.quarantine")
    assert "outside the manifest's layout" in reasons["notes/draft.nii"]
    s = open_store(store)
    labelled = [c for c in s.case_ids("covid19-20") if s.labels_array("covid19-20", c) is not None]
    (case_id,) = labelled
    assert np.array_equal(np.asarray(s.labels_array("covid19-20", case_id)), lesion)
    assert verify_store(store) == []


def test_rtstruct_contours_fill_the_voxels_they_were_drawn_from(tmp_path):
    """rt-utils' contours of a mask, rasterised on the series' grid, give the mask back
    (square pixels: rt-utils 1.2.7 swaps the two Pixel Spacing values when it writes)."""
    slices = _series(tmp_path / "SE1", "P9", pixel=(0.75, 0.75))
    mask = _mask(9)
    _rtstruct(tmp_path / "rtstruct.dcm", tmp_path / "SE1", mask, tmp_path)
    vol = _volume(slices)
    classes = {0: "background", 3: "consolidation"}
    labels = series_labels.rtstruct_on_grid((tmp_path / "rtstruct.dcm").read_bytes(), vol, classes)
    assert np.array_equal(labels, np.where(mask == 3, 3, 0))
    with pytest.raises(series_labels.LabelRefused, match="'Consolidation' is not a class"):
        series_labels.rtstruct_on_grid((tmp_path / "rtstruct.dcm").read_bytes(), vol, {0: "bg"})
    vol.origin = [vol.origin[0], vol.origin[1], vol.origin[2] + 1.0]  # planes 1 mm off
    with pytest.raises(series_labels.LabelRefused, match="off the series' slice planes"):
        series_labels.rtstruct_on_grid((tmp_path / "rtstruct.dcm").read_bytes(), vol, classes)
