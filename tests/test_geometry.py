"""Poincaré / sphere / Lorentz geometry: golden geoopt cases, the numpy reference, identities."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruvattn import InvalidConfig, NumericalInstability
from ruvattn.errors import DimensionMismatch
from ruvattn.geometry import PROJECT_EPS, Euclidean, Lorentz, PoincareBall, Sphere, get_manifold
from ruvattn.reference import hyperbolic as R
from tests.golden_harness import GOLDEN_DIR, assert_close, cases, load

POINCARE = cases(("poincare_",))
OPS = ("mobius_add", "dist", "expmap0", "logmap0", "expmap", "logmap", "mobius_matvec")


def test_corpus_is_present():
    if "RUVATTN_GOLDEN_DIR" not in os.environ:
        assert len(POINCARE) >= 25, f"poincare_* cases missing in {GOLDEN_DIR}"


def _run(ball: PoincareBall, op: str, inp: dict, weights: dict, project: bool) -> np.ndarray:
    if op == "mobius_add":
        return ball.mobius_add(inp["x"], inp["y"], project=project)
    if op in ("dist", "dist_arccosh"):
        return ball.dist(inp["x"], inp["y"])
    if op == "expmap0":
        return ball.expmap0(inp["u"], project=project)
    if op == "logmap0":
        return ball.logmap0(inp["y"])
    if op == "expmap":
        return ball.expmap(inp["x"], inp["u"], project=project)
    if op == "logmap":
        return ball.logmap(inp["x"], inp["y"])
    if op == "mobius_matvec":
        return ball.mobius_matvec(weights["M"], inp["x"], project=project)
    raise AssertionError(op)


def _check_op(case: dict, ball: PoincareBall, op: str, prefix: str = "") -> None:
    inp = {k[len(prefix) :]: v for k, v in case["inputs"].items() if k.startswith(prefix)}
    weights = {k[len(prefix) :]: v for k, v in case["weights"].items() if k.startswith(prefix)}
    for name in case["expected"]:
        if not name.startswith(prefix):
            continue
        short = name[len(prefix) :]
        if short == "projected_eps4e-3":
            got = ball.proj(inp["x"], eps=4e-3)
        elif short == "projected_eps1e-5":
            got = ball.proj(inp["x"], eps=1e-5)
        else:
            got = _run(ball, op, inp, weights, project=short.endswith("projected_eps4e-3"))
        for value in (got,) if short.startswith("projected") else (got, _as_f64(ball, op, inp, weights, short)):
            assert value.dtype in (np.float32, np.float64)
            assert_close(case, name, value)


def _as_f64(ball, op, inp, weights, short):
    """The same op on float64 copies of the float32 inputs (what a float64 user gets)."""
    inp64 = {k: v.astype(np.float64) for k, v in inp.items()}
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    out = _run(ball, op, inp64, w64, project=False)
    assert out.dtype == np.float64
    if short.endswith("projected_eps4e-3"):
        out = ball.proj(out, eps=4e-3)
    return out


@pytest.mark.parametrize("path", POINCARE, ids=[p.stem for p in POINCARE])
def test_poincare_golden(path):
    case = load(path)
    c = float(np.float32(case["params"]["c"]))
    ball = PoincareBall(-c)
    kind = case["kind"]
    if kind == "poincare_boundary":
        for op in OPS:
            _check_op(case, ball, op, prefix=f"{op}.")
    else:
        _check_op(case, ball, kind.removeprefix("poincare_"))
    # float32 in, float32 out
    x = next(iter(case["inputs"].values()))
    assert ball.proj(x).dtype == np.float32


# -- against the independent numpy reference, float64, random interior points --------------


def _points(rng, n, d, k, radius=0.9):
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    r = rng.uniform(0, radius, (n, 1))
    return x * r / np.sqrt(abs(k))


@pytest.mark.parametrize("k", [-0.5, -1.0, -2.0, 0.5, 1.0, 3.0])
def test_ops_match_reference(k):
    rng = np.random.default_rng(int(abs(k) * 10))
    m = PoincareBall(k) if k < 0 else Sphere(k)
    x, y = _points(rng, 50, 6, k), _points(rng, 50, 6, k)
    u = rng.standard_normal((50, 6)) * 0.7
    mat = rng.standard_normal((4, 6)) * 0.5
    np.testing.assert_allclose(m.mobius_add(x, y, project=False), R.mobius_add(x, y, k), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(m.dist(x, y), R.dist(x, y, k), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.expmap0(u, project=False), R.expmap0(u, k), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(m.logmap0(y), R.logmap0(y, k), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(m.expmap(x, u, project=False), R.expmap(x, u, k), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.logmap(x, y), R.logmap(x, y, k), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        m.mobius_matvec(mat, x, project=False), R.mobius_matvec(mat, x, k), rtol=1e-9, atol=1e-13
    )
    np.testing.assert_allclose(m.conformal_factor(x), R.conformal_factor(x, k), rtol=1e-12)
    if k < 0:
        np.testing.assert_allclose(m.dist(x, y), R.dist_arccosh(x, y, -k), rtol=1e-8)


def test_identities_on_the_ball():
    rng = np.random.default_rng(3)
    ball = PoincareBall(-1.5)
    x, y = _points(rng, 40, 5, -1.5), _points(rng, 40, 5, -1.5)
    # exp/log are inverse at any point, and at 0 they agree with expmap0/logmap0
    np.testing.assert_allclose(ball.expmap(x, ball.logmap(x, y), project=False), y, atol=1e-10)
    np.testing.assert_allclose(ball.logmap(np.zeros(5), y), ball.logmap0(y), atol=1e-13)
    # |logmap_x(y)|_x = λ_x |logmap_x(y)| equals the distance
    lam = ball.conformal_factor(x)
    np.testing.assert_allclose(lam * np.linalg.norm(ball.logmap(x, y), axis=1), ball.dist(x, y), rtol=1e-9)
    # left cancellation (-x) ⊕ (x ⊕ y) = y; Möbius translation is an isometry
    np.testing.assert_allclose(ball.mobius_add(-x, ball.mobius_add(x, y, project=False), project=False), y, atol=1e-10)
    a = _points(rng, 1, 5, -1.5)[0]
    np.testing.assert_allclose(
        ball.dist(ball.mobius_add(a, x, project=False), ball.mobius_add(a, y, project=False)),
        ball.dist(x, y),
        rtol=1e-8,
    )
    # M ⊗ x with M = r·I is the Möbius scalar multiplication: d(0, r ⊗ x) = r d(0, x)
    mv = ball.mobius_matvec(0.5 * np.eye(5), x, project=False)
    np.testing.assert_allclose(ball.dist(np.zeros(5), mv), 0.5 * ball.dist(np.zeros(5), x), rtol=1e-9)


def test_close_points_and_boundary_are_well_conditioned():
    ball = PoincareBall(-1.0)
    x = np.array([0.3, 0.4, 0.0])
    y = x + np.array([1e-9, 0.0, 0.0])
    # d ≈ λ_x |x - y| for close points: the arccosh form would return 0 or noise here
    np.testing.assert_allclose(ball.dist(x, y), 2 / (1 - 0.25) * 1e-9, rtol=1e-6)
    # float32 points at radius 1 - 1e-7 (on the boundary in float32): finite, no NaN
    b = np.array([1.0, 0.0, 0.0], np.float32)
    assert np.isfinite(ball.dist(b, np.zeros(3, np.float32)))
    assert np.isfinite(ball.logmap0(b)).all()
    # an expmap0 that lands on the boundary in float32 is projected to radius 1 - 4e-3 by default
    far = ball.expmap0(np.array([20.0, 0, 0], np.float32))
    assert np.linalg.norm(far.astype(np.float64)) <= (1 - PROJECT_EPS[np.dtype(np.float32)]) + 1e-7
    assert ball.expmap0(np.array([20.0, 0, 0]), project=False)[0] == pytest.approx(1.0)


def test_ruvector_exp0_bug_is_not_ours():
    """exp_0(0.5) on the unit ball is tanh(0.5) = 0.462 (the incumbent npm package returns 0.245)."""
    assert PoincareBall(-1.0).expmap0(np.array([0.5]))[0] == pytest.approx(np.tanh(0.5), rel=1e-15)


def test_sphere():
    s = Sphere(1.0)
    # stereographic: 0 and a point at radius 1 are a quarter great circle apart; antipode of 0 is at infinity
    assert s.dist(np.zeros(2), np.array([1.0, 0.0])) == pytest.approx(np.pi / 2, rel=1e-14)
    assert s.dist(np.zeros(2), np.array([1e8, 0.0])) == pytest.approx(np.pi, rel=1e-7)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((30, 4)), rng.standard_normal((30, 4))
    d = s.dist(x, y)
    assert np.all(d <= np.pi + 1e-12)
    np.testing.assert_allclose(s.expmap(x, s.logmap(x, y), project=False), y, rtol=1e-8, atol=1e-9)

    # the chordal form: a 3-D embedding by inverse stereographic projection gives the same angle
    def embed(p):
        p2 = np.sum(p * p, 1, keepdims=True)
        return np.concatenate([2 * p, 1 - p2], 1) / (1 + p2)

    cos = np.sum(embed(x) * embed(y), 1)
    np.testing.assert_allclose(d, np.arccos(np.clip(cos, -1, 1)), rtol=1e-6, atol=1e-7)


def test_lorentz():
    c = 2.0
    lor = Lorentz(-c)
    ball = PoincareBall(-c)
    rng = np.random.default_rng(6)
    p, q = _points(rng, 30, 4, -c), _points(rng, 30, 4, -c)
    x, y = lor.from_poincare(p), lor.from_poincare(q)
    assert x.shape == (30, 5)
    np.testing.assert_allclose(R.lorentz_inner(x, x), -1 / c, rtol=1e-12)  # on the hyperboloid
    np.testing.assert_allclose(lor.to_poincare(x), p, atol=1e-14)
    np.testing.assert_allclose(lor.dist(x, y), ball.dist(p, q), rtol=1e-9)  # an isometry
    np.testing.assert_allclose(lor.dist(x, y), R.lorentz_dist(x, y, c), rtol=1e-8)
    u = lor.logmap(x, y)
    np.testing.assert_allclose(R.lorentz_inner(x, u), 0, atol=1e-11)  # tangent at x
    np.testing.assert_allclose(u, R.lorentz_logmap(x, y, c), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(lor.expmap(x, u), y, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(lor.expmap(x, u), R.lorentz_expmap(x, u, c), rtol=1e-10)
    # the tangent spaces at the origin correspond with a factor 2 (λ_0 = 2 on the ball)
    np.testing.assert_allclose(lor.logmap0(x)[:, 1:], 2 * ball.logmap0(p), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(lor.logmap0(x)[:, 0], 0, atol=1e-12)
    np.testing.assert_allclose(lor.proj(np.c_[np.zeros(30), x[:, 1:]]), x, rtol=1e-12)
    np.testing.assert_allclose(ball.to_lorentz(p), x)


def _exp0(m, t):
    return m.expmap0(t, project=False) if isinstance(m, (PoincareBall, Sphere)) else m.expmap0(t)


def _fd_vjp(m, t, g, h=1e-6):
    out = np.zeros_like(t)
    for i in range(t.size):
        e = np.zeros_like(t)
        e[i] = h
        out[i] = (_exp0(m, t + e) @ g - _exp0(m, t - e) @ g) / (2 * h)
    return out


@pytest.mark.parametrize("m", [PoincareBall(-1.0), PoincareBall(-0.3), Sphere(2.0), Lorentz(-1.5), Euclidean()])
@pytest.mark.parametrize("scale", [1e-8, 0.3, 1.2])
def test_expmap0_vjp_matches_finite_differences(m, scale):
    rng = np.random.default_rng(7)
    t = rng.standard_normal(5) * scale
    if isinstance(m, Lorentz):
        t[0] = 0.0
    g = rng.standard_normal(5)
    got = m.expmap0_vjp(t, g)
    want = _fd_vjp(m, t, g)
    if isinstance(m, Lorentz):
        got, want = got[1:], want[1:]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_validation():
    with pytest.raises(InvalidConfig, match="negative"):
        PoincareBall(1.0)
    with pytest.raises(InvalidConfig, match="negative"):
        PoincareBall(0.0)
    with pytest.raises(InvalidConfig, match="positive"):
        Sphere(-1.0)
    with pytest.raises(InvalidConfig):
        Lorentz(0.5)
    with pytest.raises(InvalidConfig):
        Euclidean(1.0)
    with pytest.raises(InvalidConfig, match="unknown manifold"):
        get_manifold("torus")
    assert PoincareBall.from_c(2.0).curvature == -2.0 and PoincareBall(-2.0).c == 2.0
    assert get_manifold("poincare", -0.5) == PoincareBall(-0.5)
    ball = PoincareBall()
    with pytest.raises(NumericalInstability, match="x"):
        ball.dist([np.nan, 0.0], [0.0, 0.0])
    with pytest.raises(DimensionMismatch, match="same width"):
        ball.dist(np.zeros(3), np.zeros(4))
    with pytest.raises(DimensionMismatch, match="batch sizes"):
        ball.mobius_add(np.zeros((2, 3)), np.zeros((3, 3)))
    with pytest.raises(DimensionMismatch, match="M has shape"):
        ball.mobius_matvec(np.eye(3), np.zeros(4))
    # broadcasting one point against a batch
    pts = np.array([[0.1, 0.2], [0.3, -0.1]])
    np.testing.assert_allclose(ball.dist(np.array([0.0, 0.1]), pts), ball.dist(np.tile([0.0, 0.1], (2, 1)), pts))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=3),
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=3),
    st.sampled_from([-0.25, -1.0, -4.0]),
)
def test_any_finite_input_gives_finite_output(x, y, k):
    """Points anywhere (inside, on or far outside the ball) never produce NaN or inf."""
    ball = PoincareBall(k)
    for arr in (np.array(x), np.array(x, np.float32)):
        other = np.array(y, arr.dtype)
        for got in (
            ball.dist(arr, other),
            ball.mobius_add(arr, other),
            ball.logmap0(arr),
            ball.expmap0(arr),
            ball.logmap(arr, other),
            ball.expmap(ball.proj(arr), other),
            ball.mobius_matvec(np.eye(3), arr),
        ):
            assert np.isfinite(got).all()
        for got in (ball.mobius_add(arr, other), ball.expmap0(arr), ball.proj(arr)):
            assert np.linalg.norm(got.astype(np.float64)) < 1 / np.sqrt(-k)


def test_the_manifold_interface_is_abstract_and_the_gradient_optional():
    from ruvattn.errors import Unsupported
    from ruvattn.geometry import Manifold

    class NoDistance(Manifold):
        def proj(self, x):
            return np.asarray(x)

    with pytest.raises(TypeError, match="abstract"):
        NoDistance()

    class Plain(Euclidean):
        expmap0_vjp = Manifold.expmap0_vjp  # the base class's: not provided

    with pytest.raises(Unsupported, match="cannot be learned"):
        Plain().expmap0_vjp(np.zeros(2), np.ones(2))
    np.testing.assert_allclose(Plain().dist(np.zeros(2), np.array([3.0, 4.0])), 5.0)
