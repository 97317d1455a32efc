"""DynamicHeadAttention: head pruning checked against an independent numpy reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ruvattn
from ruvattn import (
    DimensionMismatch,
    DynamicHeadAttention,
    InvalidConfig,
    MultiHeadAttention,
    OutOfBounds,
    Unsupported,
)

D, H = 32, 8
DH = D // H
RNG = np.random.default_rng(7)
Q = RNG.standard_normal(D)
KEYS = RNG.standard_normal((11, D))
VALS = RNG.standard_normal((11, D))


def _state(seed: int = 3) -> dict[str, np.ndarray]:
    """Random float64 parameters with non-zero biases (torch names and layout)."""
    r = np.random.default_rng(seed)
    return {
        "in_proj_weight": r.standard_normal((3 * D, D)) / np.sqrt(D),
        "in_proj_bias": r.standard_normal(3 * D) * 0.1,
        "out_proj.weight": r.standard_normal((D, D)) / np.sqrt(D),
        "out_proj.bias": r.standard_normal(D) * 0.1,
    }


def _reference(state, x, k, v, active):
    """out = sum_{h in active} O_h W_o[:, cols_h]^T + b_o, every head computed in float64 from the formula."""
    w, b = state["in_proj_weight"], state["in_proj_bias"]
    wo, bo = state["out_proj.weight"], state["out_proj.bias"]
    q = w[:D] @ x + b[:D]
    kp = k @ w[D : 2 * D].T + b[D : 2 * D]
    vp = v @ w[2 * D :].T + b[2 * D :]
    out = bo.astype(np.float64).copy()
    for h in active:
        c = slice(h * DH, (h + 1) * DH)
        s = kp[:, c] @ q[c] / np.sqrt(DH)
        p = np.exp(s - s.max())
        p /= p.sum()
        out += wo[:, c] @ (p @ vp[:, c])
    return out


def _model(**kw) -> DynamicHeadAttention:
    return DynamicHeadAttention(D, H, **kw).load_state_dict(_state())


# -- 1. all heads == MultiHeadAttention (and torch) ------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_heads_equal_multi_head(dtype):
    mha = MultiHeadAttention(D, H, seed=5)
    dyn = DynamicHeadAttention(D, H, seed=5)
    x, k, v = (a.astype(dtype) for a in (Q, KEYS, VALS))
    out, active = dyn.forward_with_heads(x, k, v)
    np.testing.assert_array_equal(out, mha.forward(x, k, v))
    np.testing.assert_array_equal(active, np.arange(H))
    np.testing.assert_array_equal(dyn.forward(x, dyn.project(k, v)), mha.forward(x, mha.project(k, v)))
    np.testing.assert_array_equal(dyn.forward(x, k, v, heads=H), out)  # an explicit full budget
    qs = RNG.standard_normal((3, D)).astype(dtype)
    np.testing.assert_array_equal(dyn.forward_batch(qs, k, v), mha.forward_batch(qs, k, v))
    for m in (mha, dyn):
        m.load_state_dict(_state())
    mask = np.arange(11) % 3 > 0
    np.testing.assert_allclose(dyn.forward(x, k, v, mask=mask), mha.forward(x, k, v, mask=mask), rtol=1e-6)
    np.testing.assert_allclose(dyn.forward(x, k, v), _reference(_state(), Q, KEYS, VALS, range(H)), rtol=2e-4)


def test_all_heads_equal_torch():
    torch = pytest.importorskip("torch")
    layer = torch.nn.MultiheadAttention(D, H, bias=True, dtype=torch.float64)
    dyn = DynamicHeadAttention(D, H).load_state_dict({k: t.detach().numpy() for k, t in layer.state_dict().items()})
    with torch.no_grad():
        want, _ = layer(*(torch.from_numpy(a[None, None] if a.ndim == 1 else a[:, None]) for a in (Q, KEYS, VALS)))
    np.testing.assert_allclose(dyn.forward(Q, KEYS, VALS), want.numpy()[0, 0], rtol=1e-6, atol=1e-12)


# -- 2. subsets == reference ------------------------------------------------------
@pytest.mark.parametrize("active", [[0], [5], [1, 2], [0, 3, 7], [2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]])
def test_subset_equals_reference(active):
    dyn = _model()
    want = _reference(_state(), Q, KEYS, VALS, active)
    out, got = dyn.forward_with_heads(Q, KEYS, VALS, heads=active)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(got, active)
    np.testing.assert_allclose(dyn.forward(Q, dyn.project(KEYS, VALS), heads=active), want, rtol=1e-6, atol=1e-12)
    qs = np.stack([Q, KEYS[0]])
    batch = dyn.forward_batch(qs, KEYS, VALS, heads=active)
    np.testing.assert_allclose(batch[1], _reference(_state(), KEYS[0], KEYS, VALS, active), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(batch[0], want, rtol=1e-6, atol=1e-12)
    f32 = dyn.forward(Q.astype(np.float32), KEYS.astype(np.float32), VALS.astype(np.float32), heads=active)
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, want, rtol=2e-4, atol=2e-5)


def test_head_order_in_the_request_does_not_matter_and_projected_keys_are_reused():
    dyn = _model()
    kv = dyn.project(KEYS, VALS)
    a = dyn.forward(Q, kv, heads=[6, 1, 4])
    np.testing.assert_array_equal(dyn.last_active_heads, [1, 4, 6])
    np.testing.assert_array_equal(dyn.forward(Q, kv, heads=np.array([1, 4, 6])), a)
    np.testing.assert_allclose(a, _reference(_state(), Q, KEYS, VALS, [1, 4, 6]), rtol=1e-6, atol=1e-12)


# -- 3. pruned heads are never computed ---------------------------------------------
def test_pruned_heads_are_not_computed():
    state = _state()
    active = [2, 5]
    poisoned = {k: v.copy() for k, v in state.items()}
    for h in set(range(H)) - set(active):
        for part in range(3):  # W_q, W_k, W_v rows and biases of every pruned head
            rows = slice(part * D + h * DH, part * D + (h + 1) * DH)
            poisoned["in_proj_weight"][rows] = np.nan
            poisoned["in_proj_bias"][rows] = np.nan
        poisoned["out_proj.weight"][:, h * DH : (h + 1) * DH] = np.nan
    dyn = DynamicHeadAttention(D, H)
    dyn.in_proj_weight_, dyn.in_proj_bias_ = poisoned["in_proj_weight"], poisoned["in_proj_bias"]
    dyn.out_proj_weight_, dyn.out_proj_bias_ = poisoned["out_proj.weight"], poisoned["out_proj.bias"]
    want = _reference(state, Q, KEYS, VALS, active)
    for call in (
        lambda: dyn.forward(Q, KEYS, VALS, heads=active),
        lambda: dyn.forward(Q, dyn.project(KEYS, VALS), heads=active),
        lambda: dyn.forward_batch(Q[None], KEYS, VALS, heads=active)[0],
    ):
        out = call()
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-12)
        np.testing.assert_array_equal(dyn.last_active_heads, active)
    dyn.set_params(importance=[0, 0, 3, 0, 0, 2, 0, 1], budget=2)  # the rule picks the same two heads
    out, got = dyn.forward_with_heads(Q, KEYS, VALS)
    np.testing.assert_array_equal(got, active)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-12)
    with pytest.raises(ruvattn.NumericalInstability, match=r"active heads \[2, 3\]"):
        dyn.forward(Q, KEYS, VALS, heads=[2, 3])  # the control: head 3's parameters are NaN, and are read


def test_in_place_edits_need_clear_head_cache_and_assignment_invalidates():
    dyn = _model()
    before = dyn.forward(Q, KEYS, VALS, heads=[1])
    dyn.out_proj_bias_ += 1.0
    np.testing.assert_allclose(dyn.forward(Q, KEYS, VALS, heads=[1]), before + 1.0, rtol=1e-12)  # bias is a view
    dyn.in_proj_weight_ *= 2.0
    dyn.clear_head_cache()
    state = _state()
    state["in_proj_weight"] = state["in_proj_weight"] * 2.0
    state["out_proj.bias"] = state["out_proj.bias"] + 1.0
    want = _reference(state, Q, KEYS, VALS, [1])
    np.testing.assert_allclose(dyn.forward(Q, KEYS, VALS, heads=[1]), want, rtol=1e-6, atol=1e-12)
    dyn.load_state_dict(_state())
    np.testing.assert_allclose(dyn.forward(Q, KEYS, VALS, heads=[1]), before, rtol=1e-12)


# -- 4. selection rules ----------------------------------------------------------------
def test_budget_default_importance_keeps_first_heads_and_ranks_by_importance():
    dyn = _model(budget=3)
    out, active = dyn.forward_with_heads(Q, KEYS, VALS)
    np.testing.assert_array_equal(active, [0, 1, 2])
    np.testing.assert_allclose(out, _reference(_state(), Q, KEYS, VALS, [0, 1, 2]), rtol=1e-6, atol=1e-12)
    dyn.head_importance_ = [0.1, 5.0, 0.2, 3.0, 3.0, 0.0, 4.0, 0.3]  # tie 3/4 -> lower index
    np.testing.assert_array_equal(dyn.forward_with_heads(Q, KEYS, VALS)[1], [1, 3, 6])
    np.testing.assert_array_equal(dyn.forward_with_heads(Q, KEYS, VALS, heads=4)[1], [1, 3, 4, 6])
    np.testing.assert_array_equal(dyn.select_heads(1), [1])
    with pytest.raises(ValueError):
        dyn.head_importance_[0] = 9.0  # read-only: assign a new array instead


def test_threshold_stops_at_cumulative_share():
    imp = [1.0, 4.0, 0.0, 2.0, 0.5, 0.5, 1.0, 1.0]  # total 10; ranked 4, 2, 1, 1, 1, .5, .5, 0
    dyn = _model(threshold=0.6, importance=np.array(imp))
    out, active = dyn.forward_with_heads(Q, KEYS, VALS)  # 0.4, 0.6 -> stop after two heads (share == threshold)
    np.testing.assert_array_equal(active, [1, 3])
    np.testing.assert_allclose(out, _reference(_state(), Q, KEYS, VALS, [1, 3]), rtol=1e-6, atol=1e-12)
    for t, want in [(0.3, [1]), (0.61, [0, 1, 3]), (0.9, [0, 1, 3, 6, 7]), (0.95, [0, 1, 3, 4, 6, 7]),
                    (1.0, [0, 1, 3, 4, 5, 6, 7])]:  # fmt: skip
        dyn.set_params(threshold=t)
        np.testing.assert_array_equal(dyn.select_heads(), want, err_msg=f"threshold={t}")
    dyn.set_params(threshold=0.9, budget=2)  # the budget caps the threshold's count
    np.testing.assert_array_equal(dyn.select_heads(), [1, 3])
    eq = _model(threshold=0.25)  # equal importance: 2 of 8 heads reach exactly 0.25
    np.testing.assert_array_equal(eq.select_heads(), [0, 1])
    eq.head_importance_ = np.zeros(H)  # all zero counts as all equal
    np.testing.assert_array_equal(eq.select_heads(), [0, 1])


def test_set_params_on_selection_keeps_weights_and_round_trips():
    dyn = _model(budget=2)
    dyn.set_params(budget=5)
    np.testing.assert_array_equal(dyn.in_proj_weight_, _state()["in_proj_weight"])
    spec = json.loads(json.dumps(DynamicHeadAttention(D, H, budget=2, importance=np.arange(H) * 1.0).to_dict()))
    again = ruvattn.build(spec)
    assert isinstance(again, DynamicHeadAttention) and "dynamic_heads" in ruvattn.available()
    np.testing.assert_array_equal(again.select_heads(), [6, 7])


def test_estimate_importance_ranks_a_silenced_head_last():
    state = _state()
    state["out_proj.weight"][:, 3 * DH : 4 * DH] = 0.0
    dyn = DynamicHeadAttention(D, H, budget=H - 1).load_state_dict(state)
    qs = RNG.standard_normal((5, D))
    imp = dyn.estimate_importance(qs, KEYS, VALS)
    assert imp.shape == (H,) and imp[3] == 0.0 and (np.delete(imp, 3) > 0).all()
    # the statistic from its formula: mean over queries of || O_h W_o[:, h]^T ||
    mha = MultiHeadAttention(D, H).load_state_dict(state)
    ho = np.stack([mha.head_output(x, KEYS, VALS) for x in qs])  # (m, H, DH)
    wo = state["out_proj.weight"]
    want = [np.linalg.norm(ho[:, h] @ wo[:, h * DH : (h + 1) * DH].T, axis=1).mean() for h in range(H)]
    np.testing.assert_allclose(imp, want, rtol=1e-6)
    np.testing.assert_array_equal(dyn.forward_with_heads(Q, KEYS, VALS)[1], [0, 1, 2, 4, 5, 6, 7])
    np.testing.assert_allclose(dyn.forward(Q, KEYS, VALS), _reference(state, Q, KEYS, VALS, range(H)), rtol=1e-6)
    np.testing.assert_allclose(dyn.estimate_importance(qs, dyn.project(KEYS, VALS)), want, rtol=1e-6)


# -- 5. validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"budget": 0}, InvalidConfig, "budget"),
        ({"budget": H + 1}, InvalidConfig, "budget"),
        ({"budget": 2.0}, InvalidConfig, "budget"),
        ({"threshold": 0.0}, InvalidConfig, "threshold"),
        ({"threshold": 1.5}, InvalidConfig, "threshold"),
        ({"threshold": "0.5"}, InvalidConfig, "threshold"),
        ({"importance": [1.0] * (H - 1)}, InvalidConfig, "importance"),
        ({"importance": [-1.0] + [1.0] * (H - 1)}, InvalidConfig, "finite numbers >= 0"),
        ({"importance": [np.nan] * H}, InvalidConfig, "finite"),
    ],
)
def test_config_errors(kw, err, match):
    with pytest.raises(err, match=match):
        DynamicHeadAttention(D, H, **kw)


def test_call_errors():
    dyn = _model()
    for heads, err, match in [
        ([H], OutOfBounds, r"\[0, 8\); got 8"),
        ([-1, 2], OutOfBounds, "got -1"),
        ([1, 1], InvalidConfig, "distinct"),
        ([], InvalidConfig, "at least one"),
        ([0.5], InvalidConfig, "head indices"),
        (0, InvalidConfig, r"\[1, 8\]"),
        (H + 1, InvalidConfig, r"\[1, 8\]"),
        (True, InvalidConfig, "head indices"),
        ([[0, 1]], InvalidConfig, "1-D"),
    ]:
        with pytest.raises(err, match=match):
            dyn.forward(Q, KEYS, VALS, heads=heads)
    with pytest.raises(DimensionMismatch, match="importance"):
        dyn.head_importance_ = np.ones(H + 1)
    with pytest.raises(InvalidConfig, match="non-negative"):
        dyn.head_importance_ = -np.ones(H)
    with pytest.raises(InvalidConfig, match="budget"):
        dyn.set_params(budget=H + 1)
    with pytest.raises(Unsupported, match="every head"):
        dyn.forward(Q, KEYS, VALS, heads=[0], mask=np.ones(11, bool))
    with pytest.raises(Unsupported, match="every head"):
        DynamicHeadAttention(D, H, budget=1).forward_neighbours(KEYS, KEYS, VALS, [[0, 1]] * 11)
    with pytest.raises(InvalidConfig, match="values are required"):
        dyn.forward(Q, KEYS, heads=[0])
    with pytest.raises(DimensionMismatch, match="keys has shape"):
        dyn.forward(Q, KEYS[:, :5], VALS, heads=[0])
    with pytest.raises(InvalidConfig, match="another"):
        dyn.forward(Q, MultiHeadAttention(D, H).project(KEYS, VALS), heads=[0])
    with pytest.raises(ruvattn.NumericalInstability, match="query"):
        dyn.forward(np.full(D, np.nan), KEYS, VALS, heads=[0])
    with pytest.raises(ruvattn.EmptyInput):
        dyn.forward(Q, KEYS[:0], VALS[:0], heads=[0])
    assert dyn.last_active_heads is None  # failed calls report nothing
