"""Forward and backward kernels of the trainable layers (:mod:`ruvattn.nn`): GAT, GATv2 and ELU.

The graph is grouped by target, as in :mod:`ruvattn.kernels.gat`: node ``i`` owns slots
``indptr[i]:indptr[i+1]``, slot ``k`` holds its source ``src[k]`` (messages flow ``src[k] -> i``).
The backward pass also reads the slots grouped by *source*: ``rptr`` / ``rslot`` list, for each
source ``j``, the slots whose source is ``j``, and ``dst[k]`` is the target of slot ``k``.  Each
gradient row is then written by one task (targets in one pass, sources in the other): no atomics,
no per-thread copies of the node tables, and the same bits on any number of threads.

Per-slot arrays are ``(S, heads)``: ``alpha`` holds the softmax weights *before* dropout (the
backward needs them), ``drop`` the dropout multipliers (``0`` or ``1 / (1 - p)``; ``(0, heads)`` for
none).  The output rows are head-major ``(N, heads * C)``; the head mean, the bias and the
activations are numpy in the layer.

GAT (Veličković et al. 2018, PyG's ``GATConv`` without edge features)::

    z[k, h] = a_src[j, h] + a_dst[i, h]        s = LeakyReLU(z)
    alpha[:, h] = softmax over node i's slots  out[i, h] = sum_k alpha[k, h] drop[k, h] msg[j, h]

GATv2 (Brody et al. 2022, PyG's ``GATv2Conv``, ``share_weights=False``)::

    u[k, h] = xl[j, h] + xr[i, h] (C-vectors)  s = att[h] . LeakyReLU(u)
    alpha as above                              out[i, h] = sum_k alpha[k, h] drop[k, h] xl[j, h]

Every kernel has a plain-numpy twin in :mod:`ruvattn.reference.training`; ``tests/test_nn.py`` holds
them to each other, to float64 finite differences and to PyTorch Geometric's autograd.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ruvattn.kernels.attention import _inline, _parallel, _serial, exp_sum

__all__ = [
    "elu_backward",
    "elu_forward",
    "gat_backward",
    "gat_forward",
    "gatv2_backward",
    "gatv2_forward",
    "slots_by_source",
]


@_serial
def slots_by_source(indptr, src, num_nodes, rptr, rslot, dst):
    """Group the slots by source (a stable counting sort): ``rptr (N + 1,)``, ``rslot (S,)``, and ``dst (S,)``,
    the target of every slot."""
    rptr[:] = 0
    for i in range(indptr.shape[0] - 1):
        for k in range(indptr[i], indptr[i + 1]):
            dst[k] = i
            rptr[src[k] + 1] += 1
    for j in range(num_nodes):
        rptr[j + 1] += rptr[j]
    fill = rptr[:-1].copy()
    for k in range(src.shape[0]):
        j = src[k]
        rslot[fill[j]] = k
        fill[j] += 1


@_inline
def _normalise_aggregate(indptr, src, msg, drop, use_drop, alpha, out, first, last):
    """Targets ``first..last-1`` whose ``alpha`` rows hold ``exp(score - max)``: divide by each head's sum, then
    aggregate the messages into ``out``."""
    heads = alpha.shape[1]
    ch = msg.shape[1] // heads
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        row = out[i]
        row[:] = 0
        for h in range(heads):
            total = alpha.dtype.type(0)
            for k in range(lo, hi):
                total += alpha[k, h]
            inv = 1 / total if hi > lo else total
            base = h * ch
            for k in range(lo, hi):
                alpha[k, h] *= inv
                a = alpha[k, h] * drop[k, h] if use_drop else alpha[k, h]
                j = src[k]
                for c in range(ch):
                    row[base + c] += a * msg[j, base + c]


@_inline
def _shift(alpha, lo, hi, mx):
    """``alpha[lo:hi, h] -= mx[h]``: one node's scores minus each head's max."""
    for k in range(lo, hi):
        for h in range(alpha.shape[1]):
            alpha[k, h] -= mx[h]


@_inline
def _softmax_aggregate(indptr, src, msg, drop, alpha, out, first, last):
    """Targets ``first..last-1`` whose shifted scores are in ``alpha``: one vectorised exp over the chunk's slots,
    then each head's sums and the aggregation (:func:`_normalise_aggregate`)."""
    block = alpha[indptr[first] : indptr[last]]
    exp_sum(block.reshape(block.size), 0)
    _normalise_aggregate(indptr, src, msg, drop, drop.shape[0] > 0, alpha, out, first, last)


