"""Where things live in a store, and the names that are allowed there.

```
STORE/zarr.json                      root group   attrs {"mbc": {"store_version": 1}}
STORE/<dataset>/zarr.json            dataset group attrs {"mbc": {"manifest": {...}}}
STORE/<dataset>/catalog.parquet      catalog table (rebuilt atomically after each ingest)
STORE/<dataset>/cases/zarr.json      group of cases
STORE/<dataset>/cases/<case_id>/     one OME-Zarr (NGFF 0.5) image group per case
STORE/.staging/                      half-written cases; never visible as cases
```
"""

from __future__ import annotations

import re
from pathlib import Path

STORE_VERSION = 1
CASES = "cases"
CATALOG_FILE = "catalog.parquet"
STAGING = ".staging"
LOCK_FILE = ".ingest.lock"
CASE_ID_RE = re.compile(r"^(ct|fu|dc)-[0-9a-f]{16}$")
LABELS_GROUP = "labels"


def dataset_path(root: Path, dataset: str) -> Path:
    return Path(root) / dataset


def cases_path(root: Path, dataset: str) -> Path:
    return Path(root) / dataset / CASES


def case_path(root: Path, dataset: str, case_id: str) -> Path:
    return Path(root) / dataset / CASES / case_id


def catalog_path(root: Path, dataset: str) -> Path:
    return Path(root) / dataset / CATALOG_FILE


def staging_path(root: Path) -> Path:
    return Path(root) / STAGING
