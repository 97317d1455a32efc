"""Graph RoPE: the golden ``rope_*`` cases, the rotation's properties (norms kept, scores depend only on the
position difference, position 0 is the identity), the specification's test 7.2.2 and graph metadata."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruvattn import (
    DimensionMismatch,
    GraphMetadata,
    GraphRoPE,
    InvalidConfig,
    NumericalInstability,
    ScaledDotProductAttention,
    Unsupported,
    build,
)
from ruvattn.reference import rope as ref
from tests.golden_harness import assert_close, cases, load

ROPE = cases(("rope_d",))
ROPE_ATTN = cases(("rope_attn_",))


def test_the_five_rope_cases_are_present() -> None:
    assert len(ROPE) == 3 and len(ROPE_ATTN) == 2


@pytest.mark.parametrize("path", ROPE, ids=lambda p: p.stem)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rope_golden(path, dtype) -> None:
    case = load(path)
    x, pos = case["inputs"]["x"], case["inputs"]["pos"]
    rope = GraphRoPE(x.shape[1], base=case["params"].get("base", 10000.0))
    out = rope.rotate(x.astype(dtype), pos)
    assert out.dtype == dtype
    assert_close(case, "output", out)
    theta = pos.astype(np.float64)[:, None] * rope.inverse_frequencies()[None, :]
    assert_close(case, "theta", theta)
    np.testing.assert_allclose(ref.rotate(x, pos, rope.config.base, "interleaved"), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ROPE_ATTN, ids=lambda p: p.stem)
def test_rope_attention_golden(path) -> None:
    case = load(path)
    q, k, v, dist = (case["inputs"][n] for n in ("q", "k", "v", "dist"))
    rope = GraphRoPE(q.shape[0], base=case["params"]["base"])
    assert_close(case, "k_rot", rope.rotate(k, dist))
    assert_close(case, "weights", rope.weights(q, k, key_positions=dist)[0])
    assert_close(case, "output", rope.forward(q, k, v, key_positions=dist))
    md = GraphMetadata(distances=dist)
    assert_close(case, "output", rope.forward_with_metadata(q, k, v, md))
    # the same through the batch and neighbour-list forms
    assert_close(case, "output", rope.forward_batch(q[None], k, v, key_positions=dist)[0])
    nl = np.arange(k.shape[0])[None]
    assert_close(case, "output", rope.forward_neighbours(q[None], k, v, nl, key_positions=dist)[0])


def test_spec_7_2_2_graph_rope_with_hnsw_layers() -> None:
    """The specification's test 7.2.2: GraphRoPE(128, 10000) with distances and HNSW layers -> 128 outputs;
    here also against the plain-numpy reference of rotated-key attention."""
    rng = np.random.default_rng(0)
    query = rng.standard_normal(128).astype(np.float32)
    keys = rng.standard_normal((3, 128)).astype(np.float32)
    values = rng.standard_normal((3, 128)).astype(np.float32)
    rope = GraphRoPE(128, 10000.0)
    metadata = GraphMetadata(distances=[1.0, 2.0, 3.0], hnsw_layers=[0, 1, 2])
    output = rope.forward_with_metadata(query, keys, values, metadata)
    assert output.shape == (128,)
    kr = ref.rotate(keys, np.array([1.0, 2.0, 3.0]), 10000.0, "interleaved")
    s = kr @ query.astype(np.float64) / np.sqrt(128)
    w = np.exp(s - s.max())
    np.testing.assert_allclose(output, (w / w.sum()) @ values, rtol=1e-5, atol=1e-5)
    by_layer = GraphRoPE(128, 10000.0, position="layer").forward_with_metadata(query, keys, values, metadata)
    kr = ref.rotate(keys, np.array([0.0, 1.0, 2.0]), 10000.0, "interleaved")
    s = kr @ query.astype(np.float64) / np.sqrt(128)
    w = np.exp(s - s.max())
    np.testing.assert_allclose(by_layer, (w / w.sum()) @ values, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    half=st.booleans(),
    d=st.sampled_from([2, 8, 32]),
    a=st.floats(-50, 50),
    b=st.floats(-50, 50),
    shift=st.floats(-20, 20),
    seed=st.integers(0, 2**16),
)
def test_rotation_properties(half: bool, d: int, a: float, b: float, shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rope = GraphRoPE(d, layout="half" if half else "interleaved")
    x, y = rng.standard_normal((2, d))
    rx, ry = rope.rotate(x, a), rope.rotate(y, b)
    np.testing.assert_allclose(np.linalg.norm(rx), np.linalg.norm(x), rtol=1e-12)  # norms kept
    np.testing.assert_allclose(rope.rotate(x, 0.0), x, rtol=0, atol=0)  # position 0 is the identity
    # scores depend only on the position difference
    np.testing.assert_allclose(rx @ ry, rope.rotate(x, a + shift) @ rope.rotate(y, b + shift), atol=1e-9)
    np.testing.assert_allclose(rope.rotate(rx, a, inverse=True), x, atol=1e-12)  # the inverse turns back
    lay = "half" if half else "interleaved"
    np.testing.assert_allclose(rx, ref.rotate(x[None], np.array([a]), 10000.0, lay)[0], atol=1e-12)


def test_half_layout_is_a_permutation_of_interleaved() -> None:
    """Rotate-half pairs (i, i + d/2) are interleaved pairs (2i, 2i+1) after the permutation that interleaves
    the two halves: the same rotation in another memory layout."""
    rng = np.random.default_rng(1)
    d = 16
    x = rng.standard_normal((5, d))
    pos = rng.uniform(-10, 10, 5)
    perm = np.empty(d, int)
    perm[0::2], perm[1::2] = np.arange(d // 2), np.arange(d // 2, d)
    half = GraphRoPE(d, layout="half").rotate(x, pos)
    inter = GraphRoPE(d).rotate(x[:, perm], pos)
    np.testing.assert_allclose(half[:, perm], inter, atol=1e-12)


def test_scores_are_shift_invariant_through_the_mechanism() -> None:
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal(16), rng.standard_normal((9, 16)), rng.standard_normal((9, 16))
    pos = rng.uniform(0, 6, 9)
    rope = GraphRoPE(16, projections=True, seed=3)
    a = rope.forward(q, k, v, key_positions=pos, query_position=0.0)
    b = rope.forward(q, k, v, key_positions=pos + 2.5, query_position=2.5)
    np.testing.assert_allclose(a, b, atol=1e-12)
    # at equal key_positions the rotation cancels: plain scaled dot-product attention on the projections
    same = rope.forward(q, k, v, key_positions=np.full(9, 1.7), query_position=1.7)
    s = rope.state_dict()
    plain = ScaledDotProductAttention(16).forward(s["w_q.weight"] @ q, k @ s["w_k.weight"].T, v @ s["w_v.weight"].T)
    np.testing.assert_allclose(same, plain, rtol=1e-5, atol=1e-6)


def test_default_positions_are_zero_in_every_form() -> None:
    """No key_positions: every key at the query's position 0, so plain attention on the projections; the
    neighbour form's key_positions are per edge."""
    ex = GraphRoPE.example()
    m, q, k, v, nl = ex.mechanism, ex.query, ex.keys, ex.values, ex.neighbours
    np.testing.assert_allclose(m.forward(q, k, v), m.forward(q, k, v, key_positions=np.zeros(k.shape[0])))
    pos = np.random.default_rng(0).uniform(0, 5, nl.nnz)
    got = m.forward_neighbours(ex.queries, k, v, nl, key_positions=pos)
    for i in range(nl.num_nodes):
        lo, hi = nl.indptr[i], nl.indptr[i + 1]
        ids = nl.indices[lo:hi]
        np.testing.assert_allclose(
            got[i], m.forward(ex.queries[i], k[ids], v[ids], key_positions=pos[lo:hi]), atol=1e-12
        )


