"""PoincareDiskView: weights against HyperbolicAttention and a numpy softmax, geodesic arcs against the
textbook distance, Möbius re-centring as an isometry, curvature and temperature, projections, errors
and the exports.

The references are written out here in numpy (float64):
``d_c(x, y) = arcosh(1 + 2c|x - y|² / ((1 - c|x|²)(1 - c|y|²))) / √c`` and
``exp0_c(u) = tanh(√c|u|) u / (√c|u|)``, ``log0_c(x) = artanh(√c|x|) x / (√c|x|)``.
"""

from __future__ import annotations

import numpy as np
import pytest
from plotly.callbacks import InputDeviceState, Points

from ruvattn.errors import EmptyInput, InvalidConfig, NumericalInstability, OutOfBounds
from ruvattn.mechanisms import HyperbolicAttention
from ruvattn.widgets.neighbourhood import N_BINS
from ruvattn.widgets.poincare import ARC_SAMPLES, PoincareDiskView
from tests.widget_harness import traces_from_html


def textbook_dist(x, y, c=1.0):
    """Pairwise-broadcast hyperbolic distance on the ball of curvature -c (arcosh form)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x2, y2 = (x * x).sum(-1), (y * y).sum(-1)
    diff2 = ((x - y) ** 2).sum(-1)
    return np.arccosh(1.0 + 2.0 * c * diff2 / ((1.0 - c * x2) * (1.0 - c * y2))) / np.sqrt(c)


def exp0(u, c):
    r = np.linalg.norm(u, axis=-1, keepdims=True)
    return np.tanh(np.sqrt(c) * r) * u / np.where(r > 0, np.sqrt(c) * r, 1.0)


def log0(x, c):
    r = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.arctanh(np.sqrt(c) * r) * x / np.where(r > 0, np.sqrt(c) * r, 1.0)


def softmax_reference(q, keys, c, tau):
    s = -textbook_dist(q[None, :], keys, c) / tau
    e = np.exp(s - s.max())
    return e / e.sum()


def ball_points(n, d, c=1.0, seed=0, most=0.85):
    """Random points inside the ball of curvature -c, norms up to ``most`` of the radius."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * rng.uniform(0.05, most, (n, 1)) / np.sqrt(c)


def _keys_trace(view):
    return view.point_traces[1]


def test_weights_equal_hyperbolic_attention_and_the_textbook_softmax():
    c, tau = 1.3, 0.4
    pts = ball_points(25, 5, c, seed=1)
    view = PoincareDiskView(pts, query=4, curvature=-c, temperature=tau)
    s = view.state
    others = np.delete(np.arange(25), 4)
    assert s.key_ids.tolist() == others.tolist()
    direct = HyperbolicAttention(5, curvature=-c, temperature=tau).attention_weights(pts[4], pts[others])
    np.testing.assert_allclose(s.weights, direct, rtol=1e-12)
    np.testing.assert_allclose(s.weights, softmax_reference(pts[4], pts[others], c, tau), rtol=1e-9)
    np.testing.assert_allclose(s.distances, textbook_dist(pts[4], pts[others], c), rtol=1e-9)
    assert s.weights.max() / s.weights.min() > 5
    keys = np.asarray(_keys_trace(view).customdata)
    assert keys[:, 0].astype(int).tolist() == others.tolist()
    np.testing.assert_allclose(keys[:, 1], direct, rtol=1e-12)
    # the shown query and the keys sit where the state says
    np.testing.assert_allclose(_keys_trace(view).x, s.shown[others, 0])
    assert int(view.point_traces[2].customdata[0][0]) == 4


def test_neighbours_restrict_the_keys():
    pts = ball_points(12, 3, seed=2)
    rows = [[1, 5, 7], [0], [3, 4], [2], [2], [0, 1], [7], [6], [9], [8], [11], [10]]
    view = PoincareDiskView(pts, query=0, neighbours=rows, temperature=0.5)
    assert view.state.key_ids.tolist() == [1, 5, 7]
    np.testing.assert_allclose(view.state.weights, softmax_reference(pts[0], pts[[1, 5, 7]], 1.0, 0.5), rtol=1e-9)
    others = np.asarray(view.point_traces[0].customdata)[:, 0].astype(int)
    assert sorted(others.tolist()) == sorted(set(range(12)) - {0, 1, 5, 7})
    assert sum(len(t.x) for t in view.arc_traces) == 3 * (ARC_SAMPLES + 1)


