r"""Plain-numpy twins of :mod:`ruvattn.kernels.gat`, and whole GAT/GATv2 layers in numpy.

The kernel twins (:func:`group_by_target`, :func:`csr_with_self_loops`,
:func:`gat_attend`, :func:`gatv2_attend`; the latter two also cover the
per-chunk kernels) take the same arguments as the kernels minus the output
buffers -- the same :class:`~ruvattn.kernels.gat.Slots`,
:class:`~ruvattn.kernels.gat.GATTables` and
:class:`~ruvattn.kernels.gat.GATv2Tables` -- and return new arrays.
:func:`gat_conv` and :func:`gatv2_conv` are the layers written straight from
PyG's definition, edge by edge, with no grouping, no folding of
the edge term and no shared code with the kernels -- the independent yardstick
for :class:`ruvattn.mechanisms.gat.GATConv` and ``GATv2Conv``:

.. math::

    \text{GAT:}\quad s_{e,h} = \operatorname{LeakyReLU}\big(a^{src}_h\cdot W x_j + a^{dst}_h\cdot W x_i
        + a^{edge}_h\cdot W_e\, e_{ji}\big) \\
    \text{GATv2:}\quad s_{e,h} = a_h\cdot\operatorname{LeakyReLU}\big(W_l x_j + b_l + W_r x_i + b_r
        + W_e\, e_{ji}\big) \\
    \alpha_{e,h} = \operatorname{softmax}_{e:\,\mathrm{target}(e)=i}(s_{e,h}),\qquad
    \text{out}_{i,h} = \sum_{e:\,j\to i} \alpha_{e,h}\, m_{j,h}

with ``m = W x`` (GAT) or ``W_l x + b_l`` (GATv2), heads concatenated or
averaged, plus the bias.

>>> import numpy as np
>>> from ruvattn.reference.gat import add_self_loops
>>> ei, ea = add_self_loops(np.array([[0, 1, 1], [1, 1, 0]]), np.array([[2.0], [9.0], [4.0]]), 2, "mean")
>>> ei.tolist(), ea.ravel().tolist()
([[0, 1, 0, 1], [1, 0, 0, 1]], [2.0, 4.0, 4.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from ruvattn.kernels.gat import FILL_ADD, FILL_CONST, FILL_MAX, FILL_MEAN, FILL_MIN, GATTables, GATv2Tables, Slots
from ruvattn.reference import softmax

__all__ = [
    "add_self_loops",
    "csr_with_self_loops",
    "gat_attend",
    "gat_conv",
    "gatv2_attend",
    "gatv2_conv",
    "group_by_target",
]

Array = NDArray[np.floating]
Ids = NDArray[np.int64]
_OK, _EMPTY, _NONFINITE = 0, 1, 2


# --------------------------------------------------------------------------
# Twins of the kernels
# --------------------------------------------------------------------------


def group_by_target(
    src: Ids, dst: Ids, num_nodes: int, self_loops: bool, rows: Array, use_rows: bool
) -> tuple[int, Ids, Ids, Ids, Array]:
    """``(bad, indptr, slot_src, slot_edge, slot_rows)``: edges sorted by target (stable), see the kernel.

    ``bad`` is ``-1`` or the position of the first edge with an id outside
    ``[0, num_nodes)`` (the rest is then empty).  ``slot_rows[k] = rows[slot_edge[k]]``
    when ``use_rows`` (NaN in self-loop slots), else empty.
    """
    src = np.asarray(src, np.int64)
    dst = np.asarray(dst, np.int64)
    wrong = (src < 0) | (src >= num_nodes) | (dst < 0) | (dst >= num_nodes)
    if wrong.any():
        empty = np.empty(0, np.int64)
        return int(np.flatnonzero(wrong)[0]), empty, empty, empty, np.empty((0, 0))
    edge = np.arange(src.size)
    if self_loops:  # drop the input's loops, append one per node (last in each group after the stable sort)
        keep = src != dst
        loops = np.arange(num_nodes)
        edge = np.concatenate([edge[keep], src.size + loops])
        src = np.concatenate([src[keep], loops])
        dst = np.concatenate([dst[keep], loops])
    order = np.argsort(dst, kind="stable")
    indptr = np.zeros(num_nodes + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=num_nodes), out=indptr[1:])
    slot_edge = edge[order].astype(np.int64)
    slot_rows = np.empty((0, 0))
    if use_rows:
        real = slot_edge < len(rows)
        slot_rows = np.full((slot_edge.size, rows.shape[1]), np.nan, rows.dtype)
        slot_rows[real] = rows[slot_edge[real]]
    return -1, indptr, src[order].astype(np.int64), slot_edge, slot_rows


def csr_with_self_loops(indptr: Ids, indices: Ids, rows: Array, use_rows: bool) -> tuple[Ids, Ids, Ids, Array]:
    """``(slot_indptr, slot_src, slot_edge, slot_rows)``: a CSR adjacency without its entries ``i -> i`` and
    with one loop slot per node (edge id ``nnz + i``) at the end of each row, see the kernel.

    ``slot_rows[k] = rows[slot_edge[k]]`` when ``use_rows`` (NaN in self-loop slots), else empty.
    """
    indptr = np.asarray(indptr, np.int64)
    indices = np.asarray(indices, np.int64)
    n, nnz = indptr.size - 1, indices.size
    target = np.repeat(np.arange(n), np.diff(indptr))
    kept = np.flatnonzero(indices != target)
    # kept entries keep their CSR order inside a row; each row's loop sorts after them
    edge = np.concatenate([kept, nnz + np.arange(n)])
    src = np.concatenate([indices[kept], np.arange(n)])
    dst = np.concatenate([target[kept], np.arange(n)])
    order = np.argsort(dst, kind="stable")
    slot_indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=slot_indptr[1:])
    slot_edge = edge[order]
    slot_rows = np.empty((0, 0))
    if use_rows:
        real = slot_edge < nnz
        slot_rows = np.full((slot_edge.size, rows.shape[1]), np.nan, rows.dtype)
        slot_rows[real] = rows[slot_edge[real]]
    return slot_indptr, src[order].astype(np.int64), slot_edge.astype(np.int64), slot_rows


def _loop_attr(edge_attr: Array, eids: Ids, fill_mode: int, fill_vec: Array) -> Array:
    """PyG's ``fill_value`` for a self loop: a constant, or a reduction of the other incoming attributes."""
    if fill_mode == FILL_CONST:
        return np.asarray(fill_vec, dtype=edge_attr.dtype)
    if eids.size == 0:
        return np.zeros(edge_attr.shape[1], edge_attr.dtype)
    rows = edge_attr[eids]
    reduce = {FILL_MEAN: np.mean, FILL_ADD: np.sum, FILL_MAX: np.max, FILL_MIN: np.min}[fill_mode]
    return reduce(rows, axis=0)