def test_buckets_map_positions() -> None:
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal(8), rng.standard_normal((6, 8)), rng.standard_normal((6, 8))
    dist = np.array([0.2, 1.4, 1.9, 3.5, 7.0, 12.0])
    bucketed = GraphRoPE(8, buckets=[1, 2, 4, 8])
    np.testing.assert_allclose(
        bucketed.forward(q, k, v, key_positions=dist), GraphRoPE(8).forward(q, k, v, key_positions=[0, 1, 1, 2, 3, 4])
    )
    assert build(bucketed.to_dict()).config.buckets == (1.0, 2.0, 4.0, 8.0)
    with pytest.raises(InvalidConfig):
        GraphRoPE(8, buckets=[2, 1])


def test_metadata_errors_name_the_field() -> None:
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal(8), rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    with pytest.raises(InvalidConfig, match=r"GraphMetadata\.distances"):
        GraphRoPE(8).forward_with_metadata(q, k, v, GraphMetadata(hnsw_layers=[0, 1, 2]))
    with pytest.raises(InvalidConfig, match=r"GraphMetadata\.hnsw_layers"):
        GraphRoPE(8, position="layer").forward_with_metadata(q, k, v, GraphMetadata(distances=[1.0, 2.0, 3.0]))
    with pytest.raises(DimensionMismatch, match="2 entries for 3 keys"):
        GraphRoPE(8).forward_with_metadata(q, k, v, GraphMetadata(distances=[1.0, 2.0]))
    with pytest.raises(DimensionMismatch):
        GraphMetadata(distances=[1.0, 2.0], hnsw_layers=[0, 1, 2])
    with pytest.raises(NumericalInstability):
        GraphMetadata(distances=[1.0, np.nan])
    with pytest.raises(InvalidConfig):
        GraphRoPE(8).forward_with_metadata(q, k, v, {"distances": [1.0, 2.0, 3.0]})
    with pytest.raises(InvalidConfig, match="key_positions comes from the metadata"):
        GraphRoPE(8).forward_with_metadata(q, k, v, GraphMetadata(distances=[1.0, 2.0, 3.0]), key_positions=[0, 0, 0])
    with pytest.raises(Unsupported, match="graph_rope"):
        build({"type": "hyperbolic", "dim": 8}).forward_with_metadata(q * 0.01, k * 0.01, v * 0.01, GraphMetadata())


