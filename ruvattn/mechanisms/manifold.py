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

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig
from ruvattn.geometry import Manifold, get_manifold
from ruvattn.graph import as_neighbours
from ruvattn.kernels import attention as K
from ruvattn.mechanisms.base import Attention, AttentionConfig, _mode_array, register

__all__ = ["ManifoldAttention", "ManifoldConfig", "MixedCurvatureAttention", "MixedCurvatureConfig"]

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


def _keep(op: str, mask: Any, n: int) -> NDArray[np.bool_] | None:
    return None if mask is None else V.as_keep(op, mask, (n,))


def _batch(
    attn: ManifoldAttention | MixedCurvatureAttention, op: str, queries: Any, keys: Any, values: Any, mask: Any
) -> Array:
    """``attn.forward`` for each query row (validated once; an empty batch gives an empty result)."""
    qs, k, v, dt = attn._tables(op, queries, keys, values)
    m, n = qs.shape[0], k.shape[0]
    keep, mode = _mode_array(op, "mask", mask, m, n, None)
    out = np.empty((m, v.shape[1]), dt)
    for i in range(m):
        row_mask = None if mode == 0 else keep[0] if mode == 1 else keep[i]
        out[i] = attn.forward(qs[i], k, v, mask=row_mask)
    return out


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
    qs, k, v, dt = attn._tables(op, queries, keys, values)
    nl = as_neighbours(op, neighbours, qs.shape[0], k.shape[0])
    out = np.empty((qs.shape[0], v.shape[1]), dt)
    for i in range(qs.shape[0]):
        ids = nl.indices[nl.indptr[i] : nl.indptr[i + 1]]
        out[i] = attn.forward(qs[i], k[ids], v[ids]) if ids.size else origin(v.shape[1], dt)
    return out


@dataclass
class ManifoldConfig(AttentionConfig):
    """``dim``: coordinates per point (the Lorentz model uses ``d + 1``); ``manifold``: a registered
    name (``"euclidean"``, ``"poincare"``, ``"lorentz"``, ``"sphere"``) or a Manifold instance;
    ``curvature``: signed (``None``: the manifold's default); ``temperature`` τ > 0."""

    dim: int
    manifold: Any = "poincare"
    curvature: float | None = None
    temperature: float = 1.0

    def validate(self, owner: str) -> None:
        V.positive_int(owner, "dim", self.dim)
        _manifold(owner, self.manifold, self.curvature)
        V.positive_float(owner, "temperature", self.temperature)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(self.manifold, Manifold):
            d["manifold"] = self.manifold.name
            d["curvature"] = self.manifold.curvature
        return d


