"""Graph encodings (ruvattn.graph.encodings) against independent references: PyTorch Geometric's transforms,
networkx, dense numpy eigensolvers and matrix powers, closed forms on paths and cycles, finite differences."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.graph import NeighbourList
from ruvattn.graph.encodings import (
    LayerEmbedding,
    _adjacency,
    degree,
    laplacian_pe,
    pagerank,
    random_walk_pe,
    sinusoidal_encoding,
)

CORA = Path("/work/shared/data/cora")


# ----------------------------------------------------------------------------------------------------- helpers


def _csr(n: int, edges: list[tuple[int, int]] | np.ndarray, symmetric: bool = True) -> sp.csr_matrix:
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if symmetric:
        e = np.concatenate([e, e[:, ::-1]])
    a = sp.csr_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def _nl(a: sp.csr_matrix) -> NeighbourList:
    a = sp.csr_matrix(a)
    a.sort_indices()
    return NeighbourList(a.indptr.astype(np.int64), a.indices.astype(np.int64), a.shape[0])


def _random_connected(n: int, extra: int, seed: int) -> sp.csr_matrix:
    """A random spanning tree plus ``extra`` random edges: connected, generically simple spectrum."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    tree = [(order[i], order[rng.integers(0, i)]) for i in range(1, n)]
    more = rng.integers(0, n, (extra, 2))
    more = more[more[:, 0] != more[:, 1]]
    return _csr(n, np.concatenate([np.array(tree), more]))


def _random_directed(n: int, m: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    e = rng.integers(0, n, (m, 2))
    e = e[e[:, 0] < n - 3]  # the last three nodes have no out-edges (dangling)
    return _csr(n, e, symmetric=False)


def _sym_laplacian(a: sp.csr_matrix) -> np.ndarray:
    """Dense ``I - D^-1/2 A D^-1/2`` without self loops; an isolated node keeps 1 on the diagonal (PyG's)."""
    a = a.toarray()
    np.fill_diagonal(a, 0.0)
    d = a.sum(1)
    s = np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d > 0)
    return np.eye(len(a)) - s[:, None] * a * s[None, :]


def _clusters(lam: np.ndarray, gap: float = 1e-8) -> list[np.ndarray]:
    """Index groups of (numerically) equal consecutive eigenvalues."""
    return np.split(np.arange(lam.size), np.flatnonzero(np.diff(lam) > gap) + 1)


def _principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the column spans of orthonormal ``a`` and ``b``."""
    return np.linalg.svd(a.T @ b, compute_uv=False)


def _null_basis(a: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis of the null space of the sym Laplacian, ``D^1/2 1_C / sqrt(vol C)`` per component of two or
    more nodes, and the component labels."""
    _, labels = connected_components(a, directed=False)
    d = np.asarray(a.sum(1)).ravel()
    cols = []
    for c in np.unique(labels):
        on = labels == c
        if on.sum() > 1:
            v = np.where(on, np.sqrt(d), 0.0)
            cols.append(v / np.linalg.norm(v))
    return np.stack(cols, axis=1), labels


def _edge_index(a: sp.csr_matrix):
    torch = pytest.importorskip("torch")
    coo = sp.coo_matrix(a)
    return torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))


def _pyg_data(a: sp.csr_matrix, float64: bool):
    torch = pytest.importorskip("torch")
    from torch_geometric.data import Data

    ei = _edge_index(a)
    data = Data(edge_index=ei, num_nodes=a.shape[0])
    if float64:  # PyG then solves in float64 (its default unit weights are float32, and so is its eigensolve)
        data.edge_weight = torch.ones(ei.shape[1], dtype=torch.float64)
    return data


@pytest.fixture(scope="module")
def cora() -> sp.csr_matrix:
    if not (CORA / "edges.txt").is_file():
        pytest.skip("Cora is not at /work/shared/data/cora")
    from ruvattn.datasets.planetoid import load_planetoid

    g = load_planetoid(CORA).graph
    return sp.csr_matrix((np.ones(g.nnz), g.indices, g.indptr), shape=(g.num_nodes, g.num_nodes))


# ----------------------------------------------------------------------------------------------- adjacency, degree


