"""The ``mbc`` command line: one verb per job, one clear line on error."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import MbcError

Handler = Callable[[argparse.Namespace], int]


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .deid.keys import generate_key_file

    if Path(args.key_file).exists():
        raise MbcError(f"{args.key_file} exists; refusing to overwrite a key")
    generate_key_file(Path(args.key_file))
    print(f"wrote a new 256-bit key to {args.key_file} (mode 0600); keep it secret, keep a backup")
    return 0


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from .sample import write_sample_tree

    summary = write_sample_tree(
        Path(args.out),
        seed=args.seed,
        n_fundus=args.n_fundus,
        n_ct=args.n_ct,
        ct_size=args.ct_size,
    )
    for name, count in summary.items():
        print(f"{name}: {count} files")
    print(f"sample input tree written to {args.out}")
    return 0


def _manifest_arg(args: argparse.Namespace, required: bool):
    """The manifest named by ``--manifest FILE`` or ``--dataset NAME`` (None if neither)."""
    from .manifests import get_manifest, load_manifest

    if args.manifest and args.dataset:
        raise MbcError("give --dataset NAME or --manifest FILE, not both")
    if args.manifest:
        return load_manifest(Path(args.manifest))
    if args.dataset:
        return get_manifest(args.dataset)
    if required:
        raise MbcError("give --dataset NAME (a manifest in datasets/) or --manifest FILE")
    return None


def _cmd_deid(args: argparse.Namespace) -> int:
    from .deid.keys import DeidKey
    from .deid.tree import deid_tree

    manifest = _manifest_arg(args, required=False)
    key = DeidKey.from_file(args.key_file)
    report = deid_tree(
        Path(args.src),
        Path(args.out),
        key,
        progress=not args.quiet,
        workers=args.workers,
        manifest=manifest,
    )
    print(report.summary())
    return 1 if report.refused and args.strict else 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from .ingest.pipeline import ingest

    manifest = _manifest_arg(args, required=True)
    result = ingest(
        Path(args.src),
        Path(args.store),
        manifest.name,
        manifest=manifest,
        deid_key_file=Path(args.deid_key_file) if args.deid_key_file else None,
        quarantine=Path(args.quarantine) if args.quarantine else None,
        progress=not args.quiet,
        pixel_budget=args.max_pixels,
    )
    print(result.summary())
    return 0


def _cmd_datasets_validate(args: argparse.Namespace) -> int:
    from .manifests import describe_manifest, load_manifest

    manifest = load_manifest(Path(args.file))
    print(f"{args.file}: valid dataset manifest")
    print(describe_manifest(manifest))
    return 0


def _cmd_datasets_list(args: argparse.Namespace) -> int:
    from .manifests import load_manifests

    for name, manifest in load_manifests().items():
        print(f"{name:20s} {manifest.modality:7s} {manifest.title}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .store.verify import verify_store

    findings = verify_store(Path(args.store), progress=not args.quiet)
    for finding in findings:
        print(finding, file=sys.stderr)
    if findings:
        print(f"store {args.store}: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    print(f"store {args.store}: OK")
    return 0


def _cmd_catalog(args: argparse.Namespace) -> int:
    from .store.reader import open_store

    store = open_store(Path(args.store))
    names = [args.dataset] if args.dataset else store.datasets()
    for name in names:
        frame = store.catalog(name)
        if args.format == "json":
            print(frame.to_json(orient="records", indent=None))
        elif args.format == "csv":
            print(frame.to_csv(index=False), end="")
        else:
            print(f"== {name}: {len(frame)} cases")
            with _pandas_wide():
                print(frame.drop(columns=["checksum"], errors="ignore").to_string(index=False))
    return 0


def _cmd_upload(args: argparse.Namespace) -> int:
    from .upload import read_token, upload

    summary = upload(
        Path(args.src),
        args.url,
        read_token(Path(args.token_file)),
        args.dataset,
        deid_key_file=Path(args.deid_key_file) if args.deid_key_file else None,
        part_bytes=args.part_size * 1024 * 1024,
        progress=not args.quiet,
        parallel=args.parallel,
    )
    print("\n".join(summary.lines()))
    return 0 if summary.accounted else 1


def _cmd_export_cohort(args: argparse.Namespace) -> int:
    from .export import export_cohort
    from .store.reader import open_store

    root = export_cohort(
        open_store(args.store),
        args.dataset,
        Path(args.out),
        dataset_id=args.id,
        name=args.name,
        query=args.query,
        train_splits=_splits(args.train_splits),
        test_splits=_splits(args.test_splits),
        progress=not args.quiet,
    )
    datalist = json.loads((root / "datalist.json").read_text())
    counts = ", ".join(f"{len(datalist[k])} {k}" for k in ("training", "validation", "test"))
    print(f"exported {counts} cases to {root}")
    print(f"nnU-Net: nnUNet_raw={root.parent} nnUNetv2_plan_and_preprocess -d {args.id}")
    return 0


def _cmd_export_nifti(args: argparse.Namespace) -> int:
    from .export import write_case_nifti
    from .store.reader import open_store

    part = "labels" if args.labels else "image"
    path = write_case_nifti(open_store(args.store), args.dataset, args.case, args.out, part=part)
    print(f"wrote {part} of {args.case} to {path}")
    return 0


def _hub_args(args: argparse.Namespace) -> tuple[str, str]:
    from .course_material import hub_api

    token = None
    if args.token_file:
        from .upload import read_token

        token = read_token(Path(args.token_file))
    return hub_api(args.url, token)


def _cmd_course_publish(args: argparse.Namespace) -> int:
    from .course_material import send_material

    api, token = _hub_args(args)
    done = send_material(Path(args.folder), args.course, api, token)
    what = f"commit {done['commit'][:12]}" if done["commit"] else "no change since the last publish"
    print(
        f"course {done['course']}: {len(done['files'])} files published ({what}); "
        f"{done['solutions_removed']} solution cells left out of the student copy"
    )
    return 0


def _cmd_course_pull(args: argparse.Namespace) -> int:
    from .course_material import pull_course

    api, token = _hub_args(args)
    dest = Path(args.dest or Path.home() / "courses" / args.course).expanduser()
    pull_course(args.course, dest, api, token)
    print(f"course {args.course}: material up to date in {dest}")
    return 0


def _cmd_course_share(args: argparse.Namespace) -> int:
    from .course_material import share_server

    api, token = _hub_args(args)
    action = "unshare" if args.stop else "show" if args.show else "share"
    done = share_server(args.course, api, token, action)
    who = ", ".join(done["shared_with"])
    if who:
        print(f"course {done['course']}: your server {done['server']} is open to {who}")
    else:
        print(f"course {done['course']}: your server {done['server']} is open to no instructor")
    return 0


def _splits(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from mbc_hub.demo import run_demo
    except ImportError as exc:
        raise MbcError(f"mbc demo needs the hub: pip install 'mbc[hub]' ({exc})") from None

    return run_demo(Path(args.workdir), args.bind, args.spawner)


def _pandas_wide():
    import pandas as pd

    return pd.option_context(
        "display.width", 200, "display.max_columns", 20, "display.max_colwidth", 24
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbc",
        description="mbc: de-identify, ingest and verify the anonymized medical-imaging store.",
    )
    parser.add_argument("--version", action="version", version=f"mbc {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    p = sub.add_parser(
        "sample-data",
        help="write a synthetic sample input tree (fundus, CT, real DICOM test files)",
    )
    p.add_argument("out", metavar="OUT", help="folder to create")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--n-fundus", type=int, default=40, help="fundus photographs (default 40)")
    p.add_argument("--n-ct", type=int, default=6, help="CT series, one per patient (default 6)")
    p.add_argument(
        "--ct-size", type=int, default=128, help="CT in-plane size in pixels (default 128)"
    )
    p.set_defaults(func=_cmd_sample_data)

    p = sub.add_parser("keygen", help="create a new secret key file for de-identification")
    p.add_argument("key_file", metavar="KEY")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("deid", help="de-identify a tree of DICOM/NIfTI/JPEG/PNG files (edge)")
    p.add_argument("src", metavar="SRC")
    p.add_argument("out", metavar="OUT")
    p.add_argument(
        "--key-file", required=True, metavar="KEY", help="project secret (see 'mbc keygen')"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 if any file was refused")
    p.add_argument(
        "--dataset", metavar="NAME", help="SRC is this dataset, whatever its folder is called"
    )
    p.add_argument("--manifest", metavar="FILE", help="SRC is the dataset this manifest describes")
    p.add_argument(
        "--workers", type=int, metavar="N", help="processes to use (default: one per CPU)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_deid)

    p = sub.add_parser("ingest", help="PHI gate, conversion and atomic publish into the store")
    p.add_argument("src", metavar="SRC", help="de-identified dataset folder")
    p.add_argument("--store", required=True, metavar="STORE")
    p.add_argument("--dataset", metavar="NAME", help="dataset manifest name (datasets/NAME.yaml)")
    p.add_argument(
        "--manifest", metavar="FILE", help="a dataset manifest file instead of --dataset"
    )
    p.add_argument("--deid-key-file", metavar="KEY", help="de-identify SRC first (single-site use)")
    p.add_argument(
        "--quarantine",
        metavar="DIR",
        help="where refused files go (default: STORE's sibling STORE.quarantine; "
        "never inside STORE or SRC)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="pixels any one image may declare before it is refused undecoded "
        "(default: $MBC_MAX_PIXELS or 134217728)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser(
        "upload",
        help="resumable upload of a de-identified tree to the cloud's ingest service",
        description="Upload SRC into a dataset through the ingest service: a re-run resumes "
        "(what arrived is skipped by hash); exit 0 only when every file is accounted for.",
    )
    p.add_argument("src", metavar="SRC", help="the dataset folder to send")
    p.add_argument("--url", required=True, metavar="URL", help="the hub, e.g. https://hub.example")
    p.add_argument(
        "--token-file", required=True, metavar="T", help="file holding the society's API token"
    )
    p.add_argument("--dataset", required=True, metavar="NAME", help="the dataset to fill")
    p.add_argument(
        "--deid-key-file", metavar="KEY", help="de-identify SRC here first (PHI never leaves)"
    )
    p.add_argument(
        "--part-size", type=int, default=8, metavar="MIB", help="MiB per request (default 8)"
    )
    p.add_argument(
        "--parallel", type=int, default=4, metavar="N", help="files sent at once (default 4)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_upload)

    p = sub.add_parser(
        "verify", help="check layout, checksums, catalog and PHI gate; exit 1 on any finding"
    )
    p.add_argument("store", metavar="STORE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("datasets", help="list dataset manifests, check one")
    datasets = p.add_subparsers(dest="datasets_verb", metavar="ACTION")
    datasets.required = True
    q = datasets.add_parser("validate", help="check a dataset manifest file; exit 2 if invalid")
    q.add_argument("file", metavar="FILE")
    q.set_defaults(func=_cmd_datasets_validate)
    q = datasets.add_parser("list", help="the manifests in datasets/ ($MBC_DATASETS_DIR)")
    q.set_defaults(func=_cmd_datasets_list)

    p = sub.add_parser("export", help="cases out of the store: NIfTI, nnU-Net raw and a datalist")
    export = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    q = export.add_parser(
        "cohort",
        help="a catalog selection as an nnU-Net raw dataset and a MONAI Decathlon datalist",
    )
    q.add_argument("store", metavar="STORE")
    q.add_argument("--dataset", required=True, metavar="NAME")
    q.add_argument("--out", required=True, metavar="DIR", help="e.g. your nnUNet_raw folder")
    q.add_argument("--id", required=True, type=int, metavar="N", help="nnU-Net dataset id (1-999)")
    q.add_argument("--name", metavar="NAME", help="nnU-Net dataset name (default: from NAME)")
    q.add_argument(
        "--query", metavar="Q", help="pandas query on the catalog, e.g. \"age > '050Y'\""
    )
    q.add_argument("--train-splits", default="train,val", metavar="S,S", help="default train,val")
    q.add_argument("--test-splits", default="test", metavar="S,S", help="default test")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_export_cohort)
    q = export.add_parser("nifti", help="one case's image (or --labels) as NIfTI")
    q.add_argument("store", metavar="STORE")
    q.add_argument("--dataset", required=True, metavar="NAME")
    q.add_argument("--case", required=True, metavar="ID")
    q.add_argument("--out", required=True, metavar="FILE", help="a .nii.gz path")
    q.add_argument("--labels", action="store_true", help="the case's labels, not its image")
    q.set_defaults(func=_cmd_export_nifti)

    p = sub.add_parser("course", help="a course: publish its material, pull it, share a server")
    course = p.add_subparsers(dest="course_verb", required=True, metavar="ACTION")
    hub_help = "the hub's address (default: the hub of the server you run in)"
    token_help = "a file holding a hub API token (default: your server's own token)"
    q = course.add_parser(
        "publish",
        help="instructors: publish FOLDER as COURSE's material; students get a copy without "
        "the cells tagged 'solution'",
    )
    q.add_argument("course", metavar="COURSE")
    q.add_argument("folder", metavar="FOLDER")
    q.add_argument("--url", metavar="URL", help=hub_help)
    q.add_argument("--token-file", metavar="FILE", help=token_help)
    q.set_defaults(func=_cmd_course_publish)
    q = course.add_parser(
        "pull", help="students: bring COURSE's material into ~/courses/COURSE, keeping your edits"
    )
    q.add_argument("course", metavar="COURSE")
    q.add_argument("--dest", metavar="DIR", help="where (default: ~/courses/COURSE)")
    q.add_argument("--url", metavar="URL", help=hub_help)
    q.add_argument("--token-file", metavar="FILE", help=token_help)
    q.set_defaults(func=_cmd_course_pull)
    q = course.add_parser(
        "share",
        help="students: open your server to COURSE's instructors so they can help (only to "
        "them); --stop closes it again",
    )
    q.add_argument("course", metavar="COURSE")
    what = q.add_mutually_exclusive_group()
    what.add_argument("--stop", action="store_true", help="close it to the instructors")
    what.add_argument("--show", action="store_true", help="only say who may open it")
    q.add_argument("--url", metavar="URL", help=hub_help)
    q.add_argument("--token-file", metavar="FILE", help=token_help)
    q.set_defaults(func=_cmd_course_share)

    p = sub.add_parser("catalog", help="print the catalog of a store")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--dataset", metavar="NAME")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=_cmd_catalog)

    p = sub.add_parser(
        "demo",
        help="sample store, then the hub on 127.0.0.1:8000 with demo logins (what make demo runs)",
    )
    p.add_argument(
        "--workdir",
        default="work-demo",
        metavar="DIR",
        help="sample store and hub data (work-demo)",
    )
    p.add_argument(
        "--bind", default="127.0.0.1:8000", metavar="HOST:PORT", help="loopback address to serve"
    )
    p.add_argument(
        "--spawner",
        choices=("local", "docker", "swarm"),
        default=os.environ.get("MBC_SPAWNER", "local"),
        help="local processes (default, or $MBC_SPAWNER) or containers",
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Real-world DICOM is full of small standard violations; pydicom reports each one. The
    # verbs report per file what they did, so these warnings are noise on the terminal.
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except MbcError as exc:
        print(f"mbc {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"mbc {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["build_parser", "main"]
