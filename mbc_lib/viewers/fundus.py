"""Fundus gallery: a grid of photographs with the true label and the model's prediction.

A title is green when the prediction matches the label and red when it does not.
``fundus_gallery`` pages through the images in Jupyter; ``render_fundus_gallery`` returns a Figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .frontend import figure_png, new_figure, use_widgets

RIGHT = "#1a7f37"
WRONG = "#cf222e"
NEUTRAL = "#24292f"
FILTERS = ("all", "correct", "wrong")


def to_rgb(image: Any) -> np.ndarray:
    """An image as (H, W, 3) floats in [0, 1]: from a (c, y, x) DataArray, a CHW tensor or array,
    an HWC array, uint8 or float."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    if hasattr(image, "dims") and "c" in image.dims:
        image = image.transpose(..., "c").values
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"not an RGB or grey image: shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def _predicted(prediction: Any, threshold: float) -> tuple[int, float | None]:
    """(predicted class, probability or None): floats are probabilities of class 1."""
    value = float(prediction)
    if isinstance(prediction, (bool, np.bool_, int, np.integer)):
        return int(value), None
    if isinstance(prediction, (float, np.floating)) or not value.is_integer():
        return int(value >= threshold), value
    return int(value), None


def _title(
    i: int,
    titles: Sequence[str] | None,
    label: Any,
    prediction: Any,
    class_names: Sequence[str],
    threshold: float,
) -> tuple[str, str]:
    lines = [str(titles[i])] if titles is not None else []
    truth = None if label is None else int(label)
    if truth is not None:
        lines.append(f"true: {class_names[truth]}")
    colour = NEUTRAL
    if prediction is not None:
        guess, prob = _predicted(prediction, threshold)
        text = f"pred: {class_names[guess]}"
        lines.append(text + (f" (p={prob:.2f})" if prob is not None else ""))
        if truth is not None:
            colour = RIGHT if guess == truth else WRONG
    return "\n".join(lines), colour


def _optional(values: Any, n: int, what: str) -> list[Any] | None:
    if values is None:
        return None
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    out = list(values)
    if len(out) != n:
        raise ValueError(f"{len(out)} {what} for {n} images")
    return out


