"""Dataset manifests load, validate and fail with one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mbc_lib.errors import MbcError
from mbc_lib.manifests import get_manifest, load_manifest, load_manifests


def test_shipped_manifests():
    manifests = load_manifests()
    assert {"fundus-glaucoma", "ct-covid", "dicom-reference"} <= set(manifests)
    assert manifests["fundus-glaucoma"].group == "ophthalmology"
    assert manifests["ct-covid"].group == "radiology"
    assert manifests["ct-covid"].segmentation_classes == {
        0: "background",
        1: "normal lung",
        2: "ground-glass opacity",
        3: "consolidation",
    }


def test_label_column_checks():
    cdr = get_manifest("fundus-glaucoma").label_columns["cdr"]
    assert cdr.check("0.4") is None
    assert "above" in cdr.check("1.4")
    assert "not float" in cdr.check("big")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n", "'title' is required"),
        ("name: bad\ntitle: t\nmodality: mri\ngroup: g\n", "modality must be one of"),
        (
            "name: bad\ntitle: t\nmodality: ct\ngroup: g\n"
            "split: {train: 0.5, val: 0.1, test: 0.1}\n",
            "sum",
        ),
        ("name: [\n", "not valid YAML"),
        (
            "name: bad\ntitle: t\nmodality: fundus\ngroup: g\n"
            "labels: {file: l.csv, key: path, columns: {cdr: {dtype: float}}}\n"
            "split: {train: 0.7, val: 0.15, test: 0.15, stratify: cdr}\n",
            "split.stratify names 'cdr', which is not a label column with listed values",
        ),
    ],
)
def test_invalid_manifests_fail_with_one_line(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(MbcError, match=message) as info:
        load_manifests(tmp_path)
    assert "\n" not in str(info.value).strip()


def test_unknown_dataset():
    with pytest.raises(MbcError, match="unknown dataset 'nope'"):
        get_manifest("nope")


BASE = "name: {name}\ntitle: t\nmodality: ct\ngroup: g\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("source: {volumes: 'images/*.nii.gz'}\n", "source.volumes 'images/*.nii.gz' must hold"),
        ("source: {volumes: 'a/{case}.nii', extra: 1}\n", "unknown source keys ['extra']"),
        (
            "labels: {file: t.csv, key: case, columns: {}}\n",
            "labels.key 'case' needs source.volumes",
        ),
        (
            "labels: {file: t.csv, key: path, columns: {g: {dtype: int, map: {RG: high}}}}\n",
            "'map' gives invalid values ['high']",
        ),
    ],
)
def test_layout_and_mapping_errors_are_one_line(tmp_path, extra, message):
    path = tmp_path / "x.yaml"
    path.write_text(BASE.format(name="x") + extra)
    with pytest.raises(MbcError, match=re.escape(message)):
        load_manifest(path)


def test_layout_patterns_find_the_case_key():
    layout = get_manifest("covid19-20").source
    assert layout.volume_case("Train/volume-covid19-A-0003_ct.nii.gz") == "A-0003"
    assert layout.volume_case("volume-covid19-A-0003_ct.nii.gz") == "A-0003"
    assert layout.mask_case("Train/volume-covid19-A-0003_seg.nii.gz") == "A-0003"
    assert layout.volume_case("Train/volume-covid19-A-0003_seg.nii.gz") is None
    mosmed = get_manifest("mosmeddata").source
    assert mosmed.case_in("COVID19_1110/studies/CT-1/study_0255.nii.gz") == "0255"
    assert mosmed.case_in("/data/studies/CT-1/study_0255.nii.gz") == "0255"
    assert mosmed.case_in("studies/CT-1/other.nii.gz") is None


def test_mapped_columns_convert_table_values():
    columns = get_manifest("mosmeddata").label_columns
    assert columns["diagnosis"].convert("CT-0") == "normal"
    assert columns["diagnosis"].convert("CT-3") == "covid19"
    assert columns["severity"].convert(" CT-3 ") == "CT-3"
    assert columns["diagnosis"].convert("") is None
    with pytest.raises(ValueError, match="not one of"):
        columns["diagnosis"].convert("CT-9")


def test_datasets_validate_and_ingest_with_a_manifest_file(tmp_path):
    from .conftest import run_mbc

    good = tmp_path / "my-lungs.yaml"
    good.write_text(
        (Path(__file__).parents[1] / "datasets" / "covid19-20.yaml")
        .read_text()
        .replace("name: covid19-20", "name: my-lungs")
    )
    proc = run_mbc("datasets", "validate", str(good))
    assert proc.returncode == 0 and "valid dataset manifest" in proc.stdout
    assert "volumes: **/volume-covid19-{case}_ct.nii.gz" in proc.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.format(name="bad") + "source: {volumes: x.nii}\n")
    proc = run_mbc("datasets", "validate", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "must hold {case} exactly once" in proc.stderr
    listed = run_mbc("datasets", "list")
    assert "covid19-20" in listed.stdout and "mosmeddata" in listed.stdout
    empty = tmp_path / "src"
    empty.mkdir()
    proc = run_mbc("ingest", str(empty), "--store", str(tmp_path / "s"), "--manifest", str(good))
    assert proc.returncode == 0, proc.stderr
    assert "dataset my-lungs" in proc.stdout
    proc = run_mbc("ingest", str(empty), "--store", str(tmp_path / "s"))
    assert proc.returncode == 2 and "give --dataset NAME" in proc.stderr
