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
from unittest import mock

import numpy as np

from ruvattn import AttentionError, DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability, build
from ruvattn.compression import QuantizedTable, quantize, quantize_pair
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


def check_missing_values(kind: str) -> None:
    """One rule for omitted values: InvalidConfig from every form, never an empty result or the keys
    used as values."""
    ex = example(kind)
    m = ex.mechanism
    _raises(InvalidConfig, kind, "values=None", lambda: m.forward(ex.query, ex.keys, None))
    _raises(InvalidConfig, kind, "values=None (batch)", lambda: m.forward_batch(ex.queries, ex.keys, None))
    _raises(InvalidConfig, kind, "values=None (neighbours)",
            lambda: m.forward_neighbours(ex.queries, ex.keys, None, ex.neighbours))  # fmt: skip
    prepared = m.prepare(ex.keys, ex.values)
    _raises(InvalidConfig, kind, "values next to prepared keys", lambda: m.forward(ex.query, prepared, ex.values))


def check_integer_ids(kind: str) -> None:
    """Neighbour ids and offsets must be integers in every form: a float id is refused, never truncated."""
    ex = example(kind)
    m = ex.mechanism
    nl = ex.neighbours
    forms = {
        "float indices": (nl.indptr, nl.indices.astype(np.float64) + 0.9),
        "float indptr": (nl.indptr.astype(np.float64), nl.indices),
        "bool indices": (nl.indptr, nl.indices.astype(bool)),
        "float padded": nl.to_padded().astype(np.float64),
        "float lists": [list(np.asarray(nl.neighbours(i), np.float64)) for i in range(nl.num_nodes)],
    }
    for what, bad in forms.items():
        _raises(
            DimensionMismatch, kind, what, lambda bad=bad: m.forward_neighbours(ex.queries, ex.keys, ex.values, bad)
        )
        _raises(DimensionMismatch, kind, f"{what} (weights)", lambda bad=bad: m.weights(ex.queries, ex.keys,
                                                                                         neighbours=bad))  # fmt: skip


def _finite_or_typed(kind: str, what: str, fn: Any) -> Any:
    """The call returns a finite result or raises a typed error (never NaN/inf, never an untyped error)."""
    try:
        out = fn()
    except AttentionError:
        return None
    arrays = out if isinstance(out, tuple) else (out,)
    for a in arrays:
        assert np.isfinite(np.asarray(a, np.float64)).all(), f"{kind}: {what} returned NaN/inf"
    return out


def check_magnitudes(kind: str) -> None:
    """Inputs up to each dtype's largest finite value: a finite answer whose weights still sum to 1, or
    NumericalInstability / OutOfBounds -- never NaN, inf, or all-zero weights."""
    for dt in (np.float32, np.float64):
        ex = example(kind, dt)
        m = ex.mechanism
        big = np.finfo(dt).max
        for scale in (big**0.25, big**0.5, big / 4, big):
            q = np.clip(ex.query.astype(np.float64) * scale, -big, big).astype(dt)
            k = np.clip(-ex.keys.astype(np.float64) * scale, -big, big).astype(dt)
            v = np.clip(ex.values.astype(np.float64) * scale, -big, big).astype(dt)
            for what, args in (("query", (q, ex.keys, ex.values)), ("keys", (ex.query, k, ex.values)),
                               ("values", (ex.query, ex.keys, v)), ("all", (q, k, v))):  # fmt: skip
                label = f"{np.dtype(dt).name} {what} x {scale:.3g}"
                _finite_or_typed(kind, f"forward ({label})", lambda a=args, m=m: m.forward(*a))
                w = _finite_or_typed(kind, f"weights ({label})", lambda a=args, m=m: m.weights(a[0], a[1]))
                if w is not None:
                    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-3, err_msg=f"{kind}: weights ({label})")
                qs = np.vstack([args[0]] * 2)
                _finite_or_typed(
                    kind, f"forward_batch ({label})", lambda a=args, qs=qs, m=m: m.forward_batch(qs, a[1], a[2])
                )


