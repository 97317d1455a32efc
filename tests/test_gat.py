"""GATConv / GATv2Conv: golden cases, PyG itself, the numpy references, the single-node form, dropout, errors.

Graphs are small (tens of nodes) so the file also runs under ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import ruvattn
from ruvattn import (
    DimensionMismatch,
    GATConv,
    GATv2Conv,
    InvalidConfig,
    NeighbourList,
    NumericalInstability,
    OutOfBounds,
)
from ruvattn.kernels import gat as G
from ruvattn.reference import gat as ref
from tests.golden_harness import assert_close, cases, load

GOLDEN = cases(("gatconv_", "gatv2conv_"))
# golden weight names -> PyG state-dict names
_PYG_NAMES = {
    "lin_weight": "lin.weight",
    "lin_edge_weight": "lin_edge.weight",
    "lin_l_weight": "lin_l.weight",
    "lin_l_bias": "lin_l.bias",
    "lin_r_weight": "lin_r.weight",
    "lin_r_bias": "lin_r.bias",
}
F64 = {"rtol": 1e-9, "atol": 1e-11}


def _ids(paths):
    return [p.stem for p in paths]


def _golden_layer(case):
    p = case["params"]
    cls = GATv2Conv if case["kind"] == "gatv2conv" else GATConv
    conv = cls(p["in_channels"], p["out_channels"], heads=p["heads"], concat=p["concat"],
               negative_slope=p["negative_slope"], edge_dim=p["edge_dim"], add_self_loops=False)  # fmt: skip
    return conv, {_PYG_NAMES.get(k, k): v for k, v in case["weights"].items()}


def _graph(rng, n=20, e=70, edge_dim=None, dtype=np.float64, self_loops=4, duplicates=3):
    """A random directed graph: some self loops, duplicated edges (own attributes), node n-1 and n-2
    isolated, node n-3 a source only."""
    src = rng.integers(0, n - 2, e)
    dst = rng.integers(0, n - 3, e)
    src[:self_loops] = dst[:self_loops]
    ei = np.stack([src, dst])
    ei = np.concatenate([ei, ei[:, 5 : 5 + duplicates]], axis=1)
    x = rng.standard_normal((n, 6)).astype(dtype)
    ea = None if edge_dim is None else rng.standard_normal((ei.shape[1], edge_dim)).astype(dtype)
    return x, ei, ea


def _ref_layer(conv, x, ei, ea):
    """The layer by :mod:`ruvattn.reference.gat` (edge by edge, PyG's definition), in float64."""
    p = conv.get_params()
    fn = ref.gatv2_conv if isinstance(conv, GATv2Conv) else ref.gat_conv
    state = conv.state_dict()
    if isinstance(conv, GATv2Conv) and p["share_weights"]:
        state = {k: v for k, v in state.items() if not k.startswith("lin_r.")}
    return fn(x, ei, ea, state, heads=p["heads"], concat=p["concat"], negative_slope=p["negative_slope"],
              self_loops=p["add_self_loops"], fill_value=p["fill_value"])  # fmt: skip


# --------------------------------------------------------------------------
# (a) golden cases, (b) PyG-named safetensors
# --------------------------------------------------------------------------


def test_golden_corpus_present():
    assert len([p for p in GOLDEN if p.name.startswith("gatconv_")]) >= 2
    assert len([p for p in GOLDEN if p.name.startswith("gatv2conv_")]) >= 2


@pytest.mark.parametrize("path", GOLDEN, ids=_ids(GOLDEN))
def test_golden(path):
    case = load(path)
    conv, state = _golden_layer(case)
    conv.load_state_dict(state)
    i = case["inputs"]
    out, (used, alpha) = conv(i["x"], i["edge_index"], i["edge_attr"], return_attention_weights=True)
    assert out.dtype == np.float32 and alpha.dtype == np.float32
    assert_close(case, "output", out)
    assert_close(case, "alpha", alpha)
    np.testing.assert_array_equal(used, i["edge_index"])  # no self loops added: PyG returns the input edges
    if case["kind"] == "gatconv":
        assert_close(case, "x_proj", conv.project(i["x"]))
    else:
        x_l, x_r = conv.project(i["x"])
        assert_close(case, "x_l", x_l)
        assert_close(case, "x_r", x_r)
    # the same graph as a CSR adjacency (row i = sources of target i; the duplicate edge stays two entries)
    src, dst = i["edge_index"]
    order = np.argsort(dst, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=len(i["x"])))])
    for adjacency in (
        (indptr, src[order]),
        sp.csr_matrix((np.ones(len(src)), src[order], indptr), shape=(len(i["x"]),) * 2),
        NeighbourList(indptr, src[order], len(i["x"])),
    ):
        out_csr, (used_csr, alpha_csr) = conv(i["x"], adjacency, i["edge_attr"][order], return_attention_weights=True)
        np.testing.assert_allclose(out_csr, out, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(used_csr, i["edge_index"][:, order])
        np.testing.assert_allclose(alpha_csr, alpha[order], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("path", GOLDEN, ids=_ids(GOLDEN))
def test_golden_from_pyg_named_safetensors(path, tmp_path):
    from safetensors.numpy import save_file

    case = load(path)
    conv, state = _golden_layer(case)
    decoy, _ = _golden_layer(case)  # another layer of the same kind in the same file
    model = {f"conv1.{k}": v for k, v in state.items()}
    model |= {f"conv2.{k}": v for k, v in decoy.state_dict().items()}
    model["head.weight"] = np.ones((2, 3), np.float32)
    save_file(model, str(tmp_path / "model.safetensors"))
    with pytest.raises(InvalidConfig, match=r"several .*\['conv1\.', 'conv2\.'\].*prefix="):
        conv.load_safetensors(tmp_path / "model.safetensors")
    conv.load_safetensors(tmp_path / "model.safetensors", prefix="conv1")  # the trailing dot is optional
    i = case["inputs"]
    out, (_, alpha) = conv(i["x"], i["edge_index"], i["edge_attr"], return_attention_weights=True)
    assert_close(case, "output", out)
    assert_close(case, "alpha", alpha)
    # a single-layer file, found without a prefix; and our own save round-trips
    save_file(state, str(tmp_path / "layer.safetensors"))
    again, _ = _golden_layer(case)
    again.load_safetensors(tmp_path / "layer.safetensors")
    assert_close(case, "output", again(i["x"], i["edge_index"], i["edge_attr"]))
    again.save_safetensors(tmp_path / "ours.safetensors")
    third, _ = _golden_layer(case)
    third.load_safetensors(tmp_path / "ours.safetensors")
    for k, v in again.state_dict().items():
        np.testing.assert_array_equal(third.state_dict()[k], v)


# --------------------------------------------------------------------------
# (c) against PyG itself
# --------------------------------------------------------------------------

PYG_CASES = [
    (GATConv, {"heads": 3, "edge_dim": 4}),
    (GATConv, {"heads": 2, "edge_dim": 4, "concat": False, "fill_value": "add", "negative_slope": 0.1}),
    (GATConv, {"heads": 1}),
    (GATConv, {"heads": 2, "edge_dim": 3, "fill_value": "max"}),
    (GATConv, {"heads": 2, "edge_dim": 3, "fill_value": "min", "bias": False}),
    (GATConv, {"heads": 2, "edge_dim": 3, "fill_value": 0.7}),
    (GATConv, {"heads": 2, "edge_dim": 3, "add_self_loops": False}),
    (GATConv, {"heads": 2, "concat": False, "add_self_loops": False}),
    (GATv2Conv, {"heads": 3, "edge_dim": 4}),
    (GATv2Conv, {"heads": 2, "edge_dim": 4, "concat": False, "share_weights": True}),
    (GATv2Conv, {"heads": 1, "share_weights": True, "negative_slope": 0.3}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3, "fill_value": "max", "bias": False}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3, "fill_value": "min", "concat": False}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3, "fill_value": -0.4, "add_self_loops": False}),
]


