"""De-identification and ingest speed, against dicognito and bare pydicom, in one run.

All runs use the same synthetic CT slices (``mbc sample-data``). Prints a short table and,
on the last line, one JSON object with files/s and the ratios the issue's goals name.

    python benchmarks/ingest.py [--n-ct 6] [--ct-size 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from dicognito.anonymizer import Anonymizer

from mbc_lib.deid.keys import DeidKey
from mbc_lib.deid.tree import deid_tree
from mbc_lib.ingest.pipeline import ingest
from mbc_lib.sample import write_sample_tree


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm"))


def _best_rate(n_files: int, run: Callable[[Path], None], work: Path, repeat: int) -> float:
    """Files per second of the fastest of ``repeat`` runs (each into a fresh folder)."""
    best = float("inf")
    for i in range(repeat):
        out = work / f"run{i}"
        start = time.perf_counter()
        run(out)
        best = min(best, time.perf_counter() - start)
        shutil.rmtree(out, ignore_errors=True)
    return n_files / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ct", type=int, default=6)
    parser.add_argument("--ct-size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mbc-bench-") as tmp:
        work = Path(tmp)
        write_sample_tree(work / "input", seed=1, n_fundus=2, n_ct=args.n_ct, ct_size=args.ct_size)
        src = work / "input" / "ct-covid"
        files = _dicom_files(src)
        n = len(files)
        key = DeidKey(b"benchmark-key-0123456789abcdef-0123456789")

        def bare_pydicom(out: Path) -> None:
            out.mkdir(parents=True)
            for i, f in enumerate(files):
                pydicom.dcmread(f).save_as(out / f"{i}.dcm")

        def dicognito(out: Path) -> None:
            out.mkdir(parents=True)
            anonymizer = Anonymizer()
            for i, f in enumerate(files):
                ds = pydicom.dcmread(f)
                anonymizer.anonymize(ds)
                ds.save_as(out / f"{i}.dcm")

        def mbc_deid(out: Path) -> None:
            deid_tree(src, out, key, progress=False)

        rates = {
            "pydicom_rw_files_per_s": _best_rate(n, bare_pydicom, work, args.repeat),
            "dicognito_files_per_s": _best_rate(n, dicognito, work, args.repeat),
            "deid_files_per_s": _best_rate(n, mbc_deid, work, args.repeat),
        }
        deid_out = work / "deid"
        deid_tree(work / "input", deid_out, key, progress=False)
        ct = deid_out / "ct-covid"
        n_ingest = sum(1 for p in ct.rglob("*") if p.is_file())
        best = float("inf")
        for i in range(args.repeat):
            store = work / f"store{i}"
            start = time.perf_counter()
            ingest(ct, store, "ct-covid", quarantine=work / f"q{i}", progress=False)
            best = min(best, time.perf_counter() - start)
        rates["ingest_files_per_s"] = n_ingest / best

    result = {
        "benchmark": "ingest",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "files": n,
        "ct_size": args.ct_size,
        **{k: round(v, 1) for k, v in rates.items()},
        "deid_vs_dicognito": round(rates["deid_files_per_s"] / rates["dicognito_files_per_s"], 2),
        "deid_vs_pydicom_rw": round(rates["deid_files_per_s"] / rates["pydicom_rw_files_per_s"], 2),
    }
    for k, v in result.items():
        print(f"{k:24s} {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
