"""The adversarial matrix: every registered mechanism x every entry point x every argument x a bad
value of every kind (types, dtypes, shapes, layouts, magnitudes up to the dtype's maximum, NaN/inf).

The one property: a call returns finite arrays of the documented shape or raises a typed
:class:`ruvattn.AttentionError` -- never NaN/inf, never an untyped exception, never a mutated input.
(The seeded 10-million-operation sweep of the same property is the ``reliability_sweep``
experiment; this matrix is its deterministic core.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from ruvattn import AttentionError, available
from ruvattn.mechanisms.base import Example, mechanism_class

KINDS = available()


def _variants(a: np.ndarray) -> Iterator[tuple[str, Any]]:
    """Bad (and borderline) versions of one array argument."""
    big32, big64 = np.finfo(np.float32).max, np.finfo(np.float64).max
    for bad in (np.nan, np.inf, -np.inf):
        b = a.astype(np.float64)
        b.flat[b.size // 2] = bad
        yield f"{bad} entry", b
    yield "all zeros", np.zeros_like(a)
    yield "float32 max", np.full(a.shape, big32, np.float32)
    yield "float32 -max", np.full(a.shape, -big32, np.float32)
    yield "float64 max", np.full(a.shape, big64)
    yield "alternating float64 max", np.where(np.indices(a.shape).sum(axis=0) % 2, big64, -big64)
    yield "subnormal", np.full(a.shape, 5e-324)
    yield "float16", a.astype(np.float16)
    yield "int", np.round(a).astype(np.int64)
    yield "bool", a > 0
    yield "complex", a.astype(np.complex128)
    yield "strings", a.astype(str)
    yield "object", a.astype(object)
    yield "list", a.tolist()
    yield "None", None
    yield "scalar", 1.0
    yield "extra axis", a[None]
    yield "one axis fewer", a.reshape(-1)[:1] if a.ndim == 1 else a[0]
    yield "wider", np.concatenate([a, a], axis=-1)
    yield "narrower", a[..., :-1]
    yield "empty rows", a[:0]
    yield "zero width", a[..., :0]
    yield "fortran", np.asfortranarray(a)
    yield "strided", np.repeat(a, 2, axis=-1)[..., ::2]
    ro = a.copy()
    ro.flags.writeable = False
    yield "read-only", ro


def _neighbour_variants(ex: Example) -> Iterator[tuple[str, Any]]:
    nl = ex.neighbours
    yield "float ids", (nl.indptr, nl.indices.astype(np.float64))
    yield "negative id", (nl.indptr, np.where(np.arange(nl.nnz) == 0, -1, nl.indices))
    yield "id past the table", (nl.indptr, np.where(np.arange(nl.nnz) == 0, ex.keys.shape[0], nl.indices))
    yield "huge id", (nl.indptr, np.where(np.arange(nl.nnz) == 0, 2**62, nl.indices))
    yield "decreasing indptr", (nl.indptr[::-1].copy(), nl.indices)
    yield "short indptr", (nl.indptr[:-1], nl.indices)
    yield "one node fewer", nl.to_padded()[:-1]
    yield "no neighbours anywhere", np.full((nl.num_nodes, 2), -1)
    yield "ragged lists", [[0], [0, 1], []][: nl.num_nodes] + [[0]] * max(0, nl.num_nodes - 3)
    yield "strings", nl.to_padded().astype(str)
    yield "None", None
    yield "scalar", 3


def _entries(ex: Example) -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
    """Entry point -> (call, its arguments by name)."""
    m = ex.mechanism
    return {
        "forward": (m.forward, {"query": ex.query, "keys": ex.keys, "values": ex.values}),
        "forward_batch": (m.forward_batch, {"queries": ex.queries, "keys": ex.keys, "values": ex.values}),
        "forward_neighbours": (
            m.forward_neighbours,
            {"queries": ex.queries, "keys": ex.keys, "values": ex.values, "neighbours": ex.neighbours},
        ),
        "weights": (m.weights, {"query": ex.query, "keys": ex.keys}),
        "weights_batch": (m.weights, {"query": ex.queries, "keys": ex.keys}),
        "weights_neighbours": (m.weights, {"query": ex.queries, "keys": ex.keys, "neighbours": ex.neighbours}),
        "attention_weights": (m.attention_weights, {"query": ex.query, "keys": ex.keys}),
        "prepare": (m.prepare, {"keys": ex.keys, "values": ex.values}),
    }


def _check(kind: str, entry: str, arg: str, what: str, call: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    snapshot = {k: np.array(v, copy=True) for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    label = f"{kind}.{entry}: {arg} = {what}"
    try:
        out = call(**kwargs)
    except AttentionError:
        pass
    except Exception as exc:  # the failure this test exists for
        raise AssertionError(f"{label}: untyped {type(exc).__name__}: {exc}") from exc
    else:
        if isinstance(out, np.ndarray):
            arrays = [out]
        elif isinstance(out, tuple):  # a prepared form or a NamedTuple of arrays
            arrays = [a for a in out if isinstance(a, np.ndarray)]
        else:  # another prepared form: its array attributes
            arrays = [a for a in vars(out).values() if isinstance(a, np.ndarray)] if hasattr(out, "__dict__") else []
        for a in arrays:
            if a.dtype.kind == "f":
                assert np.isfinite(a).all(), f"{label}: returned NaN/inf"
    for k, v in snapshot.items():
        np.testing.assert_array_equal(kwargs[k], v, err_msg=f"{label}: the input {k} was mutated")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_every_entry_point_with_every_bad_argument(kind: str, dtype: Any) -> None:
    ex = mechanism_class(kind).example(dtype, 0)
    for entry, (call, args) in _entries(ex).items():
        for arg, value in args.items():
            variants = _neighbour_variants(ex) if arg == "neighbours" else _variants(np.asarray(value))
            for what, bad in variants:
                _check(kind, entry, arg, what, call, {**args, arg: bad})


@pytest.mark.parametrize("kind", KINDS)
def test_configs_with_bad_values_are_typed(kind: str) -> None:
    """Every parameter with NaN, inf, huge, negative, wrong-typed values: InvalidConfig or a working
    mechanism (never another exception type)."""
    cls = mechanism_class(kind)
    params = cls.example_params(8, 2)
    for p in cls.params:
        for bad in (np.nan, np.inf, -np.inf, 1e308, -1, 0, 2**64, "abc", b"x", [], {}, object(), True):
            try:
                mech = cls(**{**params, p.name: bad})
            except AttentionError:
                continue
            except Exception as exc:
                raise AssertionError(f"{kind}({p.name}={bad!r}): untyped {type(exc).__name__}: {exc}") from exc
            ex = cls.example(np.float64, 0)
            _check(kind, "forward", p.name, repr(bad), mech.forward, {"query": ex.query, "keys": ex.keys,
                                                                        "values": ex.values})  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_to_compute_still_refuses_a_bad_width(kind: str) -> None:
    """Zero queries, or neighbour lists with no entries, are no reason to accept queries of the wrong
    width (the 10-million-operation sweep found GAT's and MoE's inherited forms doing so)."""
    from ruvattn import DimensionMismatch

    ex = mechanism_class(kind).example(np.float32, 0)
    mech, k, v = ex.mechanism, ex.keys, ex.values
    d = ex.queries.shape[1]
    with pytest.raises(DimensionMismatch):
        mech.forward_batch(np.zeros((0, d - 1), np.float32), k, v)
    with pytest.raises(DimensionMismatch):
        mech.forward_neighbours(np.zeros((2, d + 1), np.float32), k, v, (np.zeros(3, np.int64), np.zeros(0, np.int64)))


@pytest.mark.parametrize("kind", ["gat", "gatv2"])
def test_nan_node_features_are_refused_even_when_no_edge_reads_them(kind: str) -> None:
    from ruvattn import NumericalInstability

    mech = mechanism_class(kind)(4, 4, heads=2, add_self_loops=False)
    x = np.full((1, 4), np.nan)
    with pytest.raises(NumericalInstability, match="x must be finite"):
        mech.forward_graph(np.asfortranarray(x), np.zeros((2, 0), np.int64))
