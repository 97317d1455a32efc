"""The examples of the reliability issue, one test each (every one failed on the main it was filed
against): silent truncation, silent empty results, overflow turned into zeros or NaN, NaN through
gradients, half-applied changes, untyped errors.  The cross-mechanism versions of these properties
are contract checks (``tests/contract.py``: ``check_missing_values``, ``check_integer_ids``,
``check_magnitudes``, ``check_mixed_dtypes``, ``check_gradients_refuse_nan``, ``check_rejected_changes``)
and run over every registered mechanism."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ruvattn as R
from ruvattn import (
    DimensionMismatch,
    EmptyInput,
    InvalidConfig,
    NumericalInstability,
    OutOfBounds,
)
from ruvattn.mechanisms.moe import MoEBuilder


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)


# -- silent truncation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "csr",
    [
        (np.array([0, 1, 2]), np.array([0.9, 1.9])),  # float ids: were cast to [0, 1]
        (np.array([0.0, 1.0, 2.0]), np.array([0, 1])),  # a float indptr
        (np.array([0, 1, 2]), np.array([True, False])),
    ],
)
def test_float_neighbour_ids_are_refused_not_truncated(x: np.ndarray, csr: Any) -> None:
    s = R.ScaledDotProductAttention(8)
    with pytest.raises(DimensionMismatch, match="integers"):
        s.forward_neighbours(x[:2], x, x, csr)
    with pytest.raises(DimensionMismatch, match="integers"):
        R.NeighbourList(csr[0], csr[1], 3)


def test_gat_csr_graph_with_float_ids_is_refused(x: np.ndarray) -> None:
    gat = R.GATConv(8, 4)
    with pytest.raises(DimensionMismatch, match="integers"):
        gat(x, (np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 0.5])))
    whole = gat(x, (np.array([0, 1, 2, 3]), np.array([1, 2, 0])))  # the integer form works
    assert np.isfinite(whole).all()


def test_integral_floats_are_not_accepted_either(x: np.ndarray) -> None:
    """Even 1.0 is refused: one rule (ids are integers), no tolerance band that truncates 0.9999999."""
    with pytest.raises(DimensionMismatch):
        R.ScaledDotProductAttention(8).forward_neighbours(x[:2], x, x, (np.array([0, 1, 2]), np.array([0.0, 1.0])))


# -- silent empty results / keys used as values ---------------------------------------------


@pytest.mark.parametrize("kind", ["scaled_dot_product", "hyperbolic", "local_global", "manifold", "multi_head"])
def test_values_none_is_one_typed_error(kind: str) -> None:
    from ruvattn.mechanisms.base import mechanism_class

    ex = mechanism_class(kind).example(np.float64, 0)
    for call in (
        lambda: ex.mechanism.forward(ex.query, ex.keys, None),
        lambda: ex.mechanism.forward_batch(ex.queries, ex.keys, None),
        lambda: ex.mechanism.forward_neighbours(ex.queries, ex.keys, None, ex.neighbours),
    ):
        with pytest.raises(InvalidConfig, match="values are required"):
            call()


# -- overflow: an error or the right answer, never zeros or NaN ---------------------------


def test_manifold_euclidean_huge_float32_gives_the_float64_answer_not_zeros() -> None:
    m = R.ManifoldAttention(8, "euclidean")
    q, k = np.full(8, 1e38, "f4"), np.full((3, 8), -1e38, "f4")
    w = m.attention_weights(q, k)  # every key at the same (huge) distance: uniform weights
    np.testing.assert_allclose(w, [1 / 3] * 3, rtol=1e-6)
    v = np.arange(24, dtype="f4").reshape(3, 8)
    np.testing.assert_allclose(m.forward(q, k, v), v.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize("manifold", ["euclidean", "sphere", "lorentz"])
def test_manifold_distance_overflow_is_numerical_instability(manifold: str) -> None:
    m = R.ManifoldAttention(8, manifold)
    q, k = np.full(8, 1e307), np.full((3, 8), -1e307)
    with pytest.raises(NumericalInstability):
        m.forward(q, k, np.ones((3, 8)))


def test_manifold_poincare_point_outside_the_ball_is_out_of_bounds() -> None:
    m = R.ManifoldAttention(8, "poincare")
    k = m.embed(np.random.default_rng(1).standard_normal((4, 8)))
    q = np.full(8, 1e307)
    with pytest.raises(OutOfBounds, match=r"query has norm 2\.8"):  # the norm, computed without overflow
        m.forward(q, k, k)
    with pytest.raises(OutOfBounds, match=r"keys\[2\]"):
        bad = k.copy()
        bad[2] = 0.9
        m.forward(k[0], bad, k)


def test_mixed_curvature_zero_weight_factor_does_not_make_nan() -> None:
    """0 · inf: a factor of weight 0 whose distance overflows contributes nothing (was NaN)."""
    m = R.MixedCurvatureAttention(8, components=[("euclidean", 4), ("sphere", 4)], component_weights=[0.0, 1.0])
    rng = np.random.default_rng(2)
    k = rng.standard_normal((5, 8))
    k[:, :4] *= 1e200  # the Euclidean factor's squared distances overflow float64
    k[0, :4] *= -1
    out = m.forward(k[0], k, k)
    assert np.isfinite(out).all()
    want = R.ManifoldAttention(4, "sphere").attention_weights(k[0, 4:], k[:, 4:])
    np.testing.assert_allclose(m.attention_weights(k[0], k), want, rtol=1e-12)
    m.set_params(component_weights=[1.0, 1.0])
    with pytest.raises(NumericalInstability, match="overflowed"):  # with weight 1 it is an error, not NaN
        m.forward(k[0], k, k)


@pytest.mark.parametrize("temperature", [1e-39, 1e-45, 1e-300])
def test_hyperbolic_tiny_temperature_gives_the_argmax_not_zeros(temperature: float) -> None:
    rng = np.random.default_rng(0)
    q = (0.05 * rng.standard_normal(8)).astype("f4")
    k = (0.05 * rng.standard_normal((3, 8))).astype("f4")
    h = R.HyperbolicAttention(8, temperature=temperature)
    w32 = h.attention_weights(q, k)
    d = R.ManifoldAttention(8, "poincare").attention_weights(q.astype("f8"), k.astype("f8"), mask=None)
    onehot = np.eye(3)[np.argmax(d)]
    np.testing.assert_array_equal(w32, onehot)
    np.testing.assert_allclose(h.forward(q, k, k), h.forward(q.astype("f8"), k.astype("f8"), k.astype("f8")), 1e-6)


def test_moe_mixed_dtypes_return_float64_not_inf() -> None:
    ex = R.MoEAttention.example(np.float64, 0)
    big = np.full_like(ex.values, 1e300)
    out = ex.mechanism.forward(ex.query.astype("f4"), ex.keys, big)
    assert out.dtype == np.float64 and np.isfinite(out).all()
    np.testing.assert_allclose(out, 1e300, rtol=1e-6)  # a convex mixture of rows that are all 1e300


def test_moe_float32_output_that_overflows_is_an_error() -> None:
    ex = R.MoEAttention.example(np.float32, 0)
    big = np.full_like(ex.values, np.finfo(np.float32).max)
    try:
        out = ex.mechanism.forward(ex.query, ex.keys, big)
    except NumericalInstability:
        return
    assert np.isfinite(out).all()


# -- NaN through gradients ----------------------------------------------------------------------


def test_backward_refuses_a_nan_upstream_gradient(x: np.ndarray) -> None:
    s = R.ScaledDotProductAttention(8)
    g = np.ones(8, "f4")
    g[3] = np.nan
    with pytest.raises(NumericalInstability, match="grad_output"):
        s.backward(x[0], x, x, g)


def test_mixed_curvature_fit_refuses_nan_targets_and_changes_nothing() -> None:
    m = R.MixedCurvatureAttention(4)
    rng = np.random.default_rng(0)
    x = m.embed(rng.standard_normal((6, 4)))
    targets = np.zeros((2, 4))
    targets[1, 2] = np.nan
    before = m.component_weights_.copy()
    with pytest.raises(NumericalInstability, match="targets"):
        m.fit_component_weights(x[:2], x, x, targets)
    np.testing.assert_array_equal(m.component_weights_, before)


def test_mixed_curvature_fit_that_diverges_restores_the_weights() -> None:
    m = R.MixedCurvatureAttention(4)
    x = m.embed(np.random.default_rng(0).standard_normal((6, 4)))
    before = m.component_weights_.copy()
    with pytest.raises(InvalidConfig, match="diverged"):
        m.fit_component_weights(x[:2], x, x, 1e150 * np.ones((2, 4)), learning_rate=1e300, steps=5)
    np.testing.assert_array_equal(m.component_weights_, before)


# -- half-applied changes ---------------------------------------------------------------------


def test_rejected_seed_leaves_the_seed(x: np.ndarray) -> None:
    s = R.MultiHeadAttention(8, 2, seed=3)
    out = s.forward(x[0], x, x)
    for bad in (-1, "a", 1.5):
        with pytest.raises(InvalidConfig, match="seed"):
            s.set_params(seed=bad)
        assert s.seed == 3
    np.testing.assert_array_equal(s.forward(x[0], x, x), out)


def test_moe_rejected_dim_leaves_a_working_layer() -> None:
    ex = R.MoEAttention.example(np.float64, 0)
    m = ex.mechanism
    out = m.forward(ex.query, ex.keys, ex.values)
    before = m.to_dict()
    with pytest.raises(InvalidConfig):
        m.set_params(dim=16)
    assert m.to_dict() == before
    np.testing.assert_array_equal(m.forward(ex.query, ex.keys, ex.values), out)


def test_projected_keys_from_before_load_state_dict_are_refused(x: np.ndarray) -> None:
    a = R.MultiHeadAttention(8, 2, seed=0)
    projected = a.prepare(x, x)
    a.load_state_dict(R.MultiHeadAttention(8, 2, seed=1).state_dict())
    with pytest.raises(InvalidConfig, match="prepare"):
        a.forward(x[0], projected)
    twin = R.MultiHeadAttention(8, 2, seed=0)  # same parameters, another object: not its keys
    with pytest.raises(InvalidConfig, match="another"):
        twin.forward(x[0], projected)


def test_the_owner_check_is_identity_not_a_reused_id(x: np.ndarray) -> None:
    """The prepared form holds its owner, so the owner's id cannot be recycled by a new mechanism."""
    projected = R.MultiHeadAttention(8, 2, seed=0).prepare(x, x)
    others = [R.MultiHeadAttention(8, 2, seed=0) for _ in range(50)]
    for other in others:
        with pytest.raises(InvalidConfig):
            other.forward(x[0], projected)


