r"""Dual-space cross-attention: a node attends over its graph neighbours and over its latent-space neighbours.

The specification's answer to an incomplete graph (FR-004.3): with :math:`\mathrm{A}(q, K, V)` scaled
dot-product attention,

.. math::

    z_g = \mathrm{A}(q, K, V), \qquad z_\ell = \mathrm{A}(q, K_\ell, V_\ell), \qquad
    z_c = \mathrm{A}(z_g, K_\ell, V_\ell), \\
    a = \operatorname{softmax}(W [z_g; z_\ell; z_c] + b), \qquad
    \text{out} = a_0 z_g + a_1 z_\ell + a_2 z_c

``K, V`` are the graph neighbours' keys and values (the ``keys``/``values`` of every form), ``K_l, V_l`` the
latent neighbours' -- the nodes nearest to the query in embedding space, which the graph may not link: given
as ``latent_keys``/``latent_values`` (one query) or ``latent_neighbours`` (neighbour lists over the same
tables, e.g. from :meth:`ruvattn.graph.hnsw.HNSWIndex.nearest_others`), or, when not given, the ``latent_k``
candidates with the largest :math:`q \cdot k` (what an index search over the candidates would return).  The
cross term lets the graph summary ask the latent neighbours its own question.  The gate ``W (3, 3d)``,
``b (3,)`` is learned (``gate.weight``, ``gate.bias``); at initialisation ``W = 0`` and ``b = 0``, so the three
parts are averaged.  Values have the keys' width ``d`` (the graph summary is a query of the cross term).

:meth:`DualSpaceAttention.weights` are the effective weights over ``[K; K_l]`` (over ``K`` alone when the
latent neighbours are chosen among the candidates): ``out = weights @ [V; V_l]`` exactly.  They depend on the
values (through the cross term's query and the gate): ``weights(q, keys, values=...)``, the keys by default.

>>> import numpy as np
>>> from ruvattn import DualSpaceAttention
>>> rng = np.random.default_rng(0)
>>> keys = rng.standard_normal((10, 4))
>>> m = DualSpaceAttention(4, latent_k=3)
>>> w = m.weights(keys[0], keys)
>>> bool(np.isclose(w.sum(), 1.0)), bool(np.allclose(w[0] @ keys, m.forward(keys[0], keys, keys)))
(True, True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param
from ruvattn.errors import EmptyInput, InvalidConfig, NumericalInstability
from ruvattn.graph import as_neighbours
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

__all__ = ["DualSpaceAttention"]

Array = NDArray[np.floating]


class _Pass(NamedTuple):
    """One query's forward pass, kept for the weights and the backward pass."""

    out: Array
    parts: Array  # (3, d): z_g, z_l, z_c
    gate: Array  # (3,)
    p_graph: Array  # (n,)
    p_latent: Array  # (nl,)
    p_cross: Array  # (nl,)
    lk: Array
    lv: Array
    chosen: NDArray[np.int64] | None  # rows of the keys picked as latent neighbours, or None when given


def _softmax(s: Array) -> Array:
    e = np.exp(s - s.max())
    return e / e.sum()


