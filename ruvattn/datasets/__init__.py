"""Built-in data sets, and the reader of Planetoid-layout directories (no downloads)."""

from ruvattn.datasets.planetoid import NodeData, find_planetoid, load_planetoid
from ruvattn.datasets.synthetic import SyntheticGraph, clustered_graph, clustered_points

__all__ = ["NodeData", "SyntheticGraph", "clustered_graph", "clustered_points", "find_planetoid", "load_planetoid"]