@pytest.mark.parametrize(("d", "c", "projection"), [(2, 1.0, "pca"), (5, 1.0, "pca"), (6, 2.5, "pca"),
                                                    (4, 0.5, "first2")])  # fmt: skip
def test_arcs_are_geodesics_of_the_disk(d, c, projection):
    pts = ball_points(20, d, c, seed=d, most=0.95)
    view = PoincareDiskView(pts, query=3, curvature=-c, projection=projection)
    s = view.state
    x, ys = s.shown[s.query], s.shown[s.key_ids]
    assert s.arcs.shape == (19, ARC_SAMPLES, 2)
    np.testing.assert_allclose(s.arcs[:, 0], np.broadcast_to(x, ys.shape), atol=1e-9)
    np.testing.assert_allclose(s.arcs[:, -1], ys, atol=1e-9)
    radius = 1.0 / np.sqrt(c)
    assert (np.linalg.norm(s.arcs, axis=-1) < radius).all()
    assert (np.linalg.norm(s.shown, axis=-1) < radius).all()
    whole = textbook_dist(x, ys, c)
    for j in range(ARC_SAMPLES):
        g = s.arcs[:, j]
        np.testing.assert_allclose(textbook_dist(x, g, c) + textbook_dist(g, ys, c), whole, atol=1e-6, rtol=0)
        np.testing.assert_allclose(textbook_dist(x, g, c), whole * j / (ARC_SAMPLES - 1), atol=1e-6)  # unit speed
    # the traces draw exactly these samples, each arc in one bin, bins monotone in weight
    seen = []
    for i, trace in enumerate(view.arc_traces):
        if len(trace.x) == 0:
            continue
        xy = np.column_stack([trace.x, trace.y]).reshape(-1, ARC_SAMPLES + 1, 2)
        ids = np.asarray(trace.customdata)[:: ARC_SAMPLES + 1].astype(int)
        assert (np.asarray(trace.customdata).reshape(-1, ARC_SAMPLES + 1) == ids[:, None]).all()
        where = np.searchsorted(s.key_ids, ids)
        np.testing.assert_allclose(xy[:, :ARC_SAMPLES], s.arcs[where])
        assert np.isnan(xy[:, ARC_SAMPLES]).all()
        assert (s.arc_bin[where] == i % N_BINS).all()
        seen.extend(ids.tolist())
    assert sorted(seen) == s.key_ids.tolist()
    order = np.argsort(s.weights)
    assert (np.diff(s.arc_bin[order]) >= 0).all()
    np.testing.assert_allclose(view.figure.data[0].x.max(), radius)  # the boundary circle


def test_clicking_a_point_moebius_translates_it_to_the_origin():
    c = 1.0
    pts = ball_points(15, 4, c, seed=5, most=0.9)
    view = PoincareDiskView(pts, query=0, temperature=0.7)
    keys = _keys_trace(view)
    j = 6  # the 7th key
    clicked = int(np.asarray(keys.customdata)[j, 0])
    keys._dispatch_on_click(Points(point_inds=[j], xs=[keys.x[j]], ys=[keys.y[j]]), InputDeviceState())
    s = view.state
    assert s.query == clicked and view.controls["query"].value == clicked and s.translated
    np.testing.assert_allclose(s.points[clicked], 0.0, atol=1e-9)
    np.testing.assert_allclose(s.shown[clicked], 0.0, atol=1e-9)
    i, k = np.triu_indices(15, 1)
    np.testing.assert_allclose(textbook_dist(s.points[i], s.points[k], c), textbook_dist(pts[i], pts[k], c),
                               rtol=1e-9, atol=1e-9)  # fmt: skip
    # an isometry: the weights are those of the clicked point over the original points
    others = np.delete(np.arange(15), clicked)
    np.testing.assert_allclose(s.weights, softmax_reference(pts[clicked], pts[others], c, 0.7), rtol=1e-8)
    # the textbook translation, (-a) ⊕ x
    a = pts[clicked]
    xy, a2, x2 = pts @ -a, a @ a, (pts * pts).sum(1)
    moved = ((1 + 2 * xy + x2)[:, None] * -a + (1 - a2) * pts) / (1 + 2 * xy + a2 * x2)[:, None]
    np.testing.assert_allclose(s.points, moved, atol=1e-12)
    # through the front end (every trace gets the event): the query trace re-centres on itself again
    nxt = int(np.asarray(keys.customdata)[2, 0])
    view.figure._js2py_pointsCallback = {
        "event_type": "plotly_click",
        "points": {"trace_indexes": [1 + 2 * N_BINS + 1], "point_indexes": [2], "xs": [0.0], "ys": [0.0]},
        "device_state": {"button": 0, "buttons": 1, "ctrl": False, "alt": False, "shift": False, "meta": False},
        "selector": None,
    }
    assert view.state.query == nxt
    np.testing.assert_allclose(view.state.points[nxt], 0.0, atol=1e-9)
    np.testing.assert_allclose(textbook_dist(view.state.points[i], view.state.points[k]),
                               textbook_dist(pts[i], pts[k]), rtol=1e-8, atol=1e-9)  # fmt: skip
    view.reset()
    assert not view.state.translated and view.state.query == nxt
    np.testing.assert_array_equal(view.state.points, pts)


