"""The trainable dual-space model: GRAND's propagation, the dual-space GAT layer, stacked stochastic passes with
the consistency loss.  References: dense numpy formulas, PyG's ``gcn_norm``, torch autograd, finite differences,
exact kNN."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ruvattn import DimensionMismatch, InvalidConfig, nn, optim
from ruvattn.datasets.synthetic import exact_knn
from ruvattn.graph.hnsw import faiss_available
from ruvattn.losses import consistency
from ruvattn.nn.dual import latent_knn
from ruvattn.nn.train import fit
from tests.test_nn import _check_fd, _edges
from tests.test_train import _two_communities


def _sym_graph(rng, n=18, e=40):
    src, dst, n = _edges(rng, n=n, e=e)
    return nn.Graph.from_edges(np.concatenate([src, dst]), np.concatenate([dst, src]), n)


def _dense_ahat(g: nn.Graph) -> np.ndarray:
    a = np.zeros((g.num_nodes, g.num_nodes))
    for s, d in zip(g.src, g.dst, strict=True):
        if s != d:
            a[d, s] += 1.0
    a += np.eye(g.num_nodes)
    inv = 1 / np.sqrt(a.sum(1))
    return inv[:, None] * a * inv[None, :]


# -- Graph.repeat and Graph.propagation ------------------------------------------------------------------------


def test_propagation_matrix_is_gcn_normalisation():
    rng = np.random.default_rng(0)
    src, dst, n = _edges(rng, n=20, e=60)  # directed, with duplicates and loops
    g = nn.Graph.from_edges(src, dst, n)
    a, at = g.propagation(np.float64)
    np.testing.assert_allclose(a.toarray(), _dense_ahat(g), atol=1e-15)
    np.testing.assert_array_equal(at.toarray(), a.toarray().T)


def test_propagation_matrix_equals_pyg_gcn_norm():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch_geometric")
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    rng = np.random.default_rng(1)
    g = _sym_graph(rng)
    keep = g.src != g.dst
    ei = torch.tensor(np.stack([g.src[keep], g.dst[keep]]))
    ei, w = gcn_norm(ei, None, g.num_nodes, add_self_loops=True, dtype=torch.float64)
    ref = np.zeros((g.num_nodes, g.num_nodes))
    np.add.at(ref, (ei[1].numpy(), ei[0].numpy()), w.numpy())  # row = target, as PyG aggregates at edge_index[1]
    np.testing.assert_allclose(g.propagation(np.float64)[0].toarray(), ref, atol=1e-14)


def test_repeat_is_block_diagonal_and_cached():
    rng = np.random.default_rng(2)
    g = _sym_graph(rng, n=7, e=12)
    r = g.repeat(3)
    assert r is g.repeat(3) and g.repeat(1) is g
    assert (r.num_nodes, r.copies, r.base_nodes, r.num_edges) == (21, 3, 7, 3 * g.num_edges)
    np.testing.assert_allclose(
        r.propagation(np.float64)[0].toarray(), np.kron(np.eye(3), g.propagation(np.float64)[0].toarray())
    )
    assert r.repeat(2).copies == 6
    with pytest.raises(InvalidConfig, match="copies"):
        g.repeat(0)


# -- Propagation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [0, 1, 5])
def test_propagation_forward_is_the_mean_of_powers(order):
    rng = np.random.default_rng(3)
    g = _sym_graph(rng)
    x = rng.standard_normal((g.num_nodes, 4))
    layer = nn.Propagation(order, dropnode=0.5, seed=0).eval()
    ah = _dense_ahat(g)
    want = sum(np.linalg.matrix_power(ah, k) @ x for k in range(order + 1)) / (order + 1)
    np.testing.assert_allclose(layer(x, g), want, atol=1e-12)


def test_propagation_dropnode_drops_whole_rows_and_keeps_the_mean():
    rng = np.random.default_rng(4)
    g = _sym_graph(rng, n=30, e=70)
    x = rng.standard_normal((30, 3))
    layer = nn.Propagation(0, dropnode=0.4, seed=1)  # order 0: the output is the masked input
    y = layer(x, g)
    zero = np.all(y == 0, axis=1)
    np.testing.assert_allclose(y[~zero], x[~zero] / 0.6)  # kept rows scaled by 1 / (1 - p)
    draws = np.mean([np.all(layer(x, g) == 0, axis=1).mean() for _ in range(400)])
    assert abs(draws - 0.4) < 0.02
    mean = np.mean([nn.Propagation(3, 0.4, seed=s)(x, g) for s in range(3000)], axis=0)
    np.testing.assert_allclose(mean, nn.Propagation(3, 0.4).eval()(x, g), atol=0.06)


def test_propagation_gradients_match_finite_differences_on_a_directed_graph():
    rng = np.random.default_rng(5)
    src, dst, n = _edges(rng, n=15, e=40)  # directed: the backward must use the transpose
    model = nn.Sequential(nn.Linear(4, 3, seed=0, dtype=np.float64), nn.Propagation(4, 0.3, seed=2))
    _check_fd(model, rng.standard_normal((n, 4)), nn.Graph.from_edges(src, dst, n))


def test_propagation_refuses_what_it_cannot_propagate():
    g = nn.Graph.from_edges([0], [1], 2)
    with pytest.raises(InvalidConfig, match="dense"):
        nn.Propagation()(sp.csr_matrix(np.ones((2, 2))), g)
    with pytest.raises(DimensionMismatch, match="rows"):
        nn.Propagation()(np.ones((3, 2)), g)
    with pytest.raises(InvalidConfig, match="dropnode"):
        nn.Propagation(dropnode=1.0)
    with pytest.raises(InvalidConfig, match="order"):
        nn.Propagation(order=-1)


def test_grand_model_in_evaluation_is_grands_formula_with_the_bias_after_the_propagation():
    rng = np.random.default_rng(6)
    g = _sym_graph(rng, n=18, e=40)
    x = sp.random(18, 12, density=0.3, format="csr", random_state=1)
    model = nn.grand_model(12, 3, hidden=5, order=3, seed=0, dtype=np.float64)
    for p in model.parameters():
        p.data += rng.standard_normal(p.data.shape)  # non-zero biases
    params = {name: p.data for name, p in model.named_parameters()}
    (w1,) = [v for k, v in params.items() if v.shape == (12, 5)]
    (b1,) = [v for k, v in params.items() if v.shape == (5,)]
    w2, b2 = [v for k, v in params.items() if v.shape in ((5, 3), (3,))]
    a = _dense_ahat(g)
    prop = sum(np.linalg.matrix_power(a, k) for k in range(4)) / 4
    want = np.maximum(prop @ x.toarray() @ w1 + b1, 0) @ w2 + b2  # GRAND: MLP(mean_k Â^k X), bias after propagation
    np.testing.assert_allclose(model.eval()(x, g), want, rtol=1e-10, atol=1e-12)
    dual = nn.dual_space_model(12, 3, hidden=5, order=3, seed=0, dtype=np.float64)
    assert [type(m) for m in dual.layers[:-1]] == [type(m) for m in model.layers[:-1]]
    assert dual.layers[1].init == "gcn" and np.abs(dual.layers[1].weight.data).max() <= 1 / np.sqrt(5)
    assert (model.layers[3].p, dual.layers[3].p) == (0.0, 0.3)  # dropout on the propagated features: dual only


# -- DualSpaceLayer ------------------------------------------------------------------------------------------------


def _torch_dual(layer: nn.DualSpaceLayer, x, g: nn.Graph, latent, torch):
    """The layer's evaluation-mode forward written with torch ops (autograd gives the reference gradients)."""
    p = {name: torch.tensor(np.array(v.data), requires_grad=True) for name, v in layer.named_parameters()}
    xt = torch.tensor(x, requires_grad=True)
    n, heads, c = x.shape[0], layer.heads, layer.out_channels
    h = (xt @ p["weight"]).reshape(n, heads, c)

    def branch(src, dst, a_s, a_d, query=None):
        keep = src != dst
        loops = np.arange(n)
        s = torch.tensor(np.concatenate([src[keep], loops]))
        d = torch.tensor(np.concatenate([dst[keep], loops]))
        q = h if query is None else query
        e = torch.nn.functional.leaky_relu((h * a_s).sum(-1)[s] + (q * a_d).sum(-1)[d], layer.negative_slope)
        mx = torch.full((n, heads), -torch.inf, dtype=e.dtype).scatter_reduce(
            0, d[:, None].expand(-1, heads), e, "amax"
        )
        w = torch.exp(e - mx[d])
        w = w / torch.zeros(n, heads, dtype=e.dtype).index_add(0, d, w)[d]
        out = torch.zeros(n, heads, c, dtype=e.dtype).index_add(0, d, w[:, :, None] * h[s])
        return out, out.reshape(n, -1) if layer.concat else out.mean(1)

    graph_heads, og = branch(g.src, g.dst, p["att_src"], p["att_dst"])
    k = latent.shape[1]
    lsrc, ldst = latent.ravel(), np.repeat(np.arange(n), k)
    outs = [og, branch(lsrc, ldst, p["latent_att_src"], p["latent_att_dst"])[1]]
    if layer.cross:  # the graph branch's per-head output is the query over the latent neighbours
        outs.append(branch(lsrc, ldst, p["cross_att_src"], p["cross_att_dst"], graph_heads)[1])
    own = h.reshape(n, -1) if layer.concat else h.mean(1)
    if layer.self_path:
        outs.append(own)
    score = torch.stack([o @ u for o, u in zip(outs, p["gate_weight"], strict=True)], 1) + p["gate_bias"]
    gamma = torch.softmax(score, 1)
    return sum(gamma[:, b, None] * o for b, o in enumerate(outs)) + p["bias"] + (own if layer.residual else 0), p, xt


