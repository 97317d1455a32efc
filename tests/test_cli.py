"""The command line: results on stdout, errors on stderr with a non-zero status naming the flag."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ruvattn import available
from ruvattn.datasets import clustered_graph
from ruvattn.lab.cli import main
from ruvattn.lab.demo import demo_mechanism


def test_demo_json_rows_cover_the_registry_and_agree_with_float64(capsys):
    assert main(["demo", "--nodes", "120", "--dim", "16", "--neighbours", "8", "--candidates", "100",
                 "--heads", "2", "--repeats", "3", "--json"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    rows = json.loads(out)
    # two rows (one query over the candidates; every node over its own list) per registered mechanism
    assert [r["mechanism"] for r in rows] == [k for k in available() for _ in range(2)]
    for r in rows:
        assert r["max_abs_err"] < 1e-4, r  # the float32 run vs the same mechanism on float64 inputs
        assert 0 < r["p50_us"] <= r["p95_us"] <= r["p99_us"]
    # the demo's numbers are the library's: one row recomputed independently (node 0's scaled dot-product)
    g = clustered_graph(120, 16, k=8, seed=0)
    x = g.embeddings.astype(np.float64)
    ids = g.neighbours[0]
    s = x[ids] @ x[0] / np.sqrt(16)
    w = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    got = demo_mechanism("scaled_dot_product", 16, 2, 0, 32).forward_neighbours(x, x, x, g.neighbours)[0]
    np.testing.assert_allclose(got, w @ x[ids], rtol=1e-9)
    assert "ruvattn demo" in err  # the progress bar goes to stderr


def test_demo_table_on_stdout(capsys):
    assert main(["demo", "--nodes", "60", "--dim", "8", "--neighbours", "4", "--candidates", "50",
                 "--heads", "2", "--repeats", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["mechanism", "workload", "p50"]
    assert len(out.splitlines()) == 2 + 2 * len(available())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--nodes", "0"], "--nodes must be at least 1; got 0"),
        (["demo", "--dim", "abc"], "--dim must be a whole number; got 'abc'"),
        (["demo", "--dim", "10", "--heads", "3"], "'num_heads' must divide hidden_dim=10; got 3"),
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


def test_demo_graph_flag_chooses_the_neighbour_lists(capsys):
    pytest.importorskip("faiss")
    args = ["demo", "--nodes", "80", "--dim", "8", "--neighbours", "6", "--candidates", "40", "--repeats", "2"]
    args.append("--json")
    assert main([*args, "--graph", "hnsw"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["workload"].endswith("HNSW results") and rows[1]["workload"].endswith("HNSW layer 0 (<= 6)")
    assert all(r["max_abs_err"] < 1e-4 for r in rows)
    assert main([*args, "--graph", "knn"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["workload"] == "1 query x 40 candidates" and rows[1]["workload"] == "80 nodes x own 6 neighbours"
