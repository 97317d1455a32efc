"""Structural features and positional encodings of a graph: degrees, PageRank, Laplacian and random-walk
encodings, the transformer's sinusoidal table and a learned embedding of layer ids.

The graph is a square :class:`~ruvattn.graph.NeighbourList` over ``N`` nodes (``num_keys == N``; node ``i``'s
neighbour ``j`` is the directed edge ``i -> j``, a repeated id is one edge) or a scipy sparse adjacency matrix
``(N, N)`` whose stored values are non-negative edge weights.

* :func:`degree` — in-, out- or total degree, optionally divided by ``N - 1`` (networkx's degree centrality);
* :func:`pagerank` — power iteration on ``scipy.sparse`` with networkx's conventions;
* :func:`laplacian_pe` — eigenvectors of the normalised Laplacian for the ``k`` smallest non-trivial eigenvalues
  (PyTorch Geometric's ``AddLaplacianEigenvectorPE``), with a deterministic sign;
* :func:`random_walk_pe` — return probabilities ``diag(P^t)``, ``t = 1..k`` (PyG's ``AddRandomWalkPE``);
* :func:`sinusoidal_encoding` — ``sin``/``cos`` of real positions (e.g. HNSW layer indices) at geometric frequencies;
* :class:`LayerEmbedding` — a learned ``(num_layers, dim)`` table with forward and backward.

Arithmetic is float64; results are float64 unless ``dtype=np.float32`` is asked for.

>>> import numpy as np
>>> from ruvattn.graph import NeighbourList
>>> path = NeighbourList.from_lists([[1], [0, 2], [1, 3], [2]], num_keys=4)
>>> degree(path).tolist()
[1.0, 2.0, 2.0, 1.0]
>>> random_walk_pe(path, 2).tolist()
[[0.0, 0.5], [0.0, 0.75], [0.0, 0.75], [0.0, 0.5]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, eigsh

from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.graph import NeighbourList
from ruvattn.nn.core import Module, Parameter, _rng, _saved

__all__ = [
    "LayerEmbedding",
    "degree",
    "laplacian_pe",
    "pagerank",
    "random_walk_pe",
    "sinusoidal_encoding",
]

Array = NDArray[np.floating]

# A connected component with fewer nodes than this is diagonalised densely (numpy.linalg.eigh), a larger one by
# ARPACK (scipy.sparse.linalg.eigsh, which="SA"): PyG's AddLaplacianEigenvectorPE.SPARSE_THRESHOLD.
_DENSE_NODES = 100
# laplacian_pe(shift_invert=True) runs ARPACK on (L - sigma I)^-1: L - sigma I is positive definite for any
# Laplacian (eigenvalues >= 0), and the eigenvalues nearest sigma, the smallest of L, become the largest.
_SHIFT = -1e-3
# Two entries whose magnitudes differ by less than this (relative) tie for "largest" in the canonical sign rule,
# so rounding noise in the solver never decides a sign; the first of the tied entries decides.
_SIGN_RTOL = 1e-8
# random_walk_pe processes rows in blocks of max(1, _RW_BLOCK_ENTRIES // N), so an intermediate block of P^t
# never holds more than this many entries (about 64 MB as a dense float64 array, per operand).
_RW_BLOCK_ENTRIES = 1 << 23
# A sparse block of P^t denser than this is continued as a dense array (dense x sparse is then cheaper).
_RW_DENSE_FRACTION = 0.25
_NORMALIZATIONS = ("sym", "rw", None)
_SIGNS = ("canonical", "random", "none")
_DIRECTIONS = ("out", "in", "total")


# ---------------------------------------------------------------------------------------------------- validation


def _dtype(op: str, dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InvalidConfig(f"{op}: dtype must be float32 or float64; got {dtype!r}.") from None
    if dt not in (np.float32, np.float64):
        raise InvalidConfig(f"{op}: dtype must be float32 or float64; got {dt}.")
    return dt


def _count(op: str, name: str, value: Any, minimum: int) -> int:
    """``value`` as a Python int ``>= minimum``; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidConfig(f"{op}: {name} must be an integer >= {minimum}; got {value!r}.")
    if value < minimum:
        raise InvalidConfig(f"{op}: {name} must be an integer >= {minimum}; got {value}.")
    return int(value)