def test_curvature_slider_remaps_and_reweights_like_the_direct_computation():
    pts = ball_points(18, 3, 1.0, seed=7, most=0.9)
    view = PoincareDiskView(pts, query=2, temperature=0.5)
    before = view.state.weights.copy()
    view.controls["curvature"].value = -2.5
    s = view.state
    expect_pts = exp0(log0(pts, 1.0), 2.5)  # same tangent vectors at the origin, new ball
    np.testing.assert_allclose(s.points, expect_pts, atol=1e-12)
    assert (np.linalg.norm(s.points, axis=1) < 1 / np.sqrt(2.5)).all()
    others = np.delete(np.arange(18), 2)
    direct = HyperbolicAttention(3, curvature=-2.5, temperature=0.5).attention_weights(s.points[2], s.points[others])
    np.testing.assert_allclose(s.weights, direct, rtol=1e-12)
    np.testing.assert_allclose(s.weights, softmax_reference(expect_pts[2], expect_pts[others], 2.5, 0.5), rtol=1e-8)
    assert np.abs(s.weights - before).max() > 1e-3
    np.testing.assert_allclose(view.figure.data[0].y.max(), 1 / np.sqrt(2.5), rtol=1e-4)
    view.controls["temperature"].value = 2.0
    np.testing.assert_allclose(view.state.weights, softmax_reference(expect_pts[2], expect_pts[others], 2.5, 2.0),
                               rtol=1e-8)  # fmt: skip
    view.set(curvature=-1.0, temperature=0.5)  # back: the points are the inputs again, exactly
    np.testing.assert_array_equal(view.state.points, pts)
    np.testing.assert_allclose(view.state.weights, before, rtol=1e-12)


def test_curvature_and_temperature_sliders_are_the_mechanisms_own_controls():
    """The two parameters of softmax(-d_c/τ) get the controls their constraints describe: curvature in
    (-inf, 0), one step short of 0, over five times the value; temperature in (0, inf) on a log scale."""
    import ipywidgets as ipw

    pts = ball_points(10, 3, 1.0, seed=12)
    view = PoincareDiskView(pts, curvature=-1.0, temperature=0.5)
    assert set(view.parameter_controls) == {"curvature", "temperature"}
    curv, temp = view.controls["curvature"], view.controls["temperature"]
    assert isinstance(curv, ipw.FloatSlider) and (curv.min, curv.max, curv.step) == (-5.0, -0.05, 0.05)
    assert isinstance(temp, ipw.FloatLogSlider) and temp.min < np.log10(0.5) < temp.max
    assert view.mechanism.curvature == -1.0 and view.mechanism.temperature == 0.5
    curv.value = -0.05  # the slider's end: still a valid curvature, the points remapped into the larger ball
    assert view.error is None and view.mechanism.curvature == pytest.approx(-0.05)
    np.testing.assert_allclose(view.state.points, exp0(log0(pts, 1.0), 0.05), atol=1e-12)
    updates = view.updates
    curv.value = 0.0  # the excluded end: the slider stops one step short of it
    assert curv.value == -0.05 and view.updates == updates and view.error is None


def test_euclidean_inputs_are_mapped_in_with_expmap0():
    vecs = np.random.default_rng(3).standard_normal((10, 3)) * 1.5  # far outside the unit ball

    def inside(x, c):  # the documented guard: at most (1 - 1e-5)/sqrt(c) from the origin (geoopt's margin)
        r = np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(c)
        return x * np.minimum(1.0, (1 - 1e-5) / r)

    view = PoincareDiskView(vecs, euclidean=True, curvature=-0.5, query=1)
    np.testing.assert_allclose(view.state.points, inside(exp0(vecs, 0.5), 0.5), atol=1e-12)
    view.controls["curvature"].value = -3.0
    expect = exp0(vecs, 3.0)
    assert (np.linalg.norm(expect, axis=1) * np.sqrt(3.0) > 1 - 1e-5).any()  # some reach the margin
    np.testing.assert_allclose(view.state.points, inside(expect, 3.0), atol=1e-12)
    assert (np.linalg.norm(view.state.points, axis=1) < 1 / np.sqrt(3.0)).all()


