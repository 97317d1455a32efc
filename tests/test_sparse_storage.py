"""Sparse storage of attention weights: each selection rule against a numpy reference written from its
definition, the memory and mass reports recomputed by hand, the file round trip bit for bit, the neighbour
form and heads layout, the error messages, and the heatmap's round trip (stored weights shown without a
mechanism; a mechanism's heatmap exported and shown again)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import softmax

from ruvattn import DimensionMismatch, InvalidConfig, MultiHeadAttention, NumericalInstability
from ruvattn import ScaledDotProductAttention as SDPA
from ruvattn.compression.sparse_storage import SparseWeights, sparsify
from ruvattn.graph import NeighbourList
from ruvattn.sparse import SparsityPattern


@pytest.fixture
def weights() -> np.ndarray:
    """(6, 12) softmax rows with ties: scores on a coarse grid, a few exact zeros (masked keys)."""
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 4, size=(6, 12)).astype(np.float64)
    w = softmax(scores, axis=1)
    w[1, [0, 5, 7]] = 0.0
    w[1] /= w[1].sum()
    return w


def top_k_mask(w: np.ndarray, k: int) -> np.ndarray:
    """The k largest per row, equal weights by lower key index (a stable argsort), never a zero."""
    order = np.argsort(-w, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(w.shape, bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask & (w > 0)


def mass_mask(w: np.ndarray, p: float) -> np.ndarray:
    """Row by row: the shortest run of largest weights whose sum reaches p of the row's sum."""
    mask = np.zeros(w.shape, bool)
    for i, row in enumerate(w):
        order = np.argsort(-row, kind="stable")
        total, acc = row[order].sum(), 0.0
        for j in order:
            if row[j] == 0 or acc >= p * total:
                break
            mask[i, j] = True
            acc += row[j]
    return mask


def test_top_k_keeps_exactly_the_k_largest_with_ties_by_lower_key(weights):
    assert (np.sort(weights, axis=1)[:, -4] == np.sort(weights, axis=1)[:, -5]).any()  # ties at the cut
    for k in (1, 4, 9, 12):
        s = sparsify(weights, top_k=k)
        mask = top_k_mask(weights, k)
        np.testing.assert_array_equal(s.to_dense(), np.where(mask, weights, 0.0))
        np.testing.assert_array_equal(np.diff(s.to_scipy().indptr), np.minimum(k, (weights > 0).sum(axis=1)))
    tied = sparsify(np.array([[0.2, 0.3, 0.2, 0.3, 0.0]]), top_k=3)
    assert tied.to_scipy().indices.tolist() == [0, 1, 3]  # 0.3 at keys 1 and 3, then 0.2 at key 0 (not 2)
    assert sparsify(np.array([[0.2, 0.3, 0.2, 0.3, 0.0]]), top_k=5).nnz == 4  # a zero is never stored


def test_threshold_keeps_exactly_the_weights_at_or_above_it(weights):
    t = float(np.sort(weights.ravel())[40])  # a value present in the matrix: kept (w >= t)
    s = sparsify(weights, threshold=t)
    np.testing.assert_array_equal(s.to_dense(), np.where(weights >= t, weights, 0.0))
    assert s.nnz == int((weights >= t).sum())
    lossless = sparsify(weights, threshold=0.0)  # every non-zero weight, nothing lost
    np.testing.assert_array_equal(lossless.to_dense(), weights)
    assert lossless.nnz == int((weights > 0).sum()) and lossless.max_mass_lost == 0.0


def test_mass_keeps_the_smallest_set_reaching_the_mass(weights):
    for p in (0.3, 0.5, 0.9, 1.0):
        s = sparsify(weights, mass=p)
        mask = mass_mask(weights, p)
        np.testing.assert_array_equal(s.to_dense(), np.where(mask, weights, 0.0))
        assert ((weights * mask).sum(axis=1) >= p * weights.sum(axis=1) - 1e-12).all()


