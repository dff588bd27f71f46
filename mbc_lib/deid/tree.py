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

from pydicom.datadict import DicomDictionary

from ..errors import MbcError
from ..manifests import Manifest, load_manifests
from ..progress import progress as progress_bar
from .dicom import DicomRefused, deid_dicom_dataset, read_dicom
from .images import JPEG_MAGIC, PNG_SIGNATURE, MalformedImageError, strip_jpeg, strip_png
from .keys import DeidKey
from .profile import METHOD_CODES, get_profile
from .report import DEIDENTIFIED, ActionCounts, DeidReport, FileResult, describe_error
from .tables import TableRefused, dataset_manifest, deid_labels, deid_mask, is_label_table, is_mask

UNSUPPORTED = "unsupported file type: not DICOM, JPEG, PNG, a dataset label table or mask"
#: First bytes of a DICOM data set written without preamble (group 0002 or 0008).
_BARE_DICOM_STARTS = (b"\x08\x00", b"\x02\x00", b"\x00\x08", b"\x00\x02")
_SOP_CLASS_UID = 0x00080016


def profile_summary() -> dict[str, object]:
    """What the report records about the rules applied (no key material)."""
    profile = get_profile()
    return {
        "name": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
        "codes": [{"value": v, "scheme": "DCM", "meaning": m} for v, m in METHOD_CODES],
        "options": [m for _, m in METHOD_CODES[1:]],
        "table_edition": profile.edition,
        "sources": profile.sources,
    }