def _pyg_layer(conv):
    """The PyG layer with ``conv``'s config and weights (its strict ``load_state_dict`` checks our names)."""
    torch = pytest.importorskip("torch")
    nn = pytest.importorskip("torch_geometric.nn")
    p = conv.get_params()
    kwargs = {k: p[k] for k in ("heads", "concat", "negative_slope", "add_self_loops", "edge_dim", "fill_value",
                                 "bias")}  # fmt: skip
    if isinstance(conv, GATv2Conv):
        layer = nn.GATv2Conv(p["in_channels"], p["out_channels"], share_weights=p["share_weights"], **kwargs)
    else:
        layer = nn.GATConv(p["in_channels"], p["out_channels"], **kwargs)
    layer.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in conv.state_dict().items()})
    return layer.double().eval()


def _run_pyg(layer, x, ei, ea):
    import torch

    with torch.no_grad():
        out, (used, alpha) = layer(torch.from_numpy(x), torch.from_numpy(ei), None if ea is None else
                                   torch.from_numpy(ea), return_attention_weights=True)  # fmt: skip
    return out.numpy(), used.numpy(), alpha.numpy()


@pytest.mark.parametrize(("cls", "kwargs"), PYG_CASES, ids=[f"{c.__name__}-{k}" for c, k in PYG_CASES])
def test_matches_pyg(cls, kwargs):
    rng = np.random.default_rng(len(str(kwargs)))
    conv = cls(6, 4, seed=7, **kwargs)
    layer = _pyg_layer(conv)
    x, ei, ea = _graph(rng, edge_dim=kwargs.get("edge_dim"))
    out_t, used_t, alpha_t = _run_pyg(layer, x, ei, ea)
    out, (used, alpha) = conv(x, ei, ea, return_attention_weights=True)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(used, used_t)
    np.testing.assert_allclose(out, out_t, **F64)
    np.testing.assert_allclose(alpha, alpha_t, **F64)
    # float32 in, float32 out, same numbers to float32 accuracy
    out32, (_, alpha32) = conv(x.astype(np.float32), ei, None if ea is None else ea.astype(np.float32),
                               return_attention_weights=True)  # fmt: skip
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out_t, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(alpha32, alpha_t, rtol=2e-5, atol=2e-6)
    if ea is not None:  # a layer with edge_dim called without edge features: no edge term, as in PyG
        out_t, _, alpha_t = _run_pyg(layer, x, ei, None)
        out, (_, alpha) = conv(x, ei, return_attention_weights=True)
        np.testing.assert_allclose(out, out_t, **F64)
        np.testing.assert_allclose(alpha, alpha_t, **F64)


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv])
def test_pyg_initialised_weights_and_torch_inputs(cls):
    torch = pytest.importorskip("torch")
    nn = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(3)
    layer = getattr(nn, cls.__name__)(6, 5, heads=2, edge_dim=3).eval()
    conv = cls(6, 5, heads=2, edge_dim=3).load_state_dict(layer.state_dict())  # tensors, PyG's own init
    x, ei, ea = _graph(np.random.default_rng(11), edge_dim=3, dtype=np.float32)
    xt, eit, eat = torch.from_numpy(x), torch.from_numpy(ei), torch.from_numpy(ea)
    with torch.no_grad():
        expected = layer(xt, eit, eat).numpy()
    np.testing.assert_allclose(conv(xt, eit, eat), expected, rtol=2e-5, atol=2e-6)
    # live parameters (requires_grad) load too; named_parameters() lists a shared lin_r once
    fresh = cls(6, 5, heads=2, edge_dim=3, seed=8).load_state_dict(dict(layer.named_parameters()))
    np.testing.assert_allclose(fresh(x, ei, ea), expected, rtol=2e-5, atol=2e-6)
    # PyG reads a vector of edge attributes as one feature per edge
    one = cls(6, 5, heads=2, edge_dim=1, seed=2)
    with torch.no_grad():
        expected = _pyg_layer(one).float()(xt, eit, eat[:, 0].contiguous()).numpy()
    np.testing.assert_allclose(one(x, ei, ea[:, 0]), expected, rtol=2e-5, atol=2e-6)


# --------------------------------------------------------------------------
# (d) kernels against their numpy twins; layers against the edge-by-edge references
# --------------------------------------------------------------------------


@pytest.mark.parametrize("self_loops", [False, True])
def test_group_by_target_matches_reference(self_loops):
    rng = np.random.default_rng(5)
    n = 15
    _, ei, rows = _graph(rng, n=n, e=60, edge_dim=3)
    count = ei.shape[1] + (n if self_loops else 0)
    indptr, slot_src, slot_edge = (np.empty(s, np.int64) for s in (n + 1, count, count))
    slot_rows = np.full((count, 3), np.nan)
    bad = G.group_by_target(ei[0], ei[1], n, self_loops, rows, True, indptr, slot_src, slot_edge, slot_rows)
    rbad, rindptr, rsrc, redge, rrows = ref.group_by_target(ei[0], ei[1], n, self_loops, rows, True)
    assert bad == rbad == -1
    np.testing.assert_array_equal(indptr, rindptr)
    used = indptr[-1]
    np.testing.assert_array_equal(slot_src[:used], rsrc)
    np.testing.assert_array_equal(slot_edge[:used], redge)
    real = redge < ei.shape[1]
    np.testing.assert_array_equal(slot_rows[:used][real], rrows[real])
    assert used == ei.shape[1] + (n - int((ei[0] == ei[1]).sum()) if self_loops else 0)
    # every target's slots hold exactly its incoming edges, in input order
    for i in range(n):
        mine = slot_edge[indptr[i] : indptr[i + 1]]
        removed = (ei[0] == ei[1]) if self_loops else np.zeros(ei.shape[1], bool)
        into = np.flatnonzero((ei[1] == i) & ~removed)
        expected = np.concatenate([into, [ei.shape[1] + i]]) if self_loops else into
        np.testing.assert_array_equal(mine, expected)
    for r in (0, 1):
        broken = ei.copy()
        broken[r, 9] = n
        broken[1 - r, 30] = -1
        args = (broken[0], broken[1], n, self_loops)
        assert G.group_by_target(*args, rows, False, indptr, slot_src, slot_edge, slot_rows) == 9
        assert ref.group_by_target(*args, rows, False)[0] == 9


