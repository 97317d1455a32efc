"""``ruvattn.analysis`` against hand-derived values and naive numpy/scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.special import logsumexp, softmax
from scipy.stats import entropy as scipy_entropy

from ruvattn import analysis
from ruvattn.errors import EmptyInput, InvalidConfig, NumericalInstability
from ruvattn.routing import Router, RoutingRecord

LN2 = math.log(2.0)


def _dirichlet(shape: tuple[int, ...], seed: int = 0, zeros: bool = True) -> np.ndarray:
    """Random weight rows; with ``zeros`` about a quarter of the entries are exactly 0."""
    rng = np.random.default_rng(seed)
    w = rng.gamma(0.5, size=shape)
    if zeros:
        w[rng.random(shape) < 0.25] = 0.0
        w[..., 0] += 1e-3  # no all-zero row
    return w / w.sum(axis=-1, keepdims=True)


def _naive_sparsity(row: np.ndarray, mass: float) -> float:
    """The fewest keys whose weights add up to ``mass`` of the row, counted greedily, as a share of keys kept out."""
    total, needed = 0.0, 0
    for v in sorted(row.tolist(), reverse=True):
        total += v
        needed += 1
        if total >= mass * sum(row.tolist()) - 1e-12:
            break
    return 1.0 - needed / row.size


def _naive_top_k(row: np.ndarray, k: int) -> float:
    return float(sum(sorted(row.tolist(), reverse=True)[:k]))


# -- entropy and friends ---------------------------------------------------------------------------


def test_entropy_hand_values():
    w = np.array([[0.5, 0.5, 0.0, 0.0], [0.5, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    # -(.5 ln .5 + 2 · .25 ln .25) = 0.5 ln 2 + ln 2
    np.testing.assert_allclose(analysis.entropy(w), [LN2, 1.5 * LN2, 0.0, 2 * LN2], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(analysis.normalized_entropy(w), [0.5, 0.75, 0.0, 1.0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(analysis.effective_support(w), [2.0, 2 * math.sqrt(2), 1.0, 4.0], rtol=1e-14)


def test_entropy_matches_scipy_on_random_rows_with_zeros():
    w = _dirichlet((5, 7, 33), seed=1)
    ref = scipy_entropy(w, axis=-1)
    np.testing.assert_allclose(analysis.entropy(w), ref, rtol=1e-12)
    np.testing.assert_allclose(analysis.normalized_entropy(w), ref / np.log(33), rtol=1e-12)
    np.testing.assert_allclose(analysis.effective_support(w), np.exp(ref), rtol=1e-12)


def test_float32_rows_are_accepted_and_agree_with_float64():
    w = _dirichlet((16, 50), seed=2).astype(np.float32)
    w64 = w.astype(np.float64) / w.astype(np.float64).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(analysis.entropy(w), scipy_entropy(w64, axis=1), rtol=1e-5)


def test_one_key_has_zero_entropy_and_full_mass():
    w = np.ones((3, 1))
    np.testing.assert_array_equal(analysis.entropy(w), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(analysis.normalized_entropy(w), [0.0, 0.0, 0.0])  # 0/log 1 defined as 0
    np.testing.assert_array_equal(analysis.effective_support(w), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(analysis.top_k_mass(w, 5), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(analysis.sparsity(w), [0.0, 0.0, 0.0])  # the one key is needed


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_entropy_bounds_property(n, seed):
    w = _dirichlet((4, n), seed=seed)
    h = analysis.entropy(w)
    assert np.all(h >= -1e-12) and np.all(h <= math.log(n) + 1e-9)
    s = analysis.effective_support(w)
    assert np.all(s >= 1 - 1e-9) and np.all(s <= np.count_nonzero(w, axis=1) + 1e-9)  # at most the non-zero keys


# -- top-k mass and sparsity -----------------------------------------------------------------------


def test_top_k_mass_hand_and_naive():
    w = np.array([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(analysis.top_k_mass(w, 1), [0.6, 0.6])
    np.testing.assert_allclose(analysis.top_k_mass(w, 2), [0.9, 0.8])
    np.testing.assert_allclose(analysis.top_k_mass(w, 3), [1.0, 1.0])
    np.testing.assert_allclose(analysis.top_k_mass(w, 99), [1.0, 1.0])  # k beyond the row counts all of it
    r = _dirichlet((40, 21), seed=3)
    for k in (1, 2, 5, 20, 21):
        np.testing.assert_allclose(analysis.top_k_mass(r, k), [_naive_top_k(row, k) for row in r], rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 30), seed=st.integers(0, 2**31 - 1))
def test_top_k_mass_is_monotone_and_at_least_uniform_share(n, seed):
    w = _dirichlet((3, n), seed=seed)
    masses = np.stack([analysis.top_k_mass(w, k) for k in range(1, n + 1)])
    assert np.all(np.diff(masses, axis=0) >= -1e-12)
    assert np.all(masses >= np.arange(1, n + 1)[:, None] / n - 1e-12)  # the k largest hold at least k/n


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2"])
def test_top_k_mass_rejects_bad_k(k):
    with pytest.raises(InvalidConfig, match="'k'"):
        analysis.top_k_mass([[0.5, 0.5]], k)


def test_sparsity_hand_values():
    # 0.7 + 0.2 reaches 0.9 with 2 of 3 keys -> a third not needed
    np.testing.assert_allclose(analysis.sparsity([[0.7, 0.2, 0.1]], 0.9), [1 / 3])
    np.testing.assert_allclose(analysis.sparsity([[0.25] * 4], 0.9), [0.0])  # uniform: all four needed
    np.testing.assert_allclose(analysis.sparsity([[1.0, 0.0, 0.0, 0.0]], 0.9), [0.75])
    np.testing.assert_allclose(analysis.sparsity([[0.5, 0.5, 0.0, 0.0]], 0.5), [0.75])  # exactly reached by one
    np.testing.assert_allclose(analysis.sparsity([[0.5, 0.5, 0.0, 0.0]], 1.0), [0.5])  # mass 1: the zeros


def test_sparsity_matches_naive_greedy_count():
    w = _dirichlet((60, 17), seed=4)
    for mass in (0.1, 0.5, 0.9, 0.99, 1.0):
        np.testing.assert_allclose(analysis.sparsity(w, mass), [_naive_sparsity(r, mass) for r in w], atol=1e-12)


def test_sparsity_mass_one_counts_zero_weights_in_float32():
    # a float32 row sums to 1 only to ~1e-7: mass=1 must still need exactly the non-zero keys
    w = np.array([[0.5, 0.49999994, 0.0, 0.0], [0.3, 0.3, 0.39999998, 0.0]], np.float32)
    assert abs(float(w[0].sum()) - 1.0) > 0  # the premise: not exactly 1
    np.testing.assert_allclose(analysis.sparsity(w, 1.0), [0.5, 0.25])


@pytest.mark.parametrize("mass", [0.0, -0.1, 1.5, float("nan")])
def test_sparsity_rejects_bad_mass(mass):
    with pytest.raises(InvalidConfig, match="mass"):
        analysis.sparsity([[0.5, 0.5]], mass)


# -- head diversity --------------------------------------------------------------------------------


def _naive_diversity(w: np.ndarray) -> float:
    """Mean over head pairs and queries of scipy's Jensen–Shannon distance squared (natural log)."""
    h, m = w.shape[0], w.shape[1]
    values = [
        jensenshannon(w[a, q], w[b, q]) ** 2 for a in range(h) for b in range(a + 1, h) for q in range(m)
    ]  # fmt: skip
    return float(np.mean(values))


