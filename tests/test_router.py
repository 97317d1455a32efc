"""The mixture-of-experts router against direct numpy/scipy computations, hand-worked capacity cases,
finite differences and a synthetic routing task."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import entropy

from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability
from ruvattn.routing import Router, Routing, fit_router


def _router_with_bias(bias, dim=3, **kw):
    """A router whose logits are exactly ``bias / temperature`` for every query (zero weight)."""
    r = Router(dim, len(bias), **kw)
    r.weight_[:] = 0.0
    r.bias_[:] = bias
    return r


# -- 1. top-k and gate weights -----------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_top_k_and_weights_match_a_direct_computation(top_k):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8))
    r = Router(8, 5, top_k=top_k, temperature=0.7, seed=3)
    r.bias_[:] = rng.standard_normal(5)
    routing = r.route(x)
    z = (x @ r.weight_.T + r.bias_) / 0.7
    np.testing.assert_allclose(routing.logits, z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(routing.probs, softmax(z, axis=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(routing.experts, np.argsort(-z, axis=1)[:, :top_k])
    # every chosen logit beats every unchosen one
    chosen = np.take_along_axis(z, routing.experts, axis=1)
    mask = np.zeros_like(z, dtype=bool)
    np.put_along_axis(mask, routing.experts, True, axis=1)
    assert (chosen.min(axis=1) >= np.where(mask, -np.inf, z).max(axis=1)).all()
    # weights = softmax over the chosen logits = probs renormalised over the chosen experts
    np.testing.assert_allclose(routing.weights, softmax(chosen, axis=1), rtol=1e-12)
    p_chosen = np.take_along_axis(routing.probs, routing.experts, axis=1)
    np.testing.assert_allclose(routing.weights, p_chosen / p_chosen.sum(1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(routing.weights.sum(axis=1), 1.0, rtol=1e-12)
    assert (np.diff(routing.weights, axis=1) <= 1e-15).all()  # best first
    assert not routing.overflowed.any() and not routing.dropped.any() and routing.noise is None


def test_temperature_scales_logits_but_not_the_ranking():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 6))
    cold, hot = Router(6, 4, temperature=0.5, seed=7), Router(6, 4, temperature=2.0, seed=7)
    np.testing.assert_allclose(cold.logits(x), 4.0 * hot.logits(x), rtol=1e-12)
    np.testing.assert_allclose(cold.logits(x) * 0.5, x @ cold.weight_.T + cold.bias_, rtol=1e-12)
    rc, rh = cold.route(x), hot.route(x)
    np.testing.assert_array_equal(rc.experts, rh.experts)
    assert (rc.weights[:, 0] >= rh.weights[:, 0]).all()  # a colder router is more peaked
    np.testing.assert_allclose(cold.logits(x[0]), cold.logits(x[:1]))  # one query (d,) -> (1, E)


# -- 2. noisy top-k ----------------------------------------------------------------------


def test_noise_only_in_training_and_reproducible_by_seed():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 5))
    r = Router(5, 6, top_k=2, noisy=True, seed=11)
    a, b = r.route(x), r.route(x)  # eval mode: deterministic, no noise
    assert a.noise is None and a.standard_normal is None
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_allclose(a.logits, r.logits(x))
    r.train()
    n1, n2 = r.route(x), r.route(x)
    assert n1.noise is not None and not np.allclose(n1.noise, 0.0)
    assert not np.allclose(n1.noise, n2.noise)  # a fresh draw each call
    np.testing.assert_allclose(n1.logits * r.temperature, x @ r.weight_.T + r.bias_ + n1.noise, rtol=1e-12)
    np.testing.assert_allclose(n1.noise, n1.standard_normal * r.noise_std(x), rtol=1e-12)
    same = Router(5, 6, top_k=2, noisy=True, seed=11).train()
    s1, s2 = same.route(x), same.route(x)
    np.testing.assert_array_equal(s1.noise, n1.noise)
    np.testing.assert_array_equal(s2.noise, n2.noise)
    other = Router(5, 6, top_k=2, noisy=True, seed=12).train()
    assert not np.allclose(other.route(x).standard_normal, n1.standard_normal)
    replay = r.route(x, standard_normal=n1.standard_normal)
    np.testing.assert_array_equal(replay.logits, n1.logits)
    np.testing.assert_array_equal(replay.experts, n1.experts)
    r.eval()
    assert r.route(x).noise is None
    assert Router(5, 6, noisy=False).train().route(x).noise is None  # a clean router never adds noise


def test_noise_std_is_softplus_of_the_noise_projection():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5))
    r = Router(5, 3, top_k=1, noisy=True, noise_scale=1.5, seed=0).train()
    np.testing.assert_allclose(r.noise_std(x), np.log(2.0) * 1.5)  # zero init
    r.noise_weight_[:] = 0.5 * rng.standard_normal((3, 5))
    expected = np.log1p(np.exp(x @ r.noise_weight_.T)) * 1.5
    draws = np.stack([r.route(x).noise for _ in range(4000)])  # (4000, 4, 3)
    np.testing.assert_allclose(draws.std(axis=0), expected, rtol=0.06)
    np.testing.assert_allclose(draws.mean(axis=0), 0.0, atol=0.1 * expected.max())


# -- 3. capacity -------------------------------------------------------------------------


def test_capacity_hand_worked_next_and_drop():
    # every query prefers expert 0 > 1 > 2 > 3; capacity = ceil(0.5 * 4 * 2 / 4) = 1
    x = np.zeros((4, 3))
    nxt = _router_with_bias([3.0, 2.0, 1.0, 0.0], top_k=2, capacity_factor=0.5, overflow="next").route(x)
    assert nxt.capacity == 1
    np.testing.assert_array_equal(nxt.experts, [[0, -1], [1, -1], [2, -1], [3, -1]])
    np.testing.assert_array_equal(nxt.overflowed, [[False, True], [True, True], [True, True], [True, True]])
    np.testing.assert_array_equal(nxt.weights, [[1, 0]] * 4)
    assert not nxt.dropped.any()
    drop = _router_with_bias([3.0, 2.0, 1.0, 0.0], top_k=2, capacity_factor=0.5, overflow="drop").route(x)
    np.testing.assert_array_equal(drop.experts, [[0, 1], [-1, -1], [-1, -1], [-1, -1]])
    np.testing.assert_array_equal(drop.dropped, [False, True, True, True])
    np.testing.assert_allclose(drop.weights, [softmax([3.0, 2.0]), [0, 0], [0, 0], [0, 0]], rtol=1e-12)
    np.testing.assert_array_equal(drop.overflowed, [[False, False], [True, True], [True, True], [True, True]])
    # k = 1, capacity = ceil(0.75 * 4 / 3) = 1: the queries spill down the preference list, the last is dropped
    one = _router_with_bias([2.0, 1.0, 0.0], top_k=1, capacity_factor=0.75).route(x)
    np.testing.assert_array_equal(one.experts[:, 0], [0, 1, 2, -1])
    np.testing.assert_array_equal(one.overflowed[:, 0], [False, True, True, True])
    np.testing.assert_array_equal(one.dropped, [False, False, False, True])


@pytest.mark.parametrize("overflow", ["next", "drop"])
@pytest.mark.parametrize("factor", [0.4, 0.8, 1.25])
def test_capacity_properties_on_random_batches(overflow, factor):
    rng = np.random.default_rng(4)
    m, num_e, k = 60, 5, 2
    x = rng.standard_normal((m, 7))
    r = Router(7, num_e, top_k=k, capacity_factor=factor, overflow=overflow, seed=5)
    r.bias_[:] = [1.5, 1.0, 0.0, -0.5, -1.0]  # skewed so that some experts overflow
    routing = r.route(x)
    cap = math.ceil(factor * m * k / num_e)
    assert routing.capacity == cap
    rec = r.record(routing)
    assert (rec.load <= cap).all()
    np.testing.assert_array_equal(rec.load, np.bincount(routing.experts[routing.experts >= 0], minlength=num_e))
    order = np.argsort(-routing.logits, axis=1, kind="stable")
    kept = routing.experts >= 0
    for q in range(m):  # no expert twice per query
        e = routing.experts[q][kept[q]]
        assert len(set(e.tolist())) == e.size
    if overflow == "drop":  # kept slots are exactly the original top-k choices
        np.testing.assert_array_equal(routing.experts[kept], order[:, :k][kept])
        np.testing.assert_array_equal(~kept, routing.overflowed)
    else:  # a non-overflowed slot keeps its original choice when nothing earlier overflowed
        clean = ~routing.overflowed.any(axis=1)
        np.testing.assert_array_equal(routing.experts[clean], order[clean, :k])
        # a rerouted slot went to an expert the query ranks below its first choice
        for q, s in zip(*np.nonzero(routing.overflowed & kept), strict=True):
            rank = {int(e): i for i, e in enumerate(order[q])}
            assert rank[int(routing.experts[q, s])] > s
    chosen = np.take_along_axis(routing.logits, np.maximum(routing.experts, 0), axis=1)
    expected = np.where(kept, np.exp(chosen - chosen.max(1, keepdims=True)), 0.0)
    tot = expected.sum(1, keepdims=True)
    expected = np.divide(expected, tot, out=np.zeros_like(expected), where=tot > 0)
    np.testing.assert_allclose(routing.weights, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(routing.weights.sum(1), np.where(routing.dropped, 0.0, 1.0), atol=1e-12)
    np.testing.assert_array_equal(routing.dropped, ~kept.any(axis=1))
    assert rec.num_overflowed == routing.overflowed.sum() and rec.num_dropped == routing.dropped.sum()
    if factor == 0.4:
        assert rec.num_overflowed > 0


def test_no_capacity_never_drops_and_a_large_capacity_changes_nothing():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((40, 4))
    plain = _router_with_bias([5.0, 0.0, 0.0], dim=4, top_k=2)
    plain.weight_[:] = rng.standard_normal((3, 4))
    routing = plain.route(x)
    assert routing.capacity is None and not routing.overflowed.any() and not routing.dropped.any()
    roomy = Router(4, 3, top_k=2, capacity_factor=3 / 2)  # capacity = m: nothing can overflow
    roomy.load_state_dict(plain.state_dict())
    r2 = roomy.route(x)
    np.testing.assert_array_equal(r2.experts, routing.experts)
    np.testing.assert_array_equal(r2.weights, routing.weights)
    assert not r2.overflowed.any()


# -- 4. the record -----------------------------------------------------------------------


def test_record_matches_hand_computations():
    rng = np.random.default_rng(6)
    m, num_e, k = 30, 6, 2
    x = rng.standard_normal((m, 5))
    r = Router(5, num_e, top_k=k, temperature=0.8, capacity_factor=0.9, overflow="drop", seed=2)
    r.bias_[:] = [2.0, 1.0, 0.5, 0.0, -3.0, -30.0]  # expert 5 is never picked
    routing = r.route(x)
    rec = r.record(routing)
    load = np.zeros(num_e, int)
    importance = np.zeros(num_e)
    for q in range(m):
        for s in range(k):
            e = routing.experts[q, s]
            if e >= 0:
                load[e] += 1
                importance[e] += routing.weights[q, s]
    np.testing.assert_array_equal(rec.load, load)
    np.testing.assert_allclose(rec.importance, importance, rtol=1e-12)
    np.testing.assert_allclose(rec.utilisation, load / (m * k / num_e), rtol=1e-12)
    np.testing.assert_allclose(rec.entropy, entropy(routing.probs, axis=1), rtol=1e-10)
    assert rec.mean_entropy == pytest.approx(entropy(routing.probs, axis=1).mean())
    np.testing.assert_array_equal(rec.dead_experts, load == 0)
    assert rec.dead_experts[5]
    f = load / (m * k)
    lb = num_e * sum(f[i] * routing.probs[:, i].mean() for i in range(num_e))
    assert rec.load_balancing_loss == pytest.approx(lb, rel=1e-12) == r.load_balancing_loss(routing)
    z = np.mean([logsumexp(routing.logits[q]) ** 2 for q in range(m)])
    assert rec.z_loss == pytest.approx(z, rel=1e-12) == r.z_loss(routing)
    d = rec.to_dict()
    back = json.loads(json.dumps(d))
    assert back["load"] == load.tolist() and back["num_dropped"] == int(routing.dropped.sum())
    np.testing.assert_allclose(back["probs"], routing.probs)


def test_loss_extremes():
    x = np.zeros((8, 3))
    uniform = _router_with_bias([0.0] * 4, top_k=2).route(x)  # uniform probs: LB = sum_i f_i = 1
    rec = Router(3, 4, top_k=2).record(uniform)
    assert rec.load_balancing_loss == pytest.approx(1.0)
    assert rec.z_loss == pytest.approx(math.log(4) ** 2)
    np.testing.assert_allclose(rec.entropy, math.log(4))
    # each query sure of its own expert, one query per expert: balanced, LB -> 1; all on one expert: LB -> E
    balanced = Router(4, 4, top_k=1, temperature=0.01)
    balanced.weight_[:] = np.eye(4)
    balanced.bias_[:] = 0.0
    assert balanced.load_balancing_loss(balanced.route(np.eye(4))) == pytest.approx(1.0, abs=1e-6)
    collapsed = _router_with_bias([0.0, -1.0, -1.0, -1.0], dim=4, top_k=1, temperature=0.01)
    assert collapsed.load_balancing_loss(collapsed.route(np.eye(4))) == pytest.approx(4.0, abs=1e-6)


# -- 5. backward vs finite differences ----------------------------------------------------


def _objective(router, x, g, draw, beta, gamma, experts):
    routing = router.route(x, standard_normal=draw)
    np.testing.assert_array_equal(routing.experts, experts)  # the selection must not change under the step
    return (g * routing.weights).sum() + beta * router.load_balancing_loss(routing) + gamma * router.z_loss(routing)


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize(("beta", "gamma"), [(0.0, 0.0), (0.3, 0.0), (0.0, 0.2), (0.5, 0.1)])
@pytest.mark.parametrize("capacity_factor", [None, 0.7])
def test_backward_matches_finite_differences(noisy, beta, gamma, capacity_factor):
    rng = np.random.default_rng(7)
    m, d, num_e, k = 12, 5, 4, 2
    x = rng.standard_normal((m, d))
    r = Router(d, num_e, top_k=k, temperature=0.7, noisy=noisy, noise_scale=0.8,
               capacity_factor=capacity_factor, overflow="drop", seed=4)  # fmt: skip
    r.bias_[:] = 0.3 * rng.standard_normal(num_e)
    if noisy:
        r.noise_weight_[:] = 0.4 * rng.standard_normal((num_e, d))
        r.train()
    routing = r.route(x)
    draw = routing.standard_normal
    assert (draw is not None) == noisy
    if capacity_factor is not None:
        assert routing.overflowed.any()
    g = rng.standard_normal((m, k))
    grads = r.backward(x, routing, g, balance_coef=beta, z_coef=gamma)
    assert set(grads) == ({"weight", "bias", "noise_weight"} if noisy else {"weight", "bias"})
    attrs = {"weight": "weight_", "bias": "bias_", "noise_weight": "noise_weight_"}
    h = 1e-6
    for name, grad in grads.items():
        param = getattr(r, attrs[name])
        fd = np.zeros_like(param)
        for idx in np.ndindex(param.shape):
            old = param[idx]
            param[idx] = old + h
            up = _objective(r, x, g, draw, beta, gamma, routing.experts)
            param[idx] = old - h
            down = _objective(r, x, g, draw, beta, gamma, routing.experts)
            param[idx] = old
            fd[idx] = (up - down) / (2 * h)
        assert np.linalg.norm(grad - fd) <= 1e-3 * np.linalg.norm(fd), name
        assert np.linalg.norm(fd) > 1e-3


def test_backward_gives_zero_noise_gradient_without_noise():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 3))
    r = Router(3, 3, noisy=True)
    grads = r.backward(x, r.route(x), rng.standard_normal((5, 2)))
    np.testing.assert_array_equal(grads["noise_weight"], 0.0)


# -- 6. training on a synthetic task -----------------------------------------------------


def _clustered_task(seed=0, per=40, d=16, dv=4, num_e=4):
    """Three well separated blobs; for cluster c expert ``right[c]`` outputs the target, the others are far off."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((3, d))
    labels = np.repeat(np.arange(3), per)
    x = centres[labels] + 0.3 * rng.standard_normal((labels.size, d))
    y = rng.standard_normal((labels.size, dv))
    right = np.array([2, 0, 3])
    outs = y[None] + 5.0 * rng.standard_normal((num_e, labels.size, dv))
    outs[right[labels], np.arange(labels.size)] = y
    return x, outs, y, labels, right


