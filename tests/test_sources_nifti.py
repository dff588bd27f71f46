"""NIfTI volumes: header de-identification, the gate's check, geometry kept exactly."""

from __future__ import annotations

import gzip
import io
import time

import nibabel as nib
import numpy as np
import pytest

from mbc_lib.phi_gate import check_nifti
from mbc_lib.sources import nifti

RNG = np.random.default_rng(3)


def _rotation(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


def _affine(spacing=(0.7, 0.8, 2.5), degrees=12.0, flip=False) -> np.ndarray:
    affine = np.eye(4)
    axes = _rotation(degrees) @ np.diag(spacing)
    if flip:  # a radiological (left-handed) voxel order
        axes[:, 0] *= -1
    affine[:3, :3] = axes
    affine[:3, 3] = [-120.5, 98.25, -310.0]
    return affine


def _encode(img: nib.Nifti1Image, gz: bool) -> bytes:
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def _identified(version: int = 1, shape=(12, 10, 8), affine=None) -> nib.Nifti1Image:
    data = RNG.integers(-1024, 2000, size=shape).astype(np.int16)
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = cls(data, _affine() if affine is None else affine)
    img.header["descrip"] = b"Smith^John 1961-03-04 TE=2.1"
    img.header["aux_file"] = b"MRN4711.nii"
    img.header["intent_name"] = b"John"
    if version == 1:
        img.header["db_name"] = b"St Mary Hospital"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(2, b"(0010,0010) PN Smith^John"))
    return img


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("gz", [False, True])
def test_deid_clears_text_and_extensions_and_keeps_voxels_and_affine(version, gz):
    img = _identified(version)
    data = _encode(img, gz)
    findings = check_nifti(data)
    assert any("descrip" in f for f in findings) and any("extensions" in f for f in findings)
    clean = nifti.deidentify(data)
    assert check_nifti(clean) == []
    raw = gzip.decompress(clean) if gz else clean
    for secret in (b"Smith", b"John", b"MRN4711", b"Mary"):
        assert secret not in raw
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    back, before = cls.from_bytes(raw), cls.from_bytes(img.to_bytes())  # as stored
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(before.dataobj))
    np.testing.assert_array_equal(back.affine, before.affine)
    assert nifti.deidentify(clean) == clean  # idempotent


def test_hidden_bytes_between_header_and_voxels_are_a_finding():
    img = _identified()
    img.header.extensions.clear()
    raw = img.to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    offset = int(header["vox_offset"])
    hidden = b"Smith^John".ljust(32, b"\x00")
    header["vox_offset"] = offset + len(hidden)
    data = header.binaryblock + raw[348:offset] + hidden + raw[offset:]
    assert "NIfTI file holds bytes between its header and its voxels" in check_nifti(data)
    assert check_nifti(nifti.deidentify(data)) == []


@pytest.mark.parametrize("flip", [False, True])
def test_a_voxel_keeps_its_patient_position_in_the_store_geometry(flip):
    img = _identified(affine=_affine(flip=flip))
    img = nib.Nifti1Image.from_bytes(img.to_bytes())  # the affine as stored (float32)
    vol = nifti.read_volume(nifti.parse(_encode(img, gz=True)))
    data = np.asanyarray(img.dataobj)
    assert vol.image.shape == data.shape[::-1]
    for i, j, k in [(0, 0, 0), (11, 9, 7), (3, 7, 2)]:
        ras = img.affine @ [i, j, k, 1.0]
        index = (k, j, i)  # the store's (z, y, x)
        lps = np.array(vol.origin) + sum(
            n * s * np.array(d) for n, s, d in zip(index, vol.spacing, vol.direction, strict=True)
        )
        np.testing.assert_allclose(lps * [-1, -1, 1], ras[:3], atol=1e-6)
        assert vol.image[index] == data[i, j, k]
    np.testing.assert_allclose(vol.spacing, (2.5, 0.8, 0.7))


def test_a_volume_over_the_pixel_budget_is_refused_before_it_is_decompressed():
    header = nib.Nifti1Header()
    header.set_data_shape((32000, 32000, 100))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    data = gzip.compress(header.binaryblock + b"\x00" * 4 + b"\x00" * 1_000_000)
    start = time.perf_counter()
    with pytest.raises(nifti.MalformedNifti, match="too large: .* over the budget"):
        nifti.parse(data)
    assert time.perf_counter() - start < 1.0


def test_a_cut_file_is_malformed():
    data = _encode(_identified(), gz=False)
    with pytest.raises(nifti.MalformedNifti, match="truncated"):
        nifti.parse(data[: len(data) // 2])
    assert check_nifti(gzip.compress(data)[:200])[0].startswith("malformed NIfTI")


def test_grids_that_differ_are_named():
    a = nifti.read_volume(nifti.parse(_encode(_identified(), gz=False)))
    shifted = _affine()
    shifted[0, 3] += 1.5
    b = nifti.read_volume(nifti.parse(_encode(_identified(affine=shifted), gz=False)))
    c = nifti.read_volume(nifti.parse(_encode(_identified(shape=(12, 10, 9)), gz=False)))
    assert nifti.same_grid(a, a) is None
    assert "affine differs" in nifti.same_grid(a, b)
    assert "shape (12, 10, 9)" in nifti.same_grid(a, c)


def test_recognised_by_content_and_name():
    raw = _encode(_identified(), gz=False)
    assert nifti.looks_like_nifti(raw[:132], "a.nii")
    assert nifti.looks_like_nifti(gzip.compress(raw)[:132], "volume-covid19-A-0003_ct.nii.gz")
    assert not nifti.looks_like_nifti(gzip.compress(raw)[:132], "notes.txt.gz")
    assert not nifti.looks_like_nifti(b"\x00" * 132, "a.nii")
