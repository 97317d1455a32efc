"""``MoERoutingView``: where a mixture-of-experts router sends a batch of queries, live.

Three panels: the gate weight of every query on every expert (0 where the expert was not
chosen; dropped queries crossed out in red, slots re-routed by the capacity limit circled), the
load of every expert against the ideal ``m·k/E`` (and the capacity, when there is one) with the
utilisation and importance in the hover, and the router entropy of every query, sorted, against
the uniform baseline ``log E``. The title sums it up with
:func:`ruvattn.analysis.routing_balance`: dead experts, dropped queries, overflowed slots, the
load-balancing loss and the z-loss.

The controls re-route through the library's :class:`~ruvattn.routing.Router` on every move. The
router's settings (top-k, temperature, noise, capacity) are not learned, so the widget routes
through a *copy* of the router with the new settings and the trained parameters
(:meth:`~ruvattn.routing.Router.state_dict` loaded into it, :func:`configured_router`); the layer's
own router is never changed or re-initialised. ``noise = 0`` is plain softmax gating (eval
mode); ``noise > 0`` is noisy top-k gating (training mode) with that noise scale and a noise
stream seeded by ``seed`` afresh on every redraw, so a setting always shows the same routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ruvattn import analysis
from ruvattn.errors import InvalidConfig
from ruvattn.mechanisms.moe import MoEAttention
from ruvattn.routing import Router, RoutingRecord

from ._base import AttentionWidget, as_matrix, weight_colorscale

__all__ = ["MoERoutingState", "MoERoutingView", "configured_router", "gate_matrix", "routing_router"]

_DEAD, _ALIVE, _REROUTED = "#d62728", "#1f77b4", "#ff7f0e"


def configured_router(
    router: Router,
    *,
    top_k: int,
    noise: float = 0.0,
    temperature: float = 1.0,
    capacity_factor: float | None = None,
    seed: int = 0,
) -> Router:
    """A new :class:`~ruvattn.routing.Router` with ``router``'s trained parameters and these settings.

    Parameters
    ----------
    router : Router
        The source; it is not modified (its parameters are copied).
    top_k : int
        Experts per query, ``1 <= top_k <= E``.
    noise : float
        ``0``: plain softmax gating in eval mode. ``> 0``: noisy top-k gating in training mode with
        noise scale ``noise`` (the source's ``noise_weight_`` if it has one, else zeros, i.e. a noise
        std of ``log(2)·noise``), drawn from a generator seeded by ``seed``.
    temperature : float
        Router temperature ``> 0``.
    capacity_factor : float or None
        ``None`` (or 0): unlimited; else each expert takes ``ceil(c·m·k/E)`` slots (the source's
        ``overflow`` policy applies).
    seed : int
        Seed of the noise stream (``>= 0``).

    Returns
    -------
    Router
    """
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise InvalidConfig(f"MoERoutingView: noise must be a finite number >= 0; got {noise!r}.")
    noisy = noise > 0
    out = Router(
        router.dim, router.num_experts, top_k=top_k, temperature=temperature, noisy=noisy,
        noise_scale=noise if noisy else router.noise_scale,
        capacity_factor=capacity_factor if capacity_factor else None, overflow=router.overflow, seed=seed,
    )  # fmt: skip
    state = router.state_dict()
    if noisy and "noise_weight" not in state:
        state["noise_weight"] = np.zeros_like(state["weight"])
    if not noisy:
        state.pop("noise_weight", None)
    out.load_state_dict(state)
    return out.train(noisy)


def routing_router(owner: str, moe: Any) -> Router:
    """The router of anything that routes: a layer with ``router`` and ``routing_record`` (an
    :class:`~ruvattn.MoEAttention`, or any mechanism offering the same capability), or a router
    itself (``route`` and ``record``). Tested by capability, not by class."""
    if callable(getattr(moe, "routing_record", None)) and getattr(moe, "router", None) is not None:
        return moe.router
    if callable(getattr(moe, "route", None)) and callable(getattr(moe, "record", None)):
        return moe
    raise InvalidConfig(
        f"{owner}: moe must route queries: an MoEAttention or a Router (anything with router and routing_record, "
        f"or route and record); got {type(moe).__name__}."
    )


def gate_matrix(record: RoutingRecord) -> np.ndarray:
    """``(m, E)`` gate weight of every query on every expert: ``record.weights`` scattered to the
    chosen experts, 0 elsewhere (and on dropped slots)."""
    m, num_e = record.probs.shape
    gates = np.zeros((m, num_e))
    rows, slots = np.nonzero(record.experts >= 0)
    gates[rows, record.experts[rows, slots]] = record.weights[rows, slots]
    return gates


@dataclass(frozen=True)
class MoERoutingState:
    """What the view shows for one setting of the controls.

    Attributes
    ----------
    record : RoutingRecord
        The router's record of the batch (choices, weights, load, entropy, losses, ...).
    balance : dict
        :func:`ruvattn.analysis.routing_balance` of ``record``.
    gates : (m, E) float64
        :func:`gate_matrix` of ``record`` (the heatmap).
    top_k, noise, temperature, capacity_factor
        The settings routed with (``capacity_factor`` ``None`` = unlimited).
    ideal_load : float
        ``m·k/E``.
    uniform_entropy : float
        ``log E``, the router entropy of a uniform router.
    """

    record: RoutingRecord
    balance: dict[str, Any]
    gates: np.ndarray
    top_k: int
    noise: float
    temperature: float
    capacity_factor: float | None
    ideal_load: float
    uniform_entropy: float


class MoERoutingView(AttentionWidget):
    """Routing of a batch of queries by a mixture-of-experts router, with live router settings.

    Parameters
    ----------
    moe : MoEAttention or Router
        The layer (its ``router`` is used) or a bare router; it is never modified. Anything that routes
        qualifies (:func:`routing_router`: ``router`` + ``routing_record``, or ``route`` + ``record``).
    queries : (m, d) array
        The batch to route (``d`` = the router's width).
    top_k : int, optional
        Experts per query at start (default: the router's).
    noise : float
        Noise scale at start; 0 = plain softmax gating, > 0 = noisy top-k gating (seeded).
    temperature : float, optional
        Router temperature at start (default: the router's).
    capacity_factor : float, optional
        Expert capacity factor at start (default: the router's; 0 or None = unlimited).
    seed : int
        Seed of the noise stream used whenever ``noise > 0``.
    height : int
        Figure height in pixels.

    Attributes
    ----------
    router : Router
        The source router (left untouched).
    queries : (m, d) array
    state : MoERoutingState
        What is drawn now.

    Controls: ``"top_k"`` (1..E), ``"noise"`` (0..2), ``"temperature"`` (log scale) and
    ``"capacity_factor"`` (0..4, 0 = no capacity).
    """

    name = "MoERoutingView"

    def __init__(
        self,
        moe: MoEAttention | Router,
        queries: Any,
        *,
        top_k: int | None = None,
        noise: float = 0.0,
        temperature: float | None = None,
        capacity_factor: float | None = None,
        seed: int = 0,
        height: int = 560,
    ) -> None:
        super().__init__()
        self.router: Router = routing_router(self.name, moe)
        self.queries = as_matrix(queries, "queries", self.name)
        if self.queries.shape[1] != self.router.dim:
            raise InvalidConfig(
                f"{self.name}: queries have width {self.queries.shape[1]}, but the router takes {self.router.dim}."
            )
        num_e = self.router.num_experts
        k = self.router.top_k if top_k is None else top_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_e:
            raise InvalidConfig(f"{self.name}: top_k must be an integer in [1, {num_e}]; got {top_k!r}.")
        noise = float(noise)
        if not math.isfinite(noise) or noise < 0:
            raise InvalidConfig(f"{self.name}: noise must be a finite number >= 0; got {noise!r}.")
        t = float(self.router.temperature if temperature is None else temperature)
        if not math.isfinite(t) or t <= 0:
            raise InvalidConfig(f"{self.name}: temperature must be a finite number > 0; got {temperature!r}.")
        cf = self.router.capacity_factor if capacity_factor is None else capacity_factor
        cf = float(cf or 0.0)
        if not math.isfinite(cf) or cf < 0:
            raise InvalidConfig(f"{self.name}: capacity_factor must be >= 0 (0 = none); got {capacity_factor!r}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidConfig(f"{self.name}: seed must be a non-negative integer; got {seed!r}.")
        self.seed = int(seed)
        self.name = f"MoERoutingView · {num_e} experts"
        style = {"description_width": "initial"}
        self.controls["top_k"] = ipw.IntSlider(value=int(k), min=1, max=num_e, description="top-k", style=style)
        self.controls["noise"] = ipw.FloatSlider(
            value=noise, min=0.0, max=max(2.0, noise), step=0.05, description="noise", style=style
        )
        self.controls["temperature"] = ipw.FloatLogSlider(
            value=t, base=10, min=min(-1.5, math.log10(t)), max=max(1.3, math.log10(t)), step=0.05,
            description="temperature", style=style,
        )  # fmt: skip
        self.controls["capacity_factor"] = ipw.FloatSlider(
            value=cf, min=0.0, max=max(4.0, cf), step=0.05, description="capacity factor (0 = none)", style=style
        )
        self._build_figure(height)
        self._finish()

    def _build_figure(self, height: int) -> None:
        num_e, m = self.router.num_experts, self.queries.shape[0]
        fig = make_subplots(
            rows=2, cols=2, specs=[[{"rowspan": 2}, {}], [None, {}]], horizontal_spacing=0.16,
            vertical_spacing=0.16,
            subplot_titles=("gate weight per query × expert", "load per expert", "router entropy per query"),
        )  # fmt: skip
        fig.add_heatmap(
            z=np.zeros((m, num_e)), x=np.arange(num_e), y=np.arange(m), colorscale=weight_colorscale, zmin=0.0,
            zmax=1.0, colorbar={"title": {"text": "gate"}, "x": 0.42, "len": 0.95, "thickness": 12},
            name="gate weight",
            hovertemplate="query %{y}, expert %{x}<br>gate %{z:.3f}<br>router p %{customdata:.3f}<extra></extra>",
            row=1, col=1,
        )  # fmt: skip
        fig.add_scatter(
            x=[], y=[], mode="markers", name="dropped query",
            marker={"symbol": "x-thin", "size": 9, "color": _DEAD, "line": {"width": 2, "color": _DEAD}},
            hovertemplate="query %{y} dropped<extra></extra>", row=1, col=1,
        )  # fmt: skip
        fig.add_scatter(
            x=[], y=[], mode="markers", name="re-routed slot (capacity)",
            marker={"symbol": "circle-open", "size": 9, "color": _REROUTED, "line": {"width": 2}},
            hovertemplate="query %{y} re-routed to expert %{x}<extra></extra>", row=1, col=1,
        )  # fmt: skip
        fig.add_bar(
            x=np.arange(num_e), y=np.zeros(num_e), name="load", marker={"color": [_ALIVE] * num_e},
            hovertemplate="expert %{x}<br>load %{y}<br>utilisation %{customdata[0]:.2f}"
                          "<br>importance %{customdata[1]:.2f}<extra></extra>",
            row=1, col=2,
        )  # fmt: skip
        edge = [-0.5, num_e - 0.5]
        fig.add_scatter(x=edge, y=[0.0, 0.0], mode="lines", name="ideal load m·k/E",
                        line={"dash": "dash", "color": "black"}, row=1, col=2)  # fmt: skip
        fig.add_scatter(x=edge, y=[0.0, 0.0], mode="lines", name="capacity", visible=False,
                        line={"dash": "dot", "color": _DEAD}, row=1, col=2)  # fmt: skip
        fig.add_scatter(
            x=np.arange(m), y=np.zeros(m), mode="lines+markers", name="router entropy (sorted)",
            marker={"size": 3}, line={"color": "#2ca02c"},
            hovertemplate="query %{customdata}<br>entropy %{y:.3f} nats<extra></extra>", row=2, col=2,
        )  # fmt: skip
        fig.add_scatter(x=[0, max(m - 1, 1)], y=[0.0, 0.0], mode="lines", name="uniform log E",
                        line={"dash": "dash", "color": "gray"}, row=2, col=2)  # fmt: skip
        fig.update_xaxes(title_text="expert", dtick=1, range=edge, row=1, col=1)
        fig.update_yaxes(title_text="query", autorange="reversed", row=1, col=1)
        fig.update_xaxes(dtick=1, row=1, col=2)  # the panel title says "per expert"; no room for an axis title
        fig.update_yaxes(title_text="slots", rangemode="tozero", row=1, col=2)
        fig.update_xaxes(title_text="queries, by entropy", row=2, col=2)
        fig.update_yaxes(title_text="nats", rangemode="tozero", row=2, col=2)
        fig.update_layout(
            height=height, margin={"l": 60, "r": 20, "t": 90, "b": 50}, title={"font": {"size": 13}},
            legend={"orientation": "h", "y": -0.12}, bargap=0.25,
        )  # fmt: skip
        self.figure = go.FigureWidget(fig)
        self._traces = {trace.name: trace for trace in self.figure.data}

    # -- model ----------------------------------------------------------------------
    def routed_router(self) -> Router:
        """The router the current control values route with (a copy of :attr:`router`)."""
        s = self.settings()
        return configured_router(
            self.router, top_k=int(s["top_k"]), noise=float(s["noise"]), temperature=float(s["temperature"]),
            capacity_factor=float(s["capacity_factor"]) or None, seed=self.seed,
        )  # fmt: skip

    def compute(self) -> MoERoutingState:
        router = self.routed_router()
        record = router.record(router.route(self.queries))
        m, num_e = record.probs.shape
        k = router.top_k
        return MoERoutingState(
            record=record, balance=analysis.routing_balance(record), gates=gate_matrix(record), top_k=k,
            noise=float(self.controls["noise"].value), temperature=router.temperature,
            capacity_factor=router.capacity_factor, ideal_load=m * k / num_e, uniform_entropy=math.log(num_e),
        )  # fmt: skip

    # -- view -----------------------------------------------------------------------
    def render(self, state: MoERoutingState) -> None:
        rec, tr = state.record, self._traces
        m, num_e = state.gates.shape
        heat = tr["gate weight"]
        heat.z = state.gates
        heat.customdata = rec.probs
        dropped = np.flatnonzero(rec.dropped)
        tr["dropped query"].x = np.tile(np.arange(num_e), dropped.size)
        tr["dropped query"].y = np.repeat(dropped, num_e)
        rows, slots = np.nonzero(rec.overflowed & (rec.experts >= 0))
        tr["re-routed slot (capacity)"].x = rec.experts[rows, slots]
        tr["re-routed slot (capacity)"].y = rows
        load = tr["load"]
        load.y = rec.load
        load.customdata = np.column_stack([rec.utilisation, rec.importance])
        load.marker.color = [_DEAD if dead else _ALIVE for dead in rec.dead_experts]
        tr["ideal load m·k/E"].y = [state.ideal_load, state.ideal_load]
        cap = tr["capacity"]
        cap.visible = rec.capacity is not None
        cap.y = [rec.capacity or 0, rec.capacity or 0]
        order = np.argsort(rec.entropy, kind="stable")
        ent = tr["router entropy (sorted)"]
        ent.x = np.arange(m)
        ent.y = rec.entropy[order]
        ent.customdata = order
        tr["uniform log E"].x = [0, max(m - 1, 1)]
        tr["uniform log E"].y = [state.uniform_entropy, state.uniform_entropy]
        self.figure.layout.title.text = "<br>".join(self._summary())

    def _summary(self) -> list[str]:
        s = self.state
        if s is None:
            return [self.name]
        b = s.balance
        cap = "none" if s.capacity_factor is None else f"{s.capacity_factor:g} (C = {s.record.capacity})"
        gating = "softmax" if s.noise == 0 else f"noisy (scale {s.noise:g}, seed {self.seed})"
        return [
            f"{b['experts']} experts, top-{s.top_k}, {b['queries']} queries, T = {s.temperature:.3g}, "
            f"{gating} gating, capacity factor {cap}",
            f"dead experts {b['dead_experts']} · dropped {b['dropped']} · overflowed {b['overflowed']} · "
            f"load-balancing loss {b['load_balancing_loss']:.3f} · z-loss {b['z_loss']:.3f} · "
            f"router entropy {b['router_entropy']:.3f} (uniform {s.uniform_entropy:.3f}) · "
            f"max load / ideal {b['max_load_ratio']:.2f}",
        ]

    def describe(self) -> str:
        return f"{self.name}: " + "; ".join(self._summary()) if self.state is not None else self.name
