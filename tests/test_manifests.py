"""Dataset manifests load, validate and fail with one clear line."""

from __future__ import annotations

import pytest

from mbc_lib.errors import MbcError
from mbc_lib.manifests import get_manifest, load_manifests


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
