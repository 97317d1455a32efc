"""Low-rank factors (:mod:`ruvattn.compression.lowrank`) against independent references: numpy's SVD truncated
by hand (Eckart–Young), rank selections recomputed from numpy's singular values, dense products, and a naive
dense softmax attention written here in float64."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruvattn.compression.lowrank import LowRank, attend, energy_curve, error_curve, factorize
from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability, OutOfBounds


def _decaying(m: int, n: int, base: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(A, s)``: a matrix with singular values ``base**i`` (known exactly)."""
    rng = np.random.default_rng(seed)
    p = min(m, n)
    u, _ = np.linalg.qr(rng.standard_normal((m, p)))
    v, _ = np.linalg.qr(rng.standard_normal((n, p)))
    s = base ** np.arange(p)
    return (u * s) @ v.T, s


def _naive_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None = None) -> np.ndarray:
    """softmax(q kᵀ · scale) v in float64, one query row at a time."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scale = 1.0 / np.sqrt(k.shape[1]) if scale is None else scale
    rows = []
    for qi in np.atleast_2d(q):
        z = np.array([float(np.dot(qi, kj)) * scale for kj in k])
        w = np.exp(z - z.max())
        rows.append((w / w.sum()) @ v)
    out = np.array(rows)
    return out[0] if q.ndim == 1 else out


# -- factorization against numpy's SVD ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 40),
    n=st.integers(1, 40),
    frac=st.floats(0.0, 1.0),
    mag=st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]),
    seed=st.integers(0, 2**16),
)
def test_truncation_is_numpy_svd_and_eckart_young(m: int, n: int, frac: float, mag: float, seed: int) -> None:
    a = np.random.default_rng(seed).standard_normal((m, n)) * mag
    r = max(1, round(frac * min(m, n)))
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    want = (u[:, :r] * s[:r]) @ vt[:r]
    low = factorize(a, rank=r)
    got = low.to_dense()
    assert low.rank == r and low.shape == (m, n) and low.left.shape == (m, r) and low.right.shape == (r, n)
    assert np.abs(got - want).max() <= 1e-12 * s[0] * max(m, n)
    err2 = float(np.sum((a - got) ** 2))
    dropped, total = float(np.sum(s[r:] ** 2)), float(np.sum(s**2))
    assert abs(err2 - dropped) <= 1e-10 * total  # Eckart–Young: the error is exactly the dropped energy
    assert low.energy == pytest.approx(np.sum(s[:r] ** 2) / total, rel=1e-12)
    np.testing.assert_allclose(low.singular_values, s[:r], rtol=1e-10, atol=1e-12 * s[0])
    np.testing.assert_allclose(low.right @ low.right.T, np.eye(r), atol=1e-12)  # right: orthonormal rows


def _smallest_rank(s: np.ndarray, energy: float) -> int:
    total = sum(float(x) ** 2 for x in s)
    acc = 0.0
    for i, x in enumerate(s):
        acc += float(x) ** 2
        if acc / total >= energy:
            return i + 1
    return len(s)


@pytest.mark.parametrize("energy", [0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0])
@pytest.mark.parametrize("shape", [(60, 24), (24, 60), (200, 64)])
def test_energy_picks_the_smallest_sufficient_rank(energy: float, shape: tuple[int, int]) -> None:
    a = np.random.default_rng(3).standard_normal(shape) @ np.diag(0.9 ** np.arange(shape[1]))
    s = np.linalg.svd(a, compute_uv=False)
    want = _smallest_rank(s, energy)
    low = factorize(a, energy=energy)
    assert low.rank == want
    assert low.energy >= energy
    cum = np.cumsum(s**2) / np.sum(s**2)
    assert want == 1 or cum[want - 2] < energy  # one rank less is not enough
    if energy == 1.0:
        assert low.rank == min(shape)


@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99, 0.9999])
def test_randomized_energy_is_honest_and_never_below_the_exact_rank(energy: float) -> None:
    a, s = _decaying(300, 96, base=0.85)
    exact = _smallest_rank(s, energy)
    low = factorize(a, energy=energy, method="randomized", seed=0)
    assert exact <= low.rank <= exact + 1
    assert low.energy >= energy
    # the reported fraction is the fraction the factors keep: ‖L R‖² / ‖A‖²
    assert low.energy == pytest.approx(np.sum(low.to_dense() ** 2) / np.sum(a**2), rel=1e-9)


def test_randomized_energy_grows_the_rank_past_the_first_sketch() -> None:
    a = np.random.default_rng(4).standard_normal((120, 80))  # flat spectrum: 0.99 needs most of the ranks
    low = factorize(a, energy=0.99, method="randomized", seed=1)
    assert low.rank > 16 and low.energy >= 0.99
    assert low.rank >= _smallest_rank(np.linalg.svd(a, compute_uv=False), 0.99)
    full = factorize(a, energy=1.0, method="randomized", seed=1)  # stops at min(m, n): the whole matrix
    assert full.rank == 80 and np.allclose(full.to_dense(), a, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("budget", [1, 10, 100, 1000, 5000, 10**6])
def test_budget_picks_the_largest_rank_that_fits(dtype: Any, budget: int) -> None:
    m, n = 50, 30
    a = np.random.default_rng(5).standard_normal((m, n)).astype(dtype)
    size = np.dtype(dtype).itemsize
    per_rank = (m + n) * size
    budget *= per_rank // 10 if budget > 1 else per_rank  # scales budgets with the dtype; 1 -> exactly rank 1
    low = factorize(a, budget_bytes=budget)
    assert low.nbytes == (m + n) * low.rank * size
    assert low.nbytes <= budget
    assert low.rank == min(m, n) or (low.rank + 1) * per_rank > budget  # one rank more would not fit
    with pytest.raises(InvalidConfig, match=rf"'budget_bytes' must be at least {per_rank} .*; got {per_rank - 1}\."):
        factorize(a, budget_bytes=per_rank - 1)


@pytest.mark.parametrize("power", ["auto", 0, 2])
@pytest.mark.parametrize(("m", "n", "r"), [(200, 50, 5), (50, 200, 7), (64, 64, 1), (30, 20, 20)])
def test_randomized_reproduces_an_exact_low_rank_matrix(m: int, n: int, r: int, power: Any) -> None:
    rng = np.random.default_rng(6)
    a = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
    low = factorize(a, rank=r, method="randomized", seed=0, power_iterations=power, oversamples=5)
    assert np.linalg.norm(low.to_dense() - a) <= 1e-10 * np.linalg.norm(a)
    assert low.energy == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("base", "power", "factor"), [(0.8, "auto", 1.001), (0.95, 2, 1.01), (0.95, 0, 1.5)])
@pytest.mark.parametrize("r", [1, 5, 20])
def test_randomized_error_is_near_optimal(base: float, power: Any, factor: float, r: int) -> None:
    a, s = _decaying(400, 100, base=base, seed=7)
    optimal = np.sqrt(np.sum(s[r:] ** 2))  # Eckart–Young
    low = factorize(a, rank=r, method="randomized", seed=3, power_iterations=power)
    assert np.linalg.norm(a - low.to_dense()) <= factor * optimal


def test_same_seed_same_factors() -> None:
    a = np.random.default_rng(8).standard_normal((90, 40))
    one = factorize(a, rank=6, method="randomized", seed=11)
    two = factorize(a, rank=6, method="randomized", seed=11)
    assert np.array_equal(one.left, two.left) and np.array_equal(one.right, two.right)
    other = factorize(a, rank=6, method="randomized", seed=12)
    assert not np.array_equal(one.left, other.left)  # the seed is used
    e1 = factorize(a, energy=0.7, method="randomized", seed=11)
    e2 = factorize(a, energy=0.7, method="randomized", seed=11)
    assert np.array_equal(e1.left, e2.left) and e1.rank == e2.rank


def test_dtypes_and_magnitudes() -> None:
    a = np.random.default_rng(9).standard_normal((20, 10))
    assert factorize(a.astype(np.float32), rank=3).dtype == np.float32
    assert factorize(a.astype(np.float32), rank=3, dtype="float64").dtype == np.float64
    assert factorize(a, rank=3, dtype=np.float32).left.dtype == np.float32
    assert factorize((a * 10).astype(np.int64), rank=3).dtype == np.float64
    lo32 = factorize(a.astype(np.float32), rank=10)  # full rank, float32 factors: float32 rounding only
    np.testing.assert_allclose(lo32.to_dense(), a.astype(np.float32), atol=1e-5)
    big = factorize(a * 1e200, rank=10)  # squares of 1e200 overflow float64: the decomposition is scaled
    np.testing.assert_allclose(big.to_dense(), a * 1e200, rtol=0, atol=1e-12 * 1e200)
    assert factorize(a * 1e200, energy=0.5).rank == factorize(a, energy=0.5).rank
    zero = factorize(np.zeros((4, 3)), energy=0.9)
    assert zero.rank == 1 and zero.energy == 1.0 and not zero.to_dense().any()
    with pytest.raises(NumericalInstability, match="overflows float32 in the left factor"):
        factorize(np.full((4, 4), 3e38, np.float32), rank=1)


# -- the LowRank object ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 30), n=st.integers(1, 30), k=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_products_equal_the_dense_products(m: int, n: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    low = factorize(rng.standard_normal((m, n)), rank=max(1, min(m, n) // 2))
    dense = low.to_dense()
    for x in (rng.standard_normal(m), rng.standard_normal((k, m))):
        np.testing.assert_allclose(x @ low, x @ dense, rtol=1e-10, atol=1e-10)
    for y in (rng.standard_normal(n), rng.standard_normal((n, k))):
        np.testing.assert_allclose(low @ y, dense @ y, rtol=1e-10, atol=1e-10)
    assert (rng.standard_normal((k, m)) @ low).shape == (k, n) and (low @ rng.standard_normal(n)).shape == (m,)


def test_products_and_attend_never_form_the_dense_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(10)
    keys, values = rng.standard_normal((50, 16)), rng.standard_normal((50, 12))
    lk, lv = factorize(keys, rank=16), factorize(values, rank=12)
    q = rng.standard_normal((4, 16))
    want = attend(q, keys, values)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the dense matrix was formed")

    monkeypatch.setattr(LowRank, "to_dense", refuse)
    monkeypatch.setattr(LowRank, "__array__", refuse)
    np.testing.assert_allclose(attend(q, lk, lv), want, atol=1e-12)
    attend(q[0], lk, values)
    attend(q, keys, lv)
    _ = rng.standard_normal(50) @ lk
    _ = lk @ rng.standard_normal(16)
    with pytest.raises(AssertionError, match="formed"):
        np.asarray(lk)  # the patch is live: only an explicit conversion forms it


def test_array_take_and_repr() -> None:
    a = np.random.default_rng(11).standard_normal((30, 8)).astype(np.float32)
    low = factorize(a, rank=4)
    np.testing.assert_array_equal(np.asarray(low), low.to_dense())
    assert np.asarray(low, dtype=np.float64).dtype == np.float64
    ids = [5, 0, 29, 5]
    sub = low.take(ids)
    assert sub.shape == (4, 8) and sub.rank == 4 and np.isnan(sub.energy)
    np.testing.assert_array_equal(sub.to_dense(), low.to_dense()[ids])
    assert sub.right is low.right or np.shares_memory(sub.right, low.right)  # the right factor is shared
    assert low.nbytes == (30 + 8) * 4 * 4 and low.dense_nbytes == 30 * 8 * 4 and len(low) == 30
    assert repr(low).startswith("LowRank(30 x 8, rank 4, energy 0.") and "float32, 608 bytes; dense 960)" in repr(low)
    with pytest.raises(ValueError):
        low.left[0, 0] = 1.0  # a factorization is a value
    with pytest.raises(AttributeError):
        low.__setattr__("energy", 0.5)
    with pytest.raises(OutOfBounds, match=r"LowRank.take: rows must be in \[0, 30\); got 30\."):
        low.take([1, 30])


# -- attention through the factors --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["keys", "values", "both"])
@pytest.mark.parametrize(("dtype", "tol"), [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("single", [True, False])
def test_attend_equals_dense_attention_on_the_reconstruction(which: str, dtype: Any, tol: float, single: bool) -> None:
    rng = np.random.default_rng(12)
    n, d, dv = 70, 24, 10
    keys, values = rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((n, dv)).astype(dtype)
    q = (rng.standard_normal(d) if single else rng.standard_normal((5, d))).astype(dtype)
    lk = factorize(keys, rank=6) if which in ("keys", "both") else keys
    lv = factorize(values, rank=4) if which in ("values", "both") else values
    dense_k = lk.to_dense() if isinstance(lk, LowRank) else keys
    dense_v = lv.to_dense() if isinstance(lv, LowRank) else values
    got = attend(q, lk, lv)
    want = _naive_attention(q, dense_k, dense_v)
    assert got.dtype == dtype and got.shape == want.shape == ((dv,) if single else (5, dv))
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    scaled = attend(q, lk, lv, scale=0.3)
    np.testing.assert_allclose(scaled, _naive_attention(q, dense_k, dense_v, 0.3), rtol=tol, atol=tol)


def test_attend_at_full_rank_is_attention_on_the_original() -> None:
    rng = np.random.default_rng(13)
    keys, values, q = rng.standard_normal((40, 16)), rng.standard_normal((40, 8)), rng.standard_normal((3, 16)) * 3
    got = attend(q, factorize(keys, rank=16), factorize(values, rank=8))
    np.testing.assert_allclose(got, _naive_attention(q, keys, values), rtol=1e-10, atol=1e-12)


def test_energy_curve_matches_numpy_and_factorize() -> None:
    a = np.random.default_rng(14).standard_normal((25, 12)) @ np.diag(0.7 ** np.arange(12))
    ranks, kept = energy_curve(a)
    s = np.linalg.svd(a, compute_uv=False)
    np.testing.assert_array_equal(ranks, np.arange(1, 13))
    np.testing.assert_allclose(kept, np.cumsum(s**2) / np.sum(s**2), rtol=1e-12)
    assert kept[-1] == 1.0 and (np.diff(kept) >= 0).all()
    for r in (1, 4, 12):
        assert factorize(a, rank=r).energy == pytest.approx(kept[r - 1], rel=1e-12)


@pytest.mark.parametrize("method", ["svd", "randomized"])
def test_error_curve(method: str) -> None:
    rng = np.random.default_rng(15)
    n, d, dv = 60, 8, 8
    keys, values = rng.standard_normal((n, d)), rng.standard_normal((n, dv))
    q = rng.standard_normal((6, d))
    ranks = [1, 2, 4, 8]
    res = error_curve(q, keys, values, ranks, method=method, seed=0)
    assert set(res) == {
        "rank",
        "energy_keys",
        "energy_values",
        "nbytes",
        "dense_nbytes",
        "relative_error",
        "cosine",
        "cosine_min",
    }
    np.testing.assert_array_equal(res["rank"], ranks)
    np.testing.assert_array_equal(res["nbytes"], [(n + d) * r * 8 + (n + dv) * r * 8 for r in ranks])
    assert (res["dense_nbytes"] == (n * d + n * dv) * 8).all()
    for i, r in enumerate(ranks):  # each entry is attend() over that rank's factors against the dense attention
        lk = factorize(keys, rank=r, method=method, seed=0)
        lv = factorize(values, rank=r, method=method, seed=0)
        got, ref = attend(q, lk, lv), _naive_attention(q, keys, values)
        assert res["relative_error"][i] == pytest.approx(np.linalg.norm(got - ref) / np.linalg.norm(ref), rel=1e-8)
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        assert res["cosine"][i] == pytest.approx(cos.mean(), rel=1e-10)
        assert res["cosine_min"][i] == pytest.approx(cos.min(), rel=1e-10)
        assert res["energy_keys"][i] == pytest.approx(lk.energy, rel=1e-9)
    assert res["relative_error"][-1] < 1e-10 and abs(res["cosine"][-1] - 1) < 1e-12  # full rank of both tables
    only = error_curve(q, keys, values, [3, 8], compress="keys")
    assert np.isnan(only["energy_values"]).all() and only["relative_error"][-1] < 1e-10
    np.testing.assert_array_equal(only["nbytes"], [(n + d) * r * 8 + n * dv * 8 for r in (3, 8)])
    with pytest.raises(InvalidConfig, match=r"'ranks' must be a non-empty list of integers in \[1, 8\]"):
        error_curve(q, keys, values, [1, 9])


# -- refusals ---------------------------------------------------------------------------------------------

_A = np.ones((4, 3))


@pytest.mark.parametrize(
    ("x", "kwargs", "err", "match"),
    [
        (np.ones(5), {"rank": 1}, DimensionMismatch, r"factorize: matrix has shape \(5,\), expected \(m, n\)\."),
        (np.ones((2, 2, 2)), {"rank": 1}, DimensionMismatch, r"has shape \(2, 2, 2\), expected \(m, n\)"),
        ([[1.0], [1.0, 2.0]], {"rank": 1}, DimensionMismatch, "rectangular"),
        (np.array([["a"]]), {"rank": 1}, DimensionMismatch, "must hold real numbers"),
        (np.zeros((0, 3)), {"rank": 1}, EmptyInput, r"factorize: matrix has shape \(0, 3\)"),
        (
            np.array([[1.0, np.nan], [np.inf, 0.0]]),
            {"rank": 1},
            NumericalInstability,
            r"factorize: matrix must be finite; got 2 NaN/inf entries \(the first: matrix\[0, 1\] = nan\)",
        ),
        (
            _A,
            {"rank": 0},
            InvalidConfig,
            r"factorize: 'rank' must be an integer in \[1, 3\]; got 0\. The matrix "
            r"has shape \(4, 3\): its rank is at most 3\.",
        ),
        (_A, {"rank": 4}, InvalidConfig, r"'rank' must be an integer in \[1, 3\]; got 4\."),
        (_A, {"rank": 2.0}, InvalidConfig, r"'rank' must be an integer in \[1, 3\]; got 2\.0\."),
        (
            _A,
            {"rank": 2, "energy": 0.9},
            InvalidConfig,
            r"factorize: pass exactly one of rank, energy or budget_bytes; got rank=2, energy=0\.9\.",
        ),
        (_A, {}, InvalidConfig, "pass exactly one of rank, energy or budget_bytes; got none of them"),
        (_A, {"energy": 0.0}, InvalidConfig, r"'energy' must be a number in \(0, 1\]; got 0\.0\."),
        (_A, {"energy": 1.5}, InvalidConfig, r"'energy' must be a number in \(0, 1\]; got 1\.5\."),
        (_A, {"budget_bytes": 0}, InvalidConfig, r"'budget_bytes' must be a positive integer; got 0\."),
        (_A, {"rank": 1, "method": "qr"}, InvalidConfig, r"'method' must be one of 'svd', 'randomized'; got 'qr'"),
        (_A, {"rank": 1, "power_iterations": -1}, InvalidConfig, "'power_iterations' must be one of 'auto' or"),
        (_A, {"rank": 1, "oversamples": -1}, InvalidConfig, r"'oversamples' must be an integer in \[0, 10000\]"),
        (_A, {"rank": 1, "seed": -1}, InvalidConfig, "'seed' must be"),
        (_A, {"rank": 1, "dtype": "int8"}, InvalidConfig, "'dtype' must be float32, float64 or None; got 'int8'"),
    ],
)
def test_factorize_refuses(x: Any, kwargs: dict[str, Any], err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        factorize(x, **kwargs)


def test_attend_and_lowrank_refuse() -> None:
    rng = np.random.default_rng(16)
    keys, values = rng.standard_normal((10, 6)), rng.standard_normal((10, 3))
    lk = factorize(keys, rank=2)
    with pytest.raises(
        DimensionMismatch,
        match=r"attend: queries has shape \(5,\), expected \(6,\) to match keys "
        r"of shape \(10, 6\)\.",
    ):
        attend(np.ones(5), lk, values)
    with pytest.raises(DimensionMismatch, match=r"queries has shape \(2, 5\), expected \(B, 6\)"):
        attend(np.ones((2, 5)), keys, values)
    with pytest.raises(DimensionMismatch, match=r"queries has shape \(1, 1, 6\), expected \(d,\) or \(B, d\)"):
        attend(np.ones((1, 1, 6)), keys, values)
    with pytest.raises(DimensionMismatch, match="got 10 keys and 9 values"):
        attend(np.ones(6), lk, factorize(values[:9], rank=2))
    with pytest.raises(DimensionMismatch, match=r"attend: keys has shape \(6,\), expected \(n, d\)"):
        attend(np.ones(6), np.ones(6), values)
    with pytest.raises(EmptyInput, match="nothing to attend over"):
        attend(np.ones(6), lk.take([]), values[:0])
    with pytest.raises(NumericalInstability, match=r"attend: queries must be finite; got queries\[2\] = nan"):
        attend(np.array([0, 0, np.nan, 0, 0, 0.0]), lk, values)
    with pytest.raises(NumericalInstability, match="attend: a distance or score overflowed float64"):
        attend(np.full(6, 1e308), np.ones((10, 6)), values)
    with pytest.raises(InvalidConfig, match=r"attend: 'scale' must be a positive finite number; got -1\.0\."):
        attend(np.ones(6), lk, values, scale=-1.0)
    with pytest.raises(DimensionMismatch, match=r"LowRank @ y: y has shape \(5,\), expected \(6,\) or \(6, k\)\."):
        lk @ np.ones(5)
    with pytest.raises(DimensionMismatch, match=r"x @ LowRank: x has shape \(3, 9\), expected \(10,\) or \(k, 10\)"):
        np.ones((3, 9)) @ lk
    with pytest.raises(DimensionMismatch, match=r"LowRank: left has shape \(4, 2\) and right \(3, 5\), expected"):
        LowRank(np.ones((4, 2)), np.ones((3, 5)))
    with pytest.raises(NumericalInstability, match=r"LowRank: right must be finite; got right\[0, 1\] = inf"):
        LowRank(np.ones((4, 2)), np.array([[1.0, np.inf], [0.0, 1.0]]))
    with pytest.raises(InvalidConfig, match=r"LowRank: 'energy' must be a number in \[0, 1\] or NaN; got 2"):
        LowRank(np.ones((4, 2)), np.ones((2, 5)), 2)