@pytest.mark.parametrize("self_loops_in_input", [0, 4])
def test_csr_with_self_loops_matches_reference(self_loops_in_input):
    rng = np.random.default_rng(6)
    n = 15
    _, ei, rows = _graph(rng, n=n, e=60, edge_dim=3, self_loops=self_loops_in_input)
    order = np.argsort(ei[1], kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(ei[1], minlength=n))])
    indices, rows = ei[0][order], rows[order]  # CSR: row i lists the sources of target i
    nnz = indices.size
    slot_indptr, slot_src, slot_edge = (np.empty(s, np.int64) for s in (n + 1, nnz + n, nnz + n))
    slot_rows = np.full((nnz + n, 3), np.nan)
    G.csr_with_self_loops(indptr, indices, rows, True, slot_indptr, slot_src, slot_edge, slot_rows)
    r_indptr, r_src, r_edge, r_rows = ref.csr_with_self_loops(indptr, indices, rows, True)
    np.testing.assert_array_equal(slot_indptr, r_indptr)
    used = slot_indptr[-1]
    loops = int((indices == np.repeat(np.arange(n), np.diff(indptr))).sum())
    assert loops >= self_loops_in_input and used == nnz - loops + n
    np.testing.assert_array_equal(slot_src[:used], r_src)
    np.testing.assert_array_equal(slot_edge[:used], r_edge)
    real = r_edge < nnz
    np.testing.assert_array_equal(slot_rows[:used][real], r_rows[real])
    # the same slots as sorting the CSR's edge list (in CSR order) by target
    csr_edges = np.stack([indices, np.repeat(np.arange(n), np.diff(indptr))])
    _, g_indptr, g_src, g_edge, _ = ref.group_by_target(csr_edges[0], csr_edges[1], n, True, rows, False)
    np.testing.assert_array_equal(slot_indptr, g_indptr)
    np.testing.assert_array_equal(slot_src[:used], g_src)
    np.testing.assert_array_equal(slot_edge[:used], g_edge)


def _kernel_inputs(rng, dt, heads, edge_dim, self_loops, n=14, e=50):
    """A random graph grouped by target (:class:`G.Slots`), its edge attributes, a fold of them into
    per-head terms ``me`` (and those terms in slot order) and dropout multipliers."""
    _, ei, ea = _graph(rng, n=n, e=e, edge_dim=edge_dim, dtype=dt)
    count = ei.shape[1] + (n if self_loops else 0)
    me = rng.standard_normal((edge_dim, heads)).astype(dt)
    _, indptr, slot_src, slot_edge, a_edge = ref.group_by_target(ei[0], ei[1], n, self_loops, ea @ me, True)
    graph = G.Slots(indptr, slot_src, slot_edge, ei.shape[1], self_loops)
    drop = (rng.random((count, heads)) > 0.3).astype(dt) / dt(0.7)
    return graph, ea, me, np.nan_to_num(a_edge), drop, count


FILL = {"const": G.FILL_CONST, "mean": G.FILL_MEAN, "add": G.FILL_ADD, "max": G.FILL_MAX, "min": G.FILL_MIN}
KERNEL_CASES = [  # (self_loops, concat, dropout, edge features, bias)
    (True, True, False, True, True),
    (True, False, True, True, False),
    (False, True, True, True, True),
    (True, True, True, False, True),
]


def _switch(dt, heads, drop, ea, use_drop, use_edge):
    """Empty arrays switch dropout / the edge features off, as the layers pass them."""
    drop = drop if use_drop else np.empty((0, heads), dt)
    return drop, (ea if use_edge else np.empty((0, 0), dt))


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("fill", list(FILL))
@pytest.mark.parametrize(("self_loops", "concat", "use_drop", "use_edge", "use_bias"), KERNEL_CASES)
def test_gat_kernel_matches_reference(dt, fill, self_loops, concat, use_drop, use_edge, use_bias):
    rng = np.random.default_rng(17)
    heads, ch, ed, n = 3, 4, 5, 14
    graph, ea, me, a_edge, drop, count = _kernel_inputs(rng, dt, heads, ed, self_loops)
    a_src, a_dst = rng.standard_normal((2, n, heads)).astype(dt)
    bias = rng.standard_normal(heads * ch if concat else ch).astype(dt)
    t = G.GATTables(
        msg=rng.standard_normal((n, heads * ch)).astype(dt),
        a_src=a_src,
        a_dst=a_dst,
        a_edge=a_edge if use_edge else np.empty((0, heads), dt),
        me=me,
        use_edge=use_edge,
        fill_mode=FILL[fill],
        fill_vec=rng.standard_normal(heads).astype(dt),
        slope=dt(0.2),
        concat=concat,
        bias=bias if use_bias else np.empty(0, dt),
    )
    drop, ea = _switch(dt, heads, drop, ea, use_drop, use_edge)
    r_out, r_alpha, r_status = ref.gat_attend(t, graph, ea, drop)
    out = np.empty_like(r_out)
    alpha = np.full((count, heads), np.nan, dt)
    status = np.empty(n, np.int8)
    G.gat_attend(t, graph, ea, drop, alpha, out, status, 4)
    tol = {"rtol": 2e-5, "atol": 2e-6} if dt is np.float32 else F64
    np.testing.assert_array_equal(status, r_status)
    np.testing.assert_allclose(out, r_out, **tol)
    np.testing.assert_allclose(alpha, r_alpha, **tol)  # NaN rows (removed self loops) agree too
    # the per-chunk kernel on a sub-range writes exactly those rows; an empty alpha is not written
    part = np.full_like(out, 7.0)
    G.gat_chunk(t, graph, ea, drop, np.empty((0, heads), dt), part, status, 3, 9)
    np.testing.assert_allclose(part[3:9], r_out[3:9], **tol)
    assert (part[:3] == 7).all() and (part[9:] == 7).all()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("fill", ["const", "mean", "max"])
@pytest.mark.parametrize(("self_loops", "concat", "use_drop", "use_edge", "use_bias"), KERNEL_CASES)
def test_gatv2_kernel_matches_reference(dt, fill, self_loops, concat, use_drop, use_edge, use_bias):
    rng = np.random.default_rng(19)
    heads, ch, ed, n = 2, 3, 4, 14
    graph, ea, _, _, drop, count = _kernel_inputs(rng, dt, heads, ed, self_loops)
    xl, xr, msg = rng.standard_normal((3, n, heads * ch)).astype(dt)
    bias = rng.standard_normal(heads * ch if concat else ch).astype(dt)
    t = G.GATv2Tables(
        msg=msg,
        xl=xl,
        xr=xr,
        att=rng.standard_normal((heads, ch)).astype(dt),
        we_t=rng.standard_normal((ed, heads * ch)).astype(dt),
        use_edge=use_edge,
        fill_mode=FILL[fill],
        fill_vec=rng.standard_normal(ed).astype(dt),
        slope=dt(0.2),
        concat=concat,
        bias=bias if use_bias else np.empty(0, dt),
    )
    drop, ea = _switch(dt, heads, drop, ea, use_drop, use_edge)
    r_out, r_alpha, r_status = ref.gatv2_attend(t, graph, ea, drop)
    out = np.empty_like(r_out)
    alpha = np.full((count, heads), np.nan, dt)
    status = np.empty(n, np.int8)
    G.gatv2_attend(t, graph, ea, drop, alpha, out, status, 5)
    tol = {"rtol": 2e-5, "atol": 2e-6} if dt is np.float32 else F64
    np.testing.assert_array_equal(status, r_status)
    np.testing.assert_allclose(out, r_out, **tol)
    np.testing.assert_allclose(alpha, r_alpha, **tol)
    part = np.full_like(out, 7.0)
    G.gatv2_chunk(t, graph, ea, drop, alpha, part, status, 2, 11)
    np.testing.assert_allclose(part[2:11], r_out[2:11], **tol)
    assert (part[:2] == 7).all() and (part[11:] == 7).all()


