"""``ruvattn.kernels.blas.gemm`` (the BLAS product inside the kernels) against numpy's matmul: every
transpose combination, both dtypes, views into wider tables (one head's columns, a block of rows),
``alpha``/``beta`` including accumulation, ``beta = 0`` over NaN, and empty dimensions."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from ruvattn.kernels.blas import gemm

TOL = {np.float32: 1e-5, np.float64: 1e-12}


@njit(cache=False)
def _call(ta, tb, alpha, a, b, beta, c):
    return gemm(ta, tb, alpha, a, b, beta, c)


def _view(rng, shape, dt, wide):
    """A ``shape`` array that is a view into a wider, taller table when ``wide`` (row stride > columns)."""
    if not wide:
        return rng.standard_normal(shape).astype(dt)
    big = rng.standard_normal((shape[0] + 3, shape[1] + 5)).astype(dt)
    return big[2 : 2 + shape[0], 3 : 3 + shape[1]]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize(("r", "k", "n"), [(1, 1, 1), (5, 7, 3), (64, 33, 130), (3, 200, 1)])
def test_gemm_equals_matmul(r, k, n, wide, tb, ta, dt):
    rng = np.random.default_rng(r * 1000 + k * 10 + n)
    a = _view(rng, (k, r) if ta else (r, k), dt, wide)
    b = _view(rng, (n, k) if tb else (k, n), dt, wide)
    big = np.full((r + 4, n + 6), 7.0, dt)
    c = big[1 : 1 + r, 2 : 2 + n]
    c[:] = rng.standard_normal((r, n))
    c0 = c.astype(np.float64)
    op_a = (a.T if ta else a).astype(np.float64)
    op_b = (b.T if tb else b).astype(np.float64)
    assert _call(ta, tb, 0.5, a, b, 2.0, c) == 0
    scale = np.abs(op_a) @ np.abs(op_b) + np.abs(c0)
    assert (np.abs(c - (0.5 * op_a @ op_b + 2 * c0)) <= TOL[dt] * (scale + 1)).all()
    # the table around the view is untouched
    untouched = np.ones(big.shape, bool)
    untouched[1 : 1 + r, 2 : 2 + n] = False
    assert (big[untouched] == 7.0).all()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_gemm_beta_zero_overwrites_nan_and_accumulates_with_beta_one(dt):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 6)).astype(dt), rng.standard_normal((6, 5)).astype(dt)
    c = np.full((4, 5), np.nan, dt)
    _call(False, False, 1.0, a, b, 0.0, c)  # beta = 0: c is not read
    np.testing.assert_allclose(c, a @ b, rtol=TOL[dt])
    _call(False, False, 1.0, a, b, 1.0, c)
    np.testing.assert_allclose(c, 2 * (a @ b), rtol=TOL[dt])


def test_gemm_with_an_empty_dimension():
    c = np.full((3, 2), np.nan, np.float32)
    _call(False, False, 1.0, np.empty((3, 0), np.float32), np.empty((0, 2), np.float32), 0.0, c)
    assert (c == 0).all()  # an empty inner dimension: the product is zero
    _call(
        False, True, 1.0, np.empty((0, 4), np.float32), np.ones((2, 4), np.float32), 0.0, np.empty((0, 2), np.float32)
    )
