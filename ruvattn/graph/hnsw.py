"""A real HNSW index (faiss ``IndexHNSWFlat``) seen through ruvattn's own types.

An HNSW graph (Malkov & Yashunin, 2018) stores every vector on layer 0 and, with probability
decaying geometrically, on layers 1, 2, ...; each node keeps a short neighbour list per layer it
is on (``2M`` slots on layer 0, ``M`` above).  Attention over a node's neighbours reads exactly
those lists, so :class:`HNSWIndex` exposes them as :class:`~ruvattn.graph.NeighbourList` per
layer (ids are global row numbers on every layer; a node absent from a layer has an empty list),
each node's top level, the entry point, and search with ``(k, ef)`` that also counts distance
computations.

faiss (extra ``hnsw``: ``pip install 'ruvattn[hnsw]'``) builds and searches; its arrays are read
without copies where it allows (:meth:`HNSWIndex.arrays` are views of faiss's own vectors, and
:attr:`HNSWIndex.vectors` of its flat storage); the per-layer CSR lists are built once per layer
and cached.

>>> import numpy as np
>>> from ruvattn.graph.hnsw import HNSWIndex
>>> x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
>>> index = HNSWIndex.build(x, M=8, seed=1)
>>> bool(index.layer(0).degrees().max() <= 16), bool(index.levels.max() == index.max_level)
(True, True)
>>> res = index.search(x[:3], k=1, ef=16)
>>> res.ids[:, 0].tolist()
[0, 1, 2]
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, InvalidConfig, MissingDependency, NumericalInstability, OutOfBounds
from ruvattn.graph import NeighbourList

__all__ = [
    "HNSWArrays",
    "HNSWIndex",
    "SearchResult",
    "faiss_available",
    "faiss_module",
    "level_probabilities",
    "resolve_graph",
]

_METRICS = ("l2", "ip")


def faiss_module() -> ModuleType:
    """The ``faiss`` module, or :class:`~ruvattn.errors.MissingDependency` naming the extra to install."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise MissingDependency("HNSWIndex needs faiss (the faiss-cpu package): pip install 'ruvattn[hnsw]'.") from None


def faiss_available() -> bool:
    """Whether faiss can be imported (the ``hnsw`` extra is installed)."""
    try:
        faiss_module()
    except MissingDependency:
        return False
    return True


def resolve_graph(choice: str) -> str:
    """``"hnsw"`` or ``"knn"`` for a tool's ``--graph`` flag: ``"auto"`` is ``"hnsw"`` when faiss is installed;
    ``"hnsw"`` without faiss is :class:`~ruvattn.errors.MissingDependency` naming the extra."""
    if choice not in ("auto", "hnsw", "knn"):
        raise InvalidConfig(f"--graph must be auto, hnsw or knn; got {choice!r}.")
    if choice == "auto":
        return "hnsw" if faiss_available() else "knn"
    if choice == "hnsw":
        faiss_module()
    return choice


def level_probabilities(M: int, levels: int = 32) -> NDArray[np.float64]:
    r"""The HNSW level distribution for ``M`` links per node: :math:`P(\ell) = e^{-\ell/m_L}(1 - e^{-1/m_L})`
    with :math:`m_L = 1/\ln M` (Malkov & Yashunin's normalisation; faiss's ``set_default_probas``), i.e. a
    node reaches level :math:`\ell` with probability :math:`M^{-\ell}`.

    >>> level_probabilities(4, 3).round(4).tolist()
    [0.75, 0.1875, 0.0469]
    """
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 2:
        raise InvalidConfig(f"level_probabilities: M must be an integer >= 2; got {M!r}.")
    ell = np.arange(levels, dtype=np.float64)
    return float(M) ** -ell * (1.0 - 1.0 / M)


@dataclass(frozen=True)
class SearchResult:
    """``ids (m, k)`` (-1 where fewer than ``k`` were found), ``distances (m, k)`` (squared L2 for ``"l2"``,
    inner products for ``"ip"``, as faiss reports them), and the work done: ``distance_computations`` and
    ``hops`` summed over the ``m`` queries."""

    ids: NDArray[np.int64]
    distances: NDArray[np.float32]
    distance_computations: int
    hops: int


@dataclass(frozen=True)
class HNSWArrays:
    """faiss's own HNSW arrays: ``levels[i]`` is node ``i``'s top level **plus one**; node ``i``'s slots are
    ``neighbors[offsets[i]:offsets[i+1]]``, layer ``l`` being ``cum_neighbors[l]:cum_neighbors[l+1]`` of them,
    -1 in an empty slot."""

    levels: NDArray[np.int32]
    offsets: NDArray[np.uint64]
    neighbors: NDArray[np.int32]
    cum_neighbors: NDArray[np.int32]
    entry_point: int
    max_level: int


