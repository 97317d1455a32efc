"""Contrastive losses of the specification (section 4.8), each with its gradient.

Every function returns ``(loss, grads)``: the loss as a Python float and the gradients with respect to
each array argument, in order, with the arguments' shapes and dtypes.  Arithmetic is float64 inside.

* :func:`info_nce` — InfoNCE: for each anchor and each of its positives, cross-entropy of the positive
  against the negatives over ``similarity / temperature`` (cosine or dot).  One anchor or a batch; one
  positive or several per anchor (each positive is a separate term, against the same negatives, and the
  terms are averaged); negatives per anchor ``(B, K, d)`` or shared by the batch ``(K, d)``.
* :func:`triplet` — ``max(||a - p + eps|| - ||a - n + eps|| + margin, 0)`` (PyTorch's ``triplet_margin_loss``).
* :func:`local_contrastive` — InfoNCE on a graph: a node's neighbours are its positives, non-neighbours
  its negatives (the specification's signature: one node, its neighbours' and non-neighbours' embeddings).
* :func:`consistency` — GRAND's consistency regularisation (Feng et al. 2020): the predictions of several
  stochastic passes (dropout, DropNode) over unlabelled nodes are pulled towards their sharpened mean.

>>> import numpy as np
>>> loss, (ga, gp, gn) = info_nce(np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([[0.0, 1.0]]), 1.0)
>>> round(loss, 6), round(float(-np.log(np.e / (np.e + 1))), 6)
(0.313262, 0.313262)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability

__all__ = ["consistency", "info_nce", "local_contrastive", "triplet"]

Array = NDArray[np.floating]


def _float(op: str, name: str, x: Any) -> tuple[Array, np.dtype]:
    """``x`` in float64, and the dtype its gradient is returned in (its own when float32/float64)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise DimensionMismatch(f"{op}: {name} must hold numbers; got dtype {a.dtype}.")
    dt = a.dtype if a.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    a64 = a.astype(np.float64)
    if not np.isfinite(a64).all():
        raise NumericalInstability(f"{op}: {name} holds NaN or inf.")
    return a64, dt


def _positive(op: str, name: str, v: Any) -> float:
    if not (isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v) and v > 0):
        raise InvalidConfig(f"{op}: {name} must be a finite number > 0; got {v!r}.")
    return float(v)


def _similarity(a: Array, x: Array, kind: str, op: str) -> tuple[Array, Any]:
    """``s[..., j] = sim(a[...], x[..., j, :])`` for ``a (B, d)``, ``x (B, J, d)`` or shared ``(J, d)``; and what the
    backward needs."""
    shared = x.ndim == 2
    if kind == "dot":
        s = a @ x.T if shared else np.einsum("bd,bjd->bj", a, x)
        return s, None
    na = np.linalg.norm(a, axis=-1)
    nx = np.linalg.norm(x, axis=-1)
    if (na == 0).any() or (nx == 0).any():
        raise NumericalInstability(f"{op}: cosine similarity of a zero vector is undefined; remove it or use 'dot'.")
    ah = a / na[:, None]
    xh = x / nx[..., None]
    s = ah @ xh.T if shared else np.einsum("bd,bjd->bj", ah, xh)
    return s, (ah, xh, na, nx)


def _similarity_grad(ds: Array, a: Array, x: Array, kind: str, saved: Any) -> tuple[Array, Array]:
    """Gradients of ``sum(ds * s)`` with respect to ``a`` and ``x`` (shapes as :func:`_similarity`)."""
    shared = x.ndim == 2
    if kind == "dot":
        if shared:
            return ds @ x, ds.T @ a
        return np.einsum("bj,bjd->bd", ds, x), ds[..., None] * a[:, None, :]
    ah, xh, na, nx = saved
    s = ah @ xh.T if shared else np.einsum("bd,bjd->bj", ah, xh)
    # d s / d a = (xh - s ah) / |a|,  d s / d x = (ah - s xh) / |x|
    if shared:
        ga = (ds @ xh - (ds * s).sum(1)[:, None] * ah) / na[:, None]
        gx = (ds.T @ ah - (ds * s).sum(0)[:, None] * xh) / nx[:, None]
    else:
        ga = (np.einsum("bj,bjd->bd", ds, xh) - (ds * s).sum(1)[:, None] * ah) / na[:, None]
        gx = (ds[..., None] * ah[:, None, :] - (ds * s)[..., None] * xh) / nx[..., None]
    return ga, gx


