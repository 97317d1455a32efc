r"""Mixture-of-experts attention: a router sends each query to its top-k attention mechanisms.

.. math::

    p = \operatorname{softmax}\big((W q + b)/T\big), \qquad
    S = \operatorname{top}_k(p), \qquad
    \text{out} = \sum_{e \in S} \frac{p_e}{\sum_{e' \in S} p_{e'}}\, \text{expert}_e(q, K, V)

(Shazeer et al. 2017; the specification's FR-005.1).  Only the chosen experts
run.  The experts are any :class:`~ruvattn.mechanisms.Attention` objects that
share the query width and produce outputs of one width (checked when the layer
is built, with a probe call).  The router (:class:`~ruvattn.routing.Router`) has
softmax gating, noisy top-k gating in training mode (seeded), a temperature,
and, for batches, a capacity per expert with overflowing queries re-routed to
their next expert or dropped (reported).  Routing is inspectable to the last
number: :meth:`MoEAttention.get_routing` for one query and
:meth:`MoEAttention.routing_record` (a :class:`~ruvattn.routing.RoutingRecord`:
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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import REQUIRED, Param, ParamSet
from ruvattn.errors import DimensionMismatch, InvalidConfig, Unsupported
from ruvattn.mechanisms.base import DIM, SEED, Attention, Complexity, Gradients, build, register
from ruvattn.routing.router import Router, Routing, RoutingRecord, fit_router

__all__ = ["MoEAttention", "MoEBuilder", "PreparedKeys"]

Array = NDArray[np.floating]


@dataclass(frozen=True)
class PreparedKeys:
    """A key/value set prepared once for every expert of one :class:`MoEAttention`
    (:meth:`MoEAttention.prepare`): each expert's own :meth:`~Attention.prepare` form."""

    keys: Array
    values: Array
    forms: tuple[Any, ...]
    owner: Any
    version: int


def _experts(owner: str, name: str, value: Any) -> tuple[Attention, ...]:
    """Experts as mechanisms: ``build()`` dicts are built, Attention objects kept (shared, not copied)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise InvalidConfig(f"{owner}: '{name}' must list at least one attention mechanism; got {value!r}.")
    out = []
    for i, spec in enumerate(value):
        if isinstance(spec, Attention):
            out.append(spec)
        elif isinstance(spec, dict):
            out.append(build(spec))
        else:
            raise InvalidConfig(f"{owner}: expert {i} must be an Attention object or a build() dict; "
                                f"got {type(spec).__name__}.")  # fmt: skip
    return tuple(out)


def _expert_dicts(value: Any) -> list[dict[str, Any]]:
    return [e.to_dict() for e in value]


def _options(e: Attention, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword options an expert's forward takes (its ``forward_options``)."""
    return {k: v for k, v in kwargs.items() if k in e.forward_options and v is not None}