def _real(op: str, name: str, value: Any) -> float:
    """``value`` as a finite Python float (NaN and infinities are NumericalInstability)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidConfig(f"{op}: {name} must be a real number; got {value!r}.")
    if not math.isfinite(value):
        raise NumericalInstability(f"{op}: {name} must be finite; got {value}.")
    return float(value)


def _choice(op: str, name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        raise InvalidConfig(f"{op}: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}.")
    return value


def _adjacency(op: str, graph: Any, symmetric: bool) -> sp.csr_matrix:
    """The graph as an ``(N, N)`` float64 CSR adjacency matrix with sorted, unique column ids per row.

    A :class:`NeighbourList` gives weight 1 per edge ``i -> j`` (a repeated neighbour id is one edge); a scipy
    sparse matrix keeps its values as edge weights (repeated COO entries summed, as scipy defines the matrix;
    stored zeros dropped), which must be finite and non-negative.  ``symmetric=True`` returns the undirected
    graph ``max(A, Aᵀ)`` (an edge in either direction becomes an edge both ways; a symmetric input is
    unchanged).  The caller's arrays are never modified.
    """
    if isinstance(graph, NeighbourList):
        n = graph.num_nodes
        if graph.num_keys != n:
            raise DimensionMismatch(
                f"{op}: the graph must be square: a NeighbourList over N={n} nodes needs num_keys == N; got "
                f"num_keys={graph.num_keys}. Its ids index a separate key table (a bipartite graph), which has no "
                "node-level structure; build the list over the nodes themselves."
            )
        a = sp.csr_matrix((np.ones(graph.nnz), graph.indices, graph.indptr), shape=(n, n), copy=True)
        a.sum_duplicates()
        a.data[:] = 1.0
    elif sp.issparse(graph):
        if len(graph.shape) != 2 or graph.shape[0] != graph.shape[1]:
            raise DimensionMismatch(f"{op}: the adjacency matrix must be square (N, N); got shape {graph.shape}.")
        if graph.dtype.kind not in "biuf":
            raise DimensionMismatch(f"{op}: adjacency weights must be real numbers; got dtype {graph.dtype}.")
        a = sp.csr_matrix(graph, dtype=np.float64, copy=True)
        a.sum_duplicates()
        if not np.isfinite(a.data).all():
            raise NumericalInstability(f"{op}: the adjacency matrix holds NaN or inf weights; remove or replace them.")
        if a.data.size and a.data.min() < 0:
            raise InvalidConfig(f"{op}: edge weights must be >= 0; got {a.data.min()}.")
        a.eliminate_zeros()
    else:
        raise DimensionMismatch(
            f"{op}: graph must be a NeighbourList or a square scipy.sparse adjacency matrix; got "
            f"{type(graph).__name__}. Wrap a dense array with scipy.sparse.csr_matrix(a)."
        )
    if symmetric:
        a = sp.csr_matrix(a.maximum(a.T))
    a.sort_indices()
    return a


def _without_self_loops(a: sp.csr_matrix) -> sp.csr_matrix:
    coo = a.tocoo()
    off = coo.row != coo.col
    out = sp.csr_matrix((coo.data[off], (coo.row[off], coo.col[off])), shape=a.shape)
    out.sort_indices()
    return out


def _row_sums(a: sp.csr_matrix) -> NDArray[np.float64]:
    return np.asarray(a.sum(axis=1), dtype=np.float64).ravel()


def _row_normalised(a: sp.csr_matrix) -> sp.csr_matrix:
    """``D⁻¹ A`` with ``D = diag(row sums)``; a row without out-edges stays zero."""
    out = _row_sums(a)
    inv = np.divide(1.0, out, out=np.zeros_like(out), where=out > 0)
    return sp.csr_matrix(sp.diags(inv) @ a)


# ------------------------------------------------------------------------------------------- structural features


def degree(graph: Any, *, normalise: bool = False, direction: str = "out", dtype: Any = np.float64) -> Array:
    r"""Degree of every node: ``out_i = sum_j A_ij``, ``in_i = sum_j A_ji``, ``total_i = in_i + out_i``.

    Parameters
    ----------
    graph : NeighbourList or scipy.sparse matrix (N, N)
        Edge ``i -> j`` when ``j`` is among ``i``'s neighbours (``A_ij = 1``), or a weighted adjacency matrix
        (the degree is then the sum of the edge weights, the node's *strength*).
    normalise : bool
        Divide by ``N - 1``, the largest simple degree (networkx's ``degree_centrality``,
        ``in_degree_centrality``, ``out_degree_centrality``; a one-node graph gives ``1.0`` as networkx does).
    direction : {"out", "in", "total"}
        For a symmetric (undirected) graph ``in == out`` and ``total`` counts every edge twice, as networkx's
        ``DiGraph.degree`` does.  A self loop counts once in ``out`` and once in ``in``.
    dtype : float32 or float64

    Returns
    -------
    ndarray (N,)

    >>> from ruvattn.graph import NeighbourList
    >>> g = NeighbourList.from_lists([[1, 2], [2], []], num_keys=3)
    >>> degree(g).tolist(), degree(g, direction="in").tolist(), degree(g, direction="total", normalise=True).tolist()
    ([2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0])
    """
    op = "degree"
    _choice(op, "direction", direction, _DIRECTIONS)
    dt = _dtype(op, dtype)
    a = _adjacency(op, graph, symmetric=False)
    out = _row_sums(a)
    inn = np.asarray(a.sum(axis=0), dtype=np.float64).ravel()
    deg = {"out": out, "in": inn, "total": out + inn}[direction]
    if normalise:
        n = a.shape[0]
        deg = np.ones(n) if n == 1 else deg / max(n - 1, 1)
    return deg.astype(dt)


def pagerank(
    graph: Any,
    *,
    alpha: float = 0.85,
    tol: float = 1e-10,
    max_iter: int = 1000,
    personalization: Any = None,
    dtype: Any = np.float64,
) -> Array:
    r"""PageRank by power iteration, with networkx's conventions (``networkx.pagerank``):

    .. math::
        x_{t+1} = \alpha \left(P^\top x_t + \Big(\sum_{i \text{ dangling}} x_{t,i}\Big) p\right) + (1 - \alpha)\, p,
        \qquad P = D_{\text{out}}^{-1} A,\quad x_0 = \mathbf{1}/N,

    where ``p`` is the personalization vector (uniform by default) and a *dangling* node (no out-edges, or
    out-weights summing to 0) sends its score to ``p``, so to every node uniformly when ``p`` is.  The iteration
    stops when ``||x_{t+1} - x_t||_1 < N * tol`` (networkx's criterion); the error shrinks like ``alpha^t``.

    Parameters
    ----------
    graph : NeighbourList or scipy.sparse matrix (N, N)
        Edge ``i -> j`` carries score from ``i`` to ``j``; matrix values are edge weights.
    alpha : float in [0, 1)
        Damping: the probability of following an edge rather than teleporting to ``p``.
    tol : float > 0
    max_iter : int >= 1
    personalization : array (N,), optional
        Non-negative teleport weights (normalised to sum 1), also used for dangling nodes as networkx does.
    dtype : float32 or float64

    Returns
    -------
    ndarray (N,)
        Non-negative, summing to 1.

    Raises
    ------
    NumericalInstability
        When ``max_iter`` iterations do not reach the tolerance.

    >>> from ruvattn.graph import NeighbourList
    >>> np.round(pagerank(NeighbourList.from_lists([[1], []], num_keys=2), alpha=0.5), 9).tolist()
    [0.4, 0.6]
    """
    op = "pagerank"
    dt = _dtype(op, dtype)
    alpha = _real(op, "alpha", alpha)
    if not 0.0 <= alpha < 1.0:
        raise InvalidConfig(f"{op}: alpha must be in [0, 1) (e.g. 0.85); got {alpha}.")
    tol = _real(op, "tol", tol)
    if tol <= 0:
        raise InvalidConfig(f"{op}: tol must be > 0 (e.g. 1e-10); got {tol}.")
    max_iter = _count(op, "max_iter", max_iter, 1)
    a = _adjacency(op, graph, symmetric=False)
    n = a.shape[0]
    if n == 0:
        raise EmptyInput(f"{op}: the graph has no nodes; PageRank is a distribution over nodes.")
    if personalization is None:
        p = np.full(n, 1.0 / n)
    else:
        p = np.asarray(personalization)
        if p.dtype.kind not in "iuf" or p.shape != (n,):
            raise DimensionMismatch(
                f"{op}: personalization must be a real array of shape ({n},); got shape {p.shape}, dtype {p.dtype}."
            )
        p = p.astype(np.float64)
        if not np.isfinite(p).all():
            raise NumericalInstability(f"{op}: personalization holds NaN or inf.")
        if p.min() < 0 or p.sum() <= 0:
            raise InvalidConfig(
                f"{op}: personalization must be >= 0 with a positive sum; got min {p.min()}, sum {p.sum()}."
            )
        p = p / p.sum()
    dangling = _row_sums(a) == 0
    pt = sp.csr_matrix(_row_normalised(a).T)
    x = np.full(n, 1.0 / n)
    err = math.inf
    for _ in range(max_iter):
        last = x
        x = alpha * (pt @ last + last[dangling].sum() * p) + (1.0 - alpha) * p
        err = float(np.abs(x - last).sum())
        if err < n * tol:
            return x.astype(dt)
    raise NumericalInstability(
        f"{op}: power iteration did not converge in max_iter={max_iter} iterations: the last step changed the scores "
        f"by {err:.3g} (L1), not below N * tol = {n * tol:.3g}. Raise max_iter or tol (the change shrinks like "
        f"alpha^t = {alpha}^t)."
    )


# -------------------------------------------------------------------------------------------- spectral encoding


def _component_spectrum(
    a: sp.csr_matrix, normalization: str | None, m: int, shift_invert: bool, op: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The ``m`` smallest eigenpairs (ascending) of one connected component's Laplacian (no self loops)."""
    size = a.shape[0]  # >= 2 (the caller handles isolated nodes)
    deg = _row_sums(a)
    if normalization is None:
        lap = sp.csr_matrix(sp.diags(deg) - a)
        null = np.full(size, 1.0 / math.sqrt(size))
    else:
        s = 1.0 / np.sqrt(deg)  # connected with >= 2 nodes: every degree > 0
        lap = sp.csr_matrix(sp.identity(size) - sp.diags(s) @ a @ sp.diags(s))
        null = np.sqrt(deg) / math.sqrt(deg.sum())
    if size < _DENSE_NODES or 3 * m >= size:
        w, v = np.linalg.eigh(lap.toarray())
        w, v = w[:m], v[:, :m]
    else:
        v0 = np.random.default_rng(0).uniform(-1.0, 1.0, size)  # ARPACK's own start vector changes between calls
        try:
            if shift_invert:
                w, v = eigsh(sp.csc_matrix(lap), k=m, sigma=_SHIFT, which="LM", v0=v0)
            else:
                w, v = eigsh(lap, k=m, which="SA", v0=v0)
        except (ArpackNoConvergence, ArpackError) as exc:
            raise NumericalInstability(
                f"{op}: ARPACK found no {m} smallest eigenpairs of a connected component of {size} nodes ({exc}); "
                "try a smaller k."
            ) from None
        order = np.argsort(w, kind="stable")
        w, v = w[order], v[:, order]
    # The smallest eigenvalue of a connected component is exactly 0 and simple; its eigenvector is known in closed
    # form: D^1/2 1 (sym) or 1 (D - A), normalised.  Exact zeros make the tie order between components deterministic.
    w[0] = 0.0
    v[:, 0] = null
    if normalization == "rw":  # I - D^-1 A = D^-1/2 (I - D^-1/2 A D^-1/2) D^1/2: same eigenvalues, vectors D^-1/2 u
        v = v / np.sqrt(deg)[:, None]
        v /= np.linalg.norm(v, axis=0)
    return w, v


def _canonical_signs(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Flip each column so that its entry of largest magnitude is positive (first such entry on a tie)."""
    if v.size == 0:
        return v
    mag = np.abs(v)
    first = np.argmax(mag >= mag.max(axis=0) * (1.0 - _SIGN_RTOL), axis=0)
    signs = np.where(v[first, np.arange(v.shape[1])] < 0, -1.0, 1.0)
    return v * signs


def laplacian_pe(
    graph: Any,
    k: int,
    *,
    normalization: str | None = "sym",
    sign: str = "canonical",
    seed: int | np.random.Generator | None = None,
    return_eigenvalues: bool = False,
    shift_invert: bool = False,
    dtype: Any = np.float64,
) -> Array | tuple[Array, Array]:
    r"""Laplacian eigenvector positional encoding (Dwivedi et al., *Benchmarking Graph Neural Networks*, 2020):
    the eigenvectors of the graph Laplacian for its ``k`` smallest eigenvalues after the first (trivial) one.

    .. math::
        L_{\text{sym}} = I - D^{-1/2} A D^{-1/2}, \qquad L = D - A \ (\texttt{None}), \qquad
        L_{\text{rw}} = I - D^{-1} A,

    on the undirected graph ``A = max(A, Aᵀ)`` without self loops (PyG's ``get_laplacian`` removes them); an
    isolated node has ``D⁻¹ᐟ² = 0`` on its row, so ``L_sym`` and ``L_rw`` hold 1 on its diagonal (eigenvalue 1,
    vector ``e_i``) and ``D - A`` holds 0 there.  Eigenvalues are sorted ascending, ``k + 1`` are taken and the first
    dropped: this is PyTorch Geometric's ``AddLaplacianEigenvectorPE(k, is_undirected=True)``
    (``eig_vecs[:, eig_vals.argsort()][:, 1:k + 1]``), computed in float64 (PyG's default unit edge weights are
    float32, and so is its eigensolve: its vectors agree with these to about 1e-3) and component by component.

    **Repeated eigenvalues.** A graph with ``c`` connected components has eigenvalue 0 ``c`` times (a lone node
    counts for ``D - A`` only).  PyG asks ARPACK for the ``k + 1`` smallest eigenpairs of the whole matrix, and a
    Krylov solver finds few copies of a repeated eigenvalue: on Cora (78 components) it returns only some of the
    78 zeros (5 for k = 8, about 30 for k = 90) and then non-zero eigenvalues, a different and run-dependent
    answer.  Here each component is diagonalised on its own (densely below 100 nodes, PyG's threshold, or when
    ``k + 1`` is over a third of its nodes; else ``eigsh(which="SA")`` from a fixed start vector), its 0 is set
    exactly with its closed-form vector ``D^{1/2} 1_C`` (sym), ``1_C`` (``D - A``, ``rw``), normalised, and the
    spectra are merged.  Equal eigenvalues keep the order of their components' smallest node ids, so the dropped
    "trivial" vector is that of node 0's component.  Within a repeated eigenvalue any orthonormal basis is as valid
    as another: compare subspaces, not columns.

    **Signs.** An eigenvector ``v`` is defined up to ``-v``.  ``sign="canonical"`` makes each column's entry of
    largest magnitude positive (entries within ``1e-8`` relative of the largest tie; the first decides), so the
    result is deterministic and, for simple eigenvalues without ties, follows any relabelling of the nodes.
    ``"random"`` applies a fair coin per column from ``seed`` on top of the canonical signs (PyG's training-time
    augmentation, ``-1 + 2 * torch.randint(0, 2, (k,))``); ``"none"`` leaves the solver's signs.

    Parameters
    ----------
    graph : NeighbourList or scipy.sparse matrix (N, N)
        Edge weights of a matrix are kept; a directed graph is symmetrised with ``max(A, Aᵀ)``.
    k : int, 1 <= k < N - 1
    normalization : {"sym", "rw", None}
        ``"sym"`` is PyG's (and the paper's).  ``"rw"`` eigenvectors ``D^{-1/2} u`` are scaled to unit length but are
        not orthogonal; ``None`` is the combinatorial Laplacian ``D - A``.
    sign : {"canonical", "random", "none"}
    seed : int or numpy Generator, only with ``sign="random"``
    return_eigenvalues : bool
        Also return the ``k`` eigenvalues (ascending) of the returned columns.
    shift_invert : bool
        For components of 100 nodes or more: factorise ``L + 10^-3 I`` (scipy's ``splu``) and run ARPACK on its
        inverse instead of PyG's ``which="SA"`` on ``L``.  Far fewer iterations when the small eigenvalues cluster
        (meshes, road networks: a 40,600-node grid, ``k = 4``, took 4 s instead of 134 s here), but the LU factor
        can fill in badly on small-world graphs (HNSW layers), where ``"SA"`` converges fast anyway.  Same results.
    dtype : float32 or float64

    Returns
    -------
    pe : ndarray (N, k)
    eigenvalues : ndarray (k,), when ``return_eigenvalues``

    Cost: dense ``O(n_C^3)`` for a component of fewer than 100 nodes; ARPACK Lanczos on larger ones, ``O(nnz · ncv)``
    per restart with ``ncv = max(2k + 3, 20)`` vectors held, ``O(N · k)`` memory; the number of restarts grows as
    the smallest eigenvalues crowd together relative to the spectrum's width (see ``shift_invert``).

    >>> from ruvattn.graph import NeighbourList
    >>> path = NeighbourList.from_lists([[1], [0, 2], [1, 3], [2]], num_keys=4)   # eigenvalues 1 - cos(pi j / 3)
    >>> pe, lam = laplacian_pe(path, 2, return_eigenvalues=True)
    >>> np.round(lam, 9).tolist()
    [0.5, 1.5]
    >>> np.round(pe, 4).tolist()
    [[0.5774, 0.5774], [0.4082, -0.4082], [-0.4082, -0.4082], [-0.5774, 0.5774]]
    """
    op = "laplacian_pe"
    _choice(op, "normalization", normalization, _NORMALIZATIONS)
    _choice(op, "sign", sign, _SIGNS)
    if seed is not None and sign != "random":
        raise InvalidConfig(f"{op}: seed only drives sign='random'; got seed={seed!r} with sign={sign!r}.")
    dt = _dtype(op, dtype)
    a = _adjacency(op, graph, symmetric=True)
    n = a.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n - 1:
        raise InvalidConfig(
            f"{op}: k must be an integer with 1 <= k < N - 1 = {n - 1} (k + 1 eigenpairs of the N x N Laplacian, "
            f"the first dropped); got k={k!r} for N={n} nodes."
        )
    k = int(k)
    a = _without_self_loops(a)
    num, labels = connected_components(a, directed=False)
    members = np.split(np.argsort(labels, kind="stable"), np.cumsum(np.bincount(labels, minlength=num))[:-1])
    values, vectors = [], []
    lone = (np.array([0.0 if normalization is None else 1.0]), np.ones((1, 1)))  # an isolated node's eigenpair
    for nodes in members:
        w, v = (
            lone
            if nodes.size == 1
            else _component_spectrum(a[nodes][:, nodes], normalization, min(k + 1, nodes.size), shift_invert, op)
        )
        values.append(w)
        vectors.append(v)
    comp = np.repeat(np.arange(num), [w.size for w in values])
    local = np.concatenate([np.arange(w.size) for w in values])
    lam = np.concatenate(values)
    # Ascending eigenvalue; equal ones (to rounding) in component order, then the solver's order.
    chosen = np.lexsort((local, comp, np.round(lam, 12)))[1 : k + 1]
    pe = np.zeros((n, k))
    for j, idx in enumerate(chosen):
        pe[members[comp[idx]], j] = vectors[comp[idx]][:, local[idx]]
    if sign != "none":
        pe = _canonical_signs(pe)
    if sign == "random":
        pe *= _rng(seed).integers(0, 2, k) * 2.0 - 1.0
    if return_eigenvalues:
        return pe.astype(dt), lam[chosen].astype(dt)
    return pe.astype(dt)


# -------------------------------------------------------------------------------------------- random-walk encoding


def _times(x: Any, m: sp.csr_matrix) -> Any:
    """``x @ m`` for a sparse or dense row block ``x``; a sparse result that filled in continues dense."""
    y = x @ m
    if sp.issparse(y):
        if y.nnz > _RW_DENSE_FRACTION * y.shape[0] * y.shape[1]:
            return y.toarray()
        return sp.csr_matrix(y)
    return np.asarray(y)


def _row_dots(r: Any, q: Any) -> NDArray[np.float64]:
    """``sum_j r_ij q_ij`` per row, for sparse or dense blocks of equal shape."""
    if sp.issparse(r) or sp.issparse(q):
        s, d = (r, q) if sp.issparse(r) else (q, r)
        return np.asarray(s.multiply(d).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", r, q)


def random_walk_pe(graph: Any, k: int, *, block_size: int | None = None, dtype: Any = np.float64) -> Array:
    r"""Random-walk positional encoding (Dwivedi et al., *Graph Neural Networks with Learnable Structural and
    Positional Representations*, 2022): the probability that a walk from node ``i`` is back at ``i`` after
    ``t = 1..k`` steps.

    .. math::
        \mathrm{pe}_{i, t-1} = (P^t)_{ii}, \qquad P = D_{\text{out}}^{-1} A,

    with a zero row of ``P`` for a node without out-edges and self loops kept: PyG's
    ``AddRandomWalkPE(walk_length=k)`` (``value = 1 / scatter(value, row).clamp(min=1)``, then the diagonals of
    ``adj``, ``adj @ adj``, ...).  For unweighted graphs the two agree exactly; for a weighted node whose
    out-weights sum to less than 1, PyG's ``clamp(min=1)`` leaves its row unnormalised while here ``P`` is always
    row-stochastic.

    Computation never forms ``P^t`` for all nodes at once: rows are taken in blocks ``B`` and, with
    ``(P^{a+b})_{ii} = sum_j (P^a)_{ij} ((P^T)^b)_{ij}``, only powers up to ``ceil(k/2)`` are built, alternately
    ``R <- R P`` and ``Q <- Q Pᵀ`` from ``R = P[B]``, ``Q = I[B]``.  A block stays sparse until a quarter of its
    entries are non-zero, then continues dense.

    Cost: ``k - 1`` block products; a sparse step costs ``O(nnz(block) · mean degree)``, a dense one
    ``O(|B| · nnz(A))``, so the total is at most ``O(k · N · nnz(A))`` once walks reach the whole graph (small-world
    graphs, HNSW layers: for ``N = 100,000``, ``nnz = 1.6e6`` and ``k = 16`` that is ~2.4e12 multiply-adds, tens
    of minutes on a few cores) and far less while neighbourhoods of radius ``k/2`` stay small (meshes, road
    networks).  Memory: ``O(|B| · N)`` per block, at most ``2^23`` entries by default.

    Parameters
    ----------
    graph : NeighbourList or scipy.sparse matrix (N, N)
        Directed edges ``i -> j``; matrix values are edge weights.
    k : int >= 1
        Walk length: the number of columns.
    block_size : int >= 1, optional
        Rows per block (default ``max(1, 2^23 // N)``: the whole graph up to ~2,900 nodes).  Only memory and
        speed depend on it, never the result.
    dtype : float32 or float64

    Returns
    -------
    ndarray (N, k)

    >>> from ruvattn.graph import NeighbourList
    >>> cycle = NeighbourList.from_lists([[1, 3], [2, 0], [3, 1], [0, 2]], num_keys=4)
    >>> random_walk_pe(cycle, 4)[0].tolist()    # odd walks never return on an even cycle
    [0.0, 0.5, 0.0, 0.5]
    """
    op = "random_walk_pe"
    k = _count(op, "k", k, 1)
    dt = _dtype(op, dtype)
    a = _adjacency(op, graph, symmetric=False)
    n = a.shape[0]
    rows = max(1, _RW_BLOCK_ENTRIES // max(n, 1)) if block_size is None else _count(op, "block_size", block_size, 1)
    p = _row_normalised(a)
    pt = sp.csr_matrix(p.T)
    out = np.empty((n, k))
    for start in range(0, n, rows):
        block = np.arange(start, min(n, start + rows))
        r: Any = sp.csr_matrix(p[block])  # rows B of P^a
        q: Any = sp.csr_matrix((np.ones(block.size), (np.arange(block.size), block)), shape=(block.size, n))  # (Pᵀ)^b
        for t in range(1, k + 1):  # invariant: a + b = t
            out[block, t - 1] = _row_dots(r, q)
            if t < k:
                if t % 2:
                    q = _times(q, pt)
                else:
                    r = _times(r, p)
    return out.astype(dt)


# ------------------------------------------------------------------------------------------------- sinusoidal


def sinusoidal_encoding(positions: Any, dim: int, *, base: float = 10000.0, dtype: Any = np.float64) -> Array:
    r"""The transformer's sinusoidal table (Vaswani et al., 2017) at real or integer positions:

    .. math::
        \mathrm{pe}_{n, 2i} = \sin(x_n\, \omega_i), \qquad \mathrm{pe}_{n, 2i+1} = \cos(x_n\, \omega_i), \qquad
        \omega_i = \text{base}^{-2i/\text{dim}}, \quad i = 0, \dots, \text{dim}/2 - 1.

    Row dot products depend only on the offset: ``pe(x) · pe(y) = sum_i cos((x - y) ω_i)``.

    Parameters
    ----------
    positions : array (n,) of real numbers
        E.g. HNSW layer indices or timestamps.
    dim : int, even, >= 2
    base : float > 0
        The wavelengths run geometrically from ``2π`` to ``2π · base^{(dim - 2)/dim}``.
    dtype : float32 or float64

    Returns
    -------
    ndarray (n, dim)

    >>> np.round(sinusoidal_encoding([0, 1], 4, base=100.0), 4).tolist()
    [[0.0, 1.0, 0.0, 1.0], [0.8415, 0.5403, 0.0998, 0.995]]
    """
    op = "sinusoidal_encoding"
    dt = _dtype(op, dtype)
    x = np.asarray(positions)
    if x.ndim != 1 or (x.size and x.dtype.kind not in "iuf"):
        raise DimensionMismatch(
            f"{op}: positions must be a flat array of real numbers; got shape {x.shape}, dtype {x.dtype}."
        )
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise NumericalInstability(f"{op}: positions hold NaN or inf.")
    dim = _count(op, "dim", dim, 2)
    if dim % 2:
        raise InvalidConfig(f"{op}: dim must be even (a sin and a cos per frequency); got {dim}. Try {dim + 1}.")
    base = _real(op, "base", base)
    if base <= 0:
        raise InvalidConfig(f"{op}: base must be > 0 (e.g. 10000.0); got {base}.")
    angle = x[:, None] * base ** (-np.arange(0, dim, 2) / dim)
    pe = np.empty((x.size, dim))
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle)
    return pe.astype(dt)


# ---------------------------------------------------------------------------------------------- learned encoding


class LayerEmbedding(Module):
    r"""A learned vector per layer id (PyTorch's ``nn.Embedding``): ``y[n] = W[layers[n]]``.

    The gradient of a row is the sum of the output gradients of every position that looked it up,
    ``dW[l] = sum_{n: layers[n] = l} dy[n]`` (``np.add.at``, so repeated ids accumulate).

    Init: ``W ~ N(0, std²)`` with ``std = 1/sqrt(dim)`` by default, so a row has expected squared norm 1 and,
    added to unit-scale features, neither dominates nor vanishes; ``std=1.0`` is PyTorch's ``nn.Embedding``.

    Shapes: ``layers (...)`` integer ids in ``[0, num_layers)``; output ``(..., dim)``; ``weight (num_layers, dim)``.

    >>> emb = LayerEmbedding(4, 3, seed=0, dtype=np.float64)
    >>> y = emb(np.array([2, 0, 2]))
    >>> _ = emb.backward(np.ones_like(y))
    >>> y.shape, emb.weight.grad[:, 0].tolist()
    ((3, 3), [1.0, 0.0, 2.0, 0.0])
    """

    def __init__(
        self,
        num_layers: int,
        dim: int,
        *,
        std: float | None = None,
        seed: int | np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        op = "LayerEmbedding"
        self.num_layers = _count(op, "num_layers", num_layers, 1)
        self.dim = _count(op, "dim", dim, 1)
        dt = _dtype(op, dtype)
        self.std = 1.0 / math.sqrt(self.dim) if std is None else _real(op, "std", std)
        if self.std < 0:
            raise InvalidConfig(f"{op}: std must be >= 0; got {self.std}.")
        self.weight = Parameter(
            (_rng(seed).standard_normal((self.num_layers, self.dim)) * self.std).astype(dt), "weight"
        )
        self._layers: NDArray[np.int64] | None = None

    def _ids(self, op: str, layers: Any) -> NDArray[np.int64]:
        ids = np.asarray(layers)
        if ids.size and ids.dtype.kind not in "iu":
            raise DimensionMismatch(
                f"{op}: layers must hold integer ids; got dtype {ids.dtype}. Ids are never rounded: convert them "
                "yourself (e.g. layers.astype(np.int64)) if the values are whole numbers."
            )
        ids = ids.astype(np.int64)
        bad = (ids < 0) | (ids >= self.num_layers)
        if bad.any():
            raise OutOfBounds(f"{op}: layer ids must be in [0, {self.num_layers}); got {int(ids[bad][0])}.")
        return ids

    def forward(self, layers: Any, graph: Any = None) -> Array:
        """``weight[layers]``: shape ``layers.shape + (dim,)``; keeps the ids for ``backward``."""
        ids = self._ids("LayerEmbedding.forward", layers)
        self._layers = ids
        return self.weight.data[ids]

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        """Add ``dy``'s rows into ``weight.grad`` at the ids of the last forward; ids have no gradient (``None``)."""
        ids = _saved(self, self._layers)
        dy = np.asarray(dy)
        if dy.shape != (*ids.shape, self.dim):
            raise DimensionMismatch(
                f"LayerEmbedding.backward: dy has shape {dy.shape}, expected {(*ids.shape, self.dim)}."
            )
        np.add.at(
            self.weight.grad, ids.reshape(-1), dy.reshape(-1, self.dim).astype(self.weight.grad.dtype, copy=False)
        )
        return None

    def __repr__(self) -> str:
        return f"LayerEmbedding({self.num_layers}, {self.dim}, std={self.std:.4g})"