def check_mixed_dtypes(kind: str) -> None:
    """One promotion rule: float64 if any of query/keys/values is float64 (else float32), in every form,
    with the float64 run's answer."""
    ex32, ex64 = example(kind, np.float32), example(kind, np.float64)
    m = ex64.mechanism
    want = m.forward(ex32.query.astype(np.float64), ex32.keys.astype(np.float64), ex32.values.astype(np.float64))
    for qd, kd, vd in ((np.float32, np.float64, np.float32), (np.float64, np.float32, np.float32),
                       (np.float32, np.float32, np.float64)):  # fmt: skip
        q, k, v = ex32.query.astype(qd), ex32.keys.astype(kd), ex32.values.astype(vd)
        label = f"{kind}: query {np.dtype(qd)}, keys {np.dtype(kd)}, values {np.dtype(vd)}"
        out = m.forward(q, k, v)
        assert out.dtype == np.float64, f"{label} -> {out.dtype}, expected float64"
        np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4, err_msg=label)
        qs = np.vstack([q, q])
        assert m.forward_batch(qs, k, v).dtype == np.float64, label
        nl = ex32.neighbours
        assert m.forward_neighbours(ex32.queries.astype(qd), k, v, nl).dtype == np.float64, label


def check_gradients_refuse_nan(kind: str) -> None:
    """A NaN or inf upstream gradient is NumericalInstability, never NaN gradients."""
    ex = example(kind)
    m = ex.mechanism
    if not m.supports_backward:
        return
    for bad in (np.nan, np.inf):
        g = np.ones_like(ex.values[0])
        g[-1] = bad
        _raises(
            NumericalInstability, kind, f"grad_output {bad}", lambda g=g: m.backward(ex.query, ex.keys, ex.values, g)
        )


def _fd_gradient_check(kind: str, loss: Any, arr: np.ndarray, grad: np.ndarray, label: str, picks: int = 8) -> None:
    """Central differences (float64, step 1e-6) of ``loss()`` at ``picks`` entries of ``arr`` (changed in place and
    put back) against ``grad``: relative error <= 1e-6 (absolute below 1)."""
    rng = np.random.default_rng(7)
    flat, g = arr.reshape(-1), np.asarray(grad).reshape(-1)
    assert g.shape == flat.shape, f"{kind}: {label} gradient has {g.size} entries for {flat.size}"
    for idx in rng.choice(flat.size, min(picks, flat.size), replace=False):
        old = flat[idx]
        flat[idx] = old + 1e-6
        plus = loss()
        flat[idx] = old - 1e-6
        minus = loss()
        flat[idx] = old
        fd = (plus - minus) / 2e-6
        assert abs(fd - g[idx]) <= 1e-6 * max(1.0, abs(fd)), f"{kind}: d/d{label}[{idx}] = {g[idx]!r}, FD {fd!r}"


def check_gradients(kind: str) -> None:
    """``backward`` (where ``supports_backward``) against float64 central finite differences: the query, the
    keys, the values and every learned array, for one query and for a batch."""
    ex = example(kind)
    m = ex.mechanism
    if not m.supports_backward:
        return
    m.eval()
    rng = np.random.default_rng(5)
    q, qs, k, v = (a.astype(np.float64).copy() for a in (ex.query, ex.queries, ex.keys, ex.values))
    state = {
        n: a.astype(np.float64).copy()
        for n, a in m.state_dict().items()
        if a.dtype.kind == "f" and n not in m.fixed_state
    }
    for arr in state.values():  # off the initial values (zero biases): every entry matters
        arr += 0.1 * rng.standard_normal(arr.shape)
    m.load_state_dict({**m.state_dict(), **state})
    for query, fwd in ((q, m.forward), (qs, m.forward_batch)):
        m.load_state_dict({**m.state_dict(), **state})  # the previous checks left a perturbed copy loaded
        up = rng.standard_normal(np.shape(fwd(query, k, v)))
        grads = m.backward(query, k, v, up)

        def loss(query=query, fwd=fwd, up=up) -> float:
            m.load_state_dict({**m.state_dict(), **state})
            return float(np.sum(fwd(query, k, v) * up))

        for label, arr, grad in (("query", query, grads.query), ("keys", k, grads.keys), ("values", v, grads.values)):
            _fd_gradient_check(kind, loss, arr, grad, label)
        assert set(grads.params) == set(state), f"{kind}: gradients for {sorted(grads.params)}, params {sorted(state)}"
        for name, arr in state.items():
            _fd_gradient_check(kind, loss, arr, grads.params[name], name)
    # the neighbour-list form: each node over its own rows of the key/value tables
    m.load_state_dict({**m.state_dict(), **state})
    nl = ex.neighbours
    up = rng.standard_normal(np.shape(m.forward_neighbours(qs, k, v, nl)))
    grads = m.backward_neighbours(qs, k, v, nl, up)

    def loss_nl() -> float:
        m.load_state_dict({**m.state_dict(), **state})
        return float(np.sum(m.forward_neighbours(qs, k, v, nl) * up))

    for label, arr, grad in (("queries", qs, grads.query), ("keys", k, grads.keys), ("values", v, grads.values)):
        _fd_gradient_check(kind, loss_nl, arr, grad, f"{label} (neighbours)", picks=5)
    for name, arr in state.items():
        _fd_gradient_check(kind, loss_nl, arr, grads.params[name], f"{name} (neighbours)", picks=3)


