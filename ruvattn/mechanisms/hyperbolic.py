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

Robustness: a query, key or value on or outside the boundary is first pulled to
radius ``(1 - 1e-5)/√c`` (computed in float64), so every distance is finite;
the output is always strictly inside the ball -- radius at most
``(1 - eps)/√c`` with geoopt's margin ``eps`` (4e-3 for float32, 1e-5 for
float64; :data:`ruvattn.geometry.PROJECT_EPS`).

With ``projections=True`` the query, keys and values first go through
Möbius-linear maps ``x ↦ (W ⊗ x) ⊕ b`` (Ganea et al. 2018), parameters
``wq_, wk_, wv_ (dim, dim)`` (Glorot-uniform from ``seed``) and ``bq_, bk_, bv_``
(points of the ball, initially 0).

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

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param
from ruvattn.errors import DimensionMismatch
from ruvattn.geometry import PROJECT_EPS, PoincareBall
from ruvattn.graph import as_neighbours
from ruvattn.kernels import hyperbolic as H
from ruvattn.kernels.attention import chunk_size
from ruvattn.mechanisms.base import _NO_IDS, _NO_KEEP, DIM, SEED, TEMPERATURE, Attention, _mode_array, register

__all__ = ["HyperbolicAttention"]

Array = NDArray[np.floating]
AGGREGATIONS = {"tangent": H.TANGENT, "midpoint": H.MIDPOINT}
_F32 = np.dtype(np.float32)
_EPS32 = PROJECT_EPS[_F32]
_EPS64 = PROJECT_EPS[np.dtype(np.float64)]