@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize(("self_path", "residual"), [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("cross", [False, True])
def test_dual_layer_forward_and_gradients_equal_torch_autograd(concat, self_path, residual, cross):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    g = _sym_graph(rng, n=16, e=30)
    x = rng.standard_normal((16, 5))
    latent = np.stack([rng.choice(np.delete(np.arange(16), i), 3, replace=False) for i in range(16)])
    layer = nn.DualSpaceLayer(5, 3, heads=2, concat=concat, k=3, refresh=0, cross=cross, self_path=self_path,
                              residual=residual, seed=1, dtype=np.float64).eval()  # fmt: skip
    for p in layer.parameters():  # non-zero gate and bias: every term of the backward is exercised
        p.data += 0.3 * rng.standard_normal(p.data.shape)
    layer.set_latent(latent)
    y = layer(x, g)
    ref, params, xt = _torch_dual(layer, x, g, latent, torch)
    np.testing.assert_allclose(y, ref.detach().numpy(), atol=1e-12)
    up = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(up)
    (ref * torch.tensor(up)).sum().backward()
    for name, par in layer.named_parameters():
        np.testing.assert_allclose(par.grad, params[name].grad.numpy(), atol=1e-11, err_msg=name)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-11)
    gate = layer.gate()
    assert gate.shape == (16, 2 + cross + self_path) and 0 < gate.min() and gate.max() < 1
    np.testing.assert_allclose(gate.sum(1), 1, rtol=1e-12)


def test_dual_layer_gradients_match_finite_differences_with_dropout():
    rng = np.random.default_rng(7)
    g = _sym_graph(rng, n=14, e=30)
    layer = nn.DualSpaceLayer(4, 3, heads=2, k=2, dropout=0.3, refresh=0, cross=True, self_path=True, seed=2,
                              dtype=np.float64)  # fmt: skip
    for p in layer.parameters():
        p.data += 0.2 * rng.standard_normal(p.data.shape)
    layer.set_latent(exact_knn(rng.standard_normal((14, 3)), 2))
    _check_fd(layer, rng.standard_normal((14, 4)), g)


def test_cross_weights_are_a_softmax_over_the_latent_slots_with_the_graph_summary_as_query():
    rng = np.random.default_rng(12)
    g = _sym_graph(rng, n=15, e=30)
    layer = nn.DualSpaceLayer(4, 3, heads=2, concat=True, k=3, refresh=0, cross=True, seed=3, dtype=np.float64).eval()
    latent = exact_knn(rng.standard_normal((15, 3)), 3)
    layer.set_latent(latent)
    x = rng.standard_normal((15, 4))
    layer(x, g)
    h = (x @ layer.weight.data).reshape(15, 2, 3)
    gslots, galpha = layer.attention_weights("graph")  # the graph summary, per head, from its own weights
    query = np.zeros_like(h)
    np.add.at(query, np.repeat(np.arange(15), np.diff(gslots.indptr)), galpha[:, :, None] * h[gslots.src])
    slots, alpha = layer.attention_weights("cross")
    for i in range(15):
        nb = slots.src[slots.indptr[i] : slots.indptr[i + 1]]
        assert sorted(nb) == sorted([*latent[i], i])
        e = (h[nb] * layer.cross_att_src.data).sum(-1) + (query[i] * layer.cross_att_dst.data).sum(-1)
        e = np.where(e > 0, e, layer.negative_slope * e)
        w = np.exp(e - e.max(0))
        np.testing.assert_allclose(alpha[slots.indptr[i] : slots.indptr[i + 1]], w / w.sum(0), rtol=1e-12)
    with pytest.raises(InvalidConfig, match="'graph', 'latent'; got 'cross'"):
        nn.DualSpaceLayer(4, 3, k=3, refresh=0).attention_weights("cross")


def test_latent_neighbours_follow_the_embedding_every_refresh_training_steps():
    rng = np.random.default_rng(8)
    g = _sym_graph(rng, n=40, e=60)
    layer = nn.DualSpaceLayer(6, 2, k=4, refresh=3, index="knn", seed=0)
    x1, x2, x3 = (rng.standard_normal((40, 6)).astype(np.float32) for _ in range(3))
    layer(x1, g)  # training mode, no neighbours yet: provisional ones from this input
    np.testing.assert_array_equal(layer.latent_neighbours(), exact_knn(x1, 4))
    layer.eval()(x2, g)  # the first evaluation replaces them with the evaluation input's
    np.testing.assert_array_equal(layer.latent_neighbours(), exact_knn(x2, 4))
    layer.train()(x1, g), layer(x1, g)  # 2 training forwards since that build: not due yet
    layer.eval()(x3, g)
    np.testing.assert_array_equal(layer.latent_neighbours(), exact_knn(x2, 4))
    layer.train()(x1, g)
    layer(x1, g)  # training forwards never rebuild, even when due
    np.testing.assert_array_equal(layer.latent_neighbours(), exact_knn(x2, 4))
    layer.eval()(x3, g)  # 4 >= 3 training forwards since the build: rebuilt from this evaluation's input
    np.testing.assert_array_equal(layer.latent_neighbours(), exact_knn(x3, 4))
    layer(x1, g)  # evaluations alone never make it due again
    np.testing.assert_array_equal(layer.latent_neighbours(), exact_knn(x3, 4))
    assert layer.rebuilds == 3
    # the latent branch attends over exactly the latent neighbours and the node itself
    slots, alpha = layer.attention_weights("latent")
    for i in range(40):
        assert sorted(slots.src[slots.indptr[i] : slots.indptr[i + 1]]) == sorted([*exact_knn(x3, 4)[i], i])
    np.testing.assert_allclose(np.add.reduceat(alpha[:, 0], slots.indptr[:-1]), 1, rtol=1e-6)


def test_state_dict_keeps_the_latent_neighbours_of_the_kept_epoch():
    rng = np.random.default_rng(11)
    g = _sym_graph(rng, n=30, e=50)
    x1, x2 = rng.standard_normal((30, 5)).astype(np.float32), rng.standard_normal((30, 5)).astype(np.float32)
    model = nn.Sequential(nn.ReLU(), nn.DualSpaceLayer(5, 3, k=3, refresh=1, index="knn", seed=0))
    model.eval()(x1, g)
    state, before = model.state_dict(), model(x1, g)
    np.testing.assert_array_equal(state["1.latent_neighbours"], exact_knn(np.maximum(x1, 0), 3))
    model.train()(x2, g)
    model.eval()(x2, g)  # due: rebuilt from x2
    assert not np.array_equal(model.layers[1].latent_neighbours(), state["1.latent_neighbours"])
    model.load_state_dict(state)
    np.testing.assert_array_equal(model(x1, g), before)  # the same neighbours, no rebuild on restore
    fresh = nn.Sequential(nn.ReLU(), nn.DualSpaceLayer(5, 3, k=3, index="knn", seed=1))
    assert fresh.state_dict()["1.latent_neighbours"].shape == (0, 3)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.eval()(x1, g), before)
    with pytest.raises(DimensionMismatch, match="missing"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "1.latent_neighbours"})


