"""The HNSW index wrapper: faiss's graph read as per-layer neighbour lists, its level distribution, search
recall against exact kNN, and a round trip through faiss's own arrays."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
from scipy import stats

from ruvattn import DimensionMismatch, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.datasets.synthetic import clustered_graph
from ruvattn.errors import MissingDependency

faiss = pytest.importorskip("faiss")

from ruvattn.graph.hnsw import HNSWIndex, level_probabilities  # noqa: E402 (after the skip)


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    return clustered_graph(n_nodes=6000, dim=32, n_clusters=24, k=1, seed=3).embeddings


@pytest.fixture(scope="module")
def index(clustered: np.ndarray) -> HNSWIndex:
    return HNSWIndex.build(clustered, M=8, ef_construction=64, seed=7)


def _layer_by_loop(ix: HNSWIndex, level: int) -> list[list[int]]:
    """An independent reading of faiss's flat arrays (copies through vector_to_array, one node at a time)."""
    h = ix.index.hnsw
    levels = faiss.vector_to_array(h.levels)
    offsets = faiss.vector_to_array(h.offsets)
    neighbors = faiss.vector_to_array(h.neighbors)
    cum = faiss.vector_to_array(h.cum_nneighbor_per_level)
    out = []
    for i in range(ix.num_nodes):
        if levels[i] - 1 < level:
            out.append([])
            continue
        start = int(offsets[i])
        slots = neighbors[start + int(cum[level]) : start + int(cum[level + 1])]
        out.append([int(j) for j in slots if j >= 0])
    return out


def test_layers_are_faiss_lists(index: HNSWIndex) -> None:
    assert index.num_layers >= 3
    for level in range(index.num_layers):
        nl = index.layer(level)
        ref = _layer_by_loop(index, level)
        assert nl.num_nodes == index.num_nodes == nl.num_keys
        for i in range(0, index.num_nodes, 7):
            assert nl.neighbours(i).tolist() == ref[i]
        on = index.levels >= level
        deg = nl.degrees()
        assert (deg[~on] == 0).all()  # a node absent from the layer has no list there
        assert deg.max() <= (2 * index.M if level == 0 else index.M)
        assert on[nl.indices].all()  # a layer's links stay on that layer
    assert index.layer(1) is index.layer(1)  # built once
    assert index.levels[index.entry_point] == index.max_level == index.levels.max()


def test_level_histogram_follows_the_hnsw_distribution() -> None:
    x = np.random.default_rng(0).standard_normal((40000, 4)).astype(np.float32)
    for seed, M in ((1, 4), (2, 8)):
        ix = HNSWIndex.build(x, M=M, ef_construction=8, seed=seed)
        counts = ix.level_histogram()
        p = level_probabilities(M, counts.size)
        p[-1] += 1 - p.sum()  # the tail beyond the last observed level
        expected = p * counts.sum()
        keep = expected >= 5  # chi-square cells with enough mass; the rest pooled
        obs = np.append(counts[keep], counts[~keep].sum())
        exp = np.append(expected[keep], expected[~keep].sum())
        if exp[-1] < 5:
            obs, exp = np.append(obs[:-2], obs[-2:].sum()), np.append(exp[:-2], exp[-2:].sum())
        assert stats.chisquare(obs, exp).pvalue > 1e-4, (M, counts, expected)
        assert counts[0] / counts.sum() == pytest.approx(1 - 1 / M, abs=0.01)


def test_level_probabilities_hand_values() -> None:
    p = level_probabilities(16, 4)
    np.testing.assert_allclose(p, [15 / 16, 15 / 256, 15 / 4096, 15 / 65536])
    with pytest.raises(InvalidConfig):
        level_probabilities(1)


def test_search_recall_against_exact_knn(clustered: np.ndarray, index: HNSWIndex) -> None:
    rng = np.random.default_rng(11)
    q = clustered[rng.choice(clustered.shape[0], 200, replace=False)] + 0.02 * rng.standard_normal((200, 32)).astype(
        np.float32
    )
    d2 = ((q[:, None, :].astype(np.float64) - clustered[None].astype(np.float64)) ** 2).sum(-1)
    exact = np.argsort(d2, axis=1)[:, :10]
    recalls = {}
    for ef in (10, 32, 128):
        res = index.search(q, 10, ef=ef)
        recalls[ef] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids, exact, strict=True)])
        np.testing.assert_allclose(res.distances, np.take_along_axis(d2, res.ids, 1), rtol=1e-4, atol=1e-5)
        assert res.distance_computations > 0 and res.hops > 0
    assert recalls[10] <= recalls[32] <= recalls[128]
    assert recalls[128] >= 0.97, recalls
    # more candidates cost more distance computations
    assert index.search(q, 10, ef=128).distance_computations > index.search(q, 10, ef=10).distance_computations


def test_inner_product_metric(clustered: np.ndarray) -> None:
    ix = HNSWIndex.build(clustered, M=8, ef_construction=64, metric="ip", seed=1)
    q = clustered[:50]
    res = ix.search(q, 5, ef=64)
    exact = np.argsort(-(q @ clustered.T), axis=1)[:, :5]
    assert ix.metric == "ip"
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(res.ids, exact, strict=True)]) >= 0.95
    np.testing.assert_allclose(res.distances, np.take_along_axis(q @ clustered.T, res.ids, 1), rtol=1e-5)


