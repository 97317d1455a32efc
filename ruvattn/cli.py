"""The ``ruvattn`` command line.

``ruvattn demo`` runs every mechanism on a built-in synthetic graph and prints
latency percentiles, throughput and agreement with exact (float64 numpy)
attention.  Results go to stdout, progress and errors to stderr; a bad flag
exits with status 2 and a message naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["main"]


def _positive(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number; got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1; got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ruvattn", description="Attention mechanisms on graphs (Numba).")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run every mechanism on a built-in synthetic graph and print a latency table")
    demo.add_argument("--nodes", type=_positive("--nodes"), default=2000, help="nodes in the synthetic graph")
    demo.add_argument("--dim", type=_positive("--dim"), default=128, help="embedding width d")
    demo.add_argument("--neighbours", type=_positive("--neighbours"), default=32, help="neighbours per node (k)")
    demo.add_argument("--candidates", type=_positive("--candidates"), default=1000, help="keys in a candidate set")
    demo.add_argument("--heads", type=_positive("--heads"), default=4, help="heads for multi-head attention")
    demo.add_argument("--repeats", type=_positive("--repeats"), default=300, help="timed calls per row")
    demo.add_argument("--threads", type=_positive("--threads"), default=1, help="Numba threads")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--json", action="store_true", help="print the table as JSON")
    sub.add_parser("info", help="print the kernel backend (JSON)")
    sub.add_parser("warmup", help="compile every kernel once (fills NUMBA_CACHE_DIR)")
    return p


def _time(fn: Callable[[], Any], repeats: int) -> np.ndarray:
    fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out * 1e6


def _demo(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from ruvattn import (
        FlashAttention,
        GATConv,
        HyperbolicAttention,
        LinearAttention,
        LocalGlobalAttention,
        MoEAttention,
        MultiHeadAttention,
        ScaledDotProductAttention,
        threads,
    )
    from ruvattn import reference as ref
    from ruvattn.datasets import clustered_graph
    from ruvattn.errors import InvalidConfig
    from ruvattn.geometry import PoincareBall
    from ruvattn.reference import graph as gref
    from ruvattn.reference import hyperbolic as href
    from ruvattn.reference import linear as lref

    if args.neighbours >= args.nodes or args.candidates > args.nodes:
        raise InvalidConfig(
            f"demo: --neighbours ({args.neighbours}) must be < --nodes and --candidates ({args.candidates}) "
            f"<= --nodes ({args.nodes})."
        )
    if args.dim % args.heads:
        raise InvalidConfig(f"demo: --heads must divide --dim={args.dim}; got {args.heads}.")
    g = clustered_graph(args.nodes, args.dim, k=args.neighbours, seed=args.seed)
    x = g.embeddings
    x64 = x.astype(np.float64)
    d, k, n = args.dim, args.neighbours, args.candidates
    rng = np.random.default_rng(args.seed)
    q = x[int(rng.integers(args.nodes))]
    cand = x[:n]
    sdpa = ScaledDotProductAttention(d)
    mha = MultiHeadAttention(d, args.heads, seed=args.seed)
    flash = FlashAttention(d)
    kv = mha.project(cand, cand)
    nb = g.neighbours
    m = min(64, args.nodes)

    def exact_one(ids: np.ndarray) -> np.ndarray:
        return ref.attention(q.astype(np.float64), x64[ids], x64[ids])[0]

    def exact_mha() -> np.ndarray:
        w = [t.astype(np.float64) for t in mha._arrays()]
        return ref.multi_head_attention(q.astype(np.float64), x64[:n], x64[:n], *w, args.heads)[0]

    nodes = np.arange(args.nodes)
    # the same graph embedded in the unit Poincaré ball (expmap0 of the rescaled embeddings)
    hyp = HyperbolicAttention(d, curvature=-1.0)
    xh = PoincareBall(-1.0).expmap0(x / np.float32(np.linalg.norm(x, axis=1).mean()))
    xh64 = xh.astype(np.float64)
    qh = xh[int(rng.integers(args.nodes))]

    lg = LocalGlobalAttention(d, local_window=min(32, n), global_nodes=8)
    lg_keep = lg.attention_mask(n)
    lin = LinearAttention(d, feature_map="favor", num_features=64, seed=args.seed)

    def exact_linear() -> np.ndarray:  # FAVOR+ itself, in float64 (not softmax attention)
        return np.stack([lref.linear_attention(x64[i], x64[:n], x64[:n], "favor", lin.projection_)[0]
                         for i in range(m)])  # fmt: skip

    # MoE over four experts (top-2) on the ball-sized embeddings, so the hyperbolic expert sees points of the ball
    moe = (MoEAttention.builder().add_local_expert(d).add_hyperbolic_expert(d, -1.0).add_sparse_expert(min(32, n), 8)
           .add_linear_expert(64).top_k(2).seed(args.seed).build())  # fmt: skip
    moe_keys = moe.prepare(xh[:n], xh[:n])  # the linear expert's summary, once

    def exact_moe() -> np.ndarray:  # the same two experts and gate weights, in float64
        return sum(w * moe.experts[e].forward(xh64[0], xh64[:n], xh64[:n]) for e, w in moe.get_routing(xh64[0]))

    # GAT over the kNN graph (messages neighbour -> node), edge feature = the neighbour's rank
    gat = GATConv(d, max(1, d // args.heads), heads=args.heads, edge_dim=1, seed=args.seed)
    edge_index = np.stack([nb.ravel(), np.repeat(nodes, k)]).astype(np.int64)
    edge_attr = np.tile(np.arange(k, dtype=np.float32), args.nodes)[:, None] / k

    def exact_gat() -> np.ndarray:
        return gref.gat_conv(x64, edge_index, edge_attr, gat.state_dict(), heads=args.heads)[0]

    def exact_hyp(qv: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return href.hyperbolic_attention(qv.astype(np.float64), xh64[ids], xh64[ids], 1.0, 1.0)[0]

    rows: list[tuple[str, str, Callable[[], Any], Callable[[], np.ndarray], int]] = [
        ("scaled_dot_product", f"1 query x {k} neighbours (ids)", lambda: sdpa.forward(q, x, x, ids=nb[0]),
         lambda: exact_one(nb[0]), 1),
        ("scaled_dot_product", f"1 query x {n} candidates", lambda: sdpa.forward(q, cand, cand),
         lambda: exact_one(np.arange(n)), 1),
        ("multi_head", f"{args.heads} heads, 1 x {n}, projected once", lambda: mha.forward(q, kv), exact_mha, 1),
        ("local_global", f"1 x {n}: window {min(32, n)} + 8 global", lambda: lg.forward(q, cand, cand),
         lambda: ref.attention(q.astype(np.float64), x64[:n], x64[:n], keep=lg_keep)[0], 1),
        ("linear", f"FAVOR+ m=64, {m} x {n}, shared summary", lambda: lin.forward_batch(x[:m], cand, cand),
         exact_linear, m),
        ("flash", f"{m} queries x {n} keys", lambda: flash.forward_batch(x[:m], cand, cand),
         lambda: np.stack([ref.attention(x64[i], x64[:n], x64[:n])[0] for i in range(m)]), m),
        ("scaled_dot_product", f"{args.nodes} nodes x own {k} neighbours", lambda: sdpa.forward_neighbours(x, x, x, nb),
         lambda: np.stack([ref.attention(x64[i], x64[nb[i]], x64[nb[i]])[0] for i in nodes]), args.nodes),
        ("hyperbolic", f"1 query x {n} candidates (ball)", lambda: hyp.forward(qh, xh[:n], xh[:n]),
         lambda: exact_hyp(qh, np.arange(n)), 1),
        ("hyperbolic", f"{args.nodes} nodes x own {k} neighbours", lambda: hyp.forward_neighbours(xh, xh, xh, nb),
         lambda: np.stack([exact_hyp(xh[i], nb[i]) for i in nodes]), args.nodes),
        ("moe", f"4 experts, top-2, 1 x {n}, prepared", lambda: moe.forward(xh[0], moe_keys), exact_moe, 1),
        ("gat", f"{args.nodes} nodes, {k * args.nodes} edges + loops", lambda: gat(x, edge_index, edge_attr),
         exact_gat, args.nodes),
    ]  # fmt: skip
    table = []
    with threads(args.threads):
        for name, work, fn, exact, items in tqdm(rows, desc="ruvattn demo", file=sys.stderr, unit="row"):
            got = np.asarray(fn())
            err = float(np.max(np.abs(got.astype(np.float64) - exact())))
            t = _time(fn, args.repeats)
            p50, p95, p99 = np.percentile(t, [50, 95, 99])
            table.append({"mechanism": name, "workload": work, "p50_us": p50, "p95_us": p95, "p99_us": p99,
                          "ops_per_s": 1e6 / p50, "queries_per_s": items * 1e6 / p50, "max_abs_err": err})  # fmt: skip
    return table


def _print_table(table: list[dict[str, Any]]) -> None:
    head = (
        f"{'mechanism':<19} {'workload':<34} {'p50 µs':>9} {'p95 µs':>9} {'p99 µs':>9} {'ops/s':>9} "
        f"{'queries/s':>11} {'max|Δ| vs exact':>16}"
    )
    print(head)
    print("-" * len(head))
    for r in table:
        print(f"{r['mechanism']:<19} {r['workload']:<34} {r['p50_us']:>9.1f} {r['p95_us']:>9.1f} {r['p99_us']:>9.1f} "
              f"{r['ops_per_s']:>9.0f} {r['queries_per_s']:>11.0f} {r['max_abs_err']:>16.2e}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ruvattn`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    from ruvattn.errors import AttentionError

    try:
        if args.command == "demo":
            table = _demo(args)
            if args.json:
                print(json.dumps(table, indent=2))
            else:
                _print_table(table)
        elif args.command == "info":
            from ruvattn import backend_info

            print(json.dumps(backend_info(), indent=2))
        elif args.command == "warmup":
            from ruvattn import warmup

            print(json.dumps(warmup()))
    except AttentionError as exc:
        print(f"ruvattn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
