"""Numba kernels for dot-product attention: the primitives and the fused loops.

Every primitive here has a plain-numpy twin in :mod:`ruvattn.reference` with
the same name and meaning; ``tests/test_kernels.py`` holds them to each other.
The fused kernels (``attend_*``, ``flash_*``) call the primitives, so there is
one dot product, one softmax and one online-softmax step in the package.  The
hyperbolic and graph kernels import them too; :mod:`ruvattn.kernels` makes
Numba's on-disk cache of those modules depend on this file, so a change here
recompiles them.

Conventions shared by the fused kernels
---------------------------------------
* ``heads`` splits the query/key width ``d`` and the value width ``dv`` into
  equal column blocks (``heads = 1`` is plain scaled dot-product attention).
* ``ids``/``use_ids``: when ``use_ids`` is true, key ``j`` is row ``ids[j]`` of
  the key and value tables (an embedding table plus neighbour ids), else row
  ``j``.
* ``keep``/``keep_mode`` and ``bias``/``bias_mode``: 2-D arrays with a mode
  ``0`` (not given), ``1`` (one row shared by every query) or ``2`` (one row per
  query).  ``keep[., j]`` false, or ``bias[., j] == -inf``, removes key ``j``:
  its weight is exactly 0 and its value row is never read.
* The return value (or ``status[i]`` in the batched forms) is :data:`OK`,
  :data:`EMPTY` (nothing left to attend over: the output row is zero and
  ``lse`` is ``-inf``), :data:`NONFINITE` (a score, bias or output was NaN or
  infinite) or :data:`BADID` (an id outside the table).  Kernels never validate their inputs; :mod:`ruvattn._validation`
  does that and turns a status into a typed error.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ruvattn._config import CACHE, FASTMATH, JIT_DISABLED, kernel_njit, parallel_njit

OK = 0
EMPTY = 1
NONFINITE = 2
BADID = 3

_serial = kernel_njit(fastmath=FASTMATH, cache=CACHE, nogil=True)
# Helpers are inlined into their callers at Numba-IR level: no call boundary means no NRT
# reference counting (atomic increments) on the array views passed between them.
_inline = kernel_njit(fastmath=FASTMATH, cache=CACHE, nogil=True, inline="always")
# Parallel kernels are cached too: without it every new process spent ~90 s recompiling
# them (measured); with it a warm start loads everything in under a second.  Their dispatchers
# serialise launches from several Python threads when the threading layer is not threadsafe
# (workqueue would abort the process): see ruvattn._config.parallel_njit.
_parallel = parallel_njit(fastmath=FASTMATH, nogil=True, cache=CACHE)

# --------------------------------------------------------------------------
# Primitives
# --------------------------------------------------------------------------


@_inline
def dot(a, b):
    """``sum_i a[i] * b[i]`` accumulated in the arrays' dtype."""
    s = a.dtype.type(0)
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@_inline
def axpy(alpha, x, y):
    """``y += alpha * x`` in place."""
    for i in range(x.shape[0]):
        y[i] += alpha * x[i]


@_inline
def rows_dot(q, k, ids, use_ids, lo, hi, out):
    """``out[j] = q . k[row_j, lo:hi]`` with ``row_j = ids[j]`` if ``use_ids`` else ``j``.

    Four rows at a time, so each element of ``q`` is loaded once per four keys
    and four independent vector accumulators are in flight.
    """
    n = out.shape[0]
    j = 0
    while j + 4 <= n:
        r0 = ids[j] if use_ids else j
        r1 = ids[j + 1] if use_ids else j + 1
        r2 = ids[j + 2] if use_ids else j + 2
        r3 = ids[j + 3] if use_ids else j + 3
        k0 = k[r0, lo:hi]
        k1 = k[r1, lo:hi]
        k2 = k[r2, lo:hi]
        k3 = k[r3, lo:hi]
        s0 = q.dtype.type(0)
        s1 = s0
        s2 = s0
        s3 = s0
        for c in range(q.shape[0]):
            qc = q[c]
            s0 += qc * k0[c]
            s1 += qc * k1[c]
            s2 += qc * k2[c]
            s3 += qc * k3[c]
        out[j] = s0
        out[j + 1] = s1
        out[j + 2] = s2
        out[j + 3] = s3
        j += 4
    while j < n:
        r = ids[j] if use_ids else j
        out[j] = dot(q, k[r, lo:hi])
        j += 1


