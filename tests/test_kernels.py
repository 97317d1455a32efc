"""Every kernel against its numpy reference.

Lengths around the vector width (0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1023),
float32 and float64, non-contiguous views, magnitudes from 1e-30 to 1e30.
"""

from __future__ import annotations

import numpy as np
import pytest

from ruvattn import reference as ref
from ruvattn._config import JIT_DISABLED
from ruvattn.kernels import attention as K

LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1023]
DTYPES = [np.float32, np.float64]
MAGNITUDES = [1e-30, 1e-3, 1.0, 1e3, 1e30]
EPS = {np.float32: 2e-6, np.float64: 1e-13}


def _rng(*salt):
    return np.random.default_rng(abs(hash(salt)) % (2**32))


def _vec(rng, n, dt, mag=1.0, strided=False):
    if strided:  # a non-contiguous view: every other element of a longer array
        return (rng.standard_normal(2 * n) * mag).astype(dt)[::2]
    return (rng.standard_normal(n) * mag).astype(dt)


def _close(got, exp, dt, scale=1.0):
    np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(exp, np.float64), rtol=EPS[dt] * 50,
                               atol=EPS[dt] * 50 * scale)  # fmt: skip


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("mag", MAGNITUDES)
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", LENGTHS)
def test_dot_and_axpy(n, dt, mag, strided):
    rng = _rng("dot", n, dt, mag, strided)
    a, b = _vec(rng, n, dt, mag, strided), _vec(rng, n, dt, 1.0, strided)
    exact = np.dot(a.astype(np.float64), b.astype(np.float64))
    bound = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))  # error scales with sum |a_i b_i|
    assert abs(float(K.dot(a, b)) - exact) <= EPS[dt] * max(n, 1) * bound + 1e-300
    assert abs(float(ref.dot(a, b)) - exact) <= EPS[dt] * max(n, 1) * bound + 1e-300
    y = _vec(rng, n, dt, mag, False)
    expected = ref.axpy(dt(0.5), a, y.copy())
    K.axpy(dt(0.5), a, y)
    _close(y, expected, dt, scale=mag)


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", LENGTHS)
def test_softmax_and_max(n, dt, strided):
    rng = _rng("softmax", n, dt, strided)
    x = _vec(rng, n, dt, 10.0, strided)
    w_ref, lse_ref = ref.softmax(x.astype(np.float64))
    if n:
        assert K.max_value(x) == x.max()
    y = x.copy()
    lse = K.softmax(y)
    _close(y, w_ref, dt)
    if n:
        assert np.isclose(lse, lse_ref, rtol=EPS[dt] * 10)
        assert abs(y.astype(np.float64).sum() - 1) < EPS[dt] * 10
    else:
        assert lse == -np.inf


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [n for n in LENGTHS if n])
def test_max_finite_equals_numpy_for_every_kind_of_value(n, dt):
    """Largest entry and finiteness in one integer pass: signed zeros, subnormals, ±inf, NaN, all negative."""
    rng = _rng("max_finite", n, dt)
    info = np.finfo(dt)
    pool = np.array([0.0, -0.0, info.tiny / 4, -info.tiny / 4, info.max, -info.max, 1.5, -1.5], dt)
    for case in range(6):
        x = (rng.standard_normal(n) * 10).astype(dt)
        special = rng.random(n) < 0.3
        x[special] = rng.choice(pool, int(special.sum()))
        if case == 1:
            x = -np.abs(x) - 1
        if case == 2:
            x[rng.integers(n)] = -np.inf
        if case == 3:
            x[rng.integers(n)] = np.inf
        if case == 4:
            x[rng.integers(n)] = np.nan
        if case == 5:
            x[:] = -np.inf
        top, finite = K.max_finite(x)
        assert finite == bool(np.isfinite(x).all())
        if not np.isnan(x).any():
            assert top == x.max()