def _check_paths(src: Path, out: Path) -> None:
    if not src.exists():
        raise MbcError(f"source folder not found: {src}")
    if not src.is_dir():
        raise MbcError(f"source is not a folder: {src}")
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r or src_r in out_r.parents:
        raise MbcError(f"output folder {out} must not be the source folder or inside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MbcError(f"output folder {out} exists and is not empty")


def _walk(src: Path) -> Iterator[Path]:
    """Every entry below ``src`` that is not a followed folder, in a stable order."""
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        base = Path(folder)
        links = [d for d in dirs if (base / d).is_symlink()]
        for name in sorted([*files, *links]):
            yield base / name
        dirs[:] = [d for d in dirs if d not in links]


def _looks_like_dicom(elements: dict[int, object]) -> bool:
    """A forced read of a file without preamble found real DICOM, not noise."""
    return _SOP_CLASS_UID in elements or any(
        tag >> 16 == 0x0008 and tag in DicomDictionary for tag in elements
    )


def _write_atomic(dst: Path, data: bytes) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    try:
        part.write_bytes(data)
        os.replace(part, dst)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


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

    def __init__(self, src: Path, out: Path, key: DeidKey) -> None:
        self.src, self.out, self.key = src, out, key
        self._manifests: dict[str, Manifest] | None = None
        self.manifest_error = ""

    @property
    def manifests(self) -> dict[str, Manifest]:
        """Dataset manifests, loaded when the first table or mask candidate is met."""
        if self._manifests is None:
            try:
                self._manifests = load_manifests()
            except MbcError as exc:
                self._manifests, self.manifest_error = {}, str(exc)
        return self._manifests

    def one(self, path: Path) -> FileResult:
        rel = path.relative_to(self.src).as_posix()
        try:
            return self._one(path, rel)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
            return FileResult.refused(rel, "other", f"internal error: {describe_error(exc)}")

    def _one(self, path: Path, rel: str) -> FileResult:
        if path.is_symlink():
            return FileResult.refused(rel, "other", "symbolic link: not followed")
        if not path.is_file():
            return FileResult.refused(rel, "other", "not a regular file")
        with path.open("rb") as fh:
            head = fh.read(132)
            kind = self._classify(head, path)
            if kind == "other":
                return FileResult.refused(rel, "other", UNSUPPORTED)
            data = head + fh.read()
        dst = self.out / rel
        if kind in ("dicom", "bare-dicom"):
            return self._dicom(data, rel, dst, force=kind == "bare-dicom")
        if kind == "jpeg":
            return self._bytes(data, rel, dst, kind, strip_jpeg)
        if kind == "png":
            return self._bytes(data, rel, dst, kind, strip_png)
        if self.manifest_error:
            return FileResult.refused(rel, kind, f"no dataset manifests: {self.manifest_error}")
        manifest = dataset_manifest(path, self.src, self.manifests)
        if kind == "labels" and manifest is not None:
            return self._bytes(
                data, rel, dst, kind, partial(deid_labels, manifest=manifest, key=self.key)
            )
        return self._bytes(data, rel, dst, kind, partial(deid_mask, key=self.key))

    def _classify(self, head: bytes, path: Path) -> str:
        """What a file is, from its first bytes and, for tables and masks, its place."""
        if head[128:132] == b"DICM":
            return "dicom"
        if head.startswith(JPEG_MAGIC):
            return "jpeg"
        if head.startswith(PNG_SIGNATURE):
            return "png"
        manifests = self.manifests
        if self.manifest_error and path.suffix.lower() in (".csv", ".npz"):
            return "labels" if path.suffix.lower() == ".csv" else "mask"
        manifest = dataset_manifest(path, self.src, manifests)
        if is_label_table(path, manifest):
            return "labels"
        if is_mask(path, manifest):
            return "mask"
        if head[:2] in _BARE_DICOM_STARTS:
            return "bare-dicom"
        return "other"

    def _dicom(self, data: bytes, rel: str, dst: Path, *, force: bool) -> FileResult:
        try:
            ds = read_dicom(data, force=force)
        except DicomRefused as exc:
            return FileResult.refused(
                rel, "dicom" if not force else "other", str(exc) if not force else UNSUPPORTED
            )
        if force and not _looks_like_dicom(ds._dict):
            return FileResult.refused(rel, "other", UNSUPPORTED)
        try:
            counts = deid_dicom_dataset(ds, dst, self.key)
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
        _write_atomic(dst, data)
        return FileResult(rel, kind, DEIDENTIFIED, output=rel, actions=ActionCounts())


_KIND_LABEL = {
    "jpeg": "malformed image",
    "png": "malformed image",
    "labels": "label table refused",
    "mask": "mask refused",
}


#: Below this many files a worker pool costs more than it saves.
_MIN_FILES_FOR_POOL = 64
_worker_run: _TreeRun | None = None


def _init_worker(src: Path, out: Path, key: DeidKey) -> None:
    global _worker_run
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    _worker_run = _TreeRun(src, out, key)


def _worker_one(path: Path) -> FileResult:
    assert _worker_run is not None
    return _worker_run.one(path)


def default_workers() -> int:
    """One worker per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def deid_tree(
    src: Path, out: Path, key: DeidKey, *, progress: bool = True, workers: int | None = None
) -> DeidReport:
    """De-identify every file below ``src`` into ``out`` (same relative paths).

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
    files = list(_walk(src))
    n_workers = min(workers or default_workers(), max(1, len(files) // 16))
    if n_workers == 1 or len(files) < _MIN_FILES_FOR_POOL:
        run = _TreeRun(src, out, key)
        with _quiet_pydicom():
            for path in progress_bar(files, enabled=progress, desc="deid", unit="file"):
                report.files.append(run.one(path))
    else:
        get_profile()  # build the rule table once; forked workers inherit it
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(
            n_workers, mp_context=context, initializer=_init_worker, initargs=(src, out, key)
        ) as pool:
            results = pool.map(_worker_one, files, chunksize=16)
            for result in progress_bar(
                results, enabled=progress, total=len(files), desc="deid", unit="file"
            ):
                report.files.append(result)
    report.write()
    return report


__all__ = ["UNSUPPORTED", "deid_tree", "profile_summary"]
