"""``mbc ingest``: PHI gate, conversion and atomic publish of one source tree into the store.

Pass 1 walks the source (never following a link), reads every file once and runs the PHI
gate on it; when any file identifies a person the whole input is refused and nothing is
published. Pass 2 groups what passed into cases, converts and publishes them one by one
(staging, then one rename), then rewrites the catalog. Every entry of the source ends as
published, duplicate or quarantined; a problem with one file or one series quarantines it
and the run goes on; a problem with the store itself stops the run with one line.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import phi_gate
from ..errors import MbcError, RefusedError, describe_error
from ..manifests import Manifest, get_manifest, image_key
from ..progress import progress as progress_bar
from ..sources import header
from ..sources.dicom import MalformedDicom, read_dicom
from ..sources.limits import max_pixels
from ..sources.tables import TableError, describe_duplicates, duplicate_keys, read_table
from ..sources.walk import (
    HEAD_BYTES,
    Stamp,
    UnreadableFile,
    classify,
    inside,
    read_file,
    read_range,
    read_stamped,
    walk_tree,
)
from ..store.catalog import write_catalog
from ..store.writer import CaseData, StoreWriter
from . import convert, series_labels
from .beside_labels import BesideLabels, in_layout
from .ct_case import ct_case
from .fundus_cases import ingest_fundus
from .nifti_cases import ingest_nifti_ct
from .quarantine import Quarantine

UNSUPPORTED = "unsupported file type"
#: Temporary de-identification trees beside the store: ``.mbc-deid-<pid>-<random>``.
_WORK_PREFIX = ".mbc-deid-"
_WORK_RE = re.compile(rf"^{re.escape(_WORK_PREFIX)}(\d+)-[0-9a-f]+$")


@dataclass
class IngestResult:
    """What one ingest run did. ``published + duplicate + quarantined == seen`` always."""

    dataset: str
    store: Path
    seen: int = 0
    published: int = 0
    duplicate: int = 0
    quarantined: int = 0
    cases_published: int = 0
    cases_duplicate: int = 0
    quarantine_dir: Path | None = None
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: every file's outcome by its path in the source: (published | duplicate | quarantined,
    #: the reason when quarantined)
    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def add(self, rel: str, outcome: str, reason: str | None = None) -> None:
        """Account for one file of the source."""
        if outcome == "published":
            self.published += 1
        elif outcome == "duplicate":
            self.duplicate += 1
        elif outcome == "quarantined":
            self.quarantined += 1
            self.reasons[(reason or "").split(":")[0][:80]] += 1
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
        self.outcomes[rel] = (outcome, reason)

    def summary(self) -> str:
        lines = [
            f"dataset {self.dataset} in {self.store}: {self.seen} files seen: "
            f"{self.published} published, {self.duplicate} duplicate, "
            f"{self.quarantined} quarantined",
            f"cases: {self.cases_published} new, {self.cases_duplicate} already in the store",
        ]
        if self.quarantined and self.quarantine_dir:
            lines.append(f"quarantine: {self.quarantine_dir} (reasons.jsonl)")
            for reason, count in sorted(self.reasons.items(), key=lambda kv: -kv[1])[:10]:
                lines.append(f"  {count:5d}  {reason}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: Path
    rel: str  # relative to the source root, '/'-separated
    kind: (
        str  # dicom | bare-dicom | jpeg | png | bmp | nifti | dataset-json | labels | mask | report
    )
    stamp: Stamp | None = None  # the version the gate read; later reads must find it

    def read(self) -> bytes:
        """The file again, exactly as the PHI gate read it (refused if it changed since)."""
        return read_file(self.path, stamp=self.stamp)


@dataclass(frozen=True, slots=True)
class _Dicom:
    """A DICOM file that passed the gate: what grouping it into a case needs, nothing more."""

    file: SourceFile
    sop_class: str
    modality: str
    series_uid: str
    study_uid: str
    frame_uid: str  # Frame of Reference UID ("" when absent)
    patient: str
    slice: convert.Slice | None  # CT datasets only
    problem: str | None  # why the file cannot be a CT slice
    acquisition: dict[str, Any]  # cohort fields (store.schema.ACQUISITION)


@dataclass
class _Gated:
    """Pass 1's outcome: files sorted by what they are, refusals, identified files."""

    dicoms: list[_Dicom] = field(default_factory=list)
    photos: list[SourceFile] = field(default_factory=list)
    niftis: list[SourceFile] = field(default_factory=list)
    class_files: list[SourceFile] = field(default_factory=list)  # nnU-Net dataset.json
    tables: list[SourceFile] = field(default_factory=list)
    masks: list[SourceFile] = field(default_factory=list)
    reports: list[SourceFile] = field(default_factory=list)
    refused: list[tuple[SourceFile, str, bool]] = field(default_factory=list)  # verified?
    identified: dict[str, list[str]] = field(default_factory=dict)
    acquisition: dict[str, dict[str, Any]] = field(default_factory=dict)  # by series UID


