"""Issue 13, the lab's side: no input file, argument or cache state makes the ``ruvattn`` command or the
experiment runner crash with a traceback.

* every command with every kind of bad argument: exit status 2, exactly one line on stderr
  (``ruvattn <command>: error: ...``), nothing on stdout, no traceback (in-process and as a real process);
* wrongly typed experiment files: :class:`~ruvattn.errors.InvalidConfig` naming the file and the key, and one
  bad file does not hide the good ones from ``experiment list``;

None of these needs a kernel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ruvattn.errors import InvalidConfig
from ruvattn.lab.cli import main
from ruvattn.lab.experiments import load_experiment

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