@pytest.mark.skipif(not faiss_available(), reason="needs the hnsw extra (faiss-cpu)")
def test_hnsw_latent_neighbours_are_nearly_exact():
    rng = np.random.default_rng(9)
    centres = rng.standard_normal((20, 16))
    z = (centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 16))).astype(np.float32)
    got, want = latent_knn(z, 10, "hnsw"), exact_knn(z, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert overlap > 0.95
    assert not (got == np.arange(2000)[:, None]).any() and (got >= 0).all()


@pytest.mark.parametrize(
    "index", ["knn", pytest.param("hnsw", marks=pytest.mark.skipif(not faiss_available(), reason="needs faiss"))]
)
def test_latent_neighbours_can_be_restricted_to_candidates(index):
    rng = np.random.default_rng(12)
    z = rng.standard_normal((300, 8)).astype(np.float32)
    cand = np.sort(rng.choice(300, 200, replace=False))
    got = latent_knn(z, 6, index, candidates=cand)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = unit @ unit[cand].T
    sim[np.arange(300)[:, None] == cand[None, :]] = -np.inf
    want = cand[np.argsort(-sim, axis=1, kind="stable")[:, :6]]
    assert np.isin(got, cand).all() and not (got == np.arange(300)[:, None]).any()
    overlap = np.mean([len(set(a) & set(b)) / 6 for a, b in zip(got, want, strict=True)])
    assert overlap == 1.0 if index == "knn" else overlap > 0.95
    if index == "knn":
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InvalidConfig, match="candidates"):
        latent_knn(z, 6, index, candidates=[0, 1, 2])
    layer = nn.DualSpaceLayer(8, 2, k=6, index=index, seed=0)
    layer.latent_candidates = cand
    layer.eval()(z, _sym_graph(rng, n=300, e=400))
    assert np.isin(layer.latent_neighbours(), cand).all()


