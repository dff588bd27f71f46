"""Walk a source tree and tell what each file is, without following a single link.

Every entry below the root is yielded once, in a stable order: a regular file as itself, and
anything that cannot be read as one (a symbolic link to a file or a folder, a FIFO, a socket,
a device, a folder that cannot be listed) with the reason it is refused. Nothing is skipped
silently, so callers can account for every entry they were given.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..manifests import Manifest
from .bmp import looks_like_bmp
from .nifti import looks_like_nifti
from .nnunet import DATASET_JSON

#: Files that ``mbc deid`` writes beside its output (metadata, not images).
REPORT_NAMES = frozenset({"deid-report.json", "deid-report.txt"})
#: Folder of a dataset that holds its segmentation masks.
MASK_FOLDER = "masks"
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: First bytes of a DICOM data set written without preamble (group 0002 or 0008).
_BARE_DICOM_STARTS = (b"\x08\x00", b"\x02\x00", b"\x00\x08", b"\x00\x02")
HEAD_BYTES = 132
_SPECIAL = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a source tree; ``reason`` says why it is not a readable regular file."""

    path: Path
    rel: str  # relative to the walked root, '/'-separated
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class UnreadableFile(Exception):
    """A regular file that cannot be opened or read; ``str(exc)`` is the one-line reason."""


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _special(mode: int) -> str | None:
    return next((name for test, name in _SPECIAL if test(mode)), None)


def walk_tree(root: Path, prune: Callable[[Path], bool] | None = None) -> Iterator[Entry]:
    """Every entry below ``root``: files of a folder by name, then its subfolders by name.

    ``prune(path)`` may exclude a subtree the caller owns (it is neither yielded nor walked).
    """
    root = Path(root)
    yield from _walk(root, root, prune)


def _walk(root: Path, folder: Path, prune: Callable[[Path], bool] | None) -> Iterator[Entry]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        rel = folder.relative_to(root).as_posix()
        yield Entry(folder, rel, f"unreadable folder: {_strerror(exc)} (its files were not seen)")
        return
    subfolders: list[Path] = []
    for item in entries:
        path = Path(item.path)
        if prune is not None and prune(path):
            continue
        rel = path.relative_to(root).as_posix()
        try:
            info = item.stat(follow_symlinks=False)
        except OSError as exc:
            yield Entry(path, rel, f"unreadable entry: {_strerror(exc)}")
            continue
        if stat.S_ISLNK(info.st_mode):
            yield Entry(path, rel, "symbolic link: not followed")
        elif stat.S_ISDIR(info.st_mode):
            subfolders.append(path)
        elif stat.S_ISREG(info.st_mode):
            yield Entry(path, rel)
        else:
            yield Entry(path, rel, f"not a regular file: {_special(info.st_mode) or 'unknown'}")
    for path in subfolders:
        yield from _walk(root, path, prune)


#: What identifies one version of a file: inode, size, modification time (ns).
Stamp = tuple[int, int, int]


def _open_regular(path: Path) -> tuple[int, Stamp]:
    """A descriptor of ``path`` if it is still a regular file (never through a link)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnreadableFile("symbolic link: not followed") from None
        raise UnreadableFile(f"unreadable file: {_strerror(exc)}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnreadableFile(f"not a regular file: {_special(info.st_mode) or 'folder'}")
    return fd, (info.st_ino, info.st_size, info.st_mtime_ns)


def _check_stamp(fd: int, stamp: Stamp, expected: Stamp | None) -> None:
    if expected is not None and stamp != expected:
        os.close(fd)
        raise UnreadableFile("file changed while it was being ingested: not read again")


def read_stamped(path: Path) -> tuple[bytes, Stamp]:
    """The bytes of a regular file and its :data:`Stamp`; :class:`UnreadableFile` else."""
    fd, stamp = _open_regular(path)
    try:
        with os.fdopen(fd, "rb") as fh:
            return fh.read(), stamp
    except OSError as exc:
        raise UnreadableFile(f"unreadable file: {_strerror(exc)}") from None


def read_file(path: Path, limit: int | None = None, stamp: Stamp | None = None) -> bytes:
    """The bytes of a regular file (its first ``limit`` bytes); :class:`UnreadableFile` if
    it cannot be read, or if it is no longer the version ``stamp`` names."""
    fd, now = _open_regular(path)
    _check_stamp(fd, now, stamp)
    try:
        with os.fdopen(fd, "rb") as fh:
            return fh.read() if limit is None else fh.read(limit)
    except OSError as exc:
        raise UnreadableFile(f"unreadable file: {_strerror(exc)}") from None


def read_range(path: Path, offset: int, length: int, stamp: Stamp | None = None) -> bytes:
    """``length`` bytes at ``offset`` of a regular file, checked against ``stamp``."""
    fd, now = _open_regular(path)
    _check_stamp(fd, now, stamp)
    try:
        data = os.pread(fd, length, offset)
    except OSError as exc:
        raise UnreadableFile(f"unreadable file: {_strerror(exc)}") from None
    finally:
        os.close(fd)
    if len(data) != length:
        raise UnreadableFile("file is shorter than its header says")
    return data


def classify(head: bytes, rel_in_dataset: str, manifest: Manifest | None) -> str:
    """What a file is, from its first bytes and its place in its dataset's folder.

    One of ``dicom`` (with the DICM preamble), ``bare-dicom`` (a data set without preamble),
    ``jpeg``, ``png``, ``bmp`` (``BM`` and a known info-header size), ``nifti`` (``.nii``,
    ``.nii.gz``), ``labels`` (the manifest's label table at the dataset's top), ``mask``
    (``masks/*.npz``), ``dataset-json`` (an nnU-Net ``dataset.json`` of a NIfTI dataset),
    ``report`` (mbc deid's report at the top) or ``other``.
    """
    parts = rel_in_dataset.split("/")
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head.startswith(PNG_SIGNATURE):
        return "png"
    if manifest is not None:
        if manifest.label_file and rel_in_dataset == manifest.label_file:
            return "labels"
        if parts[-1].endswith(".npz") and len(parts) >= 2 and parts[-2] == MASK_FOLDER:
            return "mask"
        if manifest.source is not None and rel_in_dataset == DATASET_JSON:
            return "dataset-json"
    if looks_like_bmp(head):
        return "bmp"
    if len(parts) == 1 and parts[0] in REPORT_NAMES:
        return "report"
    if looks_like_nifti(head, parts[-1]):
        return "nifti"
    if head[:2] in _BARE_DICOM_STARTS:
        return "bare-dicom"
    return "other"


def inside(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies below it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


__all__ = [
    "HEAD_BYTES",
    "JPEG_MAGIC",
    "MASK_FOLDER",
    "PNG_SIGNATURE",
    "REPORT_NAMES",
    "Entry",
    "UnreadableFile",
    "classify",
    "inside",
    "Stamp",
    "read_file",
    "read_range",
    "read_stamped",
    "walk_tree",
]