LAYER_CASES = [
    (GATConv, {"heads": 2, "edge_dim": 3, "fill_value": "mean"}),
    (GATConv, {"heads": 3, "edge_dim": 2, "fill_value": "add", "concat": False}),
    (GATConv, {"heads": 1, "edge_dim": 2, "fill_value": 1.5, "bias": False}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3, "fill_value": "min"}),
    (GATv2Conv, {"heads": 2, "share_weights": True, "concat": False}),
]


@pytest.mark.parametrize(("cls", "kwargs"), LAYER_CASES, ids=[f"{c.__name__}-{k}" for c, k in LAYER_CASES])
def test_layer_matches_edge_by_edge_reference(cls, kwargs):
    rng = np.random.default_rng(23)
    conv = cls(6, 3, seed=4, **kwargs)
    conv.load_state_dict({k: v + 0.1 * rng.standard_normal(v.shape) for k, v in conv.state_dict().items()
                          if not k.startswith("lin_r.") or not kwargs.get("share_weights")})  # fmt: skip
    x, ei, ea = _graph(rng, edge_dim=kwargs.get("edge_dim"))
    r_out, r_used, r_alpha = _ref_layer(conv, x, ei, ea)
    out, (used, alpha) = conv(x, ei, ea, return_attention_weights=True)
    np.testing.assert_array_equal(used, r_used)
    np.testing.assert_allclose(out, r_out, **F64)
    np.testing.assert_allclose(alpha, r_alpha, **F64)
    # alpha sums to 1 over every target's incoming edges (nodes without any: no entries)
    sums = np.zeros((x.shape[0], conv.heads))
    np.add.at(sums, used[1], alpha)
    has = np.isin(np.arange(x.shape[0]), used[1])
    np.testing.assert_allclose(sums[has], 1.0, rtol=1e-12)


# --------------------------------------------------------------------------
# (d2) a CSR adjacency is read as it is, with PyG's semantics
# --------------------------------------------------------------------------


def _as_csr(ei, ea, n):
    """The graph as CSR (row i = the sources of target i, edges in input order within a row): the three
    accepted forms, the permutation of the edges into CSR order and the attributes in that order."""
    order = np.argsort(ei[1], kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(ei[1], minlength=n))])
    indices = ei[0][order]
    forms = {
        "tuple": (indptr, indices),
        "scipy": sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n, n)),
        "NeighbourList": NeighbourList(indptr, indices, n),
    }
    return forms, order, None if ea is None else ea[order]


CSR_CASES = [
    (GATConv, {"heads": 3, "edge_dim": 4}),
    (GATConv, {"heads": 2, "edge_dim": 3, "fill_value": "add", "concat": False}),
    (GATConv, {"heads": 2, "edge_dim": 3, "fill_value": "max"}),
    (GATConv, {"heads": 2, "edge_dim": 3, "fill_value": "min", "bias": False}),
    (GATConv, {"heads": 2, "edge_dim": 3, "fill_value": 0.7}),
    (GATConv, {"heads": 2, "edge_dim": 3, "add_self_loops": False}),
    (GATConv, {"heads": 1}),
    (GATv2Conv, {"heads": 3, "edge_dim": 4}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3, "fill_value": "min", "concat": False, "share_weights": True}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3, "fill_value": -0.4}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3, "add_self_loops": False}),
]


@pytest.mark.parametrize(("cls", "kwargs"), CSR_CASES, ids=[f"{c.__name__}-{k}" for c, k in CSR_CASES])
def test_csr_input_equals_edge_list_and_pyg(cls, kwargs):
    """Self loops in the input (removed, one added per node), duplicated edges, isolated nodes: a CSR
    adjacency gives the edge list's result in CSR order -- output, the edges used, alpha -- and PyG's."""
    rng = np.random.default_rng(41 + len(str(kwargs)))
    conv = cls(6, 4, seed=3, **kwargs)
    x, ei, ea = _graph(rng, edge_dim=kwargs.get("edge_dim"))
    n = x.shape[0]
    forms, order, ea_csr = _as_csr(ei, ea, n)
    want, (want_used, want_alpha) = conv(x, ei[:, order], ea_csr, return_attention_weights=True)
    r_out, r_used, r_alpha = _ref_layer(conv, x, ei[:, order], ea_csr)  # PyG's definition, edge by edge
    np.testing.assert_array_equal(want_used, r_used)
    np.testing.assert_allclose(want, r_out, **F64)
    np.testing.assert_allclose(want_alpha, r_alpha, **F64)
    np.testing.assert_allclose(want, conv(x, ei, ea), **F64)  # the edge order does not change the output
    for name, adjacency in forms.items():
        out, (used, alpha) = conv(x, adjacency, ea_csr, return_attention_weights=True)
        np.testing.assert_array_equal(out, want, err_msg=name)  # the same slots: the same numbers, bit for bit
        np.testing.assert_array_equal(used, want_used, err_msg=name)
        np.testing.assert_array_equal(alpha, want_alpha, err_msg=name)
        np.testing.assert_array_equal(conv(x, adjacency, ea_csr), want, err_msg=name)
        if ea_csr is not None:  # a layer with edge_dim called without edge features: no edge term
            np.testing.assert_array_equal(conv(x, adjacency), conv(x, ei[:, order]), err_msg=name)
    # dropout: the same seeded masks by edge id, so the same training-mode output and alpha
    drop_kwargs = {**kwargs, "dropout": 0.3}
    a, b = cls(6, 4, seed=3, **drop_kwargs).train(), cls(6, 4, seed=3, **drop_kwargs).train()
    out_a, (_, alpha_a) = a(x, forms["tuple"], ea_csr, return_attention_weights=True)
    out_b, (_, alpha_b) = b(x, ei[:, order], ea_csr, return_attention_weights=True)
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(alpha_a, alpha_b)
    assert (alpha_a == 0).any()
    torch = pytest.importorskip("torch")  # and PyG itself, on the edge list in CSR order
    out_t, used_t, alpha_t = _run_pyg(_pyg_layer(conv), x, ei[:, order], ea_csr)
    out, (used, alpha) = conv(x, forms["scipy"], ea_csr, return_attention_weights=True)
    assert torch is not None
    np.testing.assert_array_equal(used, used_t)
    np.testing.assert_allclose(out, out_t, **F64)
    np.testing.assert_allclose(alpha, alpha_t, **F64)


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv])
def test_csr_is_the_kernels_layout(cls):
    """Without self loops a CSR adjacency *is* the slots (no copy, no sort); with them it is copied once."""
    rng = np.random.default_rng(43)
    x, ei, ea = _graph(rng, edge_dim=2, self_loops=3)
    n = x.shape[0]
    forms, order, ea_csr = _as_csr(ei, ea, n)
    nl = forms["NeighbourList"]
    plain = cls(6, 2, edge_dim=2, add_self_loops=False)
    graph, rows = plain._group("op", nl, n, ea_csr, np.dtype(np.float64))
    assert graph.indptr is nl.indptr and graph.src is nl.indices and rows is ea_csr
    np.testing.assert_array_equal(graph.edge, np.arange(nl.nnz))
    looped = cls(6, 2, edge_dim=2)
    graph, rows = looped._group("op", nl, n, ea_csr, np.dtype(np.float64))
    by_sort, sorted_rows = looped._group("op", ei[:, order], n, ea_csr, np.dtype(np.float64))
    used = graph.indptr[n]
    loops = int((ei[0] == ei[1]).sum())
    assert loops >= 3 and used == nl.nnz - loops + n and graph.num_edges == nl.nnz and graph.self_loops
    for a, b in ((graph.indptr, by_sort.indptr), (graph.src[:used], by_sort.src[:used]),
                 (graph.edge[:used], by_sort.edge[:used])):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    real = graph.edge[:used] < nl.nnz
    np.testing.assert_array_equal(rows[:used][real], sorted_rows[:used][real])


