r"""Attention written once over the :class:`~ruvattn.geometry.Manifold` interface, and its product-space form.

**ManifoldAttention** -- on any manifold :math:`M` with distance :math:`d_M`:

.. math::

    w_j = \operatorname{softmax}_j(-d_M(q, k_j)/\tau), \qquad
    \text{out} = \operatorname{midpoint}_M(v, w) = \exp_0\!\Big(\sum_j w_j \log_0 v_j\Big)

so the Euclidean, Poincaré, Lorentz and sphere versions are one class, and a
new manifold is one :class:`~ruvattn.geometry.Manifold` subclass registered
with :func:`~ruvattn.geometry.register_manifold`.  On the Poincaré ball this
equals :class:`~ruvattn.mechanisms.HyperbolicAttention` (the fused kernel,
tested), and on the Lorentz model the same attention through the isometry.
This generic path loops over queries in Python; use
:class:`HyperbolicAttention` for speed on the ball.

**MixedCurvatureAttention** -- a product space
:math:`M_1 \times \dots \times M_p` (Gu, Sala, Gunel & Ré 2019, "Learning
mixed-curvature representations in product spaces"): the width is split into
components, each a Euclidean, Poincaré or sphere factor of its own dimension
and curvature, and

.. math::

    s_j = -\frac{1}{\tau}\sum_c \beta_c\, d_{M_c}(q_c, k_{j,c}), \qquad
    w = \operatorname{softmax}(s), \qquad
    \text{out}_c = \operatorname{midpoint}_{M_c}(v_{\cdot,c}, w)

with one weight vector shared by every component.  The component weights
:math:`\beta` (``component_weights_``, initialised from the config) are fixed
unless learned: :meth:`MixedCurvatureAttention.component_weights_grad` gives
:math:`\partial L/\partial\beta` for an upstream gradient (checked against
finite differences) and :meth:`MixedCurvatureAttention.fit_component_weights`
runs gradient descent on a mean-squared error to targets.

>>> import numpy as np
>>> attn = MixedCurvatureAttention(4, components=[("euclidean", 2), ("poincare", 2, -1.0)])
>>> x = np.array([[0.1, 0.2, 0.1, 0.0], [0.5, -0.3, -0.4, 0.2]])
>>> w = attn.attention_weights(x[0], x)
>>> bool(w[0] > w[1])  # the query's own point is nearest in every factor
True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param, ParamSet
from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig
from ruvattn.geometry import Manifold, get_manifold
from ruvattn.graph import as_neighbours
from ruvattn.kernels import attention as K
from ruvattn.mechanisms.base import DIM, TEMPERATURE, Attention, Complexity, Example, Gradients, _mode_array, register

__all__ = ["ManifoldAttention", "MixedCurvatureAttention"]

Array = NDArray[np.floating]


def _softmax(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    w = np.ascontiguousarray(scores, np.float64)
    K.softmax(w)
    return w


def _manifold(owner: str, name: Any, curvature: Any) -> Manifold:
    if isinstance(name, Manifold):
        if curvature is not None and float(curvature) != name.curvature:
            raise InvalidConfig(f"{owner}: curvature {curvature!r} contradicts the manifold instance {name!r}.")
        return name
    if not isinstance(name, str):
        raise InvalidConfig(f"{owner}: 'manifold' must be a manifold name or a Manifold; got {name!r}.")
    return get_manifold(name, curvature)


def _manifold_name(owner: str, name: str, value: Any) -> Any:
    if isinstance(value, Manifold) or isinstance(value, str):
        return value
    raise InvalidConfig(f"{owner}: '{name}' must be a manifold name or a Manifold; got {value!r}.")


def _encode_manifold(value: Any) -> str:
    return value.name if isinstance(value, Manifold) else str(value)


def _component_list(owner: str, name: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidConfig(f"{owner}: '{name}' must be a list of (manifold, dim[, curvature]) factors; got {value!r}.")
    return list(value)


def _weight_list(owner: str, name: str, value: Any) -> list[float]:
    return V.float_list(owner, name, value)


def _is_ball(m: Manifold) -> bool:
    return m.name == "poincare" and m.curvature < 0


def _keep(op: str, mask: Any, n: int) -> NDArray[np.bool_] | None:
    return None if mask is None else V.as_keep(op, mask, (n,))


_F64 = np.dtype(np.float64)


def _inputs(
    attn: ManifoldAttention | MixedCurvatureAttention, op: str, query: Any, keys: Any, values: Any, name: str
) -> tuple[Array, Array, Array, np.dtype]:
    """``attn._tables`` plus the checks the generic path makes up front, in the caller's names: every
    input finite, and query/key/value rows inside a Poincaré factor's ball (:class:`OutOfBounds`)."""
    q, k, v, dt = attn._tables(op, query, keys, values, name)
    arrays = {name: q, "keys": k} if values is None else {name: q, "keys": k, "values": v}
    V.check_finite(op, **arrays)
    for m, sl in attn._balls():
        for arg, x in arrays.items():
            V.check_ball(op, arg, x[..., sl], m.c)
    return q, k, v, dt


