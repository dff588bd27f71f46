"""``mbc verify`` sees everything: each kind of tampering gives exactly its one-line finding."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from mbc_lib.sample.store import build_sample_store
from mbc_lib.store import layout, ngff
from mbc_lib.store.verify import verify_store

NOT_READ = "content not read (see the findings above)"


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("verify-sample")
    return build_sample_store(work, n_fundus=4, n_ct=2, ct_size=64, include_real_dicom=False)


@pytest.fixture
def store(sample_store, tmp_path) -> Path:
    """A writable copy of the sample store (published stores are read-only)."""
    copy = tmp_path / "store"
    shutil.copytree(sample_store, copy, symlinks=True)
    for dirpath, _, filenames in os.walk(copy):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    return copy


def _catalog(store: Path, dataset: str) -> pd.DataFrame:
    return pd.read_parquet(layout.catalog_path(store, dataset))


def _write_catalog(store: Path, dataset: str, frame: pd.DataFrame) -> None:
    frame.to_parquet(layout.catalog_path(store, dataset), index=False)


def _ct(store: Path) -> tuple[Path, str]:
    """The first CT case (it has labels): its folder and its name in findings."""
    case_id = sorted(_catalog(store, "ct-covid").case_id)[0]
    return layout.case_path(store, "ct-covid", case_id), f"ct-covid/cases/{case_id}"


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


# -- audit: which files verify opens -----------------------------------------------------------
_OPENED: list[str] | None = None
_HOOKED: list[bool] = []


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.fsdecode(args[0]))


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Paths opened (by anyone in this process) while the test runs."""
    global _OPENED
    if not _HOOKED:  # an audit hook cannot be removed: install it once, switch it by _OPENED
        sys.addaudithook(_audit)
        _HOOKED.append(True)
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


class _FifoTripwire:
    """Writers waiting on a FIFO: each gets through (and closes at once) only when someone
    opens the FIFO to read, so a verify that opens it neither blocks nor goes unnoticed."""

    def __init__(self, path: Path) -> None:
        self.path, self.tripped, self.stop = path, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        while not self.stop.is_set():
            fd = os.open(self.path, os.O_WRONLY)  # returns once a reader opens the FIFO
            if not self.stop.is_set():
                self.tripped.set()
            os.close(fd)

    def release(self) -> bool:
        """Whether it was tripped; then lets the writer go."""
        tripped = self.tripped.is_set()
        self.stop.set()
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.thread.join(10)
        os.close(fd)
        return tripped


# -- a sound store -----------------------------------------------------------------------------
def test_untouched_store_has_no_finding(store):
    assert verify_store(store) == []


def test_integer_downsample_is_the_float_mean():
    """The writer's fast integer 2x2 mean equals rint(float64 mean), halves to even."""
    rng = np.random.default_rng(3)
    for dtype in (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32):
        info = np.iinfo(dtype)
        for low, high in ((info.min, info.max), (max(info.min, -3), 4)):
            a = rng.integers(low, high, size=(3, 37, 66), endpoint=True, dtype=dtype)
            mean = a[:, :36].reshape(3, 18, 2, 33, 2).mean(axis=(2, 4))
            expected = np.clip(np.rint(mean), info.min, info.max).astype(dtype)
            np.testing.assert_array_equal(ngff.downsample(a, "cyx", 2, labels=False), expected)


# -- pyramids ----------------------------------------------------------------------------------
def test_changed_voxel_in_level_0_image(store):
    case, where = _ct(store)
    level = zarr.open_array(case / "0", mode="r+")
    level[0, 0, 0] = level[0, 0, 0] + 4  # moves the 2x2 mean by one
    assert verify_store(store) == [
        f"{where}/1: differs from level 0 downsampled in chunk c/0/0/0",
        f"{where}: checksum mismatch: content changed since publish",
    ]


def test_changed_voxel_in_level_1_image(store):
    case, where = _ct(store)
    level = zarr.open_array(case / "1", mode="r+")
    level[0, 0, 0] = level[0, 0, 0] + 1
    assert verify_store(store) == [f"{where}/1: differs from level 0 downsampled in chunk c/0/0/0"]


def test_undecodable_level_1_chunk(store):
    case, where = _ct(store)
    chunk = case / "1" / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[0] ^= 0xFF  # the Blosc header's version byte
    chunk.write_bytes(bytes(data))
    findings = verify_store(store)
    assert len(findings) == 1, findings
    assert findings[0].startswith(f"{where}/1/c/0/0/0: unreadable chunk: RuntimeError")