# --------------------------------------------------------------------------
# (d3) every node over its own neighbour rows: one kernel call, the contract's form
# --------------------------------------------------------------------------


def _neighbour_problem(rng, dtype=np.float64, edge_dim=3):
    """6 target nodes over 9 key/value rows: duplicated ids, a node listing itself, two without neighbours."""
    queries = rng.standard_normal((6, 6)).astype(dtype)
    keys = rng.standard_normal((9, 6)).astype(dtype)
    values = rng.standard_normal((9, 6)).astype(dtype)
    padded = np.array([[1, 4, 4, -1], [-1, -1, -1, -1], [0, 2, 3, 8], [5, -1, -1, -1], [2, 7, 1, -1],
                       [-1, -1, -1, -1]])  # fmt: skip
    nl = NeighbourList.from_padded(padded, 9)
    ef = rng.standard_normal((nl.nnz, edge_dim)).astype(dtype)
    return queries, keys, values, padded, nl, ef


NEIGHBOUR_CASES = [
    (GATConv, {"heads": 2, "edge_dim": 3}),
    (GATConv, {"heads": 3, "edge_dim": 3, "concat": False, "bias": False}),
    (GATConv, {"heads": 1}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3}),
    (GATv2Conv, {"heads": 2, "edge_dim": 3, "concat": False, "share_weights": True}),
]


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize(("cls", "kwargs"), NEIGHBOUR_CASES, ids=[f"{c.__name__}-{k}" for c, k in NEIGHBOUR_CASES])
def test_forward_neighbours_equals_per_node_loop(cls, kwargs, dt, monkeypatch):
    rng = np.random.default_rng(47)
    conv = cls(6, 3, seed=5, **kwargs)
    conv.load_state_dict({k: v + 0.1 * rng.standard_normal(v.shape) for k, v in conv.state_dict().items()
                          if not k.startswith("lin_r.") or not kwargs.get("share_weights")})  # fmt: skip
    q, k, v, padded, nl, ef = _neighbour_problem(rng, dt)
    ef = ef if kwargs.get("edge_dim") else None
    per_edge = {} if ef is None else {"edge_features": ef}
    tol = {"rtol": 2e-5, "atol": 2e-6} if dt is np.float32 else F64
    expected = np.zeros((6, conv.output_dim))
    expected_w = np.zeros((conv.heads, nl.nnz))
    for i in range(nl.num_nodes):
        lo, hi = nl.indptr[i], nl.indptr[i + 1]
        ids = nl.indices[lo:hi]
        if ids.size:  # node i is the target, its listed rows the sources; no self loop added
            rows = {} if ef is None else {"edge_features": ef[lo:hi]}
            expected[i] = conv.forward(q[i], k[ids], v[ids], **rows)
            expected_w[:, lo:hi] = conv.weights(q[i], k[ids], **rows)
    with monkeypatch.context() as m:  # one kernel call: no per-node forward() loop
        m.setattr(cls, "forward", lambda *a, **kw: pytest.fail("forward_neighbours looped over forward()"))
        m.setattr(cls, "_weights_one", lambda *a, **kw: pytest.fail("weights(neighbours=) looped"))
        scipy_csr = sp.csr_matrix((np.ones(nl.nnz), nl.indices, nl.indptr), shape=(6, 9))
        for neighbours in (nl, padded, (nl.indptr, nl.indices), scipy_csr):
            out = conv.forward_neighbours(q, k, v, neighbours, **per_edge)
            assert out.dtype == dt and out.shape == (6, conv.output_dim)
            np.testing.assert_allclose(out, expected, **tol)
            w = conv.weights(q, k, neighbours=neighbours, **per_edge)
            assert w.dtype == dt and w.shape == (conv.heads, nl.nnz)
            np.testing.assert_allclose(w, expected_w, **tol)
        out_prepared = conv.forward_neighbours(q, conv.prepare(k, v), None, nl, **per_edge)
        np.testing.assert_allclose(out_prepared, expected, **tol)
    # a node without neighbours: a zero row here (the contract), the bias in the single-node form
    assert not out[1].any() and not out[5].any()
    bias = conv.state_dict().get("bias", np.zeros(conv.output_dim)).astype(dt)
    np.testing.assert_array_equal(conv.forward(q[1], k[:0], v[:0]), bias)
    sums = np.add.reduceat(w, nl.indptr[:-1][nl.degrees() > 0], axis=1)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv])
