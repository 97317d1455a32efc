"""SearchPathView: the trace it shows is trace_search's, stepping reveals it in order, controls recompute,
custom policies plug in, and the export is offline."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ruvattn.datasets.synthetic import clustered_graph
from ruvattn.errors import InvalidConfig, OutOfBounds

pytest.importorskip("faiss")

from ruvattn.graph.hnsw import HNSWIndex
from ruvattn.graph.search import trace_search
from ruvattn.widgets import SearchPathView


@pytest.fixture(scope="module")
def setup():
    x = clustered_graph(n_nodes=1500, dim=16, n_clusters=8, k=1, seed=4).embeddings
    index = HNSWIndex.build(x, M=6, ef_construction=48, seed=2)
    q = x[[3, 700]] + 0.01
    return x, index, q


def test_last_step_shows_the_whole_search(setup) -> None:
    x, index, q = setup
    view = SearchPathView(index, q, ef=24, k=5)
    t = trace_search(index, q[0], 5, ef=24)
    s = view.state
    assert s.step == len(t.steps) == view.controls["step"].max
    np.testing.assert_array_equal(s.trace.ids, t.ids)
    assert s.computations == t.distance_computations
    np.testing.assert_array_equal(np.sort(s.evaluated), np.sort(t.visited))
    exact = np.argsort(((x.astype(np.float64) - q[0]) ** 2).sum(1))[:5]
    assert s.recall == len(set(exact.tolist()) & set(t.ids.tolist())) / 5
    assert len(view.figure.data[1].x) == t.distance_computations
    assert "distance computations" in view.describe()


def test_stepping_reveals_the_search_in_order(setup) -> None:
    _, index, q = setup
    view = SearchPathView(index, q, step=0)
    assert view.state.computations == 1 and view.state.route.tolist() == [index.entry_point]
    counts = []
    for step in range(0, view.controls["step"].max + 1, 3):
        view.controls["step"].value = step
        counts.append(view.state.computations)
        assert view.state.route[0] == index.entry_point
    assert counts == sorted(counts) and counts[-1] <= view.state.trace.distance_computations
    layers = view.state.route_layers
    assert (np.diff(layers) <= 0).all()  # the route only goes down


def test_controls_and_policies(setup) -> None:
    _, index, q = setup
    calls = []

    def my_policy(ix, query, k, ef):
        calls.append(ef)
        return trace_search(ix, query, k, mode="greedy")

    view = SearchPathView(index, q, policies={"mine": my_policy}, mode="mine", ef=12)
    assert calls == [12] and view.state.trace.mode == "greedy"
    view.set(mode="beam", query=1)
    assert view.state.trace.mode == "beam" and view.error is None
    view.controls["ef"].value = 64
    assert view.state.trace.ef == 64
    with pytest.raises(InvalidConfig):
        SearchPathView(index, q, mode="dfs")
    with pytest.raises(OutOfBounds):
        SearchPathView(index, q, query=5)
    with pytest.raises(InvalidConfig):
        SearchPathView(index, q[:, :3])


def test_export_is_offline(setup, tmp_path) -> None:
    _, index, q = setup
    path = SearchPathView(index, q).save_html(tmp_path / "search.html")
    text = path.read_text()
    assert not re.findall(r"<script[^>]*\ssrc=", text), "every script is inline: nothing is fetched at view time"
    assert "distance computations" in text
