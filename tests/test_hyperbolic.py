"""Hyperbolic attention: golden hyp_attn_* cases, the numpy reference, batch forms, the ball property,
inputs on or outside the ball (OutOfBounds from every entry point, or project_inputs=True)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
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
    flat_w = attn.weights(qs, table, neighbours=lists)[0]
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
    """With project_inputs=True any finite query/keys/values -- inside, on or far outside the ball -- give
    a finite output strictly inside it, at most (1 - eps)/sqrt(c) with eps = 4e-3 (float32) or 1e-5
    (float64).  Without it, exactly the calls with a point on or outside the ball raise OutOfBounds."""
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    strict = HyperbolicAttention(4, curvature=-c, aggregation=aggregation)
    c2 = [c * np.sum(x.astype(np.float64) ** 2, -1) for x in (q, k, v)]
    assume(all(np.all(np.abs(x - 1) > 1e-12) for x in c2))  # no point on the boundary to rounding
    if any(np.any(x >= 1) for x in c2):
        with pytest.raises(OutOfBounds, match="Poincaré ball"):
            strict.forward(q, k, v)
    else:
        np.testing.assert_array_equal(strict.forward(q, k, v), HyperbolicAttention(
            4, curvature=-c, aggregation=aggregation, project_inputs=True).forward(q, k, v))  # fmt: skip
    attn = HyperbolicAttention(4, curvature=-c, aggregation=aggregation, project_inputs=True)
    out = attn.forward(q, k, v)
    assert out.dtype == dtype and np.isfinite(out).all()
    r = np.linalg.norm(out.astype(np.float64)) * np.sqrt(c)
    assert r < 1.0
    assert r <= 1 - PROJECT_EPS[np.dtype(dtype)] + 1e-6
    w = attn.attention_weights(q, k)
    assert np.isfinite(w).all() and abs(w.sum() - 1) < 1e-5


def test_boundary_inputs_are_pulled_in_on_request_not_nan():
    attn = HyperbolicAttention(2, project_inputs=True)
    k = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]], np.float32)  # on and outside the unit ball
    out = attn.forward(np.array([1.0, 0.0], np.float32), k, k)
    assert np.isfinite(out).all() and np.linalg.norm(out) < 1
    # the key equal to the (projected) query is nearest and dominates
    w = attn.attention_weights(np.array([1.0, 0.0], np.float32), k)
    assert w.argmax() == 0
    with pytest.raises(OutOfBounds, match=r"hyperbolic.forward: query has norm 1 >= 1/sqrt\(c\) = 1: it is on or "
                       r"outside the Poincaré ball. Map Euclidean data in with mech.embed\(x\) \(or ball.expmap0\), "
                       r"or pass project_inputs=True to pull such points inside."):  # fmt: skip
        HyperbolicAttention(2).forward(np.array([1.0, 0.0], np.float32), k, k)


# -- inputs on or outside the ball: OutOfBounds from every entry point, or project_inputs=True ----------

C = 4.0  # ball radius 1/sqrt(C) = 0.5: a point on the boundary is exact in float32 and float64
R_BALL = 1 / np.sqrt(C)


def _problem(dtype, rng_seed=7, n=9, m=4, d=5):
    rng = np.random.default_rng(rng_seed)
    return (_ball_points(rng, m, d, C, 0.9).astype(dtype), _ball_points(rng, n, d, C, 0.9).astype(dtype),
            _ball_points(rng, n, d, C, 0.9).astype(dtype))  # fmt: skip


def _put(x, row, radius):
    """``x`` with row ``row`` moved to ``radius`` times the ball radius (on the first axis: exact)."""
    x = x.copy()
    x[row] = 0
    x[row, 0] = radius * R_BALL
    return x


# (name, call(attn, queries, keys, values), the arguments it reads); queries (m, d), keys/values (n, d)
NEIGHBOURS = [[0, 3, 5], [], [8, 3], [1, 2, 4, 6, 7]]
QKV, QSKV = ("query", "keys", "values"), ("queries", "keys", "values")
ENTRY_POINTS = [
    ("forward", lambda a, qs, k, v: a.forward(qs[0], k, v), QKV),
    ("forward(mask)", lambda a, qs, k, v: a.forward(qs[0], k, v, mask=np.ones(len(k), bool)), QKV),
    ("forward(ids)", lambda a, qs, k, v: a.forward(qs[0], k, v, ids=np.arange(len(k))), QKV),
    ("forward(prepared)", lambda a, qs, k, v: a.forward(qs[0], a.prepare(k, v)), QKV),
    ("forward_batch", lambda a, qs, k, v: a.forward_batch(qs, k, v), QSKV),
    ("forward_batch(mask)", lambda a, qs, k, v: a.forward_batch(qs, k, v, mask=np.ones((len(qs), len(k)), bool)), QSKV),
    ("forward_neighbours", lambda a, qs, k, v: a.forward_neighbours(qs, k, v, NEIGHBOURS), QSKV),
    ("weights", lambda a, qs, k, v: a.weights(qs[0], k), QKV[:2]),
    ("attention_weights", lambda a, qs, k, v: a.attention_weights(qs[0], k), QKV[:2]),
    ("weights(batch)", lambda a, qs, k, v: a.weights(qs, k), QSKV[:2]),
    ("weights(neighbours)", lambda a, qs, k, v: a.weights(qs, k, neighbours=NEIGHBOURS), QSKV[:2]),
    ("distances", lambda a, qs, k, v: a.distances(qs[0], k), QKV[:2]),
]  # fmt: skip
ROW = {"query": 0, "queries": 3, "keys": 3, "values": 6}  # rows every entry point reads


@pytest.mark.parametrize("projections", [False, True], ids=["plain", "projections"])
@pytest.mark.parametrize("radius", [1.0, 1.7], ids=["on", "outside"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,call,reads", ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_every_entry_point_raises_out_of_bounds_naming_the_argument_and_row(
    name, call, reads, dtype, radius, projections
):
    attn = HyperbolicAttention(5, curvature=-C, projections=projections, seed=1)
    proj = HyperbolicAttention(5, curvature=-C, projections=projections, seed=1, project_inputs=True)
    qs, k, v = _problem(dtype)
    np.testing.assert_array_equal(call(attn, qs, k, v), call(proj, qs, k, v))  # valid inputs: the same answer
    op = name.split("(")[0]
    for arg in reads:
        arrays = {"queries": qs, "keys": k, "values": v}
        table = "queries" if arg == "query" else arg
        arrays[table] = _put(arrays[table], ROW[arg], radius)
        where = "query" if arg == "query" else rf"{arg}\[{ROW[arg]}\]"
        norm = "0.5" if radius == 1.0 else "0.85"
        with pytest.raises(OutOfBounds, match=rf"^hyperbolic\.{op}: {where} has norm {norm} >= 1/sqrt\(c\) = 0.5: "
                                              r"it is on or outside the Poincaré ball\. Map Euclidean"):  # fmt: skip
            call(attn, *arrays.values())
        # with project_inputs=True the same call runs and gives finite numbers
        assert np.isfinite(call(proj, *arrays.values())).all()


def test_exactly_on_the_boundary_raises_in_both_dtypes():
    """A point with c|x|² == 1 exactly (in float32 too) is rejected by the kernel's c*x2 >= 1."""
    attn = HyperbolicAttention(2, curvature=-4.0)  # radius 1/2, exact in binary
    k = np.array([[0.1, 0.0], [0.0, 0.5]])
    for dt in (np.float32, np.float64):
        with pytest.raises(OutOfBounds, match=r"keys\[1\] has norm 0.5 >= 1/sqrt\(c\) = 0.5"):
            attn.forward(np.zeros(2, dt), k.astype(dt), k.astype(dt))