def test_forward_neighbours_is_the_graph_form_without_self_loops(cls):
    """On a CSR adjacency with queries = keys = values = x, the neighbour form is forward_graph with
    add_self_loops=False -- except that a node without incoming edges gets zeros instead of the bias."""
    rng = np.random.default_rng(53)
    conv = cls(6, 3, heads=2, edge_dim=2, add_self_loops=False, seed=6)
    conv.load_state_dict({**conv.state_dict(), "bias": np.arange(6.0)})
    x, ei, ea = _graph(rng, edge_dim=2)
    forms, _, ea_csr = _as_csr(ei, ea, x.shape[0])
    nl = forms["NeighbourList"]
    graph_out, (_, alpha) = conv(x, nl, ea_csr, return_attention_weights=True)
    out = conv.forward_neighbours(x, x, x, nl, edge_features=ea_csr)
    has = nl.degrees() > 0
    np.testing.assert_allclose(out[has], graph_out[has], **F64)
    assert not out[~has].any() and (graph_out[~has] == np.arange(6.0)).all()
    np.testing.assert_allclose(conv.weights(x, x, neighbours=nl, edge_features=ea_csr), alpha.T, **F64)


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv])
def test_forward_neighbours_dropout_and_errors(cls):
    rng = np.random.default_rng(59)
    q, k, v, _, nl, ef = _neighbour_problem(rng, edge_dim=2)
    conv = cls(6, 3, heads=2, edge_dim=2, dropout=0.5, seed=4)
    eval_out = conv.forward_neighbours(q, k, v, nl, edge_features=ef)
    conv.train()
    one, two = (conv.forward_neighbours(q, k, v, nl, edge_features=ef) for _ in range(2))
    assert not np.array_equal(one, two) and not np.array_equal(one, eval_out)  # a fresh mask per call
    again = cls(6, 3, heads=2, edge_dim=2, dropout=0.5, seed=4).train()
    np.testing.assert_array_equal(again.forward_neighbours(q, k, v, nl, edge_features=ef), one)  # seeded
    w = conv.weights(q, k, neighbours=nl, edge_features=ef)  # weights never drop
    np.testing.assert_allclose(np.add.reduceat(w, [0, 3, 7, 8], axis=1), 1.0, rtol=1e-12)
    conv.eval()
    name = cls.__name__
    _raises(DimensionMismatch, rf"^{name}\.forward_neighbours: edge_features has 3 rows but there are 11 "
            "neighbour entries", conv.forward_neighbours, q, k, v, nl, edge_features=ef[:3])  # fmt: skip
    _raises(DimensionMismatch, r"values has shape \(9, 5\), expected \(n, 6\)", conv.forward_neighbours, q, k,
            v[:, :5], nl)  # fmt: skip
    _raises(DimensionMismatch, r"neighbours describe 6 nodes but queries has 5 rows", conv.forward_neighbours,
            q[:5], k, v, nl)  # fmt: skip
    _raises(OutOfBounds, r"neighbour ids must be in \[0, 8\); got 8", conv.forward_neighbours, q, k[:8], v[:8],
            nl.to_padded())  # fmt: skip
    bad = q.copy()
    bad[2, 3] = np.nan
    _raises(NumericalInstability, r"forward_neighbours: queries must be finite; got queries\[2, 3\] = nan",
            conv.forward_neighbours, bad, k, v, nl)  # fmt: skip
    _raises(InvalidConfig, "edge features were given but the layer has edge_dim=None", cls(6, 3).forward_neighbours,
            q, k, v, nl, edge_features=ef)  # fmt: skip


@pytest.mark.parametrize("kind", ["gat", "gatv2"])
def test_warmup_reaches_the_graph_kernels(kind, monkeypatch):
    """ruvattn.warmup() runs the contract's forms of every kind's example; the layers' _warmup adds
    forward_graph's grouping kernels (edge list, and CSR with self loops) in both dtypes."""
    from ruvattn.backend import warm_mechanism
    from ruvattn.mechanisms import mechanism_class

    calls = []
    for name in ("group_by_target", "csr_with_self_loops"):
        kernel = getattr(G, name)
        monkeypatch.setattr(G, name, lambda *a, _k=kernel, _n=name: calls.append((_n, a[-1].dtype)) or _k(*a))
    for dt in (np.float32, np.float64):
        ex = mechanism_class(kind).example(dt)
        warm_mechanism(ex.mechanism, ex)
    assert sorted(set(calls)) == [(n, np.dtype(dt)) for n in ("csr_with_self_loops", "group_by_target")
                                  for dt in (np.float32, np.float64)]  # fmt: skip


# --------------------------------------------------------------------------
# (e) the single-node form is a row of the whole-graph form on a star graph
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv])
@pytest.mark.parametrize("concat", [True, False])
def test_single_node_equals_star_graph(cls, concat):
    rng = np.random.default_rng(29)
    conv = cls(6, 3, heads=2, concat=concat, edge_dim=2, add_self_loops=False, seed=1)
    q = rng.standard_normal(6)
    nbrs = rng.standard_normal((5, 6))
    ef = rng.standard_normal((5, 2))
    star = np.stack([np.arange(1, 6), np.zeros(5, np.int64)])  # neighbours 1..5 -> node 0
    out_g, (_, alpha_g) = conv(np.vstack([q, nbrs]), star, ef, return_attention_weights=True)
    np.testing.assert_allclose(conv.forward_with_edges(q, nbrs, nbrs, ef), out_g[0], **F64)
    np.testing.assert_allclose(conv.weights(q, nbrs, edge_features=ef), alpha_g.T, **F64)  # (heads, n)
    np.testing.assert_allclose(conv.attention_weights(q, nbrs, edge_features=ef), alpha_g.mean(axis=1), **F64)
    np.testing.assert_allclose(out_g[1:], np.broadcast_to(conv.state_dict().get("bias", 0.0), out_g[1:].shape))
    # without edge features: forward(query, keys, values) is the star graph with no edge term
    out_plain = conv(np.vstack([q, nbrs]), star)[0]
    np.testing.assert_allclose(conv.forward(q, nbrs, nbrs), out_plain, **F64)
    # with self loops the graph form adds node 0 itself (loop attribute: the mean of its edges)
    looped = cls(6, 3, heads=2, concat=concat, edge_dim=2, seed=1)
    keys = np.vstack([nbrs, q])
    np.testing.assert_allclose(looped.forward_with_edges(q, keys, keys, np.vstack([ef, ef.mean(0)])),
                               looped(np.vstack([q, nbrs]), star, ef)[0], **F64)  # fmt: skip
    # values differing from keys: scores from the keys, messages from the values
    vals = rng.standard_normal((5, 6))
    w = conv.weights(q, nbrs, edge_features=ef)
    msg = conv.project(vals) if cls is GATConv else conv.project(vals)[0]
    per_head = np.einsum("hn,nhc->hc", w, msg.reshape(5, 2, 3))
    expected = (per_head.reshape(-1) if concat else per_head.mean(0)) + conv.state_dict()["bias"]
    np.testing.assert_allclose(conv.forward_with_edges(q, nbrs, vals, ef), expected, **F64)
    # no neighbours: the bias
    np.testing.assert_array_equal(conv.forward(q, np.empty((0, 6)), np.empty((0, 6))), conv.state_dict()["bias"])
    assert conv.weights(q, np.empty((0, 6))).shape == (2, 0)


# --------------------------------------------------------------------------
# (f) dropout
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv])
def test_dropout(cls):
    rng = np.random.default_rng(31)
    x, ei, ea = _graph(rng, n=12, e=40, edge_dim=2)
    p = 0.4
    conv = cls(6, 3, heads=2, edge_dim=2, dropout=p, seed=5)
    plain = cls(6, 3, heads=2, edge_dim=2, seed=5)
    out_eval, (used, alpha_eval) = conv(x, ei, ea, return_attention_weights=True)
    np.testing.assert_array_equal(out_eval, plain(x, ei, ea))  # eval mode: no dropout, deterministic
    np.testing.assert_array_equal(out_eval, conv(x, ei, ea))
    sums = np.zeros((12, 2))
    np.add.at(sums, used[1], alpha_eval)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)  # before dropout every node's weights sum to 1
    conv.train()
    out1, (_, a1) = conv(x, ei, ea, return_attention_weights=True)
    _, (_, a2) = conv(x, ei, ea, return_attention_weights=True)
    assert not np.array_equal(a1, a2)  # a fresh mask per call
    again = cls(6, 3, heads=2, edge_dim=2, dropout=p, seed=5).train()
    np.testing.assert_array_equal(again(x, ei, ea), out1)  # ... from a seeded generator
    kept = a1 != 0
    np.testing.assert_allclose(a1[kept], alpha_eval[kept] / (1 - p), rtol=1e-12)  # survivors scaled by 1/(1-p)
    assert 0.4 < kept.mean() < 0.8
    # the output aggregates the dropped weights (PyG returns those)
    ref_state = cls(6, 3, heads=2, edge_dim=2, seed=5)
    msg = ref_state.project(x) if cls is GATConv else ref_state.project(x)[0]
    agg = np.zeros((12, 2, 3))
    np.add.at(agg, used[1], a1[:, :, None] * msg.reshape(12, 2, 3)[used[0]])
    np.testing.assert_allclose(out1, agg.reshape(12, 6), **F64)
    # expected value: the mean over many masks approaches the eval output (4 standard errors)
    small = cls(6, 3, heads=2, dropout=p, seed=9).train()
    xs, es = x[:4], np.array([[1, 2, 3, 0, 2], [0, 0, 0, 1, 1]])
    runs = np.stack([small(xs, es) for _ in range(300)])
    se = runs.std(axis=0) / np.sqrt(len(runs)) + 1e-12
    assert (np.abs(runs.mean(axis=0) - small.eval()(xs, es)) < 4 * se + 1e-9).all()
    # the single-node form drops too, and weights never does
    small.train()
    w = small.weights(xs[0], xs[1:])
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    assert not np.array_equal(small.forward(xs[0], xs[1:], xs[1:]), small.forward(xs[0], xs[1:], xs[1:]))