def _batch(
    attn: ManifoldAttention | MixedCurvatureAttention, op: str, queries: Any, keys: Any, values: Any, mask: Any
) -> Array:
    """``attn.forward`` for each query row (validated once; an empty batch gives an empty result)."""
    qs, k, v, dt = attn._inputs(op, queries, keys, values, "queries")
    m, n = qs.shape[0], k.shape[0]
    keep, mode = _mode_array(op, "mask", mask, m, n, None)
    out = np.empty((m, v.shape[1]), dt)
    for i in range(m):
        row_mask = None if mode == 0 else keep[0] if mode == 1 else keep[i]
        out[i] = attn.forward(qs[i], k, v, mask=row_mask)
    return out


def _backward_one(
    factors: list[tuple[Manifold, slice]],
    beta: NDArray[np.float64],
    tau: float,
    q: NDArray[np.float64],
    k: NDArray[np.float64],
    v: NDArray[np.float64],
    w: NDArray[np.float64],
    g: NDArray[np.float64],
    dk: NDArray[np.float64],
    dv: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One query's share of the gradients of ``<out, g>`` for ``out_c = exp0(Σ_j w_j log0(v_jc))`` per factor ``c``
    and ``w = softmax(-Σ_c β_c d_c(q_c, k_jc) / τ)``: adds into ``dk``/``dv`` and returns ``(dq, dβ)``."""
    live = np.flatnonzero(w > 0)
    wl = w[live]
    dw = np.zeros(live.size)
    for m, sl in factors:
        vl = v[live][:, sl]
        logs = np.atleast_2d(m.logmap0(m.proj(vl)))
        du = m.expmap0_vjp(wl @ logs, g[sl])
        dv[live, sl] += m.logmap0_vjp(vl, wl[:, None] * du[None, :])
        dw += logs @ du
    ds = wl * (dw - wl @ dw)
    dq = np.zeros_like(q)
    dbeta = np.zeros(len(factors))
    for c, (m, sl) in enumerate(factors):
        kl = k[live][:, sl]
        d = np.atleast_1d(m.dist(np.broadcast_to(q[sl], kl.shape), kl))
        with np.errstate(over="ignore", invalid="ignore"):  # checked (typed) by the caller
            dbeta[c] = -(d @ ds) / tau
        if beta[c] == 0:
            continue
        gx, gy = m.dist_grad(np.broadcast_to(q[sl], kl.shape), kl)
        dd = -beta[c] * ds / tau
        dq[sl] += dd @ gx
        dk[live, sl] += dd[:, None] * gy
    return dq, dbeta


def _backward(
    attn: ManifoldAttention | MixedCurvatureAttention, query: Any, keys: Any, values: Any, grad_output: Any, mask: Any
) -> tuple[Gradients, NDArray[np.float64]]:
    """The shared backward of the two classes (a loop over queries, like their forward); also returns ``dβ``."""
    op = attn.kind + ".backward"
    if values is None:
        raise V.values_required(op, "the gradient with respect to the values")
    single = np.ndim(query) == 1
    keys, values = attn._kv(op, keys, values)
    qs, k, v, dt = attn._inputs(op, np.atleast_2d(query), keys, values, "queries")
    if isinstance(attn, MixedCurvatureAttention):
        attn._values(op, v)
        factors = [(m, sl) for (m, _), sl in zip(attn.factors, attn._slices, strict=True)]
        beta = np.asarray(attn.component_weights_, np.float64)
    else:
        factors, beta = [(attn._manifold, slice(None))], np.ones(1)
    m, n = qs.shape[0], k.shape[0]
    keep, mode = _mode_array(op, "mask", mask, m, n, None)
    g = attn._upstream(op, grad_output, m, v.shape[1], single, dt).astype(np.float64)
    q64, k64, v64 = qs.astype(np.float64), k.astype(np.float64), v.astype(np.float64)
    dq, dk, dv = np.zeros_like(q64), np.zeros_like(k64), np.zeros_like(v64)
    dbeta = np.zeros(len(factors))
    tau = float(attn.config.temperature)
    for i in range(m):
        row_mask = None if mode == 0 else keep[0] if mode == 1 else keep[i]
        w = attn._weights(op, qs[i], k, row_mask)
        w = np.asarray(w[0] if isinstance(w, tuple) else w, np.float64)
        dq[i], db = _backward_one(factors, beta, tau, q64[i], k64, v64, w, g[i], dk, dv)
        dbeta += db
    gq, gk, gv = (V.check_output(op, a.astype(dt), dt) for a in (dq, dk, dv))
    return Gradients(gq[0] if single else gq, gk, gv), dbeta


def _neighbours(
    attn: ManifoldAttention | MixedCurvatureAttention,
    op: str,
    queries: Any,
    keys: Any,
    values: Any,
    neighbours: Any,
    origin: Callable[[int, np.dtype], Array],
) -> Array:
    """``attn.forward`` of node ``i`` over its own neighbour rows; ``origin(width, dtype)`` for no neighbours."""
    qs, k, v, dt = attn._inputs(op, queries, keys, values, "queries")
    nl = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
    out = np.empty((qs.shape[0], v.shape[1]), dt)
    for i in range(qs.shape[0]):
        ids = nl.indices[nl.indptr[i] : nl.indptr[i + 1]]
        out[i] = attn.forward(qs[i], k[ids], v[ids]) if ids.size else origin(v.shape[1], dt)
    return out


@register("manifold")
class ManifoldAttention(Attention):
    """Distance-softmax attention with manifold-midpoint aggregation on any :class:`Manifold`."""

    forward_options = frozenset({"mask"})
    supports_backward = True
    params = (
        DIM,
        Param(
            "manifold",
            V.Custom(_manifold_name, "a manifold name or a Manifold instance"),
            "poincare",
            "'euclidean', 'poincare', 'lorentz', 'sphere' (any registered name) or a Manifold",
            encode=_encode_manifold,
        ),
        Param("curvature", V.Real(), None, "signed curvature (None: the manifold's default)", none=True),
        TEMPERATURE,
    )

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        _manifold(owner, p.manifold, p.curvature)

    def _init_state(self) -> None:
        self._manifold = _manifold(type(self).__name__, self.config.manifold, self.config.curvature)

    @property
    def _space(self) -> Manifold:
        return self._manifold

    def _warmup(self, ex: Example) -> None:
        """Every registered manifold (each has its own kernels), on data embedded into it."""
        for name in ("euclidean", "poincare", "sphere", "lorentz"):
            m = type(self)(self.hidden_dim, name)
            x = m.embed(np.vstack([ex.keys, ex.queries]).astype(np.float64)).astype(ex.keys.dtype)
            k, qs = x[: len(ex.keys)], x[len(ex.keys) :]
            m.forward(qs[0], k, k)
            m.forward_neighbours(qs, k, k, ex.neighbours)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["curvature"] = self._manifold.curvature
        return out

    @property
    def complexity(self) -> Complexity:
        return Complexity("linear", "O(n·d) time and memory per query (generic path, Python loop over queries)")

    def _weights(self, op: str, q: Array, k: Array, mask: Any) -> Array:
        n = k.shape[0]
        keep = _keep(op, mask, n)
        if n == 0 or (keep is not None and not keep.any()):
            raise EmptyInput(f"{op}: nothing to attend over: the key set is empty or every key is masked out.")
        # distances in float64 whatever the input dtype (a float32 distance overflows at ~1.8e19 per
        # coordinate); a score that still overflows is an error, never a zero weight
        scores = -self._manifold.dist(q.astype(_F64), k.astype(_F64)) / float(self.config.temperature)
        if keep is not None:
            scores[~keep] = -np.inf
        V.check_scores(op, scores, keep)
        return _softmax(scores)

    def _balls(self) -> list[tuple[Manifold, slice]]:
        """The Poincaré-ball factors (their points must lie inside the ball) and their columns."""
        return [(self._manifold, slice(None))] if _is_ball(self._manifold) else []

    _inputs = _inputs

    def _weights_one(self, op: str, query: Any, keys: Any, *, mask: Any = None) -> Array:
        q, k, _, dt = self._inputs(op, query, self._check_keys(op, keys), None, "query")
        return self._weights(op, q, k, mask).astype(dt)[None, :]

    def forward(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None) -> Array:
        op = self.kind + ".forward"
        keys, values = self._kv(op, keys, values)
        q, k, v, dt = self._inputs(op, query, keys, values, "query")
        w = self._weights(op, q, k, mask)
        live = w > 0
        return V.check_output(op, self._manifold.midpoint(v[live].astype(_F64), w[live]), dt)

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, *, mask: Any = None) -> Array:
        """``(m, d)`` queries over one key set -> ``(m, dv)``; ``mask`` ``(n,)`` or ``(m, n)`` (a loop)."""
        op = self.kind + ".forward_batch"
        keys, values = self._kv(op, keys, values)
        return _batch(self, op, queries, keys, values, mask)

    def backward(self, query: Any, keys: Any, values: Any, grad_output: Any, *, mask: Any = None) -> Gradients:
        r"""Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)`` (float64,
        a loop over queries like the forward): through :math:`\exp_0` and :math:`\log_0` (the manifold's
        ``expmap0_vjp``/``logmap0_vjp``), the softmax of :math:`-d/\tau` and the distance (``dist_grad``:
        :math:`-\lambda_x^2 \log_x(y)/d` on the ball and the sphere).  On the hyperboloid the gradients are tangent
        vectors (their component off the manifold is left out); a query equal to a key contributes 0 there."""
        return _backward(self, query, keys, values, grad_output, mask)[0]

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Node ``i`` over its own neighbour rows; a node without neighbours gets the origin."""
        return _neighbours(self, self.kind + ".forward_neighbours", queries, keys, values, neighbours,
                           self._manifold.origin)  # fmt: skip


