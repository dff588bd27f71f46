"""MB/s into the store through the ingest service, against a plain copy and against Orthanc.

Starts a real hub with the ingest service (a society account, the DICOM receiver) on loopback,
and in each round sends the same de-identified CT tree (two 100-slice series of 200 x 200,
given new UIDs each round so that every path publishes new cases) through:

- (a) an upload session (``mbc upload``: hash, parts, commit, ingest), until its cases are in
  the catalog;
- (b) DICOMweb STOW-RS (dicomweb-client, one request a series), until the catalog has them;
- (c) dcmtk's ``storescu`` to the receiver (one association a series), until the catalog has
  them;

against the limit, a plain copy of the same files; the bound the service cannot beat, ``mbc
ingest`` of the same files from a local folder (``ingest_only_mb_per_s``); and a peer,
``storescu`` to Orthanc merely storing the same files. ``push_to_catalog_s``: from the end of
the C-STORE association of the last 100-slice series to its case in the catalog a researcher
reads (the association's end ends the study: no settle time).

Prints a table and, on the last line, JSON with ``upload_ingest_mb_per_s``, ``stow_mb_per_s``,
``cstore_mb_per_s``, ``orthanc_cstore_mb_per_s``, ``copy_mb_per_s``, ``push_to_catalog_s`` and
the ratios (medians over ``--rounds``). Goals: upload + ingest at least a quarter of a plain
copy; receiver + ingest faster than Orthanc merely storing; a pushed study in the catalog
within 30 s.

    python -m benchmarks.upload [--rounds 3]   # from the checkout; needs make dicom-tools
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from mbc_lib.deid.keys import DeidKey, generate_key_file
from mbc_lib.deid.tree import deid_tree
from mbc_lib.ingest.pipeline import ingest
from mbc_lib.sample import write_sample_tree
from mbc_lib.upload import upload
from tests.hub.hub_helpers import HubProcess, free_port, write_users
from tests.hub.orthanc_helpers import OrthancProcess, tool
from tests.hub.upload_helpers import (
    case_count,
    ct_files,
    restudy,
    society_token,
    wait_for_cases,
    wait_for_service,
    write_instances,
)

SOCIETY = "bench-society"
CALLER = "BENCH-PACS"
MB = 1e6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ct-size", type=int, default=200, help="pixels a side; slices = half")
    return parser.parse_args()


def start_hub(work: Path) -> HubProcess:
    dicom_port = free_port()
    hub = HubProcess(
        work / "hub",
        {
            "MbcPlatform": {"spawner": "local", "authenticator": "demo"},
            "DemoAuthenticator": {"users_file": str(write_users(work / "users.yaml", {}))},
            "MbcStore": {"path": str(work / "store")},
            "IdleCuller": {"enabled": False},
            "MbcUpload": {
                "societies": {SOCIETY: ["ct-covid"]},
                "stow_settle_seconds": 0.2,
                "dicom_port": dicom_port,
                "dicom_callers": {CALLER: {"society": SOCIETY, "dataset": "ct-covid"}},
            },
        },
    )
    hub.dicom_port = dicom_port
    hub.start()
    wait_for_service(hub)
    return hub


def series_files(tree: Path) -> list[list[Path]]:
    by_series: dict[Path, list[Path]] = {}
    for path in ct_files(tree):
        by_series.setdefault(path.parent, []).append(path)
    return [sorted(v) for _, v in sorted(by_series.items())]


def fresh_copy(series: list[list[Path]], salt: str, key: Path, out: Path) -> list[list[Path]]:
    """The series with new UIDs (new cases), written under ``out``."""
    return [
        write_instances(restudy(files, f"{salt}-{i}", key), out / f"SE{i:04d}")
        for i, files in enumerate(series)
    ]


def storescu(port: int, calling: str, called: str, files: list[Path]) -> None:
    done = subprocess.run(
        [tool("storescu"), "-aet", calling, "-aec", called, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"storescu failed: {done.stdout}{done.stderr}")


def one_round(r: int, hub: HubProcess, pacs: OrthancProcess, series, key, work) -> dict:
    store = hub.workdir.parent / "store"
    token = society_token(hub, SOCIETY)
    size = sum(p.stat().st_size for s in series for p in s) / MB
    out: dict[str, float] = {}

    def count() -> int:
        return case_count(store, "ct-covid")

    t = time.perf_counter()
    for i, files in enumerate(series):
        folder = work / f"copy{r}" / f"SE{i:04d}"
        folder.mkdir(parents=True)
        for path in files:
            shutil.copyfile(path, folder / path.name)
    out["copy_mb_per_s"] = size / (time.perf_counter() - t)

    local = work / f"local{r}"
    fresh_copy(series, f"local{r}", key, local)
    t = time.perf_counter()
    ingest(local, work / f"local-store{r}", "ct-covid", progress=False)
    out["ingest_only_mb_per_s"] = size / (time.perf_counter() - t)

    tree = work / f"sessions{r}"
    fresh_copy(series, f"sessions{r}", key, tree)
    before = count()
    t = time.perf_counter()
    summary = upload(tree, hub.url, token, "ct-covid", progress=False)
    wait_for_cases(store, "ct-covid", before + len(series), timeout=300)
    out["upload_ingest_mb_per_s"] = size / (time.perf_counter() - t)
    assert summary.accounted and summary.counts()["quarantined"] == 0, summary.lines()

    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread

    stow = fresh_copy(series, f"stow{r}", key, work / f"stow{r}")
    client = DICOMwebClient(
        url=f"{hub.url}/services/mbc-upload/dicomweb/ct-covid",
        headers={"Authorization": f"token {token}"},
    )
    datasets = [[dcmread(p) for p in s] for s in stow]
    before = count()
    t = time.perf_counter()
    for instances in datasets:
        client.store_instances(instances)
    wait_for_cases(store, "ct-covid", before + len(series), timeout=300)
    out["stow_mb_per_s"] = size / (time.perf_counter() - t)

    pushed = fresh_copy(series, f"cstore{r}", key, work / f"cstore{r}")
    before = count()
    t = time.perf_counter()
    for files in pushed:
        storescu(hub.dicom_port, CALLER, "MBC-INGEST", files)
    last_association_end = time.perf_counter()
    wait_for_cases(store, "ct-covid", before + len(series), timeout=300)
    done = time.perf_counter()
    out["cstore_mb_per_s"] = size / (done - t)
    out["push_to_catalog_s"] = done - last_association_end

    peer = fresh_copy(series, f"orthanc{r}", key, work / f"orthanc{r}")
    t = time.perf_counter()
    for files in peer:
        storescu(pacs.dicom_port, "BENCH", "SOCPACS", files)
    out["orthanc_cstore_mb_per_s"] = size / (time.perf_counter() - t)
    out["mb"] = size
    return out


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="mbc-bench-upload-") as tmp:
        work = Path(tmp)
        write_sample_tree(work / "input", seed=3, n_fundus=1, n_ct=2, ct_size=args.ct_size)
        key = generate_key_file(work / "project.key")
        deid_tree(work / "input", work / "deid", DeidKey.from_file(key), progress=False)
        series = series_files(work / "deid")
        hub = start_hub(work)
        pacs = OrthancProcess(
            work / "orthanc", aet="SOCPACS", modalities={}, dicomweb_servers={}
        ).start()
        try:
            rounds = [one_round(r, hub, pacs, series, key, work) for r in range(args.rounds)]
        finally:
            pacs.stop()
            hub.stop()
    keys = [k for k in rounds[0] if k != "mb"]
    result = {k: round(statistics.median(r[k] for r in rounds), 3) for k in keys}
    ratios = {
        "upload_over_copy": [r["upload_ingest_mb_per_s"] / r["copy_mb_per_s"] for r in rounds],
        "upload_over_ingest_only": [
            r["upload_ingest_mb_per_s"] / r["ingest_only_mb_per_s"] for r in rounds
        ],
        "cstore_over_ingest_only": [
            r["cstore_mb_per_s"] / r["ingest_only_mb_per_s"] for r in rounds
        ],
        "cstore_over_orthanc": [
            r["cstore_mb_per_s"] / r["orthanc_cstore_mb_per_s"] for r in rounds
        ],
        "stow_over_orthanc": [r["stow_mb_per_s"] / r["orthanc_cstore_mb_per_s"] for r in rounds],
    }
    for name, values in ratios.items():
        result[name] = round(statistics.median(values), 3)
        result[f"{name}_range"] = [round(min(values), 3), round(max(values), 3)]
    result["mb"] = round(rounds[0]["mb"], 2)
    result["series"] = len(series)
    result["slices_per_series"] = len(series[0])
    print(f"{'path':28s} {'MB/s (median of ' + str(len(rounds)) + ')':>20s}")
    for k in keys:
        unit = "MB/s" if k.endswith("_per_s") else "s"
        print(f"{k:28s} {result[k]:>14.2f} {unit}")
    for name in ratios:
        print(f"{name:28s} {result[name]:>14.3f} x   rounds {result[name + '_range']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
