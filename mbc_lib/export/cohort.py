"""A catalog selection as an nnU-Net v2 raw dataset and a MONAI Decathlon-style datalist.

```
OUT/Dataset501_CtCovid/
  dataset.json          nnU-Net: channel names, labels, numTraining, file ending
  imagesTr/<case>_0000.nii.gz   labelsTr/<case>.nii.gz     training cases (store splits
  imagesTs/<case>_0000.nii.gz   labelsTs/<case>.nii.gz     "train" and "val"; "test")
  splits_final.json     fold 0: the store's train and val cases (nnU-Net's planning
                        copies it to the preprocessed folder; ``nnUNetv2_train 501 3d_fullres 0``)
  datalist.json         MONAI: {"training", "validation", "test"} lists of image/label
  cohort.json           what was exported: store, dataset, query, cases, patients
```

nnU-Net or a MONAI bundle trains on it unchanged (``nnUNetv2_plan_and_preprocess -d 501
--verify_dataset_integrity``; ``monai.data.load_decathlon_datalist``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ..errors import MbcError
from ..store.reader import Store
from .nifti import write_nifti

_NAME_RE = re.compile(r"^[A-Za-z0-9]{1,40}$")
CHANNEL = {"ct": "CT"}  # nnU-Net's channel name (CT: its global HU normalisation)


def dataset_folder(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name ``Dataset{ID:03d}_{Name}``."""
    if not 1 <= dataset_id <= 999:
        raise MbcError(f"an nnU-Net dataset id is 1 to 999, got {dataset_id}")
    if not _NAME_RE.match(name):
        raise MbcError(f"an nnU-Net dataset name is letters and digits only, got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def _default_name(dataset: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", dataset) if part)


def export_cohort(
    store: Store,
    dataset: str,
    out: str | os.PathLike[str],
    *,
    dataset_id: int,
    name: str | None = None,
    query: str | None = None,
    train_splits: Iterable[str] = ("train", "val"),
    test_splits: Iterable[str] = ("test",),
    progress: bool = True,
) -> Path:
    """Export the CT cases of ``dataset`` matching ``query`` under ``out``; returns the folder.

    Cases of ``train_splits`` become nnU-Net training cases (they need labels), cases of
    ``test_splits`` test cases; the store's ``val`` split is the validation fold of
    ``splits_final.json`` and the datalist's ``validation``. An existing export is refused.
    """
    manifest = store.manifest(dataset)
    if manifest.modality not in CHANNEL:
        raise MbcError(f"dataset {dataset!r} holds {manifest.modality}; export handles CT")
    classes = {
        int(v): spec["name"] for v, spec in (manifest.segmentation or {}).get("classes", {}).items()
    }
    if 0 not in classes:
        raise MbcError(f"dataset {dataset!r} declares no segmentation classes with a background")
    train_splits, test_splits = tuple(train_splits), tuple(test_splits)
    catalog = store.catalog(dataset, query=query)
    catalog = catalog[catalog["kind"] == "ct-volume"]
    chosen = catalog[catalog["split"].isin(train_splits + test_splits)].reset_index(drop=True)
    training = chosen[chosen["split"].isin(train_splits)]
    if training.empty:
        raise MbcError(f"no {'/'.join(train_splits)} cases in {dataset!r} match {query!r}")
    unlabelled = [c for c in training["case_id"] if store.labels_array(dataset, c) is None]
    if unlabelled:
        raise MbcError(f"training cases without labels: {', '.join(unlabelled[:5])}")
    root = Path(out).expanduser() / dataset_folder(dataset_id, name or _default_name(dataset))
    if root.exists():
        raise MbcError(f"{root} exists; remove it or choose another --id")
    staging = root.with_name(f".{root.name}.partial")
    if staging.exists():
        raise MbcError(f"{staging} exists: an export was interrupted; remove it first")
    staging.mkdir(parents=True)
    entries: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": []}
    for row in tqdm(chosen.itertuples(), total=len(chosen), desc="export", disable=not progress):
        role = _role(row.split, train_splits)
        entries[role].append(_write_case(store, dataset, str(row.case_id), staging, role == "test"))
    n_train = len(entries["training"]) + len(entries["validation"])
    labels = {name: value for value, name in sorted(classes.items())}
    _write_json(
        staging / "dataset.json",
        {
            "channel_names": {"0": CHANNEL[manifest.modality]},
            "labels": labels,
            "numTraining": n_train,
            "file_ending": ".nii.gz",
            "name": dataset,
            "description": manifest.title,
            "reference": "exported from the mbc store",
            "licence": "see the dataset's data use agreement",
        },
    )
    fold = {
        "train": [_case(e) for e in entries["training"]],
        "val": [_case(e) for e in entries["validation"]],
    }
    _write_json(staging / "splits_final.json", [fold])
    _write_json(
        staging / "datalist.json",
        {
            "name": dataset,
            "tensorImageSize": "3D",
            "modality": {"0": CHANNEL[manifest.modality]},
            "labels": {str(v): n for v, n in sorted(classes.items())},
            **entries,
        },
    )
    _write_json(
        staging / "cohort.json",
        {
            "store": str(store.root),
            "dataset": dataset,
            "query": query,
            "train_splits": list(train_splits),
            "test_splits": list(test_splits),
            "cases": _cohort_rows(chosen),
        },
    )
    os.rename(staging, root)
    return root


def _role(split: str, train_splits: tuple[str, ...]) -> str:
    if split not in train_splits:
        return "test"
    return "validation" if split == "val" else "training"


def _case(entry: dict[str, str]) -> str:
    return Path(entry["image"]).name.removesuffix("_0000.nii.gz")


def _write_case(store: Store, dataset: str, case_id: str, root: Path, test: bool) -> dict[str, str]:
    images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
    affine = store.affine(dataset, case_id)
    image = f"{images}/{case_id}_0000.nii.gz"
    write_nifti(root / image, store.image_array(dataset, case_id)[...], affine)
    entry = {"image": image}
    mask = store.labels_array(dataset, case_id)
    if mask is not None:
        label = f"{labels}/{case_id}.nii.gz"
        write_nifti(root / label, mask[...], affine, labels=True)
        entry["label"] = label
    return entry


def _cohort_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    keep = [c for c in ("case_id", "patient", "split", "checksum") if c in frame.columns]
    return frame[keep].to_dict("records")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")  # in the staging folder


__all__ = ["dataset_folder", "export_cohort"]
