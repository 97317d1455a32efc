"""``HeadView``: every head's weights side by side, a combined panel, and head entropy against uniform.

Works with any mechanism that has several heads (``num_weight_heads > 1``: multi-head, dynamic
heads, GAT, GATv2, and whatever is registered next): the panels are the head axis of
:meth:`~ruvattn.Attention.weights`, edge features passed when the mechanism takes them
(``"edge_features"`` in its ``forward_options``). Unlike PyG's ``visualize_graph`` (one merged
picture) each head keeps its own panel; the combined panel is the mean or the max over the
*selected* heads, and the bar chart shows each head's mean entropy next to the uniform baseline
``log n`` and the heads' diversity (mean pairwise Jensen–Shannon divergence,
:func:`ruvattn.analysis.head_diversity`).

The view has no parameter controls: the panels are laid out for the mechanism's head count (use
:class:`~ruvattn.widgets.AttentionHeatmap` to move its parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ruvattn import analysis
from ruvattn.errors import InvalidConfig
from ruvattn.mechanisms import Attention

from ._base import AttentionWidget, as_matrix, weight_colorscale, weight_options

__all__ = ["HeadState", "HeadView", "head_weights"]

COMBINE = ("mean", "max")
COLUMNS = 4


def head_weights(mech: Attention, queries: np.ndarray, keys: np.ndarray, edge_features: Any = None) -> np.ndarray:
    """``(heads, m, n)`` weights of each query row over ``keys``, per head, asked of the mechanism."""
    if mech.num_weight_heads < 2:
        raise InvalidConfig(
            f"HeadView: {type(mech).__name__} has no heads (num_weight_heads = 1); use a mechanism with heads "
            "(multi-head, dynamic heads, GAT, GATv2) or AttentionHeatmap for a single-head mechanism."
        )
    options = weight_options("HeadView", mech, edge_features)
    return np.asarray(mech.weights(np.atleast_2d(queries), keys, **options), dtype=np.float64)


@dataclass(frozen=True)
class HeadState:
    weights: np.ndarray  # (h, m, n)
    selected: tuple[int, ...]
    combine: str
    combined: np.ndarray  # (m, n) mean or max over the selected heads
    entropy: np.ndarray  # (h,) mean entropy over queries, nats
    uniform: float  # log n
    diversity: float  # mean pairwise JS divergence of the selected heads


class HeadView(AttentionWidget):
    """Per-head attention panels for a mechanism with several heads.

    Parameters
    ----------
    mechanism : any mechanism with ``num_weight_heads > 1``
    queries : (m, d) query rows (for a graph layer: target node features)
    keys : (n, d) key rows (for a graph layer: the neighbours' features)
    edge_features : (n, edge_dim), for a mechanism that takes them (GAT with ``edge_dim``)
    heads : heads selected at start (default: all)
    combine : "mean" or "max"
    """

    name = "HeadView"

    def __init__(
        self,
        mechanism: Attention,
        queries: Any,
        keys: Any,
        *,
        edge_features: Any = None,
        heads: Any = None,
        combine: str = "mean",
        max_queries: int = 32,
    ) -> None:
        super().__init__()
        self.mechanism = mechanism
        self.queries = as_matrix(queries, "queries", self.name)[:max_queries]
        self.keys = as_matrix(keys, "keys", self.name)
        self.edge_features = edge_features
        if combine not in COMBINE:
            raise InvalidConfig(f"{self.name}: combine must be one of {COMBINE}, got {combine!r}.")
        w = head_weights(mechanism, self.queries, self.keys, edge_features)  # validates the mechanism
        self.num_heads = w.shape[0]
        all_heads = list(range(self.num_heads))
        selected = all_heads if heads is None else [int(h) for h in heads]
        if not selected or any(h < 0 or h >= self.num_heads for h in selected):
            raise InvalidConfig(f"{self.name}: heads must be a non-empty subset of {all_heads}, got {heads!r}.")
        self.name = f"HeadView · {type(mechanism).__name__} ({self.num_heads} heads)"
        self.controls["heads"] = ipw.SelectMultiple(
            options=[(f"head {h}", h) for h in all_heads], value=tuple(selected), rows=min(self.num_heads, 8),
            description="heads",
        )  # fmt: skip
        self.controls["combine"] = ipw.ToggleButtons(options=list(COMBINE), value=combine, description="combine")
        self._build_figure()
        self._finish()

    def _build_figure(self) -> None:
        panels = self.num_heads + 1
        grid_rows = -(-panels // COLUMNS)
        cols = min(panels, COLUMNS)
        titles = [f"head {h}" for h in range(self.num_heads)] + ["combined"]
        titles += [""] * (grid_rows * cols - panels) + ["mean entropy per head (nats)"]
        specs = [[{} for _ in range(cols)] for _ in range(grid_rows)] + [[{"colspan": cols}] + [None] * (cols - 1)]
        fig = make_subplots(
            rows=grid_rows + 1, cols=cols, specs=specs, subplot_titles=titles, vertical_spacing=0.08,
            horizontal_spacing=0.04,
        )  # fmt: skip
        for p in range(panels):
            fig.add_heatmap(
                z=np.zeros((1, 1)), coloraxis="coloraxis", row=p // cols + 1, col=p % cols + 1,
                name=titles[p],
            )  # fmt: skip
        fig.add_bar(x=np.arange(self.num_heads), y=np.zeros(self.num_heads), name="head entropy",
                    row=grid_rows + 1, col=1)  # fmt: skip
        fig.add_scatter(
            x=[-0.5, self.num_heads - 0.5], y=[0.0, 0.0], mode="lines", name="uniform (log n)",
            line={"dash": "dash", "color": "black"}, row=grid_rows + 1, col=1,
        )  # fmt: skip
        fig.update_yaxes(autorange="reversed")
        fig.update_yaxes(autorange=True, row=grid_rows + 1, col=1)
        fig.update_layout(
            coloraxis={"colorscale": weight_colorscale, "colorbar": {"title": "weight"}},
            height=260 * grid_rows + 240, showlegend=True, margin={"l": 40, "r": 20, "t": 70, "b": 40},
            legend={"orientation": "h", "y": -0.08},
        )  # fmt: skip
        self.figure = go.FigureWidget(fig)

    def compute(self) -> HeadState:
        selected = tuple(sorted(self.controls["heads"].value))
        if not selected:
            raise InvalidConfig(f"{self.name}: select at least one head.")
        combine = self.controls["combine"].value
        w = head_weights(self.mechanism, self.queries, self.keys, self.edge_features)
        chosen = w[list(selected)]
        combined = chosen.mean(axis=0) if combine == "mean" else chosen.max(axis=0)
        entropy = np.array([analysis.entropy(w[h]).mean() for h in range(w.shape[0])])
        return HeadState(
            weights=w, selected=selected, combine=combine, combined=combined, entropy=entropy,
            uniform=float(np.log(w.shape[2])), diversity=analysis.head_diversity(chosen),
        )  # fmt: skip

    def render(self, state: HeadState) -> None:
        h = state.weights.shape[0]
        for i in range(h):
            trace = self.figure.data[i]
            trace.z = state.weights[i]
            trace.visible = i in state.selected
        self.figure.data[h].z = state.combined
        self.figure.layout.coloraxis.cmin = 0.0
        self.figure.layout.coloraxis.cmax = float(state.weights[list(state.selected)].max())
        bar, uniform = self.figure.data[h + 1], self.figure.data[h + 2]
        bar.y = state.entropy
        bar.marker.color = ["#1f77b4" if i in state.selected else "#c7c7c7" for i in range(h)]
        uniform.y = [state.uniform, state.uniform]
        annotations = self.figure.layout.annotations
        if annotations:
            annotations[h].text = f"combined ({state.combine} of {len(state.selected)})"
        self.figure.layout.title.text = self.describe()

    def describe(self) -> str:
        if self.state is None:
            return self.name
        s = self.state
        return (
            f"{self.name}: heads {list(s.selected)}, {s.combine}; head entropy "
            f"{s.entropy.min():.3f}–{s.entropy.max():.3f} nats vs uniform {s.uniform:.3f}; "
            f"diversity (JS) {s.diversity:.3f}"
        )