@_inline
def rows_axpy(w, v, ids, use_ids, lo, hi, out):
    """``out += sum_j w[j] * v[row_j, lo:hi]``; rows with ``w[j] == 0`` are never read.

    Four rows at a time (one load and store of ``out`` per four value rows).
    """
    n = w.shape[0]
    j = 0
    while j + 4 <= n:
        a0 = w[j]
        a1 = w[j + 1]
        a2 = w[j + 2]
        a3 = w[j + 3]
        if a0 == 0 or a1 == 0 or a2 == 0 or a3 == 0:
            break
        r0 = ids[j] if use_ids else j
        r1 = ids[j + 1] if use_ids else j + 1
        r2 = ids[j + 2] if use_ids else j + 2
        r3 = ids[j + 3] if use_ids else j + 3
        v0 = v[r0, lo:hi]
        v1 = v[r1, lo:hi]
        v2 = v[r2, lo:hi]
        v3 = v[r3, lo:hi]
        for c in range(out.shape[0]):
            out[c] += a0 * v0[c] + a1 * v1[c] + a2 * v2[c] + a3 * v3[c]
        j += 4
    while j < n:
        if w[j] != 0:
            r = ids[j] if use_ids else j
            axpy(w[j], v[r, lo:hi], out)
        j += 1


if JIT_DISABLED:

    def _f32_from_bits(i):
        """The float32 whose bit pattern is the low 32 bits of ``i`` (pure-Python fallback)."""
        return np.array(i, dtype=np.int64).astype(np.int32).view(np.float32)[()]

    def _f64_from_bits(i):
        """The float64 whose bit pattern is ``i`` (pure-Python fallback)."""
        return np.array(i, dtype=np.int64).view(np.float64)[()]

