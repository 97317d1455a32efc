r"""Per-layer precision for a table indexed by HNSW: rows stored in a format chosen by the node's top level.

An HNSW search starts at the entry point and descends through the upper layers, which hold few nodes
(a fraction :math:`M^{-\ell}` reaches level :math:`\ell`) that every search passes through, before its beam
over layer 0.  :class:`LayeredTable` spends more bits on those few nodes and fewer on the many layer-0-only
ones: ``formats={0: "int4_asym", 1: "int8"}`` stores a node whose top level is 0 as per-row asymmetric INT4
and every node that reaches layer 1 or higher as INT8 (a node takes the format of the highest key ``<=`` its
top level).

Storage: one :class:`~ruvattn.compression.QuantizedTable` per group (built by
:func:`~ruvattn.compression.quantize` over that group's rows, in row order), plus one int32 map ``slot``:
row ``i`` is row ``slot[i] - starts[g]`` of group ``g``'s table, where ``g`` is the group whose range
``starts[g]:starts[g+1]`` holds ``slot[i]``.  One map stands for both the row -> group and the row -> position
maps (4 bytes per row instead of 8), and :attr:`LayeredTable.nbytes` counts it and ``starts``.

Comparing at equal bytes: :func:`uniform_at_bytes` finds the uniform layout (from :data:`UNIFORM_CANDIDATES`)
with the smallest reconstruction error whose bytes fit a budget, and :func:`layered_error` measures the
attention-output error of each layout over the nodes real searches read, with every layout's bytes beside it.

Shapes:
    - ``quantize_by_level(table (N, d), levels (N,), formats)`` -> :class:`LayeredTable` with shape ``(N, d)``
    - ``LayeredTable.dequantize(rows=None)`` -> float32 ``(N, d)`` or ``(len(rows), d)``
    - ``LayeredTable.slot``: int32 ``(N,)``; ``starts``: int64 ``(G + 1,)``

>>> import numpy as np
>>> x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
>>> t = quantize_by_level(x, [0, 2, 0, 1, 0, 0], {0: "int4_asym", 1: "int8"})
>>> [(g["format"], g["nodes"], g["bytes"]) for g in t.groups]
[('int4_asym', 4, 48), ('int8', 2, 24)]
>>> t.group_of.tolist(), t.nbytes
([0, 1, 0, 1, 0, 0], 120)
>>> bool(np.array_equal(t.dequantize()[1], quantize(x[[1, 3]], "int8").dequantize()[0]))
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from ruvattn.compression.quantization import QuantizedTable, quantize, real_matrix
from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig, OutOfBounds
from ruvattn.graph.hnsw import HNSWIndex
from ruvattn.graph.search import trace_search
from ruvattn.reference import attention as reference_attention

__all__ = [
    "UNIFORM_CANDIDATES",
    "LayeredReport",
    "LayeredTable",
    "UniformChoice",
    "layered_error",
    "quantize_by_level",
    "uniform_at_bytes",
]

#: Named layouts (keyword arguments of :func:`quantize`) that :func:`uniform_at_bytes` chooses among: the
#: PRESETS plus the block variants that trade scale bytes for accuracy.  Bytes per row for ``d = 64``:
#: 36 (int4, int4_asym_b64_f16), 40 (int4_asym, int4_b32, int4_b16_f16, int4_asym_b32_f16), 48 (int4_asym_b32,
#: int4_asym_b16_f16), 56 (int4_asym_b16), 68 (int8, int8_b32_f16), 72 (int8_asym, int8_b32), 128 (float16,
#: bfloat16).
UNIFORM_CANDIDATES: dict[str, dict[str, Any]] = {
    "int8": {"format": "int8"},
    "int8_asym": {"format": "int8", "symmetric": False},
    "int8_b32": {"format": "int8", "block": 32},
    "int8_b32_f16": {"format": "int8", "block": 32, "scale_dtype": "float16"},
    "int4": {"format": "int4"},
    "int4_asym": {"format": "int4", "symmetric": False},
    "int4_b32": {"format": "int4", "block": 32},
    "int4_b16_f16": {"format": "int4", "block": 16, "scale_dtype": "float16"},
    "int4_asym_b16": {"format": "int4", "symmetric": False, "block": 16},
    "int4_asym_b16_f16": {"format": "int4", "symmetric": False, "block": 16, "scale_dtype": "float16"},
    "int4_asym_b32": {"format": "int4", "symmetric": False, "block": 32},
    "int4_asym_b32_f16": {"format": "int4", "symmetric": False, "block": 32, "scale_dtype": "float16"},
    "int4_asym_b64_f16": {"format": "int4", "symmetric": False, "block": 64, "scale_dtype": "float16"},
    "float16": {"format": "float16"},
    "bfloat16": {"format": "bfloat16"},
}

_QUANTIZE_KEYS = ("format", "symmetric", "block", "rounding", "scale_dtype")

FormatSpec = str | Mapping[str, Any]


def _presets() -> dict[str, dict[str, Any]]:
    """The package's PRESETS, then the other names of :data:`UNIFORM_CANDIDATES`."""
    from ruvattn.compression import PRESETS  # imported late: the package may import this module

    return {**UNIFORM_CANDIDATES, **PRESETS}