def check_rejected_changes(kind: str) -> None:
    """A refused set_params or load_state_dict changes nothing (config, learned arrays, outputs), and keys
    prepared before a successful load are refused afterwards (never a mix of old and new weights)."""
    ex = example(kind)
    m = ex.mechanism
    cls = type(m)
    before, out = m.to_dict(), m.forward(ex.query, ex.keys, ex.values)
    state = {k: v.copy() for k, v in m.state_dict().items()}
    for p in cls.params:
        for bad in (-1, 0, 1.5, float("nan"), float("inf"), "abc", -(2**70), [1], None):
            try:
                m.set_params(**{p.name: bad})
            except InvalidConfig:
                assert m.to_dict() == before, f"{kind}: set_params({p.name}={bad!r}) raised but changed the config"
                for k, v in m.state_dict().items():
                    np.testing.assert_array_equal(v, state[k], err_msg=f"{kind}: set_params({p.name}={bad!r})")
            else:
                m.set_params(**{p.name: before.get(p.name, getattr(m, p.name, None))})  # valid: put it back
                m.load_state_dict(state)
    _close(m.forward(ex.query, ex.keys, ex.values), out)
    if state:  # keys prepared before a load: refused, or answered with the state they were prepared with
        prepared = m.prepare(ex.keys, ex.values)
        old = m.forward(ex.query, prepared)
        m.load_state_dict({k: v * 1.5 + 0.25 if v.dtype.kind == "f" else v for k, v in state.items()})
        try:
            mixed = m.forward(ex.query, prepared)
        except InvalidConfig:
            return
        _close(mixed, old)


_NEUTRAL = {"distances": 0.0, "hnsw_layers": 0, "edge_weights": 1.0}


def check_metadata(kind: str) -> None:
    """forward_with_metadata: refused (Unsupported) by a mechanism that reads no graph metadata; otherwise empty
    metadata is InvalidConfig naming a field it reads, and neutral metadata (distance/layer 0, edge weight 1)
    equals plain forward."""
    from ruvattn import GraphMetadata, Unsupported

    ex = example(kind)
    m = ex.mechanism
    n = ex.keys.shape[0]
    if not m.metadata_fields:
        _raises(
            Unsupported,
            kind,
            "metadata",
            lambda: m.forward_with_metadata(ex.query, ex.keys, ex.values, GraphMetadata()),
        )
        return
    try:
        m.forward_with_metadata(ex.query, ex.keys, ex.values, GraphMetadata())
    except InvalidConfig as exc:
        assert any(f"GraphMetadata.{f}" in str(exc) for f in m.metadata_fields), f"{kind}: {exc}"
    else:
        raise AssertionError(f"{kind}: empty metadata must be InvalidConfig naming the field it needs")
    neutral = {f: np.full(n, _NEUTRAL[f]) for f in m.metadata_fields if f in _NEUTRAL}
    _close(m.forward_with_metadata(ex.query, ex.keys, ex.values, GraphMetadata(**neutral)),
           m.forward(ex.query, ex.keys, ex.values))  # fmt: skip


#: one table of each kind of layout: INT8 per row (golden rule), INT4 asymmetric in blocks, bfloat16
QUANTIZED = (("int8", {}), ("int4", {"symmetric": False, "block": 4}), ("bfloat16", {}))


