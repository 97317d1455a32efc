"""The part every widget shares: controls, a plotly ``FigureWidget``, a status line and the exports.

A widget is a small model–view pair. :meth:`AttentionWidget.compute` asks the library for the
numbers (weights, routing, coordinates) and returns them as a plain object, :attr:`state`; and
:meth:`AttentionWidget.render` writes that state into the figure's traces inside one
``batch_update`` so the browser receives one message. Every control is in :attr:`controls`
(name → ipywidgets control); changing ``.value`` re-runs both, whether a person drags the
slider in JupyterLab or a test sets it. A bad combination of settings never raises out of a
callback: the status line says what the library reported and the last good figure stays.

A widget that shows a mechanism offers its parameters through the controls
:func:`~ruvattn.widgets._controls.controls_for` derives from the declared constraints
(:meth:`AttentionWidget._add_parameter_controls`); ``compute`` applies them with one
``set_params`` call (:meth:`AttentionWidget._apply_parameters`). Nothing here or in the widgets
depends on the mechanism's kind: heads, edge features and input spaces come from the mechanism
contract (``num_weight_heads``, ``forward_options``, ``input_space``/``embed``).

Exports need no network at view time: :meth:`AttentionWidget.save_html` writes one file with
plotly.js inlined, and :meth:`AttentionWidget.save_image` writes SVG/PNG/PDF through kaleido
(which drives a local Chrome/Chromium).
"""

from __future__ import annotations

import html
import importlib.util
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from ruvattn.errors import AttentionError, InvalidConfig
from ruvattn.mechanisms import Attention, build

from ._controls import apply_controls, controls_for, refresh_options

__all__ = [
    "AttentionWidget",
    "as_matrix",
    "as_mechanism",
    "embedded",
    "plane_layout",
    "weight_colorscale",
    "weight_options",
]

#: a sequential scale for weights (light = small) and a diverging one for differences
weight_colorscale = "Viridis"
difference_colorscale = "RdBu"