# -- mixed curvature ----------------------------------------------------------------


def _components(owner: str, dim: int, spec: Any) -> list[tuple[Manifold, int]]:
    if spec is None:
        half = dim // 2
        spec = [("euclidean", dim - half), ("poincare", half, -1.0)] if half else [("euclidean", dim)]
    out = []
    for item in spec:
        if isinstance(item, dict):
            name, width, curv = item.get("manifold"), item.get("dim"), item.get("curvature")
        elif isinstance(item, (list, tuple)) and len(item) in (2, 3):
            name, width, curv = item[0], item[1], (item[2] if len(item) == 3 else None)
        else:
            raise InvalidConfig(
                f"{owner}: each component is (manifold, dim[, curvature]) or a dict with those keys; got {item!r}."
            )
        if name not in ("euclidean", "poincare", "sphere") and not isinstance(name, Manifold):
            raise InvalidConfig(
                f"{owner}: component manifolds are 'euclidean', 'poincare' or 'sphere' (or a Manifold); got {name!r}."
            )
        width = V.positive_int(owner, "component dim", width)
        out.append((_manifold(owner, name, curv), width))
    if not out:
        raise InvalidConfig(f"{owner}: 'components' must list at least one factor.")
    total = sum(w for _, w in out)
    if total != dim:
        raise InvalidConfig(f"{owner}: the component dims add up to {total}, but dim is {dim}.")
    return out


