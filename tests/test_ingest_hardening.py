"""Intake hardening: whatever a site sends, nothing identified reaches the cloud side, nothing
is lost, and no per-file problem stops the run. Each test is a case seen when trying it."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from mbc_lib.ingest.pipeline import ingest
from mbc_lib.store import layout
from mbc_lib.store.reader import open_store
from mbc_lib.store.verify import verify_store

from .conftest import SAMPLE_ARGS, run_mbc

ROOT = os.geteuid() == 0
#: As root, the CLI runs without the capabilities that let root read what mode 000 forbids.
UNPRIVILEGED = (
    ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    if ROOT and shutil.which("setpriv")
    else []
)


def _mbc_unprivileged(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [*UNPRIVILEGED, sys.executable, "-m", "mbc_lib.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def _reasons(quarantine: Path) -> dict[str, dict]:
    lines = []
    for path in quarantine.rglob("reasons.jsonl"):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return {line["path"]: line for line in lines}


def _quarantine_bytes(quarantine: Path) -> bytes:
    return b"".join(p.read_bytes() for p in quarantine.rglob("*") if p.is_file())


@pytest.fixture
def ct_src(deid_out, tmp_path) -> Path:
    src = tmp_path / "src" / "ct-covid"
    shutil.copytree(deid_out / "ct-covid", src)
    return src


@pytest.fixture
def fundus_src(deid_out, tmp_path) -> Path:
    src = tmp_path / "src" / "fundus-glaucoma"
    shutil.copytree(deid_out / "fundus-glaucoma", src)
    return src


def _slices(src: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(d.glob("*.dcm")) for d in sorted(src.iterdir()) if d.name[:2] == "SE"}


def _edit(path: Path, **values: object) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


# -- links, special files, unreadable entries -----------------------------------------------
def _plant_entries(src: Path, outside: Path) -> None:
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "shadow"
    secret.write_text("root:$6$secret-hash-of-a-password:19000:0:99999:7:::\n")
    (src / "linked.dcm").symlink_to(secret)
    shutil.copytree(src / "SE0001", outside / "series-copy")
    (src / "linked-folder").symlink_to(outside / "series-copy", target_is_directory=True)
    os.mkfifo(src / "pipe.dcm")
    hidden = src / "unreadable-folder"
    hidden.mkdir()
    for f in _slices(src)["SE0002"][:3]:
        shutil.copy(f, hidden / f.name)
    os.chmod(hidden, 0)
    shutil.copy(_slices(src)["SE0003"][0], src / "unreadable.dcm")
    os.chmod(src / "unreadable.dcm", 0)


EXPECTED_REFUSALS = {
    "linked.dcm": "symbolic link: not followed",
    "linked-folder": "symbolic link: not followed",
    "pipe.dcm": "not a regular file: FIFO",
    "unreadable-folder": "unreadable folder: Permission denied (its files were not seen)",
    "unreadable.dcm": "unreadable file: Permission denied",
}


def test_links_fifos_and_unreadable_entries_are_refused_by_path(ct_src, tmp_path):
    _plant_entries(ct_src, tmp_path / "outside")
    store = tmp_path / "store"
    try:
        proc = _mbc_unprivileged(
            "ingest", str(ct_src), "--store", str(store), "--dataset", "ct-covid", "-q"
        )
    finally:
        os.chmod(ct_src / "unreadable-folder", 0o755)
    assert proc.returncode == 0, proc.stderr
    reasons = _reasons(tmp_path / "store.quarantine")
    for rel, reason in EXPECTED_REFUSALS.items():
        assert reasons[rel] == {"path": rel, "reason": reason, "copied": False}
    assert b"secret-hash" not in _quarantine_bytes(tmp_path / "store.quarantine")
    assert f"{len(EXPECTED_REFUSALS)} quarantined" in proc.stdout
    assert f"cases: {SAMPLE_ARGS['n_ct']} new" in proc.stdout  # the rest of the run went on
    assert verify_store(store) == []


def test_deid_reports_links_fifos_and_unreadable_entries(ct_src, tmp_path, key_file):
    _plant_entries(ct_src, tmp_path / "outside")
    try:
        proc = _mbc_unprivileged(
            "deid", str(ct_src), str(tmp_path / "out"), "--key-file", str(key_file), "-q"
        )
    finally:
        os.chmod(ct_src / "unreadable-folder", 0o755)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "deid-report.json").read_text())
    refused = {f["path"]: f["reason"] for f in report["files"] if f["status"] == "refused"}
    assert refused == EXPECTED_REFUSALS
    assert not (tmp_path / "out" / "linked.dcm").exists()
    assert not (tmp_path / "out" / "linked-folder").exists()


def test_single_site_ingest_never_copies_identified_or_linked_files(
    sample_tree, key_file, tmp_path
):
    src = tmp_path / "src"
    shutil.copytree(sample_tree / "dicom-real", src)
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret-hash-of-a-password:19000\n")
    (src / "shadow-link").symlink_to(secret)
    store = tmp_path / "store"
    result = ingest(src, store, "dicom-reference", deid_key_file=key_file, progress=False)
    assert result.published + result.duplicate + result.quarantined == result.seen
    reasons = _reasons(result.quarantine_dir)
    refused_by_deid = [r for r in reasons.values() if "de-identification" in r["reason"]]
    assert len(refused_by_deid) > 50
    assert all(not r["copied"] for r in refused_by_deid)
    assert reasons["shadow-link"]["reason"].endswith("symbolic link: not followed")
    kept = _quarantine_bytes(result.quarantine_dir)
    assert b"secret-hash" not in kept
    names = set()  # the full patient names of every file the de-identifier refused
    for r in refused_by_deid:
        try:
            ds = pydicom.dcmread(src / r["path"], stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - unreadable files carry no name to look for
            continue
        name = str(ds.get("PatientName", "") or "")
        if len(name) >= 6:
            names.add(name)
    assert len(names) >= 10
    leaked = sorted(n for n in names if n.encode() in kept)
    assert not leaked, f"identified bytes in the quarantine: {leaked[:5]}"
    assert verify_store(store) == []


# -- refused options: exit 2, nothing created -------------------------------------------------
@pytest.mark.parametrize("where", ["inside-store", "inside-source"])
def test_quarantine_inside_the_store_or_the_source_is_refused(ct_src, tmp_path, where):
    store = tmp_path / "store"
    quarantine = store / "ct-covid" / ".q" if where == "inside-store" else ct_src / "q"
    proc = run_mbc(
        "ingest", str(ct_src), "--store", str(store), "--dataset", "ct-covid",
        "--quarantine", str(quarantine), "-q",
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "quarantine" in proc.stderr, proc.stderr
    assert not store.exists() and not quarantine.exists()


def test_a_key_readable_by_others_is_refused_by_deid_and_ingest(ct_src, tmp_path, key_file):
    loose = tmp_path / "loose.key"
    shutil.copy(key_file, loose)
    os.chmod(loose, 0o644)
    out, store = tmp_path / "out", tmp_path / "store"
    for args in (
        ["deid", str(ct_src), str(out), "--key-file", str(loose), "-q"],
        ["ingest", str(ct_src), "--store", str(store), "--dataset", "ct-covid",
         "--deid-key-file", str(loose), "-q"],
    ):  # fmt: skip
        proc = run_mbc(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1
        assert "accessible by group or others (mode 0644)" in proc.stderr
        assert f"chmod 600 {loose}" in proc.stderr
    assert not out.exists() and not store.exists()
    assert not (tmp_path / "store.quarantine").exists()
    assert not list(tmp_path.glob(".mbc-deid-*"))


# -- a bad slice or series never stops the run ------------------------------------------------
def test_bad_slices_hold_back_their_series_and_the_run_goes_on(ct_src, tmp_path):
    slices = _slices(ct_src)
    _edit(slices["SE0001"][5], SOPInstanceUID=None)
    _edit(slices["SE0002"][5], Rows=None)
    huge = ct_src / "SE0003" / "huge.dcm"
    shutil.copy(slices["SE0003"][0], huge)
    _edit(huge, Rows=60000, Columns=60000)  # declares 215 GiB of HU
    store = tmp_path / "store"
    proc = run_mbc("ingest", str(ct_src), "--store", str(store), "--dataset", "ct-covid", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    reasons = _reasons(tmp_path / "store.quarantine")
    rel = {
        name: [f.relative_to(ct_src).as_posix() for f in files] for name, files in slices.items()
    }
    assert reasons[rel["SE0001"][5]]["reason"] == "slice refused: no SOP Instance UID"
    assert reasons[rel["SE0002"][5]]["reason"] == "slice refused: no Rows"
    assert "3,600,000,000 pixels, over the budget" in reasons["SE0003/huge.dcm"]["reason"]
    for name in ("SE0001", "SE0002", "SE0003"):
        held = [reasons[r]["reason"] for r in rel[name] if r in reasons]
        assert held and all(r.startswith(("series held back", "slice refused")) for r in held)
    assert verify_store(store) == []
    assert "cases: 0 new" in proc.stdout  # the catalog was still written
    assert open_store(store).catalog("ct-covid").empty


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"ImagePositionPatient": ["nan", "0", "0"]}, "Image Position (Patient) holds a value"),
        ({"PixelSpacing": ["inf", "0.5"]}, "Pixel Spacing holds a value that is not finite"),
        ({"ImageOrientationPatient": ["1", "0", "0", "0", "nan", "0"]}, "Image Orientation"),
        ({"RescaleSlope": "1e30"}, "overflow int16"),
    ],
    ids=["nan-position", "inf-spacing", "nan-orientation", "rescale-overflow"],
)
def test_untrustworthy_geometry_or_rescale_quarantines_the_series(ct_src, tmp_path, values, reason):
    from pydicom import config

    slices = _slices(ct_src)
    target = slices["SE0002"][3]
    with config.disable_value_validation():
        _edit(target, **values)
    store = tmp_path / "store"
    result = ingest(ct_src, store, "ct-covid", progress=False)
    reasons = _reasons(result.quarantine_dir)
    assert reason in reasons[target.relative_to(ct_src).as_posix()]["reason"]
    series_rel = {f.relative_to(ct_src).as_posix() for f in slices["SE0002"]}
    assert series_rel <= set(reasons)  # the whole series, not a volume with a hole
    frame = open_store(store).catalog("ct-covid")
    assert len(frame) == SAMPLE_ARGS["n_ct"] - 1
    hu = [open_store(store).open_case("ct-covid", c).values for c in frame.case_id]
    assert all(int(np.abs(v).max()) < 4000 for v in hu)  # nothing clipped into the store


# -- decoders within the pixel budget ---------------------------------------------------------
def _add_photo(src: Path, name: str, data: bytes, patient: str) -> None:
    (src / "images" / name).write_bytes(data)
    with open(src / "labels.csv", "a") as fh:
        fh.write(f"images/{name},{patient},L,0,0.3\n")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(fundus_src, tmp_path):
    buffer = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 40_000
    patient = _table(fundus_src)[1].split(",")[1]
    _add_photo(fundus_src, "bomb.png", buffer.getvalue(), patient)
    store = tmp_path / "store"
    result = ingest(fundus_src, store, "fundus-glaucoma", progress=False)
    reason = _reasons(result.quarantine_dir)["images/bomb.png"]["reason"]
    assert reason == (
        "a 13000 x 13000 photograph declares 169,000,000 pixels, over the budget of "
        "134,217,728 (--max-pixels / $MBC_MAX_PIXELS)"
    )
    assert result.cases_published == SAMPLE_ARGS["n_fundus"]
    small = ingest(fundus_src, tmp_path / "s2", "fundus-glaucoma", progress=False, pixel_budget=99)
    assert small.cases_published == 0  # the budget is the caller's to set
    photos = [r for r in _reasons(small.quarantine_dir).values() if r["path"][:7] == "images/"]
    assert photos and all("over the budget of 99" in r["reason"] for r in photos)


def test_damaged_files_are_quarantined_as_malformed_not_as_identified(fundus_src, ct_src, tmp_path):
    from mbc_lib.phi_gate import jpeg_segments

    jpeg = next(p for p in sorted((fundus_src / "images").iterdir()) if p.suffix == ".JPG")
    data = jpeg.read_bytes()
    sos = next(s for s in jpeg_segments(data) if s[0] == 0xDA)
    start = sos[1] + 2 + sos[2]
    jpeg.write_bytes(data[:start] + b"\0" * (len(data) - start - 2) + b"\xff\xd9")
    png = next(p for p in sorted((fundus_src / "images").iterdir()) if p.suffix == ".PNG")
    data = png.read_bytes()
    at = data.index(b"IDAT")
    png.write_bytes(data[:at] + b"IDAX" + data[at + 4 :])
    result = ingest(fundus_src, tmp_path / "store", "fundus-glaucoma", progress=False)
    reasons = _reasons(result.quarantine_dir)
    assert reasons[f"images/{jpeg.name}"]["reason"] == "malformed JPEG: image data is zeroed"
    assert reasons[f"images/{png.name}"]["reason"].startswith("malformed PNG: CRC error")
    assert result.cases_published == SAMPLE_ARGS["n_fundus"] - 2

    cut = _slices(ct_src)["SE0001"][4]
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 10])
    result = ingest(ct_src, tmp_path / "ct-store", "ct-covid", progress=False)
    reason = _reasons(result.quarantine_dir)[cut.relative_to(ct_src).as_posix()]
    assert reason["reason"].startswith("malformed DICOM: truncated") and not reason["copied"]
    assert result.cases_published == SAMPLE_ARGS["n_ct"] - 1  # its series, not the input


# -- label tables -----------------------------------------------------------------------------
def _table(src: Path) -> list[str]:
    return (src / "labels.csv").read_text().splitlines()


def test_two_rows_for_one_image_refuse_the_table_and_hold_its_images(fundus_src, tmp_path):
    lines = _table(fundus_src)
    path, patient = lines[1].split(",")[:2]
    other = lines[3].split(",")[1]
    lines.append(f"{path},{other},R,1,0.9")  # the same image, another patient and label
    (fundus_src / "labels.csv").write_text("\n".join(lines) + "\n")
    result = ingest(fundus_src, tmp_path / "store", "fundus-glaucoma", progress=False)
    reasons = _reasons(result.quarantine_dir)
    assert reasons["labels.csv"]["reason"] == (
        f"label table refused: 1 key(s) given by more than one row (lines 2, {len(lines)})"
    )
    assert result.cases_published == 0
    assert all("label table labels.csv was refused" in r["reason"] for p, r in reasons.items()
               if p.startswith("images/"))  # fmt: skip


def test_nan_in_a_numeric_column_is_refused(fundus_src, tmp_path):
    lines = _table(fundus_src)
    cells = lines[2].split(",")
    cells[-1] = "nan"
    lines[2] = ",".join(cells)
    (fundus_src / "labels.csv").write_text("\n".join(lines) + "\n")
    result = ingest(fundus_src, tmp_path / "store", "fundus-glaucoma", progress=False)
    reason = _reasons(result.quarantine_dir)["labels.csv"]["reason"]
    assert reason == (
        "label table refused: invalid label value at line 3: "
        "column 'cdr': 'nan' is not a finite number"
    )


def test_a_byte_order_mark_is_accepted(fundus_src, tmp_path):
    table = fundus_src / "labels.csv"
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    result = ingest(fundus_src, tmp_path / "store", "fundus-glaucoma", progress=False)
    assert result.quarantined == 0
    assert result.cases_published == SAMPLE_ARGS["n_fundus"]
    assert result.published == result.seen


def test_a_header_only_table_is_quarantined_not_counted_as_duplicate(ct_src, tmp_path):
    store = tmp_path / "store"
    ingest(ct_src, store, "ct-covid", progress=False)
    table = ct_src / "labels.csv"
    table.write_text(table.read_text().splitlines()[0] + "\n")
    result = ingest(ct_src, store, "ct-covid", progress=False)
    assert _reasons(result.quarantine_dir)["labels.csv"]["reason"] == (
        "label table refused: label table holds no rows"
    )
    assert result.duplicate == result.seen - result.quarantined
    assert result.quarantined == result.seen - result.duplicate > 0


def test_deid_refuses_duplicate_rows_and_an_empty_table(sample_tree, tmp_path, key_file):
    src = tmp_path / "in" / "fundus-glaucoma"
    shutil.copytree(sample_tree / "fundus-glaucoma", src)
    lines = _table(src)
    (src / "labels.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    proc = run_mbc("deid", str(src), str(tmp_path / "out"), "--key-file", str(key_file), "-q")
    report = json.loads((tmp_path / "out" / "deid-report.json").read_text())
    reason = next(f["reason"] for f in report["files"] if f["path"] == "labels.csv")
    assert reason.startswith("label table refused: 1 key(s) given by more than one row"), proc
    (src / "labels.csv").write_text(lines[0] + "\n")
    run_mbc("deid", str(src), str(tmp_path / "out2"), "--key-file", str(key_file), "-q")
    report = json.loads((tmp_path / "out2" / "deid-report.json").read_text())
    reason = next(f["reason"] for f in report["files"] if f["path"] == "labels.csv")
    assert reason == "label table refused: label table holds no rows"


# -- store-level failures: one line, exit 2, nothing half-published --------------------------
def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()}); needs root")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


def _assert_store_failure(proc: subprocess.CompletedProcess, store: Path) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "cannot write to the store" in proc.stderr or "not a folder" in proc.stderr


def test_a_store_path_that_is_a_file_is_one_line_and_creates_nothing(ct_src, tmp_path):
    store = tmp_path / "store"
    store.write_text("not a store")
    proc = run_mbc("ingest", str(ct_src), "--store", str(store), "--dataset", "ct-covid", "-q")
    _assert_store_failure(proc, store)
    assert store.read_text() == "not a store"
    assert not (tmp_path / "store.quarantine").exists()


@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_a_full_disk_stops_the_run_with_one_line_and_no_half_case(ct_src, tmp_path):
    mount = tmp_path / "small"
    _mount_tmpfs(mount, "400k")
    try:
        store = mount / "store"
        proc = run_mbc("ingest", str(ct_src), "--store", str(store), "--dataset", "ct-covid",
                       "--quarantine", str(tmp_path / "q"), "-q")  # fmt: skip
        _assert_store_failure(proc, store)
        assert "No space left on device" in proc.stderr
        assert not list((store / layout.STAGING).iterdir())
        for finding in verify_store(store):  # published cases are whole; the catalog may lag
            assert "catalog" in finding, finding
    finally:
        _umount(mount)


@pytest.mark.skipif(not ROOT, reason="mounting a tmpfs needs root")
def test_a_read_only_store_stops_the_run_with_one_line(ct_src, fundus_src, tmp_path):
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "64m")
    try:
        store = mount / "store"
        ingest(fundus_src, store, "fundus-glaucoma", progress=False)
        before = sorted(p.relative_to(store) for p in store.rglob("*"))
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        proc = run_mbc("ingest", str(ct_src), "--store", str(store), "--dataset", "ct-covid",
                       "--quarantine", str(tmp_path / "q"), "-q")  # fmt: skip
        _assert_store_failure(proc, store)
        assert "Read-only file system" in proc.stderr
        assert sorted(p.relative_to(store) for p in store.rglob("*")) == before
    finally:
        _umount(mount)


def test_noise_that_starts_like_a_data_set_is_unsupported_not_identified(ct_src, tmp_path):
    (ct_src / "scanner.bin").write_bytes(b"\x08\x00garbage from Quixote's scanner" * 4)
    result = ingest(ct_src, tmp_path / "store", "ct-covid", progress=False)
    reason = _reasons(result.quarantine_dir)["scanner.bin"]
    assert reason == {"path": "scanner.bin", "reason": "unsupported file type", "copied": False}
    assert result.cases_published == SAMPLE_ARGS["n_ct"]


def test_a_zero_pixel_spacing_means_unknown_size_and_nan_is_refused(tmp_path):
    from pydicom import config
    from pydicom.data import get_testdata_file

    from mbc_lib.deid.dicom import deid_dicom_file
    from mbc_lib.deid.keys import DeidKey

    src = tmp_path / "src"
    key = DeidKey(b"spacing-test-key-0123456789abcdef")
    for name, spacing in (("zero", ["0.000", "0.000"]), ("nan", ["nan", "0.5"])):
        raw = tmp_path / f"{name}-raw.dcm"
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        with config.disable_value_validation():
            ds.PixelSpacing = spacing
            ds.save_as(raw)
        assert deid_dicom_file(raw, src / f"{name}.dcm", key).status == "deidentified"
    result = ingest(src, tmp_path / "store", "dicom-reference", progress=False)
    reasons = _reasons(result.quarantine_dir)
    assert reasons["nan.dcm"]["reason"] == "Pixel Spacing holds a value that is not finite"
    assert "zero.dcm" not in reasons
    (case_id,) = open_store(tmp_path / "store").catalog("dicom-reference").case_id
    attrs = open_store(tmp_path / "store").case_attrs("dicom-reference", case_id)
    assert attrs["unit"] is None and attrs["spacing"] == [1.0, 1.0]


# -- reading pixels straight from the file ------------------------------------------------------
def _hu_both_ways(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    from mbc_lib.ingest import convert

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    read = pydicom.dcmread(io.BytesIO(data))
    native = convert.native_pixels(read, int(read.Rows), int(read.Columns))
    expected = convert.dataset_hu(pydicom.dcmread(io.BytesIO(data)))
    if native is None:
        return expected, None
    raw = data[native.offset : native.offset + native.length]
    return expected, convert.native_hu(raw, native, (int(read.Rows), int(read.Columns)))


@pytest.mark.parametrize(
    ("representation", "bits_stored", "rescale"),
    [(0, 12, True), (0, 16, False), (1, 12, True), (1, 16, True), (1, 10, False)],
)
def test_native_pixels_read_exactly_as_pydicom_decodes_them(representation, bits_stored, rescale):
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(bits_stored)
    stored = rng.integers(0, 1 << 16, size=(ds.Rows, ds.Columns), dtype=np.uint16)
    ds.PixelData = stored.tobytes()  # high bits set beyond Bits Stored: pydicom masks them
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = representation, bits_stored, bits_stored - 1
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = "1.5", "-1024"
    else:
        del ds.RescaleSlope, ds.RescaleIntercept
    expected, native = _hu_both_ways(ds)
    assert native is not None
    assert native.dtype == expected.dtype
    np.testing.assert_array_equal(native, expected)


def test_compressed_or_odd_pixel_data_is_left_to_pydicom():
    from pydicom.data import get_testdata_file

    from mbc_lib.ingest.convert import native_pixels

    for name in ("JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb.dcm", "emri_small.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        assert native_pixels(ds, int(ds.Rows), int(ds.Columns)) is None, name


def test_a_file_changed_after_the_gate_read_it_is_not_read_again(ct_src, tmp_path, monkeypatch):
    from mbc_lib.ingest import pipeline

    victim = _slices(ct_src)["SE0002"][3]
    gate = pipeline._gate

    def gate_then_swap(*args, **kwargs):
        gated = gate(*args, **kwargs)
        victim.write_bytes(victim.read_bytes())  # same bytes, a new version of the file
        return gated

    monkeypatch.setattr(pipeline, "_gate", gate_then_swap)
    result = ingest(ct_src, tmp_path / "store", "ct-covid", progress=False)
    reasons = _reasons(result.quarantine_dir)
    rel = victim.relative_to(ct_src).as_posix()
    assert "file changed while it was being ingested" in reasons[rel]["reason"]
    assert result.cases_published == SAMPLE_ARGS["n_ct"] - 1


def test_masks_are_read_one_series_at_a_time(ct_src, tmp_path, monkeypatch):
    """Memory stays flat as inputs grow: ingest used to load the labels of every mask
    before publishing the first series (41 MB for 41 series of 128 x 128 x 64)."""
    import tracemalloc

    from mbc_lib.store import writer

    masks = sorted((ct_src / "masks").glob("*.npz"))
    assert len(masks) >= 3
    with np.load(masks[0]) as npz:
        one_mask = npz["labels"].nbytes
    held: list[int] = []
    publish = writer.StoreWriter.publish

    def publish_and_measure(self, *args, **kwargs):
        if not held:  # labels arrays read from the archives and still alive
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(True, "*numpy/lib/_format_impl.py")]
            )
            held.append(sum(s.size for s in snap.statistics("filename")))
        return publish(self, *args, **kwargs)

    monkeypatch.setattr(writer.StoreWriter, "publish", publish_and_measure)
    tracemalloc.start()
    try:
        result = ingest(ct_src, tmp_path / "store", "ct-covid", progress=False)
    finally:
        tracemalloc.stop()
    assert result.cases_published == len(masks) and result.quarantined == 0
    assert held and held[0] <= one_mask, f"{held[0]} bytes of labels held, one mask is {one_mask}"