def test_head_diversity_matches_scipy_jensenshannon():
    w = _dirichlet((4, 9, 12), seed=5)
    assert analysis.head_diversity(w) == pytest.approx(_naive_diversity(w), rel=1e-10)


def test_head_diversity_hand_values():
    same = np.tile([0.2, 0.3, 0.5], (3, 1))
    assert analysis.head_diversity(same) == pytest.approx(0.0, abs=1e-15)
    disjoint = np.array([[1.0, 0.0], [0.0, 1.0]])  # one query, heads on different keys
    assert analysis.head_diversity(disjoint) == pytest.approx(LN2, rel=1e-14)
    # (a, a, b) with JS(a, b) = log 2: pairs (a,a)=0, (a,b)=log 2, (a,b)=log 2 -> mean 2/3 log 2
    three = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert analysis.head_diversity(three) == pytest.approx(2 / 3 * LN2, rel=1e-14)
    # JS([1, 0], [.5, .5]) by hand: mid (.75, .25); KL(p||mid) = ln(4/3), KL(q||mid) = .5 ln(2/3) + .5 ln 2
    half = np.array([[1.0, 0.0], [0.5, 0.5]])
    expected = 0.5 * (math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert analysis.head_diversity(half) == pytest.approx(expected, rel=1e-14)


def test_head_diversity_single_head_is_zero_and_bounds():
    assert analysis.head_diversity(_dirichlet((1, 5, 8), seed=6)) == 0.0
    d = analysis.head_diversity(_dirichlet((6, 20, 8), seed=7))
    assert 0.0 < d <= LN2


def test_head_diversity_needs_a_head_axis_and_queries():
    with pytest.raises(InvalidConfig):
        analysis.head_diversity([0.5, 0.5])  # no head axis
    with pytest.raises(EmptyInput, match="no queries"):
        analysis.head_diversity(np.ones((2, 0, 3)) / 3)


# -- validation ------------------------------------------------------------------------------------

FUNCTIONS = [
    ("entropy", lambda w: analysis.entropy(w)),
    ("normalized_entropy", lambda w: analysis.normalized_entropy(w)),
    ("effective_support", lambda w: analysis.effective_support(w)),
    ("top_k_mass", lambda w: analysis.top_k_mass(w, 2)),
    ("sparsity", lambda w: analysis.sparsity(w, 0.9)),
    ("summarize", lambda w: analysis.summarize(w, k=2)),
    ("head_diversity", lambda w: analysis.head_diversity(np.stack([w, w]))),
]


@pytest.mark.parametrize(("name", "fn"), FUNCTIONS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_raise_numerical_instability(name, fn, bad):
    w = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    w[1, 2] = bad
    with pytest.raises(NumericalInstability, match="finite"):
        fn(w)


@pytest.mark.parametrize(("name", "fn"), FUNCTIONS)
def test_negative_or_unnormalised_weights_raise_invalid_config(name, fn):
    with pytest.raises(InvalidConfig, match="non-negative"):
        fn(np.array([[1.2, -0.2, 0.0], [0.2, 0.3, 0.5]]))
    with pytest.raises(InvalidConfig, match="sum to 1"):
        fn(np.array([[2.0, 1.0, 1.0], [0.2, 0.3, 0.5]]))
    with pytest.raises(InvalidConfig, match="sum to 1"):
        fn(np.zeros((2, 3)))  # zero weights are not a distribution
    with pytest.raises(InvalidConfig):
        fn(np.zeros((2, 0)))  # no keys


def test_rows_within_tolerance_are_accepted():
    w = np.array([[0.5, 0.5 + 5e-4]])  # a float32 softmax is off by far less than 1e-3
    assert analysis.entropy(w)[0] == pytest.approx(-2 * 0.5 * math.log(0.5), abs=1e-3)


def test_summarize_is_the_mean_of_each_statistic():
    w = _dirichlet((25, 10), seed=8)
    s = analysis.summarize(w, k=3, mass=0.8)
    assert set(s) == {"keys", "entropy", "uniform_entropy", "normalized_entropy", "effective_support",
                      "top3_mass", "sparsity@0.8"}  # fmt: skip
    assert s["keys"] == 10
    assert s["uniform_entropy"] == pytest.approx(math.log(10))
    assert s["entropy"] == pytest.approx(scipy_entropy(w, axis=1).mean(), rel=1e-12)
    assert s["normalized_entropy"] == pytest.approx(scipy_entropy(w, axis=1).mean() / math.log(10), rel=1e-12)
    assert s["effective_support"] == pytest.approx(np.exp(scipy_entropy(w, axis=1)).mean(), rel=1e-12)
    assert s["top3_mass"] == pytest.approx(np.mean([_naive_top_k(r, 3) for r in w]), rel=1e-12)
    assert s["sparsity@0.8"] == pytest.approx(np.mean([_naive_sparsity(r, 0.8) for r in w]), abs=1e-12)


def test_summarize_of_no_rows_raises_instead_of_nan():
    with pytest.raises(EmptyInput, match="no weight rows"):
        analysis.summarize(np.ones((0, 4)) / 4)


# -- routing balance -------------------------------------------------------------------------------


def test_routing_balance_of_a_hand_built_record():
    # 4 queries, top-1, 3 experts: query 3 dropped, expert 2 dead
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1]])
    experts = np.array([[0], [0], [1], [-1]])
    rec = RoutingRecord(
        experts=experts, weights=np.array([[1.0], [1.0], [1.0], [0.0]]), probs=probs,
        load=np.array([2, 1, 0]), importance=np.array([2.0, 1.0, 0.0]), utilisation=np.array([1.5, 0.75, 0.0]),
        entropy=scipy_entropy(probs, axis=1), mean_entropy=float(scipy_entropy(probs, axis=1).mean()),
        dropped=np.array([False, False, False, True]), overflowed=np.array([[False], [False], [False], [True]]),
        num_dropped=1, num_overflowed=1, dead_experts=np.array([False, False, True]), load_balancing_loss=0.9,
        z_loss=0.25, capacity=2,
    )  # fmt: skip
    b = analysis.routing_balance(rec)
    ideal = 4 * 1 / 3
    mean, std = 1.0, math.sqrt(((2 - 1) ** 2 + 0 + 1) / 3)  # population std of (2, 1, 0)
    assert b == {
        "experts": 3, "queries": 4, "top_k": 1, "ideal_load": pytest.approx(ideal),
        "max_load_ratio": pytest.approx(2 / ideal), "load_cv": pytest.approx(std / mean),
        "router_entropy": pytest.approx(scipy_entropy(probs, axis=1).mean()), "dead_experts": [2], "dropped": 1,
        "overflowed": 1, "load_balancing_loss": 0.9, "z_loss": 0.25,
    }  # fmt: skip
    assert all(type(v) in (int, float, list) for v in b.values())  # JSON-ready plain numbers


