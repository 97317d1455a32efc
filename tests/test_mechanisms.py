"""Mechanism behaviour: hand-derived values, invariants, masks, ids, neighbour lists, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ruvattn
from ruvattn import (
    DimensionMismatch,
    EmptyInput,
    FlashAttention,
    InvalidConfig,
    MultiHeadAttention,
    NeighbourList,
    NumericalInstability,
    OutOfBounds,
    ScaledDotProductAttention,
    Unsupported,
)
from ruvattn import reference as ref

RNG = np.random.default_rng(1234)
Q = RNG.standard_normal(16).astype(np.float32)
K = RNG.standard_normal((9, 16)).astype(np.float32)
Vv = RNG.standard_normal((9, 5)).astype(np.float32)


def test_hand_derived_two_keys():
    # scores (q.k)/sqrt(2): ln 3 and 0  ->  weights 3/4, 1/4
    attn = ScaledDotProductAttention(2)
    q = np.array([np.log(3.0) * np.sqrt(2.0), 0.0])
    out, lse = attn.forward_with_lse(q, [[1.0, 0.0], [0.0, 1.0]], [[4.0, 0.0], [0.0, 8.0]])
    np.testing.assert_allclose(out, [3.0, 2.0], rtol=1e-12)
    assert lse == pytest.approx(np.log(4.0))


def test_lists_of_vectors_equal_arrays_and_float32_fast_path_does_not_copy(monkeypatch):
    attn = ScaledDotProductAttention(16)
    from_lists = attn.forward(Q.tolist(), [list(r) for r in K], [np.asarray(r) for r in Vv])
    np.testing.assert_allclose(from_lists, attn.forward(Q, K, Vv), atol=1e-6)
    calls = []
    real = np.ascontiguousarray
    monkeypatch.setattr(np, "ascontiguousarray", lambda *a, **k: calls.append(a) or real(*a, **k))
    attn.forward(Q, K, Vv)
    assert calls == []  # float32 C-contiguous inputs are used as they are


def test_temperature_and_scale():
    base = ScaledDotProductAttention(16)
    hot = ScaledDotProductAttention(16, temperature=2.0)
    explicit = ScaledDotProductAttention(16, scale=0.125)
    np.testing.assert_allclose(hot.attention_weights(Q, K), explicit.attention_weights(Q, K), rtol=1e-6)
    _, w, _ = ref.attention(Q.astype(np.float64), K, Vv, scale=0.25 / 2)
    np.testing.assert_allclose(hot.attention_weights(Q, K), w, rtol=1e-5)
    assert base.attention_weights(Q, K).max() > hot.attention_weights(Q, K).max()


def test_mask_all_true_equals_no_mask_and_masked_keys_get_zero():
    attn = ScaledDotProductAttention(16)
    np.testing.assert_array_equal(attn.forward(Q, K, Vv, mask=np.ones(9, bool)), attn.forward(Q, K, Vv))
    mask = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0], bool)
    w = attn.attention_weights(Q, K, mask=mask)
    assert (w[~mask] == 0).all() and w.sum() == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(attn.forward(Q, K, Vv, mask=mask), attn.forward(Q, K[mask], Vv[mask]), atol=1e-6)
    # a masked value row is never read: NaN there does not matter
    v = Vv.copy()
    v[1] = np.nan
    assert np.isfinite(attn.forward(Q, K, v, mask=mask)).all()
    # additive bias: -inf is a mask, a finite bias shifts the scores
    bias = np.where(mask, 0.0, -np.inf)
    np.testing.assert_allclose(attn.forward(Q, K, Vv, bias=bias), attn.forward(Q, K, Vv, mask=mask), atol=1e-6)
    b2 = RNG.standard_normal(9)
    _, w_ref, _ = ref.attention(Q.astype(np.float64), K, Vv, bias=b2)
    np.testing.assert_allclose(attn.attention_weights(Q, K, bias=b2), w_ref, atol=1e-6)


def test_ids_into_a_table_equal_gathered_rows():
    attn = ScaledDotProductAttention(16)
    ids = [4, 0, 4, 8]
    np.testing.assert_allclose(attn.forward(Q, K, Vv, ids=ids), attn.forward(Q, K[ids], Vv[ids]), atol=1e-6)
    with pytest.raises(OutOfBounds, match=r"ids must be in \[0, 9\); got 9"):
        attn.forward(Q, K, Vv, ids=[1, 9])


def test_batch_forms_equal_single_query():
    qs = RNG.standard_normal((6, 16)).astype(np.float32)
    mask = RNG.random((6, 9)) > 0.3
    mask[:, 0] = True
    for attn in (ScaledDotProductAttention(16), FlashAttention(16, block_size=4)):
        got = attn.forward_batch(qs, K, Vv, mask=mask)
        for i in range(6):
            np.testing.assert_allclose(got[i], attn.forward(qs[i], K, Vv, mask=mask[i]), atol=2e-6)
    sd = ScaledDotProductAttention(16)
    w = sd.weights(qs, K, mask=mask[0])[0]
    np.testing.assert_allclose(w[3], sd.attention_weights(qs[3], K, mask=mask[0]), atol=1e-7)


def test_neighbour_lists_csr_padded_and_empty_node():
    table = RNG.standard_normal((30, 16)).astype(np.float32)
    vals = RNG.standard_normal((30, 5)).astype(np.float32)
    qs = table[:4]
    padded = np.array([[1, 2, 3, -1], [-1, -1, -1, -1], [5, 5, 29, 0], [7, -1, -1, -1]])
    attn = ScaledDotProductAttention(16)
    out = attn.forward_neighbours(qs, table, vals, padded)
    nl = NeighbourList.from_padded(padded, 30)
    np.testing.assert_allclose(
        out, ref.neighbour_attention(qs.astype(np.float64), table, vals, nl.indptr, nl.indices), atol=2e-6
    )
    assert (out[1] == 0).all()  # no neighbours: a zero row, by definition
    np.testing.assert_array_equal(attn.forward_neighbours(qs, table, vals, (nl.indptr, nl.indices)), out)
    np.testing.assert_array_equal(nl.to_padded(4), padded)
    for shape in ((3, 0), (0, 2)):  # no slots at all: every node is empty
        empty = NeighbourList.from_padded(np.zeros(shape, np.int64), 30)
        assert empty.indptr.tolist() == [0] * (shape[0] + 1) and empty.nnz == 0
    full = NeighbourList.from_padded(np.array([[3, 1], [0, 2], [2, 2]]), 30)
    assert full.indptr.tolist() == [0, 2, 4, 6] and full.indices.tolist() == [3, 1, 0, 2, 2, 2]
    w = attn.weights(qs, table, neighbours=nl)[0]
    np.testing.assert_allclose(w[:3], attn.attention_weights(qs[0], table[[1, 2, 3]]), atol=1e-7)
    np.testing.assert_allclose(FlashAttention(16).forward_neighbours(qs, table, vals, nl), out, atol=1e-7)
    with pytest.raises(OutOfBounds, match=r"NeighbourList: neighbour ids must be in \[0, 30\); got 30"):
        attn.forward_neighbours(qs, table, vals, np.array([[30], [0], [0], [0]]))
    ragged = [[1, 2, 3], [], [5, 5, 29, 0], [7]]  # one list per node is accepted as it is
    np.testing.assert_array_equal(attn.forward_neighbours(qs, table, vals, ragged), out)
    with pytest.raises(DimensionMismatch, match="must be a flat sequence of integers"):
        attn.forward_neighbours(qs, table, vals, [[1, 2], [0.5], [], [1]])
    with pytest.raises(DimensionMismatch, match="neighbours describe 4 nodes but queries has 3 rows"):
        attn.forward_neighbours(qs[:3], table, vals, padded)


def test_mha_projected_batch_and_neighbours_agree():
    mha = MultiHeadAttention(16, num_heads=4, seed=3)
    table = RNG.standard_normal((20, 16)).astype(np.float32)
    kv = mha.project(table, table)
    x = table[:3]
    single = np.stack([mha.forward(x[i], table, table) for i in range(3)])
    np.testing.assert_allclose(np.stack([mha.forward(x[i], kv) for i in range(3)]), single, atol=1e-6)
    np.testing.assert_allclose(mha.forward_batch(x, table, table), single, atol=1e-5)
    ids = np.tile(np.arange(20), (3, 1))
    np.testing.assert_allclose(mha.forward_neighbours(x, table, table, ids), single, atol=1e-5)
    ragged = NeighbourList.from_lists([[3, 1, 4], [], [15, 9, 2, 6, 5]], 20)
    ew = mha.weights(x, table, neighbours=ragged)
    assert ew.shape == (4, 8)
    np.testing.assert_allclose(ew[:, :3], mha.weights(x[0], table, ids=[3, 1, 4]), atol=1e-7)
    np.testing.assert_allclose(ew[:, 3:], mha.weights(x[2], table[[15, 9, 2, 6, 5]]), atol=1e-7)
    hw = mha.weights(x[0], table)
    assert hw.shape == (4, 20) and np.allclose(hw.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(mha.attention_weights(x[0], table), hw.mean(0), atol=1e-7)
    # head_output -> out_proj is forward
    ho = mha.head_output(x[0], table, table).reshape(-1)
    np.testing.assert_allclose(ho @ mha.out_proj_weight_.T + mha.out_proj_bias_, single[0], atol=1e-5)
    with pytest.raises(InvalidConfig, match="prepared by another MultiHeadAttention"):
        MultiHeadAttention(16, 4).forward(x[0], kv)


def test_mha_reference_and_seeded_init():
    a, b = MultiHeadAttention(32, 2, seed=7), MultiHeadAttention(32, 2, seed=7)
    np.testing.assert_array_equal(a.in_proj_weight_, b.in_proj_weight_)
    assert not np.array_equal(a.in_proj_weight_, MultiHeadAttention(32, 2, seed=8).in_proj_weight_)
    bound = np.sqrt(6 / (32 + 96))
    assert np.abs(a.in_proj_weight_).max() <= bound and (a.in_proj_bias_ == 0).all()
    x = RNG.standard_normal((11, 32)).astype(np.float32)
    out, w, _ = ref.multi_head_attention(x[0].astype(np.float64), x, x, *(t.astype(np.float64) for t in a._arrays()), 2)
    np.testing.assert_allclose(a.forward(x[0], x, x), out, atol=2e-6)
    np.testing.assert_allclose(a.weights(x[0], x), w, atol=1e-6)


def test_dropout_only_in_training_and_seeded():
    attn = ScaledDotProductAttention(16, dropout=0.5, seed=11)
    eval_out = attn.forward(Q, K, Vv)
    np.testing.assert_array_equal(attn.forward(Q, K, Vv), eval_out)  # inference is deterministic
    attn.train()
    first = attn.forward(Q, K, Vv)
    assert not np.allclose(first, eval_out)
    again = ScaledDotProductAttention(16, dropout=0.5, seed=11).train().forward(Q, K, Vv)
    np.testing.assert_array_equal(first, again)  # same seed, same dropout mask
    # expectation of dropout output equals the eval output (inverted dropout)
    mean = np.mean([attn.forward(Q, K, Vv) for _ in range(3000)], axis=0)
    np.testing.assert_allclose(mean, eval_out, atol=0.05)
    mha = MultiHeadAttention(16, 2, dropout=0.3).train()
    assert not np.allclose(mha.forward(Q, K, K), mha.eval().forward(Q, K, K))


def test_numerical_stability_large_scores_and_offsets():
    attn = ScaledDotProductAttention(4, scale=1.0)
    q = np.array([1e2, 0, 0, 0], np.float32)
    k = np.array([[1e2, 0, 0, 0], [0, 1, 0, 0], [99.0, 0, 0, 0]], np.float32)  # scores 1e4, 0, 9.9e3
    w = attn.attention_weights(q, k)
    assert w[0] == pytest.approx(1.0) and w[1] == 0 and np.isfinite(w).all()
    big = ScaledDotProductAttention(4)
    q2 = np.array([1.0, 2.0, 0.5, 1000.0])
    k2 = np.array([[1.0, 0, 0, 2.0], [0, 1.0, 0, 2.0], [0, 0, 1.0, 2.0]])  # offset +1000 on every score
    w2 = big.attention_weights(q2, k2)
    _, w_ref, _ = ref.attention(q2, k2 - [0, 0, 0, 2.0], np.eye(3))
    np.testing.assert_allclose(w2, w_ref, atol=1e-9)


@pytest.mark.parametrize("mech", [ScaledDotProductAttention(4), FlashAttention(4), MultiHeadAttention(4, 2)])
def test_bad_inputs_raise_typed_errors(mech):
    q = np.ones(4, np.float32)
    k = np.ones((3, 4), np.float32)
    name = mech.kind
    with pytest.raises(DimensionMismatch, match=rf"{name}\.forward: keys has shape \(3, 5\), expected \(n, 4\)"):
        mech.forward(q, np.ones((3, 5)), k)
    with pytest.raises(DimensionMismatch, match=r"query has shape \(3,\), expected \(4,\)"):
        mech.forward(np.ones(3), k, k)
    with pytest.raises(DimensionMismatch, match="got 3 keys and 2 values"):
        mech.forward(q, k, k[:2])
    with pytest.raises(EmptyInput, match="nothing to attend over"):
        mech.forward(q, np.ones((0, 4)), np.ones((0, 4)))
    with pytest.raises(EmptyInput, match="every key is masked out"):
        mech.forward(q, k, k, mask=np.zeros(3, bool))
    kn = k.copy()
    kn[1, 2] = np.nan
    with pytest.raises(NumericalInstability, match=r"keys must be finite; got keys\[1, 2\] = nan"):
        mech.forward(q, kn, k)
    vinf = k.copy()
    vinf[2, 0] = np.inf
    with pytest.raises(NumericalInstability, match="values must be finite"):
        mech.forward(q, k, vinf)
    with pytest.raises(DimensionMismatch, match="ragged"):
        mech.forward(q, [[1.0, 2, 3, 4], [1.0]], k)
    with pytest.raises(DimensionMismatch, match=r"mask has shape \(2,\), expected \(3,\)"):
        mech.forward(q, k, k, mask=np.ones(2, bool))


def test_overflow_of_finite_inputs_is_reported():
    attn = ScaledDotProductAttention(4, scale=1.0)
    q = np.full(4, 1e30, np.float32)
    with pytest.raises(NumericalInstability, match="overflowed float32"):
        attn.forward(q, np.full((2, 4), 1e30, np.float32), np.ones((2, 4), np.float32))
    out = attn.forward(q.astype(np.float64), np.full((2, 4), 1e30), np.ones((2, 4)))  # float64 copes
    np.testing.assert_allclose(out, 1.0)


def test_config_validation_messages():
    with pytest.raises(InvalidConfig, match=r"'num_heads' must divide hidden_dim=128; got 3\. Try 1, 2, 4, 8 or 16\."):
        MultiHeadAttention(128, 3)
    with pytest.raises(InvalidConfig, match=r"'num_heads' must be an integer in \[1, 16\]; got 0"):
        MultiHeadAttention(128, 0)
    with pytest.raises(InvalidConfig, match=r"'num_heads' must be an integer in \[1, 16\]; got 32"):
        MultiHeadAttention(128, 32)
    with pytest.raises(InvalidConfig, match=r"'dim' must be a positive integer \(at most 65536\); got 0"):
        ScaledDotProductAttention(0)
    msg = r"^ScaledDotProductAttention: 'temperature' must be a number in \(0, inf\); got 0\.$"
    with pytest.raises(InvalidConfig, match=msg):
        ScaledDotProductAttention(8, temperature=0)
    with pytest.raises(InvalidConfig, match=r"'dropout' must be a number in \[0, 1\); got 1.0"):
        ScaledDotProductAttention(8, dropout=1.0)
    block = r"'block_size' must be a positive integer \(at most 2\*\*31 - 1\); got -1\. Try 64 or 128\."
    with pytest.raises(InvalidConfig, match=block):
        FlashAttention(8, block_size=-1)
    assert issubclass(InvalidConfig, ValueError)


def test_registry_params_and_json_round_trip():
    core = {"flash", "multi_head", "scaled_dot_product", "hyperbolic", "manifold", "mixed_curvature"}
    assert core <= set(ruvattn.available())
    for mech in (
        ScaledDotProductAttention(8, temperature=0.5),
        MultiHeadAttention(8, 2, seed=5),
        FlashAttention(8, 16),
        ruvattn.HyperbolicAttention(8, curvature=-0.5, temperature=2.0, aggregation="midpoint"),
        ruvattn.ManifoldAttention(8, "sphere", curvature=2.0),
        ruvattn.MixedCurvatureAttention(8, components=[("sphere", 2, 1.0), ("poincare", 6, -2.0)]),
    ):
        spec = json.loads(json.dumps(mech.to_dict()))
        again = ruvattn.build(spec)
        assert type(again) is type(mech) and again.to_dict() == mech.to_dict()
        x = mech.embed(0.3 * RNG.standard_normal((5, 8))).astype(np.float32)  # valid points of its space
        np.testing.assert_array_equal(again.forward(x[0], x, x), mech.forward(x[0], x, x))
    m = MultiHeadAttention(8, 2)
    m.set_params(num_heads=4)
    assert m.num_heads == 4 and m.weights(np.ones(8), np.ones((3, 8))).shape == (4, 3)
    with pytest.raises(InvalidConfig, match="num_heads' must divide hidden_dim=8; got 3"):
        m.set_params(num_heads=3)
    assert m.num_heads == 4  # a failed set_params changes nothing
    with pytest.raises(InvalidConfig, match="unknown mechanism type 'nope'"):
        ruvattn.build({"type": "nope"})
    specs = [{"type": k, "dim": 8} for k in ("scaled_dot_product", "hyperbolic", "mixed_curvature")]
    for spec in [*specs, {"type": "gat", "in_channels": 8, "out_channels": 2}]:
        with pytest.raises(InvalidConfig, match=r"got an unexpected keyword argument 'colour'\. Parameters: "):
            ruvattn.build({**spec, "colour": "red"})
    with pytest.raises(InvalidConfig, match="missing a required argument: 'dim'"):
        ruvattn.build({"type": "multi_head", "num_heads": 2})
    with pytest.raises(InvalidConfig, match="unknown parameter"):
        m.set_params(heads=2)
    assert ScaledDotProductAttention(8).supports_variable_length and "O(n" in FlashAttention(8).complexity


def test_threads_context_manager_restores():
    import numba

    before = numba.get_num_threads()
    with ruvattn.threads(1) as n:
        assert n == 1 and numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(InvalidConfig):
        with ruvattn.threads(0):
            pass


def test_backward_matches_finite_differences_with_mask_and_temperature():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((3, 6))
    k = rng.standard_normal((8, 6))
    v = rng.standard_normal((8, 4))
    g = rng.standard_normal((3, 4))
    mask = rng.random((3, 8)) > 0.3
    mask[:, 0] = True
    attn = ScaledDotProductAttention(6, temperature=0.7)

    def loss(q_, k_, v_):
        return float(np.sum(attn.forward_batch(q_, k_, v_, mask=mask) * g))

    grads = attn.backward(q, k, v, g, mask=mask)
    eps = 1e-6
    for name, arr, got in (("q", q, grads.query), ("k", k, grads.keys), ("v", v, grads.values)):
        num = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += eps
            minus[idx] -= eps
            args = {"q": (q, k, v), "k": (q, k, v), "v": (q, k, v)}[name]
            a_p = [plus if x is arr else x for x in args]
            a_m = [minus if x is arr else x for x in args]
            num[idx] = (loss(*a_p) - loss(*a_m)) / (2 * eps)
        np.testing.assert_allclose(got, num, rtol=1e-5, atol=1e-7, err_msg=name)
    with pytest.raises(DimensionMismatch, match=r"grad_output has shape \(4,\), expected \(3, 4\)"):
        attn.backward(q, k, v, np.ones(4))
    with pytest.raises(Unsupported, match=r"call \.eval"):
        ScaledDotProductAttention(6, dropout=0.1).train().backward(q, k, v, g)


def test_mha_parameter_changes_take_effect_immediately():
    mha = MultiHeadAttention(8, 2, seed=1)
    x = RNG.standard_normal((5, 8)).astype(np.float32)
    before = mha.forward(x[0], x, x)
    mha.out_proj_bias_ += 1.0  # in place
    np.testing.assert_allclose(mha.forward(x[0], x, x), before + 1.0, atol=1e-6)
    mha.out_proj_bias_ = np.zeros(8, np.float32)  # reassigned
    np.testing.assert_allclose(mha.forward(x[0], x, x), before, atol=1e-6)
    f64 = mha.forward(x[0].astype(np.float64), x.astype(np.float64), x.astype(np.float64))
    mha.in_proj_weight_[:] *= 0  # every score equal: the output is the mean projected value, then out_proj
    out = mha.forward(x[0].astype(np.float64), x.astype(np.float64), x.astype(np.float64))
    assert not np.allclose(out, f64)
    np.testing.assert_allclose(out, mha.out_proj_bias_ + mha.out_proj_weight_ @ np.zeros(8), atol=1e-12)