def test_changed_level_1_label_chunk(store):
    case, where = _ct(store)
    level = zarr.open_array(case / "labels" / "lesions" / "1", mode="r+")
    level[0, 0, 0] = (int(level[0, 0, 0]) + 1) % 4
    assert verify_store(store) == [
        f"{where}/labels/lesions/1: differs from level 0 downsampled in chunk c/0/0/0"
    ]


def test_multiscales_that_do_not_match_the_pyramid(store):
    case, where = _ct(store)

    def rescale(doc):
        doc["attributes"]["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"][0][
            "scale"
        ][1] *= 2

    _edit_json(case / "zarr.json", rescale)
    assert verify_store(store) == [
        f"{where}: ome attribute 'multiscales' differs from what the case attributes imply"
    ]


def test_label_stats_recomputed_from_the_mask(store):
    case, where = _ct(store)
    doc = json.loads((case / "zarr.json").read_text())
    stats = doc["attributes"]["mbc"]["label_stats"]
    true_lung = stats["lung_ml"]
    _edit_json(
        case / "zarr.json", lambda d: d["attributes"]["mbc"]["label_stats"].update(lung_ml=1.0)
    )
    findings = verify_store(store)
    assert findings == [
        f"{where}: label_stats attribute differs from the mask's volumes {stats}",
        f"ct-covid/catalog: {case.name}: lung_ml is {true_lung!r}, the case says 1.0",
    ]


# -- catalog -----------------------------------------------------------------------------------
def test_added_patient_name_column(store):
    frame = _catalog(store, "ct-covid")
    frame["patient_name"] = "DOE^JOHN"
    _write_catalog(store, "ct-covid", frame)
    assert verify_store(store) == ["ct-covid/catalog: unexpected column 'patient_name'"]


def test_changed_diagnosis_in_the_catalog(store):
    frame = _catalog(store, "ct-covid")
    case_id, old = frame.case_id[0], frame.diagnosis[0]
    new = "normal" if old == "covid19" else "covid19"
    frame.loc[0, "diagnosis"] = new
    _write_catalog(store, "ct-covid", frame)
    assert verify_store(store) == [
        f"ct-covid/catalog: {case_id}: diagnosis differs from the case's attributes"
    ]


def test_changed_volume_in_the_catalog(store):
    frame = _catalog(store, "ct-covid")
    case_id, old = frame.case_id[0], float(frame.lung_ml[0])
    frame.loc[0, "lung_ml"] = old + 10.0
    _write_catalog(store, "ct-covid", frame)
    assert verify_store(store) == [
        f"ct-covid/catalog: {case_id}: lung_ml is {old + 10.0!r}, the case says {old!r}"
    ]


def test_moved_split_for_one_of_a_patients_two_cases(store):
    frame = _catalog(store, "fundus-glaucoma")
    patient = next(p for p, n in frame.patient.value_counts().items() if n == 2)
    rows = frame.index[frame.patient == patient]
    old = frame.split[rows[0]]
    new = "test" if old != "test" else "train"
    frame.loc[rows[1], "split"] = new
    _write_catalog(store, "fundus-glaucoma", frame)
    splits = sorted([(old, frame.case_id[rows[0]]), (new, frame.case_id[rows[1]])])
    detail = "; ".join(f"{s}: {c}" for s, c in splits)
    assert verify_store(store) == [
        f"fundus-glaucoma/catalog: patient {patient} spans 2 splits ({detail})"
    ]


# -- unexpected entries and attributes ---------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("CASE/notes.txt", "unexpected file"),
        ("CASE/0/c/1/0/7", "chunk outside the array's shape"),
        ("CASE/0/c/1/0/0.bak", "unexpected entry in the chunk tree"),
        ("ct-covid/.hidden", "unexpected file"),
        ("README", "unexpected file"),
    ],
)
def test_extra_file(store, entry, problem):
    case, where = _ct(store)
    path = store / entry.replace("CASE", str(case.relative_to(store)))
    path.write_bytes(b"")
    assert verify_store(store) == [f"{entry.replace('CASE', where)}: {problem}"]


def test_extra_dot_folder_in_a_case(store):
    case, where = _ct(store)
    (case / ".git").mkdir()
    assert verify_store(store) == [f"{where}/.git: unexpected folder"]


