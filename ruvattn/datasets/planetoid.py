"""Node-classification data in the plain-text Planetoid layout (Cora, CiteSeer, PubMed converted to text).

A directory holds, one line per node where it says so:

======================  ===========================================================================
``features.txt``        per node, its non-zero features, space separated: ``id`` (value 1.0) or
                        ``id:value``; an empty line is a node without features
``labels.txt``          per node, its class ``0..K-1``, or ``-1`` for a node without a label
``edges.txt``           ``a b`` per line: an undirected edge (both directions are used; duplicates and
                        the second orientation of a pair listed twice are merged)
``train.txt``, ``val.txt``, ``test.txt``
                        node ids, whitespace separated
======================  ===========================================================================

The loader knows no data set by name: sizes, classes and feature counts come from the files (the feature
count is the largest id plus one unless ``num_features`` is given).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> for name, text in {"features.txt": "0 2\\n1\\n\\n", "labels.txt": "0\\n1\\n-1\\n", "edges.txt": "0 1\\n",
...                    "train.txt": "0 1", "val.txt": "", "test.txt": "2"}.items():
...     _ = (d / name).write_text(text)
>>> data = load_planetoid(d, labelled_test=False)
>>> data.x.toarray().tolist(), data.labels.tolist(), data.graph.indices.tolist(), data.num_classes
([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], [0, 1, -1], [1, 0], 2)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ruvattn.errors import DimensionMismatch, InvalidConfig, OutOfBounds
from ruvattn.graph import NeighbourList

__all__ = ["NodeData", "find_planetoid", "load_planetoid"]


@dataclass(frozen=True)
class NodeData:
    """One graph for node classification."""

    x: sp.csr_matrix
    """``(N, F)`` float32 features, sparse (CSR), row-normalised when loaded with ``normalize=True``."""
    labels: NDArray[np.int64]
    """``(N,)`` class per node; ``-1`` where unknown."""
    graph: NeighbourList
    """Symmetric CSR adjacency without duplicates: row ``i`` lists ``i``'s neighbours."""
    train: NDArray[np.int64]
    val: NDArray[np.int64]
    test: NDArray[np.int64]
    num_classes: int
    name: str = ""

    @property
    def num_nodes(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    def summary(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "nodes": self.num_nodes,
            "edges (directed)": self.graph.nnz,
            "features": self.num_features,
            "classes": self.num_classes,
            "train": int(self.train.size),
            "val": int(self.val.size),
            "test": int(self.test.size),
            "unlabelled": int((self.labels < 0).sum()),
            "isolated": int((self.graph.degrees() == 0).sum()),
        }


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InvalidConfig(f"load_planetoid: {path} is missing (see ruvattn.datasets.planetoid for the layout).")
    text = path.read_text()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start one more
    return lines


def _ints(path: Path, what: str) -> NDArray[np.int64]:
    tokens = path.read_text().split() if path.is_file() else None
    if tokens is None:
        raise InvalidConfig(f"load_planetoid: {path} is missing.")
    try:
        return np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError as err:
        raise InvalidConfig(f"load_planetoid: {path.name} must hold integer {what}; {err}.") from None


def load_planetoid(
    directory: str | os.PathLike[str],
    normalize: bool = True,
    num_features: int | None = None,
    labelled_test: bool = True,
) -> NodeData:
    """Read a Planetoid-layout directory (see the module docstring).

    ``normalize`` divides every feature row by its sum (PyG's ``NormalizeFeatures``, the GAT paper's
    preprocessing; an all-zero row stays zero).  Train and validation nodes must have labels; test nodes too
    unless ``labelled_test=False``.  Every malformed file is an error naming the file and line, never a
    silently shortened array.
    """
    root = Path(directory)
    feat_lines = _lines(root / "features.txt")
    n = len(feat_lines)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for i, line in enumerate(feat_lines):
        for tok in line.split():
            fid, _, val = tok.partition(":")
            try:
                rows.append(i)
                cols.append(int(fid))
                vals.append(float(val) if val else 1.0)
            except ValueError:
                raise InvalidConfig(
                    f"load_planetoid: features.txt line {i + 1}: {tok!r} is not id or id:value."
                ) from None
    col = np.array(cols, dtype=np.int64)
    if col.size and col.min() < 0:
        raise OutOfBounds(f"load_planetoid: features.txt holds a negative feature id {col.min()}.")
    width = int(col.max()) + 1 if col.size else 0
    if num_features is not None:
        if col.size and width > num_features:
            raise OutOfBounds(f"load_planetoid: feature id {width - 1} is not below num_features={num_features}.")
        width = int(num_features)
    data = np.array(vals, dtype=np.float64)
    if not np.isfinite(data).all():
        raise InvalidConfig("load_planetoid: features.txt holds a NaN or infinite value.")
    x = sp.csr_matrix((data, (np.array(rows, dtype=np.int64), col)), shape=(n, width))
    x.sum_duplicates()
    if normalize:
        sums = np.asarray(x.sum(1)).ravel()
        inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums != 0)
        x = sp.csr_matrix(sp.diags(inv) @ x)
    x = x.astype(np.float32)

    labels = _ints(root / "labels.txt", "labels")
    if labels.size != n:
        raise DimensionMismatch(f"load_planetoid: labels.txt has {labels.size} labels for {n} nodes (features.txt).")
    if labels.size and labels.min() < -1:
        raise OutOfBounds(f"load_planetoid: labels.txt holds {labels.min()}; classes are >= 0, -1 marks no label.")
    num_classes = int(labels.max()) + 1 if labels.size else 0

    edge_tokens = _ints(root / "edges.txt", "node ids")
    if edge_tokens.size % 2:
        raise DimensionMismatch("load_planetoid: edges.txt must hold pairs 'a b'; it has an odd number of ids.")
    pairs = edge_tokens.reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
        bad = pairs[(pairs < 0) | (pairs >= n)][0]
        raise OutOfBounds(f"load_planetoid: edges.txt holds node {bad}, not in [0, {n}).")
    both = np.concatenate([pairs, pairs[:, ::-1]])
    adj = sp.csr_matrix((np.ones(len(both)), (both[:, 0], both[:, 1])), shape=(n, n))
    adj.sum_duplicates()
    adj.sort_indices()
    graph = NeighbourList(adj.indptr.astype(np.int64), adj.indices.astype(np.int64), n)

    splits = {}
    for name in ("train", "val", "test"):
        ids = _ints(root / f"{name}.txt", "node ids")
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise OutOfBounds(
                f"load_planetoid: {name}.txt holds node {ids[(ids < 0) | (ids >= n)][0]}, not in [0, {n})."
            )
        if np.unique(ids).size != ids.size:
            raise InvalidConfig(f"load_planetoid: {name}.txt lists a node twice.")
        if (name != "test" or labelled_test) and ids.size and (labels[ids] < 0).any():
            raise InvalidConfig(f"load_planetoid: {name}.txt holds node {ids[labels[ids] < 0][0]}, which has no label.")
        splits[name] = ids
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        common = np.intersect1d(splits[a], splits[b])
        if common.size:
            raise InvalidConfig(f"load_planetoid: node {common[0]} is in both {a}.txt and {b}.txt.")
    return NodeData(x, labels, graph, splits["train"], splits["val"], splits["test"], num_classes, root.name)


def find_planetoid(name: str = "cora") -> Path | None:
    """Where a Planetoid-layout data set ``name`` is on this machine, or ``None``: ``$RUVATTN_DATA_DIR/name``,
    then ``shared/data/name`` beside the repository (the project's machines), then beside the working directory.
    Nothing is downloaded."""
    roots = []
    if os.environ.get("RUVATTN_DATA_DIR"):
        roots.append(Path(os.environ["RUVATTN_DATA_DIR"]))
    repo = Path(__file__).resolve().parents[2]
    roots += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "data"]
    for root in roots:
        if (root / name / "features.txt").is_file():
            return root / name
    return None
