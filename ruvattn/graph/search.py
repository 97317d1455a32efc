"""Searches over an HNSW graph that record every step, for looking at them (the search-path widget) and for
comparing policies by the distance computations they spend.

:func:`trace_search` runs, in plain Python over :class:`~ruvattn.graph.hnsw.HNSWIndex`'s layers, the search
of Malkov & Yashunin (2018): a greedy descent from the entry point through the upper layers (move to the
best neighbour while it is closer), then on layer 0 either the same greedy walk (``mode="greedy"``, a local
minimum) or a beam of ``ef`` candidates (``mode="beam"``, their Algorithm 2: expand the closest unexpanded
candidate, stop when it is farther than the worst of the ``ef`` best found).  Every distance evaluated is one
*distance computation*; a node's distance is computed once per search (a visited set).  faiss implements the
same search with another stopping test, so its counts differ by a few per cent (measured in the tests).

>>> import numpy as np
>>> from ruvattn.graph.hnsw import HNSWIndex
>>> x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
>>> index = HNSWIndex.build(x, M=4, seed=1)
>>> t = trace_search(index, x[5], k=3, ef=16)
>>> int(t.ids[0]), t.distance_computations == len(t.visited)
(5, True)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, InvalidConfig, OutOfBounds
from ruvattn.graph.hnsw import HNSWIndex

__all__ = ["SearchStep", "SearchTrace", "trace_search"]


@dataclass(frozen=True)
class SearchStep:
    """One expansion: on ``layer``, node ``node`` (at ``node_distance``) had its neighbours ``evaluated`` (the
    ones not seen before, at ``distances``); ``best`` is the closest node found so far and ``beam`` the current
    result list (the ``ef`` best on layer 0 in beam mode, else ``[best]``)."""

    layer: int
    node: int
    node_distance: float
    evaluated: NDArray[np.int64]
    distances: NDArray[np.float64]
    best: int
    beam: NDArray[np.int64]


@dataclass(frozen=True)
class SearchTrace:
    """A whole search: its steps in order, the ``k`` results (``ids``, ``distances``: squared L2 for an L2 index,
    negated inner products for an inner-product one, smaller is closer), every node whose distance was
    computed (``visited``, in order) and their number (``distance_computations``)."""

    query: NDArray[np.float64]
    mode: str
    ef: int
    steps: list[SearchStep]
    ids: NDArray[np.int64]
    distances: NDArray[np.float64]
    visited: NDArray[np.int64] = field(repr=False)

    @property
    def distance_computations(self) -> int:
        return int(self.visited.size)

    @property
    def path(self) -> NDArray[np.int64]:
        """The expanded nodes in order (the route the search took)."""
        return np.array([s.node for s in self.steps], dtype=np.int64)


def trace_search(
    index: HNSWIndex, query: Any, k: int = 10, *, ef: int | None = None, mode: str = "beam"
) -> SearchTrace:
    """Search ``index`` for ``query (d,)`` and record every step (see the module docstring); ``ef`` (default
    ``max(k, 16)``) is the beam width on layer 0 in ``"beam"`` mode."""
    op = "trace_search"
    if not isinstance(index, HNSWIndex):
        raise InvalidConfig(f"{op}: index must be an HNSWIndex; got {type(index).__name__}.")
    if mode not in ("beam", "greedy"):
        raise InvalidConfig(f"{op}: mode must be 'beam' or 'greedy'; got {mode!r}.")
    q = V.as_array(query, op, "query", 1, np.dtype(np.float64))
    if q.shape[0] != index.dim:
        raise DimensionMismatch(f"{op}: query has shape {q.shape}, expected ({index.dim},).")
    V.check_finite(op, query=q)
    for name, value in (("k", k), ("ef", ef)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise InvalidConfig(f"{op}: {name} must be an integer >= 1; got {value!r}.")
    ef = max(int(k), 16) if ef is None else int(ef)
    if mode == "beam" and ef < k:
        raise InvalidConfig(f"{op}: ef must be at least k={k}; got {ef}.")
    if index.num_nodes == 0:
        raise OutOfBounds(f"{op}: the index is empty.")
    x = index.vectors
    ip = index.metric == "ip"
    layers = index.layers()
    seen: dict[int, float] = {}
    order: list[int] = []

    def distances(ids: NDArray[np.int64]) -> NDArray[np.float64]:
        rows = x[ids].astype(np.float64)
        d = -(rows @ q) if ip else ((rows - q) ** 2).sum(axis=1)
        for i, v in zip(ids.tolist(), d.tolist(), strict=True):
            seen[i] = v
            order.append(i)
        return d

    steps: list[SearchStep] = []
    cur = int(index.entry_point)
    d_cur = float(distances(np.array([cur]))[0])
    top = index.max_level
    for layer in range(top, -1, -1):
        if layer == 0 and mode == "beam":
            break
        while True:  # greedy: move to the closest neighbour while it is closer
            nbrs = layers[layer].neighbours(cur)
            new = np.array([j for j in nbrs.tolist() if j not in seen], dtype=np.int64)
            d_new = distances(new) if new.size else np.empty(0)
            cand = [(seen[j], j) for j in nbrs.tolist()]
            best_d, best = min(cand, default=(d_cur, cur))
            moved = best_d < d_cur
            steps.append(SearchStep(layer, cur, d_cur, new, d_new, best if moved else cur,
                                    np.array([best if moved else cur])))  # fmt: skip
            if not moved:
                break
            cur, d_cur = int(best), float(best_d)
    if mode == "beam":
        candidates = [(d_cur, cur)]  # min-heap of nodes to expand
        results = [(-d_cur, cur)]  # max-heap (negated) of the ef best
        while candidates:
            d_c, c = heapq.heappop(candidates)
            if len(results) >= ef and d_c > -results[0][0]:
                break
            nbrs = layers[0].neighbours(c)
            new = np.array([j for j in nbrs.tolist() if j not in seen], dtype=np.int64)
            d_new = distances(new) if new.size else np.empty(0)
            for j, dj in zip(new.tolist(), d_new.tolist(), strict=True):
                if len(results) < ef or dj < -results[0][0]:
                    heapq.heappush(candidates, (dj, j))
                    heapq.heappush(results, (-dj, j))
                    if len(results) > ef:
                        heapq.heappop(results)
            beam = np.array([j for _, j in sorted((-nd, j) for nd, j in results)], dtype=np.int64)
            steps.append(SearchStep(0, int(c), float(d_c), new, d_new, int(beam[0]), beam))
    ranked = sorted((d, j) for j, d in seen.items())[:k]
    ids = np.full(k, -1, np.int64)
    dist = np.full(k, np.inf)
    ids[: len(ranked)] = [j for _, j in ranked]
    dist[: len(ranked)] = [d for d, _ in ranked]
    # in beam mode this is the beam's best k: a node that left the beam (or never entered it) was worse than
    # ef >= k others
    return SearchTrace(q, mode, ef, steps, ids, dist, np.array(order, dtype=np.int64))
