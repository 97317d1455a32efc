"""AttentionHeatmap and HeadView: the traces hold the mechanism's weights (checked against numpy
written from the formulas), controls redraw them, bad settings land on the status line, and the
exports are offline. Also: the widgets folder installs as ``ruvattn.widgets`` only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ruvattn.widgets")

from scipy.special import softmax
from scipy.stats import entropy

from ruvattn import (
    FlashAttention,
    GATConv,
    InvalidConfig,
    LinearAttention,
    LocalGlobalAttention,
    MoEAttention,
    MultiHeadAttention,
    ScaledDotProductAttention,
)
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
    coarse = np.abs(view.state.shown).mean()
    view.set(num_features=512)
    assert view.mechanism.get_params()["num_features"] == 512
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
    moe = MoEAttention.builder().add_local_expert(16).add_linear_expert(16).top_k(1).build()
    with pytest.raises(InvalidConfig, match="MoERoutingView"):
        AttentionHeatmap(moe, q, k)
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
    per_head = np.stack([mha.head_attention_weights(row, k) for row in q], axis=1)  # (h, m, n)
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
        direct = np.stack([gat.attention_weights(row, k, ef)[h] for row in q])
        np.testing.assert_allclose(np.asarray(view.figure.data[h].z), direct, atol=1e-12)
    before = np.asarray(view.figure.data[2].z).copy()
    view.controls["heads"].value = ()  # nothing selected: an error on the status line, not an exception
    assert "select at least one head" in view.error and "select at least one head" in view.status.value
    np.testing.assert_array_equal(np.asarray(view.figure.data[2].z), before)
    with pytest.raises(InvalidConfig, match="no heads"):
        HeadView(ScaledDotProductAttention(8), q, k)


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
