"""Numba kernels of the HNSW navigator (:mod:`ruvattn.graph.navigator`): per-edge sketches and the search
that admits a neighbour into the beam only when a cheap, calibrated test says it may belong there.

For an expanded node ``c`` (its squared distance ``D(q, c)`` known) and a neighbour ``n`` with ``b = n - c``:
``D(q, n) = D(q, c) + |b|^2 - 2 <q - c, b>``.  An edge stores the order of ``b``'s coordinates by magnitude
(the first ``H``), ``|b|^2`` and the energy ``b`` has left outside its top ``r_j`` coordinates at each
checkpoint ``r_j``.  The cross term is summed over ``b``'s largest coordinates first; at checkpoint ``j`` the
estimate ``D(q, c) + |b|^2 - 2 cross_j`` is compared with the beam's threshold: the neighbour is rejected
(never evaluated in full) when it exceeds the threshold by more than ``Z_j sqrt(D(q, c) tail_j)``.  The
survivors get an exact distance.  Costs are counted in distance computations: a full one is 1, a rejection at
checkpoint ``r_j`` is ``r_j / d``.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ruvattn.kernels.attention import _inline, _parallel, _serial

_EPS = 1e-12


@_parallel
def edge_tables(x, indices, sources, h, checkpoints, order, tails, bsq):
    """For every edge ``e`` (``sources[e] -> indices[e]``): ``order[e]`` the ``h`` coordinates of ``b`` by
    decreasing magnitude, ``bsq[e] = |b|^2`` and ``tails[e, j] = |b|^2 - sum of b_p^2 over the first
    checkpoints[j] of them``."""
    d = x.shape[1]
    nj = checkpoints.shape[0]
    for e in prange(indices.shape[0]):
        c = sources[e]
        n = indices[e]
        b = np.empty(d, np.float64)
        tot = 0.0
        for i in range(d):
            b[i] = float(x[n, i]) - float(x[c, i])
            tot += b[i] * b[i]
        o = np.argsort(-np.abs(b))
        acc = 0.0
        j = 0
        for i in range(h):
            p = o[i]
            order[e, i] = p
            acc += b[p] * b[p]
            if j < nj and i + 1 == checkpoints[j]:
                tails[e, j] = max(tot - acc, 0.0)
                j += 1
        bsq[e] = tot


@_inline
def _push_min(dist, ids, size, d, i):
    k = size
    dist[k] = d
    ids[k] = i
    while k > 0:
        p = (k - 1) // 2
        if dist[p] <= dist[k]:
            break
        dist[p], dist[k] = dist[k], dist[p]
        ids[p], ids[k] = ids[k], ids[p]
        k = p
    return size + 1


@_inline
def _pop_min(dist, ids, size):
    size -= 1
    dist[0] = dist[size]
    ids[0] = ids[size]
    k = 0
    while True:
        a = 2 * k + 1
        if a >= size:
            break
        if a + 1 < size and dist[a + 1] < dist[a]:
            a += 1
        if dist[k] <= dist[a]:
            break
        dist[a], dist[k] = dist[k], dist[a]
        ids[a], ids[k] = ids[k], ids[a]
        k = a
    return size


@_inline
def _full(q, x, n):
    acc = 0.0
    for i in range(x.shape[1]):
        t = q[i] - float(x[n, i])
        acc += t * t
    return acc


@_inline
def _admit(q, dq, x, n, c, e, thr, dqc, order, tails, bsq, checkpoints, z, use, margins, row, collect):
    """``(distance or inf, dims read)`` of neighbour ``n`` of ``c`` through edge ``e``; with ``collect`` the
    normalised margins of every checkpoint go to ``margins[row]`` (the distance is then always exact)."""
    nj = checkpoints.shape[0]
    if (use or collect) and thr < np.inf:
        cross = 0.0
        j = 0
        for i in range(checkpoints[nj - 1]):
            p = order[e, i]
            cross += dq[p] * (float(x[n, p]) - float(x[c, p]))
            if i + 1 == checkpoints[j]:
                est = dqc + bsq[e] - 2.0 * cross
                m = (est - thr) / (np.sqrt(dqc * tails[e, j]) + _EPS)
                if collect:
                    margins[row, j] = m
                elif m > z[j]:
                    return np.inf, float(i + 1)
                j += 1
    return _full(q, x, n), float(x.shape[1])


@_inline
def _note(path, stats, kind, node, layer):
    """Record row ``(kind, node, layer)`` of the route (kind 0: ``node`` expanded on ``layer``; 1: ``node``
    evaluated in full) while ``path`` has room; ``stats[5]`` counts the rows."""
    row = int(stats[5])
    if row < path.shape[0]:
        path[row, 0] = kind
        path[row, 1] = node
        path[row, 2] = layer
        stats[5] += 1


@_serial
def navigate(q, x, indptr, indices, entry, max_level, ef, order, tails, bsq, checkpoints, z0, zu, use,
             collect, margins, layer_of, visited, stamp, res_d, res_i, cand_d, cand_i, dq, stats, path):  # fmt: skip
    """One query: greedy descent on the upper layers (threshold: the current node's distance), then an
    ``ef``-beam on layer 0 (threshold: the ef-th best once the beam is full), admitting neighbours through
    :func:`_admit` when ``use``.  ``indptr (L, N + 1)`` indexes ``indices`` for every layer.  Returns the beam
    size; ``res_d``/``res_i`` hold it as a min-heap of *negated* distances (so its top is the worst).
    ``stats`` += (full distances, partial dims, expansions, tests); with ``collect`` every neighbour that would
    be admitted adds a row of margins (``layer_of`` its layer) and the count of rows is ``stats[4]``; the route
    goes to ``path`` (:func:`_note`; give a ``(0, 3)`` array not to record it)."""
    d = x.shape[1]
    nj = checkpoints.shape[0]
    c = entry
    dc = _full(q, x, c)
    stats[0] += 1
    _note(path, stats, 1, c, max_level)
    for lev in range(max_level, 0, -1):
        while True:
            prev = c
            best, bestd = c, dc
            for i in range(d):
                dq[i] = q[i] - float(x[c, i])
            stats[2] += 1
            _note(path, stats, 0, c, lev)
            for e in range(indptr[lev, c], indptr[lev, c + 1]):
                n = indices[e]
                row = int(stats[4])
                take = collect and row < margins.shape[0]
                dn, used = _admit(q, dq, x, n, c, e, bestd, dc, order, tails, bsq, checkpoints, zu, use, margins,
                                  row, take)  # fmt: skip
                if used < d:
                    stats[1] += used
                    stats[3] += 1
                else:
                    stats[0] += 1
                    _note(path, stats, 1, n, lev)
                    if use:
                        stats[3] += nj
                if take and dn < bestd:
                    layer_of[row] = lev
                    stats[4] += 1
                if dn < bestd:
                    best, bestd = n, dn
            c, dc = best, bestd
            if c == prev:
                break
    nr = _push_min(res_d, res_i, 0, -dc, c)
    nc = _push_min(cand_d, cand_i, 0, dc, c)
    visited[c] = stamp
    while nc > 0:
        dcur = cand_d[0]
        cur = cand_i[0]
        nc = _pop_min(cand_d, cand_i, nc)
        if nr >= ef and dcur > -res_d[0]:
            break
        for i in range(d):
            dq[i] = q[i] - float(x[cur, i])
        stats[2] += 1
        _note(path, stats, 0, cur, 0)
        for e in range(indptr[0, cur], indptr[0, cur + 1]):
            n = indices[e]
            if visited[n] == stamp:
                continue
            visited[n] = stamp
            thr = -res_d[0] if nr >= ef else np.inf
            row = int(stats[4])
            take = collect and row < margins.shape[0]
            dn, used = _admit(q, dq, x, n, cur, e, thr, dcur, order, tails, bsq, checkpoints, z0, use, margins,
                              row, take)  # fmt: skip
            if used < d:
                stats[1] += used
                stats[3] += 1
            else:
                stats[0] += 1
                _note(path, stats, 1, n, 0)
                if use and thr < np.inf:
                    stats[3] += nj
            if take and thr < np.inf and dn < thr:
                layer_of[row] = 0
                stats[4] += 1
            if dn < np.inf and (nr < ef or dn < -res_d[0]):
                nc = _push_min(cand_d, cand_i, nc, dn, n)
                nr = _push_min(res_d, res_i, nr, -dn, n)
                if nr > ef:
                    nr = _pop_min(res_d, res_i, nr)
    return nr