@register("moe")
class MoEAttention(Attention):
    """Top-k mixture of attention experts with an inspectable, trainable router (see the module docstring).

    Its weights (:meth:`weights`, ``H = 1``) are the routing-weighted mixture of the chosen
    experts' head-mean weights, so they sum to 1 like every mechanism's.
    """

    params = (
        DIM,
        Param(
            "experts",
            V.Custom(_experts, "a list of Attention objects or build() dicts"),
            REQUIRED,
            "the experts (mechanisms sharing the query width)",
            encode=_expert_dicts,
        ),
        Param("top_k", V.POSITIVE_INT, 2, "experts per query (at most the number of experts)"),
        Param("temperature", V.POSITIVE, 1.0, "the router's logits are divided by it"),
        Param("noisy", V.FLAG, False, "noisy top-k gating in training mode"),
        Param("noise_scale", V.POSITIVE, 1.0, "scale of the gating noise"),
        Param("capacity_factor", V.POSITIVE, None, "batch capacity per expert (None: unlimited)", none=True),
        Param("overflow", V.Options("next", "drop"), "next", "what a query over capacity does"),
        SEED,
    )
    forward_options = frozenset({"edge_features"})

    @classmethod
    def _check_params(cls, owner: str, p: ParamSet) -> None:
        k = p.top_k
        if k > len(p.experts):
            raise InvalidConfig(f"{owner}: 'top_k' must be an integer in [1, {len(p.experts)}] (the number of "
                                f"experts); got {k!r}.")  # fmt: skip
        for i, e in enumerate(p.experts):
            if e.hidden_dim != p.dim:
                raise InvalidConfig(f"{owner}: expert {i} ({type(e).__name__}) takes queries of width "
                                    f"{e.hidden_dim}, but the layer's dim is {p.dim}.")  # fmt: skip
        if p.seed is None:
            raise InvalidConfig(f"{owner}: 'seed' must be an integer (the router needs one); got None.")

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        """The specification's four experts (local, hyperbolic, sparse, linear FAVOR+), top-2."""
        experts = [
            {"type": "scaled_dot_product", "dim": dim},
            {"type": "hyperbolic", "dim": dim, "curvature": -1.0},
            {"type": "local_global", "dim": dim, "local_window": 4, "global_nodes": 2},
            {"type": "linear", "dim": dim, "feature_map": "favor", "num_features": 2 * dim},
        ]
        return {"dim": dim, "experts": experts, "top_k": 2}

    @property
    def input_space(self) -> str:
        """The experts' space when one of them needs points off flat space (a ball point is also Euclidean)."""
        return next((e.input_space for e in self.experts if e.input_space != "euclidean"), "euclidean")

    def embed(self, x: Any) -> Array:
        special = next((e for e in self.experts if e.input_space != "euclidean"), None)
        return special.embed(x) if special is not None else super().embed(x)

    @staticmethod
    def builder() -> MoEBuilder:
        """The specification's fluent builder (see :class:`MoEBuilder`)."""
        return MoEBuilder()

    def _init_state(self) -> None:
        cfg = self.config
        self.router = Router(cfg.dim, len(cfg.experts), top_k=cfg.top_k, temperature=cfg.temperature,
                             noisy=cfg.noisy, noise_scale=cfg.noise_scale, capacity_factor=cfg.capacity_factor,
                             overflow=cfg.overflow, seed=cfg.seed)  # fmt: skip
        self.output_dim = self._probe_output_width()

    def _probe_output_width(self) -> int:
        """Run every expert once on a tiny input: they must agree on the output width."""
        rng = np.random.default_rng(0)
        d = self.config.dim
        q = (0.1 * rng.standard_normal(d)).astype(np.float64)
        kv = (0.1 * rng.standard_normal((3, d))).astype(np.float64)
        widths = [int(np.shape(e.forward(e.embed(q[None])[0], e.embed(kv), e.embed(kv)))[0]) for e in self.experts]
        if len(set(widths)) > 1:
            pairs = zip(self.experts, widths, strict=True)
            desc = ", ".join(f"{i}: {type(e).__name__} -> {w}" for i, (e, w) in enumerate(pairs))
            raise InvalidConfig(f"MoEAttention: the experts must share the output width; got {desc}.")
        return widths[0]

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The router's tensors under ``router.`` and each expert's under ``experts.<i>.``."""
        out = {f"router.{n}": s for n, s in self.router._state_shapes().items()}
        for i, e in enumerate(self.experts):
            out.update({f"experts.{i}.{n}": s for n, s in e._state_shapes().items()})
        return out

    def _owner_of(self, name: str) -> tuple[Any, str]:
        head, _, rest = name.partition(".")
        if head == "router":
            return self.router, rest
        index, _, rest = rest.partition(".")
        return self.experts[int(index)], rest

    def _state_get(self, name: str) -> NDArray[Any]:
        owner, rest = self._owner_of(name)
        return owner._state_get(rest)

    def _state_set(self, name: str, value: NDArray[Any]) -> None:
        owner, rest = self._owner_of(name)
        owner._state_set(rest, value)
        owner.__dict__["_state_version"] = owner.state_version + 1
        owner._state_loaded()

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def complexity(self) -> Complexity:
        return Complexity("custom", "router O(E·d) + the top_k chosen experts' costs per query")

    def train(self, mode: bool = True) -> MoEAttention:
        """Training mode: noisy gating (if configured) and the experts' own training behaviour."""
        super().train(mode)
        self.router.train(mode)
        for e in self.experts:
            e.train(mode)
        return self

    # -- running ------------------------------------------------------------------
    def prepare(self, keys: Any, values: Any) -> PreparedKeys:
        """Prepare a key/value set once for repeated queries: every expert's own :meth:`prepare`
        (a linear expert summarises it, a multi-head expert projects it).  Pass the result as
        ``keys`` to :meth:`forward` (without ``values``)."""
        k, v = self._unprepare(self.kind + ".prepare", keys, values)
        forms = tuple(e.prepare(k, v) for e in self.experts)
        return PreparedKeys(k, v, forms, self, self.state_version)

    def _split(self, op: str, keys: Any, values: Any) -> tuple[Array, Array, tuple[Any, ...]]:
        """``(keys, values, per-expert forms)``: prepared forms, or the raw arrays for every expert."""
        if isinstance(keys, PreparedKeys):
            if keys.owner is not self or keys.version != self.state_version:
                raise V.stale_prepared(op, "MoEAttention")
            if values is not None:
                raise V.values_with_prepared(op)
            return keys.keys, keys.values, keys.forms
        k, v = self._unprepare(op, keys, values)
        return k, v, (None,) * len(self.experts)

    @staticmethod
    def _run_expert(e: Attention, q: Array, k: Array, v: Array, form: Any, options: dict[str, Any]) -> Array:
        if form is not None:
            return e.forward(q, form, **_options(e, options))
        return e.forward(q, k, v, **_options(e, options))

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
        keys, values, forms = self._split(op, keys, values)
        chosen = self.router.choose(q)
        if chosen is None:  # noisy gating in training mode (or a NaN query: route() names it)
            routing = self.router.route(q[None])
            chosen = (routing.experts[0], routing.weights[0])
        out: Array | None = None
        for e, w in zip(*chosen, strict=True):
            if e < 0 or w == 0:
                continue
            y = np.asarray(
                self._run_expert(self.experts[e], q, keys, values, forms[e], {"edge_features": edge_features})
            )
            out = w * y if out is None else out + w * y
        dt = V.common_dtype(q, keys, values)  # the contract's rule: float64 if any input is float64
        if out is None:  # dropped (only possible with capacity limits, which do not apply to one query)
            return np.zeros(self.output_dim, dt)
        return V.check_output(op, out, dt)

    def get_routing(self, query: Any) -> list[tuple[int, float]]:
        """``[(expert index, weight), ...]`` for one query, best first (the specification's ``get_routing``)."""
        routing = self.route(self._query(self.kind + ".get_routing", query)[None])
        return [(int(e), float(w)) for e, w in zip(routing.experts[0], routing.weights[0], strict=True) if e >= 0]

    def routing_record(self, queries: Any) -> RoutingRecord:
        """The full routing record of a batch (no expert runs): what the MoE widget draws."""
        return self.router.record(self.route(queries))

    def _weights_one(self, op: str, query: Any, keys: Any, **options: Any) -> Array:
        """``(1, n)``: the chosen experts' head-mean weights mixed by the routing weights."""
        q = self._query(op, query)
        k = keys.keys if isinstance(keys, PreparedKeys) else self._check_keys(op, keys)
        routing = self.router.route(q[None])
        out = np.zeros((1, k.shape[0]), np.float64)
        for e, w in zip(routing.experts[0], routing.weights[0], strict=True):
            if e >= 0 and w > 0:
                out[0] += w * self.experts[e].attention_weights(q, k, **_options(self.experts[e], options))
        total = out.sum()
        return (out / total if total > 0 else out).astype(np.result_type(q.dtype, k.dtype))

    def forward_batch(self, queries: Any, keys: Any, values: Any = None, *, edge_features: Any = None) -> Array:
        """``(m, d)`` queries over one key set: routed together (capacity applies), each expert runs once on
        the queries sent to it (its batch form); dropped queries get zeros."""
        op = self.kind + ".forward_batch"
        keys, values, forms = self._split(op, keys, values)
        qs = V.as_array(queries, op, "queries", 2)
        V.check_width(op, "queries", qs, self.config.dim)
        routing = self.router.route(qs)
        self.last_routing = routing
        dt = V.common_dtype(qs, keys, values)
        out = np.zeros((qs.shape[0], self.output_dim), np.float64)
        for e, expert in enumerate(self.experts):
            rows, slots = np.nonzero(routing.experts == e)
            if rows.size == 0:
                continue
            opts = _options(expert, {"edge_features": edge_features})
            if forms[e] is not None:
                ys = np.asarray(expert.forward_batch(qs[rows], forms[e], **opts))
            else:
                ys = np.asarray(expert.forward_batch(qs[rows], keys, values, **opts))
            if ys.shape[1] != self.output_dim:
                raise DimensionMismatch(f"{op}: expert {e} returned width {ys.shape[1]}, expected {self.output_dim}.")
            np.add.at(out, rows, routing.weights[rows, slots][:, None] * ys)
        return V.check_output(op, out, dt)

    supports_backward = True

    @property
    def fixed_state(self) -> frozenset[str]:
        """The experts' drawn (not learned) state under its MoE name, e.g. a FAVOR+ expert's projection."""
        return frozenset(f"experts.{i}.{n}" for i, e in enumerate(self.experts) for n in e.fixed_state)

    def backward(self, query: Any, keys: Any, values: Any, grad_output: Any, *, edge_features: Any = None) -> Gradients:
        r"""Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)`` (routed as
        :meth:`forward_batch`, capacity included).  The choice of experts is held fixed (it is piecewise constant);
        each chosen expert's own :meth:`~Attention.backward` gets its gate times the upstream gradient, and the gates
        :math:`w = \operatorname{softmax}(z_S)` pass :math:`\partial L/\partial w_{q,s} = g_q\cdot y_{q,e}` back
        through the router (:meth:`~ruvattn.routing.Router.backward`) to its weights and to the query.  ``params``
        holds ``router.*`` and every expert's learned arrays as ``experts.<i>.*`` (zeros for an expert no query
        chose).  Evaluation mode (a noisy router's noise would be drawn again); a chosen expert without a
        backward raises :class:`~ruvattn.errors.Unsupported` naming it."""
        op = self.kind + ".backward"
        if isinstance(keys, PreparedKeys):
            raise Unsupported(f"{op}: keys prepared for the experts have no gradient; pass the keys and values.")
        if self.router.noisy and self.router.training:
            raise Unsupported(f"{op}: a noisy router in training mode draws new noise; call .eval() first.")
        if values is None:
            raise V.values_required(op, "the gradient with respect to the values")
        single = np.ndim(query) == 1
        keys, values, _ = self._split(op, keys, values)
        qs = V.as_array(np.atleast_2d(query), op, "query", 2)
        V.check_width(op, "query", qs, self.config.dim)
        routing = self.router.route(qs)
        dt = V.common_dtype(qs, keys, values)
        g = self._upstream(op, grad_output, qs.shape[0], self.output_dim, single, dt).astype(np.float64)
        dq = np.zeros(qs.shape)
        dk, dv = np.zeros(np.shape(keys)), np.zeros(np.shape(values))
        de = None if edge_features is None else np.zeros(np.shape(edge_features))
        params: dict[str, NDArray[np.float64]] = {}
        grad_w = np.zeros(routing.weights.shape)
        for e, expert in enumerate(self.experts):
            learned = [n for n in expert.state_dict() if n not in expert.fixed_state]
            rows, slots = np.nonzero(routing.experts == e)
            if rows.size == 0:
                params.update({f"experts.{e}.{n}": np.zeros(expert.state_dict()[n].shape) for n in learned})
                continue
            opts = _options(expert, {"edge_features": edge_features})
            w = routing.weights[rows, slots][:, None]
            ys = np.asarray(expert.forward_batch(qs[rows], keys, values, **opts), np.float64)
            grad_w[rows, slots] = np.einsum("ij,ij->i", g[rows], ys)
            try:
                gr = expert.backward(qs[rows], keys, values, w * g[rows], **opts)
            except Unsupported as exc:
                raise Unsupported(f"{op}: expert {e} ({expert.kind}) has no backward: {exc}") from None
            dq[rows] += gr.query
            dk += gr.keys
            dv += gr.values
            if de is not None and gr.edge_features is not None:
                de += gr.edge_features
            params.update({f"experts.{e}.{n}": np.asarray(gr.params[n], np.float64) for n in learned})
        rg = self.router.backward(qs, routing, grad_w, input_grad=True)
        dq += rg.pop("x")
        params.update({f"router.{n}": a for n, a in rg.items()})
        gq, gk, gv = (V.check_output(op, a.astype(dt), dt) for a in (dq, dk, dv))
        out = {n: V.check_output(op, a.astype(dt), dt) for n, a in params.items()}
        return Gradients(gq[0] if single else gq, gk, gv, out, None if de is None else de.astype(dt))

    def expert_outputs(self, queries: Any, keys: Any, values: Any) -> NDArray[np.float64]:
        """Every expert's output for every query, ``(E, m, dv_out)`` float64 (for training and analysis)."""
        op = self.kind + ".expert_outputs"
        qs = V.as_array(queries, op, "queries", 2)
        keys, values, forms = self._split(op, keys, values)
        outs = [
            np.asarray(e.forward_batch(qs, f) if f is not None else e.forward_batch(qs, keys, values), np.float64)
            for e, f in zip(self.experts, forms, strict=True)
        ]
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
        """Train the router: the experts' outputs are computed once, then :func:`~ruvattn.routing.fit_router`
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
        dim = V.POSITIVE_INT.check("MoEBuilder", "dim", dim)
        if self._dim is not None and dim != self._dim:
            raise InvalidConfig(f"MoEBuilder: every expert must take width {self._dim}; got {dim}.")
        self._dim = dim

    def add_expert(self, expert: Attention | dict[str, Any]) -> MoEBuilder:
        """Any mechanism, as an object or a :func:`~ruvattn.build` dict."""
        built = _experts("MoEBuilder.add_expert", "expert", [expert])[0]
        self._set_dim(built.hidden_dim)
        self._experts.append(built)
        return self

    def add_local_expert(self, dim: int, temperature: float = 1.0) -> MoEBuilder:
        return self.add_expert({"type": "scaled_dot_product", "dim": dim, "temperature": temperature})

    def add_hyperbolic_expert(self, dim: int, curvature: float = -1.0, temperature: float = 1.0) -> MoEBuilder:
        return self.add_expert({"type": "hyperbolic", "dim": dim, "curvature": curvature, "temperature": temperature})

    def add_sparse_expert(self, local_window: int, global_nodes: int) -> MoEBuilder:
        dim = self._need_dim("add_sparse_expert")
        return self.add_expert({"type": "local_global", "dim": dim, "local_window": local_window,
                                "global_nodes": global_nodes})  # fmt: skip

    def add_linear_expert(self, num_features: int = 64, seed: int = 0) -> MoEBuilder:
        dim = self._need_dim("add_linear_expert")
        return self.add_expert({"type": "linear", "dim": dim, "feature_map": "favor", "num_features": num_features,
                                "seed": seed})  # fmt: skip

    def add_edge_expert(self, edge_dim: int | None = None, heads: int = 1, seed: int = 0) -> MoEBuilder:
        """GAT over the neighbours (single-node form), output width ``dim`` (``heads`` must divide it)."""
        dim = self._need_dim("add_edge_expert")
        heads = V.POSITIVE_INT.check("MoEBuilder.add_edge_expert", "heads", heads)
        if dim % heads:
            raise InvalidConfig(f"MoEBuilder.add_edge_expert: heads ({heads}) must divide the width {dim}.")
        return self.add_expert({"type": "gat", "in_channels": dim, "out_channels": dim // heads, "heads": heads,
                                "edge_dim": edge_dim, "add_self_loops": False, "seed": seed})  # fmt: skip

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