else:

    @intrinsic
    def _f32_from_bits(typingctx, i):
        """The float32 whose bit pattern is the low 32 bits of ``i`` (an LLVM bitcast)."""
        if not isinstance(i, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            v = args[0]
            if v.type.width > 32:
                v = builder.trunc(v, ir.IntType(32))
            return builder.bitcast(v, ir.FloatType())

        return types.float32(i), codegen

    @intrinsic
    def _f64_from_bits(typingctx, i):
        """The float64 whose bit pattern is ``i`` (an LLVM bitcast)."""
        if not isinstance(i, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            v = args[0]
            if v.type.width < 64:
                v = builder.sext(v, ir.IntType(64))
            return builder.bitcast(v, ir.DoubleType())

        return types.float64(i), codegen


@_inline
def exp_sum(x, shift):
    """``x[i] = exp(x[i] - shift)`` in place; returns the sum.

    float32 uses a vectorisable exp (Cody-Waite reduction, degree-6 minimax
    polynomial, the power of two built from its exponent bits; relative error
    < 4e-7, results below float32's smallest normal, ``exp(-87.3365)``, flushed
    to 0); float64 uses ``math.exp``.
    """
    n = x.shape[0]
    total = x.dtype.type(0)
    shift = x.dtype.type(shift)  # a float64 shift would turn the float32 loop into float64 arithmetic
    if x.itemsize == 4:
        for i in range(n):
            t = x[i] - shift
            under = t < np.float32(-87.33654)
            t = min(max(t, np.float32(-87.33654)), np.float32(88.72))
            z = np.floor(t * np.float32(1.4426950408889634) + np.float32(0.5))
            r = t - z * np.float32(0.693359375) - z * np.float32(-2.12194440e-4)
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            p = p * r * r + r + np.float32(1.0)
            e = p * _f32_from_bits((np.int32(z) + np.int32(127)) << np.int32(23))
            e = np.float32(0) if under else e
            x[i] = e
            total += e
    else:
        for i in range(n):
            e = math.exp(x[i] - shift)
            x[i] = e
            total += e
    return total


@_inline
def max_finite(x):
    """``(largest entry, every entry finite)`` of a non-empty contiguous ``x``, in one pass.

    Floats compared as integers: a float's bits with the magnitude bits flipped when the sign is
    set order like the floats (``-inf < ... < -0 < +0 < ... < +inf``), and integer maxima
    vectorise where a float ``max`` (NaN-propagating, no ``nnan`` flag) stays scalar; ``±inf`` and
    NaN are counted by their all-ones exponent.  With a NaN the largest entry is meaningless and the
    flag is False.  The largest entry comes back as float64 (exact).
    """
    if x.itemsize == 4:
        bits = x.view(np.int32)
        top = np.int32(-2147483648)
        bad = np.int32(0)
        for j in range(bits.shape[0]):
            i = bits[j]
            top = max(top, i ^ ((i >> np.int32(31)) & np.int32(0x7FFFFFFF)))
            bad += np.int32((i & np.int32(0x7F800000)) == np.int32(0x7F800000))
        top = top ^ ((top >> np.int32(31)) & np.int32(0x7FFFFFFF))
        return np.float64(_f32_from_bits(top)), bad == 0
    bits64 = x.view(np.int64)
    top64 = np.int64(-9223372036854775807) - np.int64(1)
    bad64 = np.int64(0)
    for j in range(bits64.shape[0]):
        i = bits64[j]
        top64 = max(top64, i ^ ((i >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF)))
        bad64 += np.int64((i & np.int64(0x7FF0000000000000)) == np.int64(0x7FF0000000000000))
    top64 = top64 ^ ((top64 >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))
    return _f64_from_bits(top64), bad64 == 0


@_inline
def max_value(x):
    """Largest entry of a non-empty ``x`` (eight interleaved partial maxima, for ILP)."""
    n = x.shape[0]
    m0 = x[0]
    m1 = m0
    m2 = m0
    m3 = m0
    m4 = m0
    m5 = m0
    m6 = m0
    m7 = m0
    i = 0
    while i + 8 <= n:
        m0 = max(m0, x[i])
        m1 = max(m1, x[i + 1])
        m2 = max(m2, x[i + 2])
        m3 = max(m3, x[i + 3])
        m4 = max(m4, x[i + 4])
        m5 = max(m5, x[i + 5])
        m6 = max(m6, x[i + 6])
        m7 = max(m7, x[i + 7])
        i += 8
    while i < n:
        m0 = max(m0, x[i])
        i += 1
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@_inline
def softmax(x):
    """Max-subtracted softmax of ``x`` in place; returns ``log(sum(exp(x)))``.

    ``-inf`` entries get weight exactly 0.  When every entry is ``-inf`` (or
    ``x`` is empty) ``x`` becomes all zeros and ``-inf`` is returned.
    """
    n = x.shape[0]
    if n == 0:
        return x.dtype.type(-np.inf)
    m = max_value(x)
    if m == -np.inf:
        x[:] = 0
        return m
    total = exp_sum(x, m)
    inv = 1 / total
    for i in range(n):
        x[i] *= inv
    return m + math.log(total)


@_inline
def online_softmax_update(m, total, acc, scores, rows, ids, use_ids):
    """One step of the online (streaming) softmax used by flash attention.

    The state ``(m, total, acc)`` summarises the keys seen so far: running max
    score, ``sum exp(s - m)`` and ``sum exp(s - m) * v``.  This folds in a new
    block of ``scores`` (``-inf`` = masked; overwritten with ``exp(s - m_new)``)
    whose value rows are ``rows[row_j]`` and returns the new ``(m, total)``;
    ``acc`` is updated in place.  At the end ``acc / total`` is the attention
    output and ``m + log(total)`` the log-sum-exp.
    """
    if scores.shape[0] == 0:
        return m, total
    new_m = max(m, max_value(scores))
    if new_m == -np.inf:
        return m, total
    if new_m > m:
        alpha = math.exp(m - new_m)
        total *= alpha
        for c in range(acc.shape[0]):
            acc[c] *= alpha
    total += exp_sum(scores, new_m)
    rows_axpy(scores, rows, ids, use_ids, 0, rows.shape[1], acc)
    return new_m, total


@_serial
def matvec(w, x, b, out):
    """``out = w @ x + b`` (one row of ``x w^T + b``, PyTorch ``nn.Linear`` layout)."""
    for r in range(w.shape[0]):
        out[r] = dot(w[r], x) + b[r]


# --------------------------------------------------------------------------
# Fused attention
# --------------------------------------------------------------------------


@_inline
def _is_finite(x):
    return x > -np.inf and x < np.inf


@_inline
def attend_scores(q, k, ids, use_ids, keep, use_keep, bias, use_bias, heads, scale, s):
    """Scaled scores of ``q`` against the keys, per head, into ``s[h, j]``.

    Removed keys get ``-inf``.  Returns False if a kept score or a bias was NaN
    or infinite (a ``-inf`` bias is a mask, not an error).
    """
    dh = q.shape[0] // heads
    ok = True
    for h in range(heads):
        lo = h * dh
        rows_dot(q[lo : lo + dh], k, ids, use_ids, lo, lo + dh, s[h])
        if not score_row(s[h], scale, keep, use_keep, bias, use_bias):
            ok = False
    return ok


@_inline
def score_row(row, scale, keep, use_keep, bias, use_bias):
    """A row of raw products -> scores in place: ``row * scale + bias``, removed keys ``-inf``.

    ``keep``/``bias`` line up with ``row``.  Returns False when a kept score or a bias is NaN or
    infinite (a ``-inf`` bias removes its key: a mask, not an error).  Without mask and bias,
    NaN/inf is detected through ``sum(s * 0)`` (0 or NaN), which vectorises.
    """
    n = row.shape[0]
    if not use_keep and not use_bias:
        check = row.dtype.type(0)
        for j in range(n):
            sj = row[j] * scale
            row[j] = sj
            check += sj * 0
        return check == 0
    ok = True
    for j in range(n):
        bj = bias[j] if use_bias else row.dtype.type(0)
        if (use_keep and not keep[j]) or (use_bias and bj == -np.inf):
            row[j] = -np.inf
        else:
            sj = row[j] * scale
            if not (_is_finite(sj) and _is_finite(bj)):
                ok = False
            row[j] = sj + bj
    return ok


@_inline
def attend_values(w, v, ids, use_ids, heads, out):
    """``out[head block] = sum_j w[h, j] * v[row_j, head block]``; zero weights skip their row.

    Returns False if the output is NaN or infinite.
    """
    dvh = out.shape[0] // heads
    out[:] = 0
    for h in range(heads):
        lo = h * dvh
        rows_axpy(w[h], v, ids, use_ids, lo, lo + dvh, out[lo : lo + dvh])
    for c in range(out.shape[0]):
        if not _is_finite(out[c]):
            return False
    return True


@_inline
def attend_weights(q, k, ids, use_ids, keep, use_keep, bias, use_bias, heads, scale, w, lse):
    """Attention weights of one query into ``w (heads, n)`` and ``lse (heads,)``; returns a status."""
    if use_ids:
        rows = k.shape[0]
        for j in range(ids.shape[0]):
            if ids[j] < 0 or ids[j] >= rows:
                lse[:] = np.nan
                return BADID
    if not attend_scores(q, k, ids, use_ids, keep, use_keep, bias, use_bias, heads, scale, w):
        lse[:] = np.nan
        return NONFINITE
    status = OK
    for h in range(heads):
        lse[h] = softmax(w[h])
        if lse[h] == -np.inf:
            status = EMPTY
    return status


@_inline
def attend_row(q, k, v, ids, use_ids, keep, use_keep, bias, use_bias, heads, scale, w, out, lse):
    """One query over its keys: weights into ``w (heads, n)``, output, ``lse (heads,)``."""
    status = attend_weights(q, k, ids, use_ids, keep, use_keep, bias, use_bias, heads, scale, w, lse)
    if status == NONFINITE or status == BADID:
        out[:] = np.nan
        return status
    if status == EMPTY:
        out[:] = 0
        return EMPTY
    if not attend_values(w, v, ids, use_ids, heads, out):
        return NONFINITE
    return OK


@_serial
def attend_one(q, k, v, heads, scale, w, out, lse):
    """The fast path: one query, all keys, no mask, no ids (see :func:`attend_row`)."""
    ids = np.empty(0, np.int64)
    keep = np.empty(0, np.bool_)
    return attend_row(q, k, v, ids, False, keep, False, q, False, heads, scale, w, out, lse)


@_inline
def attend_one_transposed(q, kt, vt, heads, scale, w, out, lse):
    """One query over keys and values stored transposed, ``kt (d, n)`` and ``vt (dv, n)``.

    The layout multi-head attention keeps for a projected key set: every loop
    runs along the ``n`` keys, so heads of any width vectorise.  Scores are
    ``rows_axpy`` over the rows of ``kt``; the output is ``rows_dot`` of the
    weights with the rows of ``vt`` (the same primitives, roles swapped).
    """
    n = kt.shape[1]
    dh = q.shape[0] // heads
    dvh = out.shape[0] // heads
    no_ids = np.empty(0, np.int64)
    check = q.dtype.type(0)
    status = OK
    for h in range(heads):
        s = w[h]
        s[:] = 0
        rows_axpy(q[h * dh : (h + 1) * dh], kt[h * dh : (h + 1) * dh], no_ids, False, 0, n, s)
        for j in range(n):
            sj = s[j] * scale
            s[j] = sj
            check += sj * 0
        if check != 0:
            out[:] = np.nan
            lse[:] = np.nan
            return NONFINITE
        lse[h] = softmax(s)
        if lse[h] == -np.inf:
            status = EMPTY
    if status == EMPTY:
        out[:] = 0
        return EMPTY
    for h in range(heads):
        rows_dot(w[h], vt[h * dvh : (h + 1) * dvh], no_ids, False, 0, n, out[h * dvh : (h + 1) * dvh])
    for c in range(out.shape[0]):
        if not _is_finite(out[c]):
            return NONFINITE
    return OK


@_serial
def multi_head_one(x, wq, bq, kt, vt, wo, bo, heads, scale, w, buf):
    """``torch.nn.MultiheadAttention`` for one query over projected, transposed keys/values.

    ``buf (3d + heads,)`` receives ``q = wq x + bq`` | the head outputs (from
    :func:`attend_one_transposed`) | ``out = wo heads_out + bo`` | the per-head
    lse.  One call from Python for the whole layer.
    """
    d = x.shape[0]
    q = buf[:d]
    heads_out = buf[d : 2 * d]
    matvec(wq, x, bq, q)
    status = attend_one_transposed(q, kt, vt, heads, scale, w, heads_out, buf[3 * d :])
    if status == OK:
        matvec(wo, heads_out, bo, buf[2 * d : 3 * d])
    return status


@_serial
def attend_ids(q, k, v, ids, scale, out):
    """One query over rows ``ids`` of the key/value tables, one head, no mask or bias (a short argument
    list: the cheapest call from Python for a few dozen keys); returns a status."""
    w = np.empty((1, ids.shape[0]), q.dtype)
    lse = np.empty(1, q.dtype)
    keep = np.empty(0, np.bool_)
    return attend_row(q, k, v, ids, True, keep, False, q, False, 1, scale, w, out, lse)


@_serial
def attend_one_general(q, k, v, ids, use_ids, keep, use_keep, bias, use_bias, heads, scale, w, out, lse):
    """One query with optional ids, keep-mask and additive bias (see :func:`attend_row`)."""
    return attend_row(q, k, v, ids, use_ids, keep, use_keep, bias, use_bias, heads, scale, w, out, lse)


@_inline
def widest_row(indptr, first, last):
    """The longest of rows ``first..last-1`` of a CSR ``indptr`` (sizes a chunk's scratch buffer once)."""
    widest = 0
    for i in range(first, last):
        widest = max(widest, indptr[i + 1] - indptr[i])
    return widest


CHUNK = 64  # at most this many nodes (or queries) per parallel task; a task allocates its scratch once


def chunk_size(n: int) -> int:
    """Rows per parallel task (plain Python, called before a parallel kernel): at most
    :data:`CHUNK`, and at least 4 tasks per Numba thread when there is enough work.
    (Passed in as an argument: ``numba.get_num_threads()`` inside a kernel would stop it caching.)"""
    per = -(-n // (4 * numba.get_num_threads()))
    return max(1, min(CHUNK, per))


@_serial
def many_chunk(
    qs, k, v, keep, keep_mode, bias, bias_mode, heads, scale, w, want_weights, out, lse, status, first, last
):
    """Queries ``first..last-1`` of :func:`attend_many`, one scratch buffer for the whole chunk."""
    n = k.shape[0]
    ids = np.empty(0, np.int64)
    scratch = np.empty((heads, n), qs.dtype)
    for i in range(first, last):
        wi = w[i] if want_weights else scratch
        ki = keep[i] if keep_mode == 2 else keep[0]
        bi = bias[i] if bias_mode == 2 else bias[0]
        status[i] = attend_row(
            qs[i], k, v, ids, False, ki, keep_mode > 0, bi, bias_mode > 0, heads, scale, wi, out[i], lse[i]
        )


@_parallel
def attend_many(qs, k, v, keep, keep_mode, bias, bias_mode, heads, scale, w, want_weights, out, lse, status, size):
    """Many queries over one key set, parallel over chunks of ``size`` queries
    (see :func:`chunk_size`).

    ``w`` is ``(m, heads, n)`` when ``want_weights`` else ignored (a chunk then
    reuses one private ``(heads, n)`` buffer).
    """
    m = qs.shape[0]
    for c in prange((m + size - 1) // size):
        first = c * size
        many_chunk(qs, k, v, keep, keep_mode, bias, bias_mode, heads, scale, w, want_weights, out, lse, status,
                   first, min(first + size, m))  # fmt: skip


@_serial
def csr_chunk(qs, k, v, indptr, indices, heads, scale, w, want_weights, out, lse, status, first, last):
    """Nodes ``first..last-1`` of :func:`attend_csr`, one scratch buffer for the whole chunk.

    A serial kernel of its own: the parallel loop only hands out chunks, so it
    compiles quickly, and everything per node is inlined here.
    """
    keep = np.empty(0, np.bool_)
    widest = widest_row(indptr, first, last)
    scratch = np.empty(heads * widest, qs.dtype)
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        if want_weights:
            wi = w[heads * lo : heads * hi].reshape((heads, hi - lo))
        else:
            wi = scratch[: heads * (hi - lo)].reshape((heads, hi - lo))
        status[i] = attend_row(
            qs[i], k, v, indices[lo:hi], True, keep, False, qs[i], False, heads, scale, wi, out[i], lse[i]
        )


@_parallel
def attend_csr(qs, k, v, indptr, indices, heads, scale, w, want_weights, out, lse, status, size):
    """Each node ``i`` over its own neighbour rows ``indices[indptr[i]:indptr[i+1]]``.

    Parallel over chunks of nodes (``size`` rows each, see :func:`chunk_size`; :func:`csr_chunk`).  When
    ``want_weights``, ``w`` is a flat ``(heads * nnz,)`` array holding, for node
    ``i``, a ``(heads, degree_i)`` block at ``heads * indptr[i]``; otherwise it
    is ignored.  A node without neighbours gets a zero output row,
    ``lse = -inf`` and status :data:`EMPTY`.
    """
    n = qs.shape[0]
    for c in prange((n + size - 1) // size):
        first = c * size
        csr_chunk(qs, k, v, indptr, indices, heads, scale, w, want_weights, out, lse, status, first,
                  min(first + size, n))  # fmt: skip


@_inline
def flash_row(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, out, lse, tile_buf, i):
    """Query ``i`` streamed over the keys in blocks of ``block`` (``tile_buf`` holds one block of
    scores); output into ``out[i]``, log-sum-exp into ``lse[i]``; returns a status."""
    n = k.shape[0]
    ids = np.empty(0, np.int64)
    acc = out[i]
    acc[:] = 0
    m = qs.dtype.type(-np.inf)
    total = qs.dtype.type(0)
    ok = True
    ki = keep[i] if keep_mode == 2 else keep[0]
    bi = bias[i] if bias_mode == 2 else bias[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        t = tile_buf[: stop - start].reshape((1, stop - start))
        ok_tile = attend_scores(
            qs[i],
            k[start:stop],
            ids,
            False,
            ki[start:stop] if keep_mode > 0 else ki,
            keep_mode > 0,
            bi[start:stop] if bias_mode > 0 else bi,
            bias_mode > 0,
            1,
            scale,
            t,
        )
        ok = ok and ok_tile
        m, total = online_softmax_update(m, total, acc, t[0], v[start:stop], ids, False)
    if not ok:
        acc[:] = np.nan
        lse[i] = np.nan
        return NONFINITE
    if m == -np.inf:
        acc[:] = 0
        lse[i] = -np.inf
        return EMPTY
    inv = 1 / total
    finite = True
    for c in range(acc.shape[0]):
        acc[c] *= inv
        if not _is_finite(acc[c]):
            finite = False
    lse[i] = m + math.log(total)
    return OK if finite else NONFINITE


@_serial
def flash_chunk(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, out, lse, status, first, last):
    """Queries ``first..last-1`` of :func:`flash_many`, sharing one score tile."""
    tile_buf = np.empty(block, qs.dtype)
    for i in range(first, last):
        status[i] = flash_row(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, out, lse, tile_buf, i)


@_parallel
def flash_many(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, out, lse, status, size):
    """Tiled exact attention: each query streams the keys in blocks of ``block``.

    Parallel over chunks of queries (``size`` rows each, see :func:`chunk_size`; :func:`flash_chunk`).
    Working memory is one ``block``-long score tile per chunk in flight,
    whatever the number of keys; the weights are never stored.
    """
    m = qs.shape[0]
    for c in prange((m + size - 1) // size):
        first = c * size
        flash_chunk(qs, k, v, keep, keep_mode, bias, bias_mode, scale, block, out, lse, status, first,
                    min(first + size, m))  # fmt: skip
