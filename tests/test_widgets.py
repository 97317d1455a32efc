"""AttentionHeatmap and HeadView: the traces hold the mechanism's weights (checked against numpy
written from the formulas), controls redraw them, bad settings land on the status line, and the
exports are offline. Also: the widgets folder installs as ``ruvattn.widgets`` only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ruvattn.widgets")

import ipywidgets as ipw
from scipy.special import softmax
from scipy.stats import entropy

import ruvattn
from ruvattn import (
    FlashAttention,
    GATConv,
    HyperbolicAttention,
    InvalidConfig,
    LinearAttention,
    LocalGlobalAttention,
    MoEAttention,
    MultiHeadAttention,
    ScaledDotProductAttention,
)
from ruvattn import _validation as V
from ruvattn._params import Param
from ruvattn.mechanisms.base import DIM, Attention, mechanism_class
from ruvattn.widgets import AttentionHeatmap, HeadView


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((5, 16)), rng.standard_normal((40, 16))


def naive_sdpa(q: np.ndarray, k: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return softmax(q @ k.T / np.sqrt(k.shape[1]) / temperature, axis=1)


def test_heatmap_trace_is_the_softmax_and_follows_the_temperature_slider(data):
    q, k = data
    w = AttentionHeatmap(ScaledDotProductAttention(16), q, k)
    np.testing.assert_allclose(np.asarray(w.figure.data[0].z), naive_sdpa(q, k), atol=1e-12)
    np.testing.assert_array_equal(w.figure.data[0].y, np.arange(5))
    w.controls["temperature"].value = 0.5
    np.testing.assert_allclose(np.asarray(w.figure.data[0].z), naive_sdpa(q, k, 0.5), atol=1e-12)
    assert w.updates == 2 and w.error is None
    ent = entropy(naive_sdpa(q, k, 0.5), axis=1).mean()
    assert w.state.stats["entropy"] == pytest.approx(ent, abs=1e-12)
    assert f"entropy {ent:.3f} nats" in w.figure.layout.title.text


@pytest.mark.parametrize(
    "make",
    [
        lambda: FlashAttention(16, block_size=8),
        lambda: LinearAttention(16, feature_map="favor", num_features=32, seed=3),
        lambda: LocalGlobalAttention(16, local_window=6, global_nodes=2),
        lambda: MultiHeadAttention(16, num_heads=4),
    ],
)
def test_heatmap_asks_the_mechanism_for_its_weights_in_every_mode(data, make):
    q, k = data
    view = AttentionHeatmap(make(), q, k, mode="difference")
    fresh = make()  # same parameters and seed
    direct = np.vstack([np.asarray(fresh.attention_weights(row, k), dtype=np.float64) for row in q])
    np.testing.assert_allclose(view.state.weights, direct, atol=1e-6)
    np.testing.assert_allclose(np.asarray(view.figure.data[0].z), direct - naive_sdpa(q, k), atol=1e-6)
    assert view.figure.data[0].zmid == 0.0  # diverging scale centred on zero
    view.controls["mode"].value = "exact"
    np.testing.assert_allclose(np.asarray(view.figure.data[0].z), naive_sdpa(q, k), atol=1e-6)


def test_flash_difference_is_rounding_and_local_global_is_not(data):
    q, k = data
    flash = AttentionHeatmap(FlashAttention(16, block_size=8), q, k, mode="difference")
    assert flash.state.stats["max_abs_difference"] < 1e-6  # flash is exact attention
    lg = AttentionHeatmap(LocalGlobalAttention(16, local_window=6, global_nodes=2), q, k, mode="difference")
    assert lg.state.stats["max_abs_difference"] > 1e-2
    # the window slider re-parameterises the mechanism: 6 + 2 kept keys -> 12 + 2
    assert ((lg.state.weights > 0).sum(axis=1) <= 8).all()
    lg.controls["local_window"].value = 12
    assert lg.mechanism.get_params()["local_window"] == 12
    direct = LocalGlobalAttention(16, local_window=12, global_nodes=2)
    np.testing.assert_allclose(lg.state.weights[0], direct.attention_weights(q[0], k), atol=1e-12)
    assert ((lg.state.weights > 0).sum(axis=1) > 8).all()


def test_linear_feature_slider_reduces_the_error_on_average():
    rng = np.random.default_rng(0)
    q, k = 0.5 * rng.standard_normal((32, 16)), 0.5 * rng.standard_normal((200, 16))
    view = AttentionHeatmap(LinearAttention(16, feature_map="favor", num_features=8, seed=1), q, k, mode="difference")
    features = view.controls["num_features"]  # the random-features slider: open-ended, so it reaches n = 200
    assert isinstance(features, ipw.IntSlider) and (features.min, features.max) == (1, 200)
    assert "random features" in features.tooltip
    coarse = np.abs(view.state.shown).mean()
    view.set(num_features=200)
    assert view.mechanism.get_params()["num_features"] == 200
    assert np.abs(view.state.shown).mean() < 0.5 * coarse


def test_paging_through_many_queries(data):
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((10, 16)), data[1]
    view = AttentionHeatmap(ScaledDotProductAttention(16), q, k, max_queries=4)
    view.controls["first_query"].value = 6
    np.testing.assert_array_equal(view.figure.data[0].y, [6, 7, 8, 9])
    np.testing.assert_allclose(np.asarray(view.figure.data[0].z), naive_sdpa(q[6:], k), atol=1e-12)


def test_heatmap_errors(data):
    q, k = data
    with pytest.raises(InvalidConfig, match="mode"):
        AttentionHeatmap(ScaledDotProductAttention(16), q, k, mode="nope")
    with pytest.raises(InvalidConfig, match="non-empty 2-D"):
        AttentionHeatmap(ScaledDotProductAttention(16), q, np.zeros((0, 16)))
    with pytest.raises(InvalidConfig, match="takes no edge_features"):  # not in its forward_options
        AttentionHeatmap(ScaledDotProductAttention(16), q, k, edge_features=np.ones((40, 2)))
    bad = np.array(q)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        AttentionHeatmap(ScaledDotProductAttention(16), bad, k)
    view = AttentionHeatmap(ScaledDotProductAttention(16), q, k)
    with pytest.raises(InvalidConfig, match="unknown control"):
        view.set(window=3)


def test_head_view_panels_are_the_heads(data):
    q, k = data
    mha = MultiHeadAttention(16, num_heads=4)
    view = HeadView(mha, q, k)
    per_head = np.stack([mha.weights(row, k) for row in q], axis=1)  # (h, m, n)
    for h in range(4):
        np.testing.assert_allclose(np.asarray(view.figure.data[h].z), per_head[h], atol=1e-12)
    np.testing.assert_allclose(np.asarray(view.figure.data[4].z), per_head.mean(axis=0), atol=1e-12)
    # the mean of the head panels is what attention_weights reports
    np.testing.assert_allclose(per_head.mean(axis=0)[0], mha.attention_weights(q[0], k), atol=1e-6)
    bars = np.asarray(view.figure.data[5].y)
    np.testing.assert_allclose(bars, [entropy(per_head[h], axis=1).mean() for h in range(4)], atol=1e-12)
    assert list(view.figure.data[6].y) == pytest.approx([np.log(40)] * 2)

    view.set(heads=(1, 3), combine="max")
    np.testing.assert_allclose(np.asarray(view.figure.data[4].z), per_head[[1, 3]].max(axis=0), atol=1e-12)
    assert [t.visible for t in view.figure.data[:4]] == [False, True, False, True]
    assert view.figure.layout.annotations[4].text == "combined (max of 2)"


def test_head_view_gat_with_edge_features_and_a_live_error():
    rng = np.random.default_rng(3)
    gat = GATConv(8, 4, heads=2, edge_dim=3, seed=5)
    q, k, ef = rng.standard_normal((3, 8)), rng.standard_normal((10, 8)), rng.standard_normal((10, 3))
    view = HeadView(gat, q, k, edge_features=ef)
    for h in range(2):
        direct = np.stack([gat.weights(row, k, edge_features=ef)[h] for row in q])
        np.testing.assert_allclose(np.asarray(view.figure.data[h].z), direct, atol=1e-12)
    before = np.asarray(view.figure.data[2].z).copy()
    view.controls["heads"].value = ()  # nothing selected: an error on the status line, not an exception
    assert "select at least one head" in view.error and "select at least one head" in view.status.value
    np.testing.assert_array_equal(np.asarray(view.figure.data[2].z), before)
    with pytest.raises(InvalidConfig, match="no heads"):
        HeadView(ScaledDotProductAttention(8), q, k)
    with pytest.raises(InvalidConfig, match="takes no edge_features"):
        HeadView(MultiHeadAttention(8, num_heads=2), q, k, edge_features=ef)


def test_exports_are_offline_and_hold_the_data(tmp_path, data):
    q, k = data
    view = AttentionHeatmap(ScaledDotProductAttention(16), q, k)
    page = view.save_html(tmp_path / "h.html").read_text(encoding="utf-8")
    assert '<script src="http' not in page and "Plotly.newPlot" in page
    assert "<th>temperature</th><td>1.0</td>" in page
    svg = view.save_image(tmp_path / "h.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<svg") and "entropy" in svg
    with pytest.raises(InvalidConfig, match="unknown image type"):
        view.save_image(tmp_path / "h.bmp")


def test_widgets_folder_is_not_a_top_level_package(tmp_path):
    code = (
        "import importlib.util, ruvattn.widgets as w\n"
        "assert importlib.util.find_spec('widgets') is None, 'a top-level widgets module is importable'\n"
        "print(w.AttentionHeatmap.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ruvattn.widgets.heatmap"


def test_bare_import_widgets_from_the_repository_root_names_the_package():
    """From the repository root ``widgets/`` is on sys.path; importing it must fail at once and say what to import."""
    code = (
        "import sys\n"
        "try:\n"
        "    import widgets\n"
        "except ImportError as exc:\n"
        "    print('ImportError:', exc)\n"
        "assert 'widgets' not in sys.modules and 'plotly' not in sys.modules, 'the guard must come first'\n"
        "import ruvattn.widgets as w\n"
        "print(w.AttentionHeatmap.__module__)"
    )
    root = Path(__file__).resolve().parents[1]
    assert (root / "widgets" / "__init__.py").is_file()
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    error, module = out.stdout.strip().splitlines()
    assert error.startswith("ImportError:") and "`import ruvattn.widgets`" in error and "'widgets'" in error
    assert module == "ruvattn.widgets.heatmap"


def test_heatmap_neighbour_mode_each_row_over_its_own_keys():
    rng = np.random.default_rng(5)
    table = rng.standard_normal((30, 16))
    lists = [[3, 7, 9], [7, 11], [0, 3, 29, 12]]  # ragged, overlapping
    view = AttentionHeatmap(ScaledDotProductAttention(16), table[:3], table, neighbours=lists, mode="difference")
    s = view.state
    np.testing.assert_array_equal(s.columns, sorted({i for row in lists for i in row}))
    for i, ids in enumerate(lists):
        at = np.searchsorted(s.columns, ids)
        np.testing.assert_allclose(s.weights[i, at], naive_sdpa(table[i : i + 1], table[ids])[0], atol=1e-12)
        assert np.isnan(np.delete(s.weights[i], at)).all()  # keys outside the row's list are gaps
    # gaps travel as None (JSON null), never NaN; the statistics are per-row means
    z = np.asarray(view.figure.data[0].z, dtype=object)
    assert all(v is None or np.isfinite(v) for v in z.ravel())
    ent = np.mean([entropy(naive_sdpa(table[i : i + 1], table[ids])[0]) for i, ids in enumerate(lists)])
    assert s.stats["entropy"] == pytest.approx(ent, abs=1e-12)
    assert s.stats["max_abs_difference"] == pytest.approx(0.0, abs=1e-12)  # sdpa is its own exact reference
    lg = AttentionHeatmap(LocalGlobalAttention(16, local_window=1, global_nodes=0), table[:3], table, neighbours=lists)
    direct = LocalGlobalAttention(16, local_window=1, global_nodes=0)
    np.testing.assert_allclose(
        lg.state.weights[2, np.searchsorted(lg.state.columns, lists[2])],
        direct.attention_weights(table[2], table[lists[2]]),
    )
    with pytest.raises(ValueError, match="no neighbours"):
        AttentionHeatmap(ScaledDotProductAttention(16), table[:2], table, neighbours=[[1, 2], []])


def _every_widget(q: np.ndarray, k: np.ndarray) -> dict:
    from ruvattn.widgets import MoERoutingView, NeighbourhoodView, PoincareDiskView

    moe = MoEAttention.builder().add_local_expert(16).add_linear_expert().top_k(1).build()
    ring = [[(i + 1) % (len(q) + len(k)), (i + 2) % (len(q) + len(k))] for i in range(len(q) + len(k))]
    return {
        "heatmap": lambda: AttentionHeatmap(ScaledDotProductAttention(16), q, k),
        "heatmap-favor": lambda: AttentionHeatmap(LinearAttention(16, feature_map="favor"), q, k),
        "heads": lambda: HeadView(MultiHeadAttention(16, num_heads=4), q, k),
        "neighbourhood": lambda: NeighbourhoodView("scaled_dot_product", np.vstack([q, k]), ring),
        "poincare": lambda: PoincareDiskView(np.vstack([q, k]), euclidean=True),
        "moe": lambda: MoERoutingView(moe, q),
    }


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["heatmap", "heatmap-favor", "heads", "neighbourhood", "poincare", "moe"])
def test_every_widget_refuses_non_finite_input_by_name(name, bad):
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((4, 16)), rng.standard_normal((20, 16))
    q[0, 3] = bad
    with pytest.raises(ValueError, match="must be finite"):  # NumericalInstability, naming the argument
        _every_widget(q, k)[name]()


@pytest.mark.parametrize("name", ["heatmap", "heatmap-favor", "heads", "neighbourhood", "poincare", "moe"])
def test_every_widget_survives_huge_values_without_nan(name):
    rng = np.random.default_rng(2)
    q, k = 1e30 * rng.standard_normal((4, 16)), 1e30 * rng.standard_normal((20, 16))
    view = _every_widget(q, k)[name]()
    arrays = [getattr(view.state, f) for f in view.state.__dataclass_fields__]
    for a in arrays:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            assert not np.isnan(a).any()
    assert view.error is None


def test_a_widget_must_implement_compute_and_render():
    from ruvattn.widgets import AttentionWidget

    class Half(AttentionWidget):
        def compute(self):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Half()


# -- controls derived from the declared parameters ---------------------------------------------------------


def _expected_control(param, params: dict, num_keys: int):
    """The rule of ruvattn.widgets._controls written out again: (widget type, bounds or options), or None."""
    c, value = param.constraint, params[param.name]
    if not param.live or not c.control or value is None:
        return None
    if param.options is not None:
        return ipw.Dropdown, list(param.options(params))
    if c.control == "choice":
        return ipw.Dropdown, list(c.choices)
    if c.control == "bool":
        return ipw.Checkbox, None
    if c.control == "int":
        return ipw.IntSlider, (c.low, c.high if c.high is not None else max(4 * value, num_keys))
    if c.low == 0 and c.high is None and c.closed == "neither":
        return ipw.FloatLogSlider, (0.0, np.inf)
    return ipw.FloatSlider, (c.low, c.high)


def _other_value(control):
    """A different value the control offers (what a person moving it would pick)."""
    if isinstance(control, ipw.Checkbox):
        return not control.value
    if isinstance(control, ipw.Dropdown):
        values = [o[1] if isinstance(o, tuple) else o for o in control.options]
        return next(v for v in values if v != control.value)
    if isinstance(control, ipw.FloatLogSlider):
        return control.value * 2.0
    if isinstance(control, ipw.IntSlider):
        return control.value + 1 if control.value < control.max else control.value - 1
    return (control.value + control.max) / 2 if control.value < control.max else (control.value + control.min) / 2


def _fresh_weights(mech, q, k):
    """The head-mean weights of a new instance built from ``mech``'s parameters (learned arrays from the seed)."""
    return np.asarray(type(mech).from_dict(mech.to_dict()).weights(q, k), np.float64).mean(axis=0)


