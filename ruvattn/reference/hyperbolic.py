r"""Plain-numpy float64 twins of :mod:`ruvattn.kernels.hyperbolic`, written from the textbook formulas.

These use the ``artanh`` / ``arccosh`` forms of Ganea, Bécigneul & Hofmann (2018) and
geoopt's κ-stereographic maths directly (the kernels use better-conditioned
rearrangements), so the two are independent.  ``k`` is the signed curvature:
``k < 0`` the Poincaré ball, ``k > 0`` the stereographic sphere.  Row-wise:
``(N, d)`` in, ``(N, d)`` or ``(N,)`` out.  No clamps: inputs must be valid.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def _f64(*xs: NDArray) -> list[Array]:
    return [np.atleast_2d(np.asarray(x, np.float64)) for x in xs]


def tan_k(x: Array, k: float) -> Array:
    return np.tanh(x) if k < 0 else np.tan(x) if k > 0 else x


def artan_k(x: Array, k: float) -> Array:
    return np.arctanh(x) if k < 0 else np.arctan(x) if k > 0 else x


def mobius_add(x: NDArray, y: NDArray, k: float) -> Array:
    x, y = _f64(x, y)
    xy = np.sum(x * y, -1, keepdims=True)
    x2 = np.sum(x * x, -1, keepdims=True)
    y2 = np.sum(y * y, -1, keepdims=True)
    return ((1 - 2 * k * xy - k * y2) * x + (1 + k * x2) * y) / (1 - 2 * k * xy + k**2 * x2 * y2)


def dist(x: NDArray, y: NDArray, k: float) -> Array:
    """``(2/s) artan_k(s ||(-x) ⊕ y||)``."""
    s = np.sqrt(abs(k))
    x, y = _f64(x, y)
    return 2 / s * artan_k(s * np.linalg.norm(mobius_add(-x, y, k), axis=-1), k)


def dist_arccosh(x: NDArray, y: NDArray, c: float) -> Array:
    """Poincaré ball (curvature -c): ``(1/√c) arccosh(1 + 2c|x-y|² / ((1-c|x|²)(1-c|y|²)))``."""
    x, y = _f64(x, y)
    num = 2 * c * np.sum((x - y) ** 2, -1)
    den = (1 - c * np.sum(x * x, -1)) * (1 - c * np.sum(y * y, -1))
    return np.arccosh(1 + num / den) / np.sqrt(c)


def _unit(u: Array) -> tuple[Array, Array]:
    n = np.linalg.norm(u, axis=-1, keepdims=True)
    return n, np.divide(u, n, out=np.zeros_like(u), where=n > 0)


def expmap0(u: NDArray, k: float) -> Array:
    s = np.sqrt(abs(k))
    (u,) = _f64(u)
    n, unit = _unit(u)
    return tan_k(s * n, k) / s * unit


def logmap0(y: NDArray, k: float) -> Array:
    s = np.sqrt(abs(k))
    (y,) = _f64(y)
    n, unit = _unit(y)
    return artan_k(s * n, k) / s * unit


def conformal_factor(x: NDArray, k: float) -> Array:
    (x,) = _f64(x)
    return 2 / (1 + k * np.sum(x * x, -1))


def expmap(x: NDArray, u: NDArray, k: float) -> Array:
    s = np.sqrt(abs(k))
    x, u = _f64(x, u)
    lam = conformal_factor(x, k)[:, None]
    n, unit = _unit(u)
    return mobius_add(x, tan_k(s * lam * n / 2, k) / s * unit, k)


def logmap(x: NDArray, y: NDArray, k: float) -> Array:
    s = np.sqrt(abs(k))
    x, y = _f64(x, y)
    lam = conformal_factor(x, k)[:, None]
    n, unit = _unit(mobius_add(-x, y, k))
    return 2 / (s * lam) * artan_k(s * n, k) * unit


def mobius_matvec(m: NDArray, x: NDArray, k: float) -> Array:
    s = np.sqrt(abs(k))
    (x,) = _f64(x)
    mx = x @ np.asarray(m, np.float64).T
    xn = np.linalg.norm(x, axis=-1, keepdims=True)
    mn, unit = _unit(mx)
    ratio = np.divide(mn, xn, out=np.zeros_like(mn), where=xn > 0)
    return tan_k(ratio * artan_k(s * xn, k), k) / s * unit


def project(x: NDArray, k: float, eps: float) -> Array:
    (x,) = _f64(x)
    if k >= 0:
        return x
    maxnorm = (1 - eps) / np.sqrt(-k)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(n > maxnorm, x / np.maximum(n, 1e-300) * maxnorm, x)


# -- Lorentz model of curvature -c -------------------------------------------------


def lorentz_inner(x: NDArray, y: NDArray) -> Array:
    x, y = _f64(x, y)
    return -x[:, 0] * y[:, 0] + np.sum(x[:, 1:] * y[:, 1:], -1)


def lorentz_dist(x: NDArray, y: NDArray, c: float) -> Array:
    return np.arccosh(np.maximum(-c * lorentz_inner(x, y), 1.0)) / np.sqrt(c)


def lorentz_expmap(x: NDArray, u: NDArray, c: float) -> Array:
    x, u = _f64(x, u)
    s = np.sqrt(c)
    un = np.sqrt(np.maximum(lorentz_inner(u, u), 0))[:, None]
    sinc = np.divide(np.sinh(s * un), s * un, out=np.ones_like(un), where=un > 0)
    return np.cosh(s * un) * x + sinc * u


def lorentz_logmap(x: NDArray, y: NDArray, c: float) -> Array:
    x, y = _f64(x, y)
    w = y + c * lorentz_inner(x, y)[:, None] * x
    wn = np.sqrt(np.maximum(lorentz_inner(w, w), 0))[:, None]
    d = lorentz_dist(x, y, c)[:, None]
    return np.divide(d, wn, out=np.zeros_like(wn), where=wn > 0) * w


def poincare_to_lorentz(p: NDArray, c: float) -> Array:
    (p,) = _f64(p)
    p2 = np.sum(p * p, -1, keepdims=True)
    return np.concatenate([(1 + c * p2) / (np.sqrt(c) * (1 - c * p2)), 2 * p / (1 - c * p2)], axis=-1)


def lorentz_to_poincare(x: NDArray, c: float) -> Array:
    (x,) = _f64(x)
    return x[:, 1:] / (1 + np.sqrt(c) * x[:, :1])


# -- attention -------------------------------------------------------------------


def hyperbolic_attention(
    q: NDArray,
    keys: NDArray,
    values: NDArray,
    c: float,
    tau: float,
    aggregation: str = "tangent",
    project_inputs: bool = False,
    eps: float = 1e-5,
) -> tuple[Array, Array]:
    """``(output, weights)``: ``w = softmax(-d_c(q, k_j)/τ)``; tangent mean at 0 or Einstein midpoint.

    The inputs must be points of the ball (``c|x|² < 1``; otherwise ``ValueError``), unless
    ``project_inputs``: then every point beyond radius ``(1 - eps)/√c`` is first pulled to it
    (:func:`project`) -- the kernel's treatment, which also clamps valid points that close to the
    boundary (this twin uses those as given when ``project_inputs`` is false).
    """
    k = -c
    if project_inputs:
        q, keys, values = project(q, k, eps)[0], project(keys, k, eps), project(values, k, eps)
    else:
        for name, x in (("query", q), ("keys", keys), ("values", values)):
            x = np.asarray(x, np.float64)
            if np.any(c * np.sum(x * x, -1) >= 1):
                raise ValueError(
                    f"hyperbolic_attention: {name} has a point on or outside the ball of radius 1/sqrt(c)."
                )
    d = dist(np.broadcast_to(np.asarray(q, np.float64), np.shape(keys)), keys, k)
    s = -d / tau
    w = np.exp(s - s.max())
    w /= w.sum()
    v = np.asarray(values, np.float64)
    if aggregation == "tangent":
        return expmap0(w @ logmap0(v, k), k)[0], w
    klein = 2 * v / (1 + c * np.sum(v * v, -1, keepdims=True))
    gamma = 1 / np.sqrt(1 - c * np.sum(klein * klein, -1))
    m = (w * gamma) @ klein / np.sum(w * gamma)
    return m / (1 + np.sqrt(1 - c * m @ m)), w


def gyromidpoint(points: NDArray, weights: NDArray, c: float) -> Array:
    """Ungar's weighted Möbius gyromidpoint ``½ ⊗ (Σ w_j λ_j x_j / Σ w_j (λ_j - 1))`` on the ball."""
    x = np.asarray(points, np.float64)
    w = np.asarray(weights, np.float64)
    lam = conformal_factor(x, -c)
    inner = (w * lam) @ x / np.sum(w * (lam - 1))
    # r ⊗ y = tanh(r artanh(√c|y|)) y / (√c|y|) with r = 1/2
    n = np.linalg.norm(inner)
    if n == 0:
        return inner
    return np.tanh(0.5 * np.arctanh(np.sqrt(c) * n)) * inner / (np.sqrt(c) * n)