@_serial
def gat_forward_chunk(indptr, src, a_src, a_dst, msg, slope, drop, alpha, out, first, last):
    """Targets ``first..last-1`` of :func:`gat_forward`: scores minus each head's max, one vectorised exp over the
    chunk's slots, then the sums."""
    heads = a_src.shape[1]
    mx = np.empty(heads, alpha.dtype)
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        mx[:] = -np.inf
        for k in range(lo, hi):
            j = src[k]
            for h in range(heads):
                z = a_src[j, h] + a_dst[i, h]
                s = z if z > 0 else z * slope
                alpha[k, h] = s
                mx[h] = max(mx[h], s)
        _shift(alpha, lo, hi, mx)
    _softmax_aggregate(indptr, src, msg, drop, alpha, out, first, last)


@_parallel
def gat_forward(indptr, src, a_src, a_dst, msg, slope, drop, alpha, out, size):
    """GAT attention at every target (formula in the module docstring), parallel over chunks of ``size``
    targets: ``alpha (S, H)`` gets the weights before dropout, ``out (N, H * C)`` the head-major sums
    (zeros for a node without slots)."""
    n = indptr.shape[0] - 1
    for c in prange((n + size - 1) // size):
        first = c * size
        gat_forward_chunk(indptr, src, a_src, a_dst, msg, slope, drop, alpha, out, first, min(first + size, n))


@_serial
def gat_backward_dst_chunk(indptr, src, a_src, a_dst, msg, slope, drop, alpha, dout, dz, da_dst, first, last):
    """Targets ``first..last-1`` of :func:`gat_backward`'s first pass: per slot the gradient of its weight after
    dropout (``dout[i] . msg[j]``), times the dropout multiplier, through the softmax and the LeakyReLU."""
    heads = a_src.shape[1]
    ch = msg.shape[1] // heads
    use_drop = drop.shape[0] > 0
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        for h in range(heads):
            base = h * ch
            t = dz.dtype.type(0)
            for k in range(lo, hi):
                j = src[k]
                g = dz.dtype.type(0)
                for c in range(ch):
                    g += dout[i, base + c] * msg[j, base + c]
                if use_drop:
                    g *= drop[k, h]
                dz[k, h] = g
                t += alpha[k, h] * g
            total = dz.dtype.type(0)
            for k in range(lo, hi):
                d = alpha[k, h] * (dz[k, h] - t)
                if a_src[src[k], h] + a_dst[i, h] <= 0:
                    d *= slope
                dz[k, h] = d
                total += d
            da_dst[i, h] = total


@_serial
def message_backward_chunk(rptr, rslot, dst, alpha, drop, dout, dz, dmsg, da_src, first, last):
    """Sources ``first..last-1``: ``dmsg[j] = sum alpha drop dout[i]`` and ``da_src[j] = sum dz`` over ``j``'s slots."""
    heads = alpha.shape[1]
    ch = dmsg.shape[1] // heads
    use_drop = drop.shape[0] > 0
    for j in range(first, last):
        dmsg[j, :] = 0
        da_src[j, :] = 0
        for r in range(rptr[j], rptr[j + 1]):
            k = rslot[r]
            i = dst[k]
            for h in range(heads):
                a = alpha[k, h] * drop[k, h] if use_drop else alpha[k, h]
                da_src[j, h] += dz[k, h]
                base = h * ch
                for c in range(ch):
                    dmsg[j, base + c] += a * dout[i, base + c]


@_parallel
def gat_backward(indptr, src, rptr, rslot, dst, a_src, a_dst, msg, slope, drop, alpha, dout, dz, da_dst, dmsg,
                 da_src, size):  # fmt: skip
    """Gradients of GAT attention from ``dout (N, H * C)``: ``dz (S, H)`` (of the pre-activation scores),
    ``da_dst``/``da_src (N, H)`` and ``dmsg (N, H * C)`` (the messages' own part; the caller adds the
    score terms ``da_src att_src + da_dst att_dst``).  Two passes, by target then by source."""
    n = indptr.shape[0] - 1
    chunks = (n + size - 1) // size
    for c in prange(chunks):
        first = c * size
        gat_backward_dst_chunk(indptr, src, a_src, a_dst, msg, slope, drop, alpha, dout, dz, da_dst, first,
                               min(first + size, n))  # fmt: skip
    for c in prange(chunks):
        first = c * size
        message_backward_chunk(rptr, rslot, dst, alpha, drop, dout, dz, dmsg, da_src, first, min(first + size, n))


@_serial
def gatv2_forward_chunk(indptr, src, xl, xr, att, slope, drop, alpha, out, first, last):
    """Targets ``first..last-1`` of :func:`gatv2_forward` (scores, one vectorised exp, sums)."""
    heads, ch = att.shape
    mx = np.empty(heads, alpha.dtype)
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        mx[:] = -np.inf
        for k in range(lo, hi):
            j = src[k]
            for h in range(heads):
                base = h * ch
                s = alpha.dtype.type(0)
                for c in range(ch):
                    u = xl[j, base + c] + xr[i, base + c]
                    s += att[h, c] * (u if u > 0 else u * slope)
                alpha[k, h] = s
                mx[h] = max(mx[h], s)
        _shift(alpha, lo, hi, mx)
    _softmax_aggregate(indptr, src, xl, drop, alpha, out, first, last)


@_parallel
def gatv2_forward(indptr, src, xl, xr, att, slope, drop, alpha, out, size):
    """GATv2 attention at every target (module docstring), parallel over chunks of ``size`` targets."""
    n = indptr.shape[0] - 1
    for c in prange((n + size - 1) // size):
        first = c * size
        gatv2_forward_chunk(indptr, src, xl, xr, att, slope, drop, alpha, out, first, min(first + size, n))


@_serial
def gatv2_backward_dst_chunk(indptr, src, xl, xr, att, slope, drop, alpha, dout, dz, du, dxr, datt, first, last):
    """Targets ``first..last-1`` of :func:`gatv2_backward`'s first pass; ``datt`` is this chunk's own sum."""
    heads, ch = att.shape
    use_drop = drop.shape[0] > 0
    datt[:] = 0
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        dxr[i, :] = 0
        for h in range(heads):
            base = h * ch
            t = dz.dtype.type(0)
            for k in range(lo, hi):
                j = src[k]
                g = dz.dtype.type(0)
                for c in range(ch):
                    g += dout[i, base + c] * xl[j, base + c]
                if use_drop:
                    g *= drop[k, h]
                dz[k, h] = g
                t += alpha[k, h] * g
            for k in range(lo, hi):
                j = src[k]
                d = alpha[k, h] * (dz[k, h] - t)
                dz[k, h] = d
                for c in range(ch):
                    u = xl[j, base + c] + xr[i, base + c]
                    if u > 0:
                        datt[h, c] += d * u
                        g = d * att[h, c]
                    else:
                        datt[h, c] += d * u * slope
                        g = d * att[h, c] * slope
                    du[k, base + c] = g
                    dxr[i, base + c] += g


@_serial
def gatv2_source_chunk(rptr, rslot, dst, alpha, drop, dout, du, dxl, first, last):
    """Sources ``first..last-1``: ``dxl[j] = sum (alpha drop dout[i] + du[k])`` over ``j``'s slots."""
    heads = alpha.shape[1]
    ch = dxl.shape[1] // heads
    use_drop = drop.shape[0] > 0
    for j in range(first, last):
        dxl[j, :] = 0
        for r in range(rptr[j], rptr[j + 1]):
            k = rslot[r]
            i = dst[k]
            for h in range(heads):
                a = alpha[k, h] * drop[k, h] if use_drop else alpha[k, h]
                base = h * ch
                for c in range(ch):
                    dxl[j, base + c] += a * dout[i, base + c] + du[k, base + c]


@_parallel
def gatv2_backward(indptr, src, rptr, rslot, dst, xl, xr, att, slope, drop, alpha, dout, dz, du, dxr, datt_parts,
                   dxl, size):  # fmt: skip
    """Gradients of GATv2 attention from ``dout (N, H * C)``: ``dxl``, ``dxr (N, H * C)`` and, per chunk of
    ``size`` targets, ``datt_parts[c] (H, C)`` (the caller sums them in chunk order, so the bits do not
    depend on the threads).  Scratch: ``dz (S, H)``, ``du (S, H * C)``."""
    n = indptr.shape[0] - 1
    chunks = (n + size - 1) // size
    for c in prange(chunks):
        first = c * size
        gatv2_backward_dst_chunk(indptr, src, xl, xr, att, slope, drop, alpha, dout, dz, du, dxr, datt_parts[c],
                                 first, min(first + size, n))  # fmt: skip
    for c in prange(chunks):
        first = c * size
        gatv2_source_chunk(rptr, rslot, dst, alpha, drop, dout, du, dxl, first, min(first + size, n))


@_serial
def elu_forward(x, alpha, y):
    """``y = x`` where ``x > 0``, else ``alpha (exp(x) - 1)``, for flat arrays (float32: the vectorised exp of
    :func:`~ruvattn.kernels.attention.exp_sum`; float64: ``math.expm1``)."""
    a = y.dtype.type(alpha)
    if y.itemsize == 4:
        for i in range(x.shape[0]):
            y[i] = min(x[i], 0)
        exp_sum(y, 0)
        for i in range(x.shape[0]):
            y[i] = x[i] if x[i] > 0 else a * (y[i] - 1)
    else:
        for i in range(x.shape[0]):
            y[i] = x[i] if x[i] > 0 else a * math.expm1(x[i])


@_serial
def elu_backward(x, y, dy, alpha, dx):
    """``dx = dy`` where ``x > 0``, else ``dy alpha exp(x) = dy (y + alpha)`` (no exp: ``y`` is the forward output)."""
    a = y.dtype.type(alpha)
    for i in range(x.shape[0]):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * (y[i] + a)
