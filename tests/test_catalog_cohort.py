"""The catalog carries what a cohort table needs (issue 9): age, sex, manufacturer, model,
kernel, slice thickness and pixel spacing, as the de-identification profile leaves them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from mbc_lib import phi_gate
from mbc_lib.manifests import get_manifest
from mbc_lib.store import layout
from mbc_lib.store.verify import verify_store

from .conftest import run_mbc

COHORT = ["age", "sex", "manufacturer", "model", "kernel", "slice_thickness", "pixel_spacing"]


def _set(series: Path, **values: object) -> None:
    """Write header values into every slice of a series (pydicom, not mbc, writes them)."""
    for path in sorted(series.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


@pytest.fixture
def cohort_src(sample_tree, tmp_path) -> tuple[Path, list[str]]:
    """The sample CT site export, each series' header given equipment and patient values;
    the last series carries an age that is not in DICOM AS form."""
    src = tmp_path / "export"
    shutil.copytree(sample_tree / "ct-covid", src)
    series = sorted(p for p in src.rglob("*") if p.is_dir() and any(p.glob("*.dcm")))
    assert len(series) >= 3
    for i, folder in enumerate(series):
        _set(
            folder,
            PatientAge="045Y" if i < len(series) - 1 else "45 years",
            PatientSex="MF"[i % 2],
            Manufacturer="ACME Medical",
            ManufacturerModelName=f"Scanner {i}",
            ConvolutionKernel=["B30f", "sharp"] if i == 0 else "B30f",
            SliceThickness="1.25",
            PixelSpacing=["0.7", "0.75"],
        )
    return src, [f.name for f in series]


def test_the_catalog_has_the_cohort_columns_from_the_headers(cohort_src, tmp_path, key_file):
    src, _ = cohort_src
    store = tmp_path / "store"
    proc = run_mbc(
        "ingest", str(src), "--store", str(store), "--dataset", "ct-covid",
        "--deid-key-file", str(key_file),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    catalog = pd.read_parquet(layout.catalog_path(store, "ct-covid"))
    assert list(catalog.columns[: len(COHORT) + 12])[12:] == COHORT
    assert len(catalog) >= 3
    assert sorted(catalog["age"].dropna()) == ["045Y"] * (len(catalog) - 1)
    assert catalog["age"].isna().sum() == 1  # "45 years" is no DICOM age: left out, not kept
    assert set(catalog["sex"]) == {"M", "F"}
    assert set(catalog["manufacturer"]) == {"ACME Medical"}
    assert catalog["model"].str.startswith("Scanner ").all()
    assert set(catalog["kernel"]) == {"B30f", "B30f\\sharp"}
    assert (catalog["slice_thickness"] == 1.25).all()
    assert set(catalog["pixel_spacing"]) == {"0.7x0.75"}
    assert verify_store(store) == []


def test_a_profile_without_patient_characteristics_leaves_age_and_sex_out(
    cohort_src, tmp_path, key_file
):
    src, _ = cohort_src
    manifest = get_manifest("ct-covid").raw | {
        "deid": {"options": ["retain_longitudinal_modified_dates", "clean_descriptors"]}
    }
    path = tmp_path / "ct-covid.yaml"
    import yaml

    path.write_text(yaml.safe_dump(manifest))
    store = tmp_path / "store"
    proc = run_mbc(
        "ingest", str(src), "--store", str(store), "--manifest", str(path),
        "--deid-key-file", str(key_file),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    catalog = pd.read_parquet(layout.catalog_path(store, "ct-covid"))
    assert catalog["age"].isna().all() and catalog["sex"].isna().all()
    assert set(catalog["manufacturer"]) == {"ACME Medical"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("age", "Jane Doe"),
        ("sex", "female"),
        ("manufacturer", "x" * 65),
        ("model", "St. Mary\nWard 3"),
        ("slice_thickness", float("nan")),
        ("pixel_spacing", [0.7]),
        ("ward", "3"),
    ],
)
def test_the_gate_refuses_cohort_fields_that_are_not_what_their_attribute_holds(field, value):
    manifest = get_manifest("ct-covid")
    attrs = {"patient": "PSN-0123456789abcdef", "acquisition": {field: value}}
    problems = phi_gate.check_case_attrs(attrs, manifest)
    assert len(problems) == 1 and "acquisition" in problems[0]
    ok = {"patient": "PSN-0123456789abcdef", "acquisition": {"age": "045Y", "sex": "O"}}
    assert phi_gate.check_case_attrs(ok, manifest) == []
