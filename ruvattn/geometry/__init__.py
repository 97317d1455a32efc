r"""Constant-curvature geometry: the one place every hyperbolic or spherical mechanism gets its maths.

Four manifolds share one small interface (:class:`Manifold`): ``dist``,
``expmap0`` / ``logmap0``, ``expmap`` / ``logmap`` at any point, ``proj``,
``origin`` and ``midpoint``.  Attention written against that interface
(:class:`~ruvattn.mechanisms.ManifoldAttention`) works on any of them, and a new
manifold is one class registered with :func:`register_manifold`.

* :class:`Euclidean` -- flat space, ``d(x, y) = |x - y|``.
* :class:`PoincareBall` -- the ball ``|x| < 1/√c`` of curvature ``-c``, with
  Möbius addition, Möbius matrix-vector product and the conformal factor
  (Ganea, Bécigneul & Hofmann 2018; the same formulas as geoopt 0.5.1).
* :class:`Sphere` -- the sphere of curvature ``+c`` in stereographic
  coordinates (geoopt's ``SphereProjection``): the same formulas with
  ``tan``/``arctan`` for ``tanh``/``artanh``, so the origin ``0`` is a point and
  ``expmap0``/``logmap0`` exist.
* :class:`Lorentz` -- the hyperboloid ``<x, x>_L = -1/c`` in ``R^{d+1}``, with
  :meth:`Lorentz.from_poincare` / :meth:`Lorentz.to_poincare` (an isometry
  that maps the origin to the origin).

**Curvature convention.**  Constructors take the *signed* curvature, as the
ruvector-attention specification does: ``PoincareBall(-1.0)`` is the unit ball,
``Sphere(1.0)`` the unit sphere.  A Poincaré ball or Lorentz model with a
non-negative curvature (or a sphere with a non-positive one) raises
:class:`~ruvattn.errors.InvalidConfig`.  ``.c`` is the positive magnitude that
papers and geoopt's ``PoincareBall(c=...)`` use.

Arrays are one point ``(d,)`` or a batch ``(N, d)``; two batch arguments are
broadcast row by row.  float32 and float64 are kept; internally every scalar is
computed in float64 and rounded once.  Inputs must be finite
(:class:`~ruvattn.errors.NumericalInstability` otherwise).  Operations whose
raw result can land on the ball's boundary in float32 (``mobius_add``,
``expmap0``, ``expmap``, ``mobius_matvec``) project it back by default, like
geoopt, with geoopt's boundary margin: ``eps = 4e-3`` for float32 and ``1e-5``
for float64 (:data:`PROJECT_EPS`); pass ``project=False`` for the raw formula.

>>> import numpy as np
>>> ball = PoincareBall(-1.0)
>>> float(ball.expmap0(np.array([0.5, 0.0]))[0])  # tanh(0.5), not ruvector's 0.245
0.46211715726000974
>>> x, y = np.array([0.1, 0.2]), np.array([-0.3, 0.4])
>>> bool(np.isclose(ball.dist(x, y), ball.dist(y, x)))
True
"""

from ruvattn.geometry.manifolds import (
    PROJECT_EPS,
    Euclidean,
    Lorentz,
    Manifold,
    PoincareBall,
    Sphere,
    available_manifolds,
    get_manifold,
    register_manifold,
)

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
