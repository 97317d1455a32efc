"""``MoERoutingView``: what it draws is the router's record, and its controls re-route without touching the layer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy

from ruvattn import MoEAttention, analysis
from ruvattn.errors import InvalidConfig
from ruvattn.routing import Router

# the widgets extra (ipywidgets, plotly) may be missing: skip this module then
MoERoutingView = pytest.importorskip("ruvattn.widgets.routing", exc_type=ImportError).MoERoutingView

D, E, M = 8, 4, 48


@pytest.fixture(scope="module")
def moe() -> MoEAttention:
    layer = (MoEAttention.builder().add_local_expert(D).add_hyperbolic_expert(D, -1.0).add_sparse_expert(4, 1)
             .add_linear_expert(16).top_k(2).seed(5).build())  # fmt: skip
    # stand-in for a trained router: parameters that no seed produces, with a bias that favours expert 0
    rng = np.random.default_rng(11)
    layer.router.load_state_dict({"weight": 2.0 * rng.standard_normal((E, D)), "bias": np.array([0.8, 0, 0, -0.3])})
    return layer


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return 0.4 * np.random.default_rng(3).standard_normal((M, D)) / math.sqrt(D)


def _traces(view: MoERoutingView) -> dict:
    return {t.name: t for t in view.figure.data}


def _gates_by_hand(experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    gates = np.zeros((experts.shape[0], E))
    for q in range(experts.shape[0]):
        for s in range(experts.shape[1]):
            if experts[q, s] >= 0:
                gates[q, experts[q, s]] += weights[q, s]
    return gates


def _clean_logits(layer: MoEAttention, x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    w, b = layer.router.weight_, layer.router.bias_
    return (x @ w.T + b) / temperature


def test_traces_equal_the_layers_routing_record(moe, queries):
    rec = moe.routing_record(queries)
    view = MoERoutingView(moe, queries)
    tr = _traces(view)
    # gate weights: the record's weights on the chosen experts, 0 elsewhere
    np.testing.assert_allclose(np.asarray(tr["gate weight"].z), _gates_by_hand(rec.experts, rec.weights))
    np.testing.assert_allclose(np.asarray(tr["gate weight"].customdata), rec.probs)
    # independently: top-2 of the clean logits, gated by the softmax over the two chosen logits
    z = _clean_logits(moe, queries)
    top = np.argsort(-z, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(rec.experts, top)
    np.testing.assert_allclose(rec.weights, softmax(np.take_along_axis(z, top, axis=1), axis=1), rtol=1e-12)
    # loads, utilisation, importance
    np.testing.assert_array_equal(np.asarray(tr["load"].y), rec.load)
    np.testing.assert_array_equal(rec.load, np.bincount(top.ravel(), minlength=E))
    custom = np.asarray(tr["load"].customdata)
    np.testing.assert_allclose(custom[:, 0], rec.load / (M * 2 / E))
    np.testing.assert_allclose(custom[:, 1], _gates_by_hand(rec.experts, rec.weights).sum(axis=0))
    assert list(tr["ideal load m·k/E"].y) == [M * 2 / E] * 2
    assert tr["capacity"].visible is False
    # router entropy: sorted, each point labelled with its query
    ent, order = np.asarray(tr["router entropy (sorted)"].y), np.asarray(tr["router entropy (sorted)"].customdata)
    np.testing.assert_allclose(ent, np.sort(scipy_entropy(softmax(z, axis=1), axis=1)), rtol=1e-10)
    np.testing.assert_allclose(ent, rec.entropy[order])
    assert sorted(order.tolist()) == list(range(M))
    assert list(tr["uniform log E"].y) == [pytest.approx(math.log(E))] * 2
    assert len(tr["dropped query"].x) == 0 and len(tr["re-routed slot (capacity)"].x) == 0
    # state and title
    assert view.state.balance == analysis.routing_balance(rec)
    np.testing.assert_array_equal(view.state.record.experts, rec.experts)
    title = view.figure.layout.title.text
    b = view.state.balance
    assert f"load-balancing loss {b['load_balancing_loss']:.3f}" in title and f"z-loss {b['z_loss']:.3f}" in title
    assert "dropped 0" in title and "overflowed 0" in title and f"dead experts {b['dead_experts']}" in title


def test_moving_top_k_reroutes_and_loads_sum_to_m_times_k(moe, queries):
    view = MoERoutingView(moe, queries)
    z = _clean_logits(moe, queries)
    for k in (1, 3, 4, 2):
        view.set(top_k=k)
        rec = view.state.record
        load = np.asarray(_traces(view)["load"].y)
        assert load.sum() == M * k  # no capacity: nothing dropped
        np.testing.assert_array_equal(rec.experts, np.argsort(-z, axis=1, kind="stable")[:, :k])
        assert list(_traces(view)["ideal load m·k/E"].y) == [M * k / E] * 2
        np.testing.assert_allclose(np.asarray(_traces(view)["gate weight"].z).sum(axis=1), 1.0)
    view.set(top_k=2, capacity_factor=0.6)
    rec = view.state.record
    dropped_slots = int((rec.experts < 0).sum())
    assert dropped_slots > 0
    assert np.asarray(_traces(view)["load"].y).sum() == M * 2 - dropped_slots


def _greedy_capacity_top1(z: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    """Top-1 routing with a capacity, queries in order, overflow to the best expert with room (else dropped)."""
    counts = np.zeros(z.shape[1], int)
    chosen, overflowed = [], 0
    for row in z:
        prefs = np.argsort(-row, kind="stable")
        if counts[prefs[0]] < capacity:
            e = int(prefs[0])
        else:
            overflowed += 1
            free = [int(p) for p in prefs[1:] if counts[p] < capacity]
            e = free[0] if free else -1
        if e >= 0:
            counts[e] += 1
        chosen.append(e)
    return np.array(chosen), overflowed


def test_capacity_factor_drops_and_overflows_match_the_record(moe, queries):
    view = MoERoutingView(moe, queries)
    view.set(top_k=1, capacity_factor=0.5)
    rec = view.state.record
    capacity = math.ceil(0.5 * M * 1 / E)
    assert rec.capacity == capacity
    chosen, overflowed = _greedy_capacity_top1(_clean_logits(moe, queries), capacity)
    np.testing.assert_array_equal(rec.experts[:, 0], chosen)
    assert rec.num_overflowed == overflowed and rec.num_dropped == int((chosen < 0).sum()) > 0
    tr = _traces(view)
    assert np.asarray(tr["load"].y).max() <= capacity
    assert tr["capacity"].visible is True and list(tr["capacity"].y) == [capacity, capacity]
    # every dropped query is crossed out on every expert column; re-routed slots are circled where they went
    dropped = np.flatnonzero(chosen < 0)
    np.testing.assert_array_equal(np.unique(np.asarray(tr["dropped query"].y)), dropped)
    assert len(tr["dropped query"].x) == dropped.size * E
    np.testing.assert_array_equal(np.asarray(tr["gate weight"].z)[dropped], 0.0)
    rerouted = np.flatnonzero(rec.overflowed[:, 0] & (rec.experts[:, 0] >= 0))
    np.testing.assert_array_equal(np.asarray(tr["re-routed slot (capacity)"].y), rerouted)
    np.testing.assert_array_equal(np.asarray(tr["re-routed slot (capacity)"].x), chosen[rerouted])
    b = view.state.balance
    assert (b["dropped"], b["overflowed"]) == (rec.num_dropped, rec.num_overflowed)
    assert f"dropped {rec.num_dropped} · overflowed {rec.num_overflowed}" in view.figure.layout.title.text
    view.set(capacity_factor=0.0)  # 0 = no capacity again
    assert view.state.record.capacity is None and view.state.record.num_dropped == 0


def test_noise_is_reproducible_with_the_seed_and_differs_from_plain_gating(moe, queries):
    view = MoERoutingView(moe, queries, seed=7)
    plain = view.state.gates.copy()
    view.set(noise=1.5)
    noisy = view.state.gates.copy()
    assert not np.array_equal(noisy, plain)
    view.set(noise=0.0)
    np.testing.assert_array_equal(view.state.gates, plain)
    view.set(noise=1.5)
    np.testing.assert_array_equal(view.state.gates, noisy)  # the same draw every time
    assert "noisy (scale 1.5, seed 7)" in view.figure.layout.title.text
    # by hand: the router's logits plus eps · softplus(0) · 1.5 with eps from a router seeded 7
    ref = Router(D, E, top_k=2, noisy=True, noise_scale=1.5, seed=7)
    eps = ref.train().route(queries).standard_normal
    z = _clean_logits(moe, queries) + eps * math.log(2.0) * 1.5
    top = np.argsort(-z, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(view.state.record.experts, top)
    np.testing.assert_allclose(view.state.record.probs, softmax(z, axis=1), rtol=1e-10)
    other = MoERoutingView(moe, queries, noise=1.5, seed=8)
    assert not np.array_equal(other.state.gates, noisy)


def test_temperature_divides_the_logits(moe, queries):
    view = MoERoutingView(moe, queries, temperature=0.2)
    np.testing.assert_allclose(view.state.record.probs, softmax(_clean_logits(moe, queries, 0.2), axis=1), rtol=1e-10)
    cold = view.state.record.mean_entropy
    view.set(temperature=10.0)
    np.testing.assert_allclose(view.state.record.probs, softmax(_clean_logits(moe, queries, 10.0), axis=1), rtol=1e-10)
    assert view.state.record.mean_entropy > cold
    assert view.state.record.mean_entropy <= math.log(E)


def test_the_layers_router_is_never_changed(moe, queries):
    before = moe.router.state_dict()
    settings = (moe.router.top_k, moe.router.temperature, moe.router.noisy, moe.router.capacity_factor)
    rec = moe.routing_record(queries)
    view = MoERoutingView(moe, queries)
    for values in ({"top_k": 1}, {"noise": 2.0}, {"temperature": 3.0}, {"capacity_factor": 0.3}, {"top_k": 4}):
        view.set(**values)
        assert view.error is None
    after = moe.router.state_dict()
    assert set(after) == set(before)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    assert (moe.router.top_k, moe.router.temperature, moe.router.noisy, moe.router.capacity_factor) == settings
    assert moe.router.training is False
    np.testing.assert_array_equal(moe.routing_record(queries).experts, rec.experts)
    # and the view routes with those trained parameters, not a fresh initialisation from a seed
    view.set(top_k=2, noise=0.0, temperature=1.0, capacity_factor=0.0)
    np.testing.assert_array_equal(view.state.record.experts, rec.experts)
    np.testing.assert_allclose(view.state.record.probs, rec.probs)


def test_a_bare_router_is_accepted(queries):
    router = Router(D, 3, top_k=1, temperature=0.5, capacity_factor=1.0, seed=2)
    view = MoERoutingView(router, queries)
    assert view.settings() == {"top_k": 1, "noise": 0.0, "temperature": pytest.approx(0.5), "capacity_factor": 1.0}
    rec = router.record(router.route(queries))
    np.testing.assert_array_equal(view.state.record.experts, rec.experts)
    np.testing.assert_array_equal(np.asarray(_traces(view)["load"].y), rec.load)
    assert view.controls["top_k"].max == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "top_k must be an integer in \\[1, 4\\]"),
        ({"top_k": 5}, "top_k must be an integer in \\[1, 4\\]"),
        ({"noise": -1.0}, "noise must be"),
        ({"temperature": 0.0}, "temperature must be"),
        ({"capacity_factor": -0.5}, "capacity_factor must be"),
        ({"seed": -1}, "seed must be"),
    ],
)
def test_bad_arguments_name_themselves(moe, queries, kwargs, message):
    with pytest.raises(InvalidConfig, match=message):
        MoERoutingView(moe, queries, **kwargs)


def test_anything_that_routes_is_accepted_by_capability(moe, queries):
    class Layer:  # not an MoEAttention: a router and a routing record are the capability the view needs
        def __init__(self, router: Router) -> None:
            self.router = router

        def routing_record(self, x: np.ndarray) -> Any:
            return self.router.record(self.router.route(x))

    view = MoERoutingView(Layer(moe.router), queries)
    assert view.router is moe.router
    np.testing.assert_array_equal(view.state.record.experts, moe.routing_record(queries).experts)
    with pytest.raises(InvalidConfig, match="must route queries"):
        MoERoutingView(object(), queries)


def test_bad_inputs(moe, queries):
    with pytest.raises(InvalidConfig, match="width 5, but the router takes 8"):
        MoERoutingView(moe, np.ones((3, 5)))
    with pytest.raises(InvalidConfig, match="MoEAttention or a Router"):
        not_a_layer: Any = "moe"
        MoERoutingView(not_a_layer, queries)


def test_exports_are_offline_html_and_svg(moe, queries, tmp_path):
    view = MoERoutingView(moe, queries, capacity_factor=0.5)
    page = view.save_html(tmp_path / "moe.html").read_text(encoding="utf-8")
    assert '<script src="http' not in page and "plotly" in page.lower()
    assert "capacity_factor" in page and "dropped" in page
    svg = view.save_image(tmp_path / "moe.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg")