def as_matrix(x: Any, name: str, owner: str) -> np.ndarray:
    """``x`` as a finite 2-D float array, or an :class:`InvalidConfig` naming the widget and argument."""
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidConfig(f"{owner}: {name} must be a non-empty 2-D array, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def as_mechanism(mechanism: Attention | str | dict[str, Any], dim: int, owner: str) -> Attention:
    """An :class:`~ruvattn.Attention` from an instance, a kind name or a spec dict (``dim`` filled in)."""
    if isinstance(mechanism, Attention):
        return mechanism
    if isinstance(mechanism, str):
        return build({"type": mechanism, "dim": dim})
    if isinstance(mechanism, dict):
        return build({"dim": dim, **mechanism})
    raise InvalidConfig(f"{owner}: mechanism must be an Attention, a kind or a spec dict, got {mechanism!r}.")


def weight_options(owner: str, mechanism: Attention, edge_features: Any) -> dict[str, Any]:
    """The keyword options of :meth:`~ruvattn.Attention.weights` for ``edge_features`` (empty when ``None``).

    Only a mechanism whose ``forward_options`` name ``edge_features`` takes them (GAT, GATv2, a
    mixture with such an expert); for any other an :class:`InvalidConfig` says so.
    """
    if edge_features is None:
        return {}
    if "edge_features" not in mechanism.forward_options:
        takes = ", ".join(sorted(mechanism.forward_options)) or "none"
        raise InvalidConfig(
            f"{owner}: {type(mechanism).__name__} takes no edge_features (its forward options: {takes})."
        )
    return {"edge_features": edge_features}


def embedded(mechanism: Attention, *arrays: np.ndarray) -> list[np.ndarray]:
    """The rows of ``arrays`` mapped together into ``mechanism.input_space`` by ``mechanism.embed``.

    One call over the stacked rows, so every array gets the same map (``embed`` scales by the
    longest row); Euclidean mechanisms get the rows back unchanged.
    """
    sizes = np.cumsum([a.shape[0] for a in arrays])[:-1]
    mapped = np.asarray(mechanism.embed(np.vstack(arrays)))
    return list(np.split(mapped, sizes))


def plane_layout(height: int, legend_title: str, top: int = 60) -> dict[str, Any]:
    """Layout of a figure drawn in the plane (graph or disk): hidden, equal-scale axes and a legend below."""
    return {
        "height": height,
        "margin": {"l": 20, "r": 20, "t": top, "b": 20},
        "plot_bgcolor": "white",
        "xaxis": {"visible": False},
        "yaxis": {"visible": False, "scaleanchor": "x", "scaleratio": 1},
        "legend": {"title": {"text": legend_title}, "orientation": "h", "yanchor": "top", "y": -0.01, "x": 0.0},
        "title": {"font": {"size": 13}},
    }


class AttentionWidget(ABC):
    """Base class: ``controls`` + ``figure`` + ``status`` laid out in :attr:`box`.

    Subclasses set the controls and ``self.figure`` (a ``go.FigureWidget``; create exactly one,
    an unused one would still be saved in the notebook's widget state) in ``__init__``, then call
    :meth:`_finish`, and implement :meth:`compute` and :meth:`render`.
    """

    #: the widget's name in messages
    name = "AttentionWidget"

    def __init__(self) -> None:
        self.controls: dict[str, ipw.ValueWidget] = {}
        self.figure: go.FigureWidget | None = None
        self.status = ipw.HTML(value="")
        self.state: Any = None
        self.error: str | None = None
        self.last_update_ms: float = float("nan")
        self.updates = 0
        self.box: ipw.VBox | None = None  # made by _finish (an unused widget would be saved in the notebook)
        self.parameter_controls: dict[str, ipw.ValueWidget] = {}  # the mechanism's, by parameter name

    def _add_parameter_controls(self, mechanism: Any, num_keys: int, *, only: Iterable[str] | None = None) -> None:
        """Add a control for every live parameter of ``mechanism`` (:func:`controls_for`), keyed by the
        parameter's name (``param_<name>`` if the widget has a control of that name already)."""
        self.parameter_controls = controls_for(mechanism, num_keys, only=only)
        for name, control in self.parameter_controls.items():
            self.controls[f"param_{name}" if name in self.controls else name] = control

    def _apply_parameters(self, mechanism: Any) -> dict[str, Any]:
        """``set_params`` with the parameter controls that moved (call it first in :meth:`compute`).

        All or nothing: an invalid combination raises the library's error (shown on the status line)
        and leaves the mechanism as it was. Returns the changes.
        """
        changed = apply_controls(mechanism, self.parameter_controls)
        if changed:
            with self._quiet():
                refresh_options(mechanism, self.parameter_controls)
        return changed

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Change control values without redrawing on each (the caller redraws once)."""
        for control in self.controls.values():
            control.unobserve(self._on_change, names="value")
        try:
            yield
        finally:
            for control in self.controls.values():
                control.observe(self._on_change, names="value")

    # -- wiring -----------------------------------------------------------------------
    def _finish(self, extra: Iterable[ipw.Widget] = ()) -> None:
        """Lay the controls out above the figure, observe them, and draw the first state."""
        rows = [ipw.HBox(list(self.controls.values())[i : i + 3]) for i in range(0, len(self.controls), 3)]
        self.box = ipw.VBox([*rows, *extra, self.figure, self.status])
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.refresh(raise_errors=True)

    def _on_change(self, change: dict[str, Any]) -> None:
        self.refresh()

    def refresh(self, raise_errors: bool = False) -> bool:
        """Recompute and redraw; returns ``True`` on success.

        A library error (bad settings, NaN inputs) is shown on the status line and kept in
        :attr:`error`; the figure keeps its last good state. With ``raise_errors`` (used at
        construction) the error propagates instead.
        """
        start = time.perf_counter()
        try:
            state = self.compute()
        except AttentionError as exc:
            if raise_errors:
                raise
            self.error = str(exc)
            self.status.value = f'<span style="color:#b00020">{html.escape(self.error)}</span>'
            return False
        self.state = state
        with self.figure.batch_update():
            self.render(state)
        self._sync_saved_state()
        self.error = None
        self.updates += 1
        self.last_update_ms = (time.perf_counter() - start) * 1e3
        self.status.value = html.escape(self.describe()) + f" · update {self.last_update_ms:.1f} ms"
        return True

    def _sync_saved_state(self) -> None:
        """Copy the current traces and layout into the widget's initial-state traits.

        plotly sends changes as messages, so its ``_widget_data``/``_widget_layout`` traits keep the
        figure as first displayed; a notebook saved with widget state (and an HTML export of it)
        would show that stale figure. Keeping them current makes the saved state the real one.
        """
        current = json.loads(self.figure.to_json())  # plotly's encoder: NaN -> null, arrays -> typed-array specs
        self.figure._widget_data = current["data"]
        self.figure._widget_layout = current["layout"]

    # -- to implement -------------------------------------------------------------------
    @abstractmethod
    def compute(self) -> Any:
        """The numbers for the current control values (never touches the figure)."""

    @abstractmethod
    def render(self, state: Any) -> None:
        """Write ``state`` into ``self.figure`` (called inside ``batch_update``)."""

    def describe(self) -> str:
        """One line about the current state for the status line and the HTML export."""
        return self.name

    # -- display ------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The current control values."""
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values: Any) -> AttentionWidget:
        """Set several controls and redraw once (unknown names raise :class:`InvalidConfig`)."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise InvalidConfig(f"{self.name}.set: unknown control(s) {sorted(unknown)}; have {sorted(self.controls)}.")
        with self._quiet():
            for name, value in values.items():
                self.controls[name].value = value
        self.refresh()
        return self

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.box._repr_mimebundle_(**kwargs)

    # -- exports ------------------------------------------------------------------------
    def to_figure(self) -> go.Figure:
        """A static ``go.Figure`` copy of what the widget shows now."""
        return go.Figure(self.figure.to_dict())

    def save_html(self, path: str | Path) -> Path:
        """One self-contained HTML file: plotly.js inlined (no CDN), the settings listed above the figure."""
        path = Path(path)
        body = pio.to_html(self.to_figure(), include_plotlyjs=True, full_html=False, config={"displaylogo": False})
        rows = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in self.settings().items()
        )
        page = (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(self.name)}</title></head><body>"
            f"<h3>{html.escape(self.name)}</h3><p>{html.escape(self.describe())}</p>"
            f"<table class='ruvattn-settings'>{rows}</table>{body}</body></html>\n"
        )
        path.write_text(page, encoding="utf-8")
        return path

    def save_image(self, path: str | Path, *, width: int = 900, height: int | None = None, scale: float = 1.0) -> Path:
        """A static SVG, PNG or PDF (by the file's extension) through kaleido and a local Chromium."""
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in {"svg", "png", "pdf", "jpg", "jpeg", "webp"}:
            raise InvalidConfig(f"{self.name}.save_image: unknown image type {path.suffix!r}; use .svg, .png or .pdf.")
        if importlib.util.find_spec("kaleido") is None:
            raise ImportError(
                f"{self.name}.save_image needs kaleido and a Chrome/Chromium: pip install 'ruvattn[widgets]'"
            )
        fig = self.to_figure()
        for attempt in range(2):  # kaleido can query its page before the page's scripts ran: try once more then
            try:
                fig.write_image(str(path), format=fmt, width=width, height=height or fig.layout.height or 500,
                                scale=scale)  # fmt: skip
                break
            except Exception as exc:
                if attempt or "kaleido_scopes is not defined" not in str(exc):
                    raise
        return path