def test_half_written_case_in_staging(store):
    (store / layout.STAGING / "ct-0123456789abcdef.1234abcd").mkdir()
    assert verify_store(store) == [
        ".staging: holds a half-written case (an ingest crashed): re-run ingest"
    ]


def test_extra_array_in_a_case(store):
    case, where = _ct(store)
    extra = zarr.create_array(str(case / "3"), shape=(8, 8), dtype="int16", chunks=(8, 8))
    extra[...] = 7
    assert verify_store(store) == [f"{where}/3: unexpected folder"]


@pytest.mark.parametrize(
    "node",
    [
        "",
        "ct-covid",
        "ct-covid/cases",
        "CASE",
        "CASE/0",
        "CASE/1",
        "CASE/labels",
        "CASE/labels/lesions",
    ],
)
def test_extra_attribute(store, node):
    case, where = _ct(store)
    path = store / node.replace("CASE", str(case.relative_to(store))) / "zarr.json"
    _edit_json(path, lambda doc: doc["attributes"].update(note="seen by Dr. Doe"))
    assert verify_store(store) == [
        f"{node.replace('CASE', where) or 'store'}: unexpected attribute 'note'"
    ]


def test_extra_case_attribute_goes_through_the_phi_gate(store):
    case, where = _ct(store)
    _edit_json(case / "zarr.json", lambda d: d["attributes"]["mbc"].update(PatientName="DOE^JOHN"))
    assert verify_store(store) == [f"{where}: PHI gate: unexpected case attribute 'PatientName'"]


# -- links and special files -------------------------------------------------------------------
def test_chunk_linked_to_etc_passwd_is_reported_not_read(store, opened):
    case, where = _ct(store)
    chunk = case / "0" / "c" / "0" / "0" / "0"
    chunk.unlink()
    chunk.symlink_to("/etc/passwd")
    assert verify_store(store) == [
        f"{where}/0/c/0/0/0: symbolic link to '/etc/passwd', not followed",
        f"{where}: {NOT_READ}",
    ]
    assert opened, "the audit hook saw no open at all"
    assert not [p for p in opened if os.path.realpath(p) == "/etc/passwd"]


def test_folder_linked_elsewhere(store, tmp_path, opened):
    case, where = _ct(store)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(case / "1", elsewhere)
    (case / "1").symlink_to(elsewhere, target_is_directory=True)
    assert verify_store(store) == [
        f"{where}/1: symbolic link to {str(elsewhere)!r}, not followed",
        f"{where}: {NOT_READ}",
    ]
    assert not [p for p in opened if p.startswith(str(elsewhere))]


def test_fifo_in_place_of_a_chunk(store):
    case, where = _ct(store)
    chunk = case / "1" / "c" / "0" / "0" / "0"
    chunk.unlink()
    os.mkfifo(chunk)
    tripwire = _FifoTripwire(chunk)
    findings = verify_store(store)
    assert not tripwire.release(), "verify opened the FIFO"
    assert findings == [
        f"{where}/1/c/0/0/0: FIFO, not a regular file or folder",
        f"{where}: {NOT_READ}",
    ]


def test_linked_catalog(store):
    catalog = layout.catalog_path(store, "ct-covid")
    catalog.unlink()
    catalog.symlink_to("/etc/passwd")
    assert verify_store(store) == [
        "ct-covid/catalog.parquet: symbolic link to '/etc/passwd', not followed",
        "ct-covid/catalog: not read (not a regular file)",
    ]


# -- corrupt cases are findings, not crashes ---------------------------------------------------
def test_corrupt_case_metadata_is_a_finding(store):
    case, where = _ct(store)
    (case / "zarr.json").write_text("{")
    findings = verify_store(store)
    assert len(findings) == 2, findings
    assert findings[0].startswith(f"{where}/zarr.json: unreadable: JSONDecodeError")
    assert findings[1] == f"{where}: {NOT_READ}"


def test_case_attributes_of_the_wrong_type_are_a_finding(store):
    case, where = _ct(store)
    _edit_json(case / "zarr.json", lambda d: d["attributes"]["mbc"].update(shape="big"))
    findings = verify_store(store)
    assert f"{where}: case attributes do not describe an image (dims, shape, spacing, unit)" in (
        findings
    )
    assert f"{where}: {NOT_READ}" in findings