def info_nce(anchor: Any, positives: Any, negatives: Any, temperature: float = 0.07,
             similarity: str = "cosine") -> tuple[float, tuple[Array, Array, Array]]:  # fmt: skip
    """InfoNCE loss and its gradients ``(d_anchor, d_positives, d_negatives)``.

    Shapes: one anchor ``(d,)`` with positives ``(d,)`` or ``(P, d)`` and negatives ``(K, d)``; or a batch
    ``(B, d)`` with positives ``(B, d)`` or ``(B, P, d)`` and negatives ``(B, K, d)`` (each anchor's own) or
    ``(K, d)`` (shared).  For anchor ``b`` and positive ``p``::

        logits = [sim(a_b, p), sim(a_b, n_1), ..., sim(a_b, n_K)] / temperature
        term   = logsumexp(logits) - logits[0]

    and the loss is the mean of the terms.  ``similarity``: ``"cosine"`` (``"cos"``) or ``"dot"``.  With no
    negatives every term is 0.
    """
    op = "info_nce"
    tau = _positive(op, "temperature", temperature)
    kind = {"cosine": "cos", "cos": "cos", "dot": "dot"}.get(similarity)
    if kind is None:
        raise InvalidConfig(f"{op}: similarity must be 'cosine' or 'dot'; got {similarity!r}.")
    a, dt_a = _float(op, "anchor", anchor)
    p, dt_p = _float(op, "positives", positives)
    n, dt_n = _float(op, "negatives", negatives)
    single = a.ndim == 1
    if a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise DimensionMismatch(f"{op}: anchor must be (d,) or (B, d) with d > 0; got {a.shape}.")
    d = a.shape[-1]
    A = a[None] if single else a
    b = A.shape[0]
    # positives to (B, P, d)
    if single:
        if p.ndim not in (1, 2):
            raise DimensionMismatch(f"{op}: positives of one anchor must be (d,) or (P, d); got {p.shape}.")
        P = p.reshape(1, -1, p.shape[-1])
    else:
        if p.ndim == 2 and p.shape[0] == b:
            P = p[:, None, :]
        elif p.ndim == 3 and p.shape[0] == b:
            P = p
        else:
            raise DimensionMismatch(f"{op}: positives of {b} anchors must be ({b}, d) or ({b}, P, d); got {p.shape}.")
    if (single and n.ndim != 2) or (not single and n.ndim not in (2, 3)) or (n.ndim == 3 and n.shape[0] != b):
        want = "(K, d)" if single else f"({b}, K, d) or (K, d)"
        raise DimensionMismatch(f"{op}: negatives must be {want}; got {n.shape}.")
    for name, arr in (("positives", P), ("negatives", n)):
        if arr.shape[-1] != d:
            raise DimensionMismatch(f"{op}: {name} have width {arr.shape[-1]} but the anchor has {d}.")
    if P.shape[1] == 0:
        raise DimensionMismatch(f"{op}: every anchor needs at least one positive.")
    sp_, saved_p = _similarity(A, P, kind, op)  # (B, P)
    sn, saved_n = _similarity(A, n, kind, op)  # (B, K)
    lp, ln = sp_ / tau, sn / tau
    top = np.maximum(lp, ln.max(1, keepdims=True) if ln.shape[1] else -np.inf)  # (B, P)
    en = np.exp(ln[:, None, :] - top[..., None])  # (B, P, K)
    ep = np.exp(lp - top)
    z = ep + en.sum(-1)
    terms = np.log(z) + top - lp
    count = terms.size
    loss = float(terms.mean())
    # gradients of the mean with respect to the logits
    dlp = (ep / z - 1.0) / count  # (B, P)
    dln = (en / z[..., None]).sum(1) / count  # (B, K)
    ga_p, gp = _similarity_grad(dlp / tau, A, P, kind, saved_p)
    ga_n, gn = _similarity_grad(dln / tau, A, n, kind, saved_n)
    ga = ga_p + ga_n
    grads = (
        (ga[0] if single else ga).astype(dt_a),
        gp.reshape(np.shape(positives)).astype(dt_p),
        gn.reshape(np.shape(negatives)).astype(dt_n),
    )
    return loss, grads


