r"""Numba kernels for constant-curvature geometry and hyperbolic attention.

One set of formulas serves the Poincaré ball (curvature ``k = -c < 0``) and the
stereographically projected sphere (``k = +c > 0``): the κ-stereographic model
of Bachmann, Bécigneul & Ganea (2020), which is also geoopt's ``Stereographic``
family.  With ``s = sqrt(|k|)``

* ``tan_k = tanh`` and ``artan_k = artanh`` for ``k < 0``, ``tan`` and
  ``arctan`` for ``k > 0``;
* Möbius addition ``x ⊕ y = ((1 - 2k x·y - k|y|²) x + (1 + k|x|²) y) / (1 - 2k x·y + k²|x|²|y|²)``;
* distance ``d(x, y) = (2/s) · asinh(r)`` (ball) or ``(2/s) · asin(min(r, 1))``
  (sphere) with ``r = s|x - y| / sqrt((1 + k|x|²)(1 + k|y|²))`` -- the same number as
  ``(2/s) artan_k(s |(-x) ⊕ y|)`` and ``(1/s) arccosh(1 + 2c|x-y|²/(...))`` but
  well conditioned both for close points (no ``arccosh`` of ``1 + tiny``) and near the
  boundary (no ``artanh`` of ``1 - tiny``);
* ``expmap0(u) = tan_k(s|u|) u / (s|u|)``, ``logmap0(y) = artan_k(s|y|) y / (s|y|)``.

Every scalar (dot products, norms, the transcendental functions) is computed in
float64 whatever the array dtype, and the result is rounded once.  The guards
are those of geoopt, made tighter because of that: ``artanh`` arguments are
clamped to ``1 - 1e-15``, ``tanh`` arguments to ``±15``, norms floored at
``1e-15``, and the factors ``1 + k|x|²`` at ``1e-15`` so a point on or outside the
boundary gives a large finite number, never NaN.

The Lorentz (hyperboloid) model of curvature ``-c`` has points ``x ∈ R^{d+1}``
with ``<x, x>_L = -x_0² + |x_{1:}|² = -1/c``, ``x_0 > 0``.

Plain-numpy twins of every kernel (written from the textbook ``artanh`` /
``arccosh`` forms, in float64) are in :mod:`ruvattn.reference.hyperbolic`.
The softmax is the one in :mod:`ruvattn.kernels.attention`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ruvattn.kernels.attention import BADID, EMPTY, NONFINITE, OK, _inline, _parallel, _serial, softmax, widest_row

ARTANH_MAX = 1.0 - 1e-15
TANH_MAX = 15.0
NORM_MIN = 1e-15
INPUT_EPS = 1e-5  # hyperbolic attention clamps inputs beyond radius (1 - INPUT_EPS)/s to that radius
#: Status of the hyperbolic attention kernels (beside OK, EMPTY, NONFINITE and BADID of
#: :mod:`ruvattn.kernels.attention`): in ``STRICT`` mode, a query, key or value on or outside
#: the ball (``c|x|² >= 1``).
OUTSIDE = 4

# ---------------------------------------------------------------------------
# Scalars (float64)
# ---------------------------------------------------------------------------


@_inline
def tan_k(x, k):
    """``tanh(x)`` (argument clamped to ±15) for ``k < 0``, ``tan(x)`` for ``k > 0``, ``x`` for ``k = 0``."""
    if k < 0:
        return math.tanh(min(max(x, -TANH_MAX), TANH_MAX))
    if k > 0:
        return math.tan(x)
    return x


@_inline
def artan_k(x, k):
    """``artanh(x)`` (argument clamped to ``±(1 - 1e-15)``) for ``k < 0``, ``arctan(x)`` for ``k > 0``."""
    if k < 0:
        x = min(max(x, -ARTANH_MAX), ARTANH_MAX)
        return 0.5 * math.log1p(2.0 * x / (1.0 - x))
    if k > 0:
        return math.atan(x)
    return x


@_inline
def dist_from_norms(diff2, x2, y2, k):
    """Geodesic distance from ``|x - y|²``, ``|x|²`` and ``|y|²`` (see the module docstring)."""
    s = math.sqrt(abs(k))
    if k == 0:
        return 2.0 * math.sqrt(diff2)
    ax = max(1.0 + k * x2, NORM_MIN)
    ay = max(1.0 + k * y2, NORM_MIN)
    r = s * math.sqrt(diff2 / (ax * ay))
    if k < 0:
        return (2.0 / s) * math.asinh(r)
    return (2.0 / s) * math.asin(min(r, 1.0))


@_inline
def expmap0_factor(norm, k):
    """``tan_k(s·norm) / (s·norm)`` (1 at norm 0): ``expmap0(u) = factor · u``."""
    s = math.sqrt(abs(k))
    t = s * norm
    if t < NORM_MIN:
        return 1.0
    return tan_k(t, k) / t


@_inline
def logmap0_factor(norm, k):
    """``artan_k(s·norm) / (s·norm)`` (1 at norm 0): ``logmap0(y) = factor · y``."""
    s = math.sqrt(abs(k))
    t = s * norm
    if t < NORM_MIN:
        return 1.0
    return artan_k(t, k) / t


@_inline
def project_factor(norm2, k, eps):
    """Scale that pulls a point of squared norm ``norm2`` to radius ``(1 - eps)/s`` if it is beyond (ball only)."""
    if k >= 0:
        return 1.0
    maxnorm = (1.0 - eps) / math.sqrt(-k)
    if norm2 > maxnorm * maxnorm:
        return maxnorm / math.sqrt(norm2)
    return 1.0


@_inline
def _dots(x, y):
    """``(x·y, |x|², |y|², |x - y|²)`` accumulated in float64."""
    xy = 0.0
    x2 = 0.0
    y2 = 0.0
    d2 = 0.0
    for i in range(x.shape[0]):
        a = np.float64(x[i])
        b = np.float64(y[i])
        xy += a * b
        x2 += a * a
        y2 += b * b
        d2 += (a - b) * (a - b)
    return xy, x2, y2, d2


@_inline
def _norm2(x):
    t = 0.0
    for i in range(x.shape[0]):
        a = np.float64(x[i])
        t += a * a
    return t


# ---------------------------------------------------------------------------
# Row-wise κ-stereographic operations: inputs (N, d), outputs (N, d) or (N,)
# ---------------------------------------------------------------------------


@_inline
def _mobius_add_into(x, y, ax, ay, k, out):
    """``out = (ax·x) ⊕ (ay·y)`` with scalar multipliers folded in (so ``-x`` needs no copy)."""
    xy, x2, y2, _ = _dots(x, y)
    xy *= ax * ay
    x2 *= ax * ax
    y2 *= ay * ay
    cx = 1.0 - 2.0 * k * xy - k * y2
    cy = 1.0 + k * x2
    den = max(1.0 - 2.0 * k * xy + k * k * x2 * y2, NORM_MIN)
    for i in range(out.shape[0]):
        out[i] = (cx * ax * np.float64(x[i]) + cy * ay * np.float64(y[i])) / den


@_serial
def mobius_add(x, y, k, out):
    """``out[i] = x[i] ⊕_k y[i]``."""
    tmp = np.empty(x.shape[1], np.float64)
    for i in range(x.shape[0]):
        _mobius_add_into(x[i], y[i], 1.0, 1.0, k, tmp)
        for j in range(tmp.shape[0]):
            out[i, j] = tmp[j]


@_serial
def dist(x, y, k, out):
    """``out[i] = d_k(x[i], y[i])``."""
    for i in range(x.shape[0]):
        _, x2, y2, d2 = _dots(x[i], y[i])
        out[i] = dist_from_norms(d2, x2, y2, k)


@_serial
def expmap0(u, k, out):
    """``out[i] = expmap0(u[i])``."""
    for i in range(u.shape[0]):
        f = expmap0_factor(math.sqrt(_norm2(u[i])), k)
        for j in range(u.shape[1]):
            out[i, j] = f * np.float64(u[i, j])


@_serial
def logmap0(y, k, out):
    """``out[i] = logmap0(y[i])``."""
    for i in range(y.shape[0]):
        f = logmap0_factor(math.sqrt(_norm2(y[i])), k)
        for j in range(y.shape[1]):
            out[i, j] = f * np.float64(y[i, j])


@_serial
def expmap(x, u, k, out):
    """``out[i] = expmap_{x[i]}(u[i]) = x ⊕ (tan_k(s λ_x |u| / 2) u / (s|u|))``."""
    s = math.sqrt(abs(k))
    tmp = np.empty(x.shape[1], np.float64)
    for i in range(x.shape[0]):
        lam = 2.0 / max(1.0 + k * _norm2(x[i]), NORM_MIN)
        un = math.sqrt(_norm2(u[i]))
        f = tan_k(s * lam * un / 2.0, k) / (s * un) if un > NORM_MIN else 0.0
        _mobius_add_into(x[i], u[i], 1.0, f, k, tmp)
        for j in range(tmp.shape[0]):
            out[i, j] = tmp[j]


@_serial
def logmap(x, y, k, out):
    """``out[i] = logmap_{x[i]}(y[i]) = (2/(s λ_x)) artan_k(s|w|) w/|w|``, ``w = (-x) ⊕ y``."""
    s = math.sqrt(abs(k))
    w = np.empty(x.shape[1], np.float64)
    for i in range(x.shape[0]):
        lam = 2.0 / max(1.0 + k * _norm2(x[i]), NORM_MIN)
        _mobius_add_into(x[i], y[i], -1.0, 1.0, k, w)
        wn = math.sqrt(_norm2(w))
        f = (2.0 / (s * lam)) * artan_k(s * wn, k) / wn if wn > NORM_MIN else 2.0 / lam
        for j in range(w.shape[0]):
            out[i, j] = f * w[j]


@_serial
def mobius_matvec(m, x, k, out):
    """``out[i] = M ⊗_k x[i] = (1/s) tan_k((|Mx|/|x|) artan_k(s|x|)) Mx/|Mx|`` (0 where ``Mx = 0``)."""
    s = math.sqrt(abs(k))
    mx = np.empty(m.shape[0], np.float64)
    for i in range(x.shape[0]):
        xn = math.sqrt(_norm2(x[i]))
        for r in range(m.shape[0]):
            t = 0.0
            for c in range(m.shape[1]):
                t += np.float64(m[r, c]) * np.float64(x[i, c])
            mx[r] = t
        mxn = math.sqrt(_norm2(mx))
        if mxn < NORM_MIN or xn < NORM_MIN:
            out[i, :] = 0
            continue
        f = tan_k(mxn / xn * artan_k(s * xn, k), k) / (s * mxn)
        for r in range(mx.shape[0]):
            out[i, r] = f * mx[r]


@_serial
def project(x, k, eps, out):
    """``out[i] = x[i]`` pulled inside radius ``(1 - eps)/s`` (geoopt ``projx``); the sphere needs none."""
    for i in range(x.shape[0]):
        f = project_factor(_norm2(x[i]), k, eps)
        for j in range(x.shape[1]):
            out[i, j] = f * np.float64(x[i, j]) if f != 1.0 else x[i, j]


@_serial
def conformal_factor(x, k, out):
    """``out[i] = λ_x = 2 / (1 + k|x|²)``."""
    for i in range(x.shape[0]):
        out[i] = 2.0 / max(1.0 + k * _norm2(x[i]), NORM_MIN)


# ---------------------------------------------------------------------------
# Lorentz (hyperboloid) model of curvature -c
# ---------------------------------------------------------------------------


@_inline
def _lorentz_parts(x, y):
    """``(<x,y>_L, <x-y,x-y>_L)`` in float64."""
    a0 = np.float64(x[0])
    b0 = np.float64(y[0])
    inner = -a0 * b0
    d2 = -(a0 - b0) * (a0 - b0)
    for i in range(1, x.shape[0]):
        a = np.float64(x[i])
        b = np.float64(y[i])
        inner += a * b
        d2 += (a - b) * (a - b)
    return inner, d2


@_inline
def _lorentz_dist(x, y, c):
    """``(1/√c) arccosh(-c<x,y>_L) = (2/√c) asinh(√c · sqrt(<x-y,x-y>_L) / 2)`` (the latter is used)."""
    _, d2 = _lorentz_parts(x, y)
    s = math.sqrt(c)
    return (2.0 / s) * math.asinh(s * math.sqrt(max(d2, 0.0)) / 2.0)


@_serial
def lorentz_dist(x, y, c, out):
    """``out[i] = d(x[i], y[i])`` on the hyperboloid."""
    for i in range(x.shape[0]):
        out[i] = _lorentz_dist(x[i], y[i], c)


@_serial
def lorentz_expmap(x, u, c, out):
    """``out[i] = cosh(s|u|_L) x + sinh(s|u|_L) u / (s|u|_L)``, ``|u|_L = sqrt(<u,u>_L)`` (u tangent at x)."""
    s = math.sqrt(c)
    for i in range(x.shape[0]):
        un2 = -np.float64(u[i, 0]) * np.float64(u[i, 0])
        for j in range(1, u.shape[1]):
            un2 += np.float64(u[i, j]) * np.float64(u[i, j])
        un = math.sqrt(max(un2, 0.0))
        t = min(s * un, 50.0)
        a = math.cosh(t)
        b = math.sinh(t) / t if t > NORM_MIN else 1.0
        for j in range(x.shape[1]):
            out[i, j] = a * np.float64(x[i, j]) + b * np.float64(u[i, j])


@_serial
def lorentz_logmap(x, y, c, out):
    """``out[i] = d(x,y) · w/|w|_L`` with ``w = y + c<x,y>_L x`` (the tangent at x pointing to y)."""
    w = np.empty(x.shape[1], np.float64)
    for i in range(x.shape[0]):
        inner, _ = _lorentz_parts(x[i], y[i])
        for j in range(x.shape[1]):
            w[j] = np.float64(y[i, j]) + c * inner * np.float64(x[i, j])
        wn2 = -w[0] * w[0]
        for j in range(1, w.shape[0]):
            wn2 += w[j] * w[j]
        wn = math.sqrt(max(wn2, 0.0))
        d = _lorentz_dist(x[i], y[i], c)
        f = d / wn if wn > NORM_MIN else 0.0
        for j in range(w.shape[0]):
            out[i, j] = f * w[j]


@_serial
def lorentz_project(x, c, out):
    """``out[i] = (sqrt(1/c + |x_{1:}|²), x_{1:})``: the hyperboloid point above the spatial part."""
    for i in range(x.shape[0]):
        t = 0.0
        for j in range(1, x.shape[1]):
            t += np.float64(x[i, j]) * np.float64(x[i, j])
            out[i, j] = x[i, j]
        out[i, 0] = math.sqrt(1.0 / c + t)


@_serial
def poincare_to_lorentz(p, c, out):
    """Ball point ``p`` (curvature -c) to the hyperboloid: ``((1 + c|p|²)/(s(1 - c|p|²)), 2p/(1 - c|p|²))``."""
    s = math.sqrt(c)
    for i in range(p.shape[0]):
        p2 = _norm2(p[i])
        a = max(1.0 - c * p2, NORM_MIN)
        out[i, 0] = (1.0 + c * p2) / (s * a)
        for j in range(p.shape[1]):
            out[i, j + 1] = 2.0 * np.float64(p[i, j]) / a


@_serial
def lorentz_to_poincare(x, c, out):
    """Hyperboloid point to the ball: ``x_{1:} / (1 + s x_0)``."""
    s = math.sqrt(c)
    for i in range(x.shape[0]):
        den = 1.0 + s * np.float64(x[i, 0])
        for j in range(1, x.shape[1]):
            out[i, j - 1] = np.float64(x[i, j]) / den


# ---------------------------------------------------------------------------
# Hyperbolic attention (Poincaré ball)
# ---------------------------------------------------------------------------

# ``mode`` of the attention kernels: the aggregation, plus the STRICT bit (one integer rather than one
# more argument: each argument costs the hot path's call from Python ~70 ns, measured)
TANGENT = 0  # expmap0(sum_j w_j logmap0(v_j))
MIDPOINT = 1  # Einstein midpoint through the Klein model (= Möbius gyromidpoint)
STRICT = 2  # a point on or outside the ball stops the row with status OUTSIDE (else: it is pulled in)


@_inline
def hyp_row(q, k, v, ids, use_ids, keep, use_keep, kappa, inv_tau, mode, out_eps, w, acc, s1, s2, out):
    """One query over its keys on the Poincaré ball of curvature ``kappa < 0``.

    ``w[j] = softmax_j(-d(q, k_j) / τ)``; the output is the tangent-space mean
    ``expmap0(Σ w_j logmap0(v_j))`` (``mode`` ``TANGENT``) or the weighted
    Einstein midpoint (``MIDPOINT``), pulled inside radius
    ``(1 - out_eps)/s``.  A query, key or value beyond radius ``(1 - INPUT_EPS)/s``
    is pulled to that radius (without copying) -- except that in ``STRICT`` mode one on
    or outside the boundary (``c|x|² >= 1``) stops the row with status ``OUTSIDE``
    (the test sits inside the rarely taken clamp branches, so valid inputs pay
    nothing for it).  Masked keys get weight exactly 0 and neither their key nor
    their value rows are read; every other value row is checked, even one whose
    weight underflows to 0.  ``acc`` is a float64 scratch of the value width
    (empty: weights only, values not read), ``s1``/``s2`` float64 scratch of at
    least ``n``.  Returns a status (``BADID`` for an id outside the tables, which
    are never read out of range; ``NONFINITE``; ``EMPTY``; ``OUTSIDE``).

    The work is done in phases -- all squared norms (vector loops over ``d``),
    then all distances, then all ``asinh`` -- so that the per-key scalar maths
    pipelines instead of forming one long dependency chain per key (measured
    1.6x faster than one fused pass at 100 keys).
    """
    n = w.shape[0]
    d = q.shape[0]
    agg = mode & 1
    strict = mode & STRICT
    c = -kappa
    s = math.sqrt(c)
    maxin = (1.0 - INPUT_EPS) / s
    q2 = _norm2(q)
    fq = 1.0
    if q2 > maxin * maxin:  # near, on or outside the boundary (or inf)
        if strict and c * q2 >= 1.0:
            w[:] = 0
            out[:] = 0
            return OUTSIDE if q2 < np.inf else NONFINITE
        fq = maxin / math.sqrt(q2)
        q2 = maxin * maxin
    live = 0
    # phase 1: |q - k_j|² and |k_j|² (s1, s2); a masked key is marked by s2 = -1
    for j in range(n):
        if use_keep and not keep[j]:
            s2[j] = -1.0
            continue
        if use_ids and (ids[j] < 0 or ids[j] >= k.shape[0]):
            w[:] = 0
            out[:] = 0
            return BADID
        live += 1
        row = k[ids[j]] if use_ids else k[j]
        k2 = 0.0
        d2 = 0.0
        for i in range(d):
            b = np.float64(row[i])
            a = fq * np.float64(q[i]) - b
            k2 += b * b
            d2 += a * a
        if not (d2 < np.inf and k2 < np.inf):  # NaN or inf in the query or this key
            w[:] = 0
            out[:] = 0
            return NONFINITE
        if k2 > maxin * maxin:  # a key near, on or outside the boundary: recompute with the pulled-in key
            if strict and c * k2 >= 1.0:
                w[:] = 0
                out[:] = 0
                return OUTSIDE
            fk = maxin / math.sqrt(k2)
            k2 = maxin * maxin
            d2 = 0.0
            for i in range(d):
                a = fq * np.float64(q[i]) - fk * np.float64(row[i])
                d2 += a * a
        s1[j] = d2
        s2[j] = k2
    if live == 0:
        w[:] = 0
        out[:] = 0
        return EMPTY
    # phase 2: scores -(2/s) asinh(s |q - k| / sqrt((1 - c|q|²)(1 - c|k|²))) / τ
    aq = max(1.0 - c * q2, NORM_MIN)
    for j in range(n):
        if s2[j] >= 0:
            s1[j] = s * math.sqrt(s1[j] / (aq * max(1.0 - c * s2[j], NORM_MIN)))
    # scores relative to the largest (the nearest key), formed in float64 before they are stored in
    # w's dtype: with a tiny temperature -d/τ overflows float32 for every key at once (all weights
    # would be 0), while (d_min - d)/τ keeps the nearest at exactly 0 (the argmax limit)
    coef = -(2.0 / s) * inv_tau
    amin = np.inf
    for j in range(n):
        if s2[j] >= 0:
            s1[j] = math.asinh(s1[j])
            amin = min(amin, s1[j])
    for j in range(n):
        if s2[j] >= 0:
            gap = s1[j] - amin
            w[j] = coef * gap if gap > 0 else 0.0
        else:
            w[j] = -np.inf
    softmax(w)
    if acc.shape[0] == 0:  # weights only
        return OK
    # phase 3: the value norms (s2) and clamp factors (s1) of every unmasked key, then per-value
    # factors (s1) and one weighted sum over the keys of non-zero weight
    for j in range(n):
        if s2[j] < 0:  # masked
            continue
        row = v[ids[j]] if use_ids else v[j]
        v2 = _norm2(row)
        if not (v2 < np.inf):  # NaN or inf in this value
            w[:] = 0
            out[:] = 0
            return NONFINITE
        f = 1.0
        if v2 > maxin * maxin:  # near, on or outside the boundary
            if strict and c * v2 >= 1.0:
                w[:] = 0
                out[:] = 0
                return OUTSIDE
            f = maxin / math.sqrt(v2)
            v2 = maxin * maxin
        s1[j] = f
        s2[j] = v2
    den = 0.0
    for j in range(n):
        wj = np.float64(w[j])
        if wj == 0:
            continue
        v2 = s2[j]
        f = s1[j]
        if agg == TANGENT:
            f *= logmap0_factor(math.sqrt(v2), kappa)
        else:  # Klein coordinates 2v/(1 + c|v|²) weighted by their Lorentz factor: Σ w γ k_j = Σ w λ_v v
            den += wj * (1.0 + c * v2) / max(1.0 - c * v2, NORM_MIN)
            f *= 2.0 / max(1.0 - c * v2, NORM_MIN)
        s1[j] = f * wj
    acc[:] = 0.0
    for j in range(n):
        if w[j] == 0:
            continue
        f = s1[j]
        row = v[ids[j]] if use_ids else v[j]
        for i in range(acc.shape[0]):
            acc[i] += f * np.float64(row[i])
    t2 = 0.0
    for i in range(acc.shape[0]):
        t2 += acc[i] * acc[i]
    if agg == TANGENT:
        tn = math.sqrt(t2)
        f = expmap0_factor(tn, kappa)
        r = f * tn
    else:  # Klein mean m = acc/den back to the ball: m / (1 + sqrt(1 - c|m|²))
        mn2 = t2 / (den * den)
        f = 1.0 / (den * (1.0 + math.sqrt(max(1.0 - c * mn2, 0.0))))
        r = f * math.sqrt(t2)
    maxnorm = (1.0 - out_eps) / s
    if r > maxnorm:
        f *= maxnorm / r
    bad = not (r < np.inf)
    for i in range(acc.shape[0]):
        out[i] = f * acc[i]
    return NONFINITE if bad else OK


@_serial
def hyp_one(q, k, v, ids, use_ids, keep, use_keep, kappa, inv_tau, mode, out_eps, w, out):
    """:func:`hyp_row` for one query (allocates its own float64 scratch)."""
    n = w.shape[0]
    acc = np.empty(out.shape[0], np.float64)
    s1 = np.empty(n, np.float64)
    s2 = np.empty(n, np.float64)
    return hyp_row(q, k, v, ids, use_ids, keep, use_keep, kappa, inv_tau, mode, out_eps, w, acc, s1, s2, out)


@_serial
def hyp_fast(q, k, v, kappa, inv_tau, mode, out_eps, w, out):
    """:func:`hyp_one` without ids or mask (fewer arguments: a cheaper call from Python)."""
    n = w.shape[0]
    acc = np.empty(out.shape[0], np.float64)
    s1 = np.empty(n, np.float64)
    s2 = np.empty(n, np.float64)
    ids = np.empty(0, np.int64)
    keep = np.empty(0, np.bool_)
    return hyp_row(q, k, v, ids, False, keep, False, kappa, inv_tau, mode, out_eps, w, acc, s1, s2, out)


@_serial
def hyp_dist_one(q, k, kappa, mode, out):
    """``out[j] = d(q, k_j)`` for one query against every key row, the distances :func:`hyp_row` turns
    into weights: a point beyond radius ``(1 - INPUT_EPS)/s`` is pulled to it, or in ``STRICT`` mode one
    on or outside the boundary stops with status ``OUTSIDE`` (the inputs are known to be finite)."""
    strict = mode & STRICT
    c = -kappa
    maxin = (1.0 - INPUT_EPS) / math.sqrt(c)
    q2 = _norm2(q)
    fq = 1.0
    if q2 > maxin * maxin:
        if strict and c * q2 >= 1.0:
            return OUTSIDE
        fq = maxin / math.sqrt(q2)
    for j in range(k.shape[0]):
        _, _, k2, d2 = _dots(q, k[j])
        if fq != 1.0 or k2 > maxin * maxin:
            if strict and c * k2 >= 1.0:
                return OUTSIDE
            fk = maxin / math.sqrt(k2) if k2 > maxin * maxin else 1.0
            d2 = 0.0
            for i in range(q.shape[0]):
                a = fq * np.float64(q[i]) - fk * np.float64(k[j, i])
                d2 += a * a
            k2 = min(k2, maxin * maxin)
        out[j] = dist_from_norms(d2, min(q2, maxin * maxin), k2, kappa)
    return OK


@_serial
def hyp_many_chunk(qs, k, v, keep, keep_mode, kappa, inv_tau, mode, out_eps, w, want_weights, out, status, first, last):
    """Queries ``first..last-1`` of :func:`hyp_many`, one scratch buffer for the chunk."""
    acc = np.empty(out.shape[1], np.float64)
    scratch = np.empty(k.shape[0], qs.dtype)
    s1 = np.empty(k.shape[0], np.float64)
    s2 = np.empty(k.shape[0], np.float64)
    no_ids = np.empty(0, np.int64)
    for i in range(first, last):
        wi = w[i] if want_weights else scratch
        ki = keep[i] if keep_mode == 2 else keep[0]
        status[i] = hyp_row(qs[i], k, v, no_ids, False, ki, keep_mode > 0, kappa, inv_tau, mode, out_eps, wi, acc,
                            s1, s2, out[i])  # fmt: skip


@_parallel
def hyp_many(qs, k, v, keep, keep_mode, kappa, inv_tau, mode, out_eps, w, want_weights, out, status, size):
    """Hyperbolic attention for many queries over one key set, parallel over chunks of ``size``.

    ``keep``/``keep_mode`` as in :mod:`ruvattn.kernels.attention`; ``w`` is
    ``(m, n)`` when ``want_weights``.
    """
    m = qs.shape[0]
    for c in prange((m + size - 1) // size):
        first = c * size
        hyp_many_chunk(qs, k, v, keep, keep_mode, kappa, inv_tau, mode, out_eps, w, want_weights, out, status, first,
                       min(first + size, m))  # fmt: skip


@_serial
def hyp_csr_chunk(qs, k, v, indptr, indices, kappa, inv_tau, mode, out_eps, w, want_weights, out, status, first, last):
    """Nodes ``first..last-1`` of :func:`hyp_csr`, one scratch buffer for the chunk."""
    acc = np.empty(out.shape[1], np.float64)
    widest = widest_row(indptr, first, last)
    scratch = np.empty(widest, qs.dtype)
    s1 = np.empty(widest, np.float64)
    s2 = np.empty(widest, np.float64)
    keep = np.empty(0, np.bool_)
    for i in range(first, last):
        lo = indptr[i]
        hi = indptr[i + 1]
        if hi == lo:
            out[i, :] = 0
            status[i] = EMPTY
            continue
        wi = w[lo:hi] if want_weights else scratch[: hi - lo]
        status[i] = hyp_row(qs[i], k, v, indices[lo:hi], True, keep, False, kappa, inv_tau, mode, out_eps, wi, acc,
                            s1, s2, out[i])  # fmt: skip


@_parallel
def hyp_csr(qs, k, v, indptr, indices, kappa, inv_tau, mode, out_eps, w, want_weights, out, status, size):
    """Node ``i`` over rows ``indices[indptr[i]:indptr[i+1]]`` of the key/value tables, parallel over chunks.

    ``w`` (when ``want_weights``) is flat ``(nnz,)``, aligned with ``indices``.
    """
    m = qs.shape[0]
    for c in prange((m + size - 1) // size):
        first = c * size
        hyp_csr_chunk(qs, k, v, indptr, indices, kappa, inv_tau, mode, out_eps, w, want_weights, out, status, first,
                      min(first + size, m))  # fmt: skip
