"""``mbc ingest``: PHI gate, conversion and atomic publish of one source tree into the store."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .. import phi_gate
from ..errors import MbcError, RefusedError
from ..manifests import LABEL_DTYPES, Manifest, get_manifest
from ..progress import progress as progress_bar
from ..store.catalog import write_catalog
from ..store.schema import label_stats
from ..store.writer import CaseData, StoreWriter
from . import convert
from .quarantine import Quarantine
from .scan import SourceFile, scan_tree

_NOT_PHI = ("unreadable", "malformed")


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


@dataclass
class _Header:
    file: SourceFile
    ds: Dataset


class _Run:
    """State of one ingest run."""

    def __init__(
        self,
        manifest: Manifest,
        writer: StoreWriter,
        quarantine: Quarantine,
        result: IngestResult,
        progress: bool,
    ) -> None:
        self.manifest = manifest
        self.writer = writer
        self.quarantine = quarantine
        self.result = result
        self.progress = progress
        self.new_case = False
        self.counted: set[str] = set()  # rel paths already counted in the result

    def refuse(self, f: SourceFile, reason: str) -> None:
        self.counted.add(f.rel)
        self.quarantine.put(f.path, f.rel, reason)
        self.result.quarantined += 1
        self.result.reasons[_reason_class(reason)] += 1

    def publish(self, case: CaseData, files: list[SourceFile]) -> None:
        self.counted.update(f.rel for f in files)
        checksum = case.checksum()
        existing = self.writer.existing_checksum(case.case_id)
        if existing == checksum:
            self.result.duplicate += len(files)
            self.result.cases_duplicate += 1
            return
        if existing is not None:
            for f in files:
                self.refuse(
                    f,
                    f"differs from published case {case.case_id}; published cases "
                    "are never changed",
                )
            return
        case.attrs.setdefault("dataset", self.manifest.name)
        case.attrs["n_source_files"] = len(files)
        case.attrs["ingested_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.writer.publish(case)
        self.result.published += len(files)
        self.result.cases_published += 1
        self.new_case = True


def _reason_class(reason: str) -> str:
    return reason.split(":")[0][:80]


def _read_header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def _load_labels(run: _Run, f: SourceFile) -> dict[str, dict[str, Any]] | None:
    """Rows of the label table by key, values validated against the manifest."""
    manifest = run.manifest
    rows: dict[str, dict[str, Any]] = {}
    reader = csv.DictReader(io.StringIO(f.path.read_text(encoding="utf-8")))
    key = manifest.label_key or "path"
    if key not in (reader.fieldnames or []):
        run.refuse(f, f"label table lacks its key column {key!r}")
        return None
    for line, row in enumerate(reader, start=2):
        values: dict[str, Any] = {}
        for name, column in manifest.label_columns.items():
            raw = row.get(name)
            if raw in (None, ""):
                values[name] = None
                continue
            if problem := column.check(raw):
                run.refuse(f, f"invalid label value at line {line}: {problem}")
                return None
            values[name] = LABEL_DTYPES[column.dtype](raw)
        values["__patient"] = row.get("patient_id")
        rows[row[key]] = values
    return rows


def ingest(
    src: Path,
    store: Path,
    dataset: str,
    *,
    deid_key_file: Path | None = None,
    quarantine: Path | None = None,
    progress: bool = True,
    manifest_dir: Path | None = None,
) -> IngestResult:
    """Ingest ``src`` into ``store`` as ``dataset``; see the module docstring."""
    src, store = Path(src), Path(store)
    if not src.is_dir():
        raise MbcError(f"source folder not found: {src}")
    if store.resolve().is_relative_to(src.resolve()):
        raise MbcError("the store must not lie inside the source folder")
    manifest = get_manifest(dataset, manifest_dir)
    quarantine_root = (
        Path(quarantine) if quarantine else store.with_name(store.name + ".quarantine")
    )
    q = Quarantine(quarantine_root, manifest.name)
    result = IngestResult(dataset=manifest.name, store=store, quarantine_dir=q.run_dir)
    if deid_key_file is None:
        return _ingest_tree(src, store, manifest, q, result, progress)
    from ..deid.keys import DeidKey
    from ..deid.tree import deid_tree

    key = DeidKey.from_file(deid_key_file)
    store.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".mbc-deid-", dir=store.parent))
    try:
        report = deid_tree(src, work / "out", key, progress=progress)
        for entry in report.refused:
            rel = entry["path"] if isinstance(entry, dict) else entry.path
            reason = entry["reason"] if isinstance(entry, dict) else entry.reason
            q.put(src / rel, rel, f"refused by de-identification: {reason}")
            result.seen += 1
            result.quarantined += 1
            result.reasons["refused by de-identification"] += 1
        return _ingest_tree(work / "out", store, manifest, q, result, progress, from_deid=src)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ingest_tree(
    src: Path,
    store: Path,
    manifest: Manifest,
    q: Quarantine,
    result: IngestResult,
    progress: bool,
    from_deid: Path | None = None,
) -> IngestResult:
    """Gate, convert and publish the files under ``src`` (``from_deid``: the original SRC)."""
    files = scan_tree(src, manifest.label_file)
    if from_deid:  # the de-identifier's own report is not part of the input
        files = [f for f in files if f.kind != "report"]
    result.seen += len(files)

    # Pass 1: read headers, run the PHI gate on everything before anything is published.
    headers: list[_Header] = []
    photos: list[SourceFile] = []
    metadata: list[SourceFile] = []
    pending: list[tuple[SourceFile, str]] = []
    identified: dict[str, list[str]] = {}
    for f in progress_bar(files, progress, desc="PHI gate", unit="file"):
        findings: list[str] = []
        if f.kind == "dicom":
            try:
                ds = _read_header(f.path)
            except Exception as exc:  # noqa: BLE001 - any read failure quarantines the file
                pending.append((f, f"unreadable DICOM: {_one_line(exc)}"))
                continue
            findings = phi_gate.check_dicom_dataset(ds)
            headers.append(_Header(f, ds))
        elif f.kind in ("jpeg", "png"):
            data = f.path.read_bytes()
            check = phi_gate.check_jpeg if f.kind == "jpeg" else phi_gate.check_png
            findings = check(data)
            photos.append(f)
        elif f.kind == "labels":
            findings = phi_gate.check_labels_csv(f.path.read_bytes(), manifest)
            metadata.append(f)
        elif f.kind == "mask":
            findings = phi_gate.check_mask_npz(f.path.read_bytes())
            metadata.append(f)
        elif f.kind == "report":
            metadata.append(f)
        else:
            pending.append((f, "unsupported file type"))
        not_phi = [x for x in findings if x.startswith(_NOT_PHI)]
        phi = [x for x in findings if not x.startswith(_NOT_PHI)]
        if phi:
            identified[f.rel] = phi
        elif not_phi:
            pending.append((f, not_phi[0]))
            headers = [h for h in headers if h.file is not f]
            photos = [p for p in photos if p is not f]
            metadata = [m for m in metadata if m is not f]
    if identified:
        detail = q.write_refusal(identified)
        first, reasons = next(iter(identified.items()))
        raise RefusedError(
            f"refused {src}: {len(identified)} of {len(files)} files carry identifying data "
            f"(e.g. {first}: {reasons[0]}); nothing was ingested. De-identify first with "
            f"'mbc deid' or pass --deid-key-file (details: {detail})"
        )

    with StoreWriter(store, manifest) as writer:
        run = _Run(manifest, writer, q, result, progress)
        for f, reason in pending:
            run.refuse(f, reason)
        labels_by_key: dict[str, dict[str, Any]] = {}
        for f in metadata:
            if f.kind == "labels":
                labels_by_key = _load_labels(run, f) or {}
        if manifest.modality == "ct":
            _ingest_ct(
                run, headers, photos, [m for m in metadata if m.kind == "mask"], labels_by_key
            )
        elif manifest.modality == "fundus":
            _ingest_fundus(run, headers, photos, labels_by_key)
        else:
            _ingest_generic(run, headers, photos)
        for f in metadata:  # label tables, masks and reports not yet counted with a case
            if f.rel in run.counted:
                continue
            if run.new_case:
                result.published += 1
            else:
                result.duplicate += 1
        write_catalog(store, manifest)
    return result


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# -- per modality -------------------------------------------------------------------------
def _ingest_fundus(
    run: _Run, headers: list[_Header], photos: list[SourceFile], labels: dict[str, dict[str, Any]]
) -> None:
    for h in headers:
        run.refuse(h.file, "DICOM files are not accepted by a fundus photograph dataset")
    for f in progress_bar(photos, run.progress, desc="fundus", unit="image"):
        row = labels.get(f.rel)
        if row is None or not row.get("__patient"):
            run.refuse(f, "no row for this image in the label table")
            continue
        try:
            image = convert.photo_rgb(f.path.read_bytes())
        except convert.ConversionError as exc:
            run.refuse(f, str(exc))
            continue
        case = CaseData(
            case_id=convert.case_id("fu", run.manifest.name + ":" + _digest(image)),
            kind="fundus",
            image=image,
            dims=("c", "y", "x"),
            spacing=(1.0, 1.0, 1.0),
            unit=None,
            attrs={
                "modality": "fundus",
                "patient": row["__patient"],
                "labels": {k: v for k, v in row.items() if not k.startswith("__")},
                "photometric": "RGB",
            },
        )
        run.publish(case, [f])


def _digest(array: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _ingest_generic(run: _Run, headers: list[_Header], photos: list[SourceFile]) -> None:
    for f in photos:
        run.refuse(f, "photographs are not accepted by a DICOM dataset")
    for h in progress_bar(headers, run.progress, desc="images", unit="file"):
        try:
            ds = pydicom.dcmread(h.file.path)
            img = convert.generic_image(ds)
        except convert.ConversionError as exc:
            run.refuse(h.file, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - any read failure quarantines the file
            run.refuse(h.file, f"unreadable DICOM: {_one_line(exc)}")
            continue
        sop = str(ds.get("SOPInstanceUID", ""))
        if not sop:
            run.refuse(h.file, "no SOP Instance UID")
            continue
        case = CaseData(
            case_id=convert.case_id("dc", sop),
            kind="generic",
            image=img.image,
            dims=img.dims,
            spacing=img.spacing,
            unit=img.unit,
            attrs=_dicom_attrs(ds) | {"value_units": img.value_units},
        )
        run.publish(case, [h.file])


def _dicom_attrs(ds: Dataset) -> dict[str, Any]:
    return {
        "modality": str(ds.get("Modality", "")) or None,
        "patient": str(ds.get("PatientID", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")) or None,
        "series_uid": str(ds.get("SeriesInstanceUID", "")) or None,
        "sop_class": str(ds.get("SOPClassUID", "")) or None,
    }


def _ingest_ct(
    run: _Run,
    headers: list[_Header],
    photos: list[SourceFile],
    masks: list[SourceFile],
    labels: dict[str, dict[str, Any]],
) -> None:
    for f in photos:
        run.refuse(f, "photographs are not accepted by a CT dataset")
    series: dict[str, list[_Header]] = defaultdict(list)
    for h in headers:
        sop_class = str(h.ds.get("SOPClassUID", ""))
        modality = str(h.ds.get("Modality", ""))
        if sop_class != convert.CT_IMAGE_STORAGE or modality != "CT":
            run.refuse(
                h.file,
                f"not a CT image (modality {modality or 'unknown'}); "
                f"dataset {run.manifest.name} takes CT series only",
            )
            continue
        uid = str(h.ds.get("SeriesInstanceUID", ""))
        if not uid:
            run.refuse(h.file, "no Series Instance UID")
            continue
        series[uid].append(h)
    mask_index: dict[frozenset[str], tuple[SourceFile, np.ndarray, list[str]]] = {}
    for f in masks:
        with np.load(f.path, allow_pickle=False) as npz:
            uids = [str(u) for u in npz["sop_instance_uids"]]
            mask_index[frozenset(uids)] = (f, npz["labels"], uids)
    used_masks: set[str] = set()
    classes = set(run.manifest.segmentation_classes)
    for uid, members in progress_bar(series.items(), run.progress, desc="CT series", unit="series"):
        files = [m.file for m in members]
        try:
            vol = convert.ct_volume(
                [m.ds for m in members], lambda i, m=members: pydicom.dcmread(m[i].file.path)
            )
        except convert.ConversionError as exc:
            for f in files:
                run.refuse(f, f"inconsistent series: {exc}")
            continue
        mask = None
        entry = mask_index.get(frozenset(vol.sop_uids))
        if entry is not None:
            mf, mlabels, muids = entry
            used_masks.add(mf.rel)
            order = {u: i for i, u in enumerate(muids)}
            candidate = mlabels[[order[u] for u in vol.sop_uids]]
            if candidate.shape != vol.image.shape:
                run.refuse(
                    mf, f"mask shape {candidate.shape} does not match series {vol.image.shape}"
                )
            elif not set(np.unique(candidate).tolist()) <= classes:
                run.refuse(mf, "mask holds values outside the manifest's classes")
            else:
                mask = candidate.astype(np.uint8)
                files = [*files, mf]
        first = members[0].ds
        patient = str(first.get("PatientID", ""))
        row = labels.get(patient, {})
        attrs = _dicom_attrs(first) | {
            "labels": {k: row.get(k) for k in run.manifest.label_columns},
            "value_units": "HU",
        }
        if mask is not None:
            attrs["label_stats"] = label_stats(mask, vol.spacing, run.manifest)
        case = CaseData(
            case_id=convert.case_id("ct", uid),
            kind="ct-volume",
            image=vol.image,
            dims=("z", "y", "x"),
            spacing=vol.spacing,
            unit="millimeter",
            attrs=attrs,
            origin=vol.origin,
            direction=vol.direction,
            labels=mask,
        )
        run.publish(case, files)
    for f in masks:
        if f.rel not in used_masks:
            run.refuse(f, "no series in this input matches the mask's SOP Instance UIDs")
