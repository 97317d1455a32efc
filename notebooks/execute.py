"""Execute the teaching notebooks in place, the way they are committed.

Usage (from the repository root)::

    python notebooks/execute.py                      # every notebooks/NN_*.ipynb
    python notebooks/execute.py 01_scaled_dot_product 03_flash_vs_exact.ipynb

Each notebook runs with papermill (kernel ``python3``, working directory ``notebooks/``) and its
default parameters, and is written back over itself with its outputs. Then the notebook-level
widget state is removed (``metadata.widgets``: plotly's ``FigureWidget`` state alone is megabytes,
and it is regenerated whenever the notebook runs in Jupyter), and a notebook whose stored outputs
are still too large is reported. Check the result with nbval::

    python -m pytest -q --nbval -p no:randomly notebooks/01_scaled_dot_product.ipynb

Set ``NUMBA_CACHE_DIR`` to a warm cache first (``ruvattn warmup`` fills it), or the first run
spends minutes compiling kernels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm

HERE = Path(__file__).resolve().parent
KERNEL = "python3"
#: a notebook whose outputs take more than this many characters on disk is reported
MAX_OUTPUT_CHARS = 400_000


def notebook_paths(names: list[str]) -> list[Path]:
    """The notebooks named (``01_x``, ``01_x.ipynb`` or a path), or all ``NN_*.ipynb`` in this folder."""
    if not names:
        return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    paths = []
    for name in names:
        path = Path(name)
        if path.suffix != ".ipynb":
            path = path.with_suffix(".ipynb")
        if not path.is_absolute() and not path.exists():
            path = HERE / path.name
        if not path.exists():
            raise SystemExit(f"execute.py: no notebook {name!r} in {HERE}")
        paths.append(path.resolve())
    return paths


def strip_widget_state(path: Path) -> int:
    """Remove the notebook-level widget state; returns the characters the outputs take.

    papermill's record of the paths is made relative to the repository, so that no local
    directory ends up in the committed file.
    """
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    record = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in record:
            record[key] = f"{HERE.name}/{path.name}"
    nbformat.write(nb, path)
    return sum(len(json.dumps(cell.get("outputs", []))) for cell in nb.cells)


def execute(path: Path) -> float:
    """Run ``path`` in place with papermill (its default parameters) and strip its widget state.

    Returns the seconds taken. A cell that raises stops the run with papermill's error, and the
    notebook is left as far as it got (with the traceback), as papermill writes it.
    """
    start = time.perf_counter()
    pm.execute_notebook(str(path), str(path), kernel_name=KERNEL, cwd=str(HERE), log_output=False, progress_bar=False)
    seconds = time.perf_counter() - start
    size = strip_widget_state(path)
    if size > MAX_OUTPUT_CHARS:
        print(f"warning: {path.name} stores {size:,} characters of outputs", file=sys.stderr)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all NN_*.ipynb here)")
    args = parser.parse_args(argv)
    for path in notebook_paths(args.names):
        seconds = execute(path)
        print(f"{path.name}: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
