r"""Flash attention: exact softmax attention computed tile by tile.

Keys are streamed in blocks of ``block_size``; an online softmax keeps, per
query, the running maximum score :math:`m`, the running sum
:math:`\ell = \sum_j e^{s_j - m}` and the running weighted sum of values.
When a block raises the maximum from :math:`m` to :math:`m'`, the state is
rescaled by :math:`e^{m - m'}`:

.. math::

    \ell' = \ell\,e^{m - m'} + \sum_{j \in B} e^{s_j - m'}, \qquad
    a' = a\,e^{m - m'} + \sum_{j \in B} e^{s_j - m'} v_j, \qquad
    \text{out} = a / \ell, \quad \text{lse} = m + \log \ell .

(Dao et al. 2022; Milakov & Gimelshein 2018.)  The ``n``-long row of scores
is never stored: working memory is one tile of ``block_size`` scores per
query, whatever the number of keys.  From 8 queries on, blocks of queries meet
each tile of keys together, ``Q Kᵀ`` and ``P V`` of a tile as BLAS products
(:mod:`ruvattn.kernels.tiles`), so keys and values are read once per block of
queries rather than once per query; a tile there is a whole number of
``block_size`` blocks, up to 512 keys (one ``rows x tile`` score tile per block
of queries, still independent of the number of keys): a product of 64 keys runs
far from the BLAS's peak (1,000 x 1,000 x 128 measured 8.7 ms with tiles of 64
keys, 7.6 ms with 512).  The log-sum-exp is returned so a
backward pass can recompute the weights.  Equals
:class:`~ruvattn.ScaledDotProductAttention` to float rounding (golden
``flash_*`` cases).

Shapes:
    - query ``(d,)``, keys ``(n, d)``, values ``(n, dv)`` -> output ``(dv,)``
    - forward_batch: queries ``(m, d)`` -> ``(m, dv)`` and lse ``(m,)``
    - mask ``(n,)`` or ``(m, n)`` bool (true = attend), bias likewise
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._blas import one_thread
from ruvattn._params import Param
from ruvattn.kernels import attention as K
from ruvattn.kernels import tiles as T
from ruvattn.mechanisms.base import (
    DIM,
    SCALE,
    TEMPERATURE,
    Attention,
    Complexity,
    Gradients,
    _mode_array,
    edge_weight_bias,
    register,
)

__all__ = ["FlashAttention"]

Array = NDArray[np.floating]


@register("flash")
class FlashAttention(Attention):
    """Tiled exact attention with an online softmax (see the module docstring)."""

    metadata_fields = ("edge_weights",)
    _metadata_options = edge_weight_bias
    forward_options = frozenset({"mask", "bias"})
    supports_backward = True
    params = (
        DIM,
        Param(
            "block_size",
            V.Integer(1, hint=" Try 64 or 128."),
            64,
            "keys per tile",
            options=lambda p: sorted({8, 16, 32, 64, 128, 256, int(p["block_size"])}),
        ),
        SCALE,
        TEMPERATURE,
    )

    @property
    def complexity(self) -> Complexity:
        return Complexity("linear", "O(n·d) time, O(block_size) working memory per query")

    def forward(self, query: Any, keys: Any, values: Any = None, *, mask: Any = None, bias: Any = None) -> Array:
        """Output ``(dv,)`` of one query."""
        op = f"{self.kind}.forward"
        q = V.as_array(query, op, "query", 1)
        V.check_width(op, "query", q, self.hidden_dim)
        out, _ = self._run(op, q[None, :], keys, values, None if mask is None else np.asarray(mask), bias)
        return out[0]

    def forward_with_lse(
        self, queries: Any, keys: Any, values: Any, *, mask: Any = None, bias: Any = None
    ) -> tuple[Array, Array]:
        """``(outputs (m, dv), lse (m,))`` for queries ``(m, d)``."""
        return self._run(f"{self.kind}.forward_with_lse", queries, keys, values, mask, bias)

    def forward_batch(
        self, queries: Any, keys: Any, values: Any = None, *, mask: Any = None, bias: Any = None
    ) -> Array:
        """Outputs ``(m, dv)`` for queries ``(m, d)``, parallel over queries."""
        return self._run(f"{self.kind}.forward_batch", queries, keys, values, mask, bias)[0]

    def _weights_one(self, op: str, query: Any, keys: Any, *, mask: Any = None, bias: Any = None) -> Array:
        """The weights ``(1, n)`` the tiles implicitly use (computed exactly; flash itself never stores them)."""
        keys = self._check_keys(op, keys)
        return self._one(op, query, keys, None, mask, bias, None, 1, self._scale(self.hidden_dim))[1]

    def _weights_batch(self, op: str, queries: Any, keys: Any, *, mask: Any = None, bias: Any = None) -> Array:
        keys = self._check_keys(op, keys)
        w = self._many(op, queries, keys, None, mask, bias, 1, self._scale(self.hidden_dim), True)[1]
        return w.transpose(1, 0, 2)

    def _weights_neighbours(self, op: str, queries: Any, keys: Any, neighbours: Any) -> Array:
        return self._neighbours(op, queries, keys, None, neighbours, 1, self._scale(self.hidden_dim), True)[1]

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Each node over its own neighbour list (lists are short: one tile each)."""
        op = f"{self.kind}.forward_neighbours"
        return self._neighbours(op, queries, keys, values, neighbours, 1, self._scale(self.hidden_dim), False)[0]

    def backward(
        self, query: Any, keys: Any, values: Any, grad_output: Any, *, mask: Any = None, bias: Any = None
    ) -> Gradients:
        r"""Gradients of ``sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)``, as
        FlashAttention-2 computes them: the forward's log-sum-exp :math:`\ell` is kept, and each tile of
        ``block_size`` keys recomputes its weights :math:`P = \exp(c\,Q K_b^\top + B - \ell)`, then
        :math:`dV_b = P^\top G`, :math:`dS = P \odot (G V_b^\top - D)` with :math:`D = \operatorname{rowsum}(G
        \odot O)`, :math:`dK_b = c\,dS^\top Q` and :math:`dQ \mathrel{+}= c\,dS\,K_b`.  Working memory is
        ``(m, block_size)`` whatever the number of keys; the weights matrix is never stored.
        """
        op = f"{self.kind}.backward"
        single = np.ndim(query) == 1
        qs = np.atleast_2d(query)
        out, lse = self._run(op, qs, keys, values, None if mask is None else np.asarray(mask), bias)
        keys, values = self._kv(op, keys, values)
        q, k, v, dt = self._tables(op, qs, keys, values)
        m, n = q.shape[0], k.shape[0]
        g = self._upstream(op, grad_output, m, v.shape[1], single, dt)
        keep, keep_mode = _mode_array(op, "mask", mask, m, n, None)
        b, bias_mode = _mode_array(op, "bias", bias, m, n, dt)
        sc = dt.type(self._scale(self.hidden_dim))
        total = (g * out).sum(axis=1, keepdims=True)
        dq = np.zeros_like(q)
        dk = np.empty_like(k)
        dv = np.empty_like(v)
        block = self.config.block_size
        for start in range(0, n, block):
            stop = min(start + block, n)
            kb, vb = k[start:stop], v[start:stop]
            s = (q @ kb.T) * sc
            if bias_mode:
                s += b[:, start:stop]
            p = np.exp(s - lse[:, None])
            if keep_mode:
                p = np.where(keep[:, start:stop], p, dt.type(0))
            dv[start:stop] = p.T @ g
            ds = p * (g @ vb.T - total)
            dk[start:stop] = (ds.T @ q) * sc
            dq += (ds @ kb) * sc
        gq, gk, gv = (V.check_output(op, x, dt) for x in (dq, dk, dv))
        return Gradients(gq[0] if single else gq, gk, gv)

    def _run(self, op: str, queries: Any, keys: Any, values: Any, mask: Any, bias: Any) -> tuple[Array, Array]:
        keys, values = self._kv(op, keys, values)
        qs, k, v, dt = self._tables(op, queries, keys, values)
        m, n = qs.shape[0], k.shape[0]
        keep, keep_mode = _mode_array(op, "mask", mask, m, n, None)
        b, bias_mode = _mode_array(op, "bias", bias, m, n, dt)
        out = np.empty((m, v.shape[1]), dt)
        lse = np.empty(m, dt)
        status = np.empty(m, np.int8)
        sc = dt.type(self._scale(self.hidden_dim))
        block = self.config.block_size
        bad = None  # rows that did not end OK, when the kernel counts them
        if m == 1:  # one query (forward): its serial chunk, no thread-pool launch on the hot path
            K.flash_chunk(qs, k, v, keep, keep_mode, b, bias_mode, sc, block, out, lse, status, 0, 1)
        elif m >= T.MIN_QUERIES:  # blocks of queries against tiles of `block` keys (kernels/tiles.py)
            # whole blocks per product, up to the tile's keys (small products run far from the BLAS's peak)
            rows, keys = T.tile_shape(k.shape[1], v.shape[1], queries=m)
            tile = block * max(1, keys // block)
            if m <= rows:  # one block: its serial kernel on this thread (a BLAS thread pool is no oversubscription)
                bad = T.flash_block(qs, k, v, keep, keep_mode, b, bias_mode, sc, block, tile, out, lse, status, 0, m)
            else:
                with one_thread():
                    T.flash_many_tiled(qs, k, v, keep, keep_mode, b, bias_mode, sc, block, rows, tile, out, lse,
                                       status)  # fmt: skip
        else:
            K.flash_many(qs, k, v, keep, keep_mode, b, bias_mode, sc, block, out, lse, status, K.chunk_size(m))
        if bad if bad is not None else status.any():
            V.raise_for_status(op, status, query=qs, keys=k, values=v, bias=b if bias_mode else None)
        return out, lse