@pytest.mark.parametrize("kind", ruvattn.available())
def test_every_live_parameter_gets_the_control_its_constraint_describes(kind):
    """For every registered mechanism: one control per live parameter with a control kind (and a value), the
    constraint's bounds on it; moving it calls set_params and redraws the weights a new instance computes, or
    shows the library's error and keeps the last figure."""
    example = mechanism_class(kind).example()
    mech, q, k = example.mechanism, example.queries, example.keys
    view = AttentionHeatmap(mech, q, k)
    params = mech.get_params()
    expected = {p.name: _expected_control(p, params, k.shape[0]) for p in type(mech).params}
    expected = {name: rule for name, rule in expected.items() if rule is not None}
    assert set(view.parameter_controls) == set(expected) and expected
    for name, (widget, bounds) in expected.items():
        control, param = view.controls[name], next(p for p in type(mech).params if p.name == name)
        assert type(control) is widget, name
        assert control.description == name.replace("_", " ") and control.tooltip == param.doc
        if widget is ipw.Checkbox:
            assert control.value is params[name]
            continue
        assert control.value == params[name]
        if widget is ipw.Dropdown:
            assert list(control.options)[: len(bounds)] == bounds
        elif widget is ipw.FloatLogSlider:
            assert control.base == 10 and control.min <= np.log10(control.value) <= control.max
        else:
            lo, hi = bounds
            closed = getattr(param.constraint, "closed", "both")
            if lo is not None:
                assert control.min > lo if closed in ("right", "neither") else control.min == lo, name
            if hi is not None:
                assert control.max < hi if closed in ("left", "neither") else control.max == hi, name
    for name in expected:
        control = view.controls[name]
        before, figure, updates = mech.get_params(), np.asarray(view.figure.data[0].z).copy(), view.updates
        new = _other_value(control)
        control.value = new
        assert view.updates + (view.error is not None) == updates + 1  # one redraw, or one error
        if view.error is None:
            assert mech.get_params()[name] == pytest.approx(new)
            np.testing.assert_allclose(np.asarray(view.figure.data[0].z), _fresh_weights(mech, q, k), atol=1e-12)
        else:  # the library's own message, and the last good figure
            with pytest.raises(ruvattn.AttentionError) as exc:
                type(mech).from_dict({**before, name: control.value}).weights(q, k)
            assert view.error == str(exc.value) and "color:#b00020" in view.status.value
            np.testing.assert_array_equal(np.asarray(view.figure.data[0].z), figure)
            view.set(**{name: before[name]})
            assert view.error is None
        control.value = before[name] if not isinstance(control, ipw.Checkbox) else bool(before[name])
        assert mech.get_params()[name] == before[name]