@pytest.mark.parametrize("aggregation", ["tangent", "midpoint"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_project_inputs_gives_the_projected_answer(aggregation, dtype):
    """project_inputs=True pulls every point beyond (1 - 1e-5)/sqrt(c) to that radius: the reference with
    project_inputs=True, and the strict mechanism on explicitly projected inputs."""
    rng = np.random.default_rng(3)
    q = (1.3 * R_BALL * np.array([0.6, 0.0, 0.8])).astype(dtype)  # outside
    k = _ball_points(rng, 12, 3, C, 0.95)
    k[[2, 7]] *= 1.5 * R_BALL / np.linalg.norm(k[[2, 7]], axis=1, keepdims=True)  # outside
    k = _put(k, 4, 1.0)  # on the boundary
    v = _ball_points(rng, 12, 3, C, 0.95)
    v[5] *= 3 * R_BALL / np.linalg.norm(v[5])
    k, v = k.astype(dtype), v.astype(dtype)
    attn = HyperbolicAttention(3, curvature=-C, temperature=0.7, aggregation=aggregation, project_inputs=True)
    ref, w_ref = R.hyperbolic_attention(q, k, v, C, 0.7, aggregation, project_inputs=True)
    with pytest.raises(ValueError, match="outside the ball"):
        R.hyperbolic_attention(q, k, v, C, 0.7, aggregation)
    # 1e-5 from the boundary the reference's textbook forms lose digits (artanh(1 - δ) of a Möbius sum in
    # the distance, γ = 1/sqrt(1 - c|Klein point|²) in the midpoint); the kernel's forms do not, so the
    # tight comparison is the kernel against itself on explicitly projected points, below
    tol = dict(rtol=1e-6, atol=1e-12) if dtype == np.float64 else dict(rtol=3e-5, atol=3e-6)
    np.testing.assert_allclose(attn.forward(q, k, v), ref, **tol)
    np.testing.assert_allclose(attn.attention_weights(q, k), w_ref, **tol)
    np.testing.assert_allclose(attn.forward_batch(q[None], k, v)[0], ref, **tol)
    np.testing.assert_allclose(attn.forward_neighbours(q[None], k, v, [list(range(12))])[0], ref, **tol)
    np.testing.assert_allclose(attn.weights(q[None], k)[0, 0], w_ref, **tol)
    np.testing.assert_allclose(attn.weights(q[None], k, neighbours=[list(range(12))])[0], w_ref, **tol)
    ball = PoincareBall(-C)
    qp, kp = ball.proj(q.astype(np.float64), eps=1e-5), ball.proj(k.astype(np.float64), eps=1e-5)
    np.testing.assert_allclose(attn.distances(q, k), R.dist(np.broadcast_to(qp, kp.shape), kp, -C), **tol)
    # = the strict mechanism on the projected points (valid: strictly inside)
    strict = HyperbolicAttention(3, curvature=-C, temperature=0.7, aggregation=aggregation)
    vp = ball.proj(v.astype(np.float64), eps=1e-5)
    np.testing.assert_allclose(strict.forward(qp, kp, vp), attn.forward(qp, kp, vp), rtol=1e-15, atol=0)
    np.testing.assert_allclose(attn.forward(q, k, v), strict.forward(qp, kp, vp).astype(dtype), rtol=1e-6, atol=1e-7)
    with pytest.raises(OutOfBounds, match=r"query has norm 0\.65 "):
        strict.forward(q, k, v)


def test_points_strictly_inside_near_the_boundary_are_valid():
    """0.999/sqrt(c) (the golden boundary case) and (1 - 1e-7)/sqrt(c) -- inside, within INPUT_EPS of
    the boundary, where the kernel clamps to (1 - 1e-5)/sqrt(c) -- are valid inputs in every entry point."""
    for radius in (0.999, 1 - 1e-7):
        qs, k, v = _problem(np.float64)
        qs, k, v = _put(qs, 0, radius), _put(k, 3, radius), _put(v, 6, radius)
        strict = HyperbolicAttention(5, curvature=-C)
        proj = HyperbolicAttention(5, curvature=-C, project_inputs=True)
        for _, call, _ in ENTRY_POINTS:
            got = call(strict, qs, k, v)
            np.testing.assert_array_equal(got, call(proj, qs, k, v))
        ref, w = R.hyperbolic_attention(qs[0], k, v, C, 1.0, project_inputs=True)
        np.testing.assert_allclose(strict.forward(qs[0], k, v), ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(strict.attention_weights(qs[0], k), w, rtol=1e-9, atol=1e-15)
        if radius == 0.999:  # not clamped: the textbook formulas on the points as given
            np.testing.assert_allclose(strict.forward(qs[0], k, v), R.hyperbolic_attention(qs[0], k, v, C, 1.0)[0],
                                       rtol=1e-9, atol=1e-12)  # fmt: skip


def test_rows_a_call_does_not_read_are_not_checked():
    qs, k, v = _problem(np.float64)
    k, v = _put(k, 2, 2.0), _put(v, 2, 2.0)  # row 2 outside, in both tables
    attn = HyperbolicAttention(5, curvature=-C)
    keep = np.ones(len(k), bool)
    keep[2] = False
    ids = [0, 1, 3, 8]
    np.testing.assert_allclose(attn.forward(qs[0], k, v, mask=keep), attn.forward(qs[0], k[keep], v[keep]), rtol=1e-12)
    np.testing.assert_allclose(attn.forward(qs[0], k, v, ids=ids), attn.forward(qs[0], k[ids], v[ids]), rtol=1e-12)
    attn.forward_batch(qs, k, v, mask=keep)
    lists = [[0, 3, 5], [], [8, 3], [1, 4, 6, 7]]  # nobody lists row 2
    attn.forward_neighbours(qs, k, v, lists)
    attn.weights(qs, k, neighbours=lists)
    bad_q = _put(qs, 1, 2.0)
    attn.forward_neighbours(bad_q, k, v, lists)  # node 1 has no neighbours: its query is not read
    with pytest.raises(OutOfBounds, match=r"keys\[2\]"):
        attn.forward(qs[0], k, v, ids=[0, 2])
    with pytest.raises(OutOfBounds, match=r"keys\[2\]"):
        attn.forward_neighbours(qs, k, v, [[0], [2], [], []])
    with pytest.raises(OutOfBounds, match=r"queries\[1\]"):
        attn.forward_batch(bad_q, k, v, mask=keep)


def test_a_value_is_checked_even_when_its_weight_underflows():
    attn = HyperbolicAttention(2, temperature=1e-3)
    k = np.array([[0.0, 0.0], [0.0, 0.99]])
    v = np.array([[0.1, 0.0], [0.0, 1.5]])  # the far key's weight is exactly 0
    assert attn.attention_weights(np.zeros(2), k)[1] == 0
    with pytest.raises(OutOfBounds, match=r"values\[1\] has norm 1.5"):
        attn.forward(np.zeros(2), k, v)


def test_nan_and_inf_are_numerical_instability_not_out_of_bounds():
    attn = HyperbolicAttention(3)
    k = np.array([[0.1, 0, 0], [2.0, 0, 0], [0.2, 0, 0]])
    with pytest.raises(NumericalInstability, match="query"):
        attn.forward(np.array([np.inf, 0, 0]), k[[0, 2]], k[[0, 2]])
    with pytest.raises(NumericalInstability, match="keys"):
        attn.forward(np.zeros(3), np.array([[0.1, 0, 0], [np.inf, 0, 0]]), k[:2])
    with pytest.raises(NumericalInstability, match=r"queries\[1, 0\]"):  # one row NaN, another outside
        attn.forward_batch(np.array([[0.1, 0, 0], [np.nan, 0, 0], [0.0, 0, 0]]), k, k)
    with pytest.raises(NumericalInstability, match="keys"):
        attn.distances(np.zeros(3), np.array([[np.nan, 0, 0]]))


def test_projections_check_the_inputs_as_passed():
    """With projections=True the check applies to the caller's points (the maps are defined on the ball);
    project_inputs=True pulls them in before the maps."""
    attn = HyperbolicAttention(4, curvature=-C, projections=True, seed=2)
    rng = np.random.default_rng(5)
    q, k = _ball_points(rng, 1, 4, C, 0.9)[0], _ball_points(rng, 6, 4, C, 0.9)
    k_out = _put(k, 4, 1.2)
    with pytest.raises(OutOfBounds, match=r"hyperbolic.forward: keys\[4\]"):
        attn.forward(q, k_out, k)
    with pytest.raises(OutOfBounds, match=r"hyperbolic.forward: values\[4\]"):
        attn.forward(q, k, k_out)
    with pytest.raises(OutOfBounds, match=r"hyperbolic.distances: keys\[4\]"):
        attn.distances(q, k_out)
    proj = HyperbolicAttention(4, curvature=-C, projections=True, seed=2, project_inputs=True)
    kp = PoincareBall(-C).proj(k_out, eps=1e-5)
    np.testing.assert_allclose(proj.forward(q, k_out, k_out), attn.forward(q, kp, kp), rtol=1e-12)
    np.testing.assert_allclose(proj.distances(q, k_out), attn.distances(q, kp), rtol=1e-12)


def test_project_inputs_round_trips_through_set_params_and_build():
    attn = HyperbolicAttention(2)
    assert attn.project_inputs is False and attn.get_params()["project_inputs"] is False
    k = np.array([[0.1, 0.0], [2.0, 0.0]])
    with pytest.raises(OutOfBounds):
        attn.forward(np.zeros(2), k, k)
    attn.set_params(project_inputs=True)
    assert attn.project_inputs is True and attn.to_dict()["project_inputs"] is True
    out = attn.forward(np.zeros(2), k, k)
    again = build(attn.to_dict())
    assert isinstance(again, HyperbolicAttention) and again.project_inputs is True
    np.testing.assert_array_equal(again.forward(np.zeros(2), k, k), out)
    attn.project_inputs = False
    assert attn.get_params()["project_inputs"] is False
    with pytest.raises(OutOfBounds):
        attn.forward(np.zeros(2), k, k)
    with pytest.raises(InvalidConfig, match="project_inputs"):
        attn.set_params(project_inputs="yes")
    assert "project_inputs" in (HyperbolicAttention.__doc__ or "")


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


def test_projection_state_round_trips_through_the_base_protocol(tmp_path):
    """With projections the Möbius-linear maps are learned state: state_dict / load_state_dict / safetensors
    round-trip them, and a bad load changes nothing (the contract's state check, on this variant)."""
    rng = np.random.default_rng(4)
    ball = PoincareBall(-1.0)
    pts = ball.expmap0(0.3 * rng.standard_normal((6, 8)))
    src = HyperbolicAttention(8, projections=True, seed=1)
    state = src.state_dict()
    assert set(state) == {"wq", "wk", "wv", "bq", "bk", "bv"}
    dst = HyperbolicAttention(8, projections=True, seed=2)
    assert not np.allclose(dst.forward(pts[0], pts, pts), src.forward(pts[0], pts, pts))
    dst.load_state_dict(state)
    np.testing.assert_array_equal(dst.forward(pts[0], pts, pts), src.forward(pts[0], pts, pts))
    path = tmp_path / "hyp.safetensors"
    src.save_safetensors(path, prefix="layer")
    third = HyperbolicAttention(8, projections=True, seed=3).load_safetensors(path)
    np.testing.assert_array_equal(third.forward(pts[0], pts, pts), src.forward(pts[0], pts, pts))
    before = dst.forward(pts[0], pts, pts)
    with pytest.raises(DimensionMismatch, match="wq has shape"):
        dst.load_state_dict({**state, "wq": np.zeros((8, 9))})
    np.testing.assert_array_equal(dst.forward(pts[0], pts, pts), before)
    assert HyperbolicAttention(8).state_dict() == {}  # no projections: no state
