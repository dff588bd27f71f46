"""Dataset manifests (``datasets/*.yaml``): modality, label schema, access group, deid options."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import MbcError

MODALITIES = ("fundus", "ct", "dicom")
DEID_OPTIONS = (
    "retain_longitudinal_modified_dates",
    "retain_patient_characteristics",
    "clean_descriptors",
)
LABEL_DTYPES = {"str": str, "int": int, "float": float}
#: What a label table row names: an image by its path in the dataset folder, a patient, a
#: NIfTI case (by its key or path), or an image by its file name (in any folder).
LABEL_KEYS = ("path", "patient_id", "case", "image")
#: Where labels come from: a table in the dataset folder, or the names of an image's folders.
LABEL_SOURCES = ("table", "folder")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def default_manifest_dir() -> Path:
    """``$MBC_DATASETS_DIR``, else the ``datasets/`` folder beside the package."""
    env = os.environ.get("MBC_DATASETS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "datasets"


@dataclass(frozen=True)
class LabelColumn:
    name: str
    dtype: str
    values: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    description: str = ""
    source: str | None = None  # the table's column this one is read from (default: name)
    mapping: dict[str, Any] | None = None  # the table's values to this column's values

    @property
    def table_column(self) -> str:
        return self.source or self.name

    def convert(self, cell: str) -> Any:
        """The typed value of a table cell (mapped first, when the manifest maps values);
        None for a blank cell; ValueError naming the problem, never the cell."""
        raw = cell.strip()
        if raw == "":
            return None
        if self.mapping is not None:
            if raw not in self.mapping:
                raise ValueError(
                    f"column {self.table_column!r}: value not one of {sorted(self.mapping)}"
                )
            raw = str(self.mapping[raw])
        if problem := self.check(raw):
            raise ValueError(problem)
        return LABEL_DTYPES[self.dtype](raw)

    def from_folders(self, folders: list[str]) -> Any:
        """The value the innermost folder that ``map`` names gives (``labels.from: folder``);
        None when no folder of the path is named in the mapping."""
        assert self.mapping is not None
        for name in reversed(folders):
            if name in self.mapping:
                return LABEL_DTYPES[self.dtype](self.mapping[name])
        return None

    def check(self, value: Any) -> str | None:
        """Return a problem description, or None if ``value`` fits this column."""
        try:
            typed = LABEL_DTYPES[self.dtype](value)
        except (TypeError, ValueError):
            return f"column {self.name!r}: {value!r} is not {self.dtype}"
        if isinstance(typed, float) and not math.isfinite(typed):
            return f"column {self.name!r}: {value!r} is not a finite number"
        if self.values is not None and typed not in self.values:
            return f"column {self.name!r}: {value!r} not one of {list(self.values)}"
        if self.min is not None and typed < self.min:
            return f"column {self.name!r}: {value!r} below {self.min}"
        if self.max is not None and typed > self.max:
            return f"column {self.name!r}: {value!r} above {self.max}"
        return None


@lru_cache(maxsize=64)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A layout pattern as a regular expression over paths inside the dataset folder:
    ``**/`` any folders, ``*`` any characters but ``/``, ``{case}`` the case key (compiled
    once per pattern: ingest asks it for every file of the input)."""
    if pattern.count("{case}") != 1:
        raise ValueError("must hold {case} exactly once")
    out = ""
    rest = pattern
    while rest:
        if rest.startswith("**/"):
            out, rest = out + "(?:[^/]+/)*", rest[3:]
        elif rest.startswith("{case}"):
            out, rest = out + "(?P<case>[^/]+?)", rest[6:]
        elif rest[0] == "*":
            out, rest = out + "[^/]*", rest[1:]
        else:
            out, rest = out + re.escape(rest[0]), rest[1:]
    return re.compile(out)


