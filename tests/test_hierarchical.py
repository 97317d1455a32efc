"""Per-layer precision tables (:mod:`ruvattn.compression.hierarchical`): each row against quantize() of its group
built independently here, group membership against hand-built levels, bytes against the parts, ``from_index``
against faiss's own level array, the equal-bytes choice against a brute-force search, and the attention error
against attention computed here over the same searches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ruvattn.compression import PRESETS, quantize
from ruvattn.compression.hierarchical import (
    UNIFORM_CANDIDATES,
    LayeredTable,
    layered_error,
    quantize_by_level,
    uniform_at_bytes,
)
from ruvattn.errors import DimensionMismatch, EmptyInput, InvalidConfig, OutOfBounds

FORMATS: dict[int, Any] = {0: "int4_asym", 1: "int8", 3: {"format": "int4", "block": 8}}
KWARGS = [PRESETS["int4_asym"], PRESETS["int8"], {"format": "int4", "block": 8}]


def _table(n: int = 300, d: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * rng.uniform(0.1, 5.0, (n, 1))).astype(np.float32)


def _expected_group(levels: np.ndarray, keys: list[int]) -> np.ndarray:
    """The highest key <= each level, as a group number, by a plain loop."""
    return np.array([max(g for g, key in enumerate(keys) if key <= lvl) for lvl in levels.tolist()])


@pytest.fixture(scope="module")
def index_and_table() -> tuple[Any, np.ndarray]:
    pytest.importorskip("faiss")
    from ruvattn.graph.hnsw import HNSWIndex

    x = _table(2000, 16, seed=3)
    return HNSWIndex.build(x, M=6, ef_construction=60, seed=7), x


def test_rows_dequantise_as_their_group_quantised_alone() -> None:
    x = _table()
    levels = np.random.default_rng(1).geometric(0.5, size=len(x)) - 1  # 0, 1, 2, ... with halving frequency
    t = quantize_by_level(x, levels, FORMATS)
    got = t.dequantize()
    group = _expected_group(levels, [0, 1, 3])
    for g, kw in enumerate(KWARGS):
        rows = np.flatnonzero(group == g)
        assert rows.size > 0
        ref = quantize(x[rows], **kw)  # the group's table, built independently
        assert np.array_equal(t.parts[g].codes, ref.codes) and np.array_equal(t.parts[g].scales, ref.scales)
        assert np.array_equal(got[rows], ref.dequantize())
        for i in rows[:5]:  # every format here has per-row scales: a row alone quantises to the same values
            assert np.array_equal(got[i], quantize(x[i : i + 1], **kw).dequantize()[0])
    assert got.dtype == np.float32 and np.array_equal(np.asarray(t), got)


def test_group_membership_follows_levels() -> None:
    x = _table(9, 8)
    levels = np.array([0, 0, 1, 2, 5, 0, 3, 1, 2])
    t = quantize_by_level(x, levels, {4: "int8", 0: "int4", 2: "float16", 7: "bfloat16"})  # any key order
    assert t.group_of.tolist() == [0, 0, 0, 1, 2, 0, 1, 0, 1]
    assert [g["nodes"] for g in t.groups] == [5, 3, 1, 0]  # level 7 holds nobody: an empty group
    assert [g["format"] for g in t.groups] == ["int4", "float16", "int8", "bfloat16"]
    assert [g["min_level"] for g in t.groups] == [0, 2, 4, 7]
    # positions count each group's rows in table order
    assert t.position.tolist() == [0, 1, 2, 0, 0, 3, 1, 4, 2]
    assert t.slot.dtype == np.int32 and t.shape == (9, 8) and len(t) == 9


def test_nbytes_is_the_sum_of_the_stored_parts() -> None:
    x = _table()
    levels = np.random.default_rng(2).integers(0, 4, len(x))
    t = quantize_by_level(x, levels, FORMATS)
    group = _expected_group(levels, [0, 1, 3])
    parts = sum(quantize(x[group == g], **kw).nbytes for g, kw in enumerate(KWARGS))
    assert t.nbytes == parts + 4 * len(x) + 8 * (len(KWARGS) + 1)  # + int32 slot map + int64 group starts
    assert t.nbytes == sum(p.nbytes for p in t.parts) + t.slot.nbytes + t.starts.nbytes
    assert [g["bytes"] for g in t.groups] == [p.nbytes for p in t.parts]
    assert t.bytes_per_vector == t.nbytes / len(x)


def test_take_equals_the_dequantised_rows() -> None:
    x = _table()
    levels = np.random.default_rng(4).integers(0, 5, len(x))
    t = quantize_by_level(x, levels, FORMATS)
    ids = np.random.default_rng(5).integers(0, len(x), 77)  # repeats, any order
    sub = t.take(ids)
    assert isinstance(sub, LayeredTable) and sub.shape == (77, x.shape[1])
    assert np.array_equal(np.asarray(sub), t.dequantize()[ids])
    assert np.array_equal(t.dequantize(ids), t.dequantize()[ids])
    assert np.array_equal(sub.group_of, t.group_of[ids])
    assert np.array_equal(np.asarray(t.take([])), np.empty((0, x.shape[1]), np.float32))


def test_from_index_uses_top_levels_not_faiss_plus_one(index_and_table: tuple[Any, np.ndarray]) -> None:
    index, x = index_and_table
    faiss_levels = np.asarray(index.arrays().levels).astype(np.int64)  # faiss stores top level + 1
    assert faiss_levels.min() == 1 and (faiss_levels > 1).any()
    formats = {0: "int4_asym", 1: "int8", 2: "float16"}
    t = LayeredTable.from_index(index, x, formats)
    ref = quantize_by_level(x, faiss_levels - 1, formats)
    assert np.array_equal(t.group_of, ref.group_of) and np.array_equal(t.dequantize(), ref.dequantize())
    assert t.nbytes == ref.nbytes
    # the nodes with a neighbour list on layer 1 are exactly the rows stored above INT4
    on_layer1 = index.layer(1).degrees() > 0
    assert np.array_equal(t.group_of >= 1, on_layer1)
    assert t.group_of[index.entry_point] == 2 or index.max_level < 2
    assert 0 < t.groups[1]["nodes"] + t.groups[2]["nodes"] < len(x) // 3  # few nodes above layer 0
    same = LayeredTable.from_index(index, None, formats)  # None: the index's own vectors
    assert np.array_equal(same.dequantize(), t.dequantize())


def test_uniform_at_bytes_is_the_brute_force_choice() -> None:
    x = _table(200, 64, seed=9)
    sizes, errs = {}, {}
    for name, kw in UNIFORM_CANDIDATES.items():
        q = quantize(x, **kw)
        sizes[name] = q.nbytes
        errs[name] = np.linalg.norm(q.dequantize().astype(np.float64) - x) / np.linalg.norm(x.astype(np.float64))
    for budget in (36 * 200, 45 * 200 + 17, 70 * 200, 10**9):
        under = uniform_at_bytes(x, budget)
        fits = [n for n in sizes if sizes[n] <= budget]
        assert under.table.nbytes <= budget
        assert under.error == pytest.approx(min(errs[n] for n in fits), rel=1e-12)
    budget = 45 * 200 + 17
    over = uniform_at_bytes(x, budget, fit="over")
    assert over.table.nbytes == min(s for s in sizes.values() if s >= budget) == 48 * 200
    with pytest.raises(InvalidConfig, match="no candidate layout has bytes <= budget_bytes=100"):
        uniform_at_bytes(x, 100)
    with pytest.raises(InvalidConfig, match="fit must be 'under'"):
        uniform_at_bytes(x, 10**6, fit="equal")


def test_layered_error_against_attention_computed_here(index_and_table: tuple[Any, np.ndarray]) -> None:
    from ruvattn.graph.search import trace_search

    index, x = index_and_table
    rng = np.random.default_rng(11)
    queries = (x[rng.integers(0, len(x), 12)] + 0.3 * rng.standard_normal((12, x.shape[1]))).astype(np.float32)
    formats = {0: "int4_asym", 1: "int8"}
    rep = layered_error(index, x, queries, [formats], k=5, ef=32)
    rows = {r["kind"]: r for r in rep.rows if r["kind"] != "uniform"} | {r["layout"]: r for r in rep.rows}
    lt = LayeredTable.from_index(index, x, formats)
    assert rows["layered"]["bytes"] == lt.nbytes
    assert rows["int4_asym"]["row_error_upper"] > 5 * rows["layered"]["row_error_upper"]  # INT8 above layer 0
    assert (
        rows["uniform at equal bytes (under)"]["bytes"] <= lt.nbytes <= rows["uniform at equal bytes (over)"]["bytes"]
    )

    # attention over the upper-level rows, computed here: the layered table is closer to float32 than INT4
    upper = np.flatnonzero(index.levels >= 1)

    def attend(table: np.ndarray, q: np.ndarray, ids: np.ndarray) -> np.ndarray:
        k = table[ids].astype(np.float64)
        s = k @ q.astype(np.float64) / np.sqrt(x.shape[1])
        w = np.exp(s - s.max())
        return (w / w.sum()) @ k

    int4 = quantize(x, "int4", symmetric=False).dequantize()
    lay = lt.dequantize()
    for q in queries:
        ref = attend(x, q, upper)
        assert np.linalg.norm(attend(lay, q, upper) - ref) <= np.linalg.norm(attend(int4, q, upper) - ref)

    # the INT8 row's visited-set error, recomputed from this module's own traces
    int8 = quantize(x, "int8").dequantize()
    rel = []
    for q in queries:
        vis = trace_search(index, q, 5, ef=32).visited
        ref = attend(x, q, vis)
        rel.append(np.linalg.norm(attend(int8, q, vis) - ref) / np.linalg.norm(ref))
    assert rows["int8"]["visited_rel_l2"] == pytest.approx(np.mean(rel), rel=1e-9)
    assert 0 < rep.upper_node_share < 1 and rep.visited_per_query > 5


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((_table(5, 4), [0, 1, 0], FORMATS), DimensionMismatch, r"levels has shape \(3,\), expected \(5,\)"),
        ((_table(3, 4), [0, -1, 0], FORMATS), InvalidConfig, "levels must be >= 0.*got -1 at row 1"),
        ((_table(3, 4), [0.0, 1.0, 0.0], FORMATS), InvalidConfig, "levels must be integers"),
        ((_table(3, 4), [0, 1, 0], {0: "int3"}), InvalidConfig, "unknown preset 'int3'"),
        ((_table(3, 4), [0, 1, 0], {0: {"format": "int4", "bits": 4}}), InvalidConfig, "quantize\\(\\) keywords"),
        ((_table(3, 4), [0, 1, 0], {0: {"format": "int5"}}), InvalidConfig, "'format' must be one of"),
        ((_table(3, 4), [0, 1, 0], {}), InvalidConfig, "formats is empty"),
        ((_table(3, 4), [0, 1, 0], {1: "int8"}), InvalidConfig, r"must give layer 0's format \(key 0\)"),
        ((_table(3, 4), [0, 1, 0], {-1: "int8"}), InvalidConfig, "keys are levels"),
        ((np.empty((0, 4), np.float32), [], FORMATS), EmptyInput, "at least one row"),
        ((np.ones(4, np.float32), [0], FORMATS), DimensionMismatch, r"expected \(N, d\)"),
    ],
)
def test_bad_inputs(args: tuple[Any, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        quantize_by_level(*args)


def test_bad_ids_and_index_inputs(index_and_table: tuple[Any, np.ndarray]) -> None:
    index, x = index_and_table
    t = quantize_by_level(_table(5, 4), [0, 1, 0, 0, 2], FORMATS)
    with pytest.raises(OutOfBounds, match=r"row ids must be in \[0, 5\)"):
        t.take([0, 5])
    with pytest.raises(OutOfBounds, match=r"row ids must be in \[0, 5\)"):
        t.dequantize([-1])
    with pytest.raises(DimensionMismatch, match="table has 10 rows, the index 2000 nodes"):
        LayeredTable.from_index(index, x[:10], FORMATS)
    not_an_index: Any = x
    with pytest.raises(InvalidConfig, match="index must be an HNSWIndex"):
        LayeredTable.from_index(not_an_index, x, FORMATS)
    with pytest.raises(DimensionMismatch, match=r"queries has shape \(2, 3\), expected \(m, 16\)"):
        layered_error(index, x, np.ones((2, 3)), [FORMATS])
