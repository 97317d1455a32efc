"""Plain-numpy twin of :mod:`ruvattn.kernels.mining`: each node's two-hop candidates as Python sets, scored and
sorted one node at a time.

>>> import numpy as np
>>> x = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0]])
>>> two_hop_negatives(x, np.array([0, 1, 3, 5, 6]), np.array([1, 0, 2, 1, 3, 2]), None, np.inf, "distance", 0.5, 1, 0)
array([[2],
       [3],
       [0],
       [1]])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["two_hop_negatives"]


def two_hop_negatives(x: NDArray[np.floating], indptr: NDArray[np.int64], indices: NDArray[np.int64],
                      labels: NDArray[np.int64] | None, max_sim: float, strategy: str, mix: float,
                      k: int, expand: int = 1) -> NDArray[np.int64]:  # fmt: skip
    """``(N, k)`` ids (``-1`` padded) for unit rows ``x`` and a CSR graph (the kernel's definition)."""
    n = len(indptr) - 1
    deg = np.diff(indptr)
    logdeg = np.log1p(deg.astype(np.float64))
    out = np.full((n, k), -1, np.int64)
    for i in range(n):
        seen = set(indices[indptr[i] : indptr[i + 1]].tolist()) | {i}
        cands: list[int] = []

        def consider(c: int, i: int = i, seen: set[int] = seen, cands: list[int] = cands) -> None:
            if c in seen:
                return
            seen.add(c)
            if labels is not None and labels[i] >= 0 and labels[c] == labels[i]:
                return
            if float(x[i] @ x[c]) > max_sim:
                return
            cands.append(int(c))

        for j in indices[indptr[i] : indptr[i + 1]]:
            for c in indices[indptr[j] : indptr[j + 1]]:
                consider(int(c))
        for _ in range(expand):
            sims_now = x[np.array(cands, np.int64)] @ x[i] if cands else np.empty(0)
            for t in np.argsort(-sims_now, kind="stable")[:k]:
                c0 = cands[t]
                for c in indices[indptr[c0] : indptr[c0 + 1]]:
                    consider(int(c))
        if not cands:
            continue
        c_arr = np.array(cands)
        sims = x[c_arr] @ x[i]
        gap = np.abs(logdeg[c_arr] - logdeg[i])
        closeness = 1.0 - gap / (gap.max() if gap.max() > 0 else 1.0)
        score = {"distance": sims, "degree": closeness + 1e-9 * sims, "mixed": mix * sims + (1 - mix) * closeness}
        order = np.argsort(-score[strategy], kind="stable")[:k]
        out[i, : len(order)] = c_arr[order]
    return out