@register("hyperbolic")
class HyperbolicAttention(Attention):
    """Attention by hyperbolic distance on the Poincaré ball (see the module docstring)."""

    forward_options = frozenset({"mask", "ids"})
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
    )

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        """With the Möbius-linear projections (the form with learned state)."""
        return {"dim": dim, "projections": True}

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
        self._agg = AGGREGATIONS[cfg.aggregation]
        if cfg.projections:
            d = cfg.dim
            rng = np.random.default_rng(cfg.seed)
            bound = np.sqrt(6.0 / (2 * d))
            self.wq_, self.wk_, self.wv_ = (rng.uniform(-bound, bound, (d, d)).astype(np.float32) for _ in range(3))
            self.bq_, self.bk_, self.bv_ = (np.zeros(d, np.float32) for _ in range(3))

    @property
    def complexity(self) -> str:
        return "O(n·d) time, O(n) memory per query (plus O(n·d²) with projections)"

    @property
    def c(self) -> float:
        """The magnitude ``c = -curvature``: the ball has radius ``1/sqrt(c)``."""
        return -self._kappa

    # -- Möbius-linear projections ------------------------------------------
    def _mobius_linear(self, w: Array, b: Array, x: Array) -> Array:
        dt = x.dtype
        y = self.ball.mobius_matvec(w.astype(dt, copy=False), x)
        return self.ball.mobius_add(y, b.astype(dt, copy=False)) if np.any(b) else y

    def _project_all(self, q: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
        if not self.config.projections:
            return q, k, v
        if v.shape[1] != self.config.dim:
            raise DimensionMismatch(
                f"{self.kind}.forward: with projections=True values have shape {v.shape}, "
                f"expected (n, {self.config.dim})."
            )
        return (
            self._mobius_linear(self.wq_, self.bq_, q),
            self._mobius_linear(self.wk_, self.bk_, k),
            self._mobius_linear(self.wv_, self.bv_, v),
        )

    # -- one query -------------------------------------------------------------
    def _run_one(self, op: str, query: Any, keys: Any, values: Any, mask: Any, ids: Any) -> tuple[Array, Array]:
        q, k, v, dt = self._tables(op, query, keys, values, "query")
        idx, n = self._key_rows(op, ids, k)
        keep = V.as_keep(op, mask, (n,)) if mask is not None else _NO_KEEP
        q, k, v = self._project_all(q, k, v)
        w = np.empty(n, dt)
        out = np.empty(v.shape[1] if values is not None else 0, dt)
        status = H.hyp_one(q, k, v, idx if idx is not None else _NO_IDS, idx is not None, keep, mask is not None,
                           self._kappa, self._inv_tau, self._agg, PROJECT_EPS[dt], w, out)  # fmt: skip
        if status:
            V.raise_for_status(op, status, query=q, keys=k, values=v, ids=idx)
        return out, w

    def forward(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None, ids: Any = None) -> Array:
        """Output ``(dv,)`` for one query (``mask`` ``(n,)`` bool, true = attend; ``ids`` rows of the tables)."""
        if mask is None and ids is None and not self.config.projections:
            dt = self._plain_arrays(query, keys, values)  # the hot path: a few attribute reads
            if dt is not None:
                w = np.empty(keys.shape[0], dt)
                out = np.empty(values.shape[1], dt)
                eps = _EPS32 if dt is _F32 else _EPS64
                if H.hyp_fast(query, keys, values, self._kappa, self._inv_tau, self._agg, eps, w, out) == H.OK:
                    return out
        op = self.kind + ".forward"
        keys, values = self._kv(op, keys, values)
        return self._run_one(op, query, keys, values, mask, ids)[0]

    def _weights_one(self, op: str, query: Any, keys: Any, *, mask: Any = None, ids: Any = None) -> Array:
        """``softmax(-d_c(q, k_j)/τ)`` ``(1, n)``."""
        return self._run_one(op, query, self._check_keys(op, keys), None, mask, ids)[1][None, :]

    def distances(self, query: Any, keys: Any) -> Array:
        """``d_c(q, k_j)`` ``(n,)`` (after the projections, if any; inputs used as given)."""
        op = self.kind + ".distances"
        q, k, _, dt = self._tables(op, query, keys, None, "query")
        V.check_finite(op, query=q, keys=k)
        q, k, _ = self._project_all(q, k, k)
        out = np.empty(k.shape[0], dt)
        H.hyp_dist_one(q, k, self._kappa, out)
        return out

    # -- many queries ----------------------------------------------------------
    def _run_many(
        self, op: str, queries: Any, keys: Any, values: Any, mask: Any, neighbours: Any, want_weights: bool
    ) -> tuple[Array, Array]:
        qs, k, v, dt = self._tables(op, queries, keys, values)
        m, n = qs.shape[0], k.shape[0]
        qs, k, v = self._project_all(qs, k, v)
        out = np.empty((m, v.shape[1]), dt)
        status = np.empty(m, np.int8)
        if neighbours is not None:
            nl = as_neighbours(op, neighbours, m, n)
            w = np.empty(nl.nnz if want_weights else 0, dt)
            H.hyp_csr(qs, k, v, nl.indptr, nl.indices, self._kappa, self._inv_tau, self._agg, PROJECT_EPS[dt], w,
                      want_weights, out, status, chunk_size(m))  # fmt: skip
            empty_ok = True
        else:
            keep, keep_mode = _mode_array(op, "mask", mask, m, n, None)
            w = np.empty((m, n) if want_weights else (1, 1), dt)
            H.hyp_many(qs, k, v, keep, keep_mode, self._kappa, self._inv_tau, self._agg, PROJECT_EPS[dt], w,
                       want_weights, out, status, chunk_size(m))  # fmt: skip
            empty_ok = False
        if status.any():
            V.raise_for_status(op, status, query=qs, keys=k, values=v, empty_ok=empty_ok)
        return out, w

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, *, mask: Any = None) -> Array:
        """``(m, d)`` queries over one key set -> ``(m, dv)``; ``mask`` ``(n,)`` or ``(m, n)``; parallel."""
        op = self.kind + ".forward_batch"
        keys, values = self._kv(op, keys, values)
        return self._run_many(op, queries, keys, values, mask, None, False)[0]

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
