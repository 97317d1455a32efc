"""The mechanism contract as checks: each takes a registered kind and raises AssertionError
(or lets an unexpected exception through) when the mechanism breaks a promise of the contract.

``tests/test_contract.py`` runs every check over every registered kind, and over a deliberately
broken mechanism to show that each check can fail.  The references are independent of the
mechanism under test: the forms are compared with each other (batch = stacked single queries,
neighbour lists = gathered rows), with the float64 run, and with hand-made layouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ruvattn import DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability, build
from ruvattn.mechanisms import Attention, Example, mechanism_class


def inspect_static(cls: type, name: str) -> Any:
    """The class attribute ``name`` without running descriptors."""
    import inspect

    return inspect.getattr_static(cls, name)


def example(kind: str, dtype: Any = np.float64, seed: int = 0) -> Example:
    return mechanism_class(kind).example(dtype, seed)


def _close(a: Any, b: Any, dtype: Any = np.float64) -> None:
    tol = 1e-9 if np.dtype(dtype) == np.float64 else 2e-4
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


def check_weights(kind: str) -> None:
    """One weights method with a head axis: (H, n), (H, m, n), (H, nnz); every row sums to 1 per head."""
    ex = example(kind)
    m = ex.mechanism
    h = m.num_weight_heads
    n, nq = ex.keys.shape[0], ex.queries.shape[0]
    w1 = m.weights(ex.query, ex.keys)
    assert w1.shape == (h, n), (kind, w1.shape)
    np.testing.assert_allclose(w1.sum(axis=-1), 1.0, atol=1e-9)
    assert (w1 >= 0).all()
    wb = m.weights(ex.queries, ex.keys)
    assert wb.shape == (h, nq, n), (kind, wb.shape)
    np.testing.assert_allclose(wb.sum(axis=-1), 1.0, atol=1e-9)
    _close(wb[:, 0], w1)  # query 0 of the batch is the single query
    nl = ex.neighbours
    wn = m.weights(ex.queries, ex.keys, neighbours=nl)
    assert wn.shape == (h, nl.nnz), (kind, wn.shape)
    for i in range(nl.num_nodes):
        lo, hi = nl.indptr[i], nl.indptr[i + 1]
        np.testing.assert_allclose(wn[:, lo:hi].sum(axis=-1), 1.0, atol=1e-9)
        _close(wn[:, lo:hi], m.weights(ex.queries[i], ex.keys[nl.indices[lo:hi]]))
    _close(m.attention_weights(ex.query, ex.keys), w1.mean(axis=0))


def check_forms(kind: str) -> None:
    """forward_batch = stacked forward; forward_neighbours = forward over the gathered rows (zeros when
    a node has none); forward(query, prepare(keys, values)) = forward(query, keys, values)."""
    ex = example(kind)
    m = ex.mechanism
    one = m.forward(ex.query, ex.keys, ex.values)
    assert one.ndim == 1 and np.isfinite(one).all()
    batch = m.forward_batch(ex.queries, ex.keys, ex.values)
    _close(batch, np.stack([m.forward(q, ex.keys, ex.values) for q in ex.queries]))
    nl = ex.neighbours
    padded = np.full((nl.num_nodes + 1, nl.degrees().max()), -1)
    for i in range(nl.num_nodes):
        padded[i, : nl.degrees()[i]] = nl.neighbours(i)
    qs = np.vstack([ex.queries, ex.queries[:1]])  # the last node has no neighbours
    out = m.forward_neighbours(qs, ex.keys, ex.values, padded)
    for i in range(nl.num_nodes):
        ids = nl.neighbours(i)
        _close(out[i], m.forward(qs[i], ex.keys[ids], ex.values[ids]))
    assert not out[-1].any(), f"{kind}: a node without neighbours must get a zero row"
    prepared = m.prepare(ex.keys, ex.values)
    _close(m.forward(ex.query, prepared), one)
    _close(m.forward_batch(ex.queries, prepared), batch)


def check_masks(kind: str) -> None:
    """Where ``mask`` is an option: all-true = no mask, a removed key has weight exactly 0 and does not
    change the output of the rest, a non-boolean mask is refused."""
    ex = example(kind)
    m = ex.mechanism
    if "mask" not in m.forward_options:
        return
    n = ex.keys.shape[0]
    full = np.ones(n, bool)
    _close(m.forward(ex.query, ex.keys, ex.values, mask=full), m.forward(ex.query, ex.keys, ex.values))
    keep = full.copy()
    keep[[1, 4]] = False
    w = m.weights(ex.query, ex.keys, mask=keep)
    assert (w[:, ~keep] == 0).all(), f"{kind}: masked keys must get weight exactly 0"
    _close(m.forward(ex.query, ex.keys, ex.values, mask=keep), m.forward(ex.query, ex.keys[keep], ex.values[keep]))
    try:
        m.forward(ex.query, ex.keys, ex.values, mask=keep.astype(int))
    except DimensionMismatch:
        pass
    else:
        raise AssertionError(f"{kind}: an integer mask must be refused (mask is boolean, true = attend)")


def check_params(kind: str) -> None:
    """Parameters declared once: attribute access, get/set_params, dict round trip, atomic rejection."""
    ex = example(kind)
    m = ex.mechanism
    cls = type(m)
    params = m.get_params()
    assert list(params) == [p.name for p in cls.params]
    from ruvattn._params import _ParamAttribute

    for name, value in params.items():  # attribute access by name, unless the class defines the name itself
        if isinstance(inspect_static(cls, name), _ParamAttribute):
            assert getattr(m, name) is value, (kind, name)
    spec = m.to_dict()
    again = build(spec)
    assert again.to_dict() == spec
    import json

    assert build(json.dumps(spec)).to_dict() == spec
    try:
        m.set_params(not_a_parameter=1)
    except InvalidConfig as exc:
        assert all(p.name in str(exc) for p in cls.params), str(exc)
    else:
        raise AssertionError(f"{kind}: an unknown parameter must be refused")
    before = m.to_dict()
    state = {k: v.copy() for k, v in m.state_dict().items()}
    out = m.forward(ex.query, ex.keys, ex.values)
    for p in cls.params:
        try:
            m.set_params(**{p.name: object()})
        except InvalidConfig as exc:
            assert str(exc).startswith(cls.__name__), str(exc)
        else:
            raise AssertionError(f"{kind}: {p.name}=object() must be refused")
        assert m.to_dict() == before
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    _close(m.forward(ex.query, ex.keys, ex.values), out)
    assert "Parameters" in (cls.__doc__ or "")


def check_state(kind: str, tmp: Path) -> None:
    """state_dict / load_state_dict / safetensors round trip; a bad load changes nothing."""
    ex = example(kind)
    m = ex.mechanism
    state = m.state_dict()
    params = m.get_params()
    if not state:
        assert m.load_state_dict({}) is m
        return
    other = type(m)(**{**params, "seed": 1}) if "seed" in params else type(m)(**params)
    other.load_state_dict(state)
    _close(other.forward(ex.query, ex.keys, ex.values), m.forward(ex.query, ex.keys, ex.values))
    path = tmp / f"{kind}.safetensors"
    m.save_safetensors(path)
    third = type(m)(**{**params, "seed": 2}) if "seed" in params else type(m)(**params)
    third.load_safetensors(path)
    _close(third.forward(ex.query, ex.keys, ex.values), m.forward(ex.query, ex.keys, ex.values))
    reference = m.forward(ex.query, ex.keys, ex.values)
    name = next(iter(state))
    bad = dict(state)
    bad[name] = np.zeros(tuple(s + 1 for s in state[name].shape))
    for broken in (bad, {k: v for k, v in state.items() if k != name}):
        try:
            m.load_state_dict(broken)
        except (InvalidConfig, DimensionMismatch):
            pass
        else:
            raise AssertionError(f"{kind}: a wrong or missing tensor must be refused")
        _close(m.forward(ex.query, ex.keys, ex.values), reference)
    nan = dict(state)
    nan[name] = np.full(state[name].shape, np.nan)
    try:
        m.load_state_dict(nan)
    except NumericalInstability:
        pass
    else:
        raise AssertionError(f"{kind}: a NaN tensor must be refused")
    corrupt = tmp / f"{kind}-corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:20])
    try:
        m.load_safetensors(corrupt)
    except InvalidConfig:
        pass
    else:
        raise AssertionError(f"{kind}: a truncated safetensors file must be refused")
    _close(m.forward(ex.query, ex.keys, ex.values), reference)


def check_dtypes(kind: str) -> None:
    """float32 in, float32 out; float64 in, float64 out; the two agree."""
    out = {}
    for dt in (np.float32, np.float64):
        ex = example(kind, dt)
        m = ex.mechanism
        forms = {
            "forward": m.forward(ex.query, ex.keys, ex.values),
            "batch": m.forward_batch(ex.queries, ex.keys, ex.values),
            "neighbours": m.forward_neighbours(ex.queries, ex.keys, ex.values, ex.neighbours),
            "weights": m.weights(ex.query, ex.keys),
        }
        for name, y in forms.items():
            assert y.dtype == dt, f"{kind}.{name}: {np.dtype(dt)} in, {y.dtype} out"
        out[dt] = forms
    for name in out[np.float32]:
        _close(out[np.float32][name], out[np.float64][name], np.float32)


def check_bad_inputs(kind: str) -> None:
    """NaN -> NumericalInstability, wrong width -> DimensionMismatch, no keys -> EmptyInput (or, where the
    mechanism documents it, a finite output), never NaN out."""
    ex = example(kind)
    m = ex.mechanism
    q = ex.query.copy()
    q[0] = np.nan
    _raises(NumericalInstability, kind, "NaN query", lambda: m.forward(q, ex.keys, ex.values))
    k = ex.keys.copy()
    k[3, 1] = np.inf
    _raises(NumericalInstability, kind, "inf key", lambda: m.forward(ex.query, k, ex.values))
    _raises(DimensionMismatch, kind, "wrong key width", lambda: m.forward(ex.query, ex.keys[:, :-1], ex.values))
    _raises(DimensionMismatch, kind, "more keys than values", lambda: m.forward(ex.query, ex.keys, ex.values[:-1]))
    empty_k, empty_v = ex.keys[:0], ex.values[:0]
    if m.empty_keys_raise:
        _raises(EmptyInput, kind, "no keys", lambda: m.forward(ex.query, empty_k, empty_v))
    else:
        assert np.isfinite(m.forward(ex.query, empty_k, empty_v)).all()


def _raises(err: type[Exception], kind: str, what: str, fn: Any) -> None:
    try:
        out = fn()
    except err:
        return
    raise AssertionError(f"{kind}: {what} must raise {err.__name__}; returned {out!r}")


def check_layouts(kind: str) -> None:
    """Nothing is mutated; Fortran-ordered, strided and negative-stride inputs give the contiguous answer."""
    ex = example(kind)
    m = ex.mechanism
    copies = [a.copy() for a in (ex.query, ex.queries, ex.keys, ex.values)]
    want = m.forward(ex.query, ex.keys, ex.values)
    want_b = m.forward_batch(ex.queries, ex.keys, ex.values)
    m.forward_neighbours(ex.queries, ex.keys, ex.values, ex.neighbours)
    m.weights(ex.queries, ex.keys)
    for a, b in zip((ex.query, ex.queries, ex.keys, ex.values), copies, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{kind}: an input was mutated")
    wide = np.hstack([ex.keys, ex.keys])[:, : ex.keys.shape[1]]  # a strided column view
    flipped = np.flipud(ex.keys[::-1].copy())  # negative strides, same values
    for layout in (np.asfortranarray(ex.keys), wide, flipped):
        _close(m.forward(ex.query, layout, ex.values), want)
        _close(m.forward_batch(np.asfortranarray(ex.queries), layout, ex.values[::1]), want_b)
    _close(m.forward(np.repeat(ex.query, 2)[::2], ex.keys, ex.values), want)  # a strided query


def check_contract_methods(kind: str) -> None:
    """The contract's metadata: a kind, an input space whose embed keeps data valid, the backward hook."""
    cls = mechanism_class(kind)
    assert issubclass(cls, Attention) and cls.kind == kind
    ex = example(kind)
    m = ex.mechanism
    assert m.input_space in ("euclidean", "poincare", "sphere", "lorentz", "product")
    rng = np.random.default_rng(3)
    x = m.embed(100.0 * rng.standard_normal((6, m.hidden_dim)))
    assert np.isfinite(m.forward(x[0], x, x if ex.values.shape[1] == x.shape[1] else ex.values[:6])).all()
    if not m.supports_backward:
        try:
            m.backward(ex.query, ex.keys, ex.values, np.ones_like(ex.values[0]))
        except Exception as exc:  # the hook says what is missing
            assert type(exc).__name__ == "Unsupported", exc
        else:
            raise AssertionError(f"{kind}: backward without supports_backward must raise Unsupported")


CHECKS = (
    check_weights,
    check_forms,
    check_masks,
    check_params,
    check_dtypes,
    check_bad_inputs,
    check_layouts,
    check_contract_methods,
)
