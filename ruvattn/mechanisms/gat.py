r"""Graph attention layers with PyTorch Geometric's semantics: :class:`GATConv` and :class:`GATv2Conv`.

GAT (Veličković et al. 2018, ``torch_geometric.nn.GATConv``), for an edge
``e = (j -> i)`` with attribute ``x_e`` and head ``h``:

.. math::

    m_j = W x_j, \qquad
    s_{e,h} = \operatorname{LeakyReLU}\big(a^{src}_h \cdot m_{j,h} + a^{dst}_h \cdot m_{i,h}
        + a^{edge}_h \cdot (W_e x_e)_h\big)

GATv2 (Brody et al. 2022, ``torch_geometric.nn.GATv2Conv``):

.. math::

    m_j = W_l x_j + b_l, \qquad
    s_{e,h} = a_h \cdot \operatorname{LeakyReLU}\big(m_{j,h} + (W_r x_i + b_r)_h + (W_e x_e)_h\big)

then, for both,

.. math::

    \alpha_{e,h} = \operatorname{softmax}_{e':\,\mathrm{target}(e') = i}(s_{e',h}), \qquad
    \text{out}_{i,h} = \sum_{e = (j \to i)} \alpha_{e,h}\, m_{j,h}

with the heads concatenated (``concat=True``, ``(N, H·C)``) or averaged
(``(N, C)``), plus ``bias``.  A node without incoming edges gets zeros (plus
the bias).  With ``add_self_loops`` the input's self loops are removed and one
loop ``i -> i`` per node is appended after the edges, its attribute given by
``fill_value`` (``"mean"``: the mean attribute of the node's incoming edges,
zeros if it has none; ``"add"``/``"sum"``, ``"max"``, ``"min"`` likewise; or a
constant).  In training mode ``dropout`` zeroes entries of ``alpha`` (seeded)
and scales the rest by ``1/(1-p)``, as PyG does.

Parameters use PyG's state-dict names and shapes, so a PyG layer's
``state_dict()`` (or a safetensors file of a whole model, with a ``prefix``)
loads as is.  GATConv: ``lin.weight (H·C, in)``, ``att_src``, ``att_dst``
``(1, H, C)``, with ``edge_dim`` also ``att_edge (1, H, C)`` and
``lin_edge.weight (H·C, edge_dim)``, and ``bias``.  GATv2Conv: ``lin_l.weight``,
``lin_l.bias``, ``lin_r.weight``, ``lin_r.bias`` (``lin_r`` *is* ``lin_l`` with
``share_weights``), ``att (1, H, C)``, ``lin_edge.weight``, ``bias``.
Initialisation follows PyG from ``seed``: Glorot-uniform weights and ``att*``,
``U(±1/sqrt(in))`` for ``lin_l.bias``/``lin_r.bias``, zero ``bias``.

Shapes:
    - whole graph (:meth:`~GATConv.forward_graph`, PyG's semantics): ``x (N, in)``,
      ``edge_index (2, E)`` integers with **row 0 the sources j and row 1 the targets
      i** (messages flow ``j -> i``), or a CSR adjacency -- a
      :class:`~ruvattn.graph.NeighbourList`, ``(indptr, indices)`` or a scipy sparse
      matrix -- whose row ``i`` lists the sources of target ``i`` (read by the kernel
      as it is: grouped by target is what CSR is); ``edge_attr (E, edge_dim)`` in edge
      order (CSR order for a CSR adjacency) -> ``(N, H·C)`` or ``(N, C)``; ``alpha (E', H)``
    - one target node (:meth:`~GATConv.forward`): ``query (in,)``, ``keys``/``values
      (n, in)``, ``edge_features (n, edge_dim)`` -> ``(H·C,)`` or ``(C,)``; weights
      ``(H, n)``.  No neighbours: the bias (an isolated node)
    - every node over its own rows of key/value tables (:meth:`~GATConv.forward_neighbours`,
      the contract's form; no self loop added): ``queries (N, in)``, ``keys``/``values
      (n, in)``, ``neighbours`` (CSR or padded ids), ``edge_features (nnz, edge_dim)`` ->
      ``(N, H·C)`` or ``(N, C)``, row ``i`` = ``forward(queries[i], keys[ids_i],
      values[ids_i])``; weights ``(H, nnz)``.  No neighbours: a zero row (the contract)

>>> import numpy as np
>>> from ruvattn import GATConv
>>> conv = GATConv(4, 2, heads=3, edge_dim=1)
>>> x = np.eye(5, 4, dtype=np.float32)
>>> out, (used, alpha) = conv(x, np.array([[0, 1, 2], [1, 2, 0]]), np.ones((3, 1), np.float32),
...                           return_attention_weights=True)
>>> out.shape, used.shape, alpha.shape
((5, 6), (2, 8), (8, 3))
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal, overload

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn._params import Param
from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.kernels import attention as K
from ruvattn.kernels import gat as G
from ruvattn.mechanisms.base import DROPOUT, SEED, Attention, Complexity, Example, Gradients, Prepared, register
from ruvattn.mechanisms.scaled_dot import DropoutMixin

__all__ = ["GATConv", "GATv2Conv"]

Array = NDArray[np.floating]
Ids = NDArray[np.int64]
#: The kernel's tables of one call (one NamedTuple per layer kind, see :mod:`ruvattn.kernels.gat`).
Tables = G.GATTables | G.GATv2Tables
#: ``fill_value`` names (PyG's scatter reductions) and their kernel codes.
FILL_MODES = {"mean": G.FILL_MEAN, "add": G.FILL_ADD, "sum": G.FILL_ADD, "max": G.FILL_MAX, "min": G.FILL_MIN}


#: PyG's ``GATConv`` arguments, declared once; :class:`GATv2Conv` adds ``share_weights``.
GAT_PARAMS = (
    Param("in_channels", V.WIDTH, doc="node feature width in (the mechanism's hidden_dim)", live=False),
    Param("out_channels", V.WIDTH, doc="output width per head", live=False),
    Param("heads", V.POSITIVE_INT, 1, "attention heads H"),
    Param("concat", V.FLAG, True, "concatenate the heads ((N, H·C)), else average them ((N, C))"),
    Param("negative_slope", V.NON_NEGATIVE, 0.2, "slope of the LeakyReLU for negative scores"),
    DROPOUT,
    Param("add_self_loops", V.FLAG, True, "remove the input's self loops and add one per node"),
    Param(
        "edge_dim",
        V.Integer(1, hint=" Use None for a layer without edge features."),
        None,
        "edge feature width, or None for no edge term",
        none=True,
        live=False,
    ),
    Param(
        "fill_value",
        V.Either(V.Options(*FILL_MODES), V.Real()),
        "mean",
        "attribute of an added self loop: a reduction of the node's incoming edge attributes, or a constant",
    ),
    Param("bias", V.FLAG, True, "add a learned bias to the output"),
    SEED,
)


class _GraphConv(DropoutMixin, Attention, ABC):
    """What :class:`GATConv` and :class:`GATv2Conv` share: parameters by PyG name, graph input
    handling (validation, grouping by target, self loops), dropout and the three forward forms.

    Subclasses give ``_state_shapes`` (PyG names -> shapes, in PyG's order), ``_state_aliases``
    (shared tensors), ``_prepare`` (project the rows into the kernel's tables, a
    :class:`~ruvattn.kernels.gat.GATTables` or :class:`~ruvattn.kernels.gat.GATv2Tables`),
    ``_messages`` and ``_kernels`` (the parallel kernel and its serial chunk).
    """

    forward_options = frozenset({"edge_features"})
    empty_keys_raise = False
    #: ``(parallel kernel, serial chunk)`` of :mod:`ruvattn.kernels.gat` for this layer kind.
    _kernels: ClassVar[tuple[Callable[..., Any], Callable[..., Any]]]

    @property
    def hidden_dim(self) -> int:
        return int(self.config.in_channels)

    @property
    def num_weight_heads(self) -> int:
        return int(self.config.heads)

    @classmethod
    def example_params(cls, dim: int = 8, heads: int | None = None) -> dict[str, Any]:
        h = heads or 2
        return {"in_channels": dim, "out_channels": max(1, dim // h), "heads": h}

    def _example_value_dim(self) -> int:
        return self.hidden_dim

    def _warmup(self, ex: Example) -> None:
        """:meth:`forward_graph`'s own kernels (the contract's forms do not reach them): the example's
        neighbour lists as a graph over its key rows, as an edge list (sorted by target) and as CSR (self
        loops added), with attention weights returned."""
        nl = ex.neighbours
        n = max(ex.keys.shape[0], nl.num_nodes)
        x = np.resize(ex.keys, (n, ex.keys.shape[1]))
        targets = np.repeat(np.arange(nl.num_nodes, dtype=np.int64), nl.degrees())
        self.forward_graph(x, np.stack([nl.indices, targets]), return_attention_weights=True)
        indptr = np.concatenate([nl.indptr, np.full(n - nl.num_nodes, nl.nnz)])
        self.forward_graph(x, (indptr, nl.indices), return_attention_weights=True)

    @property
    def output_dim(self) -> int:
        """Width of an output row: ``heads * out_channels`` with ``concat``, else ``out_channels``."""
        return self.heads * self.out_channels if self.config.concat else self.out_channels

    @property
    def complexity(self) -> Complexity:
        return Complexity(
            "linear", "O(N·d·H·C + E·H·C) time for a whole graph (each node projected once), O(E·H) memory for alpha"
        )

    # -- parameters -------------------------------------------------------
    @abstractmethod
    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        """PyG's state-dict names and shapes for this config, in PyG's order."""

    def _init_state(self) -> None:
        rng = np.random.default_rng(self.config.seed)
        aliases = self._state_aliases()
        for name, shape in self._state_shapes().items():
            if name in aliases:
                continue
            if name == "bias":
                value = np.zeros(shape)
            elif name.endswith(".bias"):  # PyG's Linear bias: U(-1/sqrt(in), 1/sqrt(in))
                bound = 1.0 / np.sqrt(self.in_channels)
                value = rng.uniform(-bound, bound, shape)
            else:  # glorot: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) over the last two axes
                bound = np.sqrt(6.0 / (shape[-2] + shape[-1]))
                value = rng.uniform(-bound, bound, shape)
            setattr(self, self._state_attr(name), value.astype(np.float32))
        for name, target in aliases.items():
            setattr(self, self._state_attr(name), getattr(self, self._state_attr(target)))
        self._init_rng()

    def _state_hint(self, names: list[str]) -> str:
        """A fix for tensors the config does not expect (or expects but lacks)."""
        if any(n.startswith(("lin_edge.", "att_edge")) for n in names):
            return (
                " These are edge-feature tensors: build the layer with edge_dim=<edge feature width>."
                if self.config.edge_dim is None
                else f" The layer has edge_dim={self.config.edge_dim}: give its edge tensors, or build it with "
                "edge_dim=None."
            )
        if "bias" in names or any(n.endswith(".bias") for n in names):
            return f" The layer has bias={self.config.bias}; build it with bias={not self.config.bias} to match."
        if any(n.startswith("res.") for n in names):
            return " residual=True layers are not supported."
        if any(n.startswith("lin_r.") for n in names) and getattr(self.config, "share_weights", False):
            return " The layer has share_weights=True (one linear map); build it with share_weights=False to load two."
        return ""

    # -- inputs -----------------------------------------------------------
    def _adjacency(self, op: str, edge_index: Any, n: int) -> Ids | NeighbourList:
        """The graph as given: a ``(2, E)`` int64 edge list, or a :class:`~ruvattn.graph.NeighbourList` for a
        CSR adjacency (a scipy sparse matrix, ``(indptr, indices)`` or a NeighbourList; row ``i`` lists the
        sources of target ``i``), which the kernels read as it is."""
        if sp.issparse(edge_index) or isinstance(edge_index, (tuple, NeighbourList)):
            if sp.issparse(edge_index):
                if edge_index.shape != (n, n):
                    raise DimensionMismatch(
                        f"{op}: the adjacency matrix has shape {edge_index.shape}, expected ({n}, {n}): "
                        "row i lists the sources of target i."
                    )
                edge_index = sp.csr_matrix(edge_index)
            elif isinstance(edge_index, tuple) and (len(edge_index) != 2 or np.shape(edge_index[0]) != (n + 1,)):
                raise DimensionMismatch(
                    f"{op}: a tuple is read as a CSR adjacency (indptr, indices) with len(indptr) = N + 1 = {n + 1}; "
                    f"got {len(edge_index)} item(s), the first of shape {np.shape(edge_index[0])}. "
                    "For an edge list pass np.stack([sources, targets])."
                )
            return as_neighbours(op, edge_index, n, n)
        try:
            arr = np.asarray(edge_index)
        except ValueError:
            raise DimensionMismatch(f"{op}: edge_index must be a (2, E) integer array; got ragged rows.") from None
        if arr.ndim != 2 or arr.shape[0] != 2:
            raise DimensionMismatch(
                f"{op}: edge_index has shape {arr.shape}, expected (2, E): row 0 the sources, row 1 the targets."
            )
        if arr.size and arr.dtype.kind not in "iu":
            raise DimensionMismatch(f"{op}: edge_index must hold integer node ids; got dtype {arr.dtype}.")
        return np.require(arr, np.int64, "CAW")  # C-contiguous, aligned, writeable: the kernels' one layout

    @staticmethod
    def _edge_list(adj: Ids | NeighbourList) -> Ids:
        """``(2, E)`` sources and targets (a CSR adjacency in CSR order)."""
        if not isinstance(adj, NeighbourList):
            return adj
        targets = np.repeat(np.arange(adj.num_nodes, dtype=np.int64), adj.degrees())
        return np.stack([adj.indices, targets])

    def _edge_attr(self, op: str, edge_attr: Any, num_edges: int, what: str = "edges") -> Array | None:
        if edge_attr is None:
            return None
        ed = self.config.edge_dim
        if ed is None:
            width = np.shape(edge_attr)[-1] if np.ndim(edge_attr) == 2 else 1
            raise InvalidConfig(
                f"{op}: edge features were given but the layer has edge_dim=None. "
                f"Build it with edge_dim={width} to use them, or leave them out."
            )
        name = "edge_attr" if what == "edges" else "edge_features"
        if np.ndim(edge_attr) == 1 and ed == 1:  # PyG reads a vector as one feature per edge
            a = V.as_array(edge_attr, op, name, 1).reshape(-1, 1)
        else:
            a = V.as_array(edge_attr, op, name, 2)
        if a.shape[0] != num_edges:
            raise DimensionMismatch(
                f"{op}: {name} has {a.shape[0]} rows but there are {num_edges} {what}; give one row per edge."
            )
        if a.shape[1] != ed:
            raise DimensionMismatch(f"{op}: {name} has shape {a.shape}, expected ({num_edges}, {ed}) (edge_dim={ed}).")
        return a

    @staticmethod
    def _dtype(*arrays: Array | None) -> np.dtype:
        return V.common_dtype(*(a for a in arrays if a is not None))

    def _group(
        self, op: str, adj: Ids | NeighbourList, n: int, rows: Array | None, dt: np.dtype
    ) -> tuple[G.Slots, Array | None]:
        """The graph grouped by target (:class:`~ruvattn.kernels.gat.Slots`, with self loops when
        configured), and the per-edge table ``rows`` carried into slot order.

        A CSR adjacency already is grouped by target: without self loops it is used as it is (edge
        ids = CSR positions, ``rows`` already in slot order); with them it is copied once, without its
        entries ``i -> i`` and with one loop per node.  An edge list is sorted by target once.
        """
        loops = bool(self.config.add_self_loops)
        use_rows = rows is not None
        table = rows if use_rows else np.empty((0, 0), dt)
        if isinstance(adj, NeighbourList):
            e = adj.nnz
            if not loops:
                return G.Slots(adj.indptr, adj.indices, np.arange(e, dtype=np.int64), e, False), rows
            indptr = np.empty(n + 1, np.int64)
            slot_src, slot_edge = np.empty(e + n, np.int64), np.empty(e + n, np.int64)
            slot_rows = np.empty((e + n, table.shape[1]), table.dtype) if use_rows else table
            G.csr_with_self_loops(adj.indptr, adj.indices, table, use_rows, indptr, slot_src, slot_edge, slot_rows)
            return G.Slots(indptr, slot_src, slot_edge, e, True), (slot_rows if use_rows else None)
        ei = adj
        count = ei.shape[1] + (n if loops else 0)
        indptr = np.empty(n + 1, np.int64)
        slot_src, slot_edge = np.empty(count, np.int64), np.empty(count, np.int64)
        slot_rows = np.empty((count, table.shape[1]), table.dtype) if use_rows else table
        bad = int(G.group_by_target(ei[0], ei[1], n, loops, table, use_rows, indptr, slot_src, slot_edge, slot_rows))
        if bad >= 0:
            r = 0 if not 0 <= ei[0, bad] < n else 1
            raise OutOfBounds(
                f"{op}: edge_index[{r}, {bad}] = {ei[r, bad]} is not a node id; ids must be in [0, {n}) "
                f"(x has {n} rows)."
            )
        return G.Slots(indptr, slot_src, slot_edge, ei.shape[1], loops), (slot_rows if use_rows else None)

    def _drop(self, rows: int, dt: np.dtype, use: bool) -> Array:
        """Dropout multipliers ``(rows, heads)``: 0 with probability p, else ``1/(1-p)``; ``(0, heads)`` for none."""
        if not use:
            return np.empty((0, self.heads), dt)
        p = self.config.dropout
        keep = self._rng.random((rows, self.heads)) >= p
        return keep.astype(dt) * dt.type(1.0 / (1.0 - p))

    @staticmethod
    def _raise_nonfinite(op: str, dt: np.dtype, **inputs: Array | None) -> None:
        V.check_finite(op, **{k: v for k, v in inputs.items() if v is not None})
        raise NumericalInstability(
            f"{op}: a score or the output overflowed {dt} (inputs are finite but too large). "
            "Scale the inputs down or use float64."
        )

    # -- the kernel's tables ----------------------------------------------
    @abstractmethod
    def _prepare(self, xs: Array, xd: Array, dt: np.dtype) -> Tables:
        """The kernel's tables for source rows ``xs`` and target rows ``xd`` (no edge features yet)."""

    @abstractmethod
    def _messages(self, v: Array, dt: np.dtype) -> Array:
        """The messages ``(n, heads * C)`` sent by rows ``v`` (the source-side projection)."""

    def _edge_rows(self, t: Tables, edge_attr: Array) -> Array | None:
        """A per-edge table the kernel wants in slot order (GAT's edge term), or None."""
        return None

    def _with_edges(self, t: Tables, slot_rows: Array | None) -> Tables:
        """``t`` for a call with edge features (``slot_rows``: :meth:`_edge_rows` in slot order)."""
        return t._replace(use_edge=True)

    def _fill_mode(self) -> int:
        fill = self.config.fill_value
        return FILL_MODES[fill] if isinstance(fill, str) else G.FILL_CONST

    def _attend(self, t: Tables, graph: G.Slots, edge_attr: Array | None, drop: Array, alpha: Array, out: Array,
                status: NDArray[np.int8], serial: bool) -> None:  # fmt: skip
        """Run the parallel kernel (or, for ``serial``, its chunk over every node) into ``alpha``/``out``/``status``."""
        ea = edge_attr if edge_attr is not None else np.empty((0, 0), out.dtype)
        parallel, chunk = self._kernels
        if serial:
            chunk(t, graph, ea, drop, alpha, out, status, 0, out.shape[0])
        else:
            parallel(t, graph, ea, drop, alpha, out, status, K.chunk_size(out.shape[0]))

    def _over_rows(
        self,
        queries: Array,
        keys: Array,
        messages: Array | None,
        graph: G.Slots,
        edge_features: Array | None,
        dropout: bool,
        serial: bool,
    ) -> tuple[Array, Array, NDArray[np.int8]]:
        """``(out, weights (S, heads), status)``: each query row (a target) over its slots' rows of ``keys``
        (the sources; ``graph`` has no self loops, so edge features are already in slot order).  Messages
        come from ``messages`` (the values) when given, else from the keys."""
        dt = queries.dtype
        with np.errstate(over="ignore", invalid="ignore"):  # NaN/inf are reported by the caller, as a typed error
            t = self._prepare(keys, queries, dt)
            if messages is not None:  # scores from the keys, messages from the values
                t = t._replace(msg=self._messages(messages, dt))
            if edge_features is not None:
                t = self._with_edges(t, self._edge_rows(t, edge_features))
            s = graph.num_edges
            w = np.empty((s, self.heads), dt)
            out = np.empty((queries.shape[0], self.output_dim), dt)
            status = np.empty(queries.shape[0], np.int8)
            drop = self._drop(s, dt, dropout)
            self._attend(t, graph, edge_features, drop, w, out, status, serial)
        return out, w, status

    # -- the whole graph --------------------------------------------------
    @overload
    def forward_graph(
        self, x: Any, edge_index: Any, edge_attr: Any = ..., return_attention_weights: Literal[False] = ...
    ) -> Array: ...

    @overload
    def forward_graph(
        self, x: Any, edge_index: Any, edge_attr: Any = ..., *, return_attention_weights: Literal[True]
    ) -> tuple[Array, tuple[Ids, Array]]: ...

    @overload
    def forward_graph(
        self, x: Any, edge_index: Any, edge_attr: Any = ..., return_attention_weights: bool = ...
    ) -> Array | tuple[Array, tuple[Ids, Array]]: ...

    def forward_graph(
        self, x: Any, edge_index: Any, edge_attr: Any = None, return_attention_weights: bool = False
    ) -> Array | tuple[Array, tuple[Ids, Array]]:
        """The layer on a whole graph, like PyG's ``conv(x, edge_index, edge_attr)``.

        Parameters
        ----------
        x : (N, in_channels) float32 or float64 node features.
        edge_index : (2, E) integers, row 0 the source ``j`` and row 1 the target
            ``i`` of each edge (messages ``j -> i``); or a CSR adjacency -- a
            :class:`~ruvattn.graph.NeighbourList`, ``(indptr, indices)`` or a scipy
            sparse ``(N, N)`` matrix -- whose row ``i`` lists the sources of target
            ``i`` (structure only; values are ignored).  A CSR adjacency is what the
            kernel reads (grouped by target), so it is used as it is; an edge list is
            sorted by target once.
        edge_attr : (E, edge_dim) edge features in the order of the edges (CSR
            order for an adjacency); needs ``edge_dim``.  ``None``: no edge term.
        return_attention_weights : also return ``(edge_index used, alpha)``: the
            edges with PyG's self-loop handling applied ``(2, E')`` and the weights
            ``(E', heads)`` in that order (after dropout in training mode).  For a
            CSR adjacency the edges are listed in CSR order.

        Returns
        -------
        ``(N, heads * out_channels)`` (concat) or ``(N, out_channels)``; float64 for
        float64 inputs, else float32.
        """
        op = f"{type(self).__name__}.forward_graph"
        xa = V.as_array(x, op, "x", 2)
        V.check_width(op, "x", xa, self.in_channels)
        V.check_finite(op, x=xa)  # also where no edge reads a node (a NaN row must not vanish unseen)
        n = xa.shape[0]
        adj = self._adjacency(op, edge_index, n)
        e = adj.nnz if isinstance(adj, NeighbourList) else adj.shape[1]
        ea = self._edge_attr(op, edge_attr, e)
        dt = self._dtype(xa, ea)
        xa = xa.astype(dt, copy=False)
        ea = None if ea is None else ea.astype(dt, copy=False)
        loops = bool(self.config.add_self_loops)
        rows = e + n if loops else e
        alpha = np.empty((rows if return_attention_weights else 0, self.heads), dt)
        out = np.empty((n, self.output_dim), dt)
        status = np.empty(n, np.int8)
        with np.errstate(over="ignore", invalid="ignore"):  # NaN/inf are reported below, as a typed error
            t = self._prepare(xa, xa, dt)
            graph, slot_rows = self._group(op, adj, n, None if ea is None else self._edge_rows(t, ea), dt)
            if ea is not None:
                t = self._with_edges(t, slot_rows)
            drop = self._drop(rows, dt, self._dropping)  # after the checks: a bad call draws no mask
            self._attend(t, graph, ea, drop, alpha, out, status, False)
        if (status == K.NONFINITE).any():
            self._raise_nonfinite(op, dt, x=xa, edge_attr=ea)
        if not return_attention_weights:
            return out
        ei = self._edge_list(adj)
        if not loops:
            return out, (ei, alpha)
        nodes = np.arange(n, dtype=np.int64)
        if graph.indptr[n] == rows:  # no self loop in the input: alpha is already in PyG's order
            return out, (np.concatenate([ei, np.stack([nodes, nodes])], axis=1), alpha)
        kept = ei[0] != ei[1]
        used = np.concatenate([ei[:, kept], np.stack([nodes, nodes])], axis=1)
        return out, (used, np.concatenate([alpha[:e][kept], alpha[e:]]))

    __call__ = forward_graph

    # -- one target node --------------------------------------------------
    def _single(
        self, op: str, query: Any, keys: Any, values: Any, edge_features: Any, dropout: bool
    ) -> tuple[Array, Array]:
        """One target node over its ``n`` incoming neighbours: ``(output, weights (n, heads))``."""
        q, k, v, _ = self._tables(op, query, keys, values, "query")
        if values is not None:
            V.check_width(op, "values", v, self.in_channels)
        n = k.shape[0]
        ef = self._edge_attr(op, edge_features, n, "neighbours")
        dt = self._dtype(q, ef)
        q, k, v = (a.astype(dt, copy=False) for a in (q, k, v))
        ef = None if ef is None else ef.astype(dt, copy=False)
        ids = np.arange(n, dtype=np.int64)
        graph = G.Slots(np.array([0, n], np.int64), ids, ids, n, False)
        msg = v if values is not None and v is not k else None
        out, w, status = self._over_rows(q.reshape(1, -1), k, msg, graph, ef, dropout, True)
        if status[0] == K.NONFINITE:
            self._raise_nonfinite(op, dt, query=q, keys=k, values=v, edge_features=ef)
        return out[0], w

    def backward(self, query: Any, keys: Any, values: Any, grad_output: Any, *, edge_features: Any = None) -> Gradients:
        """Gradients of ``sum(grad_output * forward(...))`` for one target ``(in,)`` or a batch ``(m, in)`` (each
        over the same neighbours, as :meth:`forward_batch`): with respect to the query, the neighbours' keys and
        values, the edge features (``edge_features`` field) and every learned array by PyG's names (``params``;
        equal to PyTorch Geometric's autograd).  In float64, returned in the inputs' dtype.  Evaluation mode
        only (dropout would need its mask)."""
        op = f"{type(self).__name__}.backward"
        if values is None:
            raise V.values_required(op, "the gradient with respect to the values")
        single = np.ndim(query) == 1
        keys, values = self._kv(op, keys, values)
        q, k, v, _ = self._tables(op, np.atleast_2d(query), keys, values)
        V.check_width(op, "values", v, self.in_channels)
        ef = self._edge_attr(op, edge_features, k.shape[0], "neighbours")
        dt = self._dtype(q, ef)
        m = q.shape[0]
        g = self._upstream(op, grad_output, m, self.output_dim, single, dt).astype(np.float64)
        x64 = [a.astype(np.float64) for a in (q, k, v)]
        e64 = None if ef is None else ef.astype(np.float64)
        h, c = self.heads, self.out_channels
        dout = g.reshape(m, h, c) if self.config.concat else np.repeat(g[:, None, :] / h, h, axis=1)
        dq, dk, dv, de, params = self._grads(*x64, e64, dout)
        if self.config.bias:
            params["bias"] = g.sum(axis=0)
        de_out = None if de is None else V.check_output(op, de.astype(dt), dt)
        gq, gk, gv = (V.check_output(op, a.astype(dt), dt) for a in (dq, dk, dv))
        grads = {name: V.check_output(op, a.astype(dt), dt) for name, a in params.items()}
        return Gradients(gq[0] if single else gq, gk, gv, grads, de_out)

    @abstractmethod
    def _grads(
        self, q: Array, k: Array, v: Array, ef: Array | None, dout: Array
    ) -> tuple[Array, Array, Array, Array | None, dict[str, Array]]:
        """``(dq, dk, dv, d_edge_features, params)`` for queries ``q (m, in)`` over ``k``/``v (n, in)`` from the
        per-head output gradients ``dout (m, heads, C)`` (float64; the bias is the caller's)."""

    def _softmax_step(self, z: Array, msg: Array, dout: Array) -> tuple[Array, Array, Array]:
        """For scores ``z (n, H)`` (before the activation for GAT; the final scores for GATv2), messages
        ``msg (n, H, C)`` and ``dout (H, C)``: ``(alpha, d_scores, d_messages)``."""
        a = np.exp(z - z.max(axis=0, initial=-np.inf))
        a /= a.sum(axis=0)
        da = np.einsum("hc,nhc->nh", dout, msg)
        ds = a * (da - (a * da).sum(axis=0))
        return a, ds, a[:, :, None] * dout[None]

    def forward_with_edges(self, query: Any, keys: Any, values: Any, edge_features: Any = None) -> Array:
        """The output at one target node whose incoming neighbours are the rows of ``keys``/``values``.

        Scores use ``query`` on the target side and ``keys`` (and the edge
        features) on the source side; messages are the ``values`` projected by the
        source-side map.  No self loop is added: include the node among its own
        neighbours for one.  With ``values = keys`` this is row ``i`` of
        :meth:`forward_graph` on the star graph of ``i``'s incoming edges.  No
        neighbours give the bias (or zeros), as for an isolated node of a graph.

        Parameters
        ----------
        query : (in_channels,) the target node's features.
        keys, values : (n, in_channels) the neighbours' features.
        edge_features : (n, edge_dim) or None.

        Returns
        -------
        ``(heads * out_channels,)`` (concat) or ``(out_channels,)``.
        """
        op = f"{type(self).__name__}.forward_with_edges"
        return self._single(op, query, keys, values, edge_features, self._dropping)[0]

    def forward(self, query: Any, keys: Any, values: Any = None, *, edge_features: Any = None) -> Array:
        """:meth:`forward_with_edges` (the contract's single-node form)."""
        op = f"{type(self).__name__}.forward"
        keys, values = self._kv(op, keys, values)
        return self._single(op, query, keys, values, edge_features, self._dropping)[0]

    def _weights_one(self, op: str, query: Any, keys: Any, *, edge_features: Any = None) -> Array:
        """Weights ``(heads, n)`` of one target node over its neighbours (before dropout; rows sum to 1)."""
        return np.ascontiguousarray(self._single(op, query, self._check_keys(op, keys), None, edge_features,
                                                 False)[1].T)  # fmt: skip

    # -- every node over its own neighbour rows ---------------------------
    def _neighbours_form(
        self, op: str, queries: Any, keys: Any, values: Any, neighbours: Any, edge_features: Any, dropout: bool
    ) -> tuple[Array, Array]:
        """``(out (N, width), weights (nnz, heads))`` of every query row over its neighbour rows, in one
        parallel kernel call; nodes without neighbours get zero rows."""
        q, k, v, _ = self._tables(op, queries, keys, values)
        if values is not None:
            V.check_width(op, "values", v, self.in_channels)
        nl = as_neighbours(op, neighbours, q.shape[0], k.shape[0])
        ef = self._edge_attr(op, edge_features, nl.nnz, "neighbour entries")
        dt = self._dtype(q, ef)
        q, k, v = (a.astype(dt, copy=False) for a in (q, k, v))
        ef = None if ef is None else ef.astype(dt, copy=False)
        graph = G.Slots(nl.indptr, nl.indices, np.arange(nl.nnz, dtype=np.int64), nl.nnz, False)
        msg = v if values is not None and v is not k else None
        out, w, status = self._over_rows(q, k, msg, graph, ef, dropout, False)
        if (status == K.NONFINITE).any():
            self._raise_nonfinite(op, dt, queries=q, keys=k, values=v, edge_features=ef)
        out[status == K.EMPTY] = 0  # the contract's zero row, not the bias of forward()'s empty neighbourhood
        return out, w

    def forward_neighbours(
        self, queries: Any, keys: Any, values: Any, neighbours: Any, *, edge_features: Any = None
    ) -> Array:
        """Every node over its own neighbour rows of the key/value tables, in one parallel kernel call.

        Node ``i`` is the target: query row ``i`` gives its side of the scores; the
        rows ``ids_i`` of ``keys`` (scores) and ``values`` (messages) are its
        sources.  Row ``i`` equals ``forward(queries[i], keys[ids_i], values[ids_i])``
        (with ``edge_features`` of those entries); the tables are projected once,
        not per node.  No self loop is added (list ``i`` among its own neighbours for
        one), and nothing else of :meth:`forward_graph`'s PyG handling applies.

        A node without neighbours gets a **zero row** (the contract of this form),
        whereas :meth:`forward` over an empty neighbourhood returns the bias (PyG's
        output for an isolated node, which :meth:`forward_graph` also gives).

        Parameters
        ----------
        queries : (N, in_channels) the target nodes.
        keys, values : (n, in_channels) tables of the source nodes (or ``keys`` from
            :meth:`prepare` and ``values=None``).
        neighbours : a :class:`~ruvattn.graph.NeighbourList`, ``(indptr, indices)``,
            a scipy CSR matrix, padded ``(N, k)`` ids with -1, or one list per node.
        edge_features : (nnz, edge_dim), one row per neighbour entry in CSR order
            (padded ids: row by row, the non-negative entries), or None.

        Returns
        -------
        ``(N, heads * out_channels)`` (concat) or ``(N, out_channels)``.
        """
        op = f"{type(self).__name__}.forward_neighbours"
        if isinstance(keys, Prepared):
            keys, values = self._unprepare(op, keys, values)
        return self._neighbours_form(op, queries, keys, values, neighbours, edge_features, self._dropping)[0]

    def _weights_neighbours(
        self, op: str, queries: Any, keys: Any, neighbours: Any, *, edge_features: Any = None
    ) -> Array:
        """``(heads, nnz)`` weights of every node over its neighbour entries (before dropout), one kernel call."""
        w = self._neighbours_form(op, queries, self._check_keys(op, keys), None, neighbours, edge_features, False)[1]
        return np.ascontiguousarray(w.T)


