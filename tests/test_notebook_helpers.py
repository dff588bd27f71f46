"""The notebooks' training loop: what it returns and what it leaves for TensorBoard."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mbc_lib.notebook_helpers import accelerator, fit


def test_fit_logs_the_curves_it_returns_for_tensorboard(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    batches = [{"image": torch.randn(4, 3), "label": torch.tensor([0, 1, 0, 1])}] * 2
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
    model = torch.nn.Linear(3, 2)
    batches = [{"image": torch.randn(4, 3), "label": torch.tensor([0, 1, 0, 1])}]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, batches, torch.nn.CrossEntropyLoss(), optimizer, 1, accelerator("cpu"))
    assert list(tmp_path.iterdir()) == []
