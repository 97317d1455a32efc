"""Interactive Jupyter widgets for attention (installed as ``ruvattn.widgets``).

Each widget pairs ipywidgets controls with a plotly ``FigureWidget``; moving a control calls the
Numba-backed library again and redraws. They need the ``widgets`` extra::

    pip install 'ruvattn[widgets]'

- :class:`AttentionHeatmap`: queries × keys weights of any mechanism, exact-vs-mechanism difference.
- :class:`HeadView`: per-head panels for multi-head and GAT attention, head entropy against uniform.
- :class:`NeighbourhoodView`: one node and its 1–2 hop neighbours, edges by attention weight.
- :class:`PoincareDiskView`: points in the Poincaré disk, geodesic arcs weighted by attention.
- :class:`MoERoutingView`: expert choices, load against the ideal, entropy, dead and dropped.
- :class:`SearchPathView`: step through a search on a real HNSW index (greedy, beam, your own policy).

Every widget exports a static image (``save_image``: SVG/PNG/PDF) and an offline HTML file
(``save_html``: plotly.js inlined, no CDN at view time).
"""

from __future__ import annotations

if __name__ != "ruvattn.widgets":  # e.g. `import widgets` with the repository root on sys.path
    raise ImportError(
        f"The widgets/ folder is the package ruvattn.widgets (setuptools maps it there); it cannot be imported as "
        f"{__name__!r}. Use `import ruvattn.widgets` (pip install -e '.[widgets]' from the repository root)."
    )

try:
    from ._base import AttentionWidget
    from .heads import HeadView
    from .heatmap import AttentionHeatmap
    from .neighbourhood import NeighbourhoodView
    from .poincare import PoincareDiskView
    from .routing import MoERoutingView
    from .search_path import SearchPathView
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"ruvattn.widgets needs the widgets extra ({exc.name} is missing): pip install 'ruvattn[widgets]'"
    ) from exc

__all__ = [
    "AttentionHeatmap",
    "AttentionWidget",
    "HeadView",
    "MoERoutingView",
    "NeighbourhoodView",
    "PoincareDiskView",
    "SearchPathView",
]
