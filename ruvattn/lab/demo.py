"""``ruvattn demo``: every registered mechanism on a built-in synthetic graph.

The graph is :func:`ruvattn.datasets.clustered_graph` (clustered embeddings; nothing is downloaded) with
either a real HNSW index over them (``graph="hnsw"``, faiss: the neighbour lists are its layer 0, ``M = k/2``
links so at most ``k`` per node, and the candidate set is the index's search result) or exact k-nearest
neighbour lists (``"knn"``); ``"auto"`` takes the index when faiss is installed.  For each kind of
:func:`ruvattn.available` the demo builds the mechanism from its
:meth:`~ruvattn.mechanisms.Attention.example_params` at the graph's width, maps the embeddings into its
:attr:`~ruvattn.mechanisms.Attention.input_space`, and times two of the contract's forms:

* one query over a candidate set (prepared once with ``prepare`` where the mechanism has
  per-key-set work), and
* every node over its own neighbour list (``forward_neighbours``).

Each row reports p50/p95/p99 latency (:func:`ruvattn.lab.timing.timeit`), calls and queries per
second, and the largest difference between the float32 run and the same mechanism on float64
inputs.  A mechanism registered tomorrow gets its rows without an edit here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ruvattn.datasets import clustered_graph
from ruvattn.errors import InvalidConfig
from ruvattn.graph.hnsw import HNSWIndex, resolve_graph
from ruvattn.lab.timing import timeit
from ruvattn.mechanisms import Attention, Prepared, available, build, mechanism_class

__all__ = ["DemoRow", "demo_mechanism", "run_demo"]

#: wall-clock budget per row: slow (pure-Python) forms get fewer timed calls, never fewer than 5
_ROW_BUDGET_S = 0.5


@dataclass(frozen=True)
class DemoRow:
    mechanism: str
    workload: str
    p50_us: float
    p95_us: float
    p99_us: float
    ops_per_s: float
    queries_per_s: float
    max_abs_err: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_mechanism(kind: str, dim: int, heads: int, seed: int, window: int) -> Attention:
    """The demo's instance of ``kind``: its example parameters at width ``dim``, with ``seed``, a local
    window of ``window`` entries and 8 landmarks applied to the parameters of those names."""
    cls = mechanism_class(kind)
    params = cls.example_params(dim, heads=heads)
    overrides = {"seed": seed, "local_window": window, "global_nodes": 8}
    params.update({k: v for k, v in overrides.items() if k in cls._param_index})
    return build({"type": kind, **params})


def _timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """:func:`timeit` with at most ``repeats`` calls and about :data:`_ROW_BUDGET_S` seconds."""
    one = timeit(fn, 1)["median_us"] * 1e-6
    return timeit(fn, int(min(repeats, max(5, _ROW_BUDGET_S / max(one, 1e-9)))))


def run_demo(
    nodes: int = 2000,
    dim: int = 128,
    neighbours: int = 32,
    candidates: int = 1000,
    heads: int = 4,
    repeats: int = 300,
    seed: int = 0,
    kinds: Iterable[str] | None = None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
    graph: str = "auto",
) -> list[DemoRow]:
    """The demo table: two rows per mechanism (see the module docstring)."""
    if neighbours >= nodes or candidates > nodes:
        raise InvalidConfig(
            f"demo: --neighbours ({neighbours}) must be < --nodes and --candidates ({candidates}) <= --nodes ({nodes})."
        )
    kind_of_graph = resolve_graph(graph)
    g = clustered_graph(nodes, dim, k=neighbours, seed=seed)
    x64 = g.embeddings.astype(np.float64)
    q_row = int(np.random.default_rng(seed).integers(nodes))
    n, k = candidates, neighbours
    if kind_of_graph == "hnsw":
        index = HNSWIndex.build(g.embeddings, M=max(2, k // 2), ef_construction=max(64, 2 * k), seed=seed + 1)
        nb: Any = index.layer(0)
        cand = index.search(g.embeddings[q_row], n, ef=max(n, 16)).ids[0]
        cand = cand[cand >= 0]
        one_label, graph_label = (
            f"1 query x {cand.size} HNSW results",
            f"{nodes} nodes x HNSW layer 0 (<= {2 * max(2, k // 2)})",
        )
    else:
        nb, cand = g.neighbours, np.arange(n)
        one_label, graph_label = f"1 query x {n} candidates", f"{nodes} nodes x own {k} neighbours"
    names = list(kinds) if kinds is not None else available()
    # every mechanism is built before the first is timed: a bad setting (--heads for --dim) is reported
    # before any progress is shown
    built = {kind: demo_mechanism(kind, dim, heads, seed, min(32, n)) for kind in names}
    rows: list[DemoRow] = []
    for kind in progress(names) if progress is not None else names:
        m = built[kind]
        e64 = m.embed(x64)
        e32 = e64.astype(np.float32)

        def one(e: np.ndarray, m: Attention = m) -> Callable[[], Any]:
            keys = e[cand]
            prepared = m.prepare(keys, keys)
            args = (keys, keys) if isinstance(prepared, Prepared) else (prepared,)  # real per-key-set work only
            return lambda: m.forward(e[q_row], *args)

        def graph(e: np.ndarray, m: Attention = m) -> Callable[[], Any]:
            return lambda: m.forward_neighbours(e, e, e, nb)

        forms = ((one_label, one, 1), (graph_label, graph, nodes))
        for workload, make, items in forms:
            fn = make(e32)
            got = np.asarray(fn(), np.float64)
            err = float(np.max(np.abs(got - np.asarray(make(e64)(), np.float64)))) if got.size else 0.0
            t = _timed(fn, repeats)
            p50 = t["median_us"]
            rows.append(DemoRow(kind, workload, p50, t["p95_us"], t["p99_us"], 1e6 / p50, items * 1e6 / p50, err))
    return rows
