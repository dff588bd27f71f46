"""NIfTI CT in the layouts public datasets ship, fabricated here with nibabel (issue 9).

COVID-19-20 (``Train/volume-covid19-A-0003_ct.nii.gz`` + ``_seg``) and MosMedData
(``studies/CT-1/study_0255.nii.gz``, ``masks/study_0255_mask.nii.gz``,
``dataset_registry.csv``), each as downloaded: identifying text in the NIfTI headers, folders
not named after the dataset. ``mbc ingest --deid-key-file`` must publish every case with its
mask, a lesion's position in patient coordinates unchanged.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mbc_lib.store.reader import open_store

from .conftest import run_mbc

SECRET = "Kowalski^Jan 1958-04-02"
SHAPE = (24, 20, 10)  # i, j, k as NIfTI stores them


def _affine(shift: float = 0.0) -> np.ndarray:
    t = np.deg2rad(8.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-0.75, 0.8, 2.5])  # radiological x, as scanners write
    affine[:3, 3] = [150.0 + shift, -120.0, -300.0]
    return affine


def _lesion_center(seed: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    return tuple(int(rng.integers(4, n - 4)) for n in SHAPE)  # type: ignore[return-value]


def _save(img: nib.Nifti1Image, path: Path, identified: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if identified:
        img.header["descrip"] = SECRET.encode()
        img.header["aux_file"] = b"MRN-55501"
        img.header.extensions.append(nib.nifti1.Nifti1Extension(6, SECRET.encode()))
    path.write_bytes(gzip.compress(img.to_bytes()))


def _case(path: Path, seed: int, mask_path: Path | None, affine=None) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    ct = rng.normal(-800, 40, SHAPE).round().astype(np.int16)
    center = _lesion_center(seed)
    lesion = np.zeros(SHAPE, np.uint8)
    i, j, k = center
    lesion[i - 2 : i + 3, j - 2 : j + 3, k - 1 : k + 2] = 1
    ct[lesion == 1] = -300
    _save(nib.Nifti1Image(ct, _affine()), path)
    if mask_path is not None:
        _save(nib.Nifti1Image(lesion, _affine() if affine is None else affine), mask_path)
    return center


@pytest.fixture
def covid19_20(tmp_path) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    root = tmp_path / "COVID-19-20_v2"
    return root, make_covid19_20(root)


def make_covid19_20(root: Path) -> dict[str, tuple[int, int, int]]:
    """COVID-19-20 as downloaded: two training cases with masks, one validation volume;
    each training case's lesion centre (voxel index) by case key."""
    centers = {}
    for n, case in enumerate(("A-0003", "A-0011")):
        stem = f"volume-covid19-{case}"
        centers[case] = _case(
            root / "Train" / f"{stem}_ct.nii.gz", n, root / "Train" / f"{stem}_seg.nii.gz"
        )
    _case(root / "Validation" / "volume-covid19-A-0100_ct.nii.gz", 9, None)
    return centers


def _ingest(src: Path, store: Path, dataset: str, key_file: Path, *extra: str):
    return run_mbc(
        "ingest", str(src), "--store", str(store), "--dataset", dataset,
        "--deid-key-file", str(key_file), "-q", *extra,
    )  # fmt: skip


def _lps(attrs: dict, index: tuple[int, int, int]) -> np.ndarray:
    origin, direction, spacing = (np.array(attrs[k]) for k in ("origin", "direction", "spacing"))
    return origin + sum(n * s * d for n, s, d in zip(index, spacing, direction, strict=True))


def _store_bytes(store: Path) -> bytes:
    return b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())


