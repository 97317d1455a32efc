"""Screenshots of the widgets running live in JupyterLab, with a slider moved by a real pointer.

Starts a JupyterLab server on localhost, opens a small notebook with every widget in headless
Chromium (Playwright, ``executable_path``; no browser download), runs all cells in the kernel,
takes a screenshot of each widget, then drags the heatmap's temperature slider and checks that
the kernel recomputed the figure (its title's entropy changes). Not part of CI: it is how the
screenshots in the issue note were made.

    .venv/bin/python tools/lab_screenshots.py [--out DIR] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat

CELLS = [
    "import numpy as np\n"
    "from ruvattn import LocalGlobalAttention, MoEAttention, MultiHeadAttention, ScaledDotProductAttention\n"
    "from ruvattn.datasets import clustered_graph\n"
    "from ruvattn.widgets import AttentionHeatmap, HeadView, MoERoutingView, NeighbourhoodView, PoincareDiskView\n"
    "rng = np.random.default_rng(0)\n"
    "g = clustered_graph(400, 32, n_clusters=6, k=8, seed=1)\n"
    "queries, keys = g.embeddings[:12] * 6, g.embeddings[:200] * 6",
    "AttentionHeatmap(ScaledDotProductAttention(32), queries, keys)",
    "HeadView(MultiHeadAttention(32, num_heads=4), queries, keys)",
    "NeighbourhoodView('scaled_dot_product', g.embeddings * 6, g.neighbours, centre=5, hops=2)",
    "PoincareDiskView(0.6 * rng.standard_normal((40, 8)), query=3, euclidean=True)",
    "moe = (MoEAttention.builder().add_local_expert(32).add_hyperbolic_expert(32, -1.0)\n"
    "       .add_sparse_expert(8, 2).add_linear_expert().top_k(2).build())\n"
    "MoERoutingView(moe, g.embeddings[:64])",
]
NAMES = ["heatmap", "heads", "neighbourhood", "poincare", "moe"]
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("test-artifacts/jupyterlab"))
    ap.add_argument("--chromium", default=os.environ.get("RUVATTN_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ruvattn-lab-"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbformat.write(nb, root / "widgets.ipynb")
    # render every cell (JupyterLab 4 otherwise only renders cells near the viewport) and no news pop-up
    settings = root / ".settings"
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}'
    )
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false"}'
    )
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings)}
    port, token = _free_port(), "ruvattn"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False", "--allow-root"],
        stdout=subprocess.DEVNULL, stderr=(args.out / "jupyterlab.log").open("w"), env=env,
    )  # fmt: skip
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            for _ in range(120):  # wait for the server to answer
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None:
                        raise RuntimeError(f"jupyter lab exited; see {args.out / 'jupyterlab.log'}") from None
                    time.sleep(1)
            page.goto(f"http://127.0.0.1:{port}/lab/tree/widgets.ipynb?token={token}")
            try:
                page.wait_for_selector(".jp-Notebook", timeout=120_000)
            except Exception:
                page.screenshot(path=str(args.out / "failed_to_open.png"))
                raise
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.click(".jp-Notebook")
            page.keyboard.press("Escape")
            page.get_by_text("Run", exact=True).first.click()
            page.get_by_text("Run All Cells", exact=True).first.click()
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            try:
                for i, name in enumerate(NAMES):  # a figure is drawn when its cell scrolls into view
                    out = cells.nth(i + 1).locator(".jp-OutputArea")
                    out.scroll_into_view_if_needed(timeout=240_000)
                    out.locator(".js-plotly-plot").first.wait_for(state="attached", timeout=60_000)
                    page.wait_for_timeout(1_500)
                    out.screenshot(path=str(args.out / f"{i + 1}_{name}.png"))
            except Exception:
                page.screenshot(path=str(args.out / "failed_to_run.png"))
                raise
            heat = cells.nth(1).locator(".jp-OutputArea")
            # move the heatmap's temperature slider with the pointer: the kernel recomputes the figure
            title = heat.locator(".gtitle")
            before = title.text_content()
            handle = heat.locator(".noUi-handle").first
            handle.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] - 60, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()
            page.wait_for_function(
                "([el, old]) => el.textContent !== old", arg=[title.element_handle(), before], timeout=30_000
            )
            after = title.text_content()
            heat.screenshot(path=str(args.out / "1_heatmap_after_slider.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    ent = [float(re.search(r"entropy ([0-9.]+)", t).group(1)) for t in (before, after)]
    print(f"heatmap title before: {before}\nheatmap title after:  {after}")
    print(f"entropy {ent[0]} -> {ent[1]} (a lower temperature sharpens the weights)")
    print(f"screenshots in {args.out}; page errors: {errors or 'none'}")
    return 0 if ent[1] < ent[0] and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
