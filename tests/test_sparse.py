"""Sparsity patterns (against dense definitions, and their algebra) and local + global attention."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruvattn import (
    EmptyInput,
    HyperbolicAttention,
    InvalidConfig,
    LocalGlobalAttention,
    NumericalInstability,
    ScaledDotProductAttention,
    SparseGraphAttention,
    SparsityPattern,
    build,
)
from ruvattn.errors import DimensionMismatch, OutOfBounds

# -- patterns against their dense definitions ----------------------------------------------


def _dense(n, nk, keep):
    return np.array([[bool(keep(i, j)) for j in range(nk)] for i in range(n)])


@pytest.mark.parametrize("n,w", [(1, 1), (7, 3), (10, 4), (9, 20)])
def test_sliding_and_dilated_windows(n, w):
    lo, hi = (w - 1) // 2, w // 2
    want = _dense(n, n, lambda i, j: -lo <= j - i <= hi)
    np.testing.assert_array_equal(SparsityPattern.sliding_window(n, w).attention_mask(), want)
    want = _dense(n, n, lambda i, j: (j - i) % 3 == 0 and -lo <= (j - i) // 3 <= hi)
    np.testing.assert_array_equal(SparsityPattern.dilated_window(n, w, 3).attention_mask(), want)
    assert SparsityPattern.sliding_window(n, w).count_nonzero() == int(
        _dense(n, n, lambda i, j: -lo <= j - i <= hi).sum()
    )


def test_blocks_random_global_hnsw():
    np.testing.assert_array_equal(
        SparsityPattern.blocks(10, 4).attention_mask(), _dense(10, 10, lambda i, j: i // 4 == j // 4)
    )
    r = SparsityPattern.random(20, 5, seed=3, n_keys=30)
    assert r.shape == (20, 30) and (r.degrees() == 5).all()
    assert r == SparsityPattern.random(20, 5, seed=3, n_keys=30) and r != SparsityPattern.random(
        20, 5, seed=4, n_keys=30
    )
    assert (SparsityPattern.random(4, 50, n_keys=6).degrees() == 6).all()  # capped at n_keys
    g = SparsityPattern.global_nodes(6, [1, 4])
    np.testing.assert_array_equal(g.attention_mask(), _dense(6, 6, lambda i, j: j in (1, 4) or i in (1, 4)))
    g1 = SparsityPattern.global_nodes(6, [1, 4], symmetric=False)
    np.testing.assert_array_equal(g1.attention_mask(), _dense(6, 6, lambda i, j: j in (1, 4)))
    layers = [np.arange(8), [2, 5, 7], [5]]  # base layer, then upper layers
    assert SparsityPattern.hnsw_layers(layers, 8) == SparsityPattern.global_nodes(8, [2, 5, 7], symmetric=False)
    base = [[1, 2], [0], [3, 1], [], [0, 1, 2], [4], [6], [0]]
    p = SparsityPattern.from_neighbours(base, 8) | SparsityPattern.hnsw_layers(layers, 8)
    assert p.row(3).tolist() == [2, 5, 7] and p.row(0).tolist() == [1, 2, 5, 7]
    padded = np.array([[1, 2, -1], [-1, -1, -1]])
    assert SparsityPattern.from_neighbours(padded, 3).attention_mask().tolist() == [[False, True, True], [False] * 3]


def test_validation():
    with pytest.raises(InvalidConfig, match="window"):
        SparsityPattern.sliding_window(5, 0)
    with pytest.raises(InvalidConfig, match="dilation"):
        SparsityPattern.dilated_window(5, 3, 0)
    with pytest.raises(OutOfBounds, match=r"\[0, 6\)"):
        SparsityPattern.global_nodes(6, [7])
    with pytest.raises(DimensionMismatch, match="shapes differ"):
        _ = SparsityPattern.blocks(4, 2) | SparsityPattern.blocks(5, 2)
    with pytest.raises(DimensionMismatch, match="n=3"):
        SparsityPattern.blocks(4, 2).attention_mask(3)
    with pytest.raises(InvalidConfig, match="base layer"):
        SparsityPattern.hnsw_layers([], 4)


# -- the algebra (hypothesis) --------------------------------------------------------------

N = 12


@st.composite
def patterns(draw):
    kind = draw(st.sampled_from(["window", "dilated", "blocks", "random", "global", "dense"]))
    if kind == "window":
        return SparsityPattern.sliding_window(N, draw(st.integers(1, 15)))
    if kind == "dilated":
        return SparsityPattern.dilated_window(N, draw(st.integers(1, 6)), draw(st.integers(1, 4)))
    if kind == "blocks":
        return SparsityPattern.blocks(N, draw(st.integers(1, 13)))
    if kind == "random":
        return SparsityPattern.random(N, draw(st.integers(0, N)), seed=draw(st.integers(0, 99)))
    if kind == "global":
        ids = draw(st.lists(st.integers(0, N - 1), max_size=4))
        return SparsityPattern.global_nodes(N, ids, symmetric=draw(st.booleans()))
    bits = draw(st.lists(st.booleans(), min_size=N * N, max_size=N * N))
    return SparsityPattern(np.array(bits).reshape(N, N))


@settings(max_examples=80, deadline=None)
@given(patterns(), patterns(), patterns())
def test_union_and_intersection_are_set_operations(a, b, c):
    ma, mb = a.attention_mask(), b.attention_mask()
    np.testing.assert_array_equal((a | b).attention_mask(), ma | mb)
    np.testing.assert_array_equal((a & b).attention_mask(), ma & mb)
    assert a | b == b | a and a & b == b & a
    assert (a | b) | c == a | (b | c) and (a & b) & c == a & (b & c)
    assert a | a == a and a & a == a and a | (a & b) == a and a & (a | b) == a
    assert (a & (b | c)) == (a & b) | (a & c)
    assert (a | b).count_nonzero() == a.count_nonzero() + b.count_nonzero() - (a & b).count_nonzero()
    assert a.count_nonzero() == int(ma.sum()) == int(a.degrees().sum())
    csr = (a | b).to_csr()  # canonical CSR: sorted, no duplicates, all stored values true
    for i in range(N):
        row = csr.indices[csr.indptr[i] : csr.indptr[i + 1]]
        assert (np.diff(row) > 0).all()
    assert csr.data.all()


# -- patterns drive any mechanism ------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: ScaledDotProductAttention(8), lambda: HyperbolicAttention(8)])
def test_a_pattern_as_mask_or_as_neighbour_list_gives_the_same_attention(make):
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((40, 8))).astype(np.float32)
    p = (
        SparsityPattern.sliding_window(40, 5)
        | SparsityPattern.global_nodes(40, [0, 20])
        | SparsityPattern.random(40, 3, seed=1)
    )
    attn = make()
    dense = attn.forward_batch(x, x, x, mask=p.attention_mask())
    sparse = attn.forward_neighbours(x, x, x, p.to_csr())
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-6)


# -- local + global attention ------------------------------------------------------------------


def test_spec_example_keeps_at_most_fifteen_and_the_best_neighbour():
    attn = SparseGraphAttention(16, local_window=10, global_nodes=5)
    assert isinstance(attn, LocalGlobalAttention) and build(attn.to_dict()).to_dict() == attn.to_dict()
    for n in (1, 3, 10, 15, 16, 1000):
        kept = attn.kept_positions(n)
        assert attn.count_nonzero(n) == kept.size <= 15 and kept.size == min(n, 15)
        assert kept[0] == 0  # the closest neighbour (first in an HNSW list) is always attended
        assert (kept[: min(n, 10)] == np.arange(min(n, 10))).all()  # the window is the first 10 entries
    assert attn.attention_mask(1000).sum() == 15


def test_window_is_centred_on_the_position_and_stays_inside():
    attn = LocalGlobalAttention(4, local_window=5, global_nodes=0)
    assert attn.kept_positions(20, position=10).tolist() == [8, 9, 10, 11, 12]
    assert attn.kept_positions(20, position=1).tolist() == [0, 1, 2, 3, 4]
    assert attn.kept_positions(20, position=19).tolist() == [15, 16, 17, 18, 19]
    assert attn.kept_positions(3, position=2).tolist() == [0, 1, 2]
    # global ids add to the window (deduplicated)
    assert attn.kept_positions(20, 0, global_ids=[3, 17, 19]).tolist() == [0, 1, 2, 3, 4, 17, 19]
    # landmarks spread over the rest of the list
    spread = LocalGlobalAttention(4, local_window=4, global_nodes=4).kept_positions(104)[4:]
    np.testing.assert_array_equal(spread, [16, 41, 66, 91])
    p = attn.pattern(20)
    assert p.shape == (20, 20) and p.row(10).tolist() == [8, 9, 10, 11, 12]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,position,glob", [(1000, 0, None), (50, 7, None), (12, 0, None), (300, 150, [0, 299, 77])])
def test_equals_masked_exact_attention_and_never_reads_other_keys(n, position, glob, dtype):
    rng = np.random.default_rng(n)
    q = rng.standard_normal(16).astype(dtype)
    k = rng.standard_normal((n, 16)).astype(dtype)
    v = rng.standard_normal((n, 5)).astype(dtype)
    attn = LocalGlobalAttention(16, local_window=32, global_nodes=8, temperature=0.7)
    mask = attn.attention_mask(n, position, glob)
    exact = ScaledDotProductAttention(16, temperature=0.7)
    out = attn.forward(q, k, v, position=position, global_ids=glob)
    np.testing.assert_allclose(out, exact.forward(q, k, v, mask=mask), rtol=1e-6, atol=1e-7)
    w = attn.attention_weights(q, k, position=position, global_ids=glob)
    np.testing.assert_allclose(w, exact.attention_weights(q, k, mask=mask), rtol=1e-6, atol=1e-7)
    assert (w[~mask] == 0).all()
    # poison every key and value that is not kept: the result cannot change
    k2, v2 = k.copy(), v.copy()
    k2[~mask], v2[~mask] = np.nan, np.inf
    np.testing.assert_array_equal(attn.forward(q, k2, v2, position=position, global_ids=glob), out)
    # an embedding table plus ids: the same selection applied to the id list
    table = np.concatenate([rng.standard_normal((7, 16)).astype(dtype), k])
    vt = np.concatenate([np.zeros((7, 5), dtype), v])
    ids = np.arange(7, 7 + n)
    np.testing.assert_array_equal(attn.forward(q, table, vt, ids=ids, position=position, global_ids=glob), out)


def test_batch_form_equals_one_query_at_a_time():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    attn = LocalGlobalAttention(8, local_window=6, global_nodes=2)
    pos = rng.integers(0, 200, 30)
    out = attn.forward_batch(x[:30], x, x, positions=pos)
    for i in range(30):
        np.testing.assert_allclose(out[i], attn.forward(x[i], x, x, position=int(pos[i])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(attn.forward_batch(x[:3], x, x)[2], attn.forward(x[2], x, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidConfig, match="positions"):
        attn.forward_batch(x[:3], x, x, positions=[0, 1])


def test_neighbour_form_cuts_every_list():
    rng = np.random.default_rng(1)
    table = rng.standard_normal((300, 8)).astype(np.float32)
    nodes = table[:20]
    lists = [rng.choice(300, size=int(rng.integers(0, 120)), replace=False) for _ in range(20)]
    lists[3] = np.empty(0, np.int64)
    attn = LocalGlobalAttention(8, local_window=10, global_nodes=3)
    out = attn.forward_neighbours(nodes, table, table, [list(x) for x in lists])
    w = attn.weights(nodes, table, neighbours=[list(x) for x in lists])[0]  # aligned with the given lists
    start = np.concatenate([[0], np.cumsum([ids.size for ids in lists])])
    for i, ids in enumerate(lists):
        if ids.size == 0:
            np.testing.assert_array_equal(out[i], 0)
            continue
        np.testing.assert_allclose(out[i], attn.forward(nodes[i], table, table, ids=ids), rtol=1e-5, atol=1e-6)
        pos = attn.kept_positions(ids.size)
        row = w[start[i] : start[i + 1]]
        dropped = np.setdiff1d(np.arange(ids.size), pos)
        np.testing.assert_array_equal(row[dropped], 0)  # entries outside the window and the globals: exactly 0
        np.testing.assert_allclose(row[pos], attn.attention_weights(nodes[i], table[ids[pos]]), rtol=1e-5)
    glob = attn.forward_neighbours(nodes, table, table, [list(x) for x in lists], global_ids=[0])
    np.testing.assert_allclose(
        glob[0], attn.forward(nodes[0], table, table, ids=lists[0], global_ids=[0]), rtol=1e-5, atol=1e-6
    )


def test_local_global_errors():
    with pytest.raises(InvalidConfig, match="local_window"):
        LocalGlobalAttention(8, local_window=0)
    with pytest.raises(InvalidConfig, match="global_nodes"):
        LocalGlobalAttention(8, global_nodes=-1)
    attn = LocalGlobalAttention(4, local_window=3, global_nodes=1)
    x = np.ones((10, 4), np.float32)
    with pytest.raises(InvalidConfig, match="position"):
        attn.forward(x[0], x, x, position=10)
    with pytest.raises(OutOfBounds, match="global_ids"):
        attn.forward(x[0], x, x, global_ids=[11])
    with pytest.raises(EmptyInput):
        attn.forward(x[0], x[:0], x[:0])
    with pytest.raises(DimensionMismatch):
        attn.forward(x[0], x[:, :3], x)
    bad = x.copy()
    bad[1, 2] = np.nan
    with pytest.raises(NumericalInstability, match="keys"):
        attn.forward(x[0], bad, x)
    bad[1, 2] = 0
    bad[9, 0] = np.nan  # not kept (window 0..2, landmark 6): never read
    assert np.isfinite(attn.forward(x[0], bad, x)).all()
