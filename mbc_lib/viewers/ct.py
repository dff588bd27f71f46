"""CT slice viewer: window presets, label overlay in fixed colours, axes in mm, orientation.

``ct_viewer`` gives an ipywidgets viewer in Jupyter and a static figure elsewhere;
``render_ct_slice`` and ``render_ct_comparison`` always return a matplotlib Figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .colors import LabelClass, label_rgba, legend_handles, legend_html, resolve_classes
from .frontend import figure_png, new_figure, use_widgets

#: Window presets as (width, level) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 40.0),
    "bone": (2000.0, 400.0),
}

Window = str | tuple[float, float]


def window_bounds(window: Window) -> tuple[float, float]:
    """The HU range (low, high) of a preset name or a (width, level) pair."""
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; presets: {', '.join(WINDOWS)}")
        width, level = WINDOWS[window]
    else:
        width, level = (float(v) for v in window)
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    return level - width / 2.0, level + width / 2.0


def apply_window(hu: np.ndarray, window: Window = "lung") -> np.ndarray:
    """Map HU to display grey levels in [0, 1]: 0 at the window's bottom, 1 at its top."""
    lo, hi = window_bounds(window)
    return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0.0, 1.0)


def _window_name(window: Window) -> str:
    if isinstance(window, str):
        width, level = WINDOWS[window]
        return f"{window} window (W{width:g} L{level:g})"
    width, level = window
    return f"window W{width:g} L{level:g}"


@dataclass
class CTVolume:
    """A CT volume (z, y, x) and its optional labels, read slice by slice, with mm axes."""

    image: Any
    labels: Any | None
    z_mm: np.ndarray
    y_mm: np.ndarray
    x_mm: np.ndarray
    unit: str
    direction: np.ndarray | None = None  # LPS unit vectors of z, y, x (None: unknown)

    @property
    def n_slices(self) -> int:
        return len(self.z_mm)

    def image_slice(self, k: int) -> np.ndarray:
        return np.asarray(_take(self.image, k))

    def label_slice(self, k: int) -> np.ndarray | None:
        return None if self.labels is None else np.asarray(_take(self.labels, k))

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """imshow extent (left, right, bottom, top) with pixel centres on the coordinates."""
        dx = _step(self.x_mm)
        dy = _step(self.y_mm)
        return (
            self.x_mm[0] - dx / 2,
            self.x_mm[-1] + dx / 2,
            self.y_mm[-1] + dy / 2,
            self.y_mm[0] - dy / 2,
        )

    def default_slice(self) -> int:
        """The slice with the most labelled voxels, else the middle one."""
        if self.labels is not None:
            counts = np.asarray((_values(self.labels) > 0).sum(axis=(1, 2)))
            if counts.max(initial=0) > 0:
                return int(np.argmax(counts))
        return self.n_slices // 2


def _step(coords: np.ndarray) -> float:
    return float(coords[1] - coords[0]) if len(coords) > 1 else 1.0


def _take(array: Any, k: int) -> Any:
    if hasattr(array, "isel"):
        return array.isel({array.dims[0]: k}).values
    return array[k]


def _values(array: Any) -> np.ndarray:
    return np.asarray(array.values if hasattr(array, "isel") else array)