def _view(faiss: ModuleType, vec: Any) -> NDArray[Any]:
    """A numpy view (no copy) of a faiss ``std::vector``."""
    n = vec.size()
    if n == 0:
        return faiss.vector_to_array(vec)
    return faiss.rev_swig_ptr(vec.data(), n)


class HNSWIndex:
    """An HNSW graph over ``(N, d)`` float32 vectors, backed by a faiss ``IndexHNSWFlat``.

    Build one with :meth:`build`, wrap an existing faiss index with :meth:`from_faiss`, or rebuild one from
    faiss's own arrays with :meth:`from_arrays`.
    """

    def __init__(self, index: Any) -> None:
        faiss = faiss_module()
        self._owner = index  # a downcast proxy does not own the C++ object: keep the one that does alive
        if not isinstance(index, faiss.IndexHNSWFlat) and isinstance(index, faiss.Index):
            index = faiss.downcast_index(index)
        if not isinstance(index, faiss.IndexHNSWFlat):
            raise InvalidConfig(
                f"HNSWIndex: expected a faiss IndexHNSWFlat (full float32 vectors); got {type(index).__name__}."
            )
        if index.metric_type not in (faiss.METRIC_L2, faiss.METRIC_INNER_PRODUCT):
            raise InvalidConfig("HNSWIndex: only the L2 and inner-product metrics are supported.")
        self._faiss = faiss
        self.index = index
        self._layers: dict[int, NeighbourList] = {}

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        data: Any,
        *,
        M: int = 16,
        ef_construction: int = 200,
        metric: str = "l2",
        seed: int = 12345,
        threads: int | None = 1,
    ) -> HNSWIndex:
        """Index ``data (N, d)`` (converted to float32 once).

        ``M`` links per node per upper layer (``2M`` on layer 0), ``ef_construction`` the candidate-list size
        while inserting, ``metric`` ``"l2"`` or ``"ip"`` (inner product), ``seed`` draws the levels.
        ``threads=1`` (the default) makes the whole graph reproducible; more threads insert in parallel and
        the links then depend on timing (the levels still follow ``seed``); ``None`` uses faiss's default.
        """
        op = "HNSWIndex.build"
        faiss = faiss_module()
        x = _float32_table(op, data)
        _check_int(op, "M", M, 2)
        _check_int(op, "ef_construction", ef_construction, 1)
        _check_int(op, "seed", seed, 0)
        if metric not in _METRICS:
            raise InvalidConfig(f"{op}: metric must be one of {', '.join(_METRICS)}; got {metric!r}.")
        if threads is not None:
            _check_int(op, "threads", threads, 1)
        mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexHNSWFlat(x.shape[1], int(M), mt)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.rng = faiss.RandomGenerator(int(seed))
        before = faiss.omp_get_max_threads()
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        try:
            index.add(x)
        finally:
            faiss.omp_set_num_threads(before)
        return cls(index)

    @classmethod
    def from_faiss(cls, index: Any) -> HNSWIndex:
        """Wrap an existing faiss ``IndexHNSWFlat`` (no copy: its graph and vectors are read in place)."""
        return cls(index)

    @classmethod
    def from_arrays(cls, data: Any, arrays: HNSWArrays, *, M: int, metric: str = "l2") -> HNSWIndex:
        """A faiss index holding ``data (N, d)`` and exactly the graph in ``arrays`` (as :meth:`arrays` returns
        them); ``M`` must be the one the graph was built with.  Searches on it equal the original's."""
        op = "HNSWIndex.from_arrays"
        faiss = faiss_module()
        x = _float32_table(op, data)
        _check_int(op, "M", M, 2)
        if metric not in _METRICS:
            raise InvalidConfig(f"{op}: metric must be one of {', '.join(_METRICS)}; got {metric!r}.")
        n = x.shape[0]
        levels = np.asarray(arrays.levels)
        offsets = np.asarray(arrays.offsets)
        neighbors = np.asarray(arrays.neighbors)
        if levels.shape != (n,) or offsets.shape != (n + 1,):
            raise DimensionMismatch(
                f"{op}: levels has shape {levels.shape} and offsets {offsets.shape}; expected ({n},) and ({n + 1},) "
                f"for {n} vectors."
            )
        mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        index = faiss.IndexHNSWFlat(x.shape[1], int(M), mt)
        cum = _view(faiss, index.hnsw.cum_nneighbor_per_level)
        if n and (levels.min() < 1 or levels.max() >= cum.size):
            raise OutOfBounds(
                f"{op}: levels (top level + 1) must be in [1, {cum.size - 1}]; got {levels.min()}..{levels.max()}."
            )
        want = np.zeros(n + 1, np.int64)
        np.cumsum(cum[levels], out=want[1:])
        if not np.array_equal(offsets.astype(np.int64), want) or neighbors.shape != (int(want[-1]),):
            raise DimensionMismatch(
                f"{op}: offsets/neighbors do not match levels for M={M} (each node needs "
                "cum_neighbors[levels[i]] slots); were they built with another M?"
            )
        if neighbors.size and (neighbors.min() < -1 or neighbors.max() >= n):
            raise OutOfBounds(f"{op}: neighbour ids must be -1 (empty) or in [0, {n}).")
        if n and not (0 <= arrays.entry_point < n and levels[arrays.entry_point] - 1 == arrays.max_level):
            raise InvalidConfig(f"{op}: entry_point must be a node on the top level {arrays.max_level}.")
        index.storage.add(x)
        index.ntotal = n
        faiss.copy_array_to_vector(levels.astype(np.int32), index.hnsw.levels)
        faiss.copy_array_to_vector(offsets.astype(np.uint64), index.hnsw.offsets)
        faiss.copy_array_to_vector(neighbors.astype(np.int32), index.hnsw.neighbors)
        index.hnsw.entry_point = int(arrays.entry_point) if n else -1
        index.hnsw.max_level = int(arrays.max_level) if n else -1
        return cls(index)

    # -- what attention needs ---------------------------------------------------------------------
    @property
    def num_nodes(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def M(self) -> int:
        """Links per node on the upper layers (``2M`` on layer 0)."""
        cum = _view(self._faiss, self.index.hnsw.cum_nneighbor_per_level)
        return int(cum[2] - cum[1]) if cum.size > 2 else int(cum[1] // 2)

    @property
    def metric(self) -> str:
        return "l2" if self.index.metric_type == self._faiss.METRIC_L2 else "ip"

    @property
    def entry_point(self) -> int:
        """The node every search starts from (on the top layer); -1 for an empty index."""
        return int(self.index.hnsw.entry_point)

    @property
    def max_level(self) -> int:
        """The top layer's number (0 when every node is on layer 0 only; -1 for an empty index)."""
        return int(self.index.hnsw.max_level)

    @property
    def num_layers(self) -> int:
        return self.max_level + 1

    @property
    def levels(self) -> NDArray[np.int64]:
        """Each node's top level (0 = layer 0 only), ``(N,)``."""
        return _view(self._faiss, self.index.hnsw.levels).astype(np.int64) - 1

    @property
    def vectors(self) -> NDArray[np.float32]:
        """The indexed vectors ``(N, d)``: a view of faiss's flat storage (no copy; do not write to it)."""
        storage = self._faiss.downcast_index(self.index.storage)
        n, d = self.num_nodes, self.dim
        if n == 0:
            return np.empty((0, d), np.float32)
        return self._faiss.rev_swig_ptr(storage.get_xb(), n * d).reshape(n, d)

    def arrays(self) -> HNSWArrays:
        """faiss's own arrays as numpy views (no copies; they change if the index is added to)."""
        h = self.index.hnsw
        return HNSWArrays(
            levels=_view(self._faiss, h.levels),
            offsets=_view(self._faiss, h.offsets),
            neighbors=_view(self._faiss, h.neighbors),
            cum_neighbors=_view(self._faiss, h.cum_nneighbor_per_level),
            entry_point=int(h.entry_point),
            max_level=int(h.max_level),
        )

    def layer(self, level: int) -> NeighbourList:
        """Layer ``level``'s neighbour lists over all ``N`` nodes (global ids; empty for a node not on it),
        in faiss's slot order (nearest first as inserted).  Built once per layer and cached."""
        op = "HNSWIndex.layer"
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise InvalidConfig(f"{op}: level must be an integer; got {level!r}.")
        if not 0 <= level <= max(self.max_level, 0):
            raise OutOfBounds(f"{op}: level must be in [0, {max(self.max_level, 0)}]; got {level}.")
        cached = self._layers.get(int(level))
        if cached is not None and cached.num_nodes == self.num_nodes:
            return cached
        a = self.arrays()
        lo, hi = int(a.cum_neighbors[level]), int(a.cum_neighbors[level + 1])
        n = self.num_nodes
        on = (a.levels.astype(np.int64) - 1) >= level
        nodes = np.flatnonzero(on)
        starts = a.offsets[:-1].astype(np.int64)[nodes] + lo
        slots = a.neighbors[starts[:, None] + np.arange(hi - lo)[None, :]] if nodes.size else np.empty((0, hi - lo))
        live = slots >= 0
        counts = np.zeros(n, np.int64)
        counts[nodes] = live.sum(axis=1)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        nl = NeighbourList(indptr, slots[live].astype(np.int64), n)
        self._layers[int(level)] = nl
        return nl

    def layers(self) -> list[NeighbourList]:
        """Every layer's lists, layer 0 first."""
        return [self.layer(level) for level in range(self.num_layers)]

    def level_histogram(self) -> NDArray[np.int64]:
        """How many nodes have each top level ``0 .. max_level``."""
        return np.bincount(self.levels, minlength=self.num_layers)

    def search(self, queries: Any, k: int, *, ef: int | None = None) -> SearchResult:
        """The ``k`` nearest indexed vectors of each query ``(m, d)`` (or one ``(d,)``), with a candidate
        list of ``ef`` (default ``max(k, 16)``, at least ``k``), through faiss's own HNSW search; the distance
        computations and hops it made are counted (faiss's global ``hnsw_stats``; do not search the same
        process from two threads at once if you read them)."""
        op = "HNSWIndex.search"
        q = _float32_table(op, np.atleast_2d(queries), width=self.dim, name="queries")
        _check_int(op, "k", k, 1)
        ef = max(int(k), 16) if ef is None else ef
        _check_int(op, "ef", ef, 1)
        if ef < k:
            raise InvalidConfig(f"{op}: ef must be at least k={k}; got {ef}.")
        if self.num_nodes == 0:
            raise OutOfBounds(f"{op}: the index is empty.")
        faiss = self._faiss
        params = faiss.SearchParametersHNSW(efSearch=int(ef))
        stats = faiss.cvar.hnsw_stats
        stats.reset()
        dist, ids = self.index.search(q, int(k), params=params)
        return SearchResult(ids.astype(np.int64), dist, int(stats.ndis), int(stats.nhops))

    def nearest_others(self, rows: Any, k: int, *, ef: int | None = None) -> NDArray[np.int64]:
        """Each indexed node ``rows[i]``'s ``k`` nearest *other* nodes as the index finds them, nearest first:
        ``(len(rows), k)`` ids (a search for ``k + 1`` with ``ef`` (default ``max(2(k + 1), 64)``), the node itself
        removed, or the last result when the search missed it; -1 pads a row the search could not fill)."""
        op = "HNSWIndex.nearest_others"
        ids = np.asarray(rows)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise DimensionMismatch(f"{op}: rows must be a flat array of node ids; got shape {ids.shape}.")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_nodes):
            raise OutOfBounds(f"{op}: rows must be node ids in [0, {self.num_nodes}).")
        _check_int(op, "k", k, 1)
        if k >= self.num_nodes:
            raise InvalidConfig(f"{op}: k must be smaller than the {self.num_nodes} indexed nodes; got {k}.")
        found = self.search(self.vectors[ids], k + 1, ef=max(2 * (k + 1), 64) if ef is None else ef).ids
        out = np.full((ids.size, k), -1, np.int64)
        for i, (node, row) in enumerate(zip(ids, found, strict=True)):
            others = row[(row != node) & (row >= 0)][:k]
            out[i, : others.size] = others
        return out

    def __repr__(self) -> str:
        return (
            f"HNSWIndex(N={self.num_nodes}, d={self.dim}, M={self.M}, metric={self.metric!r}, "
            f"layers={self.num_layers}, entry_point={self.entry_point})"
        )


def _check_int(op: str, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidConfig(f"{op}: {name} must be an integer >= {low}; got {value!r}.")


def _float32_table(op: str, data: Any, width: int | None = None, name: str = "data") -> NDArray[np.float32]:
    x = V.as_array(data, op, name, 2)
    if width is not None and x.shape[1] != width:
        raise DimensionMismatch(f"{op}: {name} has shape {x.shape}, expected (m, {width}).")
    if x.shape[1] == 0:
        raise DimensionMismatch(f"{op}: {name} has shape {x.shape}; vectors need at least one component.")
    V.check_finite(op, **{name: x})
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x32).all():
        raise NumericalInstability(f"{op}: {name} overflows float32 (faiss stores float32); scale it down.")
    return x32
