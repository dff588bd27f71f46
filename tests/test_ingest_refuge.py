"""REFUGE as downloaded (issue): glaucoma from the folder name, disc/cup masks as BMP.

The tree is made with PIL: JPEG photographs with an identifying EXIF Artist (so that
de-identification matters), 8-bit BMP masks with 0 = cup, 128 = rim, 255 = background.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mbc_lib import phi_gate
from mbc_lib.deid.images import strip_bmp
from mbc_lib.errors import MbcError
from mbc_lib.manifests import parse_manifest
from mbc_lib.sources.walk import classify
from mbc_lib.store.reader import open_store
from mbc_lib.store.verify import verify_store

from .conftest import run_mbc

H, W = 48, 64
MASKS = "Annotation-Training400/Disc_Cup_Masks"


def _photo(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x013B] = "Dr Anna Nowak"  # Artist: identifying, as cameras leave it
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", exif=exif)


def _disc_cup(seed: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A REFUGE-style mask: background 255, a disc of rim 128 around a cup 0."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2 - seed % 5)
    return np.where(r < 6, 0, np.where(r < 14, 128, 255)).astype(np.uint8)


def _mask(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values, "L").save(path, "BMP")


def make_refuge(root: Path) -> dict[str, np.ndarray]:
    """Two glaucoma and three non-glaucoma photographs, each with its mask; the masks."""
    masks = {}
    for n, (folder, stem) in enumerate(
        [("Glaucoma", "g0001"), ("Glaucoma", "g0002"), ("Non-Glaucoma", "n0001"),
         ("Non-Glaucoma", "n0002"), ("Non-Glaucoma", "n0003")]
    ):  # fmt: skip
        _photo(root / "Training400" / folder / f"{stem}.jpg", n)
        masks[stem] = _disc_cup(n)
        _mask(root / MASKS / folder / f"{stem}.bmp", masks[stem])
    return masks


def _ingest(src: Path, store: Path, key_file: Path):
    return run_mbc(
        "ingest", str(src), "--store", str(store), "--dataset", "refuge",
        "--deid-key-file", str(key_file), "-q",
    )  # fmt: skip


def _seen(stdout: str) -> tuple[int, int, int, int]:
    line = next(x for x in stdout.splitlines() if "files seen" in x)
    words = line.split(": ", 1)[1].replace(",", "").split()
    return int(words[0]), int(words[3]), int(words[5]), int(words[7])


def _cases_by_stem(store: Path) -> dict[int, list[str]]:
    catalog = open_store(store).catalog("refuge")
    return {g: sorted(catalog[catalog["glaucoma"] == g]["case_id"]) for g in (0, 1)}


def test_refuge_as_downloaded(tmp_path, key_file):
    root = tmp_path / "REFUGE"
    masks = make_refuge(root)
    store = tmp_path / "store"
    proc = _ingest(root, store, key_file)
    assert proc.returncode == 0, proc.stderr
    seen, published, duplicate, quarantined = _seen(proc.stdout)
    assert (seen, published, duplicate, quarantined) == (10, 10, 0, 0), proc.stdout
    reader = open_store(store)
    catalog = reader.catalog("refuge")
    assert sorted(catalog["glaucoma"].tolist()) == [0, 0, 0, 1, 1]
    assert catalog["patient"].nunique() == 5  # each photograph its own patient
    mapped = {tuple(np.unique(np.select([m == 255, m == 128, m == 0], [0, 1, 2])))
              for m in masks.values()}  # fmt: skip
    assert mapped == {(0, 1, 2)}
    expected = sorted(
        np.select([m == 255, m == 128, m == 0], [0, 1, 2]).astype(np.uint8).tobytes()
        for m in masks.values()
    )
    stored = []
    for case_id in catalog["case_id"]:
        labels = reader.open_labels("refuge", case_id)
        assert labels is not None and labels.shape == (1, H, W)
        assert labels.attrs["image-label"]["colors"][2]["label-value"] == 2
        stored.append(np.asarray(labels.values[0]).tobytes())
    assert sorted(stored) == expected  # 255 -> 0 background, 128 -> 1 rim, 0 -> 2 cup
    assert b"Nowak" not in b"".join(p.read_bytes() for p in store.rglob("*") if p.is_file())
    assert verify_store(store) == []
    again = _ingest(root, store, key_file)
    assert _seen(again.stdout) == (10, 0, 10, 0), again.stdout


def test_refuge_cases_feed_the_loader_and_the_gallery(tmp_path, key_file):
    from matplotlib.figure import Figure

    from mbc_lib.data.fundus import FundusDataset
    from mbc_lib.viewers import render_fundus_gallery

    masks = make_refuge(tmp_path / "REFUGE")
    store = tmp_path / "store"
    assert _ingest(tmp_path / "REFUGE", store, key_file).returncode == 0
    data = FundusDataset(store, "refuge", label="glaucoma")
    assert len(data) == 5
    expected = {
        np.select([m == 255, m == 128, m == 0], [0, 1, 2]).tobytes() for m in masks.values()
    }
    for item in data:
        assert tuple(item["image"].shape) == (3, H, W) and item["label"].item() in (0, 1)
        assert tuple(item["mask"].shape) == (1, H, W)
        assert item["mask"][0].numpy().tobytes() in expected
    s = open_store(store)
    images = [s.open_case("refuge", c) for c in s.case_ids("refuge")]
    assert isinstance(render_fundus_gallery(images), Figure)


def test_a_mask_of_another_size_is_quarantined_and_its_photo_published(tmp_path, key_file):
    root = tmp_path / "REFUGE"
    make_refuge(root)
    _mask(root / MASKS / "Glaucoma" / "g0002.bmp", _disc_cup(1, (H, W - 8)))
    store = tmp_path / "store"
    proc = _ingest(root, store, key_file)
    assert proc.returncode == 0, proc.stderr
    seen, published, duplicate, quarantined = _seen(proc.stdout)
    assert (published, quarantined) == (9, 1) and published + duplicate + quarantined == seen
    reasons = [
        json.loads(x) for x in next(store.parent.rglob("reasons.jsonl")).read_text().splitlines()
    ]
    assert [r["path"] for r in reasons] == [f"{MASKS}/Glaucoma/g0002.bmp"]
    assert "56 x 48 differs from its photograph" in reasons[0]["reason"]
    assert "(64 x 48)" in reasons[0]["reason"]
    reader = open_store(store)
    catalog = reader.catalog("refuge")
    assert len(catalog) == 5  # g0002 is published without its mask
    unlabelled = [c for c in catalog["case_id"] if reader.open_labels("refuge", c) is None]
    assert len(unlabelled) == 1
    assert catalog.set_index("case_id").loc[unlabelled[0], "glaucoma"] == 1
    assert verify_store(store) == []


def test_a_mask_value_outside_the_map_quarantines_the_mask(tmp_path, key_file):
    root = tmp_path / "REFUGE"
    make_refuge(root)
    odd = _disc_cup(2)
    odd[0, 0] = 7
    _mask(root / MASKS / "Non-Glaucoma" / "n0001.bmp", odd)
    proc = _ingest(root, tmp_path / "store", key_file)
    assert proc.returncode == 0, proc.stderr
    seen, published, duplicate, quarantined = _seen(proc.stdout)
    assert (seen, published, quarantined) == (10, 9, 1), proc.stdout
    assert "mask holds values" in proc.stdout
    assert verify_store(tmp_path / "store") == []


def test_a_photograph_outside_the_label_folders_is_quarantined(tmp_path, key_file):
    root = tmp_path / "REFUGE"
    make_refuge(root)
    _photo(root / "Training400" / "Unsorted" / "x0001.jpg", 9)
    proc = _ingest(root, tmp_path / "store", key_file)
    assert proc.returncode == 0, proc.stderr
    assert _seen(proc.stdout) == (11, 10, 0, 1), proc.stdout
    assert "no folder of this image's path names its 'glaucoma' label" in proc.stdout


def _bmp(values: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(values, "L").save(out, "BMP")
    return out.getvalue()


def test_bmp_gate_and_deid():
    data = _bmp(_disc_cup(0))
    assert classify(data[:132], "x/g0001.bmp", None) == "bmp"
    assert classify(b"BMI,age\n1,2\n", "x.csv", None) == "other"
    assert phi_gate.check_bmp(data) == []
    hidden = data + b"Anna Nowak"
    assert phi_gate.check_bmp(hidden) == ["BMP holds 10 bytes after its declared end"]
    assert strip_bmp(hidden) == data  # the de-identifier drops them, pixels unchanged
    assert phi_gate.check_bmp(data[:-5])[0].startswith("malformed BMP: truncated")
    assert phi_gate.check_bmp(data, budget=100)[0].startswith("too large")
    v5 = bytearray(data)  # a V5 header naming a linked profile (a file path)
    v5[14:18] = (124).to_bytes(4, "little")
    v5[70:74] = (0x4C494E4B).to_bytes(4, "little")
    assert "BMP linked colour profile present" in phi_gate.check_bmp(bytes(v5))


BASE = {"name": "x", "title": "t", "modality": "fundus", "group": "g"}
FOLDER = {"from": "folder", "patient": "none",
          "columns": {"glaucoma": {"dtype": "int", "map": {"Glaucoma": 1}}}}  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({**FOLDER, "file": "a.csv"}, "takes no table keys"),
        ({**FOLDER, "patient": "pid"}, "needs labels.patient: none"),
        ({**FOLDER, "columns": {"glaucoma": {"dtype": "int"}}}, "'map' folder names"),
        ({**FOLDER, "from": "filename"}, "labels.from must be one of"),
    ],
)
def test_folder_labels_are_validated(labels, message):
    with pytest.raises(MbcError, match=message):
        parse_manifest({**BASE, "labels": labels})


def test_mask_sources_are_validated():
    seg = {"classes": {0: {"name": "background"}, 1: {"name": "rim"}}}
    with pytest.raises(MbcError, match="needs segmentation classes"):
        parse_manifest({**BASE, "source": {"masks": "m/{case}.bmp"}})
    with pytest.raises(MbcError, match="segmentation.map must map"):
        parse_manifest({**BASE, "segmentation": {**seg, "map": {255: 0, 0: 3}}})
    manifest = parse_manifest(
        {**BASE, "labels": FOLDER, "source": {"masks": "m/**/{case}.bmp"}, "segmentation": seg}
    )
    assert manifest.photo_mask_case("m/a/b/g0001.bmp") == "g0001"
    assert manifest.folder_labels("T/Glaucoma/g0001.jpg") == {"glaucoma": 1}
