"""Viewers for notebooks: CT slices with label overlays and fundus galleries.

Each viewer returns an ipywidgets widget inside Jupyter and a static matplotlib Figure
elsewhere (or with ``static=True``); the ``render_*`` functions always return a Figure.
"""

from __future__ import annotations

from .colors import CT_COVID_CLASSES, LabelClass, classes_from_manifest
from .ct import WINDOWS, apply_window, ct_viewer, render_ct_comparison, render_ct_slice
from .frontend import widgets_available
from .fundus import fundus_gallery, render_fundus_gallery

__all__ = [
    "CT_COVID_CLASSES",
    "WINDOWS",
    "LabelClass",
    "apply_window",
    "classes_from_manifest",
    "ct_viewer",
    "fundus_gallery",
    "render_ct_comparison",
    "render_ct_slice",
    "render_fundus_gallery",
    "widgets_available",
]
