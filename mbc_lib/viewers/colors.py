"""Fixed colours of the segmentation classes, as the ct-covid manifest defines them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.patches import Patch


@dataclass(frozen=True)
class LabelClass:
    """One segmentation class: its value in the mask, its name and its RGB colour (0-255)."""

    value: int
    name: str
    color: tuple[int, int, int]

    @property
    def rgb(self) -> tuple[float, float, float]:
        """The colour as matplotlib wants it (0-1 floats)."""
        r, g, b = self.color
        return (r / 255.0, g / 255.0, b / 255.0)


#: The ct-covid classes (datasets/ct-covid.yaml); background is never drawn.
CT_COVID_CLASSES: dict[int, LabelClass] = {
    1: LabelClass(1, "normal lung", (70, 130, 180)),
    2: LabelClass(2, "ground-glass opacity", (255, 215, 0)),
    3: LabelClass(3, "consolidation", (220, 20, 60)),
}


def classes_from_manifest(manifest: Any) -> dict[int, LabelClass]:
    """The non-background classes of a manifest (a ``Manifest`` or its segmentation mapping)."""
    seg = getattr(manifest, "segmentation", manifest)
    if not isinstance(seg, Mapping) or "classes" not in seg:
        raise ValueError("the manifest has no segmentation classes")
    out: dict[int, LabelClass] = {}
    for key, spec in seg["classes"].items():
        value = int(key)
        if value == 0:
            continue
        r, g, b = (int(c) for c in spec["color"])
        out[value] = LabelClass(value, str(spec["name"]), (r, g, b))
    return dict(sorted(out.items()))


def classes_from_labels(labels: Any) -> dict[int, LabelClass] | None:
    """The classes a stored label array carries (its NGFF ``image-label`` names and
    colours, which the store writes from the dataset's manifest), or None."""
    meta = getattr(labels, "attrs", {}).get("image-label") if labels is not None else None
    if not isinstance(meta, Mapping):
        return None
    names = {int(p["label-value"]): str(p["name"]) for p in meta.get("properties", [])}
    out: dict[int, LabelClass] = {}
    for color in meta.get("colors", []):
        value = int(color["label-value"])
        if value != 0 and value in names:
            r, g, b = (int(c) for c in color["rgba"][:3])
            out[value] = LabelClass(value, names[value], (r, g, b))
    return dict(sorted(out.items())) or None


def resolve_classes(classes: Any = None, labels: Any = None) -> dict[int, LabelClass]:
    """``classes`` as a class table: a manifest is read; None takes the classes the stored
    ``labels`` carry, else the ct-covid colours."""
    if classes is None:
        return classes_from_labels(labels) or dict(CT_COVID_CLASSES)
    if isinstance(classes, Mapping) and all(isinstance(v, LabelClass) for v in classes.values()):
        return {int(k): v for k, v in classes.items()}
    return classes_from_manifest(classes)


def label_rgba(
    labels: np.ndarray, classes: Mapping[int, LabelClass], opacity: float = 0.4
) -> np.ndarray:
    """An RGBA float image of ``labels``: class colours at ``opacity``, transparent elsewhere."""
    labels = np.asarray(labels)
    rgba = np.zeros((*labels.shape, 4), np.float32)
    for value, cls in classes.items():
        mask = labels == value
        rgba[mask, :3] = cls.rgb
        rgba[mask, 3] = opacity
    return rgba


def legend_handles(classes: Mapping[int, LabelClass]) -> list[Patch]:
    """Legend patches, one per class, in class order."""
    return [Patch(facecolor=c.rgb, edgecolor="none", label=c.name) for c in classes.values()]


def legend_html(classes: Mapping[int, LabelClass]) -> str:
    """The legend as an HTML line of colour swatches (for widget front ends)."""
    items = []
    for c in classes.values():
        swatch = (
            f'<span style="display:inline-block;width:12px;height:12px;'
            f'background:rgb{c.color};margin:0 4px 0 12px;vertical-align:middle"></span>'
        )
        items.append(f"{swatch}{c.name}")
    return "".join(items)


__all__ = [
    "CT_COVID_CLASSES",
    "LabelClass",
    "classes_from_manifest",
    "label_rgba",
    "legend_handles",
    "legend_html",
    "classes_from_labels",
    "resolve_classes",
]