def test_bad_positions() -> None:
    rope = GraphRoPE(8)
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal(8), rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    with pytest.raises(DimensionMismatch):
        rope.forward(q, k, v, key_positions=[0.0, 1.0])
    with pytest.raises(NumericalInstability):
        rope.forward(q, k, v, key_positions=[0.0, np.inf, 1.0])
    with pytest.raises(DimensionMismatch):
        rope.forward(q, k, v, key_positions=["a", "b", "c"])
    with pytest.raises(DimensionMismatch):
        rope.forward(q, k, v, query_position=[1.0, 2.0])
    with pytest.raises(InvalidConfig):
        GraphRoPE(7)
    with pytest.raises(DimensionMismatch):  # W_v is (dim, dim): values of another width cannot be projected
        GraphRoPE(8, projections=True).forward(q, k, v[:, :4])


def _fd(loss, arr: np.ndarray, grad: np.ndarray, picks: int = 10) -> None:
    rng = np.random.default_rng(0)
    flat, g = arr.reshape(-1), grad.reshape(-1)
    for i in rng.choice(flat.size, min(picks, flat.size), replace=False):
        old = flat[i]
        flat[i] = old + 1e-6
        plus = loss()
        flat[i] = old - 1e-6
        minus = loss()
        flat[i] = old
        fd = (plus - minus) / 2e-6
        assert abs(fd - g[i]) <= 1e-6 * max(1.0, abs(fd)), (i, fd, g[i])


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_gradients_with_positions_match_finite_differences(layout: str) -> None:
    """backward / backward_neighbours through the rotation (the contract test covers position 0 only)."""
    rng = np.random.default_rng(8)
    m = GraphRoPE(8, layout=layout, projections=True, seed=1)
    q, qs = rng.standard_normal(8), rng.standard_normal((4, 8))
    k, v = rng.standard_normal((10, 8)), rng.standard_normal((10, 8))
    pos, qpos = rng.uniform(0, 6, 10), rng.uniform(0, 3, 4)
    state = {n: a.astype(np.float64) for n, a in m.state_dict().items()}
    m.load_state_dict(state)
    state = {n: m._state_get(n) for n in state}  # the loaded arrays: perturbed in place below

    up = rng.standard_normal(8)
    gr = m.backward(q, k, v, up, key_positions=pos, query_position=1.5)
    loss = lambda: float(m.forward(q, k, v, key_positions=pos, query_position=1.5) @ up)  # noqa: E731
    for arr, g in ((q, gr.query), (k, gr.keys), (v, gr.values), *((state[n], gr.params[n]) for n in state)):
        _fd(loss, arr, g)

    upb = rng.standard_normal((4, 8))
    gr = m.backward(qs, k, v, upb, key_positions=pos, query_positions=qpos)
    loss = lambda: float(np.sum(m.forward_batch(qs, k, v, key_positions=pos, query_positions=qpos) * upb))  # noqa: E731
    for arr, g in ((qs, gr.query), (k, gr.keys), (v, gr.values), *((state[n], gr.params[n]) for n in state)):
        _fd(loss, arr, g)

    nl = np.array([[0, 3, 5], [1, 2, -1], [9, 8, 7], [-1, -1, -1]])
    epos = rng.uniform(0, 6, 8)
    upn = rng.standard_normal((4, 8))
    gr = m.backward_neighbours(qs, k, v, nl, upn, key_positions=epos, query_positions=qpos)
    loss = lambda: float(np.sum(m.forward_neighbours(qs, k, v, nl, key_positions=epos, query_positions=qpos) * upn))  # noqa: E731
    for arr, g in ((qs, gr.query), (k, gr.keys), (v, gr.values), *((state[n], gr.params[n]) for n in state)):
        _fd(loss, arr, g)
    assert not gr.query[3].any()  # the node without neighbours


