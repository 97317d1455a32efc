"""Time a control change of every widget at 1,000 keys (the issue's target: well under 100 ms).

Each row moves one control ``repeats`` times (alternating two values) and reports the median and
the worst of the widget's own ``last_update_ms``: the library call, writing the traces and syncing
the saved state, i.e. everything the kernel does before the browser redraws. Run outside a kernel
(no front end), so the browser's drawing time is not included.

    .venv/bin/python tools/widget_latency.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from ruvattn import FlashAttention, LinearAttention, MoEAttention, MultiHeadAttention, ScaledDotProductAttention
from ruvattn.datasets import clustered_graph
from ruvattn.widgets import AttentionHeatmap, HeadView, MoERoutingView, NeighbourhoodView, PoincareDiskView


def rows() -> list[tuple[str, Callable[[], Any], str, tuple[Any, Any]]]:
    rng = np.random.default_rng(0)
    q = rng.standard_normal((16, 128)).astype(np.float32)
    k = rng.standard_normal((1000, 128)).astype(np.float32)
    g = clustered_graph(1200, 64, n_clusters=8, k=1000, seed=0)
    moe = MoEAttention.builder().add_local_expert(128).add_sparse_expert(16, 4).add_linear_expert().top_k(2).build()
    return [
        ("AttentionHeatmap sdpa 16x1000", lambda: AttentionHeatmap(ScaledDotProductAttention(128), q, k),
         "temperature", (0.5, 2.0)),
        ("AttentionHeatmap flash, difference", lambda: AttentionHeatmap(FlashAttention(128), q, k, mode="difference"),
         "temperature", (0.5, 2.0)),
        ("AttentionHeatmap FAVOR+ m=64, difference",
         lambda: AttentionHeatmap(LinearAttention(128, feature_map="favor"), q, k, mode="difference"),
         "num_features", (64, 128)),
        ("HeadView 8 heads 16x1000", lambda: HeadView(MultiHeadAttention(128, num_heads=8), q, k),
         "combine", ("max", "mean")),
        ("NeighbourhoodView 1 hop, 1000 neighbours",
         lambda: NeighbourhoodView("scaled_dot_product", g.embeddings, g.neighbours, max_nodes=1001),
         "centre", (1, 2)),
        ("PoincareDiskView 1 query x 1000 keys, d=8",
         lambda: PoincareDiskView(0.5 * rng.standard_normal((1001, 8)), euclidean=True),
         "curvature", (-0.5, -1.0)),
        ("MoERoutingView 1000 queries, 3 experts", lambda: MoERoutingView(moe, k), "top_k", (1, 2)),
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print(f"{'widget and control':48} {'control':>13} {'median ms':>10} {'max ms':>8}")
    for name, make, control, values in rows():
        widget = make()
        times = []
        for i in range(args.repeats + 2):
            widget.controls[control].value = values[i % 2]
            assert widget.error is None, widget.error
            times.append(widget.last_update_ms)
        times = times[2:]  # the first two include compiling a new specialisation
        print(f"{name:48} {control:>13} {statistics.median(times):10.1f} {max(times):8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
