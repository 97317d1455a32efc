"""NeighbourhoodView: weights against the mechanism and a numpy softmax, 2-hop sets, the cap, bins,
controls, clicks, HNSW layers, errors and the exports.

Graphs are small except the cap test (2,000 nodes, as a notebook would use).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from plotly.callbacks import InputDeviceState, Points

from ruvattn.datasets import clustered_graph
from ruvattn.errors import AttentionError, DimensionMismatch, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.graph import NeighbourList
from ruvattn.mechanisms import GATConv, HyperbolicAttention, MultiHeadAttention, ScaledDotProductAttention
from ruvattn.widgets.neighbourhood import N_BINS, NeighbourhoodView, bin_weights
from tests.widget_harness import traces_from_html

DIM = 8
TAU = 0.01  # unit-norm neighbours have similar scores: a low temperature makes the weights far from uniform


@pytest.fixture(scope="module")
def small():
    return clustered_graph(n_nodes=40, dim=DIM, n_clusters=3, k=5, seed=3)


@pytest.fixture(scope="module")
def sdpa():
    return ScaledDotProductAttention(DIM, temperature=TAU)


def _softmax_numpy(query, keys, tau=TAU):
    """Scaled dot-product weights written out in float64 (the independent reference)."""
    q = np.asarray(query, np.float64)
    k = np.asarray(keys, np.float64)
    s = k @ q / np.sqrt(q.size) / tau
    e = np.exp(s - s.max())
    return e / e.sum()


def _edge_rows(view):
    """``[(bin, rows (e, 4) of source, target, weight, hop)]`` read back from the edge traces."""
    out = []
    for i, trace in enumerate(view.edge_traces):
        if trace.customdata is None or len(trace.x) == 0:
            continue
        cd = np.asarray(trace.customdata, dtype=np.float64)
        assert np.isnan(np.asarray(trace.x, float)[2::3]).all()  # gaps between segments
        assert np.isfinite(cd).all()  # 2-D customdata travels as JSON: no NaN
        assert np.array_equal(cd[0::3], cd[1::3])
        out.append((i % N_BINS, cd[0::3]))
    return out


def _edge_set(rows):
    return sorted((int(s), int(t), int(h)) for s, t, _, h in rows)


def test_one_hop_weights_equal_the_mechanism_and_a_numpy_softmax(small, sdpa):
    f, nb = small.embeddings, small.neighbours
    view = NeighbourhoodView(sdpa, f, nb, centre=7)
    s = view.state
    direct = sdpa.attention_weights(f[7], f[nb[7]])
    naive = _softmax_numpy(f[7], f[nb[7]])
    assert s.edge_hop.tolist() == [1] * nb.shape[1]
    assert s.edge_target.tolist() == [7] * nb.shape[1]
    assert s.edge_source.tolist() == nb[7].tolist()  # CSR order
    np.testing.assert_allclose(s.edge_weight, direct, rtol=1e-6)
    np.testing.assert_allclose(s.edge_weight, naive, rtol=1e-5, atol=1e-7)
    assert direct.max() / direct.min() > 2  # not uniform: the comparisons mean something
    # the traces carry the same numbers: edge customdata, and node hover data
    rows = np.vstack([r for _, r in _edge_rows(view)])
    got = {int(src): w for src, _, w, _ in rows}
    np.testing.assert_allclose([got[v] for v in nb[7]], direct, rtol=1e-6)
    nodes = np.asarray(view.node_trace.customdata)
    assert int(nodes[0, 0]) == 7 and nodes[0, 1] == 0
    by_id = {int(r[0]): r for r in nodes[1:]}
    assert sorted(by_id) == sorted(nb[7].tolist())
    np.testing.assert_allclose([by_id[v][2] for v in nb[7]], direct, rtol=1e-6)
    # ring order: heaviest first, clockwise from the top, radius 1; centre at the origin
    ring = s.nodes[1:]
    assert np.all(np.diff(s.node_weight[1:]) <= 0)
    np.testing.assert_allclose(s.positions[0], [0.0, 0.0])
    np.testing.assert_allclose(np.linalg.norm(s.positions[1:], axis=1), 1.0)
    np.testing.assert_allclose(s.position(int(ring[0])), [0.0, 1.0], atol=1e-12)
    assert "node 7" in view.describe() and "1 hop" in view.describe()


@pytest.mark.parametrize("kind", ["multi_head", "gat"])
def test_multi_head_and_gat_show_the_mean_over_heads(small, kind):
    f, nb = small.embeddings, small.neighbours
    nl = NeighbourList.from_padded(nb, len(f))
    if kind == "multi_head":
        mech = MultiHeadAttention(DIM, num_heads=2)
        ef = None
    else:
        mech = GATConv(DIM, 4, heads=3, edge_dim=2)
        ef = np.random.default_rng(0).standard_normal((nl.nnz, 2))
    view = NeighbourhoodView(mech, f, nb, centre=4, hops=2, edge_features=ef, max_nodes=500)
    s = view.state
    for u in [4, *nb[4].tolist()]:
        rows = slice(nl.indptr[u], nl.indptr[u + 1])
        if kind == "gat":
            expect = np.asarray(mech.weights(f[u], f[nl.indices[rows]], edge_features=ef[rows])).mean(axis=0)
        else:
            expect = np.asarray(mech.weights(f[u], f[nl.indices[rows]])).mean(axis=0)
        mine = s.edge_target == u
        assert s.edge_source[mine].tolist() == nl.indices[rows].tolist()
        np.testing.assert_allclose(s.edge_weight[mine], expect, rtol=1e-5)


def test_two_hops_are_exactly_the_neighbours_of_the_neighbours(small, sdpa):
    f, nb = small.embeddings, small.neighbours
    c = 11
    view = NeighbourhoodView(sdpa, f, nb, centre=c, hops=2, max_nodes=1000)
    s = view.state
    one = set(nb[c].tolist())
    two = {int(v) for u in one for v in nb[u]}
    assert set(s.nodes.tolist()) == {c} | one | two
    assert s.left_out_nodes == 0 and s.left_out_edges == 0
    # every edge: the centre over its neighbours, each neighbour over its own list, weights asked directly
    expect = [(int(v), c, 1) for v in nb[c]] + [(int(v), int(u), 2) for u in one for v in nb[u]]
    assert _edge_set(zip(s.edge_source, s.edge_target, s.edge_weight, s.edge_hop, strict=True)) == sorted(expect)
    for u in one:
        mine = (s.edge_target == u) & (s.edge_hop == 2)
        np.testing.assert_allclose(s.edge_weight[mine], _softmax_numpy(f[u], f[nb[u]]), rtol=1e-5, atol=1e-7)
    # layout: hop 1 on radius 1, hop 2 on radius 2, next to the best parent (the heaviest path)
    radius = np.linalg.norm(s.positions, axis=1)
    np.testing.assert_allclose(radius[s.node_hop == 1], 1.0)
    np.testing.assert_allclose(radius[s.node_hop == 2], 2.0)
    for i in np.flatnonzero(s.node_hop == 2):
        v = int(s.nodes[i])
        paths = {}
        for u in s.nodes[s.node_hop == 1].tolist():
            into_u = s.edge_weight[(s.edge_source == u) & (s.edge_hop == 1)].sum()
            from_v = s.edge_weight[(s.edge_target == u) & (s.edge_source == v) & (s.edge_hop == 2)]
            paths[u] = into_u * from_v.max(initial=0.0)
        assert paths[int(s.node_parent[i])] == pytest.approx(max(paths.values()), rel=1e-12)
        np.testing.assert_allclose(s.node_path[i], max(paths.values()), rtol=1e-12)
    # deterministic
    again = NeighbourhoodView(sdpa, f, nb, centre=c, hops=2, max_nodes=1000).state
    assert np.array_equal(again.nodes, s.nodes) and np.array_equal(again.positions, s.positions)


def test_every_edge_is_in_exactly_one_monotone_bin(small, sdpa):
    view = NeighbourhoodView(sdpa, small.embeddings, small.neighbours, centre=2, hops=2)
    s = view.state
    binned = _edge_rows(view)
    assert sum(len(r) for _, r in binned) == s.edge_weight.size
    all_rows = np.vstack([r for _, r in binned])
    assert _edge_set(all_rows) == _edge_set(zip(s.edge_source, s.edge_target, s.edge_weight, s.edge_hop, strict=True))
    ranges = {k: (r[:, 2].min(), r[:, 2].max()) for k, r in binned}
    ks = sorted(ranges)
    assert len(ks) >= 3
    for a, b in itertools.pairwise(ks):
        assert ranges[a][1] <= ranges[b][0]  # heavier bins hold heavier edges
    for k, rows in binned:
        lo, hi = s.bin_edges[k], s.bin_edges[k + 1]
        assert ((rows[:, 2] >= lo - 1e-12) & (rows[:, 2] <= hi + 1e-12)).all()
    widths = [t.line.width for t in view.edge_traces[:N_BINS]]
    assert widths == sorted(widths) and len(set(widths)) == N_BINS
    # the helper on its own: equal-width bins from the smallest to the largest weight (in the last bin)
    edges, index = bin_weights(np.array([1.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0]))
    np.testing.assert_allclose(edges, np.linspace(0, 1, N_BINS + 1))
    assert index.tolist() == [4, 0, 1, 2, 3, 4, 0]
    assert bin_weights(np.full(4, 0.25))[1].tolist() == [N_BINS - 1] * 4


def test_the_cap_holds_on_a_2000_node_graph_and_keeps_the_heaviest_paths():
    g = clustered_graph(n_nodes=2000, dim=16, n_clusters=8, k=32, seed=0)
    mech = ScaledDotProductAttention(16, temperature=TAU)
    f, nb = g.embeddings, g.neighbours
    view = NeighbourhoodView(mech, f, nb, centre=5, hops=2, max_nodes=150)
    s = view.state
    assert s.nodes.size == 150 and len(set(s.nodes.tolist())) == 150
    # an independent ranking: best path weight centre <- u <- v over all reachable v
    w1 = dict(zip(nb[5].tolist(), mech.attention_weights(f[5], f[nb[5]]).tolist(), strict=True))
    best: dict[int, float] = {}
    for u, wu in w1.items():
        for v, wv in zip(nb[u].tolist(), mech.attention_weights(f[u], f[nb[u]]).tolist(), strict=True):
            if v != 5 and v not in w1:
                best[v] = max(best.get(v, 0.0), wu * wv)
    ranked = sorted(best, key=lambda v: (-best[v], v))
    assert set(s.nodes[s.node_hop == 2].tolist()) == set(ranked[: 150 - 1 - len(w1)])
    assert s.left_out_nodes == len(best) - (150 - 1 - len(w1)) > 0
    assert f"{s.left_out_nodes} nodes" in view.describe() and "left out" in view.figure.layout.title.text
    shown = set(s.nodes.tolist())
    assert set(s.edge_source.tolist()) <= shown and set(s.edge_target.tolist()) <= shown
    # many edges: drawn with Scattergl, the svg bins empty
    assert s.edge_weight.size > 500
    assert all(len(t.x) == 0 for t in view.edge_traces[:N_BINS])
    assert all(t.type == "scattergl" for t in view.edge_traces[N_BINS:])
    assert sum(len(t.x) for t in view.edge_traces[N_BINS:]) == 3 * s.edge_weight.size


def test_controls_redraw_the_traces(small, sdpa):
    f, nb = small.embeddings, small.neighbours
    view = NeighbourhoodView(sdpa, f, nb, centre=0)
    assert sum(len(r) for _, r in _edge_rows(view)) == nb.shape[1]
    view.controls["hops"].value = 2
    assert view.state.hops == 2 and sum(len(r) for _, r in _edge_rows(view)) == nb.shape[1] * (1 + nb.shape[1])
    view.controls["centre"].value = 9
    nodes = np.asarray(view.node_trace.customdata)
    assert int(nodes[0, 0]) == 9 and view.state.centre == 9
    assert {int(v) for v in nodes[nodes[:, 1] == 1, 0]} == set(nb[9].tolist())
    np.testing.assert_allclose(view.node_trace.x[0], 0.0)
    view.set(hops=1, centre=3)
    assert view.state.centre == 3 and view.state.hops == 1 and view.error is None


def test_parameter_controls_come_from_the_mechanism_and_redraw(small):
    f, nb = small.embeddings, small.neighbours
    mech = ScaledDotProductAttention(DIM, temperature=TAU)  # not the shared fixture: the view changes it
    view = NeighbourhoodView(mech, f, nb, centre=7)
    assert set(view.parameter_controls) == {"temperature", "dropout"}  # sdpa's live parameters with a value
    assert view.controls["temperature"].value == pytest.approx(TAU)
    view.controls["temperature"].value = 0.05
    assert mech.temperature == pytest.approx(0.05) and view.error is None
    np.testing.assert_allclose(view.state.edge_weight, _softmax_numpy(f[7], f[nb[7]], tau=0.05), rtol=1e-5, atol=1e-7)
    rows = np.vstack([r for _, r in _edge_rows(view)])
    got = {int(src): w for src, _, w, _ in rows}
    np.testing.assert_allclose([got[v] for v in nb[7]], _softmax_numpy(f[7], f[nb[7]], tau=0.05), rtol=1e-5)
    gat = NeighbourhoodView(GATConv(DIM, 4, heads=3), f, nb, centre=7)
    assert gat.controls["heads"].value == 3 and gat.controls["heads"].max == max(4 * 3, nb.shape[1])
    gat.controls["heads"].value = 1  # one head now: the edges carry that head's weights
    fresh = GATConv(DIM, 4, heads=1)  # same seed, same parameters
    np.testing.assert_allclose(gat.state.edge_weight, fresh.weights(f[7], f[nb[7]])[0], rtol=1e-6)


def test_embed_maps_the_features_into_the_mechanisms_space(small):
    f, nb = small.embeddings.astype(np.float64) * 3.0, small.neighbours  # float64: embed keeps the dtype
    mech = HyperbolicAttention(DIM, curvature=-1.0, temperature=0.1)
    view = NeighbourhoodView(mech, f, nb, centre=2, embed=True)
    u = f * 0.5 / np.linalg.norm(f, axis=1).max()  # by hand: longest row at 0.5, then exp0 of the unit ball
    r = np.linalg.norm(u, axis=1, keepdims=True)
    x = np.tanh(r) * u / r
    np.testing.assert_allclose(view.features, x, atol=1e-12)
    q, keys = x[2], x[nb[2]]
    d = np.arccosh(1 + 2 * ((keys - q) ** 2).sum(1) / ((1 - (q * q).sum()) * (1 - (keys * keys).sum(1))))
    e = np.exp(-(d - d.min()) / 0.1)
    np.testing.assert_allclose(view.state.edge_weight, e / e.sum(), rtol=1e-8)


def _click_through_frontend(view, trace_index, point_index):
    """What plotly's front end sends on a click (BaseFigureWidget._handler_js2py_pointsCallback)."""
    trace = view.figure.data[trace_index]
    view.figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"trace_indexes": [trace_index], "point_indexes": [point_index],
                   "xs": [float(trace.x[point_index])], "ys": [float(trace.y[point_index])]},
        "device_state": {"button": 0, "buttons": 1, "ctrl": False, "alt": False, "shift": False, "meta": False},
        "selector": None,
    }  # fmt: skip


