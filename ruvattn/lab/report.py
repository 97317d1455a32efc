"""``ruvattn report``: ``docs/benchmarks.md`` written from the experiments' own results.

For every experiment in ``experiments/`` that has a ``runs/<name>/results.csv`` (written by
``ruvattn experiment run``, ``ruvattn benchmark`` or ``ruvattn compare``), the page holds the table
of :func:`~ruvattn.lab.experiments.median_table` (the median of each recorded metric over the
repeats, one row per parameter set), and for ``spec_targets`` and ``peers`` also the tables that
``ruvattn benchmark`` and ``ruvattn compare`` print. A column with the same value in every row is
stated once under its table instead.

The top of the page says when the numbers were measured, on which machine (the CPU model from
``/proc/cpuinfo`` and the core count, as each run recorded them) and with which library version and
source hash (:func:`~ruvattn.lab.experiments.code_version`, the hash that keys the results cache),
and whether the library's source still hashes the same: numbers in the docs are regenerated from
what was measured rather than copied by hand, and say so when they no longer describe the code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ruvattn.errors import InvalidConfig
from ruvattn.lab.experiments import (
    Experiment,
    code_version,
    find_experiment,
    list_experiments,
    load_experiment,
    machine_info,
    median_table,
    read_results,
)
from ruvattn.lab.tables import format_value, peer_table, targets_table

__all__ = ["benchmarks_page", "markdown_table", "write_report"]

#: experiment -> (heading, the command that prints it, the table built from its rows)
DERIVED_TABLES: dict[str, tuple[str, str, Callable[[list[dict[str, Any]]], tuple[list[str], list[list[Any]]]]]] = {
    "spec_targets": ("The specification's targets", "ruvattn benchmark", targets_table),
    "peers": ("Peer time / ruvattn time, measured in the same run", "ruvattn compare", peer_table),
}


def _cell(value: Any) -> str:
    return format_value(value).replace("|", "\\|")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[Any]], *, fold: bool = True) -> str:
    """A markdown table (numbers right-aligned, formatted as ``ruvattn`` prints them).

    With ``fold`` and more than one row, a column whose cells are all equal is left out and stated
    once below the table (``In every row: name = value, ...``).
    """
    cells = [[_cell(v) for v in row] for row in body]
    keep = list(range(len(header)))
    constant: list[str] = []
    if fold and len(cells) > 1:
        keep = [i for i in keep if len({row[i] for row in cells}) > 1]
        constant = [f"{header[i]} = {cells[0][i]}" for i in range(len(header)) if i not in keep]
    if not keep:  # every column constant: show the one row
        keep, constant = list(range(len(header))), []
        cells = cells[:1]

    def numeric(i: int) -> bool:
        values = [row[i] for row in body if row[i] is not None]
        return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)

    lines = [
        "| " + " | ".join(_cell(header[i]) for i in keep) + " |",
        "|" + "|".join("---:" if numeric(i) else "---" for i in keep) + "|",
        *("| " + " | ".join(row[i] for i in keep) + " |" for row in cells),
    ]
    if constant:
        lines += ["", "In every row: " + ", ".join(constant) + "."]
    return "\n".join(lines)


def _point_records(exp: Experiment, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        path = exp.runs_dir / "points" / f"{row.get('key')}.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # ValueError: not JSON, or not UTF-8
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _machine_text(m: dict[str, Any]) -> str:
    extra = ", ".join(x for x in (m.get("system"), f"Python {m['python']}" if m.get("python") else "") if x)
    return f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores" + (f" ({extra})" if extra else "")


def _provenance(exp: Experiment, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """When, where and with which code an experiment's results were measured (as far as recorded)."""
    try:
        meta = json.loads((exp.runs_dir / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    points = _point_records(exp, rows)
    finished = sorted(p["finished"] for p in points if isinstance(p.get("finished"), str))
    machines = {_machine_text(p["machine"]) for p in points if isinstance(p.get("machine"), dict)}
    if not machines and isinstance(meta.get("machine"), dict):
        machines = {_machine_text(meta["machine"])}
    codes = {p["code"] for p in points if isinstance(p.get("code"), str) and p["code"]}
    if not codes and isinstance(meta.get("code_version"), str):
        codes = {meta["code_version"]}
    return {
        "from": finished[0] if finished else meta.get("written"),
        "to": finished[-1] if finished else meta.get("written"),
        "machines": sorted(machines),
        "codes": sorted(codes),
        "version": meta.get("ruvattn") if isinstance(meta.get("ruvattn"), str) else None,
        "ci": bool(meta.get("ci", False)),
    }


def _when(p: dict[str, Any]) -> str:
    if not p["from"]:
        return "unknown"
    a, b = (t.replace("T", " ").replace("Z", " UTC") for t in (p["from"], p["to"]))
    return a if a == b else f"{a} to {b}"


def _section(exp: Experiment, rows: list[dict[str, Any]], p: dict[str, Any], current: str) -> list[str]:
    header, body = median_table(exp)
    ok = sum(1 for r in rows if r.get("status") == "ok")
    out = [f"## {exp.name}", ""]
    if exp.description:
        out += [exp.description.rstrip(".") + ".", ""]
    facts = [
        f"`{exp.path.parent.name}/{exp.path.name}` runs `{exp.notebook.name}`: {len(body)} parameter set(s), "
        f"{ok} of {len(rows)} run(s) ok",
        f"measured {_when(p)}",
        "on " + ("; ".join(p["machines"]) if p["machines"] else "an unrecorded machine"),
    ]
    if p["codes"]:
        same = p["codes"] == [current]
        which = " (the current source)" if same else " (**not** the current source)"
        facts.append("code " + ", ".join(f"`{c}`" for c in p["codes"]) + which)
    ci = " **CI-sized version (`--ci`), not the full experiment.**" if p["ci"] else ""
    out += ["; ".join(facts) + "." + ci, ""]
    out += ["Median over the repeats of each recorded metric, per parameter set:", ""]
    out += [markdown_table(header, body), ""]
    if exp.name in DERIVED_TABLES:
        title, command, build_table = DERIVED_TABLES[exp.name]
        h, b = build_table(rows)
        if b:
            out += [f"### {title} (`{command}`)", "", markdown_table(h, b, fold=False), ""]
    return out


def benchmarks_page(directory: str | Path = "experiments", names: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """The markdown of ``docs/benchmarks.md`` and the experiments it covers.

    ``names``: these experiments (each must have results); by default every experiment in
    ``directory`` that has a ``results.csv``. Raises :class:`~ruvattn.errors.InvalidConfig` when
    there is nothing to report.
    """
    if names:
        paths = [find_experiment(n, directory) for n in names]
    else:
        paths = list_experiments(directory)
        if not paths:
            raise InvalidConfig(f"no experiment files (*.experiment.yaml) in {str(directory)!r}.")
    found = []
    loaded = []
    for path in paths:
        if names:
            exp = load_experiment(path)
        else:  # a broken experiment file does not hide the others' results: one line on stderr, then on
            try:
                exp = load_experiment(path)
            except InvalidConfig as exc:
                import sys

                print(f"ruvattn: skipped in the report: {exc}", file=sys.stderr)
                continue
        loaded.append(exp)
        if not (exp.runs_dir / "results.csv").is_file():
            if names:
                raise InvalidConfig(
                    f"experiment {exp.name!r} has no results ({exp.runs_dir / 'results.csv'}); "
                    f"run `ruvattn experiment run {exp.name}` first."
                )
            continue
        rows = read_results(exp)
        if rows:
            found.append((exp, rows))
    if not found:
        known = ", ".join(exp.name for exp in loaded) or "none that loads"
        raise InvalidConfig(
            f"no experiment in {str(directory)!r} has results yet (experiments: {known}); run "
            "`ruvattn benchmark`, `ruvattn compare` or `ruvattn experiment run NAME` first."
        )
    from ruvattn import __version__

    current = code_version()
    provenance = [_provenance(exp, rows) for exp, rows in found]
    machines = sorted({m for p in provenance for m in p["machines"]})
    codes = sorted({c for p in provenance for c in p["codes"]})
    starts = sorted(p["from"] for p in provenance if p["from"])
    ends = sorted(p["to"] for p in provenance if p["to"])
    span = _when({"from": starts[0], "to": ends[-1]}) if starts else "unknown"
    versions = sorted({p["version"] for p in provenance if p["version"]}) or [__version__]
    if codes == [current]:
        code_line = f"`{current}`, which is the current source"
    elif codes:
        code_line = (
            ", ".join(f"`{c}`" for c in codes) + f"; **the current source hashes to `{current}`**: these numbers "
            "were measured on other code; run the experiments again to refresh them"
        )
    else:
        code_line = f"not recorded (the current source hashes to `{current}`)"
    here = machine_info()
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `ruvattn report` from experiments/runs/*/results.csv. Do not edit by hand: run",
        "     the experiments (`ruvattn benchmark`, `ruvattn compare`, `ruvattn experiment run NAME`),",
        "     then `ruvattn report`. -->",
        "",
        f"Generated by `ruvattn report` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the results of "
        f"the experiments below (`experiments/runs/<name>/results.csv`).",
        "",
        "| | |",
        "|---|---|",
        f"| measured | {span} |",
        f"| machine | {'; '.join(machines) if machines else 'not recorded'} |",
        f"| library | ruvattn {', '.join(versions)} |",
        f"| source hash of the measured code | {code_line} |",
        f"| report written on | {_machine_text(here)} |",
        "",
        "Every number is a median over an experiment's repeats (each repeat: one papermill run of the",
        "experiment's notebook with its own seed); the experiment files in `experiments/` say what is",
        "timed and how (see `experiments/README.md`). Timings are single runs on a shared machine: compare",
        "within a table, and peers only through ratios measured in the same run.",
        "",
    ]
    for (exp, rows), p in zip(found, provenance, strict=True):
        lines += _section(exp, rows, p, current)
    return "\n".join(lines).rstrip() + "\n", [exp.name for exp, _ in found]


def write_report(
    directory: str | Path = "experiments", out: str | Path = "docs/benchmarks.md", names: Sequence[str] | None = None
) -> tuple[Path, list[str]]:
    """Write :func:`benchmarks_page` to ``out``; returns the path and the experiments it covers."""
    text, covered = benchmarks_page(directory, names)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, covered