def render_fundus_gallery(
    images: Sequence[Any],
    labels: Sequence[Any] | None = None,
    predictions: Sequence[Any] | None = None,
    ncols: int = 4,
    *,
    titles: Sequence[str] | None = None,
    class_names: Sequence[str] = ("normal", "glaucoma"),
    threshold: float = 0.5,
    heatmaps: Sequence[Any] | None = None,
    heatmap_alpha: float = 0.45,
    heatmap_label: str = "Grad-CAM attention (0: none, 1: most)",
    tile_size: float = 2.8,
) -> Figure:
    """A grid of photographs titled with label and prediction (green right, red wrong).

    ``predictions`` are probabilities of class 1 (floats) or classes (ints); ``heatmaps``
    (e.g. Grad-CAM, any size, values in [0, 1]) are drawn over the images, with a colour bar
    saying what the colours mean (``heatmap_label``).
    """
    images = list(images)
    n = len(images)
    if n == 0:
        raise ValueError("no images to show")
    labels_ = _optional(labels, n, "labels")
    preds = _optional(predictions, n, "predictions")
    heats = _optional(heatmaps, n, "heat maps")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = new_figure((tile_size * ncols, (tile_size + 0.5) * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    heat_layer = None
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        rgb = to_rgb(images[i])
        ax.imshow(rgb, interpolation="antialiased")
        if heats is not None and heats[i] is not None:
            h, w = rgb.shape[:2]
            heat_layer = ax.imshow(
                np.squeeze(np.asarray(heats[i], np.float32)),
                cmap="jet",
                vmin=0.0,
                vmax=1.0,
                alpha=heatmap_alpha,
                extent=(-0.5, w - 0.5, h - 0.5, -0.5),
            )
        text, colour = _title(
            i,
            titles,
            None if labels_ is None else labels_[i],
            None if preds is None else preds[i],
            class_names,
            threshold,
        )
        ax.set_title(text, color=colour, fontsize=9)
    if heat_layer is not None:
        bar = fig.colorbar(heat_layer, ax=list(axes), shrink=0.6, pad=0.02, alpha=1.0)
        bar.set_label(heatmap_label, fontsize=9)
    return fig


def fundus_gallery(
    images: Sequence[Any],
    labels: Sequence[Any] | None = None,
    predictions: Sequence[Any] | None = None,
    ncols: int = 4,
    *,
    titles: Sequence[str] | None = None,
    class_names: Sequence[str] = ("normal", "glaucoma"),
    threshold: float = 0.5,
    heatmaps: Sequence[Any] | None = None,
    page_size: int | None = None,
    static: bool | None = None,
) -> Any:
    """Grid of fundus photographs with true label and predicted probability/label.

    Returns an ipywidgets widget (pages of ``page_size`` images, a filter for right/wrong
    predictions) in a Jupyter front end, else (or with ``static=True``) a matplotlib Figure.
    """
    images = list(images)
    options = {
        "titles": titles,
        "class_names": class_names,
        "threshold": threshold,
        "heatmaps": heatmaps,
    }
    if not use_widgets(static):
        return render_fundus_gallery(images, labels, predictions, ncols, **options)
    return _GalleryWidget(images, labels, predictions, ncols, page_size or 2 * ncols, options).box


class _GalleryWidget:
    """Pages through a gallery; the widget is ``self.box``."""

    def __init__(
        self,
        images: list[Any],
        labels: Sequence[Any] | None,
        predictions: Sequence[Any] | None,
        ncols: int,
        page_size: int,
        options: dict[str, Any],
    ) -> None:
        import ipywidgets as w

        n = len(images)
        if n == 0:
            raise ValueError("no images to show")
        self.images, self.ncols, self.page_size = images, ncols, page_size
        self.labels = _optional(labels, n, "labels")
        self.preds = _optional(predictions, n, "predictions")
        self.options = {
            k: (_optional(v, n, k) if k in ("titles", "heatmaps") else v)
            for k, v in options.items()
        }
        can_filter = self.labels is not None and self.preds is not None
        self.controls = {
            "page": w.IntSlider(value=0, min=0, max=self._pages(n) - 1, description="page"),
            "show": w.Dropdown(
                options=FILTERS if can_filter else FILTERS[:1],
                value="all",
                description="show",
                disabled=not can_filter,
            ),
        }
        self.count = w.Label()
        self.image = w.Image(format="png")
        for control in self.controls.values():
            control.observe(self._redraw, names="value")
        self.box = w.VBox(
            [w.HBox([self.controls["page"], self.controls["show"], self.count]), self.image]
        )
        self.box.controls = self.controls  # type: ignore[attr-defined]
        self._redraw()

    def _pages(self, n: int) -> int:
        return max(1, math.ceil(n / self.page_size))

    def _selected(self) -> list[int]:
        show = self.controls["show"].value
        if show == "all" or self.labels is None or self.preds is None:
            return list(range(len(self.images)))
        thr = self.options["threshold"]
        right = [
            _predicted(p, thr)[0] == int(t) for p, t in zip(self.preds, self.labels, strict=True)
        ]
        return [i for i, ok in enumerate(right) if ok == (show == "correct")]

    def _redraw(self, _change: Any = None) -> None:
        chosen = self._selected()
        page = self.controls["page"]
        page.max = self._pages(len(chosen)) - 1
        idx = chosen[page.value * self.page_size : (page.value + 1) * self.page_size]
        self.count.value = f"{len(chosen)} images"
        if not idx:
            self.image.value = b""
            return

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in idx]

        opts = {
            **self.options,
            "titles": pick(self.options["titles"]),
            "heatmaps": pick(self.options["heatmaps"]),
        }
        fig = render_fundus_gallery(
            [self.images[i] for i in idx], pick(self.labels), pick(self.preds), self.ncols, **opts
        )
        self.image.value = figure_png(fig)


__all__ = ["fundus_gallery", "render_fundus_gallery", "to_rgb"]
