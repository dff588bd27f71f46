"""One store built from every layout mbc takes in (issue 9), checked whole by ``mbc verify``.

Each layout's fabricated download (nibabel, highdicom, rt-utils, PIL; never ``mbc
sample-data``) comes from its own test module; here they all go into one store, as a
platform holding every dataset would, and the store must verify clean and list them all.
"""

from __future__ import annotations

from mbc_lib.store.reader import open_store

from .conftest import run_mbc
from .test_ingest_nifti import make_covid19_20, make_mosmeddata, make_nnunet
from .test_ingest_public_fundus import make_airogs, make_origa
from .test_ingest_refuge import make_refuge
from .test_ingest_series_labels import make_site_export


def test_mbc_verify_passes_on_a_store_of_every_layout(tmp_path, key_file):
    downloads = {
        "covid19-20": lambda root: make_covid19_20(root),
        "mosmeddata": make_mosmeddata,
        "nnunet-example": lambda root: make_nnunet(root, {"background": 0, "lesion": 1}),
        "airogs": make_airogs,
        "refuge": make_refuge,
        "origa": make_origa,
        "ct-covid": lambda root: make_site_export(root, tmp_path),
    }
    store = tmp_path / "store"
    for dataset, make in downloads.items():
        root = tmp_path / "downloads" / dataset.upper()
        make(root)
        proc = run_mbc(
            "ingest", str(root), "--store", str(store), "--dataset", dataset,
            "--deid-key-file", str(key_file), "-q",
        )  # fmt: skip
        assert proc.returncode == 0, f"{dataset}: {proc.stderr}"
    verify = run_mbc("verify", str(store), "-q")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.strip().endswith(": OK"), verify.stdout
    reader = open_store(store)
    assert set(reader.datasets()) == set(downloads)
    counts = {d: len(reader.case_ids(d)) for d in downloads}
    assert counts == {
        "covid19-20": 3,
        "mosmeddata": 3,
        "nnunet-example": 3,
        "airogs": 6,
        "refuge": 5,
        "origa": 3,
        "ct-covid": 6,
    }