# --------------------------------------------------------------------------
# (g) edge cases and validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv])
def test_empty_graphs_and_dtypes(cls):
    rng = np.random.default_rng(37)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    none = np.empty((2, 0), np.int64)
    conv = cls(6, 3, heads=2, edge_dim=2, add_self_loops=False, seed=2)
    conv.load_state_dict({**conv.state_dict(), "bias": np.arange(6, dtype=np.float32)})
    out, (used, alpha) = conv(x, none, np.empty((0, 2), np.float32), return_attention_weights=True)
    np.testing.assert_array_equal(out, np.tile(np.arange(6, dtype=np.float32), (5, 1)))  # no edges: the bias
    assert used.shape == (2, 0) and alpha.shape == (0, 2) and out.dtype == np.float32
    looped = cls(6, 3, heads=2, edge_dim=2, seed=2)  # only self loops: each node attends to itself
    out, (used, alpha) = looped(x, none, np.empty((0, 2)), return_attention_weights=True)
    np.testing.assert_array_equal(used, np.stack([np.arange(5), np.arange(5)]))
    np.testing.assert_array_equal(alpha, np.ones((5, 2)))
    x64 = x.astype(np.float64)
    own = looped.project(x64) if cls is GATConv else looped.project(x64)[0]
    np.testing.assert_allclose(out, own, rtol=1e-12)  # bias is zero at init
    assert out.dtype == np.float64  # float64 edge_attr makes the computation float64
    assert conv(np.empty((0, 6)), none).shape == (0, 6)
    ei = np.array([[0, 1], [1, 2]])
    assert conv(x, ei, [[0.5, 1.0], [1.0, 2.0]]).dtype == np.float64  # lists convert to float64
    assert conv(x, ei.astype(np.int32), np.ones((2, 2), np.float32)).dtype == np.float32


def _raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("cls", [GATConv, GATv2Conv])
def test_validation_errors(cls):
    name = cls.__name__
    conv = cls(4, 2, heads=2, edge_dim=3)
    x = np.ones((5, 4), np.float32)
    ei = np.array([[0, 1, 2], [1, 2, 3]])
    ea = np.ones((3, 3), np.float32)
    op = rf"{name}\.forward_graph"
    _raises(DimensionMismatch, rf"{op}: edge_index has shape \(3, 3\), expected \(2, E\)", conv, x, ei[[0, 1, 1]])
    _raises(DimensionMismatch, rf"{op}: edge_index has shape \(6,\)", conv, x, np.arange(6))
    _raises(DimensionMismatch, "edge_index must hold integer node ids; got dtype float64", conv, x, ei * 1.0)
    _raises(OutOfBounds, r"edge_index\[1, 2\] = 5 is not a node id; ids must be in \[0, 5\)", conv, x,
            np.array([[0, 1, 2], [1, 2, 5]]))  # fmt: skip
    _raises(OutOfBounds, r"edge_index\[0, 1\] = -1 is not a node id", conv, x, np.array([[0, -1, 2], [1, 2, 9]]))
    _raises(OutOfBounds, r"ids must be in \[0, 5\); got 7", conv, x, (np.array([0, 1, 1, 1, 1, 1]), np.array([7])))
    _raises(DimensionMismatch, r"a tuple is read as a CSR adjacency \(indptr, indices\)", conv, x, (ei[0], ei[1]))
    _raises(DimensionMismatch, r"adjacency matrix has shape \(5, 4\), expected \(5, 5\)", conv, x,
            sp.csr_matrix((5, 4)))  # fmt: skip
    _raises(DimensionMismatch, r"edge_attr has 2 rows but there are 3 edges", conv, x, ei, ea[:2])
    _raises(DimensionMismatch, r"edge_attr has shape \(3, 2\), expected \(3, 3\) \(edge_dim=3\)", conv, x, ei,
            ea[:, :2])  # fmt: skip
    _raises(InvalidConfig, "edge features were given but the layer has edge_dim=None. Build it with edge_dim=3",
            cls(4, 2), x, ei, ea)  # fmt: skip
    _raises(DimensionMismatch, rf"{op}: x has shape \(5, 3\), expected \(n, 4\)", conv, x[:, :3], ei)
    _raises(DimensionMismatch, r"x must hold real numbers", conv, x.astype(complex), ei)
    bad = x.copy()
    bad[2, 1] = np.nan
    _raises(NumericalInstability, r"x must be finite; got x\[2, 1\] = nan", conv, bad, ei, ea)
    bad_ea = ea.copy()
    bad_ea[1, 0] = np.inf
    _raises(NumericalInstability, r"edge_attr must be finite; got edge_attr\[1, 0\] = inf", conv, x, ei, bad_ea)
    big = cls(4, 2, heads=2, edge_dim=3)
    big.load_state_dict({k: np.ones_like(v) if k.endswith("weight") else v for k, v in big.state_dict().items()})
    _raises(NumericalInstability, "overflowed float32 .* use float64", big, np.full((5, 4), 3e38, np.float32), ei)
    _raises(NumericalInstability, r"forward_with_edges: query must be finite", conv.forward_with_edges,
            np.full(4, np.nan), x, x, np.ones((5, 3)))  # fmt: skip
    _raises(DimensionMismatch, r"edge_features has 2 rows but there are 5 neighbours", conv.forward_with_edges,
            x[0], x, x, np.ones((2, 3)))  # fmt: skip
    _raises(DimensionMismatch, r"keys and values must have the same number of rows", conv.forward, x[0], x, x[:2])


