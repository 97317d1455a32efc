r"""Hyperbolic attention on the Poincaré ball.

.. math::

    w_j = \operatorname{softmax}_j\!\big(-d_c(q, k_j) / \tau\big), \qquad
    \text{out} = \exp_0\!\Big(\sum_j w_j \log_0(v_j)\Big)

with :math:`d_c` the geodesic distance on the ball of curvature :math:`-c`
(Ganea et al. 2018; the golden ``hyp_attn_*`` definition).  Nearby keys
(in the hyperbolic metric, which grows without bound towards the boundary,
so hierarchies embed with low distortion -- Nickel & Kiela 2017) get most of
the weight.  ``aggregation="midpoint"`` replaces the tangent-space mean by the
weighted Einstein midpoint (computed in the Klein model; the same point as
Ungar's Möbius gyromidpoint), used by hyperbolic attention networks
(Gulcehre et al. 2019).

``curvature`` is signed, as in the ruvector-attention specification:
``HyperbolicAttention(128, curvature=-1.0)``; a non-negative value raises
:class:`~ruvattn.errors.InvalidConfig`.

Inputs must be points of the ball: a query, key or value on or outside the
boundary (``c|x|² >= 1``) raises :class:`~ruvattn.errors.OutOfBounds` naming the
argument and the row (map Euclidean data in with :meth:`embed`, or
``ball.expmap0``).  With ``project_inputs=True`` such points are instead pulled
to radius ``(1 - 1e-5)/√c`` (computed in float64).  Either way
a valid point closer than that to the boundary is clamped to that radius, so
every distance is finite, and the output is always strictly inside the ball --
radius at most ``(1 - eps)/√c`` with geoopt's margin ``eps`` (4e-3 for float32,
1e-5 for float64; :data:`ruvattn.geometry.PROJECT_EPS`).  The check is made by
the kernels inside the (rarely taken) clamp branches, so valid inputs pay
nothing for it; masked keys and the rows a call does not attend over (outside
``ids`` / the neighbour lists) are not read, so not checked.

With ``projections=True`` the query, keys and values first go through
Möbius-linear maps ``x ↦ (W ⊗ x) ⊕ b`` (Ganea et al. 2018), parameters
``wq_, wk_, wv_ (dim, dim)`` (Glorot-uniform from ``seed``) and ``bq_, bk_, bv_``
(points of the ball, initially 0).  The ball check then applies to the inputs as
passed (the maps are defined on the ball, and their outputs are the mechanism's
own points, always inside it); ``project_inputs=True`` pulls the inputs in before
the maps.

Shapes: query ``(d,)``, keys ``(n, d)``, values ``(n, dv)`` (points of the ball)
-> output ``(dv,)``; ``forward_batch`` ``(m, d)`` -> ``(m, dv)``;
``forward_neighbours`` over CSR / padded neighbour lists -> ``(N, dv)``.

>>> import numpy as np
>>> attn = HyperbolicAttention(2, curvature=-1.0)
>>> keys = np.array([[0.1, 0.0], [0.0, 0.95]])
>>> w = attn.attention_weights(np.array([0.1, 0.0]), keys)
>>> bool(w[0] > 0.9)  # the key near the query; the other is far in hyperbolic distance
True
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param
from ruvattn.errors import DimensionMismatch, OutOfBounds, Unsupported
from ruvattn.geometry import PROJECT_EPS, PoincareBall
from ruvattn.graph import as_neighbours
from ruvattn.kernels import hyperbolic as H
from ruvattn.kernels.attention import NONFINITE, chunk_size
from ruvattn.mechanisms.base import (
    _NO_IDS,
    _NO_KEEP,
    DIM,
    SEED,
    TEMPERATURE,
    Attention,
    Complexity,
    Example,
    Gradients,
    _mode_array,
    register,
)

__all__ = ["HyperbolicAttention"]

Array = NDArray[np.floating]
AGGREGATIONS = {"tangent": H.TANGENT, "midpoint": H.MIDPOINT}
_F32 = np.dtype(np.float32)
_EPS32 = PROJECT_EPS[_F32]
_EPS64 = PROJECT_EPS[np.dtype(np.float64)]
# (name, array (d,) or (N, d), the rows a call reads or None for all): what a ball check scans
_Item = tuple[str, Array, Any]


def _map0(x: NDArray[np.float64], c: float, which: str) -> NDArray[np.float64]:
    """``log_0`` (``which="log"``) or ``exp_0`` of the rows of ``x`` on the ball of curvature ``-c`` (float64)."""
    r = np.sqrt(c) * np.linalg.norm(x, axis=1)
    safe = np.where(r > 0, r, 1.0)
    f = np.arctanh(np.minimum(r, 1 - 1e-15)) / safe if which == "log" else np.tanh(r) / safe
    return np.where(r[:, None] > 0, f[:, None] * x, x)


def _map0_jacobian_parts(x: NDArray[np.float64], c: float, which: str) -> tuple[NDArray[np.float64], ...]:
    """``(f, g)`` with the Jacobian of ``log_0``/``exp_0`` at row ``x`` equal to ``f I + g x xᵀ``: ``f = s(a)``,
    ``g = c s'(a)/a`` for ``s(a) = artanh(a)/a`` or ``tanh(a)/a``, ``a = sqrt(c)|x|`` (series below 1e-3)."""
    a = np.sqrt(c) * np.linalg.norm(x, axis=1)
    small = a < 1e-3
    b = np.where(small, 1.0, a)
    if which == "log":
        b = np.minimum(b, 1 - 1e-15)
        f = np.where(small, 1 + a**2 / 3, np.arctanh(b) / b)
        h = np.where(small, 2 / 3 + 4 * a**2 / 5, (b / (1 - b**2) - np.arctanh(b)) / b**3)
    else:
        t = np.tanh(b)
        f = np.where(small, 1 - a**2 / 3, t / b)
        h = np.where(small, -2 / 3 + 8 * a**2 / 15, (b * (1 - t**2) - t) / b**3)
    return f, c * h


