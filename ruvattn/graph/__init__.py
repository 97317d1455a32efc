"""Neighbour lists: CSR (``indptr``, ``indices``) and padded ``(N, k)`` ids with -1.

An HNSW index stores, per node, a short list of neighbour ids; attention over
a graph reads them as a :class:`NeighbourList`.

>>> import numpy as np
>>> nl = NeighbourList.from_padded(np.array([[1, 2, -1], [-1, -1, -1], [0, -1, -1]]), num_keys=3)
>>> nl.indptr.tolist(), nl.indices.tolist(), nl.degrees().tolist()
([0, 2, 2, 3], [1, 2, 0], [2, 0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, OutOfBounds
from ruvattn.graph.metadata import GraphMetadata

__all__ = ["GraphMetadata", "NeighbourList", "as_neighbours"]


def _integer_ids(op: str, name: str, ids: Any) -> NDArray[np.int64]:
    """``ids`` as a contiguous int64 array; anything but integers (floats, bools, objects) is refused,
    never cast: a float id such as ``1.9`` would otherwise silently become ``1``."""
    if type(ids) is np.ndarray and ids.dtype == np.int64 and ids.flags.carray:
        return ids
    try:
        arr = np.asarray(ids)
    except ValueError:
        raise DimensionMismatch(f"{op}: {name} must be a flat array of integer ids; got ragged rows.") from None
    if arr.size and arr.dtype.kind not in "iu":
        raise DimensionMismatch(
            f"{op}: {name} must hold integers; got dtype {arr.dtype}. Ids are never rounded or truncated: "
            "convert them yourself (e.g. ids.astype(np.int64)) if the values are whole numbers."
        )
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise OutOfBounds(f"{op}: {name} holds an id too large for int64; got {arr.max()}.")
    return np.require(arr, np.int64, "CAW")  # a read-only or strided array would compile a new kernel specialisation


@dataclass(frozen=True)
class NeighbourList:
    """Node ``i``'s neighbours are ``indices[indptr[i]:indptr[i+1]]`` (rows of a key table).

    Shapes: ``indptr (N + 1,)``, ``indices (nnz,)``, both int64.
    """

    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]
    num_keys: int

    def __post_init__(self) -> None:
        op = "NeighbourList"
        indptr = _integer_ids(op, "indptr", self.indptr)
        indices = _integer_ids(op, "indices", self.indices)
        if isinstance(self.num_keys, bool) or not isinstance(self.num_keys, (int, np.integer)) or self.num_keys < 0:
            raise DimensionMismatch(f"{op}: num_keys must be a non-negative integer; got {self.num_keys!r}.")
        if indptr.ndim != 1 or indptr.size < 1:
            raise DimensionMismatch(f"{op}: indptr has shape {indptr.shape}, expected (N + 1,) with N >= 0.")
        if indices.ndim != 1:
            raise DimensionMismatch(f"{op}: indices has shape {indices.shape}, expected (nnz,).")
        if indptr[0] != 0 or indptr[-1] != indices.size or (np.diff(indptr) < 0).any():
            raise DimensionMismatch(
                f"{op}: indptr must start at 0, never decrease and end at len(indices)={indices.size}; "
                f"got indptr[0]={indptr[0]}, indptr[-1]={indptr[-1]}."
            )
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_keys):
            bad = indices[(indices < 0) | (indices >= self.num_keys)][0]
            raise OutOfBounds(f"{op}: neighbour ids must be in [0, {self.num_keys}); got {bad}.")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)

    @property
    def num_nodes(self) -> int:
        return self.indptr.size - 1

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def degrees(self) -> NDArray[np.int64]:
        return np.diff(self.indptr)

    def neighbours(self, node: int) -> NDArray[np.int64]:
        return self.indices[self.indptr[node] : self.indptr[node + 1]]

    @classmethod
    def from_padded(cls, ids: Any, num_keys: int) -> NeighbourList:
        """From an ``(N, k)`` integer array where ``-1`` marks an empty slot."""
        try:
            arr = np.asarray(ids)
        except ValueError:
            raise DimensionMismatch(
                "NeighbourList.from_padded: ids must be rectangular (N, k) with -1 for empty slots; got ragged "
                "rows. Use NeighbourList.from_lists for one list per node."
            ) from None
        if arr.ndim != 2 or (arr.size and arr.dtype.kind not in "iu"):
            raise DimensionMismatch(
                f"NeighbourList.from_padded: ids has shape {arr.shape} and dtype {arr.dtype}, "
                "expected an (N, k) integer array with -1 for empty slots."
            )
        if arr.size and (arr < -1).any():
            raise OutOfBounds(
                f"NeighbourList.from_padded: ids must be -1 (empty) or in [0, {num_keys}); got {int(arr[arr < -1][0])}."
            )
        n, k = arr.shape
        if not arr.size or arr.min() >= 0:  # every slot used: CSR is a reshape (no copy for int64 input)
            return cls(np.arange(n + 1, dtype=np.int64) * k, arr.reshape(-1), num_keys)
        live = arr >= 0
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(live.sum(axis=1), out=indptr[1:])
        return cls(indptr, arr[live], num_keys)

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]], num_keys: int) -> NeighbourList:
        """From one sequence of ids per node."""
        try:
            pieces = [np.asarray(x) for x in lists]
        except ValueError:
            raise DimensionMismatch(
                "NeighbourList.from_lists: give one flat sequence of integer ids per node."
            ) from None
        for p in pieces:
            if p.ndim != 1 or (p.size and p.dtype.kind not in "iu"):
                raise DimensionMismatch(
                    f"NeighbourList.from_lists: each node's ids must be a flat sequence of integers; "
                    f"got shape {p.shape}, dtype {p.dtype}."
                )
        lengths = np.array([p.size for p in pieces], dtype=np.int64)
        flat = np.concatenate([p.astype(np.int64) for p in pieces]) if pieces else np.empty(0, np.int64)
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return cls(indptr, flat, num_keys)

    def to_padded(self, k: int | None = None) -> NDArray[np.int64]:
        """``(N, k)`` ids with -1 in empty slots (``k`` defaults to the largest degree)."""
        deg = self.degrees()
        k = int(deg.max(initial=0)) if k is None else k
        if deg.size and deg.max() > k:
            raise DimensionMismatch(f"NeighbourList.to_padded: k={k} is smaller than the largest degree {deg.max()}.")
        out = np.full((self.num_nodes, k), -1, dtype=np.int64)
        cols = np.arange(self.nnz) - np.repeat(self.indptr[:-1], deg)
        out[np.repeat(np.arange(self.num_nodes), deg), cols] = self.indices
        return out


def _ragged(rows: list[Any]) -> bool:
    lengths = {len(r) if hasattr(r, "__len__") else -1 for r in rows}
    return len(lengths) > 1


def as_neighbours(op: str, neighbours: Any, num_nodes: int, num_keys: int) -> NeighbourList:
    """Accept a :class:`NeighbourList`, ``(indptr, indices)``, a scipy CSR matrix, padded ids
    ``(N, k)`` with -1, or a list with one list of ids per node."""
    if isinstance(neighbours, NeighbourList):
        nl = neighbours
        if nl.num_keys > num_keys:
            nl = NeighbourList(nl.indptr, nl.indices, num_keys)
    elif hasattr(neighbours, "indptr") and hasattr(neighbours, "indices"):  # scipy.sparse CSR
        nl = NeighbourList(neighbours.indptr, neighbours.indices, num_keys)
    elif isinstance(neighbours, tuple) and len(neighbours) == 2:
        nl = NeighbourList(neighbours[0], neighbours[1], num_keys)
    elif isinstance(neighbours, list) and _ragged(neighbours):
        nl = NeighbourList.from_lists(neighbours, num_keys)  # one list of ids per node
    else:
        nl = NeighbourList.from_padded(neighbours, num_keys)
    if nl.num_nodes != num_nodes:
        raise DimensionMismatch(
            f"{op}: neighbours describe {nl.num_nodes} nodes but queries has {num_nodes} rows; "
            "give one query row per node."
        )
    return nl