@pytest.mark.parametrize("rule", [{"top_k": 3}, {"threshold": 0.1}, {"mass": 0.8}])
def test_mass_lost_is_one_minus_the_kept_share_of_each_row(weights, rule):
    raw = weights * np.linspace(0.5, 2.0, 6)[:, None]  # rows not summing to 1: the share of each row's sum
    s = sparsify(raw, **rule)
    expected = 1.0 - s.to_dense().sum(axis=1) / raw.sum(axis=1)
    np.testing.assert_allclose(s.mass_lost, expected, rtol=0, atol=1e-12)
    assert s.max_mass_lost == pytest.approx(expected.max(), abs=1e-12)
    assert s.mean_mass_lost == pytest.approx(expected.mean(), abs=1e-12)
    assert s.report()["max_mass_lost"] == s.max_mass_lost


@pytest.mark.parametrize("fmt", ["csr", "coo"])
@pytest.mark.parametrize("dtype", [None, np.float32])
def test_nbytes_counts_the_stored_arrays_and_beats_dense_when_sparse(fmt, dtype):
    w = softmax(np.random.default_rng(0).standard_normal((64, 200)) * 3, axis=1)
    s = sparsify(w, top_k=8, format=fmt, dtype=dtype)
    m = s.to_scipy()
    arrays = (m.data, m.indices, m.indptr) if fmt == "csr" else (m.data, m.row, m.col)
    assert s.format == fmt and m.data.dtype == np.dtype(dtype or np.float64)
    assert s.nbytes == sum(a.nbytes for a in arrays)
    assert s.dense_nbytes == 64 * 200 * m.data.dtype.itemsize
    assert s.nbytes < s.dense_nbytes and s.saved == pytest.approx(1 - s.nbytes / s.dense_nbytes)
    np.testing.assert_array_equal(s.to_dense(), np.where(top_k_mask(w, 8), w, 0).astype(m.data.dtype))
    # denser than about half: stored indices cost more than they save
    assert sparsify(w, threshold=0.0).saved < 0


def test_renormalize_makes_rows_sum_to_one_and_reports_the_loss_before_it(weights):
    plain = sparsify(weights, top_k=3)
    renorm = sparsify(weights, top_k=3, renormalize=True)
    np.testing.assert_allclose(renorm.to_dense().sum(axis=1), 1.0, atol=1e-12)
    kept = plain.to_dense()
    np.testing.assert_allclose(renorm.to_dense(), kept / kept.sum(axis=1, keepdims=True), atol=1e-15)
    np.testing.assert_array_equal(renorm.mass_lost, plain.mass_lost)
    assert renorm.renormalized and not plain.renormalized


def test_heads_are_stacked_rows_h_times_m_plus_i():
    w = softmax(np.random.default_rng(1).standard_normal((3, 5, 9)), axis=-1)
    s = sparsify(w, top_k=2, format="coo")
    stacked = s.to_scipy().toarray()
    assert stacked.shape == (15, 9) and s.num_heads == 3 and s.shape == (3, 5, 9)
    expected = np.where(top_k_mask(w, 2), w, 0.0)
    np.testing.assert_array_equal(stacked.reshape(3, 5, 9), expected)  # row h * 5 + i is head h, query i
    for h in range(3):
        np.testing.assert_array_equal(s.to_scipy(head=h).toarray(), expected[h])
        assert s.to_scipy(head=h).format == "coo"
    np.testing.assert_array_equal(s.to_dense(), expected)
    assert s.mass_lost.shape == (3, 5)
    np.testing.assert_allclose(s.mass_lost, 1 - expected.sum(axis=-1), atol=1e-12)


