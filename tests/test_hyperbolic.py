"""Hyperbolic attention: golden hyp_attn_* cases, the numpy reference, batch forms, the ball property."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ruvattn import EmptyInput, HyperbolicAttention, InvalidConfig, NumericalInstability, build
from ruvattn.errors import DimensionMismatch, OutOfBounds
from ruvattn.geometry import PROJECT_EPS, PoincareBall
from ruvattn.reference import hyperbolic as R
from tests.golden_harness import GOLDEN_DIR, assert_close, cases, load

HYP = cases(("hyp_attn_",))


def test_corpus_is_present():
    if "RUVATTN_GOLDEN_DIR" not in os.environ:
        assert len(HYP) >= 4, f"hyp_attn_* cases missing in {GOLDEN_DIR}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", HYP, ids=[p.stem for p in HYP])
def test_hyperbolic_golden(path, dtype):
    case = load(path)
    q, k, v = (case["inputs"][n].astype(dtype) for n in ("q", "k", "v"))
    c = float(np.float32(case["params"]["c"]))
    tau = float(np.float32(case["params"]["tau"]))
    attn = HyperbolicAttention(q.shape[0], curvature=-c, temperature=tau)
    out = attn.forward(q, k, v)
    assert out.dtype == dtype
    assert_close(case, "output", out)
    w = attn.attention_weights(q, k)
    assert_close(case, "weights", w)
    assert_close(case, "dist", attn.distances(q, k))
    assert_close(case, "tangent_mean", w.astype(np.float64) @ PoincareBall(-c).logmap0(v.astype(np.float64)))
    # the batch and neighbour forms give the same numbers
    assert_close(case, "output", attn.forward_batch(q[None], k, v)[0])
    assert_close(case, "output", attn.forward_neighbours(q[None], k, v, [list(range(k.shape[0]))])[0])
    assert_close(case, "weights", attn.weights(q[None], k)[0][0])


def _ball_points(rng, n, d, c, radius=0.95):
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * rng.uniform(0, radius, (n, 1)) / np.sqrt(c)


@pytest.mark.parametrize("aggregation", ["tangent", "midpoint"])
@pytest.mark.parametrize("c,tau", [(1.0, 1.0), (0.3, 0.5), (2.5, 3.0)])
def test_matches_reference(aggregation, c, tau):
    rng = np.random.default_rng(int(c * 10))
    q, k, v = _ball_points(rng, 1, 12, c)[0], _ball_points(rng, 40, 12, c), _ball_points(rng, 40, 9, c)
    attn = HyperbolicAttention(12, curvature=-c, temperature=tau, aggregation=aggregation)
    out = attn.forward(q, k, v)
    ref, w = R.hyperbolic_attention(q, k, v, c, tau, aggregation)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(attn.attention_weights(q, k), w, rtol=1e-10, atol=1e-15)
    if aggregation == "midpoint":  # the Einstein midpoint is Ungar's Möbius gyromidpoint
        np.testing.assert_allclose(out, R.gyromidpoint(v, w, c), rtol=1e-9, atol=1e-13)
    # float32 inputs: within float32 rounding of the float64 result
    out32 = attn.forward(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32))
    np.testing.assert_allclose(out32, ref, rtol=2e-5, atol=2e-6)


def test_midpoint_of_one_point_and_symmetric_pair():
    attn = HyperbolicAttention(2, aggregation="midpoint")
    p = np.array([0.3, -0.5])
    np.testing.assert_allclose(attn.forward(np.zeros(2), p[None], p[None]), p, rtol=1e-12)
    # equal weights on x and -x: the midpoint is the origin in both aggregations
    for agg in ("midpoint", "tangent"):
        a = HyperbolicAttention(2, aggregation=agg)
        out = a.forward(np.zeros(2), np.array([[0.5, 0.0], [-0.5, 0.0]]), np.array([p, -p]))
        np.testing.assert_allclose(out, 0, atol=1e-15)


def test_batch_neighbours_mask_ids():
    rng = np.random.default_rng(1)
    table = _ball_points(rng, 60, 8, 1.0).astype(np.float32)
    qs = _ball_points(rng, 10, 8, 1.0).astype(np.float32)
    attn = HyperbolicAttention(8, temperature=0.5)
    batch = attn.forward_batch(qs, table, table)
    for i in range(10):
        np.testing.assert_array_equal(batch[i], attn.forward(qs[i], table, table))
    # neighbour lists (ragged, one empty) equal ids= on the table and the gathered rows
    lists = [list(rng.choice(60, size=rng.integers(1, 12), replace=False)) for _ in range(10)]
    lists[3] = []
    out = attn.forward_neighbours(qs, table, table, lists)
    flat_w = attn.neighbour_weights(qs, table, lists)
    pos = 0
    for i, ids in enumerate(lists):
        if not ids:
            np.testing.assert_array_equal(out[i], 0)
            continue
        np.testing.assert_array_equal(out[i], attn.forward(qs[i], table, table, ids=ids))
        np.testing.assert_allclose(out[i], attn.forward(qs[i], table[ids], table[ids]), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(flat_w[pos : pos + len(ids)], attn.attention_weights(qs[i], table[ids]), rtol=1e-6)
        pos += len(ids)
    # a mask equals dropping the masked keys; masked keys get weight exactly 0
    mask = rng.random(60) < 0.5
    w = attn.attention_weights(qs[0], table, mask=mask)
    assert np.all(w[~mask] == 0)
    np.testing.assert_allclose(w[mask], attn.attention_weights(qs[0], table[mask]), rtol=1e-6)
    np.testing.assert_allclose(
        attn.forward(qs[0], table, table, mask=mask), attn.forward(qs[0], table[mask], table[mask]), rtol=1e-6
    )
    m2 = rng.random((10, 60)) < 0.5
    bm = attn.forward_batch(qs, table, table, mask=m2)
    np.testing.assert_array_equal(bm[4], attn.forward(qs[4], table, table, mask=m2[4]))


def test_projections_are_mobius_linear_maps():
    rng = np.random.default_rng(2)
    attn = HyperbolicAttention(6, curvature=-0.7, projections=True, seed=3)
    attn.bk_ = _ball_points(rng, 1, 6, 0.7, 0.3)[0].astype(np.float32)
    q, k = _ball_points(rng, 1, 6, 0.7)[0], _ball_points(rng, 15, 6, 0.7)
    ball = PoincareBall(-0.7)
    qp = ball.mobius_matvec(attn.wq_.astype(np.float64), q)
    kp = ball.mobius_add(ball.mobius_matvec(attn.wk_.astype(np.float64), k), attn.bk_.astype(np.float64))
    vp = ball.mobius_matvec(attn.wv_.astype(np.float64), k)
    plain = HyperbolicAttention(6, curvature=-0.7)
    np.testing.assert_allclose(attn.forward(q, k, k), plain.forward(qp, kp, vp), rtol=1e-12)
    with pytest.raises(DimensionMismatch, match="projections"):
        attn.forward(q, k, k[:, :4])


@settings(max_examples=80, deadline=None)
@given(
    q=hnp.arrays(np.float64, 4, elements=st.floats(-1e3, 1e3)),
    k=hnp.arrays(np.float64, (5, 4), elements=st.floats(-1e3, 1e3)),
    v=hnp.arrays(np.float64, (5, 4), elements=st.floats(-1e3, 1e3)),
    c=st.sampled_from([0.1, 1.0, 7.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    aggregation=st.sampled_from(["tangent", "midpoint"]),
)
def test_output_always_strictly_inside_the_ball(q, k, v, c, dtype, aggregation):
    """Any finite query/keys/values -- inside, on or far outside the ball -- give a finite output
    strictly inside it, at most (1 - eps)/sqrt(c) with eps = 4e-3 (float32) or 1e-5 (float64)."""
    attn = HyperbolicAttention(4, curvature=-c, aggregation=aggregation)
    out = attn.forward(q.astype(dtype), k.astype(dtype), v.astype(dtype))
    assert out.dtype == dtype and np.isfinite(out).all()
    r = np.linalg.norm(out.astype(np.float64)) * np.sqrt(c)
    assert r < 1.0
    assert r <= 1 - PROJECT_EPS[np.dtype(dtype)] + 1e-6
    w = attn.attention_weights(q.astype(dtype), k.astype(dtype))
    assert np.isfinite(w).all() and abs(w.sum() - 1) < 1e-5


def test_boundary_inputs_are_pulled_in_not_nan():
    attn = HyperbolicAttention(2)
    k = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]], np.float32)  # on and outside the unit ball
    out = attn.forward(np.array([1.0, 0.0], np.float32), k, k)
    assert np.isfinite(out).all() and np.linalg.norm(out) < 1
    # the key equal to the (projected) query is nearest and dominates
    w = attn.attention_weights(np.array([1.0, 0.0], np.float32), k)
    assert w.argmax() == 0


def test_validation_messages():
    with pytest.raises(InvalidConfig, match=r"curvature.*negative"):
        HyperbolicAttention(8, curvature=1.0)
    with pytest.raises(InvalidConfig, match="curvature"):
        HyperbolicAttention(8, curvature=0.0)
    with pytest.raises(InvalidConfig, match="temperature"):
        HyperbolicAttention(8, temperature=0.0)
    with pytest.raises(InvalidConfig, match="temperature"):
        HyperbolicAttention(8, temperature=-1.0)
    with pytest.raises(InvalidConfig, match="aggregation"):
        HyperbolicAttention(8, aggregation="einstein-ish")
    with pytest.raises(InvalidConfig, match="dim"):
        HyperbolicAttention(0)
    attn = HyperbolicAttention(3)
    with pytest.raises(EmptyInput):
        attn.forward(np.zeros(3), np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(EmptyInput):
        attn.forward(np.zeros(3), np.zeros((2, 3)), np.zeros((2, 3)), mask=[False, False])
    with pytest.raises(NumericalInstability, match="keys"):
        attn.forward(np.zeros(3), np.array([[np.nan, 0, 0]]), np.zeros((1, 3)))
    with pytest.raises(NumericalInstability, match=r"keys\[1, 2\]"):
        attn.forward_batch(np.zeros((2, 3)), np.array([[0, 0, 0], [0, 0, np.inf]]), np.zeros((2, 3)))
    with pytest.raises(NumericalInstability, match="values"):
        attn.forward(np.zeros(3), np.zeros((2, 3)), np.array([[0.1, 0, 0], [np.nan, 0, 0]]))
    with pytest.raises(NumericalInstability, match="query"):
        attn.attention_weights(np.array([0, np.nan, 0]), np.zeros((2, 3)))
    with pytest.raises(DimensionMismatch, match="keys"):
        attn.forward(np.zeros(3), np.zeros((2, 4)), np.zeros((2, 3)))
    with pytest.raises(DimensionMismatch):
        attn.forward(np.zeros(3), np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(OutOfBounds):
        attn.forward(np.zeros(3), np.zeros((2, 3)), np.zeros((2, 3)), ids=[0, 5])
    # the spec's negative-curvature convention round-trips through build()
    b = build({"type": "hyperbolic", "dim": 3, "curvature": -0.5, "temperature": 2.0})
    assert isinstance(b, HyperbolicAttention) and b.c == 0.5 and b.to_dict()["curvature"] == -0.5