@pytest.mark.parametrize("dt", DTYPES)
def test_exp_sum_takes_its_shift_in_the_arrays_dtype(dt):
    """A float64 shift (a max kept in float64) gives the same bits as the same shift in the array's dtype."""
    x = np.linspace(-20, 3, 999).astype(dt)
    a, b = x.copy(), x.copy()
    ta = K.exp_sum(a, np.float64(dt(2.5)))
    tb = K.exp_sum(b, dt(2.5))
    np.testing.assert_array_equal(a, b)
    assert ta == tb


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shift", [0.0, 1e3, -1e3, 1e30])
def test_softmax_is_shift_invariant_and_never_overflows(dt, shift):
    x = np.array([0.5, -1.0, 2.0, 2.0, -50.0], dt) + dt(shift)
    w = x.copy()
    K.softmax(w)
    expected = ref.softmax(np.array([0.5, -1.0, 2.0, 2.0, -50.0]))[0] if abs(shift) < 1e4 else None
    assert np.isfinite(w).all() and abs(w.sum() - 1) < 1e-5
    if expected is not None:
        _close(w, expected, dt, scale=1e3 if dt is np.float32 else 1.0)


@pytest.mark.parametrize("dt", DTYPES)
def test_softmax_masked_entries_are_exactly_zero(dt):
    x = np.array([1.0, -np.inf, 3.0, -np.inf], dt)
    K.softmax(x)
    assert x[1] == 0 and x[3] == 0
    allmasked = np.full(4, -np.inf, dt)
    assert K.softmax(allmasked) == -np.inf and (allmasked == 0).all()


def test_exp_sum_float32_accuracy_over_the_whole_range():
    x = np.linspace(-100, 88, 200001).astype(np.float32)
    y = x.copy()
    total = K.exp_sum(y, np.float32(0))
    exact = np.exp(x.astype(np.float64))
    normal = exact > np.finfo(np.float32).tiny
    rel = np.abs(y[normal] / exact[normal] - 1)
    assert rel.max() < 4e-7
    assert (y[~normal] <= np.finfo(np.float32).tiny).all()  # flushed to zero below exp(-87.3365)
    assert total == np.inf  # the float32 sum of this range overflows, and says so
    z = np.linspace(-30, 30, 1001).astype(np.float32)
    assert np.isclose(K.exp_sum(z.copy(), np.float32(0)), np.exp(z.astype(np.float64)).sum(), rtol=1e-5)
    assert K.exp_sum(np.array([-np.inf], np.float32), np.float32(0)) == 0


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("block", [1, 7, 8, 64, 2000])
@pytest.mark.parametrize("n", LENGTHS)
def test_online_softmax_update_equals_softmax(n, block, dt):
    rng = _rng("online", n, block, dt)
    s = _vec(rng, n, dt, 5.0)
    v = rng.standard_normal((n, 9)).astype(dt)
    m, total, acc = dt(-np.inf), dt(0), np.zeros(9, dt)
    rm, rt, racc = -np.inf, 0.0, np.zeros(9)
    ids = np.empty(0, np.int64)
    for start in range(0, n, block):
        tile = s[start : start + block].copy()
        rm, rt, racc = ref.online_softmax_update(rm, rt, racc, tile.astype(np.float64), v[start : start + block])
        m, total = K.online_softmax_update(m, total, acc, tile, v[start : start + block], ids, False)
    if n == 0:
        assert m == -np.inf and total == 0
        return
    w, lse = ref.softmax(s.astype(np.float64))
    _close(acc / total, ref.weighted_sum(w, v.astype(np.float64)), dt)
    _close(racc / rt, ref.weighted_sum(w, v.astype(np.float64)), np.float64)
    assert np.isclose(m + np.log(total), lse, rtol=EPS[dt] * 10)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", LENGTHS)
def test_rows_dot_rows_axpy(n, dt):
    rng = _rng("rows", n, dt)
    d = 19
    k = rng.standard_normal((n + 3, d)).astype(dt)
    q = rng.standard_normal(d).astype(dt)
    ids = rng.integers(0, n + 3, n).astype(np.int64)
    for lo, hi in ((0, d), (3, 11)):
        out = np.empty(n, dt)
        K.rows_dot(np.ascontiguousarray(q[lo:hi]), k, ids, True, lo, hi, out)
        _close(out, k[ids][:, lo:hi].astype(np.float64) @ q[lo:hi], dt, scale=10)
        K.rows_dot(np.ascontiguousarray(q[lo:hi]), k, ids, False, lo, hi, out)
        _close(out, k[:n, lo:hi].astype(np.float64) @ q[lo:hi], dt, scale=10)
    w = rng.random(n).astype(dt)
    w[::5] = 0  # zero weights skip their rows
    k[ids[::5]] = np.nan if n else 0  # ...so NaN there is never read
    out = np.zeros(d, dt)
    K.rows_axpy(w, k, ids, True, 0, d, out)
    keep = w != 0
    _close(out, ref.weighted_sum(w[keep], k[ids[keep]].astype(np.float64)) if n else np.zeros(d), dt, scale=10)


