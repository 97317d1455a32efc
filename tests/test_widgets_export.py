"""ruvattn.widgets.export without a browser or a kernel: where the npm files are looked for, the inlining
rules, stale widget buffers, and the offline page built from a notebook that carries widget state
(tests/test_browser.py renders such a page in Chromium)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbconvert")

from ruvattn.errors import InvalidConfig  # noqa: E402
from ruvattn.widgets import export  # noqa: E402

ANYWIDGET = 'define(["@jupyter-widgets/base"], function (base) { return {}; });'
FILES = {
    "requirejs": "var requirejs = 'inlined require';",
    "renderer": "window.RENDERER = '</script> in a string';",
    "anywidget": ANYWIDGET,
}
STATE = "application/vnd.jupyter.widget-state+json"


def _node_modules(root):
    """A node_modules folder with stand-ins for the three npm files."""
    for name, rel in export.ASSETS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(FILES[name])
    return root


def _notebook(with_state=True):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("slider")
    view = {"model_id": "slider-model", "version_major": 2, "version_minor": 0}
    cell.outputs = [nbformat.v4.new_output("display_data", {"application/vnd.jupyter.widget-view+json": view})]
    nb.cells = [nbformat.v4.new_markdown_cell("# A slider"), cell]
    if with_state:
        model = {"model_name": "IntSliderModel", "model_module": "@jupyter-widgets/controls",
                 "model_module_version": "2.0.0", "state": {"value": 7, "max": 10}}  # fmt: skip
        nb.metadata["widgets"] = {STATE: {"version_major": 2, "version_minor": 0, "state": {"slider-model": model}}}
    return nb


def test_find_assets_takes_the_argument_then_the_environment_then_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUVATTN_WIDGET_ASSETS", raising=False)
    with pytest.raises(InvalidConfig, match=r"npm files were not found in \[.*\.npm-peers/node_modules'\]"):
        export.find_assets()
    local = _node_modules(tmp_path / ".npm-peers" / "node_modules")
    assert export.find_assets() == {name: local / rel for name, rel in export.ASSETS.items()}
    env = _node_modules(tmp_path / "env")
    monkeypatch.setenv("RUVATTN_WIDGET_ASSETS", str(env))
    assert export.find_assets()["renderer"] == env / export.ASSETS["renderer"]
    given = _node_modules(tmp_path / "given")
    assert export.find_assets(given)["anywidget"] == given / export.ASSETS["anywidget"]
    (given / export.ASSETS["anywidget"]).unlink()  # an incomplete folder is passed over, and named if nothing fits
    assert export.find_assets(given)["anywidget"] == env / export.ASSETS["anywidget"]
    (env / export.ASSETS["requirejs"]).unlink()
    (local / export.ASSETS["renderer"]).unlink()
    with pytest.raises(InvalidConfig, match=r"given.*env.*npm-peers"):
        export.find_assets(given)


def test_inlined_scripts_cannot_close_their_element_and_anywidget_gets_a_name():
    assert export._inline("a</script>b</scripts") == "a<\\/script>b<\\/scripts"
    assert export._anywidget_module(ANYWIDGET) == ANYWIDGET.replace("define([", 'define("anywidget", [', 1)
    with pytest.raises(InvalidConfig, match="unexpected module header"):
        export._anywidget_module("define([], function () {});")


def test_drop_stale_buffers_keeps_only_buffers_whose_path_still_exists():
    nb = _notebook()
    models = nb.metadata["widgets"][STATE]["state"]
    models["figure"] = {
        "state": {"_py2js_update": None, "_data": [{"x": None}, {"y": None}], "layout": {}},
        "buffers": [
            {"path": ["_py2js_update", "x"], "data": "AA==", "encoding": "base64"},  # the trait was reset to None
            {"path": ["_data", 1, "y"], "data": "AA==", "encoding": "base64"},
            {"path": ["_data", 5, "y"], "data": "AA==", "encoding": "base64"},  # no such trace any more
            {"path": ["gone", "x"], "data": "AA==", "encoding": "base64"},
        ],
    }
    models["empty"] = {"state": {}, "buffers": []}
    assert export.drop_stale_buffers(nb) == 3
    assert [b["path"] for b in models["figure"]["buffers"]] == [["_data", 1, "y"]]
    assert export.drop_stale_buffers(nb) == 0
    assert export.drop_stale_buffers(nbformat.v4.new_notebook()) == 0  # no widget state at all


def test_notebook_to_html_inlines_every_script_and_the_widget_state(tmp_path):
    assets = _node_modules(tmp_path / "node_modules")
    nb = _notebook()
    stale = {"path": ["gone", "x"], "data": "AA==", "encoding": "base64"}
    nb.metadata["widgets"][STATE]["state"]["slider-model"]["buffers"] = [stale]
    before = copy.deepcopy(nb)
    path = export.notebook_to_html(nb, tmp_path / "page.html", assets=assets)
    html = path.read_text(encoding="utf-8")
    _check_offline_page(html)
    assert nb == before  # the stale buffer is dropped from a copy: the caller's notebook is left as it was
    nbformat.write(nb, tmp_path / "page.ipynb")  # a path to a notebook works the same
    _check_offline_page(
        export.notebook_to_html(tmp_path / "page.ipynb", tmp_path / "again.html", assets=assets).read_text()
    )
    with pytest.raises(InvalidConfig, match="has no widget state"):
        export.notebook_to_html(_notebook(with_state=False), tmp_path / "none.html", assets=assets)


def _check_offline_page(html):
    assert FILES["requirejs"] in html
    assert 'define("anywidget", ["@jupyter-widgets/base"]' in html
    assert "window.RENDERER = '<\\/script> in a string';" in html
    assert not re.findall(r"<script[^>]*\ssrc=", html), "every script is inline: nothing is fetched at view time"
    assert "mathjax" not in html.lower()
    assert STATE in html and '"slider-model"' in html and "IntSliderModel" in html
    assert "A slider" in html


def test_save_image_retries_once_when_kaleidos_page_is_not_ready(tmp_path, monkeypatch):
    """kaleido sometimes queries its Chromium page before the page's scripts ran ("kaleido_scopes is not
    defined", seen once in CI): the export tries once more; any other error, or a second failure, is raised."""
    import plotly.graph_objects as go

    from ruvattn.widgets import AttentionHeatmap

    rng = np.random.default_rng(0)
    view = AttentionHeatmap("scaled_dot_product", rng.standard_normal((2, 4)), rng.standard_normal((3, 4)))
    calls = []

    def flaky(self, path, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise RuntimeError("ReferenceError: kaleido_scopes is not defined")
        Path(path).write_text("<svg/>")

    monkeypatch.setattr(go.Figure, "write_image", flaky)
    assert view.save_image(tmp_path / "a.svg").read_text() == "<svg/>" and len(calls) == 2

    def broken(self, path, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(go.Figure, "write_image", broken)
    with pytest.raises(RuntimeError, match="something else"):
        view.save_image(tmp_path / "b.svg")
