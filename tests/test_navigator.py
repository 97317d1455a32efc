"""The HNSW navigator: its exact walk is faiss's search (same results, same count), its per-edge tables equal a
numpy reading of the vectors, and the learned admission test spends fewer distance computations for nearly the
same recall."""

from __future__ import annotations

import numpy as np
import pytest

from ruvattn import DimensionMismatch, InvalidConfig

pytest.importorskip("faiss")

from ruvattn.graph.hnsw import HNSWIndex
from ruvattn.graph.navigator import Navigator


def _clusters(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, 40, n)] + 0.35 * rng.standard_normal((n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def setup():
    x = _clusters(8300, 32, 3)
    base, test, train = x[:8000], x[8000:8200], x[8200:]
    index = HNSWIndex.build(base, M=12, ef_construction=100, seed=2)
    nav = Navigator(index).fit(train, miss_rate=0.003)
    d2 = ((test[:, None, :].astype(np.float64) - base[None].astype(np.float64)) ** 2).sum(-1)
    return base, test, index, nav, np.argsort(d2, axis=1)[:, :10], d2


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(ids, truth, strict=True)])
    )


@pytest.mark.parametrize("ef", [10, 32])
def test_the_exact_walk_is_faiss_search(setup, ef: int) -> None:
    _, test, index, nav, _, _ = setup
    mine = nav.exact(test, 10, ef=ef)
    for i in range(0, 200, 20):  # faiss's counter is per call: one query at a time
        theirs = index.search(test[i], 10, ef=ef)
        np.testing.assert_array_equal(mine.ids[i], theirs.ids[0])
        assert mine.full[i] == theirs.distance_computations + 1  # faiss does not count the entry point
    assert not mine.partial.any()


def test_edge_tables_equal_numpy(setup) -> None:
    base, _, index, nav, _, _ = setup
    layer0 = index.layer(0)
    src = np.repeat(np.arange(index.num_nodes), layer0.degrees())
    rng = np.random.default_rng(0)
    for e in rng.choice(layer0.nnz, 50, replace=False):
        b = base[layer0.indices[e]].astype(np.float64) - base[src[e]].astype(np.float64)
        assert nav._bsq[e] == pytest.approx((b**2).sum(), rel=1e-5)
        order = nav._order[e].astype(np.int64)
        mags = np.abs(b)[order]
        assert (np.diff(mags) <= 1e-12).all() and mags[-1] >= np.sort(np.abs(b))[::-1][nav.sketch - 1] - 1e-12
        for j, r in enumerate(nav.checkpoints):
            assert nav._tails[e, j] == pytest.approx((b**2).sum() - (b[order[:r]] ** 2).sum(), rel=1e-4, abs=1e-6)


def test_navigated_search_costs_less_for_nearly_the_same_recall(setup) -> None:
    _, test, _, nav, truth, d2 = setup
    for ef in (16, 32, 64):
        exact, navigated = nav.exact(test, 10, ef=ef), nav.search(test, 10, ef=ef)
        r_exact, r_nav = _recall(exact.ids, truth), _recall(navigated.ids, truth)
        assert r_nav >= r_exact - 0.02, (ef, r_nav, r_exact)
        assert navigated.cost.mean() <= 0.9 * exact.full.mean(), (ef, navigated.cost.mean(), exact.full.mean())
        assert navigated.optimistic_cost.mean() <= 0.7 * exact.full.mean()
        np.testing.assert_allclose(navigated.distances, np.take_along_axis(d2, navigated.ids, 1), rtol=1e-5)
    loose = Navigator(nav.index).fit(test[:100], miss_rate=0.2)
    tight = Navigator(nav.index).fit(test[:100], miss_rate=0.001)
    a, b = loose.search(test, 10, ef=32), tight.search(test, 10, ef=32)
    assert a.cost.mean() < b.cost.mean() and _recall(a.ids, truth) <= _recall(b.ids, truth)


def test_bad_inputs(setup) -> None:
    base, test, index, nav, _, _ = setup
    with pytest.raises(InvalidConfig):
        Navigator(HNSWIndex.build(base[:500], M=4, metric="ip"))
    with pytest.raises(InvalidConfig):
        Navigator(index).search(test, 10)  # not fitted
    with pytest.raises(DimensionMismatch):
        nav.search(test[:, :5], 10)
    with pytest.raises(InvalidConfig):
        nav.search(test, 10, ef=4)
    with pytest.raises(InvalidConfig):
        Navigator(index, sketch=0)
    with pytest.raises(InvalidConfig):
        nav.fit(test, miss_rate=1.5)


def test_the_search_path_view_takes_the_navigator(setup) -> None:
    pytest.importorskip("plotly")
    from ruvattn.widgets import SearchPathView

    _, test, index, nav, _, _ = setup
    view = SearchPathView(index, test[:3], policies={"navigator": nav.trace}, mode="navigator", ef=32)
    t = view.state.trace
    res = nav.search(test[0], 10, ef=32)
    assert t.mode == "navigator" and view.error is None
    np.testing.assert_array_equal(t.ids, res.ids[0])
    # the route: from the entry point down the layers, every fully evaluated node a neighbour of the expanded one
    assert t.steps[0].node == index.entry_point and t.visited[0] == index.entry_point
    assert [s.layer for s in t.steps] == sorted((s.layer for s in t.steps), reverse=True)
    for s in t.steps:
        assert set(s.evaluated.tolist()) <= set(index.layer(s.layer).neighbours(s.node).tolist())
    assert t.distance_computations == res.full[0] and len(t.steps) == res.expansions[0]
    assert view.state.computations == t.distance_computations
