"""De-identification and ingest: speed and peak memory, against dicognito and bare pydicom.

Every tool gets the same number of processes (``--processes``, default 1: figures per core)
and the same synthetic CT slices (``mbc sample-data``); each measurement runs in a fresh
child process, which times only its work and reports its peak RSS (VmHWM; with a pool, the
largest worker's too) and its CPU time. The tools run in rounds (each tool once per round);
rates are the best round's, ratios the median of the rounds' ratios with their range, so
that a machine whose speed drifts (a shared host) compares tools in the same state. Prints
a table per size and, on the last line, one JSON object.

    python benchmarks/ingest.py [--sizes 400 2600] [--ct-size 128] [--processes 1] [--repeat 5]
    python benchmarks/ingest.py --instructions --sizes 128   # valgrind: exact, repeatable

baselines: bare pydicom ``dcmread`` + ``save_as`` of each file (the limit for any tool that
reads and writes DICOM), dicognito ``Anonymizer().anonymize`` + ``save_as``.
measured: ``mbc deid`` (``deid_tree``, with its report), ``mbc ingest`` of the de-identified
series (PHI gate, volumes, pyramid, labels, catalog; one process: it does not fork, but
the compressor may use threads, which ``*_files_per_cpu_s`` accounts for).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from process_stats import measured, ratio, rounds, run_child

TOOLS = ("pydicom_rw", "dicognito", "deid", "ingest")
#: The goals (issue 8): deid >= 2x dicognito, ingest >= 0.5x bare pydicom read+write.
RATIOS = {
    "deid_vs_dicognito": ("deid", "dicognito"),
    "deid_vs_pydicom_rw": ("deid", "pydicom_rw"),
    "ingest_vs_pydicom_rw": ("ingest", "pydicom_rw"),
}


# -- one measurement, in its own process -------------------------------------------------------
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
    import dicognito.anonymizer  # noqa: F401 - every tool pays the same imports

    from mbc_lib.deid.keys import DeidKey
    from mbc_lib.deid.tree import deid_tree
    from mbc_lib.ingest.pipeline import ingest

    key = DeidKey(b"benchmark-key-0123456789abcdef-0123456789")
    work = {
        "pydicom_rw": lambda: _per_file(_pydicom_rw, src, out, processes),
        "dicognito": lambda: _per_file(_dicognito, src, out, processes),
        "deid": lambda: deid_tree(src, out, key, progress=False, workers=processes),
        "ingest": lambda: ingest(
            src, out / "store", "ct-covid", quarantine=out / "q", progress=False
        ),
        "none": lambda: None,  # start-up and imports only: what --instructions subtracts
    }
    if tool not in work:
        raise SystemExit(f"unknown tool {tool}")
    return measured(work[tool])


def _instructions(tool: str, src: Path, out: Path) -> int:
    """Instructions one run of ``tool`` executes (valgrind's callgrind), start-up included."""
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
        + [__file__, "--one", tool, str(src), str(out), "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(out, ignore_errors=True)
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if not match:
        raise SystemExit(f"no instruction count from valgrind for {tool}")
    return int(match.group(1))


def count_instructions(files: int, ct_size: int) -> dict[str, object]:
    """Instructions per file of each tool (one process), less start-up and imports: the same
    on every run of the same code, whatever else the machine is doing."""
    with tempfile.TemporaryDirectory(prefix="mbc-bench-") as tmp:
        work = Path(tmp)
        src, deid_out, n = _inputs(work, files, ct_size)
        n_ingest = sum(1 for p in deid_out.rglob("*") if p.is_file())
        base = _instructions("none", src, work / "none")
        per_file = {
            t: (_instructions(t, deid_out if t == "ingest" else src, work / f"count-{t}") - base)
            / (n_ingest if t == "ingest" else n)
            for t in TOOLS
        }
    result: dict[str, object] = {"files": n, "files_ingested": n_ingest}
    result |= {f"{t}_instructions_per_file": round(per_file[t]) for t in TOOLS}
    for name, (a, b) in RATIOS.items():
        result[name] = round(per_file[b] / per_file[a], 2)  # as a ratio of speeds
    return result


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
        trees = {t: deid_out if t == "ingest" else src for t in TOOLS}
        runs = rounds(
            TOOLS,
            repeat,
            lambda t, i: run_child(
                __file__,
                [t, str(trees[t]), str(work / f"{t}-{i}"), str(processes)],
                work / f"{t}-{i}",
            ),
        )
    files = {t: n_ingest if t == "ingest" else n for t in TOOLS}

    def rates(key: str) -> list[dict[str, float]]:
        return [{t: files[t] / r[t][key] for t in TOOLS} for r in runs]

    wall, cpu = rates("seconds"), rates("cpu_seconds")
    result: dict[str, object] = {
        "files": n,
        "files_ingested": n_ingest,
        "rounds": repeat,
        **{f"{t}_files_per_s": round(max(r[t] for r in wall), 1) for t in TOOLS},
        **{f"{t}_files_per_cpu_s": round(max(r[t] for r in cpu), 1) for t in TOOLS},
        **{f"{t}_peak_rss_mb": round(max(r[t]["peak_rss_mb"] for r in runs), 1) for t in TOOLS},
    }
    for name, (a, b) in RATIOS.items():
        result[name], result[f"{name}_range"] = ratio(wall, a, b)
        result[f"{name}_cpu"] = ratio(cpu, a, b)[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 2600])
    parser.add_argument("--ct-size", type=int, default=128)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions under valgrind instead of timing (first size only)",
    )
    parser.add_argument("--one", nargs=4, metavar=("TOOL", "SRC", "OUT", "N"), help="internal")
    args = parser.parse_args()
    if args.one:
        tool, src, out, n = args.one
        print(json.dumps(run_one(tool, Path(src), Path(out), int(n))))
        return
    if args.instructions:
        counted = count_instructions(args.sizes[0], args.ct_size)
        for k, v in counted.items():
            print(f"   {k:34s} {v}")
        print(json.dumps({"benchmark": "ingest-instructions", "ct_size": args.ct_size} | counted))
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