def test_round_trip_through_faiss_arrays(clustered: np.ndarray, index: HNSWIndex) -> None:
    arrays = index.arrays()
    copy = HNSWIndex.from_arrays(clustered, arrays, M=index.M)
    assert copy.entry_point == index.entry_point and copy.max_level == index.max_level
    np.testing.assert_array_equal(copy.levels, index.levels)
    for level in range(index.num_layers):
        np.testing.assert_array_equal(copy.layer(level).indptr, index.layer(level).indptr)
        np.testing.assert_array_equal(copy.layer(level).indices, index.layer(level).indices)
    q = clustered[:100] + 0.01
    a, b = index.search(q, 10, ef=32), copy.search(q, 10, ef=32)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.distance_computations == b.distance_computations
    # wrapping faiss's own index reads it in place
    wrapped = HNSWIndex.from_faiss(index.index)
    np.testing.assert_array_equal(wrapped.search(q, 10, ef=32).ids, a.ids)
    # the arrays and vectors are views of faiss's memory, not copies
    assert not arrays.neighbors.flags.owndata and not index.vectors.flags.owndata
    np.testing.assert_array_equal(index.vectors, clustered)
    with pytest.raises(DimensionMismatch):
        HNSWIndex.from_arrays(clustered, arrays, M=index.M + 1)
    with pytest.raises(DimensionMismatch):
        HNSWIndex.from_arrays(clustered[:-1], arrays, M=index.M)


def test_reproducible_with_one_thread(clustered: np.ndarray) -> None:
    a = HNSWIndex.build(clustered[:2000], M=6, ef_construction=32, seed=5)
    b = HNSWIndex.build(clustered[:2000], M=6, ef_construction=32, seed=5)
    c = HNSWIndex.build(clustered[:2000], M=6, ef_construction=32, seed=6)
    np.testing.assert_array_equal(a.arrays().neighbors, b.arrays().neighbors)
    assert not np.array_equal(a.levels, c.levels)


def test_bad_inputs(clustered: np.ndarray, index: HNSWIndex) -> None:
    with pytest.raises(NumericalInstability):
        HNSWIndex.build(np.array([[0.0, np.nan]]))
    with pytest.raises(NumericalInstability):
        HNSWIndex.build(np.array([[1e300, 0.0]]))
    with pytest.raises(InvalidConfig):
        HNSWIndex.build(clustered[:10], M=1)
    with pytest.raises(InvalidConfig):
        HNSWIndex.build(clustered[:10], metric="cosine")
    with pytest.raises(DimensionMismatch):
        HNSWIndex.build(np.zeros(5))
    with pytest.raises(DimensionMismatch):
        index.search(np.zeros((2, 31), np.float32), 3)
    with pytest.raises(InvalidConfig):
        index.search(clustered[:2], 0)
    with pytest.raises(InvalidConfig):
        index.search(clustered[:2], 10, ef=5)
    with pytest.raises(OutOfBounds):
        index.layer(index.num_layers)
    with pytest.raises(InvalidConfig):
        HNSWIndex.from_faiss(faiss.IndexFlatL2(4))
    with pytest.raises(OutOfBounds):
        HNSWIndex.build(np.zeros((0, 4), np.float32)).search(np.zeros((1, 4), np.float32), 1)


def test_missing_faiss_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kwargs)

    import importlib
    import sys

    monkeypatch.delitem(sys.modules, "faiss")
    monkeypatch.setattr(importlib, "import_module", lambda name: fake_import(name))
    with pytest.raises(MissingDependency, match=r"ruvattn\[hnsw\]"):
        HNSWIndex.build(np.zeros((3, 2), np.float32))


def test_nearest_others_excludes_the_node_and_matches_exact_knn(clustered: np.ndarray, index: HNSWIndex) -> None:
    rows = np.arange(0, 6000, 37)
    got = index.nearest_others(rows, 8)
    assert got.shape == (rows.size, 8) and (got >= 0).all()
    assert not (got == rows[:, None]).any()
    d2 = ((clustered[rows, None, :].astype(np.float64) - clustered[None].astype(np.float64)) ** 2).sum(-1)
    d2[np.arange(rows.size), rows] = np.inf
    exact = np.argsort(d2, axis=1)[:, :8]
    assert np.mean([len(set(a) & set(b)) / 8 for a, b in zip(got, exact, strict=True)]) >= 0.95
    with pytest.raises(InvalidConfig):
        index.nearest_others(rows, index.num_nodes)
    with pytest.raises(OutOfBounds):
        index.nearest_others([index.num_nodes], 3)


def test_resolve_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    from ruvattn.graph import hnsw

    assert hnsw.resolve_graph("auto") == "hnsw" and hnsw.resolve_graph("knn") == "knn"
    with pytest.raises(InvalidConfig):
        hnsw.resolve_graph("exact")

    def missing() -> None:
        raise MissingDependency("HNSWIndex needs faiss (the faiss-cpu package): pip install 'ruvattn[hnsw]'.")

    monkeypatch.setattr(hnsw, "faiss_module", missing)
    assert hnsw.resolve_graph("auto") == "knn"
    with pytest.raises(MissingDependency, match="hnsw"):
        hnsw.resolve_graph("hnsw")
