"""``NeighbourhoodView``: one node, its neighbours one or two hops out, and the attention on every edge.

The centre attends over its neighbour list (the rows an HNSW search or a kNN graph gives it);
the edge *centre ← neighbour* carries the weight the mechanism gives that neighbour. With two
hops each 1-hop neighbour attends over its own list in the same way, so every drawn edge
``target ← source`` carries ``target``'s weight over ``source`` (messages flow source → target,
PyG's convention). Weights always come from the mechanism's :meth:`~ruvattn.Attention.weights`
on the neighbour rows; a mechanism with several heads (``num_weight_heads > 1``) shows the mean
over heads. The mechanism's live parameters get controls derived from their constraints
(:func:`~ruvattn.widgets._controls.controls_for`), as in the heatmap.

The whole graph is never drawn: at most ``max_nodes`` nodes. When the 2-hop set is larger, the
2-hop nodes with the heaviest path (the product of the weights along centre ← parent ← node,
the best parent when there are several) are kept, and the title says how many were left out.
The layout needs no graph library: the centre at the origin, the 1-hop nodes on the unit circle
in decreasing weight (clockwise from the top), the 2-hop nodes on a circle of radius 2 grouped
next to their best parent.

Edges are binned by weight into :data:`N_BINS` traces (plotly colours a line trace with one
colour), darker-to-brighter and thin-to-thick; above :data:`GL_EDGES` edges the bins are drawn
with ``Scattergl``. Clicking a node re-centres the view on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
from plotly.callbacks import InputDeviceState, Points
from plotly.colors import sample_colorscale

from ruvattn import analysis
from ruvattn.errors import DimensionMismatch, InvalidConfig, OutOfBounds
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.graph.hnsw import HNSWIndex
from ruvattn.mechanisms import Attention

from ._base import AttentionWidget, as_matrix, as_mechanism, embedded, plane_layout, weight_colorscale, weight_options
from .heatmap import mechanism_weights

__all__ = [
    "GL_EDGES",
    "N_BINS",
    "NeighbourhoodState",
    "NeighbourhoodView",
    "bin_styles",
    "bin_weights",
    "check_id",
    "wrap_title",
]

#: number of weight bins (one line trace each)
N_BINS = 5
#: above this many edges the bins are drawn with ``Scattergl``
GL_EDGES = 500


def bin_weights(weights: np.ndarray, bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(bin_edges (bins + 1,), bin index per weight)``: equal-width bins from the smallest to the largest weight.

    Bin ``k`` holds the weights in ``[edges[k], edges[k + 1])`` (the last bin includes its right edge),
    so a heavier weight never lands in a lighter bin. The range is the weights' own (near-uniform
    weights still spread over the bins; the legend gives each bin's range). Equal weights all go to
    the last bin.

    >>> edges, index = bin_weights(np.array([0.1, 0.25, 0.35, 0.5]), bins=4)
    >>> edges.round(2).tolist(), index.tolist()
    ([0.1, 0.2, 0.3, 0.4, 0.5], [0, 1, 2, 3])
    """
    w = np.asarray(weights, dtype=np.float64)
    lo, hi = (float(w.min()), float(w.max())) if w.size else (0.0, 1.0)
    edges = np.linspace(lo, hi, bins + 1)
    index = np.clip(np.searchsorted(edges, w, side="right") - 1, 0, bins - 1)
    if hi <= lo:
        index[:] = bins - 1
    return edges, index.astype(np.int64)


def bin_styles(bins: int = N_BINS) -> list[tuple[str, float]]:
    """``(colour, line width)`` per bin, both increasing with the bin."""
    colours = sample_colorscale(weight_colorscale, [0.15 + 0.85 * k / max(bins - 1, 1) for k in range(bins)])
    return [(colours[k], 0.6 + 0.9 * k) for k in range(bins)]