def triplet(anchor: Any, positive: Any, negative: Any, margin: float = 1.0, eps: float = 1e-6,
            reduction: str = "mean") -> tuple[float | Array, tuple[Array, Array, Array]]:  # fmt: skip
    """Triplet margin loss ``max(||a - p + eps|| - ||a - n + eps|| + margin, 0)`` (``eps`` added to every component,
    as PyTorch's ``pairwise_distance``) for one triplet ``(d,)`` or a batch ``(B, d)``, and its gradients.

    ``reduction``: ``"mean"`` (a float, gradients of the mean), ``"sum"``, or ``"none"`` (the per-triplet losses,
    gradients of their sum).  At the hinge (loss exactly 0) the gradient is 0, as PyTorch.
    """
    op = "triplet"
    if reduction not in ("mean", "sum", "none"):
        raise InvalidConfig(f"{op}: reduction must be 'mean', 'sum' or 'none'; got {reduction!r}.")
    if not (np.isfinite(margin) and margin >= 0):
        raise InvalidConfig(f"{op}: margin must be a finite number >= 0; got {margin!r}.")
    a, dt_a = _float(op, "anchor", anchor)
    p, dt_p = _float(op, "positive", positive)
    n, dt_n = _float(op, "negative", negative)
    if not (a.shape == p.shape == n.shape) or a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise DimensionMismatch(f"{op}: anchor, positive and negative must share one shape (d,) or (B, d); got "
                                f"{a.shape}, {p.shape}, {n.shape}.")  # fmt: skip
    single = a.ndim == 1
    A, Pp, N = (x[None] if single else x for x in (a, p, n))
    if A.shape[0] == 0:
        raise DimensionMismatch(f"{op}: no triplets (batch of 0).")
    up, un = A - Pp + eps, A - N + eps
    dp, dn = np.linalg.norm(up, axis=1), np.linalg.norm(un, axis=1)
    per = np.maximum(dp - dn + margin, 0.0)
    scale = {"mean": 1.0 / per.size, "sum": 1.0, "none": 1.0}[reduction]
    active = (per > 0) * scale
    gpd = np.divide(up, dp[:, None], out=np.zeros_like(up), where=dp[:, None] > 0)
    gnd = np.divide(un, dn[:, None], out=np.zeros_like(un), where=dn[:, None] > 0)
    ga = active[:, None] * (gpd - gnd)
    gp = -active[:, None] * gpd
    gn = active[:, None] * gnd
    if single:
        ga, gp, gn = ga[0], gp[0], gn[0]
    value: float | Array
    if reduction == "none":
        value = per[0] if single else per
    else:
        value = float(per.sum() * scale)
    return value, (ga.astype(dt_a), gp.astype(dt_p), gn.astype(dt_n))


