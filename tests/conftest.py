"""Shared fixtures: one sample tree, one key and one de-identified tree per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mbc_lib.deid.keys import DeidKey, generate_key_file

SAMPLE_ARGS = {"seed": 7, "n_fundus": 12, "n_ct": 3, "ct_size": 64}


@pytest.fixture(scope="session")
def sample_tree(tmp_path_factory) -> Path:
    from mbc_lib.sample import write_sample_tree

    out = tmp_path_factory.mktemp("sample") / "input"
    write_sample_tree(out, **SAMPLE_ARGS)
    return out


@pytest.fixture(scope="session")
def key_file(tmp_path_factory) -> Path:
    return generate_key_file(tmp_path_factory.mktemp("keys") / "project.key")


@pytest.fixture(scope="session")
def key(key_file) -> DeidKey:
    return DeidKey.from_file(key_file)


@pytest.fixture(scope="session")
def deid_out(sample_tree, key, tmp_path_factory) -> Path:
    from mbc_lib.deid.tree import deid_tree

    out = tmp_path_factory.mktemp("deid") / "out"
    deid_tree(sample_tree, out, key, progress=False)
    return out


def run_mbc(*args: str, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run the ``mbc`` CLI as a user would, in a subprocess."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "mbc_lib.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"mbc {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def dicom_instance(sop_class: str, study: str, series: str, frame: str) -> Dataset:
    """A new instance of ``sop_class`` in a series (explicit VR little endian, file meta
    set), for the test to fill with the attributes it is about."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    return ds


def identified_seg(
    source_images: list[Dataset],
    pixel_array: object,
    segments: list,
    *,
    series_number: int,
    manufacturer: str,
) -> Dataset:
    """A binary DICOM-SEG of ``source_images`` as highdicom writes it, carrying identifying
    device and person fields (the serial number, the content creator) as sites' SEGs do."""
    import highdicom as hd

    return hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="SegTool",
        software_versions="1.0",
        device_serial_number="SN-4711",
        content_creator_name="Doe^Jane",
    )
