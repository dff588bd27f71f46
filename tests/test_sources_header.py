"""Header values read from raw bytes are pydicom's values, for every file pydicom ships."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_files
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement

from mbc_lib.sources import header


def _files() -> list[str]:
    return sorted(p for p in get_testdata_files() if Path(p).is_file())


def _read(name: str) -> pydicom.Dataset | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(name, force=True)
        except Exception:  # noqa: BLE001 - not every test file is readable
            return None


def test_every_simple_element_of_every_real_file_reads_as_pydicom_reads_it():
    compared: Counter[str] = Counter()
    for name in _files():
        ds, theirs = _read(name), _read(name)
        if ds is None:
            continue
        for tag, raw in list(ds._dict.items()):
            keyword = keyword_for_tag(tag)
            if not keyword or not isinstance(raw, RawDataElement) or raw.VR == "SQ":
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    expected = theirs.get(keyword)
                except Exception:  # noqa: BLE001 - pydicom cannot convert it either
                    continue
                mine = header.get(ds, keyword)
            assert mine == expected, (name, keyword, mine, expected)
            if isinstance(ds._dict[tag], RawDataElement):  # the fast path answered
                compared[theirs[tag].VR] += 1
    # the fast path answered for thousands of elements of each kind it knows
    assert compared["UI"] > 500 and compared["CS"] > 500 and compared["US"] > 500
    assert compared["DS"] > 300 and compared["IS"] > 100 and compared["LO"] > 200


def test_values_pydicom_must_decode_go_to_pydicom(tmp_path):
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstitutionName = "Hôpital"
    ds.StudyDescription = " CT  THORAX "
    ds.ImageType = ["DERIVED ", "PRIMARY"]
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.RetrieveAETitle = "  STORE"  # AE: leading spaces are not significant
    ds.Rows = 512
    ds.save_as(tmp_path / "x.dcm", implicit_vr=False, little_endian=False)
    raw = pydicom.dcmread(tmp_path / "x.dcm", force=True)
    assert header.get(raw, "InstitutionName") == "Hôpital"
    assert header.get(raw, "StudyDescription") == " CT  THORAX"
    assert header.get(raw, "ImageType") == ["DERIVED ", "PRIMARY"]
    assert header.get(raw, "PixelSpacing") == [0.5, 0.5]
    assert header.get(raw, "RetrieveAETitle") == "STORE"
    assert header.get(raw, "Rows") == 512  # big endian
    assert header.get(raw, "Columns", 7) == 7
