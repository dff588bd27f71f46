"""A complete sample store in one call: sample data, edge de-identification, ingest, verify."""

from __future__ import annotations

import os
from pathlib import Path

from ..deid.keys import DeidKey, generate_key_file
from ..deid.tree import deid_tree
from ..errors import MbcError
from ..ingest.pipeline import ingest
from ..store.verify import verify_store
from . import write_sample_tree

#: dataset manifest name for each folder of the sample tree
SAMPLE_DATASETS = {
    "fundus-glaucoma": "fundus-glaucoma",
    "ct-covid": "ct-covid",
    "dicom-real": "dicom-reference",
}


def build_sample_store(
    workdir: Path,
    *,
    seed: int = 0,
    n_fundus: int = 40,
    n_ct: int = 6,
    ct_size: int = 128,
    include_real_dicom: bool = True,
    progress: bool = False,
    key_file: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``workdir/{input,deid,store}`` (and the project key); return the store path.

    Without ``key_file`` a new random project key is written to ``workdir/project.key``; with
    one, that key is used (the same key and ``seed`` give the same pseudonyms and splits).
    Reuses a finished store already in ``workdir`` (one that ``mbc verify`` passes).
    """
    workdir = Path(workdir)
    store = workdir / "store"
    if (store / "zarr.json").exists() and not verify_store(store):
        return store
    if workdir.exists() and any(workdir.iterdir()):
        raise MbcError(f"{workdir} holds an unfinished sample store; remove it and retry")
    workdir.mkdir(parents=True, exist_ok=True)
    write_sample_tree(workdir / "input", seed=seed, n_fundus=n_fundus, n_ct=n_ct, ct_size=ct_size)
    key = DeidKey.from_file(key_file or generate_key_file(workdir / "project.key"))
    deid_tree(workdir / "input", workdir / "deid", key, progress=progress)
    for folder, dataset in SAMPLE_DATASETS.items():
        if folder == "dicom-real" and not include_real_dicom:
            continue
        ingest(workdir / "deid" / folder, store, dataset, progress=progress)
    findings = verify_store(store)
    if findings:
        raise MbcError(f"sample store failed verification: {findings[0]}")
    return store
