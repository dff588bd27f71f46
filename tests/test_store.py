"""The store writer and reader: NGFF layout, atomic publish, catalog splits, read-only access."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr

from mbc_lib.errors import MbcError
from mbc_lib.manifests import get_manifest
from mbc_lib.store import layout
from mbc_lib.store.catalog import assign_splits, patient_strata, write_catalog
from mbc_lib.store.reader import open_store
from mbc_lib.store.verify import verify_store
from mbc_lib.store.writer import CaseData, StoreWriter

from .conftest import run_mbc

PATIENT = "PSN-0123456789abcdef"


def ct_case(case_id: str = "ct-00000000000000aa", patient: str = PATIENT) -> CaseData:
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 400, size=(20, 96, 80), dtype=np.int16)
    labels = np.zeros(image.shape, np.uint8)
    labels[5:10, 20:40, 20:40] = 2
    return CaseData(
        case_id=case_id,
        kind="ct-volume",
        image=image,
        dims=("z", "y", "x"),
        spacing=(2.5, 0.7, 0.7),
        unit="millimeter",
        attrs={
            "modality": "CT",
            "patient": patient,
            "labels": {"diagnosis": "covid19"},
            "value_units": "HU",
        },
        origin=[-30.0, -40.0, 100.0],
        direction=[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
        labels=labels,
    )


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    with StoreWriter(root, get_manifest("ct-covid")) as writer:
        writer.publish(ct_case())
    write_catalog(root, get_manifest("ct-covid"))
    return root


def test_case_is_ngff_05_with_pyramid_and_labels(store):
    case = layout.case_path(store, "ct-covid", "ct-00000000000000aa")
    meta = json.loads((case / "zarr.json").read_text())
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["axes"][0]["unit"] == "millimeter"
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales[0] == [2.5, 0.7, 0.7] and scales[1] == [2.5, 1.4, 1.4]
    labels = json.loads((case / "labels" / "zarr.json").read_text())["attributes"]["ome"]
    assert labels["labels"] == ["lesions"]
    lab = json.loads((case / "labels" / "lesions" / "zarr.json").read_text())["attributes"]
    names = {p["label-value"]: p["name"] for p in lab["ome"]["image-label"]["properties"]}
    assert names[2] == "ground-glass opacity"


def test_ome_zarr_reader_opens_a_case(store):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    url = parse_url(str(layout.case_path(store, "ct-covid", "ct-00000000000000aa")))
    nodes = list(Reader(url)())
    image = nodes[0]
    assert len(image.data) >= 2  # pyramid levels
    assert tuple(image.data[0].shape) == (20, 96, 80)
    np.testing.assert_array_equal(np.asarray(image.data[0]), ct_case().image)


def test_xarray_coordinates_in_mm_and_lazy(store):
    s = open_store(store)
    da = s.open_case("ct-covid", "ct-00000000000000aa")
    assert da.dims == ("z", "y", "x")
    assert da.coords["z"].attrs["units"] == "millimeter"
    assert float(da.z[1] - da.z[0]) == pytest.approx(2.5)
    assert float(da.z[0]) == pytest.approx(100.0)  # origin projected on the slice normal
    patch = da.sel(z=slice(100, 110)).isel(y=slice(0, 8)).values
    np.testing.assert_array_equal(patch, ct_case().image[:5, :8])
    labels = s.open_labels("ct-covid", "ct-00000000000000aa")
    assert int((labels == 2).sum()) == 5 * 20 * 20


def test_publish_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    root = tmp_path / "store"
    writer = StoreWriter(root, get_manifest("ct-covid"))
    with writer:

        def boom(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(os, "rename", boom)
        with pytest.raises(OSError):
            writer.publish(ct_case())
        monkeypatch.undo()
        assert not writer.exists("ct-00000000000000aa")
        assert list((root / layout.STAGING).iterdir()) == []
        writer.publish(ct_case())
    assert verify_store(root) == ["ct-covid/catalog: missing"]


def test_published_cases_are_read_only_on_disk(store):
    case = layout.case_path(store, "ct-covid", "ct-00000000000000aa")
    assert not os.stat(case / "zarr.json").st_mode & 0o222
    assert not os.stat(case).st_mode & 0o222


def test_store_handle_refuses_writes(store):
    s = open_store(store)
    group = s.case_group("ct-covid", "ct-00000000000000aa")
    with pytest.raises(Exception, match="(?i)read.only|read_only"):
        group["0"][0, 0, 0] = 5


def test_open_store_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("MBC_STORE", raising=False)
    with pytest.raises(MbcError, match="MBC_STORE"):
        open_store()
    with pytest.raises(MbcError, match="not found"):
        open_store(tmp_path / "nope")
    with pytest.raises(MbcError, match="not an mbc store"):
        open_store(tmp_path)


def test_verify_detects_tampering(store):
    assert verify_store(store) == []
    chunk = next(
        p
        for p in (layout.case_path(store, "ct-covid", "ct-00000000000000aa") / "0").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    os.chmod(chunk, 0o644)
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert any("checksum" in f or "unreadable" in f for f in verify_store(store))


def test_verify_flags_identifying_attributes(store):
    meta = layout.case_path(store, "ct-covid", "ct-00000000000000aa") / "zarr.json"
    os.chmod(meta, 0o644)
    doc = json.loads(meta.read_text())
    doc["attributes"]["mbc"]["patient"] = "DOE^JANE"
    doc["attributes"]["mbc"]["PatientBirthDate"] = "19560314"
    meta.write_text(json.dumps(doc))
    findings = verify_store(store)
    assert any("not a pseudonym" in f for f in findings)
    assert any("PatientBirthDate" in f for f in findings)


def test_splits_are_patient_level_balanced_and_stable():
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    patients = [f"PSN-{i:016x}" for i in range(20)]
    first = assign_splits(patients, fractions)
    counts = {s: list(first.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 3, "test": 3}
    grown = assign_splits(patients + [f"PSN-{i:016x}" for i in range(20, 40)], fractions, first)
    assert all(grown[p] == first[p] for p in patients)  # nobody moves when the store grows
    assert list(grown.values()).count("val") == 6
    small = assign_splits(patients[:4], fractions)
    assert "val" in small.values()  # even a tiny store gets a validation patient


def test_splits_are_stratified_so_every_split_has_every_class():
    """Issue 10: the sample store's fundus test split had no glaucoma case. Strata are
    filled split by split, so a class with a patient per split reaches all three."""
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    patients = [f"PSN-{i:016x}" for i in range(12)]
    strata = {p: "1" if i % 4 == 0 else "0" for i, p in enumerate(patients)}  # 3 glaucoma
    splits = assign_splits(patients, fractions, strata=strata)
    for label in ("0", "1"):
        assert {splits[p] for p in patients if strata[p] == label} == {"train", "val", "test"}
    counts = {s: list(splits.values()).count(s) for s in ("train", "val", "test")}
    assert counts["train"] > counts["val"] and counts["train"] > counts["test"]
    grown = patients + [f"PSN-{i:016x}" for i in range(12, 24)]
    again = assign_splits(grown, fractions, splits, {p: "0" for p in grown} | strata)
    assert all(again[p] == splits[p] for p in patients)  # nobody moves when the store grows
    eyes = [
        {"patient": "PSN-a", "labels": {"glaucoma": 0}},
        {"patient": "PSN-a", "labels": {"glaucoma": 1}},
        {"patient": "PSN-b", "labels": {"glaucoma": 0}},
        {"patient": "PSN-c", "labels": {"glaucoma": 0}},
    ]  # a patient with one glaucomatous eye is stratified with the glaucoma patients
    assert patient_strata(eyes, "glaucoma") == {"PSN-a": "1", "PSN-b": "0", "PSN-c": "0"}


def test_sample_store_fundus_splits_each_hold_both_classes(sample_tree, tmp_path, key_file):
    store = tmp_path / "store"
    proc = run_mbc(
        "ingest", str(sample_tree / "fundus-glaucoma"), "--store", str(store),
        "--dataset", "fundus-glaucoma", "--deid-key-file", str(key_file), "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    catalog = open_store(store).catalog("fundus-glaucoma")
    for split, rows in catalog.groupby("split"):
        assert set(rows["glaucoma"]) == {0, 1}, (split, rows["glaucoma"].tolist())


def test_catalog_lists_cases_with_labels(tmp_path):
    root = tmp_path / "store"
    manifest = get_manifest("ct-covid")
    with StoreWriter(root, manifest) as writer:
        writer.publish(ct_case("ct-00000000000000aa", "PSN-00000000000000aa"))
        writer.publish(ct_case("ct-00000000000000bb", "PSN-00000000000000bb"))
    frame = write_catalog(root, manifest)
    assert sorted(frame.case_id) == ["ct-00000000000000aa", "ct-00000000000000bb"]
    assert set(frame.diagnosis) == {"covid19"}
    assert frame["shape"].tolist() == ["20x96x80", "20x96x80"]
    assert open_store(root).catalog("ct-covid").equals(frame)


def test_label_pyramid_keeps_the_image_shape_at_every_level_for_odd_sizes(tmp_path):
    case = ct_case()
    case.image = case.image[:, :95, :79]  # odd rows and columns
    case.labels = np.ascontiguousarray(case.labels[:, :95, :79])
    root = tmp_path / "store"
    with StoreWriter(root, get_manifest("ct-covid")) as writer:
        writer.publish(case)
    group = zarr.open_group(layout.case_path(root, "ct-covid", case.case_id), mode="r")
    lname = group[layout.LABELS_GROUP].attrs["ome"]["labels"][0]
    levels = [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
    assert len(levels) > 1
    for level in levels:
        assert group[level].shape == group[layout.LABELS_GROUP][lname][level].shape, level
