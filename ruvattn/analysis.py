"""Statistics of attention weights: entropy, top-k mass, sparsity, head diversity, routing balance.

Every function takes weight rows that each sum to 1 (one row per query; a leading head axis
where it says so) and checks them: NaN/inf raise :class:`~ruvattn.errors.NumericalInstability`,
negative weights or rows that do not sum to 1 raise :class:`~ruvattn.errors.InvalidConfig`.
Entropies are in nats; ``0 · log 0`` counts as 0. The widgets and ``ruvattn analyze`` both use
these functions, so a number on a figure and in the table is the same number.

>>> import numpy as np
>>> w = np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
>>> entropy(w).round(4).tolist()  # log 4 and 0
[1.3863, 0.0]
>>> top_k_mass(w, 2).tolist()
[0.5, 1.0]
>>> sparsity(w, mass=0.9).tolist()  # share of keys not needed for 90% of the weight
[0.0, 0.75]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import entr, rel_entr

from ruvattn import _validation as V
from ruvattn.errors import EmptyInput, InvalidConfig

F64 = NDArray[np.float64]

__all__ = [
    "effective_support",
    "entropy",
    "head_diversity",
    "normalized_entropy",
    "routing_balance",
    "sparsity",
    "summarize",
    "top_k_mass",
]


def _rows(op: str, weights: Any, min_ndim: int = 1) -> F64:
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim < min_ndim or w.shape[-1] == 0:
        raise InvalidConfig(f"{op}: weights must have at least {min_ndim} axis and keys, got shape {w.shape}.")
    V.check_finite(op, weights=w)
    if (w < 0).any():
        raise InvalidConfig(f"{op}: weights must be non-negative; the smallest is {w.min():.3g}.")
    sums = w.sum(axis=-1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        bad = np.abs(sums - 1.0).max()
        raise InvalidConfig(f"{op}: every weight row must sum to 1; one is off by {bad:.3g}.")
    return w


def entropy(weights: Any) -> F64:
    """Shannon entropy (nats) of each row; ``log n`` for uniform weights over ``n`` keys."""
    return entr(_rows("analysis.entropy", weights)).sum(axis=-1)


def normalized_entropy(weights: Any) -> F64:
    """Entropy divided by its uniform baseline ``log n`` (1 = uniform; 0 = one key). 1 key gives 0."""
    w = _rows("analysis.normalized_entropy", weights)
    n = w.shape[-1]
    return entropy(w) / np.log(n) if n > 1 else np.zeros(w.shape[:-1])


def effective_support(weights: Any) -> F64:
    """``exp(entropy)``: the number of keys a uniform distribution with this entropy would use."""
    return np.exp(entropy(weights))


def top_k_mass(weights: Any, k: int) -> F64:
    """Total weight on each row's ``k`` largest entries (``k`` larger than the row counts all of it)."""
    k = V.positive_int("analysis.top_k_mass", "k", k)
    w = _rows("analysis.top_k_mass", weights)
    k = min(k, w.shape[-1])
    return np.sort(w, axis=-1)[..., -k:].sum(axis=-1)


def sparsity(weights: Any, mass: float = 0.9) -> F64:
    """Share of keys *not* needed to reach ``mass`` of each row's weight (0 = dense, → 1 = one key)."""
    if not 0.0 < float(mass) <= 1.0:
        raise InvalidConfig(f"analysis.sparsity: mass must be in (0, 1], got {mass!r}.")
    w = _rows("analysis.sparsity", weights)
    cum = np.cumsum(np.sort(w, axis=-1)[..., ::-1], axis=-1)
    # ``mass`` of each row's own total: float32 rows sum to 1 only to ~1e-7, and mass=1 must still
    # count exactly the non-zero weights
    target = float(mass) * cum[..., -1:] * (1.0 - 1e-12)
    needed = (cum < target).sum(axis=-1) + 1
    return 1.0 - np.minimum(needed, w.shape[-1]) / w.shape[-1]


def head_diversity(head_weights: Any) -> float:
    """Mean pairwise Jensen–Shannon divergence (nats, at most ``log 2``) between heads.

    ``head_weights`` is ``(heads, n)`` for one query or ``(heads, queries, n)``; the divergence is
    averaged over head pairs and queries. Identical heads give 0; heads on disjoint keys ``log 2``.
    """
    w = _rows("analysis.head_diversity", head_weights, min_ndim=2)
    if w.ndim == 2:
        w = w[:, None, :]
    if w[0].size == 0:
        raise EmptyInput(f"analysis.head_diversity: no queries to compare the heads on (shape {w.shape}).")
    h = w.shape[0]
    if h < 2:
        return 0.0
    total, pairs = 0.0, 0
    for a in range(h):
        for b in range(a + 1, h):
            mid = 0.5 * (w[a] + w[b])
            js = 0.5 * (rel_entr(w[a], mid).sum(axis=-1) + rel_entr(w[b], mid).sum(axis=-1))
            total += float(js.mean())
            pairs += 1
    return total / pairs


def routing_balance(record: Any) -> dict[str, Any]:
    """Balance of a :class:`~ruvattn.routing.RoutingRecord` as plain numbers (JSON-ready).

    ``max_load_ratio`` is the busiest expert's load over the ideal ``m·k/E`` (1 = perfectly even);
    ``load_cv`` is the coefficient of variation of the loads (0 = even).
    """
    m, k = record.experts.shape
    load = np.asarray(record.load, dtype=np.float64)
    ideal = m * k / max(load.size, 1)
    mean = float(load.mean()) if load.size else 0.0
    return {
        "experts": int(load.size),
        "queries": int(m),
        "top_k": int(k),
        "ideal_load": float(ideal),
        "max_load_ratio": float(load.max() / ideal) if ideal > 0 else 0.0,
        "load_cv": float(load.std() / mean) if mean > 0 else 0.0,
        "router_entropy": float(record.mean_entropy),
        "dead_experts": [int(e) for e in np.flatnonzero(record.dead_experts)],
        "dropped": int(record.num_dropped),
        "overflowed": int(record.num_overflowed),
        "load_balancing_loss": float(record.load_balancing_loss),
        "z_loss": float(record.z_loss),
    }


def summarize(weights: Any, *, k: int = 8, mass: float = 0.9) -> dict[str, float]:
    """Means over the rows of :func:`entropy`, :func:`normalized_entropy`, :func:`top_k_mass`,
    :func:`sparsity` and :func:`effective_support`, and the uniform baseline ``log n``."""
    w = _rows("analysis.summarize", weights)
    if w.size == 0:
        raise EmptyInput(f"analysis.summarize: no weight rows to summarise (shape {w.shape}).")
    return {
        "keys": int(w.shape[-1]),
        "entropy": float(entropy(w).mean()),
        "uniform_entropy": float(np.log(w.shape[-1])),
        "normalized_entropy": float(normalized_entropy(w).mean()),
        "effective_support": float(effective_support(w).mean()),
        f"top{k}_mass": float(top_k_mass(w, k).mean()),
        f"sparsity@{mass:g}": float(sparsity(w, mass).mean()),
    }
