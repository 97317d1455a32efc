"""``SearchPathView``: step through a search on a real HNSW index, layer by layer.

The indexed vectors are drawn in the plane of their two leading principal directions (an SVD of a sample,
centred); the picture is only a map, every distance is computed in the full dimension. For one query the
view runs :func:`ruvattn.graph.search.trace_search` (or a policy you pass, e.g. a learned navigator, that
returns a :class:`~ruvattn.graph.search.SearchTrace`) and shows, up to the chosen step:

- the route: the expanded nodes in order, coloured by the layer they were expanded on;
- every node whose distance was computed so far (the price of the search), and the current beam;
- the query and its exact ``k`` nearest neighbours (rings), so recall is visible.

**Controls.** ``query`` (a row of ``queries``), ``mode`` (``greedy``, ``beam`` and your policies' names),
``ef`` (beam width), ``step`` (0 = the entry point, the last step = the finished search). The status line
gives the layer, the distance computations so far and of the whole search, and recall@k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go

from ruvattn.errors import InvalidConfig
from ruvattn.graph.hnsw import HNSWIndex
from ruvattn.graph.search import SearchTrace, trace_search

from ._base import AttentionWidget, as_matrix, plane_layout
from .neighbourhood import check_id

__all__ = ["SearchPathState", "SearchPathView"]

Policy = Callable[[HNSWIndex, np.ndarray, int, int], SearchTrace]
_LAYER_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


@dataclass(frozen=True)
class SearchPathState:
    """What the view shows: the trace, the step, the nodes evaluated and the beam up to it, recall@k."""

    trace: SearchTrace
    step: int
    layer: int
    evaluated: np.ndarray
    beam: np.ndarray
    route: np.ndarray
    route_layers: np.ndarray
    exact: np.ndarray
    recall: float
    computations: int


class SearchPathView(AttentionWidget):
    """Step through an HNSW search (see the module docstring).

    Parameters
    ----------
    index : the :class:`~ruvattn.graph.hnsw.HNSWIndex`.
    queries : ``(m, d)`` query vectors (or one ``(d,)``).
    query, mode, ef, step : initial control values (``step=None``: the last step).
    k : results compared with the exact ``k`` nearest neighbours.
    policies : extra modes, name -> ``f(index, query, k, ef) -> SearchTrace``.
    max_background : at most this many indexed nodes drawn in grey (a seeded sample; visited ones always).
    """

    name = "SearchPathView"

    def __init__(
        self,
        index: HNSWIndex,
        queries: Any,
        *,
        query: int = 0,
        mode: str = "beam",
        ef: int = 16,
        k: int = 10,
        step: int | None = None,
        policies: dict[str, Policy] | None = None,
        max_background: int = 4000,
        height: int = 560,
    ) -> None:
        super().__init__()
        if not isinstance(index, HNSWIndex):
            raise InvalidConfig(f"{self.name}: index must be an HNSWIndex; got {type(index).__name__}.")
        self.index = index
        self.queries = as_matrix(queries, "queries", self.name).astype(np.float64)
        if self.queries.shape[1] != index.dim:
            raise InvalidConfig(f"{self.name}: queries have width {self.queries.shape[1]}; the index has {index.dim}.")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < max(index.num_nodes, 2):
            raise InvalidConfig(f"{self.name}: k must be an integer in [1, {index.num_nodes}); got {k!r}.")
        self.k = int(k)
        self.policies: dict[str, Policy] = {
            "beam": lambda ix, q, kk, ef: trace_search(ix, q, kk, ef=ef),
            "greedy": lambda ix, q, kk, ef: trace_search(ix, q, kk, mode="greedy"),
        }
        for name, fn in (policies or {}).items():
            if not callable(fn):
                raise InvalidConfig(f"{self.name}: policy {name!r} is not callable.")
            self.policies[name] = fn
        if mode not in self.policies:
            raise InvalidConfig(f"{self.name}: mode must be one of {sorted(self.policies)}; got {mode!r}.")
        query = check_id(self.name, "query", query, self.queries.shape[0])
        x = index.vectors.astype(np.float64)
        rng = np.random.default_rng(0)
        sample = x[rng.choice(x.shape[0], min(x.shape[0], 4000), replace=False)]
        centre = sample.mean(0)
        _, _, vt = np.linalg.svd(sample - centre, full_matrices=False)
        self._plane = lambda a: (np.asarray(a, np.float64) - centre) @ vt[:2].T
        self.xy = self._plane(x)
        self.background = np.sort(rng.choice(x.shape[0], min(x.shape[0], int(max_background)), replace=False))
        self._traces: dict[tuple[int, str, int], SearchTrace] = {}
        self.controls["query"] = ipw.IntSlider(value=query, min=0, max=self.queries.shape[0] - 1, description="query")
        self.controls["mode"] = ipw.Dropdown(options=list(self.policies), value=mode, description="mode")
        self.controls["ef"] = ipw.IntSlider(value=int(ef), min=max(1, self.k), max=256, description="ef")
        self.controls["step"] = ipw.IntSlider(value=0, min=0, max=1, description="step")
        self._want_last = step is None
        self._initial_step = 0 if step is None else int(step)
        self.figure = go.FigureWidget(
            data=[
                go.Scattergl(
                    x=self.xy[self.background, 0],
                    y=self.xy[self.background, 1],
                    mode="markers",
                    marker=dict(size=3, color="#d0d0d0"),
                    name="indexed",
                    hoverinfo="skip",
                ),
                go.Scattergl(
                    x=[],
                    y=[],
                    mode="markers",
                    marker=dict(size=5, color="#ff7f0e", opacity=0.6),
                    name="distance computed",
                ),
                go.Scatter(
                    x=[],
                    y=[],
                    mode="lines+markers",
                    line=dict(color="#444", width=1.5),
                    marker=dict(size=7, color=[]),
                    name="route (colour: layer)",
                ),
                go.Scatter(
                    x=[],
                    y=[],
                    mode="markers",
                    marker=dict(size=10, symbol="circle-open", color="#d62728", line=dict(width=2)),
                    name="beam",
                ),
                go.Scatter(
                    x=[],
                    y=[],
                    mode="markers",
                    marker=dict(size=13, symbol="circle-open", color="#2ca02c", line=dict(width=2)),
                    name=f"exact {self.k}-NN",
                ),
                go.Scatter(
                    x=[], y=[], mode="markers", marker=dict(size=16, symbol="star", color="black"), name="query"
                ),
            ],
            layout=plane_layout(height, "search"),
        )
        self._finish()

    # -- model ----------------------------------------------------------------------------------
    def _trace(self, query: int, mode: str, ef: int) -> SearchTrace:
        key = (query, mode, ef)
        t = self._traces.get(key)
        if t is None:
            t = self.policies[mode](self.index, self.queries[query], self.k, ef)
            if not isinstance(t, SearchTrace):
                raise InvalidConfig(f"{self.name}: policy {mode!r} returned {type(t).__name__}, not a SearchTrace.")
            self._traces[key] = t
        return t

    def compute(self) -> SearchPathState:
        query = int(self.controls["query"].value)
        mode = str(self.controls["mode"].value)
        ef = int(self.controls["ef"].value)
        trace = self._trace(query, mode, ef)
        last = len(trace.steps)
        step_control = self.controls["step"]
        with self._quiet():
            step_control.max = max(last, 1)
            if self._want_last:
                step_control.value, self._want_last = last, False
            elif self._initial_step:
                step_control.value, self._initial_step = min(self._initial_step, last), 0
        step = min(int(step_control.value), last)
        done = trace.steps[:step]
        evaluated = [self.index.entry_point] + [int(j) for s in done for j in s.evaluated]
        nodes = [(s.node, s.layer) for s in done] + ([(done[-1].best, done[-1].layer)] if done else [])
        nodes = [nodes[i] for i in range(len(nodes)) if i == 0 or nodes[i][0] != nodes[i - 1][0]]
        if not nodes:
            nodes = [(self.index.entry_point, self.index.max_level)]
        route = np.array([n for n, _ in nodes], dtype=np.int64)
        route_layers = np.array([lv for _, lv in nodes], dtype=np.int64)
        layer = done[-1].layer if done else self.index.max_level
        beam = done[-1].beam if done else np.array([self.index.entry_point])
        x = self.index.vectors.astype(np.float64)
        q = self.queries[query]
        d = -(x @ q) if self.index.metric == "ip" else ((x - q) ** 2).sum(1)
        exact = np.argsort(d, kind="stable")[: self.k]
        found = trace.ids if step == last else beam[: self.k]
        recall = len(set(found.tolist()) & set(exact.tolist())) / self.k
        return SearchPathState(
            trace, step, layer, np.array(evaluated), beam, route, route_layers, exact, recall, len(evaluated)
        )

    # -- view -----------------------------------------------------------------------------------
    def render(self, state: SearchPathState) -> None:
        f = self.figure.data
        xy = self.xy
        ev = state.evaluated
        f[1].x, f[1].y = xy[ev, 0], xy[ev, 1]
        layers = state.route_layers.tolist()
        f[2].x, f[2].y = xy[state.route, 0], xy[state.route, 1]
        f[2].marker.color = [_LAYER_COLOURS[lv % len(_LAYER_COLOURS)] for lv in layers]
        f[2].text = [f"node {n}, layer {lv}" for n, lv in zip(state.route.tolist(), layers, strict=True)]
        f[3].x, f[3].y = xy[state.beam, 0], xy[state.beam, 1]
        f[4].x, f[4].y = xy[state.exact, 0], xy[state.exact, 1]
        qxy = self._plane(self.queries[int(self.controls["query"].value)][None])
        f[5].x, f[5].y = qxy[:, 0], qxy[:, 1]
        self.figure.layout.title.text = self.describe()

    def describe(self) -> str:
        s = self.state
        if s is None:
            return self.name
        t = s.trace
        return (
            f"{t.mode} search, ef {t.ef}: step {s.step} of {len(t.steps)} (layer {s.layer}); "
            f"{s.computations} of {t.distance_computations} distance computations; recall@{self.k} {s.recall:.2f}"
        )