def test_covid19_20_as_downloaded_publishes_every_case_with_its_mask(
    covid19_20, tmp_path, key_file
):
    src, centers = covid19_20
    store = tmp_path / "store"
    proc = _ingest(src, store, "covid19-20", key_file)
    assert proc.returncode == 0, proc.stderr
    assert "5 files seen: 5 published, 0 duplicate, 0 quarantined" in proc.stdout
    assert "cases: 3 new" in proc.stdout
    s = open_store(store)
    catalog = s.catalog("covid19-20")
    assert len(catalog) == 3 and catalog["lesion_ml"].notna().sum() == 2
    masked = 0
    for case_id in s.case_ids("covid19-20"):
        attrs = s.case_attrs("covid19-20", case_id)
        labels = s.labels_array("covid19-20", case_id)
        image = s.image_array("covid19-20", case_id)[...]
        assert image.shape == SHAPE[::-1] and image.dtype == np.int16
        if labels is None:
            continue
        masked += 1
        # the lesion's centre is where it was in patient coordinates
        z, y, x = (int(v.mean()) for v in np.nonzero(labels[...]))
        ras = _lps(attrs, (z, y, x)) * [-1, -1, 1]
        expected = [_affine() @ [*c, 1.0] for c in centers.values()]
        assert min(np.abs(ras - e[:3]).max() for e in expected) < 1e-3
        assert image[z, y, x] == -300
    assert masked == 2
    assert SECRET.encode() not in _store_bytes(store) and b"MRN-55501" not in _store_bytes(store)
    assert run_mbc("verify", str(store), "-q").returncode == 0
    again = _ingest(src, store, "covid19-20", key_file)
    assert "0 published, 5 duplicate" in again.stdout


def test_identified_nifti_is_refused_without_deid(covid19_20, tmp_path):
    src, _ = covid19_20
    proc = run_mbc("ingest", str(src), "--store", str(tmp_path / "s"), "--dataset", "covid19-20")
    assert proc.returncode == 3
    assert "NIfTI header field descrip holds text" in proc.stderr
    assert not (tmp_path / "s" / "covid19-20").exists() or not any(
        (tmp_path / "s" / "covid19-20").rglob("cases/*")
    )


