"""The ``ruvattn`` command line.

``ruvattn demo`` runs every mechanism on a built-in synthetic graph and prints
latency percentiles, throughput and agreement with exact (float64 numpy)
attention.  ``ruvattn analyze`` prints attention statistics of a mechanism on a
data set (entropy against ``log K``, effective support, top-k mass, sparsity,
head diversity; routing balance for a mixture of experts), computed with
:mod:`ruvattn.analysis`, and can write the matching widget's figures.  Results
go to stdout, progress and errors to stderr; a bad flag exits with status 2 and
a message naming it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


def _int_at_least(name: str, low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``, or an error naming the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be at least {low}; got {value}")
        return value

    return parse


def _positive(name: str) -> Callable[[str], int]:
    return _int_at_least(name, 1)


def _mechanisms(text: str) -> list[str]:
    """``--mechanism``: one kind or a comma-separated list of kinds from :func:`ruvattn.available`."""
    from ruvattn import available

    kinds = list(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in available()]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown mechanism {', '.join(map(repr, unknown)) or repr(text)}; choose from {', '.join(available())}"
        )
    return kinds


_ANALYZE_NOTES = """\
how each kind is set up (width d = the data's):
  hyperbolic, manifold, mixed_curvature, moe  the data is mapped into the unit Poincare ball first,
      expmap0(x / mean |x|): directions (so the neighbours) are kept and a typical row lands at
      radius tanh(1) = 0.76 whatever the data's scale
  multi_head, dynamic_heads  H heads (H must divide d); the table's weights are the mean over
      heads (torch's average_attn_weights), head diversity is the mean pairwise Jensen-Shannon
      divergence of the per-head weights
  gat, gatv2     H heads of width max(1, d // H), no edge features, no self loop
  local_global, sparse_graph  a window of K // 2 neighbours around the nearest + K // 8 landmarks
  linear         elu+1 feature map
  moe            the builder's local, hyperbolic, sparse (as above) and linear (FAVOR+, 64
      features) experts with an untrained router seeded by --seed; routing statistics instead
      of weights
figures (--figures DIR): DIR/<kind>.html and DIR/<kind>.svg: AttentionHeatmap of the same M nodes,
  each over its own neighbours (its title shows the table's numbers); for headed kinds also
  DIR/<kind>-heads.* (HeadView of the first node); MoERoutingView routes the same M queries.
"""


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
    an = sub.add_parser(
        "analyze", help="attention statistics of a mechanism on a data set (entropy, top-k mass, routing balance)",
        description="Attention statistics of a mechanism on a data set: each of the first M nodes attends\n"
        "over its own K nearest neighbours (graph mode), and ruvattn.analysis summarises the weights.",
        epilog=_ANALYZE_NOTES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    an.add_argument(
        "--mechanism",
        type=_mechanisms,
        required=True,
        metavar="KIND[,KIND...]",
        help="kind(s) from ruvattn.available(), e.g. scaled_dot_product,multi_head,gat,moe",
    )
    an.add_argument(
        "--data",
        default="demo",
        metavar="demo|PATH.npy",
        help="'demo' (built-in clustered graph, no download) or an (N, d) embedding matrix in a .npy file",
    )
    an.add_argument("--nodes", type=_positive("--nodes"), default=2000, metavar="N", help="nodes of the demo graph")
    an.add_argument("--dim", type=_positive("--dim"), default=128, metavar="D", help="width of the demo graph")
    an.add_argument(
        "--neighbours",
        type=_positive("--neighbours"),
        default=32,
        metavar="K",
        help="neighbours per node (exact cosine kNN)",
    )
    an.add_argument(
        "--queries",
        type=_positive("--queries"),
        default=None,
        metavar="M",
        help="analyse the first M nodes (default 64, or every node when there are fewer)",
    )
    an.add_argument(
        "--heads",
        type=_positive("--heads"),
        default=4,
        metavar="H",
        help="heads of multi_head, dynamic_heads, gat and gatv2",
    )
    an.add_argument(
        "--top-k",
        dest="top_k",
        type=_positive("--top-k"),
        default=None,
        metavar="K",
        help="k of the top-k mass (default 8); for moe the router's top-k (default 2 of the 4 experts)",
    )
    an.add_argument("--json", action="store_true", help="print the results as JSON")
    an.add_argument(
        "--figures",
        default=None,
        metavar="DIR",
        help="write each mechanism's widget into DIR as offline HTML and SVG (needs ruvattn[widgets])",
    )
    an.add_argument("--seed", type=_int_at_least("--seed", 0), default=0, metavar="S",
                    help="seed of the demo graph and of the layers' parameters")  # fmt: skip
    sub.add_parser("info", help="print the kernel backend (JSON)")
    sub.add_parser("warmup", help="compile every kernel once (fills NUMBA_CACHE_DIR)")
    from ruvattn.lab import cli_experiment

    cli_experiment.add_parsers(sub)
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
    from ruvattn.reference import gat as gref
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


# -- analyze ------------------------------------------------------------------------------

_MASS = 0.9


def _load_embeddings(text: str) -> np.ndarray:
    """An ``(N, d)`` float matrix from a ``.npy`` file, or an error naming ``--data``."""
    from ruvattn.errors import InvalidConfig

    path = Path(text)
    if path.suffix.lower() != ".npy":
        raise InvalidConfig(f"--data must be 'demo' or a path to a .npy file; got {text!r}.")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidConfig(f"--data: cannot read {text!r} as a .npy array ({exc}).") from None
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise InvalidConfig(f"--data: {text!r} must hold an (N, d) matrix with N >= 2; got shape {np.shape(x)}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InvalidConfig(f"--data: {text!r} must hold real numbers; got dtype {x.dtype}.")
    x = x.astype(np.float32 if x.dtype == np.float32 else np.float64)
    if not np.isfinite(x).all():
        raise InvalidConfig(f"--data: {text!r} contains NaN or infinite values.")
    return x


def _analysis_mechanism(kind: str, dim: int, args: argparse.Namespace, k: int) -> Any:
    """The mechanism of ``kind`` at width ``dim``: its :meth:`~ruvattn.mechanisms.Attention.example_params`
    with the flags applied to the parameters of those names (``--heads``, ``--seed``, ``--top-k`` as the
    router's ``top_k``; a local window of ``k/2`` and ``k/8`` landmarks)."""
    from ruvattn.mechanisms import build, mechanism_class

    cls = mechanism_class(kind)
    params = cls.example_params(dim, heads=args.heads)
    overrides = {"seed": args.seed, "local_window": max(1, k // 2), "global_nodes": k // 8}
    if args.top_k is not None:
        overrides["top_k"] = args.top_k
    params.update({name: value for name, value in overrides.items() if name in cls._param_index})
    return build({"type": kind, **params})


def _widgets_missing() -> str | None:
    for name in ("ipywidgets", "plotly", "anywidget", "kaleido"):
        if importlib.util.find_spec(name) is None:
            return name
    return None


def _write_figures(widget: Any, directory: Path, stem: str) -> list[str]:
    from ruvattn.errors import InvalidConfig

    html, svg = directory / f"{stem}.html", directory / f"{stem}.svg"
    try:
        widget.save_html(html)
    except OSError as exc:
        raise InvalidConfig(f"--figures: cannot write {html} ({exc}).") from None
    try:
        widget.save_image(svg)
    except Exception as exc:  # kaleido/Chromium failures come in many types
        raise InvalidConfig(
            f"--figures: cannot write {svg}: {exc} (SVG export needs kaleido and a Chrome/Chromium)."
        ) from None
    return [str(html), str(svg)]


def _analyze(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from ruvattn import analysis
    from ruvattn.datasets import clustered_graph
    from ruvattn.datasets.synthetic import exact_knn
    from ruvattn.errors import InvalidConfig

    kinds: list[str] = args.mechanism
    figures: Path | None = None
    if args.figures is not None:
        missing = _widgets_missing()
        if missing is not None:
            raise InvalidConfig(f"--figures needs the widgets extra ({missing} is missing): "
                                "pip install 'ruvattn[widgets]'")  # fmt: skip
        figures = Path(args.figures)
        if figures.exists() and not figures.is_dir():
            raise InvalidConfig(f"--figures: {args.figures!r} exists and is not a directory.")
    if args.data == "demo":
        if args.neighbours >= args.nodes:
            raise InvalidConfig(f"--neighbours ({args.neighbours}) must be < --nodes ({args.nodes}).")
        g = clustered_graph(args.nodes, args.dim, k=args.neighbours, seed=args.seed)
        x, nb = g.embeddings, g.neighbours
        data: dict[str, Any] = {"source": "demo", "generator": "clustered_graph"}
    else:
        x = _load_embeddings(args.data)
        if args.neighbours >= x.shape[0]:
            raise InvalidConfig(f"--neighbours ({args.neighbours}) must be < the {x.shape[0]} rows of --data.")
        nb = exact_knn(x, args.neighbours)
        data = {"source": str(args.data)}
    n, d = x.shape
    k, m = args.neighbours, (min(64, n) if args.queries is None else args.queries)
    if m > n:
        raise InvalidConfig(f"--queries ({m}) must be at most the number of nodes ({n}).")
    if not 1 <= args.heads <= 16:
        raise InvalidConfig(f"--heads must be in [1, 16]; got {args.heads}.")
    mass_k = 8 if args.top_k is None else args.top_k
    mode = f"each of the first {m} nodes over its own {k} nearest neighbours (cosine kNN)"
    data.update(nodes=n, dim=d, neighbours=k, queries=m, seed=args.seed, mode=mode)

    results: list[dict[str, Any]] = []
    written: list[str] = []
    for kind in tqdm(kinds, desc="ruvattn analyze", file=sys.stderr, unit="mechanism"):
        mech = _analysis_mechanism(kind, d, args, k)
        xs = mech.embed(x)  # into the mechanism's input space (identity for Euclidean ones)
        per_head = mech.weights(xs[:m], xs, neighbours=nb[:m]).astype(np.float64).reshape(-1, m, k)
        weights = per_head.mean(axis=0)
        stats = analysis.summarize(weights, k=mass_k, mass=_MASS)
        row: dict[str, Any] = {
            "mechanism": kind, "queries": m, "keys": k, "input_space": mech.input_space,
            "entropy": stats["entropy"], "uniform_entropy": stats["uniform_entropy"],
            "normalized_entropy": stats["normalized_entropy"], "effective_support": stats["effective_support"],
            "top_k": mass_k, "top_k_mass": stats[f"top{mass_k}_mass"],
            "sparsity_mass": _MASS, "sparsity": stats[f"sparsity@{_MASS:g}"],
        }  # fmt: skip
        if per_head.shape[0] > 1:
            row["heads"] = int(per_head.shape[0])
            row["head_entropy"] = [float(analysis.entropy(w).mean()) for w in per_head]
            row["head_diversity"] = analysis.head_diversity(per_head)
        routing_record = getattr(mech, "routing_record", None)  # mechanisms that route (a mixture) say how
        if routing_record is not None:
            record = routing_record(xs[:m])
            row["routing"] = {
                "experts": record.probs.shape[1], "expert_kinds": [e.kind for e in mech.experts],
                "uniform_entropy": math.log(record.probs.shape[1]),
                "normalized_router_entropy": float(analysis.normalized_entropy(record.probs).mean()),
                "load": record.load.tolist(), "utilisation": record.utilisation.tolist(),
                **analysis.routing_balance(record),
            }  # fmt: skip
        results.append(row)
        if figures is not None:
            written += _figures_for(kind, mech, xs, nb, m, figures)
    report: dict[str, Any] = {"data": data, "results": results}
    if figures is not None:
        report["figures"] = written
    return report


def _figures_for(kind: str, mech: Any, x: np.ndarray, nb: np.ndarray, m: int, directory: Path) -> list[str]:
    """The widgets of one mechanism as ``DIR/<kind>.html``/``.svg``: the heatmap, the per-head panels where
    it has heads, the routing view where it routes."""
    from ruvattn.errors import InvalidConfig

    try:
        directory.mkdir(parents=True, exist_ok=True)
        from ruvattn.widgets.heads import HeadView
        from ruvattn.widgets.heatmap import AttentionHeatmap
        from ruvattn.widgets.routing import MoERoutingView

        widget = AttentionHeatmap(mech, x[:m], x, neighbours=nb[:m], max_queries=m)
        written = _write_figures(widget, directory, kind)
        if mech.num_weight_heads > 1:  # per-head panels of the first node over its own neighbours
            written += _write_figures(HeadView(mech, x[:1], x[nb[0]]), directory, f"{kind}-heads")
        if getattr(mech, "routing_record", None) is not None:
            written += _write_figures(MoERoutingView(mech, x[:m]), directory, f"{kind}-routing")
    except ImportError as exc:
        raise InvalidConfig(f"--figures needs the widgets extra ({exc}): pip install 'ruvattn[widgets]'") from None
    except OSError as exc:
        raise InvalidConfig(f"--figures: cannot create {str(directory)!r} ({exc}).") from None
    return written


def _print_analysis(report: dict[str, Any]) -> None:
    rows = report["results"]
    k = rows[0]["top_k"] if rows else 8
    head = (
        f"{'mechanism':<19} {'queries':>7} {'keys':>5} {'entropy':>8} {'log K':>7} {'norm. H':>8} "
        f"{'eff. support':>12} {f'top-{k} mass':>11} {f'sparsity@{_MASS:g}':>12} {'head div. (JS)':>14}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        div = f"{r['head_diversity']:>14.4f}" if "head_diversity" in r else f"{'-':>14}"
        print(f"{r['mechanism']:<19} {r['queries']:>7d} {r['keys']:>5d} {r['entropy']:>8.4f} "
              f"{r['uniform_entropy']:>7.4f} {r['normalized_entropy']:>8.4f} {r['effective_support']:>12.3f} "
              f"{r['top_k_mass']:>11.4f} {r['sparsity']:>12.4f} {div}")  # fmt: skip
    routing = [(r["mechanism"], r["routing"]) for r in rows if "routing" in r]
    if routing:
        print()
        head = (
            f"{'mechanism':<19} {'experts':>7} {'top-k':>5} {'router H':>8} {'log E':>7} "
            f"{'max load/ideal':>14} {'load CV':>8} {'dead':>6} {'dropped':>7} {'overflowed':>10} "
            f"{'LB loss':>8} {'z-loss':>8}"
        )
        print(head)
        print("-" * len(head))
        for name, r in routing:
            dead = ",".join(map(str, r["dead_experts"])) or "-"
            print(f"{name:<19} {r['experts']:>7d} {r['top_k']:>5d} "
                  f"{r['router_entropy']:>8.4f} {r['uniform_entropy']:>7.4f} {r['max_load_ratio']:>14.3f} "
                  f"{r['load_cv']:>8.3f} {dead:>6} {r['dropped']:>7d} {r['overflowed']:>10d} "
                  f"{r['load_balancing_loss']:>8.4f} {r['z_loss']:>8.4f}")  # fmt: skip
    data = report["data"]
    print(f"\ndata: {data['source']} ({data['nodes']} nodes, d = {data['dim']}); {data['mode']}")
    for path in report.get("figures", []):
        print(f"figure: {path}")


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
        elif args.command == "analyze":
            report = _analyze(args)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                _print_analysis(report)
        elif args.command == "info":
            from ruvattn import backend_info

            print(json.dumps(backend_info(), indent=2))
        elif args.command == "warmup":
            from ruvattn import warmup

            print(json.dumps(warmup()))
        elif args.command in ("experiment", "benchmark", "compare", "report"):
            from ruvattn.lab import cli_experiment

            return cli_experiment.run(args)
    except AttentionError as exc:
        print(f"ruvattn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
