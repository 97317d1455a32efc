r"""Mixture-of-experts attention: a router sends each query to its top-k attention mechanisms.

.. math::

    p = \operatorname{softmax}\big((W q + b)/T\big), \qquad
    S = \operatorname{top}_k(p), \qquad
    \text{out} = \sum_{e \in S} \frac{p_e}{\sum_{e' \in S} p_{e'}}\, \text{expert}_e(q, K, V)

(Shazeer et al. 2017; the specification's FR-005.1).  Only the chosen experts
run.  The experts are any :class:`~ruvattn.mechanisms.Attention` objects that
share the query width and produce outputs of one width (checked when the layer
is built, with a probe call).  The router (:class:`~ruvattn.moe.Router`) has
softmax gating, noisy top-k gating in training mode (seeded), a temperature,
and, for batches, a capacity per expert with overflowing queries re-routed to
their next expert or dropped (reported).  Routing is inspectable to the last
number: :meth:`MoEAttention.get_routing` for one query and
:meth:`MoEAttention.routing_record` (a :class:`~ruvattn.moe.RoutingRecord`:
choices, weights, load, utilisation, entropy, dropped and overflowed queries,
dead experts, the Switch load-balancing loss and the router z-loss) for a batch.

The router can be trained (:meth:`MoEAttention.fit_router`): the objective is to
make the gated mixture of the chosen experts' outputs close to a target -- for
example exact attention over the full neighbour set -- plus the load-balancing
and z losses; the router's backward pass is hand-written and checked against
finite differences.

For repeated queries over one candidate set, :meth:`MoEAttention.prepare` does
each expert's per-key-set work once (a linear expert's key/value summary, a
multi-head expert's projections); a linear expert over fresh keys costs
O(n·d·m) per call, over a prepared set O(d·m).

Every expert receives the same query, keys and values: a hyperbolic expert
expects points of its ball (for example ``PoincareBall.expmap0`` of small
embeddings), an edge-featured expert (:class:`~ruvattn.mechanisms.GATConv`)
also receives ``edge_features`` when they are passed.

The specification's builder::

    MoEAttention.builder().add_local_expert(128).add_hyperbolic_expert(128, -1.0)
        .add_sparse_expert(10, 5).top_k(2).build()

Shapes: query ``(d,)``, keys ``(n, d)``, values ``(n, dv)`` -> ``(dv_out,)``;
``forward_batch`` ``(m, d)`` -> ``(m, dv_out)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, InvalidConfig
from ruvattn.mechanisms.base import Attention, AttentionConfig, build, register
from ruvattn.mechanisms.gat import GATConv, GATv2Conv
from ruvattn.mechanisms.hyperbolic import HyperbolicAttention
from ruvattn.mechanisms.linear import LinearAttention
from ruvattn.mechanisms.local_global import LocalGlobalAttention
from ruvattn.mechanisms.multi_head import MultiHeadAttention
from ruvattn.mechanisms.scaled_dot import ScaledDotProductAttention
from ruvattn.routing.router import Router, Routing, RoutingRecord, fit_router

__all__ = ["MoEAttention", "MoEBuilder", "MoEConfig", "PreparedKeys"]

Array = NDArray[np.floating]
_EDGE_EXPERTS = (GATConv, GATv2Conv)


@dataclass(frozen=True)
class PreparedKeys:
    """A key/value set prepared once for every expert of one :class:`MoEAttention`
    (:meth:`MoEAttention.prepare`): a linear expert's key/value summary, a multi-head
    expert's projected keys/values, the raw arrays for the others."""

    keys: Array
    values: Array
    forms: tuple[Any, ...]
    owner: int


def _expert(owner: str, spec: Any) -> Attention:
    if isinstance(spec, Attention):
        return spec
    if isinstance(spec, dict):
        return build(spec)
    raise InvalidConfig(f"{owner}: an expert is an Attention object or a build() dict; got {type(spec).__name__}.")


def _expert_dim(e: Attention) -> int:
    return int(e.hidden_dim)


@dataclass
class MoEConfig(AttentionConfig):
    """``dim``: query width; ``experts``: Attention objects or ``build()`` dicts; ``top_k`` in
    ``[1, len(experts)]``; router ``temperature``; ``noisy`` top-k gating (training mode) with
    ``noise_scale``; ``capacity_factor`` (None: unlimited) and ``overflow`` ("next" or "drop") for
    batches; ``seed`` for the router's initialisation and noise."""

    dim: int
    experts: list[Any] = field(default_factory=list)
    top_k: int = 2
    temperature: float = 1.0
    noisy: bool = False
    noise_scale: float = 1.0
    capacity_factor: float | None = None
    overflow: str = "next"
    seed: int | None = 0

    def validate(self, owner: str) -> None:
        V.positive_int(owner, "dim", self.dim)
        if not self.experts:
            raise InvalidConfig(f"{owner}: 'experts' must list at least one attention mechanism.")
        k = self.top_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(self.experts):
            raise InvalidConfig(f"{owner}: 'top_k' must be an integer in [1, {len(self.experts)}] (the number of "
                                f"experts); got {k!r}.")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["experts"] = [e.to_dict() if isinstance(e, Attention) else dict(e) for e in self.experts]
        return d