def _same(kind: str, what: str, on_table: Any, on_floats: Any, dtype: Any = np.float32) -> None:
    """``on_table()`` (quantised tables) equals ``on_floats()`` (their dequantised float32 tables), or raises the
    same error type."""
    try:
        want = on_floats()
    except AttentionError as exc:
        try:
            on_table()
        except type(exc):
            return
        raise AssertionError(
            f"{kind}.{what}: the float tables raise {type(exc).__name__}, the quantised do not"
        ) from None
    got = on_table()
    try:
        _close(got, want, dtype)
    except AssertionError as exc:
        raise AssertionError(f"{kind}.{what} over a quantised table: {exc}") from None


def _quantized_forms(kind: str, fmt: str, m: Attention, ex: Example, kt: QuantizedTable, vt: QuantizedTable) -> None:
    kd, vd = kt.dequantize(), vt.dequantize()
    q, qs, nl = ex.query, ex.queries, ex.neighbours
    _same(kind, f"forward[{fmt}]", lambda: m.forward(q, kt, vt), lambda: m.forward(q, kd, vd))
    _same(kind, f"forward_batch[{fmt}]", lambda: m.forward_batch(qs, kt, vt), lambda: m.forward_batch(qs, kd, vd))
    _same(kind, f"forward_neighbours[{fmt}]", lambda: m.forward_neighbours(qs, kt, vt, nl),
          lambda: m.forward_neighbours(qs, kd, vd, nl))  # fmt: skip
    _same(kind, f"weights[{fmt}]", lambda: m.weights(q, kt), lambda: m.weights(q, kd))
    _same(kind, f"weights batch[{fmt}]", lambda: m.weights(qs, kt), lambda: m.weights(qs, kd))
    _same(kind, f"weights neighbours[{fmt}]", lambda: m.weights(qs, kt, neighbours=nl),
          lambda: m.weights(qs, kd, neighbours=nl))  # fmt: skip
    _same(kind, f"prepare[{fmt}]", lambda: m.forward(q, m.prepare(kt, vt)), lambda: m.forward(q, kd, vd))


def check_quantized_tables(kind: str) -> None:
    """A :class:`QuantizedTable` is accepted wherever a key or value table is (one query, a batch, neighbour
    lists, weights, prepare) and gives what its dequantised float32 table gives; the neighbour form of a
    mechanism that does not read the codes gets float rows of only the rows it can read."""
    ex = example(kind, np.float32)
    m = ex.mechanism
    nl = ex.neighbours
    for fmt, kw in QUANTIZED:
        _quantized_forms(kind, fmt, m, ex, quantize(ex.keys, fmt, **kw), quantize(ex.values, fmt, **kw))
    # key and value scales in one shared array (strided views): the neighbour form's layout
    _quantized_forms(kind, "int8 paired", m, ex, *quantize_pair(ex.keys, ex.values, "int8"))
    # a mechanism that reads float rows gets, for neighbour lists, only rows 0..N-1 and the rows they name
    kt = quantize(np.vstack([ex.keys, np.repeat(ex.keys[:1], 50, axis=0)]), "int8")
    vt = quantize(np.vstack([ex.values, np.repeat(ex.values[:1], 50, axis=0)]), "int8")
    seen: list[int] = []
    original = QuantizedTable.dequantize

    def counting(self: QuantizedTable, rows: Any = None) -> Any:
        seen.append(self.shape[0] if rows is None else len(rows))
        return original(self, rows)

    with mock.patch.object(QuantizedTable, "dequantize", counting):
        m.forward_neighbours(ex.queries, kt, vt, nl)
    assert all(s < kt.shape[0] for s in seen), f"{kind}: the neighbour form dequantised a whole table ({seen})"


CHECKS = (
    check_weights,
    check_forms,
    check_masks,
    check_params,
    check_dtypes,
    check_bad_inputs,
    check_layouts,
    check_contract_methods,
    check_missing_values,
    check_integer_ids,
    check_magnitudes,
    check_mixed_dtypes,
    check_gradients_refuse_nan,
    check_gradients,
    check_rejected_changes,
    check_metadata,
    check_quantized_tables,
)