class _Tomorrow(Attention):
    """A mechanism the widgets have never heard of: softmax(s·(q·k)/√d) with a few extra knobs."""

    params = (
        DIM,
        Param("sharpness", V.POSITIVE, 1.0, "multiplies the scores"),
        Param("first_bonus", V.Options("none", "one"), "none", "adds 1 to the first key's score"),
        Param("halve", V.FLAG, False, "halves the scores"),
        Param("window", V.POSITIVE_INT, 6, "the first `window` keys take part"),
        Param("mix", V.Real(0.0, 1.0), 0.0, "blends the weights with uniform"),
        Param("offset", V.Real(None, None), None, "an ignored number (None: no control)", none=True),
    )

    def _weights_one(self, op, query, keys, **kwargs):
        return _tomorrow_reference(self.get_params(), np.asarray(query)[None], np.asarray(keys))

    def forward(self, query, keys, values=None, **kwargs):
        return self._weights_one("forward", query, keys)[0] @ np.asarray(values)


def _tomorrow_reference(p: dict, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    scores = p["sharpness"] * (q @ k.T) / np.sqrt(k.shape[1]) * (0.5 if p["halve"] else 1.0)
    scores[:, 0] += 1.0 if p["first_bonus"] == "one" else 0.0
    scores[:, p["window"] :] = -np.inf
    w = softmax(scores, axis=1)
    return (1 - p["mix"]) * w + p["mix"] / k.shape[0]


def test_a_mechanism_registered_tomorrow_gets_controls_without_editing_widgets(data):
    q, k = data
    view = AttentionHeatmap(_Tomorrow(16, sharpness=2.0), q, k)
    c = view.parameter_controls
    assert list(c) == ["sharpness", "first_bonus", "halve", "window", "mix"]  # "offset" is None: no control
    assert isinstance(c["sharpness"], ipw.FloatLogSlider) and c["sharpness"].value == 2.0
    assert list(c["first_bonus"].options) == ["none", "one"] and isinstance(c["halve"], ipw.Checkbox)
    assert (c["window"].min, c["window"].max) == (1, 40)  # open-ended: up to max(4·6, n keys)
    assert (c["mix"].min, c["mix"].max) == (0.0, 1.0)
    np.testing.assert_allclose(view.state.weights, _tomorrow_reference(view.mechanism.get_params(), q, k), atol=1e-12)
    for name, value in [("sharpness", 0.25), ("first_bonus", "one"), ("halve", True), ("window", 30), ("mix", 0.4)]:
        c[name].value = value
        p = view.mechanism.get_params()
        assert p[name] == value and view.error is None
        np.testing.assert_allclose(np.asarray(view.figure.data[0].z), _tomorrow_reference(p, q, k), atol=1e-12)
    assert view.updates == 6


def test_moe_heatmap_is_the_routing_weighted_mixture_and_a_bad_top_k_stays_on_the_status_line(data):
    q, k = data
    temps = (0.5, 1.0, 2.0)
    moe = MoEAttention(16, experts=[{"type": "scaled_dot_product", "dim": 16, "temperature": t} for t in temps])
    view = AttentionHeatmap(moe, q, k)
    logits = q @ moe.router.weight_.T + moe.router.bias_  # by hand: top-2, gates softmax over the chosen logits
    chosen = np.argsort(-logits, axis=1, kind="stable")[:, :2]
    gates = softmax(np.take_along_axis(logits, chosen, axis=1), axis=1)
    expect = np.stack(
        [sum(g * naive_sdpa(q[i : i + 1], k, temps[e])[0] for e, g in zip(chosen[i], gates[i], strict=True))
         for i in range(len(q))]
    )  # fmt: skip
    np.testing.assert_allclose(view.state.weights, expect, atol=1e-10)
    view.controls["top_k"].value = 1  # set_params(top_k=1): the router is rebuilt from the same seed
    top1 = np.stack([naive_sdpa(q[i : i + 1], k, temps[chosen[i, 0]])[0] for i in range(len(q))])
    np.testing.assert_allclose(np.asarray(view.figure.data[0].z), top1, atol=1e-10)
    shown = np.asarray(view.figure.data[0].z).copy()
    assert view.controls["top_k"].max == 40  # open-ended: the slider offers more experts than there are
    view.controls["top_k"].value = 5
    assert "'top_k' must be an integer in [1, 3]" in view.error and "top_k" in view.status.value
    assert view.mechanism.get_params()["top_k"] == 1  # all or nothing: nothing changed
    np.testing.assert_array_equal(np.asarray(view.figure.data[0].z), shown)
    view.controls["temperature"].value = 0.5  # still refused while top_k = 5 is on the slider
    assert view.error is not None and view.mechanism.get_params()["temperature"] == 1.0
    view.set(top_k=2)
    assert view.error is None and view.mechanism.get_params()["temperature"] == 0.5


def test_option_lists_follow_the_parameters(data):
    q, k = data
    view = AttentionHeatmap(FlashAttention(16, block_size=48), q, k)
    assert list(view.controls["block_size"].options) == [8, 16, 32, 48, 64, 128, 256]  # the declared options
    view.controls["block_size"].value = 16
    assert list(view.controls["block_size"].options) == [8, 16, 32, 64, 128, 256]  # re-listed for block_size=16
    assert view.controls["block_size"].value == 16 and view.updates == 2 and view.error is None
    np.testing.assert_allclose(np.asarray(view.figure.data[0].z), naive_sdpa(q, k), atol=1e-6)
    mha = AttentionHeatmap(MultiHeadAttention(12, num_heads=3), q[:, :12], k[:, :12])
    assert list(mha.controls["num_heads"].options) == [1, 2, 3, 4, 6, 12]  # the head counts dividing 12


def test_embed_maps_euclidean_rows_into_the_mechanisms_space(data):
    q, k = data
    c, tau = 2.0, 0.3
    view = AttentionHeatmap(HyperbolicAttention(16, curvature=-c, temperature=tau), q, k, embed=True)
    rows = np.vstack([q, k])  # by hand: one scale for all rows (the longest at 0.5/√c), then exp0
    u = rows * 0.5 / (np.linalg.norm(rows, axis=1).max() * np.sqrt(c))
    r = np.sqrt(c) * np.linalg.norm(u, axis=1, keepdims=True)
    x = np.tanh(r) * u / r
    xq, xk = x[: len(q)], x[len(q) :]
    np.testing.assert_allclose(view.queries, xq, atol=1e-12)
    sq = lambda a: (a * a).sum(-1)  # noqa: E731
    d = np.arccosh(1 + 2 * c * sq(xq[:, None] - xk[None]) / ((1 - c * sq(xq))[:, None] * (1 - c * sq(xk))[None]))
    np.testing.assert_allclose(view.state.weights, softmax(-d / np.sqrt(c) / tau, axis=1), atol=1e-9)
    flat = AttentionHeatmap(ScaledDotProductAttention(16), q, k, embed=True)  # Euclidean: the identity
    np.testing.assert_array_equal(flat.queries, q)
    np.testing.assert_allclose(flat.state.weights, naive_sdpa(q, k), atol=1e-12)


def test_no_widget_switches_on_the_mechanisms_class():
    """The widgets know mechanisms only through the contract (no isinstance on a mechanism class)."""
    root = Path(__file__).resolve().parents[1] / "widgets"
    pattern = re.compile(r"isinstance\(.*(GAT|Hyperbolic|MultiHead|Linear|MoE|Flash|LocalGlobal)")
    hits = [f"{p.name}:{i}" for p in root.glob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line)]  # fmt: skip
    assert hits == []