@register("moe")
class MoEAttention(Attention):
    """Top-k mixture of attention experts with an inspectable, trainable router (see the module docstring)."""

    Config = MoEConfig

    def __init__(
        self,
        dim: int,
        experts: Sequence[Any],
        top_k: int = 2,
        temperature: float = 1.0,
        noisy: bool = False,
        noise_scale: float = 1.0,
        capacity_factor: float | None = None,
        overflow: str = "next",
        seed: int | None = 0,
    ) -> None:
        super().__init__(dim=dim, experts=list(experts), top_k=top_k, temperature=temperature, noisy=noisy,
                         noise_scale=noise_scale, capacity_factor=capacity_factor, overflow=overflow,
                         seed=seed)  # fmt: skip

    @staticmethod
    def builder() -> MoEBuilder:
        """The specification's fluent builder (see :class:`MoEBuilder`)."""
        return MoEBuilder()

    def _init_state(self) -> None:
        cfg = self.config
        owner = type(self).__name__
        self.experts = [_expert(owner, e) for e in cfg.experts]
        for i, e in enumerate(self.experts):
            if _expert_dim(e) != cfg.dim:
                raise InvalidConfig(f"{owner}: expert {i} ({type(e).__name__}) takes queries of width "
                                    f"{_expert_dim(e)}, but the layer's dim is {cfg.dim}.")  # fmt: skip
        self.router = Router(cfg.dim, len(self.experts), top_k=cfg.top_k, temperature=cfg.temperature,
                             noisy=cfg.noisy, noise_scale=cfg.noise_scale, capacity_factor=cfg.capacity_factor,
                             overflow=cfg.overflow, seed=cfg.seed)  # fmt: skip
        self.output_dim = self._probe_output_width()

    def _probe_output_width(self) -> int:
        """Run every expert once on a tiny input: they must agree on the output width."""
        rng = np.random.default_rng(0)
        d = self.config.dim
        q = (0.1 * rng.standard_normal(d)).astype(np.float64)
        kv = (0.1 * rng.standard_normal((3, d))).astype(np.float64)
        widths = []
        for e in self.experts:
            widths.append(int(np.shape(self._run_expert(e, q, kv, kv, None))[0]))
        if len(set(widths)) > 1:
            desc = ", ".join(f"{i}: {type(e).__name__} -> {w}" for i, e, w in zip(range(len(widths)), self.experts,
                                                                                  widths, strict=True))  # fmt: skip
            raise InvalidConfig(f"MoEAttention: the experts must share the output width; got {desc}.")
        return widths[0]

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def complexity(self) -> str:
        return "router O(E·d) + the top_k chosen experts' costs per query"

    def train(self, mode: bool = True) -> MoEAttention:
        """Training mode: noisy gating (if configured) and the experts' own training behaviour."""
        super().train(mode)
        self.router.train(mode)
        for e in self.experts:
            e.train(mode)
        return self

    # -- running ------------------------------------------------------------------
    @staticmethod
    def _run_expert(e: Attention, q: Array, k: Array, v: Array, edge_features: Any, form: Any = None) -> Array:
        if form is not None:  # a prepared summary / projection
            return e.forward(q, form)
        if isinstance(e, _EDGE_EXPERTS):
            return e.forward_with_edges(q, k, v, edge_features)
        return e.forward(q, k, v)

    def prepare(self, keys: Any, values: Any) -> PreparedKeys:
        """Prepare a key/value set once for repeated queries: linear experts summarise it
        (O(n·d·m) once, then O(d·m) per query) and multi-head experts project it.  Pass the
        result as ``keys`` to :meth:`forward` (without ``values``)."""
        op = self.kind + ".prepare"
        k = V.as_array(keys, op, "keys", 2)
        v = V.as_array(values, op, "values", 2)
        forms: list[Any] = []
        for e in self.experts:
            if isinstance(e, LinearAttention):
                forms.append(e.summarize(k, v))
            elif isinstance(e, MultiHeadAttention):
                forms.append(e.project(k, v))
            else:
                forms.append(None)
        return PreparedKeys(k, v, tuple(forms), id(self))

    def _query(self, op: str, query: Any) -> Array:
        q = V.as_array(query, op, "query", 1)
        V.check_width(op, "query", q[None], self.config.dim)
        return q

    def route(self, queries: Any) -> Routing:
        """The router's decision for ``(m, d)`` queries (or one ``(d,)`` query)."""
        op = self.kind + ".route"
        x = V.as_array(queries, op, "queries", np.ndim(queries))
        return self.router.route(x)

    def forward(self, query: Any, keys: Any, values: Any = None, *, edge_features: Any = None) -> Array:
        """Output of the top-k experts for one query, mixed by the renormalised router weights.

        ``keys`` may be a :class:`PreparedKeys` from :meth:`prepare` (then ``values`` is omitted).
        """
        op = self.kind + ".forward"
        q = self._query(op, query)
        forms: tuple[Any, ...] = (None,) * len(self.experts)
        if isinstance(keys, PreparedKeys):
            if keys.owner != id(self):
                raise InvalidConfig(f"{op}: these keys were prepared by another MoEAttention; call prepare() here.")
            keys, values, forms = keys.keys, keys.values, keys.forms
        elif values is None:
            raise DimensionMismatch(f"{op}: values are missing; pass keys and values, or keys=prepare(keys, values).")
        chosen = self.router.choose(q)
        if chosen is None:  # noisy gating in training mode (or a NaN query: route() names it)
            routing = self.router.route(q[None])
            chosen = (routing.experts[0], routing.weights[0])
        out: Array | None = None
        for e, w in zip(*chosen, strict=True):
            if e < 0 or w == 0:
                continue
            y = np.asarray(self._run_expert(self.experts[e], q, keys, values, edge_features, forms[e]))
            out = w * y if out is None else out + w * y
        if out is None:  # dropped (only possible with capacity limits, which do not apply to one query)
            return np.zeros(self.output_dim, q.dtype)
        return out.astype(q.dtype if q.dtype in (np.float32, np.float64) else np.float64, copy=False)

    def get_routing(self, query: Any) -> list[tuple[int, float]]:
        """``[(expert index, weight), ...]`` for one query, best first (the specification's ``get_routing``)."""
        routing = self.route(self._query(self.kind + ".get_routing", query)[None])
        return [(int(e), float(w)) for e, w in zip(routing.experts[0], routing.weights[0], strict=True) if e >= 0]

    def routing_record(self, queries: Any) -> RoutingRecord:
        """The full routing record of a batch (no expert runs): what the MoE widget draws."""
        return self.router.record(self.route(queries))

    def forward_batch(self, queries: Any, keys: Any, values: Any, *, edge_features: Any = None) -> Array:
        """``(m, d)`` queries over one key set: routed together (capacity applies), each expert runs once on
        the queries sent to it (its batch form where it has one); dropped queries get zeros."""
        op = self.kind + ".forward_batch"
        qs = V.as_array(queries, op, "queries", 2)
        V.check_width(op, "queries", qs, self.config.dim)
        routing = self.router.route(qs)
        self.last_routing = routing
        dt = qs.dtype
        out = np.zeros((qs.shape[0], self.output_dim), np.float64)
        for e, expert in enumerate(self.experts):
            rows, slots = np.nonzero(routing.experts == e)
            if rows.size == 0:
                continue
            if hasattr(expert, "forward_batch") and not isinstance(expert, _EDGE_EXPERTS):
                ys = np.asarray(expert.forward_batch(qs[rows], keys, values))
            else:
                ys = np.stack([np.asarray(self._run_expert(expert, qs[r], keys, values, edge_features)) for r in rows])
            if ys.shape[1] != self.output_dim:
                raise DimensionMismatch(f"{op}: expert {e} returned width {ys.shape[1]}, expected {self.output_dim}.")
            np.add.at(out, rows, routing.weights[rows, slots][:, None] * ys)
        return out.astype(dt)

    def expert_outputs(self, queries: Any, keys: Any, values: Any) -> NDArray[np.float64]:
        """Every expert's output for every query, ``(E, m, dv_out)`` float64 (for training and analysis)."""
        op = self.kind + ".expert_outputs"
        qs = V.as_array(queries, op, "queries", 2)
        outs = []
        for expert in self.experts:
            if hasattr(expert, "forward_batch") and not isinstance(expert, _EDGE_EXPERTS):
                outs.append(np.asarray(expert.forward_batch(qs, keys, values), np.float64))
            else:
                outs.append(np.stack([np.asarray(self._run_expert(expert, q, keys, values, None), np.float64)
                                      for q in qs]))  # fmt: skip
        return np.stack(outs)

    def fit_router(
        self,
        queries: Any,
        keys: Any,
        values: Any,
        targets: Any,
        *,
        steps: int = 200,
        learning_rate: float = 0.1,
        balance_coef: float = 0.01,
        z_coef: float = 0.001,
    ) -> list[dict[str, float]]:
        """Train the router: the experts' outputs are computed once, then :func:`~ruvattn.moe.fit_router`
        minimises ``mean_q |Σ_s w[q,s] out[e[q,s], q] - target[q]|² + balance_coef·LB + z_coef·Z``."""
        op = self.kind + ".fit_router"
        qs = V.as_array(queries, op, "queries", 2)
        tg = V.as_array(targets, op, "targets", 2, np.dtype(np.float64))
        if tg.shape != (qs.shape[0], self.output_dim):
            raise DimensionMismatch(f"{op}: targets has shape {tg.shape}, expected ({qs.shape[0]}, {self.output_dim}).")
        outs = self.expert_outputs(qs, keys, values)
        return fit_router(self.router, qs.astype(np.float64), outs, tg, steps=steps, learning_rate=learning_rate,
                          balance_coef=balance_coef, z_coef=z_coef)  # fmt: skip