def test_adjacency_dedupes_neighbour_lists_and_keeps_matrix_weights():
    g = NeighbourList.from_lists([[1, 1, 2], [0], []], num_keys=3)
    before = g.indices.copy()
    a = _adjacency("t", g, symmetric=False)
    assert a.toarray().tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert np.array_equal(g.indices, before)  # the caller's arrays are not touched
    coo = sp.coo_matrix(([2.0, 0.5, 0.5, 0.0], ([0, 1, 1, 2], [1, 2, 2, 0])), shape=(3, 3))
    w = _adjacency("t", coo, symmetric=True)
    assert w.toarray().tolist() == [[0, 2, 0], [2, 0, 1], [0, 1, 0]]  # duplicates summed, max(A, Aᵀ), zeros dropped
    assert w.nnz == 4 and w.dtype == np.float64
    assert _adjacency("t", sp.csr_array(coo), symmetric=False).toarray().tolist() == [[0, 2, 0], [0, 0, 1], [0, 0, 0]]


def test_adjacency_errors_name_the_problem():
    with pytest.raises(DimensionMismatch, match=r"degree: the graph must be square.*N=2.*num_keys=3"):
        degree(NeighbourList.from_lists([[2], [0]], num_keys=3))
    with pytest.raises(DimensionMismatch, match=r"must be square \(N, N\); got shape \(2, 3\)"):
        degree(sp.csr_matrix((2, 3)))
    with pytest.raises(DimensionMismatch, match="got ndarray"):
        degree(np.eye(3))
    with pytest.raises(NumericalInstability, match="NaN or inf"):
        degree(sp.csr_matrix(np.array([[0.0, np.nan], [1.0, 0.0]])))
    with pytest.raises(InvalidConfig, match=r"weights must be >= 0; got -1\.0"):
        degree(sp.csr_matrix(np.array([[0.0, -1.0], [1.0, 0.0]])))
    with pytest.raises(DimensionMismatch, match="real numbers; got dtype complex128"):
        degree(sp.csr_matrix(np.array([[0, 1j], [1, 0]])))


def test_degree_matches_networkx_centralities():
    nx = pytest.importorskip("networkx")
    a = _random_directed(30, 90, seed=1)
    a.setdiag(0)
    a.eliminate_zeros()
    g = nx.DiGraph()
    g.add_nodes_from(range(30))
    g.add_edges_from(zip(*a.nonzero(), strict=True))
    for direction, ref in (
        ("out", nx.out_degree_centrality),
        ("in", nx.in_degree_centrality),
        ("total", nx.degree_centrality),
    ):
        got = degree(_nl(a), normalise=True, direction=direction)
        np.testing.assert_allclose(got, [ref(g)[i] for i in range(30)], rtol=0, atol=1e-15)
        raw = degree(a, direction=direction)
        assert np.array_equal(raw, got * 29)
    assert degree(NeighbourList.from_lists([[]], num_keys=1), normalise=True).tolist() == [1.0]  # networkx: 1 node


