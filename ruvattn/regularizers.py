"""Regularizers of the specification (section 4.8), each with its gradient: ``(loss, grad)``.

* :func:`laplacian` — graph smoothness ``sum_e w_e ||x_i - x_j||^2 = tr(Xᵀ L X)`` over an undirected edge list
  (each edge once), or its symmetric-normalised form ``tr(Xᵀ L_sym X)``;
* :func:`orthogonality` — ``||X Xᵀ - I||_F^2`` (squared, summed);
* :func:`norm_penalty` — ``mean_i (||x_i|| - target)^2``.

Arithmetic is float64 inside; gradients come back in the input's dtype.

>>> import numpy as np
>>> loss, grad = laplacian(np.array([[0.0], [1.0], [3.0]]), np.array([[0, 1], [1, 2]]))
>>> loss, grad.ravel().tolist()
(5.0, [-2.0, -2.0, 4.0])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, InvalidConfig, OutOfBounds
from ruvattn.losses import _float

__all__ = ["laplacian", "norm_penalty", "orthogonality"]

Array = NDArray[np.floating]


def _rows(op: str, x: Any) -> tuple[Array, np.dtype]:
    a, dt = _float(op, "embeddings", x)
    if a.ndim != 2:
        raise DimensionMismatch(f"{op}: embeddings must be (N, d); got {a.shape}.")
    return a, dt


def laplacian(embeddings: Any, edges: Any, edge_weights: Any = None, normalized: bool = False) -> tuple[float, Array]:
    """Laplacian smoothness of ``embeddings (N, d)`` over undirected ``edges``: ``(2, E)`` (PyG's ``edge_index``; a
    ``(2, 2)`` array is read so) or ``(E, 2)`` pairs, each edge listed **once** (both orientations would count it
    twice), with optional non-negative ``edge_weights (E,)``.

    ``normalized=False``: ``sum_e w_e ||x_i - x_j||^2``, gradient ``2 L X`` (``L = D - W``).  ``normalized=True``:
    ``sum_e w_e ||x_i / sqrt(deg_i) - x_j / sqrt(deg_j)||^2`` with ``deg_i = sum of i's edge weights`` (isolated
    nodes contribute nothing).  A self loop adds nothing to the unnormalised form.
    """
    op = "laplacian"
    x, dt = _rows(op, embeddings)
    e = np.asarray(edges)
    if e.size and e.dtype.kind not in "iu":
        raise DimensionMismatch(f"{op}: edges must hold integer node ids; got dtype {e.dtype}.")
    if e.ndim == 2 and e.shape[0] == 2:
        src, dst = e[0], e[1]
    elif e.ndim == 2 and e.shape[1] == 2:
        src, dst = e[:, 0], e[:, 1]
    else:
        raise DimensionMismatch(f"{op}: edges must be (2, E) or (E, 2); got shape {e.shape}.")
    n = x.shape[0]
    src, dst = src.astype(np.int64), dst.astype(np.int64)
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise OutOfBounds(f"{op}: an edge names a node outside [0, {n}).")
    if edge_weights is None:
        w = np.ones(src.size)
    else:
        w, _ = _float(op, "edge_weights", edge_weights)
        if w.shape != (src.size,):
            raise DimensionMismatch(f"{op}: edge_weights must be ({src.size},); got {w.shape}.")
        if (w < 0).any():
            raise InvalidConfig(f"{op}: edge_weights must be >= 0.")
    if normalized:
        deg = np.bincount(src, w, n) + np.bincount(dst, w, n)
        inv = np.divide(1.0, np.sqrt(deg), out=np.zeros(n), where=deg > 0)
        y = x * inv[:, None]
    else:
        inv, y = None, x
    diff = y[src] - y[dst]
    loss = float(np.sum(w * np.einsum("ed,ed->e", diff, diff)))
    g = np.zeros_like(x)
    contrib = 2.0 * w[:, None] * diff
    np.add.at(g, src, contrib)
    np.add.at(g, dst, -contrib)
    if inv is not None:
        g *= inv[:, None]
    return loss, g.astype(dt)


def orthogonality(embeddings: Any) -> tuple[float, Array]:
    """``sum (X Xᵀ - I)^2`` over the ``r x r`` Gram matrix of ``embeddings (r, d)``; gradient ``4 (X Xᵀ - I) X``."""
    x, dt = _rows("orthogonality", embeddings)
    g = x @ x.T - np.eye(x.shape[0])
    return float(np.sum(g * g)), (4.0 * g @ x).astype(dt)


def norm_penalty(embeddings: Any, target_norm: float = 1.0) -> tuple[float, Array]:
    """``mean_i (||x_i|| - target_norm)^2`` over the rows of ``embeddings (N, d)``; a zero row's gradient is 0 (the
    direction of steepest descent is undefined there)."""
    op = "norm_penalty"
    x, dt = _rows(op, embeddings)
    if not (np.isfinite(target_norm) and target_norm >= 0):
        raise InvalidConfig(f"{op}: target_norm must be a finite number >= 0; got {target_norm!r}.")
    if x.shape[0] == 0:
        raise DimensionMismatch(f"{op}: no rows to average over.")
    norms = np.linalg.norm(x, axis=1)
    loss = float(np.mean((norms - target_norm) ** 2))
    unit = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > 0)
    grad = 2.0 * (norms - target_norm)[:, None] * unit / x.shape[0]
    return loss, grad.astype(dt)