class MoEBuilder:
    """The specification's builder: ``MoEAttention.builder().add_local_expert(128)...top_k(2).build()``.

    The four expert kinds of the specification: ``add_local_expert`` (scaled dot-product),
    ``add_hyperbolic_expert`` (hierarchical, Poincaré ball), ``add_linear_expert`` (global, FAVOR+)
    and ``add_edge_expert`` (structural, GAT with edge features); ``add_sparse_expert`` (local +
    global window) and ``add_expert`` (any mechanism) too.  The width comes from the first expert
    that names it.
    """

    def __init__(self) -> None:
        self._dim: int | None = None
        self._experts: list[Any] = []
        self._opts: dict[str, Any] = {}

    def _need_dim(self, what: str) -> int:
        if self._dim is None:
            raise InvalidConfig(f"MoEBuilder.{what}: add an expert with an explicit dim first "
                                "(e.g. add_local_expert(128)).")  # fmt: skip
        return self._dim

    def _set_dim(self, dim: int) -> None:
        dim = V.positive_int("MoEBuilder", "dim", dim)
        if self._dim is not None and dim != self._dim:
            raise InvalidConfig(f"MoEBuilder: every expert must take width {self._dim}; got {dim}.")
        self._dim = dim

    def add_expert(self, expert: Attention) -> MoEBuilder:
        self._set_dim(_expert_dim(expert))
        self._experts.append(expert)
        return self

    def add_local_expert(self, dim: int, temperature: float = 1.0) -> MoEBuilder:
        self._set_dim(dim)
        return self.add_expert(ScaledDotProductAttention(dim, temperature=temperature))

    def add_hyperbolic_expert(self, dim: int, curvature: float = -1.0, temperature: float = 1.0) -> MoEBuilder:
        self._set_dim(dim)
        return self.add_expert(HyperbolicAttention(dim, curvature=curvature, temperature=temperature))

    def add_sparse_expert(self, local_window: int, global_nodes: int) -> MoEBuilder:
        dim = self._need_dim("add_sparse_expert")
        return self.add_expert(LocalGlobalAttention(dim, local_window=local_window, global_nodes=global_nodes))

    def add_linear_expert(self, num_features: int = 64, seed: int = 0) -> MoEBuilder:
        dim = self._need_dim("add_linear_expert")
        return self.add_expert(LinearAttention(dim, feature_map="favor", num_features=num_features, seed=seed))

    def add_edge_expert(self, edge_dim: int | None = None, heads: int = 1, seed: int = 0) -> MoEBuilder:
        """GAT over the neighbours (single-node form), output width ``dim`` (``heads`` must divide it)."""
        dim = self._need_dim("add_edge_expert")
        if dim % heads:
            raise InvalidConfig(f"MoEBuilder.add_edge_expert: heads ({heads}) must divide the width {dim}.")
        return self.add_expert(GATConv(dim, dim // heads, heads=heads, edge_dim=edge_dim, add_self_loops=False,
                                       seed=seed))  # fmt: skip

    def top_k(self, k: int) -> MoEBuilder:
        self._opts["top_k"] = k
        return self

    def temperature(self, t: float) -> MoEBuilder:
        self._opts["temperature"] = t
        return self

    def noisy(self, noise_scale: float = 1.0) -> MoEBuilder:
        self._opts.update(noisy=True, noise_scale=noise_scale)
        return self

    def capacity(self, capacity_factor: float, overflow: str = "next") -> MoEBuilder:
        self._opts.update(capacity_factor=capacity_factor, overflow=overflow)
        return self

    def seed(self, seed: int) -> MoEBuilder:
        self._opts["seed"] = seed
        return self

    def build(self) -> MoEAttention:
        dim = self._need_dim("build")
        return MoEAttention(dim, self._experts, **self._opts)
