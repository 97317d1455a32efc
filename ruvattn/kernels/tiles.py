"""Tiled many-query attention: blocks of queries against blocks of keys, products by BLAS.

Many queries over one key set are two matrix products, ``S = Q Kᵀ`` and ``O = P V``; reading
each key and value row once per *block* of queries instead of once per query is what takes
them from the memory limit to the arithmetic limit.  The building blocks:

* :func:`qk_tile` / :func:`pv_tile`: the two products of one tile, ``np.dot`` on contiguous
  2-D views, which Numba lowers to the BLAS ``sgemm``/``dgemm`` of SciPy's BLAS (OpenBLAS in
  SciPy's wheels);
* :func:`scores_tile`: one ``Q Kᵀ`` product, then scale, keep-mask and additive bias of every row
  (:func:`~ruvattn.kernels.attention.score_row`, the per-query kernels' own step) and its finiteness;
* :func:`fold_tile`: the online-softmax step for the rows of a tile (running max, sum, and the
  rescaled accumulator), with the float32 exp of :func:`~ruvattn.kernels.attention.exp_sum`;
* :func:`attend_block`: one block of queries through every key tile and every head, the
  working memory a few ``rows x block`` tiles whatever the number of keys.

Threads.  The parallel kernels here hand out query blocks to Numba's threads and every product
must run on the thread that calls it: BLAS threads inside Numba threads oversubscribe the cores
(on a loaded 2-core machine a 64 x 256 x 64 product went from 10 µs to 1,100 µs).  Callers launch
them inside :func:`ruvattn._blas.one_thread`, which pins the BLAS to one thread; where that is not
possible, OpenBLAS still runs a product whose ``m * n * k`` is at most 65,536 x 4
(``SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD``, interface/gemm.c) on the calling thread, and
:func:`tile_shape` keeps every product within :data:`GEMM_BUDGET`.  The block shape depends on the
widths only, never on the thread count, so results are the same on any number of threads.

Exactness.  A tile's scores, weights and outputs are the same formula as the per-query kernels,
summed in another order (float rounding apart).  Two things a product cannot do as the per-query
kernels do: skip the value row of a zero weight (``0 * nan`` is NaN) and report a row that
overflowed.  So every row whose tiled result is not finite, and every row with nothing left to
attend over, is left with status :data:`~ruvattn.kernels.attention.NONFINITE` or
:data:`~ruvattn.kernels.attention.EMPTY` here and computed again by the caller's per-query
kernel, whose answer (and status) stands.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ruvattn.kernels.attention import (
    NONFINITE,
    OK,
    _inline,
    _is_finite,
    _parallel,
    _serial,
    attend_row,
    exp_sum,
    flash_row,
    max_value,
    score_row,
    softmax,
)

#: Largest ``m * n * k`` of one tile product when the BLAS cannot be pinned to one thread: OpenBLAS runs
#: products up to this size on the calling thread.
GEMM_BUDGET = 65536 * 4
#: Query rows per block (fewer when the widths are large and the BLAS is not pinned, see :func:`tile_shape`).
BLOCK_ROWS = 64
#: Fewest queries for which the tiled kernels beat one query at a time (measured, see benchmarks).
MIN_QUERIES = 8


def tile_shape(d: int, dv: int, keys: int | None = None, pinned: bool | None = None) -> tuple[int, int]:
    """``(rows, keys)`` of a tile for per-head widths ``d`` (queries/keys) and ``dv`` (values).

    With the BLAS pinned to one thread (``pinned``; default :data:`ruvattn._blas.PINNED`): :data:`BLOCK_ROWS` rows and
    ``32768 / width`` keys (a multiple of 16 from 16 to 512; a ``64 x 256`` tile at width 128 measured
    the fastest of seven shapes).  Otherwise both products of a tile, ``rows x keys x d`` and
    ``rows x dv x keys``, stay within :data:`GEMM_BUDGET` where they can.  ``keys`` given (flash
    attention's ``block_size``) is kept and the rows fitted to it (1 to :data:`BLOCK_ROWS`).
    """
    if pinned is None:  # imported here: the kernels' cache stamp follows module-level imports only
        from ruvattn._blas import PINNED as pinned
    width = max(d, dv, 1)
    if pinned:
        if keys is not None:
            return BLOCK_ROWS, keys
        keys = max(16, min(512, 32768 // width))
        return BLOCK_ROWS, keys - keys % 16
    half = BLOCK_ROWS // 2
    if keys is not None:
        return max(1, min(half, GEMM_BUDGET // (keys * width))), keys
    rows = half
    keys = GEMM_BUDGET // (rows * width)
    if keys < 16:
        keys = 16
        rows = max(1, GEMM_BUDGET // (keys * width))
    return rows, min(512, keys - keys % 16)


def by_heads(x: np.ndarray, heads: int) -> np.ndarray:
    """``(n, heads * w)`` as ``(heads, n, w)``, each head's block contiguous (a view when ``heads == 1``)."""
    n = x.shape[0]
    if heads == 1:
        return np.ascontiguousarray(x).reshape(1, n, x.shape[1])
    return np.ascontiguousarray(x.reshape(n, heads, x.shape[1] // heads).transpose(1, 0, 2))


@_inline
def qk_tile(q, k, s):
    """``s = q @ k.T`` for contiguous ``q (r, d)``, ``k (c, d)`` and ``s (r, c)`` (one GEMM)."""
    np.dot(q, k.T, s)


@_inline
def pv_tile(p, v, out):
    """``out = p @ v`` for contiguous ``p (r, c)``, ``v (c, dv)`` and ``out (r, dv)`` (one GEMM)."""
    np.dot(p, v, out)


@_inline
def fold_tile(s, best, total, acc):
    """Online-softmax step for every row ``i`` of a score tile ``s (r, c)``.

    ``(best[i], total[i], acc[i])`` summarise the keys seen so far: running max score,
    ``sum exp(s - best)`` and (after the caller's :func:`pv_tile`) ``sum exp(s - best) v``.
    Rescales ``total`` and ``acc`` when the max rises and overwrites ``s`` with
    ``exp(s - best_new)`` (zero rows while a row has seen only removed keys).
    """
    for i in range(s.shape[0]):
        row = s[i]
        new = max(best[i], max_value(row))
        if new == -np.inf:
            row[:] = 0
            continue
        if new > best[i]:
            alpha = math.exp(best[i] - new)
            total[i] *= alpha
            for c in range(acc.shape[1]):
                acc[i, c] *= alpha
            best[i] = new
        total[i] += exp_sum(row, new)


@_inline
def scores_tile(q, k, keep, keep_mode, bias, bias_mode, scale, first, start, s, ok):
    """Scores of a block's packed queries ``q (r, dh)`` against the key tile ``k`` starting at key
    ``start``, into ``s (r, c)``: one product, then :func:`~ruvattn.kernels.attention.score_row` per
    row with that query's (or the shared) mask and bias; ``ok[i]`` turns False on a NaN/inf score."""
    stop = start + s.shape[1]
    qk_tile(q, k, s)
    for i in range(s.shape[0]):
        ki = keep[first + i] if keep_mode == 2 else keep[0]
        bi = bias[first + i] if bias_mode == 2 else bias[0]
        if not score_row(
            s[i],
            scale,
            ki[start:stop] if keep_mode > 0 else ki,
            keep_mode > 0,
            bi[start:stop] if bias_mode > 0 else bi,
            bias_mode > 0,
        ):
            ok[i] = False


@_inline
def pack_head(qs, first, h, q):
    """Rows ``first..first+r-1`` of head ``h`` of ``qs`` into the contiguous ``q (r, dh)`` (a product's operand)."""
    dh = q.shape[1]
    for i in range(q.shape[0]):
        for c in range(dh):
            q[i, c] = qs[first + i, h * dh + c]


@_inline
def attend_block(qs, kh, vh, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, out, lse, status, first, last):
    """Queries ``first..last-1`` over every key, every head, tile by tile; statuses into ``status``.

    ``kh (heads, n, dh)`` and ``vh (heads, n, dvh)`` are the key and value tables by head
    (:func:`by_heads`); ``out (m, heads * dvh)``, ``lse (m, heads)``.  A row ends :data:`OK`, or
    :data:`NONFINITE` / :data:`EMPTY` for the caller to recompute one query at a time.
    """
    heads, n, dh = kh.shape
    dvh = vh.shape[2]
    rows = last - first
    dt = qs.dtype
    qbuf = np.empty((rows, dh), dt)
    sbuf = np.empty(rows * keys_per_tile, dt)
    pv = np.empty((rows, dvh), dt)
    acc = np.empty((rows, dvh), dt)
    best = np.empty(rows, dt)
    total = np.empty(rows, dt)
    ok = np.ones(rows, np.bool_)
    for h in range(heads):
        pack_head(qs, first, h, qbuf)
        acc[:] = 0
        best[:] = -np.inf
        total[:] = 0
        for start in range(0, n, keys_per_tile):
            stop = min(start + keys_per_tile, n)
            s = sbuf[: rows * (stop - start)].reshape((rows, stop - start))
            scores_tile(qbuf, kh[h, start:stop], keep, keep_mode, bias, bias_mode, scale, first, start, s, ok)
            fold_tile(s, best, total, acc)
            pv_tile(s, vh[h, start:stop], pv)
            for i in range(rows):
                for c in range(dvh):
                    acc[i, c] += pv[i, c]
        for i in range(rows):
            if best[i] == -np.inf:
                ok[i] = False  # nothing to attend over: EMPTY, from the per-query kernel
                continue
            inv = 1 / total[i]
            o = out[first + i, h * dvh : (h + 1) * dvh]
            for c in range(dvh):
                o[c] = acc[i, c] * inv
                if not _is_finite(o[c]):
                    ok[i] = False
            lse[first + i, h] = best[i] + math.log(total[i])
    for i in range(rows):
        status[first + i] = OK if ok[i] else NONFINITE


@_inline
def weights_block(qs, kh, vh, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, w, want_out, out, lse, status,
                  first, last):  # fmt: skip
    """Queries ``first..last-1`` with their weights stored: ``w (m, heads, n)`` gets every score tile
    (one product per tile), each row is a softmax in place, and, when ``want_out``, the output is the
    weights times the values tile by tile.  Statuses as in :func:`attend_block`."""
    heads, n, dh = kh.shape
    dvh = vh.shape[2]
    rows = last - first
    dt = qs.dtype
    qbuf = np.empty((rows, dh), dt)
    sbuf = np.empty(rows * keys_per_tile, dt)
    pv = np.empty((rows, dvh), dt)
    acc = np.empty((rows, dvh), dt)
    ok = np.ones(rows, np.bool_)
    for h in range(heads):
        pack_head(qs, first, h, qbuf)
        for start in range(0, n, keys_per_tile):
            stop = min(start + keys_per_tile, n)
            s = sbuf[: rows * (stop - start)].reshape((rows, stop - start))
            scores_tile(qbuf, kh[h, start:stop], keep, keep_mode, bias, bias_mode, scale, first, start, s, ok)
            for i in range(rows):
                w[first + i, h, start:stop] = s[i]
        for i in range(rows):
            lse[first + i, h] = softmax(w[first + i, h])
            if lse[first + i, h] == -np.inf:
                ok[i] = False  # nothing to attend over: EMPTY, from the per-query kernel
        if not want_out:
            continue
        acc[:] = 0
        for start in range(0, n, keys_per_tile):
            stop = min(start + keys_per_tile, n)
            p = sbuf[: rows * (stop - start)].reshape((rows, stop - start))
            for i in range(rows):
                p[i] = w[first + i, h, start:stop]
            pv_tile(p, vh[h, start:stop], pv)
            for i in range(rows):
                for c in range(dvh):
                    acc[i, c] += pv[i, c]
        for i in range(rows):
            o = out[first + i, h * dvh : (h + 1) * dvh]
            for c in range(dvh):
                o[c] = acc[i, c]
                if not _is_finite(o[c]):
                    ok[i] = False
    for i in range(rows):
        status[first + i] = OK if ok[i] else NONFINITE


@_serial
def many_block(qs, k, v, kh, vh, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, w, want_weights, want_out,
               out, lse, status, first, last):  # fmt: skip
    """Queries ``first..last-1`` of :func:`attend_many_tiled`: tiles, then rows that need it one at a time."""
    if want_weights:
        weights_block(qs, kh, vh, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, w, want_out, out, lse,
                      status, first, last)  # fmt: skip
    else:
        attend_block(qs, kh, vh, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, out, lse, status, first, last)
    heads = kh.shape[0]
    ids = np.empty(0, np.int64)
    scratch = np.empty((0, 0), qs.dtype)
    for i in range(first, last):
        if status[i] != OK:
            if want_weights:
                wi = w[i]
            else:
                if scratch.shape[1] == 0:
                    scratch = np.empty((heads, k.shape[0]), qs.dtype)
                wi = scratch
            ki = keep[i] if keep_mode == 2 else keep[0]
            bi = bias[i] if bias_mode == 2 else bias[0]
            status[i] = attend_row(
                qs[i], k, v, ids, False, ki, keep_mode > 0, bi, bias_mode > 0, heads, scale, wi, out[i], lse[i]
            )


@_parallel
def attend_many_tiled(qs, k, v, kh, vh, keep, keep_mode, bias, bias_mode, scale, rows_per_block, keys_per_tile, w,
                      want_weights, want_out, out, lse, status):  # fmt: skip
    """Many queries ``(m, d)`` over one key set, parallel over blocks of ``rows_per_block`` queries: what
    :func:`~ruvattn.kernels.attention.attend_many` computes.

    ``k``/``v`` are the tables, ``kh``/``vh`` the same by head (:func:`by_heads`), ``lse (m, heads)``.
    With ``want_weights`` the weights go to ``w (m, heads, n)`` (else it is ignored and the weights are
    never stored); ``want_out`` false skips the products with the values (weights only).
    """
    m = qs.shape[0]
    for b in prange((m + rows_per_block - 1) // rows_per_block):
        first = b * rows_per_block
        many_block(qs, k, v, kh, vh, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, w, want_weights,
                   want_out, out, lse, status, first, min(first + rows_per_block, m))  # fmt: skip


@_serial
def flash_block(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, keys_per_tile, out, lse, status, first, last):
    """Queries ``first..last-1`` of :func:`flash_many_tiled`: tiles, then rows that need it by the per-query
    flash loop (``block`` keys per tile, its working memory independent of the keys too)."""
    kh = k.reshape((1, k.shape[0], k.shape[1]))
    vh = v.reshape((1, v.shape[0], v.shape[1]))
    lse2 = lse.reshape((lse.shape[0], 1))
    attend_block(qs, kh, vh, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, out, lse2, status, first, last)
    tile_buf = np.empty(0, qs.dtype)
    for i in range(first, last):
        if status[i] != OK:
            if tile_buf.shape[0] == 0:
                tile_buf = np.empty(block, qs.dtype)
            status[i] = flash_row(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, out, lse, tile_buf, i)


@_parallel
def flash_many_tiled(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, rows_per_block, keys_per_tile, out, lse,
                     status):  # fmt: skip
    """Flash attention for many queries, parallel over blocks of ``rows_per_block`` queries.

    Working memory per block in flight is a few ``rows_per_block x keys_per_tile`` tiles,
    whatever the number of keys; the weights are never stored.
    """
    m = qs.shape[0]
    for b in prange((m + rows_per_block - 1) // rows_per_block):
        first = b * rows_per_block
        flash_block(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, keys_per_tile, out, lse, status, first,
                    min(first + rows_per_block, m))  # fmt: skip
