"""Hard-negative mining: the two-hop kernel against its numpy twin, its guards, its recall of the exact (all-pairs)
hard negatives on a clustered kNN graph, the all-pairs reference against brute force, and the one-anchor form."""

from __future__ import annotations

import numpy as np
import pytest

from ruvattn import DimensionMismatch, InvalidConfig, NeighbourList, NumericalInstability, OutOfBounds
from ruvattn.datasets import clustered_graph
from ruvattn.mining import exact_hard_negatives, mine_hard_negatives, sample_hard_negatives
from ruvattn.reference.mining import two_hop_negatives


def _graph(n=80, k=5, seed=0):
    g = clustered_graph(n_nodes=n, dim=12, n_clusters=4, k=k, seed=seed, spread=1.0)
    return g, NeighbourList.from_padded(g.neighbours, num_keys=n)


@pytest.mark.parametrize("strategy", ["distance", "degree", "mixed"])
@pytest.mark.parametrize("guards", [False, True])
@pytest.mark.parametrize("expand", [0, 2])
def test_kernel_matches_numpy_twin(strategy, guards, expand):
    g, nl = _graph()
    labels = g.labels.copy()
    labels[::7] = -1  # some nodes without a label
    kw = {"labels": labels, "max_similarity": 0.9} if guards else {}
    got = mine_hard_negatives(g.embeddings, nl, 6, strategy=strategy, mix=0.3, expand=expand, **kw)
    x = g.embeddings / np.linalg.norm(g.embeddings, axis=1, keepdims=True)
    want = two_hop_negatives(x.astype(np.float64), nl.indptr, nl.indices, labels if guards else None,
                             0.9 if guards else np.inf, strategy, 0.3, 6, expand)  # fmt: skip
    np.testing.assert_array_equal(got, want)


def test_guards_hold_for_every_returned_negative():
    g, nl = _graph(n=120, k=6, seed=1)
    neg, sim = mine_hard_negatives(g.embeddings, nl, 8, labels=g.labels, max_similarity=0.8, return_similarity=True)
    x = g.embeddings / np.linalg.norm(g.embeddings, axis=1, keepdims=True)
    for i in range(len(neg)):
        row = neg[i][neg[i] >= 0]
        own = set(nl.indices[nl.indptr[i] : nl.indptr[i + 1]].tolist()) | {i}
        assert not own & set(row.tolist())  # never a positive (neighbour) or the node itself
        assert (g.labels[row] != g.labels[i]).all()  # never the same class
        np.testing.assert_allclose(sim[i][: len(row)], x[row] @ x[i], rtol=1e-5, atol=1e-6)
        assert (sim[i][: len(row)] <= 0.8 + 1e-6).all()
        assert (np.diff(sim[i][: len(row)]) <= 1e-7).all()  # most similar first
        assert np.isnan(sim[i][len(row) :]).all()


def test_two_hop_mining_recalls_most_exact_hard_negatives():
    g = clustered_graph(n_nodes=1500, dim=16, n_clusters=12, k=16, seed=2)
    graph = NeighbourList.from_padded(g.neighbours, num_keys=1500)  # positives: the 16 nearest
    k = 5
    exact = exact_hard_negatives(g.embeddings, k, positives=graph)
    recall = []
    for e in (0, 1, 2):
        mined = mine_hard_negatives(g.embeddings, graph, k, expand=e)
        recall.append(np.mean([len(set(a) & set(b)) / k for a, b in zip(mined, exact, strict=True)]))
    assert recall[0] > 0.6 and recall[1] >= recall[0] and recall[2] >= recall[1], recall  # expansion only adds


def test_exact_reference_equals_brute_force():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 5))
    labels = rng.integers(0, 3, 60)
    pos = NeighbourList.from_padded(rng.integers(0, 60, (60, 3)), num_keys=60)
    got = exact_hard_negatives(x, 4, positives=pos, labels=labels, max_similarity=0.95, block=7)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i in range(60):
        s = u @ u[i]
        bad = {i, *pos.indices[pos.indptr[i] : pos.indptr[i + 1]].tolist()}
        ok = [j for j in np.argsort(-s, kind="stable") if j not in bad and labels[j] != labels[i] and s[j] <= 0.95]
        np.testing.assert_array_equal(got[i][got[i] >= 0], ok[:4])


def test_sample_hard_negatives_one_anchor():
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((50, 6))
    anchor = emb[0] + 0.01 * rng.standard_normal(6)
    got = sample_hard_negatives(anchor, emb, [0, 1], 3)
    sims = emb @ anchor / np.linalg.norm(emb, axis=1) / np.linalg.norm(anchor)
    sims[[0, 1]] = -np.inf
    np.testing.assert_array_equal(got, emb[np.argsort(-sims)[:3]])
    degrees = rng.integers(1, 20, 50)
    by_degree = sample_hard_negatives(anchor, emb, [0, 1], 4, "degree", degrees=degrees)
    idx = [int(np.flatnonzero((emb == r).all(1))[0]) for r in by_degree]
    gap = np.abs(np.log1p(degrees[idx]) - np.median(np.log1p(degrees[[0, 1]])))
    assert (np.diff(gap) >= -1e-12).all() and 0 not in idx and 1 not in idx
    assert sample_hard_negatives(anchor, emb, [0, 1], 4, "mixed", degrees=degrees).shape == (4, 6)


def test_bad_inputs():
    g, nl = _graph()
    with pytest.raises(InvalidConfig, match="strategy"):
        mine_hard_negatives(g.embeddings, nl, 3, strategy="random")
    with pytest.raises(InvalidConfig, match="k must"):
        mine_hard_negatives(g.embeddings, nl, 0)
    with pytest.raises(DimensionMismatch, match="labels"):
        mine_hard_negatives(g.embeddings, nl, 3, labels=np.zeros(3, int))
    with pytest.raises(DimensionMismatch, match="80 × 80"):
        mine_hard_negatives(g.embeddings[:40], nl, 3)
    with pytest.raises(InvalidConfig, match="needs degrees"):
        sample_hard_negatives(g.embeddings[0], g.embeddings, [1], 3, "degree")
    with pytest.raises(OutOfBounds):
        sample_hard_negatives(g.embeddings[0], g.embeddings, [100], 3)
    x = g.embeddings.copy()
    x[3, 0] = np.nan
    with pytest.raises(NumericalInstability, match="finite"):
        mine_hard_negatives(x, nl, 3)