def test_clicking_a_node_recentres(small, sdpa):
    view = NeighbourhoodView(sdpa, small.embeddings, small.neighbours, centre=0, hops=2)
    s = view.state
    target = int(s.nodes[3])
    trace = view.node_trace
    trace._dispatch_on_click(Points(point_inds=[3], xs=[trace.x[3]], ys=[trace.y[3]], trace_index=2 * N_BINS),
                             InputDeviceState())  # fmt: skip
    assert view.controls["centre"].value == target and view.state.centre == target
    assert int(np.asarray(view.node_trace.customdata)[0, 0]) == target
    # the full front-end path: every trace gets the event, only the node trace has a point
    far = int(view.state.nodes[-1])
    _click_through_frontend(view, len(view.figure.data) - 1, view.state.nodes.size - 1)
    assert view.state.centre == far
    before = view.updates
    view.node_trace._dispatch_on_click(Points(point_inds=[]), None)  # a click elsewhere: nothing happens
    assert view.updates == before and view.state.centre == far


def test_hnsw_layers_and_a_node_missing_from_an_upper_layer(small, sdpa):
    f, nb = small.embeddings, small.neighbours
    n = len(f)
    members = [0, 3, 7, 12, 20, 33]
    upper = [[m for m in members if m != i][:3] if i in members else [] for i in range(n)]  # ragged lists
    top = np.full((n, 1), -1)
    top[3, 0], top[12, 0] = 12, 3  # padded ids with -1
    csr = (np.arange(n + 1) * nb.shape[1], nb.reshape(-1))  # layer 0 as (indptr, indices)
    view = NeighbourhoodView(sdpa, f, [csr, upper, top], centre=3, layer=1)
    assert [v for _, v in view.controls["layer"].options] == [0, 1, 2]
    assert not view.controls["layer"].disabled
    assert set(view.state.nodes[1:].tolist()) == set(upper[3])
    np.testing.assert_allclose(view.state.edge_weight, _softmax_numpy(f[3], f[upper[3]]), rtol=1e-5, atol=1e-7)
    view.controls["layer"].value = 0
    assert set(view.state.nodes[1:].tolist()) == set(nb[3].tolist())
    view.set(layer=2, hops=2)
    assert view.state.nodes.tolist() == [3, 12] and view.state.edges[0][:2] == (12, 3)
    view.controls["centre"].value = 5  # not in layers 1 and 2
    assert view.error is None and view.state.centre == 5
    assert view.state.nodes.tolist() == [5] and view.state.edge_weight.size == 0
    assert "no neighbours in layer 2" in view.describe() and "no neighbours" in view.status.value
    assert all(len(t.x) == 0 for t in view.edge_traces) and len(view.node_trace.x) == 1
    single = NeighbourhoodView(sdpa, f, upper, centre=1)  # one ragged layer, not a list of layers
    assert single.controls["layer"].disabled and single.state.message == "node 1 has no neighbours in the graph"


