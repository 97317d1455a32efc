r"""Numba kernels for linear attention: elu(x)+1 features (Katharopoulos et al. 2020) and FAVOR+ (Performer).

Every kernel here has a plain-numpy float64 twin of the same name in
:mod:`ruvattn.reference.linear`; ``tests/test_linear.py`` holds them to each
other.  The dot products, the vectorised exponential and the row loops are the
shared primitives of :mod:`ruvattn.kernels.attention` (``rows_dot``,
``rows_axpy``, ``exp_sum``, ``max_value``, ``dot``), imported, not re-written;
the cache locator of :mod:`ruvattn.kernels` makes this module's cached code
depend on that file too.

Features
--------
``kind`` selects the feature map, of width ``F``:

* :data:`ELU`: ``φ(x) = elu(x) + 1`` elementwise (``F = d``);
* :data:`FAVOR`: positive random features ``φ(x)_r = exp(w_r·x̃ − |x̃|²/2) / sqrt(F)``
  with ``x̃ = x·d^(−1/4)``.  The kernels take ``w (F, d)`` **with** ``d^(−1/4)``
  folded in and ``half = 1/(2 sqrt(d))``, so the exponent of row ``x`` is
  ``a_r = w_r·x − half·|x|²``.  (For :data:`ELU`, ``w`` is an unused ``(0, d)`` array.)

The key/value summary
---------------------
The linear-attention output of a query is
``out = Σ_r φ(q)_r S_r / Σ_r φ(q)_r z_r`` with ``S = Σ_j φ(k_j) v_jᵀ (F, dv)`` and
``z = Σ_j φ(k_j) (F,)``.  FAVOR+ exponents span hundreds of units for ordinary
inputs (``|x̃|² = sqrt(d)`` for N(0, 1) entries), so ``exp`` of them overflows and
the products underflow, in float32 especially.  The Performer code subtracts one
common maximum from every key exponent; these kernels go one step further and
keep, **per feature** ``r``, its own shift ``c_r = max_j a_jr``:

* ``S_r = Σ_j exp(a_jr − c_r) v_j``, ``z_r = Σ_j exp(a_jr − c_r)`` (so ``z_r ≥ 1``: the
  maximising key contributes exactly 1), ``log_norm_r = c_r + log z_r``; the
  textbook sums are ``S_r·exp(c_r)/sqrt(F)`` and ``z_r·exp(c_r)/sqrt(F)``;
* a query with exponents ``b_r`` uses ``u_r = exp(b_r + c_r − C)`` with
  ``C = max_r (b_r + log_norm_r)``, and ``out = Σ_r u_r S_r / Σ_r u_r z_r``.  Every
  ``u_r ≤ 1/z_r ≤ 1`` and the denominator is ``≥ 1`` (the maximising feature gives
  ``u_r z_r = 1``): nothing overflows and the normaliser cannot underflow, in either
  dtype.  The shifts cancel exactly: the result is the textbook ratio.

Keys are processed in blocks of :data:`BLOCK`: one block's exponents are laid out
feature-major ``(F, BLOCK)`` (one BLAS product ``W K_bᵀ``, :func:`ruvattn.kernels.blas.gemm`),
shifted by the block's own per-feature maximum, exponentiated, multiplied into the block's
``S_b = A V_b`` (a second product) in the input dtype, then merged into float64 running
sums with a log-sum-exp rescale (as the online softmax merges tiles).  Many queries against
one summary are two products per block of :data:`QUERY_ROWS` too (``Q Wᵀ``, then ``U S``).  ELU features
need no shift (``c_r = 0``); a denominator ``φ(q)·z`` that underflows to 0 (query
entries below the dtype's ``log`` of the smallest normal) is reported as
:data:`UNDERFLOW`.

Status codes are those of :mod:`ruvattn.kernels.attention` (:data:`OK`, :data:`EMPTY`:
no key left, :data:`NONFINITE`: a NaN/inf input or an overflow) plus :data:`UNDERFLOW`.
Kernels do not validate their inputs; :mod:`ruvattn.mechanisms.linear` does.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ruvattn.kernels.attention import (
    EMPTY,
    NONFINITE,
    OK,
    _inline,
    _is_finite,
    _parallel,
    _serial,
    dot,
    exp_sum,
    max_value,
    rows_axpy,
    rows_dot,
)
from ruvattn.kernels.blas import gemm

__all__ = [
    "BLOCK",
    "ELU",
    "FAVOR",
    "QUERY_ROWS",
    "UNDERFLOW",
    "features",
    "finish_coeffs",
    "finish_summary",
    "forward_one",
    "neighbours_chunk",
    "neighbours_many",
    "query_chunk",
    "query_many",
    "query_one",
    "summary_chunk",
    "summary_many",
    "summary_parts",
    "weights_one",
]

ELU = 0
FAVOR = 1
UNDERFLOW = 4  # the normaliser Σ_r φ(q)_r z_r underflowed to 0 (elu+1 only; FAVOR+'s is ≥ 1 by construction)
BLOCK = 256  # keys per block of the summary: one (F, BLOCK) exponent tile, merged into float64 sums
QUERY_ROWS = 64  # queries per block of query_chunk: one (QUERY_ROWS, F) coefficient tile

# the largest exponent whose exp is finite, per itemsize (raw features only: everything else is shifted)
_LOG_MAX32 = 88.72
_LOG_MAX64 = 709.78


# --------------------------------------------------------------------------
# Feature maps
# --------------------------------------------------------------------------


@_inline
def elu_plus_one(x, out):
    """``out[i] = elu(x[i]) + 1`` (``x + 1`` for ``x > 0``, else ``exp(x)``); ``x`` and ``out`` distinct.

    Branch-free: ``exp(min(x, 0)) + max(x, 0)`` with the vectorised ``exp_sum``.
    """
    zero = out.dtype.type(0)
    for i in range(x.shape[0]):
        out[i] = min(x[i], zero)
    exp_sum(out, zero)
    for i in range(x.shape[0]):
        out[i] += max(x[i], zero)


@_inline
def favor_exponents(x, w, half, out):
    """``out[r] = w[r]·x − half·|x|²`` (the FAVOR+ exponent of one row, ``d^(−1/4)`` folded into ``w``)."""
    rows_dot(x, w, np.empty(0, np.int64), False, 0, x.shape[0], out)
    sq = dot(x, x) * half
    for r in range(out.shape[0]):
        out[r] -= sq


@_serial
def features(x, w, kind, half, out):
    """Raw (unshifted) features of every row of ``x (n, d)`` into ``out (n, F)``, as defined above.

    Returns :data:`NONFINITE` if an input is NaN/inf or a feature would overflow the
    dtype (a FAVOR+ exponent above ``log(max)``; the attention kernels never form
    these raw values), else :data:`OK`.
    """
    n, width = out.shape
    zero = out.dtype.type(0)
    log_max = _LOG_MAX32 if out.itemsize == 4 else _LOG_MAX64
    inv = out.dtype.type(1.0 / math.sqrt(max(width, 1)))
    check = zero
    for j in range(n):
        row = out[j]
        if kind == FAVOR:
            favor_exponents(x[j], w, half, row)
            for r in range(width):
                check += row[r] * zero
            if check != 0 or max_value(row) > log_max:
                return NONFINITE
            exp_sum(row, zero)
            for r in range(width):
                row[r] *= inv
        else:
            for i in range(width):
                check += x[j, i] * zero
            elu_plus_one(x[j], row)  # finite for finite x: x + 1 cannot overflow
    return OK if check == 0 else NONFINITE


# --------------------------------------------------------------------------
# The key/value summary
# --------------------------------------------------------------------------


@_serial
def summary_chunk(k, v, ids, use_ids, keep, use_keep, lo, hi, w, kind, half, s, z, c):
    """The summary of keys at positions ``lo..hi-1`` into float64 ``s (F, dv)``, ``z (F,)``, ``c (F,)``.

    Position ``j`` is row ``ids[j]`` of ``k``/``v`` when ``use_ids``, else row ``j``;
    with ``use_keep`` only positions with ``keep[j]`` count (a removed key's value row
    is never read).  ``s_r = Σ_j exp(a_jr − c_r) v_j``, ``z_r = Σ_j exp(a_jr − c_r)``
    with ``c_r = max_j a_jr`` (FAVOR+; ``-inf`` when no key is kept) or ``c_r = 0`` and
    the elu+1 features in place of the exponentials.  Returns ``(status, kept keys)``;
    status :data:`NONFINITE` when a kept key is NaN/inf (values are checked by
    :func:`finish_summary`).

    A block's exponents ``A = W K_bᵀ (F, nb)`` and its sums ``A V_b (F, dv)`` are two BLAS products
    (:func:`~ruvattn.kernels.blas.gemm`); the block's rows are used in place, or gathered into a
    contiguous buffer when they come by id or some of them are removed.
    """
    width, dv = s.shape
    d = k.shape[1]
    dt = k.dtype
    zero = dt.type(0)
    favor = kind == FAVOR
    a = np.empty((width, BLOCK), dt)
    g = np.empty((width if not favor else 0, BLOCK), dt)
    kb = np.empty((BLOCK, d), dt)
    vb = np.empty((BLOCK, dv), dt)
    sel = np.empty(BLOCK, np.int64)
    nrm = np.empty(BLOCK, dt)
    sb = np.empty((width, dv), dt)
    tops = np.empty(width, dt)
    zbs = np.empty(width, dt)
    s[:] = 0
    z[:] = 0
    c[:] = -np.inf if favor else 0.0
    check = zero
    kept = 0
    for start in range(lo, hi, BLOCK):
        stop = min(start + BLOCK, hi)
        nb = 0
        for j in range(start, stop):
            if not use_keep or keep[j]:
                sel[nb] = ids[j] if use_ids else j
                nb += 1
        kept += nb
        if nb == 0:  # every key of the block removed
            continue
        if use_ids or nb < stop - start:  # by id, or with holes: the kept rows gathered
            for j in range(nb):
                kb[j] = k[sel[j]]
                vb[j] = v[sel[j]]
            kblk = kb[:nb]
            vblk = vb[:nb]
        else:
            kblk = k[start:stop]
            vblk = v[start:stop]
        ab = a[:, :nb]
        if favor:
            gemm(False, True, 1.0, w, kblk, 0.0, ab)
            for j in range(nb):
                nrm[j] = dot(kblk[j], kblk[j]) * half
            for r in range(width):
                ar = ab[r]
                for j in range(nb):
                    ar[j] -= nrm[j]
                    check += ar[j] * zero
        else:
            for j in range(nb):
                for r in range(width):
                    g[r, j] = kblk[j, r]
                    check += kblk[j, r] * zero
            for r in range(width):
                elu_plus_one(g[r, :nb], a[r, :nb])
        if check != 0:
            return NONFINITE, kept
        for r in range(width):  # the block's per-feature shift (0 for elu+1) and sum
            ar = ab[r]
            if favor:
                tops[r] = max_value(ar)
                zbs[r] = exp_sum(ar, tops[r])
            else:
                tops[r] = zero
                zb = zero
                for j in range(nb):
                    zb += ar[j]
                zbs[r] = zb
        gemm(False, False, 1.0, ab, vblk, 0.0, sb)
        for r in range(width):
            top = tops[r]
            sr = s[r]
            srow = sb[r]
            beta = 1.0
            if top > c[r]:  # a new maximum for feature r: rescale what came before (FAVOR+ only)
                alpha = math.exp(c[r] - top)
                z[r] *= alpha
                for t in range(dv):
                    sr[t] *= alpha
                c[r] = top
            else:
                beta = math.exp(top - c[r])
            z[r] += beta * zbs[r]
            for t in range(dv):
                sr[t] += beta * srow[t]
    return OK, kept


@_serial
def finish_summary(s_parts, z_parts, c_parts, status_parts, kept_parts, s, z, shift, log_norm):
    """Merge the per-chunk float64 sums of :func:`summary_chunk` into one summary in the output dtype.

    ``s_parts (P, F, dv)``, ``z_parts``/``c_parts (P, F)``, ``status_parts``/``kept_parts (P,)``
    -> ``s (F, dv)``, ``z``, ``shift``, ``log_norm (F,)`` with the shifts merged by a
    log-sum-exp rescale.  Returns :data:`EMPTY` (no key kept), :data:`NONFINITE` (a
    NaN/inf key or value, or a sum that overflowed the dtype) or :data:`OK`.
    """
    parts, width, dv = s_parts.shape
    total = 0
    for p in range(parts):
        if status_parts[p] != OK:
            return NONFINITE
        total += kept_parts[p]
    if total == 0:
        return EMPTY
    acc = np.empty(dv, np.float64)
    for r in range(width):
        top = -np.inf
        for p in range(parts):
            if kept_parts[p] > 0:
                top = max(top, c_parts[p, r])
        acc[:] = 0
        zr = 0.0
        for p in range(parts):
            if kept_parts[p] > 0:
                f = math.exp(c_parts[p, r] - top)
                zr += f * z_parts[p, r]
                for t in range(dv):
                    acc[t] += f * s_parts[p, r, t]
        for t in range(dv):
            s[r, t] = acc[t]
            if not _is_finite(s[r, t]):
                return NONFINITE
        z[r] = zr
        shift[r] = top
        log_norm[r] = top + math.log(zr) if zr > 0 else -np.inf
        if not _is_finite(z[r]):
            return NONFINITE
    return OK


@_parallel
def summary_many(k, v, keep, use_keep, w, kind, half, s_parts, z_parts, c_parts, status_parts, kept_parts, size):
    """:func:`summary_chunk` over chunks of ``size`` keys in parallel (chunk ``p`` into part ``p``);
    merge the parts with :func:`finish_summary`."""
    n = k.shape[0]
    no_ids = np.empty(0, np.int64)
    for p in prange(s_parts.shape[0]):
        lo = min(p * size, n)
        status_parts[p], kept_parts[p] = summary_chunk(k, v, no_ids, False, keep, use_keep, lo, min(lo + size, n), w,
                                                       kind, half, s_parts[p], z_parts[p], c_parts[p])  # fmt: skip


# --------------------------------------------------------------------------
# Queries against a summary
# --------------------------------------------------------------------------


@_inline
def finish_coeffs(q, kind, z, shift, log_norm, u):
    """Coefficients ``u (F,)`` of the query ``q`` in place, given (FAVOR+) its exponents
    ``b_r = w_r·q − half·|q|²`` in ``u``; returns ``(status, Σ_r u_r z_r)``.

    elu+1: ``u = φ(q)``.  FAVOR+: ``u_r = exp(b_r + shift_r − C)``, ``C = max_r (b_r + log_norm_r)``.
    """
    zero = u.dtype.type(0)
    check = zero
    if kind == FAVOR:
        top = u.dtype.type(-np.inf)
        for r in range(u.shape[0]):
            b = u[r]
            check += b * zero
            top = max(top, b + log_norm[r])
            u[r] = b + shift[r]
        if check == 0:
            exp_sum(u, top)
    else:
        for i in range(q.shape[0]):
            check += q[i] * zero
        elu_plus_one(q, u)
    if check != 0:
        return NONFINITE, zero
    den = dot(u, z)
    if den == 0:
        return UNDERFLOW, den
    if not _is_finite(den):
        return NONFINITE, den
    return OK, den


@_inline
def query_coeffs(q, w, kind, half, z, shift, log_norm, u):
    """The coefficients ``u (F,)`` of one query (see the module docstring); returns ``(status, Σ_r u_r z_r)``."""
    if kind == FAVOR:
        favor_exponents(q, w, half, u)
    return finish_coeffs(q, kind, z, shift, log_norm, u)


@_inline
def query_row(q, w, kind, half, s, z, shift, log_norm, u, out):
    """``out = Σ_r u_r s_r / Σ_r u_r z_r`` for one query; returns a status (NaN row unless :data:`OK`)."""
    status, den = query_coeffs(q, w, kind, half, z, shift, log_norm, u)
    if status != OK:
        out[:] = np.nan
        return status
    out[:] = 0
    rows_axpy(u, s, np.empty(0, np.int64), False, 0, s.shape[1], out)
    inv = out.dtype.type(1) / den
    for t in range(out.shape[0]):
        out[t] *= inv
        if not _is_finite(out[t]):
            return NONFINITE
    return OK


@_serial
def query_one(q, w, kind, half, s, z, shift, log_norm, out):
    """One query against a finished summary (the O(F·(d + dv)) fast path)."""
    u = np.empty(s.shape[0], q.dtype)
    return query_row(q, w, kind, half, s, z, shift, log_norm, u, out)


@_serial
def query_chunk(qs, w, kind, half, s, z, shift, log_norm, out, status, first, last):
    """Queries ``first..last-1`` of :func:`query_many` in blocks of :data:`QUERY_ROWS`: the block's
    exponents ``Q Wᵀ`` and its outputs ``U S`` are two BLAS products (:func:`~ruvattn.kernels.blas.gemm`),
    the coefficients between them row by row as in :func:`query_row`."""
    width = s.shape[0]
    dt = qs.dtype
    ubuf = np.empty((QUERY_ROWS, width), dt)
    dens = np.empty(QUERY_ROWS, dt)
    for b0 in range(first, last, QUERY_ROWS):
        b1 = min(b0 + QUERY_ROWS, last)
        rows = b1 - b0
        u = ubuf[:rows]
        if kind == FAVOR:
            gemm(False, True, 1.0, qs[b0:b1], w, 0.0, u)
            for i in range(rows):
                sq = dot(qs[b0 + i], qs[b0 + i]) * half
                for r in range(width):
                    u[i, r] -= sq
        for i in range(rows):
            status[b0 + i], dens[i] = finish_coeffs(qs[b0 + i], kind, z, shift, log_norm, u[i])
        block = out[b0:b1]
        gemm(False, False, 1.0, u, s, 0.0, block)
        for i in range(rows):
            row = block[i]
            if status[b0 + i] != OK:
                row[:] = np.nan
                continue
            inv = dt.type(1) / dens[i]
            for t in range(row.shape[0]):
                row[t] *= inv
                if not _is_finite(row[t]):
                    status[b0 + i] = NONFINITE


@_parallel
def query_many(qs, w, kind, half, s, z, shift, log_norm, out, status, size):
    """Many queries ``(m, d)`` against one summary, parallel over chunks of ``size`` queries
    (see :func:`~ruvattn.kernels.attention.chunk_size`)."""
    m = qs.shape[0]
    for c in prange((m + size - 1) // size):
        first = c * size
        query_chunk(qs, w, kind, half, s, z, shift, log_norm, out, status, first, min(first + size, m))


# --------------------------------------------------------------------------
# One query over its own keys
# --------------------------------------------------------------------------


@_inline
def summarize_serial(k, v, ids, use_ids, keep, use_keep, lo, hi, w, kind, half, s, z, shift, log_norm):
    """:func:`summary_chunk` then :func:`finish_summary` over one chunk, into dtype buffers; returns a status."""
    width, dv = s.shape
    s64 = np.empty((1, width, dv), np.float64)
    z64 = np.empty((1, width), np.float64)
    c64 = np.empty((1, width), np.float64)
    st = np.empty(1, np.int8)
    kept = np.empty(1, np.int64)
    st[0], kept[0] = summary_chunk(k, v, ids, use_ids, keep, use_keep, lo, hi, w, kind, half, s64[0], z64[0], c64[0])
    return finish_summary(s64, z64, c64, st, kept, s, z, shift, log_norm)


@_serial
def forward_one(q, k, v, keep, use_keep, w, kind, half, out):
    """One query over all its keys (optionally keep-masked): summary then query, O(n·F·(d + dv))."""
    width = q.shape[0] if kind == ELU else w.shape[0]
    dt = q.dtype
    s = np.empty((width, v.shape[1]), dt)
    z = np.empty(width, dt)
    shift = np.empty(width, dt)
    log_norm = np.empty(width, dt)
    status = summarize_serial(k, v, np.empty(0, np.int64), False, keep, use_keep, 0, k.shape[0], w, kind, half, s, z,
                              shift, log_norm)  # fmt: skip
    if status != OK:
        out[:] = 0 if status == EMPTY else np.nan
        return status
    u = np.empty(width, dt)
    return query_row(q, w, kind, half, s, z, shift, log_norm, u, out)


@_serial
def weights_one(q, k, keep, use_keep, w, kind, half, out):
    """The normalised weights ``φ(q)·φ(k_j) / Σ_l φ(q)·φ(k_l)`` of one query into ``out (n,)``.

    Removed keys get exactly 0.  The key features are shifted as in the summary
    (FAVOR+: ``exp(a_jr − shift_r)``, weighted by the query's ``u``) and the weights
    are divided by their own sum, so they sum to 1 to rounding whatever the
    magnitude of the exponents.
    """
    n, d = k.shape
    width = d if kind == ELU else w.shape[0]
    dt = q.dtype
    s = np.empty((width, 0), dt)
    z = np.empty(width, dt)
    shift = np.empty(width, dt)
    log_norm = np.empty(width, dt)
    no_ids = np.empty(0, np.int64)
    status = summarize_serial(k, np.empty((n, 0), dt), no_ids, False, keep, use_keep, 0, n, w, kind, half, s, z,
                              shift, log_norm)  # fmt: skip
    if status != OK:
        out[:] = 0 if status == EMPTY else np.nan
        return status
    u = np.empty(width, dt)
    status, _ = query_coeffs(q, w, kind, half, z, shift, log_norm, u)
    if status != OK:
        out[:] = np.nan
        return status
    feat = np.empty(width, dt)
    total = dt.type(0)
    for j in range(n):
        if use_keep and not keep[j]:
            out[j] = 0
            continue
        if kind == FAVOR:
            favor_exponents(k[j], w, half, feat)
            for r in range(width):
                feat[r] -= shift[r]
            exp_sum(feat, dt.type(0))
        else:
            elu_plus_one(k[j], feat)
        out[j] = dot(u, feat)
        total += out[j]
    if total == 0:
        return UNDERFLOW
    if not _is_finite(total):
        return NONFINITE
    inv = dt.type(1) / total
    for j in range(n):
        out[j] *= inv
    return OK


# --------------------------------------------------------------------------
# Neighbour lists
# --------------------------------------------------------------------------


@_serial
def neighbours_chunk(qs, k, v, indptr, indices, w, kind, half, out, status, first, last):
    """Nodes ``first..last-1`` of :func:`neighbours_many`: each its own summary, then its query."""
    d = qs.shape[1]
    width = d if kind == ELU else w.shape[0]
    dt = qs.dtype
    dv = v.shape[1]
    s = np.empty((width, dv), dt)
    z = np.empty(width, dt)
    shift = np.empty(width, dt)
    log_norm = np.empty(width, dt)
    u = np.empty(width, dt)
    keep = np.empty(0, np.bool_)
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        row = out[i]
        if hi == lo:
            row[:] = 0
            status[i] = EMPTY
            continue
        st = summarize_serial(k, v, indices, True, keep, False, lo, hi, w, kind, half, s, z, shift, log_norm)
        if st != OK:
            row[:] = np.nan
            status[i] = st
            continue
        status[i] = query_row(qs[i], w, kind, half, s, z, shift, log_norm, u, row)


@_parallel
def neighbours_many(qs, k, v, indptr, indices, w, kind, half, out, status, size):
    """Node ``i`` over its own neighbour rows ``indices[indptr[i]:indptr[i+1]]`` of the key/value
    tables, parallel over chunks of ``size`` nodes.  A node without neighbours gets a zero row and
    status :data:`EMPTY`."""
    n = qs.shape[0]
    for c in prange((n + size - 1) // size):
        first = c * size
        neighbours_chunk(qs, k, v, indptr, indices, w, kind, half, out, status, first, min(first + size, n))


def summary_parts(n: int) -> tuple[int, int]:
    """``(parts, size)`` for :func:`summary_many` (plain Python, like
    :func:`~ruvattn.kernels.attention.chunk_size`): up to 4 parts per Numba thread,
    each a whole number of :data:`BLOCK`-key blocks, at least one part."""
    parts = max(1, min(4 * numba.get_num_threads(), -(-n // BLOCK)))
    per_part = -(-n // parts)
    size = max(1, -(-per_part // BLOCK)) * BLOCK
    return max(1, -(-n // size)), size