# -- untyped errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: R.ScaledDotProductAttention(8, seed=-1),
        lambda: R.ScaledDotProductAttention(8, seed="a"),
        lambda: R.ScaledDotProductAttention(8, scale=-(2**70)),
        lambda: R.HyperbolicAttention(8, curvature="abc"),
        lambda: R.MixedCurvatureAttention(8, components=5),
        lambda: MoEBuilder().add_local_expert(8).add_edge_expert(heads=0),
        lambda: MoEBuilder().add_local_expert(8).add_edge_expert(heads=3),
        lambda: MoEBuilder().add_expert("x"),
        lambda: R.build("{bad"),
        lambda: R.build({"type": "nope"}),
    ],
)
def test_bad_configuration_is_invalid_config(make: Any) -> None:
    with pytest.raises(InvalidConfig):
        make()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors_is_invalid_config(tmp_path: Path, damage: str) -> None:
    m = R.MultiHeadAttention(8, 2, seed=0)
    path = tmp_path / "m.safetensors"
    m.save_safetensors(path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x07" * 64, "empty": b""}[damage])
    fresh = R.MultiHeadAttention(8, 2, seed=1)
    before = fresh.state_dict()
    with pytest.raises(InvalidConfig):
        fresh.load_safetensors(path)
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_gat_values_of_the_wrong_width_is_dimension_mismatch() -> None:
    ex = R.GATConv.example(np.float64, 0)
    with pytest.raises(DimensionMismatch, match="values"):
        ex.mechanism.forward(ex.query, ex.keys, ex.values[:, :3])


@pytest.mark.parametrize("manifold", ["poincare", "sphere", "euclidean"])
def test_manifold_errors_name_the_callers_arguments(manifold: str) -> None:
    m = R.ManifoldAttention(8, manifold)
    k = m.embed(np.random.default_rng(0).standard_normal((3, 8)))
    for arg, (q, kk, v) in {
        "query": (np.where(np.arange(8) == 0, np.nan, k[0]), k, k),
        "keys": (k[0], np.where(np.arange(8) == 1, np.inf, k), k),
        "values": (k[0], k, np.where(np.arange(8) == 2, np.nan, k)),
    }.items():
        with pytest.raises(NumericalInstability, match=rf"manifold.forward: {arg}\b") as info:
            m.forward(q, kk, v)
        assert " x " not in str(info.value) and " y " not in str(info.value)
    with pytest.raises(NumericalInstability, match=r"forward_batch: queries\b"):
        m.forward_batch(np.full((2, 8), np.nan), k, k)


def test_empty_neighbourhood_rule_unchanged(x: np.ndarray) -> None:
    """The fixes keep the documented rules: no keys raises EmptyInput, a node without neighbours gets zeros."""
    s = R.ScaledDotProductAttention(8)
    with pytest.raises(EmptyInput):
        s.forward(x[0], x[:0], x[:0])
    out = s.forward_neighbours(x[:2], x, x, (np.array([0, 0, 2]), np.array([1, 2])))
    np.testing.assert_array_equal(out[0], 0)