def _resolve(op: str, spec: Any) -> tuple[str, dict[str, Any]]:
    """``(display name, quantize kwargs)`` of a preset name (PRESETS or :data:`UNIFORM_CANDIDATES`) or a kwargs
    mapping."""
    if isinstance(spec, str):
        presets = _presets()
        if spec not in presets:
            raise InvalidConfig(f"{op}: unknown preset {spec!r}; choose one of {', '.join(presets)}, "
                                "or pass quantize() keyword arguments as a dict.")  # fmt: skip
        return spec, dict(presets[spec])
    if isinstance(spec, Mapping):
        extra = [k for k in spec if k not in _QUANTIZE_KEYS]
        if extra:
            raise InvalidConfig(f"{op}: a format dict takes quantize() keywords ({', '.join(_QUANTIZE_KEYS)}); "
                                f"got {extra[0]!r}.")  # fmt: skip
        kw = dict(spec)
        name = ", ".join(f"{k}={v}" for k, v in kw.items()) or "int8"
        return f"quantize({name})", kw
    raise InvalidConfig(f"{op}: a format is a preset name or a dict of quantize() keywords; got {spec!r}.")


def _table(op: str, x: Any) -> NDArray[np.float32]:
    arr = real_matrix(op, x, "table", "(N, d)")
    if arr.shape[0] == 0:
        raise EmptyInput(f"{op}: table has shape {arr.shape}; it needs at least one row.")
    if arr.shape[1] == 0:
        raise DimensionMismatch(f"{op}: table has shape {arr.shape}; rows need at least one column.")
    return np.ascontiguousarray(arr, dtype=np.float32) if arr.dtype != np.float32 else arr


def _levels(op: str, levels: Any, n: int) -> NDArray[np.int64]:
    lv = np.asarray(levels)
    if lv.ndim != 1 or lv.shape[0] != n:
        raise DimensionMismatch(f"{op}: levels has shape {lv.shape}, expected ({n},): one top level per table row.")
    if lv.size and lv.dtype.kind not in "iu":
        raise InvalidConfig(f"{op}: levels must be integers (each node's top HNSW level); got dtype {lv.dtype}.")
    if lv.size and lv.min() < 0:
        i = int(np.argmin(lv))
        raise InvalidConfig(f"{op}: levels must be >= 0 (0 = layer 0 only); got {int(lv[i])} at row {i}. "
                            "faiss's own arrays store top level + 1: use HNSWIndex.levels.")  # fmt: skip
    return lv.astype(np.int64)


def _formats(op: str, formats: Any) -> list[tuple[int, str, dict[str, Any]]]:
    """``[(min level, name, kwargs)]`` sorted by level."""
    if not isinstance(formats, Mapping):
        raise InvalidConfig(f"{op}: formats must be a dict {{min level: preset name or quantize() kwargs}}, e.g. "
                            f"{{0: 'int4_asym', 1: 'int8'}}; got {type(formats).__name__}.")  # fmt: skip
    if not formats:
        raise InvalidConfig(f"{op}: formats is empty; give at least layer 0's format, e.g. {{0: 'int8'}}.")
    out = []
    for key, spec in formats.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or key < 0:
            raise InvalidConfig(f"{op}: formats keys are levels (integers >= 0); got {key!r}.")
        name, kw = _resolve(op, spec)
        out.append((int(key), name, kw))
    out.sort(key=lambda t: t[0])
    if out[0][0] != 0:
        raise InvalidConfig(f"{op}: formats must give layer 0's format (key 0), which every node below the "
                            f"lowest key would use; got keys {[t[0] for t in out]}.")  # fmt: skip
    return out


