"""Manifold-aware and mixed-curvature attention against hand-written references and each other."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ruvattn import EmptyInput, HyperbolicAttention, InvalidConfig, ManifoldAttention, MixedCurvatureAttention, build
from ruvattn.errors import DimensionMismatch
from ruvattn.geometry import Euclidean, Lorentz, PoincareBall, Sphere, register_manifold
from ruvattn.geometry.manifolds import _MANIFOLDS
from ruvattn.reference import hyperbolic as R


def _ball(rng, n, d, c=1.0, radius=0.9):
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * rng.uniform(0, radius, (n, 1)) / np.sqrt(c)


def _softmax(s):
    e = np.exp(s - s.max())
    return e / e.sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_poincare_equals_the_fused_hyperbolic_kernel(dtype):
    rng = np.random.default_rng(0)
    q, k, v = (_ball(rng, n, 6, 0.5).astype(dtype) for n in (1, 30, 30))
    gen = ManifoldAttention(6, "poincare", curvature=-0.5, temperature=0.7)
    fused = HyperbolicAttention(6, curvature=-0.5, temperature=0.7)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(gen.forward(q[0], k, v), fused.forward(q[0], k, v), rtol=tol, atol=tol)
    np.testing.assert_allclose(gen.attention_weights(q[0], k), fused.attention_weights(q[0], k), rtol=tol, atol=tol)
    np.testing.assert_allclose(gen.forward_batch(k[:4], k, v), fused.forward_batch(k[:4], k, v), rtol=tol, atol=tol)


def test_lorentz_is_the_same_attention_through_the_isometry():
    rng = np.random.default_rng(1)
    c = 1.7
    q, k, v = _ball(rng, 1, 4, c)[0], _ball(rng, 25, 4, c), _ball(rng, 25, 4, c)
    lor = Lorentz(-c)
    on_ball = ManifoldAttention(4, PoincareBall(-c)).forward(q, k, v)
    on_hyperboloid = ManifoldAttention(5, "lorentz", curvature=-c).forward(
        lor.from_poincare(q), lor.from_poincare(k), lor.from_poincare(v)
    )
    np.testing.assert_allclose(lor.to_poincare(on_hyperboloid), on_ball, rtol=1e-10, atol=1e-13)


def test_euclidean_and_sphere_by_hand():
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal(3), rng.standard_normal((9, 3)), rng.standard_normal((9, 3))
    w = _softmax(-np.linalg.norm(k - q, axis=1) / 2.0)
    eu = ManifoldAttention(3, Euclidean(), temperature=2.0)
    np.testing.assert_allclose(eu.attention_weights(q, k), w, rtol=1e-12)
    np.testing.assert_allclose(eu.forward(q, k, v), w @ v, rtol=1e-12)
    sph = ManifoldAttention(3, "sphere", curvature=0.8)
    w = _softmax(-R.dist(np.tile(q, (9, 1)), k, 0.8))
    np.testing.assert_allclose(sph.forward(q, k, v), R.expmap0(w @ R.logmap0(v, 0.8), 0.8)[0], rtol=1e-10)


def test_a_new_manifold_is_one_class():
    @register_manifold("scaled_euclidean_test")
    class Scaled(Euclidean):
        """Euclidean space with distances doubled."""

        def dist(self, x, y):
            return 2 * super().dist(x, y)

    try:
        rng = np.random.default_rng(3)
        q, k = rng.standard_normal(2), rng.standard_normal((5, 2))
        attn = build({"type": "manifold", "dim": 2, "manifold": "scaled_euclidean_test"})
        np.testing.assert_allclose(attn.attention_weights(q, k), _softmax(-2 * np.linalg.norm(k - q, axis=1)))
    finally:
        _MANIFOLDS.pop("scaled_euclidean_test")


def test_masks_neighbours_and_errors():
    rng = np.random.default_rng(4)
    table = _ball(rng, 20, 3)
    attn = ManifoldAttention(3)
    mask = np.arange(20) % 3 == 0
    np.testing.assert_allclose(
        attn.forward(table[1], table, table, mask=mask), attn.forward(table[1], table[mask], table[mask])
    )
    out = attn.forward_neighbours(table[:3], table, table, [[1, 2], [], [5]])
    np.testing.assert_allclose(out[0], attn.forward(table[0], table[[1, 2]], table[[1, 2]]))
    np.testing.assert_array_equal(out[1], 0)
    with pytest.raises(EmptyInput):
        attn.forward(table[0], table[:0], table[:0])
    with pytest.raises(EmptyInput):
        attn.forward(table[0], table, table, mask=np.zeros(20, bool))
    with pytest.raises(InvalidConfig, match="temperature"):
        ManifoldAttention(3, temperature=0)
    with pytest.raises(InvalidConfig, match="negative"):
        ManifoldAttention(3, "poincare", curvature=1.0)
    with pytest.raises(InvalidConfig, match="unknown manifold"):
        ManifoldAttention(3, "klein")
    assert ManifoldAttention(3, Sphere(2.0)).to_dict() == {
        "type": "manifold",
        "dim": 3,
        "manifold": "sphere",
        "curvature": 2.0,
        "temperature": 1.0,
    }


COMPONENTS = [("euclidean", 3), ("poincare", 2, -1.0), ("sphere", 2, 0.5)]


def _mixed_inputs(rng, n=12):
    def pts(m):
        return np.concatenate(
            [rng.standard_normal((m, 3)) * 0.5, _ball(rng, m, 2), rng.standard_normal((m, 2)) * 0.5], 1
        )

    return pts(1)[0], pts(n), pts(n)


def test_mixed_curvature_by_hand():
    rng = np.random.default_rng(5)
    q, k, v = _mixed_inputs(rng)
    beta = [0.5, 2.0, 1.5]
    attn = MixedCurvatureAttention(7, components=COMPONENTS, component_weights=beta, temperature=0.8)
    d_e = np.linalg.norm(k[:, :3] - q[:3], axis=1)
    d_p = R.dist(np.tile(q[3:5], (12, 1)), k[:, 3:5], -1.0)
    d_s = R.dist(np.tile(q[5:], (12, 1)), k[:, 5:], 0.5)
    w = _softmax(-(0.5 * d_e + 2.0 * d_p + 1.5 * d_s) / 0.8)
    np.testing.assert_allclose(attn.attention_weights(q, k), w, rtol=1e-10)
    want = np.concatenate(
        [
            w @ v[:, :3],
            R.expmap0(w @ R.logmap0(v[:, 3:5], -1.0), -1.0)[0],
            R.expmap0(w @ R.logmap0(v[:, 5:], 0.5), 0.5)[0],
        ]
    )
    np.testing.assert_allclose(attn.forward(q, k, v), want, rtol=1e-10, atol=1e-14)
    # a single Poincaré factor is hyperbolic attention
    single = MixedCurvatureAttention(2, components=[("poincare", 2, -1.0)])
    np.testing.assert_allclose(
        single.forward(q[3:5], k[:, 3:5], v[:, 3:5]),
        HyperbolicAttention(2).forward(q[3:5], k[:, 3:5], v[:, 3:5]),
        rtol=1e-12,
    )


def test_component_weight_gradient_matches_finite_differences():
    rng = np.random.default_rng(6)
    q, k, v = _mixed_inputs(rng)
    g = rng.standard_normal(7)
    attn = MixedCurvatureAttention(7, components=COMPONENTS, component_weights=[0.7, 1.3, 0.4], temperature=0.5)
    grad = attn.component_weights_grad(q, k, v, g)
    base = attn.component_weights_.copy()
    fd = np.zeros(3)
    h = 1e-6
    for c in range(3):
        for sign in (1, -1):
            attn.component_weights_ = base.copy()
            attn.component_weights_[c] += sign * h
            fd[c] += sign * attn.forward(q, k, v) @ g / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-8)


def test_learned_component_weights_fit_a_target():
    """Targets made with β* = (0.2, 3.0, 0.5): fitting from β = 1 lowers the loss and moves β towards β*."""
    rng = np.random.default_rng(7)
    _, k, v = _mixed_inputs(rng, 30)
    qs = np.stack([_mixed_inputs(rng, 1)[0] for _ in range(20)])
    teacher = MixedCurvatureAttention(7, components=COMPONENTS, component_weights=[0.2, 3.0, 0.5])
    targets = teacher.forward_batch(qs, k, v)
    student = MixedCurvatureAttention(7, components=COMPONENTS)
    history = student.fit_component_weights(qs, k, v, targets, steps=150, learning_rate=2.0)
    assert history[-1] < 0.05 * history[0]
    assert np.abs(student.component_weights_ - [0.2, 3.0, 0.5]).sum() < np.abs(np.ones(3) - [0.2, 3.0, 0.5]).sum() / 2


def test_mixed_validation():
    with pytest.raises(InvalidConfig, match="add up to 6"):
        MixedCurvatureAttention(7, components=[("euclidean", 3), ("poincare", 3, -1.0)])
    with pytest.raises(InvalidConfig, match="component_weights"):
        MixedCurvatureAttention(7, components=COMPONENTS, component_weights=[1, -1, 1])
    with pytest.raises(InvalidConfig, match="component_weights"):
        MixedCurvatureAttention(7, components=COMPONENTS, component_weights=[1, 1])
    with pytest.raises(InvalidConfig, match="euclidean"):
        MixedCurvatureAttention(4, components=[("lorentz", 4, -1.0)])
    with pytest.raises(InvalidConfig, match="negative"):
        MixedCurvatureAttention(4, components=[("poincare", 4, 1.0)])
    attn = MixedCurvatureAttention(7, components=COMPONENTS)
    with pytest.raises(DimensionMismatch, match="values"):
        attn.forward(np.zeros(7), np.zeros((2, 7)), np.zeros((2, 3)))
    # default split and dict round trip
    d = MixedCurvatureAttention(8).to_dict()
    assert d["components"] == [["euclidean", 4, 0.0], ["poincare", 4, -1.0]]
    assert build(json.loads(json.dumps(d))).to_dict() == d
    again = build(d)
    x = np.random.default_rng(8).standard_normal((5, 8)) * 0.2
    np.testing.assert_array_equal(again.forward(x[0], x, x), MixedCurvatureAttention(8).forward(x[0], x, x))
