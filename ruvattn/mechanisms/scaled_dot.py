r"""Scaled dot-product attention.

.. math::

    s_j = \frac{q \cdot k_j}{\sqrt{d}\,T} + b_j, \qquad
    w = \operatorname{softmax}(s), \qquad
    \text{out} = \sum_j w_j v_j

(Vaswani et al. 2017, "Attention is all you need".)  ``scale`` replaces
``1/sqrt(d)``; ``T`` is the temperature; ``b`` an optional additive bias; a
boolean keep-mask removes keys (weight exactly 0).  Matches
``torch.nn.functional.scaled_dot_product_attention`` (golden ``sdpa_*`` cases).

Shapes:
    - query ``(d,)``, keys ``(n, d)``, values ``(n, dv)`` -> output ``(dv,)``
    - mask ``(n,)`` bool (true = attend), bias ``(n,)`` float
    - forward_batch: queries ``(m, d)`` -> ``(m, dv)``; mask/bias ``(n,)`` or ``(m, n)``
    - forward_neighbours: queries ``(N, d)``, key/value tables ``(M, d)``/``(M, dv)``,
      neighbours CSR or padded ``(N, k)`` -> ``(N, dv)``

>>> import numpy as np
>>> from ruvattn import ScaledDotProductAttention
>>> attn = ScaledDotProductAttention(2)
>>> keys = [[1.0, 0.0], [0.0, 1.0]]
>>> attn.attention_weights([np.log(3.0) * np.sqrt(2), 0.0], keys).round(4).tolist()
[0.75, 0.25]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import Unsupported
from ruvattn.kernels import attention as K
from ruvattn.mechanisms.base import (
    DIM,
    DROPOUT,
    SCALE,
    SEED,
    TEMPERATURE,
    Attention,
    Complexity,
    Gradients,
    Prepared,
    edge_weight_bias,
    register,
    softmax_attention_grads,
)

__all__ = ["Gradients", "ScaledDotProductAttention"]

Array = NDArray[np.floating]


class DropoutMixin:
    """Dropout on attention weights in training mode, with a seeded generator."""

    config: Any
    training: bool

    def _init_rng(self) -> None:
        self._rng = np.random.default_rng(self.config.seed)

    @property
    def _dropping(self) -> bool:
        return self.training and self.config.dropout > 0

    def _dropout(self, w: Array) -> Array:
        p = self.config.dropout
        keep = self._rng.random(w.shape) >= p
        return w * keep / w.dtype.type(1 - p)


@register("scaled_dot_product")
class ScaledDotProductAttention(DropoutMixin, Attention):
    """Scaled dot-product attention (see the module docstring for the formula and shapes)."""

    metadata_fields = ("edge_weights",)
    _metadata_options = edge_weight_bias
    forward_options = frozenset({"mask", "bias", "ids"})
    params = (DIM, SCALE, TEMPERATURE, DROPOUT, SEED)
    supports_backward = True
    reads_quantized = True

    def _init_state(self) -> None:
        self._init_rng()

    @property
    def complexity(self) -> Complexity:
        return Complexity("linear", "O(n·d) time, O(n) memory per query")

    def forward(
        self, query: Any, keys: Any, values: Any = None, *, mask: Any = None, bias: Any = None, ids: Any = None
    ) -> Array:
        """Attention output ``(dv,)`` of one query; ``ids`` selects rows of key/value tables."""
        if mask is None and bias is None and ids is None and not self._dropping:
            dt = self._plain_arrays(query, keys, values)  # the hot path: a few attribute reads
            if dt is not None:
                w = np.empty((1, keys.shape[0]), dt)
                out = np.empty(values.shape[1], dt)
                lse = np.empty(1, dt)
                if K.attend_one(query, keys, values, 1, self._typed_scale(self.config.dim, dt), w, out, lse) == K.OK:
                    return out
        # everything else, including the typed error for a failed fast call
        return self.forward_with_lse(query, keys, values, mask=mask, bias=bias, ids=ids)[0]

    def forward_with_lse(
        self, query: Any, keys: Any, values: Any, *, mask: Any = None, bias: Any = None, ids: Any = None
    ) -> tuple[Array, float]:
        """``(output, lse)`` where ``lse = log sum_j exp(s_j)`` over the kept keys."""
        op = f"{self.kind}.forward"
        keys, values = self._kv(op, keys, values)
        out, w, lse = self._one(op, query, keys, values, mask, bias, ids, 1, self._scale(self.hidden_dim))
        if self._dropping:
            v = V.as_array(values, op, "values", 2, out.dtype)
            rows = v if ids is None else v[np.asarray(ids, dtype=np.int64)]
            out = V.check_output(op, self._dropout(w[0]) @ rows, out.dtype)  # 1/(1-p) can overflow
        return out, float(lse[0])

    def _weights_one(
        self, op: str, query: Any, keys: Any, *, mask: Any = None, bias: Any = None, ids: Any = None
    ) -> Array:
        """Softmax weights ``(1, n)`` of one query (before dropout)."""
        keys = self._check_keys(op, keys) if isinstance(keys, Prepared) else keys
        return self._one(op, query, keys, None, mask, bias, ids, 1, self._scale(self.hidden_dim))[1]

    def forward_batch(
        self, queries: Any, keys: Any, values: Any = None, *, mask: Any = None, bias: Any = None
    ) -> Array:
        """Many queries ``(m, d)`` over one key set -> ``(m, dv)``, parallel over queries."""
        op = f"{self.kind}.forward_batch"
        keys, values = self._kv(op, keys, values)
        sc = self._scale(self.hidden_dim)
        if self._dropping:
            _, w, _ = self._many(op, queries, keys, values, mask, bias, 1, sc, True)
            v = V.as_array(values, op, "values", 2, w.dtype)
            return V.check_output(op, self._dropout(w[:, 0]) @ v, w.dtype)  # 1/(1-p) can overflow
        return self._many(op, queries, keys, values, mask, bias, 1, sc, False)[0]

    def _weights_batch(self, op: str, queries: Any, keys: Any, *, mask: Any = None, bias: Any = None) -> Array:
        """Weights ``(1, m, n)`` of many queries over one key set."""
        keys = self._check_keys(op, keys) if isinstance(keys, Prepared) else keys
        w = self._many(op, queries, keys, None, mask, bias, 1, self._scale(self.hidden_dim), True)[1]
        return w.transpose(1, 0, 2)

    def forward_neighbours(self, queries: Any, keys: Any, values: Any, neighbours: Any) -> Array:
        """Node ``i`` (query row ``i``) over its own neighbour rows of the key/value tables.

        ``neighbours``: a :class:`~ruvattn.graph.NeighbourList`, ``(indptr, indices)``,
        a scipy CSR matrix, or padded ``(N, k)`` ids with -1 for empty slots.  A
        node with no neighbours gets a zero output row.  Parallel over nodes.
        """
        op = f"{self.kind}.forward_neighbours"
        sc = self._scale(self.hidden_dim)
        if self._dropping:
            _, w, _, nl = self._neighbours(op, queries, keys, values, neighbours, 1, sc, True)
            v = V.as_array(values, op, "values", 2, w.dtype)
            a = sp.csr_matrix((self._dropout(w[0]), nl.indices, nl.indptr), shape=(nl.num_nodes, v.shape[0]))
            return V.check_output(op, np.asarray(a @ v), w.dtype)  # 1/(1-p) can overflow
        return self._neighbours(op, queries, keys, values, neighbours, 1, sc, False)[0]

    def _weights_neighbours(self, op: str, queries: Any, keys: Any, neighbours: Any) -> Array:
        """Per-edge weights ``(1, nnz)`` aligned with the neighbour ids (as PyG's ``return_attention_weights``)."""
        return self._neighbours(op, queries, keys, None, neighbours, 1, self._scale(self.hidden_dim), True)[1]

    def backward(
        self, query: Any, keys: Any, values: Any, grad_output: Any, *, mask: Any = None, bias: Any = None
    ) -> Gradients:
        r"""Gradients of ``L = sum(grad_output * forward(...))`` for one query ``(d,)`` or a batch ``(m, d)``.

        With :math:`P` the weights, :math:`G` the upstream gradient and :math:`c` the scale:
        :math:`dP = G V^\top`, :math:`dS = P \odot (dP - \operatorname{rowsum}(P \odot dP))`,
        :math:`\nabla_Q = c\,dS\,K`, :math:`\nabla_K = c\,dS^\top Q`, :math:`\nabla_V = P^\top G`
        (golden ``sdpa_grad_*`` cases, torch autograd).  The weights are recomputed, not stored;
        inference mode only (dropout would need its mask).
        """
        op = f"{self.kind}.backward"
        if self._dropping:
            raise Unsupported(f"{op}: gradients through dropout are not available; call .eval() first.")
        single = np.ndim(query) == 1
        qs = np.atleast_2d(query)
        sc = self._scale(self.hidden_dim)
        _, w, _ = self._many(op, qs, keys, None, mask, bias, 1, sc, True)
        p = w[:, 0]
        k = V.as_array(keys, op, "keys", 2, p.dtype)
        v = V.as_array(values, op, "values", 2, p.dtype)
        V.check_keys_values(op, k, v)
        g = self._upstream(op, grad_output, qs.shape[0], v.shape[1], single, p.dtype)
        q = V.as_array(qs, op, "query", 2, p.dtype)
        gq, gk, gv = (V.check_output(op, x, p.dtype) for x in softmax_attention_grads(q, k, v, p, g, sc))
        return Gradients(gq[0] if single else gq, gk, gv)