def test_degree_weights_self_loops_and_errors():
    w = sp.csr_matrix(np.array([[1.0, 2.5, 0.0], [0.0, 0.0, 0.5], [0.0, 0.0, 0.0]]))
    assert degree(w).tolist() == [3.5, 0.5, 0.0]  # strength; the self loop counts once
    assert degree(w, direction="in").tolist() == [1.0, 2.5, 0.5]
    assert degree(w, direction="total", dtype=np.float32).dtype == np.float32
    with pytest.raises(InvalidConfig, match="direction must be one of 'out', 'in', 'total'; got 'both'"):
        degree(w, direction="both")
    with pytest.raises(InvalidConfig, match="dtype must be float32 or float64; got int64"):
        degree(w, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------- pagerank


def _google_reference(a: sp.csr_matrix, alpha: float, p: np.ndarray) -> np.ndarray:
    """Stationary distribution of the dense Google matrix from numpy.linalg.eig."""
    dense = a.toarray()
    out = dense.sum(1)
    n = len(dense)
    trans = np.where(out[:, None] > 0, dense / np.where(out > 0, out, 1.0)[:, None], p[None, :])  # dangling rows -> p
    google = alpha * trans + (1 - alpha) * np.ones((n, 1)) * p[None, :]
    vals, vecs = np.linalg.eig(google.T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


def test_pagerank_hand_derived():
    # 0 -> 1, 0 -> 2, 1 -> 2, 2 -> 0 with alpha = 1/2: x0 = 1/6 + x2/2, x1 = 1/6 + x0/4, x2 = 1/6 + x0/4 + x1/2.
    g = NeighbourList.from_lists([[1, 2], [2], [0]], num_keys=3)
    np.testing.assert_allclose(pagerank(g, alpha=0.5, tol=1e-15), np.array([14, 10, 15]) / 39, rtol=0, atol=1e-14)
    # 0 -> 1 with 1 dangling (its score spreads uniformly): x0 = 1/4 + x1/4, so x = (2/5, 3/5).
    dangling = NeighbourList.from_lists([[1], []], num_keys=2)
    np.testing.assert_allclose(pagerank(dangling, alpha=0.5, tol=1e-15), [0.4, 0.6], rtol=0, atol=1e-14)


@pytest.mark.parametrize("personalised", [False, True])
def test_pagerank_matches_dense_google_matrix(personalised):
    a = _random_directed(40, 120, seed=2)
    p = np.random.default_rng(3).random(40) if personalised else np.ones(40)
    got = pagerank(a, alpha=0.85, tol=1e-15, personalization=p if personalised else None)
    np.testing.assert_allclose(got, _google_reference(a, 0.85, p / p.sum()), rtol=0, atol=1e-12)
    assert got.min() > 0 and abs(got.sum() - 1) < 1e-12


def test_pagerank_matches_networkx():
    nx = pytest.importorskip("networkx")
    a = _random_directed(50, 160, seed=4)
    rng = np.random.default_rng(5)
    a.data = rng.uniform(0.5, 2.0, a.nnz)  # weighted, with self loops and dangling nodes
    g = nx.DiGraph()
    g.add_nodes_from(range(50))
    coo = a.tocoo()
    g.add_weighted_edges_from(zip(coo.row.tolist(), coo.col.tolist(), coo.data.tolist(), strict=True))
    pers = rng.random(50)
    for kwargs in ({}, {"personalization": pers}):
        nxkw = {"personalization": dict(enumerate(pers))} if kwargs else {}
        ref = nx.pagerank(g, alpha=0.9, tol=1e-14, max_iter=10_000, **nxkw)
        got = pagerank(a, alpha=0.9, tol=1e-14, **kwargs)
        np.testing.assert_allclose(got, [ref[i] for i in range(50)], rtol=0, atol=1e-11)


def test_pagerank_errors():
    g = NeighbourList.from_lists([[1, 2], [2], [0]], num_keys=3)
    with pytest.raises(NumericalInstability, match=r"did not converge in max_iter=3 iterations"):
        pagerank(g, max_iter=3)
    with pytest.raises(InvalidConfig, match=r"alpha must be in \[0, 1\).*got 1.0"):
        pagerank(g, alpha=1.0)
    with pytest.raises(NumericalInstability, match="alpha must be finite; got nan"):
        pagerank(g, alpha=float("nan"))
    with pytest.raises(InvalidConfig, match="tol must be > 0"):
        pagerank(g, tol=0.0)
    with pytest.raises(InvalidConfig, match="max_iter must be an integer >= 1; got 0"):
        pagerank(g, max_iter=0)
    with pytest.raises(
        DimensionMismatch, match=r"personalization must be a real array of shape \(3,\); got shape \(2,\)"
    ):
        pagerank(g, personalization=[1.0, 1.0])
    with pytest.raises(InvalidConfig, match="positive sum"):
        pagerank(g, personalization=[0.0, 0.0, 0.0])
    with pytest.raises(InvalidConfig, match="positive sum"):
        pagerank(g, personalization=[1.0, -1.0, 1.0])
    with pytest.raises(NumericalInstability, match="personalization holds NaN"):
        pagerank(g, personalization=[1.0, np.nan, 1.0])
    with pytest.raises(EmptyInput, match="no nodes"):
        pagerank(sp.csr_matrix((0, 0)))
    assert pagerank(g, alpha=0.0).tolist() == [1 / 3] * 3
    assert pagerank(g, dtype=np.float32).dtype == np.float32  # no edge followed: the teleport distribution


# ------------------------------------------------------------------------------------------------ Laplacian PE


def _compare_with_pyg_columns(ours, lam, pyg, lap, null, exact_spectrum):
    """Our columns ``ours`` (eigenvalues ``lam``) against PyG's ``pyg`` on the Laplacian ``lap``:

    * every column of both is a unit eigenvector (residual < 1e-8);
    * zero-eigenvalue columns of both lie in the analytic null space ``null`` (their choice within it is arbitrary);
    * each cluster of equal non-zero eigenvalues of ours is spanned equally by PyG's columns with that eigenvalue
      (principal cosines 1 to 1e-9; for a simple eigenvalue: the same vector up to sign, entries to 1e-7);
    * with ``exact_spectrum``, PyG's eigenvalue list equals ours.
    """
    lam_pyg = np.einsum("ij,ij->j", pyg, lap @ pyg)
    for v, w in ((ours, lam), (pyg, lam_pyg)):
        assert np.abs(lap @ v - v * w).max() < 1e-8
        np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, atol=1e-10)
        zero = v[:, np.abs(w) < 1e-9]
        assert np.abs(null @ (null.T @ zero) - zero).max(initial=0.0) < 1e-9
    if exact_spectrum:
        np.testing.assert_allclose(np.sort(lam_pyg), lam, rtol=0, atol=1e-10)
    for idx in _clusters(lam):
        if lam[idx[0]] < 1e-9:
            continue
        theirs = np.flatnonzero(np.abs(lam_pyg - lam[idx[0]]) < 1e-8)
        assert theirs.size == idx.size
        np.testing.assert_allclose(_principal_cosines(ours[:, idx], pyg[:, theirs]), 1.0, rtol=0, atol=1e-9)
        if idx.size == 1:
            a, b = ours[:, idx[0]], pyg[:, theirs[0]]
            np.testing.assert_allclose(a, b * np.sign(a @ b), rtol=0, atol=1e-7)


@pytest.mark.parametrize("which", ["three-components", "cora-giant"])
def test_laplacian_pe_matches_pyg(which, cora):
    pytest.importorskip("torch_geometric")
    from torch_geometric.transforms import AddLaplacianEigenvectorPE

    if which == "three-components":  # below PyG's 100-node threshold: its dense eigh path, exact multiplicities
        parts = [_random_connected(30, 20, seed=6), _random_connected(25, 15, seed=7), _random_connected(12, 6, seed=8)]
        a = sp.csr_matrix(sp.block_diag(parts))
        perm = np.random.default_rng(9).permutation(a.shape[0])
        a, k = sp.csr_matrix(a[perm][:, perm]), 10
    else:  # Cora's largest connected component (2,485 nodes): PyG's eigsh path, simple eigenvalues
        _, labels = connected_components(cora, directed=False)
        keep = np.flatnonzero(labels == np.argmax(np.bincount(labels)))
        a, k = sp.csr_matrix(cora[keep][:, keep]), 16
    ours, lam = laplacian_pe(a, k, return_eigenvalues=True)
    nxt = laplacian_pe(a, k + 1, return_eigenvalues=True)[1]
    assert nxt[-1] - nxt[-2] > 1e-6  # the k-th eigenvalue is not cut from a cluster: the span is well defined
    lap = (
        sp.csr_matrix(_sym_laplacian(a))
        if a.shape[0] < 100
        else sp.identity(a.shape[0])
        - sp.csr_matrix(
            sp.diags(1 / np.sqrt(np.asarray(a.sum(1)).ravel()))
            @ a
            @ sp.diags(1 / np.sqrt(np.asarray(a.sum(1)).ravel()))
        )
    )
    null, _ = _null_basis(a)
    pyg = AddLaplacianEigenvectorPE(k, is_undirected=True)(_pyg_data(a, float64=True)).laplacian_eigenvector_pe
    _compare_with_pyg_columns(ours, lam, pyg.numpy(), lap, null, exact_spectrum=True)
    # PyG's default float32 weights give a float32 eigensolve: the same vectors to about 1e-3.
    pyg32 = AddLaplacianEigenvectorPE(k, is_undirected=True)(_pyg_data(a, float64=False)).laplacian_eigenvector_pe
    if which == "cora-giant":
        cos = np.abs(np.einsum("ij,ij->j", ours, pyg32.numpy().astype(np.float64)))
        np.testing.assert_allclose(cos, 1.0, rtol=0, atol=1e-4)


def test_laplacian_pe_on_cora_handles_repeated_zero_eigenvalues(cora):
    """Cora has 78 connected components, so eigenvalue 0 repeats 78 times.  k = 80 takes the 81 smallest
    eigenvalues (78 zeros and 4.78e-3, 7.43e-3, 8.63e-3, all simple), drops the first zero: 77 null columns and
    3 non-zero ones.  References: dense numpy eigvalsh, the closed-form null space, PyG for the non-zero columns
    (PyG's ARPACK call finds only some of the 78 zeros, so its null columns are fewer: only checked to be null)."""
    k = 80
    ours, lam = laplacian_pe(cora, k, return_eigenvalues=True)
    dense = _sym_laplacian(cora)
    with threadpool_limits(1):  # a 2,708 x 2,708 dense solve: two BLAS threads on a busy 2-core machine spin
        ref = np.linalg.eigvalsh(dense)
    assert np.sum(ref < 1e-9) == 78 and ref[k + 1] - ref[k] > 1e-3
    np.testing.assert_allclose(lam, ref[1 : k + 1], rtol=0, atol=1e-10)
    null, labels = _null_basis(cora)
    zero = ours[:, :77]
    np.testing.assert_allclose(zero.T @ zero, np.eye(77), atol=1e-12)
    # span(null columns) = null space minus the vector of node 0's component (the dropped "trivial" one)
    first = null[:, np.flatnonzero(null[labels == labels[0]].any(axis=0))[0]]
    np.testing.assert_allclose(zero @ zero.T + np.outer(first, first), null @ null.T, rtol=0, atol=1e-12)
    pytest.importorskip("torch_geometric")
    from torch_geometric.transforms import AddLaplacianEigenvectorPE

    pyg = AddLaplacianEigenvectorPE(k, is_undirected=True)(_pyg_data(cora, float64=True)).laplacian_eigenvector_pe
    _compare_with_pyg_columns(ours, lam, pyg.numpy(), sp.csr_matrix(dense), null, exact_spectrum=False)


def test_laplacian_pe_eigsh_path_matches_dense_reference():
    a = _random_connected(150, 200, seed=10)  # over 100 nodes: ARPACK
    k = 12
    pe, lam = laplacian_pe(a, k, return_eigenvalues=True)
    w, v = np.linalg.eigh(_sym_laplacian(a))
    assert np.diff(w[: k + 2]).min() > 1e-4  # simple eigenvalues
    np.testing.assert_allclose(lam, w[1 : k + 1], rtol=0, atol=1e-12)
    signs = np.sign(np.einsum("ij,ij->j", pe, v[:, 1 : k + 1]))
    np.testing.assert_allclose(pe, v[:, 1 : k + 1] * signs, rtol=0, atol=1e-9)
    pe_si, lam_si = laplacian_pe(a, k, return_eigenvalues=True, shift_invert=True)  # ARPACK on (L + 1e-3 I)^-1
    np.testing.assert_allclose(lam_si, lam, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pe_si, pe, rtol=0, atol=1e-9)  # canonical signs: the same columns


def test_laplacian_pe_closed_forms_on_a_path():
    n, k = 10, 5
    path = _csr(n, [(i, i + 1) for i in range(n - 1)])
    j = np.arange(1, k + 1)
    _, lam = laplacian_pe(path, k, return_eigenvalues=True)
    np.testing.assert_allclose(lam, 1 - np.cos(np.pi * j / (n - 1)), rtol=0, atol=1e-12)  # sym
    pe, lam = laplacian_pe(path, k, normalization=None, return_eigenvalues=True)
    np.testing.assert_allclose(lam, 2 - 2 * np.cos(np.pi * j / n), rtol=0, atol=1e-12)  # D - A
    ref = np.cos(np.pi * np.outer(np.arange(n) + 0.5, j) / n)
    ref /= np.linalg.norm(ref, axis=0)
    np.testing.assert_allclose(np.abs(pe), np.abs(ref), rtol=0, atol=1e-12)
    pe, lam = laplacian_pe(path, k, normalization="rw", return_eigenvalues=True)
    np.testing.assert_allclose(lam, 1 - np.cos(np.pi * j / (n - 1)), rtol=0, atol=1e-12)
    dense = path.toarray()
    rw = np.eye(n) - dense / dense.sum(1, keepdims=True)
    np.testing.assert_allclose(rw @ pe, pe * lam, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(pe, axis=0), 1.0, atol=1e-12)


def test_laplacian_pe_repeated_eigenvalues_inside_a_component():
    n, k = 8, 6  # a cycle: eigenvalues 1 - cos(2 pi j / n), each but 0 and 2 twice
    cycle = _csr(n, [(i, (i + 1) % n) for i in range(n)])
    pe, lam = laplacian_pe(cycle, k, return_eigenvalues=True)
    ref = np.sort(1 - np.cos(2 * np.pi * np.arange(n) / n))
    np.testing.assert_allclose(lam, ref[1 : k + 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(pe.T @ pe, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(_sym_laplacian(cycle) @ pe, pe * lam, atol=1e-12)


def test_laplacian_pe_isolated_nodes_self_loops_and_direction():
    a = sp.csr_matrix(sp.block_diag([_csr(4, [(0, 1), (1, 2), (2, 3)]), sp.csr_matrix((1, 1)), _csr(3, [(0, 1)])]))
    n = a.shape[0]  # components: a 4-path, an isolated node (4), an edge (5-6), an isolated node (7)
    pe, lam = laplacian_pe(a, n - 2, return_eigenvalues=True)
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(_sym_laplacian(a))[1 : n - 1], rtol=0, atol=1e-12)
    iso = np.flatnonzero(np.isclose(lam, 1.0) & (np.abs(pe[4]) > 0.5))  # sym: an isolated node is eigenvalue 1, e_i
    assert iso.size == 1 and np.allclose(pe[:, iso[0]], np.eye(n)[4])
    _, lam0 = laplacian_pe(a, 3, normalization=None, return_eigenvalues=True)
    assert lam0.tolist() == [0.0, 0.0, 0.0]  # D - A: four components, four zeros, the first dropped
    looped = a + sp.identity(n)  # self loops are ignored (PyG's get_laplacian removes them)
    assert np.array_equal(laplacian_pe(looped, 5), laplacian_pe(a, 5))
    directed = sp.csr_matrix(sp.triu(a))  # each undirected edge once: symmetrised with max(A, Aᵀ)
    assert np.array_equal(laplacian_pe(directed, 5), laplacian_pe(a, 5))


@pytest.mark.parametrize("n", [60, 150])  # dense path and ARPACK path
def test_canonical_sign_is_deterministic_and_follows_a_relabelling(n):
    k = 8
    a = _random_connected(n, n, seed=11)
    assert np.diff(np.linalg.eigvalsh(_sym_laplacian(a))[: k + 2]).min() > 1e-4  # simple eigenvalues
    pe = laplacian_pe(a, k)
    assert np.array_equal(pe, laplacian_pe(a, k))
    top = pe[np.argmax(np.abs(pe), axis=0), np.arange(k)]
    assert (top > 0).all()
    perm = np.random.default_rng(12).permutation(n)  # new node i is old node perm[i]
    moved = laplacian_pe(_nl(sp.csr_matrix(a[perm][:, perm])), k)
    np.testing.assert_allclose(moved, pe[perm], rtol=0, atol=1e-9)


def test_sign_random_and_none():
    a = _random_connected(40, 30, seed=13)
    k = 6
    canonical = laplacian_pe(a, k)
    patterns = set()
    for seed in range(8):
        pe = laplacian_pe(a, k, sign="random", seed=seed)
        flips = np.sign(np.einsum("ij,ij->j", pe, canonical))
        np.testing.assert_allclose(pe, canonical * flips, rtol=0, atol=0)
        assert np.array_equal(pe, laplacian_pe(a, k, sign="random", seed=seed))
        patterns.add(tuple(flips))
    assert len(patterns) > 1
    raw = laplacian_pe(a, k, sign="none")
    np.testing.assert_allclose(np.abs(raw), np.abs(canonical), rtol=0, atol=1e-12)


def test_laplacian_pe_dtype_and_errors():
    a = _random_connected(12, 6, seed=14)
    assert laplacian_pe(a, 3, dtype=np.float32).dtype == np.float32
    pe, lam = laplacian_pe(a, 3, return_eigenvalues=True, dtype=np.float32)
    assert pe.dtype == lam.dtype == np.float32 and pe.shape == (12, 3)
    for k in (0, -1, 11, 12, 2.0, True):
        with pytest.raises(InvalidConfig, match=rf"1 <= k < N - 1 = 11 .*got k={k!r} for N=12 nodes"):
            laplacian_pe(a, k)
    with pytest.raises(InvalidConfig, match="normalization must be one of 'sym', 'rw', None; got 'L'"):
        laplacian_pe(a, 2, normalization="L")
    with pytest.raises(InvalidConfig, match="sign must be one of 'canonical', 'random', 'none'; got 'up'"):
        laplacian_pe(a, 2, sign="up")
    with pytest.raises(InvalidConfig, match="seed only drives sign='random'"):
        laplacian_pe(a, 2, seed=0)
    with pytest.raises(DimensionMismatch, match="laplacian_pe: the graph must be square"):
        laplacian_pe(NeighbourList.from_lists([[1], [0]], num_keys=5), 1)


# ---------------------------------------------------------------------------------------------- random-walk PE


@pytest.mark.filterwarnings("ignore:Sparse:UserWarning")  # torch: sparse CSR is beta, invariant checks off
def test_random_walk_pe_matches_pyg_on_cora(cora):
    pytest.importorskip("torch_geometric")
    from torch_geometric.transforms import AddRandomWalkPE

    k = 8
    ours = random_walk_pe(_nl(cora), k)
    ref = AddRandomWalkPE(walk_length=k)(_pyg_data(cora, float64=False)).random_walk_pe.numpy()
    assert ref.shape == ours.shape == (cora.shape[0], k)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)  # PyG: float32 torch sparse CSR products
    np.testing.assert_allclose(random_walk_pe(cora, k, block_size=1000), ours, rtol=0, atol=1e-14)


def test_random_walk_pe_matches_pyg_and_matrix_powers_on_a_directed_graph():
    a = _random_directed(60, 200, seed=15)  # self loops, dangling nodes, no symmetry
    k = 7
    ours = random_walk_pe(a, k)
    dense = a.toarray()
    out = dense.sum(1, keepdims=True)
    p = np.divide(dense, out, out=np.zeros_like(dense), where=out > 0)
    ref = np.stack([np.diag(np.linalg.matrix_power(p, t)) for t in range(1, k + 1)], axis=1)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-14)
    pytest.importorskip("torch_geometric")
    from torch_geometric.transforms import AddRandomWalkPE

    torch = pytest.importorskip("torch")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # PyG's dense path (N <= 2,000) builds its matrix in the default dtype
    try:
        pyg = AddRandomWalkPE(walk_length=k)(_pyg_data(a, float64=True)).random_walk_pe.numpy()
    finally:
        torch.set_default_dtype(default)
    np.testing.assert_allclose(ours, pyg, rtol=0, atol=1e-14)


@pytest.mark.parametrize("length", [10, 7])
def test_random_walk_pe_on_a_cycle(length):
    cycle = NeighbourList.from_lists([[(i - 1) % length, (i + 1) % length] for i in range(length)], num_keys=length)
    k = 25  # longer than the cycle: walks wrap around
    pe = random_walk_pe(cycle, k)
    # back at the start after t steps iff (right steps - left steps) = t - 2m is a multiple of the length
    closed = [sum(math.comb(t, m) for m in range(t + 1) if (t - 2 * m) % length == 0) / 2**t for t in range(1, k + 1)]
    np.testing.assert_allclose(pe, np.tile(closed, (length, 1)), rtol=0, atol=1e-14)
    assert pe[0, 1] == 0.5
    if length % 2 == 0:
        assert (pe[:, 0::2] == 0).all()  # bipartite: no return after an odd number of steps


def test_random_walk_pe_blocks_give_the_same_numbers():
    a = _random_connected(200, 300, seed=16)
    ref = random_walk_pe(a, 9)
    for rows in (1, 7, 64, 500):
        np.testing.assert_allclose(random_walk_pe(a, 9, block_size=rows), ref, rtol=0, atol=1e-15)
    assert random_walk_pe(a, 3, dtype=np.float32).dtype == np.float32
    assert random_walk_pe(sp.csr_matrix((0, 0)), 3).shape == (0, 3)
    with pytest.raises(InvalidConfig, match="random_walk_pe: k must be an integer >= 1; got 0"):
        random_walk_pe(a, 0)
    with pytest.raises(InvalidConfig, match="block_size must be an integer >= 1; got 0"):
        random_walk_pe(a, 2, block_size=0)


# ------------------------------------------------------------------------------------------------- sinusoidal


def test_sinusoidal_matches_the_formula_and_depends_on_offsets_only():
    pos = np.array([0.0, 1.0, 2.5, -3.0, 17.0, 1e3])
    dim, base = 16, 10000.0
    pe = sinusoidal_encoding(pos, dim, base=base)
    for n, x in enumerate(pos):
        for i in range(dim // 2):
            w = base ** (-2 * i / dim)
            assert pe[n, 2 * i] == pytest.approx(math.sin(x * w), abs=1e-12)
            assert pe[n, 2 * i + 1] == pytest.approx(math.cos(x * w), abs=1e-12)
    freq = base ** (-np.arange(0, dim, 2) / dim)
    gram = pe @ pe.T
    np.testing.assert_allclose(gram, np.cos(np.subtract.outer(pos, pos)[..., None] * freq).sum(-1), atol=1e-10)
    shifted = sinusoidal_encoding(pos + 4.25, dim, base=base)
    np.testing.assert_allclose(shifted @ shifted.T, gram, atol=1e-10)
    assert np.array_equal(sinusoidal_encoding(np.arange(4), 8), sinusoidal_encoding([0.0, 1.0, 2.0, 3.0], 8))
    assert sinusoidal_encoding([1, 2], 4, dtype=np.float32).dtype == np.float32
    assert sinusoidal_encoding([], 4).shape == (0, 4)


def test_sinusoidal_errors():
    with pytest.raises(InvalidConfig, match=r"dim must be even .* got 5\. Try 6\."):
        sinusoidal_encoding([1], 5)
    with pytest.raises(InvalidConfig, match="dim must be an integer >= 2; got 0"):
        sinusoidal_encoding([1], 0)
    with pytest.raises(NumericalInstability, match="positions hold NaN"):
        sinusoidal_encoding([1.0, np.nan], 4)
    with pytest.raises(DimensionMismatch, match=r"flat array of real numbers; got shape \(2, 1\)"):
        sinusoidal_encoding([[1], [2]], 4)
    with pytest.raises(DimensionMismatch, match="dtype <U1"):
        sinusoidal_encoding(["a"], 4)
    with pytest.raises(InvalidConfig, match="base must be > 0"):
        sinusoidal_encoding([1], 4, base=-2.0)


# ---------------------------------------------------------------------------------------------- LayerEmbedding


def test_layer_embedding_lookup_and_gradient_against_finite_differences():
    emb = LayerEmbedding(5, 4, seed=0, dtype=np.float64)
    ids = np.array([[3, 0], [3, 4], [1, 3]])  # repeated ids accumulate
    y = emb(ids)
    assert y.shape == (3, 2, 4) and np.array_equal(y, emb.weight.data[ids])
    c = np.random.default_rng(1).standard_normal(y.shape)  # loss = sum(c * y)
    assert emb.backward(c) is None
    numeric = np.zeros_like(emb.weight.data)
    h = 1e-6
    for idx in np.ndindex(*emb.weight.data.shape):
        old = emb.weight.data[idx]
        emb.weight.data[idx] = old + h
        up = np.sum(c * emb.forward(ids))
        emb.weight.data[idx] = old - h
        down = np.sum(c * emb.forward(ids))
        emb.weight.data[idx] = old
        numeric[idx] = (up - down) / (2 * h)
    np.testing.assert_allclose(emb.weight.grad, numeric, rtol=0, atol=1e-8)
    assert emb.weight.grad[2].tolist() == [0.0] * 4  # never looked up
    emb.zero_grad()
    assert not emb.weight.grad.any()


def test_layer_embedding_init_and_module_contract():
    emb = LayerEmbedding(200, 64, seed=2)
    assert emb.weight.data.dtype == np.float32 and emb.parameters() == [emb.weight]
    assert abs(emb.weight.data.std() - 1 / 8) < 0.005  # N(0, 1/dim)
    assert np.array_equal(LayerEmbedding(200, 64, seed=2).weight.data, emb.weight.data)
    assert abs(LayerEmbedding(200, 64, std=1.0, seed=3).weight.data.std() - 1.0) < 0.03  # torch's nn.Embedding
    assert set(emb.state_dict()) == {"weight"}
    assert repr(LayerEmbedding(3, 4)) == "LayerEmbedding(3, 4, std=0.5)"


def test_layer_embedding_errors():
    emb = LayerEmbedding(3, 2, seed=0)
    with pytest.raises(InvalidConfig, match="call forward first"):
        emb.backward(np.ones((1, 2)))
    with pytest.raises(OutOfBounds, match=r"layer ids must be in \[0, 3\); got 3"):
        emb([0, 3])
    with pytest.raises(OutOfBounds, match="got -1"):
        emb([-1])
    with pytest.raises(DimensionMismatch, match="integer ids; got dtype float64"):
        emb([1.0])
    emb([0, 1])
    with pytest.raises(DimensionMismatch, match=r"dy has shape \(3, 2\), expected \(2, 2\)"):
        emb.backward(np.ones((3, 2)))
    with pytest.raises(InvalidConfig, match="num_layers must be an integer >= 1; got 0"):
        LayerEmbedding(0, 2)
    with pytest.raises(InvalidConfig, match="std must be >= 0"):
        LayerEmbedding(2, 2, std=-1.0)
    with pytest.raises(InvalidConfig, match="dtype must be float32 or float64; got float16"):
        LayerEmbedding(2, 2, dtype=np.float16)
