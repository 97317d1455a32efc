r"""Quantised key/value tables: INT8 and INT4 codes with per-row or per-block scales, float16, bfloat16.

A :class:`QuantizedTable` stores an ``(n, d)`` table of real rows in fewer bytes and is accepted by every
attention mechanism wherever it accepts a key or value table (one query, a batch, neighbour lists by id).
Scaled dot-product attention reads the INT8/INT4 codes directly (dequantised in registers inside its
kernels, :mod:`ruvattn.kernels.quant`); every other mechanism gets float rows -- the whole table for one
query or a batch (that is the key set it attends over), only the rows the neighbour lists name for the
neighbour form -- and computes exactly as on :meth:`QuantizedTable.dequantize`'s table.

Formats (``x`` a row block, ``s`` its scale, ``u`` its stored code):

* ``int8`` symmetric: ``s = fl32(amax / 127)``, ``code = clamp(round(fl32(x / s)), -127, 127)`` stored
  as int8, ``x ~ fl32(code * s)`` -- the golden ``int8_quant`` case, bit for bit, with either rounding;
* ``int8`` asymmetric: ``s = (max - min) / 255``, ``u = clamp(round((x - min) / s), 0, 255)`` as uint8,
  ``x ~ s * u + min`` (the row's minimum is exact);
* ``int4`` symmetric: ``s = amax / 7``, ``code`` in ``[-7, 7]`` stored as ``u = code + 8``, two per byte;
* ``int4`` asymmetric: ``s = (max - min) / 15``, ``u`` in ``[0, 15]``, ``x ~ s * u + min``;
* ``float16`` (IEEE half) and ``bfloat16`` (the top 16 bits of float32, rounded to nearest even).

``block`` columns share a scale (``None``: one scale per row).  INT4 packs, inside each block of ``g``
columns, column ``i`` in the low nibble and column ``i + g/2`` in the high nibble of byte ``i``: a kernel
unpacks a run of bytes into two runs of columns with vector instructions.  Widths that ``block`` (or 2 for
INT4) does not divide are padded with zero columns, which the attention never reads into an output.
Scales (and offsets) are float32, or float16 with ``scale_dtype="float16"`` (half the metadata; a table
whose scales do not fit float16's range is refused).

Shapes:
    - ``quantize(x (n, d))`` -> :class:`QuantizedTable` with ``shape == (n, d)``
    - ``codes``: int8 ``(n, W)`` (int8 symmetric), uint8 ``(n, W)`` (int8 asymmetric), uint8 ``(n, W/2)``
      (int4), uint16 ``(n, d)`` bit patterns (float16 / bfloat16); ``W`` = ``d`` padded
    - ``scales`` / ``offsets``: ``(n, W / block)``

>>> import numpy as np
>>> t = quantize(np.array([[0.5, -1.0, 0.25]], np.float32), "int8")
>>> t.codes.tolist(), t.scales.tolist()
([[64, -127, 32]], [[0.007874015718698502]])
>>> t.dequantize().astype(float).round(3).tolist()
[[0.504, -1.0, 0.252]]
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, InvalidConfig

__all__ = ["FORMATS", "QuantizedTable", "dequantize", "quantize", "quantize_int8", "quantize_pair"]

FORMATS = ("int8", "int4", "float16", "bfloat16")
Rounding = Literal["half_even", "half_away"]
_F32 = np.dtype(np.float32)


def _round(v: NDArray[np.floating], rounding: str) -> NDArray[np.floating]:
    if rounding == "half_even":
        return np.rint(v)
    return np.trunc(v + np.copysign(np.asarray(0.5, v.dtype), v))  # half away from zero, as C roundf


def real_matrix(op: str, x: Any, name: str = "x", expected: str = "(n, d)") -> NDArray[Any]:
    """``np.asarray(x)`` if it is a 2-D array of real numbers (or booleans), else :class:`DimensionMismatch`
    naming ``name`` and the ``expected`` shape (the compression modules' shared input check)."""
    try:
        arr = np.asarray(x)
    except ValueError as exc:
        raise DimensionMismatch(f"{op}: {name} must be a rectangular array; got ragged rows ({exc}).") from None
    if arr.ndim != 2:
        raise DimensionMismatch(f"{op}: {name} has shape {arr.shape}, expected {expected}.")
    if arr.dtype.kind not in "fiub":
        raise DimensionMismatch(f"{op}: {name} must hold real numbers; got dtype {arr.dtype}.")
    return arr


def _checked(x: Any, op: str) -> NDArray[np.float32]:
    arr = real_matrix(op, x)
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused below
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise InvalidConfig(
            f"{op}: x must be finite (a float32 value); got {arr[tuple(bad)]} at {tuple(bad)}. "
            "Values beyond float32's range cannot be quantised."
        )
    return arr


def quantize_int8(
    x: Any, rounding: Rounding = "half_even"
) -> tuple[NDArray[np.float32], NDArray[np.int8], NDArray[np.float32]]:
    """Symmetric per-row INT8 in IEEE float32, the golden ``int8_quant`` rule: ``(scale (R,), codes (R, C),
    dequant (R, C))``.  ``scale = fl32(amax / 127)``; ``code = clamp(round(fl32(x / scale)), -127, 127)``
    (a division, not a multiplication by a reciprocal); ``dequant = fl32(code * scale)``; a zero row has scale
    0, codes 0."""
    if rounding not in ("half_even", "half_away"):
        raise InvalidConfig(f"quantize_int8: 'rounding' must be 'half_even' or 'half_away'; got {rounding!r}.")
    arr = _checked(x, "quantize_int8")
    scale, code = _symmetric(arr[:, None, :], np.float32(127), rounding)
    # from the float codes: a -0.5 rounded to even is -0.0, and so is its dequantised value (torch's bits)
    return scale[:, 0], code[:, 0].astype(np.int8), (code * scale[..., None])[:, 0]


def _int_codes(
    xb: NDArray[np.float32], bits: int, symmetric: bool, rounding: str, half: bool
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any] | None]:
    """Codes, scales and offsets of blocks ``xb (n, nb, g)``, all arithmetic in float32.  With ``half`` the
    scale is rounded *up* and the offset *down* to float16 before the codes are computed from them, so every
    value stays in range and the error bound (half a stored step) holds for the stored scales."""
    if symmetric:
        top = np.float32(127 if bits == 8 else 7)
        scale = (np.abs(xb).max(axis=2) / top).astype(np.float32)
        if half:
            scale = _up16(scale)
        code = _symmetric_codes(xb, scale, top, rounding)
        codes = code.astype(np.int8) if bits == 8 else (code + 8).astype(np.uint8)
        return codes, (_bits16(scale) if half else scale), None
    top = np.float32(255 if bits == 8 else 15)
    lo = xb.min(axis=2)
    if half:
        lo = _down16(lo)
    scale = ((xb.max(axis=2) - lo) / top).astype(np.float32)
    if half:
        scale = _up16(scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (xb - lo[..., None]) / scale[..., None]
    v = np.where(scale[..., None] > 0, v, np.float32(0))
    codes = np.clip(_round(v, rounding), 0, top).astype(np.uint8)
    return codes, (_bits16(scale) if half else scale), (_bits16(lo) if half else lo.astype(np.float32))


_TINY16 = np.float32(2.0**-14)  # float16's smallest normal: below it a scale keeps too few bits


def _up16(a: NDArray[np.float32]) -> NDArray[np.float32]:
    """The smallest float16 >= each entry (as float32)."""
    h = a.astype(np.float16)
    h = np.where(h.astype(np.float32) < a, np.nextafter(h, np.float16(np.inf)), h)
    return h.astype(np.float32)


def _down16(a: NDArray[np.float32]) -> NDArray[np.float32]:
    """The largest float16 <= each entry (as float32)."""
    h = a.astype(np.float16)
    h = np.where(h.astype(np.float32) > a, np.nextafter(h, np.float16(-np.inf)), h)
    return h.astype(np.float32)


def _bits16(a: NDArray[np.float32]) -> NDArray[np.uint16]:
    return a.astype(np.float16).view(np.uint16)


def _symmetric(
    xb: NDArray[np.float32], top: np.float32, rounding: str
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """``(scale (n, nb), float codes (n, nb, g))`` of symmetric blocks, every step in float32."""
    scale = (np.abs(xb).max(axis=2) / top).astype(np.float32)
    return scale, _symmetric_codes(xb, scale, top, rounding)


def _symmetric_codes(
    xb: NDArray[np.float32], scale: NDArray[np.float32], top: np.float32, rounding: str
) -> NDArray[np.float32]:
    with np.errstate(divide="ignore", invalid="ignore"):
        v = xb / scale[..., None]  # float32 / float32: rounded to float32, as the golden rule says
    v = np.where(scale[..., None] > 0, v, np.float32(0))
    return np.clip(_round(v, rounding), -top, top)


def _bfloat16_bits(x: NDArray[np.float32]) -> NDArray[np.uint16]:
    """float32 -> bfloat16 bit patterns, rounded to nearest even (finite inputs)."""
    b = x.view(np.uint32).astype(np.uint64)
    b = b + 0x7FFF + ((b >> 16) & 1)
    return (b >> 16).astype(np.uint16)


def quantize(
    x: Any,
    format: str = "int8",
    *,
    symmetric: bool = True,
    block: int | None = None,
    rounding: Rounding = "half_even",
    scale_dtype: str = "float32",
) -> QuantizedTable:
    """Quantise the rows of ``x (n, d)`` into a :class:`QuantizedTable` (see the module docstring).

    ``format``: ``"int8"``, ``"int4"``, ``"float16"`` or ``"bfloat16"``; ``symmetric`` (INT formats): zero
    maps to code 0, else each block keeps its own minimum; ``block``: columns per scale (``None``: the whole
    row; INT4 needs an even block); ``rounding``: ``"half_even"`` (numpy/torch) or ``"half_away"`` (C
    ``roundf``); ``scale_dtype``: ``"float32"`` or ``"float16"``.
    """
    op = "quantize"
    if format not in FORMATS:
        raise InvalidConfig(f"{op}: 'format' must be one of {', '.join(FORMATS)}; got {format!r}.")
    if rounding not in ("half_even", "half_away"):
        raise InvalidConfig(f"{op}: 'rounding' must be 'half_even' or 'half_away'; got {rounding!r}.")
    if scale_dtype not in ("float32", "float16"):
        raise InvalidConfig(f"{op}: 'scale_dtype' must be 'float32' or 'float16'; got {scale_dtype!r}.")
    arr = _checked(x, op)
    n, d = arr.shape
    if format in ("float16", "bfloat16"):
        if block is not None or scale_dtype != "float32" or not symmetric:
            raise InvalidConfig(f"{op}: {format} stores each value alone: 'block', 'symmetric' and "
                                "'scale_dtype' are for int8/int4; leave them at their defaults.")  # fmt: skip
        if format == "float16":
            big = np.abs(arr).max() if arr.size else 0.0
            if big > np.finfo(np.float16).max:
                raise InvalidConfig(f"{op}: float16 holds magnitudes up to 65504; x has {big:.3g}. "
                                    "Use 'bfloat16' (float32's range) or an int format with scales.")  # fmt: skip
            codes = arr.astype(np.float16).view(np.uint16)
        else:
            codes = _bfloat16_bits(arr)
        codes = _line_aligned(codes)
        empty = np.empty((n, 0), np.float32)
        return QuantizedTable(codes, empty, None, format, True, d, d)
    bits = 8 if format == "int8" else 4
    if block is not None and (not isinstance(block, (int, np.integer)) or isinstance(block, bool) or block < 1):
        raise InvalidConfig(f"{op}: 'block' must be a positive int or None; got {block!r}.")
    if bits == 4 and block is not None and block % 2:
        raise InvalidConfig(f"{op}: int4 packs two columns of a block per byte: 'block' must be even; "
                            f"got {block}. Try {block + 1}.")  # fmt: skip
    step = 2 if bits == 4 else 1
    g = int(block) if block is not None else max(step, d + (d % step))
    width = -(-max(d, 1) // g) * g
    padded = np.zeros((n, width), np.float32)
    padded[:, :d] = arr
    half = scale_dtype == "float16"
    blocks = padded.reshape(n, width // g, g)
    if half:
        _fits16(op, blocks, symmetric, bits)
    codes, scale, offset = _int_codes(blocks, bits, symmetric, rounding, half)
    codes = codes.reshape(n, width)
    if bits == 4:
        h = g // 2
        nib = codes.reshape(n, width // g, 2, h)
        codes = (nib[:, :, 0, :] | (nib[:, :, 1, :] << 4)).astype(np.uint8).reshape(n, width // 2)
    return QuantizedTable(_line_aligned(codes), scale, offset, format, bool(symmetric), g, d)


def quantize_pair(
    keys: Any,
    values: Any,
    format: str = "int8",
    *,
    symmetric: bool = True,
    block: int | None = None,
    rounding: Rounding = "half_even",
    scale_dtype: str = "float32",
) -> tuple[QuantizedTable, QuantizedTable]:
    """Quantise a key table and its value table (one value row per key) into two :class:`QuantizedTable` whose
    per-row numbers -- scales, and offsets when asymmetric -- are views into one shared array, key ``j``'s and
    value ``j``'s side by side.

    Each table equals :func:`quantize` of its rows with the same options, code for code and scale for scale;
    only where the scales lie differs.  It is the layout for the neighbour form (rows read by id from a large
    table, every row a cache miss): key and value ``j``'s scales come in one cache line, so an INT8 neighbour
    of width 128 costs 5 lines (2 key codes, 2 value codes, 1 scales) instead of 6, and an asymmetric one 5
    instead of 8.  Options as :func:`quantize`; INT formats only (float16/bfloat16 store no per-row numbers).

    >>> import numpy as np
    >>> k, v = np.ones((3, 4), np.float32), np.full((3, 4), 2.0, np.float32)
    >>> kt, vt = quantize_pair(k, v)
    >>> kt.scales.base is vt.scales.base, vt.dequantize()[0].tolist()
    (True, [2.0, 2.0, 2.0, 2.0])
    """
    op = "quantize_pair"
    if format not in ("int8", "int4"):
        raise InvalidConfig(f"{op}: 'format' must be 'int8' or 'int4' ({format!r} stores no scales to share); "
                            "use quantize() for each table.")  # fmt: skip
    options = {"symmetric": symmetric, "block": block, "rounding": rounding, "scale_dtype": scale_dtype}
    kt, vt = quantize(keys, format, **options), quantize(values, format, **options)
    if kt.shape[0] != vt.shape[0]:
        raise DimensionMismatch(f"{op}: keys has {kt.shape[0]} rows but values has {vt.shape[0]}; give one value "
                                "row per key.")  # fmt: skip
    parts = [kt.scales, vt.scales]
    if kt.offsets is not None and vt.offsets is not None:
        parts += [kt.offsets, vt.offsets]
    side = _line_aligned(np.concatenate(parts, axis=1))
    ends = np.cumsum([p.shape[1] for p in parts])
    views = [side[:, end - p.shape[1] : end] for p, end in zip(parts, ends, strict=True)]
    k_off, v_off = (views[2], views[3]) if len(views) == 4 else (None, None)
    return (
        QuantizedTable(kt.codes, views[0], k_off, kt.format, kt.symmetric, kt.block, kt.dim),
        QuantizedTable(vt.codes, views[1], v_off, vt.format, vt.symmetric, vt.block, vt.dim),
    )


#: bytes per cache line: :func:`quantize` starts its code tables on one
CACHE_LINE = 64


def _line_aligned(a: NDArray[Any]) -> NDArray[Any]:
    """A C-contiguous copy of ``a`` whose first byte starts a cache line.  A row read by id then spans
    ``ceil(row bytes / 64)`` lines, not one more (numpy aligns to 16 bytes): for 128-byte INT8 rows 2 lines
    instead of 3, which the neighbour form, bound by cache misses, feels (measured ~10 %)."""
    if a.ctypes.data % CACHE_LINE == 0 and a.flags.c_contiguous:
        return a
    buf = np.empty(a.nbytes + CACHE_LINE, np.uint8)
    start = -buf.ctypes.data % CACHE_LINE
    out = buf[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _fits16(op: str, blocks: NDArray[np.float32], symmetric: bool, bits: int) -> None:
    """Refuse float16 scales that would overflow or keep too few bits (a non-zero scale below 2**-14)."""
    top = (127 if bits == 8 else 7) if symmetric else (255 if bits == 8 else 15)
    span = np.abs(blocks).max(axis=2) if symmetric else blocks.max(axis=2) - blocks.min(axis=2)
    scale = span / np.float32(top)
    big = np.abs(blocks).max(axis=2) if not symmetric else scale
    bad = ((scale > 0) & (scale < _TINY16)) | (scale > 65504) | (big > 65504)
    if bad.any():
        i = tuple(np.argwhere(bad)[0].tolist())
        raise InvalidConfig(f"{op}: block {i} needs a scale of {scale[i]:.3g}, which does not fit float16 "
                            "(6.1e-5 to 65504 with full precision); use scale_dtype='float32'.")  # fmt: skip


def _scales32(a: NDArray[Any] | None) -> NDArray[np.float32] | None:
    if a is None:
        return None
    return a.view(np.float16).astype(np.float32) if a.dtype == np.uint16 else a


class QuantizedTable:
    """An ``(n, d)`` table stored as codes plus scales; built by :func:`quantize`.

    Attributes: ``codes``, ``scales``, ``offsets`` (``None`` for symmetric formats), ``format``,
    ``symmetric``, ``block`` (columns per scale), ``dim`` (``d``), ``shape``, ``nbytes`` (every stored
    array), ``bits_per_value``.  ``np.asarray(table)`` is :meth:`dequantize` (float32).
    """

    __slots__ = ("_kernel_args", "block", "codes", "dim", "format", "offsets", "scales", "symmetric")
    ndim = 2
    dtype = _F32

    def __init__(
        self,
        codes: NDArray[Any],
        scales: NDArray[Any],
        offsets: NDArray[Any] | None,
        format: str,
        symmetric: bool,
        block: int,
        dim: int,
    ) -> None:
        self.codes, self.scales, self.offsets = codes, scales, offsets
        self.format, self.symmetric, self.block, self.dim = format, symmetric, int(block), int(dim)
        for a in (codes, scales, offsets):
            if a is not None:
                a.setflags(write=False)  # a table is a value: its arrays never change under a kernel
        self._kernel_args: tuple[Any, ...] | None = None

    @property
    def readable_in_kernels(self) -> bool:
        """Whether the attention kernels read this table's codes directly (INT8 / INT4)."""
        return self.format in ("int8", "int4")

    def kernel_args(self) -> tuple[Any, ...]:
        """``(codes, scales, offsets, meta, zero)`` as :mod:`ruvattn.kernels.quant` takes them."""
        if self._kernel_args is None:
            if not self.readable_in_kernels:
                raise InvalidConfig(f"QuantizedTable: {self.format} tables are read as float rows, not by the "
                                    "quantised kernels.")  # fmt: skip
            off = self.offsets if self.offsets is not None else self.scales
            nb = self.scales.shape[1]
            mode = 0 if self.format == "int8" else 1
            meta = np.array([mode, self.block, nb, self.width, int(self.offsets is not None)], dtype=np.int64)
            zero = np.float32(8 if self.format == "int4" and self.symmetric else 0)
            self._kernel_args = (self.codes, self.scales, off, meta, zero)
        return self._kernel_args

    @property
    def shape(self) -> tuple[int, int]:
        return (self.codes.shape[0], self.dim)

    def __len__(self) -> int:
        return self.codes.shape[0]

    @property
    def width(self) -> int:
        """``d`` padded to whole blocks (the columns the codes hold)."""
        return self.codes.shape[1] * (2 if self.format == "int4" else 1)

    @property
    def nbytes(self) -> int:
        """Bytes of every stored array (codes, scales, offsets)."""
        return sum(a.nbytes for a in (self.codes, self.scales, self.offsets) if a is not None)

    @property
    def bits_per_value(self) -> float:
        """Stored bits per table entry, scales and padding included."""
        return 8.0 * self.nbytes / max(1, self.shape[0] * self.dim)

    def __repr__(self) -> str:
        kind = self.format if self.format in ("float16", "bfloat16") else (
            f"{self.format} {'symmetric' if self.symmetric else 'asymmetric'}, "
            f"{'per row' if self.block >= self.width else f'blocks of {self.block}'}"
        )  # fmt: skip
        return f"QuantizedTable({self.shape[0]} x {self.dim}, {kind}, {self.nbytes:,} bytes)"

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        out = self.dequantize()
        return out if dtype is None else out.astype(dtype)

    def dequantize(self, rows: Any = None) -> NDArray[np.float32]:
        """The float32 table ``(n, d)`` the codes stand for, or only ``rows`` (ids) of it."""
        codes = self.codes if rows is None else self.codes[np.asarray(rows, dtype=np.int64)]
        n = codes.shape[0]
        if self.format == "float16":
            return codes.view(np.float16).astype(np.float32)
        if self.format == "bfloat16":
            return (codes.astype(np.uint32) << 16).view(np.float32)
        sel = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        scale = _scales32(self.scales)[sel]
        offset = _scales32(self.offsets)
        g, width = self.block, self.width
        if self.format == "int4":
            h = g // 2
            packed = codes.reshape(n, width // g, h)
            u = np.concatenate([packed & 15, packed >> 4], axis=2)  # (n, nb, g): low columns, then high
        else:
            u = codes.reshape(n, width // g, g)
        if offset is not None:
            x = u.astype(np.float32) * scale[..., None] + offset[sel][..., None]
        elif self.format == "int4":
            x = (u.astype(np.int16) - 8).astype(np.float32) * scale[..., None]
        else:
            x = u.astype(np.float32) * scale[..., None]  # fl32(code * scale): the golden dequantisation
        return np.ascontiguousarray(x.reshape(n, width)[:, : self.dim], dtype=np.float32)

    def take(self, rows: Any) -> QuantizedTable:
        """The table of ``rows`` (ids), still quantised (no float copy)."""
        idx = np.asarray(rows, dtype=np.int64)
        off = None if self.offsets is None else self.offsets[idx]
        return QuantizedTable(self.codes[idx], self.scales[idx], off, self.format, self.symmetric, self.block,
                              self.dim)  # fmt: skip

    def error_bound(self) -> NDArray[np.float32]:
        """Per-row bound on ``|x - dequantize(x)|``: half a step (``scale / 2``) for INT formats plus float32
        rounding of ``scale * code + offset`` (4 ulps of the row's largest dequantised magnitude: with an offset
        far from zero that rounding can exceed a millionth of a step), the format's half-ulp for
        float16/bfloat16, as a multiple of each value's magnitude folded into a row bound from the stored
        values."""
        if self.format in ("float16", "bfloat16"):
            rel = 2.0**-11 if self.format == "float16" else 2.0**-8
            mag = np.abs(self.dequantize()).max(axis=1) if self.dim else np.zeros(self.shape[0])
            tiny = 2.0**-25 if self.format == "float16" else 0.0  # half of float16's smallest subnormal
            return (mag * rel + tiny).astype(np.float32)
        s = _scales32(self.scales)
        if not s.shape[1] or not self.dim:
            return np.zeros(self.shape[0], np.float32)
        mag = np.abs(self.dequantize()).max(axis=1).astype(np.float64)
        return (s.max(axis=1).astype(np.float64) * 0.5 + mag * 2.0**-22).astype(np.float32)


def dequantize(table: QuantizedTable, rows: Any = None) -> NDArray[np.float32]:
    """:meth:`QuantizedTable.dequantize` as a function."""
    if not isinstance(table, QuantizedTable):
        raise InvalidConfig(f"dequantize: expected a QuantizedTable; got {type(table).__name__}.")
    return table.dequantize(rows)
