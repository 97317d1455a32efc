"""The ``experiment``, ``benchmark``, ``compare`` and ``report`` commands of ``ruvattn``.

See :mod:`ruvattn.lab.experiments` and :mod:`ruvattn.lab.report`.

- ``ruvattn experiment list`` — the experiment files in ``experiments/``: one line per good file on
  stdout; a file that cannot be loaded (bad YAML, a wrongly typed key, a missing notebook) does not
  hide the others: it gets one line on stderr naming it and the problem, and the exit status is 2
  if any file was bad (so a script notices), 0 otherwise;
- ``ruvattn experiment run NAME [--workers N | --scheduler ADDRESS] [--ci] [--force]`` — run the
  points not in the cache, print what ran, what came from the cache and what failed (exit status
  1 if any run failed; the others' results are kept);
- ``ruvattn experiment medians NAME [--metric M ...] [--json] [--plot FILE.html]`` — the median of
  each recorded metric per parameter set;
- ``ruvattn experiment summary NAME [--metric M ...] [--json]`` — mean ± sample std (and count) of each
  recorded metric per parameter set (what a paper reports over seeds);
- ``ruvattn benchmark`` — runs the ``spec_targets`` experiment and prints the specification's
  latency table with each row met or missed;
- ``ruvattn compare`` — runs the ``peers`` experiment and prints ruvattn against numpy, PyTorch,
  PyTorch Geometric and ruvector-attention, as ratios measured in the same run;
- ``ruvattn report [NAME ...] [--out docs/benchmarks.md]`` — writes the benchmarks page from the
  experiments' results (:mod:`ruvattn.lab.report`); exit status 2 if there are none.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ruvattn.errors import InvalidConfig

__all__ = ["add_parsers", "run"]


def _run_options(p: argparse.ArgumentParser) -> None:
    from ruvattn.lab.cli import _positive

    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive("--workers"), default=None, metavar="N",
                       help="local worker processes (default: cores)")  # fmt: skip
    where.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--ci", action="store_true", help="the experiment's tiny CI version")
    p.add_argument("--force", action="store_true", help="ignore the cache and run every point again")
    p.add_argument("--dir", default="experiments", help="where the experiment files are (default: experiments)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parsers(sub: Any) -> None:
    """Add ``experiment``, ``benchmark``, ``compare`` and ``report`` to the ``ruvattn`` parser."""
    exp = sub.add_parser("experiment", help="parameter grids over papermill notebooks, cached (list/run/medians)")
    esub = exp.add_subparsers(dest="action", required=True)
    ls = esub.add_parser(
        "list", help="the experiment files",
        description="The experiment files in --dir, one line each on stdout. A file that cannot be loaded "
        "gets one line on stderr (the file and the problem) and does not hide the others; the exit status "
        "is then 2 (0 when every file loads).",
    )  # fmt: skip
    ls.add_argument("--dir", default="experiments")
    run = esub.add_parser("run", help="run an experiment's points (cached points are skipped)")
    run.add_argument("name", help="experiment name (experiments/NAME.experiment.yaml) or a file")
    _run_options(run)
    med = esub.add_parser("medians", help="median of each recorded metric per parameter set")
    med.add_argument("name")
    med.add_argument("--dir", default="experiments")
    med.add_argument("--metric", action="append", default=None, metavar="M", help="a recorded column (repeatable)")
    med.add_argument("--json", action="store_true", help="print the table as JSON")
    med.add_argument("--plot", default=None, metavar="FILE.html", help="also write a plotly bar chart (offline HTML)")
    summ = esub.add_parser("summary", help="mean ± std (n) of each recorded metric per parameter set")
    summ.add_argument("name")
    summ.add_argument("--dir", default="experiments")
    summ.add_argument("--metric", action="append", default=None, metavar="M", help="a recorded column (repeatable)")
    summ.add_argument("--json", action="store_true", help="print the table as JSON")
    bench = sub.add_parser("benchmark", help="the specification's latency table (the spec_targets experiment)")
    _run_options(bench)
    bench.add_argument("--json", action="store_true")
    peers = sub.add_parser("compare", help="ruvattn against its peers, as ratios (the peers experiment)")
    _run_options(peers)
    peers.add_argument("--json", action="store_true")
    rep = sub.add_parser("report", help="write docs/benchmarks.md from the experiments' results")
    rep.add_argument("names", nargs="*", metavar="NAME", help="only these experiments (default: all with results)")
    rep.add_argument("--dir", default="experiments", help="where the experiment files are (default: experiments)")
    rep.add_argument("--out", default="docs/benchmarks.md", help="the page to write (default: docs/benchmarks.md)")


def print_table(header: list[str], body: list[list[Any]]) -> None:
    from ruvattn.lab.tables import format_value

    cells = [[format_value(v) for v in row] for row in body]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))


def _execute(name: str, args: argparse.Namespace) -> Any:
    from ruvattn.lab.experiments import find_experiment, load_experiment, run_experiment

    exp = load_experiment(find_experiment(name, args.dir), ci=args.ci)
    report = run_experiment(
        exp, workers=args.workers, scheduler=args.scheduler, force=args.force, progress=not args.quiet
    )
    return report


def _plot(header: list[str], body: list[list[Any]], metrics: list[str], path: str) -> None:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise InvalidConfig("--plot needs plotly: pip install 'ruvattn[widgets]'") from None
    n_params = len(header) - len(metrics) - 1
    labels = [" · ".join(f"{h}={v}" for h, v in zip(header[:n_params], row, strict=False)) for row in body]
    fig = go.Figure(
        [go.Bar(name=m, x=labels, y=[row[n_params + 1 + i] for row in body]) for i, m in enumerate(metrics)]
    )
    fig.update_layout(barmode="group", title="median over repeats", xaxis_tickangle=-30)
    fig.write_html(path, include_plotlyjs=True)


def _list(directory: str) -> int:
    """``experiment list``: the good files on stdout, one line per bad one on stderr; 2 if any was bad."""
    import sys

    from ruvattn.lab.cli import input_error
    from ruvattn.lab.experiments import list_experiments, load_experiment

    bad = 0
    for path in list_experiments(directory):
        try:
            exp = load_experiment(path)
            line = f"{exp.name:24} {len(exp.runs()):4} runs  {exp.notebook.name:28} {exp.description}"
        except Exception as exc:
            message = input_error(exc)
            if message is None:
                raise
            print(f"ruvattn experiment list: error: {message}", file=sys.stderr)
            bad += 1
            continue
        print(line)
    return 2 if bad else 0


def run(args: argparse.Namespace) -> int:
    """Dispatch one of the commands; returns the exit status."""
    from ruvattn.lab.experiments import find_experiment, load_experiment, mean_table, median_table

    if args.command == "report":
        from ruvattn.lab.report import write_report

        path, covered = write_report(args.dir, args.out, args.names or None)
        print(f"{path}: {', '.join(covered)}")
        return 0
    if args.command == "experiment" and args.action == "list":
        return _list(args.dir)
    if args.command == "experiment" and args.action == "summary":
        exp = load_experiment(find_experiment(args.name, args.dir))
        header, body = mean_table(exp, metrics=args.metric)
        if args.json:
            print(json.dumps([dict(zip(header, row, strict=True)) for row in body], indent=2))
        else:
            print_table(header, body)
        return 0
    if args.command == "experiment" and args.action == "medians":
        exp = load_experiment(find_experiment(args.name, args.dir))
        header, body = median_table(exp, metrics=args.metric)
        if args.plot:  # first: a plot that cannot be written is an error with nothing printed yet
            _plot(header, body, header[header.index("ok runs") + 1 :], args.plot)
        if args.json:
            print(json.dumps([dict(zip(header, row, strict=True)) for row in body], indent=2))
        else:
            print_table(header, body)
        if args.plot:
            print(f"plot: {args.plot}")
        return 0
    name = {"benchmark": "spec_targets", "compare": "peers"}.get(args.command, getattr(args, "name", None))
    report = _execute(name, args)
    if args.command == "experiment":
        print(report.summary())
    else:
        from ruvattn.lab.tables import peer_table, targets_table

        header, body = (targets_table if args.command == "benchmark" else peer_table)(report.rows)
        if args.json:
            print(json.dumps([dict(zip(header, row, strict=True)) for row in body], indent=2))
        else:
            print_table(header, body)
            print(report.summary())
    return 1 if report.failed else 0
