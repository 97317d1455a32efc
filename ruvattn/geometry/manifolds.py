"""The manifold interface and its four implementations (see :mod:`ruvattn.geometry`)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, InvalidConfig, Unsupported
from ruvattn.kernels import hyperbolic as H

__all__ = [
    "PROJECT_EPS",
    "Euclidean",
    "Lorentz",
    "Manifold",
    "PoincareBall",
    "Sphere",
    "available_manifolds",
    "get_manifold",
    "register_manifold",
]

Array = NDArray[np.floating]
PROJECT_EPS = {np.dtype(np.float32): 4e-3, np.dtype(np.float64): 1e-5}
"""Boundary margin of :meth:`PoincareBall.proj` per dtype (geoopt's defaults): radius ``(1 - eps)/√c``."""

_MANIFOLDS: dict[str, type[Manifold]] = {}
_M = TypeVar("_M", bound="Manifold")


def register_manifold(name: str) -> Callable[[type[_M]], type[_M]]:
    """Class decorator: make a :class:`Manifold` subclass available by name (:func:`get_manifold`)."""

    def deco(cls: type[_M]) -> type[_M]:
        cls.name = name
        _MANIFOLDS[name] = cls
        return cls

    return deco


def available_manifolds() -> list[str]:
    return sorted(_MANIFOLDS)


def get_manifold(name: str | Manifold, curvature: float | None = None) -> Manifold:
    """A manifold instance from its registered name and signed curvature (or the instance itself)."""
    if isinstance(name, Manifold):
        return name
    if name not in _MANIFOLDS:
        raise InvalidConfig(f"get_manifold: unknown manifold {name!r}. Available: {', '.join(available_manifolds())}.")
    cls = _MANIFOLDS[name]
    return cls() if curvature is None else cls(curvature)


def _rows(op: str, **arrays: Any) -> tuple[list[Array], bool]:
    """Arrays as ``(N, d)`` float32/float64 of one dtype, broadcast row-wise; ``single`` if all were 1-D."""
    conv = []
    for name, x in arrays.items():
        nd = np.ndim(x)
        if nd not in (1, 2):
            raise DimensionMismatch(f"{op}: {name} has shape {np.shape(x)}, expected (d,) or (N, d).")
        conv.append(V.as_array(x, op, name, nd))
    dt = V.common_dtype(*conv)
    conv = [a.astype(dt, copy=False) for a in conv]
    V.check_finite(op, **dict(zip(arrays, conv, strict=True)))
    single = all(a.ndim == 1 for a in conv)
    rows = [np.atleast_2d(a) for a in conv]
    if len(rows) > 1:
        widths = {a.shape[1] for a in rows}
        if len(widths) > 1:
            desc = ", ".join(f"{n} {a.shape}" for n, a in zip(arrays, conv, strict=True))
            raise DimensionMismatch(f"{op}: the points must have the same width; got {desc}.")
        counts = {a.shape[0] for a in rows} - {1}
        if len(counts) > 1:
            desc = ", ".join(f"{n} {a.shape}" for n, a in zip(arrays, conv, strict=True))
            raise DimensionMismatch(f"{op}: batch sizes differ and neither is 1; got {desc}.")
        n = counts.pop() if counts else 1
        rows = [a if a.shape[0] == n else np.ascontiguousarray(np.broadcast_to(a, (n, a.shape[1]))) for a in rows]
    return rows, single


def _out(a: Array, single: bool) -> Array:
    return a[0] if single else a


class Manifold(ABC):
    """The interface attention needs from a space of constant curvature.

    Subclasses must implement the abstract :meth:`proj`, :meth:`dist`,
    :meth:`expmap0`, :meth:`logmap0`, :meth:`expmap` and :meth:`logmap` (a class
    missing one cannot be instantiated); :meth:`expmap0_vjp` is needed only to
    learn mixed-curvature weights; :meth:`midpoint` and :meth:`origin` have defaults.
    Points are ``(d,)`` or ``(N, d)`` rows of :meth:`point_dim` coordinates.
    """

    name: ClassVar[str] = "manifold"
    curvature: float = 0.0

    @property
    def c(self) -> float:
        """The magnitude ``|curvature|``."""
        return abs(self.curvature)

    def point_dim(self, dim: int) -> int:
        """Coordinates per point for an intrinsic dimension ``dim`` (the hyperboloid has one more)."""
        return dim

    def origin(self, dim: int, dtype: Any = np.float32) -> Array:
        """The base point where ``expmap0``/``logmap0`` are taken (``dim`` coordinates)."""
        return np.zeros(dim, dtype)

    def embed(self, x: Any) -> Array:
        """Euclidean rows ``(n, d)`` mapped onto the manifold: the one "data into the space" map.

        Rows are scaled so the longest has norm ``0.5/sqrt(c)`` (0.5 when flat), read as tangent
        vectors at :meth:`origin` and mapped by :meth:`expmap0`, so any finite data set gives
        valid points well inside the chart.  The dtype is kept (float32/float64).
        """
        arr = np.asarray(x)
        dt = arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        u = self._tangent_at_origin(np.asarray(arr, np.float64))
        top = float(np.max(np.linalg.norm(u, axis=-1))) if u.size else 0.0
        if top > 0:
            u = u * (0.5 / (top * (math.sqrt(self.c) if self.c > 0 else 1.0)))
        return np.asarray(self.expmap0(u), dtype=dt)

    def _tangent_at_origin(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Euclidean rows as tangent vectors at :meth:`origin` (they already are, except on the hyperboloid)."""
        return u

    @abstractmethod
    def proj(self, x: Any) -> Array:
        """Map ``x`` onto the manifold (or inside its chart)."""

    @abstractmethod
    def dist(self, x: Any, y: Any) -> Array:
        """Geodesic distance, row-wise (broadcast ``(d,)`` against ``(N, d)``)."""

    @abstractmethod
    def expmap0(self, u: Any) -> Array:
        """Exponential map at :meth:`origin`."""

    @abstractmethod
    def logmap0(self, y: Any) -> Array:
        """Logarithmic map at :meth:`origin`."""

    @abstractmethod
    def expmap(self, x: Any, u: Any) -> Array:
        """Exponential map at ``x``."""

    @abstractmethod
    def logmap(self, x: Any, y: Any) -> Array:
        """Logarithmic map at ``x``: the tangent vector at ``x`` pointing to ``y``."""

    def expmap0_vjp(self, t: Any, g: Any) -> Array:
        """``J^T g`` for ``J`` the Jacobian of :meth:`expmap0` at tangent vector ``t`` (one vector each).

        Optional: a manifold without it works everywhere except in learning mixed-curvature
        component weights, where this raises :class:`~ruvattn.errors.Unsupported`.
        """
        raise Unsupported(
            f"{type(self).__name__}.expmap0_vjp: this manifold has no expmap0 gradient, so its component "
            "weight cannot be learned (fixed weights work)."
        )

    def dist_grad(self, x: Any, y: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Gradients ``(∂d/∂x, ∂d/∂y)`` of :meth:`dist` for paired rows ``x``, ``y`` ``(N, d)`` (float64), as ambient
        vectors whose component along the manifold is exact (the Riemannian gradient ``-log_x(y)/d``, written with
        the metric); 0 where the two points coincide (``d`` has no derivative there).  Optional: needed by the
        backward pass of the manifold attention mechanisms."""
        raise Unsupported(f"{type(self).__name__}.dist_grad: this manifold has no distance gradient.")

    def logmap0_vjp(self, y: Any, g: Any) -> NDArray[np.float64]:
        """``J_i^T g_i`` row-wise for ``J_i`` the Jacobian of :meth:`logmap0` at ``y_i`` (``(N, d)`` each, float64).
        Optional, as :meth:`dist_grad`."""
        raise Unsupported(f"{type(self).__name__}.logmap0_vjp: this manifold has no logmap0 gradient.")

    def midpoint(self, points: Any, weights: Any) -> Array:
        """Weighted mean of ``points (n, d)`` in the tangent space at the origin: ``expmap0(Σ w_j logmap0(p_j))``."""
        p = np.atleast_2d(self.proj(points))
        w = np.asarray(weights, p.dtype)
        return self.expmap0(w @ self.logmap0(p))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.curvature!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifold) and type(other) is type(self) and other.curvature == self.curvature

    def __hash__(self) -> int:
        return hash((type(self), self.curvature))


@register_manifold("euclidean")
class Euclidean(Manifold):
    """Flat space: ``d(x, y) = |x - y|``, ``expmap0``/``logmap0`` the identity."""

    def __init__(self, curvature: float = 0.0) -> None:
        if float(curvature) != 0.0:
            raise InvalidConfig(f"Euclidean: curvature must be 0; got {curvature!r}.")
        self.curvature = 0.0

    def proj(self, x: Any) -> Array:
        (r,), single = _rows("euclidean.proj", x=x)
        return _out(r, single)

    def dist(self, x: Any, y: Any) -> Array:
        (a, b), single = _rows("euclidean.dist", x=x, y=y)
        d = np.sqrt(np.sum((a.astype(np.float64) - b) ** 2, axis=1)).astype(a.dtype)
        return d[0] if single else d

    def embed(self, x: Any) -> Array:
        """Euclidean data is already in the space: returned as a float array, unscaled."""
        arr = np.asarray(x)
        return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)

    def expmap0(self, u: Any) -> Array:
        return self.proj(u)

    def logmap0(self, y: Any) -> Array:
        return self.proj(y)

    def expmap(self, x: Any, u: Any) -> Array:
        (a, b), single = _rows("euclidean.expmap", x=x, u=u)
        return _out(a + b, single)

    def logmap(self, x: Any, y: Any) -> Array:
        (a, b), single = _rows("euclidean.logmap", x=x, y=y)
        return _out(b - a, single)

    def expmap0_vjp(self, t: Any, g: Any) -> Array:
        return np.asarray(g, np.float64)

    def dist_grad(self, x: Any, y: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        diff = np.asarray(x, np.float64) - np.asarray(y, np.float64)
        d = np.linalg.norm(diff, axis=-1, keepdims=True)
        gx = np.divide(diff, d, out=np.zeros_like(diff), where=d > 0)
        return gx, -gx

    def logmap0_vjp(self, y: Any, g: Any) -> NDArray[np.float64]:
        return np.asarray(g, np.float64)


class _Stereographic(Manifold):
    """Shared code of the ball (``k < 0``) and the stereographic sphere (``k > 0``)."""

    _sign: ClassVar[int] = -1

    def __init__(self, curvature: float) -> None:
        try:
            k = float(curvature)
        except (TypeError, ValueError, OverflowError):
            raise InvalidConfig(f"{type(self).__name__}: curvature must be a number; got {curvature!r}.") from None
        if not math.isfinite(k) or k == 0 or (k > 0) != (self._sign > 0):
            want = "negative (e.g. -1.0 for the unit ball)" if self._sign < 0 else "positive (e.g. 1.0)"
            raise InvalidConfig(
                f"{type(self).__name__}: curvature must be {want}; got {curvature!r}. "
                + ("The ball of curvature -c has radius 1/sqrt(c)." if self._sign < 0 else "")
            )
        self.curvature = k

    @classmethod
    def from_c(cls, c: float) -> _Stereographic:
        """The manifold of curvature ``sign · c`` from the positive magnitude ``c`` (geoopt's convention)."""
        return cls(cls._sign * float(c))

    def _op(self, name: str) -> str:
        return f"{self.name}.{name}"

    def _finish(self, out: Array, single: bool, project: bool) -> Array:
        if project and self.curvature < 0:
            H.project(out, self.curvature, PROJECT_EPS[out.dtype], out)
        return _out(out, single)

    def proj(self, x: Any, eps: float | None = None) -> Array:
        """Pull points beyond radius ``(1 - eps)/√c`` back onto it (``eps`` defaults to :data:`PROJECT_EPS`)."""
        (r,), single = _rows(self._op("proj"), x=x)
        out = np.empty_like(r)
        H.project(r, self.curvature, PROJECT_EPS[r.dtype] if eps is None else float(eps), out)
        return _out(out, single)

    def mobius_add(self, x: Any, y: Any, project: bool = True) -> Array:
        """``x ⊕ y`` row-wise."""
        (a, b), single = _rows(self._op("mobius_add"), x=x, y=y)
        out = np.empty_like(a)
        H.mobius_add(a, b, self.curvature, out)
        return self._finish(out, single, project)

    def dist(self, x: Any, y: Any) -> Array:
        """Geodesic distance ``(2/√c) artan_k(√c |(-x) ⊕ y|)`` row-wise."""
        (a, b), single = _rows(self._op("dist"), x=x, y=y)
        out = np.empty(a.shape[0], a.dtype)
        H.dist(a, b, self.curvature, out)
        return out[0] if single else out

    def expmap0(self, u: Any, project: bool = True) -> Array:
        (r,), single = _rows(self._op("expmap0"), u=u)
        out = np.empty_like(r)
        H.expmap0(r, self.curvature, out)
        return self._finish(out, single, project)

    def logmap0(self, y: Any) -> Array:
        (r,), single = _rows(self._op("logmap0"), y=y)
        out = np.empty_like(r)
        H.logmap0(r, self.curvature, out)
        return _out(out, single)

    def expmap(self, x: Any, u: Any, project: bool = True) -> Array:
        (a, b), single = _rows(self._op("expmap"), x=x, u=u)
        out = np.empty_like(a)
        H.expmap(a, b, self.curvature, out)
        return self._finish(out, single, project)

    def logmap(self, x: Any, y: Any) -> Array:
        (a, b), single = _rows(self._op("logmap"), x=x, y=y)
        out = np.empty_like(a)
        H.logmap(a, b, self.curvature, out)
        return _out(out, single)

    def mobius_matvec(self, m: Any, x: Any, project: bool = True) -> Array:
        """``M ⊗ x`` row-wise for a matrix ``M (d_out, d)`` (torch ``nn.Linear`` layout)."""
        op = self._op("mobius_matvec")
        (r,), single = _rows(op, x=x)
        mat = V.as_array(m, op, "M", 2, r.dtype)
        V.check_finite(op, M=mat)
        if mat.shape[1] != r.shape[1]:
            raise DimensionMismatch(f"{op}: M has shape {mat.shape}, expected (d_out, {r.shape[1]}).")
        out = np.empty((r.shape[0], mat.shape[0]), r.dtype)
        H.mobius_matvec(mat, r, self.curvature, out)
        return self._finish(out, single, project)

    def conformal_factor(self, x: Any) -> Array:
        """``λ_x = 2 / (1 + k|x|²)`` row-wise (the metric is ``λ_x² ×`` Euclidean)."""
        (r,), single = _rows(self._op("conformal_factor"), x=x)
        out = np.empty(r.shape[0], r.dtype)
        H.conformal_factor(r, self.curvature, out)
        return out[0] if single else out

    def expmap0_vjp(self, t: Any, g: Any) -> Array:
        """``J^T g`` for ``expmap0(t) = f(|t|) t``, ``f(r) = tan_k(s r)/(s r)``: ``f g + (f'(r)/r)(t·g) t``."""
        t = np.asarray(t, np.float64)
        g = np.asarray(g, np.float64)
        s = math.sqrt(self.c)
        r = float(np.linalg.norm(t))
        sign = 1.0 if self.curvature > 0 else -1.0
        if s * r < 1e-6:
            return g + sign * (2 * s * s / 3) * (t @ g) * t
        T = math.tan(s * r) if sign > 0 else math.tanh(min(s * r, H.TANH_MAX))
        f = T / (s * r)
        fp = ((1 + sign * T * T) * s * r - T) / (s * r * r)
        return f * g + (fp / r) * (t @ g) * t

    def dist_grad(self, x: Any, y: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``∂d/∂x = -λ_x² log_x(y) / d`` (the metric is ``λ_x²`` times the Euclidean one), and symmetrically."""
        x64, y64 = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
        d = np.atleast_1d(self.dist(x64, y64))[:, None]
        lam_x = 2.0 / (1.0 + self.curvature * np.einsum("ij,ij->i", x64, x64))[:, None]
        lam_y = 2.0 / (1.0 + self.curvature * np.einsum("ij,ij->i", y64, y64))[:, None]
        safe = np.where(d > 0, d, 1.0)
        gx = np.where(d > 0, -(lam_x**2) * np.atleast_2d(self.logmap(x64, y64)) / safe, 0.0)
        gy = np.where(d > 0, -(lam_y**2) * np.atleast_2d(self.logmap(y64, x64)) / safe, 0.0)
        return gx, gy

    def logmap0_vjp(self, y: Any, g: Any) -> NDArray[np.float64]:
        """``log_0(y) = f(|y|) y``, ``f(r) = artan_k(s r)/(s r)``: ``f g + (f'(r)/r)(y·g) y`` (series at small r)."""
        y64, g64 = np.atleast_2d(np.asarray(y, np.float64)), np.atleast_2d(np.asarray(g, np.float64))
        s = math.sqrt(self.c)
        a = s * np.linalg.norm(y64, axis=1)
        small = a < 1e-4
        b = np.where(small, 1.0, a)
        if self.curvature < 0:
            b = np.minimum(b, 1 - 1e-15)
            f = np.where(small, 1 + a**2 / 3, np.arctanh(b) / b)
            h = np.where(small, 2 / 3 + 4 * a**2 / 5, (b / (1 - b**2) - np.arctanh(b)) / b**3)
        else:
            f = np.where(small, 1 - a**2 / 3, np.arctan(b) / b)
            h = np.where(small, -2 / 3 + 4 * a**2 / 5, (b / (1 + b**2) - np.arctan(b)) / b**3)
        return f[:, None] * g64 + (self.c * h * np.einsum("ij,ij->i", y64, g64))[:, None] * y64


@register_manifold("poincare")
class PoincareBall(_Stereographic):
    """The Poincaré ball of curvature ``curvature < 0`` (radius ``1/√c``, ``c = -curvature``).

    >>> ball = PoincareBall(-1.0)
    >>> round(float(ball.dist([0.0, 0.0], [0.5, 0.0])), 6)  # 2 artanh(0.5)
    1.098612
    """

    _sign = -1

    def __init__(self, curvature: float = -1.0) -> None:
        super().__init__(curvature)

    def to_lorentz(self, x: Any) -> Array:
        """The same points on the hyperboloid of the same curvature (``(N, d+1)``)."""
        return Lorentz(self.curvature).from_poincare(x)


@register_manifold("sphere")
class Sphere(_Stereographic):
    """The sphere of curvature ``curvature > 0`` in stereographic coordinates (all of ``R^d``, origin 0).

    ``d(x, y) = (2/√c) arctan(√c |(-x) ⊕ y|)``, at most ``π/√c`` (antipodes).

    >>> round(float(Sphere(1.0).dist([0.0], [1.0])), 6)  # a quarter circle: pi/2
    1.570796
    """

    _sign = 1

    def __init__(self, curvature: float = 1.0) -> None:
        super().__init__(curvature)


@register_manifold("lorentz")
class Lorentz(Manifold):
    """The hyperboloid ``-x_0² + |x_{1:}|² = -1/c``, ``x_0 > 0``, of curvature ``curvature = -c < 0``.

    Points have ``d + 1`` coordinates; the origin is ``(1/√c, 0, …, 0)`` and its
    tangent vectors have ``u_0 = 0``.
    ``d(x, y) = (1/√c) arccosh(-c <x, y>_L)`` (evaluated as ``(2/√c) asinh(√c |x - y|_L / 2)``).
    """

    def __init__(self, curvature: float = -1.0) -> None:
        try:
            k = float(curvature)
        except (TypeError, ValueError, OverflowError):
            raise InvalidConfig(f"Lorentz: curvature must be a number; got {curvature!r}.") from None
        if not math.isfinite(k) or k >= 0:
            raise InvalidConfig(f"Lorentz: curvature must be negative (e.g. -1.0); got {curvature!r}.")
        self.curvature = k

    def point_dim(self, dim: int) -> int:
        return dim + 1

    def origin(self, dim: int, dtype: Any = np.float32) -> Array:
        o = np.zeros(dim, dtype)
        o[0] = 1.0 / math.sqrt(self.c)
        return o

    def proj(self, x: Any) -> Array:
        """The hyperboloid point with the same spatial part ``x_{1:}``."""
        (r,), single = _rows("lorentz.proj", x=x)
        out = np.empty_like(r)
        H.lorentz_project(r, self.c, out)
        return _out(out, single)

    def dist(self, x: Any, y: Any) -> Array:
        (a, b), single = _rows("lorentz.dist", x=x, y=y)
        out = np.empty(a.shape[0], a.dtype)
        H.lorentz_dist(a, b, self.c, out)
        return out[0] if single else out

    def expmap(self, x: Any, u: Any) -> Array:
        (a, b), single = _rows("lorentz.expmap", x=x, u=u)
        out = np.empty_like(a)
        H.lorentz_expmap(a, b, self.c, out)
        return _out(out, single)

    def logmap(self, x: Any, y: Any) -> Array:
        (a, b), single = _rows("lorentz.logmap", x=x, y=y)
        out = np.empty_like(a)
        H.lorentz_logmap(a, b, self.c, out)
        return _out(out, single)

    def _tangent_at_origin(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        t = u.copy()
        t[..., 0] = 0.0  # the tangent space at the origin (1/sqrt(c), 0, ...) has no time component
        return t

    def expmap0(self, u: Any) -> Array:
        u2 = np.asarray(u)
        return self.expmap(self.origin(u2.shape[-1], u2.dtype if u2.dtype == np.float64 else np.float32), u)

    def logmap0(self, y: Any) -> Array:
        y2 = np.asarray(y)
        return self.logmap(self.origin(y2.shape[-1], y2.dtype if y2.dtype == np.float64 else np.float32), y)

    def expmap0_vjp(self, t: Any, g: Any) -> Array:
        """Vector-Jacobian product of ``expmap0((0, u)) = (cosh(s r)/s, sinh(s r)/(s r) u)``, ``r = |u|``."""
        t = np.asarray(t, np.float64)
        g = np.asarray(g, np.float64)
        u, g0, gs = t[1:], g[0], g[1:]
        s = math.sqrt(self.c)
        r = float(np.linalg.norm(u))
        out = np.zeros_like(t)
        if s * r < 1e-6:
            out[1:] = g0 * s * u + gs + (s * s / 3) * (u @ gs) * u
            return out
        f = math.sinh(s * r) / (s * r)
        fp = (math.cosh(s * r) * s * r - math.sinh(s * r)) / (s * r * r)
        out[1:] = g0 * math.sinh(s * r) / r * u + f * gs + (fp / r) * (u @ gs) * u
        return out

    def dist_grad(self, x: Any, y: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Tangent gradients: the Riemannian ``-log_x(y)/d`` as an ambient vector ``J v`` (``J`` the Minkowski
        metric ``diag(-1, 1, ..., 1)``), so ``g · t = <v, t>_L`` for every tangent ``t``; the component normal to
        the hyperboloid is left out (it depends on how a formula extends off the manifold)."""
        x64, y64 = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
        d = np.atleast_1d(self.dist(x64, y64))[:, None]
        safe = np.where(d > 0, d, 1.0)
        flip = np.ones(x64.shape[1])
        flip[0] = -1.0
        gx = np.where(d > 0, -np.atleast_2d(self.logmap(x64, y64)) / safe, 0.0) * flip
        gy = np.where(d > 0, -np.atleast_2d(self.logmap(y64, x64)) / safe, 0.0) * flip
        return gx, gy

    def logmap0_vjp(self, y: Any, g: Any) -> NDArray[np.float64]:
        """On the hyperboloid ``log_0(y) = (0, asinh(s r)/(s r) y_{1:})``, ``r = |y_{1:}|``: a function of the spatial
        part only (the time coordinate follows from it), so the gradient has no time component."""
        y64, g64 = np.atleast_2d(np.asarray(y, np.float64)), np.atleast_2d(np.asarray(g, np.float64))
        ys, gs = y64[:, 1:], g64[:, 1:]
        s = math.sqrt(self.c)
        a = s * np.linalg.norm(ys, axis=1)
        small = a < 1e-4
        b = np.where(small, 1.0, a)
        f = np.where(small, 1 - a**2 / 6, np.arcsinh(b) / b)
        h = np.where(small, -1 / 3 + 3 * a**2 / 10, (b / np.sqrt(1 + b**2) - np.arcsinh(b)) / b**3)
        out = np.zeros_like(y64)
        out[:, 1:] = f[:, None] * gs + (self.c * h * np.einsum("ij,ij->i", ys, gs))[:, None] * ys
        return out

    def from_poincare(self, p: Any) -> Array:
        """Ball points (curvature ``-c``) to the hyperboloid: ``((1 + c|p|²)/(√c(1 - c|p|²)), 2p/(1 - c|p|²))``."""
        (r,), single = _rows("lorentz.from_poincare", p=p)
        out = np.empty((r.shape[0], r.shape[1] + 1), r.dtype)
        H.poincare_to_lorentz(r, self.c, out)
        return _out(out, single)

    def to_poincare(self, x: Any) -> Array:
        """Hyperboloid points to the ball: ``x_{1:} / (1 + √c x_0)``."""
        (r,), single = _rows("lorentz.to_poincare", x=x)
        out = np.empty((r.shape[0], r.shape[1] - 1), r.dtype)
        H.lorentz_to_poincare(r, self.c, out)
        return _out(out, single)