@register("dual_space")
class DualSpaceAttention(Attention):
    """Graph + latent-neighbour attention with a learned three-way gate (see the module docstring)."""

    forward_options = frozenset({"latent_keys", "latent_values"})
    supports_backward = True
    params = (
        DIM,
        Param("latent_k", V.POSITIVE_INT, 8, "latent neighbours taken from the candidates when none are given"),
        SCALE,
        TEMPERATURE,
        SEED,
    )

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        return {"dim": dim, "latent_k": 4}

    def _init_state(self) -> None:
        d = self.config.dim
        self._state_set("gate.weight", np.zeros((3, 3 * d), np.float32))
        self._state_set("gate.bias", np.zeros(3, np.float32))

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gate.weight": (3, 3 * self.hidden_dim), "gate.bias": (3,)}

    @property
    def complexity(self) -> Complexity:
        return Complexity("linear", "O((n + k_l)·d) time per query, O(n) memory (a top-k_l selection when chosen)")

    # -- one query -----------------------------------------------------------------------------------
    def _latent(
        self, op: str, q: Array, k: Array, v: Array | None, latent_keys: Any, latent_values: Any
    ) -> tuple[Array, Array | None, NDArray[np.int64] | None]:
        dt = k.dtype
        if latent_keys is None:
            if latent_values is not None:
                raise InvalidConfig(f"{op}: latent_values without latent_keys; give both or neither.")
            n = k.shape[0]
            kl = min(int(self.config.latent_k), n)
            s = k @ q
            chosen = np.sort(np.argsort(-s, kind="stable")[:kl])
            return k[chosen], (None if v is None else v[chosen]), chosen
        lk = V.as_array(latent_keys, op, "latent_keys", 2, dt)
        V.check_width(op, "latent_keys", lk, self.hidden_dim)
        if lk.shape[0] == 0:
            raise EmptyInput(f"{op}: latent_keys is empty; give at least one latent neighbour or omit it.")
        V.check_finite(op, latent_keys=lk)
        if v is None:
            return lk, None, None
        if latent_values is None:
            raise InvalidConfig(f"{op}: latent_keys without latent_values; give both.")
        lv = V.as_array(latent_values, op, "latent_values", 2, dt)
        V.check_keys_values(op, lk, lv)
        V.check_width(op, "latent_values", lv, self.hidden_dim)
        V.check_finite(op, latent_values=lv)
        return lk, lv, None

    def _pass(self, op: str, query: Any, keys: Any, values: Any, latent_keys: Any, latent_values: Any) -> _Pass:
        if isinstance(keys, Prepared):
            keys, values = self._unprepare(op, keys, values)
        q, k, v, dt = self._tables(op, query, keys, values, "query")
        if k.shape[0] == 0:
            raise EmptyInput(f"{op}: no keys to attend over.")
        V.check_width(op, "values", v, self.hidden_dim)
        V.check_finite(op, query=q, keys=k, values=v)
        lk, lv, chosen = self._latent(op, q, k, v, latent_keys, latent_values)
        assert lv is not None
        sc = self._scale(self.hidden_dim)
        with np.errstate(over="ignore", invalid="ignore"):
            p_graph = _softmax((k @ q) * sc)
            zg = p_graph @ v
            p_latent = _softmax((lk @ q) * sc)
            zl = p_latent @ lv
            p_cross = _softmax((lk @ zg) * sc)
            zc = p_cross @ lv
            parts = np.stack([zg, zl, zc])
            w, b = (self._state_get(n).astype(dt, copy=False) for n in ("gate.weight", "gate.bias"))
            gate = _softmax(w @ parts.reshape(-1) + b)
            out = gate @ parts
        for name, arr in (("scores", p_graph), ("scores", p_latent), ("scores", p_cross), ("gate", gate)):
            if not np.isfinite(arr).all():
                raise NumericalInstability(
                    f"{op}: the {name} overflowed {dt.name} (inputs are finite but too large, or the temperature too "
                    "small). Scale the inputs down or use float64."
                )
        out = V.check_output(op, out, dt)
        return _Pass(out, parts, gate, p_graph, p_latent, p_cross, lk, lv, chosen)

    def forward(
        self, query: Any, keys: Any, values: Any = None, *, latent_keys: Any = None, latent_values: Any = None
    ) -> Array:
        """Output ``(d,)`` of one query over its graph neighbours ``keys``/``values`` and latent neighbours."""
        op = f"{self.kind}.forward"
        keys, values = self._kv(op, keys, values)
        return self._pass(op, query, keys, values, latent_keys, latent_values).out

    def _weights_one(
        self,
        op: str,
        query: Any,
        keys: Any,
        *,
        values: Any = None,
        latent_keys: Any = None,
        latent_values: Any = None,
    ) -> Array:
        """Effective weights ``(1, n)`` over the keys (latent neighbours chosen among them) or ``(1, n + n_l)``
        over ``[keys; latent_keys]``.  The cross term's query and the gate read the values, so the weights depend
        on them: ``values`` (default: the keys, as when a node's embedding is both) and ``latent_values``
        (default: the latent keys)."""
        k = self._check_keys(op, keys)
        v = k if values is None else values
        lv = latent_values if latent_values is not None else latent_keys
        ps = self._pass(op, query, k, v, latent_keys, lv)
        latent = ps.gate[1] * ps.p_latent + ps.gate[2] * ps.p_cross
        if ps.chosen is not None:
            w = ps.gate[0] * ps.p_graph
            w[ps.chosen] += latent
        else:
            w = np.concatenate([ps.gate[0] * ps.p_graph, latent])
        return w[None, :]

    def forward_neighbours(
        self, queries: Any, keys: Any, values: Any, neighbours: Any, *, latent_neighbours: Any = None
    ) -> Array:
        """Node ``i`` over its graph neighbours (``neighbours``) and its latent neighbours (``latent_neighbours``
        over the same tables; default: its ``latent_k`` best-scoring graph neighbours).  A node without graph
        neighbours gets a zero row.  (A loop over nodes.)"""
        op = f"{self.kind}.forward_neighbours"
        keys, values = self._kv(op, keys, values)
        qs = V.as_array(queries, op, "queries", 2)
        k, v = self._key_value_tables(op, keys, values)
        nl = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
        lat = None if latent_neighbours is None else as_neighbours(op, latent_neighbours, qs.shape[0], k.shape[0])
        dt = np.result_type(qs.dtype, k.dtype)
        out = np.zeros((nl.num_nodes, v.shape[1]), dt)
        for i in range(nl.num_nodes):
            ids = nl.neighbours(i)
            if not ids.size:
                continue
            extra = {}
            if lat is not None:
                lids = lat.neighbours(i)
                if lids.size:
                    extra = {"latent_keys": k[lids], "latent_values": v[lids]}
            out[i] = self.forward(qs[i], k[ids], v[ids], **extra)
        return out

    # -- gradients ----------------------------------------------------------------------------------
    def backward(
        self,
        query: Any,
        keys: Any,
        values: Any,
        grad_output: Any,
        *,
        latent_keys: Any = None,
        latent_values: Any = None,
    ) -> Gradients:
        r"""Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)`` (a loop).

        With :math:`g` the upstream gradient and :math:`s_i = g \cdot z_i`: the gate's logits get
        :math:`a \odot (s - a \cdot s)`, each part :math:`a_i g + W_i^\top \delta`; the cross term's query
        gradient is added to :math:`z_g`'s before the graph attention's backward; latent neighbours chosen
        among the keys scatter their gradients back into the keys and values.  When ``latent_keys`` are given
        their gradients are not returned (the contract's ``Gradients`` has the keys and values only): pass
        them through :meth:`backward_latent`."""
        grads, _, _ = self.backward_latent(query, keys, values, grad_output, latent_keys=latent_keys,
                                           latent_values=latent_values)  # fmt: skip
        return grads

    def backward_latent(
        self,
        query: Any,
        keys: Any,
        values: Any,
        grad_output: Any,
        *,
        latent_keys: Any = None,
        latent_values: Any = None,
    ) -> tuple[Gradients, Array | None, Array | None]:
        """:meth:`backward` plus the gradients with respect to ``latent_keys`` and ``latent_values`` (``None``
        when the latent neighbours were chosen among the keys: theirs are in the keys' and values')."""
        op = f"{self.kind}.backward"
        if values is None:
            raise V.values_required(op, "the gradient with respect to the values")
        single = np.ndim(query) == 1
        qs = np.atleast_2d(np.asarray(query)) if not isinstance(query, np.ndarray) else np.atleast_2d(query)
        k = V.as_array(keys, op, "keys", 2)
        v = V.as_array(values, op, "values", 2)
        first = self._pass(op, qs[0], k, v, latent_keys, latent_values) if qs.shape[0] else None
        dt = first.out.dtype if first is not None else V.common_dtype(k, v)
        g = self._upstream(op, grad_output, qs.shape[0], self.hidden_dim, single, dt)
        q = V.as_array(qs, op, "query", 2, dt)
        k, v = k.astype(dt, copy=False), v.astype(dt, copy=False)
        w = self._state_get("gate.weight").astype(dt, copy=False)
        d = self.hidden_dim
        sc = self._scale(d)
        dq, dk, dv = np.zeros(q.shape, dt), np.zeros(k.shape, dt), np.zeros(v.shape, dt)
        dw, db = np.zeros(w.shape, dt), np.zeros(3, dt)
        dlk = dlv = None
        for i in range(q.shape[0]):
            ps = first if i == 0 else self._pass(op, q[i], k, v, latent_keys, latent_values)
            assert ps is not None
            gi = g[i]
            s = ps.parts @ gi
            dlogit = ps.gate * (s - ps.gate @ s)
            dw += np.outer(dlogit, ps.parts.reshape(-1))
            db += dlogit
            dparts = ps.gate[:, None] * gi[None, :] + (w.T @ dlogit).reshape(3, d)
            # cross: z_c = A(z_g, K_l, V_l)
            dzg_c, dlk_c, dlv_c = softmax_attention_grads(ps.parts[0][None], ps.lk, ps.lv, ps.p_cross[None],
                                                          dparts[2][None], sc)  # fmt: skip
            # latent: z_l = A(q, K_l, V_l)
            dq_l, dlk_l, dlv_l = softmax_attention_grads(q[i][None], ps.lk, ps.lv, ps.p_latent[None],
                                                         dparts[1][None], sc)  # fmt: skip
            # graph: z_g = A(q, K, V), upstream from the gate and from the cross term's query
            dq_g, dk_g, dv_g = softmax_attention_grads(q[i][None], k, v, ps.p_graph[None],
                                                       (dparts[0] + dzg_c[0])[None], sc)  # fmt: skip
            dq[i] = dq_l[0] + dq_g[0]
            dk += dk_g
            dv += dv_g
            lk_grad, lv_grad = dlk_c + dlk_l, dlv_c + dlv_l
            if ps.chosen is not None:
                dk[ps.chosen] += lk_grad
                dv[ps.chosen] += lv_grad
            else:
                dlk = lk_grad if dlk is None else dlk + lk_grad
                dlv = lv_grad if dlv is None else dlv + lv_grad
        gq, gk, gv = (V.check_output(op, a, dt) for a in (dq, dk, dv))
        params = {"gate.weight": V.check_output(op, dw, dt), "gate.bias": V.check_output(op, db, dt)}
        grads = Gradients(gq[0] if single else gq, gk, gv, params)
        return grads, dlk, dlv
