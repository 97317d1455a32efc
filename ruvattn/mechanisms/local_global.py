r"""Local + global attention (Longformer-style) over an ordered candidate list.

.. math::

    K = W(p) \cup G, \qquad
    w_j = \operatorname{softmax}_{j \in K}\Big(\frac{q \cdot k_j}{\sqrt{d}\,T}\Big), \qquad
    \text{out} = \sum_{j \in K} w_j v_j

exactly masked scaled dot-product attention over the kept keys ``K`` (Beltagy
et al. 2020).  The keys are an *ordered* list -- for an HNSW neighbour list,
ordered by distance -- and the query sits at ``position`` in it (0 by default:
the query's closest neighbour comes first).  The local window ``W(p)`` is the
``local_window`` entries nearest that position: centred on it, shifted to stay
inside the list, so at position 0 it is the first ``local_window`` entries (the
incumbent package centres it on the middle of the list instead and can miss the
best neighbour).  The global keys ``G`` are ``global_ids`` when given (for
example the positions of an HNSW index's upper-layer hubs) or else
``global_nodes`` landmarks spread evenly over the rest of the list.  At most
``local_window + global_nodes`` keys are read; the others are never touched
(cost O(k_local + k_global), whatever n is).

``SparseGraphAttention`` is the specification's name for the same mechanism:
``SparseGraphAttention(dim, local_window=10, global_nodes=5)`` keeps at most
15 of 1,000 neighbours.

Shapes: query ``(d,)``, keys ``(n, d)``, values ``(n, dv)`` -> output ``(dv,)``;
``attention_weights`` ``(n,)`` (exact zeros outside the kept keys);
``attention_mask(n)`` ``(n,)`` bool; ``forward_neighbours`` applies the same
selection to every node's own list (CSR / padded / ragged) -> ``(N, dv)``.

>>> import numpy as np
>>> attn = LocalGlobalAttention(4, local_window=10, global_nodes=5)
>>> int(attn.attention_mask(1000).sum()), attn.kept_positions(1000)[8:].tolist()
(15, [8, 9, 109, 307, 505, 703, 901])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param
from ruvattn.errors import InvalidConfig
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.kernels import attention as K
from ruvattn.mechanisms.base import (
    _NO_KEEP,
    DIM,
    SCALE,
    TEMPERATURE,
    Attention,
    Complexity,
    Example,
    Gradients,
    register,
    softmax_attention_grads,
)
from ruvattn.sparse import SparsityPattern

__all__ = ["LocalGlobalAttention", "SparseGraphAttention"]

Array = NDArray[np.floating]
Ids = NDArray[np.int64]


def window_start(n: int, position: int, window: int) -> int:
    """First position of the ``window`` entries nearest ``position`` in a list of ``n`` (centred, shifted inside)."""
    w = min(window, n)
    return int(min(max(position - (w - 1) // 2, 0), n - w))


def landmarks(n: int, lo: int, hi: int, count: int) -> Ids:
    """``count`` positions spread evenly over ``[0, n)`` outside the window ``[lo, hi)`` (all of them if fewer)."""
    rest = n - (hi - lo)
    if count <= 0 or rest <= 0:
        return np.empty(0, np.int64)
    if rest <= count:
        picks = np.arange(rest, dtype=np.int64)
    else:
        picks = (np.arange(count, dtype=np.int64) * rest) // count + rest // (2 * count)
    return np.where(picks < lo, picks, picks + (hi - lo))


@register("local_global")
class LocalGlobalAttention(Attention):
    """Local window around the query's position plus global keys (see the module docstring)."""

    forward_options = frozenset({"position", "global_ids", "ids"})
    supports_backward = True
    params = (
        DIM,
        Param("local_window", V.POSITIVE_INT, 32, "entries around the query's position that it attends to"),
        Param("global_nodes", V.NON_NEGATIVE_INT, 8, "landmark keys attended by every query (without global_ids)"),
        SCALE,
        TEMPERATURE,
    )

    def _init_state(self) -> None:
        self._kept_cache: dict[tuple[int, int], Ids] = {}
        # (n, dtype) -> (kept positions at position 0, typed scale): the hot path's one dict look-up
        self._fast: dict[tuple[int, np.dtype], tuple[Ids, np.floating]] = {}

    def _warmup(self, ex: Example) -> None:
        """Global ids given explicitly, in one query and in the neighbour form."""
        self.forward(ex.query, ex.keys, ex.values, global_ids=[len(ex.keys) - 1])
        self.weights(ex.query, ex.keys, global_ids=[len(ex.keys) - 1])
        self.forward_neighbours(ex.queries, ex.keys, ex.values, ex.neighbours, global_ids=[0])
        self.forward_batch(ex.queries, ex.keys, ex.values, positions=np.arange(len(ex.queries)))

    @property
    def complexity(self) -> Complexity:
        return Complexity("custom", "O((local_window + global_nodes)·d) time per query, independent of n")

    # -- which keys ------------------------------------------------------------
    def kept_positions(self, n: int, position: int = 0, global_ids: Any = None) -> Ids:
        """Ascending positions of the kept keys in a list of ``n`` (window around ``position`` ∪ global)."""
        op = f"{self.kind}.kept_positions"
        if global_ids is None:
            key = (n, position)
            cached = self._kept_cache.get(key)
            if cached is not None:
                return cached
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position < max(n, 1):
            raise InvalidConfig(f"{op}: 'position' must be an integer in [0, {n}); got {position!r}.")
        w = self.config.local_window
        lo = window_start(n, int(position), w)
        hi = lo + min(w, n)
        local = np.arange(lo, hi, dtype=np.int64)
        if global_ids is None:
            glob = landmarks(n, lo, hi, self.config.global_nodes)
        else:
            glob = V.as_ids(op, global_ids, n, "global_ids")
            V.check_ids(op, glob, n, "global_ids")
        kept = np.union1d(local, glob).astype(np.int64)
        if global_ids is None:
            if len(self._kept_cache) > 64:
                self._kept_cache.clear()
            self._kept_cache[(n, position)] = kept
        return kept

    def attention_mask(self, n: int, position: int = 0, global_ids: Any = None) -> NDArray[np.bool_]:
        """``(n,)`` keep-mask of one query (true = attended), the mask convention of every mechanism."""
        mask = np.zeros(n, bool)
        mask[self.kept_positions(n, position, global_ids)] = True
        return mask

    def count_nonzero(self, n: int, position: int = 0, global_ids: Any = None) -> int:
        """How many of ``n`` keys one query attends to (at most ``local_window + global_nodes``)."""
        return int(self.kept_positions(n, position, global_ids).size)

    def pattern(self, n: int, global_ids: Any = None) -> SparsityPattern:
        """The ``(n, n)`` :class:`~ruvattn.sparse.SparsityPattern` of a sequence, query ``i`` at position ``i``."""
        rows = [self.kept_positions(n, i, global_ids) for i in range(n)]
        return SparsityPattern.from_neighbours(rows, n)

    # -- forward ---------------------------------------------------------------
    def _run(
        self, op: str, query: Any, keys: Any, values: Any, position: int, global_ids: Any, ids: Any
    ) -> tuple[Array, Array, Ids, int]:
        q, k, v, dt = self._tables(op, query, keys, values, "query")
        rows, n = self._key_rows(op, ids, k)
        if rows is not None:  # the kept rows are read directly below: check every id first
            V.check_ids(op, rows, k.shape[0])
        if n == 0:
            V.raise_for_status(op, K.EMPTY)
        kept = self.kept_positions(n, position, global_ids)
        sel = kept if rows is None else rows[kept]
        w = np.empty((1, sel.size), dt)
        out = np.empty(v.shape[1] if values is not None else 0, dt)
        lse = np.empty(1, dt)
        sc = self._typed_scale(self.config.dim, dt)
        if position == 0 and global_ids is None and len(self._fast) < 64:
            self._fast[(n, dt)] = (kept, sc)
        if values is None:
            status = K.attend_weights(q, k, sel, True, _NO_KEEP, False, q, False, 1, sc, w, lse)
        else:
            status = K.attend_one_general(q, k, v, sel, True, _NO_KEEP, False, q, False, 1, sc, w, out, lse)
        if status:
            V.raise_for_status(op, status, query=q, keys=k[sel], values=None if values is None else v[sel])
        return out, w[0], kept, n

    def forward(
        self, query: Any, keys: Any, values: Any = None, *, position: int = 0, global_ids: Any = None, ids: Any = None
    ) -> Array:
        """Output ``(dv,)``: exact attention over the kept keys only (``ids``: rows of key/value tables)."""
        if ids is None and global_ids is None and position == 0:
            dt = self._plain_arrays(query, keys, values)  # the hot path: a few attribute reads
            if dt is not None:
                fast = self._fast.get((keys.shape[0], dt))
                if fast is not None:
                    out = np.empty(values.shape[1], dt)
                    if K.attend_ids(query, keys, values, fast[0], fast[1], out) == K.OK:
                        return out
        op = self.kind + ".forward"
        keys, values = self._kv(op, keys, values)
        return self._run(op, query, keys, values, position, global_ids, ids)[0]

    def _weights_one(
        self, op: str, query: Any, keys: Any, *, position: int = 0, global_ids: Any = None, ids: Any = None
    ) -> Array:
        """Weights ``(1, n)`` over the whole list: the softmax on the kept keys, exact zeros elsewhere."""
        _, w, kept, n = self._run(op, query, self._check_keys(op, keys), None, position, global_ids, ids)
        full = np.zeros((1, n), w.dtype)
        full[0, kept] = w
        return full

    def backward(
        self,
        query: Any,
        keys: Any,
        values: Any,
        grad_output: Any,
        *,
        position: Any = None,
        positions: Any = None,
        global_ids: Any = None,
    ) -> Gradients:
        """Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` at ``position``, or a batch
        ``(m, d)`` at ``positions`` (as :meth:`forward_batch`): masked scaled dot-product attention's, so the
        keys and values outside the kept set get zero gradients."""
        op = f"{self.kind}.backward"
        single = np.ndim(query) == 1
        if single and positions is not None:
            raise InvalidConfig(f"{op}: 'positions' is for a batch of queries; one query takes 'position'.")
        if not single and position is not None:
            raise InvalidConfig(f"{op}: 'position' is for one query; a batch of queries takes 'positions'.")
        position = 0 if position is None else position
        # the forward form's own checks (position and global_ids types and ranges, widths, finiteness) first
        if single:
            self.forward(query, keys, values, position=position, global_ids=global_ids)
        else:
            self.forward_batch(query, keys, values, positions=positions, global_ids=global_ids)
        keys, values = self._kv(op, keys, values)
        q = V.as_array(np.atleast_2d(query), op, "query", 2)
        k = V.as_array(keys, op, "keys", 2, q.dtype)
        v = V.as_array(values, op, "values", 2, q.dtype)
        V.check_keys_values(op, k, v)
        m = q.shape[0]
        if single:
            pos = [position]
        else:
            pos = np.zeros(m, np.int64) if positions is None else np.asarray(positions)
            if pos.shape != (m,) or (pos.size and pos.dtype.kind not in "iu"):
                raise InvalidConfig(f"{op}: 'positions' must be {m} integers (one per query); got shape {pos.shape}.")
        p = np.vstack([self._weights_one(op, q[i], k, position=int(pos[i]), global_ids=global_ids) for i in range(m)])
        g = self._upstream(op, grad_output, m, v.shape[1], single, p.dtype)
        grads = softmax_attention_grads(q.astype(p.dtype), k.astype(p.dtype), v.astype(p.dtype), p, g,
                                        self._scale(self.config.dim))  # fmt: skip
        gq, gk, gv = (V.check_output(op, x, p.dtype) for x in grads)
        return Gradients(gq[0] if single else gq, gk, gv)

    def forward_batch(
        self, queries: Any, keys: Any, values: Any = None, *, positions: Any = None, global_ids: Any = None
    ) -> Array:
        """``(m, d)`` queries over one ordered key list -> ``(m, dv)``; query ``i`` sits at ``positions[i]``
        (default 0 for every query); parallel over queries."""
        op = self.kind + ".forward_batch"
        keys, values = self._kv(op, keys, values)
        qs = V.as_array(queries, op, "queries", 2)
        k = V.as_array(keys, op, "keys", 2)
        m, n = qs.shape[0], k.shape[0]
        if n == 0 and m:
            V.raise_for_status(op, K.EMPTY)
        pos = np.zeros(m, np.int64) if positions is None else np.asarray(positions)
        if pos.shape != (m,) or (pos.size and pos.dtype.kind not in "iu"):
            raise InvalidConfig(f"{op}: 'positions' must be {m} integers (one per query); got shape {pos.shape}.")
        rows = [self.kept_positions(n, int(p), global_ids) for p in pos]
        nl = as_neighbours(op, rows, m, n) if m else NeighbourList(np.zeros(1, np.int64), np.empty(0, np.int64), n)
        return self._neighbours(op, qs, k, values, nl, 1, self._scale(self.config.dim), False)[0]

    def _reduce(self, op: str, nl: NeighbourList, global_ids: Any) -> tuple[NeighbourList, Ids]:
        """Each node's list cut to its kept entries (window at position 0 plus global), as a new CSR,
        and the kept entries' positions in the original list."""
        if global_ids is not None:
            sizes = nl.degrees()
            where = [
                nl.indptr[i] + self.kept_positions(int(sizes[i]), 0, global_ids) if sizes[i] else np.empty(0, np.int64)
                for i in range(nl.num_nodes)
            ]
            flat = np.concatenate(where).astype(np.int64) if where else np.empty(0, np.int64)
            counts = np.array([w.size for w in where], np.int64)
            indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            return NeighbourList(indptr, nl.indices[flat], nl.num_keys), flat
        deg = nl.degrees()
        node = np.repeat(np.arange(nl.num_nodes), deg)
        pos = np.arange(nl.nnz) - nl.indptr[node]
        w, g = self.config.local_window, self.config.global_nodes
        keep = pos < w
        for d in np.unique(deg[deg > w]):
            marks = landmarks(int(d), 0, w, g)
            if marks.size:
                rows = np.flatnonzero(deg == d)
                keep[(nl.indptr[rows][:, None] + marks[None, :]).ravel()] = True
        counts = np.bincount(node[keep], minlength=nl.num_nodes)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return NeighbourList(indptr, nl.indices[keep], nl.num_keys), np.flatnonzero(keep)

    def forward_neighbours(
        self, queries: Any, keys: Any, values: Any, neighbours: Any, *, global_ids: Any = None
    ) -> Array:
        """Node ``i`` over its own ordered neighbour list, cut to the first ``local_window`` entries plus the
        global ones (``global_ids``: positions in every list, or landmarks); parallel over nodes."""
        op = self.kind + ".forward_neighbours"
        qs = V.as_array(queries, op, "queries", 2)
        k = V.as_array(keys, op, "keys", 2)
        nl, _ = self._reduce(op, as_neighbours(op, neighbours, qs.shape[0], k.shape[0]), global_ids)
        return self._neighbours(op, qs, k, values, nl, 1, self._scale(self.config.dim), False)[0]

    def _weights_neighbours(
        self, op: str, queries: Any, keys: Any, neighbours: Any, *, global_ids: Any = None
    ) -> Array:
        """Weights ``(1, nnz)`` aligned with the given lists: exact zeros on the entries the window
        and the global positions leave out."""
        qs = V.as_array(queries, op, "queries", 2)
        k = V.as_array(keys, op, "keys", 2)
        full = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
        nl, where = self._reduce(op, full, global_ids)
        _, w, _, _ = self._neighbours(op, qs, k, None, nl, 1, self._scale(self.config.dim), True)
        out = np.zeros((1, full.nnz), w.dtype)
        out[0, where] = w[0]
        return out


@register("sparse_graph")
class SparseGraphAttention(LocalGlobalAttention):
    """The specification's ``SparseGraphAttention``: :class:`LocalGlobalAttention` under that name."""
