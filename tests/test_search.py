"""Traced HNSW searches: the same answers as faiss's search on the same index, a consistent record of every
step, and greedy walks that end in a local minimum."""

from __future__ import annotations

import numpy as np
import pytest

from ruvattn import DimensionMismatch, InvalidConfig
from ruvattn.datasets.synthetic import clustered_graph
from ruvattn.graph.hnsw import HNSWIndex  # faiss is imported when an index is built
from ruvattn.graph.search import trace_search

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def setup():
    x = clustered_graph(n_nodes=5000, dim=24, n_clusters=20, k=1, seed=5).embeddings
    index = HNSWIndex.build(x, M=8, ef_construction=64, seed=3)
    rng = np.random.default_rng(2)
    q = x[rng.choice(5000, 60, replace=False)] + 0.02 * rng.standard_normal((60, 24)).astype(np.float32)
    return x, index, q


@pytest.mark.parametrize("ef", [10, 40])
def test_beam_search_agrees_with_faiss(setup, ef: int) -> None:
    x, index, q = setup
    overlap, mine, theirs = [], 0, 0
    for qq in q:
        t = trace_search(index, qq, 10, ef=ef)
        r = index.search(qq[None], 10, ef=ef)
        overlap.append(len(set(t.ids.tolist()) & set(r.ids[0].tolist())) / 10)
        mine += t.distance_computations
        theirs += r.distance_computations
        d = ((x[t.ids].astype(np.float64) - qq.astype(np.float64)) ** 2).sum(1)
        np.testing.assert_allclose(t.distances, d, rtol=1e-12)
        assert (np.diff(t.distances) >= 0).all()
    assert np.mean(overlap) >= 0.98
    assert 0.8 <= mine / theirs <= 1.05, (mine, theirs)  # faiss recomputes distances in the upper-layer descent


def test_the_record_is_consistent(setup) -> None:
    _, index, q = setup
    t = trace_search(index, q[0], 10, ef=32)
    assert t.steps[0].node == index.entry_point and t.steps[0].layer == index.max_level
    assert t.visited.size == np.unique(t.visited).size == t.distance_computations
    layers = [s.layer for s in t.steps]
    assert layers == sorted(layers, reverse=True)  # top layer down to 0
    evaluated = [index.entry_point]
    for s in t.steps:
        assert set(s.evaluated.tolist()) <= set(index.layer(s.layer).neighbours(s.node).tolist())
        evaluated += s.evaluated.tolist()
    assert evaluated == t.visited.tolist()
    assert t.steps[-1].beam[0] == t.ids[0] and t.steps[-1].beam.size <= 32


def test_greedy_walk_ends_in_a_local_minimum(setup) -> None:
    x, index, q = setup
    for qq in q[:20]:
        t = trace_search(index, qq, 1, mode="greedy")
        end = t.path[-1]
        d_end = ((x[end] - qq) ** 2).sum()
        nbrs = index.layer(0).neighbours(end)
        assert (((x[nbrs] - qq) ** 2).sum(1) >= d_end - 1e-6).all()
        assert t.ids[0] == end
        assert t.distance_computations < trace_search(index, qq, 1, ef=32).distance_computations


def test_an_indexed_vector_finds_itself(setup) -> None:
    x, index, _ = setup
    for i in (0, 17, 4999):
        assert trace_search(index, x[i], 1, ef=32).ids[0] == i


def test_bad_inputs(setup) -> None:
    x, index, _ = setup
    with pytest.raises(DimensionMismatch):
        trace_search(index, x[0, :5])
    with pytest.raises(InvalidConfig):
        trace_search(index, x[0], 10, ef=5)
    with pytest.raises(InvalidConfig):
        trace_search(index, x[0], mode="dfs")
    with pytest.raises(InvalidConfig):
        trace_search(x, x[0])