@pytest.mark.parametrize("fmt", ["csr", "coo"])
def test_save_load_is_bit_exact_and_plain_scipy_reads_the_matrix(tmp_path, fmt):
    w = softmax(np.random.default_rng(2).standard_normal((2, 4, 7)), axis=-1).astype(np.float32)
    s = sparsify(w, mass=0.7, format=fmt, renormalize=True, query_labels=["a", "b", "c", 4],
                 key_labels=list("abcdefg"))  # fmt: skip
    path = s.save(tmp_path / "weights")  # the suffix is added
    assert path.name == "weights.npz"
    back = SparseWeights.load(path)
    a, b = s.to_scipy(), back.to_scipy()
    assert type(a) is type(b) and a.format == b.format == fmt
    for x, y in zip(s._arrays(), back._arrays(), strict=True):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert back.shape == s.shape and back.rule == ("mass", 0.7) and back.renormalized
    assert back.query_labels == ("a", "b", "c", 4) and back.key_labels == tuple("abcdefg")
    assert back.mass_lost.tobytes() == s.mass_lost.tobytes()
    assert back.nbytes == s.nbytes and back.to_dense().tobytes() == s.to_dense().tobytes()
    plain = sp.load_npz(path)  # the same file is an ordinary scipy .npz
    assert plain.format == fmt and plain.toarray().tobytes() == a.toarray().tobytes()
    sp.save_npz(tmp_path / "bare.npz", a)
    with pytest.raises(InvalidConfig, match="no SparseWeights metadata"):
        SparseWeights.load(tmp_path / "bare.npz")


def test_neighbour_form_matches_the_dense_reference():
    """Weights aligned with a neighbour list's CSR order (as mechanism.weights(..., neighbours=) returns them)."""
    rng = np.random.default_rng(3)
    table = rng.standard_normal((20, 8))
    lists = [[4, 1, 9, 2, 17], [], [3, 0], [19, 5, 6, 11, 12, 13]]  # unsorted, ragged, one node without neighbours
    nl = NeighbourList.from_lists(lists, 20)
    mha = MultiHeadAttention(8, num_heads=2)
    w = np.asarray(mha.weights(table[:4], table, neighbours=nl), np.float64)  # (2, nnz)
    dense = np.zeros((2, 4, 20))
    for h in range(2):
        dense[h, np.repeat(np.arange(4), nl.degrees()), nl.indices] = w[h]
    s = sparsify(w, neighbours=nl, top_k=3)
    assert s.shape == (2, 4, 20)
    np.testing.assert_array_equal(s.to_dense(), np.where(top_k_mask(dense, 3), dense, 0.0))
    row_sum = dense.sum(-1)
    expected_lost = np.where(row_sum > 0, 1 - s.to_dense().sum(-1) / np.where(row_sum > 0, row_sum, 1), 0.0)
    np.testing.assert_allclose(s.mass_lost, expected_lost, atol=1e-12)
    assert s.mass_lost[:, 1].tolist() == [0.0, 0.0]  # nothing to lose in an empty row
    one = sparsify(w[0], neighbours=(nl.indptr, nl.indices), num_keys=20, mass=0.6)  # a (indptr, indices) pair
    np.testing.assert_array_equal(one.to_dense(), np.where(mass_mask(dense[0], 0.6), dense[0], 0.0))
    # a scipy matrix holds its own entries: the same as its dense form
    m = sp.csr_array(dense[0])
    np.testing.assert_array_equal(sparsify(m, top_k=2).to_dense(), sparsify(dense[0], top_k=2).to_dense())


def test_pattern_and_the_mask_recipe(tmp_path, weights):
    s = sparsify(weights, top_k=4)
    p = s.pattern()
    assert isinstance(p, SparsityPattern)
    np.testing.assert_array_equal(p.attention_mask(), top_k_mask(weights, 4))
    mask = weights > 0.1  # the documented way to store a mask: SparsityPattern's CSR and scipy's npz
    sp.save_npz(tmp_path / "mask.npz", SparsityPattern(mask).to_csr())
    back = SparsityPattern(sp.load_npz(tmp_path / "mask.npz")).attention_mask()
    assert back.dtype == bool
    np.testing.assert_array_equal(back, mask)


