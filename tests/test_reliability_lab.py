"""Issue 13, the lab's side: no input file, argument or cache state makes the ``ruvattn`` command or the
experiment runner crash with a traceback.

* every command with every kind of bad argument: exit status 2, exactly one line on stderr
  (``ruvattn <command>: error: ...``), nothing on stdout, no traceback (in-process and as a real process);
* wrongly typed experiment files: :class:`~ruvattn.errors.InvalidConfig` naming the file and the key, and one
  bad file does not hide the good ones from ``experiment list``;
* a corrupt experiment cache (a point's record or executed notebook, ``results.csv``): reported in one line,
  only the broken point is run again (counted by the notebook itself), its results equal a fresh run's, the
  other points' files are not touched.

The cache tests execute a two-point toy notebook with papermill (marked ``kernels``); the rest needs no kernel.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ruvattn.errors import InvalidConfig
from ruvattn.lab import experiments
from ruvattn.lab.cli import main
from ruvattn.lab.experiments import load_experiment, read_results, run_experiment

# -- helpers ------------------------------------------------------------------------------------------------


def _one_error_line(capsys, code: int, command: str) -> str:
    """Assert the CLI's failure contract and return the line."""
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert "Traceback" not in err and out == "", (out, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{command}: error: "), lines[0]
    return lines[0]


def _toy_notebook(path: Path, body: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("x = 1\nseed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


# -- every command with bad arguments -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Bad inputs on disk: a folder named like a file, garbage and non-UTF-8 files, an experiment folder with
    results (so that ``report``/``medians`` reach the point of writing their output)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "folder.npy").mkdir()
    (root / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    (root / "latin1.experiment.yaml").write_bytes("notebook: caf\xe9.ipynb\n".encode("latin-1"))
    (root / "folder.experiment.yaml").mkdir()  # a folder where an experiment file should be
    (root / "emb.txt").write_text("1 2 3\n")
    exp = root / "exps"
    exp.mkdir()
    (exp / "toy.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    (exp / "toy.experiment.yaml").write_text("notebook: toy.ipynb\ngrid: {x: [1, 2]}\n")
    # a results table as the runner writes it (the cache itself plays no part in these tests)
    (exp / "runs" / "toy").mkdir(parents=True)
    rows = ["x,repeat,seed,status,seconds,key,double", f"1,0,0,ok,0.5,{'a' * 20},2", f"2,0,0,ok,0.5,{'b' * 20},4"]
    (exp / "runs" / "toy" / "results.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "exps": exp}


SDP = ["--mechanism", "scaled_dot_product"]
SMALL_DEMO = ["--nodes", "40", "--dim", "8", "--neighbours", "4", "--candidates", "20", "--repeats", "1"]

#: (id, argv with {root}/{exps} placeholders, the command named in the message, a part of the message)
BAD_ARGUMENTS = [
    # unknown option, for every command
    ("demo-unknown", ["demo", "--bogus"], "ruvattn demo", "unrecognized arguments: --bogus"),
    ("analyze-unknown", ["analyze", *SDP, "--bogus", "1"], "ruvattn analyze", "unrecognized arguments: --bogus 1"),
    ("info-unknown", ["info", "--bogus"], "ruvattn info", "unrecognized arguments"),
    ("warmup-unknown", ["warmup", "now"], "ruvattn warmup", "unrecognized arguments: now"),
    ("list-unknown", ["experiment", "list", "--bogus"], "ruvattn experiment list", "unrecognized"),
    ("run-unknown", ["experiment", "run", "toy", "--bogus"], "ruvattn experiment run", "unrecognized"),
    ("medians-unknown", ["experiment", "medians", "toy", "-x"], "ruvattn experiment medians", "unrecognized"),
    ("benchmark-unknown", ["benchmark", "--bogus"], "ruvattn benchmark", "unrecognized"),
    ("compare-unknown", ["compare", "--bogus"], "ruvattn compare", "unrecognized"),
    ("report-unknown", ["report", "--bogus"], "ruvattn report", "unrecognized"),
    ("unknown-command", ["frobnicate"], "ruvattn", "invalid choice: 'frobnicate'"),
    ("unknown-action", ["experiment", "frobnicate"], "ruvattn experiment", "invalid choice"),
    ("no-command", [], "ruvattn", "required: command"),
    ("no-mechanism", ["analyze"], "ruvattn analyze", "required: --mechanism"),
    ("no-name", ["experiment", "run"], "ruvattn experiment run", "required: name"),
    # a wrong type for a numeric option
    ("demo-nodes-text", ["demo", "--nodes", "many"], "ruvattn demo", "--nodes must be a whole number"),
    ("demo-seed-text", ["demo", "--seed", "x"], "ruvattn demo", "--seed must be a whole number"),
    ("analyze-queries-float", ["analyze", *SDP, "--queries", "1.5"], "ruvattn analyze", "--queries must be a whole"),
    ("run-workers-text", ["experiment", "run", "toy", "--workers", "two"], "ruvattn experiment run", "--workers"),
    ("benchmark-workers-text", ["benchmark", "--workers", "1e3"], "ruvattn benchmark", "--workers must be a whole"),
    # negative or zero where a positive number is needed
    ("demo-repeats-zero", ["demo", "--repeats", "0"], "ruvattn demo", "--repeats must be at least 1"),
    ("demo-seed-negative", ["demo", "--seed", "-1"], "ruvattn demo", "--seed must be at least 0"),
    ("demo-threads-negative", ["demo", "--threads", "-4"], "ruvattn demo", "--threads must be at least 1"),
    ("analyze-neighbours-negative", ["analyze", *SDP, "--neighbours", "-3"], "ruvattn analyze", "at least 1"),
    ("run-workers-zero", ["experiment", "run", "toy", "--workers", "0"], "ruvattn experiment run", "at least 1"),
    ("compare-workers-negative", ["compare", "--workers", "-2"], "ruvattn compare", "--workers must be at least 1"),
    # sizes that do not fit, or do not fit together
    ("demo-too-big", ["demo", "--nodes", "10" * 8, "--repeats", "1"], "ruvattn demo", "not enough memory"),
    ("demo-heads", ["demo", *SMALL_DEMO, "--dim", "10", "--heads", "3"], "ruvattn demo", "must divide"),
    ("demo-neighbours", ["demo", "--nodes", "10", "--neighbours", "10"], "ruvattn demo", "must be < --nodes"),
    # missing files and folders
    ("analyze-missing", ["analyze", *SDP, "--data", "{root}/missing.npy"], "ruvattn analyze", "cannot read"),
    ("run-missing", ["experiment", "run", "missing", "--dir", "{exps}"], "ruvattn experiment run", "not found"),
    ("medians-missing", ["experiment", "medians", "missing", "--dir", "{exps}"], "ruvattn experiment medians",
     "'missing' not found"),
    ("list-missing-dir", ["experiment", "list", "--dir", "{root}/nowhere"], "ruvattn experiment list",
     "is not a folder"),
    ("report-missing-dir", ["report", "--dir", "{root}/nowhere"], "ruvattn report", "is not a folder"),
    ("report-missing-name", ["report", "nope", "--dir", "{exps}"], "ruvattn report", "'nope' not found"),
    ("benchmark-missing", ["benchmark", "--dir", "{exps}"], "ruvattn benchmark", "'spec_targets' not found"),
    ("compare-missing", ["compare", "--dir", "{root}/nowhere"], "ruvattn compare", "'peers' not found"),
    # a directory where a file is needed
    ("analyze-folder", ["analyze", *SDP, "--data", "{root}/folder.npy"], "ruvattn analyze", "Is a directory"),
    ("run-folder", ["experiment", "run", "folder", "--dir", "{root}"], "ruvattn experiment run", "not found"),
    ("report-out-folder", ["report", "--dir", "{exps}", "--out", "{root}"], "ruvattn report", "Is a directory"),
    ("medians-plot-folder", ["experiment", "medians", "toy", "--dir", "{exps}", "--plot", "{root}"],
     "ruvattn experiment medians", "Is a directory"),
    ("analyze-figures-file", ["analyze", *SDP, "--figures", "{root}/emb.txt"], "ruvattn analyze", "not a directory"),
    # files that cannot be read as what they should be
    ("analyze-garbage", ["analyze", *SDP, "--data", "{root}/garbage.npy"], "ruvattn analyze", "cannot read"),
    ("analyze-not-npy", ["analyze", *SDP, "--data", "{root}/emb.txt"], "ruvattn analyze", "a path to a .npy"),
    ("run-latin1", ["experiment", "run", "{root}/latin1.experiment.yaml"], "ruvattn experiment run", "not UTF-8"),
    ("medians-metric", ["experiment", "medians", "toy", "--dir", "{exps}", "--metric", "nope"],
     "ruvattn experiment medians", "unknown metric"),
    # unknown names
    ("analyze-unknown-kind", ["analyze", "--mechanism", "nope"], "ruvattn analyze", "unknown mechanism 'nope'"),
    ("analyze-empty-kind", ["analyze", "--mechanism", ","], "ruvattn analyze", "unknown mechanism"),
    ("run-bad-scheduler", ["experiment", "run", "toy", "--dir", "{exps}", "--scheduler", "nowhere"],
     "ruvattn experiment run", "cannot reach a Dask scheduler"),
]  # fmt: skip


def _fill(argv: list[str], files: dict[str, Path]) -> list[str]:
    return [a.format(root=files["root"], exps=files["exps"]) for a in argv]


@pytest.mark.parametrize(
    ("argv", "command", "message"), [c[1:] for c in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS]
)
def test_bad_arguments_exit_2_with_one_line(argv, command, message, files, capsys):
    line = _one_error_line(capsys, main(_fill(argv, files)), command)
    assert message in line, line


@pytest.mark.parametrize(
    "case", ["demo-unknown", "demo-seed-negative", "run-latin1", "analyze-folder", "report-out-folder", "no-command"]
)
def test_bad_arguments_from_the_console(case, files):
    (_, argv, command, message) = next(c for c in BAD_ARGUMENTS if c[0] == case)
    proc = subprocess.run([sys.executable, "-m", "ruvattn.lab.cli", *_fill(argv, files)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"{command}: error: ") and message in line, line


def test_help_still_exits_0(capsys):
    assert main(["experiment", "list", "--help"]) == 0
    out = capsys.readouterr().out
    assert "the exit status is then 2" in " ".join(out.split())


def test_an_internal_error_is_one_line_exit_1_and_a_traceback_only_on_request(monkeypatch, capsys):
    """A bug (an exception that is not the input's fault) is named in one line with exit status 1; with
    RUVATTN_DEBUG=1 it propagates (its traceback shown)."""
    import ruvattn

    def broken() -> dict:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(ruvattn, "backend_info", broken)
    assert main(["info"]) == 1
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith("ruvattn info: internal error: ZeroDivisionError: division by zero") and out == ""
    assert "please report" in line and "RUVATTN_DEBUG=1" in line
    monkeypatch.setenv("RUVATTN_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["info"])


def test_interrupt_is_one_line_exit_130(monkeypatch, capsys):
    import ruvattn

    def interrupted() -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(ruvattn, "backend_info", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "ruvattn info: interrupted\n"


def test_a_closed_pipe_is_no_traceback():
    """``ruvattn info | true``: the reader is gone before the output is written."""
    proc = subprocess.run(f"{sys.executable} -m ruvattn.lab.cli info | true", shell=True, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.stderr == "", proc.stderr


# -- experiment files -----------------------------------------------------------------------------------------

NOTEBOOK = "notebook: toy.ipynb\n"
#: (id, file content, the key the message names, a part of the message)
BAD_FILES = [
    ("notebook-int", "notebook: 5\n", "'notebook'", "must be a file name (a string); got 5"),
    ("notebook-list", "notebook: [a.ipynb]\n", "'notebook'", "got ['a.ipynb']"),
    ("notebook-missing", "notebook: nowhere.ipynb\n", "'notebook'", "'nowhere.ipynb' not found"),
    ("no-notebook", "grid: {x: [1]}\n", "'notebook'", "is required"),
    ("seed-text", NOTEBOOK + "seed: abc\n", "'seed'", "must be a whole number >= 0; got 'abc'"),
    ("seed-negative", NOTEBOOK + "seed: -3\n", "'seed'", "got -3"),
    ("seed-float", NOTEBOOK + "seed: 1.5\n", "'seed'", "got 1.5"),
    ("repeats-negative", NOTEBOOK + "repeats: -1\n", "'repeats'", "must be a whole number >= 1; got -1"),
    ("repeats-bool", NOTEBOOK + "repeats: true\n", "'repeats'", "got True"),
    ("grid-int", NOTEBOOK + "grid: 3\n", "'grid'", "must map each parameter"),
    ("grid-list", NOTEBOOK + "grid: [1, 2]\n", "'grid'", "must map each parameter"),
    ("grid-value", NOTEBOOK + "grid: {x: 1}\n", "grid.x", "must be a non-empty list of values; got 1"),
    ("grid-empty-list", NOTEBOOK + "grid: {x: []}\n", "grid.x", "non-empty list"),
    ("grid-name", NOTEBOOK + "grid: {1x: [1]}\n", "'grid'", "must be a Python identifier; got '1x'"),
    ("points-map", NOTEBOOK + "points: {x: 1}\n", "'points'", "must be a list"),
    ("points-item", NOTEBOOK + "points: [3]\n", "'points[0]'", "must be a mapping"),
    ("parameters-list", NOTEBOOK + "parameters: [1]\n", "'parameters'", "must be a mapping"),
    ("seed-parameter", NOTEBOOK + "seed_parameter: 7\n", "'seed_parameter'", "or null; got 7"),
    ("description", NOTEBOOK + "description: [a]\n", "'description'", "must be a string"),
    ("unknown-key", NOTEBOOK + "gird: {x: [1]}\n", "['gird']", "unknown key(s)"),
    ("unknown-int-key", NOTEBOOK + "1: 2\n", "['1']", "unknown key(s)"),
    ("ci-int", NOTEBOOK + "ci: 5\n", "'ci'", "must be a mapping"),
    ("ci-seed", NOTEBOOK + "ci: {seed: x}\n", "'ci.seed'", "got 'x'"),
    ("ci-unknown", NOTEBOOK + "ci: {ci: {}}\n", "['ci.ci']", "unknown key(s)"),
    ("empty", "", "notebook", "the experiment file is empty"),
    ("only-comment", "# nothing\n", "notebook", "the experiment file is empty"),
    ("top-level-list", "- notebook: toy.ipynb\n", "mapping", "got a list"),
    ("top-level-text", "just text\n", "mapping", "got a str"),
    ("yaml-syntax", "notebook: toy.ipynb\ngrid: {x: [1, 2\n", "YAML", "not valid YAML at line"),
    ("yaml-tab", "notebook: toy.ipynb\n\tseed: 1\n", "YAML", "not valid YAML"),
    ("yaml-python-tag", "notebook: !!python/object:os.system {}\n", "YAML", "not valid YAML"),
    ("non-utf8", b"notebook: caf\xe9.ipynb\n", "UTF-8", "not UTF-8 text (byte 0xe9 at offset 13)"),
    ("utf16", "notebook: toy.ipynb\n".encode("utf-16"), "UTF-8", "not UTF-8 text"),
]


def _write_bad(folder: Path, content: str | bytes) -> Path:
    (folder / "toy.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    path = folder / "bad.experiment.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize(("content", "key", "message"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_experiment_files_raise_invalid_config_naming_file_and_key(content, key, message, tmp_path, capsys):
    path = _write_bad(tmp_path, content)
    with pytest.raises(InvalidConfig) as info:
        load_experiment(path, ci=True)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and key in text and message in text, text
    assert "\n" not in text
    # the command line: exit 2, the same message as its one line
    line = _one_error_line(capsys, main(["experiment", "run", str(path), "--quiet"]), "ruvattn experiment run")
    assert line == f"ruvattn experiment run: error: {text}"


def test_list_shows_the_good_files_and_one_line_per_bad_one(tmp_path, capsys):
    for name in ("alpha", "omega"):
        (tmp_path / f"{name}.experiment.yaml").write_text(f"notebook: toy.ipynb\ndescription: {name} ok\n")
    _write_bad(tmp_path, "notebook: 5\n")
    (tmp_path / "latin.experiment.yaml").write_bytes(b"notebook: caf\xe9.ipynb\n")
    (tmp_path / "folder.experiment.yaml").mkdir()
    assert main(["experiment", "list", "--dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["alpha", "omega"]
    assert "alpha ok" in out and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith("ruvattn experiment list: error: ") for line in lines)
    assert f"{tmp_path / 'bad.experiment.yaml'}: 'notebook' must be a file name" in lines[0]
    assert "folder.experiment.yaml" in lines[1] and "Is a directory" in lines[1]
    assert f"{tmp_path / 'latin.experiment.yaml'}: the experiment file is not UTF-8" in lines[2]
    # every file good: exit 0, nothing on stderr
    for bad in ("bad", "latin"):
        (tmp_path / f"{bad}.experiment.yaml").unlink()
    (tmp_path / "folder.experiment.yaml").rmdir()
    assert main(["experiment", "list", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""


# -- the cache, read back without running anything ------------------------------------------------------------

KEY = "0123456789abcdef0123"
GOOD_RECORD = {"key": KEY, "params": {"x": 1, "seed": 10}, "grid": {"x": 1}, "repeat": 0, "seed": 10,
               "status": "ok", "records": {"double": 2}, "seconds": 1.5}  # fmt: skip
GOOD_NOTEBOOK = {
    "cells": [{"outputs": [{"data": {"application/x.ruvattn.record+json": {"name": "double", "value": 2}}}]}]
}

#: (id, the file, its bytes or "dir", a part of the reason)
CORRUPT_POINT = [
    ("json-empty", "json", b"", "json is empty"),
    ("json-blank", "json", b"\n  \n", "json holds only white space"),
    ("json-truncated", "json", json.dumps(GOOD_RECORD).encode()[:40], "json is truncated JSON (it ends after 40 bytes"),
    ("json-garbage", "json", b"\x00\x13PK\x03\x04garbage", "json is not valid JSON (Expecting value at line 1"),
    ("json-not-utf8", "json", b'{"key": "\xff\xfe"}', "json is not UTF-8 text (byte 0xff at offset 9)"),
    ("json-deep", "json", b"[" * 100_000, "json is not valid JSON (nested too deeply)"),
    ("json-folder", "json", "dir", "json is a directory, not a file"),
    ("json-list", "json", b"[1, 2]", "json holds a JSON list, not a point record"),
    ("json-no-records", "json", json.dumps({**GOOD_RECORD, "records": None}).encode(), "'records' is None"),
    ("json-no-status", "json", json.dumps({k: v for k, v in GOOD_RECORD.items() if k != "status"}).encode(),
     "no 'status'"),
    ("json-other-key", "json", json.dumps({**GOOD_RECORD, "key": "f" * 20}).encode(), "another point"),
    ("json-status", "json", json.dumps({**GOOD_RECORD, "status": "maybe"}).encode(), "status 'maybe'"),
    ("ipynb-missing", "ipynb", None, "ipynb (the executed notebook) is missing"),
    ("ipynb-empty", "ipynb", b"", "ipynb (the executed notebook) is empty"),
    ("ipynb-truncated", "ipynb", json.dumps(GOOD_NOTEBOOK).encode()[:30], "notebook) is truncated JSON"),
    ("ipynb-folder", "ipynb", "dir", "notebook) is a directory"),
    ("ipynb-not-a-notebook", "ipynb", b"{}", "is not a notebook"),
    ("ipynb-other-values", "ipynb", json.dumps(GOOD_NOTEBOOK).replace(": 2}", ": 3}").encode(),
     "does not hold the values recorded in"),
]  # fmt: skip


def _corrupt(path: Path, content: bytes | str | None) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if content == "dir":
        path.mkdir()
        (path / "inside.txt").write_text("x")
    elif content is not None:
        path.write_bytes(content)


def test_a_good_cached_point_reads_back(tmp_path):
    (tmp_path / f"{KEY}.json").write_text(json.dumps(GOOD_RECORD))
    (tmp_path / f"{KEY}.ipynb").write_text(json.dumps(GOOD_NOTEBOOK))
    assert experiments._cached_point(tmp_path, KEY) == (GOOD_RECORD, None)
    assert experiments._cached_point(tmp_path, "f" * 20) == (None, None)  # never run: nothing to report


@pytest.mark.parametrize(("which", "content", "why"), [c[1:] for c in CORRUPT_POINT], ids=[c[0] for c in CORRUPT_POINT])
def test_every_corrupt_cached_point_is_named_with_its_file_and_why(which, content, why, tmp_path):
    (tmp_path / f"{KEY}.json").write_text(json.dumps(GOOD_RECORD))
    (tmp_path / f"{KEY}.ipynb").write_text(json.dumps(GOOD_NOTEBOOK))
    _corrupt(tmp_path / f"{KEY}.{which}", content)
    record, problem = experiments._cached_point(tmp_path, KEY)
    assert record is None and problem is not None
    assert problem.startswith(f"{KEY}.{which} ") and why in problem and "\n" not in problem, problem


def test_a_failed_record_is_retried_without_a_notebook_check(tmp_path):
    failed = {**GOOD_RECORD, "status": "failed", "records": {}, "error": "AssertionError: x"}
    (tmp_path / f"{KEY}.json").write_text(json.dumps(failed))
    assert experiments._cached_point(tmp_path, KEY) == (failed, None)


# -- the cache under corruption, with real runs ----------------------------------------------------------------

TOY = """\
from pathlib import Path
from ruvattn.lab import record
with Path("executions.txt").open("a") as fh:  # one line per execution of a point: the run counter
    fh.write(f"{x}\\n")
record("double", 2 * x)
record("seeded", (seed * 7919 + x) % 1000)
"""
CODE = "fixed-code-hash"  # code_version() is pinned: the library's source may change under a shared checkout


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    """A two-point toy experiment run once: the cache every corruption test starts from (a copy of it)."""
    pytest.importorskip("papermill")
    root = tmp_path_factory.mktemp("cached") / "exp"
    root.mkdir()
    _toy_notebook(root / "toy.ipynb", TOY)
    (root / "toy.experiment.yaml").write_text("notebook: toy.ipynb\ngrid:\n  x: [1, 2]\nseed: 10\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiments, "code_version", lambda: CODE)
        report = run_experiment(root / "toy.experiment.yaml", workers=1, progress=False)
    assert (report.executed, report.cached, report.failed) == (2, 0, [])
    return root, {r["x"]: r for r in report.rows}


@pytest.fixture
def toy(cached_run, tmp_path, monkeypatch):
    """A fresh copy of the cached run (file times kept), with the same pinned code hash."""
    base, rows = cached_run
    root = tmp_path / "exp"
    shutil.copytree(base, root)  # copy2: the modification times are kept
    monkeypatch.setattr(experiments, "code_version", lambda: CODE)
    points = root / "runs" / "toy" / "points"
    return root, points, rows


def _executions(root: Path) -> list[str]:
    return (root / "executions.txt").read_text().split()


def _stamps(points: Path, key: str) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(points.glob(f"{key}.*"))}


def _same_results(rows: list[dict], fresh: dict[int, dict]) -> None:
    got = {r["x"]: r for r in rows}
    assert set(got) == set(fresh)
    for x, row in fresh.items():
        assert {k: v for k, v in got[x].items() if k != "seconds"} == {k: v for k, v in row.items() if k != "seconds"}


CORRUPT_CACHED = [c for c in CORRUPT_POINT if c[0] in {
    "json-empty", "json-truncated", "json-garbage", "json-not-utf8", "json-folder", "json-other-key",
    "ipynb-empty", "ipynb-truncated", "ipynb-folder", "ipynb-missing",
}]  # fmt: skip


@pytest.mark.kernels
@pytest.mark.parametrize(
    ("which", "content", "why"), [c[1:] for c in CORRUPT_CACHED], ids=[c[0] for c in CORRUPT_CACHED]
)
def test_a_corrupt_cached_point_is_reported_and_recomputed_alone(which, content, why, toy, capsys):
    root, points, fresh = toy
    broken, kept = fresh[1]["key"], fresh[2]["key"]
    before = _stamps(points, kept)
    if content is not None and content != "dir" and content.startswith(b"{") and which == "json":
        content = content.replace(KEY.encode(), broken.encode())
    if which == "json" and "another point" in why:
        content = (points / f"{kept}.json").read_bytes()  # a whole, valid record of the other point
    _corrupt(points / f"{broken}.{which}", content)
    capsys.readouterr()

    report = run_experiment(root / "toy.experiment.yaml", workers=1, progress=False)

    assert (report.executed, report.cached, report.failed) == (1, 1, [])
    assert _executions(root) == ["1", "2", "1"]  # point x=1 ran once more, x=2 did not
    assert _stamps(points, kept) == before  # the other point's record, notebook and log untouched
    (line,) = report.repaired
    assert line.startswith("experiment toy: cached point {'x': 1, 'seed': 10} (repeat 0): runs/toy/points/")
    assert f"{broken}.{which} " in line and why in line and line.endswith("; running it again")
    assert capsys.readouterr().err == f"ruvattn: {line}\n"  # reported in one line as it happens
    _same_results(report.rows, fresh)  # the recomputed point equals the fresh run's
    _same_results(read_results(root / "toy.experiment.yaml"), fresh)
    record = json.loads((points / f"{broken}.json").read_text())
    assert record["status"] == "ok" and record["records"] == {"double": 2, "seeded": (10 * 7919 + 1) % 1000}
    # and the next run takes both from the cache, quietly
    again = run_experiment(root / "toy.experiment.yaml", workers=1, progress=False)
    assert (again.executed, again.cached, again.repaired) == (0, 2, [])
    assert capsys.readouterr().err == ""


@pytest.mark.kernels
def test_the_cli_reports_a_corrupt_point_in_one_line_and_exits_0(toy, capsys):
    root, points, fresh = toy
    (points / f"{fresh[2]['key']}.json").write_bytes(b"")
    capsys.readouterr()
    assert main(["experiment", "run", str(root / "toy.experiment.yaml"), "--workers", "1", "--quiet"]) == 0
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith("ruvattn: experiment toy: cached point {'x': 2, 'seed': 10} (repeat 0)")
    assert "is empty; running it again" in line
    assert "1 run(s) executed, 1 from the cache, 0 failed" in out and "1 corrupt cache entr(ies) replaced" in out
    assert _executions(root) == ["1", "2", "2"]


@pytest.mark.kernels
def test_files_in_the_way_of_a_new_run_are_cleared(toy):
    """A folder where a never-run point's log or notebook goes, or a file where the points folder goes."""
    root, points, fresh = toy
    spec = root / "toy.experiment.yaml"
    spec.write_text(spec.read_text().replace("x: [1, 2]", "x: [1, 2, 3]"))
    new_key = next(t for t in run_keys(spec) if t not in {fresh[1]["key"], fresh[2]["key"]})
    (points / f"{new_key}.log").mkdir()
    report = run_experiment(spec, workers=1, progress=False)
    assert (report.executed, report.cached, report.failed) == (1, 2, [])
    assert "is a directory where the run writes a file; removed" in report.repaired[0]
    assert {r["x"]: r["double"] for r in report.rows} == {1: 2, 2: 4, 3: 6}

    shutil.rmtree(points)
    points.write_text("not a folder")
    report = run_experiment(spec, workers=1, progress=False)
    assert (report.executed, report.failed) == (3, [])
    assert "is a file where the cache's folder should be" in report.repaired[0]


def run_keys(spec: Path) -> list[str]:
    exp = load_experiment(spec)
    import hashlib

    nb_hash = hashlib.sha256(exp.notebook.read_bytes()).hexdigest()[:16]
    return [experiments._key(nb_hash, CODE, run) for run in exp.runs()]


CORRUPT_TABLE = [
    ("empty", b"", "is empty"),
    ("header-only", b"x,repeat,seed,status,seconds,key,double,seeded\r\n", "has a header but no rows"),
    ("truncated", None, "is cut or malformed at line 3 (7 fields, the header has 8)"),
    ("garbage", b"PK\x03\x04garbage;;\n\x7f", "has no valid header"),
    ("not-utf8", b"x,repeat,seed,status,seconds,key\n\xff\xfe,0,1,ok,1,k\n", "is not UTF-8 text (offset 33)"),
    ("folder", "dir", "is a directory, not a file"),
    ("bad-key", None, "has no valid key at line 2"),
]


def _corrupt_table(table: Path, kind: str, content: bytes | str | None) -> None:
    text = table.read_bytes()
    if kind == "truncated":
        content = text[: text.rindex(b",")]  # the last row cut before its last field
    elif kind == "bad-key":
        line = text.split(b"\r\n")[1]
        content = text.replace(line, line.replace(line.split(b",")[5], b"../../etc"))
    _corrupt(table, content)


@pytest.mark.kernels
@pytest.mark.parametrize(("kind", "content", "why"), CORRUPT_TABLE, ids=[c[0] for c in CORRUPT_TABLE])
def test_a_corrupt_results_table_is_rebuilt_from_the_point_records(kind, content, why, toy, capsys):
    root, _, fresh = toy
    table = root / "runs" / "toy" / "results.csv"
    _corrupt_table(table, kind, content)
    capsys.readouterr()
    # medians read the table: it is rebuilt (one line on stderr), nothing is run, the medians are the fresh ones
    assert main(["experiment", "medians", str(root / "toy.experiment.yaml"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert {r["x"]: r["double"] for r in json.loads(out)} == {1: 2, 2: 4}
    (line,) = err.splitlines()
    assert line.startswith(f"ruvattn: experiment toy: {table} {why}"), line
    assert line.endswith("; rebuilt from 2 cached point record(s)"), line
    _same_results(read_results(root / "toy.experiment.yaml"), fresh)
    assert capsys.readouterr().err == ""  # rebuilt once: read quietly from then on
    assert _executions(root) == ["1", "2"]
    # a run rewrites it from the cache as well, without running anything
    _corrupt_table(table, kind, content)
    report = run_experiment(root / "toy.experiment.yaml", workers=1, progress=False)
    assert report.executed == 0
    with table.open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2


@pytest.mark.kernels
def test_a_corrupt_table_without_provenance_or_records(toy, capsys):
    root, points, fresh = toy
    table = root / "runs" / "toy" / "results.csv"
    spec = str(root / "toy.experiment.yaml")
    # no provenance.json: the table's points are the current experiment's, under the current hashes
    (root / "runs" / "toy" / "provenance.json").write_bytes(b'{"keys": [')
    table.write_bytes(b"")
    _same_results(read_results(spec, notify=lambda m: None), fresh)
    # no record left: nothing to rebuild from, one line, exit 2
    for record in points.glob("*.json"):
        record.write_bytes(b"")
    table.write_bytes(b"")
    capsys.readouterr()
    line = _one_error_line(capsys, main(["report", "--dir", str(root), "--out", str(root / "b.md")]), "ruvattn report")
    assert "cannot be rebuilt: no readable point record is cached; run `ruvattn experiment run toy` again" in line


@pytest.mark.kernels
def test_a_worker_that_dies_fails_its_run_only(toy, monkeypatch):
    """A run whose worker process dies (here: it exits) is a failed run, reported; the others are kept."""
    root, points, fresh = toy
    (points / f"{fresh[1]['key']}.json").unlink()
    monkeypatch.setattr(experiments, "run_point", _dying_run_point)
    report = run_experiment(root / "toy.experiment.yaml", workers=1, progress=False)
    assert (report.executed, report.cached) == (1, 1)
    (failed,) = report.failed
    assert failed["params"] == {"x": 1, "seed": 10} and "the worker running it failed" in failed["error"]
    assert "FAILED {'x': 1, 'seed': 10}" in report.summary()


def _dying_run_point(task: dict) -> dict:
    import os

    os._exit(3)


@pytest.mark.kernels
def test_a_kernel_that_dies_at_start_is_started_again(toy, monkeypatch):
    """jupyter_client's "Kernel died before replying to kernel_info" (no cell ran: e.g. two workers raced for a
    port) starts the point again, up to KERNEL_START_ATTEMPTS times, and says so in the point's log; the
    notebook runs once, so its result is the same as a clean run's."""
    import papermill

    root, points, fresh = toy
    key = fresh[1]["key"]
    (points / f"{key}.json").unlink()
    real, calls = papermill.execute_notebook, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) < experiments.KERNEL_START_ATTEMPTS:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return real(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    monkeypatch.setattr(experiments.time, "sleep", lambda s: None)
    report = run_experiment(root / "toy.experiment.yaml", workers=1, progress=False)
    assert (report.executed, report.cached, report.failed) == (1, 1, [])
    _same_results(report.rows, fresh)
    log = (points / f"{key}.log").read_text()
    assert log.count("kernel start failed (Kernel died before replying to kernel_info)") == 2
    assert _executions(root).count("1") == 2  # once when the cache was made, once now


@pytest.mark.parametrize(
    ("error", "attempts"),
    [
        (RuntimeError("Kernel died before replying to kernel_info"), 3),  # never came up: gives up after 3
        (RuntimeError("Kernel didn't respond in 60 seconds"), 3),
        (RuntimeError("the notebook's own error"), 1),  # anything else is the point's result: not retried
        (ValueError("Kernel died before replying to kernel_info"), 1),
    ],
)
def test_kernel_start_retries_only_startup_failures(tmp_path, monkeypatch, error, attempts):
    import papermill

    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise error

    monkeypatch.setattr(papermill, "execute_notebook", failing)
    monkeypatch.setattr(experiments.time, "sleep", lambda s: None)
    # run_point sets the thread variables for the kernel it starts: the environment is restored after the call,
    # since Numba refuses a different NUMBA_NUM_THREADS once its threads are up (it re-reads it at a compile)
    import os
    from unittest import mock

    import numba

    task = {
        "notebook": str(tmp_path / "nb.ipynb"), "out_nb": str(tmp_path / "p" / "k.ipynb"),
        "log": str(tmp_path / "p" / "k.log"), "json": str(tmp_path / "p" / "k.json"),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "key": "k", "params": {}, "grid": {}, "repeat": 0, "seed": 0,
    }  # fmt: skip
    with mock.patch.dict(os.environ):
        result = experiments.run_point(task)
    assert len(calls) == attempts
    assert result["status"] == "failed" and result["error"] == f"{type(error).__name__}: {error}"
    assert json.loads(Path(task["json"]).read_text())["status"] == "failed"
