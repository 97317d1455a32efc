"""A learned navigator for HNSW search: which neighbours are worth a distance computation.

HNSW's search spends almost all of its distance computations on neighbours it then throws away (on clustered
data about one evaluated neighbour in six enters the beam).  :class:`Navigator` decides, while walking, which
neighbours to evaluate: for an expanded node ``c`` and a neighbour ``n``,
``D(q, n) = D(q, c) + |b|^2 - 2 <q - c, b>`` with ``b = n - c`` known at build time, so the cross term can be
summed over ``b``'s largest coordinates first (each edge stores their order and the energy left at a few
checkpoints); at checkpoint ``j`` the neighbour is dropped when the estimate exceeds the beam's threshold by
more than ``Z_j`` times its uncertainty ``sqrt(D(q, c) tail_j)``.  The ``Z_j`` are learned by imitation: run
the exact search on training queries, record at each checkpoint the normalised margin of every neighbour the
exact search admits, and take its ``1 - miss_rate`` quantile (separately for layer 0 and the upper layers).
The walk is HNSW's (greedy descent, then a beam of ``ef``); the navigator chooses what enters it.

Cost is counted in distance computations: an exact distance is 1, a neighbour dropped after ``r`` of ``d``
coordinates costs ``r/d``; the conservative count (:attr:`NavigatorResult.cost`) also charges one computation
per expanded node for forming ``q - c``.  The record of the prototype this follows (and why a low-dimensional
routing space does not work on isotropic clusters) is ``docs/research/navigator.md``.

>>> import numpy as np
>>> from ruvattn.graph.hnsw import HNSWIndex
>>> x = np.random.default_rng(0).standard_normal((2000, 16)).astype(np.float32)
>>> nav = Navigator(HNSWIndex.build(x, M=8, seed=1)).fit(x[:100] + 0.05, miss_rate=0.01)
>>> res = nav.search(x[:3], k=1, ef=16)
>>> res.ids[:, 0].tolist()
[0, 1, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, InvalidConfig
from ruvattn.graph.hnsw import HNSWIndex
from ruvattn.graph.search import SearchStep, SearchTrace
from ruvattn.kernels import navigator as K

__all__ = ["Navigator", "NavigatorResult"]


@dataclass(frozen=True)
class NavigatorResult:
    """``ids (m, k)`` (-1 where fewer were found) and ``distances (m, k)`` (squared L2), and the work per query:
    ``full`` exact distances, ``partial`` coordinates read by dropped neighbours (divided by ``d``: in distance
    computations), ``expansions`` (nodes whose neighbours were examined).  ``cost`` is the conservative count
    ``full + partial + expansions`` per query (``optimistic_cost`` leaves the expansions out)."""

    ids: NDArray[np.int64]
    distances: NDArray[np.float64]
    full: NDArray[np.float64]
    partial: NDArray[np.float64]
    expansions: NDArray[np.float64]

    @property
    def cost(self) -> NDArray[np.float64]:
        return self.full + self.partial + self.expansions

    @property
    def optimistic_cost(self) -> NDArray[np.float64]:
        return self.full + self.partial


class Navigator:
    """A calibrated neighbour-admission policy over an :class:`~ruvattn.graph.hnsw.HNSWIndex` (L2 metric).

    ``sketch`` coordinates per edge are stored (default ``d/2``), with checkpoints at ``d/16, d/8, d/4, d/2``
    (those not above ``sketch`` and at least 1).  Building the tables reads every edge once; memory is about
    ``edges x (2 sketch + 4 (checkpoints + 1))`` bytes.  Call :meth:`fit` before :meth:`search`.
    """

    def __init__(self, index: HNSWIndex, *, sketch: int | None = None) -> None:
        op = "Navigator"
        if not isinstance(index, HNSWIndex):
            raise InvalidConfig(f"{op}: index must be an HNSWIndex; got {type(index).__name__}.")
        if index.metric != "l2":
            raise InvalidConfig(f"{op}: the navigator's distance identity needs an L2 index; got {index.metric!r}.")
        if index.num_nodes < 2:
            raise InvalidConfig(f"{op}: the index needs at least 2 nodes; got {index.num_nodes}.")
        d = index.dim
        h = max(1, d // 2) if sketch is None else sketch
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not 1 <= h <= d:
            raise InvalidConfig(f"{op}: sketch must be an integer in [1, {d}]; got {sketch!r}.")
        self.index = index
        self.sketch = int(h)
        cps = sorted({max(1, d // f) for f in (16, 8, 4, 2)} | {self.sketch})
        self.checkpoints = np.array([c for c in cps if c <= self.sketch], dtype=np.int64)
        layers = index.layers()
        n = index.num_nodes
        self._indptr = np.zeros((len(layers), n + 1), np.int64)
        pieces, offset = [], 0
        for lev, nl in enumerate(layers):
            self._indptr[lev] = nl.indptr + offset
            pieces.append(nl.indices)
            offset += nl.nnz
        self._indices = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
        sources = np.concatenate([np.repeat(np.arange(n), nl.degrees()) for nl in layers])
        self._x = np.ascontiguousarray(index.vectors)
        e = self._indices.size
        self._order = np.zeros((e, self.sketch), np.uint16 if d > 255 else np.uint8)
        self._tails = np.zeros((e, self.checkpoints.size), np.float32)
        self._bsq = np.zeros(e, np.float32)
        K.edge_tables(self._x, self._indices, sources, self.sketch, self.checkpoints, self._order, self._tails,
                      self._bsq)  # fmt: skip
        self.z0: NDArray[np.float64] | None = None
        self.zu: NDArray[np.float64] | None = None

    @property
    def nbytes(self) -> int:
        """Memory of the per-edge tables (the index's own arrays not included)."""
        return int(self._order.nbytes + self._tails.nbytes + self._bsq.nbytes + self._indptr.nbytes)

    def fit(self, queries: Any, *, miss_rate: float = 0.003, efs: tuple[int, ...] = (16, 32, 64)) -> Navigator:
        """Learn the thresholds ``Z`` from exact searches of ``queries (m, d)`` at each beam width in ``efs``:
        at every checkpoint, the ``1 - miss_rate`` quantile of the normalised margin of the neighbours the exact
        search admits (layer 0 and the upper layers apart).  Returns ``self``."""
        op = "Navigator.fit"
        q = self._queries(op, queries)
        if not (isinstance(miss_rate, (int, float)) and 0.0 < miss_rate < 1.0):
            raise InvalidConfig(f"{op}: miss_rate must be in (0, 1); got {miss_rate!r}.")
        if not efs or any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 1 for e in efs):
            raise InvalidConfig(f"{op}: efs must be positive integers; got {efs!r}.")
        rows = []
        layers = []
        cap = 4_000_000 // max(1, self.checkpoints.size)
        for ef in efs:
            margins = np.zeros((cap, self.checkpoints.size), np.float64)
            layer_of = np.zeros(cap, np.int64)
            stats = self._run(q, int(ef), 1, use=False, collect=True, margins=margins, layer_of=layer_of)[2]
            count = int(stats[:, 4].max()) if stats.size else 0
            rows.append(margins[:count])
            layers.append(layer_of[:count])
        m = np.concatenate(rows)
        lay = np.concatenate(layers)
        if (lay == 0).sum() < 50:
            raise InvalidConfig(f"{op}: too few training samples on layer 0 ({(lay == 0).sum()}); give more queries.")
        self.z0 = np.quantile(m[lay == 0], 1.0 - miss_rate, axis=0)
        upper = m[lay > 0]
        self.zu = np.quantile(upper, 1.0 - miss_rate, axis=0) if upper.shape[0] >= 50 else np.full_like(self.z0, np.inf)
        return self

    def search(self, queries: Any, k: int = 10, *, ef: int | None = None) -> NavigatorResult:
        """The ``k`` nearest of each query ``(m, d)`` (or one ``(d,)``) with a beam of ``ef`` (default
        ``max(k, 16)``), neighbours admitted by the learned test."""
        op = "Navigator.search"
        if self.z0 is None:
            raise InvalidConfig(f"{op}: call fit(training_queries) first.")
        q = self._queries(op, np.atleast_2d(queries))
        k, ef = self._k_ef(op, k, ef)
        ids, dist, stats = self._run(q, ef, k, use=True, collect=False)
        d = self.index.dim
        return NavigatorResult(ids, dist, stats[:, 0], stats[:, 1] / d, stats[:, 2])

    def exact(self, queries: Any, k: int = 10, *, ef: int | None = None) -> NavigatorResult:
        """The same walk with every neighbour evaluated in full (the plain HNSW search, for comparison)."""
        op = "Navigator.exact"
        q = self._queries(op, np.atleast_2d(queries))
        k, ef = self._k_ef(op, k, ef)
        ids, dist, stats = self._run(q, ef, k, use=False, collect=False)
        return NavigatorResult(ids, dist, stats[:, 0], stats[:, 1] / self.index.dim, stats[:, 2])

    def trace(self, index: HNSWIndex, query: Any, k: int, ef: int) -> SearchTrace:
        """One navigated search as a :class:`~ruvattn.graph.search.SearchTrace`, for
        :class:`~ruvattn.widgets.SearchPathView` (``policies={"navigator": nav.trace}``): each expansion is a
        step with the neighbours it evaluated in full (the ones it dropped cost a fraction and are not listed);
        ``beam`` is the best node so far.  ``visited`` is every node evaluated in full, in order."""
        op = "Navigator.trace"
        if index is not self.index:
            raise InvalidConfig(f"{op}: the view's index is not the one the navigator was built on.")
        if self.z0 is None:
            raise InvalidConfig(f"{op}: call fit(training_queries) first.")
        q = self._queries(op, np.atleast_2d(query))
        k, ef = self._k_ef(op, k, ef)
        route = np.zeros((3 * self.index.num_nodes + 1024, 3), np.int64)  # room for the whole route (else cut short)
        ids, dist, stats = self._run(q, ef, k, use=True, collect=False, route=route)
        rows = route[: int(stats[0, 5])]
        x = self._x.astype(np.float64)
        qq = q[0]
        steps: list[SearchStep] = []
        visited: list[int] = []
        best, best_d = -1, np.inf
        pending: list[int] = []
        current: tuple[int, int] | None = None

        def close() -> None:
            if current is None:
                return
            node, layer = current
            ev = np.array(pending, dtype=np.int64)
            dv = ((x[ev] - qq) ** 2).sum(axis=1) if ev.size else np.empty(0)
            steps.append(SearchStep(layer, node, float(((x[node] - qq) ** 2).sum()), ev, dv, best, np.array([best])))

        for kind, node, layer in rows.tolist():
            if kind == 0:
                close()
                current, pending = (node, layer), []
            else:
                visited.append(node)
                dn = float(((x[node] - qq) ** 2).sum())
                if dn < best_d:
                    best, best_d = node, dn
                if current is not None:
                    pending.append(node)
        close()
        return SearchTrace(qq, "navigator", ef, steps, ids[0], dist[0], np.array(visited, dtype=np.int64))

    # -- internals ---------------------------------------------------------------------------------
    def _queries(self, op: str, queries: Any) -> NDArray[np.float64]:
        q = V.as_array(queries, op, "queries", 2, np.dtype(np.float64))
        if q.shape[1] != self.index.dim:
            raise DimensionMismatch(f"{op}: queries have shape {q.shape}, expected (m, {self.index.dim}).")
        V.check_finite(op, queries=q)
        return q

    def _k_ef(self, op: str, k: Any, ef: Any) -> tuple[int, int]:
        for name, v in (("k", k), ("ef", ef)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise InvalidConfig(f"{op}: {name} must be an integer >= 1; got {v!r}.")
        ef = max(int(k), 16) if ef is None else int(ef)
        if ef < k:
            raise InvalidConfig(f"{op}: ef must be at least k={k}; got {ef}.")
        return int(k), ef

    def _run(
        self,
        q: NDArray[np.float64],
        ef: int,
        k: int,
        *,
        use: bool,
        collect: bool,
        margins: NDArray[np.float64] | None = None,
        layer_of: NDArray[np.int64] | None = None,
        route: NDArray[np.int64] | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        n, d = self._x.shape
        m = q.shape[0]
        z0 = self.z0 if self.z0 is not None else np.zeros(self.checkpoints.size)
        zu = self.zu if self.zu is not None else np.zeros(self.checkpoints.size)
        margins = np.zeros((1, self.checkpoints.size)) if margins is None else margins
        layer_of = np.zeros(1, np.int64) if layer_of is None else layer_of
        visited = np.zeros(n, np.int64)
        res_d, res_i = np.empty(ef + 2), np.empty(ef + 2, np.int64)
        cand_d, cand_i = np.empty(n + 1), np.empty(n + 1, np.int64)
        dq = np.empty(d)
        ids = np.full((m, k), -1, np.int64)
        dist = np.full((m, k), np.inf)
        stats = np.zeros((m, 6))
        carried = 0.0  # collected rows continue across queries
        path = np.zeros((0, 3), np.int64) if route is None else route
        for i in range(m):
            st = np.zeros(6)
            st[4] = carried
            size = K.navigate(q[i], self._x, self._indptr, self._indices, self.index.entry_point,
                              self.index.max_level, ef, self._order, self._tails, self._bsq, self.checkpoints,
                              z0, zu, use, collect, margins, layer_of, visited, i + 1, res_d, res_i, cand_d,
                              cand_i, dq, st, path)  # fmt: skip
            carried = st[4]
            beam = -res_d[:size]  # the kernel keeps negated distances (a min-heap whose top is the worst)
            order = np.argsort(beam, kind="stable")[:k]
            ids[i, : order.size] = res_i[:size][order]
            dist[i, : order.size] = beam[order]
            stats[i] = st
        return ids, dist, stats