def test_bad_inputs_say_what_is_wrong(weights):
    bad = weights.copy()
    bad[2, 3] = np.nan
    with pytest.raises(NumericalInstability, match=r"sparsify: weights must be finite; got weights\[2, 3\] = nan"):
        sparsify(bad, top_k=2)
    bad[2, 3] = -0.5
    with pytest.raises(InvalidConfig, match=r"must be non-negative \(attention weights\); got weights\[2, 3\] = -0.5"):
        sparsify(bad, top_k=2)
    for k in (0, 13, 2.0):
        with pytest.raises(InvalidConfig, match=rf"sparsify: 'top_k' must be an integer in \[1, 12\]; got {k}"):
            sparsify(weights, top_k=k)
    for t in (-0.1, 1.5):
        with pytest.raises(InvalidConfig, match=rf"'threshold' must be a number in \[0, 1\]; got {t}"):
            sparsify(weights, threshold=t)
    with pytest.raises(InvalidConfig, match=r"'mass' must be a number in \(0, 1\]; got 0"):
        sparsify(weights, mass=0)
    with pytest.raises(InvalidConfig, match="exactly one of 'top_k', 'threshold' or 'mass'; got none"):
        sparsify(weights)
    with pytest.raises(InvalidConfig, match="got top_k, threshold"):
        sparsify(weights, top_k=2, threshold=0.1)
    with pytest.raises(DimensionMismatch, match=r"weights has shape \(12,\), expected \(m, n\) or \(heads, m, n\)"):
        sparsify(weights[0], top_k=2)
    with pytest.raises(DimensionMismatch, match=r"shape \(1, 1, 6, 12\)"):
        sparsify(weights[None, None], top_k=2)
    with pytest.raises(InvalidConfig, match=r"a mask rather than weights.*SparsityPattern\(mask\)"):
        sparsify(weights > 0.1, top_k=2)
    with pytest.raises(InvalidConfig, match="'format' must be one of 'csr', 'coo'; got 'dense'"):
        sparsify(weights, top_k=2, format="dense")
    with pytest.raises(
        InvalidConfig, match=r"'dtype' must be float32 or float64 \(scipy.sparse has no float16\); got 'float16'"
    ):
        sparsify(weights, top_k=2, dtype="float16")
    with pytest.raises(NumericalInstability, match=r"a kept weight does not fit float32; got \d"):
        sparsify(weights * 1e40, top_k=2, dtype=np.float32)
    assert sparsify(weights.astype(np.float16), top_k=2).dtype == np.float32
    with pytest.raises(DimensionMismatch, match=r"query_labels must have one label per query \(6\); got 2"):
        sparsify(weights, top_k=2, query_labels=["a", "b"])
    nl = NeighbourList.from_lists([[1, 2], [0]], 3)
    with pytest.raises(DimensionMismatch, match=r"expected \(\.\.\., 3\): one weight per neighbour id"):
        sparsify(np.ones(4) / 2, neighbours=nl, top_k=1)
    with pytest.raises(InvalidConfig, match=r"'num_keys' \(the number of keys the ids index\) is required"):
        sparsify(np.ones(3) / 2, neighbours=[[1, 2], [0]], top_k=1)
    with pytest.raises(InvalidConfig, match="got id 2 twice in row 0"):
        sparsify(np.ones(3) / 2, neighbours=[[2, 2], [0]], num_keys=3, top_k=1)


# -- the heatmap round trip ---------------------------------------------------------------------------------

widgets = pytest.importorskip("ruvattn.widgets")
AttentionHeatmap = widgets.AttentionHeatmap


def shown_z(view) -> np.ndarray:
    """The trace's z as floats, NaN where the figure has a gap (None)."""
    z = np.asarray(view.figure.data[0].z, dtype=object)
    return np.array([[np.nan if v is None else v for v in row] for row in z], dtype=np.float64)