@dataclass
class _Labels:
    """The label table of the input: rows by key, or why it was refused."""

    file: SourceFile | None = None
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: str | None = None
    used_by_new: bool = False
    used_by_duplicate: bool = False


class _Run:
    """State of one ingest run's second pass."""

    def __init__(
        self,
        manifest: Manifest,
        writer: StoreWriter,
        quarantine: Quarantine,
        result: IngestResult,
        progress: bool,
        budget: int,
    ) -> None:
        self.manifest = manifest
        self.writer = writer
        self.quarantine = quarantine
        self.result = result
        self.progress = progress
        self.budget = budget
        self.labels = _Labels()
        self.new_case = False
        self.counted: set[str] = set()  # rel paths already counted in the result

    def refuse(self, f: SourceFile, reason: str, verified: bool = True) -> None:
        """Quarantine ``f``: copied when the gate verified it, listed otherwise."""
        self.counted.add(f.rel)
        if verified:
            self.quarantine.put(f.path, f.rel, reason, f.stamp)
        else:
            self.quarantine.record(f.rel, reason)
        self.result.add(f.rel, "quarantined", reason)

    def publish(self, case: CaseData, files: list[SourceFile]) -> str:
        """Publish ``case`` built from ``files``; returns published, duplicate or refused."""
        self.counted.update(f.rel for f in files)
        checksum = case.checksum()
        existing = self.writer.existing_checksum(case.case_id)
        if existing == checksum:
            for f in files:
                self.result.add(f.rel, "duplicate")
            self.result.cases_duplicate += 1
            return "duplicate"
        if existing is not None:
            for f in files:
                self.refuse(
                    f,
                    f"differs from a published case: {case.case_id} holds other content, "
                    "and published cases are never changed",
                )
            return "refused"
        case.attrs.setdefault("dataset", self.manifest.name)
        case.attrs["n_source_files"] = len(files)
        case.attrs["ingested_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            self.writer.publish(case)
        except OSError:
            raise  # the store itself failed: the run stops (see ingest())
        except Exception as exc:  # noqa: BLE001 - a case the store cannot take
            for f in files:
                self.refuse(f, f"cannot store the case: {describe_error(exc)}")
            return "refused"
        for f in files:
            self.result.add(f.rel, "published")
        self.result.cases_published += 1
        self.new_case = True
        return "published"

    def table_refusal(self) -> str:
        """Why a case that needs the label table is held back: the table was refused."""
        assert self.labels.file is not None
        return f"its label table {self.labels.file.rel} was refused ({self.labels.refused})"

    def used_row(self, outcome: str) -> None:
        """A case that took its labels from the table was published or found a duplicate."""
        if outcome == "published":
            self.labels.used_by_new = True
        elif outcome == "duplicate":
            self.labels.used_by_duplicate = True


# -- options and places, checked before anything is created --------------------------------
def _check_places(src: Path, store: Path, quarantine_root: Path) -> None:
    if not src.is_dir() or src.is_symlink():
        raise MbcError(f"source folder not found: {src}")
    if store.is_symlink() or (store.exists() and not store.is_dir()):
        raise MbcError(f"store path {store} exists and is not a folder")
    if store.is_dir() and not (store / "zarr.json").exists() and any(store.iterdir()):
        raise MbcError(f"store path {store} is a folder that is not an mbc store (no zarr.json)")
    if inside(store, src):
        raise MbcError("the store must not lie inside the source folder")
    if inside(src, store):
        raise MbcError("the source folder must not lie inside the store")
    if inside(quarantine_root, store):
        raise MbcError(f"the quarantine {quarantine_root} must not lie inside the store")
    if inside(quarantine_root, src):
        raise MbcError(
            f"the quarantine {quarantine_root} must not lie inside the source folder "
            "(every re-run would ingest it again)"
        )
    if quarantine_root.exists() and not quarantine_root.is_dir():
        raise MbcError(f"the quarantine {quarantine_root} exists and is not a folder")


def ingest(
    src: Path,
    store: Path,
    dataset: str,
    *,
    deid_key_file: Path | None = None,
    quarantine: Path | None = None,
    progress: bool = True,
    manifest_dir: Path | None = None,
    manifest: Manifest | None = None,
    pixel_budget: int | None = None,
    wait_for_lock: bool = False,
) -> IngestResult:
    """Ingest ``src`` into ``store`` as ``dataset``; see the module docstring.

    ``deid_key_file``: de-identify ``src`` first (single-site use); ``quarantine``: where
    refused files go (default ``STORE.quarantine`` beside the store); ``pixel_budget``:
    pixels any one image may declare (default :func:`mbc_lib.sources.limits.max_pixels`);
    ``manifest``: use this manifest (``mbc ingest --manifest FILE``) instead of looking
    ``dataset`` up in ``manifest_dir``; ``wait_for_lock``: wait while another ingest writes
    to the store (the ingest service queues) instead of refusing at once.
    """
    src, store = Path(src), Path(store)
    quarantine_root = (
        Path(quarantine) if quarantine else store.with_name(store.name + ".quarantine")
    )
    _check_places(src, store, quarantine_root)
    if manifest is None:
        manifest = get_manifest(dataset, manifest_dir)
    elif dataset and dataset != manifest.name:
        raise MbcError(f"--dataset {dataset} does not match the manifest's name {manifest.name}")
    budget = max_pixels(pixel_budget)
    key = None
    if deid_key_file is not None:
        from ..deid.keys import DeidKey

        key = DeidKey.from_file(deid_key_file)
    q = Quarantine(quarantine_root, manifest.name)
    result = IngestResult(dataset=manifest.name, store=store, quarantine_dir=q.run_dir)
    if key is None:
        return _ingest_tree(src, store, manifest, q, result, progress, budget, wait=wait_for_lock)
    return _deid_then_ingest(
        src, store, manifest, q, result, progress, budget, key, wait=wait_for_lock
    )


def _deid_then_ingest(
    src: Path,
    store: Path,
    manifest: Manifest,
    q: Quarantine,
    result: IngestResult,
    progress: bool,
    budget: int,
    key: Any,
    *,
    wait: bool = False,
) -> IngestResult:
    """De-identify ``src`` into a temporary tree beside the store, then ingest that tree."""
    from ..deid.tree import deid_tree
    from ..store.writer import remove_tree

    parent = store.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_work_trees(parent)
        work = parent / f"{_WORK_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        work.mkdir()
    except OSError as exc:
        raise MbcError(f"cannot write beside the store {store}: {_strerror(exc)}") from None
    try:
        report = deid_tree(src, work / "out", key, progress=progress, manifest=manifest)
        table_refused = None
        for entry in report.refused:
            q.record(entry.path, f"refused by de-identification: {entry.reason}")
            result.seen += 1
            result.add(entry.path, "quarantined", f"refused by de-identification: {entry.reason}")
            if entry.path == manifest.label_file:
                table_refused = f"refused by de-identification: {entry.reason}"
        return _ingest_tree(
            work / "out", store, manifest, q, result, progress, budget, True, table_refused, wait
        )
    finally:
        remove_tree(work)


def remove_stale_work_trees(parent: Path) -> list[Path]:
    """Remove the de-identification trees that killed ingest runs left beside a store."""
    removed = []
    from ..store.writer import remove_tree

    for entry in os.scandir(parent):
        match = _WORK_RE.match(entry.name)
        if not match or not entry.is_dir(follow_symlinks=False):
            continue
        if _alive(int(match[1])):
            continue
        remove_tree(Path(entry.path))
        removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def _strerror(exc: OSError) -> str:
    return exc.strerror or describe_error(exc)


# -- pass 1: the PHI gate over every entry ----------------------------------------------------
def _gate(src: Path, manifest: Manifest, progress: bool, budget: int, from_deid: bool) -> _Gated:
    gated = _Gated()
    for entry in progress_bar(walk_tree(src), progress, desc="PHI gate", unit="file"):
        if entry.reason:
            gated.refused.append((SourceFile(entry.path, entry.rel, "other"), entry.reason, False))
            continue
        try:
            data, stamp = read_stamped(entry.path)
        except UnreadableFile as exc:
            gated.refused.append((SourceFile(entry.path, entry.rel, "other"), str(exc), False))
            continue
        kind = classify(data[:HEAD_BYTES], entry.rel, manifest)
        f = SourceFile(entry.path, entry.rel, kind, stamp)
        if from_deid and f.kind == "report":
            continue  # the de-identifier's own report is not part of the input
        _gate_one(f, data, manifest, gated, budget)
    return gated


def gate_file(
    path: Path, rel: str, manifest: Manifest, pixel_budget: int | None = None
) -> list[str]:
    """The PHI gate on one file as ``mbc ingest`` runs it: what in it identifies a person
    (empty when nothing does; a file the gate cannot read or place is left to ingest)."""
    try:
        data, _ = read_stamped(path)
    except UnreadableFile:
        return []
    return gate_data(data, rel, manifest, pixel_budget)


def gate_data(
    data: bytes, rel: str, manifest: Manifest, pixel_budget: int | None = None
) -> list[str]:
    """:func:`gate_file` on bytes received (``rel``: the name they arrived under)."""
    gated = _Gated()
    f = SourceFile(Path(rel), rel, classify(data[:HEAD_BYTES], rel, manifest))
    _gate_one(f, data, manifest, gated, max_pixels(pixel_budget))
    return gated.identified.get(rel, [])


#: What the gate checks each non-DICOM kind with, and the list of ``_Gated`` it joins.
_CHECKS: dict[str, tuple[Callable[[bytes, Manifest, int], list[str]], str]] = {
    "jpeg": (lambda data, m, b: phi_gate.check_jpeg(data), "photos"),
    "png": (lambda data, m, b: phi_gate.check_png(data), "photos"),
    "bmp": (lambda data, m, b: phi_gate.check_bmp(data, b), "photos"),
    "nifti": (lambda data, m, b: phi_gate.check_nifti(data, b), "niftis"),
    "dataset-json": (lambda data, m, b: phi_gate.check_dataset_json(data), "class_files"),
    "labels": (lambda data, m, b: phi_gate.check_labels_csv(data, m), "tables"),
    "mask": (lambda data, m, b: phi_gate.check_mask_npz(data), "masks"),
}


def _gate_one(f: SourceFile, data: bytes, manifest: Manifest, gated: _Gated, budget: int) -> None:
    findings: list[str]
    if f.kind in ("dicom", "bare-dicom"):
        try:
            ds = read_dicom(data, force=f.kind == "bare-dicom")
        except MalformedDicom as exc:
            gated.refused.append((f, UNSUPPORTED if f.kind == "bare-dicom" else str(exc), False))
            return
        findings = phi_gate.check_dicom_dataset(ds)
        if not findings:
            gated.dicoms.append(_dicom_record(f, ds, manifest, budget, gated.acquisition))
    elif f.kind in _CHECKS:
        check, joins = _CHECKS[f.kind]
        findings = check(data, manifest, budget)
        if not findings:
            getattr(gated, joins).append(f)
    elif f.kind == "report":
        gated.reports.append(f)
        return
    else:
        gated.refused.append((f, UNSUPPORTED, False))
        return
    damaged = [x for x in findings if x.startswith(phi_gate.NOT_PHI)]
    phi = [x for x in findings if not x.startswith(phi_gate.NOT_PHI)]
    if phi:
        gated.identified[f.rel] = phi
    elif damaged:
        gated.refused.append((f, damaged[0], False))


def _dicom_record(
    f: SourceFile, ds: Any, manifest: Manifest, budget: int, acquisition: dict[str, dict[str, Any]]
) -> _Dicom:
    """What pass 2 needs of a gated DICOM file. ``acquisition``: cohort fields by series,
    read from the series' first file only (a case's catalog row is the series')."""
    series_uid = str(header.get(ds, "SeriesInstanceUID", "") or "")
    if series_uid not in acquisition or not series_uid:
        acquisition[series_uid] = header.acquisition(ds)
    geometry, problem = None, None
    if manifest.modality == "ct":
        try:
            geometry = convert.ct_slice(ds, budget)
        except convert.ConversionError as exc:
            problem = str(exc)
    return _Dicom(
        file=f,
        sop_class=str(header.get(ds, "SOPClassUID", "") or ""),
        modality=str(header.get(ds, "Modality", "") or ""),
        series_uid=series_uid,
        study_uid=str(header.get(ds, "StudyInstanceUID", "") or ""),
        frame_uid=str(header.get(ds, "FrameOfReferenceUID", "") or ""),
        patient=str(header.get(ds, "PatientID", "") or ""),
        slice=geometry,
        problem=problem,
        acquisition=acquisition[series_uid],
    )


# -- pass 2 ----------------------------------------------------------------------------------
def _ingest_tree(
    src: Path,
    store: Path,
    manifest: Manifest,
    q: Quarantine,
    result: IngestResult,
    progress: bool,
    budget: int,
    from_deid: bool = False,
    table_refused: str | None = None,
    wait: bool = False,
) -> IngestResult:
    """Gate, convert and publish the files under ``src``. ``table_refused``: why the
    de-identifier refused the label table (its images are then held back, as when ingest
    refuses a table itself)."""
    gated = _gate(src, manifest, progress, budget, from_deid)
    total = (
        len(gated.dicoms)
        + len(gated.photos)
        + len(gated.niftis)
        + len(gated.class_files)
        + len(gated.tables)
        + len(gated.masks)
        + len(gated.reports)
        + len(gated.refused)
        + len(gated.identified)
    )
    result.seen += total
    if gated.identified:
        detail = q.write_refusal(gated.identified)
        first, reasons = next(iter(gated.identified.items()))
        raise RefusedError(
            f"refused {src}: {len(gated.identified)} of {total} files carry identifying data "
            f"(e.g. {first}: {reasons[0]}); nothing was ingested. De-identify first with "
            f"'mbc deid' or pass --deid-key-file (details: {detail})"
        )
    try:
        with StoreWriter(store, manifest, wait=wait) as writer:
            run = _Run(manifest, writer, q, result, progress, budget)
            try:
                if table_refused and manifest.label_file:
                    run.labels.file = SourceFile(
                        src / manifest.label_file, manifest.label_file, "labels"
                    )
                    run.labels.refused = table_refused
                _publish_all(run, gated)
            finally:
                write_catalog(store, manifest)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise MbcError(f"cannot write to the store {store}: {_strerror(exc)}{where}") from None
    return result


def _publish_all(run: _Run, gated: _Gated) -> None:
    for f, reason, verified in gated.refused:
        run.refuse(f, reason, verified)
    for f in gated.tables[1:]:
        run.refuse(f, "a second label table for this dataset")
    if gated.tables:
        _load_labels(run, gated.tables[0])
    modality = run.manifest.modality
    if modality != "ct":
        for f in gated.niftis:
            run.refuse(f, f"NIfTI volumes are not accepted by a {modality} dataset")
    if modality == "ct":
        beside = [f for f in gated.niftis if not in_layout(run.manifest, f)]
        _ingest_ct(run, gated.dicoms, gated.photos, gated.masks, beside)
        ingest_nifti_ct(run, [f for f in gated.niftis if f not in beside], gated.class_files)
    elif modality == "fundus":
        for m in gated.masks:
            run.refuse(m, "masks are not accepted by a fundus photograph dataset")
        ingest_fundus(run, gated.dicoms, gated.photos)
    else:
        for m in gated.masks:
            run.refuse(m, "masks are not accepted by a DICOM reference dataset")
        _ingest_generic(run, gated.dicoms, gated.photos)
    _account_labels(run)
    for f in gated.reports:  # mbc deid's report: metadata that travels with its files
        run.result.add(f.rel, "published" if run.new_case else "duplicate")


# -- label table ------------------------------------------------------------------------------
def _load_labels(run: _Run, f: SourceFile) -> None:
    """Rows of the label table by key, values typed; the whole table refused on any problem."""
    labels = run.labels
    labels.file = f
    try:
        labels.rows = _label_rows(f.read(), run.manifest)
    except (UnreadableFile, TableError) as exc:
        labels.refused = str(exc)
        run.refuse(f, f"label table refused: {exc}")


def _label_rows(data: bytes, manifest: Manifest) -> dict[str, dict[str, Any]]:
    table = read_table(data)
    key = manifest.label_key_column or "path"
    if key not in table.header:
        raise TableError(f"label table lacks its key column {key!r}")
    if not table.rows:
        raise TableError("label table holds no rows")
    duplicates = duplicate_keys(table, key)
    if duplicates:
        raise TableError(describe_duplicates(duplicates))
    rows: dict[str, dict[str, Any]] = {}
    for line, row in table.rows:
        values: dict[str, Any] = {}
        for name, column in manifest.label_columns.items():
            try:
                values[name] = column.convert(row.get(column.table_column) or "")
            except ValueError as exc:
                raise TableError(f"invalid label value at line {line}: {exc}") from None
        patient = manifest.label_patient
        values["__patient"] = (row.get(patient) or "").strip() if patient else ""
        cell = row[key].strip()
        if manifest.label_key == "image":
            cell = image_key(cell)
            if cell in rows:
                raise TableError(f"line {line}: a second row for one image")
        if manifest.label_key == "case":
            assert manifest.source is not None
            case = manifest.source.case_in(cell)
            if case is None:
                raise TableError(f"line {line}: {key!r} names no volume of the dataset's layout")
            if case in rows:
                raise TableError(f"line {line}: a second row for one case")
            cell = case
        rows[cell] = values
    return rows


def _account_labels(run: _Run) -> None:
    labels = run.labels
    if labels.file is None or labels.refused is not None:
        return
    run.counted.add(labels.file.rel)
    if labels.used_by_new:
        run.result.add(labels.file.rel, "published")
    elif labels.used_by_duplicate:
        run.result.add(labels.file.rel, "duplicate")
    else:
        run.refuse(labels.file, "no row of the label table matches an image in this input")


# -- per modality -------------------------------------------------------------------------
def _ingest_generic(run: _Run, dicoms: list[_Dicom], photos: list[SourceFile]) -> None:
    for f in photos:
        run.refuse(f, "photographs are not accepted by a DICOM dataset")
    for d in progress_bar(dicoms, run.progress, desc="images", unit="file"):
        try:
            ds = read_dicom(d.file.read(), force=d.file.kind == "bare-dicom")
            img = convert.generic_image(ds, run.budget)
        except (convert.ConversionError, MalformedDicom, UnreadableFile) as exc:
            run.refuse(d.file, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - one odd object must not stop the run
            run.refuse(d.file, f"cannot convert: {describe_error(exc)}")
            continue
        sop = str(header.get(ds, "SOPInstanceUID", "") or "")
        if not sop:
            run.refuse(d.file, "no SOP Instance UID")
            continue
        case = CaseData(
            case_id=convert.case_id("dc", sop),
            kind="generic",
            image=img.image,
            dims=img.dims,
            spacing=img.spacing,
            unit=img.unit,
            attrs=_dicom_attrs(ds)
            | {"value_units": img.value_units, "acquisition": header.acquisition(ds)},
        )
        run.publish(case, [d.file])


def _dicom_attrs(ds: Any) -> dict[str, Any]:
    return {
        "modality": str(header.get(ds, "Modality", "")) or None,
        "patient": str(header.get(ds, "PatientID", "")),
        "study_uid": str(header.get(ds, "StudyInstanceUID", "")) or None,
        "series_uid": str(header.get(ds, "SeriesInstanceUID", "")) or None,
        "sop_class": str(header.get(ds, "SOPClassUID", "")) or None,
    }


def _series(run: _Run, dicoms: list[_Dicom]) -> dict[str, list[_Dicom]]:
    """CT slices by series. Anything else is refused; a series with a slice that cannot be
    placed (no UID, no size, non-finite geometry, over the pixel budget) is held back whole:
    stacking the rest would publish a volume with a hole in it."""
    series: dict[str, list[_Dicom]] = defaultdict(list)
    broken: dict[str, str] = {}
    for d in dicoms:
        if d.sop_class != convert.CT_IMAGE_STORAGE or d.modality != "CT":
            run.refuse(
                d.file,
                f"not a CT image (modality {d.modality or 'unknown'}); "
                f"dataset {run.manifest.name} takes CT series only",
            )
        elif not d.series_uid:
            run.refuse(d.file, "no Series Instance UID")
        elif d.problem is not None or d.slice is None:
            run.refuse(d.file, f"slice refused: {d.problem}")
            broken.setdefault(d.series_uid, f"slice {d.file.rel} was refused ({d.problem})")
        else:
            series[d.series_uid].append(d)
    for uid, why in broken.items():
        for d in series.pop(uid, []):
            run.refuse(d.file, f"series held back: {why}")
    return series


def _slice_hu(d: _Dicom) -> np.ndarray:
    """A slice's modality values: read straight from the file where its pixel data is
    native 16-bit (as the gate recorded it), else decoded by pydicom."""
    geometry, f = d.slice, d.file
    assert geometry is not None
    native = geometry.pixels
    if native is None:
        return convert.dataset_hu(read_dicom(f.read()))
    data = read_range(f.path, native.offset, native.length, f.stamp)
    return convert.native_hu(data, native, (geometry.rows, geometry.columns))


@dataclass
class _Mask:
    """A mask file and the SOP Instance UIDs of its slices; its labels are read when its
    series is published, so that memory holds one mask at a time, not every mask."""

    file: SourceFile
    uids: list[str]

    def labels(self) -> np.ndarray:
        with np.load(io.BytesIO(self.file.read()), allow_pickle=False) as npz:
            return npz["labels"]


def _read_masks(run: _Run, masks: list[SourceFile]) -> dict[frozenset[str], _Mask]:
    index: dict[frozenset[str], _Mask] = {}
    for f in masks:
        try:
            with np.load(io.BytesIO(f.read()), allow_pickle=False) as npz:
                mask = _Mask(f, [str(u) for u in npz["sop_instance_uids"]])
        except Exception as exc:  # noqa: BLE001 - a damaged archive quarantines the mask
            run.refuse(f, f"malformed mask file: {describe_error(exc)}")
            continue
        index[frozenset(mask.uids)] = mask
    return index


def _ingest_ct(
    run: _Run,
    dicoms: list[_Dicom],
    photos: list[SourceFile],
    masks: list[SourceFile],
    niftis: list[SourceFile] | None = None,
) -> None:
    for f in photos:
        run.refuse(f, "photographs are not accepted by a CT dataset")
    label_objects = [d for d in dicoms if d.sop_class in series_labels.LABEL_SOP_CLASSES]
    beside = BesideLabels(run, label_objects, niftis or [])
    series = _series(run, [d for d in dicoms if d.sop_class not in series_labels.LABEL_SOP_CLASSES])
    mask_index = _read_masks(run, masks)
    used_masks: set[str] = set()
    for uid, members in progress_bar(series.items(), run.progress, desc="CT series", unit="series"):
        files = [m.file for m in members]
        if run.labels.refused is not None:
            for f in files:
                run.refuse(f, f"series held back: {run.table_refusal()}")
            beside.place(uid, members, None, None)
            continue
        try:
            vol = convert.ct_volume(
                [m.slice for m in members],  # type: ignore[misc]
                lambda i, m=members: _slice_hu(m[i]),
            )
        except (convert.ConversionError, MalformedDicom, UnreadableFile) as exc:
            for f in files:
                run.refuse(f, f"inconsistent series: {exc}")
            beside.place(uid, members, None, None)
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. MemoryError: refuse the series, go on
            for f in files:
                run.refuse(f, f"series cannot be converted: {describe_error(exc)}")
            beside.place(uid, members, None, None)
            continue
        mask = _series_mask(run, mask_index.get(frozenset(vol.sop_uids)), vol)
        taken = None
        if mask is not None:
            taken = mask_index[frozenset(vol.sop_uids)].file
            used_masks.add(taken.rel)
            files = [*files, taken]
        other, label_file = beside.place(uid, members, vol, taken.rel if taken else None)
        if other is not None and label_file is not None:
            mask, files = other, [*files, label_file]
        patient = members[0].patient
        row = run.labels.rows.get(patient)
        case = ct_case(
            run.manifest,
            source_key=uid,
            image=vol.image,
            spacing=vol.spacing,
            origin=vol.origin,
            direction=vol.direction,
            patient=patient,
            row=row,
            labels=mask,
            study_uid=members[0].study_uid,
            series_uid=uid,
            frame_of_reference_uid=_one_frame(members),
            sop_instance_uids=vol.sop_uids,
            sop_class=convert.CT_IMAGE_STORAGE,
            acquisition=members[0].acquisition,
        )
        outcome = run.publish(case, files)
        if row is not None:
            run.used_row(outcome)
    for f in masks:
        if f.rel not in used_masks and f.rel not in run.counted:
            run.refuse(f, "no series in this input matches the mask's SOP Instance UIDs")
    for uid in {d.series_uid for d in dicoms} & set(beside.by_series):
        beside.place(uid, [], None, None)  # a series that _series refused
    beside.finish()


def _one_frame(members: list[_Dicom]) -> str | None:
    """The series' Frame of Reference UID, or None where its slices do not share one."""
    frames = {m.frame_uid for m in members}
    return frames.pop() if len(frames) == 1 and "" not in frames else None


def _series_mask(run: _Run, entry: _Mask | None, vol: convert.Volume) -> np.ndarray | None:
    if entry is None:
        return None
    try:
        labels = entry.labels()
    except Exception as exc:  # noqa: BLE001 - a damaged archive quarantines the mask
        run.refuse(entry.file, f"malformed mask file: {describe_error(exc)}")
        return None
    order = {u: i for i, u in enumerate(entry.uids)}
    try:
        candidate = labels[[order[u] for u in vol.sop_uids]]
    except (IndexError, ValueError) as exc:
        run.refuse(entry.file, f"mask does not fit its series: {describe_error(exc)}")
        return None
    if candidate.shape != vol.image.shape:
        run.refuse(
            entry.file, f"mask shape {candidate.shape} does not match series {vol.image.shape}"
        )
        return None
    if not set(np.unique(candidate).tolist()) <= set(run.manifest.segmentation_classes):
        run.refuse(entry.file, "mask holds values outside the manifest's classes")
        return None
    return candidate.astype(np.uint8)


__all__ = [
    "IngestResult",
    "SourceFile",
    "gate_data",
    "gate_file",
    "ingest",
    "remove_stale_work_trees",
]
