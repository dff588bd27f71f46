"""Lesion labels that lie beside DICOM CT series rather than in the manifest's layout.

DICOM-SEG and RTSTRUCT objects are matched to the series they reference; NIfTI files to
the series in their folder (or the folder above) whose grid they lie on. Placing a label on
its series' grid is :mod:`.series_labels`' job; this module decides which label belongs to
which series, takes the first that fits and quarantines every other with its reason.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from ..errors import describe_error
from ..manifests import Manifest
from ..sources.walk import UnreadableFile
from . import convert, series_labels

if TYPE_CHECKING:
    from .pipeline import SourceFile, _Dicom, _Run


def in_layout(manifest: Manifest, f: SourceFile) -> bool:
    """Whether ``f`` is a volume or mask of the manifest's source layout (not a label beside
    a DICOM series)."""
    layout = manifest.source
    return layout is not None and (
        layout.volume_case(f.rel) is not None or layout.mask_case(f.rel) is not None
    )


class BesideLabels:
    """Labels beside the CT series (SEG, RTSTRUCT by the series they reference, NIfTI by
    folder and geometry), placed on a series' grid by :mod:`.series_labels`."""

    def __init__(self, run: _Run, dicoms: list[_Dicom], niftis: list[SourceFile]) -> None:
        self.run = run
        self.by_series: dict[str, list[_Dicom]] = defaultdict(list)
        self.niftis = list(niftis)
        self.misfits: dict[str, list[str]] = defaultdict(list)  # NIfTI rel -> reasons
        for d in dicoms:
            try:
                uids = series_labels.referenced_series(d.file.read())
            except Exception as exc:  # noqa: BLE001 - a damaged object quarantines the label
                run.refuse(d.file, f"malformed label object: {describe_error(exc)}")
                continue
            if len(uids) != 1:
                run.refuse(d.file, f"label object references {len(uids)} series, not one")
                continue
            self.by_series[uids.pop()].append(d)

    def place(
        self, uid: str, members: list[_Dicom], vol: convert.Volume | None, taken: str | None
    ) -> tuple[np.ndarray | None, SourceFile | None]:
        """The first label of series ``uid`` that fits ``vol`` and its file; every other
        label of it is refused. ``vol`` None: the series was refused; ``taken``: the file
        that already labels it (an .npz mask)."""
        run, classes = self.run, self.run.manifest.segmentation_classes
        folders = {m.file.rel.rpartition("/")[0] for m in members}
        folders |= {f.rpartition("/")[0] for f in folders if f}
        niftis = [f for f in self.niftis if f.rel.rpartition("/")[0] in folders]
        found: tuple[np.ndarray | None, SourceFile | None] = (None, None)
        for d in self.by_series.pop(uid, []):
            if vol is None:
                run.refuse(d.file, "its series was refused")
            elif taken is not None:
                run.refuse(d.file, f"a second label for its series (labelled by {taken})")
            else:
                try:
                    read = (
                        series_labels.seg_on_grid
                        if d.sop_class == series_labels.SEG_STORAGE
                        else series_labels.rtstruct_on_grid
                    )
                    found, taken = (read(d.file.read(), vol, classes), d.file), d.file.rel
                except (series_labels.LabelRefused, UnreadableFile) as exc:
                    run.refuse(d.file, str(exc))
        for f in niftis if vol is not None else []:
            try:
                mask = series_labels.nifti_on_grid(f.read(), vol, classes, run.budget)
            except (series_labels.LabelRefused, UnreadableFile) as exc:
                self.misfits[f.rel].append(str(exc))
                continue
            self.niftis.remove(f)
            if taken is not None:
                run.refuse(f, f"a second label for its series (labelled by {taken})")
            else:
                found, taken = (mask, f), f.rel
        return found

    def finish(self) -> None:
        """Refuse the labels that found no series."""
        for labels in self.by_series.values():
            for d in labels:
                self.run.refuse(d.file, "no CT series in this input is the one it references")
        for f in self.niftis:
            if f.rel in self.run.counted:
                continue
            if self.misfits.get(f.rel):
                self.run.refuse(f, self.misfits[f.rel][0])
            elif self.run.manifest.source is None:
                self.run.refuse(
                    f,
                    f"NIfTI file beside no CT series, and the {self.run.manifest.name} manifest "
                    "has no source layout (source.volumes) to tell volumes from masks",
                )
            else:
                self.run.refuse(
                    f, "NIfTI file outside the manifest's layout (source.volumes, masks)"
                )


__all__ = ["BesideLabels", "in_layout"]
