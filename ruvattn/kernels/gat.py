"""Numba kernels for graph attention layers (GAT and GATv2) over a graph grouped by target.

Every kernel here has a plain-numpy twin of the same name in
:mod:`ruvattn.reference.gat`; ``tests/test_gat.py`` holds them to each other.
The exponential is the shared vectorised primitive ``exp_sum`` of
:mod:`ruvattn.kernels.attention` (imported, not re-written).  The softmax is
that primitive with each head's maximum taken in the score loop, which needs no
separate max pass and no log-sum-exp (the full ``softmax`` primitive computes
both): on 10,000 nodes / 330,000 slots this took the kernel from 27 ms to
16 ms on one thread.  The cache
locator of :mod:`ruvattn.kernels` stamps this module's cached code with
``attention.py`` too, so a change to a primitive recompiles these kernels.

The slot layout (:class:`Slots`)
--------------------------------
An edge ``e`` goes from a source ``j`` to a target ``i`` (a message ``j -> i``
is aggregated at ``i``).  The kernels read the graph grouped by target, which is
what a CSR adjacency already is: node ``i`` owns slots ``indptr[i]:indptr[i+1]``;
slot ``k`` holds the source ``src[k]`` (a row of the source-side tables) and the
edge id ``edge[k]`` (a row of the per-edge arrays ``edge_attr``, ``drop``,
``alpha``).  Two ways in:

* a CSR adjacency (row ``i`` lists the sources of target ``i``) *is* the slots:
  ``Slots(indptr, indices, arange(nnz), nnz, False)``, edge ids = CSR positions;
  with ``self_loops``, :func:`csr_with_self_loops` copies it once without the
  entries ``i -> i`` and with one loop slot per node;
* an edge list ``(src, dst)`` is sorted by target once, by
  :func:`group_by_target` (a stable counting sort, O(E + N)).

With ``self_loops`` every edge ``i -> i`` of the input is dropped and node ``i``
gets one extra slot, the last of its group, with source ``i`` and edge id
``num_edges + i`` (PyG's ``remove_self_loops`` then ``add_self_loops``: the
loops come after the original edges).  So the loop of node ``i`` is row
``num_edges + i`` of ``drop`` and ``alpha``; GAT's edge term ``a_edge`` is in
slot order instead (carried there by the grouping: read sequentially, not
gathered).

The edge attribute of an added self loop (PyG's ``fill_value``) is
``fill_mode``: :data:`FILL_CONST` (a constant, passed in), :data:`FILL_MEAN`,
:data:`FILL_ADD`, :data:`FILL_MAX` or :data:`FILL_MIN` of the attributes of the
node's other incoming edges (zeros for a node without any).

The arguments
-------------
A kernel call is ``kernel(tables, graph, edge_attr, drop, alpha, out, status, ...)``:

* ``tables`` -- :class:`GATTables` or :class:`GATv2Tables`: one layer kind's
  per-call arrays (the projected source and target rows, the folded weights,
  the bias) and its options, built by the layer's ``_prepare``;
* ``graph`` -- :class:`Slots`;
* per edge id: ``edge_attr (E, edge_dim)`` (``(0, 0)`` without edge features),
  ``drop (E', heads)`` the dropout multipliers and ``alpha (E', heads)`` the
  weights out, ``E' = num_edges (+ N with self loops)``;
* per node: ``out (N, width)`` and ``status (N,)``.

Numba takes the NamedTuples as they are (a tuple of typed fields, no Python
objects), so nothing is unpacked at the call site.  An **empty array switches
its feature off**: ``bias (0,)`` no bias, ``drop (0, heads)`` no dropout,
``alpha (0, heads)`` weights not wanted.

Status per node: :data:`~ruvattn.kernels.attention.OK`,
:data:`~ruvattn.kernels.attention.EMPTY` (no incoming edge: the output row is
the bias, or zeros) or :data:`~ruvattn.kernels.attention.NONFINITE` (a score or
the output was NaN/infinite; the row is NaN).  Kernels do not validate their
inputs; :mod:`ruvattn.mechanisms.gat` does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange
from numpy.typing import NDArray

from ruvattn.kernels.attention import (
    EMPTY,
    NONFINITE,
    OK,
    _inline,
    _is_finite,
    _parallel,
    _serial,
    exp_sum,
    widest_row,
)

__all__ = [
    "FILL_ADD",
    "FILL_CONST",
    "FILL_MAX",
    "FILL_MEAN",
    "FILL_MIN",
    "GATTables",
    "GATv2Tables",
    "Slots",
    "csr_with_self_loops",
    "gat_attend",
    "gat_chunk",
    "gatv2_attend",
    "gatv2_chunk",
    "group_by_target",
]

FILL_CONST = 0
FILL_MEAN = 1
FILL_ADD = 2
FILL_MAX = 3
FILL_MIN = 4

Array = NDArray[np.floating]
Ids = NDArray[np.int64]


class Slots(NamedTuple):
    """A graph grouped by target (see the module docstring): node ``i`` owns slots ``indptr[i]:indptr[i+1]``."""

    indptr: Ids
    """``(N + 1,)`` int64; ``indptr[N]`` is the number of slots ``S``."""
    src: Ids
    """``(S,)`` int64: the source of each slot, a row of the source-side tables."""
    edge: Ids
    """``(S,)`` int64: the edge id of each slot, a row of ``edge_attr``/``drop``/``alpha``
    (``num_edges + i`` for node ``i``'s added self loop)."""
    num_edges: int
    """``E``: the number of input edges; ids from ``E`` on are added self loops."""
    self_loops: bool
    """Whether the last slot of every node is its added self loop."""


class GATTables(NamedTuple):
    """What :class:`~ruvattn.mechanisms.gat.GATConv` gives :func:`gat_attend` (``H`` heads of ``C`` channels).

    ``Ns`` source rows, ``Nd`` target rows (the same ``N`` nodes for a whole graph).
    """

    msg: Array
    """``(Ns, H·C)``: the messages ``W x_j`` (head-major columns)."""
    a_src: Array
    """``(Ns, H)``: ``att_src[h] · (W x_j)_h``."""
    a_dst: Array
    """``(Nd, H)``: ``att_dst[h] · (W x_i)_h``."""
    a_edge: Array
    """``(S, H)``: the edge term ``att_edge[h] · (W_e x_e)_h`` **in slot order**; ``(0, H)`` without edge features."""
    me: Array
    """``(edge_dim, H)``: the edge term folded into one matrix (``a_edge = edge_attr @ me``); for a loop's max/min
    attribute."""
    use_edge: bool
    """Whether this call has edge features (``a_edge``, the loop terms)."""
    fill_mode: int
    """:data:`FILL_CONST` ... :data:`FILL_MIN`: the attribute of an added self loop."""
    fill_vec: Array
    """``(H,)``: the edge term of a constant ``fill_value`` (:data:`FILL_CONST`)."""
    slope: np.floating
    """The LeakyReLU's negative slope, in the arrays' dtype."""
    concat: bool
    """Concatenate the heads (``out (N, H·C)``), else average them (``(N, C)``)."""
    bias: Array
    """``(width,)`` added to every output row; ``(0,)``: no bias."""


class GATv2Tables(NamedTuple):
    """What :class:`~ruvattn.mechanisms.gat.GATv2Conv` gives :func:`gatv2_attend` (fields as :class:`GATTables`
    where the names agree)."""

    msg: Array
    """``(Ns, H·C)``: the messages ``W_l x_j + b_l``."""
    xl: Array
    """``(Ns, H·C)``: the source side of the score, ``W_l x_j + b_l`` (usually ``msg`` itself)."""
    xr: Array
    """``(Nd, H·C)``: the target side, ``W_r x_i + b_r``."""
    att: Array
    """``(H, C)``: the attention vector per head."""
    we_t: Array
    """``(edge_dim, H·C)``: ``lin_edge.weight`` transposed, applied edge by edge; ``(0, H·C)`` without ``edge_dim``."""
    use_edge: bool
    """Whether this call has edge features."""
    fill_mode: int
    """:data:`FILL_CONST` ... :data:`FILL_MIN`: the attribute of an added self loop."""
    fill_vec: Array
    """``(edge_dim,)``: a constant ``fill_value``'s attribute (:data:`FILL_CONST`)."""
    slope: np.floating
    """The LeakyReLU's negative slope, in the arrays' dtype."""
    concat: bool
    """Concatenate the heads, else average them."""
    bias: Array
    """``(width,)`` added to every output row; ``(0,)``: no bias."""


@_serial
def group_by_target(src, dst, num_nodes, self_loops, rows, use_rows, indptr, slot_src, slot_edge, slot_rows):
    """Stable counting sort of the edges by target into ``indptr (N + 1,)``, ``slot_src``, ``slot_edge``.

    ``slot_src`` and ``slot_edge`` need room for ``E + N`` slots (``E`` without
    ``self_loops``); ``indptr[N]`` is the number used.  When ``use_rows``, the
    per-edge table ``rows (E, m)`` is carried into slot order on the way:
    ``slot_rows[k] = rows[slot_edge[k]]`` (self-loop slots are left untouched),
    so a kernel reads it sequentially.  Returns ``-1``, or the position of the
    first edge with an id outside ``[0, num_nodes)`` (the slots are then undefined).
    """
    num_edges = src.shape[0]
    indptr[:] = 0
    for e in range(num_edges):
        s = src[e]
        d = dst[e]
        if s < 0 or s >= num_nodes or d < 0 or d >= num_nodes:
            return e
        if not (self_loops and s == d):
            indptr[d + 1] += 1
    extra = 1 if self_loops else 0
    for i in range(num_nodes):
        indptr[i + 1] += indptr[i] + extra
    cursor = indptr[:num_nodes].copy()
    width = rows.shape[1]
    for e in range(num_edges):
        s = src[e]
        d = dst[e]
        if self_loops and s == d:
            continue
        k = cursor[d]
        cursor[d] = k + 1
        slot_src[k] = s
        slot_edge[k] = e
        if use_rows:
            for t in range(width):
                slot_rows[k, t] = rows[e, t]
    if self_loops:
        for i in range(num_nodes):
            k = cursor[i]
            slot_src[k] = i
            slot_edge[k] = num_edges + i
    return -1


@_serial
def csr_with_self_loops(indptr, indices, rows, use_rows, slot_indptr, slot_src, slot_edge, slot_rows):
    """The slots of a CSR adjacency with PyG's self-loop handling, in one sequential pass.

    Row ``i`` keeps its entries other than ``i`` itself, in order (edge id = CSR
    position), then gets one loop slot with source ``i`` and edge id ``nnz + i``.
    ``slot_src``/``slot_edge`` need room for ``nnz + N`` slots; ``slot_indptr[N]``
    is the number used.  When ``use_rows``, ``slot_rows[k] = rows[slot_edge[k]]``
    for the kept entries (loop slots are left untouched).  The CSR is trusted
    (validated by :class:`~ruvattn.graph.NeighbourList`).
    """
    num_nodes = indptr.shape[0] - 1
    nnz = indices.shape[0]
    width = rows.shape[1]
    k = 0
    slot_indptr[0] = 0
    for i in range(num_nodes):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j == i:
                continue
            slot_src[k] = j
            slot_edge[k] = p
            if use_rows:
                for t in range(width):
                    slot_rows[k, t] = rows[p, t]
            k += 1
        slot_src[k] = i
        slot_edge[k] = nnz + i
        k += 1
        slot_indptr[i + 1] = k


@_inline
def _loop_attr(edge_attr, eids, fill_mode, fill_vec, la):
    """The edge attribute of a self loop into ``la (edge_dim,)``, from the node's other incoming
    edges ``eids`` (``fill_vec`` for :data:`FILL_CONST`; zeros when ``eids`` is empty)."""
    m = eids.shape[0]
    width = la.shape[0]
    if fill_mode == FILL_CONST:
        la[:] = fill_vec
        return
    la[:] = 0
    if m == 0:
        return
    if fill_mode == FILL_MAX or fill_mode == FILL_MIN:
        e = eids[0]
        for t in range(width):
            la[t] = edge_attr[e, t]
        for k in range(1, m):
            e = eids[k]
            for t in range(width):
                v = edge_attr[e, t]
                la[t] = max(la[t], v) if fill_mode == FILL_MAX else min(la[t], v)
        return
    for k in range(m):
        e = eids[k]
        for t in range(width):
            la[t] += edge_attr[e, t]
    if fill_mode == FILL_MEAN:
        inv = la.dtype.type(1.0 / m)
        for t in range(width):
            la[t] *= inv


@_inline
def _finish(w, mx, ids, eids, msg, drop, use_drop, alpha, want_alpha, bias, use_bias, concat, acc, row):
    """Softmax each head's scores ``w (heads, n)``, apply dropout, store alpha, aggregate
    ``sum_k w[h, k] msg[ids[k], head block]`` and write ``row`` (concat or head mean, plus bias).

    Returns :data:`OK` or :data:`NONFINITE` (the output overflowed).  The hot loops index
    the 2-D arrays directly: a row view per edge would cost two atomic reference counts.
    """
    heads, n = w.shape
    ch = msg.shape[1] // heads
    for h in range(heads):  # the softmax, with each head's max already found by the score loop
        row_h = w[h]
        inv = 1 / exp_sum(row_h, mx[h])
        for k in range(n):
            row_h[k] *= inv
    if use_drop:
        for k in range(n):
            e = eids[k]
            for h in range(heads):
                w[h, k] *= drop[e, h]
    if want_alpha:
        for k in range(n):
            e = eids[k]
            for h in range(heads):
                alpha[e, h] = w[h, k]
    dest = row if concat else acc
    dest[:] = 0
    k = 0
    while k + 2 <= n:  # two messages per pass over the output row (measured: 2x one, faster than 4)
        j0 = ids[k]
        j1 = ids[k + 1]
        for h in range(heads):
            a0 = w[h, k]
            a1 = w[h, k + 1]
            base = h * ch
            for c in range(ch):
                dest[base + c] += a0 * msg[j0, base + c] + a1 * msg[j1, base + c]
        k += 2
    if k < n:
        j0 = ids[k]
        for h in range(heads):
            a0 = w[h, k]
            base = h * ch
            for c in range(ch):
                dest[base + c] += a0 * msg[j0, base + c]
    if not concat:
        inv = row.dtype.type(1.0 / heads)
        for c in range(ch):
            total = row.dtype.type(0)
            for h in range(heads):
                total += acc[h * ch + c]
            row[c] = total * inv
    ok = True
    for c in range(row.shape[0]):
        if use_bias:
            row[c] += bias[c]
        if not _is_finite(row[c]):
            ok = False
    return OK if ok else NONFINITE


@_inline
def _no_edges(row, bias, use_bias):
    """The output row of a node without incoming edges: the bias, or zeros."""
    for c in range(row.shape[0]):
        row[c] = bias[c] if use_bias else row.dtype.type(0)
    return EMPTY


@_serial
def gat_chunk(t, graph, edge_attr, drop, alpha, out, status, first, last):
    """Target nodes ``first..last-1`` of :func:`gat_attend`, one scratch buffer for the whole chunk."""
    # every field read once, before the node loop (a tuple member read in the loop costs a reference count)
    a_src, a_dst, msg, a_edge, me = t.a_src, t.a_dst, t.msg, t.a_edge, t.me
    use_edge, fill_mode, fill_vec, slope, concat, bias = t.use_edge, t.fill_mode, t.fill_vec, t.slope, t.concat, t.bias
    indptr, slot_src, slot_edge = graph.indptr, graph.src, graph.edge
    num_edges, self_loops = graph.num_edges, graph.self_loops
    use_drop = drop.shape[0] > 0
    want_alpha = alpha.shape[0] > 0
    use_bias = bias.shape[0] > 0
    heads = a_src.shape[1]
    dt = a_src.dtype
    widest = widest_row(indptr, first, last)
    w_buf = np.empty(heads * widest, dt)
    acc = np.empty(msg.shape[1], dt)
    loop_term = np.zeros(heads, dt)
    mx = np.empty(heads, dt)
    la = np.empty(edge_attr.shape[1], dt)
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        n = hi - lo
        if n == 0:
            status[i] = _no_edges(out[i], bias, use_bias)
            continue
        ids = slot_src[lo:hi]
        eids = slot_edge[lo:hi]
        if use_edge and self_loops:  # the edge term of the self loop, the last slot
            if fill_mode == FILL_CONST:
                loop_term[:] = fill_vec
            elif fill_mode == FILL_MEAN or fill_mode == FILL_ADD:  # linear: reduce the terms, not the attributes
                scale = dt.type(1.0 / (n - 1)) if fill_mode == FILL_MEAN and n > 1 else dt.type(1)
                for h in range(heads):
                    total = dt.type(0)
                    for k in range(lo, hi - 1):
                        total += a_edge[k, h]
                    loop_term[h] = total * scale
            else:
                _loop_attr(edge_attr, eids[: n - 1], fill_mode, fill_vec, la)
                for h in range(heads):
                    total = dt.type(0)
                    for tt in range(la.shape[0]):
                        total += la[tt] * me[tt, h]
                    loop_term[h] = total
        w = w_buf[: heads * n].reshape((heads, n))
        check = dt.type(0)
        mx[:] = -np.inf
        for k in range(n):
            e = eids[k]
            j = ids[k]
            for h in range(heads):
                s = a_src[j, h] + a_dst[i, h]
                if use_edge:
                    s += a_edge[lo + k, h] if e < num_edges else loop_term[h]
                s = s if s > 0 else s * slope
                w[h, k] = s
                mx[h] = max(mx[h], s)
                check += s * 0
        if check != 0:
            out[i, :] = np.nan
            status[i] = NONFINITE
            continue
        status[i] = _finish(w, mx, ids, eids, msg, drop, use_drop, alpha, want_alpha, bias, use_bias, concat, acc,
                            out[i])  # fmt: skip


@_parallel
def gat_attend(t, graph, edge_attr, drop, alpha, out, status, size):
    """GAT attention at every target node of ``graph`` (:class:`Slots`) with the tables ``t``
    (:class:`GATTables`), parallel over chunks of ``size`` nodes (see
    :func:`~ruvattn.kernels.attention.chunk_size`; the work per chunk is :func:`gat_chunk`).

    For node ``i``'s slot ``k`` (source ``j``, edge id ``e``)::

        s[h, k] = LeakyReLU_slope(a_src[j, h] + a_dst[i, h] + a_edge[k, h])
        w[h, :] = softmax(s[h, :]) (* drop[e, h] with dropout)
        out[i, head block h] = sum_k w[h, k] msg[j, head block h]

    The self loop's edge term is ``fill_vec[h]`` (:data:`FILL_CONST`; the
    constant's term), the mean or sum of the node's other slots' terms
    (:data:`FILL_MEAN`/:data:`FILL_ADD`, by linearity), or ``la . me[:, h]`` with
    ``la`` the max/min of the node's ``edge_attr (E, edge_dim)`` rows.  ``out`` is
    ``(N, heads * C)`` with ``concat``, else ``(N, C)`` (mean over heads), plus
    the bias; ``alpha (E', heads)`` receives the weights (after dropout) unless
    empty.
    """
    n = graph.indptr.shape[0] - 1
    for c in prange((n + size - 1) // size):
        first = c * size
        gat_chunk(t, graph, edge_attr, drop, alpha, out, status, first, min(first + size, n))


@_serial
def gatv2_chunk(t, graph, edge_attr, drop, alpha, out, status, first, last):
    """Target nodes ``first..last-1`` of :func:`gatv2_attend`, one scratch buffer for the whole chunk."""
    xl, xr, msg, att, we_t = t.xl, t.xr, t.msg, t.att, t.we_t
    use_edge, fill_mode, fill_vec, slope, concat, bias = t.use_edge, t.fill_mode, t.fill_vec, t.slope, t.concat, t.bias
    indptr, slot_src, slot_edge = graph.indptr, graph.src, graph.edge
    num_edges, self_loops = graph.num_edges, graph.self_loops
    use_drop = drop.shape[0] > 0
    want_alpha = alpha.shape[0] > 0
    use_bias = bias.shape[0] > 0
    heads, ch = att.shape
    width = heads * ch
    dt = xl.dtype
    widest = widest_row(indptr, first, last)
    w_buf = np.empty(heads * widest, dt)
    acc = np.empty(msg.shape[1], dt)
    z = np.empty(width, dt)
    mx = np.empty(heads, dt)
    la = np.empty(edge_attr.shape[1], dt)
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        n = hi - lo
        if n == 0:
            status[i] = _no_edges(out[i], bias, use_bias)
            continue
        ids = slot_src[lo:hi]
        eids = slot_edge[lo:hi]
        if use_edge and self_loops:
            _loop_attr(edge_attr, eids[: n - 1], fill_mode, fill_vec, la)
        w = w_buf[: heads * n].reshape((heads, n))
        check = dt.type(0)
        mx[:] = -np.inf
        for k in range(n):
            j = ids[k]
            for c in range(width):
                z[c] = xl[j, c] + xr[i, c]
            if use_edge:
                e = eids[k]
                for tt in range(la.shape[0]):
                    xe = edge_attr[e, tt] if e < num_edges else la[tt]
                    for c in range(width):
                        z[c] += xe * we_t[tt, c]
            for h in range(heads):
                s = dt.type(0)
                for c in range(ch):
                    v = z[h * ch + c]
                    v = v if v > 0 else v * slope
                    s += att[h, c] * v
                w[h, k] = s
                mx[h] = max(mx[h], s)
                check += s * 0
        if check != 0:
            out[i, :] = np.nan
            status[i] = NONFINITE
            continue
        status[i] = _finish(w, mx, ids, eids, msg, drop, use_drop, alpha, want_alpha, bias, use_bias, concat, acc,
                            out[i])  # fmt: skip


@_parallel
def gatv2_attend(t, graph, edge_attr, drop, alpha, out, status, size):
    """GATv2 attention at every target node of ``graph`` with the tables ``t`` (:class:`GATv2Tables`),
    parallel over chunks of ``size`` nodes (:func:`gatv2_chunk`).

    For node ``i``'s slot ``k`` (source ``j``, edge id ``e``)::

        z = xl[j] + xr[i] + we_t^T edge_attr[e]            (heads * C,)
        s[h, k] = sum_c att[h, c] LeakyReLU_slope(z[h * C + c])
        w[h, :] = softmax(s[h, :]) (* drop[e, h] with dropout)
        out[i, head block h] = sum_k w[h, k] msg[j, head block h]

    The edge projection is applied edge by edge (no ``(E, heads * C)`` array).  A
    self loop's attribute comes from ``fill_mode``/``fill_vec``.  ``out``,
    ``bias``, ``alpha`` and ``drop`` as in :func:`gat_attend`.
    """
    n = graph.indptr.shape[0] - 1
    for c in prange((n + size - 1) // size):
        first = c * size
        gatv2_chunk(t, graph, edge_attr, drop, alpha, out, status, first, min(first + size, n))
