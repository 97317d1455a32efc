"""Tiled many-query attention: blocks of queries against blocks of keys, products by BLAS.

Many queries over one key set are two matrix products, ``S = Q Kᵀ`` and ``O = P V``; reading
each key and value row once per *block* of queries instead of once per query is what takes
them from the memory limit to the arithmetic limit.  The building blocks:

* :func:`qk_tile` / :func:`pv_tile`: the two products of one tile by
  :func:`ruvattn.kernels.blas.gemm` (the BLAS ``sgemm``/``dgemm`` SciPy ships, OpenBLAS in its
  wheels), on views of the tables as they are: one head's columns of a ``(n, heads * w)`` table
  are used in place, the score scale is the product's ``alpha`` and ``P V`` accumulates into the
  output rows (``beta = 1``), so no copy, scaling or adding pass sits between the products;
* :func:`scores_tile`: one ``Q Kᵀ`` product, then, with a mask or bias, the per-query kernels' own
  :func:`~ruvattn.kernels.attention.score_row`; each row's largest score and finiteness in one
  vectorised integer pass (:func:`~ruvattn.kernels.attention.max_finite`);
* :func:`fold_tile`: the online-softmax step for the rows of a tile (running max, sum, and the
  rescaled accumulator), with the float32 exp of :func:`~ruvattn.kernels.attention.exp_sum`;
* :func:`attend_block`: one block of queries through every key tile and every head, the
  working memory one ``rows x keys`` score tile whatever the number of keys;
  :func:`weights_block`: the same with the weights stored (the weights forms and dropout).

The backward products of the training issue are the same calls with a transposed operand
(``gemm(True, False, ...)`` for ``dSᵀ Q`` and ``Pᵀ dO``).

Threads.  The parallel kernels here hand out query blocks to Numba's threads and every product
must run on the thread that calls it: BLAS threads inside Numba threads oversubscribe the cores
(on a loaded 2-core machine a 64 x 256 x 64 product went from 10 µs to 1,100 µs).  Callers launch
them inside :func:`ruvattn._blas.one_thread`, which pins the BLAS to one thread.  A batch of one
block runs its serial kernel (:func:`many_block`, :func:`flash_block`) on the calling thread with the
BLAS as the user set it, as a numpy product would (results agree to rounding whatever the BLAS's
threads: OpenBLAS's SkylakeX kernels split rows and columns, never a sum, and keep the bits; its Haswell
kernels changed float32 results by up to 5e-8 between 1 and 2 threads).  Where pinning is not possible, OpenBLAS
still runs a product whose ``m * n * k`` is at most 65,536 x 4
(``SMP_THRESHOLD_MIN x GEMM_MULTITHREAD_THRESHOLD``, interface/gemm.c) on the calling thread, and
:func:`tile_shape` keeps every product within :data:`GEMM_BUDGET`.  The block shape depends on the
widths and the batch size, never on the thread count, so results are the same on any number of threads.

Exactness.  A tile's scores, weights and outputs are the same formula as the per-query kernels,
summed in another order (float rounding apart).  Two things a product cannot do as the per-query
kernels do: skip the value row of a zero weight (``0 * nan`` is NaN) and report a row that
overflowed.  So every row whose tiled result is not finite, and every row with nothing left to
attend over, is left with status :data:`~ruvattn.kernels.attention.NONFINITE` or
:data:`~ruvattn.kernels.attention.EMPTY` here and computed again by the caller's per-query
kernel, whose answer (and status) stands.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import prange

from ruvattn.kernels.attention import (
    NONFINITE,
    OK,
    _inline,
    _parallel,
    _serial,
    attend_row,
    exp_sum,
    flash_row,
    max_finite,
    score_row,
)
from ruvattn.kernels.blas import gemm

#: Largest ``m * n * k`` of one tile product when the BLAS cannot be pinned to one thread: OpenBLAS runs
#: products up to this size on the calling thread.
GEMM_BUDGET = 65536 * 4
#: Query rows per block of a small batch (more for large batches; fewer when the widths are large and the
#: BLAS is not pinned, see :func:`tile_shape`).
BLOCK_ROWS = 64
#: Fewest queries for which the tiled kernels beat one query at a time (measured, see benchmarks).
MIN_QUERIES = 8


def tile_shape(
    d: int, dv: int, keys: int | None = None, pinned: bool | None = None, queries: int | None = None
) -> tuple[int, int]:
    """``(rows, keys)`` of a tile for per-head widths ``d`` (queries/keys) and ``dv`` (values), and
    ``queries`` queries in the batch.

    With the BLAS pinned to one thread (``pinned``; default :data:`ruvattn._blas.PINNED`): blocks of
    64 rows up to 255 queries, then 64 more rows per 128 queries up to 256 rows (bigger products run
    closer to the BLAS's peak, and a batch keeps at least two blocks for two threads); 256 keys per
    tile with 64 rows and 512 with more (fewer when ``keys x width`` would pass 2**18, a quarter of a
    1 MiB L2).  Measured on 2026-12-03 (one thread, float32, widths 32-256, 64-1,000 queries): within
    2 % of the best of nine shapes at every size, see ``docs/benchmarks.md``.  Otherwise (the BLAS
    not pinned) both products of a tile, ``rows x keys x d`` and ``rows x dv x keys``, stay within
    :data:`GEMM_BUDGET` where they can.  ``keys`` given (flash attention's ``block_size``) is kept
    and the rows fitted to it.  The shape never depends on the thread count, so results are the
    same on any number of threads.
    """
    if pinned is None:
        pinned = _pinned()
    return _tile_shape(d, dv, keys, pinned, min(max(queries or 0, 0) // 128, 4))


@functools.cache
def _pinned() -> bool:
    """:data:`ruvattn._blas.PINNED` (imported here: the kernels' cache stamp follows module-level imports only)."""
    from ruvattn._blas import PINNED

    return PINNED


@functools.lru_cache(maxsize=1024)
def _tile_shape(d: int, dv: int, keys: int | None, pinned: bool, size: int) -> tuple[int, int]:
    width = max(d, dv, 1)
    if pinned:
        rows = BLOCK_ROWS * max(1, size)
        if keys is not None:
            return rows, keys
        keys = max(16, min(256 if rows == BLOCK_ROWS else 512, (1 << 18) // width))
        return rows, keys - keys % 16
    half = BLOCK_ROWS // 2
    if keys is not None:
        return max(1, min(half, GEMM_BUDGET // (keys * width))), keys
    rows = half
    keys = GEMM_BUDGET // (rows * width)
    if keys < 16:
        keys = 16
        rows = max(1, GEMM_BUDGET // (keys * width))
    return rows, min(512, keys - keys % 16)


@_inline
def qk_tile(q, k, scale, s):
    """``s = scale * q @ k.T`` for ``q (r, d)``, ``k (c, d)`` and ``s (r, c)`` (one BLAS product; views
    with unit column stride, e.g. one head's columns of a wider table)."""
    gemm(False, True, scale, q, k, 0.0, s)


@_inline
def pv_tile(p, v, accumulate, out):
    """``out = p @ v``, or ``out += p @ v`` when ``accumulate``, for ``p (r, c)``, ``v (c, dv)`` (one BLAS product)."""
    gemm(False, False, 1.0, p, v, 1.0 if accumulate else 0.0, out)


@_inline
def fold_tile(s, top, best, total, acc, accumulated):
    """Online-softmax step for every row ``i`` of a score tile ``s (r, c)`` whose largest entry is ``top[i]``.

    ``(best[i], total[i], acc[i])`` summarise the keys seen so far: running max score,
    ``sum exp(s - best)`` and (after the caller's :func:`pv_tile`) ``sum exp(s - best) v``.
    Rescales ``total`` and, when ``accumulated`` (an earlier tile's product is in it), ``acc`` when the
    max rises, and overwrites ``s`` with ``exp(s - best_new)`` (zero rows while a row has seen only removed keys).
    """
    for i in range(s.shape[0]):
        row = s[i]
        new = max(best[i], top[i])
        if new == -np.inf:
            row[:] = 0
            continue
        if new > best[i]:
            alpha = math.exp(best[i] - new)
            total[i] *= alpha
            if accumulated:
                for c in range(acc.shape[1]):
                    acc[i, c] *= alpha
            best[i] = new
        total[i] += exp_sum(row, new)


@_inline
def scores_tile(q, k, keep, keep_mode, bias, bias_mode, scale, first, start, s, top, ok):
    """Scores of the queries ``q (r, dh)`` (rows ``first..``) against the key tile ``k`` starting at key
    ``start``, into ``s (r, c)``: one product with the scale folded in, then the query's (or the shared)
    mask and bias by :func:`~ruvattn.kernels.attention.score_row`; ``top[i]`` gets the row's largest
    score and ``ok[i]`` turns False on a NaN/inf score or bias."""
    stop = start + s.shape[1]
    qk_tile(q, k, scale, s)
    one = s.dtype.type(1)
    for i in range(s.shape[0]):
        if keep_mode == 0 and bias_mode == 0:
            top[i], fine = max_finite(s[i])
        else:
            ki = keep[first + i] if keep_mode == 2 else keep[0]
            bi = bias[first + i] if bias_mode == 2 else bias[0]
            fine = score_row(
                s[i],
                one,
                ki[start:stop] if keep_mode > 0 else ki,
                keep_mode > 0,
                bi[start:stop] if bias_mode > 0 else bi,
                bias_mode > 0,
            )
            top[i] = max_finite(s[i])[0]
        if not fine:
            ok[i] = False


@_inline
def attend_block(qs, k, v, heads, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, out, lse, status, first,
                 last):  # fmt: skip
    """Queries ``first..last-1`` over every key, every head, tile by tile; statuses into ``status``.

    Head ``h`` is the column block ``h`` of ``qs``, ``k``, ``v`` and ``out (m, dv)``, used in place;
    the output rows are the accumulator of the ``P V`` products.  ``lse (m, heads)``.  A row ends
    :data:`OK`, or :data:`NONFINITE` (an :data:`EMPTY` row too) for the caller to recompute one query at a time.
    """
    n = k.shape[0]
    dh = k.shape[1] // heads
    dvh = v.shape[1] // heads
    rows = last - first
    dt = qs.dtype
    sbuf = np.empty(rows * keys_per_tile, dt)
    top = np.empty(rows, dt)
    best = np.empty(rows, dt)
    total = np.empty(rows, dt)
    ok = np.ones(rows, np.bool_)
    for h in range(heads):
        q = qs[first:last, h * dh : (h + 1) * dh]
        acc = out[first:last, h * dvh : (h + 1) * dvh]
        best[:] = -np.inf
        total[:] = 0
        if n == 0:
            acc[:] = 0
        for start in range(0, n, keys_per_tile):
            stop = min(start + keys_per_tile, n)
            s = sbuf[: rows * (stop - start)].reshape((rows, stop - start))
            scores_tile(q, k[start:stop, h * dh : (h + 1) * dh], keep, keep_mode, bias, bias_mode, scale, first,
                        start, s, top, ok)  # fmt: skip
            fold_tile(s, top, best, total, acc, start > 0)
            pv_tile(s, v[start:stop, h * dvh : (h + 1) * dvh], start > 0, acc)
        for i in range(rows):
            if best[i] == -np.inf:
                ok[i] = False  # nothing to attend over: EMPTY, from the per-query kernel
                continue
            inv = 1 / total[i]
            check = dt.type(0)  # NaN/inf through sum(x * 0), which vectorises (a branch per entry does not)
            for c in range(dvh):
                acc[i, c] *= inv
                check += acc[i, c] * 0
            if check != 0:
                ok[i] = False
            lse[first + i, h] = best[i] + math.log(total[i])
    for i in range(rows):
        status[first + i] = OK if ok[i] else NONFINITE


@_inline
def weights_block(qs, k, v, heads, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, w, want_out, out, lse,
                  status, first, last):  # fmt: skip
    """Queries ``first..last-1`` with their weights stored: each head's score tiles go straight into
    ``w[first:last, h] (rows, n)``, each row is a softmax in place, and, when ``want_out``, the output
    block is those weights times the head's values, tile by tile.  Statuses as in :func:`attend_block`."""
    n = k.shape[0]
    dh = k.shape[1] // heads
    dvh = v.shape[1] // heads
    rows = last - first
    dt = qs.dtype
    top = np.empty(rows, dt)
    rowmax = np.empty(rows, dt)
    ok = np.ones(rows, np.bool_)
    for h in range(heads):
        wb = w[first:last, h]
        q = qs[first:last, h * dh : (h + 1) * dh]
        rowmax[:] = -np.inf
        for start in range(0, n, keys_per_tile):
            stop = min(start + keys_per_tile, n)
            scores_tile(q, k[start:stop, h * dh : (h + 1) * dh], keep, keep_mode, bias, bias_mode, scale, first,
                        start, wb[:, start:stop], top, ok)  # fmt: skip
            for i in range(rows):
                rowmax[i] = max(rowmax[i], top[i])
        for i in range(rows):
            row = wb[i]
            if rowmax[i] == -np.inf:
                row[:] = 0
                lse[first + i, h] = -np.inf
                ok[i] = False  # nothing to attend over: EMPTY, from the per-query kernel
                continue
            total = exp_sum(row, rowmax[i])
            inv = 1 / total
            for j in range(n):
                row[j] *= inv
            lse[first + i, h] = rowmax[i] + math.log(total)
        if not want_out:
            continue
        o = out[first:last, h * dvh : (h + 1) * dvh]
        if n == 0:
            o[:] = 0
        for start in range(0, n, keys_per_tile):
            stop = min(start + keys_per_tile, n)
            pv_tile(wb[:, start:stop], v[start:stop, h * dvh : (h + 1) * dvh], start > 0, o)
        for i in range(rows):
            check = dt.type(0)
            for c in range(dvh):
                check += o[i, c] * 0
            if check != 0:
                ok[i] = False
    for i in range(rows):
        status[first + i] = OK if ok[i] else NONFINITE


@_serial
def many_block(qs, k, v, heads, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, w, want_weights, want_out,
               out, lse, status, first, last):  # fmt: skip
    """Queries ``first..last-1`` of :func:`attend_many_tiled`: tiles, then rows that need it one at a time;
    returns how many rows end with a status other than :data:`OK`."""
    if want_weights:
        weights_block(qs, k, v, heads, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, w, want_out, out,
                      lse, status, first, last)  # fmt: skip
    else:
        attend_block(qs, k, v, heads, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, out, lse, status,
                     first, last)  # fmt: skip
    ids = np.empty(0, np.int64)
    scratch = np.empty((0, 0), qs.dtype)
    bad = 0
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
            if status[i] != OK:
                bad += 1
    return bad


@_parallel
def attend_many_tiled(qs, k, v, heads, keep, keep_mode, bias, bias_mode, scale, rows_per_block, keys_per_tile, w,
                      want_weights, want_out, out, lse, status):  # fmt: skip
    """Many queries ``(m, d)`` over one key set, parallel over blocks of ``rows_per_block`` queries: what
    :func:`~ruvattn.kernels.attention.attend_many` computes.

    ``heads`` splits the widths into column blocks, each used in place; ``lse (m, heads)``.  With
    ``want_weights`` the weights go to ``w (m, heads, n)`` (else it is ignored and the weights are
    never stored); ``want_out`` false skips the products with the values (weights only).
    """
    m = qs.shape[0]
    for b in prange((m + rows_per_block - 1) // rows_per_block):
        first = b * rows_per_block
        many_block(qs, k, v, heads, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, w, want_weights,
                   want_out, out, lse, status, first, min(first + rows_per_block, m))  # fmt: skip


@_serial
def flash_block(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, keys_per_tile, out, lse, status, first,
                last):  # fmt: skip
    """Queries ``first..last-1`` of :func:`flash_many_tiled`: tiles of ``keys_per_tile`` keys, then rows that
    need it by the per-query flash loop over blocks of ``block`` keys (its working memory independent of
    the keys too); returns how many rows end with a status other than :data:`OK`."""
    lse2 = lse.reshape((lse.shape[0], 1))
    attend_block(qs, k, v, 1, keep, keep_mode, bias, bias_mode, scale, keys_per_tile, out, lse2, status, first, last)
    tile_buf = np.empty(0, qs.dtype)
    bad = 0
    for i in range(first, last):
        if status[i] != OK:
            if tile_buf.shape[0] == 0:
                tile_buf = np.empty(block, qs.dtype)
            status[i] = flash_row(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, out, lse, tile_buf, i)
            if status[i] != OK:
                bad += 1
    return bad


@_parallel
def flash_many_tiled(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, rows_per_block, keys_per_tile, out, lse,
                     status):  # fmt: skip
    """Flash attention for many queries, parallel over blocks of ``rows_per_block`` queries.

    Working memory per block in flight is one ``rows_per_block x keys_per_tile`` score tile and a few
    rows, whatever the number of keys; the weights are never stored.
    """
    m = qs.shape[0]
    for b in prange((m + rows_per_block - 1) // rows_per_block):
        first = b * rows_per_block
        flash_block(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, keys_per_tile, out, lse, status, first,
                    min(first + rows_per_block, m))  # fmt: skip