def test_stacked_copies_are_independent_passes_over_one_graph():
    rng = np.random.default_rng(10)
    g = _sym_graph(rng, n=20, e=40)
    x = rng.standard_normal((20, 5)).astype(np.float32)
    model = nn.Sequential(nn.Linear(5, 4, seed=0), nn.Propagation(3, 0.5, seed=1), nn.ReLU(),
                          nn.DualSpaceLayer(4, 3, k=3, index="knn", refresh=0, seed=2))  # fmt: skip
    model.eval()
    one = model(x, g)
    np.testing.assert_allclose(model(np.concatenate([x, x, x]), g.repeat(3)), np.concatenate([one] * 3), rtol=1e-6)
    model.train()  # in training each copy draws its own DropNode mask
    y = model(np.concatenate([x, x]), g.repeat(2))
    assert not np.allclose(y[:20], y[20:])


def test_dual_layer_refuses_bad_settings():
    with pytest.raises(InvalidConfig, match="index"):
        nn.DualSpaceLayer(3, 2, index="annoy")
    with pytest.raises(InvalidConfig, match="k must"):
        nn.DualSpaceLayer(3, 2, k=0)
    with pytest.raises(InvalidConfig, match="refresh"):
        nn.DualSpaceLayer(3, 2, refresh=-1)
    layer = nn.DualSpaceLayer(3, 2, k=5, index="knn")
    with pytest.raises(InvalidConfig, match="more than 4 nodes"):
        layer(np.ones((4, 3), np.float32), nn.Graph.from_edges([0], [1], 4))
    with pytest.raises(DimensionMismatch, match="neighbours"):
        layer.set_latent(np.ones(4, np.int64))
    with pytest.raises(InvalidConfig, match="branch"):
        layer.attention_weights("both")