def test_config_errors_and_registry():
    # one format for every parameter: "<Class>: '<name>' must be <constraint>; got <value>."
    fills = "one of 'mean', 'add', 'sum', 'max', 'min' or a finite number"
    for kwargs, message in [
        ({"heads": 0}, "'heads' must be a positive integer (at most 2**31 - 1); got 0."),
        ({"heads": 2.5}, "'heads' must be a positive integer (at most 2**31 - 1); got 2.5."),
        ({"out_channels": 0}, "'out_channels' must be a positive integer (at most 65536); got 0."),
        ({"in_channels": -2}, "'in_channels' must be a positive integer (at most 65536); got -2."),
        ({"dropout": 1.0}, "'dropout' must be a number in [0, 1); got 1.0."),
        ({"negative_slope": -0.1}, "'negative_slope' must be a number in [0, inf); got -0.1."),
        ({"negative_slope": float("inf")}, "'negative_slope' must be a number in [0, inf); got inf."),
        ({"fill_value": "median"}, f"'fill_value' must be {fills}; got 'median'."),
        ({"fill_value": True}, f"'fill_value' must be {fills}; got True."),
        ({"fill_value": float("nan")}, f"'fill_value' must be {fills}; got nan."),
        (
            {"edge_dim": 0},
            "'edge_dim' must be a positive integer (at most 2**31 - 1) or None; got 0. "
            "Use None for a layer without edge features.",
        ),
        ({"concat": "yes"}, "'concat' must be True or False; got 'yes'."),
        ({"seed": -1}, "'seed' must be a non-negative integer (at most 9223372036854775807) or None; got -1."),
    ]:
        args = {"in_channels": 4, "out_channels": 2, **kwargs}
        with pytest.raises(InvalidConfig) as err:
            ruvattn.build({"type": "gat", **args})
        assert str(err.value) == f"GATConv: {message}"
    with pytest.raises(InvalidConfig, match=r"^GATConv: got an unexpected keyword argument 'nope'\. Parameters: "
                                            r"in_channels, out_channels, heads, "):  # fmt: skip
        ruvattn.build({"type": "gat", "in_channels": 4, "out_channels": 2, "nope": 1})
    with pytest.raises(InvalidConfig, match=r"^GATv2Conv: 'share_weights' must be True or False; got 1\.$"):
        GATv2Conv(4, 2, share_weights=1)
    assert {"gat", "gatv2"} <= set(ruvattn.available())
    for conv in (GATConv(4, 2, heads=3, edge_dim=2, fill_value=0.5), GATv2Conv(4, 2, share_weights=True)):
        spec = json.loads(json.dumps(conv.to_dict()))
        again = ruvattn.build(spec)
        assert type(again) is type(conv) and again.get_params() == conv.get_params()
        assert spec["in_channels"] == 4 and again.hidden_dim == 4 and "in_channels=4" in repr(again)
        for k, v in conv.state_dict().items():
            np.testing.assert_array_equal(again.state_dict()[k], v)  # same seed, same weights
    conv = GATConv(4, 2)
    conv.set_params(heads=3, in_channels=5)
    assert conv.state_dict()["lin.weight"].shape == (6, 5) and conv.output_dim == 6
    with pytest.raises(InvalidConfig, match=r"^GATConv\.set_params: unknown parameter\(s\) \['dim'\]\. Valid: in_ch"):
        conv.set_params(dim=3)
    heads_zero = r"^GATConv: 'heads' must be a positive integer \(at most 2\*\*31 - 1\); got 0\.$"
    with pytest.raises(InvalidConfig, match=heads_zero):
        conv.set_params(heads=0)
    assert conv.heads == 3  # a failed set_params changes nothing


def test_state_dict_names_init_and_load_errors():
    g = GATConv(4, 3, heads=2, edge_dim=5, concat=False)
    shapes = {k: v.shape for k, v in g.state_dict().items()}
    assert shapes == {"att_src": (1, 2, 3), "att_dst": (1, 2, 3), "att_edge": (1, 2, 3), "bias": (3,),
                      "lin.weight": (6, 4), "lin_edge.weight": (6, 5)}  # fmt: skip
    assert list(GATConv(4, 3, bias=False).state_dict()) == ["att_src", "att_dst", "lin.weight"]
    v2 = GATv2Conv(4, 3, heads=2, edge_dim=5, share_weights=True)
    sd = v2.state_dict()
    assert list(sd) == ["att", "bias", "lin_l.weight", "lin_l.bias", "lin_r.weight", "lin_r.bias", "lin_edge.weight"]
    # the layer holds one shared array; state_dict() gives copies (the contract), so editing one changes nothing
    assert v2.lin_r_weight_ is v2.lin_l_weight_ and v2.lin_r_bias_ is v2.lin_l_bias_
    np.testing.assert_array_equal(sd["lin_r.weight"], sd["lin_l.weight"])
    assert not np.shares_memory(sd["lin_l.weight"], v2.lin_l_weight_)
    kept = v2.lin_l_weight_.copy()
    sd["lin_l.weight"][0, 0] += 1.0
    np.testing.assert_array_equal(v2.lin_l_weight_, kept)
    sd = v2.state_dict()
    # PyG's init: glorot weights/att, U(+-1/sqrt(in)) linear biases, zero output bias
    big = GATv2Conv(64, 32, heads=4, seed=3).state_dict()
    for name, bound in (("lin_l.weight", np.sqrt(6 / (128 + 64))), ("att", np.sqrt(6 / (4 + 32))),
                        ("lin_l.bias", 1 / 8)):  # fmt: skip
        a = big[name]
        assert 0.9 * bound < np.abs(a).max() <= bound * (1 + 1e-6) and abs(a.mean()) < 0.25 * bound
    assert not big["bias"].any() and not np.array_equal(big["lin_l.weight"], big["lin_r.weight"])
    before = {k: v.copy() for k, v in g.state_dict().items()}
    # loading: lin_r may be left out when shared, must match when given
    v2.load_state_dict({k: v + 1 for k, v in sd.items() if not k.startswith("lin_r.")})
    assert v2.lin_r_weight_ is v2.lin_l_weight_  # still one map after a load
    np.testing.assert_array_equal(v2.state_dict()["lin_r.weight"], sd["lin_l.weight"] + 1)
    v2.load_state_dict(sd)
    with pytest.raises(InvalidConfig, match=r"^GATv2Conv\.load_state_dict: lin_r\.weight must equal lin_l\.weight"):
        v2.load_state_dict({**sd, "lin_r.weight": sd["lin_r.weight"] + 1})
    np.testing.assert_array_equal(v2.state_dict()["lin_l.weight"], sd["lin_l.weight"])  # nothing was loaded
    with pytest.raises(DimensionMismatch, match=r"lin\.weight has shape \(6, 3\), expected \(6, 4\)"):
        g.load_state_dict({**g.state_dict(), "lin.weight": np.zeros((6, 3))})
    with pytest.raises(InvalidConfig, match=r"unknown tensor\(s\) \['res\.weight'\].*residual=True"):
        g.load_state_dict({**g.state_dict(), "res.weight": np.zeros((3, 4))})
    with pytest.raises(InvalidConfig, match=r"missing tensor\(s\) \['bias'\].*bias=True; build it with bias=False"):
        g.load_state_dict({k: v for k, v in g.state_dict().items() if k != "bias"})
    with pytest.raises(InvalidConfig, match=r"unknown tensor\(s\) \['att_edge', 'lin_edge\.weight'\].*edge_dim="):
        GATConv(4, 3, heads=2, concat=False).load_state_dict(g.state_dict())
    with pytest.raises(NumericalInstability, match=r"^GATConv\.load_state_dict: att_src contains NaN"):
        g.load_state_dict({**g.state_dict(), "att_src": np.full((1, 2, 3), np.nan)})
    for k, v in g.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # failed loads changed nothing
