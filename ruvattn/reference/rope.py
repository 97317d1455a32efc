r"""Plain-numpy float64 twin of :mod:`ruvattn.kernels.rope`: rotary position embeddings from the formula.

.. math::

    \theta_i = p \cdot b^{-2i/d}, \qquad
    \begin{pmatrix} y_a \\ y_b \end{pmatrix} =
    \begin{pmatrix} \cos\theta_i & -\sin\theta_i \\ \sin\theta_i & \cos\theta_i \end{pmatrix}
    \begin{pmatrix} x_a \\ x_b \end{pmatrix}

with ``(a, b) = (2i, 2i+1)`` (interleaved) or ``(i, i + d/2)`` (rotate-half).

>>> import numpy as np
>>> rotate(np.array([[1.0, 0.0]]), np.array([np.pi / 2]), 10000.0, "interleaved").round(12).tolist()
[[0.0, 1.0]]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["inverse_frequencies", "rotate"]


def inverse_frequencies(d: int, base: float) -> NDArray[np.float64]:
    """``base ** (-2i/d)`` for ``i = 0 .. d/2 - 1`` (float64)."""
    return np.asarray(base, np.float64) ** (-np.arange(0, d, 2, dtype=np.float64) / d)


def rotate(x: NDArray[np.floating], pos: NDArray[np.floating], base: float, layout: str) -> NDArray[np.float64]:
    """Rows ``x (n, d)`` rotated by their positions ``pos (n,)`` (float64 result)."""
    x = np.asarray(x, np.float64)
    d = x.shape[1]
    theta = np.asarray(pos, np.float64)[:, None] * inverse_frequencies(d, base)[None, :]
    c, s = np.cos(theta), np.sin(theta)
    if layout == "half":
        xa, xb = x[:, : d // 2], x[:, d // 2 :]
        return np.concatenate([xa * c - xb * s, xa * s + xb * c], axis=1)
    out = np.empty_like(x)
    out[:, 0::2] = x[:, 0::2] * c - x[:, 1::2] * s
    out[:, 1::2] = x[:, 0::2] * s + x[:, 1::2] * c
    return out