def test_heatmap_from_stored_weights_shows_exactly_those_numbers(weights):
    s = sparsify(weights, top_k=4, query_labels=[f"q{i}" for i in range(6)], key_labels=[f"k{j}" for j in range(12)])
    view = AttentionHeatmap.from_weights(s)
    z = shown_z(view)
    stored = top_k_mask(weights, 4)
    np.testing.assert_array_equal(z[stored], weights[stored])  # the stored numbers, bit for bit
    assert np.isnan(z[~stored]).all()  # blank where nothing is stored
    assert list(view.figure.layout.xaxis.ticktext) == [f"k{j}" for j in range(12)]
    assert list(view.figure.layout.yaxis.ticktext) == [f"q{i}" for i in range(6)]
    # no mechanism: no mode and no parameters to move, and setting one says so instead of doing nothing
    assert view.mechanism is None and "mode" not in view.controls and view.parameter_controls == {}
    with pytest.raises(InvalidConfig, match="unknown control"):
        view.set(mode="exact")
    assert "top_k=4" in view.figure.layout.title.text and f"{s.nnz} entries" in view.figure.layout.title.text


def test_heatmap_from_dense_weights_heads_and_paging():
    w = softmax(np.random.default_rng(4).standard_normal((2, 10, 7)), axis=-1)
    view = AttentionHeatmap.from_weights(w, max_queries=4)  # dense: every entry shown, the head mean
    np.testing.assert_allclose(shown_z(view), w.mean(axis=0)[:4], rtol=0, atol=1e-15)
    assert list(view.controls) == ["first_query"]
    view.controls["first_query"].value = 6
    np.testing.assert_array_equal(view.figure.data[0].y, [6, 7, 8, 9])
    np.testing.assert_allclose(shown_z(view), w.mean(axis=0)[6:], rtol=0, atol=1e-15)
    sparse_heads = AttentionHeatmap.from_weights(sparsify(w, top_k=1))  # a cell stored by one head of two
    kept = np.where(top_k_mask(w, 1), w, 0.0)
    expected = np.where(kept.any(axis=0), kept.mean(axis=0), np.nan)
    np.testing.assert_allclose(shown_z(sparse_heads)[:10], expected, rtol=0, atol=1e-15)


def test_export_from_a_mechanism_heatmap_and_show_it_again():
    rng = np.random.default_rng(5)
    q, k = rng.standard_normal((5, 16)), rng.standard_normal((30, 16))
    view = AttentionHeatmap(SDPA(16), q, k, mode="difference")
    view.controls["temperature"].value = 0.5  # the export follows the controls, not the "difference" panel
    shown = view.state.weights
    s = view.stored_weights(top_k=5)
    mask = top_k_mask(shown, 5)
    np.testing.assert_array_equal(s.to_dense(), np.where(mask, shown, 0.0))
    back = AttentionHeatmap.from_weights(s)
    z = shown_z(back)
    np.testing.assert_array_equal(z[mask], shown[mask])
    assert np.isnan(z[~mask]).all()
    again = back.stored_weights(top_k=5)  # exporting the stored view with the same rule changes nothing
    assert again.to_scipy().data.tobytes() == s.to_scipy().data.tobytes()
    np.testing.assert_array_equal(again.to_scipy().indices, s.to_scipy().indices)


def test_export_from_a_neighbour_heatmap_keeps_each_rows_own_keys():
    rng = np.random.default_rng(6)
    table = rng.standard_normal((30, 16))
    lists = [[3, 7, 9], [7, 11], [0, 3, 29, 12]]
    view = AttentionHeatmap(SDPA(16), table[:3], table, neighbours=lists)
    s = view.stored_weights(threshold=0.0)
    assert s.shape == (3, 30)
    dense = s.to_dense()
    for i, ids in enumerate(lists):
        at = np.searchsorted(view.state.columns, ids)
        np.testing.assert_array_equal(dense[i, ids], view.state.weights[i, at])
        assert dense[i].sum() == pytest.approx(1.0) and np.count_nonzero(dense[i]) == len(ids)