def as_volume(
    image: Any,
    labels: Any | None = None,
    spacing: Sequence[float] | None = None,
    direction: Sequence[Sequence[float]] | None = None,
) -> CTVolume:
    """Wrap a (z, y, x) xarray DataArray (mm coordinates) or numpy array (``spacing`` in mm).

    ``direction`` (LPS unit vectors of z, y, x; a store DataArray carries it in its attrs)
    puts the patient's sides (R/L, A/P) on the edges of each slice.
    """
    if direction is None and hasattr(image, "attrs"):
        direction = image.attrs.get("direction")
    if hasattr(image, "isel") and hasattr(image, "dims"):
        if image.ndim == 2:
            image = image.expand_dims("z")
        if image.ndim != 3:
            raise ValueError(f"a CT volume has 3 dimensions (z, y, x), got {image.dims}")
        coords = []
        for i, dim in enumerate(image.dims):
            if dim in image.coords:
                coords.append(np.asarray(image.coords[dim].values, np.float64))
            else:
                coords.append(np.arange(image.shape[i], dtype=np.float64))
        units = {image.coords[d].attrs.get("units") for d in image.dims[1:] if d in image.coords}
        unit = "mm" if units & {"millimeter", "mm"} else "pixel"
    else:
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise ValueError(f"a CT volume has 3 dimensions (z, y, x), got shape {image.shape}")
        step = tuple(spacing) if spacing is not None else (1.0, 1.0, 1.0)
        coords = [
            np.arange(n, dtype=np.float64) * s for n, s in zip(image.shape, step, strict=True)
        ]
        unit = "mm" if spacing is not None else "pixel"
    if labels is not None:
        if not hasattr(labels, "isel"):
            labels = np.asarray(labels)
            if labels.ndim == 2:
                labels = labels[None]
        if tuple(labels.shape) != tuple(image.shape):
            raise ValueError(f"labels shape {tuple(labels.shape)} != image shape {image.shape}")
    rows = None if direction is None else np.asarray(direction, dtype=np.float64)
    if rows is not None and rows.shape != (3, 3):
        raise ValueError(f"direction must be three LPS vectors (z, y, x), got {rows.tolist()}")
    return CTVolume(image, labels, coords[0], coords[1], coords[2], unit, rows)


_SIDES = (("R", "L"), ("A", "P"), ("I", "S"))  # LPS axes: the letter at - and + ends


def side_letter(vector: Sequence[float]) -> str:
    """The patient side an LPS vector points to most (e.g. ``(1, 0, 0)`` -> ``"L"``)."""
    v = np.asarray(vector, dtype=np.float64)
    axis = int(np.argmax(np.abs(v)))
    return _SIDES[axis][int(v[axis] > 0)]


def _orientation_markers(ax: Axes, direction: np.ndarray) -> None:
    """Patient sides at the middle of each edge of an axial panel (y down, x right)."""
    y_dir, x_dir = direction[1], direction[2]
    style = {"transform": ax.transAxes, "color": "white", "fontsize": 10, "fontweight": "bold"}
    ax.text(0.02, 0.5, side_letter(-x_dir), ha="left", va="center", **style)
    ax.text(0.98, 0.5, side_letter(x_dir), ha="right", va="center", **style)
    ax.text(0.5, 0.98, side_letter(-y_dir), ha="center", va="top", **style)
    ax.text(0.5, 0.02, side_letter(y_dir), ha="center", va="bottom", **style)


def _outlines(
    ax: Axes, vol: CTVolume, labels: np.ndarray, classes: Mapping[int, LabelClass]
) -> None:
    """A thin outline of each class region: a lesion of a few voxels stays visible when the
    figure is shrunk, where a translucent fill alone fades into the lung."""
    for value, cls in classes.items():
        if value == 0 or not (labels == value).any():
            continue
        ax.contour(
            vol.x_mm,
            vol.y_mm,
            (labels == value).astype(np.float32),
            levels=[0.5],
            colors=[cls.rgb],
            linewidths=1.0,
        )


def _draw(
    ax: Axes,
    vol: CTVolume,
    k: int,
    window: Window,
    labels: np.ndarray | None,
    classes: Mapping[int, LabelClass],
    opacity: float,
    title: str | None,
) -> None:
    ax.imshow(
        apply_window(vol.image_slice(k), window),
        cmap="gray",
        vmin=0.0,
        vmax=1.0,
        extent=vol.extent,
        interpolation="nearest",
    )
    if labels is not None:
        ax.imshow(label_rgba(labels, classes, opacity), extent=vol.extent, interpolation="nearest")
        if min(labels.shape) > 1:
            _outlines(ax, vol, labels, classes)
    if vol.direction is not None:
        _orientation_markers(ax, vol.direction)
    ax.set_aspect("equal")
    ax.set_xlabel(f"x ({vol.unit})")
    ax.set_ylabel(f"y ({vol.unit})")
    ax.set_title(title if title is not None else _slice_title(vol, k), fontsize=9)