def _finish(
    s: Array,
    ids: Ids,
    eids: Ids,
    msg: Array,
    drop: Array,
    use_drop: bool,
    bias: Array,
    use_bias: bool,
    concat: bool,
) -> tuple[Array, Array, int]:
    """``(row, weights (heads, n), status)`` of one node from its scores ``s (heads, n)``."""
    heads = s.shape[0]
    if not np.isfinite(s).all():
        width = msg.shape[1] if concat else msg.shape[1] // heads
        return np.full(width, np.nan, msg.dtype), np.full_like(s, np.nan), _NONFINITE
    w = np.stack([softmax(s[h])[0] for h in range(heads)])
    if use_drop:
        w = w * drop[eids].T
    per_head = np.stack([w[h] @ msg[ids].reshape(len(ids), heads, -1)[:, h] for h in range(heads)])
    row = per_head.reshape(-1) if concat else per_head.mean(axis=0)
    if use_bias:
        row = row + bias
    return row, w, _OK if np.isfinite(row).all() else _NONFINITE


def _attend(
    node_scores: Callable[[int, int, int], Array],
    graph: Slots,
    msg: Array,
    heads: int,
    drop: Array,
    bias: Array,
    concat: bool,
) -> tuple[Array, Array, NDArray[np.int8]]:
    """Run ``node_scores(i, lo, hi) -> (heads, n)`` (node ``i``, slots ``lo:hi``) and :func:`_finish` at every
    node.  Empty ``drop``/``bias`` switch dropout/the bias off, as for the kernels."""
    indptr, slot_src, slot_edge = graph.indptr, graph.src, graph.edge
    n_nodes = indptr.size - 1
    rows = graph.num_edges + (n_nodes if graph.self_loops else 0)
    use_drop, use_bias = drop.shape[0] > 0, bias.shape[0] > 0
    width = msg.shape[1] if concat else msg.shape[1] // heads
    out = np.empty((n_nodes, width), msg.dtype)
    alpha = np.full((rows, heads), np.nan, msg.dtype)
    status = np.empty(n_nodes, np.int8)
    for i in range(n_nodes):
        lo, hi = indptr[i], indptr[i + 1]
        if hi == lo:
            out[i] = bias if use_bias else 0
            status[i] = _EMPTY
            continue
        ids, eids = slot_src[lo:hi], slot_edge[lo:hi]
        s = node_scores(i, lo, hi)
        out[i], w, status[i] = _finish(s, ids, eids, msg, drop, use_drop, bias, use_bias, concat)
        alpha[eids] = w.T
    return out, alpha, status