def check_id(owner: str, name: str, value: Any, size: int) -> int:
    """``value`` as an id in ``[0, size)``: :class:`InvalidConfig` if not an integer, else :class:`OutOfBounds`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidConfig(f"{owner}: {name} must be an integer id, got {value!r}.")
    if not 0 <= value < size:
        raise OutOfBounds(f"{owner}: {name} must be in [0, {size}), got {value!r}.")
    return int(value)


def wrap_title(text: str, width: int = 100) -> str:
    """``text`` broken into ``<br>``-separated lines of at most about ``width`` characters, at ``"; "``.

    >>> wrap_title("alpha; beta; gamma", width=12)
    'alpha; beta;<br>gamma'
    """
    lines: list[str] = []
    for part in text.split("; "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "; " + part
        else:
            lines.append(part)
    return ";<br>".join(lines)


def _is_layer(g: Any) -> bool:
    """Whether ``g`` is a whole neighbour list (a layer) rather than one node's row of ids."""
    if isinstance(g, NeighbourList) or (hasattr(g, "indptr") and hasattr(g, "indices")):
        return True
    if isinstance(g, np.ndarray):
        return g.ndim == 2
    if isinstance(g, (list, tuple)) and len(g) > 0:
        return all(hasattr(r, "__len__") and not isinstance(r, str) for r in g)
    return False


@dataclass(frozen=True)
class NeighbourhoodState:
    """What the view shows.

    Nodes are listed centre first, then the 1-hop nodes by decreasing weight, then the 2-hop
    nodes grouped by parent. Edge ``i`` is ``edge_target[i] ← edge_source[i]``: the target attends
    to the source with ``edge_weight[i]`` (``edge_hop`` 1: the centre is the target; 2: a 1-hop node is).
    """

    centre: int
    hops: int
    layer: int
    nodes: np.ndarray  # (m,) node ids shown
    node_hop: np.ndarray  # (m,) 0 centre, 1, 2
    node_weight: np.ndarray  # (m,) weight of the edge from the best parent (centre: 1)
    node_path: np.ndarray  # (m,) product of the weights along the best path (centre: 1)
    node_parent: np.ndarray  # (m,) best parent (-1 for the centre)
    positions: np.ndarray  # (m, 2)
    edge_source: np.ndarray  # (e,) the neighbour attended to
    edge_target: np.ndarray  # (e,) the attending node
    edge_weight: np.ndarray  # (e,)
    edge_hop: np.ndarray  # (e,) 1 or 2
    edge_bin: np.ndarray  # (e,) bin index
    bin_edges: np.ndarray  # (N_BINS + 1,)
    left_out_nodes: int  # nodes within reach that were not drawn (the max_nodes cap)
    left_out_edges: int  # computed edges to or from those nodes
    message: str  # why the neighbourhood is empty, else ""
    stats: dict[str, float]  # analysis.summarize of the centre's weights (empty without neighbours)

    @property
    def edges(self) -> list[tuple[int, int, float, int]]:
        """``(source, target, weight, hop)`` per edge."""
        return [
            (int(s), int(t), float(w), int(h))
            for s, t, w, h in zip(self.edge_source, self.edge_target, self.edge_weight, self.edge_hop, strict=True)
        ]

    def position(self, node: int) -> np.ndarray:
        """The drawn position of node id ``node``."""
        where = np.flatnonzero(self.nodes == node)
        if not where.size:
            raise OutOfBounds(f"NeighbourhoodState.position: node {node} is not shown.")
        return self.positions[where[0]]


