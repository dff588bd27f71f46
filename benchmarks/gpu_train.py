"""Both template notebooks' training loops and the 3D patch loader on one device, in one go.

For each task it reports training images (or patches) per second, the GPU's utilisation
(sampled with nvidia-smi while the task runs) and the share of step time spent waiting for
the next batch: the loader keeps the accelerator busy when that share is small.

    python benchmarks/gpu_train.py                 # CUDA when present, else CPU
    python benchmarks/gpu_train.py --device cpu --seconds 5 --ct-size 64   # a smoke run

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet, resnet18
from monai.transforms import Compose, RandFlipd, Resized
from torch.utils.data import DataLoader

from mbc_lib.data import CTPatchDataset, CTSliceDataset, FundusDataset
from mbc_lib.notebook_helpers import accelerator, seed_everything, train_step
from mbc_lib.sample.store import build_sample_store


class GpuSampler:
    """Samples ``nvidia-smi`` utilisation in a thread; empty when there is no NVIDIA GPU."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    "--id=0",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def lesion_unet(spatial_dims: int) -> UNet:
    """The segmentation notebook's U-Net (background, normal lung, GGO, consolidation)."""
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=1,
        out_channels=4,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=2,
    )


def _cycle(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise SystemExit("the loader yields no batch: fewer samples than one batch")


def train_for(
    name: str,
    model: torch.nn.Module,
    loader: DataLoader,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    seconds: float,
    device: str,
    warmup_steps: int = 3,
) -> dict[str, Any]:
    """Train until ``seconds`` have passed; time data waits and whole steps separately."""
    accel = accelerator(device)
    model = model.to(accel.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = accel.grad_scaler()
    batches = _cycle(loader)
    wait = step_total = 0.0
    samples = steps = 0
    sync = torch.cuda.synchronize if accel.device.type == "cuda" else (lambda: None)
    with GpuSampler() as gpu:
        start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            batch = next(batches)
            inputs = batch["image"].to(accel.device, non_blocking=True)
            target = batch["label"].to(accel.device, non_blocking=True)
            t1 = time.perf_counter()
            train_step(model, inputs, target, loss_fn, optimizer, scaler, accel)
            sync()
            t2 = time.perf_counter()
            steps += 1
            if steps > warmup_steps:  # the first steps include start-up and autotuning
                wait += t1 - t0
                step_total += t2 - t0
                samples += inputs.shape[0]
            if t2 - start >= seconds and steps > warmup_steps + 2:
                break
    return {
        "task": name,
        "device": str(accel),
        "samples_per_s": round(samples / step_total, 1),
        "data_wait_share": round(wait / step_total, 3),
        "gpu_util_mean_pct": gpu.mean(),
        "steps_timed": steps - warmup_steps,
        "batch_size": int(inputs.shape[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--store", help="an existing store (default: build a sample store)")
    parser.add_argument("--seconds", type=float, default=40.0, help="per task")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader worker processes")
    parser.add_argument("--n-fundus", type=int, default=200)
    parser.add_argument("--n-ct", type=int, default=6)
    parser.add_argument("--ct-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    seed_everything(0)

    with tempfile.TemporaryDirectory(prefix="mbc-gpu-") as tmp:
        store = args.store or build_sample_store(
            Path(tmp) / "work",
            n_fundus=args.n_fundus,
            n_ct=args.n_ct,
            ct_size=args.ct_size,
            include_real_dicom=False,
        )
        loader_kwargs: dict[str, Any] = {
            "num_workers": args.workers,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": args.workers > 0,
            "shuffle": True,
        }
        if args.workers > 0:
            loader_kwargs["prefetch_factor"] = 4
        size = (args.image_size, args.image_size)
        fundus = FundusDataset(
            store,
            transform=Compose(
                [
                    Resized(keys="image", spatial_size=size, mode="area"),
                    RandFlipd(keys="image", prob=0.5, spatial_axis=1),
                ]
            ),
        )
        slices = CTSliceDataset(store, hu_window=(-1000, 400), cache_bytes=1 << 30)
        patch = min(96, args.ct_size // 2)
        patches = CTPatchDataset(
            store,
            patch_size=(patch,) * 3,
            samples_per_case=64,
            hu_window=(-1000, 400),
            chunk_aligned=True,
            cache_bytes=1 << 30,
        )
        results = [
            train_for(
                "glaucoma: ResNet-18 on fundus photographs",
                resnet18(spatial_dims=2, n_input_channels=3, num_classes=2),
                DataLoader(
                    fundus, batch_size=min(64, len(fundus)), drop_last=True, **loader_kwargs
                ),
                torch.nn.CrossEntropyLoss(),
                args.seconds,
                args.device,
            ),
            train_for(
                "CT: 2D U-Net on axial slices",
                lesion_unet(2),
                DataLoader(
                    slices, batch_size=min(32, len(slices)), drop_last=True, **loader_kwargs
                ),
                DiceCELoss(to_onehot_y=True, softmax=True),
                args.seconds,
                args.device,
            ),
            train_for(
                f"CT: 3D U-Net on {patch}^3 patches (store loader)",
                lesion_unet(3),
                DataLoader(
                    patches, batch_size=min(4, len(patches)), drop_last=True, **loader_kwargs
                ),
                DiceCELoss(to_onehot_y=True, softmax=True),
                args.seconds,
                args.device,
            ),
        ]
    for r in results:
        print(
            f"{r['task']:48s} {r['samples_per_s']:8.1f}/s  data wait "
            f"{r['data_wait_share']:.1%}  GPU {r['gpu_util_mean_pct']}%"
        )
    print(
        json.dumps(
            {
                "benchmark": "gpu_train",
                "date": time.strftime("%Y-%m-%d"),
                "machine": platform.node() and platform.machine(),
                "torch": torch.__version__,
                "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                "workers": args.workers,
                "ct_size": args.ct_size,
                "image_size": args.image_size,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
