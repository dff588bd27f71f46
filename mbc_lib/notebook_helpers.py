"""Small helpers that keep the notebooks readable: device and mixed precision, seeding,
the results folder, and a training loop with a progress bar."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import MbcError
from .store.reader import STORE_ENV


@dataclass(frozen=True)
class Accelerator:
    """Where to compute and whether to use mixed precision (float16 autocast on CUDA)."""

    device: torch.device
    amp: bool

    def autocast(self) -> AbstractContextManager[Any]:
        """``torch.autocast`` for this device (a no-op context when AMP is off)."""
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler for float16 training (disabled when AMP is off)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp)

    def __str__(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        return f"{self.device} ({name}), mixed precision {'on' if self.amp else 'off'}"


def accelerator(device: str = "auto", amp: bool = True) -> Accelerator:
    """``device="auto"`` picks CUDA when a GPU is visible, else the CPU; AMP only on CUDA."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MbcError("device 'cuda' requested but no GPU is visible in this container")
    return Accelerator(dev, amp=amp and dev.type == "cuda")


def seed_everything(seed: int, *, deterministic: bool = False, threads: int | None = None) -> None:
    """Seed Python, NumPy, torch and MONAI so a run can be repeated.

    ``deterministic`` also makes torch use deterministic algorithms (strictly on the CPU; on a
    GPU an op that has none warns instead of failing). ``threads`` fixes torch's CPU thread
    count: how a CPU run splits its sums, and so its last bits, depend on it.
    """
    from monai.utils import set_determinism

    if threads is not None:
        torch.set_num_threads(threads)
    if deterministic:
        gpu = torch.cuda.is_available()
        if gpu:  # cuBLAS is deterministic only with a fixed workspace, set before it starts
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=gpu)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_determinism(seed=seed)


def results_dir(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir`` (``~`` expanded), created; refuses a folder inside the read-only store."""
    path = Path(output_dir).expanduser().resolve()
    store = os.environ.get(STORE_ENV)
    if store and path.is_relative_to(Path(store).expanduser().resolve()):
        raise MbcError(f"{path} is inside the read-only store; save results to your home")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value: Any) -> Any:
    """``value`` with NumPy/torch numbers as Python ones and NaN as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented, strict JSON (NaN becomes null)."""
    path.write_text(json.dumps(_plain(data), indent=2, allow_nan=False) + "\n")
    return path


def train_step(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    accel: Accelerator,
) -> torch.Tensor:
    """One optimiser step under the accelerator's autocast, with gradient scaling; the loss."""
    optimizer.zero_grad(set_to_none=True)
    with accel.autocast():
        loss = loss_fn(model(inputs), target)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss


def fit(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    accel: Accelerator,
    *,
    scheduler: Any = None,
    validate: Callable[[], dict[str, float]] | None = None,
    validate_every: int = 1,
    keys: tuple[str, str] = ("image", "label"),
    log_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` with a progress bar; return one record per epoch.

    Each batch is a dict; ``keys`` name the input and the target. ``scheduler.step()`` runs
    after every optimizer step; ``validate()`` (returning named metrics) every
    ``validate_every`` epochs and after the last. ``log_dir``: TensorBoard event files there
    (``loss/train``, ``lr``, and ``val/<name>`` for each validation metric), per epoch.
    """
    scaler = accel.grad_scaler()
    history: list[dict[str, float]] = []
    writer = _summary_writer(log_dir)
    bar = tqdm(range(1, epochs + 1), desc="training", unit="epoch")
    try:
        for epoch in bar:
            record = {"epoch": float(epoch)}
            record |= _epoch(model, loader, loss_fn, optimizer, scaler, accel, scheduler, keys)
            if validate is not None and (epoch % validate_every == 0 or epoch == epochs):
                model.eval()
                record.update(validate())
            history.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
            if writer is not None:
                writer.add_scalar("loss/train", record["loss"], epoch)
                writer.add_scalar("lr", optimizer.param_groups[0]["lr"], epoch)
                for name, value in record.items():
                    if name not in ("epoch", "loss"):
                        writer.add_scalar(f"val/{name}", value, epoch)
    finally:
        if writer is not None:
            writer.close()
    return history


def _summary_writer(log_dir: str | os.PathLike[str] | None) -> Any:
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    path = Path(log_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(path))


def _epoch(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    accel: Accelerator,
    scheduler: Any,
    keys: tuple[str, str],
) -> dict[str, float]:
    """One pass over ``loader``: the mean training loss."""
    model.train()
    total, batches = 0.0, 0
    for batch in loader:
        inputs = batch[keys[0]].to(accel.device, non_blocking=True)
        target = batch[keys[1]].to(accel.device, non_blocking=True)
        loss = train_step(model, inputs, target, loss_fn, optimizer, scaler, accel)
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach())
        batches += 1
    return {"loss": total / max(batches, 1)}


__all__ = [
    "Accelerator",
    "accelerator",
    "fit",
    "results_dir",
    "seed_everything",
    "write_json",
]
