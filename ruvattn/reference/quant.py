"""Plain-numpy twins of :mod:`ruvattn.kernels.quant`: a quantised table's rows, unpacked element by element
from the stored codes, and attention over them in float64.  Written from the layout's description, not
from :meth:`ruvattn.compression.QuantizedTable.dequantize`, so each checks the other.

>>> import numpy as np
>>> codes = np.array([[0x21]], np.uint8)  # int4 symmetric, one block of 2: codes 1 and 2 are -7 and -6
>>> rows(codes, np.array([[0.5]], np.float32), None, "int4", True, 2, 2).tolist()
[[-3.5, -3.0]]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["attention", "rows"]


def _scale(a: NDArray[Any]) -> NDArray[np.float64]:
    return (a.view(np.float16) if a.dtype == np.uint16 else a).astype(np.float64)


def rows(
    codes: NDArray[Any],
    scales: NDArray[Any],
    offsets: NDArray[Any] | None,
    format: str,
    symmetric: bool,
    block: int,
    dim: int,
) -> NDArray[np.float64]:
    """The ``(n, dim)`` float64 rows the stored codes stand for, one element at a time."""
    n = codes.shape[0]
    out = np.zeros((n, dim))
    for r in range(n):
        for c in range(dim):
            b, i = divmod(c, block)
            if format == "int8":
                u = float(codes[r, c])
            elif format == "int4":
                h = block // 2
                byte = int(codes[r, b * h + (i % h)])
                u = float(byte & 15 if i < h else byte >> 4)
            elif format == "float16":
                out[r, c] = float(codes[r, c : c + 1].view(np.float16)[0])
                continue
            else:  # bfloat16: the top half of a float32
                out[r, c] = float(np.array([int(codes[r, c]) << 16], np.uint32).view(np.float32)[0])
                continue
            s = _scale(scales)[r, b]
            if offsets is not None:
                out[r, c] = s * u + _scale(offsets)[r, b]
            elif format == "int4":
                out[r, c] = s * (u - 8)
            else:
                out[r, c] = s * u
    return out


def attention(
    q: NDArray[Any],
    keys: NDArray[Any],
    values: NDArray[Any],
    scale: float,
    mask: NDArray[np.bool_] | None = None,
    bias: NDArray[Any] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(output, weights)`` of one query over float rows, in float64 (masked keys get weight 0)."""
    s = keys.astype(np.float64) @ q.astype(np.float64) * scale
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    w = np.exp(s - s.max())
    w /= w.sum()
    return w @ values.astype(np.float64), w