def _leaky(z: Array, slope: float) -> Array:
    return np.where(z > 0, z, z * slope)


def gat_attend(t: GATTables, graph: Slots, edge_attr: Array, drop: Array) -> tuple[Array, Array, NDArray[np.int8]]:
    """Twin of :func:`ruvattn.kernels.gat.gat_attend`: ``(out, alpha, status)``.

    ``t.a_edge`` is in slot order, as for the kernel.  ``alpha`` has ``num_edges + N`` rows
    (self-loop ids included); rows of edges with no slot are NaN.
    """
    heads = t.a_src.shape[1]
    slot_src, slot_edge, num_edges = graph.src, graph.edge, graph.num_edges

    def scores(i: int, lo: int, hi: int) -> Array:
        ids, eids = slot_src[lo:hi], slot_edge[lo:hi]
        s = t.a_src[ids] + t.a_dst[i]  # (n, heads)
        if t.use_edge:
            real = eids < num_edges
            term = np.zeros_like(s)
            term[real] = t.a_edge[lo:hi][real]  # a_edge is in slot order
            if graph.self_loops:
                if t.fill_mode == FILL_CONST:
                    loop = np.asarray(t.fill_vec)
                else:  # the loop's edge attribute, then its term: no linearity shortcut
                    loop = _loop_attr(edge_attr, eids[real], t.fill_mode, t.fill_vec) @ t.me
                term[~real] = loop
            s = s + term
        return _leaky(s, t.slope).T

    return _attend(scores, graph, t.msg, heads, drop, t.bias, t.concat)


def gatv2_attend(t: GATv2Tables, graph: Slots, edge_attr: Array, drop: Array) -> tuple[Array, Array, NDArray[np.int8]]:
    """Twin of :func:`ruvattn.kernels.gat.gatv2_attend`: ``(out, alpha, status)`` (``alpha`` as in
    :func:`gat_attend`)."""
    heads, ch = t.att.shape
    slot_src, slot_edge, num_edges = graph.src, graph.edge, graph.num_edges

    def scores(i: int, lo: int, hi: int) -> Array:
        ids, eids = slot_src[lo:hi], slot_edge[lo:hi]
        z = t.xl[ids] + t.xr[i]  # (n, heads * C)
        if t.use_edge:
            real = eids < num_edges
            attrs = np.empty((eids.size, edge_attr.shape[1]), edge_attr.dtype)
            attrs[real] = edge_attr[eids[real]]
            if graph.self_loops:
                attrs[~real] = _loop_attr(edge_attr, eids[real], t.fill_mode, t.fill_vec)
            z = z + attrs @ t.we_t
        return (_leaky(z, t.slope).reshape(-1, heads, ch) * t.att).sum(axis=-1).T

    return _attend(scores, graph, t.msg, heads, drop, t.bias, t.concat)


# --------------------------------------------------------------------------
# Whole layers, edge by edge (PyG's definition)
# --------------------------------------------------------------------------


def add_self_loops(
    edge_index: Ids, edge_attr: Array | None, num_nodes: int, fill_value: float | str
) -> tuple[Ids, Array | None]:
    """PyG's ``remove_self_loops`` then ``add_self_loops``: loops ``0..N-1`` appended at the end.

    A string ``fill_value`` reduces the attributes of each node's incoming
    edges (scatter over ``edge_index[1]``; zeros for a node without any).
    """
    ei = np.asarray(edge_index, np.int64)
    keep = ei[0] != ei[1]
    loops = np.arange(num_nodes, dtype=np.int64)
    full = np.concatenate([ei[:, keep], np.stack([loops, loops])], axis=1)
    if edge_attr is None:
        return full, None
    ea = np.asarray(edge_attr)[keep]
    if isinstance(fill_value, str):
        reduce = {"mean": np.mean, "add": np.sum, "sum": np.sum, "max": np.max, "min": np.min}[fill_value]
        target = ei[1, keep]
        loop_attr = np.zeros((num_nodes, ea.shape[1]), ea.dtype)
        for i in range(num_nodes):
            rows = ea[target == i]
            if rows.shape[0]:
                loop_attr[i] = reduce(rows, axis=0)
    else:
        loop_attr = np.full((num_nodes, ea.shape[1]), fill_value, ea.dtype)
    return full, np.concatenate([ea, loop_attr])