def test_two_dimensional_points_are_shown_as_they_are():
    pts = ball_points(9, 2, seed=4)
    for projection in ("first2", "pca"):
        view = PoincareDiskView(pts, projection=projection)
        np.testing.assert_array_equal(view.state.shown, pts)
        np.testing.assert_array_equal(np.column_stack([view.point_traces[1].x, view.point_traces[1].y]), pts[1:])
        assert "disk itself" in view.describe()
    high = ball_points(9, 5, seed=4)
    view = PoincareDiskView(high, projection="first2")
    np.testing.assert_array_equal(view.state.shown, high[:, :2])
    assert "first two coordinates of a 5-dimensional ball" in view.describe()


def test_pca_of_points_on_a_plane_keeps_every_distance():
    """Points whose tangent vectors span a 2-D plane lie in a totally geodesic disk: the PCA view is exact."""
    rng = np.random.default_rng(8)
    basis, _ = np.linalg.qr(rng.standard_normal((6, 2)))
    pts = exp0(rng.standard_normal((14, 2)) @ basis.T * 0.8, 1.0)
    view = PoincareDiskView(pts, projection="pca")
    s = view.state
    assert s.projection == "pca" and s.explained == pytest.approx(1.0)
    i, k = np.triu_indices(14, 1)
    np.testing.assert_allclose(textbook_dist(s.shown[i], s.shown[k]), textbook_dist(pts[i], pts[k]), rtol=1e-9)
    assert "2-D PCA projection of a 6-dimensional ball" in view.figure.layout.title.text


def test_bad_inputs_raise_and_live_errors_show_on_the_status_line():
    pts = ball_points(6, 3, seed=9)
    with pytest.raises(InvalidConfig):
        PoincareDiskView(pts * 3)  # outside the unit ball
    with pytest.raises(InvalidConfig):
        PoincareDiskView(pts * 0.5, curvature=-5.0 * 4)  # outside the ball of radius 1/sqrt(20)
    with pytest.raises(InvalidConfig):
        PoincareDiskView(pts, curvature=0.5)
    with pytest.raises(InvalidConfig):
        PoincareDiskView(pts, temperature=0.0)
    with pytest.raises(InvalidConfig):
        PoincareDiskView(pts, projection="tsne")
    with pytest.raises(OutOfBounds):
        PoincareDiskView(pts, query=6)
    with pytest.raises(InvalidConfig):
        PoincareDiskView(pts, query="2")
    with pytest.raises(EmptyInput):
        PoincareDiskView(pts[:1])
    with pytest.raises(NumericalInstability):
        PoincareDiskView(np.where(np.arange(6)[:, None] == 2, np.nan, pts))
    with pytest.raises(NumericalInstability):
        PoincareDiskView(np.where(np.arange(6)[:, None] == 2, np.inf, pts), euclidean=True)
    rows = [[1, 2], [0], [], [4], [3], [0]]
    view = PoincareDiskView(pts, neighbours=rows)
    good = view.state
    view.controls["query"].value = 2  # no neighbours
    assert view.error is not None and "no keys" in view.error and "color:#b00020" in view.status.value
    assert view.state is good and int(view.point_traces[2].customdata[0][0]) == 0
    view.controls["query"].value = 3
    assert view.error is None and view.state.key_ids.tolist() == [4]
    with pytest.raises(OutOfBounds):
        view.recentre(10)


def test_exports_are_offline_and_hold_the_data(tmp_path):
    pts = ball_points(12, 4, seed=11)
    view = PoincareDiskView(pts, query=5, temperature=0.3)
    page = view.save_html(tmp_path / "p.html").read_text(encoding="utf-8")
    assert '<script src="http' not in page
    traces = traces_from_html(page)
    keys = next(t for t in traces if t.get("name") == "keys")
    np.testing.assert_array_equal(keys["customdata"][:, 0], view.state.key_ids)
    np.testing.assert_allclose(keys["customdata"][:, 1], view.state.weights)
    arcs = [t for t in traces if t.get("mode") == "lines" and t.get("name") != "boundary" and len(t.get("x", []))]
    assert sum(len(t["x"]) for t in arcs) == view.state.key_ids.size * (ARC_SAMPLES + 1)
    svg = view.save_image(tmp_path / "p.svg", width=500, height=450)
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<svg")
