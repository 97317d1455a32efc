"""No input crashes, truncates or returns NaN silently: every odd input either raises an
AttentionError (a ValueError) or gives a finite output."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ruvattn import (
    AttentionError,
    HyperbolicAttention,
    LinearAttention,
    LocalGlobalAttention,
    ManifoldAttention,
    MixedCurvatureAttention,
    available,
    build,
)
from ruvattn.mechanisms import mechanism_class

D = 4
QUERIES = [
    np.ones(D, np.float32),
    np.full(D, np.nan),
    np.full(D, 1e38, np.float32),
    np.full(D, -np.inf),
    np.array([1, 2, 3]),
    "abcd",
    [1, 2, 3, 4],
    np.ones((1, D)),
    np.ones(D, complex),
    np.ones(D, bool),
    np.ones(D, object),
    np.ones(D, np.float16),
    None,
]
KEYS = [
    np.ones((3, D), np.float32),
    np.ones((0, D)),
    np.ones((3, D + 1)),
    [[1, 2, 3, 4], [1, 2]],
    np.ones((3, D, 1)),
    np.full((3, D), np.inf),
    np.full((3, D), 1e30, np.float32),
    np.ones((3, D), complex),
    None,
]
OPTIONS = [
    {},
    {"mask": np.ones(3, bool)},
    {"mask": np.ones(3, int)},
    {"mask": np.zeros(3, bool)},
    {"mask": np.ones((2, 3), bool)},
    {"bias": np.full(3, np.nan)},
    {"bias": np.full(3, -np.inf)},
    {"ids": [0, 5]},
    {"ids": [-1]},
    {"ids": [0.5]},
    {"ids": []},
    {"ids": [[0]]},
]
NEIGHBOURS = [
    np.array([[0, 1], [2, -1]]),
    np.array([[0, 9], [1, 1]]),
    np.array([[-2, 0], [0, 0]]),
    (np.array([0, 1, 2]), np.array([0, 1])),
    (np.array([0, 2, 1]), np.array([0, 1])),
    np.array([[0.5, 1], [1, 1]]),
    [[0, 1], [1]],
    [[0, 1], [0.5]],
    np.zeros((3, 2), int),
]


def _finite_or_attention_error(call):
    try:
        out = call()
    except AttentionError:
        return
    assert np.all(np.isfinite(out))


#: every registered kind (its example parameters at width D), plus variants of interest
MECHANISMS = [build({"type": kind, **mechanism_class(kind).example_params(D)}) for kind in available()] + [
    HyperbolicAttention(D, aggregation="midpoint"),
    ManifoldAttention(D, "lorentz"),
    LocalGlobalAttention(D, local_window=2, global_nodes=1),
    LinearAttention(D),
    MixedCurvatureAttention(D, components=[("euclidean", 2), ("sphere", 1, 1.0), ("poincare", 1, -1.0)]),
]


@pytest.mark.parametrize("mech", MECHANISMS, ids=lambda m: repr(m)[:60])
def test_single_query_inputs(mech):
    accepted = mech.forward_options
    for q, k, opts in itertools.product(QUERIES, KEYS, OPTIONS):
        if not set(opts) <= accepted:
            continue
        _finite_or_attention_error(lambda q=q, k=k, opts=opts: mech.forward(q, k, k, **opts))


@pytest.mark.parametrize("mech", MECHANISMS, ids=lambda m: repr(m)[:60])
def test_batch_and_neighbour_inputs(mech):
    qs = [np.ones((2, D), np.float32), np.ones((0, D)), np.full((2, D), np.nan), np.ones((2, D + 1)), np.ones(D)]
    ks = [np.ones((3, D), np.float32), np.ones((0, D)), np.full((3, D), np.inf), np.ones((5, D))]
    masks = [None, np.ones(3, bool), np.zeros((2, 3), bool), np.ones((3, 2), bool)]
    if "mask" not in mech.forward_options:  # local+global: positions instead
        masks = [None]
    for q, k in itertools.product(qs, ks):
        for m in masks:
            kw = {} if m is None else {"mask": m}
            _finite_or_attention_error(lambda q=q, k=k, kw=kw: mech.forward_batch(q, k, k, **kw))
        for nb in NEIGHBOURS:
            _finite_or_attention_error(lambda q=q, k=k, nb=nb: mech.forward_neighbours(q, k, k, nb))
