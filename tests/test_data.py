"""Training data from the store: torch Datasets, MONAI transforms, loaders and the chunk cache."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from monai.data import ThreadDataLoader
from monai.transforms import Compose, RandFlipd, RandRotate90d, Resized, ScaleIntensityRanged
from torch.utils.data import DataLoader

from mbc_lib.data import CTPatchDataset, CTSliceDataset, FundusDataset, GroupShuffleSampler
from mbc_lib.errors import MbcError
from mbc_lib.sample.store import build_sample_store
from mbc_lib.store.chunk_reader import ChunkReader
from mbc_lib.store.reader import open_store

CT, FUNDUS = "ct-covid", "fundus-glaucoma"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    work = tmp_path_factory.mktemp("data") / "work"
    return build_sample_store(
        work, seed=5, n_fundus=8, n_ct=2, ct_size=64, include_real_dicom=False
    )


@pytest.fixture(scope="module")
def store(store_path):
    return open_store(store_path)


# -- fundus -----------------------------------------------------------------------------------
def test_fundus_samples_are_the_store_images_with_catalog_labels(store):
    ds = FundusDataset(store)
    catalog = store.catalog(FUNDUS)
    assert len(ds) == len(catalog) == 8
    for index in range(len(ds)):
        sample = ds[index]
        assert set(sample) == {"image", "label", "case_id", "patient"}
        row = catalog.set_index("case_id").loc[sample["case_id"]]
        pixels = store.image_array(FUNDUS, sample["case_id"])[...]
        assert sample["image"].dtype == torch.float32
        assert tuple(sample["image"].shape) == pixels.shape and pixels.shape[0] == 3
        assert sample["image"].min() >= 0.0 and sample["image"].max() <= 1.0
        np.testing.assert_allclose(sample["image"].numpy() * 255, pixels, atol=1e-3)
        assert sample["label"].dtype == torch.int64 and sample["label"].ndim == 0
        assert int(sample["label"]) == row["glaucoma"]
        assert sample["patient"] == row["patient"]


def test_fundus_label_kinds(store):
    cdr = FundusDataset(store, label="cdr")
    assert cdr[0]["label"].dtype == torch.float32
    assert float(cdr[0]["label"]) == pytest.approx(cdr.catalog["cdr"].iloc[0], abs=1e-6)
    eye = FundusDataset(store, label="eye")
    assert eye.classes == ("L", "R")
    assert eye.classes[int(eye[0]["label"])] == eye.catalog["eye"].iloc[0]
    assert "label" not in FundusDataset(store, label=None)[0]
    with pytest.raises(MbcError, match="no label 'grade'.*glaucoma"):
        FundusDataset(store, label="grade")


# -- CT slices --------------------------------------------------------------------------------
def test_ct_slices_cover_every_slice_with_aligned_labels(store):
    ds = CTSliceDataset(store)
    depths = [store.image_array(CT, c).shape[0] for c in ds.catalog["case_id"]]
    assert len(ds) == sum(depths)
    last = ds[depths[0]]  # first slice of the second case
    assert (last["case_id"], last["z"]) == (ds.catalog["case_id"].iloc[1], 0)
    sample = ds[20]
    assert set(sample) == {"image", "label", "case_id", "z"}
    case_id, z = sample["case_id"], sample["z"]
    image = store.image_array(CT, case_id)
    assert sample["image"].dtype == torch.float32 and sample["label"].dtype == torch.int64
    assert tuple(sample["image"].shape) == tuple(sample["label"].shape) == (1, *image.shape[1:])
    np.testing.assert_array_equal(sample["image"][0].numpy(), image[z])
    np.testing.assert_array_equal(sample["label"][0].numpy(), store.labels_array(CT, case_id)[z])
    # labels sit on the anatomy: normal lung is air-filled, the background is not all lung
    lung = sample["image"][sample["label"] == 1]
    assert lung.numel() > 0 and lung.mean() < -500


def test_ct_hu_window_scales_to_unit_range(store):
    hu = CTSliceDataset(store)[20]["image"]
    scaled = CTSliceDataset(store, hu_window=(-1000, 400))[20]["image"]
    assert scaled.min() >= 0.0 and scaled.max() <= 1.0
    torch.testing.assert_close(scaled, (hu.clamp(-1000, 400) + 1000) / 1400)
    with pytest.raises(MbcError, match="hu_window"):
        CTSliceDataset(store, hu_window=(400, -1000))


# -- CT patches -------------------------------------------------------------------------------
def test_ct_patches_are_store_regions(store):
    ds = CTPatchDataset(store, patch_size=(16, 32, 32), samples_per_case=3)
    assert len(ds) == 2 * 3
    for index in range(len(ds)):
        sample = ds[index]
        assert set(sample) == {"image", "label", "case_id", "start"}
        assert sample["case_id"] == ds.catalog["case_id"].iloc[index // 3]
        assert sample["image"].shape == sample["label"].shape == (1, 16, 32, 32)
        region = tuple(slice(s, s + p) for s, p in zip(sample["start"], (16, 32, 32), strict=True))
        np.testing.assert_array_equal(
            sample["image"][0].numpy(), store.image_array(CT, sample["case_id"])[region]
        )
        np.testing.assert_array_equal(
            sample["label"][0].numpy(), store.labels_array(CT, sample["case_id"])[region]
        )


def test_ct_patches_are_deterministic_per_seed_index_and_epoch(store):
    def starts(ds):
        return [ds[i]["start"] for i in range(len(ds))]

    a = CTPatchDataset(store, patch_size=(8, 16, 16), samples_per_case=4, seed=1)
    b = CTPatchDataset(store, patch_size=(8, 16, 16), samples_per_case=4, seed=1)
    other = CTPatchDataset(store, patch_size=(8, 16, 16), samples_per_case=4, seed=2)
    assert starts(a) == starts(b)
    assert starts(a) != starts(other)
    epoch0 = starts(a)
    a.set_epoch(1)
    assert starts(a) != epoch0
    a.set_epoch(0)
    assert starts(a) == epoch0
    torch.testing.assert_close(a[3]["image"], b[3]["image"])


def test_ct_patches_chunk_aligned_touch_the_fewest_chunks(store):
    ds = CTPatchDataset(
        store, patch_size=(8, 32, 32), samples_per_case=6, chunk_aligned=True, cache_bytes=1 << 30
    )
    chunks = store.image_array(CT, ds.catalog["case_id"].iloc[0]).chunks
    for index in range(len(ds)):
        before = ds.cache_info().misses + ds.cache_info().hits
        start = ds[index]["start"]
        assert all(s % c == 0 for s, c in zip(start, chunks, strict=True))
        touched = ds.cache_info().misses + ds.cache_info().hits - before
        assert touched == 2  # one image chunk and one label chunk


def test_ct_patches_pad_volumes_smaller_than_the_patch(store):
    ds = CTPatchDataset(store, patch_size=(48, 64, 64), samples_per_case=1)
    sample = ds[0]
    depth = store.image_array(CT, sample["case_id"]).shape[0]
    assert depth < 48 and sample["start"] == (0, 0, 0)
    assert sample["image"].shape == (1, 48, 64, 64)
    assert (sample["image"][0, depth:] == -1024).all()
    assert (sample["label"][0, depth:] == 0).all()
    with pytest.raises(MbcError, match="patch_size"):
        CTPatchDataset(store, patch_size=(96, 96))


# -- selection --------------------------------------------------------------------------------
def test_split_and_query_select_cases(store):
    catalog = store.catalog(FUNDUS)
    train = FundusDataset(store, split="train")
    assert len(train) == (catalog["split"] == "train").sum() > 0
    assert set(train.catalog["split"]) == {"train"}
    glaucoma = FundusDataset(store, query="glaucoma == 1 and cdr > 0.5")
    assert len(glaucoma) == len(catalog.query("glaucoma == 1 and cdr > 0.5"))
    assert all(int(glaucoma[i]["label"]) == 1 for i in range(len(glaucoma)))
    covid = CTSliceDataset(store, query="diagnosis == 'covid19'")
    assert set(covid.catalog["diagnosis"]) == {"covid19"}
    assert {covid[i]["case_id"] for i in range(0, len(covid), 8)} == set(covid.catalog["case_id"])
    with pytest.raises(MbcError, match="bad catalog query"):
        FundusDataset(store, query="no_such_column > 1")
    with pytest.raises(MbcError, match="unknown split 'training'"):
        CTPatchDataset(store, split="training")


# -- MONAI and loaders ------------------------------------------------------------------------
def test_monai_dictionary_transforms_compose(store):
    keys = ["image", "label"]
    plain = CTPatchDataset(store, patch_size=(16, 32, 32), samples_per_case=2)
    transform = Compose(
        [
            ScaleIntensityRanged("image", a_min=-1000, a_max=400, b_min=0, b_max=1, clip=True),
            RandFlipd(keys, prob=1.0, spatial_axis=2),
            RandRotate90d(keys, prob=0.0),
        ]
    )
    flipped = CTPatchDataset(
        store, patch_size=(16, 32, 32), samples_per_case=2, transform=transform
    )
    raw, out = plain[1], flipped[1]
    expected = ((raw["image"].clamp(-1000, 400) + 1000) / 1400).flip(-1)
    torch.testing.assert_close(torch.as_tensor(out["image"]), expected)
    torch.testing.assert_close(torch.as_tensor(out["label"]), raw["label"].flip(-1))
    assert out["case_id"] == raw["case_id"]


def test_dataloader_with_worker_processes(store_path):
    slices = CTSliceDataset(store_path, hu_window=(-1000, 400), cache_bytes=1 << 20)
    loader = DataLoader(slices, batch_size=4, shuffle=True, num_workers=2)
    seen = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (1, 64, 64) and batch["label"].dtype == torch.int64
        seen += len(batch["case_id"])
    assert seen == len(slices)
    resize = Resized("image", spatial_size=(128, 128))
    photos = DataLoader(FundusDataset(store_path, transform=resize), batch_size=4, num_workers=2)
    batches = list(photos)
    assert [tuple(b["image"].shape) for b in batches] == [(4, 3, 128, 128)] * 2
    assert torch.cat([b["label"] for b in batches]).dtype == torch.int64


def test_thread_dataloader_shares_the_cache(store):
    ds = CTPatchDataset(store, patch_size=(16, 32, 32), samples_per_case=4, cache_bytes=1 << 26)
    loader = ThreadDataLoader(ds, batch_size=2, num_workers=2, use_thread_workers=True)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == 4 and batches[0]["image"].shape == (2, 1, 16, 32, 32)
    info = ds.cache_info()
    assert info.misses > 0 and info.hits > info.misses  # the second epoch came from memory


def test_datasets_pickle_without_open_handles_or_cached_data(store):
    ds = CTSliceDataset(store, cache_bytes=1 << 24)
    first = ds[3]
    assert ds.cache_info().chunks > 0
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.cache_info().chunks == 0 and copy.cache.max_bytes == 1 << 24
    torch.testing.assert_close(copy[3]["image"], first["image"])


# -- cache ------------------------------------------------------------------------------------
def test_uncached_slice_decodes_only_its_own_voxels(store, monkeypatch):
    decoded = []
    real = ChunkReader._decode

    def counting(self, frame, out):
        decoded.append(out.nbytes)
        return real(self, frame, out)

    monkeypatch.setattr(ChunkReader, "_decode", counting)
    ds = CTSliceDataset(store)
    sample = ds[5]
    rows, cols = sample["image"].shape[1:]
    array = store.image_array(CT, sample["case_id"])
    assert array.shards is not None and array.chunks[0] == 1  # thin inner chunks in shards
    assert sum(decoded) == rows * cols * (2 + 1)  # int16 image, uint8 labels: nothing more


def test_slice_reads_only_the_chunks_holding_it(store):
    ds = CTSliceDataset(store, cache_bytes=1 << 26)
    sample = ds[20]
    image = ChunkReader(store.image_array(CT, sample["case_id"]))
    depth, rows, cols = image.blocks  # a shard's depth of inner chunks
    info = ds.cache_info()
    assert (info.misses, info.chunks) == (2, 2)  # one image block, one label block
    assert info.bytes == depth * rows * cols * (2 + 1)  # int16 image, uint8 labels
    ds[21]  # the same blocks
    assert ds.cache_info().hits == 2 and ds.cache_info().misses == 2


def test_cache_never_exceeds_its_budget_and_serves_hits(store):
    uncached = CTPatchDataset(store, patch_size=(16, 32, 32), samples_per_case=8, seed=3)
    # a case is two int16 image blocks (16x64x64: 131 kB each) and two label blocks (65 kB):
    # the budget holds two image blocks, or one and both labels, never a whole case, so
    # blocks are evicted and read again all the time
    budget = 300_000
    cached = CTPatchDataset(
        store, patch_size=(16, 32, 32), samples_per_case=8, seed=3, cache_bytes=budget
    )

    def check(index):
        got, want = cached[index], uncached[index]
        for key in ("image", "label"):
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
        assert cached.cache_info().bytes <= budget

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(check, list(range(len(cached))) * 3))
    info = cached.cache_info()
    assert info.bytes <= budget and info.hits > 0 and info.misses > 0
    tiny = FundusDataset(store, cache_bytes=1000)  # smaller than any photograph
    tiny[0]
    tiny[0]
    assert tiny.cache_info().chunks == 0 and tiny.cache_info().hits == 0
    plain = FundusDataset(store)
    whole = FundusDataset(store, cache_bytes=1 << 26)
    for _ in range(2):  # a miss (read from the store), then a hit (copied from the cache)
        torch.testing.assert_close(whole[0]["image"], plain[0]["image"], rtol=0, atol=0)
    assert (whole.cache_info().hits, whole.cache_info().misses) == (1, 1)


def test_slab_grouped_order_decodes_each_chunk_once_per_epoch(store):
    depth, rows, cols = ChunkReader(store.image_array(CT, store.case_ids(CT)[0])).blocks
    ds = CTSliceDataset(store, cache_bytes=depth * rows * cols * 3)  # one slab: image + labels
    groups = ds.slab_groups()
    assert sorted(i for g in groups for i in g) == list(range(len(ds)))
    sampler = GroupShuffleSampler(groups, window=1, seed=4)
    order = list(sampler)
    assert sorted(order) == list(range(len(ds))) and order != sorted(order)
    for index in order:
        ds[index]
    assert ds.cache_info().misses == 2 * len(groups)  # each slab's two chunks, read once
    sampler.set_epoch(1)
    assert list(sampler) != order


# -- errors -----------------------------------------------------------------------------------
def test_clear_errors(store, tmp_path, monkeypatch):
    with pytest.raises(MbcError, match="no dataset 'ct-kovid'.*ct-covid"):
        CTSliceDataset(store, dataset="ct-kovid")
    with pytest.raises(MbcError, match="store not found"):
        FundusDataset(tmp_path / "nowhere")
    monkeypatch.delenv("MBC_STORE", raising=False)
    with pytest.raises(MbcError, match="MBC_STORE is not set"):
        CTPatchDataset()
    with pytest.raises(MbcError, match="holds ct cases; FundusDataset reads fundus"):
        FundusDataset(store, dataset=CT)


def test_store_from_environment(store_path, monkeypatch):
    monkeypatch.setenv("MBC_STORE", str(store_path))
    assert len(FundusDataset()) == 8
    assert len(CTPatchDataset(samples_per_case=2)) == 4
