"""A synthetic, HNSW-like data set: clustered embeddings and their nearest-neighbour lists.

>>> g = clustered_graph(n_nodes=200, dim=16, n_clusters=4, k=8, seed=0)
>>> g.embeddings.shape, g.neighbours.shape, bool((g.neighbours != np.arange(200)[:, None]).all())
((200, 16), (200, 8), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ruvattn._validation import positive_int
from ruvattn.errors import InvalidConfig, NumericalInstability

__all__ = ["SyntheticGraph", "clustered_graph", "clustered_points", "exact_knn"]


@dataclass(frozen=True)
class SyntheticGraph:
    """``embeddings (N, d)`` float32, ``labels (N,)`` cluster ids, ``neighbours (N, k)``
    ids of each node's ``k`` nearest other nodes by cosine similarity, nearest first
    (the order an HNSW search returns)."""

    embeddings: NDArray[np.float32]
    labels: NDArray[np.int64]
    neighbours: NDArray[np.int64]


def clustered_graph(
    n_nodes: int = 2000, dim: int = 128, n_clusters: int = 16, k: int = 32, seed: int = 0, spread: float = 0.35
) -> SyntheticGraph:
    """Gaussian clusters on the unit sphere plus exact k-nearest-neighbour lists."""
    owner = "clustered_graph"
    n_nodes, dim = positive_int(owner, "n_nodes", n_nodes), positive_int(owner, "dim", dim)
    n_clusters, k = positive_int(owner, "n_clusters", n_clusters), positive_int(owner, "k", k)
    if k >= n_nodes:
        raise InvalidConfig(f"{owner}: 'k' must be smaller than n_nodes={n_nodes}; got {k}.")
    emb, labels = clustered_points(n_nodes, dim, n_clusters, seed, spread)
    return SyntheticGraph(emb, labels, exact_knn(emb, k, normalize=False))


def clustered_points(
    n_nodes: int = 2000, dim: int = 128, n_clusters: int = 16, seed: int = 0, spread: float = 0.35
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """:func:`clustered_graph`'s embeddings and cluster labels without the neighbour lists (no all-pairs step, so
    any size): unit-norm rows ``centre + spread * N(0, I/dim)`` around ``n_clusters`` random unit centres.

    >>> x, labels = clustered_points(100, 8, 4, seed=1)
    >>> x.shape, bool(np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)), int(labels.max()) < 4
    ((100, 8), True, True)
    """
    owner = "clustered_points"
    n_nodes, dim = positive_int(owner, "n_nodes", n_nodes), positive_int(owner, "dim", dim)
    n_clusters = positive_int(owner, "n_clusters", n_clusters)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, n_clusters, n_nodes)
    x = centres[labels] + spread * rng.standard_normal((n_nodes, dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels.astype(np.int64)


def exact_knn(embeddings: ArrayLike, k: int, *, normalize: bool = True, block: int = 1024) -> NDArray[np.int64]:
    """Exact ``k`` nearest other rows of ``embeddings`` by cosine similarity, nearest first.

    Parameters
    ----------
    embeddings : (N, d) array
        One point per row (any float dtype; the similarities are computed in that dtype).
    k : int
        Neighbours per row, ``1 <= k < N``; a row is never its own neighbour.
    normalize : bool
        Divide the rows by their lengths first (cosine similarity); pass ``False`` for rows that
        already have unit length (then it is the dot product). A zero row has similarity 0 to all.
    block : int
        Rows per similarity block (keeps the ``block × N`` matrix small).

    Returns
    -------
    (N, k) int64
        Row ``i`` lists the ids of ``i``'s neighbours by decreasing similarity.

    >>> exact_knn(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), 1).ravel().tolist()
    [1, 0, 1]
    """
    owner = "exact_knn"
    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise InvalidConfig(f"{owner}: embeddings must be a non-empty (N, d) array; got shape {emb.shape}.")
    if not np.issubdtype(emb.dtype, np.floating):
        emb = emb.astype(np.float64)
    n_nodes = emb.shape[0]
    k, block = positive_int(owner, "k", k), positive_int(owner, "block", block)
    if k >= n_nodes:
        raise InvalidConfig(f"{owner}: 'k' must be smaller than the number of rows ({n_nodes}); got {k}.")
    if not np.isfinite(emb).all():
        raise NumericalInstability(f"{owner}: embeddings must be finite; remove or replace NaN/inf rows.")
    if normalize:
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.where(norms > 0, norms, 1).astype(emb.dtype)
    neighbours = np.empty((n_nodes, k), np.int64)
    for start in range(0, n_nodes, block):  # blocks keep the similarity matrix small
        sim = emb[start : start + block] @ emb.T
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf  # a node is not its own neighbour
        top = np.argpartition(-sim, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        neighbours[start : start + block] = np.take_along_axis(top, order, axis=1)
    return neighbours
