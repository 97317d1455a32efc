"""A real browser: a widget notebook is executed, exported to one offline HTML page with its widget
state, and opened in headless Chromium (Debian's, driven by Playwright through ``executable_path``;
no browser download, no network). The page must render every plotly figure with the traces and
points the Python side drew, with no console errors; a screenshot is kept as a test artifact.

It skips when Chromium, Playwright or the widget renderer's npm files are missing, unless
``RUVATTN_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns a missing piece into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")
pytest.importorskip("ruvattn.widgets")

from ruvattn.errors import InvalidConfig  # noqa: E402  (after the importorskip guards)
from ruvattn.widgets.export import execute_notebook, find_assets, notebook_to_html  # noqa: E402

pytestmark = pytest.mark.browser

REQUIRED = os.environ.get("RUVATTN_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("RUVATTN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("RUVATTN_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
# the flags a root, network-less sandbox needs (without the networking ones Chromium keeps dialling out)
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip

SETUP = """\
import json
import numpy as np
from ruvattn import FlashAttention, MultiHeadAttention, LocalGlobalAttention
from ruvattn.datasets import clustered_graph
from ruvattn.widgets import AttentionHeatmap, HeadView, NeighbourhoodView, PoincareDiskView
rng = np.random.default_rng(0)
queries = rng.standard_normal((6, 32)).astype(np.float32)
keys = rng.standard_normal((48, 32)).astype(np.float32)
shown = []

def expect(widget):
    # what the Python side drew: per figure, visible traces by type and marker/bar points
    counts = {"heatmap": 0, "bar_points": 0, "scatter_traces": 0, "marker_points": 0}
    for t in widget.figure.data:
        if t.visible is False:
            continue
        if t.type == "heatmap":
            counts["heatmap"] += 1
        elif t.type == "bar":
            counts["bar_points"] += len(t.y)
        elif t.type in ("scatter", "scattergl") and t.x is not None and any(v is not None for v in t.x):
            counts["scatter_traces"] += 1  # plotly draws no <g class="trace"> for an empty trace
            if "markers" in (t.mode or "markers"):
                counts["marker_points"] += sum(v is not None for v in t.x)
    shown.append(counts)
    return widget
"""
CELLS = [
    "expect(AttentionHeatmap(LocalGlobalAttention(32, local_window=8, global_nodes=2), queries, keys, "
    "mode='difference'))",
    "hv = expect(HeadView(MultiHeadAttention(32, num_heads=4), queries, keys)); hv",
    "flash = AttentionHeatmap(FlashAttention(32), queries, keys)\n"
    "flash.controls['temperature'].value = 0.25  # a control moved before saving: the saved state is the new one\n"
    "expect(flash)",
    "g = clustered_graph(300, 16, n_clusters=6, k=6, seed=1)\n"
    "expect(NeighbourhoodView('scaled_dot_product', g.embeddings, g.neighbours, centre=3, hops=2))",
    "disk = expect(PoincareDiskView(0.3 * rng.standard_normal((25, 2)), query=4)); disk",
    "print(json.dumps(shown))",
]

_JS_COUNTS = """Array.from(document.querySelectorAll('.js-plotly-plot')).map(g => ({
  heatmap: g.querySelectorAll('g.hm image').length,
  bar_points: g.querySelectorAll('g.barlayer g.point').length,
  scatter_traces: g.querySelectorAll('g.scatterlayer g.trace').length,
  marker_points: g.querySelectorAll('g.scatterlayer path.point').length,
  title: (g.querySelector('.gtitle') || {}).textContent || '' }))"""


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"browser test required (RUVATTN_REQUIRE_BROWSER=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    try:
        find_assets()
    except InvalidConfig as exc:
        _missing(str(exc))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP), *(nbformat.v4.new_code_cell(c) for c in CELLS)]
    execute_notebook(nb, timeout=600)
    stderr = [o["text"] for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert stderr == []  # e.g. a widget message that could not be serialised would warn here
    expected = json.loads(nb.cells[-1].outputs[0]["text"])
    path = notebook_to_html(nb, tmp_path_factory.mktemp("browser") / "widgets.html")
    return path, expected


def test_export_is_offline(exported: tuple[Path, list[dict[str, Any]]]) -> None:
    path, _ = exported
    page = path.read_text(encoding="utf-8")
    assert "application/vnd.jupyter.widget-state+json" in page
    for remote in ('src="http', "src='http", 'import("http', "cdn.jsdelivr.net/npm/@jupyter-widgets"):
        assert remote not in page, remote


def test_widgets_render_in_headless_chromium(exported: tuple[Path, list[dict[str, Any]]]) -> None:
    path, expected = exported
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM} (apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")
    errors: list[str] = []
    requests: list[str] = []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length >= {len(expected)}", timeout=60_000
            )
            page.wait_for_timeout(500)  # let the last figure finish drawing
            drawn = page.evaluate(_JS_COUNTS)
            page.screenshot(path=str(ARTIFACTS / "browser_widgets.png"), full_page=True)
        finally:
            browser.close()
    # anywidget rejects a model's "ready" promise if its module has not initialised within 2 s; each
    # FigureWidget carries plotly's 5 MB bundle, and on a busy 2-core machine that watchdog can fire
    # while the module is still loading. The figure still renders, which the counts below check, so
    # that one message is tolerated; any other console error or page error fails the test.
    watchdog = "pageerror: [anywidget] Failed to initialize model."
    assert [e for e in errors if e != watchdog] == []
    assert [u for u in requests if u.startswith(("http:", "https:"))] == []
    assert len(drawn) == len(expected)
    for got, want in zip(drawn, expected, strict=True):
        assert {k: got[k] for k in want} == want, (got, want)
    assert "top-8 mass" in drawn[0]["title"] and "max |mechanism − exact|" in drawn[0]["title"]
    assert "heads [0, 1, 2, 3]" in drawn[1]["title"]
    # the flash heatmap was redrawn at temperature 0.25 before saving: the page shows that state
    assert "FlashAttention" in drawn[2]["title"]
    assert expected[3]["marker_points"] > 6 and expected[4]["scatter_traces"] >= 3  # real graphs, not empty
