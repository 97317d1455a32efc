"""Mixture-of-experts attention: the spec's builder, routing against a hand computation, batch routing,
validation, and learned routing beating uniform routing on a task where clusters want different experts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ruvattn import (
    HyperbolicAttention,
    InvalidConfig,
    LinearAttention,
    LocalGlobalAttention,
    ScaledDotProductAttention,
    build,
)
from ruvattn.mechanisms import GATConv
from ruvattn.mechanisms.moe import MoEAttention

D = 16


def _inputs(rng, n=50, m=6, scale=0.1):
    q = (scale * rng.standard_normal((m, D))).astype(np.float64)
    k = (scale * rng.standard_normal((n, D))).astype(np.float64)
    v = (scale * rng.standard_normal((n, D))).astype(np.float64)
    return q, k, v


def test_spec_builder_and_routing_by_hand():
    moe = (
        MoEAttention.builder().add_local_expert(D).add_hyperbolic_expert(D, -1.0).add_sparse_expert(10, 5).top_k(2)
    ).build()
    assert moe.num_experts == 3 and [type(e) for e in moe.experts] == [
        ScaledDotProductAttention,
        HyperbolicAttention,
        LocalGlobalAttention,
    ]
    rng = np.random.default_rng(0)
    moe.router.weight_ = rng.standard_normal(moe.router.weight_.shape)  # a router with clear preferences
    q, k, v = _inputs(rng)
    for x in q:
        logits = moe.router.weight_ @ x + moe.router.bias_
        order = np.argsort(-logits, kind="stable")[:2]
        p = np.exp(logits[order] - logits[order].max())
        p /= p.sum()
        routing = moe.get_routing(x)
        assert [e for e, _ in routing] == order.tolist()
        np.testing.assert_allclose([w for _, w in routing], p, rtol=1e-12)
        want = sum(w * moe.experts[e].forward(x, k, v) for e, w in zip(order, p, strict=True))
        np.testing.assert_allclose(moe.forward(x, k, v), want, rtol=1e-10, atol=1e-14)


def test_batch_form_equals_one_query_at_a_time_and_records_are_consistent():
    rng = np.random.default_rng(1)
    moe = MoEAttention(
        D,
        [ScaledDotProductAttention(D), LinearAttention(D), LocalGlobalAttention(D, 8, 2), HyperbolicAttention(D)],
        top_k=2,
        seed=3,
    )
    moe.router.weight_ = rng.standard_normal(moe.router.weight_.shape)
    q, k, v = _inputs(rng, m=20)
    batch = moe.forward_batch(q, k, v)
    for i in range(20):
        np.testing.assert_allclose(batch[i], moe.forward(q[i], k, v), rtol=1e-9, atol=1e-12)
    rec = moe.routing_record(q)
    assert rec.load.sum() == 20 * 2 and rec.num_dropped == 0
    np.testing.assert_allclose(rec.utilisation, rec.load / (20 * 2 / 4))
    json.dumps(rec.to_dict())
    # capacity: an expert takes at most ceil(0.5 * 20 * 2 / 4) = 5 queries; dropped queries get zeros
    tight = MoEAttention(D, moe.experts, top_k=2, capacity_factor=0.5, overflow="drop", seed=3)
    tight.router.weight_ = moe.router.weight_
    out = tight.forward_batch(q, k, v)
    rec = tight.routing_record(q)
    assert rec.load.max() <= 5 and rec.num_overflowed > 0
    np.testing.assert_array_equal(out[rec.dropped], 0)


def test_prepared_keys_give_the_same_output():
    from ruvattn import MultiHeadAttention

    rng = np.random.default_rng(5)
    experts = [LinearAttention(D, "favor", num_features=8), MultiHeadAttention(D, 2), ScaledDotProductAttention(D)]
    moe = MoEAttention(D, experts, top_k=3)
    q, k, v = _inputs(rng)
    prepared = moe.prepare(k, v)
    for x in q:
        np.testing.assert_allclose(moe.forward(x, prepared), moe.forward(x, k, v), rtol=1e-9, atol=1e-12)
    other = MoEAttention(D, experts, top_k=1)
    with pytest.raises(InvalidConfig, match="another MoEAttention"):
        other.forward(q[0], prepared)
    with pytest.raises(InvalidConfig, match="values are required"):
        moe.forward(q[0], k)


def test_edge_expert_and_validation():
    rng = np.random.default_rng(2)
    moe = MoEAttention.builder().add_local_expert(D).add_edge_expert(edge_dim=3, heads=2).top_k(2).build()
    q, k, v = _inputs(rng, n=7, m=1)
    ef = rng.standard_normal((7, 3))
    gat = moe.experts[1]
    assert isinstance(gat, GATConv)
    (e0, w0), (e1, w1) = moe.get_routing(q[0])
    outs = {0: moe.experts[0].forward(q[0], k, v), 1: gat.forward_with_edges(q[0], k, v, ef)}
    np.testing.assert_allclose(moe.forward(q[0], k, v, edge_features=ef), w0 * outs[e0] + w1 * outs[e1], rtol=1e-10)
    with pytest.raises(InvalidConfig, match="top_k"):
        MoEAttention(D, [ScaledDotProductAttention(D)], top_k=2)
    with pytest.raises(InvalidConfig, match="top_k"):
        MoEAttention(D, [ScaledDotProductAttention(D)], top_k=0)
    with pytest.raises(InvalidConfig, match="at least one"):
        MoEAttention(D, [])
    with pytest.raises(InvalidConfig, match="width 8"):
        MoEAttention(D, [ScaledDotProductAttention(8)], top_k=1)
    with pytest.raises(InvalidConfig, match="share the output width"):
        MoEAttention(D, [ScaledDotProductAttention(D), GATConv(D, 3, add_self_loops=False)])
    with pytest.raises(InvalidConfig, match="explicit dim"):
        MoEAttention.builder().add_sparse_expert(10, 5)
    layer = MoEAttention(D, [ScaledDotProductAttention(D), LinearAttention(D)], top_k=1, temperature=0.5)
    again = build(json.loads(json.dumps(layer.to_dict())))
    assert again.to_dict() == layer.to_dict()
    np.testing.assert_array_equal(again.forward(q[0], k, v), layer.forward(q[0], k, v))


def test_learned_routing_beats_uniform_routing():
    """Two query clusters; the target of cluster A is a sharp attention expert's output, of cluster B a
    flat one's.  Training the router lowers the task loss far below uniform routing and uses both experts."""
    rng = np.random.default_rng(4)
    k = 0.5 * rng.standard_normal((60, D))
    v = rng.standard_normal((60, D))
    centres = 2.0 * rng.standard_normal((2, D))
    labels = np.repeat([0, 1], 40)
    q = centres[labels] + 0.3 * rng.standard_normal((80, D))
    experts = [
        ScaledDotProductAttention(D, temperature=0.2),
        ScaledDotProductAttention(D, temperature=1.0),
        ScaledDotProductAttention(D, temperature=8.0),
        LocalGlobalAttention(D, 4, 0),
    ]
    # top-2: with one expert per query its gate weight is always 1 and the task loss gives the router no gradient;
    # noisy gating lets training try experts it does not rank first yet (Shazeer et al. 2017)
    moe = MoEAttention(D, experts, top_k=2, noisy=True, seed=0)
    outs = moe.expert_outputs(q, k, v)
    targets = np.where(labels[:, None] == 0, outs[0], outs[2])
    uniform = float(np.mean(np.sum((outs.mean(axis=0) - targets) ** 2, axis=1)))
    history = moe.fit_router(q, k, v, targets, steps=300, learning_rate=0.1, balance_coef=0.01)
    final = history[-1]["task_loss"]
    assert final < 0.3 * history[0]["task_loss"] and final < 0.3 * uniform
    chosen = moe.route(q).experts[:, 0]
    assert np.mean(chosen[labels == 0] == 0) > 0.9 and np.mean(chosen[labels == 1] == 2) > 0.9
    rec = moe.routing_record(q)
    top1 = np.bincount(rec.experts[:, 0], minlength=4)
    assert top1[0] >= 36 and top1[2] >= 36  # both specialists carry their cluster
    err = np.mean(np.sum((moe.forward_batch(q, k, v) - targets) ** 2, axis=1))
    assert err < 0.3 * uniform