# -- fit with stacked passes and the consistency loss ---------------------------------------------------------------


def test_fit_with_identical_passes_and_no_sharpening_is_plain_training(tmp_path):
    """Without randomness every pass is the same: their mean cross-entropy is the single pass's, and the consistency
    loss at temperature 1 is zero with zero gradient, so the trajectory equals ``samples=1``'s."""
    data = _two_communities(tmp_path)

    def run(samples, lam):
        model = nn.Sequential(nn.Linear(data.num_features, 8, seed=0, dtype=np.float64), nn.Propagation(2, 0.0),
                              nn.ReLU(), nn.Linear(8, data.num_classes, seed=1, dtype=np.float64))  # fmt: skip
        return fit(model, data, optim.Adam(model.parameters(), lr=0.02), epochs=15, patience=15, samples=samples,
                   consistency=lam, temperature=1.0)  # fmt: skip

    a, b = run(1, 0.0), run(3, 1.0)
    np.testing.assert_allclose([e.train_loss for e in b.history], [e.train_loss for e in a.history], rtol=1e-10)
    np.testing.assert_allclose([e.val_loss for e in b.history], [e.val_loss for e in a.history], rtol=1e-10)


def test_fit_step_gradient_is_mean_cross_entropy_plus_consistency(tmp_path):
    """One step of ``fit(samples=3, consistency=λ)`` with SGD moves the parameters by exactly -lr times the gradient
    of the documented loss, computed here from three separately seeded passes."""
    data = _two_communities(tmp_path, seed=3)
    lam, tau, lr = 0.7, 0.5, 0.1

    def make():
        return nn.Sequential(nn.Linear(data.num_features, 6, seed=0, dtype=np.float64),
                             nn.Propagation(2, 0.5, seed=np.random.default_rng(5)), nn.ReLU(),
                             nn.Linear(6, data.num_classes, seed=1, dtype=np.float64))  # fmt: skip

    model = make()
    before = [p.data.copy() for p in model.parameters()]
    fit(model, data, optim.SGD(model.parameters(), lr=lr), epochs=1, patience=1, samples=3, consistency=lam,
        temperature=tau)  # fmt: skip
    # the same masks: one forward over the stacked copies draws them in the same order
    ref = make()
    n = data.num_nodes
    g = nn.Graph.from_neighbours(data.graph).repeat(3)
    logits = ref(sp.vstack([data.x] * 3, format="csr"), g)
    passes = [logits[s * n : (s + 1) * n] for s in range(3)]
    ce = [nn.softmax_cross_entropy(z, data.labels, data.train)[1] / 3 for z in passes]
    _, dc = consistency(passes, tau)
    ref.zero_grad()
    ref.backward(np.concatenate([a + lam * b for a, b in zip(ce, dc, strict=True)]))
    for p0, p1, pr in zip(before, model.parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(p1.data, p0 - lr * pr.grad, atol=1e-12)


def test_fit_refuses_consistency_without_passes(tmp_path):
    data = _two_communities(tmp_path)
    model = nn.Sequential(nn.Linear(data.num_features, data.num_classes, seed=0))
    with pytest.raises(InvalidConfig, match="samples >= 2"):
        fit(model, data, optim.Adam(model.parameters()), samples=1, consistency=1.0)
    with pytest.raises(InvalidConfig, match="samples"):
        fit(model, data, optim.Adam(model.parameters()), samples=0)
    with pytest.raises(InvalidConfig, match="consistency"):
        fit(model, data, optim.Adam(model.parameters()), samples=2, consistency=float("nan"))
