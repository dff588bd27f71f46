"""``mbc deid SRC OUT``: de-identify a whole folder tree, refuse what cannot be made safe."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from ..atomic import write_bytes
from ..checkpoints import checkpoint
from ..errors import MbcError
from ..manifests import DEID_OPTIONS, Manifest, load_manifests
from ..progress import progress as progress_bar
from ..sources import nifti, nnunet
from ..sources.dicom import MalformedDicom, read_dicom
from ..sources.limits import max_pixels
from ..sources.walk import HEAD_BYTES, Entry, UnreadableFile, classify, inside, read_file, walk_tree
from ..workers import die_with_parent
from .dicom import DicomRefused, deid_dicom_dataset
from .images import MalformedImageError, strip_bmp, strip_jpeg, strip_png
from .keys import DeidKey
from .profile import get_profile
from .report import DEIDENTIFIED, ActionCounts, DeidReport, FileResult, describe_error
from .tables import TableRefused, dataset_of, deid_labels, deid_mask

UNSUPPORTED = "unsupported file type: not DICOM, JPEG, PNG, BMP, a dataset label table or mask"


def profile_summary() -> dict[str, object]:
    """What the report records about the rules applied (no key material)."""
    profile = get_profile()
    return {
        "name": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
        "codes": [{"value": v, "scheme": "DCM", "meaning": m} for v, m in profile.method_codes],
        "options": [m for _, m in profile.method_codes[1:]],
        "options_by": "each dataset's manifest (deid.options); these are the defaults",
        "table_edition": profile.edition,
        "sources": profile.sources,
    }


def _check_paths(src: Path, out: Path) -> None:
    if not src.exists():
        raise MbcError(f"source folder not found: {src}")
    if not src.is_dir():
        raise MbcError(f"source is not a folder: {src}")
    if inside(out, src):
        raise MbcError(f"output folder {out} must not be the source folder or inside it")
    if inside(src, out):
        raise MbcError(f"output folder {out} must not contain the source folder")
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise MbcError(f"output folder {out} exists and is not empty")


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class _TreeRun:
    """State of one run: source, output, key and dataset manifests."""

    def __init__(
        self, src: Path, out: Path, key: DeidKey, manifest: Manifest | None = None
    ) -> None:
        self.src, self.out, self.key = src, out, key
        self.manifest = manifest  # the whole tree is this dataset (else: by folder names)
        self.budget = max_pixels()  # a .nii.gz is never inflated beyond it
        self.manifest_error = ""
        try:
            self.manifests = load_manifests()
        except MbcError as exc:
            self.manifests, self.manifest_error = {}, str(exc)

    def one(self, entry: Entry) -> FileResult:
        try:
            return self._one(entry)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
            return FileResult.refused(entry.rel, "other", f"internal error: {describe_error(exc)}")

    def _one(self, entry: Entry) -> FileResult:
        rel = entry.rel
        if entry.reason:
            return FileResult.refused(rel, "other", entry.reason)
        try:
            data = read_file(entry.path)
        except UnreadableFile as exc:
            return FileResult.refused(rel, "other", str(exc))
        if self.manifest is not None:
            manifest, rel_in_dataset = self.manifest, rel
        else:
            manifest, rel_in_dataset = dataset_of(self.src, rel, self.manifests)
        kind = classify(data[:HEAD_BYTES], rel_in_dataset, manifest)
        if self.manifest_error and kind == "other" and rel.endswith((".csv", ".npz")):
            return FileResult.refused(rel, "other", f"no dataset manifests: {self.manifest_error}")
        dst = self.out / rel
        if kind in ("dicom", "bare-dicom"):
            options = manifest.deid_options if manifest is not None else DEID_OPTIONS
            classes = tuple(manifest.segmentation_classes.values()) if manifest else ()
            return self._dicom(
                data, rel, dst, force=kind == "bare-dicom", options=options, roi_classes=classes
            )
        if kind == "jpeg":
            return self._bytes(data, rel, dst, kind, strip_jpeg)
        if kind == "png":
            return self._bytes(data, rel, dst, kind, strip_png)
        if kind == "bmp":
            return self._bytes(data, rel, dst, kind, partial(strip_bmp, budget=self.budget))
        if kind == "dataset-json":
            return self._bytes(data, rel, dst, kind, nnunet.deidentify)
        if kind == "nifti":
            return self._bytes(data, rel, dst, kind, partial(nifti.deidentify, budget=self.budget))
        if kind == "labels" and manifest is not None:
            strip = partial(deid_labels, manifest=manifest, key=self.key)
            return self._bytes(data, rel, dst, kind, strip)
        if kind == "mask":
            return self._bytes(data, rel, dst, kind, partial(deid_mask, key=self.key))
        return FileResult.refused(rel, "other", UNSUPPORTED)

    def _dicom(
        self,
        data: bytes,
        rel: str,
        dst: Path,
        *,
        force: bool,
        options: tuple[str, ...],
        roi_classes: tuple[str, ...],
    ) -> FileResult:
        try:
            ds = read_dicom(data, force=force)
        except MalformedDicom as exc:
            return FileResult.refused(
                rel, "other" if force else "dicom", UNSUPPORTED if force else str(exc)
            )
        try:
            counts = deid_dicom_dataset(ds, dst, self.key, options=options, roi_classes=roi_classes)
        except DicomRefused as exc:
            return FileResult.refused(rel, "dicom", str(exc))
        return FileResult(rel, "dicom", DEIDENTIFIED, output=rel, actions=counts)

    def _bytes(
        self, data: bytes, rel: str, dst: Path, kind: str, strip: Callable[[bytes], bytes]
    ) -> FileResult:
        try:
            data = strip(data)
        except (MalformedImageError, TableRefused) as exc:
            return FileResult.refused(rel, kind, f"{_KIND_LABEL[kind]}: {exc}")
        except (nifti.MalformedNifti, nnunet.DatasetJsonError) as exc:
            return FileResult.refused(rel, kind, str(exc))
        write_bytes(dst, data)
        return FileResult(rel, kind, DEIDENTIFIED, output=rel, actions=ActionCounts())


_KIND_LABEL = {
    "jpeg": "malformed image",
    "png": "malformed image",
    "bmp": "malformed image",
    "labels": "label table refused",
    "mask": "mask refused",
}


#: Below this many files a worker pool costs more than it saves.
_MIN_FILES_FOR_POOL = 64
_worker_run: _TreeRun | None = None


def _init_worker(
    src: Path, out: Path, key: DeidKey, parent: int, manifest: Manifest | None
) -> None:
    global _worker_run
    die_with_parent(parent)
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    _worker_run = _TreeRun(src, out, key, manifest)


def _worker_one(entry: Entry) -> FileResult:
    assert _worker_run is not None
    return _worker_run.one(entry)


def default_workers() -> int:
    """One worker per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def deid_tree(
    src: Path,
    out: Path,
    key: DeidKey,
    *,
    progress: bool = True,
    workers: int | None = None,
    manifest: Manifest | None = None,
) -> DeidReport:
    """De-identify every file below ``src`` into ``out`` (same relative paths).

    ``manifest``: the whole of ``src`` is that dataset, whatever its folder is called;
    without it, each folder named after a dataset in ``datasets/`` is that dataset.

    Files are processed by ``workers`` processes (default: one per CPU). Writes
    ``deid-report.json`` and ``deid-report.txt`` into ``out``; refused files are listed
    there with their reason and are never written. The report is in source order
    whatever the number of workers.
    """
    src, out = Path(src), Path(out)
    _check_paths(src, out)
    if workers is not None and workers < 1:
        raise MbcError("workers must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    report = DeidReport(out=out, profile=profile_summary())
    files = list(walk_tree(src))
    n_workers = min(workers or default_workers(), max(1, len(files) // 16))
    if n_workers == 1 or len(files) < _MIN_FILES_FOR_POOL:
        run = _TreeRun(src, out, key, manifest)
        with _quiet_pydicom():
            for entry in progress_bar(files, enabled=progress, desc="deid", unit="file"):
                report.files.append(run.one(entry))
                checkpoint("deid-progress")
    else:
        get_profile()  # build the rule table once; forked workers inherit it
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(
            n_workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(src, out, key, os.getpid(), manifest),
        ) as pool:
            results = pool.map(_worker_one, files, chunksize=16)
            for result in progress_bar(
                results, enabled=progress, total=len(files), desc="deid", unit="file"
            ):
                report.files.append(result)
                checkpoint("deid-progress")
    report.write()
    return report


__all__ = ["UNSUPPORTED", "deid_tree", "profile_summary"]
