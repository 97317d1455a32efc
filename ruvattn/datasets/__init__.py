"""Built-in data sets (no downloads)."""

from ruvattn.datasets.synthetic import SyntheticGraph, clustered_graph

__all__ = ["SyntheticGraph", "clustered_graph"]
