"""Numba kernels for rotary position embeddings (RoPE): each row rotated in 2-D planes by angles
proportional to its position.  Plain-numpy twin: :func:`ruvattn.reference.rope.rotate`.

Pair ``i`` of a ``d``-wide row (``i = 0 .. d/2 - 1``) is ``(2i, 2i+1)`` in the interleaved layout
(RoFormer, the golden corpus) or ``(i, i + d/2)`` in the rotate-half layout (GPT-NeoX, Hugging Face
LLaMA); it turns by ``θ_i = pos · inv_freq[i]``.  Angles, cosines and sines are float64 whatever the
row dtype (a float32 angle ``pos · inv_freq`` would lose ``|θ|·6e-8`` absolute), products are rounded
once into the output's dtype.  :func:`rotate` runs on the calling thread (one query's keys);
:func:`rotate_many` hands rows to Numba's threads (whole tables).
"""

from __future__ import annotations

import math

from numba import prange

from ruvattn.kernels.attention import _inline, _parallel, _serial


@_inline
def _rotate_row(x, r, p, inv_freq, half, sign, out):
    """Row ``r`` of ``out`` = ``R(sign · p) x[r]``."""
    d = x.shape[1]
    h = d // 2
    for i in range(h):
        theta = sign * p * inv_freq[i]
        c = math.cos(theta)
        s = math.sin(theta)
        if half:
            a, b = i, i + h
        else:
            a, b = 2 * i, 2 * i + 1
        xa = float(x[r, a])
        xb = float(x[r, b])
        out[r, a] = xa * c - xb * s
        out[r, b] = xa * s + xb * c


@_serial
def rotate(x, pos, inv_freq, half, sign, out):
    """``out[r] = R(sign · pos[r]) x[r]`` for every row ``r`` (``sign = -1``: the inverse rotation, the
    transpose); ``half`` selects the rotate-half layout.  ``out`` may be ``x``."""
    for r in range(x.shape[0]):
        _rotate_row(x, r, pos[r], inv_freq, half, sign, out)


@_parallel
def rotate_many(x, pos, inv_freq, half, sign, out):
    """:func:`rotate`, rows in parallel."""
    for r in prange(x.shape[0]):
        _rotate_row(x, r, pos[r], inv_freq, half, sign, out)
