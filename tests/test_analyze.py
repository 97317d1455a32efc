"""``ruvattn analyze``: its numbers are ruvattn.analysis on the same data; bad flags exit 2 naming the flag."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax

from ruvattn import MoEAttention, MultiHeadAttention, ScaledDotProductAttention, analysis, build
from ruvattn.datasets import clustered_graph
from ruvattn.lab.cli import main

NODES, DIM, K, M, SEED = 120, 16, 8, 20, 3
SMALL = ["--nodes", str(NODES), "--dim", str(DIM), "--neighbours", str(K), "--queries", str(M), "--seed", str(SEED)]


def _run(capsys, *argv: str) -> dict:
    assert main(["analyze", *argv, *SMALL, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def graph():
    return clustered_graph(NODES, DIM, k=K, seed=SEED)


def _per_node(fn, x: np.ndarray, nb: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(fn(x[i], x[nb[i]]), np.float64) for i in range(M)], axis=-2)


def test_scaled_dot_product_numbers_are_analysis_of_the_same_weights(capsys, graph):
    out = _run(capsys, "--mechanism", "scaled_dot_product", "--top-k", "3")
    (row,) = out["results"]
    x, nb = graph.embeddings, graph.neighbours
    w = _per_node(ScaledDotProductAttention(DIM).attention_weights, x, nb)  # node i over its own K neighbours
    # the weights themselves, independently: softmax(q·k/sqrt(d)) in float64
    x64 = x.astype(np.float64)
    ref = np.stack([softmax(x64[nb[i]] @ x64[i] / math.sqrt(DIM)) for i in range(M)])
    np.testing.assert_allclose(w, ref, atol=1e-6)
    assert row["mechanism"] == "scaled_dot_product" and (row["queries"], row["keys"], row["top_k"]) == (M, K, 3)
    expect = {
        "entropy": analysis.entropy(w).mean(), "uniform_entropy": math.log(K),
        "normalized_entropy": analysis.normalized_entropy(w).mean(),
        "effective_support": analysis.effective_support(w).mean(), "top_k_mass": analysis.top_k_mass(w, 3).mean(),
        "sparsity": analysis.sparsity(w, 0.9).mean(),
    }  # fmt: skip
    for name, value in expect.items():
        assert row[name] == pytest.approx(value, rel=1e-12), name
    assert row["entropy"] == pytest.approx(float(np.mean([-(r * np.log(r)).sum() for r in ref])), rel=1e-5)
    assert "head_diversity" not in row
    assert out["data"] == {
        "source": "demo", "generator": "clustered_graph", "seed": SEED, "nodes": NODES, "dim": DIM, "neighbours": K,
        "queries": M, "mode": out["data"]["mode"],
    }  # fmt: skip


def test_multi_head_reports_head_diversity_of_the_per_head_weights(capsys, graph):
    (row,) = _run(capsys, "--mechanism", "multi_head", "--heads", "4")["results"]
    mha = MultiHeadAttention(DIM, 4, seed=SEED)
    heads = _per_node(mha.weights, graph.embeddings, graph.neighbours)  # (h, M, K), one node at a time
    assert heads.shape == (4, M, K) and row["heads"] == 4
    # the tool reads the neighbour-list form of weights(): the same numbers up to float32 rounding
    assert row["head_diversity"] == pytest.approx(analysis.head_diversity(heads), rel=1e-4)
    by_scipy = np.mean([jensenshannon(heads[a, q], heads[b, q]) ** 2
                        for a in range(4) for b in range(a + 1, 4) for q in range(M)])  # fmt: skip
    assert row["head_diversity"] == pytest.approx(by_scipy, rel=1e-4)
    np.testing.assert_allclose(row["head_entropy"], [analysis.entropy(h).mean() for h in heads], rtol=1e-6)
    # the (M, K) statistics are of the head-averaged weights, torch's average_attn_weights
    assert row["entropy"] == pytest.approx(analysis.entropy(heads.mean(axis=0)).mean(), rel=1e-6)
    assert row["top_k_mass"] == pytest.approx(analysis.top_k_mass(heads.mean(axis=0), 8).mean(), rel=1e-6)


def test_moe_reports_routing_balance_of_its_example_layer(capsys, graph):
    (row,) = _run(capsys, "--mechanism", "moe", "--top-k", "1")["results"]
    x = graph.embeddings
    params = MoEAttention.example_params(DIM)
    moe = build({"type": "moe", **params, "top_k": 1, "seed": SEED})
    x = moe.embed(x)  # into its experts' space (the hyperbolic expert's ball), as the tool does
    rec = moe.routing_record(x[:M])
    routing = row["routing"]
    expect = analysis.routing_balance(rec)
    for name, value in expect.items():
        assert routing[name] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value), name
    assert routing["load"] == rec.load.tolist() and sum(routing["load"]) == M * 1
    assert routing["expert_kinds"] == [e["type"] for e in params["experts"]]
    e = len(params["experts"])
    assert (routing["experts"], routing["queries"], routing["top_k"]) == (e, M, 1)
    assert routing["uniform_entropy"] == pytest.approx(math.log(e))
    assert routing["normalized_router_entropy"] == pytest.approx(expect["router_entropy"] / math.log(e), rel=1e-12)
    # its weights are the routing-weighted mixture of the chosen experts' weights
    w = np.stack([moe.attention_weights(x[i], x[graph.neighbours[i]]) for i in range(M)])
    assert row["entropy"] == pytest.approx(analysis.entropy(w).mean(), rel=1e-5)


def test_npy_data_uses_exact_cosine_knn(capsys, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)) * rng.uniform(0.5, 3.0, (40, 1))  # rows of different lengths
    path = tmp_path / "emb.npy"
    np.save(path, x)
    assert main(["analyze", "--mechanism", "scaled_dot_product", "--data", str(path), "--neighbours", "5",
                 "--queries", "10", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["source"] == str(path) and (out["data"]["nodes"], out["data"]["dim"]) == (40, 6)
    # brute-force cosine kNN by hand
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    nb = np.argsort(-sim, axis=1)[:, :5]
    w = np.stack([softmax(x[nb[i]] @ x[i] / math.sqrt(6)) for i in range(10)])
    (row,) = out["results"]
    assert row["entropy"] == pytest.approx(analysis.entropy(w).mean(), rel=1e-9)
    assert row["top_k_mass"] == pytest.approx(analysis.top_k_mass(w, 8).mean(), rel=1e-9)


def test_table_on_stdout_with_both_sections(capsys):
    assert main(["analyze", "--mechanism", "scaled_dot_product,gat,moe", *SMALL]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["mechanism", "queries", "keys", "entropy", "log", "K", "norm.", "H", "eff.", "support",
                                "top-8", "mass", "sparsity@0.9", "head", "div.", "(JS)"]  # fmt: skip
    assert set(lines[1]) == {"-"}
    assert lines[2].split()[:3] == ["scaled_dot_product", str(M), str(K)] and lines[2].split()[-1] == "-"
    assert lines[3].split()[0] == "gat" and float(lines[3].split()[-1]) >= 0
    assert lines[4].split()[:3] == ["moe", str(M), str(K)] and lines[4].split()[-1] == "-"
    assert lines[5] == ""
    assert lines[6].split()[:3] == ["mechanism", "experts", "top-k"]
    assert lines[8].split()[:3] == ["moe", "4", "2"]
    assert lines[-1].startswith("data: demo")
    assert "ruvattn analyze" in err  # progress on stderr


@pytest.mark.skipif(
    any(importlib.util.find_spec(n) is None for n in ("ipywidgets", "plotly", "kaleido")), reason="widgets extra"
)
def test_figures_writes_offline_html_and_svg(capsys, tmp_path):
    out_dir = tmp_path / "figs"
    out = _run(capsys, "--mechanism", "scaled_dot_product,moe,multi_head", "--figures", str(out_dir))
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(
        f"{stem}.{ext}"
        for stem in ("moe", "moe-routing", "scaled_dot_product", "multi_head", "multi_head-heads")
        for ext in ("html", "svg")
    )
    assert sorted(out["figures"]) == sorted(str(out_dir / n) for n in names)
    # the heatmaps draw each node over its own neighbours: their titles carry the table's numbers
    for row in out["results"]:
        page = (out_dir / f"{row['mechanism']}.html").read_text(encoding="utf-8")
        assert f"entropy {row['entropy']:.3f} nats" in page, row["mechanism"]
    for stem in ("moe", "scaled_dot_product"):
        page = (out_dir / f"{stem}.html").read_text(encoding="utf-8")
        assert '<script src="http' not in page and "<!DOCTYPE html>" in page
        assert (out_dir / f"{stem}.svg").read_text(encoding="utf-8").startswith("<svg")
    # the routing figure shows the table's numbers
    moe_row = next(r for r in out["results"] if r["mechanism"] == "moe")
    routing = moe_row["routing"]
    assert f"load-balancing loss {routing['load_balancing_loss']:.3f}" in (out_dir / "moe-routing.html").read_text()


def test_figures_without_the_widgets_extra_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kaleido", None)  # as if not installed
    code = main(["analyze", "--mechanism", "scaled_dot_product", "--figures", str(tmp_path / "f"), *SMALL])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "--figures" in err and "pip install 'ruvattn[widgets]'" in err
    assert not (tmp_path / "f").exists()


def _bad(tmp_path) -> list[tuple[list[str], str]]:
    cube = tmp_path / "cube.npy"
    np.save(cube, np.zeros((2, 3, 4)))
    text = tmp_path / "notes.npy"
    text.write_text("not an array")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]))
    three = tmp_path / "three.npy"
    np.save(three, np.eye(3, dtype=np.float32))
    return [
        (["--mechanism", "nope"], "--mechanism: unknown mechanism 'nope'"),
        (["--mechanism", "scaled_dot_product", "--queries", "0"], "--queries must be at least 1; got 0"),
        (["--mechanism", "scaled_dot_product", "--nodes", "abc"], "--nodes must be a whole number; got 'abc'"),
        (["--mechanism", "scaled_dot_product", "--seed", "-1"], "--seed must be at least 0; got -1"),
        (["--mechanism", "scaled_dot_product", "--top-k", "0"], "--top-k must be at least 1; got 0"),
        (["--mechanism", "scaled_dot_product", "--nodes", "30", "--queries", "31", "--neighbours", "4"],
         "--queries (31) must be at most the number of nodes (30)"),
        (["--mechanism", "scaled_dot_product", "--nodes", "10", "--neighbours", "10"],
         "--neighbours (10) must be < --nodes (10)"),
        (["--mechanism", "multi_head", "--dim", "10", "--heads", "3", "--nodes", "30", "--neighbours", "4"],
         "MultiHeadAttention: 'num_heads' must divide hidden_dim=10; got 3"),
        (["--mechanism", "gat", "--heads", "17", "--nodes", "30", "--neighbours", "4"], "--heads must be in [1, 16]"),
        (["--mechanism", "moe", "--top-k", "5", "--nodes", "30", "--neighbours", "4"],
         "MoEAttention: 'top_k' must be an integer in [1, 4]"),
        (["--mechanism", "scaled_dot_product", "--data", str(tmp_path / "missing.npy")], "--data: cannot read"),
        (["--mechanism", "scaled_dot_product", "--data", str(text)], "--data: cannot read"),
        (["--mechanism", "scaled_dot_product", "--data", "emb.csv"], "--data must be 'demo' or a path to a .npy"),
        (["--mechanism", "scaled_dot_product", "--data", str(cube)], "must hold an (N, d) matrix"),
        (["--mechanism", "scaled_dot_product", "--data", str(nan)], "--data: " + repr(str(nan)) + " contains NaN"),
        (["--mechanism", "scaled_dot_product", "--data", str(three), "--neighbours", "3"],
         "--neighbours (3) must be < the 3 rows of --data"),
    ]  # fmt: skip


def test_bad_flags_exit_2_naming_the_flag(capsys, tmp_path):
    for argv, message in _bad(tmp_path):
        try:
            code = main(["analyze", *argv])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        out, err = capsys.readouterr()
        assert code == 2, argv
        assert message in err, (argv, err)
        assert out == "", argv


def test_bad_flag_from_the_console_exits_2():
    proc = subprocess.run([sys.executable, "-m", "ruvattn.lab.cli", "analyze", "--mechanism", "attention_please"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--mechanism: unknown mechanism 'attention_please'; choose from" in proc.stderr
    assert "scaled_dot_product" in proc.stderr
