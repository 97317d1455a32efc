"""Experiments: a grid over a (toy) papermill notebook, run in local processes and on a real local
Dask cluster, cached by a hash, with failed points reported and never losing the others."""

from __future__ import annotations

import csv
import json
import os

import pytest

pytestmark = pytest.mark.kernels  # deselected in CI's NUMBA_DISABLE_JIT pass: the work runs in kernels

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("papermill")

from ruvattn.errors import InvalidConfig  # noqa: E402
from ruvattn.lab.cli import main  # noqa: E402
from ruvattn.lab.experiments import load_experiment, median_table, read_results, run_experiment  # noqa: E402

TOY = """\
import os
from ruvattn.lab import record
assert x >= 0, "x must be >= 0"
record("double", 2 * x)
record("seeded", (seed * 7919 + x) % 1000)
record("env", {"numba_threads": int(os.environ["NUMBA_NUM_THREADS"])})
"""


def _toy(tmp_path, body: str = TOY, extra: str = "") -> object:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1\nseed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, tmp_path / "toy.ipynb")
    spec = tmp_path / "toy.experiment.yaml"
    spec.write_text(
        "notebook: toy.ipynb\ndescription: doubles x\ngrid:\n  x: [1, 2]\npoints:\n  - {x: -1}\nrepeats: 2\nseed: 10\n"
        + extra
    )
    return spec


def _by_x(rows):
    return {(r["x"], r["repeat"]): r for r in rows}