@register("mixed_curvature")
class MixedCurvatureAttention(Attention):
    """Attention in a product of Euclidean, Poincaré and spherical factors (see the module docstring)."""

    forward_options = frozenset({"mask"})
    supports_backward = True
    params = (
        DIM,
        Param(
            "components",
            V.Custom(_component_list, "a list of (manifold, dim[, curvature]) factors"),
            None,
            "factors (default: half Euclidean, half Poincaré of curvature -1)",
            none=True,
        ),
        Param(
            "component_weights",
            V.Custom(_weight_list, "a list of finite numbers >= 0"),
            None,
            "initial factor weights β (default all 1); learned by fit_component_weights",
            none=True,
        ),
        TEMPERATURE,
    )

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["components"] = [[m.name, w, m.curvature] for m, w in self.factors]
        return out

    @property
    def input_space(self) -> str:
        return "product"

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The factor weights β ``(p,)`` (learned by :meth:`fit_component_weights`)."""
        return {"component_weights": (len(self.factors),)}

    def embed(self, x: Any) -> Array:
        """Each factor's columns mapped into that factor (:meth:`ruvattn.geometry.Manifold.embed`)."""
        arr = V.as_array(x, f"{self.kind}.embed", "x", 2)
        V.check_width(f"{self.kind}.embed", "x", arr, self.hidden_dim)
        V.check_finite(f"{self.kind}.embed", x=arr)
        return np.concatenate([m.embed(arr[:, sl]) for (m, _), sl in zip(self.factors, self._slices, strict=True)],
                              axis=1).astype(arr.dtype)  # fmt: skip

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        comps = _components(owner, p.dim, p.components)
        if p.component_weights is not None:
            V.float_list(owner, "component_weights", p.component_weights, len(comps))

    def _init_state(self) -> None:
        cfg = self.config
        self.factors = _components(type(self).__name__, cfg.dim, cfg.components)
        p = len(self.factors)
        init = np.ones(p) if cfg.component_weights is None else np.asarray(cfg.component_weights, np.float64)
        self.component_weights_ = init.astype(np.float64).copy()
        bounds = np.cumsum([0] + [w for _, w in self.factors])
        self._slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    @property
    def complexity(self) -> Complexity:
        return Complexity("linear", "O(n·d) time and memory per query (one distance per factor)")

    def _distances(self, q: Array, k: Array) -> NDArray[np.float64]:
        """``(p, n)`` per-factor distances, in float64 whatever the input dtype."""
        q, k = q.astype(_F64), k.astype(_F64)
        return np.stack([m.dist(q[sl], k[:, sl]) for (m, _), sl in zip(self.factors, self._slices, strict=True)])

    def _balls(self) -> list[tuple[Manifold, slice]]:
        """The Poincaré-ball factors (their points must lie inside the ball) and their columns."""
        return [(m, sl) for (m, _), sl in zip(self.factors, self._slices, strict=True) if _is_ball(m)]

    _inputs = _inputs

    def _weights(self, op: str, q: Array, k: Array, mask: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n = k.shape[0]
        keep = _keep(op, mask, n)
        if n == 0 or (keep is not None and not keep.any()):
            raise EmptyInput(f"{op}: nothing to attend over: the key set is empty or every key is masked out.")
        dists = self._distances(q, k)
        beta = self.component_weights_
        # a factor of weight 0 contributes nothing, even where its distance overflowed (no 0·inf = NaN)
        scores = -np.einsum("c,cn->n", beta, np.where(beta[:, None] == 0, 0.0, dists)) / float(self.config.temperature)
        if keep is not None:
            scores[~keep] = -np.inf
        V.check_scores(op, scores, keep)
        return _softmax(scores), dists

    def _weights_one(self, op: str, query: Any, keys: Any, *, mask: Any = None) -> Array:
        q, k, _, dt = self._inputs(op, query, self._check_keys(op, keys), None, "query")
        return self._weights(op, q, k, mask)[0].astype(dt)[None, :]

    def _values(self, op: str, v: Array) -> None:
        if v.shape[1] != self.config.dim:
            raise DimensionMismatch(f"{op}: values has shape {v.shape}, expected (n, {self.config.dim}) "
                                    "(values live in the same product space).")  # fmt: skip

    def forward(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None) -> Array:
        op = self.kind + ".forward"
        keys, values = self._kv(op, keys, values)
        q, k, v, dt = self._inputs(op, query, keys, values, "query")
        self._values(op, v)
        w, _ = self._weights(op, q, k, mask)
        return V.check_output(op, self._aggregate(v, w), dt)

    def _aggregate(self, v: Array, w: NDArray[np.float64]) -> NDArray[np.float64]:
        live = w > 0
        parts = [
            m.midpoint(v[live][:, sl].astype(np.float64), w[live])
            for (m, _), sl in zip(self.factors, self._slices, strict=True)
        ]
        return np.concatenate(parts)

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, *, mask: Any = None) -> Array:
        """``(m, d)`` queries over one key set -> ``(m, d)``; ``mask`` ``(n,)`` or ``(m, n)`` (a loop)."""
        op = self.kind + ".forward_batch"
        keys, values = self._kv(op, keys, values)
        return _batch(self, op, queries, keys, values, mask)

    def backward(self, query: Any, keys: Any, values: Any, grad_output: Any, *, mask: Any = None) -> Gradients:
        """Gradients of ``sum(grad_output * forward(...))`` (one query or a batch, float64): each factor's share as in
        :meth:`ManifoldAttention.backward`, the shared weights' through ``β_c d_c``; ``params["component_weights"]``
        is ``∂L/∂β`` (summed over the batch; :meth:`component_weights_grad` for one query)."""
        grads, dbeta = _backward(self, query, keys, values, grad_output, mask)
        dbeta = V.check_output(self.kind + ".backward", dbeta, dbeta.dtype)  # an overflowed gradient is typed
        return grads._replace(params={"component_weights": dbeta})

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Node ``i`` over its own neighbour rows; a node without neighbours gets the origin (zeros)."""
        return _neighbours(self, self.kind + ".forward_neighbours", queries, keys, values, neighbours, np.zeros)

    # -- learning the component weights ---------------------------------------------
    def component_weights_grad(self, query: Any, keys: Any, values: Any, upstream: Any) -> NDArray[np.float64]:
        r"""``∂L/∂β`` for ``L = <forward(query, keys, values), upstream>`` (float64, shape ``(p,)``).

        With ``t_c = Σ_j w_j log0(v_{j,c})`` and ``out_c = exp0(t_c)``:
        ``∂L/∂w_j = Σ_c <J_exp0(t_c)^T g_c, log0(v_{j,c})>``,
        ``∂L/∂s_j = w_j (∂L/∂w_j - Σ_l w_l ∂L/∂w_l)`` and
        ``∂L/∂β_c = -Σ_j ∂L/∂s_j d_c(q, k_j) / τ``.  The boundary projection of a
        Poincaré output (active only within 4e-3 of the boundary in float32) is not
        differentiated.
        """
        op = self.kind + ".component_weights_grad"
        q, k, v, _ = self._inputs(op, query, keys, values, "query")
        self._values(op, v)
        g = V.as_array(upstream, op, "upstream", 1, np.dtype(np.float64))
        V.check_finite(op, upstream=g)
        V.check_width(op, "upstream", g[None], self.config.dim)
        w, dists = self._weights(op, q, k, None)
        v64 = v.astype(np.float64)
        dw = np.zeros(k.shape[0])
        for (m, _), sl in zip(self.factors, self._slices, strict=True):
            logs = np.atleast_2d(m.logmap0(v64[:, sl]))
            t = w @ logs
            dw += logs @ m.expmap0_vjp(t, g[sl])
        ds = w * (dw - w @ dw)
        return -(dists @ ds) / float(self.config.temperature)

    def fit_component_weights(
        self,
        queries: Any,
        keys: Any,
        values: Any,
        targets: Any,
        *,
        steps: int = 100,
        learning_rate: float = 0.1,
    ) -> list[float]:
        """Gradient descent on ``mean_i |forward(q_i) - target_i|²`` over β (kept ≥ 0).

        Every query attends over the same ``keys``/``values``.  Updates
        ``component_weights_`` in place; returns the loss before each step and after the last.
        """
        op = self.kind + ".fit_component_weights"
        qs, k, v, _ = self._inputs(op, queries, keys, values, "queries")
        tg = V.as_array(targets, op, "targets", 2, np.dtype(np.float64))
        V.check_finite(op, targets=tg)
        if tg.shape != (qs.shape[0], self.config.dim):
            raise DimensionMismatch(f"{op}: targets has shape {tg.shape}, expected ({qs.shape[0]}, {self.config.dim}).")
        steps = V.positive_int(op, "steps", steps)
        lr = V.positive_float(op, "learning_rate", learning_rate)
        assert lr is not None
        history: list[float] = []
        start = self.component_weights_.copy()
        try:
            for step in range(steps + 1):
                outs = np.stack([self.forward(q, k, v).astype(np.float64) for q in qs])
                history.append(float(np.mean(np.sum((outs - tg) ** 2, axis=1))))
                if step == steps:
                    break
                grad = np.zeros_like(self.component_weights_)
                for q, o, t in zip(qs, outs, tg, strict=True):
                    grad += self.component_weights_grad(q, k, v, 2 * (o - t) / qs.shape[0])
                self.component_weights_ = np.maximum(self.component_weights_ - lr * grad, 0.0)
                if not math.isfinite(float(self.component_weights_.sum())):
                    raise InvalidConfig(f"{op}: the weights diverged; lower learning_rate (got {lr}).")
        except BaseException:
            self.component_weights_ = start  # all or nothing: a failed fit leaves the weights as they were
            raise
        return history
