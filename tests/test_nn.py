"""ruvattn.nn: the GAT/GATv2 training kernels against their numpy twins, the layers against PyTorch Geometric's
autograd and float64 finite differences, the building blocks against their formulas, and bad inputs.

Graphs are small (tens of nodes) so the file also runs under ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ruvattn import DimensionMismatch, InvalidConfig, NeighbourList, NumericalInstability, OutOfBounds, nn, threads
from ruvattn.kernels import training as KT
from ruvattn.reference import training as ref


def _edges(rng, n=24, e=80):
    """A random directed graph with self loops, a duplicated edge, node n-1 isolated and node n-2 a source only."""
    src = rng.integers(0, n - 1, e)
    dst = rng.integers(0, n - 2, e)
    src[:3] = dst[:3]
    src = np.concatenate([src, src[5:6]])
    dst = np.concatenate([dst, dst[5:6]])
    return src, dst, n


def _slot_arrays(g: nn.Graph, self_loops: bool):
    s = g.slots(self_loops)
    return s, s.src, s.dst


# -- kernels against the numpy twins ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize("use_drop", [False, True])
def test_gat_kernels_match_numpy_twin(dtype, self_loops, use_drop):
    rng = np.random.default_rng(3)
    src, dst, n = _edges(rng)
    g = nn.Graph.from_edges(src, dst, n)
    s, ssrc, sdst = _slot_arrays(g, self_loops)
    heads, ch = 3, 5
    msg = rng.standard_normal((n, heads * ch)).astype(dtype)
    a_src, a_dst = (rng.standard_normal((n, heads)).astype(dtype) for _ in range(2))
    drop = (rng.random((ssrc.size, heads)) > 0.4).astype(dtype) * dtype(1 / 0.6)
    drop_k = drop if use_drop else np.empty((0, heads), dtype)
    alpha = np.empty((ssrc.size, heads), dtype)
    out = np.empty_like(msg)
    KT.gat_forward(s.indptr, ssrc, a_src, a_dst, msg, dtype(0.2), drop_k, alpha, out, 4)
    want_alpha, want_out = ref.gat_forward(ssrc, sdst, a_src, a_dst, msg, 0.2, drop if use_drop else None, n)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}
    np.testing.assert_allclose(alpha, want_alpha, **tol)
    np.testing.assert_allclose(out, want_out, **tol)
    if not self_loops:
        assert (out[n - 1] == 0).all() and (out[n - 2] == 0).all()  # no incoming edge: a zero row, never NaN
    dout = rng.standard_normal(out.shape).astype(dtype)
    dz = np.empty_like(alpha)
    da_dst, da_src, dmsg = np.empty_like(a_dst), np.empty_like(a_src), np.empty_like(msg)
    KT.gat_backward(s.indptr, ssrc, s.rptr, s.rslot, sdst, a_src, a_dst, msg, dtype(0.2), drop_k, alpha, dout, dz,
                    da_dst, dmsg, da_src, 4)  # fmt: skip
    w_src, w_dst, w_msg = ref.gat_backward(ssrc, sdst, a_src, a_dst, msg, 0.2, drop if use_drop else None, alpha, dout)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-11, "atol": 1e-12}
    np.testing.assert_allclose(da_src, w_src, **tol)
    np.testing.assert_allclose(da_dst, w_dst, **tol)
    np.testing.assert_allclose(dmsg, w_msg, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("use_drop", [False, True])
def test_gatv2_kernels_match_numpy_twin(dtype, use_drop):
    rng = np.random.default_rng(4)
    src, dst, n = _edges(rng)
    g = nn.Graph.from_edges(src, dst, n)
    s, ssrc, sdst = _slot_arrays(g, True)
    heads, ch = 2, 4
    xl, xr = (rng.standard_normal((n, heads * ch)).astype(dtype) for _ in range(2))
    att = rng.standard_normal((heads, ch)).astype(dtype)
    drop = (rng.random((ssrc.size, heads)) > 0.5).astype(dtype) * dtype(2)
    drop_k = drop if use_drop else np.empty((0, heads), dtype)
    alpha, out = np.empty((ssrc.size, heads), dtype), np.empty_like(xl)
    KT.gatv2_forward(s.indptr, ssrc, xl, xr, att, dtype(0.2), drop_k, alpha, out, 5)
    want_alpha, want_out = ref.gatv2_forward(ssrc, sdst, xl, xr, att, 0.2, drop if use_drop else None, n)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-13}
    np.testing.assert_allclose(alpha, want_alpha, **tol)
    np.testing.assert_allclose(out, want_out, **tol)
    dout = rng.standard_normal(out.shape).astype(dtype)
    chunks = -(-n // 5)
    dz, du = np.empty_like(alpha), np.empty((ssrc.size, heads * ch), dtype)
    dxr, dxl, parts = np.empty_like(xr), np.empty_like(xl), np.zeros((chunks, heads, ch), dtype)
    KT.gatv2_backward(s.indptr, ssrc, s.rptr, s.rslot, sdst, xl, xr, att, dtype(0.2), drop_k, alpha, dout, dz, du,
                      dxr, parts, dxl, 5)  # fmt: skip
    w_xl, w_xr, w_att = ref.gatv2_backward(ssrc, sdst, xl, xr, att, 0.2, drop if use_drop else None, alpha, dout)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-11, "atol": 1e-12}
    np.testing.assert_allclose(dxl, w_xl, **tol)
    np.testing.assert_allclose(dxr, w_xr, **tol)
    np.testing.assert_allclose(parts.sum(0), w_att, **tol)


def test_slots_by_source_lists_every_slot_once_under_its_source():
    rng = np.random.default_rng(5)
    src, dst, n = _edges(rng)
    s = nn.Graph.from_edges(src, dst, n).slots(True)
    assert sorted(s.rslot.tolist()) == list(range(s.src.size))
    for j in range(n):
        slots = s.rslot[s.rptr[j] : s.rptr[j + 1]]
        assert (s.src[slots] == j).all()
        assert (np.diff(slots) > 0).all()  # stable: in slot order
    for i in range(n):
        assert (s.dst[s.indptr[i] : s.indptr[i + 1]] == i).all()
        assert s.src[s.indptr[i + 1] - 1] == i  # the added self loop is the node's last slot
    loops_in_input = int((src == dst).sum())
    assert s.src.size == src.size - loops_in_input + n


# -- the layers against PyTorch Geometric -------------------------------------------------------------------


def _pyg_twin(layer, torch):
    """The PyG layer with ``layer``'s parameters (random biases, so their gradients are exercised too)."""
    from torch_geometric.nn import GATConv, GATv2Conv

    kw = {"heads": layer.heads, "concat": layer.concat, "negative_slope": layer.negative_slope,
          "add_self_loops": layer.add_self_loops}  # fmt: skip
    t = torch.from_numpy
    if isinstance(layer, nn.GATLayer):
        conv = GATConv(layer.in_channels, layer.out_channels, **kw).double()
        pairs = {"lin.weight": layer.weight, "att_src": layer.att_src, "att_dst": layer.att_dst, "bias": layer.bias}
    else:
        conv = GATv2Conv(layer.in_channels, layer.out_channels, **kw).double()
        pairs = {"lin_l.weight": layer.weight_l, "lin_l.bias": layer.bias_l, "lin_r.weight": layer.weight_r,
                 "lin_r.bias": layer.bias_r, "att": layer.att, "bias": layer.bias}  # fmt: skip
    rng = np.random.default_rng(11)
    for name, p in pairs.items():
        if "bias" in name:
            p.data[...] = rng.standard_normal(p.data.shape)
    params = dict(conv.named_parameters())
    with torch.no_grad():
        for name, p in pairs.items():
            value = p.data.T if name.endswith("weight") else p.data
            params[name].copy_(t(np.ascontiguousarray(value)).reshape(params[name].shape))
    return conv, pairs


