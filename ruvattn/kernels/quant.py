"""Numba kernels for scaled dot-product attention over quantised key/value tables.

The codes are read where they lie and turned into float32 in registers, row by row; no dequantised copy
of a table (or of a neighbourhood) is ever made.  Layouts are those of
:class:`ruvattn.compression.QuantizedTable`; a table reaches a kernel as five values:

* ``codes (n, B)``: int8 (INT8 symmetric) or uint8 (INT8 asymmetric; INT4, two columns per byte);
* ``scales (n, nb)`` and ``offsets (n, nb)``: float32, or uint16 holding float16 bit patterns;
* ``meta``: int64 ``[mode, block, nb, width, has_offsets]`` -- ``mode`` :data:`INT8` or :data:`INT4`;
* ``zero``: the code that means 0 (8 for INT4 symmetric, else 0).

A block ``b`` of row ``j`` stands for ``x = scale[j, b] * (u - zero) + offset[j, b]``, so

``q . x_j = sum_b scale[j, b] * (q_b . u_jb - zero * sum(q_b)) + offset[j, b] * sum(q_b)``:

one float dot product of the query with the raw codes per block, the rest per block.  INT4 stores, in
block ``b``, column ``i`` in the low nibble of byte ``i`` and column ``i + g/2`` in its high nibble; with
``f`` the byte as a float, ``hi = floor(f / 16)`` and ``lo = f - 16 hi`` (exact in float32), so
``q_lo lo + q_hi hi = q_lo f + (q_hi - 16 q_lo) hi`` -- two fused multiply-adds per byte, no integer
shifts (Numba widens those to int64, which do not vectorise on AVX2).  The values side accumulates
``sum_j a_j f`` and ``sum_j a_j hi`` per byte and unpacks once at the end.

Statuses are those of :mod:`ruvattn.kernels.attention` (``OK``, ``EMPTY``, ``NONFINITE``).  Numpy twins:
:mod:`ruvattn.reference.quant`.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ruvattn._config import JIT_DISABLED
from ruvattn.kernels.attention import (
    EMPTY,
    NONFINITE,
    OK,
    _inline,
    _is_finite,
    _parallel,
    _serial,
    exp_sum,
    max_finite,
    widest_row,
)

INT8 = 0
INT4 = 1

if JIT_DISABLED:

    def f32(x):
        """float32 of ``x``; a uint16 is a float16 bit pattern (pure-Python fallback)."""
        if isinstance(x, np.uint16):
            return np.array(x, np.uint16).view(np.float16).astype(np.float32)[()]
        return np.float32(x)

else:

    @intrinsic
    def f32(typingctx, x):
        """float32 of ``x``: a uint16 is read as float16 bits (``fpext half``: ``vcvtph2ps``), a float32 is
        itself, an integer code is converted."""
        if x == types.uint16:

            def codegen(context, builder, signature, args):
                return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

            return types.float32(x), codegen
        if x == types.float32:

            def codegen_same(context, builder, signature, args):
                return args[0]

            return types.float32(x), codegen_same
        return None


@_serial
def prepare_query(q, meta, qf, q2, qsum):
    """The query in the table's column order: ``qf`` (INT8: the padded query; INT4: the low-nibble columns
    per byte), ``q2`` (INT4: ``q_hi - 16 q_lo`` per byte) and ``qsum[b]`` (sum of block ``b``)."""
    mode, g, nb = meta[0], meta[1], meta[2]
    d = q.shape[0]
    if mode == INT8:
        full = d // g  # whole blocks: unsigned indices, no padding test (a loop LLVM vectorises)
        for b in range(full):
            base = np.uint64(b * g)
            s = np.float32(0)
            for c in range(g):
                k = base + np.uint64(c)
                v = np.float32(q[k])
                qf[k] = v
                s += v
            qsum[b] = s
        for b in range(full, nb):  # the padded last block
            s = np.float32(0)
            for c in range(b * g, b * g + g):
                v = np.float32(q[c]) if c < d else np.float32(0)
                qf[c] = v
                s += v
            qsum[b] = s
    else:
        h = g // 2
        for b in range(nb):
            s = np.float32(0)
            for i in range(h):
                lo = b * g + i
                ql = np.float32(q[lo]) if lo < d else np.float32(0)
                qh = np.float32(q[lo + h]) if lo + h < d else np.float32(0)
                qf[b * h + i] = ql
                q2[b * h + i] = qh - np.float32(16) * ql
                s += ql + qh
            qsum[b] = s


@_inline
def row_dot(qf, q2, qsum, codes, scales, offsets, mode, g, nb, has_off, zero, j):
    """``q . x_j`` for row ``j`` of a quantised table (see the module docstring).

    Written for the vectoriser (each rule measured, 3-13x): no array views per row or block (a view of a
    buffer allocated in the kernel costs reference counting calls), column indices unsigned (Numba checks
    signed indices for wraparound, which keeps ``row[b * g + c]`` scalar), and the layout passed in as
    scalars read once by the caller."""
    total = np.float32(0)
    if mode == INT8:
        for b in range(nb):
            base = np.uint64(b * g)
            s = np.float32(0)
            for c in range(g):
                k = base + np.uint64(c)
                s += qf[k] * np.float32(codes[j, k])
            part = f32(scales[j, b]) * (s - zero * qsum[b])
            if has_off:
                part += f32(offsets[j, b]) * qsum[b]
            total += part
    else:
        h = g // 2
        for b in range(nb):
            base = np.uint64(b * h)
            s = np.float32(0)
            for i in range(h):
                k = base + np.uint64(i)
                f = np.float32(codes[j, k])
                s += qf[k] * f + q2[k] * np.floor(f * np.float32(0.0625))
            part = f32(scales[j, b]) * (s - zero * qsum[b])
            if has_off:
                part += f32(offsets[j, b]) * qsum[b]
            total += part
    return total


@_inline
def row_axpy(a, codes, scales, offsets, mode, g, nb, has_off, zero, j, acc, acch, bterm):
    """Add weight ``a`` times row ``j`` into the accumulators (``acc``/``acch`` per stored column or byte,
    ``bterm`` per block; :func:`finish_values` turns them into the output).  Same rules as :func:`row_dot`."""
    if mode == INT8:
        for b in range(nb):
            sc = f32(scales[j, b])
            ab = a * sc
            base = np.uint64(b * g)
            for c in range(g):
                k = base + np.uint64(c)
                acc[k] += ab * np.float32(codes[j, k])
            bterm[b] += a * ((f32(offsets[j, b]) if has_off else np.float32(0)) - zero * sc)
    else:
        h = g // 2
        for b in range(nb):
            sc = f32(scales[j, b])
            ab = a * sc
            base = np.uint64(b * h)
            for i in range(h):
                k = base + np.uint64(i)
                f = np.float32(codes[j, k])
                acc[k] += ab * f
                acch[k] += ab * np.floor(f * np.float32(0.0625))
            bterm[b] += a * ((f32(offsets[j, b]) if has_off else np.float32(0)) - zero * sc)


@_serial
def q_scores(qf, q2, qsum, codes, scales, offsets, meta, zero, ids, scale, w):
    """``w[t] = scale * (q . x_ids[t])``.  The row loops live in small compiled functions of their own: in
    the middle of the attention kernel LLVM left them scalar (4x slower, measured)."""
    mode, g, nb, has_off = meta[0], meta[1], meta[2], meta[4]
    if nb == 1:  # one scale per row: the raw code dots in a loop of their own (into w), then one fix-up per row
        if mode == INT8:
            dot_rows_int8(qf, codes, ids, w)
        else:
            dot_rows_int4(qf[: g // 2], q2[: g // 2], codes, ids, w)
        qs0 = qsum[0]
        for t in range(w.shape[0]):
            j = ids[t]
            part = f32(scales[j, 0]) * (w[t] - zero * qs0)
            if has_off:
                part += f32(offsets[j, 0]) * qs0
            w[t] = part * scale
        return
    scores_rows(qf, q2, qsum, codes, scales, offsets, mode, g, nb, has_off, zero, ids, scale, w)


@_serial
def scores_rows(qf, q2, qsum, codes, scales, offsets, mode, g, nb, has_off, zero, ids, scale, w):
    """Any layout, row by row (:func:`row_dot`); a function of its own so its loops vectorise."""
    for t in range(w.shape[0]):
        w[t] = row_dot(qf, q2, qsum, codes, scales, offsets, mode, g, nb, has_off, zero, ids[t]) * scale


@_serial
def values_rows(w, codes, scales, offsets, mode, g, nb, has_off, zero, ids, acc, acch, bterm):
    """Any layout, row by row (:func:`row_axpy`); a function of its own so its loops vectorise."""
    for t in range(w.shape[0]):
        a = w[t]
        if a != 0:
            row_axpy(a, codes, scales, offsets, mode, g, nb, has_off, zero, ids[t], acc, acch, bterm)


@_serial
def dot_rows_int4(ql, q2, codes, ids, out):
    """``out[t]`` = the query's dot product with the nibbles of row ``ids[t]`` (one block per row):
    ``sum_i ql[i] f_i + q2[i] floor(f_i / 16)`` over the bytes ``f_i`` (see the module docstring); two rows per
    pass (the query's loads shared)."""
    h = ql.shape[0]
    n = ids.shape[0]
    c16 = np.float32(0.0625)
    t = 0
    while t + 2 <= n:
        j0 = ids[t]
        j1 = ids[t + 1]
        s0 = np.float32(0)
        s1 = np.float32(0)
        for i in range(h):
            f0 = np.float32(codes[j0, i])
            f1 = np.float32(codes[j1, i])
            s0 += ql[i] * f0 + q2[i] * np.floor(f0 * c16)
            s1 += ql[i] * f1 + q2[i] * np.floor(f1 * c16)
        out[t] = s0
        out[t + 1] = s1
        t += 2
    if t < n:
        j = ids[t]
        s = np.float32(0)
        for i in range(h):
            f = np.float32(codes[j, i])
            s += ql[i] * f + q2[i] * np.floor(f * c16)
        out[t] = s


@_serial
def axpy_rows_int4(w, scales, offsets, has_off, zero, codes, ids, acc, acch):
    """``acc += sum_t a_t f``, ``acch += sum_t a_t floor(f / 16)`` over the bytes ``f`` of rows ``ids[t]``, with
    ``a_t = w[t] scales[ids[t], 0]``, four rows per pass (one load and store of ``acc``/``acch`` per four rows);
    rows with ``w[t] == 0`` are never read.  Returns the rows' zero-point and offset term,
    ``sum_t w[t] (offset_t - zero scale_t)``, summed in a register here (as a loop of its own over
    ``bterm[0]`` it cost as much as the codes: the sum went through memory).  Four rows per pass: 73 -> 57 us
    over 10,000 rows of 64 bytes (measured)."""
    h = acc.shape[0]
    n = ids.shape[0]
    c16 = np.float32(0.0625)
    bt = np.float32(0)
    t = 0
    while t + 4 <= n and w[t] != 0 and w[t + 1] != 0 and w[t + 2] != 0 and w[t + 3] != 0:
        j0, j1, j2, j3 = ids[t], ids[t + 1], ids[t + 2], ids[t + 3]
        a0 = w[t] * f32(scales[j0, 0])
        a1 = w[t + 1] * f32(scales[j1, 0])
        a2 = w[t + 2] * f32(scales[j2, 0])
        a3 = w[t + 3] * f32(scales[j3, 0])
        bt -= zero * (a0 + a1 + a2 + a3)
        if has_off:
            bt += (w[t] * f32(offsets[j0, 0]) + w[t + 1] * f32(offsets[j1, 0])
                   + w[t + 2] * f32(offsets[j2, 0]) + w[t + 3] * f32(offsets[j3, 0]))  # fmt: skip
        for i in range(h):
            f0 = np.float32(codes[j0, i])
            f1 = np.float32(codes[j1, i])
            f2 = np.float32(codes[j2, i])
            f3 = np.float32(codes[j3, i])
            acc[i] += a0 * f0 + a1 * f1 + a2 * f2 + a3 * f3
            acch[i] += (a0 * np.floor(f0 * c16) + a1 * np.floor(f1 * c16)
                        + a2 * np.floor(f2 * c16) + a3 * np.floor(f3 * c16))  # fmt: skip
        t += 4
    while t < n:
        if w[t] != 0:
            j = ids[t]
            sc = f32(scales[j, 0])
            a = w[t] * sc
            bt += w[t] * ((f32(offsets[j, 0]) if has_off else np.float32(0)) - zero * sc)
            for i in range(h):
                f = np.float32(codes[j, i])
                acc[i] += a * f
                acch[i] += a * np.floor(f * c16)
        t += 1
    return bt


@_serial
def dot_rows_int8(qf, codes, ids, out):
    """``out[t] = qf . codes[ids[t]]`` (the 8-bit codes turned into float32 in registers)."""
    d = qf.shape[0]
    for t in range(ids.shape[0]):
        j = ids[t]
        s = np.float32(0)
        for c in range(d):
            s += qf[c] * np.float32(codes[j, c])
        out[t] = s


@_serial
def axpy_rows_int8(w, scales, offsets, has_off, zero, codes, ids, acc):
    """``acc += sum_t w[t] scales[ids[t], 0] codes[ids[t]]`` four rows per pass (one load and store of ``acc``
    per four rows); rows with ``w[t] == 0`` are never read.  Returns ``sum_t w[t] (offset_t - zero scale_t)``
    (see :func:`axpy_rows_int4`).  The weight lines repeat :func:`axpy_rows_int4`'s on purpose: as one inlined
    helper returning the four ids, weights and the term, both loops ran ~10 % slower (A/B, one process)."""
    d = acc.shape[0]
    n = ids.shape[0]
    bt = np.float32(0)
    t = 0
    while t + 4 <= n and w[t] != 0 and w[t + 1] != 0 and w[t + 2] != 0 and w[t + 3] != 0:
        j0, j1, j2, j3 = ids[t], ids[t + 1], ids[t + 2], ids[t + 3]
        a0 = w[t] * f32(scales[j0, 0])
        a1 = w[t + 1] * f32(scales[j1, 0])
        a2 = w[t + 2] * f32(scales[j2, 0])
        a3 = w[t + 3] * f32(scales[j3, 0])
        bt -= zero * (a0 + a1 + a2 + a3)
        if has_off:
            bt += (w[t] * f32(offsets[j0, 0]) + w[t + 1] * f32(offsets[j1, 0])
                   + w[t + 2] * f32(offsets[j2, 0]) + w[t + 3] * f32(offsets[j3, 0]))  # fmt: skip
        for c in range(d):
            acc[c] += (a0 * np.float32(codes[j0, c]) + a1 * np.float32(codes[j1, c])
                       + a2 * np.float32(codes[j2, c]) + a3 * np.float32(codes[j3, c]))  # fmt: skip
        t += 4
    while t < n:
        if w[t] != 0:
            j = ids[t]
            sc = f32(scales[j, 0])
            a = w[t] * sc
            bt += w[t] * ((f32(offsets[j, 0]) if has_off else np.float32(0)) - zero * sc)
            for c in range(d):
                acc[c] += a * np.float32(codes[j, c])
        t += 1
    return bt


@_serial
def q_values(w, codes, scales, offsets, meta, zero, ids, acc, acch, bterm):
    """Accumulate ``sum_t w[t] x_ids[t]`` (rows with weight 0 are not read) into ``acc``/``acch``/``bterm``."""
    mode, g, nb, has_off = meta[0], meta[1], meta[2], meta[4]
    if nb == 1:  # the zero point and offsets: one number per row, summed by the row loops
        if mode == INT8:
            bterm[0] += axpy_rows_int8(w, scales, offsets, has_off, zero, codes, ids, acc)
        else:
            bterm[0] += axpy_rows_int4(w, scales, offsets, has_off, zero, codes, ids, acc[: g // 2], acch[: g // 2])
        return
    values_rows(w, codes, scales, offsets, mode, g, nb, has_off, zero, ids, acc, acch, bterm)


@_inline
def finish_values(mode, g, acc, acch, bterm, inv, out):
    """``out[c] = (value accumulated for column c) * inv`` for the ``out.shape[0]`` real columns."""
    dv = out.shape[0]
    nb = (dv + g - 1) // g
    h = g // 2
    for b in range(nb):  # block by block: no integer division per column
        t = bterm[b]
        c0 = b * g
        if mode == INT8:
            for c in range(c0, min(c0 + g, dv)):
                out[c] = (acc[c] + t) * inv
        else:
            for i in range(min(h, dv - c0)):
                byte = b * h + i
                out[c0 + i] = (acc[byte] - np.float32(16) * acch[byte] + t) * inv
            for i in range(min(h, max(dv - c0 - h, 0))):
                byte = b * h + i
                out[c0 + h + i] = (acch[byte] + t) * inv


@_serial
def touch_rows(codes, scales, offsets, has_off, ids):
    """Load one byte of every cache line of rows ``ids`` (codes, scale, offset) and return their sum.

    Rows read by id from a large table are cache misses; these loads depend on nothing, so the core keeps
    dozens in flight at once, and the attention loops after them find the rows in cache.  (The row loops
    themselves start a row's loads only after the previous row's work: one miss at a time.)"""
    width = codes.shape[1]
    total = np.int64(0)
    for t in range(ids.shape[0]):
        j = ids[t]
        for c in range(0, width, 64):
            total += np.int64(codes[j, c])
        total += np.int64(codes[j, width - 1]) + np.int64(scales[j, 0] != 0)
        if has_off:
            total += np.int64(offsets[j, 0] != 0)
    return total


AHEAD = 2


@_inline
def line_plan(codes):
    """``(count, p1, p2, p3, p4)``: the byte offsets ``0, p1, ..`` (``count`` of them) at which a load touches
    every cache line of every row of ``codes``; ``count = 0`` for rows wider than 256 bytes (use
    :func:`touch_rows`).  A table that starts on a cache line with rows a whole number of lines long
    (:func:`ruvattn.compression.quantize` makes them so) needs one load per line, others one more."""
    w = codes.shape[1]
    if w == 0 or w > 256:
        return 0, 0, 0, 0, 0
    exact = codes.ctypes.data % 64 == 0 and w % 64 == 0
    last = w - 64 if exact else w - 1
    p1 = min(64, last)
    p2 = min(128, last)
    p3 = min(192, last)
    p4 = last
    # capped at ``last``, the distinct offsets come first: loads 1..count-1 are exactly them
    count = 1 + (p1 > 0) + (p2 > p1) + (p3 > p2) + (p4 > p3)
    return count, p1, p2, p3, p4


@_serial
def touch_one_line(kc, ks, vc, vs, ids):
    """:func:`touch_node` for rows of one cache line and no offsets (a function of its own: measured faster
    than the same loop as a branch of :func:`touch_node`)."""
    total = np.int64(0)
    for t in range(ids.shape[0]):
        j = ids[t]
        total += np.int64(kc[j, 0]) + np.int64(ks[j, 0] != 0) + np.int64(vc[j, 0]) + np.int64(vs[j, 0] != 0)
    return total


@_serial
def touch_two_lines(kc, ks, vc, vs, k1, v1, ids):
    """:func:`touch_node` for rows of two cache lines (``0`` and ``k1`` / ``v1``) and no offsets."""
    total = np.int64(0)
    for t in range(ids.shape[0]):
        j = ids[t]
        total += np.int64(kc[j, 0]) + np.int64(kc[j, k1]) + np.int64(ks[j, 0] != 0)
        total += np.int64(vc[j, 0]) + np.int64(vc[j, v1]) + np.int64(vs[j, 0] != 0)
    return total


@_inline
def touch_planned(codes, scales, offsets, has_off, count, p1, p2, p3, p4, j):
    """Row ``j``'s loads of :func:`line_plan` (byte 0 and ``p1..``, ``count`` in all), scale and offset, summed."""
    x = np.int64(codes[j, 0]) + np.int64(scales[j, 0] != 0)
    if count > 1:
        x += np.int64(codes[j, p1])
    if count > 2:
        x += np.int64(codes[j, p2])
    if count > 3:
        x += np.int64(codes[j, p3])
    if count > 4:
        x += np.int64(codes[j, p4])
    if has_off:
        x += np.int64(offsets[j, 0] != 0)
    return x


@_serial
def touch_node(kc, ks, ko, k_off, kn, k1, k2, k3, k4, vc, vs, vo, v_off, vn, v1, v2, v3, v4, indptr, indices, i):
    """Load one byte of every cache line of node ``i``'s key rows (and value rows when ``vn > 0``) -- codes,
    scale, offset -- and return their sum; :func:`q_csr_nodes` calls it a few nodes ahead.  ``kn, k1..k4``
    (``vn, v1..v4``): :func:`line_plan` of the key (value) codes.

    Each load is written out once (the counts are loop-invariant, so LLVM specialises the loop for them):
    written as a loop over the lines, LLVM vectorised the loads (bytes inserted into vector registers), and
    every extra instruction here fills the reorder buffer that lets the next node's misses overlap this
    node's work (1,000 x 32 neighbours over 1,000,000 x 128 INT8 rows: 1.25x float32 with the line loop,
    1.7x with repeated loads, 2.5x with one load per line; measured in one run)."""
    if not k_off and not v_off and kn == vn and kn <= 2:  # the common layouts: small loops of their own
        ids = indices[indptr[i] : indptr[i + 1]]
        return touch_one_line(kc, ks, vc, vs, ids) if kn == 1 else touch_two_lines(kc, ks, vc, vs, k1, v1, ids)
    total = np.int64(0)
    for t in range(indptr[i], indptr[i + 1]):
        j = indices[t]
        total += touch_planned(kc, ks, ko, k_off, kn, k1, k2, k3, k4, j)
        if vn > 0:
            total += touch_planned(vc, vs, vo, v_off, vn, v1, v2, v3, v4, j)
    return total


@_serial
def q_attend_row(q, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, ids, keep, use_keep, bias, use_bias,
                 scale, want_values, w, out, lse, qf, q2, qsum, acc, acch, bterm, prefetch):  # fmt: skip
    """One query over rows ``ids`` of a quantised key table: weights into ``w (n,)``, the output into
    ``out (dv,)``, ``lse[0]``; returns a status.  (Always by ids: a second, id-less copy of the row loop in the
    same kernel stopped LLVM vectorising one of the two, measured 4x.)

    ``qf, q2, qsum, acc, acch, bterm``: the float32 scratch arrays of :func:`scratch`.  A compiled function of
    its own, called once per query: inlined into a kernel that allocates the scratch, its row loops ran 4x
    slower (measured; arrays allocated in the same function defeat the vectoriser there).  ``keep``/``bias``
    as in :func:`ruvattn.kernels.attention.attend_row`.
    """
    n = w.shape[0]
    if prefetch and n > 0 and kc.shape[1] > 0:  # rows by id (neighbour lists): start every miss at once
        touched = touch_rows(kc, ks, ko, km[4], ids)
        if want_values and vc.shape[1] > 0:
            touched += touch_rows(vc, vs, vo, vm[4], ids)
        if touched == -(2**62):  # never true; keeps the loads from being optimised away
            lse[0] = np.nan
    prepare_query(q, km, qf, q2, qsum)
    q_scores(qf, q2, qsum, kc, ks, ko, km, kz, ids, scale, w)
    if use_bias:
        for t in range(n):
            w[t] += bias[t]
    if use_keep:
        for t in range(n):
            if not keep[t]:
                w[t] = -np.inf
    if n == 0:
        lse[0] = -np.inf
        out[:] = 0
        return EMPTY
    top, finite = max_finite(w)
    if not finite:
        # -inf from the mask or a -inf bias is allowed; NaN or +inf is not
        for t in range(n):
            if w[t] != w[t] or w[t] == np.inf:
                out[:] = np.nan
                lse[0] = np.nan
                return NONFINITE
        top = -np.inf
        for t in range(n):
            if w[t] > top:
                top = w[t]
    if top == -np.inf:
        w[:] = 0
        out[:] = 0
        lse[0] = -np.inf
        return EMPTY
    total = exp_sum(w, top)
    inv = np.float32(1) / total
    lse[0] = np.float32(top) + math.log(total)
    if not want_values:
        for t in range(n):
            w[t] *= inv
        return OK
    vmode, vg = vm[0], vm[1]
    acc[:] = 0
    acch[:] = 0
    bterm[:] = 0
    q_values(w, vc, vs, vo, vm, vz, ids, acc, acch, bterm)
    for t in range(n):
        w[t] *= inv
    finish_values(vmode, vg, acc, acch, bterm, inv, out)
    for c in range(out.shape[0]):
        if not _is_finite(out[c]):
            return NONFINITE
    return OK


@_inline
def scratch(km, vm):
    """``(qf, q2, qsum, acc, acch, bterm)``: the scratch arrays of :func:`q_attend_row` (separate arrays,
    indexed by scalars: views of one buffer would cost reference counting in the row loops)."""
    return (np.empty(km[3], np.float32), np.empty(km[3], np.float32), np.empty(km[2], np.float32),
            np.empty(vm[3], np.float32), np.empty(vm[3], np.float32), np.empty(vm[2], np.float32))  # fmt: skip


@_serial
def q_attend_one(q, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, ids, use_ids, keep, use_keep, bias, use_bias, scale,
                 want_values, w, out, lse):  # fmt: skip
    """One query (see :func:`q_attend_row`)."""
    bufs = scratch(km, vm)
    rows = ids if use_ids else np.arange(kc.shape[0])
    return q_attend_row(q, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, rows, keep, use_keep, bias, use_bias,
                        scale, want_values, w, out, lse, *bufs, False)  # fmt: skip


@_serial
def q_many_chunk(qs, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, keep, keep_mode, bias, bias_mode, scale, w,
                 want_weights, want_values, out, lse, status, first, last):  # fmt: skip
    """Queries ``first..last-1`` of :func:`q_attend_many`, one scratch for the chunk."""
    n = kc.shape[0]
    ids = np.arange(n)
    bufs = scratch(km, vm)
    wbuf = np.empty(n, np.float32)
    for i in range(first, last):
        wi = w[i] if want_weights else wbuf
        ki = keep[i] if keep_mode == 2 else keep[0]
        bi = bias[i] if bias_mode == 2 else bias[0]
        status[i] = q_attend_row(qs[i], kc, ks, ko, km, kz, vc, vs, vo, vm, vz, ids, ki, keep_mode > 0, bi,
                                 bias_mode > 0, scale, want_values, wi, out[i], lse[i : i + 1], *bufs,
                                 False)  # fmt: skip


@_parallel
def q_attend_many(qs, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, keep, keep_mode, bias, bias_mode, scale, w,
                  want_weights, want_values, out, lse, status, size):  # fmt: skip
    """Many queries over one quantised key/value table, parallel over chunks of ``size`` queries; ``w (m, n)``
    when ``want_weights``.  ``keep``/``bias`` modes as :func:`ruvattn.kernels.attention.attend_many`."""
    m = qs.shape[0]
    for c in prange((m + size - 1) // size):
        first = c * size
        q_many_chunk(qs, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, keep, keep_mode, bias, bias_mode, scale, w,
                     want_weights, want_values, out, lse, status, first, min(first + size, m))  # fmt: skip


@_serial
def q_csr_nodes(qs, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, indptr, indices, scale, w, want_weights, want_values,
                out, lse, status, first, last, keep, bias, wbuf, qf, q2, qsum, acc, acch, bterm):  # fmt: skip
    """Nodes ``first..last-1`` of :func:`q_attend_csr`, the rows of node ``i + AHEAD`` touched (:func:`touch_node`)
    before node ``i`` is computed, so their cache misses overlap its work (rows wider than 256 bytes: each
    node's own rows, touched just before it).  The scratch comes from the caller (allocated in the same
    function, the row loops stopped vectorising: measured)."""
    kn, k1, k2, k3, k4 = line_plan(kc)
    vn, v1, v2, v3, v4 = line_plan(vc) if want_values else (0, 0, 0, 0, 0)
    k_off = km[4] != 0
    v_off = vm[4] != 0
    ahead = kn > 0 and (vn > 0 or not want_values)  # else rows wider than 256 bytes: not touched
    touched = np.int64(0)
    if ahead:
        for a in range(first, min(first + AHEAD, last)):
            touched += touch_node(kc, ks, ko, k_off, kn, k1, k2, k3, k4, vc, vs, vo, v_off, vn, v1, v2, v3, v4,
                                  indptr, indices, a)  # fmt: skip
    n = qs.shape[0]
    for i in range(first, last):
        a = i + AHEAD
        if ahead and a < n:  # into the next task's nodes too: it is usually this thread's next task
            touched += touch_node(kc, ks, ko, k_off, kn, k1, k2, k3, k4, vc, vs, vo, v_off, vn, v1, v2, v3, v4,
                                  indptr, indices, a)  # fmt: skip
        lo = indptr[i]
        hi = indptr[i + 1]
        wi = w[lo:hi] if want_weights else wbuf[: hi - lo]
        status[i] = q_attend_row(qs[i], kc, ks, ko, km, kz, vc, vs, vo, vm, vz, indices[lo:hi], keep, False,
                                 bias, False, scale, want_values, wi, out[i], lse[i : i + 1], qf, q2, qsum, acc,
                                 acch, bterm, not ahead)  # fmt: skip
    return touched


@_serial
def q_csr_chunk(qs, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, indptr, indices, scale, w, want_weights, want_values,
                out, lse, status, first, last):  # fmt: skip
    """Nodes ``first..last-1`` of :func:`q_attend_csr`: the scratch, then :func:`q_csr_nodes`."""
    keep = np.empty(0, np.bool_)
    bias = np.empty(0, np.float32)
    qf, q2, qsum, acc, acch, bterm = scratch(km, vm)
    wbuf = np.empty(widest_row(indptr, first, last), np.float32)
    touched = q_csr_nodes(qs, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, indptr, indices, scale, w, want_weights,
                          want_values, out, lse, status, first, last, keep, bias, wbuf, qf, q2, qsum, acc, acch,
                          bterm)  # fmt: skip
    if touched == -(2**62):  # never true; keeps the loads from being optimised away
        lse[first] = np.nan


@_parallel
def q_attend_csr(qs, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, indptr, indices, scale, w, want_weights, want_values,
                 out, lse, status, size):  # fmt: skip
    """Node ``i`` over rows ``indices[indptr[i]:indptr[i+1]]`` of quantised tables, parallel over chunks of
    nodes; ``w (nnz,)`` aligned with ``indices`` when ``want_weights``.  A node without neighbours gets a zero
    row and :data:`EMPTY`."""
    n = qs.shape[0]
    for c in prange((n + size - 1) // size):
        first = c * size
        q_csr_chunk(qs, kc, ks, ko, km, kz, vc, vs, vo, vm, vz, indptr, indices, scale, w, want_weights,
                    want_values, out, lse, status, first, min(first + size, n))  # fmt: skip
