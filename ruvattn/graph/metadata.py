"""Graph metadata for one query's candidate set: the specification's ``GraphMetadata``.

Every field is optional and, when given, has one entry (or row) per key, in the keys' order:

==========================  ==================  =====================================================
``distances``               ``(n,)`` float      graph distance from the query's node (hop counts,
                                                shortest-path lengths, or search distances)
``hnsw_layers``             ``(n,)`` int >= 0   the HNSW layer each key was reached on (or its top level)
``edge_weights``            ``(n,)`` float >= 0 weight of the edge query -> key
``structural_features``     ``(n, f)`` float    per-key features: degree, PageRank, positional encodings
==========================  ==================  =====================================================

A mechanism that uses metadata (:meth:`ruvattn.mechanisms.Attention.forward_with_metadata`) reads the
fields it needs and raises :class:`~ruvattn.errors.InvalidConfig` naming a missing one.

>>> import numpy as np
>>> md = GraphMetadata(distances=[1.0, 2.0, 3.0], hnsw_layers=[0, 1, 2])
>>> md.size, md.require("graph_rope", "distances", 3).tolist()
(3, [1.0, 2.0, 3.0])
>>> md.require("graph_rope", "edge_weights", 3)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ruvattn.errors.InvalidConfig: graph_rope.forward_with_metadata: needs GraphMetadata.edge_weights, which is not ...
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, InvalidConfig, NumericalInstability, OutOfBounds

__all__ = ["GraphMetadata"]

_FIELDS = ("distances", "hnsw_layers", "edge_weights", "structural_features")


@dataclass(frozen=True)
class GraphMetadata:
    """Per-key graph information for one query (see the module docstring); arrays are validated and
    converted once: ``distances``/``edge_weights``/``structural_features`` float64, ``hnsw_layers`` int64."""

    distances: Any = None
    hnsw_layers: Any = None
    edge_weights: Any = None
    structural_features: Any = None

    def __post_init__(self) -> None:
        op = "GraphMetadata"
        sizes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            arr = _converted(op, f.name, value)
            object.__setattr__(self, f.name, arr)
            sizes[f.name] = arr.shape[0]
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{k} has {v}" for k, v in sizes.items())
            raise DimensionMismatch(f"{op}: every field needs one entry per key; {listed}.")

    @property
    def size(self) -> int | None:
        """The number of keys the given fields describe (``None`` when no field is given)."""
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None:
                return int(value.shape[0])
        return None

    def require(self, owner: str, name: str, n: int) -> NDArray[Any]:
        """Field ``name`` for ``n`` keys, or :class:`InvalidConfig` / :class:`DimensionMismatch` saying what
        is missing or mismatched (``owner`` is the mechanism's kind)."""
        value = getattr(self, name)
        if value is None:
            given = [f for f in _FIELDS if getattr(self, f) is not None]
            have = f" (given: {', '.join(given)})" if given else ""
            raise InvalidConfig(f"{owner}.forward_with_metadata: needs GraphMetadata.{name}, which is not given{have}.")
        if value.shape[0] != n:
            raise DimensionMismatch(
                f"{owner}.forward_with_metadata: GraphMetadata.{name} has {value.shape[0]} entries for {n} keys."
            )
        return value


def _converted(op: str, name: str, value: Any) -> NDArray[Any]:
    try:
        arr = np.asarray(value)
    except ValueError:
        raise DimensionMismatch(f"{op}: {name} must be a rectangular array; got ragged rows.") from None
    ndim = 2 if name == "structural_features" else 1
    if arr.ndim != ndim:
        want = "(n, f)" if ndim == 2 else "(n,)"
        raise DimensionMismatch(f"{op}: {name} has shape {arr.shape}, expected {want}.")
    if arr.size and arr.dtype.kind not in ("iu" if name == "hnsw_layers" else "fiu"):
        what = "integers" if name == "hnsw_layers" else "real numbers"
        raise DimensionMismatch(f"{op}: {name} must hold {what}; got dtype {arr.dtype}.")
    if name == "hnsw_layers":
        arr = arr.astype(np.int64)
        if arr.size and arr.min() < 0:
            raise OutOfBounds(f"{op}: hnsw_layers must be >= 0; got {arr.min()}.")
        return arr
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise NumericalInstability(f"{op}: {name} holds NaN or infinite entries.")
    if name == "edge_weights" and arr.size and arr.min() < 0:
        raise OutOfBounds(f"{op}: edge_weights must be >= 0; got {arr.min()}.")
    return arr