def _slice_title(vol: CTVolume, k: int) -> str:
    where = f"z = {vol.z_mm[k]:.1f} {vol.unit}" if vol.unit == "mm" else f"z = {k}"
    return f"slice {k + 1}/{vol.n_slices}, {where}"


def _resolve_z(vol: CTVolume, z: int | None, z_mm: float | None) -> int:
    if z_mm is not None:
        return int(np.argmin(np.abs(vol.z_mm - z_mm)))
    k = vol.default_slice() if z is None else int(z)
    if not 0 <= k < vol.n_slices:
        raise IndexError(f"slice {k} outside 0..{vol.n_slices - 1}")
    return k


def render_ct_slice(
    image: Any,
    labels: Any | None = None,
    z: int | None = None,
    *,
    z_mm: float | None = None,
    window: Window = "lung",
    overlay: bool = True,
    opacity: float = 0.4,
    classes: Any = None,
    spacing: Sequence[float] | None = None,
    direction: Sequence[Sequence[float]] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (6.0, 6.4),
) -> Figure:
    """One axial slice (index ``z`` or nearest to ``z_mm``) with the label overlay and legend."""
    vol = as_volume(image, labels, spacing, direction)
    table = resolve_classes(classes, labels)
    k = _resolve_z(vol, z, z_mm)
    fig = new_figure(figsize)
    ax = fig.add_subplot()
    shown = vol.label_slice(k) if overlay else None
    _draw(ax, vol, k, window, shown, table, opacity, title)
    if title is None:
        ax.set_title(f"{_slice_title(vol, k)}\n{_window_name(window)}", fontsize=9)
    if shown is not None:
        ax.legend(
            handles=legend_handles(table),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            ncol=len(table),
            fontsize=8,
            frameon=False,
        )
    return fig


def render_ct_comparison(
    image: Any,
    masks: Mapping[str, Any],
    z: int | None = None,
    *,
    z_mm: float | None = None,
    window: Window = "lung",
    opacity: float = 0.45,
    classes: Any = None,
    spacing: Sequence[float] | None = None,
    direction: Sequence[Sequence[float]] | None = None,
    show_plain: bool = True,
    plain_windows: Sequence[Window] | None = None,
    title: str | None = None,
    panel_size: float = 4.0,
) -> Figure:
    """Side by side: the plain CT slice, then one panel per mask (e.g. ground truth, prediction).

    The plain slice is shown in ``window`` and, next to it, in the mediastinal window (soft
    tissue, where consolidation is told from vessels); ``plain_windows`` lists others.
    """
    table = resolve_classes(classes, next(iter(masks.values()), None))
    if plain_windows is None:
        plain_windows = [window] if window == "mediastinum" else [window, "mediastinum"]
    vols = {name: as_volume(image, mask, spacing, direction) for name, mask in masks.items()}
    first = next(iter(vols.values())) if vols else as_volume(image, None, spacing, direction)
    if z is None and z_mm is None and vols:
        z = first.default_slice()
    k = _resolve_z(first, z, z_mm)
    panels: list[tuple[str, CTVolume, np.ndarray | None, Window]] = []
    if show_plain:
        panels += [(_window_name(w), first, None, w) for w in plain_windows]
    panels += [(name, vol, vol.label_slice(k), window) for name, vol in vols.items()]
    fig = new_figure((panel_size * len(panels), panel_size + 0.9))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, vol, shown, shown_window) in zip(axes, panels, strict=True):
        _draw(ax, vol, k, shown_window, shown, table, opacity, name)
    where = _slice_title(first, k)
    fig.suptitle(f"{title}: {where}" if title else where, fontsize=10)
    fig.legend(
        handles=legend_handles(table),
        loc="outside lower center",
        ncol=len(table),
        fontsize=9,
        frameon=False,
    )
    return fig


