"""Quantised tables: the golden INT8 rule bit for bit, round-trip bounds as properties, the layouts against an
element-by-element reference, and attention over the codes (every form of scaled dot-product attention)
against float64 attention over the reference rows.  The contract check (``tests/contract.py``,
``check_quantized_tables``) holds every other mechanism to its dequantised table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ruvattn import DimensionMismatch, EmptyInput, InvalidConfig, NumericalInstability, ScaledDotProductAttention
from ruvattn.compression import QuantizedTable, dequantize, quantize, quantize_int8, quantize_pair
from ruvattn.reference import quant as ref
from tests.golden_harness import GOLDEN_DIR, cases, load

LAYOUTS = [
    ("int8", {}),
    ("int8", {"symmetric": False}),
    ("int8", {"block": 4}),
    ("int8", {"block": 6, "scale_dtype": "float16"}),
    ("int4", {}),
    ("int4", {"symmetric": False}),
    ("int4", {"block": 4}),
    ("int4", {"symmetric": False, "block": 6}),
    ("int4", {"block": 32, "scale_dtype": "float16", "symmetric": False}),
    ("float16", {}),
    ("bfloat16", {}),
]
IDS = [f"{f}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for f, kw in LAYOUTS]


def _reference_rows(t: QuantizedTable) -> np.ndarray:
    return ref.rows(t.codes, t.scales, t.offsets, t.format, t.symmetric, t.block, t.dim)


# -- the golden INT8 case ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", cases(("int8_quant",)), ids=lambda p: p.stem)
@pytest.mark.parametrize("rounding", ["half_even", "half_away"])
def test_golden_int8_bit_for_bit(path: Any, rounding: str) -> None:
    case = load(path)
    x, e = case["inputs"]["x"], case["expected"]
    scale, codes, deq = quantize_int8(x, rounding)
    assert np.array_equal(scale.view(np.uint32), e["scale"].view(np.uint32))
    assert np.array_equal(codes, e[f"codes_{rounding}"]) and codes.dtype == np.int8
    assert np.array_equal(deq.view(np.uint32), e[f"dequant_{rounding}"].view(np.uint32))  # -0.0 included
    t = quantize(x, "int8", rounding=rounding)  # the table stores the same codes and scales
    assert np.array_equal(t.codes, e[f"codes_{rounding}"]) and np.array_equal(t.scales[:, 0], e["scale"])
    assert np.array_equal(t.dequantize(), e[f"dequant_{rounding}"])  # equal values (a stored 0 has no sign)


def test_golden_case_is_in_the_corpus() -> None:
    assert cases(("int8_quant",)), f"no int8_quant case under {GOLDEN_DIR}"


def test_hand_made_rounding_ties() -> None:
    x = np.array([[0.5, 1.5, 2.5, -0.5, -2.5, 127.0]], np.float32)  # scale 1: the ties themselves
    assert quantize_int8(x, "half_even")[1].tolist() == [[0, 2, 2, 0, -2, 127]]
    assert quantize_int8(x, "half_away")[1].tolist() == [[1, 2, 3, -1, -3, 127]]


# -- round trips ------------------------------------------------------------------------------------------

_rows = st.integers(1, 6)
_cols = st.integers(1, 40)
_mag = st.sampled_from([1e-30, 1e-6, 1.0, 1e6, 1e30])


@settings(max_examples=60, deadline=None)
@given(n=_rows, d=_cols, mag=_mag, seed=st.integers(0, 2**16), layout=st.sampled_from(LAYOUTS))
def test_round_trip_within_the_bound(n: int, d: int, mag: float, seed: int, layout: Any) -> None:
    fmt, kw = layout
    x = (np.random.default_rng(seed).standard_normal((n, d)) * mag).astype(np.float32)
    try:
        t = quantize(x, fmt, **kw)
    except InvalidConfig as exc:  # float16 cannot hold 1e6 / 1e30 or scales of 1e-30: refused, never wrong
        assert "float16" in str(exc) and (fmt == "float16" or kw.get("scale_dtype") == "float16")
        return
    back = t.dequantize()
    assert back.shape == x.shape and back.dtype == np.float32
    err = np.abs(back.astype(np.float64) - x)
    bound = t.error_bound().astype(np.float64)[:, None]
    assert (err <= bound + 1e-45).all(), float((err - bound).max())  # strict: float32 rounding is in the bound
    want = _reference_rows(t)  # float64 arithmetic: within two float32 roundings of the row's magnitude
    slack = 4 * np.finfo(np.float32).eps * np.abs(want).max(axis=1, keepdims=True) + 1e-45
    assert (np.abs(back - want) <= slack).all()
    if fmt.startswith("int") and not kw.get("symmetric", True) and kw.get("scale_dtype") != "float16":
        blocks = kw.get("block") or d
        for b in range(0, d - blocks + 1, blocks):  # the minimum of each whole block is stored exactly
            lo = x[:, b : b + blocks].min(axis=1)
            np.testing.assert_array_equal(back[:, b : b + blocks].min(axis=1) <= lo, True)


@pytest.mark.parametrize(("fmt", "kw"), [lay for lay in LAYOUTS if lay[0].startswith("int")], ids=IDS[:9])
def test_error_bound_holds_far_from_zero(fmt: str, kw: dict[str, Any]) -> None:
    """Rows in [1000, 1001] (asymmetric: the offset is 1000, a step 1/255): the float32 rounding of
    ``scale * code + offset`` (~6e-5) is far above a millionth of a step, and the bound still holds."""
    x = (1000 + np.random.default_rng(3).random((400, 48))).astype(np.float32)
    t = quantize(x, fmt, **kw)
    err = np.abs(t.dequantize().astype(np.float64) - x)
    assert (err <= t.error_bound().astype(np.float64)[:, None]).all()


@pytest.mark.parametrize(("fmt", "kw"), LAYOUTS, ids=IDS)
def test_zero_rows_and_constant_rows(fmt: str, kw: dict[str, Any]) -> None:
    x = np.zeros((3, 10), np.float32)
    x[1] = 2.5
    x[2, 3] = -1.25
    t = quantize(x, fmt, **kw)
    if kw.get("scale_dtype") == "float16":  # the scale is rounded up to float16: within half a step
        assert (np.abs(t.dequantize() - x) <= t.error_bound()[:, None]).all()
        assert (t.dequantize()[0] == 0).all()
    else:
        np.testing.assert_array_equal(t.dequantize(), x)  # zeros, a constant and a lone value survive exactly


def test_codes_are_in_range_and_packed_as_documented() -> None:
    x = np.random.default_rng(0).standard_normal((20, 12)).astype(np.float32)
    t = quantize(x, "int4", block=4)
    lo, hi = t.codes & 15, t.codes >> 4
    assert t.codes.shape == (20, 6) and lo.min() >= 1 and hi.max() <= 15  # symmetric: codes -7..7 as 1..15
    u = np.clip(np.rint(x.reshape(20, 3, 4) / t.scales[..., None]), -7, 7) + 8
    np.testing.assert_array_equal(lo.reshape(20, 3, 2), u[..., :2])  # byte i: column i | column i + g/2
    np.testing.assert_array_equal(hi.reshape(20, 3, 2), u[..., 2:])
    t8 = quantize(x, "int8", symmetric=False)
    assert t8.codes.dtype == np.uint8 and t8.codes.min() == 0 and t8.codes.max() == 255


def test_bfloat16_rounds_to_nearest_even() -> None:
    one = np.float32(1.0)
    ulp = np.float32(2.0**-7)  # bfloat16's spacing at 1
    x = np.array([[one + ulp / 2, one + ulp * 1.5, one + ulp / 2 + 2.0**-20, -3.0]], np.float32)
    assert quantize(x, "bfloat16").dequantize().tolist() == [[1.0, 1.0 + 2 * 2.0**-7, 1.0 + 2.0**-7, -3.0]]


def test_bytes_of_each_format() -> None:
    x = np.random.default_rng(1).standard_normal((1000, 128)).astype(np.float32)
    per_row = {
        ("int8", ()): 128 + 4,
        ("int8", (("symmetric", False),)): 128 + 8,
        ("int4", ()): 64 + 4,
        ("int4", (("symmetric", False),)): 64 + 8,
        ("int4", (("block", 32),)): 64 + 16,
        ("int4", (("block", 64), ("symmetric", False), ("scale_dtype", "float16"))): 64 + 8,
        ("float16", ()): 256,
        ("bfloat16", ()): 256,
    }
    for (fmt, kw), b in per_row.items():
        t = quantize(x, fmt, **dict(kw))
        assert t.nbytes == 1000 * b, (fmt, kw, t.nbytes)
    assert quantize(x, "int4", symmetric=False).nbytes * 1000 == 72_000_000  # 1M x 128 INT4 with scales: 72 MB


def test_take_and_rows_are_the_same_rows() -> None:
    x = np.random.default_rng(2).standard_normal((30, 9)).astype(np.float32)
    t = quantize(x, "int4", symmetric=False, block=4)
    ids = [5, 0, 29, 5]
    np.testing.assert_array_equal(t.take(ids).dequantize(), t.dequantize()[ids])
    np.testing.assert_array_equal(t.dequantize(ids), t.dequantize()[ids])
    np.testing.assert_array_equal(np.asarray(t), dequantize(t))
    assert repr(t) == "QuantizedTable(30 x 9, int4 asymmetric, blocks of 4, 900 bytes)"
    with pytest.raises(ValueError):
        t.codes[0, 0] = 1  # a table is a value


@pytest.mark.parametrize(
    ("x", "kwargs", "err", "match"),
    [
        (np.ones((2, 3)), {"format": "int3"}, InvalidConfig, "'format' must be one of int8, int4"),
        (np.ones((2, 3)), {"format": "int4", "block": 3}, InvalidConfig, "'block' must be even; got 3. Try 4"),
        (np.ones((2, 3)), {"block": 0}, InvalidConfig, "'block' must be a positive int"),
        (np.ones((2, 3)), {"rounding": "up"}, InvalidConfig, "'rounding' must be 'half_even' or 'half_away'"),
        (np.ones((2, 3)), {"format": "float16", "block": 4}, InvalidConfig, "float16 stores each value alone"),
        (np.full((2, 3), 1e5), {"format": "float16"}, InvalidConfig, "float16 holds magnitudes up to 65504"),
        (np.full((2, 3), 1e-30), {"scale_dtype": "float16"}, InvalidConfig, "does not fit float16"),
        (np.array([[1.0, np.nan]]), {}, InvalidConfig, r"x must be finite .* got nan at \(0, 1\)"),
        (np.array([[1.0, 1e39]]), {}, InvalidConfig, "x must be finite"),
        (np.ones(3), {}, DimensionMismatch, r"x has shape \(3,\), expected \(n, d\)"),
        ([[1.0], [1.0, 2.0]], {}, DimensionMismatch, "rectangular"),
        (np.array([["a"]]), {}, DimensionMismatch, "real numbers"),
    ],
)
def test_bad_inputs_are_refused(x: Any, kwargs: dict[str, Any], err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        quantize(x, **kwargs)


def test_empty_tables() -> None:
    t = quantize(np.zeros((0, 8), np.float32), "int4")
    assert t.shape == (0, 8) and t.dequantize().shape == (0, 8)
    att = ScaledDotProductAttention(8)
    with pytest.raises(EmptyInput):
        att.forward(np.ones(8, np.float32), t, t)


# -- attention over the codes ---------------------------------------------------------------------------


def _problem(n: int, d: int, dv: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(np.float32) for s in ((n, d), (n, dv), (d,), (5, d)))


@pytest.mark.parametrize(("fmt", "kw"), [lay for lay in LAYOUTS if lay[0].startswith("int")], ids=IDS[:9])
@pytest.mark.parametrize(("n", "d"), [(1, 1), (7, 3), (8, 8), (9, 16), (17, 33), (65, 64), (130, 128)])
def test_scaled_dot_over_codes_equals_reference(fmt: str, kw: dict[str, Any], n: int, d: int) -> None:
    k, v, q, qs = _problem(n, d, d + 2)
    kt, vt = quantize(k, fmt, **kw), quantize(v, fmt, **kw)
    kr, vr = _reference_rows(kt), _reference_rows(vt)
    att = ScaledDotProductAttention(d)
    scale = 1 / np.sqrt(d)
    out, w = ref.attention(q, kr, vr, scale)
    got = att.forward(q, kt, vt)
    assert got.dtype == np.float32
    tol = {"rtol": 2e-5, "atol": 2e-5 * np.abs(vr).max()}
    np.testing.assert_allclose(got, out, **tol)
    np.testing.assert_allclose(att.weights(q, kt)[0], w, rtol=2e-5, atol=1e-7)
    batch = np.stack([ref.attention(x, kr, vr, scale)[0] for x in qs])
    np.testing.assert_allclose(att.forward_batch(qs, kt, vt), batch, **tol)
    rng = np.random.default_rng(n)
    lists = [rng.choice(n, size=rng.integers(0, min(n, 6) + 1), replace=True) for _ in range(5)]
    neigh = att.forward_neighbours(qs, kt, vt, [list(x) for x in lists])
    for i, ids in enumerate(lists):
        want = ref.attention(qs[i], kr[ids], vr[ids], scale)[0] if len(ids) else np.zeros(d + 2)
        np.testing.assert_allclose(neigh[i], want, **tol)
    keep = rng.random(n) < 0.6
    keep[0] = True
    bias = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_allclose(att.forward(q, kt, vt, mask=keep, bias=bias),
                               ref.attention(q, kr, vr, scale, keep, bias)[0], **tol)  # fmt: skip
    ids = rng.integers(0, n, size=4)
    np.testing.assert_allclose(att.forward(q, kt, vt, ids=ids), ref.attention(q, kr[ids], vr[ids], scale)[0], **tol)


def test_masked_keys_are_never_read_and_get_weight_zero() -> None:
    k, v, q, _ = _problem(40, 16, 16)
    kt, vt = quantize(k, "int8"), quantize(v, "int4")
    keep = np.ones(40, bool)
    keep[::3] = False
    att = ScaledDotProductAttention(16)
    w = att.weights(q, kt, mask=keep)
    assert (w[0, ~keep] == 0).all() and abs(w.sum() - 1) < 1e-6
    # the same sums in another grouping (the value loops take four rows per pass): INT4's float32 unpacking
    # cancels (see ruvattn.kernels.quant), so equal to a few float32 steps of the largest value
    np.testing.assert_allclose(att.forward(q, kt, vt, mask=keep), att.forward(q, kt.take(np.flatnonzero(keep)),
                               vt.take(np.flatnonzero(keep))), rtol=1e-5, atol=2e-5 * np.abs(v).max())  # fmt: skip
    with pytest.raises(EmptyInput):
        att.forward(q, kt, vt, mask=np.zeros(40, bool))


def test_keys_and_values_of_different_formats_and_mixed_with_floats() -> None:
    k, v, q, _ = _problem(50, 8, 5)
    att = ScaledDotProductAttention(8)
    kt, vt = quantize(k, "int4", symmetric=False), quantize(v, "int8", block=2)
    want = att.forward(q, kt.dequantize(), vt.dequantize())
    np.testing.assert_allclose(att.forward(q, kt, vt), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(att.forward(q, kt, vt.dequantize()), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(att.forward(q, quantize(k, "bfloat16"), v), att.forward(q, quantize(k, "bfloat16")
                               .dequantize(), v), rtol=1e-6)  # fmt: skip


def test_bad_calls_with_tables_are_typed_errors() -> None:
    k, v, q, qs = _problem(10, 8, 8)
    att = ScaledDotProductAttention(8)
    kt, vt = quantize(k, "int8"), quantize(v, "int8")
    with pytest.raises(DimensionMismatch, match=r"keys has shape \(10, 4\), expected \(n, 8\)"):
        att.forward(q, quantize(k[:, :4], "int8"), vt)
    with pytest.raises(DimensionMismatch, match="keys has 10 rows but values has 9"):
        att.forward(q, kt, quantize(v[:9], "int8"))
    with pytest.raises(DimensionMismatch, match=r"query has shape \(7,\)"):
        att.forward(q[:7], kt, vt)
    bad = q.copy()
    bad[2] = np.nan
    with pytest.raises(NumericalInstability, match=r"query must be finite; got query\[2\] = nan"):
        att.forward(bad, kt, vt)
    with pytest.raises(NumericalInstability, match="query"):
        att.forward_neighbours(np.vstack([bad, bad]), kt, vt, [[0, 1], [2]])
    with pytest.raises(Exception, match="neighbour ids must be in"):
        att.forward_neighbours(qs[:2], kt, vt, [[0, 10], [2]])


def test_prepared_tables_keep_the_codes() -> None:
    k, v, q, qs = _problem(20, 8, 8)
    att = ScaledDotProductAttention(8)
    kt, vt = quantize(k, "int4"), quantize(v, "int4")
    p = att.prepare(kt, vt)
    assert p.keys is kt and p.values is vt
    np.testing.assert_array_equal(att.forward(q, p), att.forward(q, kt, vt))
    np.testing.assert_array_equal(att.forward_batch(qs, p), att.forward_batch(qs, kt, vt))


def test_dropout_in_training_reads_float_rows() -> None:
    k, v, q, _ = _problem(30, 8, 8)
    att = ScaledDotProductAttention(8, dropout=0.5, seed=3).train()
    twin = ScaledDotProductAttention(8, dropout=0.5, seed=3).train()
    kt, vt = quantize(k, "int8"), quantize(v, "int8")
    np.testing.assert_allclose(att.forward(q, kt, vt), twin.forward(q, kt.dequantize(), vt.dequantize()),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


# -- the neighbour form's cache-line touches ------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 7, 63, 64, 65, 100, 127, 128, 129, 192, 200, 255, 256, 257, 512])
@pytest.mark.parametrize("start", [0, 1, 16, 63])
def test_line_plan_touches_every_cache_line_of_every_row(width: int, start: int) -> None:
    """The loads :func:`line_plan` plans (byte 0 and ``p1..``) hit every cache line each row spans, stay inside
    the row, and a line-aligned table with whole-line rows needs exactly one load per line."""
    from ruvattn.kernels import quant as KQ

    buf = np.zeros(64 * 2 + 9 * width, np.uint8)
    base = -buf.ctypes.data % 64 + start
    codes = buf[base : base + 8 * width].reshape(8, width)
    count, *p = KQ.line_plan(codes)
    if width > 256:
        assert count == 0
        return
    offsets = [0, *p[: count - 1]]
    assert offsets == sorted(set(offsets)) and offsets[-1] <= width - 1
    for j in range(8):
        row = codes.ctypes.data + j * width
        assert {(row + o) // 64 for o in offsets} == set(range(row // 64, (row + width - 1) // 64 + 1))
    if start == 0 and width % 64 == 0:
        assert count == width // 64


def _unaligned(t: QuantizedTable) -> QuantizedTable:
    """The same table with its codes moved to an address 16 bytes past a cache line."""
    buf = np.empty(t.codes.nbytes + 128, np.uint8)
    start = -buf.ctypes.data % 64 + 16
    codes = buf[start : start + t.codes.nbytes].view(t.codes.dtype).reshape(t.codes.shape)
    codes[...] = t.codes
    return QuantizedTable(codes, t.scales, t.offsets, t.format, t.symmetric, t.block, t.dim)


@pytest.mark.parametrize(
    ("kfmt", "kkw", "vfmt", "d"),
    [
        ("int8", {}, "int8", 128),  # two lines per row: the written-out touch loop
        ("int8", {}, "int4", 200),  # five loads per key row, two per value row
        ("int8", {}, "int8", 300),  # rows wider than 256 bytes: each node's own rows touched
        ("int8", {"symmetric": False}, "int8", 150),  # offsets touched too
        ("int4", {}, "int4", 128),  # one line per row
        ("int4", {"symmetric": False, "block": 32}, "int8", 64),
    ],
)
@pytest.mark.parametrize("aligned", [True, False])
def test_neighbour_form_over_every_line_plan(kfmt: str, kkw: dict[str, Any], vfmt: str, d: int, aligned: bool) -> None:
    """Every node of a neighbour list (more nodes than a task, rows touched a few nodes ahead) against float64
    attention over the reference rows, for each touch plan, line-aligned tables or not; keys alone too."""
    rng = np.random.default_rng(d)
    k, v, _, _ = _problem(60, d, d + 3, seed=d)
    kt, vt = quantize(k, kfmt, **kkw), quantize(v, vfmt)
    assert kt.codes.ctypes.data % 64 == 0 and vt.codes.ctypes.data % 64 == 0  # quantize's own tables start on a line
    if not aligned:
        kt, vt = _unaligned(kt), _unaligned(vt)
    kr, vr = _reference_rows(kt), _reference_rows(vt)
    qs = rng.standard_normal((150, d)).astype(np.float32)
    lists = [rng.integers(0, 60, size=rng.integers(0, 12)) for _ in range(150)]
    att = ScaledDotProductAttention(d)
    scale = 1 / np.sqrt(d)
    got = att.forward_neighbours(qs, kt, vt, [list(x) for x in lists])
    w = att.weights(qs, kt, neighbours=[list(x) for x in lists])
    assert w.shape == (1, sum(len(x) for x in lists))
    w = w[0]
    at = 0
    for i, ids in enumerate(lists):
        want, wref = ref.attention(qs[i], kr[ids], vr[ids], scale) if len(ids) else (np.zeros(d + 3), np.zeros(0))
        np.testing.assert_allclose(got[i], want, rtol=2e-5, atol=2e-5 * np.abs(vr).max())
        np.testing.assert_allclose(w[at : at + len(ids)], wref, rtol=2e-5, atol=1e-7)
        at += len(ids)


# -- quantize_pair: key and value scales side by side in one array ------------------------------------------


@pytest.mark.parametrize(("fmt", "kw"), [lay for lay in LAYOUTS if lay[0].startswith("int")], ids=IDS[:9])
def test_paired_tables_equal_separate_ones_with_scales_side_by_side(fmt: str, kw: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    k = rng.standard_normal((37, 20)).astype(np.float32)
    v = (3 * rng.standard_normal((37, 13)) + 1).astype(np.float32)
    kp, vp = quantize_pair(k, v, fmt, **kw)
    for paired, alone in ((kp, quantize(k, fmt, **kw)), (vp, quantize(v, fmt, **kw))):
        assert (paired.format, paired.symmetric, paired.block, paired.shape) == (
            alone.format, alone.symmetric, alone.block, alone.shape)  # fmt: skip
        np.testing.assert_array_equal(paired.codes, alone.codes)
        np.testing.assert_array_equal(paired.scales, alone.scales)
        assert (paired.offsets is None) == (alone.offsets is None)
        if alone.offsets is not None:
            np.testing.assert_array_equal(paired.offsets, alone.offsets)
        assert paired.nbytes == alone.nbytes
        np.testing.assert_array_equal(paired.dequantize(), alone.dequantize())
    # one array: row j holds key j's scales, value j's scales (then the offsets), starting on a cache line
    base = kp.scales.base
    assert base is vp.scales.base and kp.scales.ctypes.data % 64 == 0
    arrays = [kp.scales, vp.scales] + ([kp.offsets, vp.offsets] if kp.offsets is not None else [])
    assert all(a.base is base and a.strides == arrays[0].strides for a in arrays)
    starts = [a.ctypes.data - arrays[0].ctypes.data for a in arrays]
    widths = [a.shape[1] * a.itemsize for a in arrays]
    assert starts == list(np.cumsum([0, *widths[:-1]])) and arrays[0].strides[0] == sum(widths)


@pytest.mark.parametrize(("fmt", "kw"), [lay for lay in LAYOUTS if lay[0].startswith("int")], ids=IDS[:9])
def test_every_form_over_paired_tables_equals_separate_tables(fmt: str, kw: dict[str, Any]) -> None:
    """The same arithmetic over the same codes and scales, only the scales' layout differs: equal up to the
    summation order the compiler picks for each layout (fast-math re-association; measured up to 1 float32 ulp,
    and INT4's unpacking cancels, see test_masked_keys_are_never_read_and_get_weight_zero).  A scale read
    from the wrong column or row would be off by the size of the values."""
    rng = np.random.default_rng(3)
    n, d, dv = 70, 24, 17
    k = rng.standard_normal((n, d)).astype(np.float32)
    v = rng.standard_normal((n, dv)).astype(np.float32)
    qs = rng.standard_normal((6, d)).astype(np.float32)
    kp, vp = quantize_pair(k, v, fmt, **kw)
    ks, vs = quantize(k, fmt, **kw), quantize(v, fmt, **kw)
    att = ScaledDotProductAttention(d)
    lists = [list(rng.integers(0, n, size=s)) for s in (0, 1, 5, 32, 33, 7)]
    keep = rng.random(n) < 0.7
    bias = rng.standard_normal(n).astype(np.float32)
    forms = [
        lambda kt, vt: att.forward(qs[0], kt, vt),
        lambda kt, vt: att.forward(qs[0], kt, vt, mask=keep, bias=bias),
        lambda kt, vt: att.forward_batch(qs, kt, vt),
        lambda kt, vt: att.forward_neighbours(qs, kt, vt, lists),
        lambda kt, vt: att.weights(qs, kt, neighbours=lists),
        lambda kt, vt: att.weights(qs[0], kt),
    ]
    for form in forms:
        np.testing.assert_allclose(form(kp, vp), form(ks, vs), rtol=1e-5, atol=2e-5 * np.abs(v).max())


def test_quantize_pair_refuses_what_it_cannot_pair() -> None:
    k = np.ones((4, 3), np.float32)
    with pytest.raises(InvalidConfig, match="'format' must be 'int8' or 'int4'"):
        quantize_pair(k, k, "float16")
    with pytest.raises(DimensionMismatch, match="keys has 4 rows but values has 5"):
        quantize_pair(k, np.ones((5, 3), np.float32))
    with pytest.raises(InvalidConfig, match="'block' must be even"):
        quantize_pair(k, k, "int4", block=3)