@pytest.mark.parametrize("kind", ["scaled_dot_product", "flash"])
def test_edge_weights_multiply_each_keys_share(kind: str) -> None:
    """forward_with_metadata(edge_weights=w): weights w_j e^{s_j} / sum_l w_l e^{s_l}; weight 0 removes a key."""
    rng = np.random.default_rng(9)
    q, k, v = rng.standard_normal(16), rng.standard_normal((12, 16)), rng.standard_normal((12, 5))
    w = rng.uniform(0.1, 3.0, 12)
    w[4] = 0.0
    m = build({"type": kind, "dim": 16})
    s = k @ q / 4.0
    e = w * np.exp(s - s.max())
    np.testing.assert_allclose(m.forward_with_metadata(q, k, v, GraphMetadata(edge_weights=w)), (e / e.sum()) @ v,
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    with pytest.raises(InvalidConfig, match="edge_weights"):
        m.forward_with_metadata(q, k, v, GraphMetadata(distances=np.zeros(12)))


def test_large_tables_take_the_parallel_kernel_with_the_same_result() -> None:
    rng = np.random.default_rng(10)
    x = rng.standard_normal((300, 256)).astype(np.float32)  # 76,800 entries: rows go to Numba's threads
    pos = rng.uniform(0, 50, 300)
    for layout in ("interleaved", "half"):
        got = GraphRoPE(256, layout=layout).rotate(x, pos)
        np.testing.assert_allclose(got, ref.rotate(x, pos, 10000.0, layout), rtol=1e-5, atol=1e-5)
