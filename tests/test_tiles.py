"""The tiled many-query kernels (``ruvattn/kernels/tiles.py``) against the numpy reference and the
per-query kernels: outputs, log-sum-exps and statuses for every mask/bias mode, heads, widths around
the tile sizes, rows that must be recomputed one query at a time, and the same bits on any number of
threads."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import ruvattn
from ruvattn import reference as ref
from ruvattn._blas import one_thread
from ruvattn._config import JIT_DISABLED
from ruvattn.kernels import attention as K
from ruvattn.kernels import tiles as T

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _problem(seed, m, n, d, dt, mode=0, heads=1):
    rng = np.random.default_rng(seed)
    qs, k, v = (rng.standard_normal(s).astype(dt) for s in ((m, d), (n, d), (n, d)))
    if mode == 0:
        return qs, k, v, np.empty((1, 0), bool), np.empty((1, 0), dt)
    rows = 1 if mode == 1 else m
    keep = rng.random((rows, n)) > 0.3
    bias = rng.standard_normal((rows, n)).astype(dt)
    bias[rng.random((rows, n)) < 0.1] = -np.inf
    return qs, k, v, keep, bias


def _per_query(qs, k, v, keep, bias, mode, heads, scale):
    """The reference: numpy attention of every query and head, in float64."""
    m, dv = qs.shape[0], v.shape[1]
    dh, dvh = k.shape[1] // heads, dv // heads
    out, lse = np.zeros((m, dv)), np.full((m, heads), -np.inf)
    for i in range(m):
        ki = None if mode == 0 else keep[0 if mode == 1 else i]
        bi = None if mode == 0 else bias[0 if mode == 1 else i].astype(np.float64)
        for h in range(heads):
            o, _, lse[i, h] = ref.attention(
                qs[i, h * dh : (h + 1) * dh].astype(np.float64),
                k[:, h * dh : (h + 1) * dh].astype(np.float64),
                v[:, h * dvh : (h + 1) * dvh].astype(np.float64),
                scale=float(scale),
                keep=ki,
                bias=bi,
            )
            out[i, h * dvh : (h + 1) * dvh] = o
    return out, lse


def _tiled(qs, k, v, keep, bias, mode, heads, scale, weights=False, want_out=True):
    """The tiled kernel: ``(out, lse, status)``, and the weights ``(m, heads, n)`` when ``weights``."""
    m, n, dt = qs.shape[0], k.shape[0], qs.dtype
    out, lse, status = np.empty((m, v.shape[1]), dt), np.empty((m, heads), dt), np.empty(m, np.int8)
    w = np.empty((m, heads, n) if weights else (1, heads, 1), dt)
    rows, keys = T.tile_shape(k.shape[1] // heads, v.shape[1] // heads, queries=m)
    with one_thread():
        T.attend_many_tiled(qs, k, v, heads, keep, mode, bias, mode, dt.type(scale), rows, keys, w, weights,
                            want_out, out, lse, status)  # fmt: skip
    return (out, lse, status, w) if weights else (out, lse, status)


def _per_query_kernel(qs, k, v, keep, bias, mode, heads, scale, weights=False):
    m, n, dt = qs.shape[0], k.shape[0], qs.dtype
    out, lse, status = np.empty((m, v.shape[1]), dt), np.empty((m, heads), dt), np.empty(m, np.int8)
    w = np.empty((m, heads, n) if weights else (1, heads, 1), dt)
    K.attend_many(qs, k, v, keep, mode, bias, mode, heads, dt.type(scale), w, weights, out, lse, status,
                  K.chunk_size(m))  # fmt: skip
    return (out, lse, status, w) if weights else (out, lse, status)


@pytest.mark.parametrize("dt", DTYPES)
def test_fold_tile_is_the_online_softmax_step_of_every_row(dt):
    rng = np.random.default_rng(3)
    r, c, dv = 5, 37, 6
    s = rng.standard_normal((r, c)).astype(dt) * 4
    s[1] = -np.inf  # a row that has seen only removed keys so far
    s[2, ::3] = -np.inf
    v = rng.standard_normal((c, dv)).astype(dt)
    best = np.array([-np.inf, -np.inf, 0.5, 9.0, -1.0], dt)  # row 3: the max does not rise
    total = np.where(best == -np.inf, 0, rng.random(r) + 1).astype(dt)
    acc = np.where(best[:, None] == -np.inf, 0, rng.standard_normal((r, dv))).astype(dt)
    eb, et, ea = ref.fold_tile(best.astype(np.float64), total.astype(np.float64), acc.astype(np.float64),
                               s.astype(np.float64), v.astype(np.float64))  # fmt: skip
    K_s = s.copy()
    top = s.max(axis=1)
    T.fold_tile(K_s, top, best, total, acc, True)
    T.pv_tile(K_s, v, True, acc)  # the caller's product, accumulated
    for got, exp in ((best, eb), (total, et), (acc, ea)):
        np.testing.assert_allclose(got, exp, rtol=TOL[dt], atol=TOL[dt])


# around the tile sizes: one key, a partial tile, several tiles and a partial block, heads, widths up to 1,024
SHAPES = [(8, 1, 4, 1), (9, 17, 8, 1), (40, 129, 32, 4), (35, 64, 256, 1)]
if not JIT_DISABLED:  # the per-query kernels that give the expected statuses run as Python there: small shapes only
    SHAPES += [(33, 300, 64, 1), (64, 1000, 64, 1), (70, 513, 12, 3), (12, 600, 1024, 2)]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize(("m", "n", "d", "heads"), SHAPES)
def test_tiled_attention_equals_the_reference(m, n, d, heads, mode, dt):
    qs, k, v, keep, bias = _problem(m * n + d, m, n, d, dt, mode, heads)
    scale = 1 / np.sqrt(d // heads)
    out, lse, status = _tiled(qs, k, v, keep, bias, mode, heads, scale)
    exp_out, exp_lse = _per_query(qs, k, v, keep, bias, mode, heads, scale)
    _, _, exp_status = _per_query_kernel(qs, k, v, keep, bias, mode, heads, scale)
    np.testing.assert_array_equal(status, exp_status)
    ok = status == K.OK
    np.testing.assert_allclose(out[ok], exp_out[ok], rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    np.testing.assert_allclose(lse[ok], exp_lse[ok], rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    empty = status == K.EMPTY
    assert (out[empty] == 0).all() and (lse[empty] == -np.inf).all()


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("mode", [0, 2])
@pytest.mark.parametrize(("m", "n", "d", "heads"), [(9, 17, 8, 1), (40, 129, 32, 4), (33, 600, 64, 2)])
def test_tiled_weights_equal_the_per_query_kernels(m, n, d, heads, mode, dt):
    """Weights stored (the weights forms and backward): every weight, output, lse and status."""
    qs, k, v, keep, bias = _problem(m + n + d, m, n, d, dt, mode, heads)
    scale = 1 / np.sqrt(d // heads)
    out, lse, status, w = _tiled(qs, k, v, keep, bias, mode, heads, scale, weights=True)
    e_out, e_lse, e_status, e_w = _per_query_kernel(qs, k, v, keep, bias, mode, heads, scale, weights=True)
    np.testing.assert_array_equal(status, e_status)
    ok = status != K.NONFINITE
    np.testing.assert_allclose(w[ok], e_w[ok], rtol=TOL[dt] * 10, atol=TOL[dt])
    np.testing.assert_allclose(out[ok], e_out[ok], rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    np.testing.assert_allclose(lse[ok], e_lse[ok], rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    _, lse_only, status_only, w_only = _tiled(qs, k, v, keep, bias, mode, heads, scale, weights=True, want_out=False)
    np.testing.assert_array_equal(w_only[ok], w[ok])  # weights only: the same weights, no products with values
    np.testing.assert_array_equal(status_only, status)
    np.testing.assert_array_equal(lse_only[ok], lse[ok])


@pytest.mark.parametrize("dt", DTYPES)
def test_rows_a_product_cannot_do_are_recomputed_one_query_at_a_time(dt):
    """A removed key's NaN value row (0 * nan in a product), a row with every key removed, and a row
    whose scores overflow: the per-query kernels' answers and statuses, row for row."""
    m, n, d = 40, 100, 16
    qs, k, v, keep, bias = _problem(7, m, n, d, dt, 2)
    keep[:] = True
    keep[:, 5] = False
    v[5] = np.nan  # removed for every query: never read
    keep[3] = False  # nothing to attend over
    qs[11] = np.finfo(dt).max  # scores overflow
    out, lse, status = _tiled(qs, k, v, keep, bias, 2, 1, 0.25)
    e_out, e_lse, e_status = _per_query_kernel(qs, k, v, keep, bias, 2, 1, 0.25)
    np.testing.assert_array_equal(status, e_status)
    assert status[3] == K.EMPTY and status[11] == K.NONFINITE and (status[np.r_[0:3, 4:11, 12:m]] == K.OK).all()
    ok = status == K.OK
    np.testing.assert_allclose(out[ok], e_out[ok], rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    np.testing.assert_allclose(lse[ok], e_lse[ok], rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    assert np.isfinite(out[ok]).all() and (out[3] == 0).all() and lse[3, 0] == -np.inf


@pytest.mark.parametrize("width", [1, 3, 8, 16, 64, 100, 128, 256, 512, 1000, 4096, 16384, 65536])
def test_tile_shape_keeps_every_product_on_the_calling_thread(width):
    """Unpinned: every product within OpenBLAS's one-thread size; pinned: the measured shape."""
    rows, keys = T.tile_shape(width, width, pinned=False)
    assert 1 <= rows <= T.BLOCK_ROWS and keys % 16 == 0 and 16 <= keys <= 512
    if width <= T.GEMM_BUDGET // 16:
        assert rows * keys * width <= T.GEMM_BUDGET
    for block in (1, 8, 64, 100, 4096):
        r, kk = T.tile_shape(width, width, block, pinned=False)
        assert kk == block and 1 <= r <= T.BLOCK_ROWS
        assert r == 1 or r * kk * width <= T.GEMM_BUDGET
        assert T.tile_shape(width, width, block, pinned=True) == (T.BLOCK_ROWS, block)
        assert T.tile_shape(width, width, block, pinned=True, queries=1000) == (4 * T.BLOCK_ROWS, block)
    for queries, expect_rows in ((None, 64), (8, 64), (255, 64), (256, 128), (511, 192), (512, 256), (10**6, 256)):
        rows, keys = T.tile_shape(width, width, pinned=True, queries=queries)
        assert rows == expect_rows and keys % 16 == 0 and 16 <= keys <= (256 if rows == 64 else 512)
        assert keys == 16 or keys * width <= 1 << 18  # the key tile stays within a quarter of a 1 MiB L2


def test_one_thread_pins_every_blas_and_puts_the_counts_back():
    from ruvattn import _blas

    if not _blas.PINNED:
        pytest.skip("no BLAS threadpoolctl can control")
    before = [lib.num_threads for lib in _blas._LIBS]
    with _blas.one_thread():
        with _blas.one_thread():  # nested (or concurrent) launches share one pinning
            assert all(lib.num_threads == 1 for lib in _blas._LIBS)
        assert all(lib.num_threads == 1 for lib in _blas._LIBS)
    assert [lib.num_threads for lib in _blas._LIBS] == before


@pytest.mark.skipif(JIT_DISABLED, reason="thread counts are a JIT matter")
def test_the_same_bits_on_any_number_of_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only")
    qs, k, v, keep, bias = _problem(5, 100, 700, 64, np.float32, 1)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _tiled(qs, k, v, keep, bias, 1, 1, 0.125)
        numba.set_num_threads(2)
        two = _tiled(qs, k, v, keep, bias, 1, 1, 0.125)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("block", [1, 16, 64, 200])
def test_flash_many_queries_equal_scaled_dot_product(block, dt):
    """Flash's tiled batch (block_size keys per tile) and scaled dot-product's agree with the reference."""
    qs, k, v, keep, bias = _problem(block, 150, 1333, 32, dt, 2)  # 150 queries: blocks in parallel, tiles of blocks
    flash = ruvattn.FlashAttention(32, block_size=block)
    out, lse = flash.forward_with_lse(qs, k, v, mask=keep, bias=bias)
    exp_out, exp_lse = _per_query(qs, k, v, keep, bias, 2, 1, 1 / np.sqrt(32))
    np.testing.assert_allclose(out, exp_out, rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    np.testing.assert_allclose(lse, exp_lse[:, 0], rtol=TOL[dt] * 10, atol=TOL[dt] * 10)
    sdpa = ruvattn.ScaledDotProductAttention(32).forward_batch(qs, k, v, mask=keep, bias=bias)
    np.testing.assert_allclose(sdpa, exp_out, rtol=TOL[dt] * 10, atol=TOL[dt] * 10)


@pytest.mark.skipif(JIT_DISABLED, reason="thread counts are a JIT matter")
def test_one_block_gives_the_same_bits_whatever_the_blas_threads():
    """A batch of one query block runs on the calling thread with the BLAS as the user set it, and the BLAS's
    threads change nothing beyond rounding. OpenBLAS's SkylakeX kernels split rows and columns, never the sums
    (the bits were equal there); its Haswell kernels (AVX2-only machines, and an AMD EPYC it picked them for)
    give float32 results that differ by up to 5e-8 absolute between 1 and 2 threads: equal to float32 rounding."""
    from threadpoolctl import threadpool_limits

    qs, k, v, _, _ = _problem(8, 60, 2000, 128, np.float32)
    sdpa, flash = ruvattn.ScaledDotProductAttention(128), ruvattn.FlashAttention(128, block_size=64)
    got = []
    for n in (1, 2, 4):
        with threadpool_limits(n, user_api="blas"):
            got.append((sdpa.forward_batch(qs, k, v), flash.forward_batch(qs, k, v)))
    for a, b in got[1:]:
        np.testing.assert_allclose(a, got[0][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, got[0][1], rtol=1e-5, atol=1e-6)