@register("gat")
class GATConv(_GraphConv):
    """Graph attention (GAT) with PyG ``GATConv`` semantics and parameter names (see the module docstring)."""

    lin_weight_: Array
    att_src_: Array
    att_dst_: Array
    att_edge_: Array
    lin_edge_weight_: Array
    bias_: Array

    params = GAT_PARAMS
    _kernels = (G.gat_attend, G.gat_chunk)

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        h, ch = c.heads, c.out_channels
        shapes: dict[str, tuple[int, ...]] = {"att_src": (1, h, ch), "att_dst": (1, h, ch)}
        if c.edge_dim is not None:
            shapes["att_edge"] = (1, h, ch)
        if c.bias:
            shapes["bias"] = (self.output_dim,)
        shapes["lin.weight"] = (h * ch, c.in_channels)
        if c.edge_dim is not None:
            shapes["lin_edge.weight"] = (h * ch, c.edge_dim)
        return shapes

    supports_backward = True

    def _grads(
        self, q: Array, k: Array, v: Array, ef: Array | None, dout: Array
    ) -> tuple[Array, Array, Array, Array | None, dict[str, Array]]:
        h, c, slope = self.heads, self.out_channels, self.config.negative_slope
        w = self.lin_weight_.astype(np.float64)
        att_src, att_dst = (a.reshape(h, c).astype(np.float64) for a in (self.att_src_, self.att_dst_))
        hq, hk, hv = (x @ w.T for x in (q, k, v))
        n = k.shape[0]
        hk3, hv3 = hk.reshape(n, h, c), hv.reshape(n, h, c)
        a_src = np.einsum("nhc,hc->nh", hk3, att_src)
        if ef is not None:
            we = self.lin_edge_weight_.astype(np.float64)
            att_edge = self.att_edge_.reshape(h, c).astype(np.float64)
            he3 = (ef @ we.T).reshape(n, h, c)
            a_edge = np.einsum("nhc,hc->nh", he3, att_edge)
        dhq, dhk, dhv = np.zeros_like(hq), np.zeros_like(hk), np.zeros_like(hv)
        d_att_src, d_att_dst = np.zeros((h, c)), np.zeros((h, c))
        d_att_edge, dhe = np.zeros((h, c)), np.zeros((n, h * c))
        for i in range(q.shape[0]):
            hq3 = hq[i].reshape(h, c)
            z = a_src + (hq3 * att_dst).sum(axis=1)[None, :] + (a_edge if ef is not None else 0.0)
            s = np.where(z > 0, z, slope * z)
            _, ds, dmsg = self._softmax_step(s, hv3, dout[i])
            dz = np.where(z > 0, ds, slope * ds)  # (n, H)
            dhv += dmsg.reshape(n, h * c)
            dhk += (dz[:, :, None] * att_src).reshape(n, h * c)
            d_dst = dz.sum(axis=0)
            dhq[i] = (d_dst[:, None] * att_dst).reshape(-1)
            d_att_src += np.einsum("nh,nhc->hc", dz, hk3)
            d_att_dst += d_dst[:, None] * hq3
            if ef is not None:
                d_att_edge += np.einsum("nh,nhc->hc", dz, he3)
                dhe += (dz[:, :, None] * att_edge).reshape(n, h * c)
        params = {
            "lin.weight": dhq.T @ q + dhk.T @ k + dhv.T @ v,
            "att_src": d_att_src[None],
            "att_dst": d_att_dst[None],
        }
        de = None
        if ef is not None:
            params["att_edge"] = d_att_edge[None]
            params["lin_edge.weight"] = dhe.T @ ef
            de = dhe @ we
        return dhq @ w, dhk @ w, dhv @ w, de, params

    def _prepare(self, xs: Array, xd: Array, dt: np.dtype) -> G.GATTables:
        """Project the source rows ``xs`` (messages, ``a_src``) and target rows ``xd`` (``a_dst``)."""
        c = self.config
        h, ch = self.heads, self.out_channels
        w = self.lin_weight_.astype(dt, copy=False)
        att = np.zeros((h * ch, 2 * h), dt)  # block columns: head h's att_src | att_dst
        col = np.repeat(np.arange(h), ch)
        att[np.arange(h * ch), col] = self.att_src_.reshape(-1)
        att[np.arange(h * ch), h + col] = self.att_dst_.reshape(-1)
        msg = xs @ w.T
        if xd is xs:
            a = msg @ att
            a_src, a_dst = np.ascontiguousarray(a[:, :h]), np.ascontiguousarray(a[:, h:])
        else:
            a_src, a_dst = msg @ att[:, :h], (xd @ w.T) @ att[:, h:]
        me = np.empty((0, h), dt)
        fill_vec = np.zeros(h, dt)
        if c.edge_dim is not None:  # a_edge[e, h] = x_e . (W_e[head h block]^T att_edge[h])
            we = self.lin_edge_weight_.astype(dt, copy=False).reshape(h, ch, c.edge_dim)
            me = np.ascontiguousarray(np.einsum("hco,hc->oh", we, self.att_edge_[0].astype(dt, copy=False)))
            if not isinstance(c.fill_value, str):
                fill_vec = (dt.type(c.fill_value) * me.sum(axis=0)).astype(dt)
        return G.GATTables(msg=msg, a_src=a_src, a_dst=a_dst, a_edge=np.empty((0, h), dt), me=me, use_edge=False,
                           fill_mode=self._fill_mode(), fill_vec=fill_vec, slope=dt.type(c.negative_slope),
                           concat=bool(c.concat), bias=self._bias(dt))  # fmt: skip

    def _messages(self, v: Array, dt: np.dtype) -> Array:
        return v @ self.lin_weight_.astype(dt, copy=False).T

    def project(self, x: Any) -> Array:
        """The node projections ``h = x W^T (N, heads * out_channels)`` (head-major columns), as the layer uses them."""
        xa = V.as_array(x, f"{type(self).__name__}.project", "x", 2)
        V.check_width(f"{type(self).__name__}.project", "x", xa, self.in_channels)
        return self._messages(xa, xa.dtype)

    def _bias(self, dt: np.dtype) -> Array:
        return self.bias_.astype(dt, copy=False) if self.config.bias else np.empty(0, dt)

    def _edge_rows(self, t: Tables, edge_attr: Array) -> Array:
        """The edge term ``a_edge = edge_attr @ me (E, heads)``, carried into slot order by the grouping."""
        return edge_attr @ t.me

    def _with_edges(self, t: Tables, slot_rows: Array | None) -> Tables:
        return t._replace(use_edge=True, a_edge=slot_rows)


