"""Trainable GAT and GATv2 layers over a whole graph, with hand-written backward kernels.

:class:`GATLayer` is PyG's ``GATConv`` and :class:`GATv2Layer` its ``GATv2Conv`` (``share_weights=False``)
without edge features, in training form: dropout on the attention weights, the forward keeping the
weights before dropout, and a backward giving every gradient (``W``, ``att``, the biases and the input).
The attention sums run in :mod:`ruvattn.kernels.training`; the projections are BLAS products
(or scipy's sparse products for a sparse feature matrix, such as bag-of-words features).

>>> import numpy as np
>>> from ruvattn import nn
>>> g = nn.Graph.from_edges([0, 1, 2], [1, 2, 0], num_nodes=3)
>>> layer = nn.GATLayer(4, 2, heads=2, seed=0)
>>> layer(np.ones((3, 4), np.float32), g).shape
(3, 4)
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ruvattn._blas import one_thread
from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.graph import NeighbourList
from ruvattn.kernels import training as KT
from ruvattn.nn.core import (
    Array,
    Input,
    Module,
    Parameter,
    _float_dtype,
    _rng,
    _saved,
    check_features,
    glorot,
    matmul_input,
    weight_grad,
)

__all__ = ["GATLayer", "GATv2Layer", "Graph"]

Ids = NDArray[np.int64]

#: Target nodes per parallel task.  Fixed (never the thread count), so every sum is grouped the same way
#: and the results are the same bits on any number of threads.
CHUNK = 64


@dataclass(frozen=True)
class Slots:
    """A graph grouped by target (``indptr``, ``src``) and by source (``rptr``, ``rslot``, ``dst``); see
    :mod:`ruvattn.kernels.training`."""

    indptr: Ids
    src: Ids
    rptr: Ids
    rslot: Ids
    dst: Ids


@dataclass
class Graph:
    """Directed edges ``src[e] -> dst[e]`` over ``num_nodes`` nodes (a message from ``src`` is aggregated at
    ``dst``), as PyG's ``edge_index = [src; dst]``.  Duplicate edges are kept (each is a term of the softmax)."""

    src: Ids
    dst: Ids
    num_nodes: int
    #: How many disjoint copies of one graph this is (:meth:`repeat`); node ``c * (num_nodes // copies) + i``
    #: is node ``i`` of copy ``c``.
    copies: int = 1
    _cache: dict[bool, Slots] = field(default_factory=dict, repr=False, compare=False)
    _derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_edges(cls, src: Any, dst: Any, num_nodes: int) -> Graph:
        s, d = np.asarray(src), np.asarray(dst)
        for name, a in (("src", s), ("dst", d)):
            if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
                raise DimensionMismatch(f"Graph: {name} must be a flat array of integer node ids; got {a.dtype}.")
        if s.shape != d.shape:
            raise DimensionMismatch(f"Graph: src and dst must have the same length; got {s.size} and {d.size}.")
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 0:
            raise InvalidConfig(f"Graph: num_nodes must be a non-negative integer; got {num_nodes!r}.")
        for name, a in (("src", s), ("dst", d)):
            if a.size and (a.min() < 0 or a.max() >= num_nodes):
                bad = a[(a < 0) | (a >= num_nodes)][0]
                raise OutOfBounds(f"Graph: {name} holds {bad}, not a node id in [0, {num_nodes}).")
        return cls(s.astype(np.int64), d.astype(np.int64), int(num_nodes))

    @classmethod
    def from_neighbours(cls, neighbours: NeighbourList) -> Graph:
        """Row ``i`` of a square :class:`~ruvattn.graph.NeighbourList` lists the sources of node ``i``."""
        n = neighbours.num_nodes
        if neighbours.num_keys != n:
            raise DimensionMismatch(
                f"Graph: the neighbour list must be square; got {n} rows over {neighbours.num_keys}."
            )
        dst = np.repeat(np.arange(n, dtype=np.int64), neighbours.degrees())
        return cls(neighbours.indices.astype(np.int64), dst, n)

    @property
    def num_edges(self) -> int:
        return int(self.src.size)

    @property
    def base_nodes(self) -> int:
        """Nodes per copy (``num_nodes`` unless the graph is a :meth:`repeat`)."""
        return self.num_nodes // self.copies

    def repeat(self, copies: int) -> Graph:
        """``copies`` disjoint copies of this graph as one (cached): a batch of ``copies`` stochastic passes over
        the same graph (dropout, DropNode) is one forward over the stacked features."""
        if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or copies < 1:
            raise InvalidConfig(f"Graph.repeat: copies must be a positive integer; got {copies!r}.")
        if copies == 1:
            return self
        key = ("repeat", int(copies))
        got = self._derived.get(key)
        if got is None:
            offsets = np.repeat(np.arange(copies, dtype=np.int64) * self.num_nodes, self.src.size)
            got = Graph(np.tile(self.src, copies) + offsets, np.tile(self.dst, copies) + offsets,
                        self.num_nodes * int(copies), self.copies * int(copies))  # fmt: skip
            self._derived[key] = got
        return got

    def propagation(self, dtype: Any = np.float32) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        r"""GCN's propagation matrix :math:`\hat A = D^{-1/2}(A + I)D^{-1/2}` and its transpose (cached), as scipy
        CSR: row ``i`` of :math:`\hat A x` sums over ``i``'s sources (duplicate edges add up), self loops
        replaced by one per node, :math:`D` the row sums of :math:`A + I` (in-degree plus one)."""
        dt = np.dtype(dtype)
        key = ("propagation", dt.str)
        got = self._derived.get(key)
        if got is None:
            n = self.num_nodes
            keep = self.src != self.dst
            loops = np.arange(n, dtype=np.int64)
            rows, cols = np.concatenate([self.dst[keep], loops]), np.concatenate([self.src[keep], loops])
            a = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
            a.sum_duplicates()
            inv = 1.0 / np.sqrt(np.asarray(a.sum(1)).ravel())
            a = (sp.diags(inv) @ a @ sp.diags(inv)).tocsr().astype(dt)
            got = (a, a.T.tocsr())
            self._derived[key] = got
        return got

    def slots(self, self_loops: bool) -> Slots:
        """The slot layout, cached: with ``self_loops`` the input's loops are removed and each node gets one
        loop as its last slot (PyG's ``remove_self_loops`` then ``add_self_loops``)."""
        got = self._cache.get(self_loops)
        if got is not None:
            return got
        n = self.num_nodes
        src, dst = self.src, self.dst
        if self_loops:
            keep = src != dst
            nodes = np.arange(n, dtype=np.int64)
            src, dst = np.concatenate([src[keep], nodes]), np.concatenate([dst[keep], nodes])
        order = np.argsort(dst, kind="stable")
        slot_src = np.ascontiguousarray(src[order])
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
        rptr, rslot, slot_dst = np.empty(n + 1, np.int64), np.empty(slot_src.size, np.int64), np.empty_like(slot_src)
        KT.slots_by_source(indptr, slot_src, n, rptr, rslot, slot_dst)
        got = Slots(indptr, slot_src, rptr, rslot, slot_dst)
        self._cache[self_loops] = got
        return got


