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

Stored weights need no mechanism: :meth:`AttentionHeatmap.from_weights` shows a
:class:`~ruvattn.compression.sparse_storage.SparseWeights` (blank where nothing is stored) or a dense
array, and :meth:`AttentionHeatmap.stored_weights` exports what any heatmap shows as ``SparseWeights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go

from ruvattn import analysis
from ruvattn.compression.sparse_storage import SparseWeights, sparsify
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

    :meth:`from_weights` builds the heatmap from stored weights instead (no mechanism, queries or keys).
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
        self.stored: SparseWeights | None = None  # set by from_weights: the weights shown without a mechanism
        self.query_labels: tuple[Any, ...] | None = None
        self.queries = as_matrix(queries, "queries", self.name)
        self.keys = as_matrix(keys, "keys", self.name)
        self.neighbours: NeighbourList | None = None
        if neighbours is not None:
            self.neighbours = as_neighbours(self.name, neighbours, self.queries.shape[0], self.keys.shape[0])
        if mode not in MODES:
            raise InvalidConfig(f"{self.name}: mode must be one of {MODES}, got {mode!r}.")
        self.mechanism = as_mechanism(mechanism, self.keys.shape[1], self.name)
        weight_options(self.name, self.mechanism, edge_features)  # refused at once if not taken
        if embed:
            self.queries, self.keys = embedded(self.mechanism, self.queries, self.keys)
        self.edge_features = edge_features
        self.name = f"AttentionHeatmap · {type(self.mechanism).__name__}"
        m, n = self.queries.shape[0], self.keys.shape[0]
        self.controls["mode"] = ipw.ToggleButtons(options=list(MODES), value=mode, description="show")
        self._paging(max_queries, m)
        self._add_parameter_controls(self.mechanism, n)
        self._make_figure(
            height, f"key (n = {n})" if neighbours is None else "key id (each query over its own neighbours)"
        )
        self._finish()

    @classmethod
    def from_weights(
        cls,
        weights: SparseWeights | Any,
        *,
        query_labels: Sequence[Any] | None = None,
        key_labels: Sequence[Any] | None = None,
        max_queries: int = 64,
        height: int = 420,
    ) -> AttentionHeatmap:
        """A heatmap of stored weights, without a mechanism.

        ``weights``: a :class:`~ruvattn.compression.sparse_storage.SparseWeights` (entries not stored are
        blank) or a dense ``(m, n)`` / ``(heads, m, n)`` array of non-negative weights (every entry shown).
        Several heads are shown as their mean, as for a mechanism. ``query_labels`` / ``key_labels`` (default:
        the stored ones) become the tick labels. There is nothing to recompute, so the only control is the
        "first query" slider when there are more than ``max_queries`` rows: no mode and no parameters.
        """
        view = cls.__new__(cls)
        AttentionWidget.__init__(view)
        view.mechanism = view.queries = view.keys = view.neighbours = view.edge_features = None
        view._gaps = isinstance(weights, SparseWeights)
        if view._gaps:
            stored = weights.with_labels(query_labels, key_labels)
        else:  # threshold 0 keeps every non-zero weight: lossless, and validated like any stored weights
            stored = sparsify(weights, threshold=0.0, query_labels=query_labels, key_labels=key_labels)
        view.stored, view.query_labels = stored, stored.query_labels
        view._rows = stored.to_scipy().tocsr()  # (heads * m, n): row h * m + i is query i of head h
        view.name = "AttentionHeatmap · stored weights"
        view._paging(max_queries, stored.num_queries)
        view._make_figure(height, f"key (n = {stored.num_keys})")
        if stored.key_labels is not None:
            ticks = [str(label) for label in stored.key_labels]
            view.figure.update_xaxes(tickmode="array", tickvals=list(range(stored.num_keys)), ticktext=ticks)
        view._finish()
        return view

    def _paging(self, max_queries: int, m: int) -> None:
        """Validate ``max_queries`` and add the "first query" slider when ``m`` rows do not fit at once."""
        if max_queries < 1:
            raise InvalidConfig(f"{self.name}: max_queries must be >= 1, got {max_queries}.")
        self.max_queries = int(max_queries)
        if m > self.max_queries:
            self.controls["first_query"] = ipw.IntSlider(
                value=0, min=0, max=m - self.max_queries, description="first query"
            )

    def _make_figure(self, height: int, xaxis_title: str) -> None:
        self.figure = go.FigureWidget()
        self.figure.add_heatmap(z=np.zeros((1, 1)), colorscale=weight_colorscale, colorbar={"title": "weight"})
        self.figure.update_layout(
            height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50},
            xaxis_title=xaxis_title, yaxis_title="query", yaxis_autorange="reversed",
        )  # fmt: skip

    def stored_weights(
        self,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        mass: float | None = None,
        format: str = "csr",
        renormalize: bool = False,
        dtype: Any = None,
    ) -> SparseWeights:
        """What the heatmap shows, for every query (not only the rows on screen), stored by
        :func:`~ruvattn.compression.sparse_storage.sparsify` with one selection rule.

        The weights are the mechanism's at the current settings (the head mean; in neighbour mode each row
        over its own list), or the head mean of the stored weights of :meth:`from_weights`; never the
        "exact" or "difference" panels.
        """
        rule = {"top_k": top_k, "threshold": threshold, "mass": mass, "format": format,
                "renormalize": renormalize, "dtype": dtype}  # fmt: skip
        if self.stored is not None:
            s = self.stored
            m = s.num_queries
            mean = sum(self._rows[h * m : (h + 1) * m] for h in range(s.num_heads)) / s.num_heads
            return sparsify(mean, query_labels=s.query_labels, key_labels=s.key_labels, **rule)
        if self.neighbours is None:
            w = mechanism_weights(self.mechanism, self.queries, self.keys, self.edge_features)
            return sparsify(w, **rule)
        nl = self.neighbours
        own = [self._own_weights(r) for r in range(nl.num_nodes) if nl.indptr[r + 1] > nl.indptr[r]]
        data = np.concatenate(own) if own else np.zeros(0)
        return sparsify(data, neighbours=nl, **rule)

    def compute(self) -> HeatmapState:
        if self.stored is not None:
            return self._stored_state()
        self._apply_parameters(self.mechanism)
        mode = self.controls["mode"].value
        rows = self._shown_rows(self.queries.shape[0])
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

    def _shown_rows(self, m: int) -> np.ndarray:
        start = self.controls["first_query"].value if "first_query" in self.controls else 0
        return np.arange(start, min(start + self.max_queries, m))

    def _stored_state(self) -> HeatmapState:
        """The stored weights of the rows on screen: the head mean, NaN (a gap) where no head stores an entry
        of a :class:`SparseWeights` (a dense input shows every entry)."""
        s = self.stored
        rows = self._shown_rows(s.num_queries)
        total = np.zeros((rows.size, s.num_keys))
        present = np.zeros(total.shape, dtype=bool)
        for h in range(s.num_heads):
            block = self._rows[rows + h * s.num_queries]
            total += block.toarray()
            present[np.repeat(np.arange(rows.size), np.diff(block.indptr)), block.indices] = True
        weights = total / s.num_heads
        if self._gaps:
            weights[~present] = np.nan
            if not present.any():
                raise EmptyInput(f"{self.name}: queries {rows[0]}..{rows[-1]} have no stored weights.")
        stats = {k: v for k, v in s.report().items() if k != "rule"}
        return HeatmapState("weights", rows, np.arange(s.num_keys), weights, None, weights, stats)

    def _own_weights(self, r: int) -> np.ndarray:
        """The mechanism's weights of query ``r`` over its own neighbour list, in the list's order."""
        lo, hi = int(self.neighbours.indptr[r]), int(self.neighbours.indptr[r + 1])
        ef = None if self.edge_features is None else np.asarray(self.edge_features)[lo:hi]
        keys = self.keys[self.neighbours.indices[lo:hi]]
        return mechanism_weights(self.mechanism, self.queries[r : r + 1], keys, ef)[0]

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
        for i, r in enumerate(rows):
            w = self._own_weights(r)
            at = np.searchsorted(columns, ids[i])
            weights[i, at] = w
            per_row.append(analysis.summarize(w[None, :], k=8))
            if exact is not None:
                exact[i, at] = ref.attention_weights(self.queries[r], self.keys[ids[i]])
        stats = {name: float(np.mean([s[name] for s in per_row])) for name in per_row[0]}
        return columns, weights, exact, stats

    def render(self, state: HeatmapState) -> None:
        trace = self.figure.data[0]
        gaps = np.isnan(state.shown)
        # keys outside a row's neighbour list are gaps: None (JSON null), never NaN, in the message
        trace.z = np.where(gaps, None, state.shown) if gaps.any() else state.shown
        trace.x = state.columns
        trace.y = state.rows
        if self.query_labels is not None:
            ticks = [str(self.query_labels[r]) for r in state.rows]
            self.figure.update_yaxes(tickmode="array", tickvals=state.rows, ticktext=ticks)
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
        if self.stored is not None:
            shape = " × ".join(str(x) for x in self.stored.shape)
            if not self._gaps:
                return f"stored weights ({shape}, dense input)"
            rule = "{}={:g}".format(*self.stored.rule)
            return (f"stored weights ({shape}, {rule}): {s['nnz']} entries, {s['nbytes']} bytes "
                    f"({s['saved']:.0%} saved), mass lost max {s['max_mass_lost']:.3f}, "
                    f"mean {s['mean_mass_lost']:.3f}")  # fmt: skip
        text = f"{type(self.mechanism).__name__}: entropy {s['entropy']:.3f} nats "
        text += f"(uniform {s['uniform_entropy']:.3f}), top-8 mass {s['top8_mass']:.3f}"
        if "max_abs_difference" in s:
            text += f", max |mechanism − exact| {s['max_abs_difference']:.2e}"
        return text