def local_contrastive(
    node_embedding: Any,
    neighbour_embeddings: Any,
    non_neighbour_embeddings: Any,
    temperature: float = 0.07,
    similarity: str = "cosine",
) -> tuple[float, tuple[Array, Array, Array]]:
    """Graph contrastive loss of one node: its neighbours ``(P, d)`` are the positives and its non-neighbours
    ``(K, d)`` the negatives of :func:`info_nce` (each neighbour a term, averaged); gradients
    ``(d_node, d_neighbours, d_non_neighbours)``.  For many nodes at once, pass batches to :func:`info_nce`."""
    nb = np.asarray(neighbour_embeddings)
    if nb.ndim != 2 or nb.shape[0] == 0:
        raise DimensionMismatch(f"local_contrastive: neighbour_embeddings must be (P, d) with P >= 1; got {nb.shape}.")
    return info_nce(node_embedding, nb, non_neighbour_embeddings, temperature, similarity)


def consistency(logits: Any, temperature: float = 0.5, index: Any = None) -> tuple[float, list[Array]]:
    r"""GRAND's consistency loss over ``S`` stochastic passes, with its gradients.

    ``logits`` is a sequence of ``S >= 2`` arrays ``(N, C)`` (one per pass); ``index`` the rows it applies to
    (default all; GRAND uses every node, labelled or not).  With :math:`P_s = \operatorname{softmax}(Z_s)`,
    :math:`\bar P = \frac1S \sum_s P_s` and the sharpened target
    :math:`T_{ic} = \bar P_{ic}^{1/\tau} / \sum_{c'} \bar P_{ic'}^{1/\tau}` (held constant, no gradient, as in
    GRAND's code),

    .. math::

        L = \frac{1}{S\,|I|} \sum_s \sum_{i \in I} \lVert P_{s,i} - T_i \rVert^2 .

    Returns ``(loss, [dL/dZ_s for each pass])`` (zero rows outside ``index``).

    >>> import numpy as np
    >>> z = np.array([[2.0, 0.0]])
    >>> loss, grads = consistency([z, z], temperature=1.0)  # equal passes, tau = 1: target = prediction
    >>> loss, float(np.abs(grads[0]).max())
    (0.0, 0.0)
    """
    op = "consistency"
    if isinstance(logits, np.ndarray) and logits.ndim == 3:
        logits = list(logits)
    if not isinstance(logits, (list, tuple)) or len(logits) < 2:
        raise InvalidConfig(f"{op}: logits must be a sequence of at least 2 passes' (N, C) arrays.")
    zs, dts = zip(*(_float(op, f"logits[{s}]", z) for s, z in enumerate(logits)), strict=True)
    shape = zs[0].shape
    if len(shape) != 2 or shape[1] < 1 or any(z.shape != shape for z in zs):
        raise DimensionMismatch(f"{op}: every pass must be (N, C) of one shape; got {[z.shape for z in zs]}.")
    tau = _positive(op, "temperature", temperature)
    n = shape[0]
    rows = np.arange(n) if index is None else np.asarray(index)
    if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
        raise DimensionMismatch(f"{op}: index must be a flat array of row ids; got {rows!r}.")
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise DimensionMismatch(f"{op}: index must be row ids in [0, {n}).")
    if rows.size == 0:
        raise InvalidConfig(f"{op}: index selects no rows.")
    ps = []
    for z in zs:
        e = np.exp(z[rows] - z[rows].max(axis=1, keepdims=True))
        ps.append(e / e.sum(axis=1, keepdims=True))
    mean = np.mean(ps, axis=0)
    logp = np.log(np.maximum(mean, np.finfo(np.float64).tiny)) / tau
    t = np.exp(logp - logp.max(axis=1, keepdims=True))
    t /= t.sum(axis=1, keepdims=True)
    scale = 1.0 / (len(zs) * rows.size)
    loss = float(sum(((p - t) ** 2).sum() for p in ps) * scale)
    grads = []
    for p, z, dt in zip(ps, zs, dts, strict=True):
        dp = 2.0 * scale * (p - t)
        dz = np.zeros_like(z)
        dz[rows] = p * (dp - (p * dp).sum(axis=1, keepdims=True))
        grads.append(dz.astype(dt))
    return loss, grads