def test_a_mask_off_its_volumes_grid_is_quarantined_and_the_volume_published(tmp_path, key_file):
    src = tmp_path / "download"
    _case(src / "volume-covid19-A-0007_ct.nii.gz", 1, src / "volume-covid19-A-0007_seg.nii.gz",
          affine=_affine(shift=2.0))  # fmt: skip
    store = tmp_path / "store"
    proc = _ingest(src, store, "covid19-20", key_file)
    assert proc.returncode == 0, proc.stderr
    assert "1 published, 0 duplicate, 1 quarantined" in proc.stdout
    reasons = [
        json.loads(line)
        for p in (tmp_path / "store.quarantine").rglob("reasons.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert len(reasons) == 1 and reasons[0]["path"].endswith("_seg.nii.gz")
    assert "mask does not lie on its volume's grid: affine differs" in reasons[0]["reason"]
    assert "not resampled" in reasons[0]["reason"]
    s = open_store(store)
    (case_id,) = s.case_ids("covid19-20")
    assert s.labels_array("covid19-20", case_id) is None


def make_mosmeddata(root: Path) -> None:
    """MosMedData as downloaded: studies/CT-n/, masks/ for CT-1, dataset_registry.csv."""
    rows = []
    for n, (category, study) in enumerate([("CT-0", "0001"), ("CT-1", "0255"), ("CT-3", "1002")]):
        volume = root / "studies" / category / f"study_{study}.nii.gz"
        mask = root / "masks" / f"study_{study}_mask.nii.gz" if category == "CT-1" else None
        _case(volume, n, mask)
        listed = f"COVID19_1110/studies/{category}/study_{study}.nii.gz"
        mask_cell = f"COVID19_1110/masks/study_{study}_mask.nii.gz" if mask else ""
        rows.append([f"study_{study}", category, listed, mask_cell])
    with open(root / "dataset_registry.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_id", "category", "study_file", "mask_file"])
        writer.writerows(rows)


def test_mosmeddata_registry_gives_severity_and_diagnosis(tmp_path, key_file):
    root = tmp_path / "COVID19_1110"
    make_mosmeddata(root)
    store = tmp_path / "store"
    proc = _ingest(root, store, "mosmeddata", key_file)
    assert proc.returncode == 0, proc.stderr
    assert "5 files seen: 5 published, 0 duplicate, 0 quarantined" in proc.stdout
    catalog = open_store(store).catalog("mosmeddata").sort_values("severity")
    assert catalog["severity"].tolist() == ["CT-0", "CT-1", "CT-3"]
    assert catalog["diagnosis"].tolist() == ["normal", "covid19", "covid19"]
    assert catalog["lesion_ml"].notna().tolist() == [False, True, False]
    assert run_mbc("verify", str(store), "-q").returncode == 0


def test_a_registry_value_the_manifest_does_not_map_refuses_the_table(tmp_path, key_file):
    root = tmp_path / "mosmed"
    _case(root / "studies" / "CT-9" / "study_0001.nii.gz", 0, None)
    (root / "dataset_registry.csv").write_text(
        "study_id,category,study_file,mask_file\nstudy_0001,CT-9,studies/CT-9/study_0001.nii.gz,\n"
    )
    proc = _ingest(root, tmp_path / "store", "mosmeddata", key_file)
    assert proc.returncode == 0
    # the table is listed (never copied), its volume held back: no case without its labels
    assert "2 files seen: 0 published, 0 duplicate, 2 quarantined" in proc.stdout


def test_nifti_cases_feed_the_patch_loader_and_the_viewer(covid19_20, tmp_path, key_file):
    from matplotlib.figure import Figure

    from mbc_lib.data.ct import CTPatchDataset
    from mbc_lib.viewers import render_ct_slice

    src, _ = covid19_20
    store = tmp_path / "store"
    assert _ingest(src, store, "covid19-20", key_file).returncode == 0
    patches = CTPatchDataset(store, "covid19-20", patch_size=(8, 16, 16), samples_per_case=2)
    assert len(patches) == 6
    item = patches[0]
    assert tuple(item["image"].shape) == (1, 8, 16, 16)
    assert set(np.unique(item["label"].numpy()).tolist()) <= {0, 1}
    s = open_store(store)
    case = next(c for c in s.case_ids("covid19-20") if s.labels_array("covid19-20", c))
    fig = render_ct_slice(s.open_case("covid19-20", case), s.open_labels("covid19-20", case))
    assert isinstance(fig, Figure)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["lesion"]


def make_nnunet(root: Path, labels: dict) -> None:
    """The nnU-Net raw layout: imagesTr, labelsTr, imagesTs and a dataset.json."""
    for n, case in enumerate(("lung_001", "lung_002")):
        _case(root / "imagesTr" / f"{case}_0000.nii.gz", n, root / "labelsTr" / f"{case}.nii.gz")
    _case(root / "imagesTs" / "lung_101_0000.nii.gz", 7, None)
    doc = {
        "name": "Lungs of Dr Kowalski's patients",
        "description": "exported by Jan Kowalski",
        "licence": "internal",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(doc))


def test_nnunet_raw_layout_with_its_dataset_json(tmp_path, key_file):
    root = tmp_path / "Dataset001_Lungs"
    make_nnunet(root, {"background": 0, "lesion": 1})
    store = tmp_path / "store"
    proc = _ingest(root, store, "nnunet-example", key_file)
    assert proc.returncode == 0, proc.stderr
    assert "6 files seen: 6 published, 0 duplicate, 0 quarantined" in proc.stdout
    catalog = open_store(store).catalog("nnunet-example")
    assert len(catalog) == 3 and catalog["lesion_ml"].notna().sum() == 2
    assert b"Kowalski" not in _store_bytes(store)
    assert run_mbc("verify", str(store), "-q").returncode == 0


def test_nnunet_labels_that_disagree_with_the_manifest_hold_back_the_masks(tmp_path, key_file):
    root = tmp_path / "Dataset002_Other"
    make_nnunet(root, {"0": "background", "1": "tumour"})  # nnU-Net v1 form
    proc = _ingest(root, tmp_path / "store", "nnunet-example", key_file)
    assert proc.returncode == 0, proc.stderr
    assert "3 published, 0 duplicate, 3 quarantined" in proc.stdout
    reasons = [
        json.loads(line)["reason"]
        for p in (tmp_path / "store.quarantine").rglob("reasons.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert "dataset.json labels disagree with the manifest's classes (1: 'tumour' vs 'lesion')" in (
        reasons
    )


def test_free_text_in_dataset_json_is_identified_input_for_the_gate(tmp_path):
    from mbc_lib.phi_gate import check_dataset_json

    doc = {"labels": {"background": 0, "lesion": 1}, "description": "Jan Kowalski"}
    assert check_dataset_json(json.dumps(doc).encode()) == [
        "dataset.json key 'description' is free text"
    ]
    doc = {"labels": {"background": 0, "Kowalski, Jan (MRN 55501)": 1}}
    assert "not a short name" in check_dataset_json(json.dumps(doc).encode())[0]
