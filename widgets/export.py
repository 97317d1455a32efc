"""Export an executed notebook with live widget state to one offline HTML file.

nbconvert's HTML export embeds the widget state but loads RequireJS, the widget renderer
(``@jupyter-widgets/html-manager``) and third-party widget modules from CDNs when the page is
opened. :func:`notebook_to_html` inlines all of them instead, from npm packages on disk:

- ``requirejs`` (``require.js``),
- ``@jupyter-widgets/html-manager`` (``dist/embed-amd.js``: the standard controls and the renderer),
- ``anywidget`` (``dist/index.js``: the module plotly's ``FigureWidget`` is built on; plotly's own
  JavaScript travels inside the widget state).

Install them once with ``npm install --prefix DIR requirejs @jupyter-widgets/html-manager anywidget``
and pass ``DIR/node_modules`` (or set ``RUVATTN_WIDGET_ASSETS``). The page then opens from disk
with no network. MathJax is not bundled: formulas in markdown cells stay as TeX source.

Execute the notebook with widget state stored (``nbclient.NotebookClient(nb, store_widget_state=True)``,
which is nbclient's default) before exporting; :func:`execute_notebook` does that.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ruvattn.errors import InvalidConfig

__all__ = ["ASSETS", "drop_stale_buffers", "execute_notebook", "find_assets", "notebook_to_html"]

#: the npm files the offline page inlines, relative to ``node_modules``
ASSETS = {
    "requirejs": "requirejs/require.js",
    "renderer": "@jupyter-widgets/html-manager/dist/embed-amd.js",
    "anywidget": "anywidget/dist/index.js",
}
_TEMPLATES = Path(__file__).with_name("templates")


def find_assets(assets: str | Path | None = None) -> dict[str, Path]:
    """Paths of the three npm files: ``assets`` (a ``node_modules`` folder), ``$RUVATTN_WIDGET_ASSETS``,
    or ``.npm-peers/node_modules`` in the current directory; an error names what is missing."""
    candidates = [assets, os.environ.get("RUVATTN_WIDGET_ASSETS"), Path.cwd() / ".npm-peers" / "node_modules"]
    tried = []
    for folder in candidates:
        if folder is None:
            continue
        root = Path(folder)
        files = {name: root / rel for name, rel in ASSETS.items()}
        if all(p.is_file() for p in files.values()):
            return files
        tried.append(str(root))
    raise InvalidConfig(
        "notebook_to_html: the widget renderer's npm files were not found in "
        f"{tried or ['(no folder given)']}; run `npm install --prefix DIR requirejs "
        "@jupyter-widgets/html-manager anywidget` and pass DIR/node_modules."
    )


def _inline(js: str) -> str:
    """Script text that cannot end its ``<script>`` element early."""
    return js.replace("</script", "<\\/script")


def _anywidget_module(js: str) -> str:
    """anywidget ships an anonymous AMD module; inline code must name itself."""
    anonymous = 'define(["@jupyter-widgets/base"]'
    if anonymous not in js:
        raise InvalidConfig("notebook_to_html: this anywidget build has an unexpected module header.")
    return js.replace(anonymous, 'define("anywidget", ["@jupyter-widgets/base"]', 1)


def _resolvable(state: Any, path: list[Any]) -> bool:
    node = state
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, (dict, list))


def drop_stale_buffers(notebook: Any) -> int:
    """Remove binary buffers whose path no longer exists in their model's state; returns how many.

    nbclient keeps the buffers of every message a model received, but a later update can set the
    owning trait to ``None`` (plotly does this to its ``_py2js_*`` message traits), and the widget
    renderer then fails writing the old buffer into ``null``.
    """
    models = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    dropped = 0
    for model in models.get("state", {}).values():
        buffers = model.get("buffers")
        if not buffers:
            continue
        keep = [b for b in buffers if _resolvable(model["state"], list(b["path"]))]
        dropped += len(buffers) - len(keep)
        model["buffers"] = keep
    return dropped


def execute_notebook(notebook: Any, *, timeout: int = 600, cwd: str | Path | None = None) -> Any:
    """Run every cell of an ``nbformat`` notebook in the ``python3`` kernel, storing widget state."""
    import nbclient

    resources = {"metadata": {"path": str(cwd)}} if cwd is not None else {}
    client = nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=timeout, store_widget_state=True, resources=resources
    )
    client.execute()
    return notebook


def notebook_to_html(notebook: Any, path: str | Path, *, assets: str | Path | None = None) -> Path:
    """Write ``notebook`` (an executed nbformat notebook or a path to one) as one offline HTML page."""
    import nbformat
    from nbconvert import HTMLExporter

    if isinstance(notebook, (str, Path)):
        notebook = nbformat.read(str(notebook), as_version=4)
    if "widgets" not in notebook.metadata:
        raise InvalidConfig(
            "notebook_to_html: the notebook has no widget state; execute it with store_widget_state=True "
            "(ruvattn.widgets.export.execute_notebook)."
        )
    notebook = copy.deepcopy(notebook)
    drop_stale_buffers(notebook)
    files = find_assets(assets)
    text = {name: p.read_text(encoding="utf-8") for name, p in files.items()}
    exporter = HTMLExporter(template_name="ruvattn_offline", extra_template_basedirs=[str(_TEMPLATES)])
    resources = {
        "ruvattn_offline": {
            "requirejs": _inline(text["requirejs"]),
            "modules": _inline(_anywidget_module(text["anywidget"])),
            "renderer": _inline(text["renderer"]),
        }
    }
    body, _ = exporter.from_notebook_node(notebook, resources=resources)
    path = Path(path)
    path.write_text(body, encoding="utf-8")
    return path