@pytest.mark.parametrize("cls", [nn.GATLayer, nn.GATv2Layer])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("self_loops", [True, False])
def test_layer_forward_and_gradients_equal_pyg_autograd(cls, concat, self_loops):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_geometric")
    rng = np.random.default_rng(7)
    src, dst, n = _edges(rng)
    x = rng.standard_normal((n, 6))
    layer = cls(6, 4, heads=3, concat=concat, add_self_loops=self_loops, seed=1, dtype=np.float64)
    conv, pairs = _pyg_twin(layer, torch)
    tx = torch.from_numpy(x).requires_grad_()
    ty = conv(tx, torch.from_numpy(np.stack([src, dst])))
    up = rng.standard_normal(tuple(ty.shape))
    (ty * torch.from_numpy(up)).sum().backward()
    y = layer(x, nn.Graph.from_edges(src, dst, n))
    dx = layer.backward(up)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    params = dict(conv.named_parameters())
    for name, p in pairs.items():
        got = params[name].grad.numpy()
        got = got.T if name.endswith("weight") else got.reshape(p.grad.shape)
        np.testing.assert_allclose(p.grad, got, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cls", [nn.GATLayer, nn.GATv2Layer])
def test_float32_gradients_equal_pyg_to_1e5(cls):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_geometric")
    rng = np.random.default_rng(8)
    src, dst, n = _edges(rng, n=40, e=200)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    layer = cls(10, 8, heads=4, seed=2, dtype=np.float32)
    conv, pairs = _pyg_twin(layer, torch)
    conv = conv.float()
    tx = torch.from_numpy(x).requires_grad_()
    ty = conv(tx, torch.from_numpy(np.stack([src, dst])))
    up = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (ty * torch.from_numpy(up)).sum().backward()
    layer(x, nn.Graph.from_edges(src, dst, n))
    dx = layer.backward(up)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    params = dict(conv.named_parameters())
    for name, p in pairs.items():
        got = params[name].grad.numpy()
        got = got.T if name.endswith("weight") else got.reshape(p.grad.shape)
        np.testing.assert_allclose(p.grad, got, rtol=1e-5, atol=1e-5, err_msg=name)


# -- finite differences (float64) ---------------------------------------------------------------------------


def _loss_and_grads(model, x, graph, up, seed):
    """``sum(model(x) * up)`` with every dropout re-seeded (the same masks at each evaluation), and its gradients."""
    for layer in [model, *getattr(model, "layers", [])]:
        if hasattr(layer, "rng"):
            layer.rng = np.random.default_rng(seed)
    y = model(x, graph)
    return float(np.sum(y * up)), y


def _check_fd(model, x, graph, seed=0, eps=1e-6, rtol=1e-6):
    rng = np.random.default_rng(seed)
    _, y = _loss_and_grads(model, x, graph, 0, seed)
    up = rng.standard_normal(y.shape)
    model.zero_grad()
    _loss_and_grads(model, x, graph, up, seed)
    dx = model.backward(up, True) if isinstance(model, nn.Sequential) else model.backward(up)
    checks = [(p.name or name, p.data, p.grad.copy()) for name, p in model.named_parameters()] + [("x", x, dx)]
    for name, arr, grad in checks:
        flat, gflat = arr.reshape(-1), grad.reshape(-1)
        for idx in rng.choice(flat.size, min(flat.size, 12), replace=False):
            old = flat[idx]
            flat[idx] = old + eps
            plus, _ = _loss_and_grads(model, x, graph, up, seed)
            flat[idx] = old - eps
            minus, _ = _loss_and_grads(model, x, graph, up, seed)
            flat[idx] = old
            fd = (plus - minus) / (2 * eps)
            assert abs(fd - gflat[idx]) <= rtol * max(1.0, abs(fd)) + 1e-8, (name, idx, fd, gflat[idx])


@pytest.mark.parametrize("cls", [nn.GATLayer, nn.GATv2Layer, "GAT+messages"])
@pytest.mark.parametrize("concat", [True, False])
def test_layer_gradients_match_finite_differences_with_dropout(cls, concat):
    rng = np.random.default_rng(9)
    src, dst, n = _edges(rng, n=15, e=40)
    x = rng.standard_normal((n, 5))
    if cls == "GAT+messages":  # the GAT paper's dropout of the aggregated features too
        layer = nn.GATLayer(5, 3, heads=2, concat=concat, dropout=0.3, seed=3, dtype=np.float64, message_dropout=0.4)
    else:
        layer = cls(5, 3, heads=2, concat=concat, dropout=0.3, seed=3, dtype=np.float64)
    layer.bias.data[...] = rng.standard_normal(layer.bias.data.shape)
    _check_fd(layer, x, nn.Graph.from_edges(src, dst, n))


def test_two_layer_model_gradients_match_finite_differences():
    rng = np.random.default_rng(10)
    src, dst, n = _edges(rng, n=15, e=40)
    x = rng.standard_normal((n, 6))
    model = nn.Sequential(
        nn.Dropout(0.2, seed=1), nn.Linear(6, 6, bias=False, seed=2, dtype=np.float64), nn.Bias(6, np.float64),
        nn.LeakyReLU(0.1),
        nn.GATLayer(6, 3, heads=2, dropout=0.2, seed=3, dtype=np.float64), nn.ELU(), nn.ReLU(),
        nn.GATv2Layer(6, 4, heads=2, concat=False, seed=4, dtype=np.float64),
    )  # fmt: skip
    for p in model.parameters():  # non-zero biases: a row whose weights all dropped is not exactly at ReLU's kink
        p.data += 0.1 * rng.standard_normal(p.data.shape)
    _check_fd(model, x, nn.Graph.from_edges(src, dst, n))


def test_softmax_cross_entropy_equals_torch_and_its_gradient():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    logits = rng.standard_normal((20, 5)) * 3
    labels = rng.integers(0, 5, 20)
    index = np.array([1, 4, 7, 9, 19])
    loss, grad = nn.softmax_cross_entropy(logits, labels, index)
    t = torch.from_numpy(logits).requires_grad_()
    tl = torch.nn.functional.cross_entropy(t[index], torch.from_numpy(labels)[index])
    tl.backward()
    assert loss == pytest.approx(float(tl.detach()), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-14)
    # huge logits stay finite (log-sum-exp shifted by the row max)
    loss, _ = nn.softmax_cross_entropy(logits * 1e30, labels)
    assert np.isfinite(loss)


def test_activations_match_their_formulas():
    torch = pytest.importorskip("torch")
    x = np.linspace(-6, 6, 101)
    x[50] = 0.0
    up = np.cos(x)
    for layer, fn in [(nn.ELU(0.7), lambda t: torch.nn.functional.elu(t, 0.7)), (nn.ReLU(), torch.relu),
                      (nn.LeakyReLU(0.05), lambda t: torch.nn.functional.leaky_relu(t, 0.05))]:  # fmt: skip
        t = torch.from_numpy(x).requires_grad_()
        y = fn(t)
        (y * torch.from_numpy(up)).sum().backward()
        np.testing.assert_allclose(layer(x), y.detach().numpy(), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(layer.backward(up), t.grad.numpy(), rtol=1e-14, atol=1e-15)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(nn.ELU()(x32), np.where(x > 0, x, np.expm1(x)), rtol=2e-6, atol=1e-7)


def test_dropout_keeps_expectation_and_is_identity_in_eval():
    d = nn.Dropout(0.6, seed=0)
    x = np.ones((400, 500), np.float32)
    y = d(x)
    kept = y != 0
    assert abs(kept.mean() - 0.4) < 0.005
    np.testing.assert_allclose(y[kept], 1 / 0.4, rtol=1e-6)
    np.testing.assert_array_equal(d.backward(x), y)  # the same mask
    d.eval()
    assert d(x) is x
    xs = sp.random(300, 200, density=0.05, format="csr", random_state=0, dtype=np.float32)
    d.train()
    ys = d(xs)
    assert set(zip(*ys.nonzero(), strict=True)) <= set(zip(*xs.nonzero(), strict=True))  # a zero entry stays zero
    assert abs(ys.nnz / xs.nnz - 0.4) < 0.05
    assert d.backward(np.ones((300, 200))) is None  # a sparse input has no gradient


def test_bias_adds_one_learned_value_per_channel():
    rng = np.random.default_rng(15)
    x, dy = rng.standard_normal((7, 4)), rng.standard_normal((7, 4))
    layer = nn.Bias(4, dtype=np.float64)
    layer.bias.data[...] = [0.5, -1.0, 2.0, 0.0]
    np.testing.assert_array_equal(layer(x), x + np.array([0.5, -1.0, 2.0, 0.0]))
    np.testing.assert_array_equal(layer.backward(dy), dy)
    np.testing.assert_allclose(layer.bias.grad, dy.sum(0), rtol=1e-15)
    with pytest.raises(DimensionMismatch, match=r"\(N, 4\)"):
        layer(np.ones((3, 5)))
    with pytest.raises(InvalidConfig, match="dense"):
        layer(sp.csr_matrix(np.ones((3, 4))))
    with pytest.raises(InvalidConfig, match="positive integer"):
        nn.Bias(0)


def test_linear_gcn_init_is_uniform_over_one_over_sqrt_out():
    w = nn.Linear(300, 49, seed=0, init="gcn", dtype=np.float64).weight.data  # bound 1/7
    assert np.abs(w).max() <= 1 / 7 and np.abs(w).max() > 0.99 / 7
    assert abs(w.var() - (1 / 7) ** 2 / 3) < 0.03 * (1 / 7) ** 2 / 3  # U(-a, a) has variance a^2 / 3
    g = nn.Linear(300, 49, seed=0, dtype=np.float64).weight.data
    assert np.abs(g).max() <= np.sqrt(6 / 349) and np.abs(g).max() > 0.99 * np.sqrt(6 / 349)  # glorot by default
    assert "init='gcn'" in repr(nn.Linear(3, 2, init="gcn"))
    with pytest.raises(InvalidConfig, match="init"):
        nn.Linear(3, 2, init="kaiming")


def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(13)
    src, dst, n = _edges(rng, n=300, e=2000)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    g = nn.Graph.from_edges(src, dst, n)
    results = []
    for t in (1, 2):
        with threads(t):
            for cls in (nn.GATLayer, nn.GATv2Layer):
                layer = cls(16, 8, heads=4, dropout=0.5, seed=4)
                y = layer(x, g)
                dx = layer.backward(np.ones_like(y))
                results.append((y, dx, *[p.grad for p in layer.parameters()]))
    for a, b in zip(results[:2], results[2:], strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)


def test_graph_from_neighbours_reads_rows_as_sources():
    nl = NeighbourList(np.array([0, 2, 3, 3]), np.array([1, 2, 0]), 3)
    g = nn.Graph.from_neighbours(nl)
    assert g.src.tolist() == [1, 2, 0] and g.dst.tolist() == [0, 0, 1]


# -- bad inputs ---------------------------------------------------------------------------------------------


def test_bad_inputs_are_refused_with_clear_errors():
    rng = np.random.default_rng(14)
    g = nn.Graph.from_edges([0, 1], [1, 2], 3)
    layer = nn.GATLayer(4, 2, heads=2, seed=0)
    with pytest.raises(InvalidConfig, match="call forward first"):
        layer.backward(np.ones((3, 4)))
    with pytest.raises(DimensionMismatch, match=r"\(N, 4\)"):
        layer(np.ones((3, 5)), g)
    with pytest.raises(DimensionMismatch, match="3 nodes but x has 2 rows"):
        layer(np.ones((2, 4)), g)
    x = rng.standard_normal((3, 4))
    x[1, 2] = np.nan
    with pytest.raises(NumericalInstability, match="NaN"):
        layer(x, g)
    big = nn.GATLayer(4, 2, heads=2, seed=0)
    big.weight.data[...] = 1e30  # finite features whose projection overflows float32
    with pytest.raises(NumericalInstability, match="overflowed"):
        big(np.full((3, 4), 1e10, np.float32), g)
    with pytest.raises(OutOfBounds, match="not a node id"):
        nn.Graph.from_edges([0, 5], [1, 2], 3)
    with pytest.raises(DimensionMismatch, match="same length"):
        nn.Graph.from_edges([0, 1], [1], 3)
    with pytest.raises(DimensionMismatch, match="integer"):
        nn.Graph.from_edges([0.0, 1.5], [1, 2], 3)
    with pytest.raises(InvalidConfig, match="heads"):
        nn.GATLayer(4, 2, heads=0)
    with pytest.raises(InvalidConfig, match="dropout"):
        nn.GATv2Layer(4, 2, dropout=1.0)
    with pytest.raises(InvalidConfig, match="message_dropout"):
        nn.GATLayer(4, 2, message_dropout=-0.1)
    with pytest.raises(InvalidConfig, match="float32 or float64"):
        nn.Linear(3, 2, dtype=np.int32)
    with pytest.raises(DimensionMismatch, match="labels"):
        nn.softmax_cross_entropy(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(DimensionMismatch, match="not a class id"):
        nn.softmax_cross_entropy(np.zeros((3, 2)), np.array([0, -1, 1]))
    with pytest.raises(DimensionMismatch, match="empty index"):
        nn.softmax_cross_entropy(np.zeros((3, 2)), np.array([0, 1, 1]), np.array([], np.int64))
    with pytest.raises(NumericalInstability, match="NaN or inf"):
        nn.softmax_cross_entropy(np.array([[np.nan, 0.0]]), np.array([0]))

    class PassThrough(nn.Module):  # a learned layer that hands a sparse matrix on
        def __init__(self):
            self.scale = nn.Parameter(np.ones(1))

        def forward(self, x, graph=None):
            return x

        def backward(self, dy, need_input_grad=True):
            return dy

    model = nn.Sequential(PassThrough(), nn.Linear(4, 2, seed=0))
    y = model(sp.csr_matrix(np.ones((3, 4), np.float32)))
    with pytest.raises(InvalidConfig, match="sparse input"):
        model.backward(np.ones_like(y))
    state = layer.state_dict()
    state["weight"] = np.ones((2, 2))
    with pytest.raises(DimensionMismatch, match="shape"):
        layer.load_state_dict(state)
    with pytest.raises(DimensionMismatch, match="missing"):
        layer.load_state_dict({})


def test_empty_graph_and_no_edges():
    layer = nn.GATLayer(3, 2, heads=2, add_self_loops=False, seed=0, dtype=np.float64)
    layer.bias.data[...] = [1.0, 2.0, 3.0, 4.0]
    y = layer(np.ones((4, 3)), nn.Graph.from_edges([], [], 4))
    np.testing.assert_array_equal(y, np.tile([1.0, 2.0, 3.0, 4.0], (4, 1)))  # no incoming edge: the bias
    dx = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(dx, 0)
    np.testing.assert_array_equal(layer.bias.grad, [4, 4, 4, 4])
    y0 = layer(np.ones((0, 3)), nn.Graph.from_edges([], [], 0))
    assert y0.shape == (0, 4)


@pytest.mark.parametrize("cls", [nn.GATLayer, nn.GATv2Layer])
@pytest.mark.parametrize("concat", [True, False])
def test_to_mechanism_computes_what_the_layer_computes(cls, concat):
    rng = np.random.default_rng(15)
    src, dst, n = _edges(rng)
    x = rng.standard_normal((n, 6))
    layer = cls(6, 3, heads=2, concat=concat, dropout=0.5, seed=5, dtype=np.float64)
    for p in layer.parameters():
        p.data += 0.1 * rng.standard_normal(p.data.shape)
    layer.eval()
    conv = layer.to_mechanism()
    assert not conv.training
    np.testing.assert_allclose(conv.forward_graph(x, np.stack([src, dst])), layer(x, nn.Graph.from_edges(src, dst, n)),
                               rtol=1e-12, atol=1e-12)  # fmt: skip


def test_attention_entropy_is_uniform_for_equal_scores_and_lower_after_a_sharp_one():
    # features all equal: every score of a node is the same, so its weights are uniform (entropy log degree)
    src, dst, n = _edges(np.random.default_rng(16))
    g = nn.Graph.from_edges(src, dst, n)
    layer = nn.GATLayer(3, 2, heads=2, seed=0, dtype=np.float64)
    layer(np.ones((n, 3)), g)
    ent, uniform = layer.attention_entropy()
    np.testing.assert_allclose(ent, np.repeat(uniform[:, None], 2, axis=1), atol=1e-12)
    np.testing.assert_allclose(np.exp(uniform), np.diff(g.slots(True).indptr))
    x = np.ones((n, 3))
    x[0] = 50.0  # node 0 stands out: nodes that hear from it put most weight on it
    layer(x, g)
    ent, uniform = layer.attention_entropy()
    hears = np.unique(g.slots(True).dst[g.slots(True).src == 0])
    assert (ent[hears].min(1) < uniform[hears] - 1e-3).any()


def test_message_dropout_drops_what_is_aggregated_not_what_is_scored():
    rng = np.random.default_rng(17)
    src, dst, n = _edges(rng)
    g = nn.Graph.from_edges(src, dst, n)
    x = rng.standard_normal((n, 4))
    plain = nn.GATLayer(4, 3, heads=2, seed=1, dtype=np.float64)
    dropped = nn.GATLayer(4, 3, heads=2, seed=1, dtype=np.float64, message_dropout=0.5)
    y_plain, y_drop = plain(x, g), dropped(x, g)
    np.testing.assert_array_equal(plain.attention_weights()[1], dropped.attention_weights()[1])  # same scores
    assert not np.allclose(y_plain, y_drop)
    dropped.eval()
    np.testing.assert_allclose(dropped(x, g), y_plain, rtol=1e-12)  # the identity in evaluation mode