def test_bad_inputs_raise_at_construction(small, sdpa):
    f, nb = small.embeddings, small.neighbours
    with pytest.raises(OutOfBounds):
        NeighbourhoodView(sdpa, f, nb, centre=len(f))
    with pytest.raises(InvalidConfig):
        NeighbourhoodView(sdpa, f, nb, centre=1.5)
    with pytest.raises(DimensionMismatch):
        NeighbourhoodView(sdpa, f[:, :6], nb)
    with pytest.raises(DimensionMismatch):
        NeighbourhoodView(sdpa, f, nb[:-1])
    with pytest.raises(OutOfBounds):
        NeighbourhoodView(sdpa, f, np.where(nb == nb[0, 0], len(f) + 3, nb))
    with pytest.raises(InvalidConfig):
        NeighbourhoodView(sdpa, f, nb, hops=3)
    with pytest.raises(InvalidConfig):
        NeighbourhoodView(sdpa, f, nb, max_nodes=1)
    with pytest.raises(OutOfBounds):
        NeighbourhoodView(sdpa, f, nb, layer=1)
    with pytest.raises(InvalidConfig):
        NeighbourhoodView(sdpa, f, nb, edge_features=np.ones((nb.size, 2)))  # not a GAT layer
    with pytest.raises(DimensionMismatch):
        NeighbourhoodView(GATConv(DIM, 2, edge_dim=2), f, nb, edge_features=np.ones((nb.size - 1, 2)))
    bad = f.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NumericalInstability):
        NeighbourhoodView(sdpa, bad, nb, centre=0)


