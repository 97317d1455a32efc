r"""Graph RoPE: rotary position embeddings with positions taken from the graph.

The query and every key are rotated by their positions before a scaled dot product (RoFormer, Su et
al. 2021); values are not rotated:

.. math::

    \theta_i = p \cdot b^{-2i/d}, \qquad
    s_j = \frac{(R(p_q)\,W_q q) \cdot (R(p_j)\,W_k k_j)}{\sqrt d\,T}, \qquad
    \text{out} = \sum_j \operatorname{softmax}(s)_j\, W_v v_j

:math:`R(p)` turns pair ``i`` of a row by :math:`\theta_i` (pairs ``(2i, 2i+1)`` in the ``interleaved``
layout of RoFormer and the golden corpus, ``(i, i + d/2)`` in the ``half`` layout of GPT-NeoX and
Hugging Face).  A rotation keeps norms, position 0 is the identity and, as
:math:`R(a)^\top R(b) = R(b - a)`, a score depends on the positions only through ``p_j - p_q``: the
query's node sits at position ``query_position`` (default 0) and a key at its graph distance, its HNSW
layer or any coordinate.  ``W_q, W_k, W_v`` (bias-free, the specification's ``w_q/w_k/w_v``) exist
with ``projections=True``; without them this is the golden ``rope_attn`` case.

Where positions come from:

* ``key_positions=`` ``(n,)`` on :meth:`GraphRoPE.forward` (``(nnz,)`` aligned with the neighbour ids on
  :meth:`~GraphRoPE.forward_neighbours`);
* :meth:`~ruvattn.mechanisms.Attention.forward_with_metadata` with a
  :class:`~ruvattn.graph.GraphMetadata`: ``position="distance"`` reads ``distances``, ``"layer"`` reads
  ``hnsw_layers`` (a missing field is :class:`~ruvattn.errors.InvalidConfig` naming it); ``buckets``
  (increasing edges) first maps a position to its bucket number, as hop-distance buckets;
* nothing: every key sits at position 0, the query's default, so the rotation cancels and this is
  scaled dot-product attention (on the projections).  Positions are never invented from a key's place
  in a list: masking a key, or reordering the keys, changes nothing for the rest, as in every other
  mechanism (for sequence RoPE pass ``key_positions=np.arange(n)``).

>>> import numpy as np
>>> from ruvattn import GraphRoPE
>>> rope = GraphRoPE(4)
>>> x = np.array([[1.0, 0.0, 1.0, 0.0]])
>>> rope.rotate(x, [np.pi / 2]).round(6).tolist()  # pair 0 turns by pi/2, pair 1 by pi/2 / 100
[[0.0, 1.0, 0.999877, 0.015707]]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param, ParamSet
from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.graph.metadata import GraphMetadata
from ruvattn.kernels import rope as R
from ruvattn.mechanisms.base import (
    DIM,
    SCALE,
    SEED,
    TEMPERATURE,
    Attention,
    Complexity,
    Gradients,
    Prepared,
    register,
    softmax_attention_grads,
)

__all__ = ["GraphRoPE"]

Array = NDArray[np.floating]
#: tables of at least this many entries are rotated in parallel (batch and neighbour forms only)
_PARALLEL_ENTRIES = 1 << 16


def _buckets(owner: str, name: str, value: Any) -> tuple[float, ...]:
    """Strictly increasing, finite bucket edges as a tuple."""
    try:
        edges = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        edges = None
    if (
        edges is None
        or edges.ndim != 1
        or edges.size == 0
        or not np.isfinite(edges).all()
        or (np.diff(edges) <= 0).any()
    ):
        raise InvalidConfig(
            f"{owner}: '{name}' must be a non-empty, strictly increasing list of finite numbers; got {value!r}."
        )
    return tuple(float(e) for e in edges)


_BUCKETS = V.Custom(_buckets, "a strictly increasing list of finite numbers")


@register("graph_rope")
class GraphRoPE(Attention):
    """Rotary attention with graph positions (see the module docstring)."""

    forward_options = frozenset({"key_positions", "query_position", "mask", "bias"})
    metadata_fields = ("distances", "hnsw_layers")
    supports_backward = True
    params = (
        DIM,
        Param("base", V.Real(1.0, None, closed="neither"), 10000.0, "frequency base b of the rotation angles"),
        Param("layout", V.Options("interleaved", "half"), "interleaved", "rotated pairs: (2i, 2i+1) or (i, i+d/2)"),
        Param("position", V.Options("distance", "layer"), "distance", "the GraphMetadata field giving key positions"),
        Param(
            "buckets",
            _BUCKETS,
            None,
            "edges mapping positions to bucket numbers (np.digitize)",
            none=True,
            encode=list,
        ),
        Param("projections", V.FLAG, False, "learned bias-free W_q, W_k, W_v (dim x dim)", live=False),
        SCALE,
        TEMPERATURE,
        SEED,
    )

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        if p.dim % 2:
            raise InvalidConfig(f"{owner}: 'dim' must be even (RoPE turns pairs of components); got {p.dim}.")

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        return {"dim": dim + dim % 2, "projections": True}

    def _init_state(self) -> None:
        d = self.config.dim
        rng = np.random.default_rng(self.config.seed)
        bound = np.sqrt(6.0 / (2 * d))  # xavier_uniform
        if self.config.projections:
            for name in ("w_q", "w_k", "w_v"):
                self._state_set(f"{name}.weight", rng.uniform(-bound, bound, (d, d)).astype(np.float32))

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.hidden_dim
        return {f"{n}.weight": (d, d) for n in ("w_q", "w_k", "w_v")} if self.config.projections else {}

    @property
    def complexity(self) -> Complexity:
        return Complexity("linear", "O(n·d) time per query (O(n·d²) more with projections), O(n·d) memory")

    # -- the rotation -------------------------------------------------------------------------------
    def inverse_frequencies(self) -> NDArray[np.float64]:
        """``base ** (-2i/d)``, ``i = 0 .. d/2 - 1`` (float64)."""
        d = self.hidden_dim
        return float(self.config.base) ** (-np.arange(0, d, 2, dtype=np.float64) / d)

    def rotate(self, x: Any, positions: Any, *, inverse: bool = False) -> Array:
        """Rows ``x (n, d)`` (or one ``(d,)``) rotated by ``positions (n,)`` (or a scalar for one row);
        ``inverse=True`` turns them back (the transpose).  The specification's ``apply_rotation``."""
        op = f"{self.kind}.rotate"
        one = np.ndim(x) == 1
        arr = V.as_array(np.atleast_2d(x), op, "x", 2)
        V.check_width(op, "x", arr, self.hidden_dim)
        pos = self._positions(op, np.atleast_1d(positions) if one else positions, arr.shape[0], "positions")
        out = self._rotated(arr, pos, -1.0 if inverse else 1.0, many=True)
        return out[0] if one else out

    def _rotated(self, x: Array, pos: NDArray[np.float64], sign: float = 1.0, many: bool = False) -> Array:
        """``x`` rotated row by row; ``many`` (a batch or neighbour lists) lets a large table use Numba's threads
        (one query's keys never do: the single-query forms launch no parallel kernel)."""
        out = np.empty_like(x)
        kernel = R.rotate_many if many and x.size >= _PARALLEL_ENTRIES else R.rotate
        kernel(x, pos, self.inverse_frequencies(), self.config.layout == "half", sign, out)
        return out

    def _positions(self, op: str, positions: Any, n: int, name: str) -> NDArray[np.float64]:
        """Positions ``(n,)`` as float64 (bucketed when ``buckets`` is set); zeros for ``None``."""
        if positions is None:
            return np.zeros(n, dtype=np.float64)
        try:
            pos = np.asarray(positions)
        except ValueError:
            raise DimensionMismatch(f"{op}: {name} must be a flat array of numbers; got ragged rows.") from None
        if pos.ndim != 1 or pos.shape[0] != n:
            raise DimensionMismatch(f"{op}: {name} has shape {pos.shape}, expected ({n},), one per key.")
        if pos.size and pos.dtype.kind not in "fiu":
            raise DimensionMismatch(f"{op}: {name} must hold real numbers; got dtype {pos.dtype}.")
        pos = pos.astype(np.float64)
        if not np.isfinite(pos).all():
            raise NumericalInstability(f"{op}: {name} holds NaN or infinite entries.")
        if self.config.buckets is not None:
            pos = np.digitize(pos, self.config.buckets).astype(np.float64)
        return pos

    def _query_position(self, op: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise DimensionMismatch(f"{op}: query_position must be one real number; got {value!r}.")
        pos = self._positions(op, np.array([float(value)]), 1, "query_position")
        return float(pos[0])

    # -- metadata -----------------------------------------------------------------------------------
    def _metadata_options(self, op: str, metadata: GraphMetadata, n: int) -> dict[str, Any]:
        field = "distances" if self.config.position == "distance" else "hnsw_layers"
        return {"key_positions": metadata.require(self.kind, field, n)}

    # -- projections --------------------------------------------------------------------------------
    def _projection(self, name: str, dt: np.dtype) -> Array | None:
        if not self.config.projections:
            return None
        return self._state_get(f"{name}.weight").astype(dt, copy=False)

    def _project(self, x: Array, name: str) -> Array:
        w = self._projection(name, x.dtype)
        if w is None:
            return x
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is checked by the caller, typed
            return x @ w.T

    def _inputs(
        self, op: str, queries: Any, keys: Any, values: Any, single: bool
    ) -> tuple[Array, Array, Array | None, np.dtype]:
        if isinstance(keys, Prepared):
            keys, values = self._unprepare(op, keys, values)
        qs, k, v, dt = self._tables(op, queries, keys, values, "query" if single else "queries")
        V.check_finite(op, **({"query": qs} if single else {"queries": qs}), keys=k)
        if values is not None:
            if self.config.projections:  # W_v is (dim, dim)
                V.check_width(op, "values", v, self.hidden_dim)
            V.check_finite(op, values=v)
        return np.atleast_2d(qs), k, (v if values is not None else None), dt

    def _rotated_qk(
        self, op: str, q: Array, k: Array, key_positions: Any, qpos: NDArray[np.float64]
    ) -> tuple[Array, Array, NDArray[np.float64]]:
        kpos = self._positions(op, key_positions, k.shape[0], "key_positions")
        many = q.shape[0] > 1
        qr = self._rotated(np.ascontiguousarray(self._project(q, "w_q")), qpos, many=many)
        kr = self._rotated(np.ascontiguousarray(self._project(k, "w_k")), kpos, many=many)
        if not (np.isfinite(qr).all() and np.isfinite(kr).all()):
            raise NumericalInstability(f"{op}: the projected query or keys overflowed {q.dtype.name}; scale them down.")
        return qr, kr, kpos

    def _values(self, op: str, v: Array) -> Array:
        vp = np.ascontiguousarray(self._project(v, "w_v"))
        if not np.isfinite(vp).all():
            raise NumericalInstability(f"{op}: the projected values overflowed {v.dtype.name}; scale them down.")
        return vp

    # -- forms ------------------------------------------------------------------------------------
    def forward(
        self,
        query: Any,
        keys: Any,
        values: Any = None,
        *,
        key_positions: Any = None,
        query_position: float = 0.0,
        mask: Any = None,
        bias: Any = None,
    ) -> Array:
        """Output ``(dv,)`` of one query at ``query_position`` over keys at ``key_positions (n,)`` (default 0)."""
        op = f"{self.kind}.forward"
        keys, values = self._kv(op, keys, values)
        q, k, v, _ = self._inputs(op, query, keys, values, True)
        qpos = np.array([self._query_position(op, query_position)])
        qr, kr, _ = self._rotated_qk(op, q, k, key_positions, qpos)
        out, _, _ = self._one(op, qr[0], kr, self._values(op, v), mask, bias, None, 1, self._scale(self.hidden_dim))
        return out

    def _weights_one(
        self,
        op: str,
        query: Any,
        keys: Any,
        *,
        key_positions: Any = None,
        query_position: float = 0.0,
        mask: Any = None,
        bias: Any = None,
    ) -> Array:
        q, k, _, _ = self._inputs(op, query, keys, None, True)
        qpos = np.array([self._query_position(op, query_position)])
        qr, kr, _ = self._rotated_qk(op, q, k, key_positions, qpos)
        return self._one(op, qr[0], kr, None, mask, bias, None, 1, self._scale(self.hidden_dim))[1]

    def _batch_positions(self, op: str, query_positions: Any, m: int) -> NDArray[np.float64]:
        return np.zeros(m) if query_positions is None else self._positions(op, query_positions, m, "query_positions")

    def forward_batch(
        self,
        queries: Any,
        keys: Any,
        values: Any = None,
        *,
        key_positions: Any = None,
        query_positions: Any = None,
        mask: Any = None,
        bias: Any = None,
    ) -> Array:
        """Queries ``(m, d)`` at ``query_positions (m,)`` (default 0) over one key set -> ``(m, dv)``."""
        op = f"{self.kind}.forward_batch"
        keys, values = self._kv(op, keys, values)
        q, k, v, _ = self._inputs(op, queries, keys, values, False)
        qr, kr, _ = self._rotated_qk(op, q, k, key_positions, self._batch_positions(op, query_positions, q.shape[0]))
        sc = self._scale(self.hidden_dim)
        return self._many(op, qr, kr, self._values(op, v), mask, bias, 1, sc, False)[0]

    def _weights_batch(
        self,
        op: str,
        queries: Any,
        keys: Any,
        *,
        key_positions: Any = None,
        query_positions: Any = None,
        mask: Any = None,
        bias: Any = None,
    ) -> Array:
        q, k, _, _ = self._inputs(op, queries, keys, None, False)
        qr, kr, _ = self._rotated_qk(op, q, k, key_positions, self._batch_positions(op, query_positions, q.shape[0]))
        w = self._many(op, qr, kr, None, mask, bias, 1, self._scale(self.hidden_dim), True)[1]
        return w.transpose(1, 0, 2)

    def _edge_inputs(
        self, op: str, queries: Any, keys: Any, values: Any, neighbours: Any, key_positions: Any, query_positions: Any
    ) -> tuple[Array, Array, Array | None, NeighbourList, Array, NDArray[np.float64], NDArray[np.float64]]:
        """Rotated queries ``(N, d)`` and rotated gathered keys ``(nnz, d)`` (one per edge, at the edge's
        position), projected values gathered likewise."""
        q, k, v, _ = self._inputs(op, queries, keys, values, False)
        nl = as_neighbours(op, neighbours, q.shape[0], k.shape[0])
        epos = self._positions(op, key_positions, nl.nnz, "key_positions")
        qpos = self._batch_positions(op, query_positions, q.shape[0])
        qr, kr, _ = self._rotated_qk(op, q, k[nl.indices], epos, qpos)
        vg = None if v is None else self._values(op, v)[nl.indices]
        return qr, kr, vg, nl, k, epos, qpos

    def forward_neighbours(
        self, queries: Any, keys: Any, values: Any, neighbours: Any, *, key_positions: Any = None,
        query_positions: Any = None,
    ) -> Array:  # fmt: skip
        """Node ``i`` over its own neighbour rows; ``key_positions (nnz,)`` per edge, aligned with the ids
        (default 0), ``query_positions (N,)`` (default 0)."""
        op = f"{self.kind}.forward_neighbours"
        keys, values = self._kv(op, keys, values)
        qr, kr, vg, nl, _, _, _ = self._edge_inputs(
            op, queries, keys, values, neighbours, key_positions, query_positions
        )
        edges = NeighbourList(nl.indptr, np.arange(nl.nnz, dtype=np.int64), nl.nnz)
        return self._neighbours(op, qr, kr, vg, edges, 1, self._scale(self.hidden_dim), False)[0]

    def _weights_neighbours(
        self,
        op: str,
        queries: Any,
        keys: Any,
        neighbours: Any,
        *,
        key_positions: Any = None,
        query_positions: Any = None,
    ) -> Array:
        qr, kr, _, nl, _, _, _ = self._edge_inputs(op, queries, keys, None, neighbours, key_positions, query_positions)
        edges = NeighbourList(nl.indptr, np.arange(nl.nnz, dtype=np.int64), nl.nnz)
        return self._neighbours(op, qr, kr, None, edges, 1, self._scale(self.hidden_dim), True)[1]

    # -- gradients ----------------------------------------------------------------------------------
    def backward(
        self,
        query: Any,
        keys: Any,
        values: Any,
        grad_output: Any,
        *,
        key_positions: Any = None,
        query_position: float = 0.0,
        query_positions: Any = None,
        mask: Any = None,
        bias: Any = None,
    ) -> Gradients:
        r"""Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)``
        (``query_positions`` for a batch).  The rotation is orthogonal, so a gradient with respect to a
        rotated row turns back by the inverse rotation: :math:`\nabla_{k_j} = W_k^\top R(p_j)^\top
        \nabla_{\tilde k_j}`; the projections' gradients are :math:`\nabla_{\tilde x}^\top x`.  Positions
        are data (no gradient)."""
        op = f"{self.kind}.backward"
        single = np.ndim(query) == 1
        q, k, v, dt = self._inputs(op, query, keys, values, single)
        if values is None:
            raise V.values_required(op, "the gradient with respect to the values")
        if single:
            if query_positions is not None:
                raise DimensionMismatch(f"{op}: query_positions is for a batch; give query_position for one query.")
            qpos = np.array([self._query_position(op, query_position)])
        else:
            if query_position != 0.0:
                raise DimensionMismatch(f"{op}: query_position is for one query; give query_positions for a batch.")
            qpos = self._batch_positions(op, query_positions, q.shape[0])
        qr, kr, kpos = self._rotated_qk(op, q, k, key_positions, qpos)
        vp = self._values(op, v)
        sc = self._scale(self.hidden_dim)
        _, w, _ = self._many(op, qr, kr, None, mask, bias, 1, sc, True)
        p = w[:, 0]
        g = self._upstream(op, grad_output, q.shape[0], vp.shape[1], single, dt)
        dqr, dkr, dvp = softmax_attention_grads(qr, kr, vp, p, g, sc)
        dqp = self._rotated(np.ascontiguousarray(dqr, dtype=dt), qpos, -1.0)
        dkp = self._rotated(np.ascontiguousarray(dkr, dtype=dt), kpos, -1.0)
        params: dict[str, Array] = {}
        if self.config.projections:
            wq, wk, wv = (self._projection(n, dt) for n in ("w_q", "w_k", "w_v"))
            params = {"w_q.weight": dqp.T @ q, "w_k.weight": dkp.T @ k, "w_v.weight": dvp.T @ v}
            dq, dk, dv = dqp @ wq, dkp @ wk, dvp @ wv
        else:
            dq, dk, dv = dqp, dkp, dvp
        gq, gk, gv = (V.check_output(op, a.astype(dt, copy=False), dt) for a in (dq, dk, dv))
        grads = {n: V.check_output(op, a.astype(dt, copy=False), dt) for n, a in params.items()}
        return Gradients(gq[0] if single else gq, gk, gv, grads)

    def backward_neighbours(
        self, queries: Any, keys: Any, values: Any, neighbours: Any, grad_output: Any, *, key_positions: Any = None,
        query_positions: Any = None, edge_features: Any = None,
    ) -> Gradients:  # fmt: skip
        """Gradients of ``sum(grad_output * forward_neighbours(...))`` for every node at once (per-edge rotated
        keys, per-node softmax sums by segment): scattered into the key and value tables."""
        op = f"{self.kind}.backward_neighbours"
        if edge_features is not None:
            raise InvalidConfig(f"{op}: GraphRoPE takes no edge features.")
        keys, values = self._kv(op, keys, values)
        qr, kr, vg, nl, k, epos, qpos = self._edge_inputs(op, queries, keys, values, neighbours, key_positions,
                                                           query_positions)  # fmt: skip
        q, _, v, dt = self._inputs(op, queries, keys, values, False)
        edges = NeighbourList(nl.indptr, np.arange(nl.nnz, dtype=np.int64), nl.nnz)
        sc = self._scale(self.hidden_dim)
        _, w, _, _ = self._neighbours(op, qr, kr, None, edges, 1, sc, True)
        p = w[0]
        g = self._upstream(op, grad_output, q.shape[0], vg.shape[1], False, dt)
        node = np.repeat(np.arange(nl.num_nodes), nl.degrees())
        dp = np.einsum("ej,ej->e", g[node], vg)
        rowsum = np.zeros(nl.num_nodes, dt)
        np.add.at(rowsum, node, p * dp)
        ds = p * (dp - rowsum[node])
        dqr = np.zeros_like(qr)
        np.add.at(dqr, node, sc * ds[:, None] * kr)
        dkr = sc * ds[:, None] * qr[node]
        dvg = p[:, None] * g[node]
        dqp = self._rotated(np.ascontiguousarray(dqr, dtype=dt), qpos, -1.0, many=True)
        dkp = self._rotated(np.ascontiguousarray(dkr, dtype=dt), epos, -1.0, many=True)
        kg, vgr = k[nl.indices], v[nl.indices]
        params: dict[str, Array] = {}
        if self.config.projections:
            wq, wk, wv = (self._projection(n, dt) for n in ("w_q", "w_k", "w_v"))
            params = {"w_q.weight": dqp.T @ q, "w_k.weight": dkp.T @ kg, "w_v.weight": dvg.T @ vgr}
            dq, dke, dve = dqp @ wq, dkp @ wk, dvg @ wv
        else:
            dq, dke, dve = dqp, dkp, dvg
        dk, dv = np.zeros(k.shape, dt), np.zeros(v.shape, dt)
        np.add.at(dk, nl.indices, dke)
        np.add.at(dv, nl.indices, dve)
        gq, gk, gv = (V.check_output(op, a.astype(dt, copy=False), dt) for a in (dq, dk, dv))
        grads = {n: V.check_output(op, a.astype(dt, copy=False), dt) for n, a in params.items()}
        return Gradients(gq, gk, gv, grads)

    def _warmup(self, ex: Any) -> None:
        n = ex.keys.shape[0]
        md = GraphMetadata(distances=np.arange(n, dtype=np.float64), hnsw_layers=np.zeros(n, np.int64))
        self.forward_with_metadata(ex.query, ex.keys, ex.values, md)
        self.forward(ex.query, ex.keys, ex.values, key_positions=np.linspace(0.0, 3.0, n), query_position=1.0)
        self.rotate(ex.keys, np.arange(n), inverse=True)
        out = np.empty_like(ex.keys)  # the parallel kernel, which only tables of 65,536+ entries reach
        R.rotate_many(ex.keys, np.arange(n, dtype=np.float64), self.inverse_frequencies(), False, 1.0, out)
