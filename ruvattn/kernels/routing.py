"""Numba kernel for routing one query in a mixture of experts (the per-query hot path).

Its plain-numpy twin is :meth:`ruvattn.routing.Router.route` (the batch decision); ``tests/test_router.py``
holds :meth:`~ruvattn.routing.Router.choose`, which calls this kernel, equal to it.
"""

from __future__ import annotations

import math

import numpy as np

from ruvattn.kernels.attention import NONFINITE, OK, _serial

__all__ = ["route_one"]


@_serial
def route_one(w, b, x, inv_temperature, experts, gates):
    """Top-k experts of one query and their renormalised gate weights.

    ``z = (w @ x + b) * inv_temperature`` (``w (E, d)``, ``b (E,)`` float64); ``experts (k,)``
    receives the k largest entries of ``z``, best first, ties to the lower index (a stable
    descending sort); ``gates (k,)`` their softmax.  Returns :data:`NONFINITE` if a logit is
    NaN or infinite (the outputs are then undefined), else :data:`OK`.
    """
    num_e, d = w.shape
    k = experts.shape[0]
    z = np.empty(num_e, np.float64)
    for e in range(num_e):
        t = 0.0
        for i in range(d):
            t += w[e, i] * np.float64(x[i])
        z[e] = (t + b[e]) * inv_temperature
        if not (z[e] > -np.inf and z[e] < np.inf):
            return NONFINITE
    for s in range(k):  # selection: k passes over E experts (E is small)
        best = -1
        for e in range(num_e):
            taken = False
            for r in range(s):
                if experts[r] == e:
                    taken = True
            if not taken and (best < 0 or z[e] > z[best]):
                best = e
        experts[s] = best
    top = z[experts[0]]
    total = 0.0
    for s in range(k):
        g = math.exp(z[experts[s]] - top)
        gates[s] = g
        total += g
    for s in range(k):
        gates[s] /= total
    return OK
