"""``ruvattn analyze``: attention statistics of registered mechanisms on a data set.

Each mechanism is built from its :meth:`~ruvattn.mechanisms.Attention.example_params` with the flags
applied by parameter name, the data is mapped into its input space with ``embed``, and the statistics
of :mod:`ruvattn.analysis` are computed from the contract's ``weights(..., neighbours=)`` (node ``i`` over
its own ``k`` nearest neighbours); a mechanism that routes (``routing_record``) reports its balance too.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MASS", "run_analysis"]

#: the probability mass for the ``sparsity@mass`` statistic
MASS = 0.9
_MASS = MASS


def _load_embeddings(text: str) -> np.ndarray:
    """An ``(N, d)`` float matrix from a ``.npy`` file, or an error naming ``--data``."""
    from ruvattn.errors import InvalidConfig

    path = Path(text)
    if path.suffix.lower() != ".npy":
        raise InvalidConfig(f"--data must be 'demo' or a path to a .npy file; got {text!r}.")
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InvalidConfig(f"--data: cannot read {text!r} as a .npy array ({exc}).") from None
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise InvalidConfig(f"--data: {text!r} must hold an (N, d) matrix with N >= 2; got shape {np.shape(x)}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise InvalidConfig(f"--data: {text!r} must hold real numbers; got dtype {x.dtype}.")
    x = x.astype(np.float32 if x.dtype == np.float32 else np.float64)
    if not np.isfinite(x).all():
        raise InvalidConfig(f"--data: {text!r} contains NaN or infinite values.")
    return x


def _analysis_mechanism(kind: str, dim: int, args: argparse.Namespace, k: int) -> Any:
    """The mechanism of ``kind`` at width ``dim``: its :meth:`~ruvattn.mechanisms.Attention.example_params`
    with the flags applied to the parameters of those names (``--heads``, ``--seed``, ``--top-k`` as the
    router's ``top_k``; a local window of ``k/2`` and ``k/8`` landmarks)."""
    from ruvattn.mechanisms import build, mechanism_class

    cls = mechanism_class(kind)
    params = cls.example_params(dim, heads=args.heads)
    overrides = {"seed": args.seed, "local_window": max(1, k // 2), "global_nodes": k // 8}
    if args.top_k is not None:
        overrides["top_k"] = args.top_k
    params.update({name: value for name, value in overrides.items() if name in cls._param_index})
    return build({"type": kind, **params})


def _widgets_missing() -> str | None:
    for name in ("ipywidgets", "plotly", "anywidget", "kaleido"):
        if importlib.util.find_spec(name) is None:
            return name
    return None


def _write_figures(widget: Any, directory: Path, stem: str) -> list[str]:
    from ruvattn.errors import InvalidConfig

    html, svg = directory / f"{stem}.html", directory / f"{stem}.svg"
    try:
        widget.save_html(html)
    except OSError as exc:
        raise InvalidConfig(f"--figures: cannot write {html} ({exc}).") from None
    try:
        widget.save_image(svg)
    except Exception as exc:  # kaleido/Chromium failures come in many types
        raise InvalidConfig(
            f"--figures: cannot write {svg}: {exc} (SVG export needs kaleido and a Chrome/Chromium)."
        ) from None
    return [str(html), str(svg)]


def run_analysis(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ruvattn analyze`` report (parsed flags in, a JSON-ready dict out)."""
    from tqdm import tqdm

    from ruvattn import analysis
    from ruvattn.datasets import clustered_graph
    from ruvattn.datasets.synthetic import exact_knn
    from ruvattn.errors import InvalidConfig
    from ruvattn.graph.hnsw import HNSWIndex, resolve_graph

    kinds: list[str] = args.mechanism
    figures: Path | None = None
    if args.figures is not None:
        missing = _widgets_missing()
        if missing is not None:
            raise InvalidConfig(f"--figures needs the widgets extra ({missing} is missing): "
                                "pip install 'ruvattn[widgets]'")  # fmt: skip
        figures = Path(args.figures)
        if figures.exists() and not figures.is_dir():
            raise InvalidConfig(f"--figures: {args.figures!r} exists and is not a directory.")
    graph = resolve_graph(getattr(args, "graph", "auto"))
    if args.data == "demo":
        if args.neighbours >= args.nodes:
            raise InvalidConfig(f"--neighbours ({args.neighbours}) must be < --nodes ({args.nodes}).")
        x = clustered_graph(args.nodes, args.dim, k=1, seed=args.seed).embeddings
        data: dict[str, Any] = {"source": "demo", "generator": "clustered_graph"}
    else:
        x = _load_embeddings(args.data)
        if args.neighbours >= x.shape[0]:
            raise InvalidConfig(f"--neighbours ({args.neighbours}) must be < the {x.shape[0]} rows of --data.")
        data = {"source": str(args.data)}
    n, d = x.shape
    k, m = args.neighbours, (min(64, n) if args.queries is None else args.queries)
    if m > n:
        raise InvalidConfig(f"--queries ({m}) must be at most the number of nodes ({n}).")
    if graph == "hnsw":  # cosine similarity = L2 on unit rows: the index holds the normalised rows
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float64).tiny)
        index = HNSWIndex.build(unit, M=max(2, k // 2), ef_construction=max(64, 2 * k), seed=args.seed)
        nb = np.zeros((n, k), np.int64)
        nb[:m] = index.nearest_others(np.arange(m), k)
        if (nb[:m] < 0).any():
            raise InvalidConfig(
                f"--graph hnsw: the index found fewer than {k} neighbours for some node; use --graph knn."
            )
        how = f"its {k} nearest neighbours found by an HNSW index (faiss, M={max(2, k // 2)})"
    else:
        nb = exact_knn(x, k)
        how = f"its own {k} nearest neighbours (exact cosine kNN)"
    if not 1 <= args.heads <= 16:
        raise InvalidConfig(f"--heads must be in [1, 16]; got {args.heads}.")
    mass_k = 8 if args.top_k is None else args.top_k
    mode = f"each of the first {m} nodes over {how}"
    data.update(nodes=n, dim=d, neighbours=k, queries=m, seed=args.seed, mode=mode)

    results: list[dict[str, Any]] = []
    written: list[str] = []
    built = {kind: _analysis_mechanism(kind, d, args, k) for kind in kinds}  # bad settings fail before the bar
    for kind in tqdm(kinds, desc="ruvattn analyze", file=sys.stderr, unit="mechanism"):
        mech = built[kind]
        xs = mech.embed(x)  # into the mechanism's input space (identity for Euclidean ones)
        per_head = mech.weights(xs[:m], xs, neighbours=nb[:m]).astype(np.float64).reshape(-1, m, k)
        weights = per_head.mean(axis=0)
        stats = analysis.summarize(weights, k=mass_k, mass=_MASS)
        row: dict[str, Any] = {
            "mechanism": kind, "queries": m, "keys": k, "input_space": mech.input_space,
            "entropy": stats["entropy"], "uniform_entropy": stats["uniform_entropy"],
            "normalized_entropy": stats["normalized_entropy"], "effective_support": stats["effective_support"],
            "top_k": mass_k, "top_k_mass": stats[f"top{mass_k}_mass"],
            "sparsity_mass": _MASS, "sparsity": stats[f"sparsity@{_MASS:g}"],
        }  # fmt: skip
        if per_head.shape[0] > 1:
            row["heads"] = int(per_head.shape[0])
            row["head_entropy"] = [float(analysis.entropy(w).mean()) for w in per_head]
            row["head_diversity"] = analysis.head_diversity(per_head)
        routing_record = getattr(mech, "routing_record", None)  # mechanisms that route (a mixture) say how
        if routing_record is not None:
            record = routing_record(xs[:m])
            row["routing"] = {
                "experts": record.probs.shape[1], "expert_kinds": [e.kind for e in mech.experts],
                "uniform_entropy": math.log(record.probs.shape[1]),
                "normalized_router_entropy": float(analysis.normalized_entropy(record.probs).mean()),
                "load": record.load.tolist(), "utilisation": record.utilisation.tolist(),
                **analysis.routing_balance(record),
            }  # fmt: skip
        results.append(row)
        if figures is not None:
            written += _figures_for(kind, mech, xs, nb, m, figures)
    report: dict[str, Any] = {"data": data, "results": results}
    if figures is not None:
        report["figures"] = written
    return report


def _figures_for(kind: str, mech: Any, x: np.ndarray, nb: np.ndarray, m: int, directory: Path) -> list[str]:
    """The widgets of one mechanism as ``DIR/<kind>.html``/``.svg``: the heatmap, the per-head panels where
    it has heads, the routing view where it routes."""
    from ruvattn.errors import InvalidConfig

    try:
        directory.mkdir(parents=True, exist_ok=True)
        from ruvattn.widgets.heads import HeadView
        from ruvattn.widgets.heatmap import AttentionHeatmap
        from ruvattn.widgets.routing import MoERoutingView

        widget = AttentionHeatmap(mech, x[:m], x, neighbours=nb[:m], max_queries=m)
        written = _write_figures(widget, directory, kind)
        if mech.num_weight_heads > 1:  # per-head panels of the first node over its own neighbours
            written += _write_figures(HeadView(mech, x[:1], x[nb[0]]), directory, f"{kind}-heads")
        if getattr(mech, "routing_record", None) is not None:
            written += _write_figures(MoERoutingView(mech, x[:m]), directory, f"{kind}-routing")
    except ImportError as exc:
        raise InvalidConfig(f"--figures needs the widgets extra ({exc}): pip install 'ruvattn[widgets]'") from None
    except OSError as exc:
        raise InvalidConfig(f"--figures: cannot create {str(directory)!r} ({exc}).") from None
    return written
