"""De-identification and ingest: speed and peak memory, against dicognito and bare pydicom.

Every tool gets the same number of processes (``--processes``, default 1: figures per core)
and the same synthetic CT slices (``mbc sample-data``); each measurement runs in a fresh
child process, which times only its work and reports its peak RSS (VmHWM; with a pool, the
largest worker's too). Prints a table per size and, on the last line, one JSON object.

    python benchmarks/ingest.py [--sizes 400 2600] [--ct-size 128] [--processes 1] [--repeat 2]

baselines: bare pydicom ``dcmread`` + ``save_as`` of each file (the limit for any tool that
reads and writes DICOM), dicognito ``Anonymizer().anonymize`` + ``save_as``.
measured: ``mbc deid`` (``deid_tree``, with its report), ``mbc ingest`` of the de-identified
series (PHI gate, volumes, pyramid, labels, catalog; one process: it does not fork).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = ("pydicom_rw", "dicognito", "deid", "ingest")


# -- one measurement, in its own process -------------------------------------------------------
def _peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1])
            break
    else:  # not Linux: ru_maxrss is in KB on Linux, bytes on macOS
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, child)


def _pydicom_rw(pair: tuple[Path, Path]) -> None:
    import pydicom

    src, dst = pair
    pydicom.dcmread(src).save_as(dst)


def _dicognito(pair: tuple[Path, Path]) -> None:
    import pydicom
    from dicognito.anonymizer import Anonymizer

    global _anonymizer
    if "_anonymizer" not in globals():
        _anonymizer = Anonymizer()  # one per process, as dicognito's CLI does
    src, dst = pair
    ds = pydicom.dcmread(src)
    _anonymizer.anonymize(ds)
    ds.save_as(dst)


def _per_file(work, src: Path, out: Path, processes: int) -> None:
    files = sorted(src.rglob("*.dcm"))
    out.mkdir(parents=True)
    pairs = [(f, out / f"{i}.dcm") for i, f in enumerate(files)]
    if processes == 1:
        for pair in pairs:
            work(pair)
        return
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        pool.map(work, pairs, chunksize=16)


def run_one(tool: str, src: Path, out: Path, processes: int) -> dict[str, float]:
    """Do one tool's work on ``src``; return seconds and peak RSS (MB) of this process."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    from mbc_lib.deid.keys import DeidKey
    from mbc_lib.deid.tree import deid_tree
    from mbc_lib.ingest.pipeline import ingest

    key = DeidKey(b"benchmark-key-0123456789abcdef-0123456789")
    start = time.perf_counter()
    if tool == "pydicom_rw":
        _per_file(_pydicom_rw, src, out, processes)
    elif tool == "dicognito":
        _per_file(_dicognito, src, out, processes)
    elif tool == "deid":
        deid_tree(src, out, key, progress=False, workers=processes)
    elif tool == "ingest":
        ingest(src, out / "store", "ct-covid", quarantine=out / "q", progress=False)
    else:
        raise SystemExit(f"unknown tool {tool}")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": _peak_rss_kb() / 1024}


def _measure(tool: str, src: Path, work: Path, processes: int, repeat: int) -> dict[str, float]:
    """Best time and largest peak RSS of ``repeat`` runs, each in a fresh process."""
    best: dict[str, float] = {"seconds": math.inf, "peak_rss_mb": 0.0}
    for i in range(repeat):
        out = work / f"{tool}-{i}"
        proc = subprocess.run(
            [sys.executable, __file__, "--one", tool, str(src), str(out), str(processes)],
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads(proc.stdout.splitlines()[-1])
        best["seconds"] = min(best["seconds"], got["seconds"])
        best["peak_rss_mb"] = max(best["peak_rss_mb"], got["peak_rss_mb"])
        shutil.rmtree(out, ignore_errors=True)
    return best


# -- the comparison ------------------------------------------------------------------------------
def _inputs(work: Path, files: int, ct_size: int) -> tuple[Path, Path, int]:
    """Identified CT slices (about ``files``), their de-identified tree, and the count."""
    from mbc_lib.deid.keys import DeidKey
    from mbc_lib.deid.tree import deid_tree
    from mbc_lib.sample import write_sample_tree

    per_series = ct_size // 2
    n_ct = max(1, round(files / per_series))
    write_sample_tree(work / "input", seed=1, n_fundus=2, n_ct=n_ct, ct_size=ct_size)
    src = work / "input" / "ct-covid"
    key = DeidKey(b"benchmark-key-0123456789abcdef-0123456789")
    deid_tree(src, work / "deid", key, progress=False)
    return src, work / "deid", len(list(src.rglob("*.dcm")))


def compare(files: int, ct_size: int, processes: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="mbc-bench-") as tmp:
        work = Path(tmp)
        src, deid_out, n = _inputs(work, files, ct_size)
        n_ingest = sum(1 for p in deid_out.rglob("*") if p.is_file())
        runs = {}
        for tool in TOOLS:
            tree = deid_out if tool == "ingest" else src
            runs[tool] = _measure(tool, tree, work, processes, repeat)
    rate = {t: (n_ingest if t == "ingest" else n) / r["seconds"] for t, r in runs.items()}
    return {
        "files": n,
        "files_ingested": n_ingest,
        **{f"{t}_files_per_s": round(rate[t], 1) for t in TOOLS},
        **{f"{t}_peak_rss_mb": round(runs[t]["peak_rss_mb"], 1) for t in TOOLS},
        "deid_vs_dicognito": round(rate["deid"] / rate["dicognito"], 2),
        "deid_vs_pydicom_rw": round(rate["deid"] / rate["pydicom_rw"], 2),
        "ingest_vs_pydicom_rw": round(rate["ingest"] / rate["pydicom_rw"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 2600])
    parser.add_argument("--ct-size", type=int, default=128)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one", nargs=4, metavar=("TOOL", "SRC", "OUT", "N"), help="internal")
    args = parser.parse_args()
    if args.one:
        tool, src, out, n = args.one
        print(json.dumps(run_one(tool, Path(src), Path(out), int(n))))
        return
    by_size = [compare(s, args.ct_size, args.processes, args.repeat) for s in args.sizes]
    small, large = by_size[0], by_size[-1]
    grown = large["files"] - small["files"]
    result: dict[str, object] = {
        "benchmark": "ingest",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "processes_per_tool": args.processes,
        "ct_size": args.ct_size,
        "runs": by_size,
    }
    if grown > 0:
        result["ingest_rss_kb_per_extra_file"] = round(
            1024 * (large["ingest_peak_rss_mb"] - small["ingest_peak_rss_mb"]) / grown, 1
        )
        result["deid_rss_kb_per_extra_file"] = round(
            1024 * (large["deid_peak_rss_mb"] - small["deid_peak_rss_mb"]) / grown, 1
        )
    for run in by_size:
        print(f"-- {run['files']} files ({args.processes} process(es) per tool)")
        for k, v in run.items():
            print(f"   {k:26s} {v}")
    for k in ("ingest_rss_kb_per_extra_file", "deid_rss_kb_per_extra_file"):
        if k in result:
            print(f"{k:29s} {result[k]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