@register("manifold")
class ManifoldAttention(Attention):
    """Distance-softmax attention with manifold-midpoint aggregation on any :class:`Manifold`."""

    Config = ManifoldConfig

    def __init__(
        self, dim: int, manifold: str | Manifold = "poincare", curvature: float | None = None, temperature: float = 1.0
    ) -> None:
        super().__init__(dim=dim, manifold=manifold, curvature=curvature, temperature=temperature)

    def _init_state(self) -> None:
        self.manifold = _manifold(type(self).__name__, self.config.manifold, self.config.curvature)

    @property
    def complexity(self) -> str:
        return "O(n·d) time and memory per query (generic path, Python loop over queries)"

    def _weights(self, op: str, q: Array, k: Array, mask: Any) -> Array:
        n = k.shape[0]
        keep = _keep(op, mask, n)
        if n == 0 or (keep is not None and not keep.any()):
            raise EmptyInput(f"{op}: nothing to attend over: the key set is empty or every key is masked out.")
        scores = -self.manifold.dist(q, k).astype(np.float64) / float(self.config.temperature)
        if keep is not None:
            scores[~keep] = -np.inf
        return _softmax(scores)

    def attention_weights(self, query: Any, keys: Any, *, mask: Any = None) -> Array:
        op = self.kind + ".attention_weights"
        q, k, _, dt = self._tables(op, query, keys, None, "query")
        return self._weights(op, q, k, mask).astype(dt)

    def forward(self, query: Any, keys: Any, values: Any, *, mask: Any = None) -> Array:
        op = self.kind + ".forward"
        q, k, v, dt = self._tables(op, query, keys, values, "query")
        w = self._weights(op, q, k, mask)
        live = w > 0
        return np.asarray(self.manifold.midpoint(v[live], w[live]), dt)

    def forward_batch(self, queries: Any, keys: Any, values: Any, *, mask: Any = None) -> Array:
        """``(m, d)`` queries over one key set -> ``(m, dv)``; ``mask`` ``(n,)`` or ``(m, n)`` (a loop)."""
        return _batch(self, self.kind + ".forward_batch", queries, keys, values, mask)

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Node ``i`` over its own neighbour rows; a node without neighbours gets the origin."""
        return _neighbours(self, self.kind + ".forward_neighbours", queries, keys, values, neighbours,
                           self.manifold.origin)  # fmt: skip


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


@dataclass
class MixedCurvatureConfig(AttentionConfig):
    """``dim``: total width; ``components``: ``(manifold, dim[, curvature])`` factors (default: half
    Euclidean, half Poincaré of curvature -1); ``component_weights``: initial β (default all 1, each
    ≥ 0); ``temperature`` τ > 0."""

    dim: int
    components: list[Any] | None = None
    component_weights: list[float] | None = None
    temperature: float = 1.0

    def validate(self, owner: str) -> None:
        V.positive_int(owner, "dim", self.dim)
        comps = _components(owner, self.dim, self.components)
        if self.component_weights is not None:
            w = np.asarray(self.component_weights, np.float64)
            if w.shape != (len(comps),) or not np.all(np.isfinite(w)) or np.any(w < 0):
                raise InvalidConfig(
                    f"{owner}: 'component_weights' must be {len(comps)} finite non-negative numbers; "
                    f"got {self.component_weights!r}."
                )
        V.positive_float(owner, "temperature", self.temperature)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["components"] = [
            [m.name, w, m.curvature] for m, w in _components("MixedCurvatureConfig", self.dim, self.components)
        ]
        return d


@register("mixed_curvature")
class MixedCurvatureAttention(Attention):
    """Attention in a product of Euclidean, Poincaré and spherical factors (see the module docstring)."""

    Config = MixedCurvatureConfig

    def __init__(
        self,
        dim: int,
        components: Sequence[Any] | None = None,
        component_weights: Sequence[float] | None = None,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(
            dim=dim,
            components=None if components is None else list(components),
            component_weights=None if component_weights is None else list(component_weights),
            temperature=temperature,
        )

    def _init_state(self) -> None:
        cfg = self.config
        self.components = _components(type(self).__name__, cfg.dim, cfg.components)
        p = len(self.components)
        init = np.ones(p) if cfg.component_weights is None else np.asarray(cfg.component_weights, np.float64)
        self.component_weights_ = init.astype(np.float64).copy()
        bounds = np.cumsum([0] + [w for _, w in self.components])
        self._slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    @property
    def complexity(self) -> str:
        return "O(n·d) time and memory per query (one distance per factor)"

    def _distances(self, q: Array, k: Array) -> NDArray[np.float64]:
        """``(p, n)`` per-factor distances."""
        return np.stack(
            [
                m.dist(q[sl], k[:, sl]).astype(np.float64)
                for (m, _), sl in zip(self.components, self._slices, strict=True)
            ]
        )

    def _weights(self, op: str, q: Array, k: Array, mask: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n = k.shape[0]
        keep = _keep(op, mask, n)
        if n == 0 or (keep is not None and not keep.any()):
            raise EmptyInput(f"{op}: nothing to attend over: the key set is empty or every key is masked out.")
        dists = self._distances(q, k)
        scores = -(self.component_weights_ @ dists) / float(self.config.temperature)
        if keep is not None:
            scores[~keep] = -np.inf
        return _softmax(scores), dists

    def attention_weights(self, query: Any, keys: Any, *, mask: Any = None) -> Array:
        op = self.kind + ".attention_weights"
        q, k, _, dt = self._tables(op, query, keys, None, "query")
        return self._weights(op, q, k, mask)[0].astype(dt)

    def _values(self, op: str, v: Array) -> None:
        if v.shape[1] != self.config.dim:
            raise DimensionMismatch(f"{op}: values has shape {v.shape}, expected (n, {self.config.dim}) "
                                    "(values live in the same product space).")  # fmt: skip

    def forward(self, query: Any, keys: Any, values: Any, *, mask: Any = None) -> Array:
        op = self.kind + ".forward"
        q, k, v, dt = self._tables(op, query, keys, values, "query")
        self._values(op, v)
        w, _ = self._weights(op, q, k, mask)
        return self._aggregate(v, w).astype(dt)

    def _aggregate(self, v: Array, w: NDArray[np.float64]) -> NDArray[np.float64]:
        live = w > 0
        parts = [
            m.midpoint(v[live][:, sl].astype(np.float64), w[live])
            for (m, _), sl in zip(self.components, self._slices, strict=True)
        ]
        return np.concatenate(parts)

    def forward_batch(self, queries: Any, keys: Any, values: Any, *, mask: Any = None) -> Array:
        """``(m, d)`` queries over one key set -> ``(m, d)``; ``mask`` ``(n,)`` or ``(m, n)`` (a loop)."""
        return _batch(self, self.kind + ".forward_batch", queries, keys, values, mask)

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
        q, k, v, _ = self._tables(op, query, keys, values, "query")
        self._values(op, v)
        g = V.as_array(upstream, op, "upstream", 1, np.dtype(np.float64))
        V.check_width(op, "upstream", g[None], self.config.dim)
        w, dists = self._weights(op, q, k, None)
        v64 = v.astype(np.float64)
        dw = np.zeros(k.shape[0])
        for (m, _), sl in zip(self.components, self._slices, strict=True):
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
        qs, k, v, _ = self._tables(op, queries, keys, values)
        tg = V.as_array(targets, op, "targets", 2, np.dtype(np.float64))
        if tg.shape != (qs.shape[0], self.config.dim):
            raise DimensionMismatch(f"{op}: targets has shape {tg.shape}, expected ({qs.shape[0]}, {self.config.dim}).")
        steps = V.positive_int(op, "steps", steps)
        lr = V.positive_float(op, "learning_rate", learning_rate)
        assert lr is not None
        history = []
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
        return history