class LayeredTable:
    """An ``(N, d)`` table whose rows are quantised in a format chosen per node's top HNSW level; build it with
    :func:`quantize_by_level` or :meth:`from_index`.

    Attributes: ``parts`` (one :class:`QuantizedTable` per group, rows in table order), ``min_levels`` (each
    group's lowest level), ``names``, ``params`` (each group's :func:`quantize` keywords), ``slot`` (int32
    ``(N,)``), ``starts`` (int64 ``(G + 1,)``), ``shape``, ``nbytes``, ``bytes_per_vector``, ``groups``.
    ``np.asarray(table)`` is :meth:`dequantize` (float32).
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(
        self,
        parts: Sequence[QuantizedTable],
        min_levels: Sequence[int],
        names: Sequence[str],
        params: Sequence[Mapping[str, Any]],
        slot: NDArray[np.int32],
    ) -> None:
        op = "LayeredTable"
        if not (len(parts) == len(min_levels) == len(names) == len(params)) or not parts:
            raise InvalidConfig(f"{op}: parts, min_levels, names and params must be non-empty and of one length.")
        dims = {p.dim for p in parts}
        if len(dims) != 1:
            raise DimensionMismatch(f"{op}: every part must have the same width; got {sorted(dims)}.")
        self.parts = tuple(parts)
        self.min_levels = tuple(int(v) for v in min_levels)
        self.names = tuple(names)
        self.params = tuple(dict(p) for p in params)
        self.starts = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(p) for p in parts], out=self.starts[1:])
        slot = np.asarray(slot)
        total = int(self.starts[-1])
        if slot.dtype != np.int32 or slot.ndim != 1:
            raise InvalidConfig(f"{op}: slot must be a flat int32 array; got {slot.dtype} {slot.shape}.")
        if slot.size and (slot.min() < 0 or slot.max() >= total):
            raise OutOfBounds(f"{op}: slot holds ids outside [0, {total}), the rows the parts store.")
        self.slot = slot
        self.dim = dims.pop()
        for a in (self.slot, self.starts):
            a.setflags(write=False)

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_index(cls, index: HNSWIndex, table: Any, formats: Mapping[int, FormatSpec]) -> LayeredTable:
        """:func:`quantize_by_level` with each node's top level from ``index`` (:attr:`HNSWIndex.levels`: 0 for
        a node on layer 0 only; faiss's own array holds that plus one).  ``table`` is ``(N, d)`` with a row per
        indexed node, or ``None`` for the index's own vectors."""
        op = "LayeredTable.from_index"
        if not isinstance(index, HNSWIndex):
            raise InvalidConfig(f"{op}: index must be an HNSWIndex; got {type(index).__name__}.")
        x = index.vectors if table is None else table
        arr = _table(op, x)
        if arr.shape[0] != index.num_nodes:
            raise DimensionMismatch(f"{op}: table has {arr.shape[0]} rows, the index {index.num_nodes} nodes; "
                                    "pass one row per indexed node, in id order.")  # fmt: skip
        return _by_level(op, arr, index.levels, formats)

    # -- what a table is --------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.slot.shape[0]), self.dim)

    def __len__(self) -> int:
        return int(self.slot.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of everything stored: every part's codes, scales and offsets, the ``slot`` map and ``starts``."""
        return sum(p.nbytes for p in self.parts) + int(self.slot.nbytes) + int(self.starts.nbytes)

    @property
    def bytes_per_vector(self) -> float:
        return self.nbytes / max(1, len(self))

    @property
    def group_of(self) -> NDArray[np.int32]:
        """Each row's group ``(N,)`` (derived from ``slot``)."""
        return (np.searchsorted(self.starts, self.slot, side="right") - 1).astype(np.int32)

    @property
    def position(self) -> NDArray[np.int32]:
        """Each row's row number inside its group's table ``(N,)`` (derived from ``slot``)."""
        return (self.slot - self.starts[self.group_of]).astype(np.int32)

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Per group: ``min_level``, ``format`` (preset name or the quantize() call), ``nodes``, ``bytes`` (its
        codes, scales and offsets), ``bytes_per_vector``."""
        return [
            {"min_level": lvl, "format": name, "nodes": len(p), "bytes": p.nbytes,
             "bytes_per_vector": p.nbytes / len(p) if len(p) else float("nan")}
            for lvl, name, p in zip(self.min_levels, self.names, self.parts, strict=True)
        ]  # fmt: skip

    def _ids(self, rows: Any) -> NDArray[np.int64]:
        ids = np.asarray(rows)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise DimensionMismatch(f"LayeredTable: rows must be a flat array of row ids; got shape {ids.shape}.")
        ids = ids.astype(np.int64)
        n = len(self)
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise OutOfBounds(f"LayeredTable: row ids must be in [0, {n}); got {int(ids.min())}..{int(ids.max())}.")
        return ids

    def dequantize(self, rows: Any = None) -> NDArray[np.float32]:
        """The float32 table ``(N, d)`` the codes stand for, or only ``rows`` (ids) of it."""
        ids = np.arange(len(self)) if rows is None else self._ids(rows)
        out = np.empty((ids.size, self.dim), np.float32)
        slots = self.slot[ids].astype(np.int64)
        for g, part in enumerate(self.parts):
            lo, hi = int(self.starts[g]), int(self.starts[g + 1])
            mine = np.flatnonzero((slots >= lo) & (slots < hi))
            if mine.size:
                out[mine] = part.dequantize(slots[mine] - lo)
        return out

    def take(self, rows: Any) -> LayeredTable:
        """The table of ``rows`` (ids, repeats allowed), still quantised in each row's own format."""
        ids = self._ids(rows)
        slots = self.slot[ids].astype(np.int64)
        group = np.searchsorted(self.starts, slots, side="right") - 1
        parts, new_slot, base = [], np.empty(ids.size, np.int32), 0
        for g, part in enumerate(self.parts):
            mine = np.flatnonzero(group == g)
            parts.append(part.take(slots[mine] - self.starts[g]))
            new_slot[mine] = base + np.arange(mine.size, dtype=np.int32)
            base += mine.size
        return LayeredTable(parts, self.min_levels, self.names, self.params, new_slot)

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        out = self.dequantize()
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        parts = ", ".join(f"level>={g['min_level']}: {g['format']} x {g['nodes']}" for g in self.groups)
        return f"LayeredTable({len(self)} x {self.dim}; {parts}; {self.nbytes:,} bytes)"


def _by_level(op: str, arr: NDArray[np.float32], levels: Any, formats: Any) -> LayeredTable:
    n = arr.shape[0]
    lv = _levels(op, levels, n)
    specs = _formats(op, formats)
    keys = np.array([t[0] for t in specs], np.int64)
    group = np.searchsorted(keys, lv, side="right") - 1  # the highest key <= the level (keys[0] == 0)
    parts, slot, base = [], np.empty(n, np.int32), 0
    for g, (_, _, kw) in enumerate(specs):
        rows = np.flatnonzero(group == g)
        parts.append(quantize(arr[rows], **kw))
        slot[rows] = base + np.arange(rows.size, dtype=np.int32)
        base += rows.size
    return LayeredTable(parts, keys.tolist(), [t[1] for t in specs], [t[2] for t in specs], slot)


def quantize_by_level(table: Any, levels: Any, formats: Mapping[int, FormatSpec]) -> LayeredTable:
    """Quantise the rows of ``table (N, d)`` with a format per node level: row ``i`` takes
    ``formats[max(key for key in formats if key <= levels[i])]``, a name from
    :data:`ruvattn.compression.PRESETS` (or :data:`UNIFORM_CANDIDATES`) or a dict of :func:`quantize` keywords.
    ``levels (N,)`` holds each node's top HNSW level (0 = layer 0 only, as :attr:`HNSWIndex.levels`);
    ``formats`` must have key 0.  Every key makes a group, empty or not."""
    op = "quantize_by_level"
    return _by_level(op, _table(op, table), levels, formats)


# -- equal bytes ------------------------------------------------------------------------------------


class UniformChoice(NamedTuple):
    """The layout :func:`uniform_at_bytes` chose: its ``name`` (a key of the candidates), the ``table``, and its
    relative reconstruction error ``||X - X'||_F / ||X||_F``."""

    name: str
    table: QuantizedTable
    error: float


def _relative_error(x: NDArray[np.float32], got: NDArray[np.float32]) -> float:
    x64 = x.astype(np.float64)
    den = float(np.linalg.norm(x64))
    num = float(np.linalg.norm(got.astype(np.float64) - x64))
    return num / den if den > 0 else num


def uniform_at_bytes(
    table: Any,
    budget_bytes: int | float,
    candidates: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    fit: str = "under",
) -> UniformChoice:
    """The uniform layout for a byte budget, from ``candidates`` (name -> :func:`quantize` keywords; default
    :data:`UNIFORM_CANDIDATES`), bytes being :attr:`QuantizedTable.nbytes` of the whole ``table (N, d)`` (codes,
    scales, offsets).

    ``fit="under"``: of the layouts with bytes ``<=`` the budget, the one with the smallest relative
    reconstruction error ``||X - X'||_F / ||X||_F`` (ties: fewer bytes) -- the best uniform table that costs no
    more.  ``fit="over"``: of the layouts with bytes ``>=`` the budget, the cheapest (ties: smaller error) -- the
    nearest uniform table that costs at least as much.  The two bracket a layered table's ``nbytes`` when no
    candidate hits it exactly.  A candidate whose scales do not fit float16 for this table is skipped."""
    op = "uniform_at_bytes"
    arr = _table(op, table)
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, float, np.integer, np.floating)):
        raise InvalidConfig(f"{op}: budget_bytes must be a number of bytes; got {budget_bytes!r}.")
    if not budget_bytes > 0:
        raise InvalidConfig(f"{op}: budget_bytes must be > 0; got {budget_bytes}.")
    if fit not in ("under", "over"):
        raise InvalidConfig(f"{op}: fit must be 'under' (bytes <= budget) or 'over' (bytes >= budget); got {fit!r}.")
    cands = UNIFORM_CANDIDATES if candidates is None else candidates
    if not isinstance(cands, Mapping) or not cands:
        raise InvalidConfig(f"{op}: candidates must be a non-empty dict of name -> quantize() keywords.")
    best: tuple[tuple[float, float], UniformChoice] | None = None
    sizes: list[tuple[int, str]] = []
    for name, kw in cands.items():
        _, params = _resolve(op, kw)
        try:
            t = quantize(arr, **params)
        except InvalidConfig:
            continue  # e.g. float16 scales out of range for this table
        sizes.append((t.nbytes, name))
        if (t.nbytes > budget_bytes) if fit == "under" else (t.nbytes < budget_bytes):
            continue
        err = _relative_error(arr, t.dequantize())
        rank = (err, float(t.nbytes)) if fit == "under" else (float(t.nbytes), err)
        if best is None or rank < best[0]:
            best = (rank, UniformChoice(str(name), t, err))
    if best is None:
        near = min(sizes) if fit == "under" else max(sizes, default=None)
        hint = (
            f"; the {'smallest' if fit == 'under' else 'largest'} candidate ({near[1]}) has {near[0]:,}" if near else ""
        )
        raise InvalidConfig(f"{op}: no candidate layout has bytes {'<=' if fit == 'under' else '>='} "
                            f"budget_bytes={budget_bytes:,}{hint}.")  # fmt: skip
    return best[1]


