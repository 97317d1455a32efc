"""The ``ruvattn`` command line.

``ruvattn demo`` runs every mechanism on a built-in synthetic graph and prints
latency percentiles, throughput and agreement with exact (float64 numpy)
attention.  ``ruvattn analyze`` prints attention statistics of a mechanism on a
data set (entropy against ``log K``, effective support, top-k mass, sparsity,
head diversity; routing balance for a mixture of experts), computed with
:mod:`ruvattn.analysis`, and can write the matching widget's figures.  Results
go to stdout, progress and errors to stderr.

Exit statuses, one rule for every command (:func:`main`, the only place that turns an exception
into a status; a user never sees a traceback):

- ``0``: done; ``1``: done, but an experiment run failed (``experiment run``, ``benchmark``,
  ``compare``), or an internal error (a bug in ruvattn: one line naming it, the traceback only
  with ``RUVATTN_DEBUG=1``);
- ``2``: the input is at fault, with exactly one line on stderr, ``ruvattn <command>: error:
  <message>``: a bad flag or value (argparse), a bad file or config
  (:class:`~ruvattn.errors.AttentionError`), a file that cannot be read or written
  (:class:`OSError`), a file that is not UTF-8 or not valid YAML/CSV, or input too large for memory;
- ``130``: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

__all__ = ["main"]

#: set to 1 to see the traceback of an internal error (a bug) instead of its one-line summary
DEBUG_ENV = "RUVATTN_DEBUG"

_EXIT_USAGE, _EXIT_INTERNAL, _EXIT_INTERRUPTED = 2, 1, 130


def one_line(text: str) -> str:
    r"""``text`` with its line breaks (and the blanks around them) collapsed to single spaces.

    >>> one_line('not valid YAML\n  in "<unicode string>", line 1\n\n')
    'not valid YAML in "<unicode string>", line 1'
    """
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (``<prog>: error: <message>``), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(_EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see: {self.prog} --help)\n")


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
    p = _Parser(
        prog="ruvattn",
        description="Attention mechanisms on graphs (Numba).",
        epilog="Exit status: 0 done; 1 an experiment run failed, or an internal error (a bug: "
        f"{DEBUG_ENV}=1 shows its traceback); 2 bad input (a flag, a value, a file), with one line on stderr; "
        "130 interrupted.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run every mechanism on a built-in synthetic graph and print a latency table")
    demo.add_argument("--nodes", type=_positive("--nodes"), default=2000, help="nodes in the synthetic graph")
    demo.add_argument("--dim", type=_positive("--dim"), default=128, help="embedding width d")
    demo.add_argument("--neighbours", type=_positive("--neighbours"), default=32, help="neighbours per node (k)")
    demo.add_argument("--candidates", type=_positive("--candidates"), default=1000, help="keys in a candidate set")
    demo.add_argument("--heads", type=_positive("--heads"), default=4, help="heads for multi-head attention")
    demo.add_argument("--repeats", type=_positive("--repeats"), default=300, help="timed calls per row")
    demo.add_argument("--threads", type=_positive("--threads"), default=1, help="Numba threads")
    demo.add_argument("--seed", type=_int_at_least("--seed", 0), default=0, help="random seed (>= 0)")
    demo.add_argument("--graph", choices=("auto", "hnsw", "knn"), default="auto",
                      help="neighbour lists: a real HNSW index (faiss, extra 'hnsw'), exact kNN, or auto (hnsw if "
                      "faiss is installed)")  # fmt: skip
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
    an.add_argument("--graph", choices=("auto", "hnsw", "knn"), default="auto",
                    help="each node's neighbours: found by a real HNSW index (faiss, extra 'hnsw'), exact cosine "
                    "kNN, or auto (hnsw if faiss is installed)")  # fmt: skip
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
    wu = sub.add_parser("warmup", help="compile every kernel once (fills NUMBA_CACHE_DIR)")
    wu.add_argument("--jobs", type=_int_at_least("--jobs", 1), default=None, metavar="N",
                    help="processes compiling at once (default: the CPU count; 1 with the cache off)")  # fmt: skip
    wu.add_argument("--kinds", nargs="+", default=None, metavar="KIND",
                    help="warm only these mechanism kinds (both dtypes), not the kernels outside them")  # fmt: skip
    wu.add_argument("--verbose", action="store_true", help="print each unit's seconds")
    from ruvattn.lab import cli_experiment

    cli_experiment.add_parsers(sub)
    return p


def _demo(args: argparse.Namespace) -> list[dict[str, Any]]:
    from tqdm import tqdm

    from ruvattn import threads
    from ruvattn.lab.demo import run_demo

    def progress(kinds: Any) -> Any:
        return tqdm(kinds, desc="ruvattn demo", file=sys.stderr, unit="mechanism")

    with threads(args.threads):
        rows = run_demo(args.nodes, args.dim, args.neighbours, args.candidates, args.heads, args.repeats, args.seed,
                        progress=progress, graph=args.graph)  # fmt: skip
    return [r.as_dict() for r in rows]


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


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        table = _demo(args)
        if args.json:
            print(json.dumps(table, indent=2))
        else:
            _print_table(table)
    elif args.command == "analyze":
        from ruvattn.lab.analyze import run_analysis

        report = run_analysis(args)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_analysis(report)
    elif args.command == "info":
        from ruvattn import backend_info

        print(json.dumps(backend_info(), indent=2))
    elif args.command == "warmup":
        from ruvattn import _config, warmup

        jobs = args.jobs
        if jobs is None:
            jobs = (os.cpu_count() or 1) if _config.CACHE and not _config.JIT_DISABLED else 1
        print(json.dumps(warmup(verbose=args.verbose, jobs=jobs, kinds=args.kinds)))
    elif args.command in ("experiment", "benchmark", "compare", "report"):
        from ruvattn.lab import cli_experiment

        return cli_experiment.run(args)
    return 0


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that ``args`` went through last (``ruvattn experiment run``'s for example)."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None:
            return parser
        parser = subs[0].choices[name]


def input_error(exc: BaseException) -> str | None:
    """The one-line message of an exception that is the input's fault (exit status 2), else ``None``."""
    import csv

    from ruvattn.errors import AttentionError

    try:
        import yaml

        yaml_error: tuple[type[BaseException], ...] = (yaml.YAMLError,)
    except ImportError:
        yaml_error = ()
    if isinstance(exc, OSError) and exc.strerror:
        names = [repr(str(n)) for n in (exc.filename, exc.filename2) if n is not None]
        return one_line(f"{exc.strerror}: {' -> '.join(names)}" if names else exc.strerror)
    if isinstance(exc, UnicodeDecodeError):
        return one_line(f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}")
    if isinstance(exc, MemoryError):
        return one_line(f"not enough memory: {exc}" if str(exc) else "not enough memory for these sizes")
    if isinstance(exc, (AttentionError, OSError, UnicodeError, csv.Error, *yaml_error)):
        return one_line(str(exc)) or type(exc).__name__
    return None


def _failure(command: str, exc: BaseException) -> int:
    """Report ``exc`` in one line on stderr and return the exit status (the rule in the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"{command}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED
    if isinstance(exc, BrokenPipeError):  # `ruvattn ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _EXIT_INTERNAL
    message = input_error(exc)
    if message is not None:
        print(f"{command}: error: {message}", file=sys.stderr)
        return _EXIT_USAGE
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise exc
    print(
        f"{command}: internal error: {type(exc).__name__}: {one_line(str(exc))[:500]} (a bug in ruvattn, "
        f"please report it; {DEBUG_ENV}=1 shows the traceback)",
        file=sys.stderr,
    )
    return _EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ruvattn`` console script; returns the exit status (the rule in the module
    docstring: nothing but ``RUVATTN_DEBUG=1`` lets a traceback out)."""
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the command that was given them, not by the top-level `ruvattn`
            _chosen_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help (0), or a bad flag (2) whose one line _Parser.error printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else _EXIT_USAGE
    command = _chosen_parser(parser, args).prog
    try:
        return _run(args)
    except SystemExit:
        raise
    except BaseException as exc:
        return _failure(command, exc)


if __name__ == "__main__":
    sys.exit(main())