def _task_loss(experts, weights, outs, y):
    m = y.shape[0]
    mix = sum(weights[:, s, None] * outs[experts[:, s], np.arange(m)] for s in range(experts.shape[1]))
    return float(((mix - y) ** 2).sum(axis=1).mean())


def test_fit_router_learns_the_right_expert_per_cluster():
    x, outs, y, labels, right = _clustered_task()
    m = y.shape[0]
    r = Router(16, 4, top_k=2, noisy=True, seed=1)
    before = r.route(x)
    uniform = _task_loss(before.experts, np.full((m, 2), 0.5), outs, y)  # equal gates over the untrained top-k
    history = fit_router(r, x, outs, y, steps=200, learning_rate=0.1, balance_coef=0.01, z_coef=0.001)
    assert len(history) == 200 and set(history[0]) == {"task_loss", "load_balancing_loss", "z_loss", "total"}
    start = _task_loss(before.experts, before.weights, outs, y)
    assert history[-1]["task_loss"] < 0.3 * history[0]["task_loss"]
    assert not r.training  # mode restored
    after = r.route(x)
    final = _task_loss(after.experts, after.weights, outs, y)
    assert final < 0.3 * start and final < 0.3 * uniform
    for c in range(3):
        assert (after.experts[labels == c, 0] == right[c]).mean() > 0.9
    # balance: the three clusters are equally large, so the experts in use share the first slots evenly
    # (within 20 % of m/3 each) and the load-balancing loss stays well below its collapsed value (2 here).
    top1 = np.bincount(after.experts[:, 0], minlength=4)
    np.testing.assert_allclose(top1[right], m / 3, rtol=0.2)
    assert r.load_balancing_loss(after) < 1.5
    assert max(h["load_balancing_loss"] for h in history) < 2.0