@register("gatv2")
class GATv2Conv(_GraphConv):
    """GATv2 ("how attentive are graph attention networks") with PyG ``GATv2Conv`` semantics and names.

    Parameters as :class:`GATConv`, plus ``share_weights``: one linear map
    (``lin_r`` is ``lin_l``) for the source and the target side.  ``bias=False``
    also drops ``lin_l.bias``/``lin_r.bias``, as in PyG.
    """

    lin_l_weight_: Array
    lin_l_bias_: Array
    lin_r_weight_: Array
    lin_r_bias_: Array
    att_: Array
    lin_edge_weight_: Array
    bias_: Array

    params = (*GAT_PARAMS[:-1], Param("share_weights", V.FLAG, False, "one linear map for sources and targets"),
              GAT_PARAMS[-1])  # fmt: skip
    _kernels = (G.gatv2_attend, G.gatv2_chunk)

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        c = self.config
        hc = c.heads * c.out_channels
        shapes: dict[str, tuple[int, ...]] = {"att": (1, c.heads, c.out_channels)}
        if c.bias:
            shapes["bias"] = (self.output_dim,)
        for side in ("lin_l", "lin_r"):
            shapes[f"{side}.weight"] = (hc, c.in_channels)
            if c.bias:
                shapes[f"{side}.bias"] = (hc,)
        if c.edge_dim is not None:
            shapes["lin_edge.weight"] = (hc, c.edge_dim)
        return shapes

    supports_backward = True

    def _grads(
        self, q: Array, k: Array, v: Array, ef: Array | None, dout: Array
    ) -> tuple[Array, Array, Array, Array | None, dict[str, Array]]:
        cfg = self.config
        h, c, slope = self.heads, self.out_channels, cfg.negative_slope
        wl, wr = (getattr(self, f"{side}_weight_").astype(np.float64) for side in ("lin_l", "lin_r"))
        bl = self.lin_l_bias_.astype(np.float64) if cfg.bias else 0.0
        br = self.lin_r_bias_.astype(np.float64) if cfg.bias else 0.0
        att = self.att_.reshape(h, c).astype(np.float64)
        n = k.shape[0]
        xl3 = (k @ wl.T + bl).reshape(n, h, c)
        msg3 = (v @ wl.T + bl).reshape(n, h, c)
        xr = q @ wr.T + br
        e3 = 0.0
        if ef is not None:
            we = self.lin_edge_weight_.astype(np.float64)
            e3 = (ef @ we.T).reshape(n, h, c)
        dxl, dmsg, dxr = np.zeros((n, h * c)), np.zeros((n, h * c)), np.zeros_like(xr)
        d_att = np.zeros((h, c))
        for i in range(q.shape[0]):
            u = xl3 + xr[i].reshape(h, c) + e3
            act = np.where(u > 0, u, slope * u)
            s = np.einsum("nhc,hc->nh", act, att)
            _, ds, dm = self._softmax_step(s, msg3, dout[i])
            dmsg += dm.reshape(n, h * c)
            d_att += np.einsum("nh,nhc->hc", ds, act)
            du = (ds[:, :, None] * att * np.where(u > 0, 1.0, slope)).reshape(n, h * c)
            dxl += du
            dxr[i] = du.sum(axis=0)
        dl_weight = dxl.T @ k + dmsg.T @ v
        dr_weight = dxr.T @ q
        params = {"att": d_att[None]}
        if cfg.share_weights:  # one map on both sides: one gradient, under both names
            params["lin_l.weight"] = params["lin_r.weight"] = dl_weight + dr_weight
        else:
            params["lin_l.weight"], params["lin_r.weight"] = dl_weight, dr_weight
        if cfg.bias:
            dbl, dbr = dxl.sum(axis=0) + dmsg.sum(axis=0), dxr.sum(axis=0)
            if cfg.share_weights:
                params["lin_l.bias"] = params["lin_r.bias"] = dbl + dbr
            else:
                params["lin_l.bias"], params["lin_r.bias"] = dbl, dbr
        de = None
        if ef is not None:
            params["lin_edge.weight"] = dxl.T @ ef
            de = dxl @ we
        return dxr @ wr, dxl @ wl, dmsg @ wl, de, params

    def _state_aliases(self) -> dict[str, str]:
        if not self.config.share_weights:
            return {}
        names = ["weight", "bias"] if self.config.bias else ["weight"]
        return {f"lin_r.{n}": f"lin_l.{n}" for n in names}

    def _linear(self, side: str, x: Array, dt: np.dtype) -> Array:
        y = x @ getattr(self, f"{side}_weight_").astype(dt, copy=False).T
        if self.config.bias:
            y += getattr(self, f"{side}_bias_").astype(dt, copy=False)
        return y

    def _prepare(self, xs: Array, xd: Array, dt: np.dtype) -> G.GATv2Tables:
        """``xl = lin_l(xs)`` (sources: scores and messages), ``xr = lin_r(xd)`` (targets)."""
        c = self.config
        xl = self._linear("lin_l", xs, dt)
        xr = xl if (c.share_weights and xd is xs) else self._linear("lin_r", xd, dt)
        ed = c.edge_dim
        we_t = np.empty((0, c.heads * c.out_channels), dt)
        fill_vec = np.zeros(0 if ed is None else ed, dt)
        if ed is not None:
            we_t = np.ascontiguousarray(self.lin_edge_weight_.T, dtype=dt)
            if not isinstance(c.fill_value, str):
                fill_vec[:] = c.fill_value
        att = np.ascontiguousarray(self.att_.reshape(c.heads, c.out_channels), dtype=dt)
        bias = self.bias_.astype(dt, copy=False) if c.bias else np.empty(0, dt)
        return G.GATv2Tables(msg=xl, xl=xl, xr=xr, att=att, we_t=we_t, use_edge=False, fill_mode=self._fill_mode(),
                             fill_vec=fill_vec, slope=dt.type(c.negative_slope), concat=bool(c.concat),
                             bias=bias)  # fmt: skip

    def _messages(self, v: Array, dt: np.dtype) -> Array:
        return self._linear("lin_l", v, dt)

    def project(self, x: Any) -> tuple[Array, Array]:
        """``(x_l, x_r)``: the source-side ``x W_l^T + b_l`` and target-side ``x W_r^T + b_r``, ``(N, heads * C)``."""
        op = f"{type(self).__name__}.project"
        xa = V.as_array(x, op, "x", 2)
        V.check_width(op, "x", xa, self.in_channels)
        t = self._prepare(xa, xa, xa.dtype)
        return t.xl, t.xr
