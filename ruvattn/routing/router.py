r"""The mixture-of-experts router: noisy top-k gating with expert capacity, its losses and gradients.

For a batch of queries :math:`x \in \mathbb{R}^{m \times d}` and :math:`E` experts the router computes

.. math::

    h = x W^\top + b + \varepsilon \odot \sigma, \qquad
    \sigma = \operatorname{softplus}(x W_{\text{noise}}^\top)\cdot s, \qquad
    z = h / \tau, \qquad p = \operatorname{softmax}(z)

with :math:`W` (``weight_``, ``(E, d)``), :math:`b` (``bias_``, ``(E,)``), the temperature :math:`\tau`
and, only for a noisy router in training mode, a standard normal draw :math:`\varepsilon` ``(m, E)``
and the noise scale :math:`s` (noisy top-k gating, Shazeer et al. 2017, "Outrageously large neural
networks").  Each query picks its top-k experts by :math:`z` (best first) and gates them with the
softmax of the chosen logits, i.e. the probabilities renormalised over the chosen experts:

.. math::

    w_{q,s} = \frac{\exp z_{q,e_{q,s}}}{\sum_{t\ \text{kept}} \exp z_{q,e_{q,t}}}.

**Capacity** (batched routing, Switch Transformer, Fedus et al. 2021): with a ``capacity_factor``
:math:`c` each expert takes at most :math:`C = \lceil c\, m k / E \rceil` slots.  Slots are assigned
slot by slot in query order (slot 0 of every query, then slot 1, ...).  A slot's *first choice* is the
query's best-ranked expert not yet considered for an earlier slot (its original s-th choice when
nothing overflowed).  If that expert is full the slot *overflows*: with ``overflow="next"`` it goes to
the query's next-best expert that is neither chosen nor full; with ``overflow="drop"`` (or when no
expert is free) it is dropped (expert ``-1``, weight 0) and the remaining weights are renormalised.

**Losses.** Load balancing (Switch Transformer) and the router z-loss (ST-MoE, Zoph et al. 2022):

.. math::

    \mathcal{L}_{\text{LB}} = E \sum_i f_i P_i, \quad f_i = \frac{\#\{\text{kept slots on } i\}}{m k},
    \quad P_i = \frac{1}{m}\sum_q p_{q,i}, \qquad
    \mathcal{L}_z = \frac{1}{m}\sum_q \Big(\log\sum_j e^{z_{q,j}}\Big)^2 .

:meth:`Router.backward` gives the exact gradients of
:math:`\sum_{q,s} g_{q,s} w_{q,s} + \beta\,\mathcal{L}_{\text{LB}} + \gamma\,\mathcal{L}_z` with the
selection (top-k, capacity) and :math:`f` held fixed, and :func:`fit_router` trains a router with it.

>>> import numpy as np
>>> router = Router(dim=3, num_experts=4, top_k=2)
>>> routing = router.route(np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]))
>>> routing.experts.shape, bool(np.allclose(routing.weights.sum(axis=1), 1.0))
((2, 2), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import entr, expit

from ruvattn import _validation as V
from ruvattn._params import Param, Parametrized, ParamSet
from ruvattn.errors import DimensionMismatch, InvalidConfig
from ruvattn.kernels.attention import OK
from ruvattn.kernels.routing import route_one

__all__ = ["Router", "Routing", "RoutingRecord", "fit_router"]

F64 = NDArray[np.float64]
_OVERFLOW = ("next", "drop")


# -- numpy helpers --------------------------------------------------------------------


def _logsumexp(z: F64) -> F64:
    """Row-wise ``log sum exp`` with max subtraction; ``-inf`` for an all ``-inf`` row."""
    mx = z.max(axis=-1, keepdims=True) if z.shape[-1] else np.full((*z.shape[:-1], 1), -np.inf)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        return (safe + np.log(np.exp(z - safe).sum(axis=-1, keepdims=True)))[..., 0]


def _softmax(z: F64) -> F64:
    """Row-wise max-subtracted softmax; ``-inf`` entries get 0 and an all ``-inf`` row is all zeros."""
    mx = z.max(axis=-1, keepdims=True) if z.shape[-1] else np.zeros((*z.shape[:-1], 1))
    safe = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(z - safe)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def _gate(logits: F64, experts: NDArray[np.int64]) -> F64:
    """Softmax of each query's kept chosen logits, ``(m, k)``; 0 for dropped slots (``-1``)."""
    chosen = np.take_along_axis(logits, np.maximum(experts, 0), axis=1)
    return _softmax(np.where(experts >= 0, chosen, -np.inf))