def test_grid_runs_caches_and_reports_failures(tmp_path):
    spec = _toy(tmp_path)
    exp = load_experiment(spec)
    assert [r["params"] for r in exp.runs()] == [
        {"x": 1, "seed": 10}, {"x": 1, "seed": 11}, {"x": 2, "seed": 10}, {"x": 2, "seed": 11},
        {"x": -1, "seed": 10}, {"x": -1, "seed": 11},
    ]  # fmt: skip
    report = run_experiment(exp, workers=2, progress=False)
    assert (report.executed, report.cached, len(report.failed)) == (6, 0, 2)
    rows = _by_x(read_results(exp))
    assert len(rows) == 6
    for x in (1, 2):
        for r in (0, 1):
            row = rows[(x, r)]
            assert row["status"] == "ok" and row["double"] == 2 * x and row["seed"] == 10 + r
            assert row["seeded"] == ((10 + r) * 7919 + x) % 1000
            assert row["env.numba_threads"] == max(1, (os.cpu_count() or 1) // 2)  # 2 workers share the cores
    failed = rows[(-1, 0)]
    assert failed["status"] == "failed" and failed["double"] is None
    assert "x must be >= 0" in report.summary()
    log = exp.runs_dir / "points" / f"{failed['key']}.log"
    assert log.is_file() and str(log) in report.summary()
    # the table is a plain CSV next to the executed notebooks
    with (exp.runs_dir / "results.csv").open() as fh:
        assert next(csv.reader(fh))[:6] == ["x", "repeat", "seed", "status", "seconds", "key"]
    assert (exp.runs_dir / "points" / f"{rows[(1, 0)]['key']}.ipynb").is_file()

    # again: the four good runs come from the cache, the failed ones are retried
    again = run_experiment(exp, workers=2, progress=False)
    assert (again.executed, again.cached, len(again.failed)) == (2, 4, 2)
    # a new grid value runs only the new point (plus the failed retries)
    spec.write_text(spec.read_text().replace("x: [1, 2]", "x: [1, 2, 5]"))
    grown = run_experiment(load_experiment(spec), workers=2, progress=False)
    assert (grown.executed, grown.cached) == (4, 4)
    assert _by_x(grown.rows)[(5, 1)]["double"] == 10

    header, body = median_table(exp)
    assert header[:2] == ["x", "ok runs"] and "double" in header
    table = {row[0]: row for row in body}
    assert table[2][1] == "2/2" and table[2][header.index("double")] == 4 and table[-1][1] == "0/2"


def test_a_changed_notebook_invalidates_the_cache(tmp_path):
    spec = _toy(tmp_path)
    first = run_experiment(spec, workers=2, progress=False)
    assert first.executed == 6
    _toy(tmp_path, TOY + "record('triple', 3 * x)\n")
    second = run_experiment(spec, workers=2, progress=False)
    assert second.executed == 6 and second.cached == 0
    assert _by_x(second.rows)[(2, 0)]["triple"] == 6


def test_ci_overrides_and_bad_files(tmp_path):
    spec = _toy(tmp_path, extra="ci:\n  grid: {x: [3]}\n  points: []\n  repeats: 1\n")
    small = load_experiment(spec, ci=True)
    assert [r["params"] for r in small.runs()] == [{"x": 3, "seed": 10}]
    bad = tmp_path / "bad.experiment.yaml"
    for text, message in [
        ("grid: {x: [1]}\n", "'notebook' is required"),
        ("notebook: toy.ipynb\ngrid: {x: 1}\n", "non-empty list"),
        ("notebook: toy.ipynb\nrepeats: 0\n", "'repeats' must be"),
        ("notebook: toy.ipynb\ngird: {x: [1]}\n", "unknown key"),
        ("notebook: nowhere.ipynb\n", "not found"),
    ]:
        bad.write_text(text)
        with pytest.raises(InvalidConfig, match=message):
            load_experiment(bad)


def test_dask_cluster_runs_the_same_points(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    spec = _toy(tmp_path)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        report = run_experiment(spec, scheduler=cluster.scheduler_address, progress=False)
        assert (report.executed, len(report.failed)) == (6, 2)
        rows = _by_x(report.rows)
        assert rows[(2, 1)]["double"] == 4 and rows[(1, 0)]["status"] == "ok"
        # two single-threaded workers on this host: each run gets half the cores for Numba
        assert rows[(1, 0)]["env.numba_threads"] == max(1, (os.cpu_count() or 1) // 2)
        cached = run_experiment(spec, scheduler=cluster.scheduler_address, progress=False)
        assert (cached.executed, cached.cached) == (2, 4)  # the cache is shared with local runs
        # the command line takes the same path
        assert main(["experiment", "run", str(spec), "--scheduler", cluster.scheduler_address, "--quiet"]) == 1
    assert main(["experiment", "run", str(spec), "--scheduler", "tcp://127.0.0.1:9", "--quiet"]) == 2
    assert "cannot reach a Dask scheduler" in capsys.readouterr().err


def test_cli_run_medians_list(tmp_path, capsys):
    spec = _toy(tmp_path)
    assert main(["experiment", "run", str(spec), "--workers", "2", "--quiet"]) == 1  # a point failed
    out = capsys.readouterr().out
    assert "6 run(s) executed, 0 from the cache, 2 failed" in out and "FAILED {'x': -1" in out
    assert main(["experiment", "medians", str(spec), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["x"]: r["double"] for r in rows} == {1: 2, 2: 4, -1: None}
    assert main(["experiment", "summary", str(spec), "--json", "--metric", "double"]) == 0
    rows = json.loads(capsys.readouterr().out)  # mean ± sample std (count) over the two repeats
    assert {r["x"]: r["double"] for r in rows} == {1: "2 ± 0 (2)", 2: "4 ± 0 (2)", -1: None}
    assert main(["experiment", "summary", str(spec)]) == 0
    assert "4 ± 0 (2)" in capsys.readouterr().out
    assert main(["experiment", "list", "--dir", str(tmp_path)]) == 0
    assert "toy" in capsys.readouterr().out
    assert main(["experiment", "run", "nope", "--dir", str(tmp_path)]) == 2
    assert "experiment 'nope' not found" in capsys.readouterr().err
    assert main(["experiment", "medians", str(spec), "--metric", "nope"]) == 2


def _markdown_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in ``text`` as rows of cells (the header first, the rule left out)."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_report_writes_the_medians_of_results_csv(tmp_path, capsys):
    import math

    import numpy as np

    from ruvattn.lab.experiments import code_version, machine_info

    spec = _toy(tmp_path)
    empty = tmp_path / "no_runs"
    empty.mkdir()
    (empty / "toy.experiment.yaml").write_text(spec.read_text())
    (empty / "toy.ipynb").write_bytes((tmp_path / "toy.ipynb").read_bytes())
    # nothing measured yet: a message and exit status 2, no traceback, no page
    assert main(["report", "--dir", str(empty), "--out", str(empty / "b.md")]) == 2
    err = capsys.readouterr().err
    assert "ruvattn report: error:" in err and "has results yet" in err and "Traceback" not in err
    assert not (empty / "b.md").exists()
    assert main(["report", "toy", "--dir", str(empty), "--out", str(empty / "b.md")]) == 2
    assert "experiment 'toy' has no results" in capsys.readouterr().err

    run_experiment(spec, workers=2, progress=False)
    out = tmp_path / "docs" / "benchmarks.md"
    assert main(["report", "--dir", str(tmp_path), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    # the stamp: CPU model and cores of this machine, the library's source hash, the current source
    cpu = machine_info()
    assert cpu["cpu"] in page and f"{cpu['cores']} cores" in page
    assert f"`{code_version()}`, which is the current source" in page and "## toy" in page

    # the medians, computed here from results.csv with csv + numpy only
    with (tmp_path / "runs" / "toy" / "results.csv").open(newline="") as fh:
        raw = list(csv.DictReader(fh))
    columns = list(raw[0])
    metrics = columns[columns.index("key") + 1 :]
    expected = {}
    for x in sorted({r["x"] for r in raw}, key=int):
        members = [r for r in raw if r["x"] == x]
        ok = [r for r in members if r["status"] == "ok"]
        expected[x] = {"ok runs": f"{len(ok)}/{len(members)}"}
        for m in metrics:
            values = [float(r[m]) for r in ok if r[m] != ""]
            expected[x][m] = float(np.median(values)) if values else None

    section = page.split("## toy", 1)[1]
    (table, *_) = _markdown_tables(section)
    header, body = table[0], table[1:]
    folded = {}  # columns equal in every row are stated once under the table
    for line in section.splitlines():
        if line.startswith("In every row: "):
            folded = dict(item.split(" = ") for item in line[len("In every row: ") : -1].split(", "))
            break
    assert set(header) | set(folded) == {"x", "ok runs", *metrics}
    assert len(body) == len(expected) == 3

    def same(cell: str, want: object) -> bool:
        if want is None or isinstance(want, str):
            return cell == ("-" if want is None else want)
        return math.isclose(float(cell.replace(",", "")), want, rel_tol=1e-3)

    for row in body:
        cells = {**folded, **dict(zip(header, row, strict=True))}
        want = expected[cells["x"]]
        for name in ("ok runs", *metrics):
            assert same(cells[name], want[name]), (cells["x"], name, cells[name], want[name])
    assert expected["2"]["double"] == 4.0 and expected["1"]["seeded"] == 150.5  # medians of (191, 110)
