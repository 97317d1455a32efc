"""Plain-numpy twins of :mod:`ruvattn.kernels.training`: GAT and GATv2 attention forward and backward
on an edge list ``src -> dst``, written with scatter operations (``np.add.at``), no grouping by node.

Arrays as in the kernels: ``alpha``/``drop`` ``(E, H)`` per edge (``drop`` ``None`` for no dropout), node
tables ``(N, H * C)`` head-major.  Each function returns new arrays.

>>> import numpy as np
>>> alpha, out = gat_forward(np.array([0, 1]), np.array([1, 1]), np.zeros((2, 1)), np.zeros((2, 1)),
...                          np.array([[1.0], [3.0]]), 0.2, None, 2)
>>> alpha.ravel().tolist(), out.ravel().tolist()
([0.5, 0.5], [0.0, 2.0])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["gat_backward", "gat_forward", "gatv2_backward", "gatv2_forward", "segment_softmax"]

Array = NDArray[np.floating]


def _lrelu(z: Array, slope: float) -> Array:
    return np.where(z > 0, z, z * slope)


def segment_softmax(s: Array, dst: NDArray[np.int64], num_nodes: int) -> Array:
    """Softmax of the scores ``s (E, H)`` over the edges sharing a target."""
    mx = np.full((num_nodes, s.shape[1]), -np.inf, s.dtype)
    np.maximum.at(mx, dst, s)
    e = np.exp(s - mx[dst])
    total = np.zeros_like(mx)
    np.add.at(total, dst, e)
    return e / total[dst]


def _aggregate(alpha: Array, drop: Array | None, src: NDArray[np.int64], dst: NDArray[np.int64], msg: Array,
               num_nodes: int) -> Array:  # fmt: skip
    heads = alpha.shape[1]
    a = alpha if drop is None else alpha * drop
    per_edge = a[:, :, None] * msg[src].reshape(len(src), heads, -1)
    out = np.zeros((num_nodes, msg.shape[1]), msg.dtype)
    np.add.at(out, dst, per_edge.reshape(len(src), -1))
    return out


def _softmax_grad(alpha: Array, drop: Array | None, g: Array, dst: NDArray[np.int64], num_nodes: int) -> Array:
    da = g if drop is None else g * drop
    t = np.zeros((num_nodes, alpha.shape[1]), alpha.dtype)
    np.add.at(t, dst, alpha * da)
    return alpha * (da - t[dst])


def gat_forward(src: NDArray[np.int64], dst: NDArray[np.int64], a_src: Array, a_dst: Array, msg: Array,
                slope: float, drop: Array | None, num_nodes: int) -> tuple[Array, Array]:  # fmt: skip
    """``(alpha (E, H) before dropout, out (N, H * C))`` of GAT attention."""
    alpha = segment_softmax(_lrelu(a_src[src] + a_dst[dst], slope), dst, num_nodes)
    return alpha, _aggregate(alpha, drop, src, dst, msg, num_nodes)


def gat_backward(
    src: NDArray[np.int64],
    dst: NDArray[np.int64],
    a_src: Array,
    a_dst: Array,
    msg: Array,
    slope: float,
    drop: Array | None,
    alpha: Array,
    dout: Array,
) -> tuple[Array, Array, Array]:
    """``(da_src, da_dst (N, H), dmsg (N, H * C))`` from ``dout``; ``dmsg`` is the messages' own part."""
    n, heads = a_src.shape
    e = len(src)
    g = (dout[dst].reshape(e, heads, -1) * msg[src].reshape(e, heads, -1)).sum(-1)
    ds = _softmax_grad(alpha, drop, g, dst, n)
    dz = np.where(a_src[src] + a_dst[dst] > 0, ds, ds * slope)
    da_src, da_dst = np.zeros_like(a_src), np.zeros_like(a_dst)
    np.add.at(da_src, src, dz)
    np.add.at(da_dst, dst, dz)
    a = alpha if drop is None else alpha * drop
    dmsg = np.zeros_like(msg)
    np.add.at(dmsg, src, (a[:, :, None] * dout[dst].reshape(e, heads, -1)).reshape(e, -1))
    return da_src, da_dst, dmsg


def gatv2_forward(src: NDArray[np.int64], dst: NDArray[np.int64], xl: Array, xr: Array, att: Array, slope: float,
                  drop: Array | None, num_nodes: int) -> tuple[Array, Array]:  # fmt: skip
    """``(alpha (E, H) before dropout, out (N, H * C))`` of GATv2 attention, ``att (H, C)``."""
    heads = att.shape[0]
    u = (xl[src] + xr[dst]).reshape(len(src), heads, -1)
    alpha = segment_softmax((_lrelu(u, slope) * att).sum(-1), dst, num_nodes)
    return alpha, _aggregate(alpha, drop, src, dst, xl, num_nodes)


def gatv2_backward(src: NDArray[np.int64], dst: NDArray[np.int64], xl: Array, xr: Array, att: Array, slope: float,
                   drop: Array | None, alpha: Array, dout: Array) -> tuple[Array, Array, Array]:  # fmt: skip
    """``(dxl, dxr (N, H * C), datt (H, C))`` from ``dout``."""
    heads = att.shape[0]
    e, n = len(src), xl.shape[0]
    g = (dout[dst].reshape(e, heads, -1) * xl[src].reshape(e, heads, -1)).sum(-1)
    ds = _softmax_grad(alpha, drop, g, dst, n)
    u = (xl[src] + xr[dst]).reshape(e, heads, -1)
    datt = (ds[:, :, None] * _lrelu(u, slope)).sum(0)
    du = (ds[:, :, None] * att * np.where(u > 0, 1.0, slope)).reshape(e, -1).astype(xl.dtype)
    dxr = np.zeros_like(xr)
    np.add.at(dxr, dst, du)
    a = alpha if drop is None else alpha * drop
    dxl = np.zeros_like(xl)
    np.add.at(dxl, src, (a[:, :, None] * dout[dst].reshape(e, heads, -1)).reshape(e, -1) + du)
    return dxl, dxr, datt