def test_bad_values_set_live_show_on_the_status_line(small, sdpa):
    f, nb = small.embeddings.copy(), small.neighbours
    f[17, 2] = np.nan
    view = NeighbourhoodView(sdpa, f, nb, centre=int(np.flatnonzero((nb != 17).all(axis=1))[0]))
    good = view.state
    x_before = tuple(view.node_trace.x)
    view.controls["centre"].value = 17  # its own query is NaN
    assert isinstance(view.error, str) and "finite" in view.error
    assert "color:#b00020" in view.status.value
    assert view.state is good and tuple(view.node_trace.x) == x_before  # the last good figure stays
    view.controls["centre"].value = good.centre
    assert view.error is None and "color:#b00020" not in view.status.value
    assert issubclass(NumericalInstability, AttentionError)


def test_exports_are_offline_and_hold_the_data(small, sdpa, tmp_path):
    view = NeighbourhoodView(sdpa, small.embeddings, small.neighbours, centre=6, hops=2)
    page = view.save_html(tmp_path / "n.html").read_text(encoding="utf-8")
    assert '<script src="http' not in page
    traces = traces_from_html(page)
    nodes = next(t for t in traces if t.get("name") == "nodes")
    np.testing.assert_array_equal(nodes["customdata"][:, 0], view.state.nodes)
    np.testing.assert_allclose(nodes["x"], view.state.positions[:, 0])
    edges = [t for t in traces if t.get("mode") == "lines" and len(t.get("x", [])) > 0]
    weights = np.concatenate([t["customdata"][0::3, 2] for t in edges])
    np.testing.assert_allclose(np.sort(weights), np.sort(view.state.edge_weight))
    svg = view.save_image(tmp_path / "n.svg", width=500, height=400)
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<svg")