class NeighbourhoodView(AttentionWidget):
    """A node's 1- or 2-hop neighbourhood with each edge coloured by its attention weight.

    Parameters
    ----------
    mechanism : Attention, kind name or spec dict
        Any registered mechanism; one with several heads shows the mean over its heads.
    features : (N, d) array
        One row per node; a node's query and its neighbours' keys are rows of it.
    graph : neighbour list, a list of them (HNSW layers, layer 0 the base layer), or an
        :class:`~ruvattn.graph.hnsw.HNSWIndex` (its real layers; ``features`` are then usually its vectors)
        Any form :func:`ruvattn.graph.as_neighbours` accepts: padded ``(N, k)`` ids with -1,
        ``(indptr, indices)``, a scipy CSR matrix, a :class:`~ruvattn.graph.NeighbourList`, or one
        list of ids per node. Every layer has one row per node; a node absent from an upper layer
        has an empty row there.
    centre : the node shown at the centre.
    hops : 1 or 2.
    layer : the layer shown (the ``"layer"`` control lists them).
    edge_features : for a mechanism that takes them (``"edge_features"`` in its ``forward_options``,
        e.g. GAT layers with ``edge_dim``)
        ``(nnz, edge_dim)`` rows aligned with the layer's CSR order (row ``indptr[i] + j`` is the
        feature of the edge ``i ← indices[indptr[i] + j]``; for padded ids the row-major order of the
        non-empty slots). With several layers an array belongs to layer 0; give a list with one
        array (or ``None``) per layer otherwise.
    embed : map the features into the mechanism's ``input_space`` with its ``embed`` first (Euclidean
        features and a non-Euclidean mechanism; the identity otherwise).
    max_nodes : the most nodes drawn (at least 2).
    height : figure height in pixels.
    """

    name = "NeighbourhoodView"

    def __init__(
        self,
        mechanism: Attention | str | dict[str, Any],
        features: Any,
        graph: Any,
        *,
        centre: int = 0,
        hops: int = 1,
        layer: int = 0,
        edge_features: Any = None,
        embed: bool = False,
        max_nodes: int = 150,
        height: int = 600,
    ) -> None:
        super().__init__()
        self.features = as_matrix(features, "features", self.name)
        n, d = self.features.shape
        self.mechanism = as_mechanism(mechanism, d, self.name)
        if self.mechanism.hidden_dim != d:
            raise DimensionMismatch(
                f"{self.name}: features has shape {self.features.shape}, expected (N, {self.mechanism.hidden_dim}) "
                f"for {type(self.mechanism).__name__}."
            )
        if isinstance(graph, HNSWIndex):
            graph = graph.layers()
        forms = graph if isinstance(graph, list) and graph and all(_is_layer(g) for g in graph) else [graph]
        self.layers: list[NeighbourList] = [
            as_neighbours(f"{self.name} (layer {i})", g, n, n) for i, g in enumerate(forms)
        ]
        self.edge_features = self._layer_edge_features(edge_features)
        if embed:
            (self.features,) = embedded(self.mechanism, self.features)
        if isinstance(max_nodes, bool) or not isinstance(max_nodes, (int, np.integer)) or max_nodes < 2:
            raise InvalidConfig(f"{self.name}: max_nodes must be an integer >= 2, got {max_nodes!r}.")
        self.max_nodes = int(max_nodes)
        if hops not in (1, 2):
            raise InvalidConfig(f"{self.name}: hops must be 1 or 2, got {hops!r}.")
        layer = check_id(self.name, "layer", layer, len(self.layers))
        centre = check_id(self.name, "centre (a node id)", centre, n)
        self.name = f"NeighbourhoodView · {type(self.mechanism).__name__}"
        self.controls["centre"] = ipw.BoundedIntText(value=int(centre), min=0, max=n - 1, description="centre")
        self.controls["hops"] = ipw.ToggleButtons(options=[1, 2], value=int(hops), description="hops")
        self.controls["layer"] = ipw.Dropdown(
            options=[(f"layer {i}" + (" (base)" if i == 0 and len(self.layers) > 1 else ""), i)
                     for i in range(len(self.layers))],
            value=int(layer), description="layer", disabled=len(self.layers) == 1,
        )  # fmt: skip
        degree = max(int(np.diff(nl.indptr).max(initial=0)) for nl in self.layers)
        self._add_parameter_controls(self.mechanism, degree)
        self._build_figure(height)
        self._finish()

    # -- inputs -------------------------------------------------------------------------
    def _layer_edge_features(self, edge_features: Any) -> list[np.ndarray | None]:
        count = len(self.layers)
        if edge_features is None:
            return [None] * count
        weight_options(self.name, self.mechanism, edge_features)  # the mechanism must take them
        per_layer: Sequence[Any]
        if isinstance(edge_features, (list, tuple)) and all(
            e is None or isinstance(e, np.ndarray) for e in edge_features
        ):
            if len(edge_features) != count:
                raise DimensionMismatch(
                    f"{self.name}: edge_features lists {len(edge_features)} layer(s) but the graph has {count}."
                )
            per_layer = edge_features
        else:
            per_layer = [edge_features] + [None] * (count - 1)
        out: list[np.ndarray | None] = []
        for i, (e, nl) in enumerate(zip(per_layer, self.layers, strict=True)):
            if e is None:
                out.append(None)
                continue
            arr = np.asarray(e, dtype=np.float64)
            if arr.ndim == 1:
                arr = arr[:, None]
            if arr.ndim != 2 or arr.shape[0] != nl.nnz:
                raise DimensionMismatch(
                    f"{self.name}: edge_features of layer {i} has shape {arr.shape}, expected ({nl.nnz}, edge_dim): "
                    "one row per edge in the layer's CSR order."
                )
            out.append(arr)
        return out

    # -- figure -------------------------------------------------------------------------
    def _build_figure(self, height: int) -> None:
        fig = go.FigureWidget()
        for kind in (go.Scatter, go.Scattergl):
            for k, (colour, width) in enumerate(bin_styles()):
                fig.add_trace(
                    kind(
                        x=[], y=[], mode="lines", line={"color": colour, "width": width}, name=f"bin {k}",
                        legendgroup=f"bin {k}", showlegend=False,
                        hovertemplate="%{customdata[1]:d} ← %{customdata[0]:d}: weight %{customdata[2]:.4f}"
                        " (hop %{customdata[3]:d})<extra></extra>",
                    )
                )  # fmt: skip
        fig.add_scatter(
            x=[], y=[], mode="markers+text", name="nodes", textposition="top center",
            marker={"colorscale": weight_colorscale, "colorbar": {"title": "path weight"}, "line": {"width": 1}},
            hovertemplate="node %{customdata[0]:d} · hop %{customdata[1]:d}<br>weight %{customdata[2]:.4f}"
            "<br>path weight %{customdata[3]:.4f}<extra></extra>",
        )  # fmt: skip
        fig.update_layout(**plane_layout(height, "edge weight"))
        self.figure = fig
        self.figure.data[-1].on_click(self._on_node_click)

    @property
    def node_trace(self) -> Any:
        """The marker trace of the nodes (clicking one re-centres)."""
        return self.figure.data[-1]

    @property
    def edge_traces(self) -> tuple[Any, ...]:
        """The ``2 · N_BINS`` line traces: ``Scatter`` bins, then ``Scattergl`` bins (one set is empty)."""
        return tuple(self.figure.data[: 2 * N_BINS])

    def _on_node_click(self, trace: Any, points: Points, state: InputDeviceState | None = None) -> None:
        """plotly's click callback: re-centre on the clicked node (plotly calls it for every trace)."""
        if not points.point_inds:
            return
        node = int(np.asarray(trace.customdata)[points.point_inds[0], 0])
        self.controls["centre"].value = node

    # -- model --------------------------------------------------------------------------
    def _attend(self, node: int, nl: NeighbourList, ef: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = nl.indptr[node], nl.indptr[node + 1]
        ids = nl.indices[lo:hi]
        if ids.size == 0:  # absent from this layer, or a node nobody links from
            return ids, np.zeros(0)
        query = self.features[node][None, :]
        weights = mechanism_weights(self.mechanism, query, self.features[ids], None if ef is None else ef[lo:hi])[0]
        return ids, weights

    def compute(self) -> NeighbourhoodState:
        self._apply_parameters(self.mechanism)
        n = self.features.shape[0]
        centre = int(self.controls["centre"].value)
        hops = int(self.controls["hops"].value)
        layer = int(self.controls["layer"].value)
        check_id(self.name, "centre (a node id)", centre, n)
        nl, ef = self.layers[layer], self.edge_features[layer]
        ids1, w1 = self._attend(centre, nl, ef)
        if ids1.size == 0:
            where = "layer " + str(layer) if len(self.layers) > 1 else "the graph"
            absent = " (it is not in this layer)" if layer > 0 else ""
            message = f"node {centre} has no neighbours in {where}{absent}"
            return self._state(centre, hops, layer, inner=[centre], message=message)
        stats = analysis.summarize(w1[None, :], k=8)
        # 1-hop: the centre's weight over each neighbour (summed over repeated ids)
        weight1: dict[int, float] = {}
        for v, w in zip(ids1.tolist(), w1.tolist(), strict=True):
            if v != centre:
                weight1[v] = weight1.get(v, 0.0) + w
        order1 = sorted(weight1, key=lambda v: (-weight1[v], v))
        budget = self.max_nodes - 1
        kept1, dropped1 = order1[:budget], order1[budget:]
        edges = [(int(v), centre, float(w), 1) for v, w in zip(ids1, w1, strict=True)]
        best: dict[int, tuple[float, float, int]] = {v: (weight1[v], weight1[v], centre) for v in kept1}
        reach2: dict[int, tuple[float, float, int]] = {}
        if hops == 2:
            for u in kept1:
                ids2, w2 = self._attend(u, nl, ef)
                for v, w in zip(ids2.tolist(), w2.tolist(), strict=True):
                    edges.append((v, u, w, 2))
                    if v == centre or v in weight1:
                        continue
                    path = weight1[u] * w
                    if v not in reach2 or path > reach2[v][1]:
                        reach2[v] = (w, path, u)
        room = budget - len(kept1)
        order2 = sorted(reach2, key=lambda v: (-reach2[v][1], v))
        kept2, dropped2 = order2[:room], order2[room:]
        best.update({v: reach2[v] for v in kept2})
        shown = {centre, *kept1, *kept2}
        kept_edges = [e for e in edges if e[0] in shown and e[1] in shown]
        left_edges = len(edges) - len(kept_edges)
        return self._state(
            centre, hops, layer, inner=[centre, *kept1], outer=kept2, best=best, edges=kept_edges, stats=stats,
            left_nodes=len(dropped1) + len(dropped2), left_edges=left_edges,
        )  # fmt: skip

    def _state(
        self,
        centre: int,
        hops: int,
        layer: int,
        *,
        inner: list[int],
        outer: Sequence[int] = (),
        best: dict[int, tuple[float, float, int]] | None = None,
        edges: Sequence[tuple[int, int, float, int]] = (),
        stats: dict[str, float] | None = None,
        left_nodes: int = 0,
        left_edges: int = 0,
        message: str = "",
    ) -> NeighbourhoodState:
        """Lay the nodes out and bin the edges.

        ``inner`` is the centre then the 1-hop nodes in ring order; ``best[v]`` is ``(weight from the best
        parent, path weight, best parent)`` for every other node shown.
        """
        best = best or {}
        ring1 = inner[1:]
        angle1 = {v: np.pi / 2 - 2 * np.pi * i / len(ring1) for i, v in enumerate(ring1)}
        # the outer ring: grouped by parent (in ring order), heaviest first, evenly spaced, turned so that
        # each group sits next to its parent on average
        rank = {v: i for i, v in enumerate(ring1)}
        outer = sorted(outer, key=lambda v: (rank[best[v][2]], -best[v][1], v))
        base = np.array([np.pi / 2 - 2 * np.pi * (j + 0.5) / len(outer) for j in range(len(outer))])
        if outer:
            parent_angle = np.array([angle1[best[v][2]] for v in outer])
            base = base + float(np.angle(np.exp(1j * (parent_angle - base)).sum()))
        nodes = np.array([*inner, *outer], dtype=np.int64)
        m = nodes.size
        positions = np.zeros((m, 2))
        a1 = np.array([angle1[v] for v in ring1], dtype=np.float64)
        positions[1 : 1 + len(ring1)] = np.column_stack([np.cos(a1), np.sin(a1)])
        if outer:
            positions[1 + len(ring1) :] = 2.0 * np.column_stack([np.cos(base), np.sin(base)])
        node_hop = np.array([0] + [1] * len(ring1) + [2] * len(outer), dtype=np.int64)
        node_weight = np.array([1.0] + [best[v][0] for v in nodes[1:].tolist()])
        node_path = np.array([1.0] + [best[v][1] for v in nodes[1:].tolist()])
        node_parent = np.array([-1] + [best[v][2] for v in nodes[1:].tolist()], dtype=np.int64)
        cols = list(zip(*edges, strict=True)) if edges else [[], [], [], []]
        weight = np.array(cols[2], dtype=np.float64)
        bin_edges, edge_bin = bin_weights(weight)
        return NeighbourhoodState(
            centre=centre, hops=hops, layer=layer, nodes=nodes, node_hop=node_hop, node_weight=node_weight,
            node_path=node_path, node_parent=node_parent, positions=positions,
            edge_source=np.array(cols[0], dtype=np.int64), edge_target=np.array(cols[1], dtype=np.int64),
            edge_weight=weight, edge_hop=np.array(cols[3], dtype=np.int64), edge_bin=edge_bin, bin_edges=bin_edges,
            left_out_nodes=int(left_nodes), left_out_edges=int(left_edges), message=message, stats=stats or {},
        )  # fmt: skip

    # -- view ---------------------------------------------------------------------------
    def render(self, state: NeighbourhoodState) -> None:
        where = {int(v): i for i, v in enumerate(state.nodes)}
        src = np.array([where[int(s)] for s in state.edge_source], dtype=np.int64)
        tgt = np.array([where[int(t)] for t in state.edge_target], dtype=np.int64)
        use_gl = state.edge_weight.size > GL_EDGES
        traces = self.edge_traces
        for k in range(N_BINS):
            sel = np.flatnonzero(state.edge_bin == k)
            xs = np.full((sel.size, 3), np.nan)
            ys = np.full((sel.size, 3), np.nan)
            xs[:, 0], xs[:, 1] = state.positions[src[sel], 0], state.positions[tgt[sel], 0]
            ys[:, 0], ys[:, 1] = state.positions[src[sel], 1], state.positions[tgt[sel], 1]
            data = np.column_stack(
                [state.edge_source[sel], state.edge_target[sel], state.edge_weight[sel], state.edge_hop[sel]]
            ).astype(np.float64)
            # every row repeated for the two ends and the gap; no NaN in customdata: plotly sends 2-D
            # arrays as JSON, and a NaN there makes the whole widget message fail to serialise
            custom = np.repeat(data, 3, axis=0)
            lo, hi = state.bin_edges[k], state.bin_edges[k + 1]
            label = f"{lo:.3f}–{hi:.3f} ({sel.size})"
            for trace, active in ((traces[k], not use_gl), (traces[N_BINS + k], use_gl)):
                on = active and sel.size > 0
                trace.update(
                    x=xs.ravel() if on else [], y=ys.ravel() if on else [], customdata=custom if on else None,
                    name=label, showlegend=on,
                )  # fmt: skip
        nodes = self.node_trace
        colour = state.node_path.copy()
        rest = colour[1:]
        top = float(rest.max()) if rest.size else 1.0
        colour[0] = top
        size = 8.0 + 16.0 * (state.node_path / max(top, 1e-12)).clip(0, 1)
        size[0] = 22.0
        nodes.update(
            x=state.positions[:, 0], y=state.positions[:, 1],
            customdata=np.column_stack(
                [state.nodes, state.node_hop, state.node_weight, state.node_path, state.node_parent]
            ).astype(np.float64),
            text=[str(v) for v in state.nodes] if state.nodes.size <= 40 else None,
            marker={"color": colour, "size": size, "cmin": 0.0, "cmax": max(top, 1e-12),
                    "symbol": ["star"] + ["circle"] * (state.nodes.size - 1)},
        )  # fmt: skip
        reach = 2.45 if state.hops == 2 and state.node_hop.max() == 2 else 1.3
        self.figure.layout.xaxis.range = [-reach, reach]
        self.figure.layout.yaxis.range = [-reach, reach]
        self.figure.layout.title.text = wrap_title(self.describe())

    def describe(self) -> str:
        if self.state is None:
            return self.name
        s = self.state
        layer = f", layer {s.layer}" if len(self.layers) > 1 else ""
        head = f"{self.name}: node {s.centre}{layer}, {s.hops} hop{'s' if s.hops == 2 else ''}"
        if s.message:
            return f"{head}: {s.message}"
        text = (
            f"{head}: {s.nodes.size - 1} neighbours shown, {s.edge_weight.size} edges; centre entropy "
            f"{s.stats['entropy']:.3f} nats (uniform {s.stats['uniform_entropy']:.3f}), top weight "
            f"{s.edge_weight[s.edge_hop == 1].max():.3f}"
        )
        if s.left_out_nodes:
            text += f"; {s.left_out_nodes} nodes ({s.left_out_edges} edges) left out (max_nodes={self.max_nodes})"
        return text
