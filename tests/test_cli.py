"""The command line: results on stdout, errors on stderr with a non-zero status naming the flag."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ruvattn.lab.cli import main


def test_demo_json_rows_agree_with_exact_attention(capsys):
    assert main(["demo", "--nodes", "120", "--dim", "16", "--neighbours", "8", "--candidates", "100",
                 "--heads", "2", "--repeats", "3", "--json"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    rows = json.loads(out)
    assert [r["mechanism"] for r in rows] == [
        "scaled_dot_product", "scaled_dot_product", "multi_head", "local_global", "linear", "flash",
        "scaled_dot_product", "hyperbolic", "hyperbolic", "moe", "gat",
    ]  # fmt: skip
    for r in rows:
        assert r["max_abs_err"] < 1e-5, r  # float32 kernels vs float64 numpy reference
        assert 0 < r["p50_us"] <= r["p95_us"] <= r["p99_us"]
    assert "ruvattn demo" in err  # the progress bar goes to stderr


def test_demo_table_on_stdout(capsys):
    assert main(["demo", "--nodes", "60", "--dim", "8", "--neighbours", "4", "--candidates", "50",
                 "--heads", "2", "--repeats", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["mechanism", "workload", "p50"]
    assert len(out.splitlines()) == 2 + 11


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--nodes", "0"], "--nodes must be at least 1; got 0"),
        (["demo", "--dim", "abc"], "--dim must be a whole number; got 'abc'"),
        (["demo", "--dim", "10", "--heads", "3"], "--heads must divide --dim=10; got 3"),
        (["demo", "--nodes", "10", "--neighbours", "10"], "--neighbours (10) must be < --nodes"),
    ],
)
def test_bad_flags_exit_nonzero_with_message(argv, message):
    proc = subprocess.run([sys.executable, "-m", "ruvattn.lab.cli", *argv], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stdout == ""


def test_info_reports_backend(capsys):
    assert main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] in {"numba", "python (NUMBA_DISABLE_JIT=1)"}