# -- attention-output error over what searches read -------------------------------------------------


@dataclass(frozen=True)
class LayeredReport:
    """What :func:`layered_error` measured.

    ``rows``: one dict per layout with ``layout``, ``kind`` (``"uniform"``, ``"layered"``, ``"uniform at equal
    bytes (under)"`` / ``"(over)"``: :func:`uniform_at_bytes` with that ``fit``), ``bytes``,
    ``bytes_per_vector``, ``budget_bytes`` (for the equal-bytes rows: the layered table's bytes); the mean over
    queries of the relative L2 error and of the cosine similarity of the attention output against float32,
    over the visited set (``visited_rel_l2``, ``visited_cosine``) and over the ``k`` results
    (``returned_rel_l2``, ``returned_cosine``); relative row reconstruction errors ``row_error_read`` (each row
    counted once per search that read it), ``row_error_upper`` (rows of nodes on layer 1 or higher),
    ``row_error_all``.  Search statistics: ``visited_per_query`` (mean distance computations),
    ``upper_read_share`` (fraction of reads landing on level >= 1 nodes), ``upper_node_share`` (their fraction
    of the nodes), ``queries``, ``k``, ``ef``."""

    rows: list[dict[str, Any]]
    visited_per_query: float
    upper_read_share: float
    upper_node_share: float
    queries: int
    k: int
    ef: int

    def text(self) -> str:
        """The rows as a fixed-width text table."""
        w = max([6] + [len(r["layout"]) for r in self.rows])
        head = (f"{'layout':<{w}} {'B/vec':>7} {'visited relL2':>13} {'cos':>9} {'returned relL2':>14} "
                f"{'cos':>9} {'row err read':>12} {'upper':>8} {'all':>8}")  # fmt: skip
        lines = [head]
        for r in self.rows:
            lines.append(
                f"{r['layout']:<{w}} {r['bytes_per_vector']:7.2f} {r['visited_rel_l2']:13.5f} "
                f"{r['visited_cosine']:9.6f} {r['returned_rel_l2']:14.5f} {r['returned_cosine']:9.6f} "
                f"{r['row_error_read']:12.5f} {r['row_error_upper']:8.5f} {r['row_error_all']:8.5f}"
            )
        return "\n".join(lines)