class _CTWidget:
    """State and drawing of the interactive viewer; the widget is ``self.box``."""

    def __init__(
        self,
        vol: CTVolume,
        k: int,
        window: Window,
        overlay: bool,
        opacity: float,
        classes: dict[int, LabelClass],
        figsize: tuple[float, float],
    ) -> None:
        import ipywidgets as w

        self.vol, self.classes = vol, classes
        presets = list(WINDOWS)
        self._custom: tuple[float, float] | None = None
        if not isinstance(window, str):
            width, level = (float(v) for v in window)
            self._custom = (width, level)
            presets.append("custom")
        self.fig = new_figure(figsize)
        self.ax = self.fig.add_subplot()
        controls = {
            "slice": w.IntSlider(
                value=k, min=0, max=vol.n_slices - 1, description="slice", continuous_update=True
            ),
            "window": w.Dropdown(
                options=presets,
                value=window if isinstance(window, str) else "custom",
                description="window",
            ),
            "overlay": w.Checkbox(
                value=overlay and vol.labels is not None,
                description="labels",
                disabled=vol.labels is None,
                indent=False,
            ),
            "opacity": w.FloatSlider(
                value=opacity,
                min=0.0,
                max=1.0,
                step=0.05,
                description="opacity",
                disabled=vol.labels is None,
            ),
        }
        self.controls = controls
        self.position = w.Label()
        self.image = w.Image(format="png")
        legend = w.HTML(legend_html(classes) if vol.labels is not None else "")
        for control in controls.values():
            control.observe(self._redraw, names="value")
        self.box = w.VBox(
            [
                w.HBox([controls["slice"], self.position]),
                w.HBox([controls["window"], controls["overlay"], controls["opacity"]]),
                self.image,
                legend,
            ]
        )
        self.box.controls = controls  # type: ignore[attr-defined]
        self._redraw()

    def _window(self) -> Window:
        name = self.controls["window"].value
        return self._custom if name == "custom" and self._custom else name

    def _redraw(self, _change: Any = None) -> None:
        k = self.controls["slice"].value
        shown = self.vol.label_slice(k) if self.controls["overlay"].value else None
        self.ax.clear()
        window = self._window()
        _draw(
            self.ax,
            self.vol,
            k,
            window,
            shown,
            self.classes,
            self.controls["opacity"].value,
            f"{_slice_title(self.vol, k)}\n{_window_name(window)}",
        )
        unit = self.vol.unit
        self.position.value = f"z = {self.vol.z_mm[k]:.1f} mm" if unit == "mm" else f"slice {k}"
        self.image.value = figure_png(self.fig)


def ct_viewer(
    image: Any,
    labels: Any | None = None,
    window: Window = "lung",
    *,
    z: int | None = None,
    overlay: bool = True,
    opacity: float = 0.4,
    classes: Any = None,
    spacing: Sequence[float] | None = None,
    direction: Sequence[Sequence[float]] | None = None,
    static: bool | None = None,
    figsize: tuple[float, float] = (6.0, 6.4),
) -> Any:
    """Browse a CT volume: slice slider, window preset, label overlay and opacity, legend.

    ``image`` and ``labels`` are (z, y, x) xarray DataArrays from the store (axes in mm) or
    numpy arrays (give ``spacing`` in mm). Returns an ipywidgets widget in a Jupyter front end,
    else (or with ``static=True``) a matplotlib Figure of slice ``z``.
    """
    if not use_widgets(static):
        return render_ct_slice(
            image,
            labels,
            z,
            window=window,
            overlay=overlay,
            opacity=opacity,
            classes=classes,
            spacing=spacing,
            figsize=figsize,
        )
    window_bounds(window)
    vol = as_volume(image, labels, spacing, direction)
    return _CTWidget(
        vol,
        _resolve_z(vol, z, None),
        window,
        overlay,
        opacity,
        resolve_classes(classes, labels),
        figsize,
    ).box


__all__ = [
    "WINDOWS",
    "CTVolume",
    "apply_window",
    "as_volume",
    "ct_viewer",
    "render_ct_comparison",
    "render_ct_slice",
    "window_bounds",
]