@register("hyperbolic")
class HyperbolicAttention(Attention):
    """Attention by hyperbolic distance on the Poincaré ball (see the module docstring)."""

    forward_options = frozenset({"mask", "ids"})
    supports_backward = True  # aggregation='tangent' without projections (the others raise Unsupported)
    params = (
        DIM,
        Param(
            "curvature",
            V.Curvature(-1, hint=" For flat space use ScaledDotProductAttention."),
            -1.0,
            "curvature -c of the Poincaré ball (radius 1/sqrt(c))",
        ),
        TEMPERATURE,
        Param(
            "aggregation",
            V.Options(*AGGREGATIONS),
            "tangent",
            "'tangent' (tangent-space mean at the origin) or 'midpoint' (Einstein midpoint)",
        ),
        Param("projections", V.FLAG, False, "Möbius-linear maps of queries, keys and values"),
        SEED,
        Param(
            "project_inputs",
            V.FLAG,
            False,
            "pull inputs on or outside the ball to radius (1 - 1e-5)/sqrt(c) instead of raising OutOfBounds",
        ),
    )

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        """The specification's form: distances on the ball, no projections (their state is tested on its own)."""
        return {"dim": dim}

    def _warmup(self, ex: Example) -> None:
        """The hot path (no projections), the midpoint aggregation, projected inputs and distances."""
        for variant in ({"projections": True}, {"aggregation": "midpoint"}, {"project_inputs": True}):
            m = type(self)(**{**self.get_params(), **variant})
            m.forward(ex.query, ex.keys, ex.values)
            m.forward(ex.query, ex.keys, ex.values, mask=np.arange(len(ex.keys)) % 2 == 0, ids=np.arange(len(ex.keys)))
            m.forward_batch(ex.queries, ex.keys, ex.values)
            m.forward_neighbours(ex.queries, ex.keys, ex.values, ex.neighbours)
            m.weights(ex.queries, ex.keys, neighbours=ex.neighbours)
            m.distances(ex.query, ex.keys)

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The Möbius-linear maps ``w{q,k,v} (d, d)`` and ``b{q,k,v} (d,)`` when ``projections``."""
        if not self.config.projections:
            return {}
        d = self.hidden_dim
        return {**{f"w{x}": (d, d) for x in "qkv"}, **{f"b{x}": (d,) for x in "qkv"}}

    def _init_state(self) -> None:
        cfg = self.config
        self.ball = PoincareBall(float(cfg.curvature))
        self._kappa = float(cfg.curvature)
        self._inv_tau = 1.0 / float(cfg.temperature)
        # the kernels' mode: the aggregation, and STRICT (raise OUTSIDE for points on or outside the ball)
        # when the points they are given are the caller's (no projections) and no projection is asked for
        strict = not cfg.project_inputs and not cfg.projections
        self._mode = AGGREGATIONS[cfg.aggregation] | (H.STRICT if strict else 0)
        if cfg.projections:
            d = cfg.dim
            rng = np.random.default_rng(cfg.seed)
            bound = np.sqrt(6.0 / (2 * d))
            self.wq_, self.wk_, self.wv_ = (rng.uniform(-bound, bound, (d, d)).astype(np.float32) for _ in range(3))
            self.bq_, self.bk_, self.bv_ = (np.zeros(d, np.float32) for _ in range(3))

    @property
    def complexity(self) -> Complexity:
        return Complexity("linear", "O(n·d) time, O(n) memory per query (plus O(n·d²) with projections)")

    @property
    def c(self) -> float:
        """The magnitude ``c = -curvature``: the ball has radius ``1/sqrt(c)``."""
        return -self._kappa

    # -- Möbius-linear projections ------------------------------------------
    def _mobius_linear(self, w: Array, b: Array, x: Array) -> Array:
        dt = x.dtype
        y = self.ball.mobius_matvec(w.astype(dt, copy=False), x)
        return self.ball.mobius_add(y, b.astype(dt, copy=False)) if np.any(b) else y

    def _project_all(self, op: str, q: _Item, k: _Item, v: _Item) -> tuple[Array, Array, Array]:
        """The Möbius-linear maps of the ``(name, array, rows read)`` inputs (identity without projections).

        The maps are defined on the ball: the inputs as passed are checked first (or, with
        ``project_inputs``, pulled in); the kernels then take the mapped points as they are.
        """
        if not self.config.projections:
            return q[1], k[1], v[1]
        if v[1].shape[1] != self.config.dim:
            raise DimensionMismatch(
                f"{self.kind}.forward: with projections=True values have shape {v[1].shape}, "
                f"expected (n, {self.config.dim})."
            )
        if self.config.project_inputs:
            q, k, v = ((name, self.ball.proj(x, eps=H.INPUT_EPS), rows) for name, x, rows in (q, k, v))
        else:
            found = self._outside(q, k, v)
            if found is not None:
                self._raise_outside(op, found)
        q, k, v = q[1], k[1], v[1]
        return (
            self._mobius_linear(self.wq_, self.bq_, q),
            self._mobius_linear(self.wk_, self.bk_, k),
            self._mobius_linear(self.wv_, self.bv_, v),
        )

    # -- inputs on or outside the ball -------------------------------------------
    def _outside(self, *items: _Item, tol: float = 1.0) -> tuple[str, Array, int, float] | None:
        """The first finite row with ``c|x|² >= tol`` among the rows read: ``(name, array, row, norm)``."""
        c = self.c
        for name, x, rows in items:
            a = x.reshape(1, -1) if x.ndim == 1 else x
            idx = np.arange(a.shape[0]) if rows is None else np.unique(np.asarray(rows, np.int64))
            sub = a[idx].astype(np.float64)
            x2 = np.einsum("ij,ij->i", sub, sub)
            for j in np.flatnonzero(c * x2 >= tol):
                if np.isfinite(sub[j]).all():  # a NaN/inf row is NumericalInstability's, not ours
                    return name, x, int(idx[j]), math.sqrt(x2[j])
        return None

    def _raise_outside(self, op: str, found: tuple[str, Array, int, float] | None, *items: _Item) -> NoReturn:
        """:class:`OutOfBounds` naming the argument and row of ``found`` or else of ``items`` (the error path of
        an ``OUTSIDE`` status: the kernel sums in its own order, so a point on the boundary to rounding is
        searched for with a margin if no row passes the exact test)."""
        if found is None:
            found = self._outside(*items) or self._outside(*items, tol=1.0 - 1e-12)
        if found is None:  # not reached: the kernel saw such a row
            raise OutOfBounds(f"{op}: an input is on or outside the Poincaré ball (norm >= 1/sqrt(c)).")
        name, x, row, norm = found
        where = name if x.ndim == 1 else f"{name}[{row}]"
        raise OutOfBounds(
            f"{op}: {where} has norm {norm:.6g} >= 1/sqrt(c) = {1.0 / math.sqrt(self.c):.6g}: it is on or outside "
            "the Poincaré ball. Map Euclidean data in with mech.embed(x) (or ball.expmap0), or pass "
            "project_inputs=True to pull such points inside."
        )

    def _raise_for_status(self, op: str, status: Any, *items: _Item, **arrays: Any) -> None:
        """Turn kernel statuses into errors: ``OUTSIDE`` -> :class:`OutOfBounds` (after any NaN/inf,
        which takes precedence), the rest through :func:`ruvattn._validation.raise_for_status`."""
        st = np.asarray(status)
        if (st == H.OUTSIDE).any():
            if (st == NONFINITE).any():
                V.check_finite(op, **{name: x for name, x, _ in items})
            self._raise_outside(op, None, *items)
        V.raise_for_status(op, status, **arrays)

    # -- one query -------------------------------------------------------------
    def _run_one(self, op: str, query: Any, keys: Any, values: Any, mask: Any, ids: Any) -> tuple[Array, Array]:
        q, k, v, dt = self._tables(op, query, keys, values, "query")
        idx, n = self._key_rows(op, ids, k)
        if idx is not None and self.config.projections:  # the projections gather rows before the kernel
            V.check_ids(op, idx, k.shape[0])
        keep = V.as_keep(op, mask, (n,)) if mask is not None else _NO_KEEP
        rows = None if idx is None and mask is None else (np.arange(n) if idx is None else idx)
        if mask is not None:
            rows = rows[keep]
        items = (("query", q, None), ("keys", k, rows), ("values", v, rows))  # values is keys for weights only
        q, k, v = self._project_all(op, *items)
        w = np.empty(n, dt)
        out = np.empty(v.shape[1] if values is not None else 0, dt)
        status = H.hyp_one(q, k, v, idx if idx is not None else _NO_IDS, idx is not None, keep, mask is not None,
                           self._kappa, self._inv_tau, self._mode, PROJECT_EPS[dt], w, out)  # fmt: skip
        if status:
            self._raise_for_status(op, status, *items, query=q, keys=k, values=v, ids=idx)
        return out, w

    def forward(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None, ids: Any = None) -> Array:
        """Output ``(dv,)`` for one query (``mask`` ``(n,)`` bool, true = attend; ``ids`` rows of the tables)."""
        if mask is None and ids is None and not self.config.projections:
            dt = self._plain_arrays(query, keys, values)  # the hot path: a few attribute reads
            if dt is not None:
                w = np.empty(keys.shape[0], dt)
                out = np.empty(values.shape[1], dt)
                eps = _EPS32 if dt is _F32 else _EPS64
                if H.hyp_fast(query, keys, values, self._kappa, self._inv_tau, self._mode, eps, w, out) == H.OK:
                    return out
        op = self.kind + ".forward"
        keys, values = self._kv(op, keys, values)
        return self._run_one(op, query, keys, values, mask, ids)[0]

    def _weights_one(self, op: str, query: Any, keys: Any, *, mask: Any = None, ids: Any = None) -> Array:
        """``softmax(-d_c(q, k_j)/τ)`` ``(1, n)``."""
        return self._run_one(op, query, self._check_keys(op, keys), None, mask, ids)[1][None, :]

    def distances(self, query: Any, keys: Any) -> Array:
        """``d_c(q, k_j)`` ``(n,)``: the distances the weights are computed from (after the projections, if
        any; a point closer than ``1e-5/sqrt(c)`` to the boundary is clamped there, as in :meth:`forward`)."""
        op = self.kind + ".distances"
        q, k, _, dt = self._tables(op, query, keys, None, "query")
        V.check_finite(op, query=q, keys=k)
        items = (("query", q, None), ("keys", k, None))
        q, k, _ = self._project_all(op, *items, ("keys", k, None))
        out = np.empty(k.shape[0], dt)
        if H.hyp_dist_one(q, k, self._kappa, self._mode, out):
            self._raise_outside(op, None, *items)
        return out

    # -- many queries ----------------------------------------------------------
    def _run_many(
        self, op: str, queries: Any, keys: Any, values: Any, mask: Any, neighbours: Any, want_weights: bool
    ) -> tuple[Array, Array]:
        qs, k, v, dt = self._tables(op, queries, keys, values)
        m, n = qs.shape[0], k.shape[0]
        if neighbours is not None:
            nl = as_neighbours(op, neighbours, m, n)
            qrows, rows = np.flatnonzero(nl.degrees()), nl.indices  # a node without neighbours reads nothing
        else:
            keep, keep_mode = _mode_array(op, "mask", mask, m, n, None)
            qrows, rows = None, (None if keep_mode == 0 else np.flatnonzero(keep.any(axis=0)))
        items = (("queries", qs, qrows), ("keys", k, rows), ("values", v, rows))  # values is keys for weights
        qs, k, v = self._project_all(op, *items)
        out = np.empty((m, v.shape[1]), dt)
        status = np.empty(m, np.int8)
        if neighbours is not None:
            w = np.empty(nl.nnz if want_weights else 0, dt)
            H.hyp_csr(qs, k, v, nl.indptr, nl.indices, self._kappa, self._inv_tau, self._mode, PROJECT_EPS[dt], w,
                      want_weights, out, status, chunk_size(m))  # fmt: skip
        else:
            w = np.empty((m, n) if want_weights else (1, 1), dt)
            H.hyp_many(qs, k, v, keep, keep_mode, self._kappa, self._inv_tau, self._mode, PROJECT_EPS[dt], w,
                       want_weights, out, status, chunk_size(m))  # fmt: skip
        if status.any():
            self._raise_for_status(op, status, *items, query=qs, keys=k, values=v, empty_ok=neighbours is not None)
        return out, w

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, *, mask: Any = None) -> Array:
        """``(m, d)`` queries over one key set -> ``(m, dv)``; ``mask`` ``(n,)`` or ``(m, n)``; parallel."""
        op = self.kind + ".forward_batch"
        keys, values = self._kv(op, keys, values)
        return self._run_many(op, queries, keys, values, mask, None, False)[0]

    def backward(self, query: Any, keys: Any, values: Any, grad_output: Any, *, mask: Any = None) -> Gradients:
        r"""Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)`` (with
        ``mask``), in float64 through the maps, returned in the inputs' dtype (ball-valued inputs; the gradient is
        the Euclidean one of the ambient coordinates, as geoopt's autograd gives before its Riemannian rescaling).

        With :math:`\ell_j = \log_0 v_j`, :math:`u = \sum_j w_j \ell_j` and :math:`o = \exp_0 u`: the output's
        gradient goes back through :math:`\exp_0`'s Jacobian (:math:`t I + t'/r\,u u^\top`, :math:`t(r) =
        \tanh(\sqrt c r)/(\sqrt c r)`), the weights' through the softmax of :math:`-d_c/\tau`, the distances'
        through :math:`d_c = \operatorname{arcosh}(1 + 2c|q-k|^2/((1-c|q|^2)(1-c|k|^2)))/\sqrt c` (with
        :math:`\gamma - 1` formed directly: no cancellation at short distances), and the values' through
        :math:`\log_0`'s Jacobian.  Small radii use the maps' series.  A query equal to a key has no
        derivative of their distance there: that pair contributes 0.  Implemented for ``aggregation='tangent'``
        without ``projections``; the other variants raise :class:`~ruvattn.errors.Unsupported`.
        """
        op = f"{self.kind}.backward"
        cfg = self.config
        if cfg.aggregation != "tangent" or cfg.projections:
            raise Unsupported(
                f"{op}: gradients are implemented for aggregation='tangent' without projections; this layer has "
                f"aggregation={cfg.aggregation!r}, projections={cfg.projections}."
            )
        if values is None:
            raise V.values_required(op, "the gradient with respect to the values")
        single = np.ndim(query) == 1
        keys, values = self._kv(op, keys, values)
        _, w = self._run_many(op, np.atleast_2d(query), keys, values, mask, None, True)  # checks, weights
        qs, k, v, dt = self._tables(op, np.atleast_2d(query), keys, values)
        g = self._upstream(op, grad_output, qs.shape[0], v.shape[1], single, dt).astype(np.float64)
        c, tau = self.c, float(cfg.temperature)
        q64, k64, v64, w = qs.astype(np.float64), k.astype(np.float64), v.astype(np.float64), w.astype(np.float64)
        lv = _map0(v64, c, "log")
        u = w @ lv
        ju = _map0_jacobian_parts(u, c, "exp")
        du = ju[0][:, None] * g + ju[1][:, None] * u * np.einsum("ij,ij->i", u, g)[:, None]
        dlv = w.T @ du
        jv = _map0_jacobian_parts(v64, c, "log")
        dv = jv[0][:, None] * dlv + jv[1][:, None] * v64 * np.einsum("ij,ij->i", v64, dlv)[:, None]
        dw = du @ lv.T
        ds = w * (dw - (w * dw).sum(axis=1, keepdims=True))
        dd = -ds / tau
        alpha, beta = 1 - c * np.einsum("ij,ij->i", q64, q64), 1 - c * np.einsum("ij,ij->i", k64, k64)
        sq = np.maximum(
            np.einsum("ij,ij->i", q64, q64)[:, None] + np.einsum("ij,ij->i", k64, k64)[None, :] - 2 * q64 @ k64.T, 0
        )
        ab = alpha[:, None] * beta[None, :]
        gm1 = 2 * c * sq / ab
        with np.errstate(divide="ignore", invalid="ignore"):
            coef = np.where(sq > 0, dd / (math.sqrt(c) * np.sqrt(gm1 * (gm1 + 2))) * 4 * c / ab, 0.0)
        dq = q64 * (coef * (1 + c * sq / alpha[:, None])).sum(axis=1)[:, None] - coef @ k64
        dk = k64 * (coef * (1 + c * sq / beta[None, :])).sum(axis=0)[:, None] - coef.T @ q64
        gq, gk, gv = (V.check_output(op, a.astype(dt), dt) for a in (dq, dk, dv))
        return Gradients(gq[0] if single else gq, gk, gv)

    def _weights_batch(self, op: str, queries: Any, keys: Any, *, mask: Any = None) -> Array:
        """Weights ``(1, m, n)`` for many queries."""
        k = self._check_keys(op, keys)
        w = self._run_many(op, queries, k, k, mask, None, True)[1]
        return w[None]

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Node ``i`` over its own neighbour rows of the key/value tables -> ``(N, dv)``.

        A node without neighbours gets the origin (zero row).
        """
        return self._run_many(self.kind + ".forward_neighbours", queries, keys, values, None, neighbours, False)[0]

    def _weights_neighbours(self, op: str, queries: Any, keys: Any, neighbours: Any) -> Array:
        """Weights ``(1, nnz)``, aligned with the neighbour list's ``indices``."""
        k = self._check_keys(op, keys)
        w = self._run_many(op, queries, k, k, None, neighbours, True)[1]
        return w[None]

    @property
    def _space(self) -> PoincareBall:
        return self.ball
