"""Per-file results and the run report (``deid-report.json`` / ``deid-report.txt``).

Nothing here ever holds an attribute value: reasons are categories plus sanitised
error texts, paths are relative to the source folder.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import describe_error, one_line

REPORT_JSON = "deid-report.json"
REPORT_TEXT = "deid-report.txt"
DEIDENTIFIED = "deidentified"
REFUSED = "refused"
KINDS = ("dicom", "jpeg", "png", "nifti", "dataset-json", "labels", "mask", "other")


@dataclass(slots=True)
class ActionCounts:
    """How many elements each kind of action touched in one file (or a whole run)."""

    removed: int = 0
    emptied: int = 0
    replaced: int = 0
    uids_remapped: int = 0
    dates_shifted: int = 0
    cleaned: int = 0
    private_removed: int = 0

    def add(self, other: ActionCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class FileResult:
    """Outcome for one input file."""

    path: str
    kind: str
    status: str
    reason: str | None = None
    output: str | None = None
    actions: ActionCounts = field(default_factory=ActionCounts)

    @classmethod
    def refused(cls, path: str, kind: str, reason: str) -> FileResult:
        return cls(path=path, kind=kind, status=REFUSED, reason=one_line(reason))

    @property
    def ok(self) -> bool:
        return self.status == DEIDENTIFIED

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
            "output": self.output,
            "actions": self.actions.as_dict(),
        }


def reason_group(reason: str | None) -> str:
    """The category of a reason: the text before the first ':'."""
    return (reason or "").split(":", 1)[0].strip()


@dataclass
class DeidReport:
    """All file results of one ``deid_tree`` run, and what was applied."""

    out: Path
    files: list[FileResult] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)

    @property
    def refused(self) -> list[FileResult]:
        return [f for f in self.files if f.status == REFUSED]

    @property
    def deidentified(self) -> list[FileResult]:
        return [f for f in self.files if f.status == DEIDENTIFIED]

    def totals(self) -> dict[str, Any]:
        actions = ActionCounts()
        for f in self.files:
            actions.add(f.actions)
        return {
            "files": len(self.files),
            "deidentified": len(self.deidentified),
            "refused": len(self.refused),
            "by_kind": dict(sorted(Counter(f.kind for f in self.files).items())),
            "refused_by_reason": dict(
                Counter(reason_group(f.reason) for f in self.refused).most_common()
            ),
            "actions": actions.as_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": "mbc deid",
            "profile": self.profile,
            "totals": self.totals(),
            "files": [f.as_dict() for f in self.files],
        }

    def text(self) -> str:
        totals = self.totals()
        lines = [
            "mbc deid report",
            f"profile: {self.profile.get('name', '')}",
            f"options: {', '.join(self.profile.get('options', []))}",
            f"files seen: {totals['files']}",
            f"de-identified: {totals['deidentified']}",
            f"refused: {totals['refused']}",
            "actions: " + ", ".join(f"{k} {v}" for k, v in totals["actions"].items()),
        ]
        if self.refused:
            lines += ["", "refused files:"]
            lines += [f"  {f.path}: {f.reason}" for f in self.refused]
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        """Write both report files into the output folder."""
        (self.out / REPORT_JSON).write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        (self.out / REPORT_TEXT).write_text(self.text())

    def summary(self) -> str:
        """A few lines for the terminal."""
        totals = self.totals()
        lines = [
            f"files seen: {totals['files']}",
            f"de-identified: {totals['deidentified']}",
            f"refused: {totals['refused']}",
        ]
        lines += [f"  {n} x {reason}" for reason, n in totals["refused_by_reason"].items()]
        lines.append(f"output: {self.out} (report: {REPORT_TEXT}, {REPORT_JSON})")
        return "\n".join(lines)


__all__ = [
    "DEIDENTIFIED",
    "KINDS",
    "REFUSED",
    "REPORT_JSON",
    "REPORT_TEXT",
    "ActionCounts",
    "DeidReport",
    "FileResult",
    "describe_error",
    "one_line",
    "reason_group",
]