def test_control_rules_at_the_edges():
    """A none-able parameter given a value gets its control; an unbounded real spans [-w, w]; a choice
    parameter holding a number outside its choices offers that number too."""
    from ruvattn import ManifoldAttention
    from ruvattn.widgets._controls import controls_for

    sdpa = controls_for(ScaledDotProductAttention(16, scale=0.25), 40)
    assert isinstance(sdpa["scale"], ipw.FloatLogSlider) and sdpa["scale"].value == 0.25
    assert sdpa["scale"].min == pytest.approx(np.log10(0.25) - 1.5) and sdpa["scale"].max == 1.5
    assert (sdpa["dropout"].min, sdpa["dropout"].max, sdpa["dropout"].step) == (0.0, 0.99, 0.01)  # [0, 1)
    assert "scale" not in controls_for(ScaledDotProductAttention(16), 40)  # None: no control
    curvature = controls_for(ManifoldAttention(16, manifold="poincare", curvature=-2.0), 40)["curvature"]
    assert (curvature.min, curvature.max, curvature.value) == (-10.0, 10.0, -2.0)  # 5·|-2| rounded up to 10
    fill = controls_for(GATConv(8, 4, fill_value=0.5), 40)["fill_value"]
    assert list(fill.options) == ["mean", "add", "sum", "max", "min", 0.5] and fill.value == 0.5
    moe = MoEAttention(16, experts=[{"type": "scaled_dot_product", "dim": 16}] * 2, top_k=1, capacity_factor=1.25)
    assert isinstance(controls_for(moe, 40)["capacity_factor"], ipw.FloatLogSlider)
    assert "experts" not in controls_for(moe, 40)  # a custom constraint has no control kind