def _fixed_router(weight: np.ndarray, **kw) -> Router:
    r = Router(weight.shape[1], weight.shape[0], **kw)
    r.load_state_dict({"weight": weight, "bias": np.zeros(weight.shape[0])})
    return r


def test_routing_balance_of_a_tiny_routing_computed_by_hand():
    # 3 experts, top-1; expert 0 likes x, expert 1 likes y, expert 2 likes neither
    weight = np.array([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    x = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.9, 0.1]])
    rec = _fixed_router(weight, top_k=1).record(_fixed_router(weight, top_k=1).route(x))
    z = x @ weight.T
    p = softmax(z, axis=1)
    b = analysis.routing_balance(rec)
    # choices by hand: 0, 0, 1, 0 -> load (3, 1, 0)
    np.testing.assert_array_equal(rec.experts[:, 0], [0, 0, 1, 0])
    f = np.array([3, 1, 0]) / 4
    ideal = 4 / 3
    assert b["ideal_load"] == pytest.approx(ideal)
    assert b["max_load_ratio"] == pytest.approx(3 / ideal)
    assert b["load_cv"] == pytest.approx(math.sqrt(14) / 4)  # std (3,1,0) = sqrt(14)/3, mean 4/3
    assert b["dead_experts"] == [2] and b["dropped"] == 0 and b["overflowed"] == 0
    assert b["load_balancing_loss"] == pytest.approx(3 * float(f @ p.mean(axis=0)), rel=1e-12)
    assert b["z_loss"] == pytest.approx(float(np.mean(logsumexp(z, axis=1) ** 2)), rel=1e-12)
    assert b["router_entropy"] == pytest.approx(float(scipy_entropy(p, axis=1).mean()), rel=1e-12)


def test_routing_balance_with_capacity_drops_and_overflows():
    # every query prefers expert 0; capacity ceil(0.5 · 4 · 1 / 2) = 1 slot per expert, overflow to the next
    weight = np.array([[1.0, 0.0], [0.0, 0.0]])
    x = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    r = _fixed_router(weight, top_k=1, capacity_factor=0.5, overflow="next")
    rec = r.record(r.route(x))
    # q0 -> 0; q1 overflows to 1; q2 and q3 overflow and find nothing free -> dropped
    np.testing.assert_array_equal(rec.experts[:, 0], [0, 1, -1, -1])
    b = analysis.routing_balance(rec)
    assert (b["dropped"], b["overflowed"], b["dead_experts"]) == (2, 3, [])
    assert b["max_load_ratio"] == pytest.approx(1 / 2) and b["load_cv"] == 0.0
    f = np.array([1, 1]) / 4  # kept slots over m·k
    p = softmax(x @ weight.T, axis=1)
    assert b["load_balancing_loss"] == pytest.approx(2 * float(f @ p.mean(axis=0)), rel=1e-12)