# -- 7. validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_k": 0}, "top_k"),
        ({"top_k": 5}, "top_k"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"overflow": "spill"}, "overflow"),
        ({"capacity_factor": 0.0}, "capacity_factor"),
        ({"capacity_factor": -2.0}, "capacity_factor"),
        ({"noise_scale": 0.0}, "noise_scale"),
    ],
)
def test_invalid_config(kwargs, match):
    with pytest.raises(InvalidConfig, match=match):
        Router(4, 4, **kwargs)


def test_invalid_shapes_and_values():
    with pytest.raises(InvalidConfig, match="dim"):
        Router(0, 4)
    with pytest.raises(InvalidConfig, match="num_experts"):
        Router(4, 0)
    r = Router(4, 3)
    with pytest.raises(DimensionMismatch, match=r"x has shape \(2, 5\)"):
        r.route(np.zeros((2, 5)))
    with pytest.raises(DimensionMismatch):
        r.logits(np.zeros((2, 2, 4)))
    bad = np.zeros((3, 4))
    bad[1, 2] = np.nan
    with pytest.raises(NumericalInstability, match=r"x\[1, 2\]"):
        r.route(bad)
    routing = r.route(np.zeros((3, 4)))
    with pytest.raises(DimensionMismatch, match="grad_weights"):
        r.backward(np.zeros((3, 4)), routing, np.zeros((3, 3)))
    with pytest.raises(DimensionMismatch, match="rows"):
        r.backward(np.zeros((2, 4)), routing, np.zeros((2, 2)))
    with pytest.raises(InvalidConfig, match="balance_coef"):
        r.backward(np.zeros((3, 4)), routing, np.zeros((3, 2)), balance_coef=-1.0)
    with pytest.raises(DimensionMismatch, match="weight"):
        r.load_state_dict({"weight": np.zeros((3, 5)), "bias": np.zeros(3)})
    with pytest.raises(InvalidConfig, match=r"missing tensor\(s\) \['bias'\]"):
        r.load_state_dict({"weight": np.zeros((3, 4))})
    assert isinstance(routing, Routing)


def test_choose_is_route_for_one_query():
    rng = np.random.default_rng(12)
    for k in (1, 2, 4):
        router = Router(6, 4, top_k=k, temperature=0.7, seed=3)
        router.weight_ = rng.standard_normal((4, 6))
        for x in rng.standard_normal((20, 6)):
            experts, weights = router.choose(x)
            r = router.route(x[None])
            np.testing.assert_array_equal(experts, r.experts[0])
            np.testing.assert_allclose(weights, r.weights[0], rtol=1e-12)
    noisy = Router(6, 4, noisy=True).train()
    assert noisy.choose(np.ones(6)) is None  # training noise: the caller must use route()
    assert Router(6, 4).choose(np.full(6, np.nan)) is None
