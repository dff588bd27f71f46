"""NIfTI ingest against MONAI ``LoadImage`` of the same files: speed and peak memory.

The same de-identified ``.nii.gz`` CT volumes (int16, with a lesion mask each, in the
COVID-19-20 layout) are given to each tool in a fresh child process, one process per tool:

baseline: MONAI ``LoadImage(image_only=True)`` of every volume and mask (nibabel reader;
decompression and decoding, what any NIfTI pipeline pays at least once).
measured: ``mbc ingest`` of the folder (PHI gate, geometry, int16 HU, mask on grid,
pyramid, labels, catalog, atomic publish).

The tools run in rounds (each tool once per round); the ratio is the median of the rounds'
ratios, rates the best round's. Prints a table and, on the last line, one JSON object.

    python benchmarks/nifti.py [--volumes 8] [--size 256 256 96] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import tempfile
from pathlib import Path

from process_stats import measured, ratio, rounds, run_child

TOOLS = ("monai_load", "ingest")


def _write_inputs(folder: Path, volumes: int, size: tuple[int, int, int]) -> int:
    """``volumes`` CT volumes and masks as COVID-19-20 names them; returns the file count."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    affine = np.diag([-0.7, 0.7, 2.0, 1.0])
    for n in range(volumes):
        ct = rng.normal(-700, 150, size).astype(np.int16)
        mask = np.zeros(size, np.uint8)
        i, j, k = (s // 2 for s in size)
        mask[i - 20 : i + 20, j - 20 : j + 20, k - 5 : k + 5] = 1
        for name, data in (
            (f"volume-covid19-A-{n:04d}_ct", ct),
            (f"volume-covid19-A-{n:04d}_seg", mask),
        ):
            raw = nib.Nifti1Image(data, affine).to_bytes()
            (folder / f"{name}.nii.gz").write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
    return 2 * volumes


def run_one(tool: str, src: Path, out: Path) -> dict[str, float]:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    files = sorted(src.glob("*.nii.gz"))
    if tool == "monai_load":  # each tool imports only what it uses (peak RSS)
        from monai.transforms import LoadImage

        load = LoadImage(image_only=True, reader="NibabelReader")
    else:
        from mbc_lib.ingest.pipeline import ingest
    if tool == "monai_load":
        return measured(lambda: [load(str(f)) for f in files])
    if tool == "ingest":
        store, q = out / "store", out / "q"
        return measured(lambda: ingest(src, store, "covid19-20", quarantine=q, progress=False))
    raise SystemExit(f"unknown tool {tool}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=3, default=[256, 256, 96])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--one", nargs=3, metavar=("TOOL", "SRC", "OUT"), help="internal")
    args = parser.parse_args()
    if args.one:
        tool, src, out = args.one
        print(json.dumps(run_one(tool, Path(src), Path(out))))
        return
    with tempfile.TemporaryDirectory(prefix="mbc-bench-nifti-") as tmp:
        src = Path(tmp) / "COVID-19-20"
        src.mkdir()
        n = _write_inputs(src, args.volumes, tuple(args.size))
        megabytes = sum(f.stat().st_size for f in src.iterdir()) / 2**20
        out = Path(tmp)
        runs = rounds(
            TOOLS,
            args.repeat,
            lambda t, i: run_child(
                __file__, [t, str(src), str(out / f"{t}-{i}")], out / f"{t}-{i}"
            ),
        )
    rates = [{t: n / r[t]["seconds"] for t in TOOLS} for r in runs]
    median, spread = ratio(rates, "ingest", "monai_load")
    result = {
        "benchmark": "nifti",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "processes_per_tool": 1,
        "files": n,
        "volume_shape": args.size,
        "input_mb": round(megabytes, 1),
        "rounds": args.repeat,
        **{f"{t}_files_per_s": round(max(r[t] for r in rates), 2) for t in TOOLS},
        **{f"{t}_peak_rss_mb": round(max(r[t]["peak_rss_mb"] for r in runs), 1) for t in TOOLS},
        "ingest_vs_monai_load": median,
        "ingest_vs_monai_load_range": spread,
    }
    for k, v in result.items():
        print(f"   {k:28s} {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