def _as_graph(op: str, graph: Any, num_nodes: int) -> Graph:
    if isinstance(graph, NeighbourList):
        graph = Graph.from_neighbours(graph)
    if not isinstance(graph, Graph):
        raise InvalidConfig(f"{op}: pass the graph as ruvattn.nn.Graph or a NeighbourList; got {type(graph).__name__}.")
    if graph.num_nodes != num_nodes:
        raise DimensionMismatch(f"{op}: the graph has {graph.num_nodes} nodes but x has {num_nodes} rows.")
    return graph


class _GraphAttentionLayer(Module):
    """What GAT and GATv2 share: options, dropout on the weights, the head mean and bias, the checks."""

    def __init__(self, in_channels: int, out_channels: int, heads: int, concat: bool, negative_slope: float,
                 dropout: float, add_self_loops: bool, bias: bool, seed: Any, dtype: Any) -> None:  # fmt: skip
        op = type(self).__name__
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("heads", heads)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InvalidConfig(f"{op}: {name} must be a positive integer; got {v!r}.")
        if not 0.0 <= dropout < 1.0:
            raise InvalidConfig(f"{op}: dropout must be in [0, 1); got {dropout}.")
        self.in_channels, self.out_channels, self.heads = int(in_channels), int(out_channels), int(heads)
        self.concat, self.negative_slope, self.dropout = bool(concat), float(negative_slope), float(dropout)
        self.add_self_loops = bool(add_self_loops)
        self.dtype = _float_dtype(dtype)
        self.rng = _rng(seed)
        self._use_bias = bool(bias)
        self._saved: dict[str, Any] | None = None

    @property
    def out_width(self) -> int:
        return self.heads * self.out_channels if self.concat else self.out_channels

    def _init_bias(self) -> None:
        self.bias = Parameter(np.zeros(self.out_width, self.dtype), "bias") if self._use_bias else None

    def _drop(self, slots: int) -> Array:
        if not self.training or self.dropout == 0.0:
            return np.empty((0, self.heads), self.dtype)
        keep = self.rng.random((slots, self.heads), dtype=self.dtype.type) >= self.dropout
        return keep.astype(self.dtype) * self.dtype.type(1.0 / (1.0 - self.dropout))

    def _finish(self, out: Array) -> Array:
        n = out.shape[0]
        y = out if self.concat else out.reshape(n, self.heads, self.out_channels).mean(1)
        if self.bias is not None:
            y = y + self.bias.data
        if not np.isfinite(y).all():
            raise NumericalInstability(
                f"{type(self).__name__}: the output overflowed {self.dtype} (the features are finite, the scores or "
                "weights are too large: scale the features, lower the learning rate, or use float64)."
            )
        return y

    def _dout(self, dy: Array) -> Array:
        dy = np.asarray(dy, dtype=self.dtype)
        n = dy.shape[0]
        if dy.shape != (n, self.out_width):
            raise DimensionMismatch(
                f"{type(self).__name__}.backward: dy must be (N, {self.out_width}); got {dy.shape}."
            )
        if self.bias is not None:
            self.bias.grad += dy.sum(0)
        if self.concat:
            return np.ascontiguousarray(dy)
        per_head = dy / self.dtype.type(self.heads)
        return np.ascontiguousarray(np.broadcast_to(per_head[:, None, :], (n, self.heads, self.out_channels))).reshape(
            n, -1
        )

    def forward(self, x: Input, graph: Any = None) -> Array:
        with one_thread():  # BLAS threads spinning after a product would slow the parallel kernel threefold
            return self._forward(x, graph)

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        with one_thread():
            return self._backward(dy, need_input_grad)

    @abstractmethod
    def _forward(self, x: Input, graph: Any) -> Array:
        """The layer's forward (run with the BLAS on one thread)."""

    @abstractmethod
    def _backward(self, dy: Array, need_input_grad: bool) -> Array | None:
        """The layer's backward (run with the BLAS on one thread)."""

    def attention_entropy(self) -> tuple[Array, Array]:
        """Entropy (nats) of every node's attention weights in the last forward, per head ``(N, heads)``, and of a
        uniform distribution over the same slots, ``log(degree)`` ``(N,)`` (0 for a node with at most one slot).
        Training moves the weights away from uniform: the gap between the two is how far."""
        slots, alpha = self.attention_weights()
        n = slots.indptr.size - 1
        terms = -alpha * np.log(np.where(alpha > 0, alpha, 1))
        ent = np.zeros((n, self.heads))
        np.add.at(ent, slots.dst, terms)
        deg = np.diff(slots.indptr)
        return ent, np.log(np.maximum(deg, 1)).astype(np.float64)

    def _mechanism(self, cls: type, state: dict[str, Array]) -> Any:
        conv = cls(self.in_channels, self.out_channels, heads=self.heads, concat=self.concat,
                   negative_slope=self.negative_slope, dropout=self.dropout, add_self_loops=self.add_self_loops,
                   bias=self._use_bias)  # fmt: skip
        if self.bias is not None:
            state["bias"] = self.bias.data
        conv.load_state_dict({k: np.array(v, np.float64) for k, v in state.items()})
        return conv.train(self.training)

    def attention_weights(self) -> tuple[Slots, Array]:
        """The last forward's slot layout and weights ``(S, heads)`` before dropout: node ``i``'s incoming edges are
        slots ``indptr[i]:indptr[i+1]`` from sources ``src[...]`` (the self loop last)."""
        saved = _saved(self, self._saved)
        return saved["slots"], saved["alpha"]