@dataclass(frozen=True)
class SourceLayout:
    """Where a NIfTI dataset keeps its volumes and masks, as path patterns (see
    :func:`_pattern_regex`); a volume and a mask with the same ``{case}`` belong together."""

    volumes: str
    masks: str | None = None

    def volume_case(self, rel: str) -> str | None:
        """The case key of a volume's path, or None if the path is not a volume's."""
        match = _pattern_regex(self.volumes).fullmatch(rel)
        return match["case"] if match else None

    def mask_case(self, rel: str) -> str | None:
        if self.masks is None:
            return None
        match = _pattern_regex(self.masks).fullmatch(rel)
        return match["case"] if match else None

    def case_in(self, cell: str) -> str | None:
        """The case key a label table cell names: the cell is the case key, or a path whose
        end is a volume's path (absolute, or relative to another folder)."""
        cell = cell.strip().replace("\\", "/")
        regex = _pattern_regex(self.volumes)
        parts = cell.split("/")
        for start in range(len(parts)):
            match = regex.fullmatch("/".join(parts[start:]))
            if match:
                return match["case"]
        return cell if cell and "/" not in cell else None


@dataclass(frozen=True)
class Manifest:
    """One dataset's manifest, validated."""

    name: str
    title: str
    modality: str
    group: str
    description: str = ""
    label_file: str | None = None
    label_key: str | None = None
    label_key_column: str | None = None  # the table's column that holds the key
    label_drop: tuple[str, ...] = ()  # table columns mbc deid removes (never let through)
    #: the table's patient-id column (pseudonymised by mbc deid); None: the dataset has no
    #: patient ids and each image or volume is its own patient
    label_patient: str | None = "patient_id"
    label_columns: dict[str, LabelColumn] = field(default_factory=dict)
    segmentation: dict[str, Any] | None = None
    split: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15}
    )
    #: the label column the patient-level split is stratified by (None: not stratified)
    split_stratify: str | None = None
    deid_options: tuple[str, ...] = DEID_OPTIONS
    source: SourceLayout | None = None  # NIfTI datasets: where volumes and masks lie
    label_from: str = "table"  # "folder": labels from folder names (see LABEL_SOURCES)
    #: fundus datasets: the path pattern of mask images (``{case}`` = the photograph's stem)
    photo_masks: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def segmentation_classes(self) -> dict[int, str]:
        if not self.segmentation:
            return {}
        return {int(k): v["name"] for k, v in self.segmentation["classes"].items()}

    @property
    def volumes(self) -> dict[str, tuple[int, ...]]:
        """Catalog volume columns (``<name>_ml``) and the mask values each one adds up."""
        seg = self.segmentation or {}
        return {
            name: tuple(int(v) for v in values) for name, values in seg.get("volumes", {}).items()
        }

    @property
    def involvement(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(lesion values, region values) of ``involvement_pct``, if the manifest asks for it."""
        spec = (self.segmentation or {}).get("involvement")
        if not spec:
            return None
        return tuple(int(v) for v in spec["lesions"]), tuple(int(v) for v in spec["region"])

    @property
    def label_stat_names(self) -> tuple[str, ...]:
        """The catalog columns computed from a case's mask, in order."""
        names = [f"{name}_ml" for name in self.volumes]
        return (*names, "involvement_pct") if self.involvement else tuple(names)

    @property
    def mask_values(self) -> dict[int, int] | None:
        """``segmentation.map``: the values a mask file holds -> the manifest's classes."""
        mapping = (self.segmentation or {}).get("map")
        return {int(k): int(v) for k, v in mapping.items()} if mapping else None

    def photo_mask_case(self, rel: str) -> str | None:
        """The photograph stem a fundus mask's path names, or None if it is not a mask's."""
        if self.photo_masks is None:
            return None
        match = _pattern_regex(self.photo_masks).fullmatch(rel)
        return match["case"] if match else None

    def folder_labels(self, rel: str) -> dict[str, Any] | str:
        """The label values an image's folder names give (``labels.from: folder``), or a
        problem naming the first column that no folder of ``rel`` names."""
        folders = rel.split("/")[:-1]
        values: dict[str, Any] = {}
        for name, column in self.label_columns.items():
            value = column.from_folders(folders)
            if value is None:
                return f"no folder of this image's path names its {name!r} label"
            values[name] = value
        return values

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON-able data (stored in the dataset's group attributes)."""
        return dict(self.raw)


def image_key(name: str) -> str:
    """The key a table gives an image by (``labels.key: image``): its file name without
    folder and extension, so ``0/TRAIN000123.jpg``, ``TRAIN000123`` and ``TRAIN000123.JPG``
    name the same image."""
    base = name.strip().replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _fail(source: str, msg: str) -> MbcError:
    return MbcError(f"invalid dataset manifest {source}: {msg}")


def parse_manifest(data: dict[str, Any], source: str = "<manifest>") -> Manifest:
    """Validate a manifest mapping and return it as a :class:`Manifest`."""
    if not isinstance(data, dict):
        raise _fail(source, "top level must be a mapping")
    for key in ("name", "title", "modality", "group"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _fail(source, f"'{key}' is required and must be a string")
    if not _NAME_RE.match(data["name"]):
        raise _fail(source, f"name {data['name']!r} must be lower-case letters, digits and '-'")
    if data["modality"] not in MODALITIES:
        raise _fail(source, f"modality must be one of {list(MODALITIES)}")
    labels = data.get("labels")
    label_from = _label_source(labels, source)
    columns = _label_columns(labels, source, label_from) if labels is not None else {}
    if labels is not None and label_from == "table":
        _check_table_labels(labels, data, source)
    seg = data.get("segmentation")
    if seg is not None:
        classes = seg.get("classes") if isinstance(seg, dict) else None
        if not isinstance(classes, dict) or 0 not in {int(k) for k in classes}:
            raise _fail(source, "segmentation.classes must map integers (0 = background) to names")
        _check_volumes(seg, {int(k) for k in classes}, source)
        _check_mask_map(seg, {int(k) for k in classes}, source)
    split = dict(data.get("split") or {"train": 0.7, "val": 0.15, "test": 0.15})
    stratify = split.pop("stratify", None)
    if set(split) != {"train", "val", "test"} or abs(sum(split.values()) - 1.0) > 1e-6:
        raise _fail(source, "split must give train, val and test fractions summing to 1")
    if stratify is not None:
        column = columns.get(str(stratify))
        if column is None or (column.values is None and column.dtype != "int"):
            raise _fail(
                source,
                f"split.stratify names {stratify!r}, which is not a label column with listed "
                "values or whole numbers",
            )
    if data["modality"] == "fundus":
        layout, photo_masks = None, _photo_masks(data.get("source"), seg, source)
    else:
        layout, photo_masks = _source_layout(data.get("source"), data["modality"], source), None
    options = tuple((data.get("deid") or {}).get("options", DEID_OPTIONS))
    unknown = set(options) - set(DEID_OPTIONS)
    if unknown:
        raise _fail(source, f"unknown deid options {sorted(unknown)}")
    return Manifest(
        name=data["name"],
        title=data["title"],
        modality=data["modality"],
        group=data["group"],
        description=str(data.get("description", "")).strip(),
        label_file=labels.get("file") if labels else None,
        label_key=labels.get("key") if labels else None,
        label_key_column=(labels.get("key_column") or labels.get("key")) if labels else None,
        label_drop=tuple(str(c) for c in (labels.get("drop") or ())) if labels else (),
        label_patient=_patient_column(labels) if labels else "patient_id",
        label_columns=columns,
        segmentation=seg,
        split={k: float(v) for k, v in split.items()},
        split_stratify=str(stratify) if stratify is not None else None,
        deid_options=options,
        source=layout,
        label_from=label_from,
        photo_masks=photo_masks,
        raw=data,
    )


def _label_source(labels: Any, source: str) -> str:
    """``labels.from``: table (the default) or folder."""
    if labels is None:
        return "table"
    if not isinstance(labels, dict):
        raise _fail(source, "'labels' must be a mapping")
    label_from = labels.get("from", "table")
    if label_from not in LABEL_SOURCES:
        raise _fail(source, f"labels.from must be one of {list(LABEL_SOURCES)}")
    if label_from == "folder":
        extra = sorted(set(labels) & {"file", "key", "key_column", "drop"})
        if extra:
            raise _fail(source, f"labels.from folder takes no table keys {extra}")
        if _patient_column(labels) is not None:
            raise _fail(source, "labels.from folder needs labels.patient: none (no table ids)")
        if not labels.get("columns"):
            raise _fail(source, "labels.from folder needs columns, each with a folder 'map'")
    return str(label_from)


def _check_table_labels(labels: dict[str, Any], data: dict[str, Any], source: str) -> None:
    """The keys of a label table section (``labels.from: table``)."""
    if "file" not in labels or "key" not in labels:
        raise _fail(source, "'labels' needs 'file', 'key' and 'columns'")
    if labels["key"] not in LABEL_KEYS:
        raise _fail(source, f"labels.key must be one of {list(LABEL_KEYS)}")
    patient = _patient_column(labels)
    if patient is not None and not (isinstance(patient, str) and patient):
        raise _fail(source, "labels.patient must be a column name or none")
    if labels["key"] == "patient_id" and patient is None:
        raise _fail(source, "labels.key patient_id needs a patient column")
    if labels["key"] == "case" and not (data.get("source") or {}).get("volumes"):
        raise _fail(source, "labels.key 'case' needs source.volumes (where the cases are)")


def _label_columns(labels: dict[str, Any], source: str, label_from: str) -> dict[str, LabelColumn]:
    columns: dict[str, LabelColumn] = {}
    for col, spec in (labels.get("columns") or {}).items():
        if not isinstance(spec, dict) or spec.get("dtype") not in LABEL_DTYPES:
            raise _fail(source, f"label column {col!r} needs dtype one of {list(LABEL_DTYPES)}")
        values = spec.get("values")
        mapping = spec.get("map")
        if mapping is not None and not isinstance(mapping, dict):
            raise _fail(source, f"label column {col!r}: 'map' must map table values to values")
        if label_from == "folder" and (not mapping or "from" in spec):
            raise _fail(source, f"label column {col!r}: 'map' folder names to values, no 'from'")
        columns[col] = LabelColumn(
            name=col,
            dtype=spec["dtype"],
            values=tuple(values) if values is not None else None,
            min=spec.get("min"),
            max=spec.get("max"),
            description=spec.get("description", ""),
            source=spec.get("from"),
            mapping={str(k): v for k, v in mapping.items()} if mapping else None,
        )
        if mapping:
            bad = [v for v in mapping.values() if columns[col].check(v) is not None]
            if bad:
                raise _fail(source, f"label column {col!r}: 'map' gives invalid values {bad}")
    return columns


def _check_mask_map(seg: dict[str, Any], classes: set[int], source: str) -> None:
    """``segmentation.map``: mask file values (0-255) to the manifest's classes."""
    mapping = seg.get("map")
    if mapping is None:
        return
    try:
        pairs = {int(k): int(v) for k, v in mapping.items()}
    except (AttributeError, TypeError, ValueError):
        pairs = {-1: -1}
    if not pairs or not all(0 <= k <= 255 and v in classes for k, v in pairs.items()):
        raise _fail(source, "segmentation.map must map mask values 0-255 to the manifest's classes")


def _photo_masks(spec: Any, seg: dict[str, Any] | None, source: str) -> str | None:
    """A fundus dataset's ``source``: only ``masks``, a path pattern with ``{case}`` (the
    photograph's file name without extension); masks need segmentation classes."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) != {"masks"} or not isinstance(spec["masks"], str):
        raise _fail(source, "a fundus dataset's source takes only 'masks': a path pattern")
    try:
        _pattern_regex(spec["masks"])
    except ValueError as exc:
        raise _fail(source, f"source.masks {spec['masks']!r} {exc}") from None
    if not seg:
        raise _fail(source, "source.masks needs segmentation classes")
    return str(spec["masks"])


def _patient_column(labels: dict[str, Any]) -> Any:
    """``labels.patient``: a column (default ``patient_id``), or none (YAML null or 'none')."""
    patient = labels.get("patient", "patient_id")
    return None if patient is None or patient == "none" else patient


def _source_layout(spec: Any, modality: str, source: str) -> SourceLayout | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("volumes"), str):
        raise _fail(source, "source needs 'volumes': a path pattern with {case}")
    if modality != "ct":
        raise _fail(source, "source (NIfTI volumes) is for modality ct")
    unknown = set(spec) - {"volumes", "masks"}
    if unknown:
        raise _fail(source, f"unknown source keys {sorted(unknown)}")
    for key in ("volumes", "masks"):
        if key in spec:
            try:
                _pattern_regex(str(spec[key]))
            except ValueError as exc:
                raise _fail(source, f"source.{key} {spec[key]!r} {exc}") from None
    return SourceLayout(volumes=spec["volumes"], masks=spec.get("masks"))


def _check_volumes(seg: dict[str, Any], classes: set[int], source: str) -> None:
    """``volumes`` and ``involvement`` name only classes the manifest defines."""
    volumes = seg.get("volumes") or {}
    if not isinstance(volumes, dict):
        raise _fail(source, "segmentation.volumes must map column names to lists of classes")
    groups = [(f"volumes.{k}", v) for k, v in volumes.items()]
    involvement = seg.get("involvement")
    if involvement is not None:
        if not isinstance(involvement, dict) or set(involvement) != {"lesions", "region"}:
            raise _fail(source, "segmentation.involvement needs 'lesions' and 'region' lists")
        groups += [(f"involvement.{k}", v) for k, v in involvement.items()]
    for where, values in groups:
        if not re.fullmatch(r"[a-z0-9_.]+", where) or not isinstance(values, list) or not values:
            raise _fail(source, f"segmentation.{where} must be a non-empty list of classes")
        unknown = {int(v) for v in values} - classes
        if unknown or 0 in {int(v) for v in values}:
            raise _fail(source, f"segmentation.{where} names classes not in the manifest")


def describe_manifest(manifest: Manifest) -> str:
    """What a manifest makes ingest do, in a few lines (``mbc datasets validate``)."""
    lines = [f"  dataset {manifest.name}: {manifest.title} ({manifest.modality})"]
    lines.append(f"  readers: members of hub group {manifest.group!r}")
    if manifest.source is not None:
        lines.append(f"  volumes: {manifest.source.volumes}")
        if manifest.source.masks:
            lines.append(f"  masks:   {manifest.source.masks}")
    if manifest.photo_masks:
        lines.append(f"  masks:   {manifest.photo_masks} (paired with photographs by name)")
    if manifest.label_from == "folder":
        lines.append("  labels: from folder names")
        for column in manifest.label_columns.values():
            lines.append(f"    {column.name} ({column.dtype}) mapped {column.mapping}")
    if manifest.label_file:
        key = manifest.label_key_column
        how = f"rows name their {manifest.label_key} in column {key!r}"
        lines.append(f"  label table: {manifest.label_file} ({how})")
        for column in manifest.label_columns.values():
            src = f" <- {column.source!r}" if column.source else ""
            mapped = f" mapped {column.mapping}" if column.mapping else ""
            lines.append(f"    {column.name} ({column.dtype}){src}{mapped}")
    if manifest.segmentation_classes:
        classes = ", ".join(f"{k}={v}" for k, v in manifest.segmentation_classes.items())
        lines.append(f"  segmentation classes: {classes}")
    lines.append(f"  de-identification options: {', '.join(manifest.deid_options) or 'none'}")
    return "\n".join(lines)


def load_manifest(path: Path) -> Manifest:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise MbcError(f"cannot read dataset manifest {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise MbcError(f"dataset manifest {path} is not valid YAML{line}: {problem}") from None
    manifest = parse_manifest(data, str(path))
    if manifest.name != Path(path).stem:
        raise _fail(str(path), f"name {manifest.name!r} must match the file name")
    return manifest


def load_manifests(directory: Path | None = None) -> dict[str, Manifest]:
    """All manifests in ``directory`` (default :func:`default_manifest_dir`), by name."""
    directory = Path(directory) if directory else default_manifest_dir()
    if not directory.is_dir():
        raise MbcError(f"dataset manifest folder not found: {directory}")
    return {m.name: m for m in (load_manifest(p) for p in sorted(directory.glob("*.yaml")))}


def get_manifest(name: str, directory: Path | None = None) -> Manifest:
    manifests = load_manifests(directory)
    if name not in manifests:
        known = ", ".join(sorted(manifests)) or "none"
        raise MbcError(f"unknown dataset {name!r} (known: {known})")
    return manifests[name]
