"""Plain-numpy versions of every kernel: readable, slow, and the yardstick.

Each function here has the same name and meaning as its Numba twin in
:mod:`ruvattn.kernels.attention`, but returns new arrays instead of writing into
buffers.  They are public so that tests, teaching notebooks and users can see
the formula in a few lines of numpy:

>>> import numpy as np
>>> from ruvattn import reference as ref
>>> w, lse = ref.softmax(np.array([0.0, np.log(3.0)]))
>>> w.round(6).tolist(), round(float(lse), 6)
([0.25, 0.75], 1.386294)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "attention",
    "axpy",
    "dot",
    "flash_attention",
    "fold_tile",
    "matmat_t",
    "matvec",
    "multi_head_attention",
    "neighbour_attention",
    "online_softmax_update",
    "softmax",
    "weighted_sum",
]

Array = NDArray[np.floating]


def dot(a: Array, b: Array) -> np.floating:
    """``sum_i a[i] b[i]``."""
    return np.sum(a * b)


def axpy(alpha: float, x: Array, y: Array) -> Array:
    """``y + alpha x``."""
    return y + alpha * x


def weighted_sum(w: Array, rows: Array) -> Array:
    """``sum_j w[j] rows[j]``."""
    return (w[:, None] * rows).sum(axis=0)


def softmax(x: Array) -> tuple[Array, np.floating]:
    """Max-subtracted softmax and log-sum-exp; ``-inf`` entries get weight 0.

    An empty or all ``-inf`` input gives zeros and ``-inf``.
    """
    x = np.asarray(x)
    if x.size == 0 or np.all(x == -np.inf):
        return np.zeros_like(x), x.dtype.type(-np.inf)
    m = x.max()
    e = np.exp(x - m)
    total = e.sum()
    return e / total, m + np.log(total)


def online_softmax_update(m: float, total: float, acc: Array, scores: Array, rows: Array) -> tuple[float, float, Array]:
    """Fold a block of scores/value rows into the running ``(max, sum, acc)`` state."""
    live = scores != -np.inf
    if not live.any():
        return m, total, acc
    new_m = max(m, scores[live].max())
    alpha = np.exp(m - new_m)
    p = np.where(live, np.exp(scores - new_m), 0.0)
    return new_m, total * alpha + p.sum(), acc * alpha + weighted_sum(p, rows)


def fold_tile(best: Array, total: Array, acc: Array, s: Array, v: Array) -> tuple[Array, Array, Array]:
    """Fold a tile of scores ``s (r, c)`` with value rows ``v (c, dv)`` into every row's running
    ``(max, sum, acc)`` (the tiled kernels' online-softmax step; rows that saw only removed keys stay put)."""
    best, total, acc = best.copy(), total.copy(), acc.copy()
    for i in range(s.shape[0]):
        best[i], total[i], acc[i] = online_softmax_update(best[i], total[i], acc[i], s[i], v)
    return best, total, acc


def widest_row(indptr: NDArray[np.integer], first: int, last: int) -> int:
    """Longest of CSR rows ``first..last-1`` (0 for none)."""
    return int(np.diff(np.asarray(indptr)[first : last + 1]).max(initial=0))


def matvec(w: Array, x: Array, b: Array) -> Array:
    """``w @ x + b``."""
    return w @ x + b


def matmat_t(x: Array, w: Array, b: Array) -> Array:
    """``x @ w.T + b`` (PyTorch ``nn.Linear``)."""
    return x @ w.T + b


def _removed(keep: NDArray[np.bool_] | None, bias: Array | None, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    out = np.zeros(shape, dtype=bool)
    if keep is not None:
        out |= ~np.broadcast_to(keep, shape)
    if bias is not None:
        out |= np.broadcast_to(bias, shape) == -np.inf
    return out


def attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    scale: float | None = None,
    keep: NDArray[np.bool_] | None = None,
    bias: Array | None = None,
) -> tuple[Array, Array, np.floating]:
    """Scaled dot-product attention of one query ``q (d,)`` over ``k (n, d)``, ``v (n, dv)``.

    Returns ``(output (dv,), weights (n,), lse)``.  ``keep`` is the boolean
    keep-mask (true = the key takes part), ``bias`` an additive score bias.
    """
    d = q.shape[-1]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    s = (k @ q) * scale
    if bias is not None:
        s = s + bias
    s = np.where(_removed(keep, bias, s.shape), -np.inf, s)
    w, lse = softmax(s)
    live = w > 0
    out = weighted_sum(w[live], v[live]) if live.any() else np.zeros(v.shape[1], v.dtype)
    return out, w, lse


def flash_attention(
    q: Array, k: Array, v: Array, *, scale: float | None = None, block: int = 64
) -> tuple[Array, np.floating]:
    """Exact attention of one query computed block by block with the online softmax."""
    d = q.shape[-1]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    m, total, acc = -np.inf, 0.0, np.zeros(v.shape[1])
    for start in range(0, k.shape[0], block):
        s = (k[start : start + block] @ q) * scale
        m, total, acc = online_softmax_update(m, total, acc, s, v[start : start + block])
    if total == 0.0:
        return acc, -np.inf
    return acc / total, m + np.log(total)


def multi_head_attention(
    query: Array,
    key: Array,
    value: Array,
    in_proj_weight: Array,
    in_proj_bias: Array,
    out_proj_weight: Array,
    out_proj_bias: Array,
    num_heads: int,
) -> tuple[Array, Array, Array]:
    """``torch.nn.MultiheadAttention`` for one query row (eval mode, packed projections).

    Returns ``(output (d,), head weights (h, n), head outputs (h, d/h))``.
    """
    d = query.shape[-1]
    wq, wk, wv = np.split(in_proj_weight, 3)
    bq, bk, bv = np.split(in_proj_bias, 3)
    q, k, v = matvec(wq, query, bq), matmat_t(key, wk, bk), matmat_t(value, wv, bv)
    dh = d // num_heads
    weights, heads = [], []
    for h in range(num_heads):
        cols = slice(h * dh, (h + 1) * dh)
        o, w, _ = attention(q[cols], k[:, cols], v[:, cols])
        weights.append(w)
        heads.append(o)
    concat = np.concatenate(heads)
    return matvec(out_proj_weight, concat, out_proj_bias), np.stack(weights), np.stack(heads)


def neighbour_attention(
    q: Array,
    k: Array,
    v: Array,
    indptr: NDArray[np.integer],
    indices: NDArray[np.integer],
    *,
    scale: float | None = None,
) -> Array:
    """Each node ``i`` attends over rows ``indices[indptr[i]:indptr[i+1]]``; no neighbours gives 0."""
    out = np.zeros((q.shape[0], v.shape[1]), dtype=np.result_type(q, v))
    for i in range(q.shape[0]):
        ids = indices[indptr[i] : indptr[i + 1]]
        if ids.size:
            out[i] = attention(q[i], k[ids], v[ids], scale=scale)[0]
    return out