def test_a_real_hnsw_index_gives_its_layers(sdpa):
    """An HNSWIndex as the graph: the layer selector lists its real layers and each shows faiss's lists."""
    pytest.importorskip("faiss")
    from ruvattn.graph.hnsw import HNSWIndex

    x = clustered_graph(n_nodes=600, dim=DIM, n_clusters=4, k=1, seed=1).embeddings
    index = HNSWIndex.build(x, M=4, ef_construction=32, seed=2)
    assert index.num_layers >= 3
    top = int(np.flatnonzero(index.levels == index.max_level)[0])
    view = NeighbourhoodView(sdpa, index.vectors, index, centre=top, layer=1)
    assert [v for _, v in view.controls["layer"].options] == list(range(index.num_layers))
    assert set(view.state.nodes[1:].tolist()) == set(index.layer(1).neighbours(top).tolist())
    ids = index.layer(1).neighbours(top)
    order = np.argsort(ids)
    got = np.asarray(view.state.edge_weight)
    np.testing.assert_allclose(np.sort(got), np.sort(_softmax_numpy(x[top], x[ids])), rtol=1e-5, atol=1e-7)
    assert order.size == got.size
    view.controls["layer"].value = 0
    assert set(view.state.nodes[1:].tolist()) == set(index.layer(0).neighbours(top).tolist())