def _edge_softmax_aggregate(
    s: Array, msg: Array, ei: Ids, num_nodes: int, bias: Array | None, concat: bool
) -> tuple[Array, Array]:
    """Softmax of ``s (E, H)`` over each target's incoming edges, then ``out[i] = sum alpha m_j``."""
    heads = s.shape[1]
    alpha = np.zeros_like(s)
    out = np.zeros((num_nodes, heads, msg.shape[1] // heads), msg.dtype)
    m = msg.reshape(msg.shape[0], heads, -1)
    for i in range(num_nodes):
        into = np.flatnonzero(ei[1] == i)
        if into.size == 0:
            continue
        z = np.exp(s[into] - s[into].max(axis=0))
        alpha[into] = z / z.sum(axis=0)
        for e in into:
            out[i] += alpha[e][:, None] * m[ei[0, e]]
    res = out.reshape(num_nodes, -1) if concat else out.mean(axis=1)
    return (res + bias if bias is not None else res), alpha


def gat_conv(
    x: Array,
    edge_index: Ids,
    edge_attr: Array | None,
    params: dict[str, Array],
    *,
    heads: int,
    concat: bool = True,
    negative_slope: float = 0.2,
    self_loops: bool = True,
    fill_value: float | str = "mean",
) -> tuple[Array, Ids, Array]:
    """``torch_geometric.nn.GATConv`` (eval mode) with PyG's state-dict ``params``:
    ``(out, edge_index used, alpha (E', heads))``."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    ei = np.asarray(edge_index, np.int64)
    ea = None if edge_attr is None else np.asarray(edge_attr, np.float64).reshape(ei.shape[1], -1)
    if self_loops:
        ei, ea = add_self_loops(ei, ea, n, fill_value)
    h = x @ np.asarray(params["lin.weight"], np.float64).T
    hh = h.reshape(n, heads, -1)
    a_src = (hh * params["att_src"][0]).sum(-1)
    a_dst = (hh * params["att_dst"][0]).sum(-1)
    s = a_src[ei[0]] + a_dst[ei[1]]
    if ea is not None and "lin_edge.weight" in params:
        he = (ea @ np.asarray(params["lin_edge.weight"], np.float64).T).reshape(ei.shape[1], heads, -1)
        s = s + (he * params["att_edge"][0]).sum(-1)
    s = np.where(s > 0, s, negative_slope * s)
    bias = params.get("bias")
    out, alpha = _edge_softmax_aggregate(s, h, ei, n, None if bias is None else np.asarray(bias, np.float64), concat)
    return out, ei, alpha


def gatv2_conv(
    x: Array,
    edge_index: Ids,
    edge_attr: Array | None,
    params: dict[str, Array],
    *,
    heads: int,
    concat: bool = True,
    negative_slope: float = 0.2,
    self_loops: bool = True,
    fill_value: float | str = "mean",
) -> tuple[Array, Ids, Array]:
    """``torch_geometric.nn.GATv2Conv`` (eval mode) with PyG's state-dict ``params``:
    ``(out, edge_index used, alpha (E', heads))``.  ``lin_r.*`` missing means shared weights."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    ei = np.asarray(edge_index, np.int64)
    ea = None if edge_attr is None else np.asarray(edge_attr, np.float64).reshape(ei.shape[1], -1)
    if self_loops:
        ei, ea = add_self_loops(ei, ea, n, fill_value)

    def lin(name: str) -> Array:
        w = np.asarray(params[f"{name}.weight"], np.float64)
        b = params.get(f"{name}.bias")
        return x @ w.T + (0.0 if b is None else np.asarray(b, np.float64))

    xl = lin("lin_l")
    xr = lin("lin_r") if "lin_r.weight" in params else xl
    z = xl[ei[0]] + xr[ei[1]]
    if ea is not None:
        z = z + ea @ np.asarray(params["lin_edge.weight"], np.float64).T
    z = np.where(z > 0, z, negative_slope * z).reshape(ei.shape[1], heads, -1)
    s = (z * np.asarray(params["att"], np.float64)[0]).sum(-1)
    bias = params.get("bias")
    out, alpha = _edge_softmax_aggregate(s, xl, ei, n, None if bias is None else np.asarray(bias, np.float64), concat)
    return out, ei, alpha
