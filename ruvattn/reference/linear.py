r"""Plain-numpy float64 twins of :mod:`ruvattn.kernels.linear`, and linear attention from its definition.

The twins (:func:`features`, :func:`summarize`, :func:`query`, :func:`weights`,
:func:`neighbours`) compute what the kernels of the same name compute, in the
kernels' representation, straight from the formulas with whole-array numpy.
They take the projection ``W (m, d)`` as drawn (**without** ``d^(−1/4)`` folded in)
and apply ``x̃ = x·d^(−1/4)`` themselves.  :func:`linear_attention` is the
independent yardstick: the weights ``φ(q)·φ(k_j) / Σ_l φ(q)·φ(k_l)`` from the
definition, with no key/value summary.  For FAVOR+ it evaluates
``log(φ(q)·φ(k_j)) = logsumexp_r(b_r + a_jr) − log m`` (``a``, ``b`` the exponents
of the keys and the query), the same number as the plain product but finite for
any input.

.. math::

    \text{elu+1:}\quad \varphi(x) = \operatorname{elu}(x) + 1, \qquad
    \text{FAVOR+:}\quad \varphi(x)_r = \frac{1}{\sqrt m}\exp\!\big(w_r\cdot\tilde x - \tfrac12\|\tilde x\|^2\big),
    \ \tilde x = x\,d^{-1/4} \\
    w_j = \frac{\varphi(q)\cdot\varphi(k_j)}{\sum_l \varphi(q)\cdot\varphi(k_l)}, \qquad
    \text{out} = \sum_j w_j v_j = \frac{\varphi(q)^\top S}{\varphi(q)\cdot z},\quad
    S = \sum_j \varphi(k_j) v_j^\top,\ z = \sum_j \varphi(k_j)

>>> import numpy as np
>>> from ruvattn.reference.linear import linear_attention
>>> out, w = linear_attention(np.zeros(2), np.array([[0.0, 0.0], [1.0, 1.0]]), np.eye(2), "elu")
>>> w.round(4).tolist()  # φ(0) = (1, 1), φ((1, 1)) = (2, 2): weights 2 : 4
[0.3333, 0.6667]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ruvattn.reference import softmax

__all__ = [
    "elu_features",
    "favor_exponents",
    "favor_features",
    "features",
    "linear_attention",
    "neighbours",
    "query",
    "summarize",
    "weights",
]

Array = NDArray[np.float64]


def _f64(x: NDArray) -> Array:
    return np.asarray(x, dtype=np.float64)


def elu_features(x: NDArray) -> Array:
    """``elu(x) + 1``: ``x + 1`` for ``x > 0``, else ``exp(x)``."""
    x = _f64(x)
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def favor_exponents(x: NDArray, projection: NDArray) -> Array:
    """``a_r = w_r·x̃ − |x̃|²/2`` with ``x̃ = x·d^(−1/4)``: ``(..., m)``."""
    x = _f64(x)
    xt = x * x.shape[-1] ** -0.25
    return xt @ _f64(projection).T - 0.5 * np.sum(xt * xt, axis=-1, keepdims=True)


def favor_features(x: NDArray, projection: NDArray) -> Array:
    """``φ(x)_r = exp(a_r) / sqrt(m)`` (overflows to inf for large inputs: the raw definition)."""
    with np.errstate(over="ignore"):
        return np.exp(favor_exponents(x, projection)) / np.sqrt(np.shape(projection)[0])


def features(x: NDArray, feature_map: str, projection: NDArray | None = None) -> Array:
    """The raw features of ``x (d,)`` or ``(n, d)`` (twin of the kernel ``features``)."""
    return elu_features(x) if feature_map == "elu" else favor_features(x, projection)


def _kept(k: NDArray, v: NDArray, keep: NDArray | None) -> tuple[Array, Array]:
    k, v = _f64(k), _f64(v)
    return (k, v) if keep is None else (k[np.asarray(keep)], v[np.asarray(keep)])


def summarize(
    k: NDArray, v: NDArray, feature_map: str, projection: NDArray | None = None, keep: NDArray | None = None
) -> tuple[Array, Array, Array, Array]:
    """``(S (F, dv), z (F,), shift (F,), log_norm (F,))`` in the kernels' representation.

    FAVOR+: ``A = exponents of the kept keys (n, m)``, ``shift = max_j A``,
    ``E = exp(A − shift)``, ``S = Eᵀ V``, ``z = Σ_j E_j``; elu+1: ``E = φ(K)``, shift 0.
    ``log_norm = shift + log z``.  The textbook ``S`` is ``S·exp(shift)/sqrt(m)``.
    """
    k, v = _kept(k, v, keep)
    if feature_map == "elu":
        e, shift = elu_features(k), np.zeros(k.shape[1])
    else:
        a = favor_exponents(k, projection)
        shift = a.max(axis=0)
        e = np.exp(a - shift)
    z = e.sum(axis=0)
    with np.errstate(divide="ignore"):
        return e.T @ v, z, shift, shift + np.log(z)


def query(
    q: NDArray,
    s: NDArray,
    z: NDArray,
    shift: NDArray,
    log_norm: NDArray,
    feature_map: str,
    projection: NDArray | None = None,
) -> Array:
    """One query against a summary: ``u = φ(q)`` (elu+1) or ``exp(b + shift − max(b + log_norm))``
    (FAVOR+, ``b`` the query's exponents); ``out = uᵀS / u·z``."""
    if feature_map == "elu":
        u = elu_features(q)
    else:
        b = favor_exponents(q, projection)
        u = np.exp(b + _f64(shift) - np.max(b + _f64(log_norm)))
    return u @ _f64(s) / (u @ _f64(z))


def linear_attention(
    q: NDArray, k: NDArray, v: NDArray, feature_map: str, projection: NDArray | None = None,
    keep: NDArray | None = None,
) -> tuple[Array, Array]:  # fmt: skip
    """``(output (dv,), weights (n,))`` from the definition (see the module docstring); removed keys weigh 0."""
    q, k, v = _f64(q), _f64(k), _f64(v)
    n = k.shape[0]
    live = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
    w = np.zeros(n)
    if feature_map == "elu":
        kernel = elu_features(k[live]) @ elu_features(q)
        w[live] = kernel / kernel.sum()
    else:
        a = favor_exponents(k[live], projection)  # (n, m)
        b = favor_exponents(q, projection)  # (m,)
        log_kernel = np.array([softmax(b + row)[1] for row in a])  # logsumexp_r(b_r + a_jr)
        w[live] = softmax(log_kernel)[0]
    return w[live] @ v[live], w


def weights(
    q: NDArray, k: NDArray, feature_map: str, projection: NDArray | None = None, keep: NDArray | None = None
) -> Array:
    """The normalised weights ``(n,)`` of one query (twin of ``weights_one``)."""
    return linear_attention(q, k, np.zeros((np.shape(k)[0], 0)), feature_map, projection, keep)[1]


def neighbours(
    qs: NDArray, k: NDArray, v: NDArray, indptr: NDArray, indices: NDArray, feature_map: str,
    projection: NDArray | None = None,
) -> Array:  # fmt: skip
    """Node ``i`` over rows ``indices[indptr[i]:indptr[i+1]]`` (twin of ``neighbours_many``); no neighbours: zeros."""
    k, v = _f64(k), _f64(v)
    out = np.zeros((np.shape(qs)[0], v.shape[1]))
    for i in range(out.shape[0]):
        ids = np.asarray(indices[indptr[i] : indptr[i + 1]])
        if ids.size:
            out[i] = linear_attention(qs[i], k[ids], v[ids], feature_map, projection)[0]
    return out
