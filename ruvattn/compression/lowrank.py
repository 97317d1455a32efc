r"""Low-rank factors of projection weights and key/value tables: truncated or randomized SVD, and attention
computed through the factors.

A matrix ``A (m, n)`` is replaced by its rank-``r`` truncated SVD ``A_r = U_r diag(s_r) V_rᵀ``, stored as two
factors with the singular values folded into the left one:

.. math::

    A \approx A_r = L R, \qquad L = U_r \operatorname{diag}(s_1, \dots, s_r) \in \mathbb{R}^{m \times r},
    \qquad R = V_r^\top \in \mathbb{R}^{r \times n}.

``right`` has orthonormal rows and column ``i`` of ``left`` has norm ``s_i``.  By Eckart–Young, ``A_r`` is the
best rank-``r`` approximation in the Frobenius norm, ``‖A - A_r‖_F² = Σ_{i>r} s_i²``.  The rank is given
directly, chosen as the smallest rank that keeps a fraction ``energy`` of ``‖A‖_F² = Σ s_i²``, or as the
largest rank whose two factors fit ``budget_bytes``.  The factors hold ``(m + n) r`` values against the
dense ``m n``: they are smaller only while ``r < m n / (m + n)``.

:func:`attend` is scaled dot-product attention over keys ``K ≈ L_k R_k`` and values ``V ≈ L_v R_v`` that
never forms ``K`` or ``V``: ``scores = (q R_kᵀ) L_kᵀ`` costs ``O(r (d + n))`` per query instead of
``O(n d)``, and ``out = (w L_v) R_v``.

Methods: ``"svd"`` is LAPACK's thin SVD (:func:`scipy.linalg.svd`, exact up to rounding); ``"randomized"``
is the randomized range finder with subspace iterations (Halko, Martinsson & Tropp 2011, "Finding structure
with randomness", Algorithms 4.4 and 5.1), sampled from a :class:`numpy.random.Generator` seeded by
``seed``; it pays off when ``min(m, n)`` is large and the rank small (for an ``(n, d)`` table with ``d`` up
to 512 the exact SVD costs about the same).  Both compute in float64 (on the matrix scaled by a power of two,
so no square overflows) and cast the factors to the output dtype.

Shapes:
    - ``factorize(A (m, n))`` -> :class:`LowRank` with ``left (m, r)``, ``right (r, n)``, ``shape == (m, n)``
    - ``x (m,) @ low`` -> ``(n,)``; ``x (k, m) @ low`` -> ``(k, n)``;
      ``low @ y (n,)`` -> ``(m,)``; ``low @ y (n, k)`` -> ``(m, k)``
    - ``low.take(rows (k,))`` -> :class:`LowRank` of shape ``(k, n)``
    - ``attend(q (d,) or (B, d), keys (n, d), values (n, dv))`` -> ``(dv,)`` or ``(B, dv)``
    - ``energy_curve(A (m, n))`` -> ``(ranks (p,), retained (p,))`` with ``p = min(m, n)``

>>> import numpy as np
>>> a = np.outer([1.0, 2.0, 3.0], [1.0, 0.0, -1.0, 2.0])  # rank 1
>>> low = factorize(a, energy=0.99)
>>> low.rank, low.shape, round(low.energy, 12)
(1, (3, 4), 1.0)
>>> bool(np.allclose(low.to_dense(), a)), low.nbytes, low.dense_nbytes
(True, 56, 96)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from ruvattn._validation import (
    SEED,
    Either,
    Integer,
    Options,
    Real,
    as_array,
    as_ids,
    check_finite,
    check_ids,
    check_keys_values,
    check_output,
    check_scores,
    positive_float,
    positive_int,
)
from ruvattn.compression.quantization import real_matrix
from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability

__all__ = ["METHODS", "LowRank", "attend", "energy_curve", "error_curve", "factorize"]

METHODS = ("svd", "randomized")
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_METHOD = Options(*METHODS)
_ENERGY = Real(0.0, 1.0, closed="right")
_OVERSAMPLES = Integer(0, 10_000)
_POWER = Either(Options("auto"), Integer(0, 100))
_COMPRESS = Options("both", "keys", "values")
_FIRST_RANK = 8  # the randomized energy search starts here and doubles


def _frozen(a: NDArray[Any]) -> NDArray[Any]:
    """A read-only view (the caller's array keeps its own flags)."""
    v = a.view()
    v.setflags(write=False)
    return v


def _float_dtype(dt: np.dtype) -> np.dtype:
    """float32 stays float32 (float16 too), everything else becomes float64."""
    return _F32 if dt in (_F32, np.dtype(np.float16)) else _F64


@dataclass(frozen=True, eq=False, repr=False)
class LowRank:
    """A rank-``r`` factorization ``left @ right`` of an ``(m, n)`` matrix, built by :func:`factorize`.

    ``left (m, r)`` is ``U_r diag(s_r)`` and ``right (r, n)`` is ``V_rᵀ`` (orthonormal rows), both float32 or
    float64 and read-only.  ``energy`` is the retained fraction of ``‖A‖_F²`` (see :func:`factorize`; NaN when
    unknown, e.g. after :meth:`take`).  ``nbytes`` counts the two factors, ``dense_nbytes`` the ``(m, n)``
    matrix in the same dtype.

    ``x @ low`` and ``low @ y`` multiply through the factors.  :meth:`to_dense` and ``np.asarray(low)``
    *form* the ``(m, n)`` matrix (for code that needs a plain array); numpy's ufuncs are switched off
    (``__array_ufunc__ = None``) so that ``ndarray @ low`` reaches :meth:`__rmatmul__` instead of
    converting ``low`` to a dense array first.

    Shapes:
        - ``left (m, r)``, ``right (r, n)``, ``shape == (m, n)``, ``rank == r``
        - ``x (m,) or (k, m) @ low`` -> ``(n,) or (k, n)``; ``low @ y (n,) or (n, k)`` -> ``(m,) or (m, k)``
    """

    left: NDArray[np.floating]
    right: NDArray[np.floating]
    energy: float = float("nan")

    __array_ufunc__ = None
    ndim = 2

    def __post_init__(self) -> None:
        op = "LowRank"
        arrs = []
        for name, x in (("left", self.left), ("right", self.right)):
            try:
                a = np.asarray(x)
            except ValueError as exc:
                raise DimensionMismatch(f"{op}: {name} must be a rectangular array; got ragged rows ({exc}).") from None
            if a.ndim != 2:
                want = "(m, r)" if name == "left" else "(r, n)"
                raise DimensionMismatch(f"{op}: {name} has shape {a.shape}, expected {want}.")
            if a.dtype.kind not in "fiub":
                raise DimensionMismatch(f"{op}: {name} must hold real numbers; got dtype {a.dtype}.")
            arrs.append(a)
        dt = _F64 if _F64 in (_float_dtype(arrs[0].dtype), _float_dtype(arrs[1].dtype)) else _F32
        left, right = (a.astype(dt, copy=False) for a in arrs)
        if left.shape[1] != right.shape[0] or right.shape[0] < 1:
            raise DimensionMismatch(
                f"{op}: left has shape {left.shape} and right {right.shape}, expected (m, r) and (r, n) with r >= 1."
            )
        check_finite(op, left=left, right=right)
        try:
            energy = float(self.energy)
        except (TypeError, ValueError):
            raise InvalidConfig(f"{op}: 'energy' must be a number in [0, 1] or NaN; got {self.energy!r}.") from None
        if not (math.isnan(energy) or 0.0 <= energy <= 1.0):
            raise InvalidConfig(f"{op}: 'energy' must be a number in [0, 1] or NaN; got {self.energy!r}.")
        object.__setattr__(self, "left", _frozen(left))
        object.__setattr__(self, "right", _frozen(right))
        object.__setattr__(self, "energy", energy)

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: the shape of the matrix the factors stand for."""
        return (self.left.shape[0], self.right.shape[1])

    @property
    def rank(self) -> int:
        return self.left.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.left.dtype

    def __len__(self) -> int:
        return self.left.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the two factors: ``(m + n) r`` values."""
        return self.left.nbytes + self.right.nbytes

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the dense ``(m, n)`` matrix in the same dtype."""
        m, n = self.shape
        return m * n * self.dtype.itemsize

    @property
    def singular_values(self) -> NDArray[np.float64]:
        """``s_1 >= ... >= s_r`` as the column norms of ``left`` (exact while ``right`` has orthonormal rows,
        as :func:`factorize` builds it; float64, rounded through the factors' dtype)."""
        return np.linalg.norm(self.left.astype(np.float64), axis=0)

    def to_dense(self) -> NDArray[np.floating]:
        """The ``(m, n)`` matrix ``left @ right`` (formed: ``m n`` values)."""
        return self.left @ self.right

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        """:meth:`to_dense` (forms the ``(m, n)`` matrix)."""
        out = self.to_dense()
        return out if dtype is None else out.astype(dtype)

    def __matmul__(self, other: Any) -> NDArray[Any]:
        """``low @ y`` as ``left @ (right @ y)``."""
        if isinstance(other, LowRank):
            return NotImplemented
        y = np.asarray(other)
        n = self.shape[1]
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise DimensionMismatch(f"LowRank @ y: y has shape {y.shape}, expected ({n},) or ({n}, k).")
        return self.left @ (self.right @ y)

    def __rmatmul__(self, other: Any) -> NDArray[Any]:
        """``x @ low`` as ``(x @ left) @ right``."""
        if isinstance(other, LowRank):
            return NotImplemented
        x = np.asarray(other)
        m = self.shape[0]
        if x.ndim not in (1, 2) or x.shape[-1] != m:
            raise DimensionMismatch(f"x @ LowRank: x has shape {x.shape}, expected ({m},) or (k, {m}).")
        return (x @ self.left) @ self.right

    def take(self, rows: Any) -> LowRank:
        """The rows ``rows`` (ids) of the table, still factored: ``left[rows]`` with the same ``right``.  Its
        ``energy`` is NaN: the fraction retained of those rows alone is not known from the factors."""
        op = "LowRank.take"
        idx = as_ids(op, rows, self.shape[0], "rows")
        check_ids(op, idx, self.shape[0], "rows")
        return LowRank(self.left[idx], self.right)

    def __repr__(self) -> str:
        m, n = self.shape
        return (
            f"LowRank({m} x {n}, rank {self.rank}, energy {self.energy:.6g}, {self.dtype.name}, "
            f"{self.nbytes:,} bytes; dense {self.dense_nbytes:,})"
        )


# -- factorization ------------------------------------------------------------------------------------------


def _as_matrix(op: str, x: Any, name: str = "matrix") -> tuple[NDArray[np.float64], np.dtype]:
    """``(x as float64, output dtype)``; refuses non-2-D, non-real, empty and non-finite input."""
    arr = real_matrix(op, x, name, "(m, n)")
    if arr.size == 0:
        raise EmptyInput(f"{op}: {name} has shape {arr.shape}; a factorization needs at least one row and column.")
    a = arr.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NumericalInstability(
            f"{op}: {name} must be finite; got {int(bad.sum())} NaN/inf entries (the first: {name}"
            f"{list(where)} = {a[where]}). Remove or replace them."
        )
    return a, _float_dtype(arr.dtype)


def _scaled(a: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    """``(a / c, c)`` with ``c`` a power of two at or above ``max |a|`` (exact; squares cannot overflow)."""
    top = float(np.abs(a).max())
    if top == 0.0:
        return a, 1.0
    c = math.ldexp(1.0, math.frexp(top)[1])
    return a / c, c


def _thin_svd(a: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    try:
        return scipy.linalg.svd(a, full_matrices=False, check_finite=False)
    except np.linalg.LinAlgError:  # gesdd did not converge (rare): the slower QR-iteration driver
        return scipy.linalg.svd(a, full_matrices=False, check_finite=False, lapack_driver="gesvd")


def _randomized_svd(
    a: NDArray[np.float64], k: int, oversamples: int, power: int, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The leading ``k`` singular triplets of ``a``: range finder with ``power`` subspace iterations, each
    step re-orthonormalised by QR (Halko et al. 2011, Alg. 4.4), then the SVD of ``Qᵀ a`` (Alg. 5.1)."""
    m, n = a.shape
    width = min(k + oversamples, m, n)
    q, _ = scipy.linalg.qr(a @ rng.standard_normal((n, width)), mode="economic", check_finite=False)
    for _ in range(power):
        z, _ = scipy.linalg.qr(a.T @ q, mode="economic", check_finite=False)
        q, _ = scipy.linalg.qr(a @ z, mode="economic", check_finite=False)
    ub, s, vt = _thin_svd(q.T @ a)
    return (q @ ub)[:, :k], s[:k], vt[:k]


def _lowrank(
    u: NDArray[np.float64],
    s: NDArray[np.float64],
    vt: NDArray[np.float64],
    c: float,
    r: int,
    energy: float,
    dtype: np.dtype,
    op: str,
) -> LowRank:
    """Rank ``r`` of ``(u, s * c, vt)`` in ``dtype``, signs fixed so each row of ``right`` has its largest
    entry positive (factors independent of LAPACK's sign choices)."""
    u, s, vt = u[:, :r], s[:r] * c, vt[:r]
    rows = np.arange(r)
    sign = np.sign(vt[rows, np.abs(vt).argmax(axis=1)])
    sign[sign == 0] = 1.0
    with np.errstate(over="ignore"):
        left = (u * (s * sign)).astype(dtype)
        right = (vt * sign[:, None]).astype(dtype)
    if not np.isfinite(left).all():
        raise NumericalInstability(
            f"{op}: a singular value ({s[0]:.3g}) overflows {dtype.name} in the left factor (the matrix is finite "
            "but too large). Scale it down or use dtype=float64."
        )
    return LowRank(left, right, energy)


def _retained(s: NDArray[np.float64], total: float | None = None) -> NDArray[np.float64]:
    """Cumulative retained energy ``Σ_{i<=r} s_i² / total`` for r = 1, 2, ...; ``total`` defaults to the same
    running sum's last entry (exactly 1 at full rank); 1 throughout for a zero matrix."""
    cum = np.cumsum(s * s)
    total = float(cum[-1]) if total is None else total
    if total == 0.0:
        return np.ones(s.shape[0])
    return np.minimum(cum / total, 1.0)


def _power(value: Any, k: int, kmax: int) -> int:
    if value == "auto":  # scikit-learn's randomized_svd rule: more passes when the rank is a small fraction
        return 7 if k < 0.1 * kmax else 4
    return int(value)


def factorize(
    matrix: Any,
    *,
    rank: int | None = None,
    energy: float | None = None,
    budget_bytes: int | None = None,
    method: str = "svd",
    oversamples: int = 10,
    power_iterations: int | str = "auto",
    seed: int | None = None,
    dtype: Any = None,
) -> LowRank:
    """A rank-``r`` :class:`LowRank` factorization of ``matrix (m, n)``: a projection weight or a key/value
    table.

    Exactly one of ``rank`` (``1 <= rank <= min(m, n)``), ``energy`` (in ``(0, 1]``: the smallest rank whose
    retained energy is at least this) or ``budget_bytes`` (the largest rank whose factors,
    ``(m + n) r`` values of ``dtype``, fit; capped at ``min(m, n)``).

    ``method="svd"``: the full thin SVD; ``energy`` is ``Σ_{i<=r} s_i² / Σ_i s_i²`` over all singular values,
    i.e. ``‖A_r‖_F² / ‖A‖_F²``.  ``method="randomized"``: only the leading singular triplets, from a sketch of
    ``rank + oversamples`` random columns refined by ``power_iterations`` subspace iterations (``"auto"``: 7
    when the rank is under a tenth of ``min(m, n)``, else 4); its ``energy`` is ``Σ_{i<=r} s̃_i² / ‖A‖_F²``
    with ``‖A‖_F²`` summed over the entries (cheap), so it is the honest retained fraction of the matrix the
    factors reproduce; the estimated ``s̃_i`` never exceed the true ones, so the rank it picks for an
    ``energy`` is never below the exact SVD's.  With ``energy`` it tries ranks 8, 16, 32, ... (each a new
    sketch) until the fraction is reached, or stops at ``min(m, n)`` (the sketch then spans the whole range:
    the factors reproduce the matrix up to rounding).  ``seed`` (an int) makes it deterministic; the
    ``"svd"`` method ignores it.

    ``dtype``: the factors' dtype (float32 or float64); ``None`` keeps float32 input float32 and makes
    everything else float64.  The decomposition itself runs in float64.

    Shapes:
        - ``matrix (m, n)`` -> ``left (m, r)``, ``right (r, n)``
    """
    op = "factorize"
    a, out = _as_matrix(op, matrix)
    m, n = a.shape
    kmax = min(m, n)
    given = {k: v for k, v in (("rank", rank), ("energy", energy), ("budget_bytes", budget_bytes)) if v is not None}
    if len(given) != 1:
        got = ", ".join(f"{k}={v!r}" for k, v in given.items()) or "none of them"
        raise InvalidConfig(f"{op}: pass exactly one of rank, energy or budget_bytes; got {got}.")
    method = _METHOD.check(op, "method", method)
    oversamples = _OVERSAMPLES.check(op, "oversamples", oversamples)
    power_iterations = _POWER.check(op, "power_iterations", power_iterations)
    if seed is not None:
        seed = SEED.check(op, "seed", seed, none=True)
    if dtype is not None:
        try:
            out = np.dtype(dtype)
        except TypeError:
            out = None
        if out not in (_F32, _F64):
            raise InvalidConfig(f"{op}: 'dtype' must be float32, float64 or None; got {dtype!r}.")
    if rank is not None:
        hint = f" The matrix has shape ({m}, {n}): its rank is at most {kmax}."
        rank = Integer(1, kmax, hint=hint).check(op, "rank", rank)
    elif energy is not None:
        energy = _ENERGY.check(op, "energy", energy)
    else:
        budget = positive_int(op, "budget_bytes", budget_bytes)
        per_rank = (m + n) * out.itemsize
        if budget < per_rank:
            raise InvalidConfig(
                f"{op}: 'budget_bytes' must be at least {per_rank} (rank 1 of a {m} x {n} {out.name} matrix takes "
                f"({m} + {n}) x {out.itemsize} bytes); got {budget}."
            )
        rank = min(kmax, budget // per_rank)

    a, c = _scaled(a)
    if method == "svd":
        u, s, vt = _thin_svd(a)
        frac = _retained(s)
        r = rank if rank is not None else min(kmax, int(np.searchsorted(frac, energy, side="left")) + 1)
        return _lowrank(u, s, vt, c, r, float(frac[r - 1]), out, op)

    rng = np.random.default_rng(seed)
    total = float(np.einsum("ij,ij->", a, a))
    k = rank if rank is not None else min(kmax, _FIRST_RANK)
    while True:
        u, s, vt = _randomized_svd(a, k, oversamples, _power(power_iterations, k, kmax), rng)
        frac = _retained(s, total)
        if rank is not None:
            return _lowrank(u, s, vt, c, k, float(frac[-1]), out, op)
        hit = np.flatnonzero(frac >= energy)
        if hit.size or k == kmax:
            r = int(hit[0]) + 1 if hit.size else k
            return _lowrank(u, s, vt, c, r, float(frac[r - 1]), out, op)
        k = min(2 * k, kmax)


def energy_curve(matrix: Any) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """``(ranks, retained)``: for ``r = 1 .. min(m, n)``, the fraction ``Σ_{i<=r} s_i² / Σ_i s_i²`` of the
    squared Frobenius norm a rank-``r`` truncation keeps (the ``energy`` :func:`factorize` reports); the
    rank-``r`` reconstruction error is ``‖A - A_r‖_F = ‖A‖_F sqrt(1 - retained[r - 1])``.

    Shapes:
        - ``matrix (m, n)`` -> ``ranks (p,)``, ``retained (p,)``, ``p = min(m, n)``
    """
    a, _ = _as_matrix("energy_curve", matrix)
    s = scipy.linalg.svdvals(_scaled(a)[0], check_finite=False)
    return np.arange(1, s.shape[0] + 1, dtype=np.int64), _retained(s)


# -- attention through the factors --------------------------------------------------------------------------


def _table(op: str, name: str, x: Any) -> LowRank | NDArray[np.floating]:
    return x if isinstance(x, LowRank) else as_array(x, op, name, 2)


def attend(queries: Any, keys: Any, values: Any, *, scale: float | None = None) -> NDArray[np.floating]:
    r"""Scaled dot-product attention :math:`\operatorname{softmax}(q K^\top \cdot \text{scale})\, V` where
    ``keys`` and/or ``values`` may be :class:`LowRank` (or plain arrays).

    A factored table is never formed: ``scores = (q @ right_kᵀ) @ left_kᵀ`` and
    ``out = (weights @ left_v) @ right_v``.  ``scale`` defaults to ``1 / sqrt(d)``.  The softmax subtracts
    each row's maximum.  Everything runs in float64 if any input (or factor) is float64, else in float32.

    Shapes:
        - ``queries (d,)`` or ``(B, d)``, ``keys (n, d)``, ``values (n, dv)``
        - -> ``(dv,)`` for one query, ``(B, dv)`` for a batch
    """
    op = "attend"
    ndim = np.ndim(queries)
    if ndim not in (1, 2):
        raise DimensionMismatch(f"{op}: queries has shape {np.shape(queries)}, expected (d,) or (B, d).")
    q = as_array(queries, op, "queries", ndim)
    k = _table(op, "keys", keys)
    v = _table(op, "values", values)
    n, d = k.shape
    if q.shape[-1] != d:
        want = f"({d},)" if q.ndim == 1 else f"(B, {d})"
        raise DimensionMismatch(f"{op}: queries has shape {q.shape}, expected {want} to match keys of shape {k.shape}.")
    check_keys_values(op, k, v)
    if n == 0:
        raise EmptyInput(f"{op}: nothing to attend over: keys has shape {k.shape}. Pass at least one key.")
    if d == 0:
        raise EmptyInput(f"{op}: keys has shape {k.shape}: queries and keys need at least one feature.")
    check_finite(
        op, **{name: x for name, x in (("queries", q), ("keys", k), ("values", v)) if isinstance(x, np.ndarray)}
    )
    dt = _F64 if _F64 in (q.dtype, k.dtype, v.dtype) else _F32
    s = dt.type(1.0 / math.sqrt(d) if scale is None else positive_float(op, "scale", scale))

    qb = q.reshape(-1, d).astype(dt, copy=False)
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(k, LowRank):
            scores = (qb @ k.right.astype(dt, copy=False).T) @ k.left.astype(dt, copy=False).T
        else:
            scores = qb @ k.astype(dt, copy=False).T
        scores *= s
    check_scores(op, scores)
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(v, LowRank):
            out = (scores @ v.left.astype(dt, copy=False)) @ v.right.astype(dt, copy=False)
        else:
            out = scores @ v.astype(dt, copy=False)
    out = check_output(op, out, dt)
    return out[0] if q.ndim == 1 else out


def _ranks(op: str, ranks: Any, top: int, why: str) -> NDArray[np.int64]:
    arr = np.asarray(ranks) if not isinstance(ranks, (int, np.integer)) else np.asarray([ranks])
    ok = arr.ndim == 1 and arr.size > 0 and arr.dtype.kind in "iu" and bool(((arr >= 1) & (arr <= top)).all())
    if not ok:
        raise InvalidConfig(f"{op}: 'ranks' must be a non-empty list of integers in [1, {top}] ({why}); got {ranks!r}.")
    return arr.astype(np.int64)


def error_curve(
    queries: Any,
    keys: Any,
    values: Any,
    ranks: Any,
    *,
    method: str = "svd",
    compress: str = "both",
    seed: int | None = None,
) -> dict[str, NDArray[Any]]:
    """How far :func:`attend` over rank-``r`` factors of the tables is from attention over the dense tables,
    for each ``r`` in ``ranks``: the data of a curve of retained energy (or bytes) against output error.

    ``compress``: ``"both"`` tables, only the ``"keys"`` or only the ``"values"`` (the other stays dense).
    ``method`` and ``seed`` are :func:`factorize`'s (``"svd"`` decomposes each table once and truncates it).

    Returns columns (one entry per rank): ``rank``; ``energy_keys`` / ``energy_values`` (retained energy,
    NaN for a table left dense); ``nbytes`` (bytes of the two tables as attended: factors or dense);
    ``dense_nbytes``; ``relative_error`` ``‖O_r - O‖_F / ‖O‖_F`` over the whole batch; ``cosine`` and
    ``cosine_min``: the mean and the smallest per-query cosine between ``O_r`` and ``O``.

    Shapes:
        - ``queries (d,)`` or ``(B, d)``, ``keys (n, d)``, ``values (n, dv)``, ``ranks (R,)``
        - -> a dict of ``(R,)`` arrays
    """
    op = "error_curve"
    method = _METHOD.check(op, "method", method)
    compress = _COMPRESS.check(op, "compress", compress)
    if seed is not None:
        seed = SEED.check(op, "seed", seed, none=True)
    k = as_array(keys, op, "keys", 2)
    v = as_array(values, op, "values", 2)
    ref = attend(queries, k, v).astype(np.float64)  # validates shapes and values
    ref = ref.reshape(-1, ref.shape[-1])
    tables = {"keys": k, "values": v}
    names = ("keys", "values") if compress == "both" else (compress,)
    top = min(min(tables[t].shape) for t in names)
    rs = _ranks(op, ranks, top, f"the smallest dimension of the compressed {' and '.join(names)}")

    svds = {}
    if method == "svd":
        for t in names:
            a, out = _as_matrix(op, tables[t], t)
            a, c = _scaled(a)
            u, s, vt = _thin_svd(a)
            svds[t] = (u, s, vt, c, _retained(s), out)

    cols: dict[str, list[float]] = {key: [] for key in ("energy_keys", "energy_values", "nbytes", "relative_error")}
    cos_mean, cos_min = [], []
    ref_norm = float(np.linalg.norm(ref))
    for r in rs.tolist():
        used: dict[str, LowRank | NDArray[np.floating]] = dict(tables)
        for t in names:
            if method == "svd":
                u, s, vt, c, frac, out = svds[t]
                used[t] = _lowrank(u, s, vt, c, r, float(frac[r - 1]), out, op)
            else:
                used[t] = factorize(tables[t], rank=r, method="randomized", seed=seed)
        got = attend(queries, used["keys"], used["values"]).astype(np.float64).reshape(ref.shape)
        for t in ("keys", "values"):
            cols[f"energy_{t}"].append(used[t].energy if isinstance(used[t], LowRank) else float("nan"))
        cols["nbytes"].append(used["keys"].nbytes + used["values"].nbytes)
        diff = float(np.linalg.norm(got - ref))
        cols["relative_error"].append(diff / ref_norm if ref_norm > 0 else (0.0 if diff == 0 else math.inf))
        num = np.einsum("ij,ij->i", got, ref)
        den = np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1)
        both_zero = (np.linalg.norm(got, axis=1) == 0) & (np.linalg.norm(ref, axis=1) == 0)
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(both_zero, 1.0, 0.0))
        cos_mean.append(float(cos.mean()) if cos.size else float("nan"))
        cos_min.append(float(cos.min()) if cos.size else float("nan"))
    return {
        "rank": rs,
        "energy_keys": np.array(cols["energy_keys"]),
        "energy_values": np.array(cols["energy_values"]),
        "nbytes": np.array(cols["nbytes"], dtype=np.int64),
        "dense_nbytes": np.full(rs.shape[0], k.nbytes + v.nbytes, dtype=np.int64),
        "relative_error": np.array(cols["relative_error"]),
        "cosine": np.array(cos_mean),
        "cosine_min": np.array(cos_min),
    }
