"""Hard-negative mining (the specification's ``hard_negatives``, section 4.8) from a neighbour graph.

A hard negative of a node is a node that is close to it but is not one of its positives.  An HNSW or kNN index
already holds, for each node, its nearest neighbours; their neighbours (two hops) are close too, and the ones
that are not the node's own neighbours are exactly the hard-negative candidates, found without the ``N × N``
similarity matrix that exact mining needs.  :func:`mine_hard_negatives` ranks those candidates by

* ``"distance"``: similarity to the node (the most similar non-neighbours first);
* ``"degree"``: closeness of degree (``|log(1 + deg_c) - log(1 + deg_i)|``), ties by similarity;
* ``"mixed"``: ``mix · similarity + (1 - mix) · degree closeness`` (closeness scaled to ``[0, 1]`` per node),

with a guard against false negatives: a candidate with the node's own label (``labels``; ``-1`` is no label)
or a similarity above ``max_similarity`` is never returned.  :func:`exact_hard_negatives` is the all-pairs
reference (blocks of rows against every node), and :func:`sample_hard_negatives` the specification's
one-anchor form.  ``experiments/mining.ipynb`` measures both on 100,000 nodes (time and recall).

>>> import numpy as np
>>> from ruvattn import NeighbourList
>>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0]])
>>> path = NeighbourList(np.array([0, 1, 3, 5, 6]), np.array([1, 0, 2, 1, 3, 2]), 4)  # 0 - 1 - 2 - 3
>>> mine_hard_negatives(x, path, 1).ravel().tolist()  # two hops away, not a neighbour
[2, 3, 0, 1]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, InvalidConfig, OutOfBounds
from ruvattn.graph import NeighbourList, as_neighbours
from ruvattn.kernels import mining as KM
from ruvattn.kernels.attention import chunk_size

__all__ = ["STRATEGIES", "exact_hard_negatives", "mine_hard_negatives", "sample_hard_negatives"]

STRATEGIES = {"distance": KM.DISTANCE, "degree": KM.DEGREE, "mixed": KM.MIXED}
Ids = NDArray[np.int64]


def _unit_rows(op: str, embeddings: Any) -> NDArray[np.float32] | NDArray[np.float64]:
    x = V.as_array(embeddings, op, "embeddings", 2)
    V.check_finite(op, embeddings=x)
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return np.ascontiguousarray(np.divide(x, norms, out=np.zeros_like(x), where=norms > 0))


def _options(op: str, strategy: str, k: int, mix: float, max_similarity: float | None) -> tuple[int, float]:
    if strategy not in STRATEGIES:
        raise InvalidConfig(f"{op}: strategy must be one of {sorted(STRATEGIES)}; got {strategy!r}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidConfig(f"{op}: k must be a positive integer; got {k!r}.")
    if not 0.0 <= mix <= 1.0:
        raise InvalidConfig(f"{op}: mix must be in [0, 1]; got {mix!r}.")
    limit = math.inf if max_similarity is None else float(max_similarity)
    if math.isnan(limit):
        raise InvalidConfig(f"{op}: max_similarity must be a number or None; got NaN.")
    return STRATEGIES[strategy], limit


def _labels(op: str, labels: Any, n: int) -> tuple[Ids, bool]:
    if labels is None:
        return np.full(n, -1, np.int64), False
    lab = np.asarray(labels)
    if lab.shape != (n,) or (lab.size and lab.dtype.kind not in "iu"):
        raise DimensionMismatch(f"{op}: labels must be {n} integers (-1: no label); got {lab.shape} {lab.dtype}.")
    return np.ascontiguousarray(lab, np.int64), True


def mine_hard_negatives(
    embeddings: Any,
    graph: Any,
    k: int,
    *,
    strategy: str = "distance",
    labels: Any = None,
    max_similarity: float | None = None,
    mix: float = 0.5,
    expand: int = 1,
    return_similarity: bool = False,
) -> Ids | tuple[Ids, NDArray[np.float64]]:
    """``k`` hard negatives per node ``(N, k)`` (``-1`` where a node has fewer candidates) from the two-hop
    neighbourhood of ``graph`` (a :class:`~ruvattn.graph.NeighbourList`, padded ``(N, m)`` ids or any form
    :func:`~ruvattn.graph.as_neighbours` takes; row ``i`` = node ``i``'s neighbours, its positives).  Cosine
    similarity of the rows of ``embeddings (N, d)``.  Cost ``O(N m² d)`` for ``m`` neighbours per node, against
    exact mining's ``O(N² d)``.  ``expand`` rounds then add the neighbours of the ``k`` most similar candidates
    found so far (one greedy step of an index search each, ``O(k m d)`` more per node): nodes closer than the
    two-hop ones, which raises the recall of the exact hard negatives.  With ``return_similarity`` also the
    similarities ``(N, k)`` (NaN where ``-1``).
    """
    op = "mine_hard_negatives"
    code, limit = _options(op, strategy, k, mix, max_similarity)
    if isinstance(expand, bool) or not isinstance(expand, (int, np.integer)) or expand < 0:
        raise InvalidConfig(f"{op}: expand must be an integer >= 0; got {expand!r}.")
    x = _unit_rows(op, embeddings)
    n = x.shape[0]
    nl = graph if isinstance(graph, NeighbourList) else as_neighbours(op, graph, n, n)
    if nl.num_nodes != n or nl.num_keys != n:
        raise DimensionMismatch(f"{op}: the graph must be {n} × {n} (one row per embedding); got "
                                f"{nl.num_nodes} × {nl.num_keys}.")  # fmt: skip
    lab, use = _labels(op, labels, n)
    deg = nl.degrees()
    logdeg = np.log1p(deg.astype(np.float64))
    two_hop = np.zeros(n, np.int64)  # the longest two-hop list bounds the scratch: the sum of the neighbours' degrees
    np.add.at(two_hop, np.repeat(np.arange(n), deg), deg[nl.indices])
    widest = int(max(1, two_hop.max(initial=0) + int(expand) * int(k) * int(deg.max(initial=0))))
    out = np.empty((n, int(k)), np.int64)
    sims = np.empty((n, int(k)), np.float64)
    KM.two_hop_negatives(x, nl.indptr, nl.indices, lab, use, limit, code, float(mix), logdeg, int(k), int(expand),
                         out, sims, chunk_size(n), widest)  # fmt: skip
    return (out, sims) if return_similarity else out


def exact_hard_negatives(
    embeddings: Any,
    k: int,
    *,
    positives: Any = None,
    labels: Any = None,
    max_similarity: float | None = None,
    block: int = 1024,
) -> Ids:
    """The all-pairs reference for the ``"distance"`` strategy: each node's ``k`` most similar other nodes that
    are not among its ``positives`` (a neighbour graph, as for :func:`mine_hard_negatives`) and pass the same
    guard, ``(N, k)`` (``-1`` padded), by blocks of ``block`` rows against every node (``O(N² d)`` time,
    ``O(block · N)`` memory)."""
    op = "exact_hard_negatives"
    _, limit = _options(op, "distance", k, 0.5, max_similarity)
    x = _unit_rows(op, embeddings)
    n = x.shape[0]
    lab, use = _labels(op, labels, n)
    nl = None if positives is None else (positives if isinstance(positives, NeighbourList)
                                         else as_neighbours(op, positives, n, n))  # fmt: skip
    out = np.full((n, int(k)), -1, np.int64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        s = x[start:stop] @ x.T  # in the embeddings' dtype: float32 data, float32 products (the peer at its best)
        rows = np.arange(stop - start)
        s[rows, start + rows] = -np.inf
        if nl is not None:
            deg = nl.degrees()[start:stop]
            r = np.repeat(rows, deg)
            s[r, nl.indices[nl.indptr[start] : nl.indptr[stop]]] = -np.inf
        if use:
            same = (lab[start:stop, None] == lab[None, :]) & (lab[start:stop, None] >= 0)
            s[same] = -np.inf
        s[s > limit] = -np.inf
        kk = min(int(k), n)
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        ok = np.isfinite(np.take_along_axis(s, top, axis=1))
        out[start:stop, :kk] = np.where(ok, top, -1)
    return out


def sample_hard_negatives(
    anchor: Any,
    all_embeddings: Any,
    positive_indices: Any,
    k: int,
    strategy: str = "distance",
    *,
    degrees: Any = None,
    mix: float = 0.5,
) -> NDArray[np.floating]:
    """The specification's one-anchor form: the ``k`` rows of ``all_embeddings`` that are hardest negatives for
    ``anchor`` (not in ``positive_indices``), as an array ``(k', d)`` (``k' <= k``).  ``"degree"`` and ``"mixed"``
    need ``degrees (N,)`` of the nodes (the anchor's degree is taken as the median of its positives')."""
    op = "sample_hard_negatives"
    code, _ = _options(op, strategy, k, mix, None)
    emb = V.as_array(all_embeddings, op, "all_embeddings", 2)
    a = V.as_array(anchor, op, "anchor", 1, emb.dtype)
    V.check_width(op, "anchor", a[None], emb.shape[1])
    V.check_finite(op, anchor=a, all_embeddings=emb)
    n = emb.shape[0]
    pos = np.asarray(positive_indices, np.int64).ravel()
    if pos.size and (pos.min() < 0 or pos.max() >= n):
        raise OutOfBounds(f"{op}: positive_indices must be in [0, {n}).")
    unit = _unit_rows(op, emb).astype(np.float64)
    an = np.linalg.norm(a)
    sim = unit @ (a / an if an > 0 else a).astype(np.float64)
    sim[pos] = -np.inf
    score = sim
    if code != KM.DISTANCE:
        if degrees is None:
            raise InvalidConfig(f"{op}: strategy {strategy!r} needs degrees (N,) of the nodes.")
        deg = np.log1p(np.asarray(degrees, np.float64))
        if deg.shape != (n,):
            raise DimensionMismatch(f"{op}: degrees must be ({n},); got {deg.shape}.")
        mine = float(np.median(deg[pos])) if pos.size else float(np.median(deg))
        gap = np.abs(deg - mine)
        closeness = 1.0 - gap / (gap.max() if gap.max() > 0 else 1.0)
        score = np.where(np.isfinite(sim), closeness + 1e-9 * sim if code == KM.DEGREE else
                         mix * sim + (1 - mix) * closeness, -np.inf)  # fmt: skip
    order = np.argsort(-score, kind="stable")[: int(k)]
    order = order[np.isfinite(score[order])]
    return emb[order]
