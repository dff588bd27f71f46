"""Training data from the store: torch Datasets of MONAI dictionary samples, with a chunk cache.

```python
from monai.transforms import Compose, RandFlipd
from mbc_lib.data import CTPatchDataset
train = CTPatchDataset(split="train", hu_window=(-1000, 400), cache_bytes=4 << 30,
                       transform=Compose([RandFlipd(["image", "label"], prob=0.5)]))
```
"""

from __future__ import annotations

from .cache import CacheInfo, ChunkCache
from .ct import CTPatchDataset, CTSliceDataset, CTVolumeDataset
from .datasets import StoreDataset
from .fundus import FundusDataset
from .sampling import GroupShuffleSampler

__all__ = [
    "CTPatchDataset",
    "CTSliceDataset",
    "CTVolumeDataset",
    "CacheInfo",
    "ChunkCache",
    "FundusDataset",
    "GroupShuffleSampler",
    "StoreDataset",
]