def _attend(q: NDArray[np.float64], rows: NDArray[np.float64], scale: float | None) -> NDArray[np.float64]:
    out, _, _ = reference_attention(q, rows, rows, scale=scale)
    return np.asarray(out, np.float64)


def _errors(ref: NDArray[np.float64], got: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    diff = np.linalg.norm(got - ref, axis=1)
    nr, ng = np.linalg.norm(ref, axis=1), np.linalg.norm(got, axis=1)
    rel = np.where(nr > 0, diff / np.where(nr > 0, nr, 1.0), diff)
    both = nr * ng
    cos = np.where(both > 0, (ref * got).sum(axis=1) / np.where(both > 0, both, 1.0), 1.0)
    return rel, cos


def layered_error(
    index: HNSWIndex,
    table: Any,
    queries: Any,
    formats_list: Sequence[Mapping[int, FormatSpec]],
    k: int = 10,
    *,
    ef: int | None = None,
    baselines: Sequence[FormatSpec] = ("int8", "int4_asym"),
    scale: float | None = None,
) -> LayeredReport:
    r"""Attention-output error of uniform, layered and equal-bytes uniform tables over what searches read.

    Each query ``(m, d)`` is searched in ``index`` with :func:`~ruvattn.graph.search.trace_search` (beam
    ``ef``, default ``max(k, 64)``; on the index's float vectors: only the attention reads a compressed table),
    which records every node whose distance it computed (the *visited* set: the upper-layer descent and the
    layer-0 beam) and the ``k`` results.  Scaled dot-product attention of the query over those rows of
    ``table (N, d)`` (keys = values = the rows; ``scale`` default :math:`1/\sqrt d`; float64 arithmetic over the
    stored rows) is compared with the same over the float32 table.

    Layouts: each of ``baselines`` (preset names, uniform), then for each ``formats`` of ``formats_list`` the
    :func:`quantize_by_level` table with the index's levels and the :func:`uniform_at_bytes` layouts just under
    and just over that table's bytes (every row carries its bytes).
    """
    op = "layered_error"
    if not isinstance(index, HNSWIndex):
        raise InvalidConfig(f"{op}: index must be an HNSWIndex; got {type(index).__name__}.")
    arr = _table(op, table)
    if arr.shape != (index.num_nodes, index.dim):
        raise DimensionMismatch(f"{op}: table has shape {arr.shape}, expected ({index.num_nodes}, {index.dim}): "
                                "a row per indexed node, as wide as the queries.")  # fmt: skip
    q = np.asarray(queries, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != index.dim:
        raise DimensionMismatch(f"{op}: queries has shape {q.shape}, expected (m, {index.dim}).")
    if q.shape[0] == 0:
        raise EmptyInput(f"{op}: queries is empty; pass at least one query.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidConfig(f"{op}: k must be an integer >= 1; got {k!r}.")
    ef = max(int(k), 64) if ef is None else ef
    if not isinstance(formats_list, Sequence) or isinstance(formats_list, (str, Mapping)):
        raise InvalidConfig(
            f"{op}: formats_list must be a list of formats dicts, e.g. [{{0: 'int4_asym', 1: 'int8'}}]."
        )

    layouts: list[tuple[str, str, Any, float]] = []  # (name, kind, table, budget)
    for b in baselines:
        name, kw = _resolve(op, b)
        layouts.append((name, "uniform", quantize(arr, **kw), float("nan")))
    for formats in formats_list:
        lt = LayeredTable.from_index(index, arr, formats)
        label = " / ".join(f"L{g['min_level']}+ {g['format']}" for g in lt.groups)
        layouts.append((label, "layered", lt, float("nan")))
        for fit in ("under", "over"):
            try:
                choice = uniform_at_bytes(arr, lt.nbytes, fit=fit)
            except InvalidConfig:
                continue  # no uniform candidate that large (or that small)
            layouts.append((f"{choice.name} ({fit} the bytes of {label})", f"uniform at equal bytes ({fit})",
                            choice.table, float(lt.nbytes)))  # fmt: skip

    traces = [trace_search(index, qi, k, ef=ef) for qi in q]
    levels = index.levels
    upper = levels >= 1
    reads = np.bincount(np.concatenate([t.visited for t in traces]), minlength=len(arr)).astype(np.float64)
    ref_rows = arr.astype(np.float64)
    ref_vis = np.stack([_attend(qi, ref_rows[t.visited], scale) for qi, t in zip(q, traces, strict=True)])
    ret_ids = [t.ids[t.ids >= 0] for t in traces]
    ref_ret = np.stack([_attend(qi, ref_rows[ids], scale) for qi, ids in zip(q, ret_ids, strict=True)])
    sq_norm = (ref_rows**2).sum(axis=1)

    rows = []
    for name, kind, t, budget in layouts:
        deq = np.asarray(t.dequantize(), np.float64)
        vis = np.stack([_attend(qi, deq[tr.visited], scale) for qi, tr in zip(q, traces, strict=True)])
        ret = np.stack([_attend(qi, deq[ids], scale) for qi, ids in zip(q, ret_ids, strict=True)])
        rel_v, cos_v = _errors(ref_vis, vis)
        rel_r, cos_r = _errors(ref_ret, ret)
        sq_err = ((deq - ref_rows) ** 2).sum(axis=1)

        def ratio(w: NDArray[np.float64], err: NDArray[np.float64] = sq_err) -> float:
            den = float((w * sq_norm).sum())
            return float(np.sqrt((w * err).sum() / den)) if den > 0 else float("nan")

        rows.append({
            "layout": name, "kind": kind, "bytes": int(t.nbytes), "bytes_per_vector": t.nbytes / len(arr),
            "budget_bytes": budget,
            "visited_rel_l2": float(rel_v.mean()), "visited_cosine": float(cos_v.mean()),
            "returned_rel_l2": float(rel_r.mean()), "returned_cosine": float(cos_r.mean()),
            "row_error_read": ratio(reads), "row_error_upper": ratio(upper.astype(np.float64)),
            "row_error_all": ratio(np.ones(len(arr))),
        })  # fmt: skip
    total_reads = float(reads.sum())
    return LayeredReport(
        rows=rows,
        visited_per_query=total_reads / q.shape[0],
        upper_read_share=float(reads[upper].sum() / total_reads) if total_reads else float("nan"),
        upper_node_share=float(upper.mean()),
        queries=int(q.shape[0]),
        k=int(k),
        ef=int(ef),
    )
