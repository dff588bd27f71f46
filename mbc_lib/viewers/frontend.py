"""Widget or static figure: detect a widget front end, and draw figures without pyplot."""

from __future__ import annotations

import io
from importlib.util import find_spec

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def widgets_available() -> bool:
    """True inside a Jupyter kernel (a ZMQ shell with a comm front end) with ipywidgets."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    if getattr(shell, "kernel", None) is None:
        return False
    return find_spec("ipywidgets") is not None


def use_widgets(static: bool | None) -> bool:
    """Decide between widget and figure: ``static=True`` forces the figure, ``False`` the widget."""
    if static is None:
        return widgets_available()
    if not static and find_spec("ipywidgets") is None:
        raise RuntimeError("ipywidgets is not installed: use static=True for a figure")
    return not static


class StaticFigure(Figure):
    """A Figure that shows itself as a PNG in Jupyter, whatever the matplotlib backend."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure outside pyplot's registry (no global state, never shown twice in Jupyter)."""
    fig = StaticFigure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure encoded as PNG bytes (for ``ipywidgets.Image``)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


__all__ = ["StaticFigure", "figure_png", "new_figure", "use_widgets", "widgets_available"]
