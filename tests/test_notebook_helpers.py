"""The helpers the notebooks use (mbc_lib.notebook_helpers): results folder, device, seeding,
the training loop (what it returns and what it leaves for TensorBoard) and strict JSON."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mbc_lib.notebook_helpers import accelerator, fit


def toy_problem() -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """A separable two-class problem in 2D: inputs, labels and four batches of 16."""
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    return x, y, [{"image": x[i : i + 16], "label": y[i : i + 16]} for i in range(0, 64, 16)]


def test_fit_logs_the_curves_it_returns_for_tensorboard(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    batches = toy_problem()[2][:2]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def validate():
        calls.append(len(calls))
        return {"val_auc": 0.5 + 0.1 * len(calls)}

    history = fit(
        model,
        batches,
        torch.nn.CrossEntropyLoss(),
        optimizer,
        3,
        accelerator("cpu"),
        validate=validate,
        validate_every=2,
        log_dir=tmp_path / "runs",
    )
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0]
    assert [("val_auc" in h) for h in history] == [False, True, True]  # every 2nd and the last

    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss/train", "lr", "val/val_auc"}
    loss = events.Scalars("loss/train")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([h["loss"] for h in history])
    auc = events.Scalars("val/val_auc")
    assert [(e.step, round(e.value, 4)) for e in auc] == [(2, 0.6), (3, 0.7)]


def test_fit_without_log_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = torch.nn.Linear(2, 2)
    batches = toy_problem()[2][:1]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, batches, torch.nn.CrossEntropyLoss(), optimizer, 1, accelerator("cpu"))
    assert list(tmp_path.iterdir()) == []


def test_results_dir_expands_home_and_refuses_the_store(tmp_path, monkeypatch):
    from mbc_lib.errors import MbcError
    from mbc_lib.notebook_helpers import results_dir

    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("MBC_STORE", str(store))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = results_dir("~/mbc-results/10_glaucoma")
    assert out == (tmp_path / "home" / "mbc-results" / "10_glaucoma").resolve()
    assert out.is_dir()
    with pytest.raises(MbcError, match="read-only store"):
        results_dir(store / "results")
    assert not (store / "results").exists()


def test_accelerator_falls_back_to_cpu_without_mixed_precision():
    import torch

    from mbc_lib.errors import MbcError
    from mbc_lib.notebook_helpers import accelerator

    cpu = accelerator("cpu")
    assert cpu.device.type == "cpu" and not cpu.amp
    assert "mixed precision off" in str(cpu)
    if torch.cuda.is_available():
        assert accelerator("auto").amp
    else:
        assert accelerator("auto") == cpu
        with pytest.raises(MbcError, match="no GPU"):
            accelerator("cuda")


def test_fit_trains_and_validates_on_schedule():
    import torch

    from mbc_lib.notebook_helpers import accelerator, fit, seed_everything

    seed_everything(0)
    x, y, batches = toy_problem()
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def validate():
        with torch.no_grad():
            return {"val_accuracy": float((model(x).argmax(1) == y).float().mean())}

    history = fit(
        model,
        batches,
        torch.nn.CrossEntropyLoss(),
        optimizer,
        5,
        accelerator("cpu"),
        validate=validate,
        validate_every=2,
    )
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert [("val_accuracy" in h) for h in history] == [False, True, False, True, True]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_accuracy"] > 0.9


def test_seeded_deterministic_training_repeats_exactly():
    """What the notebooks rely on: seed, deterministic algorithms, fixed threads and a seeded
    loader (shuffle and MONAI augmentations) give the same weights bit for bit."""
    import torch
    from monai.data import CacheDataset, ThreadDataLoader
    from monai.transforms import Compose, RandAffined, RandFlipd

    from mbc_lib.notebook_helpers import accelerator, fit, seed_everything

    pixels = torch.rand(24, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    data = [{"image": image, "label": torch.tensor(i % 2)} for i, image in enumerate(pixels)]

    def train() -> dict[str, torch.Tensor]:
        seed_everything(0, deterministic=True, threads=2)
        augment = Compose(
            [
                RandFlipd(keys="image", prob=0.5, spatial_axis=1),
                RandAffined(keys="image", prob=0.5, rotate_range=0.3, padding_mode="zeros"),
            ]
        )
        loader = ThreadDataLoader(
            CacheDataset(data, transform=augment, progress=False),
            batch_size=4,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2)
        )
        model(torch.zeros(1, 1, 16, 16))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        fit(model, loader, torch.nn.CrossEntropyLoss(), optimizer, 3, accelerator("cpu"))
        return {k: v.clone() for k, v in model.state_dict().items()}

    threads = torch.get_num_threads()
    try:
        first, second = train(), train()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0)


def test_metrics_json_is_strict(tmp_path):
    import numpy as np
    import torch

    from mbc_lib.notebook_helpers import write_json

    path = write_json(
        tmp_path / "metrics.json",
        {
            "dice": np.float32(0.5),
            "missing": float("nan"),
            "matrix": np.eye(2, dtype=int),
            "tensor": torch.tensor([1.5]),
        },
    )
    assert json.loads(path.read_text()) == {
        "dice": 0.5,
        "missing": None,
        "matrix": [[1, 0], [0, 1]],
        "tensor": [1.5],
    }
