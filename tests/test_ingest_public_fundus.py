"""Fundus datasets with the label tables public datasets ship (issue 9), made with PIL.

AIROGS (``train_labels.csv``: challenge_id, class RG/NRG; photographs in part folders) and
ORIGA (``Images/NNN.jpg``, ``OrigaList.csv``): no patient ids, other column names and
values, a table name of their own, the download folder not named after the dataset.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mbc_lib.store.reader import open_store

from .conftest import run_mbc


def _photo(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x013B] = "Dr Anna Nowak"  # Artist: identifying, as cameras leave it
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif)
    path.write_bytes(buffer.getvalue())


def _ingest(src: Path, store: Path, dataset: str, key_file: Path):
    return run_mbc(
        "ingest", str(src), "--store", str(store), "--dataset", dataset,
        "--deid-key-file", str(key_file), "-q",
    )  # fmt: skip


def make_airogs(root: Path) -> None:
    """AIROGS as downloaded: six photographs in part folders, train_labels.csv."""
    rows = ["challenge_id,class"]
    for n in range(6):
        _photo(root / str(n // 3) / f"TRAIN{n:06d}.jpg", n)
        rows.append(f"TRAIN{n:06d},{'RG' if n % 2 else 'NRG'}")
    (root / "train_labels.csv").write_text("\n".join(rows) + "\n")


def make_origa(root: Path) -> None:
    """ORIGA as downloaded: Images/NNN.jpg and OrigaList.csv (one CDR blank)."""
    lines = ["Eye,Filename,ExpCDR,Set,Glaucoma"]
    for n, (eye, cdr, glaucoma) in enumerate(
        [("OD", "0.7097", 1), ("OS", "", 0), ("OD", "0.35", 0)]
    ):
        _photo(root / "Images" / f"{n + 1:03d}.jpg", 10 + n)
        lines.append(f"{eye},{n + 1:03d}.jpg,{cdr},A,{glaucoma}")
    (root / "OrigaList.csv").write_text("\n".join(lines) + "\n")


def test_airogs_as_downloaded(tmp_path, key_file):
    root = tmp_path / "eyepacs-airogs-light"
    make_airogs(root)
    store = tmp_path / "store"
    proc = _ingest(root, store, "airogs", key_file)
    assert proc.returncode == 0, proc.stderr
    assert "7 files seen: 7 published, 0 duplicate, 0 quarantined" in proc.stdout
    catalog = open_store(store).catalog("airogs")
    assert sorted(catalog["glaucoma"].tolist()) == [0, 0, 0, 1, 1, 1]
    assert catalog["patient"].nunique() == 6  # each photograph its own patient
    assert b"Nowak" not in b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
    assert run_mbc("verify", str(store), "-q").returncode == 0


def test_origa_with_mapped_eye_and_blank_cdr(tmp_path, key_file):
    root = tmp_path / "ORIGA"
    make_origa(root)
    store = tmp_path / "store"
    proc = _ingest(root, store, "origa", key_file)
    assert proc.returncode == 0, proc.stderr
    assert "4 files seen: 4 published, 0 duplicate, 0 quarantined" in proc.stdout
    catalog = open_store(store).catalog("origa").sort_values("glaucoma")
    assert sorted(catalog["eye"].tolist()) == ["L", "R", "R"]
    assert catalog["cdr"].isna().sum() == 1  # a blank optional cell is an unknown label
    assert "Set" not in catalog.columns
    assert run_mbc("verify", str(store), "-q").returncode == 0


def test_a_photograph_without_a_row_is_quarantined(tmp_path, key_file):
    root = tmp_path / "airogs"
    _photo(root / "0" / "TRAIN000001.jpg", 1)
    _photo(root / "0" / "TRAIN000002.jpg", 2)
    (root / "train_labels.csv").write_text("challenge_id,class\nTRAIN000001,RG\n")
    proc = _ingest(root, tmp_path / "store", "airogs", key_file)
    assert proc.returncode == 0, proc.stderr
    assert "2 published, 0 duplicate, 1 quarantined" in proc.stdout
    assert "no row for this image in the label table" in proc.stdout