class GATLayer(_GraphAttentionLayer):
    """Graph attention (Veličković et al. 2018), PyG's ``GATConv`` without edge features.

    Parameters: ``weight (in, heads * C)`` (PyG's ``lin.weight`` transposed), ``att_src``/``att_dst (heads, C)``,
    ``bias`` (``heads * C`` with ``concat``, else ``C``).  Glorot-uniform initialisation, zero bias, as PyG.
    ``dropout`` applies to the attention weights in training mode.  ``message_dropout`` also drops entries of
    the projected features ``W x`` where they are aggregated (not where they are scored), as the GAT paper's
    own code does (``seq_fts`` dropped with the input rate); PyG's ``GATConv`` has no such option.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True, bias: bool = True,
                 seed: int | np.random.Generator | None = None, dtype: Any = np.float32,
                 message_dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, heads, concat, negative_slope, dropout, add_self_loops, bias, seed,
                         dtype)  # fmt: skip
        if not 0.0 <= message_dropout < 1.0:
            raise InvalidConfig(f"GATLayer: message_dropout must be in [0, 1); got {message_dropout}.")
        self.message_dropout = float(message_dropout)
        hc = self.heads * self.out_channels
        self.weight = Parameter(glorot(self.rng, (self.in_channels, hc), self.dtype), "weight")
        self.att_src = Parameter(glorot(self.rng, (self.heads, self.out_channels), self.dtype), "att_src")
        self.att_dst = Parameter(glorot(self.rng, (self.heads, self.out_channels), self.dtype), "att_dst")
        self._init_bias()

    def _forward(self, x: Input, graph: Any) -> Array:
        op = "GATLayer"
        x = check_features(op, x, self.in_channels, self.dtype)
        n = x.shape[0]
        g = _as_graph(op, graph, n).slots(self.add_self_loops)
        h = np.ascontiguousarray(matmul_input(x, self.weight.data))
        h3 = h.reshape(n, self.heads, self.out_channels)
        a_src = np.ascontiguousarray(np.einsum("nhc,hc->nh", h3, self.att_src.data))
        a_dst = np.ascontiguousarray(np.einsum("nhc,hc->nh", h3, self.att_dst.data))
        drop = self._drop(g.src.size)
        keep = None
        msg = h
        if self.training and self.message_dropout > 0.0:
            scale = self.dtype.type(1.0 / (1.0 - self.message_dropout))
            keep = (self.rng.random(h.shape, dtype=self.dtype.type) >= self.message_dropout).astype(self.dtype) * scale
            msg = h * keep
        alpha = np.empty((g.src.size, self.heads), self.dtype)
        out = np.empty_like(h)
        slope = self.dtype.type(self.negative_slope)
        KT.gat_forward(g.indptr, g.src, a_src, a_dst, msg, slope, drop, alpha, out, CHUNK)
        self._saved = {"x": x, "slots": g, "h": h, "msg": msg, "keep": keep, "a_src": a_src, "a_dst": a_dst,
                       "drop": drop, "alpha": alpha}  # fmt: skip
        return self._finish(out)

    def _backward(self, dy: Array, need_input_grad: bool) -> Array | None:
        s = _saved(self, self._saved)
        g, h = s["slots"], s["h"]
        n = h.shape[0]
        dout = self._dout(dy)
        dz = np.empty_like(s["alpha"])
        da_dst, da_src, dmsg = np.empty_like(s["a_dst"]), np.empty_like(s["a_src"]), np.empty_like(h)
        slope = self.dtype.type(self.negative_slope)
        KT.gat_backward(g.indptr, g.src, g.rptr, g.rslot, g.dst, s["a_src"], s["a_dst"], s["msg"], slope, s["drop"],
                        s["alpha"], dout, dz, da_dst, dmsg, da_src, CHUNK)  # fmt: skip
        if s["keep"] is not None:
            dmsg *= s["keep"]
        h3 = h.reshape(n, self.heads, self.out_channels)
        self.att_src.grad += np.einsum("nh,nhc->hc", da_src, h3)
        self.att_dst.grad += np.einsum("nh,nhc->hc", da_dst, h3)
        dh = dmsg.reshape(n, self.heads, self.out_channels)
        dh += da_src[:, :, None] * self.att_src.data + da_dst[:, :, None] * self.att_dst.data
        dh2 = dh.reshape(n, -1)
        self.weight.grad += weight_grad(s["x"], dh2)
        if not need_input_grad or sp.issparse(s["x"]):
            return None
        return dh2 @ self.weight.data.T

    def to_mechanism(self) -> Any:
        """This layer's parameters as a :class:`ruvattn.GATConv` mechanism (PyG's names and layouts): for the
        widgets, the contract's forms and ``state_dict`` files.  Its ``forward_graph`` equals this layer's
        forward in evaluation mode."""
        from ruvattn.mechanisms.gat import GATConv

        state = {
            "lin.weight": self.weight.data.T,
            "att_src": self.att_src.data[None],
            "att_dst": self.att_dst.data[None],
        }
        return self._mechanism(GATConv, state)

    def __repr__(self) -> str:
        extra = f", message_dropout={self.message_dropout}" if self.message_dropout else ""
        return (f"GATLayer({self.in_channels}, {self.out_channels}, heads={self.heads}, concat={self.concat}, "
                f"dropout={self.dropout}{extra})")  # fmt: skip


class GATv2Layer(_GraphAttentionLayer):
    """GATv2 (Brody et al. 2022), PyG's ``GATv2Conv`` with ``share_weights=False`` and without edge features.

    Parameters: ``weight_l``/``weight_r (in, heads * C)`` with biases ``bias_l``/``bias_r`` (PyG's ``lin_l``,
    ``lin_r``), ``att (heads, C)``, ``bias``.  Glorot-uniform weights, zero biases, as PyG.
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, add_self_loops: bool = True, bias: bool = True,
                 seed: int | np.random.Generator | None = None, dtype: Any = np.float32) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, heads, concat, negative_slope, dropout, add_self_loops, bias, seed,
                         dtype)  # fmt: skip
        hc = self.heads * self.out_channels
        self.weight_l = Parameter(glorot(self.rng, (self.in_channels, hc), self.dtype), "weight_l")
        self.bias_l = Parameter(np.zeros(hc, self.dtype), "bias_l")
        self.weight_r = Parameter(glorot(self.rng, (self.in_channels, hc), self.dtype), "weight_r")
        self.bias_r = Parameter(np.zeros(hc, self.dtype), "bias_r")
        self.att = Parameter(glorot(self.rng, (self.heads, self.out_channels), self.dtype), "att")
        self._init_bias()

    def _forward(self, x: Input, graph: Any) -> Array:
        op = "GATv2Layer"
        x = check_features(op, x, self.in_channels, self.dtype)
        n = x.shape[0]
        g = _as_graph(op, graph, n).slots(self.add_self_loops)
        xl = np.ascontiguousarray(matmul_input(x, self.weight_l.data) + self.bias_l.data)
        xr = np.ascontiguousarray(matmul_input(x, self.weight_r.data) + self.bias_r.data)
        drop = self._drop(g.src.size)
        alpha = np.empty((g.src.size, self.heads), self.dtype)
        out = np.empty_like(xl)
        slope = self.dtype.type(self.negative_slope)
        KT.gatv2_forward(g.indptr, g.src, xl, xr, self.att.data, slope, drop, alpha, out, CHUNK)
        self._saved = {"x": x, "slots": g, "xl": xl, "xr": xr, "drop": drop, "alpha": alpha}
        return self._finish(out)

    def _backward(self, dy: Array, need_input_grad: bool) -> Array | None:
        s = _saved(self, self._saved)
        g, xl, xr = s["slots"], s["xl"], s["xr"]
        n = xl.shape[0]
        dout = self._dout(dy)
        chunks = max(1, -(-n // CHUNK))
        dz = np.empty_like(s["alpha"])
        du = np.empty((g.src.size, xl.shape[1]), self.dtype)
        dxr, dxl = np.empty_like(xr), np.empty_like(xl)
        datt_parts = np.zeros((chunks, self.heads, self.out_channels), self.dtype)
        slope = self.dtype.type(self.negative_slope)
        KT.gatv2_backward(g.indptr, g.src, g.rptr, g.rslot, g.dst, xl, xr, self.att.data, slope, s["drop"],
                          s["alpha"], dout, dz, du, dxr, datt_parts, dxl, CHUNK)  # fmt: skip
        self.att.grad += datt_parts.sum(0)
        self.bias_l.grad += dxl.sum(0)
        self.bias_r.grad += dxr.sum(0)
        x = s["x"]
        self.weight_l.grad += weight_grad(x, dxl)
        self.weight_r.grad += weight_grad(x, dxr)
        if not need_input_grad or sp.issparse(x):
            return None
        return dxl @ self.weight_l.data.T + dxr @ self.weight_r.data.T

    def to_mechanism(self) -> Any:
        """This layer's parameters as a :class:`ruvattn.GATv2Conv` mechanism (see :meth:`GATLayer.to_mechanism`)."""
        from ruvattn.mechanisms.gat import GATv2Conv

        state = {"lin_l.weight": self.weight_l.data.T, "lin_l.bias": self.bias_l.data, "att": self.att.data[None],
                 "lin_r.weight": self.weight_r.data.T, "lin_r.bias": self.bias_r.data}  # fmt: skip
        return self._mechanism(GATv2Conv, state)

    def __repr__(self) -> str:
        return (f"GATv2Layer({self.in_channels}, {self.out_channels}, heads={self.heads}, concat={self.concat}, "
                f"dropout={self.dropout})")  # fmt: skip
