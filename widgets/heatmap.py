"""``AttentionHeatmap``: queries × keys attention weights of any mechanism, live.

The widget never computes weights itself: it asks the mechanism's
:meth:`~ruvattn.Attention.weights` (head mean), so flash, linear and local+global attention show
the weights they *imply* even though their forward pass never builds the matrix, and a mixture
of experts shows the routing-weighted mixture of its experts' weights. "exact" is scaled
dot-product attention on the same inputs with the mechanism's scale and temperature (where it
has them), and "difference" is mechanism − exact on a diverging colour scale.

Controls are derived from the mechanism's declared parameters
(:func:`~ruvattn.widgets._controls.controls_for`: every live parameter whose constraint names a
control kind); moving one calls ``mechanism.set_params`` (validated, re-seeded) and redraws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go

from ruvattn import analysis
from ruvattn.errors import EmptyInput, InvalidConfig
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.mechanisms import Attention, ScaledDotProductAttention

from ._base import (
    AttentionWidget,
    as_matrix,
    as_mechanism,
    difference_colorscale,
    embedded,
    weight_colorscale,
    weight_options,
)

__all__ = ["AttentionHeatmap", "HeatmapState", "mechanism_weights"]

MODES = ("weights", "exact", "difference")


def mechanism_weights(mech: Attention, queries: np.ndarray, keys: np.ndarray, edge_features: Any = None) -> np.ndarray:
    """``(m, n)`` weights of each query row over ``keys``, asked of the mechanism itself: the head mean of
    :meth:`~ruvattn.mechanisms.Attention.weights` (PyTorch's ``average_attn_weights``)."""
    options = weight_options("mechanism_weights", mech, edge_features)
    return np.asarray(mech.weights(np.atleast_2d(queries), keys, **options), dtype=np.float64).mean(axis=0)


@dataclass(frozen=True)
class HeatmapState:
    """What the heatmap shows: ``shown`` is ``weights``, ``exact`` or their difference, per mode."""

    mode: str
    rows: np.ndarray  # query indices shown
    columns: np.ndarray  # key ids of the columns (all keys, or the union of the rows' neighbour lists)
    weights: np.ndarray  # (m, n) the mechanism's weights (NaN: not in that row's neighbour list)
    exact: np.ndarray | None  # (m, n) scaled dot-product weights (exact/difference modes)
    shown: np.ndarray  # what the heatmap's z holds
    stats: dict[str, float]


class AttentionHeatmap(AttentionWidget):
    """Queries × keys attention weights of ``mechanism``, with live parameter controls.

    Parameters
    ----------
    mechanism : Attention, kind name or spec dict
        e.g. ``FlashAttention(64)``, ``"linear"`` or ``{"type": "local_global", "local_window": 8}``.
    queries : (m, d) array
    keys : (n, d) array
    neighbours : optional neighbour lists, one per query row (padded ids with -1, CSR, scipy CSR,
        ragged lists): each row then attends over its *own* keys, as in a graph, and the columns are
        the union of the shown rows' lists (blank where a key is not in a row's list). The statistics
        are per-row means, the same numbers ``ruvattn analyze`` prints.
    edge_features : optional, for a mechanism that takes them (``"edge_features"`` in its
        ``forward_options``: GAT, GATv2, a mixture with such an expert); with ``neighbours`` one row
        per edge in CSR order.
    embed : map the queries and keys (together, one map) into the mechanism's ``input_space`` with
        its ``embed`` first: for Euclidean data and a hyperbolic, spherical or product-space
        mechanism (the identity for Euclidean mechanisms).
    max_queries : rows drawn at once; with more queries a "first query" slider pages through them.
    mode : "weights", "exact" or "difference".
    """

    name = "AttentionHeatmap"

    def __init__(
        self,
        mechanism: Attention | str | dict[str, Any],
        queries: Any,
        keys: Any,
        *,
        neighbours: Any = None,
        edge_features: Any = None,
        embed: bool = False,
        max_queries: int = 64,
        mode: str = "weights",
        height: int = 420,
    ) -> None:
        super().__init__()
        self.queries = as_matrix(queries, "queries", self.name)
        self.keys = as_matrix(keys, "keys", self.name)
        self.neighbours: NeighbourList | None = None
        if neighbours is not None:
            self.neighbours = as_neighbours(self.name, neighbours, self.queries.shape[0], self.keys.shape[0])
        if mode not in MODES:
            raise InvalidConfig(f"{self.name}: mode must be one of {MODES}, got {mode!r}.")
        if max_queries < 1:
            raise InvalidConfig(f"{self.name}: max_queries must be >= 1, got {max_queries}.")
        self.mechanism = as_mechanism(mechanism, self.keys.shape[1], self.name)
        weight_options(self.name, self.mechanism, edge_features)  # refused at once if not taken
        if embed:
            self.queries, self.keys = embedded(self.mechanism, self.queries, self.keys)
        self.edge_features = edge_features
        self.max_queries = int(max_queries)
        self.name = f"AttentionHeatmap · {type(self.mechanism).__name__}"
        m, n = self.queries.shape[0], self.keys.shape[0]
        self.controls["mode"] = ipw.ToggleButtons(options=list(MODES), value=mode, description="show")
        if m > self.max_queries:
            self.controls["first_query"] = ipw.IntSlider(
                value=0, min=0, max=m - self.max_queries, description="first query"
            )
        self._add_parameter_controls(self.mechanism, n)
        self.figure = go.FigureWidget()
        self.figure.add_heatmap(z=np.zeros((1, 1)), colorscale=weight_colorscale, colorbar={"title": "weight"})
        self.figure.update_layout(
            height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50},
            xaxis_title=f"key (n = {n})" if neighbours is None else "key id (each query over its own neighbours)",
            yaxis_title="query", yaxis_autorange="reversed",
        )  # fmt: skip
        self._finish()

    def compute(self) -> HeatmapState:
        self._apply_parameters(self.mechanism)
        mode = self.controls["mode"].value
        start = self.controls["first_query"].value if "first_query" in self.controls else 0
        rows = np.arange(start, min(start + self.max_queries, self.queries.shape[0]))
        q = self.queries[rows]
        params = self.mechanism.get_params()
        ref = ScaledDotProductAttention(
            self.keys.shape[1], scale=params.get("scale"), temperature=float(params.get("temperature", 1.0))
        )
        if self.neighbours is None:
            columns = np.arange(self.keys.shape[0])
            weights = mechanism_weights(self.mechanism, q, self.keys, self.edge_features)
            exact = None if mode == "weights" else np.asarray(ref.weights(q, self.keys)[0], np.float64)
            stats = analysis.summarize(weights, k=8)
        else:
            columns, weights, exact, stats = self._neighbour_weights(rows, ref, mode != "weights")
        shown = {"weights": weights, "exact": exact, "difference": None}[mode]
        if mode == "difference":
            shown = weights - exact
        if exact is not None:
            stats["max_abs_difference"] = float(np.nanmax(np.abs(weights - exact)))
        return HeatmapState(mode, rows, columns, weights, exact, shown, stats)

    def _neighbour_weights(
        self, rows: np.ndarray, ref: ScaledDotProductAttention, with_exact: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, float]]:
        """Each query row over its own neighbour ids, laid out over the union of the shown lists."""
        nl = self.neighbours
        spans = [(int(nl.indptr[r]), int(nl.indptr[r + 1])) for r in rows]
        for r, (lo, hi) in zip(rows, spans, strict=True):
            if hi == lo:
                raise EmptyInput(f"{self.name}: query {r} has no neighbours to attend over.")
        ids = [nl.indices[lo:hi] for lo, hi in spans]
        columns = np.unique(np.concatenate(ids))
        weights = np.full((rows.size, columns.size), np.nan)
        exact = np.full_like(weights, np.nan) if with_exact else None
        per_row = []
        for i, (r, (lo, hi)) in enumerate(zip(rows, spans, strict=True)):
            keys = self.keys[ids[i]]
            ef = None if self.edge_features is None else np.asarray(self.edge_features)[lo:hi]
            w = mechanism_weights(self.mechanism, self.queries[r : r + 1], keys, ef)[0]
            at = np.searchsorted(columns, ids[i])
            weights[i, at] = w
            per_row.append(analysis.summarize(w[None, :], k=8))
            if exact is not None:
                exact[i, at] = ref.attention_weights(self.queries[r], keys)
        stats = {name: float(np.mean([s[name] for s in per_row])) for name in per_row[0]}
        return columns, weights, exact, stats

    def render(self, state: HeatmapState) -> None:
        trace = self.figure.data[0]
        gaps = np.isnan(state.shown)
        # keys outside a row's neighbour list are gaps: None (JSON null), never NaN, in the message
        trace.z = np.where(gaps, None, state.shown) if gaps.any() else state.shown
        trace.x = state.columns
        trace.y = state.rows
        if self.neighbours is not None:
            self.figure.layout.xaxis.type = "category"  # key ids of the union of the neighbour lists
        if state.mode == "difference":
            bound = max(float(np.nanmax(np.abs(state.shown))), 1e-12)
            trace.update(colorscale=difference_colorscale, zmid=0.0, zmin=-bound, zmax=bound)
            trace.colorbar.title.text = "mechanism − exact"
        else:
            trace.update(colorscale=weight_colorscale, zmid=None, zmin=0.0, zmax=float(np.nanmax(state.shown)))
            trace.colorbar.title.text = "weight"
        self.figure.layout.title.text = self.describe()

    def describe(self) -> str:
        if self.state is None:
            return self.name
        s = self.state.stats
        text = f"{type(self.mechanism).__name__}: entropy {s['entropy']:.3f} nats "
        text += f"(uniform {s['uniform_entropy']:.3f}), top-8 mass {s['top8_mass']:.3f}"
        if "max_abs_difference" in s:
            text += f", max |mechanism − exact| {s['max_abs_difference']:.2e}"
        return text