@pytest.mark.parametrize("dt", DTYPES)
def test_matvec(dt):
    rng = _rng("lin", dt)
    table = rng.standard_normal((50, 17)).astype(dt)
    w = rng.standard_normal((9, 17)).astype(dt)
    b = rng.standard_normal(9).astype(dt)
    Y = np.empty((50, 9), dt)
    for i in range(50):  # row by row, as the projections use it; the reference's matmat_t is its batch form
        K.matvec(w, table[i], b, Y[i])
        _close(Y[i], ref.matvec(w.astype(np.float64), table[i], b), dt, scale=10)
    _close(Y, ref.matmat_t(table.astype(np.float64), w, b), dt, scale=10)


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 17, 65, 1023])
def test_fused_attention_equals_reference(n, dt, heads):
    rng = _rng("fused", n, dt, heads)
    d, dv = 16, 12
    q = rng.standard_normal(d).astype(dt)
    k = rng.standard_normal((n, d)).astype(dt)
    v = rng.standard_normal((n, dv)).astype(dt)
    w = np.empty((heads, n), dt)
    out = np.empty(dv, dt)
    lse = np.empty(heads, dt)
    status = K.attend_one(q, k, v, heads, dt(0.3), w, out, lse)
    wt, outt, lset = np.empty_like(w), np.empty_like(out), np.empty_like(lse)
    status_t = K.attend_one_transposed(
        q, np.ascontiguousarray(k.T), np.ascontiguousarray(v.T), heads, dt(0.3), wt, outt, lset
    )
    assert status_t == status
    if n == 0:
        assert status == K.EMPTY and (out == 0).all() and (outt == 0).all()
        return
    assert status == K.OK
    _close(outt, out, dt, scale=10)
    _close(wt, w, dt)
    _close(lset, lse, dt)
    dh, dvh = d // heads, dv // heads
    for h in range(heads):
        o, wr, lr = ref.attention(q[h * dh : (h + 1) * dh].astype(np.float64), k[:, h * dh : (h + 1) * dh],
                                  v[:, h * dvh : (h + 1) * dvh], scale=0.3)  # fmt: skip
        _close(w[h], wr, dt)
        _close(out[h * dvh : (h + 1) * dvh], o, dt, scale=10)
        assert np.isclose(lse[h], lr, rtol=EPS[dt] * 10, atol=EPS[dt] * 10)


@pytest.mark.parametrize("dt", DTYPES)
def test_attend_general_ids_mask_bias(dt):
    rng = _rng("general", dt)
    table = rng.standard_normal((40, 8)).astype(dt)
    vals = rng.standard_normal((40, 5)).astype(dt)
    ids = rng.integers(0, 40, 13).astype(np.int64)
    keep = rng.random(13) > 0.3
    bias = rng.standard_normal(13).astype(dt)
    bias[2] = -np.inf
    q = rng.standard_normal(8).astype(dt)
    w = np.empty((1, 13), dt)
    out = np.empty(5, dt)
    lse = np.empty(1, dt)
    st = K.attend_one_general(q, table, vals, ids, True, keep, True, bias, True, 1, dt(0.5), w, out, lse)
    o, wr, lr = ref.attention(q.astype(np.float64), table[ids], vals[ids], scale=0.5, keep=keep, bias=bias)
    assert st == K.OK
    assert np.isclose(lse[0], lr, rtol=1e-5)
    _close(w[0], wr, dt)
    _close(out, o, dt, scale=10)
    assert w[0][~keep].max(initial=0) == 0 and w[0][2] == 0


