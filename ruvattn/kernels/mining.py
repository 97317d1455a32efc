"""Hard-negative mining over a neighbour graph (:mod:`ruvattn.mining`): candidates are the two-hop neighbours of
a node that are not its one-hop neighbours (the positives), scored by similarity, degree closeness or both.

Every kernel has a numpy twin in :mod:`ruvattn.reference.mining`; ``tests/test_mining.py`` holds them to each other.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ruvattn.kernels.attention import _inline, _parallel, _serial

__all__ = ["DEGREE", "DISTANCE", "MIXED", "two_hop_negatives"]

DISTANCE = 0
DEGREE = 1
MIXED = 2


@_inline
def _consider(x, i, c, seen, labels, use_labels, max_sim, cand, sims, count):
    """Add node ``c`` as a candidate of ``i`` unless seen or guarded; returns the new count."""
    if seen[c] == i:
        return count
    seen[c] = i
    if use_labels and labels[i] >= 0 and labels[c] == labels[i]:
        return count  # same class: a false negative
    s = 0.0
    for t in range(x.shape[1]):
        s += np.float64(x[i, t]) * np.float64(x[c, t])
    if s > max_sim:
        return count  # too similar to be a negative
    cand[count] = c
    sims[count] = s
    return count + 1


@_serial
def two_hop_chunk(x, indptr, indices, labels, use_labels, max_sim, strategy, mix, logdeg, k, expand, out, out_sim,
                  first, last, widest):  # fmt: skip
    """Nodes ``first..last-1`` of :func:`two_hop_negatives` with one ``seen`` marker array for the chunk."""
    n = indptr.shape[0] - 1
    seen = np.full(n, -1, np.int64)
    cand = np.empty(widest, np.int64)
    sims = np.empty(widest, np.float64)
    score = np.empty(widest, np.float64)
    for i in range(first, last):
        seen[i] = i
        for p in range(indptr[i], indptr[i + 1]):
            seen[indices[p]] = i
        count = 0
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            for r in range(indptr[j], indptr[j + 1]):
                count = _consider(x, i, indices[r], seen, labels, use_labels, max_sim, cand, sims, count)
        for _ in range(expand):  # one more hop from the k most similar candidates so far
            best = np.argsort(-sims[:count], kind="mergesort")[:k]
            for t in range(best.shape[0]):
                c = cand[best[t]]
                for r in range(indptr[c], indptr[c + 1]):
                    count = _consider(x, i, indices[r], seen, labels, use_labels, max_sim, cand, sims, count)
        if count == 0:
            out[i, :] = -1
            out_sim[i, :] = np.nan
            continue
        if strategy == 0:
            for t in range(count):
                score[t] = sims[t]
        else:
            spread = 0.0
            for t in range(count):
                spread = max(spread, abs(logdeg[cand[t]] - logdeg[i]))
            spread = spread if spread > 0 else 1.0
            for t in range(count):
                closeness = 1.0 - abs(logdeg[cand[t]] - logdeg[i]) / spread  # 1: the same degree
                score[t] = closeness + 1e-9 * sims[t] if strategy == 1 else mix * sims[t] + (1.0 - mix) * closeness
        order = np.argsort(-score[:count], kind="mergesort")
        take = min(k, count)
        for t in range(take):
            out[i, t] = cand[order[t]]
            out_sim[i, t] = sims[order[t]]
        for t in range(take, k):
            out[i, t] = -1
            out_sim[i, t] = np.nan


@_parallel
def two_hop_negatives(x, indptr, indices, labels, use_labels, max_sim, strategy, mix, logdeg, k, expand, out, out_sim,
                      size, widest):  # fmt: skip
    """For every node ``i``: its ``k`` best two-hop, non-neighbour candidates by ``strategy`` into ``out (N, k)``
    (``-1`` padded) and their similarities ``x_i · x_c`` into ``out_sim``; parallel over chunks of ``size``
    nodes.  ``expand`` rounds each add the neighbours of the ``k`` most similar candidates so far (a greedy step
    of an index search: closer nodes than two hops reach).  ``x`` rows should be unit length (cosine
    similarity).  ``widest`` bounds a node's candidates."""
    n = indptr.shape[0] - 1
    for c in prange((n + size - 1) // size):
        first = c * size
        two_hop_chunk(x, indptr, indices, labels, use_labels, max_sim, strategy, mix, logdeg, k, expand, out, out_sim,
                      first, min(first + size, n), widest)  # fmt: skip
