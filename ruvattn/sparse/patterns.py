r"""Sparsity patterns: boolean ``(n_queries, n_keys)`` matrices in scipy.sparse CSR.

Row ``i`` lists the keys query ``i`` may attend to.  Patterns are built by the
class methods below and combined with ``|`` (union) and ``&`` (intersection);
the result is canonical CSR (sorted column ids, no duplicates), so it can be
handed to any mechanism's ``forward_neighbours`` as a neighbour list, or
expanded to a dense keep-mask with :meth:`SparsityPattern.attention_mask`.

Positions: for sequence-style patterns query ``i`` sits at position ``i`` and
key ``j`` at position ``j`` (the row/column index).

* :meth:`~SparsityPattern.sliding_window` -- keys ``j`` with
  ``i - (w-1)//2 <= j <= i + w//2`` (``w`` keys per row, clipped at the ends; Longformer's local
  attention);
* :meth:`~SparsityPattern.dilated_window` -- the same offsets times a dilation;
* :meth:`~SparsityPattern.blocks` -- keys in the same block of ``b`` positions;
* :meth:`~SparsityPattern.random` -- ``k`` distinct keys per row from a seeded generator (BigBird);
* :meth:`~SparsityPattern.global_nodes` -- every query attends to the global keys and (with
  ``symmetric``) the global queries attend to every key;
* :meth:`~SparsityPattern.hnsw_layers` -- the global nodes are those present in an HNSW index's
  upper layers;
* :meth:`~SparsityPattern.from_neighbours` -- any neighbour list (CSR, padded ids, ragged lists).

>>> p = SparsityPattern.sliding_window(6, 3) | SparsityPattern.global_nodes(6, [0])
>>> p.count_nonzero(), p.row(3).tolist()
(24, [0, 2, 3, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ruvattn import _validation as V
from ruvattn.errors import DimensionMismatch, InvalidConfig, OutOfBounds
from ruvattn.graph import NeighbourList, as_neighbours

__all__ = ["SparsityPattern"]

Ids = NDArray[np.int64]


def _ids(owner: str, ids: Any, size: int, name: str = "ids") -> Ids:
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise DimensionMismatch(f"{owner}: {name} must be a 1-D array of integer ids; got {arr.dtype} {arr.shape}.")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= size):
        bad = arr[(arr < 0) | (arr >= size)][0]
        raise OutOfBounds(f"{owner}: {name} must be in [0, {size}); got {bad}.")
    return np.unique(arr)


class SparsityPattern:
    """A boolean ``(n_queries, n_keys)`` pattern held as canonical scipy CSR (see the module docstring)."""

    __slots__ = ("_csr",)

    def __init__(self, matrix: Any) -> None:
        """Wrap any scipy sparse matrix or dense 2-D array; non-zeros become ``True``."""
        if sp.issparse(matrix):
            m = sp.csr_array(matrix)
        else:
            arr = np.asarray(matrix)
            if arr.ndim != 2:
                raise DimensionMismatch(f"SparsityPattern: expected a 2-D matrix; got shape {arr.shape}.")
            m = sp.csr_array(arr)
        m.sum_duplicates()  # also sorts the column ids
        m.eliminate_zeros()
        self._csr = sp.csr_array(m.astype(bool))

    # -- construction -----------------------------------------------------
    @classmethod
    def _from_rows(cls, rows: Ids, cols: Ids, shape: tuple[int, int]) -> SparsityPattern:
        keep = (cols >= 0) & (cols < shape[1])
        data = np.ones(int(keep.sum()), bool)
        return cls(sp.coo_array((data, (rows[keep], cols[keep])), shape=shape))

    @classmethod
    def _offsets(cls, n: int, offsets: Ids, n_keys: int | None) -> SparsityPattern:
        nk = n if n_keys is None else n_keys
        rows = np.repeat(np.arange(n, dtype=np.int64), offsets.size)
        cols = (np.arange(n, dtype=np.int64)[:, None] + offsets[None, :]).ravel()
        return cls._from_rows(rows, cols, (n, nk))

    @classmethod
    def sliding_window(cls, n: int, window: int, n_keys: int | None = None) -> SparsityPattern:
        """Query ``i`` attends to keys ``i - (window-1)//2 .. i + window//2`` (clipped to ``[0, n_keys)``)."""
        n = V.non_negative_int("sliding_window", "n", n)
        w = V.positive_int("sliding_window", "window", window)
        return cls._offsets(n, np.arange(-((w - 1) // 2), w // 2 + 1, dtype=np.int64), n_keys)

    @classmethod
    def dilated_window(cls, n: int, window: int, dilation: int, n_keys: int | None = None) -> SparsityPattern:
        """The sliding window's offsets times ``dilation``: keys ``i + t·dilation``, ``|t|`` as in the window."""
        n = V.non_negative_int("dilated_window", "n", n)
        w = V.positive_int("dilated_window", "window", window)
        dil = V.positive_int("dilated_window", "dilation", dilation)
        return cls._offsets(n, dil * np.arange(-((w - 1) // 2), w // 2 + 1, dtype=np.int64), n_keys)

    @classmethod
    def blocks(cls, n: int, block_size: int) -> SparsityPattern:
        """Query ``i`` attends to the keys of its own block ``i // block_size`` (block-diagonal)."""
        n = V.non_negative_int("blocks", "n", n)
        b = V.positive_int("blocks", "block_size", block_size)
        start = (np.arange(n, dtype=np.int64) // b) * b
        offsets = np.arange(b, dtype=np.int64)
        rows = np.repeat(np.arange(n, dtype=np.int64), b)
        cols = (start[:, None] + offsets[None, :]).ravel()
        cols[cols >= n] = -1
        return cls._from_rows(rows, cols, (n, n))

    @classmethod
    def random(cls, n: int, k: int, seed: int | None = 0, n_keys: int | None = None) -> SparsityPattern:
        """``k`` distinct keys per query, drawn uniformly (seeded; ``k`` is capped at ``n_keys``)."""
        n = V.non_negative_int("random", "n", n)
        k = V.non_negative_int("random", "k", k)
        nk = n if n_keys is None else V.non_negative_int("random", "n_keys", n_keys)
        k = min(k, nk)
        rng = np.random.default_rng(seed)
        cols = np.argsort(rng.random((n, nk)), axis=1)[:, :k] if k else np.empty((n, 0), np.int64)
        return cls._from_rows(np.repeat(np.arange(n, dtype=np.int64), k), cols.ravel().astype(np.int64), (n, nk))

    @classmethod
    def global_nodes(
        cls, n: int, ids: Sequence[int] | NDArray[np.integer], n_keys: int | None = None, symmetric: bool = True
    ) -> SparsityPattern:
        """Every query attends to the keys ``ids``; with ``symmetric`` (and a square pattern) the queries
        ``ids`` also attend to every key (Longformer's global attention)."""
        n = V.non_negative_int("global_nodes", "n", n)
        nk = n if n_keys is None else V.non_negative_int("global_nodes", "n_keys", n_keys)
        g = _ids("global_nodes", ids, nk)
        rows = np.repeat(np.arange(n, dtype=np.int64), g.size)
        cols = np.tile(g, n)
        if symmetric:
            gq = g[g < n]
            rows = np.concatenate([rows, np.repeat(gq, nk)])
            cols = np.concatenate([cols, np.tile(np.arange(nk, dtype=np.int64), gq.size)])
        return cls._from_rows(rows, cols, (n, nk))

    @classmethod
    def hnsw_layers(
        cls, layers: Sequence[Sequence[int] | NDArray[np.integer]], n: int, symmetric: bool = False
    ) -> SparsityPattern:
        """Global attention to the nodes of an HNSW index's upper layers.

        ``layers[0]`` is the base layer (every node) and ``layers[l]`` the node ids
        present in layer ``l >= 1``; the global nodes are the union of the upper
        layers (the index's hubs).  Combine with the base-layer neighbour lists:
        ``SparsityPattern.from_neighbours(base) | SparsityPattern.hnsw_layers(layers, n)``.
        """
        n = V.non_negative_int("hnsw_layers", "n", n)
        if len(layers) == 0:
            raise InvalidConfig("hnsw_layers: 'layers' must list at least the base layer.")
        upper = [_ids("hnsw_layers", ids, n, f"layers[{i}]") for i, ids in enumerate(layers) if i > 0]
        g = np.unique(np.concatenate(upper)) if upper else np.empty(0, np.int64)
        return cls.global_nodes(n, g, symmetric=symmetric)

    @classmethod
    def from_neighbours(cls, neighbours: Any, n_keys: int, n_queries: int | None = None) -> SparsityPattern:
        """A pattern from a neighbour list (CSR, scipy sparse, padded ids with -1 or ragged lists)."""
        nk = V.non_negative_int("from_neighbours", "n_keys", n_keys)
        if n_queries is None:  # one row per node of the list, whatever its form
            if isinstance(neighbours, NeighbourList):
                n_queries = neighbours.num_nodes
            elif hasattr(neighbours, "indptr") or isinstance(neighbours, tuple):
                indptr = neighbours.indptr if hasattr(neighbours, "indptr") else neighbours[0]
                n_queries = len(indptr) - 1
            else:
                n_queries = len(neighbours)
        nl = as_neighbours("SparsityPattern.from_neighbours", neighbours, n_queries, nk)
        data = np.ones(nl.nnz, bool)
        return cls(sp.csr_array((data, nl.indices, nl.indptr), shape=(nl.num_nodes, nk)))

    # -- algebra ----------------------------------------------------------
    def _same_shape(self, other: SparsityPattern, op: str) -> None:
        if other.shape != self.shape:
            raise DimensionMismatch(f"SparsityPattern {op}: shapes differ, {self.shape} and {other.shape}.")

    def __or__(self, other: object) -> SparsityPattern:
        """Union: a key is kept if either pattern keeps it."""
        if not isinstance(other, SparsityPattern):
            return NotImplemented
        self._same_shape(other, "|")
        return SparsityPattern(self._csr.astype(np.int8) + other._csr.astype(np.int8))

    def __and__(self, other: object) -> SparsityPattern:
        """Intersection: a key is kept if both patterns keep it."""
        if not isinstance(other, SparsityPattern):
            return NotImplemented
        self._same_shape(other, "&")
        return SparsityPattern(self._csr.astype(np.int8).multiply(other._csr.astype(np.int8)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparsityPattern) or other.shape != self.shape:
            return False
        a, b = self._csr, other._csr
        return bool(np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices))

    # -- views ----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._csr.shape[0]), int(self._csr.shape[1]))

    def to_csr(self) -> sp.csr_array:
        """The pattern as a boolean scipy ``csr_array`` (a copy); usable as a neighbour list."""
        return self._csr.copy()

    def count_nonzero(self) -> int:
        """Number of (query, key) pairs kept."""
        return int(self._csr.nnz)

    def row(self, i: int) -> Ids:
        """The keys query ``i`` attends to, ascending."""
        lo, hi = self._csr.indptr[i], self._csr.indptr[i + 1]
        return self._csr.indices[lo:hi].astype(np.int64)

    def degrees(self) -> Ids:
        """Keys kept per query."""
        return np.diff(self._csr.indptr).astype(np.int64)

    def attention_mask(self, n: int | None = None) -> NDArray[np.bool_]:
        """The dense keep-mask ``(n_queries, n_keys)`` (true = attend), the mask convention of every mechanism.

        ``n`` (the specification's argument) must equal the number of keys if given.
        """
        if n is not None and n != self.shape[1]:
            raise DimensionMismatch(f"SparsityPattern.attention_mask: n={n} but the pattern has {self.shape[1]} keys.")
        return self._csr.toarray().astype(bool)

    def density(self) -> float:
        """Fraction of the ``n_queries × n_keys`` pairs kept."""
        total = self.shape[0] * self.shape[1]
        return self.count_nonzero() / total if total else 0.0

    def __repr__(self) -> str:
        return f"SparsityPattern(shape={self.shape}, nnz={self.count_nonzero()})"