def test_flash_and_csr_kernels_equal_reference():
    rng = _rng("flash")
    q = rng.standard_normal((5, 16)).astype(np.float32)
    k = rng.standard_normal((300, 16)).astype(np.float32)
    v = rng.standard_normal((300, 7)).astype(np.float32)
    st = np.empty(5, np.int8)
    out = np.empty((5, 7), np.float32)
    lse = np.empty(5, np.float32)
    none_keep, none_bias = np.empty((1, 0), np.bool_), np.empty((1, 0), np.float32)
    K.flash_many(q, k, v, none_keep, 0, none_bias, 0, np.float32(0.25), 64, out, lse, st, 2)
    for i in range(5):
        o, _, lr = ref.attention(q[i].astype(np.float64), k, v, scale=0.25)
        fo, fl = ref.flash_attention(q[i].astype(np.float64), k, v, scale=0.25, block=64)
        np.testing.assert_allclose(out[i], o, atol=2e-6, rtol=1e-5)
        np.testing.assert_allclose(fo, o, atol=1e-12)
        assert np.isclose(lse[i], lr, rtol=1e-6) and np.isclose(fl, lr)
    indptr = np.array([0, 3, 3, 10, 40, 41])
    indices = rng.integers(0, 300, 41).astype(np.int64)
    w = np.empty(41, np.float32)
    K.attend_csr(q, k, v, indptr, indices, 1, np.float32(0.25), w, True, out, lse[:, None].copy(), st, 2)
    expected = ref.neighbour_attention(q.astype(np.float64), k, v, indptr, indices, scale=0.25)
    np.testing.assert_allclose(out, expected, atol=2e-6, rtol=1e-5)
    assert st.tolist() == [K.OK, K.EMPTY, K.OK, K.OK, K.OK]
    for i in range(5):
        seg = w[indptr[i] : indptr[i + 1]]
        assert seg.size == 0 or abs(seg.sum() - 1) < 1e-5


def test_nonfinite_inputs_are_reported_not_returned():
    q = np.ones(8, np.float32)
    k = np.ones((5, 8), np.float32)
    v = np.ones((5, 3), np.float32)
    for bad_k, bad_v in ((np.nan, 1.0), (np.inf, 1.0), (-np.inf, 1.0), (1.0, np.nan), (1.0, np.inf)):
        kk, vv = k.copy(), v.copy()
        kk[2, 3] = bad_k
        vv[4, 1] = bad_v
        w, out, lse = np.empty((1, 5), np.float32), np.empty(3, np.float32), np.empty(1, np.float32)
        assert K.attend_one(q, kk, vv, 1, np.float32(0.3), w, out, lse) == K.NONFINITE
    huge = np.full((5, 8), 1e30, np.float32)  # finite inputs whose scores overflow float32
    assert K.attend_one(np.full(8, 1e30, np.float32), huge, v, 1, np.float32(1.0), w, out, lse) == K.NONFINITE


@pytest.mark.skipif(JIT_DISABLED, reason="no Numba dispatchers without the JIT")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attend_ids_equals_attention_over_the_gathered_rows(dtype):
    rng = np.random.default_rng(11)
    q = rng.standard_normal(16).astype(dtype)
    k = rng.standard_normal((50, 16)).astype(dtype)
    v = rng.standard_normal((50, 3)).astype(dtype)
    ids = np.array([4, 0, 49, 17, 4], np.int64)  # any order, repeats allowed
    out = np.empty(3, dtype)
    assert K.attend_ids(q, k, v, ids, dtype(0.25), out) == K.OK
    want = ref.attention(q.astype(np.float64), k[ids].astype(np.float64), v[ids].astype(np.float64), scale=0.25)[0]
    np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert K.attend_ids(q, k, v, np.array([3, 50]), dtype(0.25), out) == K.BADID


def test_widest_row_equals_reference():
    indptr = np.array([0, 3, 3, 10, 11, 11], np.int64)
    for first, last in [(0, 5), (1, 2), (3, 5), (2, 2), (4, 5)]:
        assert K.widest_row(indptr, first, last) == ref.widest_row(indptr, first, last)
    assert K.widest_row(indptr, 0, 5) == 7 and K.widest_row(indptr, 1, 2) == 0
