"""Mechanism backward passes beyond the contract's finite differences: the golden sdpa_grad cases through flash
attention, flash against scaled dot-product with masks, biases and temperature, multi-head against
``torch.nn.MultiheadAttention``'s autograd (float64 and float32), local+global's zero gradients outside the kept
keys, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from ruvattn import (
    FlashAttention,
    InvalidConfig,
    LocalGlobalAttention,
    MultiHeadAttention,
    NumericalInstability,
    ScaledDotProductAttention,
    Unsupported,
)
from tests.golden_harness import assert_close, cases, load

GRAD = cases(("sdpa_grad_",))


@pytest.mark.parametrize("path", GRAD, ids=[p.stem for p in GRAD])
@pytest.mark.parametrize("block", [1, 16, 64])
def test_flash_backward_golden(path, block):
    case = load(path)
    i = case["inputs"]
    q, k, v, up = i["q"], i["k"], i["v"], i["upstream"]
    grads = FlashAttention(q.shape[-1], block_size=block).backward(q, k, v, up)
    assert_close(case, "grad_q", grads.query)
    assert_close(case, "grad_k", grads.keys)
    assert_close(case, "grad_v", grads.values)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flash_backward_equals_sdpa_backward_with_mask_bias_temperature(dtype):
    rng = np.random.default_rng(0)
    m, n, d = 6, 301, 8
    q, k = rng.standard_normal((m, d)).astype(dtype), rng.standard_normal((n, d)).astype(dtype)
    v, g = rng.standard_normal((n, 3)).astype(dtype), rng.standard_normal((m, 3)).astype(dtype)
    mask, bias = rng.random((m, n)) > 0.3, rng.standard_normal(n).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for kw in ({}, {"mask": mask}, {"bias": bias}, {"mask": mask[0], "bias": np.tile(bias, (m, 1))}):
        a = FlashAttention(d, block_size=32, temperature=0.7).backward(q, k, v, g, **kw)
        b = ScaledDotProductAttention(d, temperature=0.7).backward(q, k, v, g, **kw)
        for x, y in zip(a[:3], b[:3], strict=True):
            assert x.dtype == dtype
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol)
    removed = ~mask[0]  # the last call's shared mask: the keys it removes get no gradient
    assert removed.sum() > 50 and not a.keys[removed].any() and not a.values[removed].any()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-11), (np.float32, 1e-5)])
@pytest.mark.parametrize("batch", [False, True])
def test_multi_head_backward_equals_torch_autograd(dtype, tol, batch):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    m, n, d, h = 4, 9, 16, 4
    x = rng.standard_normal((m, d)).astype(dtype)
    k, v = rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((n, d)).astype(dtype)
    g = rng.standard_normal((m, d)).astype(dtype)
    mha = MultiHeadAttention(d, num_heads=h, seed=2).eval()
    sd = mha.state_dict()
    sd["in_proj_bias"] = rng.standard_normal(3 * d)
    sd["out_proj.bias"] = rng.standard_normal(d)
    mha.load_state_dict(sd)
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True)
    ref = ref.double() if dtype == np.float64 else ref.float()
    ref.load_state_dict({name: torch.from_numpy(np.asarray(a, dtype)) for name, a in sd.items()})
    tx, tk, tv = (torch.from_numpy(a)[None].requires_grad_() for a in (x, k, v))
    out, _ = ref(tx, tk, tv)
    if batch:
        (out[0] * torch.from_numpy(g)).sum().backward()
        grads = mha.backward(x, k, v, g)
        want_q = tx.grad[0].numpy()
    else:
        (out[0, 0] * torch.from_numpy(g[0])).sum().backward()
        grads = mha.backward(x[0], k, v, g[0])
        want_q = tx.grad[0, 0].numpy()
    np.testing.assert_allclose(grads.query, want_q, rtol=tol, atol=tol)
    np.testing.assert_allclose(grads.keys, tk.grad[0].numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads.values, tv.grad[0].numpy(), rtol=tol, atol=tol)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(grads.params[name], p.grad.numpy(), rtol=tol, atol=tol, err_msg=name)


def test_local_global_gradients_vanish_outside_the_kept_keys():
    rng = np.random.default_rng(3)
    n, d = 200, 6
    attn = LocalGlobalAttention(d, local_window=8, global_nodes=3)
    q, k, v = rng.standard_normal(d), rng.standard_normal((n, d)), rng.standard_normal((n, 4))
    g = rng.standard_normal(4)
    grads = attn.backward(q, k, v, g, position=50)
    kept = attn.attention_mask(n, position=50)
    assert not grads.keys[~kept].any() and not grads.values[~kept].any()
    assert grads.keys[kept].any() and grads.values[kept].any()
    # equal to scaled dot-product attention's backward with the same keep-mask
    want = ScaledDotProductAttention(d).backward(q, k, v, g, mask=kept)
    for a, b in zip(grads[:3], want[:3], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    batch = attn.backward(np.vstack([q, q]), k, v, np.vstack([g, g]), positions=np.array([50, 120]))
    other = attn.backward(q, k, v, g, position=120)
    np.testing.assert_allclose(batch.keys, grads.keys + other.keys, rtol=1e-12, atol=1e-14)


def test_backward_refusals():
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal(8), rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    mha = MultiHeadAttention(8, num_heads=2)
    with pytest.raises(Unsupported, match="projected beforehand"):
        mha.backward(q, mha.project(k, v), None, np.ones(8))
    with pytest.raises(InvalidConfig, match="values are required"):
        mha.backward(q, k, None, np.ones(8))
    with pytest.raises(Unsupported, match="dropout"):
        MultiHeadAttention(8, num_heads=2, dropout=0.5).train().backward(q, k, v, np.ones(8))
    with pytest.raises(InvalidConfig, match="positions"):
        LocalGlobalAttention(8).backward(np.vstack([q, q]), k, v, np.ones((2, 8)), positions=[0.5, 1])


def _fd(loss, arr, grad, picks=10, eps=1e-6, rtol=1e-6):
    rng = np.random.default_rng(9)
    flat, g = arr.reshape(-1), grad.reshape(-1)
    for idx in rng.choice(flat.size, min(picks, flat.size), replace=False):
        old = flat[idx]
        flat[idx] = old + eps
        plus = loss()
        flat[idx] = old - eps
        minus = loss()
        flat[idx] = old
        fd = (plus - minus) / (2 * eps)
        assert abs(fd - g[idx]) <= rtol * max(1.0, abs(fd)), (idx, fd, g[idx])


@pytest.mark.parametrize("feature_map", ["elu", "favor"])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("magnitude", [1.0, 6.0])
def test_linear_backward_matches_finite_differences(feature_map, batch, magnitude):
    from ruvattn import LinearAttention

    rng = np.random.default_rng(10)
    d, n = 6, 40
    attn = LinearAttention(d, feature_map=feature_map, num_features=24, seed=1)
    q = magnitude * rng.standard_normal((3, d) if batch else d)
    k, v = magnitude * rng.standard_normal((n, d)), rng.standard_normal((n, 4))
    mask = rng.random(n) > 0.3
    up = rng.standard_normal((3, 4) if batch else 4)
    fwd = attn.forward_batch if batch else attn.forward
    grads = attn.backward(q, k, v, up, mask=mask)
    assert grads.params == {} and not grads.keys[~mask].any() and not grads.values[~mask].any()

    def loss():
        return float(np.sum(fwd(q, k, v, mask=mask) * up))

    for arr, grad in ((q, grads.query), (k, grads.keys), (v, grads.values)):
        _fd(loss, arr, grad)


def test_linear_backward_refusals():
    from ruvattn import LinearAttention

    attn = LinearAttention(4, feature_map="favor", seed=0)
    k = np.ones((3, 4))
    with pytest.raises(Unsupported, match="LinearSummary"):
        attn.backward(np.ones(4), attn.summarize(k, k), None, np.ones(4))
    with pytest.raises(Unsupported, match="per-query mask"):
        attn.backward(np.ones((2, 4)), k, k, np.ones((2, 4)), mask=np.ones((2, 3), bool))


def _gat_mechanism(kind, concat, edge_dim, share_weights=False, seed=0):
    from ruvattn import GATConv, GATv2Conv

    rng = np.random.default_rng(seed)
    kw = {"heads": 2, "concat": concat, "edge_dim": edge_dim}
    layer = GATConv(5, 3, **kw) if kind == "gat" else GATv2Conv(5, 3, share_weights=share_weights, **kw)
    sd = {name: a + 0.1 * rng.standard_normal(a.shape) for name, a in layer.state_dict().items()}
    if share_weights:  # lin_r is lin_l: one array under both names
        sd.update({name: sd[name.replace("lin_r", "lin_l")] for name in sd if name.startswith("lin_r")})
    layer.load_state_dict(sd)
    return layer.eval()


@pytest.mark.parametrize("kind", ["gat", "gatv2"])
@pytest.mark.parametrize("concat", [True, False])
def test_gat_mechanism_backward_equals_pyg_autograd_on_a_star(kind, concat):
    torch = pytest.importorskip("torch")
    pyg = pytest.importorskip("torch_geometric.nn")
    rng = np.random.default_rng(11)
    n = 6
    layer = _gat_mechanism(kind, concat, edge_dim=2)
    q, k, ef = rng.standard_normal(5), rng.standard_normal((n, 5)), rng.standard_normal((n, 2))
    up = rng.standard_normal(layer.output_dim)
    grads = layer.backward(q, k, k, up, edge_features=ef)  # messages from the keys themselves, as PyG's x
    cls = pyg.GATConv if kind == "gat" else pyg.GATv2Conv
    ref = cls(5, 3, heads=2, concat=concat, edge_dim=2, add_self_loops=False).double()
    ref.load_state_dict({name: torch.from_numpy(np.asarray(a)) for name, a in layer.state_dict().items()})
    x = torch.from_numpy(np.vstack([q, k])).requires_grad_()
    e = torch.from_numpy(ef).requires_grad_()
    edge_index = torch.from_numpy(np.stack([np.arange(1, n + 1), np.zeros(n, np.int64)]))  # neighbours -> node 0
    out = ref(x, edge_index, e)
    (out[0] * torch.from_numpy(up)).sum().backward()
    np.testing.assert_allclose(grads.query, x.grad[0].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads.keys + grads.values, x.grad[1:].numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads.edge_features, e.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(grads.params[name], p.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind, share", [("gat", False), ("gatv2", False), ("gatv2", True)])
def test_gat_mechanism_backward_finite_differences_batch_edges(kind, share):
    rng = np.random.default_rng(12)
    layer = _gat_mechanism(kind, True, edge_dim=3, share_weights=share)
    qs, k, v = rng.standard_normal((3, 5)), rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    ef = rng.standard_normal((7, 3))
    up = rng.standard_normal((3, layer.output_dim))
    grads = layer.backward(qs, k, v, up, edge_features=ef)

    def loss():
        return float(np.sum(layer.forward_batch(qs, k, v, edge_features=ef) * up))

    for arr, grad in ((qs, grads.query), (k, grads.keys), (v, grads.values), (ef, grads.edge_features)):
        _fd(loss, arr, grad)
    state = layer.state_dict()
    if share:
        state.update({name: state[name.replace("lin_r", "lin_l")] for name in state if name.startswith("lin_r")})
    for name in state:
        if share and name.startswith("lin_r"):
            continue  # an alias of lin_l: the same array

        def loss_p(name=name):
            layer.load_state_dict(state)
            return loss()

        _fd(loss_p, state[name], grads.params[name])


@pytest.mark.parametrize("curvature, temperature", [(-1.0, 1.0), (-0.5, 0.5), (-2.0, 2.0)])
def test_hyperbolic_backward_equals_geoopt_autograd(curvature, temperature):
    torch = pytest.importorskip("torch")
    geoopt = pytest.importorskip("geoopt")
    from ruvattn import HyperbolicAttention

    rng = np.random.default_rng(13)
    c = -curvature
    attn = HyperbolicAttention(6, curvature=curvature, temperature=temperature)
    ball = geoopt.PoincareBall(c=torch.tensor(c, dtype=torch.float64))  # a float64 curvature (its default: float32)

    def point(*shape):  # points well inside the ball (radius < 0.6 / sqrt(c))
        x = rng.standard_normal(shape)
        return 0.6 * x / np.linalg.norm(x, axis=-1, keepdims=True) * rng.random((*shape[:-1], 1)) / np.sqrt(c)

    q, k, v = point(3, 6), point(9, 6), point(9, 4)
    mask = rng.random((3, 9)) > 0.3
    mask[:, 0] = True
    up = rng.standard_normal((3, 4))
    grads = attn.backward(q, k, v, up, mask=mask)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    d = ball.dist(tq[:, None, :], tk[None, :, :])
    scores = (-d / temperature).masked_fill(~torch.from_numpy(mask), float("-inf"))
    w = torch.softmax(scores, dim=1)
    out = ball.expmap0(w @ ball.logmap0(tv))
    np.testing.assert_allclose(out.detach().numpy(), attn.forward_batch(q, k, v, mask=mask), rtol=1e-10, atol=1e-12)
    (out * torch.from_numpy(up)).sum().backward()
    for got, want in ((grads.query, tq.grad), (grads.keys, tk.grad), (grads.values, tv.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-8, atol=1e-10)


def test_hyperbolic_backward_variants_without_gradients_say_so():
    from ruvattn import HyperbolicAttention

    q, k = np.full(4, 0.1), np.full((3, 4), 0.2)
    for kw in ({"aggregation": "midpoint"}, {"projections": True}):
        with pytest.raises(Unsupported, match="aggregation='tangent' without projections"):
            HyperbolicAttention(4, **kw).backward(q, k, k, np.ones(4))


@pytest.mark.parametrize("manifold, curvature", [("euclidean", None), ("sphere", 0.7), ("poincare", -1.5),
                                                 ("lorentz", -1.0)])  # fmt: skip
def test_manifold_backward_matches_directional_derivatives_on_the_manifold(manifold, curvature):
    """Along the manifold (a coordinate step, then ``proj`` back onto it): what the gradient must get right
    everywhere; on the hyperboloid the normal component is left out on purpose."""
    from ruvattn import ManifoldAttention

    rng = np.random.default_rng(14)
    attn = ManifoldAttention(5, manifold, curvature=curvature, temperature=0.8)
    space = attn._space
    q, k, v = (attn.embed(rng.standard_normal(shape)) for shape in ((3, 5), (8, 5), (8, 5)))
    up = rng.standard_normal(attn.forward_batch(q, k, v).shape)
    grads = attn.backward(q, k, v, up)

    def loss():
        return float(np.sum(attn.forward_batch(q, k, v) * up))

    eps = 1e-6
    for arr, grad in ((q, grads.query), (k, grads.keys), (v, grads.values)):
        for i, j in [(0, 1), (1, 2), (2, 3)]:
            base = arr[i].copy()
            step = np.zeros_like(base)
            step[j] = eps
            plus, minus = space.proj(base + step), space.proj(base - step)
            arr[i] = plus
            lp = loss()
            arr[i] = minus
            lm = loss()
            arr[i] = base
            fd = (lp - lm) / (2 * eps)
            want = grad[i] @ (plus - minus) / (2 * eps)
            assert abs(fd - want) <= 1e-6 * max(1.0, abs(fd)), (manifold, i, j, fd, want)


def test_mixed_curvature_component_weight_gradient_equals_its_own_method():
    from ruvattn import MixedCurvatureAttention

    rng = np.random.default_rng(15)
    attn = MixedCurvatureAttention(6, components=[("euclidean", 2), ("poincare", 2, -1.0), ("sphere", 2, 1.0)])
    x = attn.embed(rng.standard_normal((9, 6)))
    up = rng.standard_normal(6)
    grads = attn.backward(x[0], x, x, up)
    np.testing.assert_allclose(grads.params["component_weights"], attn.component_weights_grad(x[0], x, x, up),
                               rtol=1e-12, atol=1e-14)  # fmt: skip


def test_every_registered_mechanism_has_a_backward():
    from ruvattn import available
    from ruvattn.mechanisms.base import mechanism_class

    assert [kind for kind in available() if not mechanism_class(kind).supports_backward] == []


def test_dynamic_heads_backward_leaves_pruned_heads_alone():
    from ruvattn import DynamicHeadAttention

    rng = np.random.default_rng(16)
    attn = DynamicHeadAttention(8, num_heads=4, seed=0).eval()
    q, k, v = rng.standard_normal(8), rng.standard_normal((6, 8)), rng.standard_normal((6, 8))
    grads = attn.backward(q, k, v, rng.standard_normal(8), heads=[1, 3])
    w = grads.params["in_proj_weight"].reshape(3, 4, 2, 8)  # (q/k/v, head, rows of the head, d)
    assert not w[:, [0, 2]].any() and w[:, [1, 3]].any()
    assert not grads.params["out_proj.weight"].reshape(8, 4, 2)[:, [0, 2]].any()
    assert "head_importance" not in grads.params
    with pytest.raises(Unsupported, match="every head active"):
        attn.backward(q, k, v, np.ones(8), heads=[1], mask=np.ones(6, bool))


def test_moe_backward_routes_like_the_forward_and_refuses_what_it_cannot_do():
    from ruvattn import HyperbolicAttention, MoEAttention, ScaledDotProductAttention

    rng = np.random.default_rng(17)
    moe = MoEAttention(6, experts=[ScaledDotProductAttention(6), ScaledDotProductAttention(6, temperature=0.3)],
                       top_k=1, capacity_factor=0.5, seed=1)  # fmt: skip
    qs, k, v = rng.standard_normal((8, 6)), rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    up = rng.standard_normal((8, 6))
    grads = moe.backward(qs, k, v, up)
    routing = moe.route(qs)
    dropped = routing.dropped
    assert dropped.any()  # capacity 0.5: some queries get no expert
    # a dropped query's output is zeros whatever it is: its only gradient is through the router's balance (none here)
    np.testing.assert_array_equal(grads.query[dropped], 0)

    def loss():
        return float(np.sum(moe.forward_batch(qs, k, v) * up))

    for arr, grad in ((qs, grads.query), (k, grads.keys), (v, grads.values)):
        _fd(loss, arr, grad)
    bad = MoEAttention(4, experts=[HyperbolicAttention(4, aggregation="midpoint")] * 2, top_k=2)
    with pytest.raises(Unsupported, match=r"expert 0 \(hyperbolic\) has no backward"):
        bad.backward(np.full(4, 0.1), np.full((3, 4), 0.1), np.full((3, 4), 0.1), np.ones(4))


@pytest.mark.parametrize("kind", ["gat", "gatv2"])
def test_gat_backward_without_neighbours_is_the_bias_gradient(kind):
    """Found by the reliability sweep: an empty neighbour set gave an untyped reshape error."""
    layer = _gat_mechanism(kind, True, edge_dim=2)
    up = np.arange(layer.output_dim, dtype=float)
    grads = layer.backward(np.ones(5), np.empty((0, 5)), np.empty((0, 5)), up, edge_features=np.empty((0, 2)))
    assert grads.keys.shape == (0, 5) and not grads.query.any()
    np.testing.assert_array_equal(grads.params["bias"], up)  # the output is the bias
    assert all(not a.any() for name, a in grads.params.items() if name != "bias")


def test_local_global_backward_checks_positions_as_its_forward_does():
    """Found by the reliability sweep: a string position and a 2-D positions array were accepted."""
    attn = LocalGlobalAttention(4)
    k = np.ones((3, 4))
    with pytest.raises(InvalidConfig, match="position"):
        attn.backward(np.ones(4), k, k, np.ones(4), position="0")
    with pytest.raises(InvalidConfig, match="for a batch"):
        attn.backward(np.ones(4), k, k, np.ones(4), positions=np.zeros(1, int))
    with pytest.raises(InvalidConfig, match="positions"):
        attn.backward(np.ones((2, 4)), k, k, np.ones((2, 4)), positions=np.zeros((2, 1), int))
    with pytest.raises(InvalidConfig, match="a batch of queries takes 'positions'"):
        attn.backward(np.ones((1, 4)), k, k, np.ones((1, 4)), position=0, positions=np.zeros(1, int))


def test_mixed_curvature_overflowed_weight_gradient_is_typed() -> None:
    """The reliability sweep's replay(3, 0, 17156): values of 1e300 overflow dL/dβ; NumericalInstability, not inf."""
    from ruvattn.lab.sweep import replay

    op = replay(3, 0, 17156)
    assert op.kind == "mixed_curvature" and op.op == "backward"
    with pytest.raises(NumericalInstability):
        op.call()