def _load(experts: NDArray[np.int64], num_experts: int) -> NDArray[np.int64]:
    return np.bincount(experts[experts >= 0], minlength=num_experts).astype(np.int64)


# -- the routing decision and its record ----------------------------------------------


@dataclass(frozen=True)
class Routing:
    r"""The routing decision for a batch of ``m`` queries over ``E`` experts with ``k`` slots each.

    Attributes
    ----------
    logits : (m, E) float64
        :math:`z = h/\tau`, the router logits (after noise, if any) divided by the temperature.
    probs : (m, E) float64
        :math:`\operatorname{softmax}(z)` over all experts.
    experts : (m, k) int64
        The chosen experts per query, best first (a rerouted slot keeps its slot position);
        ``-1`` where a slot was dropped.
    weights : (m, k) float64
        Gate weights: the softmax of the kept chosen logits (rows sum to 1, or 0 if all slots dropped).
    overflowed : (m, k) bool
        The slot's first-choice expert was full (the slot was rerouted or dropped).
    dropped : (m,) bool
        The query got no expert at all.
    noise : (m, E) float64 or None
        The noise :math:`\varepsilon\odot\sigma` added to :math:`h` (before the temperature), training mode only.
    standard_normal : (m, E) float64 or None
        The standard normal draw :math:`\varepsilon` behind ``noise`` (pass it back to
        :meth:`Router.route` to reproduce the routing, e.g. for finite differences).
    capacity : int or None
        The per-expert capacity :math:`C` used, ``None`` without a capacity factor.
    """

    logits: F64
    probs: F64
    experts: NDArray[np.int64]
    weights: F64
    overflowed: NDArray[np.bool_]
    dropped: NDArray[np.bool_]
    noise: F64 | None = None
    standard_normal: F64 | None = None
    capacity: int | None = None

    @property
    def num_queries(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_experts(self) -> int:
        return int(self.logits.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.experts.shape[1])


def _load_balancing_loss(routing: Routing) -> float:
    m, num_e, k = routing.num_queries, routing.num_experts, routing.top_k
    if m == 0:
        return 0.0
    f = _load(routing.experts, num_e) / (m * k)
    return float(num_e * np.dot(f, routing.probs.mean(axis=0)))


def _z_loss(routing: Routing) -> float:
    if routing.num_queries == 0:
        return 0.0
    return float(np.mean(_logsumexp(routing.logits) ** 2))


@dataclass(frozen=True)
class RoutingRecord:
    r"""What a widget draws about one :class:`Routing` (built by :meth:`Router.record`).

    Attributes
    ----------
    experts, weights, probs, dropped, overflowed
        As in :class:`Routing`.
    load : (E,) int64
        Kept slots per expert.
    importance : (E,) float64
        Sum of the gate weights per expert, :math:`\sum_{q,s:\,e_{q,s}=i} w_{q,s}`.
    utilisation : (E,) float64
        ``load / ideal`` with ``ideal = m k / E`` (1 everywhere is a perfectly balanced load).
    entropy : (m,) float64
        Router entropy per query in nats, :math:`-\sum_j p_{q,j}\log p_{q,j}`.
    mean_entropy : float
    num_dropped : int
        Queries with no expert.
    num_overflowed : int
        Slots whose first choice was full.
    dead_experts : (E,) bool
        ``load == 0``.
    load_balancing_loss, z_loss : float
        See the module docstring.
    capacity : int or None
        The per-expert capacity, ``None`` without a capacity factor.
    """

    experts: NDArray[np.int64]
    weights: F64
    probs: F64
    load: NDArray[np.int64]
    importance: F64
    utilisation: F64
    entropy: F64
    mean_entropy: float
    dropped: NDArray[np.bool_]
    overflowed: NDArray[np.bool_]
    num_dropped: int
    num_overflowed: int
    dead_experts: NDArray[np.bool_]
    load_balancing_loss: float
    z_loss: float
    capacity: int | None = None

    @classmethod
    def from_routing(cls, routing: Routing) -> RoutingRecord:
        m, num_e, k = routing.num_queries, routing.num_experts, routing.top_k
        load = _load(routing.experts, num_e)
        kept = routing.experts >= 0
        importance = np.bincount(routing.experts[kept], weights=routing.weights[kept], minlength=num_e)
        ideal = m * k / num_e
        utilisation = load / ideal if ideal > 0 else np.zeros(num_e)
        entropy = entr(routing.probs).sum(axis=1)
        return cls(
            experts=routing.experts,
            weights=routing.weights,
            probs=routing.probs,
            load=load,
            importance=importance.astype(np.float64),
            utilisation=utilisation.astype(np.float64),
            entropy=entropy,
            mean_entropy=float(entropy.mean()) if m else 0.0,
            dropped=routing.dropped,
            overflowed=routing.overflowed,
            num_dropped=int(routing.dropped.sum()),
            num_overflowed=int(routing.overflowed.sum()),
            dead_experts=load == 0,
            load_balancing_loss=_load_balancing_loss(routing),
            z_loss=_z_loss(routing),
            capacity=routing.capacity,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (arrays as nested lists of Python ints/floats/bools)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out


# -- the router -----------------------------------------------------------------------


class Router(Parametrized):
    r"""Noisy top-k softmax gating over ``num_experts`` experts with an optional expert capacity.

    Attributes
    ----------
    weight_ : (E, d) float64
        Initialised :math:`\mathcal{N}(0, 1/d)` from ``seed``.
    bias_ : (E,) float64
        Zeros.
    noise_weight_ : (E, d) float64 or None
        Zeros when ``noisy``, else ``None``.
    training : bool
        Noise is drawn only in training mode (default ``False``; see :meth:`train`, :meth:`eval`).
    """

    params = (
        Param("dim", V.WIDTH, doc="query width d", live=False),
        Param("num_experts", V.POSITIVE_INT, doc="number of experts E", live=False),
        Param("top_k", V.POSITIVE_INT, 2, "experts per query (at most num_experts)"),
        Param("temperature", V.POSITIVE, 1.0, "the logits are divided by it"),
        Param(
            "noisy", V.FLAG, False, "noisy top-k gating in training mode (Shazeer et al. 2017): softplus(x W_noise^T)·s"
        ),
        Param("noise_scale", V.POSITIVE, 1.0, "s; with the zero-initialised noise_weight_ the noise std is 0.693·s"),
        Param(
            "capacity_factor", V.POSITIVE, None, "each expert takes at most ceil(c·m·k/E) slots per batch", none=True
        ),
        Param("overflow", V.Options(*_OVERFLOW), "next", "what a slot whose first choice is full does"),
        Param("seed", V.SEED, 0, "seeds the initial weight_ and the noise generator (independent streams)", live=False),
    )

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        if p.top_k > p.num_experts:
            raise InvalidConfig(
                f"{owner}: 'top_k' must be at most num_experts ({p.num_experts}); got {p.top_k!r}. "
                "Lower top_k or add experts."
            )

    def _init_state(self) -> None:
        init_seq, noise_seq = np.random.SeedSequence(self.seed).spawn(2)
        self.weight_: F64 = np.random.default_rng(init_seq).normal(
            0.0, 1.0 / math.sqrt(self.dim), (self.num_experts, self.dim)
        )
        self.bias_: F64 = np.zeros(self.num_experts)
        self.noise_weight_: F64 | None = np.zeros((self.num_experts, self.dim)) if self.noisy else None
        self._noise_rng = np.random.default_rng(noise_seq)

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """``weight (E, d)``, ``bias (E,)`` and, when noisy, ``noise_weight (E, d)``."""
        shapes = {"weight": (self.num_experts, self.dim), "bias": (self.num_experts,)}
        if self.noisy:
            shapes["noise_weight"] = (self.num_experts, self.dim)
        return shapes

    def _state_set(self, name: str, value: NDArray[Any]) -> None:
        super()._state_set(name, np.array(value, dtype=np.float64))  # the routing kernel runs in float64

    # -- modes and parameters ---------------------------------------------------------

    def train(self, mode: bool = True) -> Router:
        """Switch training mode (noise is drawn only in training mode); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> Router:
        """``train(False)``."""
        return self.train(False)

    # -- forward ----------------------------------------------------------------------

    def _queries(self, op: str, x: Any) -> F64:
        ndim = np.ndim(x)
        if ndim not in (1, 2):
            raise DimensionMismatch(f"{op}: x has shape {np.shape(x)}, expected (m, {self.dim}) or ({self.dim},).")
        arr = V.as_array(x, op, "x", ndim, np.dtype(np.float64))
        V.check_width(op, "x", arr, self.dim)
        V.check_finite(op, x=arr)
        return arr.reshape(-1, self.dim)

    def _noise_std(self, x: F64) -> F64:
        assert self.noise_weight_ is not None
        return np.logaddexp(0.0, x @ self.noise_weight_.T) * self.noise_scale

    def logits(self, x: Any) -> F64:
        r"""Clean logits :math:`(x W^\top + b)/\tau`, ``(m, E)``; a single query ``(d,)`` gives ``(1, E)``."""
        xs = self._queries("Router.logits", x)
        return (xs @ self.weight_.T + self.bias_) / self.temperature

    def noise_std(self, x: Any) -> F64:
        r"""Noise std :math:`\operatorname{softplus}(x W_{\text{noise}}^\top)\,s`, ``(m, E)`` (noisy routers only)."""
        if self.noise_weight_ is None:
            raise InvalidConfig("Router.noise_std: the router is not noisy; construct it with noisy=True.")
        return self._noise_std(self._queries("Router.noise_std", x))

    def route(self, x: Any, *, standard_normal: Any = None) -> Routing:
        r"""Route ``x`` ``(m, d)`` (or one query ``(d,)``) to experts.

        Parameters
        ----------
        x : (m, d) or (d,) array
        standard_normal : (m, E) array, optional
            The draw :math:`\varepsilon` to use instead of the router's generator (noisy router in training
            mode only; ignored otherwise).  Passing ``routing.standard_normal`` back reproduces ``routing``.

        Returns
        -------
        Routing
        """
        op = "Router.route"
        xs = self._queries(op, x)
        m, num_e, k = xs.shape[0], self.num_experts, self.top_k
        h = xs @ self.weight_.T + self.bias_
        noise = eps = None
        if self.noisy and self.training:
            if standard_normal is None:
                eps = self._noise_rng.standard_normal((m, num_e))
            else:
                eps = V.as_array(standard_normal, op, "standard_normal", 2, np.dtype(np.float64))
                if eps.shape != (m, num_e):
                    raise DimensionMismatch(f"{op}: standard_normal has shape {eps.shape}, expected {(m, num_e)}.")
                V.check_finite(op, standard_normal=eps)
            noise = eps * self._noise_std(xs)
            h = h + noise
        z = h / self.temperature
        order = np.argsort(-z, axis=1, kind="stable")
        capacity = None
        if self.capacity_factor is None:
            experts = np.ascontiguousarray(order[:, :k], dtype=np.int64)
            overflowed = np.zeros((m, k), dtype=np.bool_)
        else:
            capacity = math.ceil(self.capacity_factor * m * k / num_e)
            experts, overflowed = _assign(order, k, capacity, self.overflow)
        return Routing(
            logits=z,
            probs=_softmax(z),
            experts=experts,
            weights=_gate(z, experts),
            overflowed=overflowed,
            dropped=~(experts >= 0).any(axis=1),
            noise=noise,
            standard_normal=eps,
            capacity=capacity,
        )

    def choose(self, x: NDArray[np.floating]) -> tuple[NDArray[np.int64], F64] | None:
        """Experts (best first) and gate weights of ONE query ``(d,)``, without building a :class:`Routing`:
        the per-query hot path of an MoE layer.  The same decision as ``route(x)`` when no noise is
        drawn and capacity does not bind (one query never exceeds a capacity); returns ``None`` when
        it cannot decide that way (a noisy router in training mode, or non-finite logits), so the
        caller falls back to :meth:`route` (which raises for NaN input)."""
        if self.noisy and self.training:
            return None
        experts = np.empty(self.top_k, np.int64)
        gates = np.empty(self.top_k, np.float64)
        w, b = self.weight_, self.bias_
        if w.dtype != np.float64 or not w.flags.c_contiguous:  # assigned by hand: the kernel takes float64
            w = np.ascontiguousarray(w, np.float64)
        if b.dtype != np.float64:
            b = b.astype(np.float64)
        if route_one(w, b, x, 1.0 / self.temperature, experts, gates) != OK:
            return None
        return experts, gates

    def record(self, routing: Routing) -> RoutingRecord:
        """The :class:`RoutingRecord` (loads, utilisation, entropy, losses) of ``routing``."""
        self._check_routing("Router.record", routing)
        return RoutingRecord.from_routing(routing)

    def load_balancing_loss(self, routing: Routing) -> float:
        r"""Switch Transformer loss :math:`E\sum_i f_i P_i` (1 for a uniform router with a balanced load)."""
        self._check_routing("Router.load_balancing_loss", routing)
        return _load_balancing_loss(routing)

    def z_loss(self, routing: Routing) -> float:
        r"""ST-MoE router z-loss :math:`\frac1m\sum_q (\log\sum_j e^{z_{q,j}})^2`."""
        self._check_routing("Router.z_loss", routing)
        return _z_loss(routing)

    def _check_routing(self, op: str, routing: Routing) -> None:
        if routing.num_experts != self.num_experts or routing.top_k != self.top_k:
            raise DimensionMismatch(
                f"{op}: routing has {routing.num_experts} experts and top_k {routing.top_k}, "
                f"expected {self.num_experts} and {self.top_k}."
            )

    # -- backward ---------------------------------------------------------------------

    def backward(
        self,
        x: Any,
        routing: Routing,
        grad_weights: Any,
        *,
        balance_coef: float = 0.0,
        z_coef: float = 0.0,
        input_grad: bool = False,
    ) -> dict[str, F64]:
        r"""Gradients of the gated task loss plus the auxiliary losses w.r.t. the router parameters.

        .. math::

            L = \sum_{q,s} g_{q,s} w_{q,s} + \beta\,\mathcal{L}_{\text{LB}} + \gamma\,\mathcal{L}_z

        The selection (top-k, capacity) and the load fractions :math:`f` are held fixed, and so is the
        noise draw :math:`\varepsilon`.  With :math:`\delta = \partial L/\partial z` ``(m, E)``:

        .. math::

            \delta_{q,e_{q,s}} \mathrel{+}= w_{q,s}\Big(g_{q,s} - \sum_t w_{q,t} g_{q,t}\Big), \quad
            \delta_q \mathrel{+}= p_q \odot (u - \langle p_q, u\rangle) \text{ with } u = \beta E f / m, \quad
            \delta_q \mathrel{+}= \frac{2\gamma}{m}\operatorname{lse}(z_q)\, p_q

        and :math:`\partial L/\partial W = (\delta/\tau)^\top x`, :math:`\partial L/\partial b = \sum_q \delta_q/\tau`,
        :math:`\partial L/\partial W_{\text{noise}} = (\delta/\tau \odot \varepsilon \odot
        \operatorname{sigmoid}(x W_{\text{noise}}^\top)\, s)^\top x`.

        Parameters
        ----------
        x : (m, d) or (d,) array
            The queries ``routing`` was computed from.
        routing : Routing
        grad_weights : (m, k) array
            :math:`g = \partial L_{\text{task}} / \partial w`.
        balance_coef, z_coef : float
            :math:`\beta, \gamma \ge 0`.
        input_grad : bool
            Also return ``"x"``, the gradient with respect to the queries ``(m, d)`` (through the clean
            logits and, when noise was drawn, the noise std).

        Returns
        -------
        dict
            ``{"weight": (E, d), "bias": (E,)}`` plus ``"noise_weight"`` ``(E, d)`` for a noisy router
            (zeros when ``routing`` carries no noise).
        """
        op = "Router.backward"
        self._check_routing(op, routing)
        xs = self._queries(op, x)
        m, num_e, k = routing.num_queries, self.num_experts, self.top_k
        if xs.shape[0] != m:
            raise DimensionMismatch(f"{op}: x has {xs.shape[0]} rows but routing has {m} queries.")
        g = V.as_array(grad_weights, op, "grad_weights", 2, np.dtype(np.float64))
        if g.shape != (m, k):
            raise DimensionMismatch(f"{op}: grad_weights has shape {g.shape}, expected {(m, k)}.")
        V.check_finite(op, grad_weights=g)
        beta = V.non_negative_float(op, "balance_coef", balance_coef)
        gamma = V.non_negative_float(op, "z_coef", z_coef)

        w, z, p = routing.weights, routing.logits, routing.probs
        delta = np.zeros((m, num_e))
        kept = routing.experts >= 0
        dz_chosen = w * (g - (w * g).sum(axis=1, keepdims=True))
        rows = np.broadcast_to(np.arange(m)[:, None], (m, k))
        np.add.at(delta, (rows[kept], routing.experts[kept]), dz_chosen[kept])
        if m and beta:
            u = beta * num_e * (_load(routing.experts, num_e) / (m * k)) / m
            delta += p * (u[None, :] - (p @ u)[:, None])
        if m and gamma:
            delta += (2.0 * gamma / m) * _logsumexp(z)[:, None] * p
        dh = delta / self.temperature
        grads = {"weight": dh.T @ xs, "bias": dh.sum(axis=0)}
        dx = dh @ self.weight_ if input_grad else None
        if self.noise_weight_ is not None:
            if routing.standard_normal is None:
                grads["noise_weight"] = np.zeros_like(self.noise_weight_)
            else:
                dpre = dh * routing.standard_normal * expit(xs @ self.noise_weight_.T) * self.noise_scale
                grads["noise_weight"] = dpre.T @ xs
                if dx is not None:
                    dx = dx + dpre @ self.noise_weight_
        if dx is not None:
            grads["x"] = dx
        return grads


def _assign(
    order: NDArray[np.intp], k: int, capacity: int, overflow: str
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Capacity-limited slot assignment (slot by slot, queries in order); see the module docstring."""
    m, num_e = order.shape
    experts = np.full((m, k), -1, dtype=np.int64)
    overflowed = np.zeros((m, k), dtype=np.bool_)
    counts = np.zeros(num_e, dtype=np.int64)
    considered = np.zeros((m, num_e), dtype=np.bool_)
    for s in range(k):
        for q in range(m):
            prefs = order[q][~considered[q, order[q]]]  # not yet considered, best first
            if prefs.size == 0:
                continue
            first = prefs[0]
            considered[q, first] = True
            if counts[first] < capacity:
                choice = int(first)
            else:
                overflowed[q, s] = True
                choice = -1
                if overflow == "next":
                    free = prefs[1:][counts[prefs[1:]] < capacity]
                    if free.size:
                        choice = int(free[0])
            if choice >= 0:
                experts[q, s] = choice
                considered[q, choice] = True
                counts[choice] += 1
    return experts, overflowed


# -- training -------------------------------------------------------------------------


def fit_router(
    router: Router,
    queries: Any,
    expert_outputs: Any,
    targets: Any,
    *,
    steps: int = 200,
    learning_rate: float = 0.1,
    balance_coef: float = 0.01,
    z_coef: float = 0.001,
    seed: int = 0,
) -> list[dict[str, float]]:
    r"""Train ``router`` in place so that the gated mixture of its chosen experts matches ``targets``.

    The objective, for routing :math:`(e, w)` of the queries :math:`x` ``(m, d)``, the per-query expert
    outputs :math:`o` ``(E, m, dv)`` and the targets :math:`y` ``(m, dv)``:

    .. math::

        \text{mix}_q = \sum_s w_{q,s}\, o_{e_{q,s},q}, \qquad
        L = \frac1m\sum_q \lVert \text{mix}_q - y_q \rVert^2
            + \beta\,\mathcal{L}_{\text{LB}} + \gamma\,\mathcal{L}_z

    (dropped slots contribute nothing).  Each step routes the batch, then takes one Adam step
    (:math:`\beta_1 = 0.9, \beta_2 = 0.999`, :math:`\epsilon = 10^{-8}`, step size ``learning_rate``) on
    the router parameters with the gradients of :meth:`Router.backward`, using
    :math:`g_{q,s} = \frac2m\langle \text{mix}_q - y_q,\ o_{e_{q,s},q}\rangle`.  A noisy router is
    trained in training mode with noise drawn from a generator seeded by ``seed`` (the router's own
    noise stream is not consumed); the router's mode is restored afterwards.

    The selection itself gets no gradient (straight-through), so a deterministic router only re-weights
    the experts it already picks and can stay stuck on a wrong pair; the noise of a noisy router
    (``noisy=True``) supplies the exploration that lets the right expert enter the top-k.

    Returns
    -------
    list of dict
        Per step, measured before that step's update: ``task_loss``, ``load_balancing_loss``,
        ``z_loss`` and ``total``.
    """
    op = "fit_router"
    xs = router._queries(op, queries)
    m, num_e = xs.shape[0], router.num_experts
    outs = V.as_array(expert_outputs, op, "expert_outputs", 3, np.dtype(np.float64))
    if outs.shape[:2] != (num_e, m):
        raise DimensionMismatch(f"{op}: expert_outputs has shape {outs.shape}, expected ({num_e}, {m}, dv).")
    ys = V.as_array(targets, op, "targets", 2, np.dtype(np.float64))
    if ys.shape != (m, outs.shape[2]):
        raise DimensionMismatch(f"{op}: targets has shape {ys.shape}, expected ({m}, {outs.shape[2]}).")
    V.check_finite(op, expert_outputs=outs, targets=ys)
    steps = V.positive_int(op, "steps", steps)
    lr = float(V.positive_float(op, "learning_rate", learning_rate))
    beta = V.non_negative_float(op, "balance_coef", balance_coef)
    gamma = V.non_negative_float(op, "z_coef", z_coef)
    if m == 0:
        raise DimensionMismatch(f"{op}: queries has shape {xs.shape}, expected at least one row.")

    rng = np.random.default_rng(seed)
    was_training = router.training
    router.train(router.noisy)
    attrs = {"weight": "weight_", "bias": "bias_", "noise_weight": "noise_weight_"}
    params = {name: getattr(router, attrs[name]) for name in router.state_dict()}  # updated in place
    moments = {name: (np.zeros_like(v), np.zeros_like(v)) for name, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    history: list[dict[str, float]] = []
    qidx = np.arange(m)[:, None]
    try:
        for t in range(1, steps + 1):
            draw = rng.standard_normal((m, num_e)) if router.noisy else None
            routing = router.route(xs, standard_normal=draw)
            kept = routing.experts >= 0
            chosen = outs[np.maximum(routing.experts, 0), qidx] * kept[..., None]  # (m, k, dv)
            resid = np.einsum("qs,qsv->qv", routing.weights, chosen) - ys
            task = float((resid**2).sum() / m)
            lb, zl = _load_balancing_loss(routing), _z_loss(routing)
            history.append(
                {"task_loss": task, "load_balancing_loss": lb, "z_loss": zl, "total": task + beta * lb + gamma * zl}
            )
            g = (2.0 / m) * np.einsum("qv,qsv->qs", resid, chosen)
            grads = router.backward(xs, routing, g, balance_coef=beta, z_coef=gamma)
            for name, grad in grads.items():
                m1, m2 = moments[name]
                m1 *= b1
                m1 += (1 - b1) * grad
                m2 *= b2
                m2 += (1 - b2) * grad**2
                params[name] -= lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
    finally:
        router.train(was_training)
    return history
